//! Roles and the privileges they grant (G045 AU-1-5, AU-1-6).
//!
//! Every function of the device that needs a login is guarded by one [`Privilege`]; a [`Role`]
//! is a fixed set of privileges. Only `admin` manages accounts and configuration. A new account
//! gets [`Role::least`], which only reads, unless an admin chooses otherwise (least privilege).
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What an account may do, as one of four fixed roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including accounts and configuration (the privileged role, AU-1-2).
    Admin,
    /// Runs the gateway: sensors and telemetry.
    Operator,
    /// Applies signed updates.
    Updater,
    /// Reads the audit log and the compliance report; changes nothing.
    Auditor,
}

/// A function of the device that needs a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Privilege {
    /// Read the device's health.
    HealthRead,
    /// Read the security audit log.
    LogRead,
    /// Read the G045 compliance report.
    ReportRead,
    /// List accounts and their roles.
    AccountsRead,
    /// Add, remove, disable and unlock accounts, assign roles, reset passwords.
    AccountsManage,
    /// List sensors and their certificates.
    DevicesRead,
    /// Enrol, revoke and configure sensors.
    DevicesManage,
    /// Read telemetry.
    TelemetryRead,
    /// Apply signed updates.
    UpdatesApply,
    /// Change the device's configuration and security settings.
    ConfigManage,
}

const ADMIN: &[Privilege] = &Privilege::ALL;
const OPERATOR: &[Privilege] = &[
    Privilege::HealthRead,
    Privilege::DevicesRead,
    Privilege::DevicesManage,
    Privilege::TelemetryRead,
];
const UPDATER: &[Privilege] = &[Privilege::HealthRead, Privilege::UpdatesApply];
const AUDITOR: &[Privilege] = &[
    Privilege::HealthRead,
    Privilege::LogRead,
    Privilege::ReportRead,
];

impl Role {
    /// Every role, most privileged first.
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Updater, Role::Auditor];

    /// Its name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Updater => "updater",
            Role::Auditor => "auditor",
        }
    }

    /// The role a new account gets unless an admin chooses another: read-only (AU-1-6).
    pub fn least() -> Role {
        Role::Auditor
    }

    /// Whether it holds privileged access to security management (AU-1-2): such accounts are
    /// kept apart from the others.
    pub fn is_privileged(self) -> bool {
        self == Role::Admin
    }

    /// The privileges it grants.
    pub fn grants(self) -> &'static [Privilege] {
        match self {
            Role::Admin => ADMIN,
            Role::Operator => OPERATOR,
            Role::Updater => UPDATER,
            Role::Auditor => AUDITOR,
        }
    }

    /// Whether it grants `p`.
    pub fn allows(self, p: Privilege) -> bool {
        self.grants().contains(&p)
    }

    /// One line for the console and `kawal user`.
    pub fn describe(self) -> &'static str {
        match self {
            Role::Admin => "manages accounts, configuration and everything else",
            Role::Operator => "runs the gateway: sensors and telemetry",
            Role::Updater => "applies signed updates",
            Role::Auditor => "reads the audit log and the compliance report; changes nothing",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of the four.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role '{given}': expected one of admin, operator, updater, auditor")]
pub struct UnknownRole {
    /// What was given (cut to 32 characters).
    pub given: String,
}

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole {
                given: s.chars().take(32).collect(),
            })
    }
}

impl Privilege {
    /// Every privilege.
    pub const ALL: [Privilege; 10] = [
        Privilege::HealthRead,
        Privilege::LogRead,
        Privilege::ReportRead,
        Privilege::AccountsRead,
        Privilege::AccountsManage,
        Privilege::DevicesRead,
        Privilege::DevicesManage,
        Privilege::TelemetryRead,
        Privilege::UpdatesApply,
        Privilege::ConfigManage,
    ];

    /// Its name, as in the API and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Privilege::HealthRead => "health-read",
            Privilege::LogRead => "log-read",
            Privilege::ReportRead => "report-read",
            Privilege::AccountsRead => "accounts-read",
            Privilege::AccountsManage => "accounts-manage",
            Privilege::DevicesRead => "devices-read",
            Privilege::DevicesManage => "devices-manage",
            Privilege::TelemetryRead => "telemetry-read",
            Privilege::UpdatesApply => "updates-apply",
            Privilege::ConfigManage => "config-manage",
        }
    }

    /// One line for the console.
    pub fn describe(self) -> &'static str {
        match self {
            Privilege::HealthRead => "read the device's health",
            Privilege::LogRead => "read the security audit log",
            Privilege::ReportRead => "read the G045 compliance report",
            Privilege::AccountsRead => "list accounts and their roles",
            Privilege::AccountsManage => {
                "add, remove, disable and unlock accounts, assign roles, reset passwords"
            }
            Privilege::DevicesRead => "list sensors and their certificates",
            Privilege::DevicesManage => "enrol, revoke and configure sensors",
            Privilege::TelemetryRead => "read telemetry",
            Privilege::UpdatesApply => "apply signed updates",
            Privilege::ConfigManage => "change the device's configuration and security settings",
        }
    }

    /// Whether it only reads: using it changes nothing on the device.
    pub fn is_read_only(self) -> bool {
        matches!(
            self,
            Privilege::HealthRead
                | Privilege::LogRead
                | Privilege::ReportRead
                | Privilege::AccountsRead
                | Privilege::DevicesRead
                | Privilege::TelemetryRead
        )
    }
}

impl fmt::Display for Privilege {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// G045: AU-1-5
    #[test]
    fn admin_holds_every_privilege_and_every_privilege_is_held() {
        for p in Privilege::ALL {
            assert!(Role::Admin.allows(p), "{p}");
        }
        assert_eq!(Role::Admin.grants().len(), Privilege::ALL.len());
    }

    /// G045: AU-1-5, AU-1-6
    #[test]
    fn only_admin_manages_accounts_or_configuration() {
        for r in Role::ALL {
            let manages = r.allows(Privilege::AccountsManage) || r.allows(Privilege::ConfigManage);
            assert_eq!(manages, r.is_privileged(), "{r}");
            assert_eq!(r.is_privileged(), r == Role::Admin);
        }
    }

    /// G045: AU-1-6
    #[test]
    fn the_least_role_only_reads_and_grants_no_more_than_any_role_can_write() {
        let least = Role::least();
        assert!(!least.is_privileged());
        assert!(least.grants().iter().all(|p| p.is_read_only()));
        // It changes nothing, so its write privileges (none) are a subset of every role's.
        for r in Role::ALL {
            let writes = |role: Role| role.grants().iter().filter(|p| !p.is_read_only()).count();
            assert!(writes(least) <= writes(r), "{r}");
        }
    }

    /// G045: AU-1-6
    #[test]
    fn each_role_grants_a_strict_subset_of_admin_without_duplicates() {
        for r in Role::ALL {
            let mut seen = std::collections::HashSet::new();
            assert!(r.grants().iter().all(|p| seen.insert(*p)), "{r}");
            if r != Role::Admin {
                assert!(r.grants().len() < Role::Admin.grants().len());
                assert!(r.allows(Privilege::HealthRead));
            }
        }
    }

    #[test]
    fn names_round_trip_and_unknown_names_list_the_valid_ones() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
            assert_eq!(
                serde_json::to_string(&r).unwrap(),
                format!("\"{}\"", r.as_str())
            );
        }
        for p in Privilege::ALL {
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                format!("\"{}\"", p.as_str())
            );
        }
        let e = "root".parse::<Role>().unwrap_err().to_string();
        assert!(e.contains("root") && e.contains("admin, operator, updater, auditor"));
        assert!("Admin".parse::<Role>().is_err(), "names are exact");
    }
}

//! The facts a TUF target signs about the bundle it carries (its custom metadata), checked
//! before the download and then against the bundle's manifest.

use std::collections::{BTreeMap, BTreeSet};

use super::error::BundleError;
use super::manifest::{Manifest, check_hardware, check_name, check_version};

/// What the TUF target's signed custom metadata says about the bundle. Checked before a byte is
/// downloaded, then the manifest must agree with it exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedFacts {
    /// The release version.
    pub version: String,
    /// The anti-rollback counter.
    pub security_version: u64,
    /// The product.
    pub product: String,
    /// The compatible hardware ids.
    pub hardware: Vec<String>,
}

impl SignedFacts {
    /// Reads the facts from a verified target's custom metadata: keys `product`, `version`
    /// (strings), `security-version` (a non-negative integer) and `hardware` (a list of strings).
    /// Other keys are ignored.
    pub fn from_custom(
        custom: &BTreeMap<String, serde_json::Value>,
    ) -> Result<SignedFacts, BundleError> {
        let bad = |key: &'static str, reason: &str| BundleError::SignedFactsInvalid {
            key,
            reason: reason.to_owned(),
        };
        let string = |key: &'static str| {
            custom
                .get(key)
                .ok_or_else(|| bad(key, "is missing"))?
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| bad(key, "is not a string"))
        };
        let product = string("product")?;
        check_name(&product).map_err(|why| bad("product", &why))?;
        let version = string("version")?;
        check_version(&version).map_err(|why| bad("version", &why))?;
        let security_version = custom
            .get("security-version")
            .ok_or_else(|| bad("security-version", "is missing"))?
            .as_u64()
            .ok_or_else(|| bad("security-version", "is not a non-negative integer"))?;
        let hardware = custom
            .get("hardware")
            .ok_or_else(|| bad("hardware", "is missing"))?
            .as_array()
            .ok_or_else(|| bad("hardware", "is not a list"))?
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("hardware", "holds something other than a string"))?;
        check_hardware(&hardware).map_err(|why| bad("hardware", &why))?;
        Ok(SignedFacts {
            version,
            security_version,
            product,
            hardware,
        })
    }

    /// Refuses an update for another product, for hardware it does not list, or below the
    /// installed security version (anti-rollback; an equal one is allowed, as a reinstall).
    pub fn check(
        &self,
        product: &str,
        hardware: &str,
        installed_security_version: u64,
    ) -> Result<(), BundleError> {
        if self.product != product {
            return Err(BundleError::WrongProduct {
                offered: self.product.clone(),
                expected: product.to_owned(),
            });
        }
        if !self.hardware.iter().any(|h| h == hardware) {
            return Err(BundleError::WrongHardware {
                device: hardware.to_owned(),
                supported: self.hardware.clone(),
            });
        }
        if self.security_version < installed_security_version {
            return Err(BundleError::Rollback {
                offered: self.security_version,
                installed: installed_security_version,
            });
        }
        Ok(())
    }

    /// Refuses a manifest that differs from these facts in any field (hardware as a set).
    pub fn agree(&self, manifest: &Manifest) -> Result<(), BundleError> {
        let differ = |field, manifest: String, signed: String| {
            Err(BundleError::Disagrees {
                field,
                manifest,
                signed,
            })
        };
        if manifest.product() != self.product {
            return differ(
                "product",
                manifest.product().to_owned(),
                self.product.clone(),
            );
        }
        if manifest.version() != self.version {
            return differ(
                "version",
                manifest.version().to_owned(),
                self.version.clone(),
            );
        }
        if manifest.security_version() != self.security_version {
            return differ(
                "security-version",
                manifest.security_version().to_string(),
                self.security_version.to_string(),
            );
        }
        let ours: BTreeSet<_> = manifest.hardware().iter().collect();
        let signed: BTreeSet<_> = self.hardware.iter().collect();
        if ours != signed {
            return differ(
                "hardware",
                format!("{:?}", manifest.hardware()),
                format!("{:?}", self.hardware),
            );
        }
        Ok(())
    }
}

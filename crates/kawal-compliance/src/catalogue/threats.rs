//! The 32 threats of section 5 (Table 1: `ST-D-*`, Table 2: `ST-G-*`), verbatim.
//!
//! Edit only against the code itself: `tests/catalogue_matches_spec.rs` compares every entry.

use super::Threat;

/// The threats, device threats first.
pub(super) static THREATS: &[Threat] = &[
    Threat {
        code: "ST-D-1",
        name: "Authentication bypass",
        description: "An unauthorised user successfully gains access to a device and is able to access critical data, which includes user data and configuration files stored in the device.",
    },
    Threat {
        code: "ST-D-2",
        name: "Unauthorised device connection",
        description: "A situation where a device is vulnerable to being connected or exposed to any unauthorized device. It also includes the risk of data, such as user data, being transmitted to unauthorized devices.",
    },
    Threat {
        code: "ST-D-3",
        name: "Excessive privilege",
        description: "Giving excessive privilege or unnecessary privilege allows an attacker to be able to access all acceptable operations and controlled data including the user data of a device.",
    },
    Threat {
        code: "ST-D-4",
        name: "Unrestricted repeated authentication attempts",
        description: "An unauthorized user repeatedly attempts to authenticate themselves in order to gain access to a legitimate user account.",
    },
    Threat {
        code: "ST-D-5",
        name: "Error due to concurrent access",
        description: "A concurrent access from multiple administrator accounts may cause uncoordinated changes in the configuration of critical functionalities.",
    },
    Threat {
        code: "ST-D-6",
        name: "Authentication information exposure and guessing",
        description: "When authentication information such as a password is hardcoded or stored in plain text, or when an authentication password or Personal Identification Number (PIN) is exposed in plain text (also known as a Shoulder-Surfing Attack (SSA)), the authentication information may be exposed to or guessed by an attacker.",
    },
    Threat {
        code: "ST-D-7",
        name: "Weak password",
        description: "An attacker may obtain an unsecured combination, such as a default or weak password, which could enable them to impersonate a legitimate user.",
    },
    Threat {
        code: "ST-D-8",
        name: "Weak encryption key or random number",
        description: "An insufficient cryptographic key or predictable \"random\" number poses a significant risk to the protection of critical data.",
    },
    Threat {
        code: "ST-D-9",
        name: "Weak cryptographic algorithm",
        description: "An attacker may predict key data or discover the plain text of an encrypted message (ciphertext) by analysing traffic that uses a weak cryptographic algorithm.",
    },
    Threat {
        code: "ST-D-10",
        name: "Absence of input validation",
        description: "An absence of input validation may cause a device to malfunction.",
    },
    Threat {
        code: "ST-D-11",
        name: "Data exposure and data manipulation",
        description: "Critical data, including user data, device configuration, and cryptographic keys is susceptible to exposure, exploitation, or manipulation by an attacker.",
    },
    Threat {
        code: "ST-D-12",
        name: "Session hijacking",
        description: "An attacker may gain unauthorised access to a device if a session is closed abnormally or by exploiting valid sessions of multiple devices that uses the same cryptographic key.",
    },
    Threat {
        code: "ST-D-13",
        name: "Unsafe update",
        description: "A downloadable update file may not be accessible as intended, or an unauthorised or unauthenticated source may be executable.",
    },
    Threat {
        code: "ST-D-14",
        name: "Update failure",
        description: "Abnormal device operation may occur as a result of an error during the update process.",
    },
    Threat {
        code: "ST-D-15",
        name: "Integrity error",
        description: "An unintended manipulation of executable codes or configuration values may cause a device to malfunction.",
    },
    Threat {
        code: "ST-D-16",
        name: "Malicious Software",
        description: "Code that has unintended functions may be used with a malicious purpose.",
    },
    Threat {
        code: "ST-D-17",
        name: "Residual memory information exploitation",
        description: "The cryptographic key, password and sensitive data used for cryptological operations, authentications and data transmissions remain in the memory and may be exploited.",
    },
    Threat {
        code: "ST-D-18",
        name: "Unintended change in critical configurations",
        description: "An absence of device security controls may cause unintended changes in critical configurations and unsafe service deliveries.",
    },
    Threat {
        code: "ST-D-19",
        name: "Unsafe error response",
        description: "An absence of appropriate detection of and response to errors and malicious behaviour of a device may cause unsafe service deliveries.",
    },
    Threat {
        code: "ST-D-20",
        name: "Unsafe development",
        description: "The design and implementation of a device may introduce potential security vulnerabilities, and the testing process may lack an appropriate assessment and response to these vulnerabilities.",
    },
    Threat {
        code: "ST-D-21",
        name: "Vulnerable OS",
        description: "Device functionalities may be compromised or bypassed in a vulnerable OS environment.",
    },
    Threat {
        code: "ST-D-22",
        name: "Vulnerable third-party modules or libraries",
        description: "Vulnerable third-party modules or libraries may allow an attacker to call those at risk.",
    },
    Threat {
        code: "ST-D-23",
        name: "Unsecured sensitive information record in system log",
        description: "Sensitive information logged in a system may be vulnerable to exposure and exploitation by an attacker.",
    },
    Threat {
        code: "ST-D-24",
        name: "Critical information exposure through debugging",
        description: "Critical information may be exposed to and exploited by an attacker through log generation and debugging when a device is released and distributed.",
    },
    Threat {
        code: "ST-D-25",
        name: "Unauthorised physical access",
        description: "A device is exposed to unauthorised physical access and unintended changes in its configuration.",
    },
    Threat {
        code: "ST-D-26",
        name: "Device capture",
        description: "Refers to a device being physically compromised within device lifecycle (manufacturing, distribution, installation and post-installation) or having its keys lost.",
    },
    Threat {
        code: "ST-D-27",
        name: "Impersonating of sensor or device",
        description: "This attack occurs when an attacker effectively impersonates the identity of a legitimate sensor or device.",
    },
    Threat {
        code: "ST-D-28",
        name: "Replay attack",
        description: "This attack occurs when an attacker intercepts and records a legitimate communication between a device and a gateway, and then successfully obtains a legitimate response by replaying the recorded communication.",
    },
    Threat {
        code: "ST-D-29",
        name: "Untrusted data transmission",
        description: "An untrusted data transmission has the potential to result in device malfunction or the distribution of malicious code.",
    },
    Threat {
        code: "ST-G-1",
        name: "Denial of Service (DoS) attack",
        description: "A DoS attack is characterized by its ability to severely slow down or completely halt the services provided by a target system. This is achieved by overwhelming the target's memory and/or computing capacity through a flood of illegitimate traffic. Wireless sensor networks are particularly susceptible to DoS attacks due to their open medium, dynamically changing topology, and the absence of a clear line of defence. As DoS attacks continue to pose a significant challenge in modern networks, it is important to note that many defence techniques developed for fixed wired networks may not be directly applicable to mobile network environments.",
    },
    Threat {
        code: "ST-G-2",
        name: "Unauthorised access",
        description: "Unauthorised access to a gateway can lead to the exposure of sensitive information, unauthorised data modification, DoS attack and illicit use of resources. For instance, when an attacker gains access to a gateway, they can monitor unencrypted data, which may result in the compromise of usernames, passwords, location information and secure configuration data.",
    },
    Threat {
        code: "ST-G-3",
        name: "Rogue gateway",
        description: "A rogue wireless access point, commonly known as an \"evil twin,\" may be intentionally and covertly installed to facilitate unauthorised access to the network, either locally or remotely. The perpetrator has the ability to replace an existing wireless access point with their own, granting them complete configuration and monitoring access. Alternatively, they may configure a rogue wireless access point with similar settings but a higher power ratio, surpassing the signal of the legitimate wireless access point. When a legitimate device is deceived into connecting to a rogue gateway, confidential connection information can be obtained.",
    },
];

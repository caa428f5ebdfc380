//! Command-line interface.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kawal_audit::{Filter, Outcome};

use crate::device::Device;
use crate::error::{CliError, Context, Exit, Result};
use crate::{client, config, daemon, evaluate, output, provision, recover, reset};

/// kawal: a secure IoT gateway meeting every control of the Malaysian IoT device security code G045 (2024).
#[derive(Debug, Parser)]
#[command(name = "kawal", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct DataDir {
    /// The device's data folder.
    #[arg(long, default_value = "/var/lib/kawal")]
    data_dir: PathBuf,
    /// File holding the key-encryption passphrase (or set KAWAL_PASSPHRASE).
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Provision a device: UID, sealed root secret, identity, one-time admin password.
    Init {
        #[command(flatten)]
        dir: DataDir,
        /// Take the data folder, passphrase file and password hashing cost from this
        /// configuration (the one `kawal run` will use).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Make a dev CA and certificate on the spot (not for production).
        #[arg(long)]
        dev: bool,
        /// The factory-assigned UID (otherwise derived from hardware identity).
        #[arg(long)]
        uid: Option<String>,
        /// Namespace for the UID derived from hardware identity.
        #[arg(long, default_value = "kawal")]
        vendor_namespace: String,
        /// Write the certificate signing request here.
        #[arg(long)]
        csr_out: Option<PathBuf>,
        /// Write the one-time admin password to this label file (mode 0600) instead of stdout.
        #[arg(long)]
        label_out: Option<PathBuf>,
    },
    /// Run the daemon.
    Run {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// A dev device in its own folder and the daemon on 127.0.0.1: the product in one command.
    Demo {
        /// The demo folder (reused if it exists).
        #[arg(long, default_value = "kawal-demo")]
        dir: PathBuf,
        /// Forward the telemetry to this MQTT broker (`host:port`, mutual TLS); it must trust
        /// the demo's device CA (`<dir>/data/pki/dev-ca.crt.pem`).
        #[arg(long, requires = "upstream_ca")]
        upstream: Option<String>,
        /// The CA (PEM) of the upstream broker's certificate: pinned.
        #[arg(long)]
        upstream_ca: Option<PathBuf>,
        /// The name the upstream's certificate must carry (default: the host of --upstream).
        #[arg(long, requires = "upstream")]
        upstream_server_name: Option<String>,
    },
    /// Evaluate all 44 G045 controls on this device and write the report.
    Audit {
        #[command(flatten)]
        dir: DataDir,
        /// Judge the access controls by this configuration (the one `kawal run` uses), and
        /// take the data folder and passphrase file from it; without it, by the defaults.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Report format.
        #[arg(long, value_enum, default_value = "md")]
        format: Format,
        /// Write to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run the power-up self-test and print each result.
    Selftest {
        #[command(flatten)]
        dir: DataDir,
    },
    /// The security event log.
    Log {
        #[command(subcommand)]
        action: LogAction,
    },
    /// Key management.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Crypto-erase the device: destroy the root secret, then all data.
    Reset {
        #[command(flatten)]
        dir: DataDir,
        /// Required: this is the secure reset.
        #[arg(long, required = true)]
        secure: bool,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Log in to the daemon's API and keep the session for `kawal user`.
    Login {
        /// The account.
        #[arg(long)]
        user: String,
        /// The API, e.g. https://127.0.0.1:8443 (or take it from --config).
        #[arg(long)]
        url: Option<String>,
        /// The CA that issued the device certificate (PEM); the only one trusted.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// The daemon's configuration: its API address and, on a dev device, its CA.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// End the session on the daemon and remove the session file.
    Logout {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Accounts, through the daemon's API (log in first).
    User {
        #[command(subcommand)]
        action: client::UserAction,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Sensors, through the daemon's API (log in first).
    Sensor {
        #[command(subcommand)]
        action: SensorCmd,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Simulated sensors: enrol N through the API and EST, publish at a fixed rate, report
    /// messages/s and latency (log in first).
    Sim {
        #[command(flatten)]
        args: client::sim::SimArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Local recovery at the device (needs the data folder and its keys).
    Recover {
        #[command(subcommand)]
        action: RecoverAction,
    },
    /// The password rules' dictionary checks for the daemon (reads the password from
    /// standard input); internal.
    #[command(hide = true)]
    PasswordStrength {
        /// Words that make the password weaker (user name, device UID).
        #[arg(long = "hint")]
        hints: Vec<String>,
    },
    /// The gateway's own device certificate: install a renewed one (at the device).
    Cert {
        #[command(subcommand)]
        action: CertAction,
    },
    /// The signed integrity manifest of the installed files (G045 PL-1-4).
    Integrity {
        #[command(subcommand)]
        action: IntegrityAction,
    },
    /// Services and interfaces against the exposure policy (G045 PL-3-1, PH-1-1, PH-1-2).
    Exposure {
        #[command(subcommand)]
        action: ExposureAction,
    },
    /// Tamper response (G045 PH-2-1).
    Tamper {
        #[command(subcommand)]
        action: TamperAction,
    },
    /// Signed updates: on the device through the API (log in first), and the vendor's
    /// bundle and repository tools (G045 PL-2-1, PL-2-2, PL-2-3).
    Update {
        #[command(subcommand)]
        action: UpdateCmd,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Start the daemon from the slot the update boot state chooses (counts a trial boot,
    /// rolls back an exhausted trial, checks the slot's files first). Systemd's ExecStart.
    Boot {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Stay as the parent and restart the daemon (after an update, a crash) instead of
        /// replacing this process with it.
        #[arg(long)]
        supervise: bool,
    },
}

/// `kawal update`.
#[derive(Debug, Subcommand)]
enum UpdateCmd {
    #[command(flatten)]
    Device(client::update::UpdateAction),
    /// Vendor: make a bundle from a folder of files (the payload: `kawal` and what it needs).
    Bundle(crate::update::vendor::BundleArgs),
    /// Vendor: the TUF repository that publishes bundles.
    Repo {
        #[command(subcommand)]
        action: RepoAction,
    },
}

/// `kawal update repo`.
#[derive(Debug, Subcommand)]
enum RepoAction {
    /// A new repository: keys (Ed25519, mode 0600), a signed root and empty targets. The root
    /// (`metadata/1.root.json`) is what devices get at provisioning.
    Init {
        /// The repository folder.
        #[arg(long)]
        dir: PathBuf,
        /// Where the private keys go (default DIR/keys; never published).
        #[arg(long)]
        keys: Option<PathBuf>,
    },
    /// Add a bundle as a signed target (product, version, security version and hardware are
    /// read from its manifest and signed with it).
    Add {
        /// The repository folder.
        #[arg(long)]
        dir: PathBuf,
        /// The bundle file.
        #[arg(long)]
        bundle: PathBuf,
    },
    /// Re-sign targets, snapshot and timestamp with fresh expiries (run it before the
    /// timestamp expires, e.g. daily).
    Sign {
        /// The repository folder.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Check the repository and copy what devices read (metadata/, targets/) to OUT.
    Publish {
        /// The repository folder.
        #[arg(long)]
        dir: PathBuf,
        /// Where to copy it (a web server's folder, a USB stick).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum TamperAction {
    /// Whether the device is locked after tamper (exit 69 when it is), and why.
    Status {
        /// The device's data folder.
        #[arg(long, default_value = "/var/lib/kawal")]
        data_dir: PathBuf,
        /// Take the data folder from this configuration.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum IntegrityAction {
    /// A new vendor signing key (Ed25519, PKCS#8 PEM, mode 0600) and its public half in
    /// FILE.pub, to install on devices. Keep the private key offline.
    Keygen {
        /// Where to write the private key (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Hash the files of a build and sign the manifest with the vendor key.
    Manifest {
        /// The vendor's private key.
        #[arg(long)]
        key: PathBuf,
        /// The product the manifest is for.
        #[arg(long, default_value = "kawal")]
        product: String,
        /// Its version.
        #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
        version: String,
        /// Where to write the manifest; the signature goes beside it (FILE.sig).
        #[arg(long)]
        out: PathBuf,
        /// Read the absolute paths under this folder (a staging tree of the device's files).
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// ROLE=PATH for each file, PATH absolute as on the device; ROLE is binary, config
        /// (which the device may later vouch for), trust-store, key or other.
        #[arg(required = true)]
        files: Vec<String>,
    },
    /// Check the installed files against the manifest now; names every file that fails.
    Verify {
        #[command(flatten)]
        dir: DataDir,
        /// Take the manifest, keys and data folder from this configuration.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Vouch for the configuration as it is now: re-sign the local overlay with the device's
    /// configuration key (at the device; needs the data folder and its keys).
    AcceptConfig {
        /// The configuration file (it must validate and be listed by the manifest).
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ExposureAction {
    /// Assess this machine's listening sockets and interfaces; exit 1 on a high-severity
    /// finding.
    Check {
        /// Judge by this configuration's [exposure] policy and listeners (default: the
        /// default policy).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the whole assessment as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum CertAction {
    /// Install a renewed device certificate (PEM: the leaf, then its chain). It must be for the
    /// device key and valid now; it is written atomically, and a running daemon puts it in
    /// force within a minute (at once on SIGHUP), without a restart.
    Install {
        /// The daemon's configuration file.
        #[arg(long)]
        config: PathBuf,
        /// The new certificate.
        #[arg(long)]
        cert: PathBuf,
    },
    /// On a dev device: a new device certificate for the same key from the dev CA made at
    /// provisioning (what sensors and browsers trust stays the same).
    ReissueDev {
        /// The daemon's configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Days of validity.
        #[arg(long, default_value_t = 825, value_parser = clap::value_parser!(u32).range(1..=825))]
        days: u32,
    },
    /// A certificate request (PKCS#10, PEM) for the device key, for a CA to issue a renewed
    /// device certificate by hand; the key stays sealed in the store.
    Csr {
        /// The daemon's configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Write it here (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Options of the API client commands.
#[derive(Debug, Args)]
struct ClientArgs {
    /// The session file (default: KAWAL_SESSION, else $XDG_RUNTIME_DIR/kawal/session, else
    /// ~/.config/kawal/session).
    #[arg(long, global = true)]
    session_file: Option<PathBuf>,
    /// Read passwords from stdin, one per line in the order the prompts ask (no confirmation
    /// line), instead of the terminal.
    #[arg(long, global = true)]
    password_stdin: bool,
}

/// `kawal sensor`: the operator's actions, and the sensor's own enrolment.
#[derive(Debug, Subcommand)]
enum SensorCmd {
    #[command(flatten)]
    Manage(client::sensor::SensorAction),
    /// On the sensor: make a key, enrol at the gateway's EST with a one-time token (read from
    /// stdin), and write sensor.key.pem, sensor.crt.pem and sensor-ca.crt.pem into --out.
    EstEnroll {
        /// The gateway's API, https://host:port.
        #[arg(long)]
        url: String,
        /// The CA that issued the gateway's API certificate (PEM).
        #[arg(long)]
        ca: PathBuf,
        /// The sensor's name, as enrolled.
        #[arg(long)]
        name: String,
        /// Read the token from stdin (the only way: tokens never go on the command line).
        #[arg(long, required = true)]
        token_stdin: bool,
        /// Where to write the key and certificates.
        #[arg(long)]
        out: PathBuf,
    },
    /// On the sensor: renew before expiry with the current certificate (EST simplereenroll);
    /// a new key is made and the files in --dir are replaced.
    EstReenroll {
        /// The gateway's API, https://host:port.
        #[arg(long)]
        url: String,
        /// The CA that issued the gateway's API certificate (PEM).
        #[arg(long)]
        ca: PathBuf,
        /// The sensor's name.
        #[arg(long)]
        name: String,
        /// The folder holding sensor.key.pem and sensor.crt.pem.
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum RecoverAction {
    /// Clear an account's lockout directly in the store (works beside a running daemon).
    Unlock {
        /// User name.
        user: String,
        /// The daemon's configuration file.
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Json,
    Md,
    Html,
}

#[derive(Debug, Subcommand)]
enum LogAction {
    /// Verify the chain, signatures and anchor; names the first bad entry. With --remote,
    /// verify a log collector's copy against this device's keys and its local log instead.
    Verify {
        #[command(flatten)]
        dir: DataDir,
        /// Take the data folder and passphrase file from this configuration.
        #[arg(long)]
        config: Option<PathBuf>,
        /// A collector's copy (one syslog message per line, as forwarded): checked for gaps,
        /// duplicates, chain breaks and signatures, and against the local log, which must
        /// still hold everything the copy holds (a truncated local log fails).
        #[arg(long, value_name = "FILE")]
        remote: Option<PathBuf>,
    },
    /// Print entries.
    Show {
        #[command(flatten)]
        dir: DataDir,
        /// Only events with this name or below it (e.g. "daemon").
        #[arg(long)]
        event: Option<String>,
        /// Only entries from this sequence number on.
        #[arg(long)]
        since: Option<u64>,
        /// Only this outcome.
        #[arg(long)]
        outcome: Option<String>,
        /// Print JSON lines as stored.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum KeysAction {
    /// Rotate one purpose's key: new version, records re-sealed, old version destroyed.
    Rotate {
        #[command(flatten)]
        dir: DataDir,
        /// store-data, pii, record-index, session, config-mac, backup or audit-signing.
        purpose: String,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Validate a configuration file exactly as `kawal run` does.
    Check {
        /// The file.
        file: PathBuf,
    },
}

/// Entry point: parse, run, map errors to exit codes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            output::err(&format!("kawal: {e}"));
            ExitCode::from(e.exit as u8)
        }
    }
}

/// Libraries whose debug and trace events are left out of release builds whatever `KAWAL_LOG`
/// says: they log protocol internals, and a release build logs kawal's own events only beyond
/// `info` (docs/hardening.md, ST-D-24).
const QUIET_IN_RELEASE: &[&str] = &[
    "rustls",
    "tokio_rustls",
    "hyper",
    "hyper_util",
    "h2",
    "axum",
    "tower",
    "tower_http",
    "reqwest",
    "redb",
    "mio",
    "tokio",
];

fn init_tracing() {
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("KAWAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if !cfg!(debug_assertions) {
        for target in QUIET_IN_RELEASE {
            // Replaces a directive for the same target given in KAWAL_LOG.
            if let Ok(d) = format!("{target}=info").parse() {
                filter = filter.add_directive(d);
            }
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn passphrase(d: &DataDir) -> Result<Option<kawal_crypto::secret::SecretString>> {
    crate::device::read_passphrase(d.passphrase_file.as_deref())
}

fn dispatch(command: Command) -> Result<()> {
    match command {
        Command::Init {
            mut dir,
            config,
            dev,
            uid,
            vendor_namespace,
            csr_out,
            label_out,
        } => {
            let mut argon2 = kawal_crypto::password::Argon2Params::OWASP;
            if let Some(path) = &config {
                let cfg = config::load(path)?;
                dir.data_dir = cfg.data_dir.clone();
                if cfg.passphrase_file.is_some() {
                    dir.passphrase_file = cfg.passphrase_file.clone();
                }
                argon2 = cfg.argon2;
            }
            let p = provision::init(&provision::InitOptions {
                data_dir: provision::absolute(&dir.data_dir)?,
                dev,
                uid,
                vendor_namespace,
                csr_out,
                label_out: label_out.clone(),
                passphrase: passphrase(&dir)?,
                argon2,
            })?;
            output::line(&format!(
                "device {} provisioned in {}",
                p.uid,
                dir.data_dir.display()
            ));
            if let Some(csr) = p.csr {
                output::line(&format!("certificate signing request: {}", csr.display()));
            }
            match (p.admin_password, label_out) {
                (Some(pw), _) => output::line(&zeroize::Zeroizing::new(format!(
                    "admin password (shown once, change at first login): {}",
                    pw.expose()
                ))),
                (None, Some(l)) => {
                    output::line(&format!("admin password written to {}", l.display()));
                }
                (None, None) => {}
            }
            Ok(())
        }
        Command::Run { config } => {
            let cfg = config::load(&config)?;
            let pass = crate::device::read_passphrase(cfg.passphrase_file.as_deref())?;
            daemon::run(&cfg, pass.as_ref())
        }
        Command::Demo {
            dir,
            upstream,
            upstream_ca,
            upstream_server_name,
        } => daemon::demo(
            &dir,
            upstream
                .map(|address| daemon::DemoUpstream {
                    address,
                    ca: upstream_ca.unwrap_or_default(),
                    server_name: upstream_server_name,
                })
                .as_ref(),
        ),
        Command::Audit {
            mut dir,
            config,
            format,
            out,
        } => {
            let cfg = config.as_deref().map(config::load).transpose()?;
            if let Some(cfg) = &cfg {
                dir.data_dir = cfg.data_dir.clone();
                if cfg.passphrase_file.is_some() {
                    dir.passphrase_file = cfg.passphrase_file.clone();
                }
            }
            let dev = Device::open(&dir.data_dir, passphrase(&dir)?.as_ref())?;
            let report = evaluate::report_with(&dev, cfg.as_ref())?;
            let text = match format {
                Format::Json => {
                    kawal_compliance::render::to_json(&report).or_exit(Exit::Failure, "json")?
                }
                Format::Md => kawal_compliance::render::to_markdown(&report),
                Format::Html => kawal_compliance::render::to_html(&report),
            };
            let log = dev.audit_log(crate::device::ANCHOR_EVERY)?;
            crate::device::record(
                &log,
                kawal_audit::Event::new("report.generated", "kawal-audit", Outcome::Info)
                    .with("met", report.summary.met as u64)
                    .with("not_met", report.summary.not_met as u64),
            )?;
            log.close().or_exit(Exit::Io, "audit log")?;
            match out {
                Some(path) => {
                    crate::device::write_atomic(&path, text.as_bytes(), 0o644)?;
                    output::line(&format!(
                        "report written to {}: {} met, {} not met, {} manual, {} not applicable",
                        path.display(),
                        report.summary.met,
                        report.summary.not_met,
                        report.summary.manual,
                        report.summary.not_applicable
                    ));
                }
                None => output::raw(&text),
            }
            Ok(())
        }
        Command::Selftest { dir } => {
            daemon::selftest_cmd(&dir.data_dir, passphrase(&dir)?.as_ref())
        }
        Command::Log { action } => log_cmd(action),
        Command::Keys {
            action: KeysAction::Rotate { dir, purpose },
        } => rotate(&dir.data_dir, passphrase(&dir)?.as_ref(), &purpose),
        Command::Config {
            action: ConfigAction::Check { file },
        } => {
            let cfg = config::load(&file)?;
            output::line(&format!("{}: valid", file.display()));
            for item in cfg.insecure {
                output::line(&format!("warning: insecure setting: {item}"));
            }
            Ok(())
        }
        Command::Reset { dir, secure, yes } => {
            if !secure {
                return Err(CliError::new(Exit::NoPerm, "only --secure reset exists"));
            }
            reset::reset_secure(&dir.data_dir, yes, passphrase(&dir)?.as_ref())
        }
        Command::Login {
            user,
            url,
            ca,
            config,
            client,
        } => {
            let target = client::Target::resolve(url.as_deref(), ca.as_deref(), config.as_deref())?;
            let file = client::session_path(client.session_file.as_deref())?;
            client::login(
                target,
                &user,
                &client::Passwords::new(client.password_stdin),
                &file,
            )
        }
        Command::Logout { client } => {
            client::logout(&client::session_path(client.session_file.as_deref())?)
        }
        Command::User { action, client } => {
            let file = client::session_path(client.session_file.as_deref())?;
            client::user(
                action,
                &client::Passwords::new(client.password_stdin),
                &file,
            )
        }
        Command::Sensor {
            action: SensorCmd::Manage(action),
            client,
        } => client::sensor::sensor(
            action,
            &client::session_path(client.session_file.as_deref())?,
        ),
        Command::Sensor {
            action:
                SensorCmd::EstEnroll {
                    url,
                    ca,
                    name,
                    token_stdin: _,
                    out,
                },
            client: _,
        } => {
            let token = read_token_line()?;
            client::sensor::est_enroll(&url, &ca, &name, &token, &out)
        }
        Command::Sim { args, client } => client::sim::sim(
            &args,
            &client::session_path(client.session_file.as_deref())?,
        ),
        Command::Sensor {
            action: SensorCmd::EstReenroll { url, ca, name, dir },
            client: _,
        } => client::sensor::est_reenroll(&url, &ca, &name, &dir),
        Command::Recover {
            action: RecoverAction::Unlock { user, config },
        } => recover::unlock(&config, &user),
        Command::PasswordStrength { hints } => crate::strength::run(&hints),
        Command::Cert {
            action: CertAction::Install { config, cert },
        } => crate::devcert::install(&config, &cert),
        Command::Cert {
            action: CertAction::ReissueDev { config, days },
        } => crate::devcert::reissue_dev(&config, days),
        Command::Cert {
            action: CertAction::Csr { config, out },
        } => crate::devcert::csr(&config, out.as_deref()),
        Command::Integrity { action } => integrity_cmd(action),
        Command::Boot { config, supervise } => crate::boot::boot(&config, supervise),
        Command::Update {
            action: UpdateCmd::Device(action),
            client,
        } => client::update::update(
            action,
            &client::Passwords::new(client.password_stdin),
            &client::session_path(client.session_file.as_deref())?,
        ),
        Command::Update {
            action: UpdateCmd::Bundle(args),
            client: _,
        } => crate::update::vendor::bundle_cmd(&args),
        Command::Update {
            action: UpdateCmd::Repo { action },
            client: _,
        } => match action {
            RepoAction::Init { dir, keys } => crate::update::vendor::repo_init(&dir, keys),
            RepoAction::Add { dir, bundle } => crate::update::vendor::repo_add(&dir, &bundle),
            RepoAction::Sign { dir } => crate::update::vendor::repo_sign(&dir),
            RepoAction::Publish { dir, out } => crate::update::vendor::repo_publish(&dir, &out),
        },
        Command::Tamper {
            action: TamperAction::Status { data_dir, config },
        } => {
            let dir = match &config {
                Some(path) => config::load(path)?.data_dir,
                None => data_dir,
            };
            crate::tamper::status_cmd(&dir)
        }
        Command::Exposure {
            action: ExposureAction::Check { config, json },
        } => {
            let settings = match &config {
                Some(path) => config::load(path)?.exposure,
                None => config::platform::ExposureSettings::defaults(&[]),
            };
            crate::exposure::check_cmd(&settings, json)
        }
    }
}

fn integrity_cmd(action: IntegrityAction) -> Result<()> {
    match action {
        IntegrityAction::Keygen { out } => crate::integrity::keygen(&out),
        IntegrityAction::Manifest {
            key,
            product,
            version,
            out,
            root,
            files,
        } => crate::integrity::make(&crate::integrity::ManifestRequest {
            key: &key,
            product: &product,
            version: &version,
            out: &out,
            root: &root,
            files: &files,
        }),
        IntegrityAction::Verify { mut dir, config } => {
            let settings = match &config {
                Some(path) => {
                    let cfg = config::load(path)?;
                    dir.data_dir = cfg.data_dir.clone();
                    if cfg.passphrase_file.is_some() {
                        dir.passphrase_file = cfg.passphrase_file.clone();
                    }
                    cfg.integrity
                }
                None => config::platform::IntegritySettings::defaults(&provision::absolute(
                    &dir.data_dir,
                )?),
            };
            let dev = Device::open(&dir.data_dir, passphrase(&dir)?.as_ref());
            crate::integrity::verify_cmd(dev, &settings)
        }
        IntegrityAction::AcceptConfig { config: path } => {
            let cfg = config::load(&path)?;
            let pass = crate::device::read_passphrase(cfg.passphrase_file.as_deref())?;
            let dev = Device::open(&cfg.data_dir, pass.as_ref())?;
            crate::integrity::accept_config(&dev, &cfg.integrity, &path)
        }
    }
}

/// One line from stdin: an enrolment token (bounded, trimmed).
fn read_token_line() -> Result<zeroize::Zeroizing<String>> {
    use std::io::Read;
    let mut line = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .take(1024)
        .read_to_string(&mut line)
        .or_exit(Exit::Io, "token from stdin")?;
    let token = zeroize::Zeroizing::new(line.trim().to_owned());
    if token.is_empty() || token.len() > 256 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(CliError::new(
            Exit::DataErr,
            "the token on stdin is empty or malformed",
        ));
    }
    Ok(token)
}

fn log_cmd(action: LogAction) -> Result<()> {
    match action {
        LogAction::Verify {
            mut dir,
            config,
            remote,
        } => {
            if let Some(path) = &config {
                let cfg = config::load(path)?;
                dir.data_dir = cfg.data_dir;
                if cfg.passphrase_file.is_some() {
                    dir.passphrase_file = cfg.passphrase_file;
                }
            }
            let dev = Device::open(&dir.data_dir, passphrase(&dir)?.as_ref())?;
            if let Some(copy) = remote {
                return crate::forward::verify_remote_cmd(&dev, &copy);
            }
            match dev.verify_log()? {
                Err(why) => Err(CliError::new(
                    Exit::DataErr,
                    format!("audit log does NOT verify: {why}"),
                )),
                Ok(r) => {
                    output::line(&format!(
                        "audit log OK: {} entries, {} signed checkpoints, last seq {}, anchor {}",
                        r.entries,
                        r.checkpoints,
                        r.last_seq,
                        if r.anchor_checked {
                            "checked"
                        } else {
                            "absent"
                        }
                    ));
                    Ok(())
                }
            }
        }
        LogAction::Show {
            dir,
            event,
            since,
            outcome,
            json,
        } => {
            let outcome = match outcome.as_deref() {
                None => None,
                Some(o) => Some(Outcome::from_name(o).ok_or_else(|| {
                    CliError::new(
                        Exit::Config,
                        "--outcome: one of success, failure, denied, info",
                    )
                })?),
            };
            let filter = Filter {
                event_prefix: event,
                since_seq: since,
                outcome,
                include_checkpoints: json,
            };
            for e in
                kawal_audit::read_entries(&dir.data_dir, filter).or_exit(Exit::Io, "audit log")?
            {
                let e = e.or_exit(Exit::DataErr, "audit log")?;
                if json {
                    output::line(&String::from_utf8_lossy(&e.canonical_bytes()));
                } else {
                    let details = String::from_utf8_lossy(&e.canonical_bytes()).into_owned();
                    let details = details
                        .split("\"details\":")
                        .nth(1)
                        .and_then(|d| d.split(",\"prev\"").next())
                        .unwrap_or("{}")
                        .to_owned();
                    output::line(&format!(
                        "{:>6} {} [{}] {:<22} {:<8} {} {}",
                        e.seq,
                        e.wall,
                        e.clock,
                        e.event,
                        e.outcome.as_str(),
                        e.actor,
                        details
                    ));
                }
            }
            Ok(())
        }
    }
}

fn rotate(
    dir: &std::path::Path,
    pass: Option<&kawal_crypto::secret::SecretString>,
    purpose: &str,
) -> Result<()> {
    use kawal_audit::CheckpointSigner;
    use kawal_crypto::keys::*;
    let dev = Device::open(dir, pass)?;
    let old_signer = dev.audit_signer()?;
    let r = match purpose {
        "store-data" => dev.store.rotate::<StoreData>(),
        "pii" => dev.store.rotate::<Pii>(),
        "record-index" => dev.store.rotate::<RecordIndex>(),
        "session" => dev.store.rotate::<Session>(),
        "config-mac" => dev.store.rotate::<ConfigMac>(),
        "backup" => dev.store.rotate::<Backup>(),
        "audit-signing" => {
            // A running daemon keeps signing with the key it loaded; rotate with it stopped.
            let _lock = crate::device::lock_daemon(&dev.layout, "rotating the audit-signing key")?;
            // Keep the retired public key so checkpoints it signed still verify.
            dev.store
                .put(crate::device::tables::AUDIT_KEYS, &old_signer.key_version().to_string(), &old_signer.public_key())
                .or_exit(Exit::Io, "store")?;
            dev.store.rotate::<AuditSigning>()
        }
        other => {
            return Err(CliError::new(
                Exit::Config,
                format!("unknown purpose '{other}': store-data, pii, record-index, session, config-mac, backup, audit-signing"),
            ));
        }
    }
    .or_exit(Exit::DataErr, "rotation failed; nothing changed")?;
    let log = dev.audit_log(crate::device::ANCHOR_EVERY)?;
    crate::device::record(
        &log,
        kawal_audit::Event::new("keys.rotated", "kawal-keys", Outcome::Success)
            .with("purpose", r.purpose)
            .with("old_version", u64::from(r.old_version))
            .with("new_version", u64::from(r.new_version))
            .with("records_resealed", r.records_resealed),
    )?;
    log.close().or_exit(Exit::Io, "audit log")?;
    output::line(&format!(
        "{}: version {} destroyed, version {} current, {} record(s) re-sealed",
        r.purpose, r.old_version, r.new_version, r.records_resealed
    ));
    Ok(())
}

//! The vendor's side of updates: `kawal update bundle` and `kawal update repo init|add|sign|
//! publish`. These run on the vendor's build machine, never on a device; the keys they make
//! stay there (mode 0600, never printed).
use std::path::{Path, PathBuf};

use kawal_update::bundle::{BundleBuilder, Health, HealthCheck};
use kawal_update::install::{read_bundle_manifest, signed_custom};
use kawal_update::repo::{self, InitOptions, Versions};

use crate::error::{CliError, Context, Exit, Result};
use crate::output;

/// `kawal update bundle`.
#[derive(Debug, Clone, clap::Args)]
pub struct BundleArgs {
    /// The folder whose files become the payload.
    #[arg(long)]
    pub payload: PathBuf,
    /// The product.
    #[arg(long)]
    pub product: String,
    /// The version, e.g. 1.4.2.
    #[arg(long)]
    pub version: String,
    /// The security version (anti-rollback): devices refuse a bundle below theirs.
    #[arg(long)]
    pub security_version: u64,
    /// A compatible hardware id (repeat for several).
    #[arg(long = "hardware", required = true)]
    pub hardware: Vec<String>,
    /// Health checks of the trial: self-test, integrity, upstream (repeat).
    #[arg(long = "check")]
    pub checks: Vec<String>,
    /// Trial boots allowed before the health checks must have passed.
    #[arg(long, default_value_t = 3)]
    pub max_boots: u8,
    /// Seconds allowed for the health checks to pass.
    #[arg(long, default_value_t = 300)]
    pub deadline_s: u32,
    /// Where to write the bundle.
    #[arg(long)]
    pub out: PathBuf,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .or_exit(Exit::Failure, "runtime")
}

fn repo_err(e: &kawal_update::Error) -> CliError {
    CliError::new(Exit::Failure, format!("update repository: {e}"))
}

fn versions_line(what: &str, v: Versions) {
    output::line(&format!(
        "{what}: root v{}, timestamp v{}, snapshot v{}, targets v{}",
        v[0], v[1], v[2], v[3]
    ));
}

/// Writes a bundle of the payload folder.
pub fn bundle_cmd(a: &BundleArgs) -> Result<()> {
    let mut checks = Vec::new();
    for c in &a.checks {
        checks.push(match c.as_str() {
            "self-test" => HealthCheck::SelfTest,
            "integrity" => HealthCheck::Integrity,
            "upstream" => HealthCheck::Upstream,
            other => {
                return Err(CliError::new(
                    Exit::Config,
                    format!("--check {other:?}: self-test, integrity or upstream"),
                ));
            }
        });
    }
    if checks.is_empty() {
        checks.push(HealthCheck::SelfTest);
    }
    let mut b = BundleBuilder::new(
        a.product.clone(),
        a.version.clone(),
        a.security_version,
        a.hardware.clone(),
    );
    b.health(Health::new(checks, a.max_boots, a.deadline_s));
    b.add_folder(&a.payload)
        .map_err(|e| CliError::new(Exit::DataErr, format!("payload: {e}")))?;
    let tmp = a.out.with_extension("partial");
    let file = std::fs::File::create(&tmp).or_exit(Exit::Io, "bundle file")?;
    let manifest = b
        .write(std::io::BufWriter::new(file))
        .map_err(|e| CliError::new(Exit::DataErr, format!("bundle: {e}")))?;
    std::fs::rename(&tmp, &a.out).or_exit(Exit::Io, "bundle file")?;
    output::line(&format!(
        "bundle {} {} (security version {}): {} file(s), {} bytes of payload, written to {}",
        manifest.product(),
        manifest.version(),
        manifest.security_version(),
        manifest.files().len(),
        manifest.total_size(),
        a.out.display()
    ));
    Ok(())
}

/// `kawal update repo init`.
pub fn repo_init(dir: &Path, keys: Option<PathBuf>) -> Result<()> {
    let v = runtime()?
        .block_on(repo::init(
            dir,
            &InitOptions {
                keys_dir: keys,
                ..InitOptions::default()
            },
        ))
        .map_err(|e| repo_err(&e))?;
    versions_line("repository made", v);
    output::line(&format!(
        "install {} on devices as their trusted root ([update] root); keep the keys offline",
        dir.join("metadata/1.root.json").display()
    ));
    Ok(())
}

/// `kawal update repo add`.
pub fn repo_add(dir: &Path, bundle: &Path) -> Result<()> {
    let manifest = read_bundle_manifest(bundle)
        .map_err(|e| CliError::new(Exit::DataErr, format!("bundle: {e}")))?;
    let v = runtime()?
        .block_on(repo::add(dir, bundle, signed_custom(&manifest)))
        .map_err(|e| repo_err(&e))?;
    versions_line(
        &format!("added {} {}", manifest.product(), manifest.version()),
        v,
    );
    Ok(())
}

/// `kawal update repo sign`.
pub fn repo_sign(dir: &Path) -> Result<()> {
    let v = runtime()?
        .block_on(repo::sign(dir))
        .map_err(|e| repo_err(&e))?;
    versions_line("re-signed", v);
    Ok(())
}

/// `kawal update repo publish`.
pub fn repo_publish(dir: &Path, out: &Path) -> Result<()> {
    let v = runtime()?
        .block_on(repo::publish(dir, out))
        .map_err(|e| repo_err(&e))?;
    versions_line(&format!("published to {}", out.display()), v);
    Ok(())
}

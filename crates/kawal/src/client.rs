//! The management commands as clients of the daemon's HTTPS API: `kawal login`, `kawal
//! logout`, `kawal user …` and ([`sensor`]) `kawal sensor …`.
//!
//! - The server is pinned: the CLI trusts only the CA given with `--ca` (or the device's dev CA
//!   found through `--config`); verification is never turned off.
//! - Passwords are read without echo from the terminal, or one per line from stdin with
//!   `--password-stdin`; never from argv.
//! - The session (URL, pinned CA, cookie, CSRF token) lives in a file only the user can read
//!   (mode 0600, written atomically); a file with group or other permissions is refused, and
//!   `kawal logout` ends the session on the server and removes the file.
//! - Sensitive routes need a fresh re-authentication: the CLI asks for the caller's password
//!   again right before the action.
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{BufRead, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use kawal_auth::roles::Role;
use kawal_crypto::secret::SecretString;
use reqwest::blocking::{Client, RequestBuilder};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{CliError, Context, Exit, Result};
use crate::output;

pub mod sensor;
pub mod sim;
pub mod update;

/// The session cookie's name (see `kawal_api::guard::COOKIE`).
const COOKIE: &str = kawal_api::guard::COOKIE;
/// Largest session or CA file read.
const FILE_LIMIT: u64 = 1024 * 1024;
/// Longest password line read from stdin.
const LINE_LIMIT: u64 = 4096;

/// Where the daemon is and which CA to trust for it.
pub struct Target {
    /// `https://host:port`, without a path.
    pub url: String,
    /// PEM of the CA (or CAs) trusted for the server's certificate.
    pub ca_pem: String,
}

impl Target {
    /// The target from `--url`/`--ca`, or from a configuration file: its API address (a
    /// wildcard address means this host) and the dev CA in its data folder.
    pub fn resolve(url: Option<&str>, ca: Option<&Path>, config: Option<&Path>) -> Result<Self> {
        let cfg = config.map(crate::config::load).transpose()?;
        let url = match (url, &cfg) {
            (Some(u), _) => u.to_owned(),
            (None, Some(c)) => {
                let mut addr = c.api;
                if addr.ip().is_unspecified() {
                    addr.set_ip(match addr {
                        std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                        std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                    });
                }
                format!("https://{addr}")
            }
            (None, None) => {
                return Err(CliError::new(
                    Exit::Config,
                    "give --url and --ca, or --config with the daemon's configuration",
                ));
            }
        };
        let url = check_url(&url)?;
        let ca_path = match (ca, &cfg) {
            (Some(p), _) => p.to_owned(),
            (None, Some(c)) => {
                let dev_ca = c.data_dir.join("pki").join("dev-ca.crt.pem");
                if !dev_ca.exists() {
                    return Err(CliError::new(
                        Exit::Config,
                        format!(
                            "{} not found (not a dev device): give --ca with the CA that issued the device certificate",
                            dev_ca.display()
                        ),
                    ));
                }
                dev_ca
            }
            (None, None) => {
                return Err(CliError::new(
                    Exit::Config,
                    "--ca is required with --url: the CA that issued the device certificate",
                ));
            }
        };
        let ca_pem = read_limited(&ca_path, "CA file")?;
        let ca_pem = String::from_utf8(ca_pem.to_vec())
            .map_err(|_| CliError::new(Exit::DataErr, "the CA file is not PEM text"))?;
        Ok(Self { url, ca_pem })
    }
}

/// Accepts only `https://host[:port][/]`: no credentials, path, query or fragment.
pub(crate) fn check_url(url: &str) -> Result<String> {
    let bad = |why: &str| CliError::new(Exit::Config, format!("--url: {why}"));
    let u = reqwest::Url::parse(url).map_err(|_| bad("not a URL"))?;
    if u.scheme() != "https" {
        return Err(bad("must be https://"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(bad("must not hold credentials"));
    }
    if u.path() != "/" || u.query().is_some() || u.fragment().is_some() {
        return Err(bad("give only https://host:port"));
    }
    let host = u.host_str().ok_or_else(|| bad("no host"))?;
    Ok(match u.port() {
        Some(p) => format!("https://{host}:{p}"),
        None => format!("https://{host}"),
    })
}

pub(crate) fn read_limited(path: &Path, what: &str) -> Result<Zeroizing<Vec<u8>>> {
    let f = fs::File::open(path)
        .map_err(|e| CliError::new(Exit::NoInput, format!("{what} {}: {e}", path.display())))?;
    let mut buf = Zeroizing::new(Vec::new());
    f.take(FILE_LIMIT + 1)
        .read_to_end(&mut buf)
        .or_exit(Exit::Io, &format!("{what} {}", path.display()))?;
    if buf.len() as u64 > FILE_LIMIT {
        return Err(CliError::new(
            Exit::DataErr,
            format!("{what} {} is too large", path.display()),
        ));
    }
    Ok(buf)
}

/// The session file: `--session-file`, else `KAWAL_SESSION`, else
/// `$XDG_RUNTIME_DIR/kawal/session`, else `~/.config/kawal/session`.
pub fn session_path(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_owned());
    }
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(p) = env("KAWAL_SESSION") {
        return Ok(p);
    }
    if let Some(d) = env("XDG_RUNTIME_DIR") {
        return Ok(d.join("kawal").join("session"));
    }
    if let Some(h) = env("HOME") {
        return Ok(h.join(".config").join("kawal").join("session"));
    }
    Err(CliError::new(
        Exit::Config,
        "no place for the session file: give --session-file or set KAWAL_SESSION",
    ))
}

/// What the session file holds. The cookie and CSRF token are secrets: never printed, wiped
/// on drop.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct Session {
    url: String,
    ca_pem: String,
    user: String,
    cookie: String,
    csrf: String,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.cookie.zeroize();
        self.csrf.zeroize();
    }
}

impl Session {
    fn load(path: &Path) -> Result<Self> {
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CliError::new(
                    Exit::NoPerm,
                    format!(
                        "not logged in (no session file {}): run `kawal login`",
                        path.display()
                    ),
                ));
            }
            Err(e) => {
                return Err(CliError::new(
                    Exit::Io,
                    format!("session file {}: {e}", path.display()),
                ));
            }
        };
        if !meta.file_type().is_file() {
            return Err(CliError::new(
                Exit::NoPerm,
                format!("session file {} is not a regular file", path.display()),
            ));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(CliError::new(
                Exit::NoPerm,
                format!(
                    "session file {} has mode {mode:o}: others may read it; remove it and log in again",
                    path.display()
                ),
            ));
        }
        let bytes = read_limited(path, "session file")?;
        serde_json::from_slice(&bytes).map_err(|_| {
            CliError::new(
                Exit::DataErr,
                format!(
                    "session file {} is damaged: remove it and log in again",
                    path.display()
                ),
            )
        })
    }

    /// Writes the file atomically with mode 0600 (its folder, if made, with 0700).
    fn save(&self, path: &Path) -> Result<()> {
        let what = format!("session file {}", path.display());
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .or_exit(Exit::Io, &what)?;
        }
        let bytes = Zeroizing::new(serde_json::to_vec(self).or_exit(Exit::Failure, &what)?);
        let mut name = path.file_name().unwrap_or_default().to_owned();
        name.push(".tmp");
        let tmp = path.with_file_name(name);
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(CliError::new(Exit::Io, format!("{what}: {e}"))),
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .or_exit(Exit::Io, &what)?;
        f.write_all(&bytes).or_exit(Exit::Io, &what)?;
        f.sync_all().or_exit(Exit::Io, &what)?;
        fs::rename(&tmp, path).or_exit(Exit::Io, &what)
    }

    fn remove(path: &Path) -> Result<()> {
        match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CliError::new(
                Exit::Io,
                format!("cannot remove session file {}: {e}", path.display()),
            )),
        }
    }
}

/// Where passwords come from: the terminal without echo, or stdin one per line.
pub struct Passwords {
    stdin: bool,
}

impl Passwords {
    /// From stdin (`--password-stdin`) or the terminal.
    pub fn new(stdin: bool) -> Self {
        Self { stdin }
    }

    /// One password.
    fn read(&self, prompt: &str) -> Result<SecretString> {
        let pw = if self.stdin {
            let mut line = Zeroizing::new(String::new());
            let mut input = std::io::stdin().lock();
            let n = (&mut input)
                .take(LINE_LIMIT)
                .read_line(&mut line)
                .or_exit(Exit::NoInput, "--password-stdin")?;
            if n == 0 {
                return Err(CliError::new(
                    Exit::NoInput,
                    format!(
                        "--password-stdin: no line left for \"{}\"",
                        prompt.trim_end_matches(": ")
                    ),
                ));
            }
            if !line.ends_with('\n') && n as u64 >= LINE_LIMIT {
                return Err(CliError::new(
                    Exit::DataErr,
                    "--password-stdin: line too long",
                ));
            }
            let text = line.strip_suffix('\n').unwrap_or(&line);
            let text = text.strip_suffix('\r').unwrap_or(text);
            SecretString::new(text.to_owned())
        } else {
            SecretString::new(rpassword::prompt_password(prompt).map_err(|e| {
                CliError::new(
                    Exit::NoInput,
                    format!(
                        "cannot read the password from the terminal ({e}): use --password-stdin"
                    ),
                )
            })?)
        };
        if pw.expose().is_empty() {
            return Err(CliError::new(Exit::DataErr, "empty password"));
        }
        Ok(pw)
    }

    /// A new password: typed twice on a terminal, one line on stdin.
    fn new_password(&self, prompt: &str) -> Result<SecretString> {
        let pw = self.read(prompt)?;
        if !self.stdin {
            let again = self.read("Repeat it: ")?;
            if !kawal_crypto::ct_eq(pw.expose().as_bytes(), again.expose().as_bytes()) {
                return Err(CliError::new(Exit::DataErr, "the passwords do not match"));
            }
        }
        Ok(pw)
    }
}

/// A JSON body that may hold passwords: serialised into a buffer wiped after the call.
fn body(v: &impl Serialize) -> Result<Zeroizing<Vec<u8>>> {
    Ok(Zeroizing::new(
        serde_json::to_vec(v).or_exit(Exit::Failure, "request body")?,
    ))
}

/// An API client over a session; the session file is rewritten when the server rotates the
/// session ID (re-authentication, password change).
struct Api {
    http: Client,
    session: Session,
    file: Option<PathBuf>,
}

impl Api {
    fn new(session: Session, file: Option<PathBuf>) -> Result<Self> {
        let certs = reqwest::Certificate::from_pem_bundle(session.ca_pem.as_bytes())
            .map_err(|_| CliError::new(Exit::DataErr, "the CA file holds no usable certificate"))?;
        if certs.is_empty() {
            return Err(CliError::new(
                Exit::DataErr,
                "the CA file holds no certificate",
            ));
        }
        let http = Client::builder()
            .tls_certs_only(certs)
            .https_only(true)
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .or_exit(Exit::Failure, "HTTPS client")?;
        Ok(Self {
            http,
            session,
            file,
        })
    }

    fn open(file: &Path) -> Result<Self> {
        Self::new(Session::load(file)?, Some(file.to_owned()))
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let changes = method != Method::GET;
        let mut b = self
            .http
            .request(method, format!("{}{path}", self.session.url));
        if !self.session.cookie.is_empty() {
            b = b.header(
                reqwest::header::COOKIE,
                format!("{COOKIE}={}", self.session.cookie),
            );
        }
        if changes && !self.session.csrf.is_empty() {
            b = b.header(kawal_api::guard::CSRF_HEADER, &self.session.csrf);
        }
        b
    }

    /// Sends one request; keeps a new cookie or CSRF token; maps refusals to errors.
    fn call(
        &mut self,
        method: Method,
        path: &str,
        json: Option<&Zeroizing<Vec<u8>>>,
        proof: Option<&str>,
    ) -> Result<Value> {
        let mut b = self.request(method, path);
        if let Some(j) = json {
            b = b
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(j.to_vec());
        }
        if let Some(p) = proof {
            b = b.header(kawal_api::guard::REAUTH_HEADER, p);
        }
        let res = b.send().map_err(|e| {
            CliError::new(
                Exit::Failure,
                format!("cannot reach {}: {}", self.session.url, chain(&e)),
            )
        })?;
        let status = res.status();
        let mut rotated = false;
        for v in res.headers().get_all(reqwest::header::SET_COOKIE) {
            let Some((k, val)) = v
                .to_str()
                .ok()
                .and_then(|v| v.split(';').next())
                .and_then(|p| p.split_once('='))
            else {
                continue;
            };
            if k.trim() == COOKIE {
                self.session.cookie.zeroize();
                self.session.cookie = val.trim().to_owned();
                rotated = true;
            }
        }
        let text = Zeroizing::new(res.text().unwrap_or_default());
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if let Some(t) = v.get("csrf_token").and_then(Value::as_str) {
            self.session.csrf.zeroize();
            self.session.csrf = t.to_owned();
            rotated = true;
        }
        if rotated
            && status.is_success()
            && let Some(f) = &self.file
        {
            self.session.save(f)?;
        }
        if status.is_success() {
            Ok(v)
        } else {
            Err(refusal(status, &v))
        }
    }

    /// Re-authenticates with the caller's password; returns the single-use proof.
    fn reauth(&mut self, password: &SecretString) -> Result<Zeroizing<String>> {
        #[derive(Serialize)]
        struct B<'a> {
            password: &'a str,
        }
        let v = self.call(
            Method::POST,
            "/api/v1/reauth",
            Some(&body(&B {
                password: password.expose(),
            })?),
            None,
        )?;
        v.get("proof")
            .and_then(Value::as_str)
            .map(|p| Zeroizing::new(p.to_owned()))
            .ok_or_else(|| {
                CliError::new(Exit::Failure, "the server sent no re-authentication proof")
            })
    }

    /// Changes the caller's own password (the server ends its sessions and starts a new one).
    fn change_password(&mut self, current: &SecretString, new: &SecretString) -> Result<()> {
        #[derive(Serialize)]
        struct B<'a> {
            current: &'a str,
            new: &'a str,
        }
        self.call(
            Method::POST,
            "/api/v1/password",
            Some(&body(&B {
                current: current.expose(),
                new: new.expose(),
            })?),
            None,
        )
        .map(drop)
    }
}

/// An error and its causes on one line (TLS failures say why in a source).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

/// Control characters from the server are not passed to the terminal.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(512)
        .collect()
}

/// The server's refusal as an error: its message, the broken password rules, and a hint.
fn refusal(status: StatusCode, v: &Value) -> CliError {
    let msg = v
        .get("error")
        .and_then(Value::as_str)
        .map_or_else(|| "no details".to_owned(), clean);
    let mut text = format!("refused by the server ({}): {msg}", status.as_u16());
    if let Some(rules) = v.get("rules").and_then(Value::as_array) {
        let rules: Vec<String> = rules.iter().filter_map(Value::as_str).map(clean).collect();
        text.push_str(&format!(" ({})", rules.join("; ")));
    }
    if let Some(why) = v.get("session_ended").and_then(Value::as_str) {
        text.push_str(&format!("; the session ended ({})", clean(why)));
    }
    if status == StatusCode::UNAUTHORIZED && msg == "authentication required" {
        text.push_str("; run `kawal login`");
    }
    if msg == "password change required" {
        text.push_str("; run `kawal login` again or `kawal user passwd`");
    }
    let exit = match status.as_u16() {
        400 | 413 | 415 | 422 => Exit::DataErr,
        401 | 403 | 409 => Exit::NoPerm,
        404 => Exit::NoInput,
        _ => Exit::Failure,
    };
    CliError::new(exit, text)
}

/// `kawal login`: logs in, changes a pre-installed or reset password when the server asks,
/// and keeps the session in `file`.
pub fn login(target: Target, user: &str, pw: &Passwords, file: &Path) -> Result<()> {
    check_name(user)?;
    // A session this file still holds is ended first: admins may hold only one.
    if let Ok(mut old) = Api::open(file) {
        let _ = old.call(Method::POST, "/api/v1/logout", None, None);
    }
    Session::remove(file)?;
    let password = pw.read(&format!("Password for {user}: "))?;
    let mut api = Api::new(
        Session {
            url: target.url,
            ca_pem: target.ca_pem,
            user: user.to_owned(),
            cookie: String::new(),
            csrf: String::new(),
        },
        None,
    )?;
    #[derive(Serialize)]
    struct B<'a> {
        username: &'a str,
        password: &'a str,
    }
    let v = api.call(
        Method::POST,
        "/api/v1/login",
        Some(&body(&B {
            username: user,
            password: password.expose(),
        })?),
        None,
    )?;
    if api.session.cookie.is_empty() {
        return Err(CliError::new(
            Exit::Failure,
            "the server set no session cookie",
        ));
    }
    if v.get("must_change_password").and_then(Value::as_bool) == Some(true) {
        output::err("This password must be changed before the account can be used.");
        let new = pw.new_password("New password: ")?;
        if let Err(e) = api.change_password(&password, &new) {
            let _ = api.call(Method::POST, "/api/v1/logout", None, None);
            return Err(e);
        }
        output::line("password changed");
    }
    api.session.save(file)?;
    api.file = Some(file.to_owned());
    let role = v
        .get("role")
        .and_then(Value::as_str)
        .map_or_else(String::new, clean);
    output::line(&format!(
        "logged in to {} as {user} ({role}); session kept in {}",
        api.session.url,
        file.display()
    ));
    Ok(())
}

/// `kawal logout`: ends the session on the server and removes the file either way.
pub fn logout(file: &Path) -> Result<()> {
    let mut api = Api::open(file)?;
    let ended = api.call(Method::POST, "/api/v1/logout", None, None);
    Session::remove(file)?;
    match ended {
        Ok(_) => output::line("logged out"),
        Err(e) => output::line(&format!(
            "session file removed; the server did not end the session: {e}"
        )),
    }
    Ok(())
}

/// A `kawal user` action.
#[derive(Debug, clap::Subcommand)]
pub enum UserAction {
    /// List accounts.
    List,
    /// Add an account; its initial password must be changed at first login.
    Add {
        /// User name.
        name: String,
        /// admin, operator, updater or auditor (default: the least role).
        #[arg(long)]
        role: Option<String>,
    },
    /// Change an account's role.
    Role {
        /// User name.
        name: String,
        /// admin, operator, updater or auditor.
        role: String,
    },
    /// Disable an account and end its sessions.
    Disable {
        /// User name.
        name: String,
    },
    /// Enable an account.
    Enable {
        /// User name.
        name: String,
    },
    /// Remove an account.
    Remove {
        /// User name.
        name: String,
    },
    /// Change your password, or (administrators) set a new initial password for NAME.
    Passwd {
        /// The account to reset; your own if omitted.
        name: Option<String>,
    },
    /// Clear an account's lockout.
    Unlock {
        /// User name.
        name: String,
    },
}

fn check_name(name: &str) -> Result<()> {
    kawal_auth::accounts::validate_name(name)
        .map_err(|e| CliError::new(Exit::DataErr, e.to_string()))
}

fn check_role(role: &str) -> Result<()> {
    role.parse::<Role>().map(drop).map_err(|_| {
        let all: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
        CliError::new(
            Exit::DataErr,
            format!("unknown role '{}': one of {}", clean(role), all.join(", ")),
        )
    })
}

/// Runs a `kawal user` action over the session in `file`.
pub fn user(action: UserAction, pw: &Passwords, file: &Path) -> Result<()> {
    let mut api = Api::open(file)?;
    let me = api.session.user.clone();
    let confirm = |pw: &Passwords| pw.read(&format!("Your password ({me}) to confirm: "));
    match action {
        UserAction::List => {
            let v = api.call(Method::GET, "/api/v1/accounts", None, None)?;
            print_accounts(&v);
        }
        UserAction::Add { name, role } => {
            check_name(&name)?;
            if let Some(r) = &role {
                check_role(r)?;
            }
            let initial = pw.new_password(&format!("Initial password for {name}: "))?;
            let mine = confirm(pw)?;
            let proof = api.reauth(&mine)?;
            #[derive(Serialize)]
            struct B<'a> {
                username: &'a str,
                #[serde(skip_serializing_if = "Option::is_none")]
                role: Option<&'a str>,
                password: &'a str,
            }
            let v = api.call(
                Method::POST,
                "/api/v1/accounts",
                Some(&body(&B {
                    username: &name,
                    role: role.as_deref(),
                    password: initial.expose(),
                })?),
                Some(&proof),
            )?;
            let role = v
                .get("role")
                .and_then(Value::as_str)
                .map_or_else(String::new, clean);
            output::line(&format!(
                "account {name} added ({role}); the password must be changed at first login"
            ));
        }
        UserAction::Role { name, role } => {
            check_name(&name)?;
            check_role(&role)?;
            let mine = confirm(pw)?;
            let proof = api.reauth(&mine)?;
            #[derive(Serialize)]
            struct B<'a> {
                role: &'a str,
            }
            let v = api.call(
                Method::POST,
                &format!("/api/v1/accounts/{name}/role"),
                Some(&body(&B { role: &role })?),
                Some(&proof),
            )?;
            output::line(&format!("{name}: role {}", change(&v, &role)));
        }
        UserAction::Disable { name } => {
            simple(&mut api, &name, "disable", "disabled; its sessions ended")?;
        }
        UserAction::Enable { name } => {
            simple(&mut api, &name, "enable", "enabled")?;
        }
        UserAction::Unlock { name } => {
            check_name(&name)?;
            let v = api.call(
                Method::POST,
                &format!("/api/v1/accounts/{name}/unlock"),
                None,
                None,
            )?;
            output::line(&format!("{name}: unlocked ({})", change(&v, "done")));
        }
        UserAction::Remove { name } => {
            check_name(&name)?;
            let mine = confirm(pw)?;
            let proof = api.reauth(&mine)?;
            api.call(
                Method::DELETE,
                &format!("/api/v1/accounts/{name}"),
                None,
                Some(&proof),
            )?;
            output::line(&format!("account {name} removed"));
        }
        UserAction::Passwd { name: None } => {
            let current = pw.read(&format!("Current password ({me}): "))?;
            let new = pw.new_password("New password: ")?;
            api.change_password(&current, &new)?;
            output::line("password changed; other sessions of this account have ended");
        }
        UserAction::Passwd { name: Some(name) } => {
            check_name(&name)?;
            let initial = pw.new_password(&format!("New initial password for {name}: "))?;
            let mine = confirm(pw)?;
            let proof = api.reauth(&mine)?;
            #[derive(Serialize)]
            struct B<'a> {
                password: &'a str,
            }
            api.call(
                Method::POST,
                &format!("/api/v1/accounts/{name}/password"),
                Some(&body(&B {
                    password: initial.expose(),
                })?),
                Some(&proof),
            )?;
            output::line(&format!(
                "{name}: new initial password set; it must be changed at next login"
            ));
        }
    }
    Ok(())
}

fn simple(api: &mut Api, name: &str, what: &str, done: &str) -> Result<()> {
    check_name(name)?;
    api.call(
        Method::POST,
        &format!("/api/v1/accounts/{name}/{what}"),
        None,
        None,
    )?;
    output::line(&format!("{name}: {done}"));
    Ok(())
}

fn change(v: &Value, fallback: &str) -> String {
    v.get("change")
        .and_then(Value::as_str)
        .map_or_else(|| fallback.to_owned(), clean)
}

fn print_accounts(v: &Value) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let empty = Vec::new();
    let list = v
        .get("accounts")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    let field = |a: &Value, k: &str| {
        a.get(k)
            .and_then(Value::as_str)
            .map_or_else(String::new, clean)
    };
    output::line(&format!(
        "{:<32} {:<9} {:<22} {:<12} {}",
        "USER", "ROLE", "STATE", "PASSWORD", "CREATED"
    ));
    for a in list {
        let locked = a
            .get("locked_until")
            .and_then(Value::as_u64)
            .filter(|&u| u > now);
        let state = if a.get("disabled").and_then(Value::as_bool) == Some(true) {
            "disabled".to_owned()
        } else if let Some(u) = locked {
            format!("locked ({} min left)", (u - now).div_ceil(60))
        } else {
            "active".to_owned()
        };
        let password = if a.get("must_change").and_then(Value::as_bool) == Some(true) {
            "must change"
        } else {
            "set"
        };
        output::line(&format!(
            "{:<32} {:<9} {:<22} {:<12} {}",
            field(a, "username"),
            field(a, "role"),
            state,
            password,
            field(a, "created_at")
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_https_origins_are_accepted() {
        assert_eq!(
            check_url("https://127.0.0.1:8443/").ok().as_deref(),
            Some("https://127.0.0.1:8443")
        );
        assert_eq!(
            check_url("https://[::1]:8443").ok().as_deref(),
            Some("https://[::1]:8443")
        );
        for bad in [
            "http://127.0.0.1:8443",
            "https://u:p@127.0.0.1:8443",
            "https://127.0.0.1:8443/api",
            "https://127.0.0.1:8443/?x=1",
            "127.0.0.1:8443",
            "",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refusals_keep_the_servers_reason_and_map_to_exit_codes() {
        let e = refusal(
            StatusCode::CONFLICT,
            &serde_json::json!({ "error": "the last enabled administrator cannot be removed" }),
        );
        assert_eq!(e.exit, Exit::NoPerm);
        assert!(e.message.contains("(409): the last enabled administrator"));
        let e = refusal(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({ "error": "password rejected", "rules": ["too short\u{1b}[2J"] }),
        );
        assert_eq!(e.exit, Exit::DataErr);
        assert!(e.message.contains("too short?[2J"), "{}", e.message);
        let e = refusal(
            StatusCode::UNAUTHORIZED,
            &serde_json::json!({ "error": "authentication required", "session_ended": "idle" }),
        );
        assert!(e.message.contains("ended (idle)") && e.message.contains("kawal login"));
        assert_eq!(
            refusal(StatusCode::NOT_FOUND, &Value::Null).exit,
            Exit::NoInput
        );
    }
}

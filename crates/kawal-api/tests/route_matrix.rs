//! The route table and what is generated from it: the checked-in access matrix, the OpenAPI
//! document, and the request-body parsers under a deterministic mutation run (the same
//! functions the `fuzz/` target drives). The live role × route walk is in
//! `crates/kawal/tests/api_security.rs`, against the real daemon.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failure should stop the test loudly"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use kawal_api::api::parse;
use kawal_api::routes::{Access, Kind, ROUTES, matrix_markdown};
use kawal_auth::roles::Role;

fn doc_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/access-matrix.md")
}

/// G045: AU-1-2, AU-1-5, AU-1-6
/// `docs/access-matrix.md` is exactly what the route table generates.
#[test]
fn the_access_matrix_document_is_current() {
    let want = matrix_markdown();
    let path = doc_path();
    if std::env::var_os("KAWAL_BLESS").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/access-matrix.md is stale; regenerate it with \
         `KAWAL_BLESS=1 cargo test -p kawal-api --test route_matrix`"
    );
}

/// G045: AU-1-2, AU-1-5, AU-1-6
/// The table is well formed: no route twice, every non-public route names who may use it,
/// the matrix has a row per route, and no role but admin may manage accounts.
#[test]
fn the_route_table_is_well_formed() {
    let mut seen = BTreeSet::new();
    for r in ROUTES {
        assert!(
            seen.insert((r.method.as_str().to_owned(), r.path)),
            "route twice: {r:?}"
        );
        if r.kind == Kind::Api {
            // EST (RFC 7030) fixes its own paths.
            assert!(
                r.path.starts_with("/api/v1/") || r.path.starts_with("/.well-known/est/"),
                "API route outside /api/v1 and /.well-known/est: {r:?}"
            );
        } else {
            assert!(!r.path.starts_with("/api/"), "page under /api: {r:?}");
        }
        if r.reauth {
            assert!(r.changes_state(), "a reauth GET makes no sense: {r:?}");
            assert!(matches!(r.access, Access::Needs(_)), "{r:?}");
        }
        if r.access == Access::Public {
            // Public state changes: only logging in, and EST enrolment, which its handler
            // authenticates (a one-time token, or the sensor's current certificate).
            assert!(
                !r.changes_state()
                    || r.path.ends_with("/login")
                    || r.path.starts_with("/.well-known/est/simple"),
                "public state change: {r:?}"
            );
        }
        if r.path.contains("/accounts") && r.changes_state() {
            for role in Role::ALL {
                assert_eq!(r.allows(role), role == Role::Admin, "{r:?} for {role:?}");
            }
        }
    }
    let md = matrix_markdown();
    for r in ROUTES {
        assert!(
            md.contains(&format!("| {} | `{}` |", r.method, r.path)),
            "{r:?}"
        );
    }
}

/// G045: AU-1-2
/// The OpenAPI document lists exactly the API routes of the table, each with its methods and
/// its documented error statuses (the live document is checked against the daemon too).
#[test]
fn the_openapi_document_matches_the_table() {
    let doc = kawal_api::openapi::document();
    let paths = doc["paths"].as_object().unwrap();
    let mut documented: BTreeMap<(String, String), BTreeSet<u16>> = BTreeMap::new();
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            let codes = op["responses"]
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.parse::<u16>().unwrap())
                .collect();
            documented.insert((method.to_ascii_uppercase(), path.clone()), codes);
        }
    }
    let mut table: BTreeMap<(String, String), BTreeSet<u16>> = BTreeMap::new();
    for r in ROUTES.iter().filter(|r| r.kind == Kind::Api) {
        let mut codes: BTreeSet<u16> = r.errors.iter().copied().collect();
        codes.insert(r.ok_status());
        table.insert((r.method.as_str().to_owned(), r.path.to_owned()), codes);
    }
    assert_eq!(documented, table);
}

/// xorshift64*: a fixed, reproducible stream for the mutation run (not for keys).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).unwrap()).unwrap()
    }
    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }
}

const SEEDS: &[&[u8]] = &[
    br#"{"username":"admin","password":"correct horse battery"}"#,
    br#"{"current":"old-pass-phrase","new":"new-pass-phrase"}"#,
    br#"{"password":"x"}"#,
    br#"{"username":"op1","role":"operator","password":"a long pass phrase"}"#,
    br#"{"role":"auditor"}"#,
    br#"{"username":"\u0000\ud800","password":[1,2,{"a":null}],"x":1e999}"#,
    b"username=admin&password=p%41ss&csrf=00ff",
    b"current=a&new=b&confirm=b&csrf=1",
    b"username=u&role=admin&password=p&confirm=p&reauth=q&csrf=c",
    b"action=disable&role=operator&password=p&reauth=r&csrf=c",
    b"event=login&outcome=denied&since=12&limit=5",
    b"__Host-kawal-session=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    b"%%%%&&&===;;\xff\xfe\x00",
    b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
];

const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"null",
    b"true",
    b"1e400",
    b"-0",
    b"\\u0000",
    b"\\ud800",
    b"%",
    b"%zz",
    b"%ff",
    b"&",
    b"=",
    b";",
    b"+",
    b"\xff",
    b"\xc3",
    b"\x00",
    b"\r\n",
    b"csrf=",
    b"password",
    b"username",
];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
    for _ in 0..=rng.below(4) {
        match rng.below(6) {
            0 if !input.is_empty() => {
                let i = rng.below(input.len());
                input[i] = rng.byte();
            }
            1 if !input.is_empty() => {
                let i = rng.below(input.len());
                let n = rng.below(input.len() - i + 1);
                input.drain(i..i + n);
            }
            2 => {
                let i = rng.below(input.len() + 1);
                let t = TOKENS[rng.below(TOKENS.len())];
                input.splice(i..i, t.iter().copied());
            }
            3 if !input.is_empty() => {
                let i = rng.below(input.len());
                let n = rng.below(input.len() - i).min(64);
                let chunk = input[i..i + n].to_vec();
                let at = rng.below(input.len() + 1);
                input.splice(at..at, chunk);
            }
            4 => {
                let n = rng.below(32);
                let at = rng.below(input.len() + 1);
                let fresh: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
                input.splice(at..at, fresh);
            }
            _ => input.truncate(rng.below(input.len() + 1)),
        }
    }
    input.truncate(4096);
}

/// G045: DS-3-1
/// The body, form and cookie parsers survive thousands of random and mutated inputs (a fixed
/// seed, so a failure reproduces) and accept the well-formed seeds.
#[test]
fn the_request_parsers_survive_mutated_input() {
    assert!(parse::json_as::<kawal_api::api::LoginBody>(SEEDS[0]).is_ok());
    assert_eq!(
        parse::json_as::<kawal_api::api::LoginBody>(b"{"),
        Err(400),
        "malformed JSON is a 400"
    );
    assert_eq!(
        parse::json_as::<kawal_api::api::LoginBody>(b"{\"username\":1}"),
        Err(422)
    );
    assert!(parse::console_forms(SEEDS[6]) >= 1);
    assert!(parse::cookie(SEEDS[11]).is_some());
    assert!(parse::cookie(b"__Host-kawal-session=zz").is_none());

    let mut rng = Rng(0x6b61_7761_6c5f_6675);
    let mut accepted = 0usize;
    for i in 0..4000 {
        let mut input = SEEDS[i % SEEDS.len()].to_vec();
        if i % 7 == 6 {
            input = (0..rng.below(256)).map(|_| rng.byte()).collect();
        }
        mutate(&mut rng, &mut input);
        parse::all(&input);
        accepted += parse::api_bodies(&input) + parse::console_forms(&input);
        for status in [
            parse::json_as::<kawal_api::api::PasswordBody>(&input),
            parse::json_as::<kawal_api::api::AddBody>(&input),
        ] {
            if let Err(code) = status {
                assert!(
                    matches!(code, 400 | 413 | 415 | 422),
                    "unexpected status {code} for {input:?}"
                );
            }
        }
    }
    assert!(accepted > 0, "the mutations never produced a valid body");
}

//! Seeded fuzzing of the manifest, overlay and signature parsers (G045 PL-1-4): random and
//! mutated documents, signed with the trusted key so they reach the body parser, never panic;
//! and whatever is accepted re-signs to the same manifest (round-trip soundness).
//!
//! Deterministic: the seed is fixed, so a failure names an iteration that reproduces.
//! `KAWAL_FUZZ_ITERATIONS` sets the number of iterations (default 10 000).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    clippy::disallowed_macros,
    reason = "tests: a failure should stop the test loudly; test bytes are made by truncating casts; \
              the measurements are printed for the reader"
)]

use std::panic::{AssertUnwindSafe, catch_unwind};

use kawal_platform::SysRoot;
use kawal_platform::integrity::{
    DocKind, FileSpec, LocalEntry, Role, SignedDocument, Signer, SigningKey, make_manifest,
    sign_local, sign_manifest, verify,
};

/// xorshift64*: small, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Fragments that steer mutations toward the format's edges.
const TOKENS: &[&str] = &[
    "[[file]]\n",
    "path = \"",
    "/../",
    "/./",
    "//",
    "\"",
    "=",
    "\n",
    "mutable = \"config\"\n",
    "mode = \"7777\"\n",
    "size = 18446744073709551615\n",
    "size = -1\n",
    "uid = 4294967296\n",
    "\\u0000",
    "\\uD800",
    "'''",
    "\"\"\"",
    "[file]\n",
    "file = []\n",
    "key-id = \"\"\n",
    "format = \"kawal-integrity-manifest/1\"\n",
    "created = 1979-05-27T07:32:00Z\n",
    "role = \"binary\"\n",
    "sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n",
    "{",
    "}",
    "[",
    "]",
    "#",
    "\u{feff}",
    "\r\n",
];

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(8) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = rng.next() as u8;
            }
            2 => {
                let end = (at + rng.below(64)).min(out.len());
                out.drain(at..end);
            }
            3 => {
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                out.splice(at..at, token.iter().copied());
            }
            4 if !out.is_empty() => {
                let from = rng.below(out.len());
                let end = (from + rng.below(200)).min(out.len());
                let chunk = out[from..end].to_vec();
                out.splice(at..at, chunk);
            }
            5 => out.truncate(at),
            6 => {
                let n = rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                out.splice(at..at, bytes);
            }
            _ => {
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                out.extend_from_slice(token);
            }
        }
    }
    out
}

/// G045: PL-1-4
#[test]
fn mutated_and_random_documents_never_panic_and_accepted_ones_round_trip() {
    let iterations: usize = std::env::var("KAWAL_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().unwrap();
    let root = SysRoot(dir.path().to_path_buf());
    for (p, body) in [
        ("/usr/bin/kawal", "binary"),
        ("/etc/kawal/kawal.toml", "x = 1\n"),
    ] {
        std::fs::create_dir_all(root.path(p).parent().unwrap()).unwrap();
        std::fs::write(root.path(p), body).unwrap();
    }
    let vendor = SigningKey::generate().unwrap();
    let device = SigningKey::generate().unwrap();
    let (vendor_pub, device_pub) = (vendor.public_key(), device.public_key());
    let specs = [
        FileSpec::new("/usr/bin/kawal", Role::Binary),
        FileSpec::new("/etc/kawal/kawal.toml", Role::Config).mutable_config(),
    ];
    let manifest = sign_manifest(
        &make_manifest(&root, &specs, "kawal", "0.1.0").unwrap(),
        &vendor,
    )
    .unwrap();
    let entry = LocalEntry {
        path: "/etc/kawal/kawal.toml".to_owned(),
        sha256: [3; 32],
        size: 6,
    };
    let overlay = sign_local(&[entry], &device).unwrap();
    let seeds = [
        manifest.body.clone(),
        overlay.body,
        manifest.signature.clone(),
    ];

    let mut rng = Rng(0x6b61_7761_6c21_0001);
    let mut accepted = 0usize;
    for i in 0..iterations {
        let input = if rng.below(10) == 0 {
            let n = rng.below(400);
            (0..n).map(|_| rng.next() as u8).collect()
        } else {
            let seed = rng.below(seeds.len());
            mutate(&mut rng, &seeds[seed])
        };
        let result = catch_unwind(AssertUnwindSafe(|| {
            let mut ok = 0;
            // Signed by the trusted keys, so the bytes reach the body parsers.
            let doc = SignedDocument::sign_body(DocKind::Manifest, input.clone(), &vendor)
                .expect("signing never fails");
            if let Ok(m) = doc.open_manifest(&vendor_pub) {
                ok += 1;
                let again = sign_manifest(&m, &vendor).expect("an accepted manifest re-signs");
                assert_eq!(again.open_manifest(&vendor_pub).expect("and re-opens"), m);
                let _ = verify(&doc, None, &vendor_pub, Some(&device_pub), &root);
            }
            let doc = SignedDocument::sign_body(DocKind::Overlay, input.clone(), &device)
                .expect("signing never fails");
            if let Ok(o) = doc.open_overlay(&device_pub) {
                ok += 1;
                let again = sign_local(&o.files, &device).expect("an accepted overlay re-signs");
                assert_eq!(
                    again.open_overlay(&device_pub).expect("re-opens").files,
                    o.files
                );
                let _ = verify(&manifest, Some(&doc), &vendor_pub, Some(&device_pub), &root);
            }
            // The same bytes as a signature file, and as an unsigned body.
            let as_sig = SignedDocument {
                body: manifest.body.clone(),
                signature: input.clone(),
            };
            let _ = as_sig.open_manifest(&vendor_pub);
            let unsigned = SignedDocument {
                body: input.clone(),
                signature: manifest.signature.clone(),
            };
            assert!(unsigned.open_manifest(&vendor_pub).is_err() || input == manifest.body);
            ok
        }));
        match result {
            Ok(n) => accepted += n,
            Err(_) => panic!(
                "iteration {i} panicked on input {:?}",
                String::from_utf8_lossy(&input)
            ),
        }
    }
    // The mutator must reach past the parser's first checks now and then.
    assert!(accepted > 0, "no mutant was ever accepted");
    println!("{iterations} iterations, {accepted} documents accepted");
}

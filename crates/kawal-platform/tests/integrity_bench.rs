//! How fast the integrity check hashes, against plain SHA-256 over the same bytes in memory
//! (G045 PL-1-4: a check cheap enough to run periodically).
//!
//! The ratio is `plain time / verify time`: 1.0 would mean reading the files, checking their
//! metadata and verifying the manifest signature cost nothing on top of hashing. The files are
//! in the page cache (they were just written and hashed), so the ratio measures kawal's
//! overhead, not the disk.
//!
//! Run the full size with
//! `cargo test --release -p kawal-platform --test integrity_bench -- --ignored --nocapture`.
//! Hashing is aws-lc-rs (C, always optimised) and the loop around it is a few calls per
//! 128 KiB chunk, so a debug build gives nearly the same ratio; the small test asserts it in
//! both profiles.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    clippy::disallowed_macros,
    clippy::print_stdout,
    reason = "tests: a failure should stop the test loudly; test bytes are made by truncating casts; \
              the measurements are printed for the reader"
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use kawal_platform::SysRoot;
use kawal_platform::integrity::{
    FileSpec, Role, SignedDocument, Signer, SigningKey, make_manifest, sign_manifest, verify,
};

struct Setup {
    _dir: tempfile::TempDir,
    root: SysRoot,
    key: SigningKey,
    manifest: SignedDocument,
    paths: Vec<String>,
}

/// Files of the given sizes under a temporary root, and their signed manifest.
fn setup(sizes: &[usize]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = SysRoot(dir.path().to_path_buf());
    let mut paths = Vec::new();
    let mut specs = Vec::new();
    for (i, &each) in sizes.iter().enumerate() {
        let path = format!("/usr/lib/kawal/blob{i}.bin");
        let bytes: Vec<u8> = (0..each)
            .map(|j| {
                (j as u32)
                    .wrapping_mul(2_654_435_761)
                    .wrapping_add(i as u32) as u8
            })
            .collect();
        let p = root.path(&path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        specs.push(FileSpec::new(path.clone(), Role::Other));
        paths.push(path);
    }
    let key = SigningKey::generate().unwrap();
    let m = make_manifest(&root, &specs, "kawal", "bench").unwrap();
    let manifest = sign_manifest(&m, &key).unwrap();
    Setup {
        _dir: dir,
        root,
        key,
        manifest,
        paths,
    }
}

/// Best of `rounds` of: the full verify, and plain SHA-256 of the same bytes held in memory.
fn measure(s: &Setup, rounds: usize) -> (Duration, Duration, u64) {
    let vendor = s.key.public_key();
    let contents: Vec<Vec<u8>> = s
        .paths
        .iter()
        .map(|p| std::fs::read(s.root.path(p)).unwrap())
        .collect();
    let total: u64 = contents.iter().map(|c| c.len() as u64).sum();
    let mut best_verify = Duration::MAX;
    let mut best_plain = Duration::MAX;
    for _ in 0..rounds {
        let t = Instant::now();
        let report = verify(&s.manifest, None, &vendor, None, &s.root);
        best_verify = best_verify.min(t.elapsed());
        assert!(report.is_ok(), "{:?}", report.problems());
        assert_eq!(report.bytes_hashed, total);

        let t = Instant::now();
        for c in &contents {
            black_box(kawal_crypto::sha256(black_box(c)));
        }
        best_plain = best_plain.min(t.elapsed());
    }
    (best_verify, best_plain, total)
}

fn ratio_line(label: &str, verify: Duration, plain: Duration, total: u64) -> f64 {
    let mb = total as f64 / 1e6;
    let ratio = plain.as_secs_f64() / verify.as_secs_f64();
    println!(
        "{label}: {mb:.0} MB; verify {:.1} ms ({:.0} MB/s), plain SHA-256 {:.1} ms ({:.0} MB/s); \
         ratio {ratio:.2} ({} build)",
        verify.as_secs_f64() * 1e3,
        mb / verify.as_secs_f64(),
        plain.as_secs_f64() * 1e3,
        mb / plain.as_secs_f64(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    );
    ratio
}

/// G045: PL-1-4
#[test]
#[ignore = "benchmark: 100 MB of files; run with --ignored --nocapture"]
fn verify_keeps_up_with_plain_sha256_on_100_mb() {
    // One 40 MB file and six of 10 MB: 100 MB in all.
    let mut sizes = vec![40_000_000];
    sizes.extend([10_000_000; 6]);
    let (v, p, total) = measure(&setup(&sizes), 5);
    let ratio = ratio_line("1 x 40 MB + 6 x 10 MB", v, p, total);
    // For information: the per-file cost (open, fstat, signature check) on many small files.
    let (sv, sp, stotal) = measure(&setup(&[4_096; 200]), 5);
    ratio_line("200 x 4 KiB (information only)", sv, sp, stotal);
    println!("ratio on 100 MB: {ratio:.2} (target >= 0.70)");
    assert!(ratio >= 0.70, "verify reaches {ratio:.2} of plain SHA-256");
}

/// G045: PL-1-4
#[test]
fn verify_reaches_half_of_plain_sha256_on_8_mb() {
    let s = setup(&[2_000_000; 4]);
    let (v, p, total) = measure(&s, 5);
    let ratio = ratio_line("4 x 2 MB", v, p, total);
    assert!(ratio >= 0.5, "verify reaches {ratio:.2} of plain SHA-256");
}

//! Arbitrary bytes into the update-bundle unpacker (G045 PL-2-2, PL-2-3). It must never panic
//! and never write outside the slot, and whatever it accepts must be exactly what the manifest
//! lists (soundness). The first input byte picks the mode: even bytes unpack the rest as a raw
//! archive; odd bytes patch a good bundle built in-process (4-byte records: a 24-bit offset and
//! a byte; offset 0xFFFFFF truncates at the next record's offset), so mutations reach past the
//! manifest's signed-facts check without a seed corpus. The deterministic run of the same
//! properties is `crates/kawal-update/tests/bundle.rs`.
#![no_main]

use std::fs;
use std::path::Path;
use std::sync::OnceLock;

use aws_lc_rs::digest;
use kawal_update::bundle::{self, BundleBuilder, BundleLimits, Expect, SignedFacts};
use libfuzzer_sys::fuzz_target;

struct Fixture {
    good: Vec<u8>,
    expect: Expect,
    dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut b = BundleBuilder::new("kawal-gw", "1.4.2", 7, ["rpi4"]);
        b.file("bin/kawal", 0o755, b"\x7fELF pretend binary".to_vec())
            .file("etc/kawal/default.toml", 0o644, b"[gateway]\n".to_vec())
            .file("share/big.bin", 0o444, vec![0x5a; 70_000])
            .dir("var/empty");
        let mut good = Vec::new();
        b.write(&mut good).expect("the fixture bundle builds");
        let expect = Expect {
            product: "kawal-gw".into(),
            hardware: "rpi4".into(),
            installed_security_version: 7,
            signed: SignedFacts {
                version: "1.4.2".into(),
                security_version: 7,
                product: "kawal-gw".into(),
                hardware: vec!["rpi4".into()],
            },
        };
        Fixture {
            good,
            expect,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    })
}

fn patch(good: &[u8], program: &[u8]) -> Vec<u8> {
    let mut out = good.to_vec();
    let mut truncate = false;
    for rec in program.chunks_exact(4) {
        let offset = usize::from(rec[0]) << 16 | usize::from(rec[1]) << 8 | usize::from(rec[2]);
        if offset == 0xFF_FFFF {
            truncate = true;
            continue;
        }
        if out.is_empty() {
            break;
        }
        let at = offset % out.len();
        if truncate {
            out.truncate(at);
            truncate = false;
        } else {
            out[at] = rec[3];
        }
    }
    out
}

fn names(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let bytes = match data.split_first() {
        Some((mode, rest)) if mode & 1 == 1 => patch(&f.good, rest),
        Some((_, rest)) => rest.to_vec(),
        None => Vec::new(),
    };
    let parent = f.dir.path().join("parent");
    let slot = parent.join("slot");
    let _ = fs::remove_dir_all(&parent);
    fs::create_dir_all(&slot).expect("slot");

    let result = bundle::unpack(bytes.as_slice(), &slot, &f.expect, &BundleLimits::default());

    assert_eq!(
        names(f.dir.path()),
        ["parent"],
        "something escaped the slot"
    );
    assert_eq!(names(&parent), ["slot"], "something escaped the slot");
    let mut stack = vec![slot.clone()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).expect("read_dir") {
            let path = e.expect("entry").path();
            let meta = fs::symlink_metadata(&path).expect("metadata");
            if meta.is_dir() {
                stack.push(path);
            } else {
                assert!(meta.is_file(), "{path:?} is neither a file nor a folder");
            }
        }
    }
    if let Ok(manifest) = result {
        for file in manifest.files() {
            let data = fs::read(slot.join("payload").join(file.path())).expect("listed file");
            assert_eq!(data.len() as u64, file.size());
            assert_eq!(
                digest::digest(&digest::SHA256, &data).as_ref(),
                file.sha256()
            );
        }
    }
});

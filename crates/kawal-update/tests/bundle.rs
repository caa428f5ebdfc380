//! Update bundles (G045 PL-2-2, PL-2-3): a good bundle unpacks exactly; every crafted archive
//! is refused with its own error; and after every refusal nothing exists outside the slot.
//!
//! Archives are crafted with raw `tar::Header`s, because `tar::Builder` itself refuses to write
//! most of these attacks.

#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation is the test failing"
)]
#![allow(
    clippy::cast_possible_truncation,
    reason = "test archives are small; the random generator truncates on purpose"
)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_lc_rs::digest;
use kawal_update::bundle::{
    self, BundleBuilder, BundleError, BundleLimits, Expect, Health, HealthCheck, PathProblem,
    SignedFacts,
};
use tar::{EntryType, Header};

const PRODUCT: &str = "kawal-gw";
const VERSION: &str = "1.4.2";
const SECURITY_VERSION: u64 = 7;
const HARDWARE: [&str; 2] = ["rpi4", "imx8"];

fn facts() -> SignedFacts {
    SignedFacts {
        version: VERSION.to_owned(),
        security_version: SECURITY_VERSION,
        product: PRODUCT.to_owned(),
        hardware: HARDWARE.iter().map(|h| (*h).to_owned()).collect(),
    }
}

fn expect() -> Expect {
    Expect {
        product: PRODUCT.to_owned(),
        hardware: "rpi4".to_owned(),
        installed_security_version: 5,
        signed: facts(),
    }
}

/// A file larger than the unpacker's 64 KiB copy buffer, so it takes several chunks.
fn big_file() -> Vec<u8> {
    (0..200_000u32).map(|i| (i % 251) as u8).collect()
}

/// The files of the good bundle: (path inside payload, mode, contents).
fn payload() -> Vec<(&'static str, u32, Vec<u8>)> {
    vec![
        ("bin/kawal", 0o755, b"\x7fELF pretend binary".to_vec()),
        ("etc/kawal/default.toml", 0o644, b"[gateway]\n".to_vec()),
        ("share/empty", 0o600, Vec::new()),
        ("share/big.bin", 0o444, big_file()),
    ]
}

fn builder() -> BundleBuilder {
    let mut b = BundleBuilder::new(PRODUCT, VERSION, SECURITY_VERSION, HARDWARE);
    for (path, mode, data) in payload() {
        b.file(path, mode, data);
    }
    b
}

fn good_bundle() -> Vec<u8> {
    let mut out = Vec::new();
    builder()
        .write(&mut out)
        .expect("the builder writes a bundle");
    out
}

/// The good bundle's manifest as TOML, for crafted archives.
fn manifest_toml() -> String {
    builder()
        .manifest()
        .expect("manifest")
        .to_toml()
        .expect("toml")
}

/// `<tmp>/outer/parent/slot`: anything escaping by `..` or an absolute path into `<tmp>` shows
/// up next to the slot or above it.
struct Sandbox {
    tmp: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(tmp.path().join("outer/parent/slot")).expect("slot");
        Self { tmp }
    }

    fn slot(&self) -> PathBuf {
        self.tmp.path().join("outer/parent/slot")
    }

    /// Only the folder chain exists outside the slot, and the slot holds only files and
    /// folders.
    fn assert_contained(&self) {
        let names = |p: &Path| -> Vec<String> {
            let mut v: Vec<String> = fs::read_dir(p)
                .expect("read_dir")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(self.tmp.path()), ["outer"], "something escaped");
        assert_eq!(
            names(&self.tmp.path().join("outer")),
            ["parent"],
            "something escaped"
        );
        assert_eq!(
            names(&self.tmp.path().join("outer/parent")),
            ["slot"],
            "something escaped"
        );
        let mut stack = vec![self.slot()];
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
    }
}

fn unpack_in(
    sandbox: &Sandbox,
    bytes: &[u8],
    expect: &Expect,
    limits: &BundleLimits,
) -> Result<bundle::Manifest, BundleError> {
    bundle::unpack(bytes, &sandbox.slot(), expect, limits)
}

/// Unpacks `bytes`, expecting a refusal caused by the bundle, and checks containment.
fn refused_with(bytes: &[u8], expect: &Expect, limits: &BundleLimits) -> BundleError {
    let sandbox = Sandbox::new();
    let err =
        unpack_in(&sandbox, bytes, expect, limits).expect_err("the crafted bundle must be refused");
    assert!(err.is_rejection(), "{err:?}");
    sandbox.assert_contained();
    err
}

fn refused(bytes: &[u8]) -> BundleError {
    refused_with(bytes, &expect(), &BundleLimits::default())
}

macro_rules! assert_refused {
    ($err:expr, $pat:pat $(if $guard:expr)?) => {
        let err = $err;
        assert!(
            matches!(err, $pat $(if $guard)?),
            "unexpected error: {err:?}"
        );
    };
}

// ---- Crafting archives -------------------------------------------------------------------------

/// Writes archives entry by entry with raw headers.
struct Craft {
    tar: tar::Builder<Vec<u8>>,
}

impl Craft {
    fn empty() -> Self {
        Self {
            tar: tar::Builder::new(Vec::new()),
        }
    }

    /// Starts with the good bundle's manifest.
    fn with_manifest() -> Self {
        let mut c = Self::empty();
        c.raw(
            b"kawal-bundle.toml",
            EntryType::Regular,
            manifest_toml().as_bytes(),
        );
        c
    }

    fn header(name: &[u8], kind: EntryType, size: u64) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        let field = &mut h.as_old_mut().name;
        assert!(name.len() < field.len(), "use long_name for long names");
        field[..name.len()].copy_from_slice(name);
        h
    }

    /// An entry with `name` written as is, and `data`.
    fn raw(&mut self, name: &[u8], kind: EntryType, data: &[u8]) -> &mut Self {
        let mut h = Self::header(name, kind, data.len() as u64);
        h.set_cksum();
        self.tar.append(&h, data).expect("append");
        self
    }

    /// An entry whose header claims `size` but which carries `data`.
    fn sized(&mut self, name: &[u8], size: u64, data: &[u8]) -> &mut Self {
        let mut h = Self::header(name, EntryType::Regular, size);
        h.set_cksum();
        self.tar.append(&h, data).expect("append");
        self
    }

    /// A link-like entry (symlink, hard link) pointing at `target`.
    fn link(&mut self, name: &[u8], kind: EntryType, target: &[u8]) -> &mut Self {
        let mut h = Self::header(name, kind, 0);
        h.as_old_mut().linkname[..target.len()].copy_from_slice(target);
        h.set_cksum();
        self.tar.append(&h, &[][..]).expect("append");
        self
    }

    /// A GNU long-name record: the next entry's real name.
    fn long_name(&mut self, name: &[u8]) -> &mut Self {
        let mut data = name.to_vec();
        data.push(0);
        let mut h = Self::header(b"././@LongLink", EntryType::GNULongName, data.len() as u64);
        h.set_cksum();
        self.tar.append(&h, data.as_slice()).expect("append");
        self
    }

    /// A PAX extended header describing the next entry.
    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut data = Vec::new();
        for (key, value) in records {
            // "<len> <key>=<value>\n", where <len> counts itself.
            let body = 1 + key.len() + 1 + value.len() + 1;
            let mut len = body + 1;
            while len.to_string().len() + body != len {
                len += 1;
            }
            data.extend_from_slice(format!("{len} {key}=").as_bytes());
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        let mut h = Header::new_ustar();
        h.set_entry_type(EntryType::XHeader);
        h.set_size(data.len() as u64);
        h.set_path("PaxHeaders/entry").expect("pax name");
        h.set_cksum();
        self.tar.append(&h, data.as_slice()).expect("append");
        self
    }

    /// Every good payload file, as the builder would write it.
    fn payload(&mut self) -> &mut Self {
        self.payload_except("")
    }

    fn payload_except(&mut self, skip: &str) -> &mut Self {
        for (path, _, data) in payload() {
            if path != skip {
                self.raw(
                    format!("payload/{path}").as_bytes(),
                    EntryType::Regular,
                    &data,
                );
            }
        }
        self
    }

    fn finish(self) -> Vec<u8> {
        self.tar.into_inner().expect("finish")
    }
}

/// A crafted bundle: the good manifest, then `attack`, then the good payload.
fn with_attack(attack: impl FnOnce(&mut Craft)) -> Vec<u8> {
    let mut c = Craft::with_manifest();
    attack(&mut c);
    c.payload();
    c.finish()
}

fn sha256(data: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA256, data).as_ref().to_vec()
}

// ---- The good path -----------------------------------------------------------------------------

/// G045: PL-2-2
#[test]
fn unpacks_a_good_bundle_and_every_file_matches() {
    let sandbox = Sandbox::new();
    let manifest = unpack_in(
        &sandbox,
        &good_bundle(),
        &expect(),
        &BundleLimits::default(),
    )
    .expect("the good bundle unpacks");
    assert_eq!(manifest, builder().manifest().expect("manifest"));
    assert_eq!(manifest.files().len(), payload().len());
    for (path, mode, data) in payload() {
        let on_disk = sandbox.slot().join("payload").join(path);
        assert_eq!(fs::read(&on_disk).expect("file"), data, "{path}");
        let meta = fs::metadata(&on_disk).expect("metadata");
        assert_eq!(meta.permissions().mode() & 0o7777, mode, "{path}");
        let listed = manifest.file(path).expect("listed");
        assert_eq!(listed.sha256().as_slice(), sha256(&data).as_slice());
        assert_eq!(listed.size(), data.len() as u64);
    }
    let stored = fs::read(sandbox.slot().join("kawal-bundle.toml")).expect("manifest copy");
    assert_eq!(bundle::Manifest::parse(&stored).expect("parses"), manifest);
    assert_eq!(manifest.health(), &Health::default());
    sandbox.assert_contained();
}

/// G045: PL-2-2
#[test]
fn unpacks_a_bundle_built_from_a_folder_with_long_paths() {
    let src = tempfile::tempdir().expect("tempdir");
    let deep = "a-rather-long-folder-name-to-pass-the-ustar-limit/".repeat(3);
    let long_file = format!("{deep}file.txt");
    fs::create_dir_all(src.path().join(&deep)).expect("mkdir");
    fs::create_dir_all(src.path().join("empty-dir")).expect("mkdir");
    fs::write(src.path().join(&long_file), b"deep").expect("write");
    fs::write(src.path().join("run.sh"), b"#!/bin/sh\n").expect("write");
    fs::set_permissions(src.path().join("run.sh"), fs::Permissions::from_mode(0o775))
        .expect("chmod");
    let mut b = BundleBuilder::new(PRODUCT, VERSION, SECURITY_VERSION, HARDWARE);
    b.health(Health::new(
        vec![HealthCheck::SelfTest, HealthCheck::Upstream],
        2,
        120,
    ));
    b.add_folder(src.path()).expect("folder");
    let mut bytes = Vec::new();
    b.write(&mut bytes).expect("write");

    let sandbox = Sandbox::new();
    let m = unpack_in(&sandbox, &bytes, &expect(), &BundleLimits::default()).expect("unpacks");
    let payload = sandbox.slot().join("payload");
    assert_eq!(
        fs::read(payload.join(&long_file)).expect("deep file"),
        b"deep"
    );
    assert!(payload.join("empty-dir").is_dir());
    // Group-writable on disk, limited to 0755 in the bundle.
    assert_eq!(m.file("run.sh").expect("listed").mode(), 0o755);
    assert_eq!(
        fs::metadata(payload.join("run.sh"))
            .expect("meta")
            .permissions()
            .mode()
            & 0o7777,
        0o755
    );
    assert_eq!(
        m.health().checks(),
        [HealthCheck::SelfTest, HealthCheck::Upstream]
    );
    assert_eq!(m.health().max_boots(), 2);
    sandbox.assert_contained();
}

/// G045: PL-2-2
#[test]
fn builder_output_is_reproducible() {
    assert_eq!(good_bundle(), good_bundle());
}

/// G045: PL-2-2
#[test]
fn builder_refuses_a_symlink_in_the_source_folder() {
    let src = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink("/etc/passwd", src.path().join("passwd")).expect("symlink");
    let mut b = BundleBuilder::new(PRODUCT, VERSION, SECURITY_VERSION, HARDWARE);
    assert_refused!(
        b.add_folder(src.path()).map(|_| ()),
        Err(BundleError::BuildSource { .. })
    );
}

/// G045: PL-2-2
#[test]
fn builder_refuses_an_unsafe_mode_or_path() {
    let mut b = BundleBuilder::new(PRODUCT, VERSION, SECURITY_VERSION, HARDWARE);
    b.file("bin/su", 0o4755, b"x".to_vec());
    assert_refused!(
        b.write(Vec::new()),
        Err(BundleError::ManifestInvalid { .. })
    );
    let mut b = BundleBuilder::new(PRODUCT, VERSION, SECURITY_VERSION, HARDWARE);
    b.file("../evil", 0o644, b"x".to_vec());
    assert_refused!(
        b.write(Vec::new()),
        Err(BundleError::ManifestInvalid { .. })
    );
}

/// G045: PL-2-2
#[test]
fn ignores_trailing_bytes_after_the_archive_up_to_the_limit() {
    let mut bytes = good_bundle();
    bytes.extend((0..3000u32).map(|i| (i % 7 + 1) as u8));
    let sandbox = Sandbox::new();
    unpack_in(&sandbox, &bytes, &expect(), &BundleLimits::default()).expect("unpacks");
    let limits = BundleLimits {
        max_trailing_bytes: 1024,
        ..BundleLimits::default()
    };
    assert_refused!(
        refused_with(&bytes, &expect(), &limits),
        BundleError::TrailingData { max: 1024 }
    );
}

// ---- Paths -------------------------------------------------------------------------------------

/// G045: PL-2-2
#[test]
fn refuses_an_entry_escaping_with_parent_dir() {
    let err = refused(&with_attack(|c| {
        c.raw(b"payload/../escape", EntryType::Regular, b"owned");
    }));
    assert_eq!(
        err.to_string(),
        "bundle refused: entry 'payload/../escape' escapes the slot (it contains '..')"
    );
    assert_refused!(
        err,
        BundleError::BadPath {
            problem: PathProblem::ParentDir,
            ..
        }
    );
    assert_refused!(
        refused(&with_attack(|c| {
            c.raw(b"payload/../../../escape", EntryType::Directory, b"");
        })),
        BundleError::BadPath {
            problem: PathProblem::ParentDir,
            ..
        }
    );
}

/// G045: PL-2-2
#[test]
fn refuses_an_absolute_path() {
    let sandbox = Sandbox::new();
    let target = sandbox.tmp.path().join("outer/escape");
    let name = target.to_str().expect("utf-8").as_bytes().to_vec();
    let bytes = with_attack(|c| {
        if name.len() < 100 {
            c.raw(&name, EntryType::Regular, b"owned");
        } else {
            c.long_name(&name).raw(b"x", EntryType::Regular, b"owned");
        }
    });
    let err =
        unpack_in(&sandbox, &bytes, &expect(), &BundleLimits::default()).expect_err("refused");
    assert_refused!(
        err,
        BundleError::BadPath {
            problem: PathProblem::Absolute,
            ..
        }
    );
    sandbox.assert_contained();
    assert!(!target.exists());
}

/// G045: PL-2-2
#[test]
fn refuses_an_entry_outside_payload_or_oddly_spelled() {
    for (name, problem) in [
        (&b"other/file"[..], PathProblem::NotUnderPayload),
        (b"payloadx/file", PathProblem::NotUnderPayload),
        (b"./payload/bin/kawal", PathProblem::CurrentDir),
        (b"payload//bin/kawal", PathProblem::EmptyComponent),
        (b"payload/bin\\kawal", PathProblem::ForbiddenChar),
        (b"payload/bin/\xff\xfe", PathProblem::NotUtf8),
    ] {
        let err = refused(&with_attack(|c| {
            c.raw(name, EntryType::Regular, b"x");
        }));
        assert_refused!(err, BundleError::BadPath { problem: ref p, .. } if *p == problem);
    }
}

/// G045: PL-2-2
#[test]
fn refuses_paths_too_long_or_too_deep() {
    let limits = BundleLimits {
        max_path_len: 25,
        max_depth: 3,
        ..BundleLimits::default()
    };
    assert_refused!(
        refused_with(&good_bundle(), &expect(), &limits),
        BundleError::BadPath {
            problem: PathProblem::TooLong { len: 30, max: 25 },
            ..
        }
    );
    let limits = BundleLimits {
        max_depth: 2,
        ..BundleLimits::default()
    };
    assert_refused!(
        refused_with(&good_bundle(), &expect(), &limits),
        BundleError::BadPath {
            problem: PathProblem::TooDeep { depth: 3, max: 2 },
            ..
        }
    );
}

/// G045: PL-2-2
#[test]
fn refuses_a_gnu_long_name_with_parent_dir() {
    let name = format!("payload/{}../../../../escape", "deep/".repeat(30));
    assert!(name.len() > 100);
    let err = refused(&with_attack(|c| {
        c.long_name(name.as_bytes())
            .raw(b"payload/innocent", EntryType::Regular, b"owned");
    }));
    assert_refused!(
        err,
        BundleError::BadPath {
            problem: PathProblem::ParentDir,
            ..
        }
    );
}

/// G045: PL-2-2
#[test]
fn refuses_a_pax_path_with_parent_dir() {
    let err = refused(&with_attack(|c| {
        c.pax(&[("path", b"payload/../../escape")]).raw(
            b"payload/innocent",
            EntryType::Regular,
            b"owned",
        );
    }));
    assert_refused!(
        err,
        BundleError::BadPath {
            problem: PathProblem::ParentDir,
            ..
        }
    );
}

/// G045: PL-2-2
#[test]
fn refuses_pax_records_that_could_smuggle_anything() {
    // A PAX size makes readers disagree on where the next header starts.
    assert_refused!(
        refused(&with_attack(|c| {
            c.pax(&[("size", b"0")])
                .raw(b"payload/bin/kawal", EntryType::Regular, b"x");
        })),
        BundleError::ForbiddenPax { .. }
    );
    assert_refused!(
        refused(&with_attack(|c| {
            c.pax(&[("linkpath", b"/etc/shadow")]).raw(
                b"payload/bin/kawal",
                EntryType::Regular,
                b"x",
            );
        })),
        BundleError::ForbiddenPax { .. }
    );
    // A GNU long name and a PAX path that disagree: tar-rs takes one, GNU tar the other.
    assert_refused!(
        refused(&with_attack(|c| {
            c.pax(&[("path", b"payload/../../escape")])
                .long_name(b"payload/bin/kawal")
                .raw(b"payload/x", EntryType::Regular, b"x");
        })),
        BundleError::ForbiddenPax { .. }
    );
}

/// G045: PL-2-2
#[test]
fn refuses_a_huge_extension_header_without_reading_it() {
    let name = vec![b'a'; 1024 * 1024];
    let err = refused(&with_attack(|c| {
        c.long_name(&name)
            .raw(b"payload/x", EntryType::Regular, b"x");
    }));
    assert_refused!(err, BundleError::HeadersTooLarge { .. });
}

// ---- Entry types -------------------------------------------------------------------------------

/// G045: PL-2-2
#[test]
fn refuses_symlinks_including_one_to_write_through() {
    assert_refused!(
        refused(&with_attack(|c| {
            c.link(b"payload/bin/kawal", EntryType::Symlink, b"/etc/passwd");
        })),
        BundleError::ForbiddenType { ref kind, .. } if kind == "symbolic link"
    );
    // The classic: a link to outside, then a file written through it.
    assert_refused!(
        refused(&with_attack(|c| {
            c.link(b"payload/lib", EntryType::Symlink, b"../../..").raw(
                b"payload/lib/escape",
                EntryType::Regular,
                b"owned",
            );
        })),
        BundleError::ForbiddenType { .. }
    );
}

/// G045: PL-2-2
#[test]
fn refuses_hard_links() {
    assert_refused!(
        refused(&with_attack(|c| {
            c.link(b"payload/passwd", EntryType::Link, b"/etc/passwd");
        })),
        BundleError::ForbiddenType { ref kind, .. } if kind == "hard link"
    );
}

/// G045: PL-2-2
#[test]
fn refuses_devices_fifos_and_other_types() {
    for (kind, name) in [
        (EntryType::Char, "character device"),
        (EntryType::Block, "block device"),
        (EntryType::Fifo, "FIFO"),
        (EntryType::Continuous, "contiguous file"),
        (EntryType::XGlobalHeader, "PAX global header"),
        (EntryType::new(b'V'), "entry of type 0x56"),
    ] {
        assert_refused!(
            refused(&with_attack(|c| {
                c.raw(b"payload/dev", kind, b"");
            })),
            BundleError::ForbiddenType { ref kind, .. } if kind == name
        );
    }
}

/// G045: PL-2-2
#[test]
fn refuses_a_folder_that_carries_data_or_sits_inside_a_file() {
    assert_refused!(
        refused(&with_attack(|c| {
            c.raw(b"payload/dir/", EntryType::Directory, b"hidden");
        })),
        BundleError::FolderWithData { .. }
    );
    let mut c = Craft::with_manifest();
    c.payload()
        .raw(b"payload/bin/kawal/inner/", EntryType::Directory, b"");
    assert_refused!(refused(&c.finish()), BundleError::InsideFile { .. });
}

// ---- Entries against the manifest ---------------------------------------------------------------

/// G045: PL-2-2
#[test]
fn refuses_a_duplicate_entry() {
    assert_refused!(
        refused(&with_attack(|c| {
            c.raw(b"payload/bin/kawal", EntryType::Regular, b"\x7fELF pretend binary");
        })),
        BundleError::Duplicate { ref entry } if entry == "payload/bin/kawal"
    );
    // A second manifest later on is a duplicate too.
    assert_refused!(
        refused(&with_attack(|c| {
            c.raw(b"kawal-bundle.toml", EntryType::Regular, b"format = 1");
        })),
        BundleError::Duplicate { .. }
    );
}

/// G045: PL-2-2
#[test]
fn refuses_a_file_not_in_the_manifest() {
    assert_refused!(
        refused(&with_attack(|c| {
            c.raw(b"payload/etc/extra", EntryType::Regular, b"surprise");
        })),
        BundleError::Undeclared { ref entry } if entry == "payload/etc/extra"
    );
}

/// G045: PL-2-2
#[test]
fn refuses_a_listed_file_missing_from_the_archive() {
    let mut c = Craft::with_manifest();
    c.payload_except("share/empty");
    assert_refused!(
        refused(&c.finish()),
        BundleError::Missing { ref path } if path == "share/empty"
    );
}

/// G045: PL-2-2
#[test]
fn refuses_a_header_size_that_differs_from_the_manifest() {
    let mut c = Craft::with_manifest();
    c.raw(
        b"payload/bin/kawal",
        EntryType::Regular,
        b"\x7fELF pretend binary, longer",
    );
    c.payload_except("bin/kawal");
    assert_refused!(
        refused(&c.finish()),
        BundleError::SizeMismatch {
            archive: 27,
            manifest: 19,
            ..
        }
    );
}

/// G045: PL-2-3
#[test]
fn refuses_a_file_whose_hash_differs_from_the_manifest() {
    // Same length as the real file, so only the hash can tell.
    let evil = b"\x7fELF malware binary";
    assert_eq!(evil.len(), b"\x7fELF pretend binary".len());
    let mut c2 = Craft::with_manifest();
    c2.raw(b"payload/bin/kawal", EntryType::Regular, evil);
    c2.payload_except("bin/kawal");
    assert_refused!(
        refused(&c2.finish()),
        BundleError::HashMismatch { ref entry } if entry == "payload/bin/kawal"
    );
}

/// G045: PL-2-2
#[test]
fn refuses_a_truncated_archive_wherever_it_is_cut() {
    let good = good_bundle();
    // Find where the big file's data and the end-of-archive marker start.
    let mut archive = tar::Archive::new(good.as_slice());
    let mut big_data = 0;
    let mut end = 0;
    for e in archive.entries().expect("entries") {
        let e = e.expect("entry");
        if &*e.path_bytes() == b"payload/share/big.bin" {
            big_data = e.raw_file_position();
        }
        end = e.raw_file_position() + e.size().div_ceil(512) * 512;
    }
    assert!(big_data > 0 && end > 0);
    for cut in [
        100,                        // inside the manifest's header
        600,                        // inside the manifest
        big_data as usize + 70_000, // inside a file, past the first chunk
        big_data as usize - 200,    // inside a header
        end as usize,               // after the last entry, before the end marker
    ] {
        let err = refused(&good[..cut]);
        assert_refused!(err, BundleError::Truncated { .. });
    }
    assert_refused!(refused(&[]), BundleError::ManifestMissing);
}

/// G045: PL-2-2
#[test]
fn refuses_a_malformed_header() {
    let mut bad = good_bundle();
    bad[520 * 2] ^= 0x55; // somewhere in the manifest's text: only its hash notices
    bad[0] ^= 0x01; // the manifest header's name: the checksum no longer matches
    assert_refused!(refused(&bad), BundleError::Malformed { .. });
}

// ---- The manifest ------------------------------------------------------------------------------

/// G045: PL-2-2
#[test]
fn refuses_an_oversized_manifest_before_reading_it() {
    let limits = BundleLimits {
        max_manifest_bytes: 100,
        ..BundleLimits::default()
    };
    assert_refused!(
        refused_with(&good_bundle(), &expect(), &limits),
        BundleError::ManifestTooLarge { max: 100, .. }
    );
    // A header claiming a terabyte, with no data behind it.
    let mut c = Craft::empty();
    c.sized(b"kawal-bundle.toml", 1 << 40, b"");
    assert_refused!(
        refused(&c.finish()),
        BundleError::ManifestTooLarge {
            size: 1_099_511_627_776,
            ..
        }
    );
}

/// G045: PL-2-2
#[test]
fn refuses_a_manifest_that_is_not_first() {
    let mut c = Craft::empty();
    c.raw(
        b"payload/bin/kawal",
        EntryType::Regular,
        b"\x7fELF pretend binary",
    );
    c.raw(
        b"kawal-bundle.toml",
        EntryType::Regular,
        manifest_toml().as_bytes(),
    );
    assert_refused!(
        refused(&c.finish()),
        BundleError::ManifestNotFirst { ref entry } if entry == "payload/bin/kawal"
    );
    let mut c = Craft::empty();
    c.raw(b"kawal-bundle.toml/", EntryType::Directory, b"");
    assert_refused!(refused(&c.finish()), BundleError::ManifestNotFirst { .. });
    assert_refused!(
        refused(&Craft::empty().finish()),
        BundleError::ManifestMissing
    );
}

/// G045: PL-2-2
#[test]
fn refuses_an_invalid_manifest() {
    for text in [
        manifest_toml().replace("format = 1", "format = 1\nextra = true"),
        manifest_toml().replace("mode = \"0755\"", "mode = \"4755\""),
        manifest_toml().replace("mode = \"0644\"", "mode = \"0666\""),
        manifest_toml().replace("\"self-test\"", "\"command:reboot\""),
        "format = 1\nproduct = ".to_owned(),
        "\u{feff}not toml at all".to_owned(),
    ] {
        let mut c = Craft::empty();
        c.raw(b"kawal-bundle.toml", EntryType::Regular, text.as_bytes());
        c.payload();
        assert_refused!(refused(&c.finish()), BundleError::ManifestInvalid { .. });
    }
}

/// G045: PL-2-2
#[test]
fn refuses_a_manifest_declaring_more_than_the_limits() {
    let limits = BundleLimits {
        max_total_bytes: 100_000,
        ..BundleLimits::default()
    };
    assert_refused!(
        refused_with(&good_bundle(), &expect(), &limits),
        BundleError::OverLimit {
            what: "the total payload size",
            ..
        }
    );
    let limits = BundleLimits {
        max_files: 3,
        ..BundleLimits::default()
    };
    assert_refused!(
        refused_with(&good_bundle(), &expect(), &limits),
        BundleError::OverLimit {
            what: "the number of payload files",
            ..
        }
    );
    // Folders count as entries too.
    let limits = BundleLimits {
        max_files: 4,
        ..BundleLimits::default()
    };
    let bytes = with_attack(|c| {
        c.raw(b"payload/d/", EntryType::Directory, b"");
    });
    assert_refused!(
        refused_with(&bytes, &expect(), &limits),
        BundleError::OverLimit {
            what: "the number of payload entries",
            ..
        }
    );
}

// ---- Signed facts ------------------------------------------------------------------------------

/// G045: PL-2-3
#[test]
fn refuses_the_wrong_hardware_before_reading() {
    let e = Expect {
        hardware: "esp32".to_owned(),
        ..expect()
    };
    assert_refused!(
        refused_with(&good_bundle(), &e, &BundleLimits::default()),
        BundleError::WrongHardware { ref device, .. } if device == "esp32"
    );
    // Nothing is read: even garbage gives the same answer.
    assert_refused!(
        refused_with(b"garbage", &e, &BundleLimits::default()),
        BundleError::WrongHardware { .. }
    );
}

/// G045: PL-2-3
#[test]
fn refuses_the_wrong_product_before_reading() {
    let e = Expect {
        product: "other-gw".to_owned(),
        ..expect()
    };
    assert_refused!(
        refused_with(b"garbage", &e, &BundleLimits::default()),
        BundleError::WrongProduct { .. }
    );
}

/// G045: PL-2-2
#[test]
fn refuses_a_security_version_rollback() {
    let e = Expect {
        installed_security_version: SECURITY_VERSION + 1,
        ..expect()
    };
    assert_refused!(
        refused_with(&good_bundle(), &e, &BundleLimits::default()),
        BundleError::Rollback {
            offered: 7,
            installed: 8
        }
    );
    // The same security version is a reinstall, and allowed.
    let e = Expect {
        installed_security_version: SECURITY_VERSION,
        ..expect()
    };
    let sandbox = Sandbox::new();
    unpack_in(&sandbox, &good_bundle(), &e, &BundleLimits::default()).expect("reinstall");
}

/// G045: PL-2-3
#[test]
fn refuses_a_manifest_disagreeing_with_the_signed_facts() {
    type Change = fn(&mut SignedFacts);
    let cases: [(&str, Change); 4] = [
        ("version", |f| f.version = "1.4.3".into()),
        ("security-version", |f| f.security_version = 6),
        ("product", |f| f.product = "kawal-gw2".into()),
        ("hardware", |f| f.hardware = vec!["rpi4".into()]),
    ];
    for (field, change) in cases {
        let mut e = expect();
        change(&mut e.signed);
        if field == "product" {
            e.product = e.signed.product.clone();
        }
        assert_refused!(
            refused_with(&good_bundle(), &e, &BundleLimits::default()),
            BundleError::Disagrees { field: f, .. } if f == field
        );
    }
    // A rolled-back manifest under the signed facts of a newer release.
    let mut b = BundleBuilder::new(PRODUCT, VERSION, 4, HARDWARE);
    b.file("bin/kawal", 0o755, b"old".to_vec());
    let mut old = Vec::new();
    b.write(&mut old).expect("write");
    assert_refused!(
        refused(&old),
        BundleError::Disagrees {
            field: "security-version",
            ..
        }
    );
}

/// G045: PL-2-3
#[test]
fn reads_signed_facts_from_target_custom_metadata() {
    let custom = |v: serde_json::Value| -> std::collections::BTreeMap<String, serde_json::Value> {
        serde_json::from_value(v).expect("map")
    };
    let good = custom(serde_json::json!({
        "product": PRODUCT, "version": VERSION, "security-version": 7,
        "hardware": ["rpi4", "imx8"], "notes": "ignored"
    }));
    assert_eq!(SignedFacts::from_custom(&good).expect("facts"), facts());
    for bad in [
        serde_json::json!({"version": VERSION, "security-version": 7, "hardware": ["rpi4"]}),
        serde_json::json!({"product": PRODUCT, "version": VERSION, "security-version": -1, "hardware": ["rpi4"]}),
        serde_json::json!({"product": PRODUCT, "version": VERSION, "security-version": "7", "hardware": ["rpi4"]}),
        serde_json::json!({"product": PRODUCT, "version": VERSION, "security-version": 7, "hardware": []}),
        serde_json::json!({"product": PRODUCT, "version": VERSION, "security-version": 7, "hardware": "rpi4"}),
        serde_json::json!({"product": PRODUCT, "version": "1.0 beta", "security-version": 7, "hardware": ["rpi4"]}),
    ] {
        assert_refused!(
            SignedFacts::from_custom(&custom(bad)),
            Err(BundleError::SignedFactsInvalid { .. })
        );
    }
    let f = facts();
    f.check(PRODUCT, "imx8", 7).expect("compatible");
    assert_refused!(
        f.check(PRODUCT, "imx8", 8),
        Err(BundleError::Rollback { .. })
    );
    assert_refused!(
        f.check("x", "imx8", 0),
        Err(BundleError::WrongProduct { .. })
    );
    assert_refused!(
        f.check(PRODUCT, "x", 0),
        Err(BundleError::WrongHardware { .. })
    );
}

// ---- The slot ----------------------------------------------------------------------------------

/// G045: PL-2-2
#[test]
fn refuses_a_slot_that_is_not_an_empty_folder() {
    let sandbox = Sandbox::new();
    fs::write(sandbox.slot().join("left-over"), b"x").expect("write");
    let err = unpack_in(
        &sandbox,
        &good_bundle(),
        &expect(),
        &BundleLimits::default(),
    )
    .expect_err("refused");
    assert_refused!(&err, BundleError::SlotNotEmpty { .. });
    assert!(!err.is_rejection());

    let tmp = tempfile::tempdir().expect("tempdir");
    fs::create_dir(tmp.path().join("real")).expect("mkdir");
    std::os::unix::fs::symlink(tmp.path().join("real"), tmp.path().join("slot")).expect("symlink");
    assert_refused!(
        bundle::unpack(
            &good_bundle()[..],
            &tmp.path().join("slot"),
            &expect(),
            &BundleLimits::default()
        ),
        Err(BundleError::SlotNotEmpty { .. })
    );
}

// ---- The async bridge --------------------------------------------------------------------------

/// Feeds `bytes` through a chunk channel in `chunk`-sized pieces, then ends it with `end`.
async fn through_channel(
    bytes: Vec<u8>,
    chunk: usize,
    pause: Duration,
    end: impl FnOnce(bundle::ChunkSender) + Send + 'static,
) -> (Sandbox, Result<bundle::Manifest, BundleError>) {
    let sandbox = Sandbox::new();
    let slot = sandbox.slot();
    let (tx, rx) = bundle::chunk_channel(2);
    let unpacker = tokio::task::spawn_blocking(move || {
        bundle::unpack_signed(rx, &slot, &expect(), &BundleLimits::default())
    });
    for piece in bytes.chunks(chunk) {
        if tx.send(piece.to_vec()).await.is_err() {
            break;
        }
    }
    // Give the unpacker time to read every byte (and see the end-of-archive marker) before the
    // stream's end is declared.
    tokio::time::sleep(pause).await;
    end(tx);
    let result = unpacker.await.expect("the unpacker does not panic");
    (sandbox, result)
}

/// G045: PL-2-3
#[tokio::test]
async fn streams_a_bundle_through_the_chunk_channel() {
    let (sandbox, result) = through_channel(
        good_bundle(),
        1000,
        Duration::ZERO,
        bundle::ChunkSender::finish,
    )
    .await;
    result.expect("unpacks");
    assert_eq!(
        fs::read(sandbox.slot().join("payload/share/big.bin")).expect("file"),
        big_file()
    );
}

/// G045: PL-2-2
/// A file far larger than the write-back step (4 MiB), whose pages are handed to the disk and
/// dropped from the cache while it streams, arrives whole.
#[tokio::test]
async fn a_large_file_arrives_whole_through_the_early_write_back() {
    let large: Vec<u8> = (0..20_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let mut b = BundleBuilder::new(PRODUCT, VERSION, SECURITY_VERSION, HARDWARE);
    b.file("share/large.bin", 0o444, large.clone());
    let mut bytes = Vec::new();
    b.write(&mut bytes).expect("the builder writes a bundle");
    let (sandbox, result) =
        through_channel(bytes, 1 << 20, Duration::ZERO, bundle::ChunkSender::finish).await;
    result.expect("unpacks");
    let written = fs::read(sandbox.slot().join("payload/share/large.bin")).expect("file");
    assert!(written == large, "the large file differs");
    kawal_update::install::verify_slot(&sandbox.slot()).expect("the slot verifies");
}

/// G045: PL-2-3
/// On the signed path the whole-bundle hash vouches for the bytes, so a vendor-signed bundle
/// whose file disagrees with its own manifest is written; the per-file check before any run
/// (`verify_slot`) is what stops it, and names the file.
#[tokio::test]
async fn a_signed_stream_whose_file_disagrees_with_its_manifest_fails_the_slot_check() {
    let evil = b"\x7fELF malware binary";
    let mut c = Craft::with_manifest();
    c.raw(b"payload/bin/kawal", EntryType::Regular, evil);
    c.payload_except("bin/kawal");
    let (sandbox, result) = through_channel(
        c.finish(),
        4096,
        Duration::ZERO,
        bundle::ChunkSender::finish,
    )
    .await;
    result.expect("written: the stream's own check is the signed hash");
    let why = kawal_update::install::verify_slot(&sandbox.slot()).expect_err("refused");
    assert!(
        why.contains("bin/kawal") && why.contains("SHA-256"),
        "{why}"
    );
}

/// G045: PL-2-3
#[tokio::test]
async fn a_stream_failing_after_the_last_byte_still_refuses_the_bundle() {
    // The whole, valid archive arrives, then the TUF check at the end fails: unpack must not
    // have reported success before the stream ended.
    let (sandbox, result) =
        through_channel(good_bundle(), 4096, Duration::from_millis(300), |tx| {
            tx.fail("target does not match its signed SHA-256");
        })
        .await;
    let err = result.expect_err("refused");
    assert_refused!(&err, BundleError::Stream(_));
    let source = std::error::Error::source(&err).expect("source").to_string();
    assert!(source.contains("signed SHA-256"), "{source}");
    sandbox.assert_contained();
}

/// G045: PL-2-3
#[tokio::test]
async fn a_sender_dropped_without_finishing_refuses_the_bundle() {
    let (sandbox, result) =
        through_channel(good_bundle(), 4096, Duration::from_millis(300), drop).await;
    assert_refused!(result.expect_err("refused"), BundleError::Stream(_));
    sandbox.assert_contained();
}

/// G045: PL-2-2
#[tokio::test]
async fn the_sender_learns_when_the_unpacker_gives_up() {
    let (tx, rx) = bundle::chunk_channel(1);
    let slot = Sandbox::new();
    let path = slot.slot();
    let unpacker = tokio::task::spawn_blocking(move || {
        bundle::unpack_signed(rx, &path, &expect(), &BundleLimits::default())
    });
    let mut closed = false;
    // Garbage is refused at the first header; after that sends fail instead of blocking.
    for _ in 0..1000 {
        if tx.send(vec![0xAA; 512]).await.is_err() {
            closed = true;
            break;
        }
    }
    assert!(closed, "the sender was never told");
    assert_refused!(
        unpacker.await.expect("no panic"),
        Err(BundleError::Malformed { .. })
    );
}

// ---- Bounded random mutation -------------------------------------------------------------------

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Recomputes a header block's checksum so a mutation gets past it.
fn fix_checksum(block: &mut [u8]) {
    block[148..156].fill(b' ');
    let sum: u32 = block.iter().map(|b| u32::from(*b)).sum();
    let text = format!("{sum:06o}\0 ");
    block[148..156].copy_from_slice(text.as_bytes());
}

fn mutate(good: &[u8], headers: &[usize], rng: &mut XorShift) -> Vec<u8> {
    let mut b = good.to_vec();
    for _ in 0..=rng.below(3) {
        let header = headers[rng.below(headers.len())];
        if header + 512 > b.len() {
            continue;
        }
        match rng.below(9) {
            0 => {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = header + rng.below(512);
                b[i] = [0, 0xff, b'/', b'.', b'0', b'7', b' ', b'x'][rng.below(8)];
                fix_checksum(&mut b[header..header + 512]);
            }
            2 => {
                let names: [&[u8]; 6] = [
                    b"payload/../escape",
                    b"/tmp/escape",
                    b"payload/a/../../escape",
                    b"payload/bin/kawal",
                    b"kawal-bundle.toml",
                    b"payload/share",
                ];
                let name = names[rng.below(names.len())];
                b[header..header + 100].fill(0);
                b[header..header + name.len()].copy_from_slice(name);
                fix_checksum(&mut b[header..header + 512]);
            }
            3 => {
                b[header + 156] = b"0123456Lx gKS7\0V"[rng.below(16)];
                fix_checksum(&mut b[header..header + 512]);
            }
            4 => b.truncate(rng.below(b.len())),
            5 => {
                let at = rng.below(b.len() / 512) * 512;
                let block = b[header..header + 512].to_vec();
                b.splice(at..at, block);
            }
            6 => {
                let size = format!("{:011o}\0", rng.next() % 300_000);
                b[header + 124..header + 136].copy_from_slice(size.as_bytes());
                fix_checksum(&mut b[header..header + 512]);
            }
            7 => b.extend((0..rng.below(2048)).map(|_| rng.next() as u8)),
            _ => {
                let at = rng.below(b.len() / 512) * 512;
                b.drain(at..(at + 512).min(b.len()));
            }
        }
        if b.len() < 512 {
            break;
        }
    }
    b
}

/// G045: PL-2-2
#[test]
fn two_thousand_mutations_never_panic_nor_escape_the_slot() {
    let good = good_bundle();
    let mut headers = Vec::new();
    let mut archive = tar::Archive::new(good.as_slice());
    for e in archive.entries().expect("entries").raw(true) {
        headers.push(e.expect("entry").raw_header_position() as usize);
    }
    let seed = 0x6b61_7761_6c21_u64;
    let mut rng = XorShift(seed);
    let sandbox = Sandbox::new();
    let (mut accepted, mut refused) = (0, 0);
    for round in 0..2000 {
        let bytes = mutate(&good, &headers, &mut rng);
        let slot = sandbox.slot();
        let result = std::panic::catch_unwind(|| {
            bundle::unpack(bytes.as_slice(), &slot, &expect(), &BundleLimits::default())
        })
        .unwrap_or_else(|_| panic!("unpack panicked in round {round} (seed {seed:#x})"));
        sandbox.assert_contained();
        match result {
            // Whatever was accepted is exactly what the manifest lists.
            Ok(m) => {
                accepted += 1;
                for f in m.files() {
                    let data = fs::read(slot.join("payload").join(f.path())).expect("listed file");
                    assert_eq!(
                        sha256(&data).as_slice(),
                        f.sha256().as_slice(),
                        "round {round}"
                    );
                }
            }
            Err(_) => refused += 1,
        }
        fs::remove_dir_all(&slot).expect("clear");
        fs::create_dir(&slot).expect("slot");
    }
    assert!(refused > 1000, "too few mutations were refused: {refused}");
    assert!(
        accepted > 0,
        "no mutation kept the bundle valid (trailing bytes should)"
    );
}

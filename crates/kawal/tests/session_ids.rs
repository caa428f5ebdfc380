//! Session IDs from real logins: unique, 256 bits, and random by the FIPS 140-2 statistical
//! tests (G045 DS-3-2).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    clippy::disallowed_macros,
    reason = "test"
)]

mod common;

use std::collections::HashSet;
use std::time::Instant;

use common::gateway::*;
use reqwest::StatusCode;
use serde_json::json;

const ADMIN_PW: &str = "Sturdy-harbour-lantern-47";
const OPERATOR_PW: &str = "Quiet-orbit-tamarind-81";
/// Session IDs collected.
const IDS: usize = 20_000;
/// Client threads, each on its own keep-alive connection.
const THREADS: usize = 4;
/// A FIPS 140-2 test block: 20,000 bits.
const BLOCK_BYTES: usize = 2_500;

/// Which FIPS 140-2 tests a 20,000-bit block failed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Fips {
    monobit: bool,
    poker: bool,
    runs: bool,
    long_run: bool,
}

impl Fips {
    fn passed(self) -> bool {
        !(self.monobit || self.poker || self.runs || self.long_run)
    }
}

/// The FIPS 140-2 (change notice 1) statistical tests on one 20,000-bit block, bits taken
/// most significant first.
fn fips_140_2(block: &[u8]) -> Fips {
    assert_eq!(block.len(), BLOCK_BYTES);
    // Monobit: the number of ones, 9725 < X < 10275.
    let ones: u32 = block.iter().map(|b| b.count_ones()).sum();
    let monobit = !(9_725 < ones && ones < 10_275);
    // Poker: 5,000 4-bit segments; X = 16/5000 · Σ f(i)² − 5000, 2.16 < X < 46.17.
    let mut f = [0u64; 16];
    for b in block {
        f[usize::from(b >> 4)] += 1;
        f[usize::from(b & 0x0f)] += 1;
    }
    let sum_sq: u64 = f.iter().map(|n| n * n).sum();
    #[allow(clippy::cast_precision_loss, reason = "small integers")]
    let x = 16.0 / 5_000.0 * sum_sq as f64 - 5_000.0;
    let poker = !(2.16 < x && x < 46.17);
    // Runs of each length (6 = "6 and more"), for zeros and ones alike, within the intervals;
    // long run: no run of 26 or more.
    const RUN_BOUNDS: [(u32, u32); 6] = [
        (2_315, 2_685),
        (1_114, 1_386),
        (527, 723),
        (240, 384),
        (103, 209),
        (103, 209),
    ];
    let mut runs = [[0u32; 6]; 2];
    let mut longest = 0usize;
    let mut current: Option<(u8, usize)> = None;
    let mut close = |bit: u8, len: usize, runs: &mut [[u32; 6]; 2]| {
        runs[usize::from(bit)][len.min(6) - 1] += 1;
        longest = longest.max(len);
    };
    for byte in block {
        for i in (0..8).rev() {
            let bit = (byte >> i) & 1;
            current = match current {
                Some((b, len)) if b == bit => Some((b, len + 1)),
                Some((b, len)) => {
                    close(b, len, &mut runs);
                    Some((bit, 1))
                }
                None => Some((bit, 1)),
            };
        }
    }
    if let Some((b, len)) = current {
        close(b, len, &mut runs);
    }
    let runs_fail = runs.iter().any(|per_bit| {
        per_bit
            .iter()
            .zip(RUN_BOUNDS)
            .any(|(n, (lo, hi))| *n < lo || *n > hi)
    });
    Fips {
        monobit,
        poker,
        runs: runs_fail,
        long_run: longest >= 26,
    }
}

/// A small deterministic generator for the self-check (xorshift64*; not for keys).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn block(&mut self) -> Vec<u8> {
        (0..BLOCK_BYTES)
            .map(|_| self.next().to_be_bytes()[0])
            .collect()
    }

    /// A block whose bits are ones with probability `percent` %.
    fn biased(&mut self, percent: u64) -> Vec<u8> {
        (0..BLOCK_BYTES)
            .map(|_| {
                (0..8).fold(0u8, |acc, _| {
                    (acc << 1) | u8::from(self.next() % 100 < percent)
                })
            })
            .collect()
    }
}

/// The statistics can fail: they pass a sound generator's blocks and reject biased,
/// patterned and stuck ones, each by the test meant to catch it.
#[test]
fn the_fips_tests_reject_bad_generators() {
    let mut g = XorShift(0x9e37_79b9_7f4a_7c15);
    let good: Vec<Fips> = (0..20).map(|_| fips_140_2(&g.block())).collect();
    assert!(good.iter().filter(|f| f.passed()).count() >= 19, "{good:?}");
    // 60 % ones.
    for _ in 0..5 {
        let f = fips_140_2(&g.biased(60));
        assert!(f.monobit, "a 60 % biased block passed monobit");
    }
    // Balanced but patterned: 0101…
    let f = fips_140_2(&[0x55; BLOCK_BYTES]);
    assert!(!f.monobit && f.poker && f.runs, "{f:?}");
    // A sound block with 32 zero bits in the middle.
    let mut stuck = g.block();
    stuck[1_000..1_004].fill(0);
    assert!(fips_140_2(&stuck).long_run);
    // Half the nibbles repeated: poker.
    let mut repeated = g.block();
    for b in repeated.iter_mut().step_by(2) {
        *b = 0xa5;
    }
    assert!(fips_140_2(&repeated).poker);
}

/// The answer of a login: the session cookie's value.
fn session_cookie(r: &reqwest::blocking::Response) -> Option<String> {
    r.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "__Host-kawal-session")
        .map(|(_, v)| v.to_owned())
}

/// G045: DS-3-2
///
/// 20,000 session IDs from real logins (an operator account, which may hold many sessions, so
/// no login ends another's session): all distinct, each 256 bits (64 lowercase hex digits, the
/// encoding of `kawal_auth::session`), and their bits, concatenated in the order they were
/// issued per connection, pass the FIPS 140-2 statistical tests (monobit, poker, runs, long
/// run) in 256 blocks of 20,000 bits.
///
/// The FIPS tests reject a sound generator's block about once in 1,200 blocks (rngtest's
/// known false-alarm rate; 164 of 200,000 blocks from the OS generator here, see
/// `the_os_generator_fails_fips_blocks_at_the_known_rate`). Demanding that all 256 blocks
/// pass would fail about one run in five with a perfect generator, so the test allows at most
/// 3 failing blocks: a perfect generator exceeds that about once in 15,000 runs, while a
/// biased or patterned one fails every block (see `the_fips_tests_reject_bad_generators`).
#[test]
fn session_ids_are_unique_256_bit_and_pass_fips_140_2() {
    let gw = Gateway::start();
    drop(gw.admin_ready(ADMIN_PW));
    let mut admin = gw.client();
    assert_eq!(admin.login("admin", ADMIN_PW).status(), StatusCode::OK);
    let proof = admin.reauth(ADMIN_PW);
    let r = admin.post_reauth(
        "/api/v1/accounts",
        &json!({ "username": "op1", "role": "operator", "password": OPERATOR_PW }),
        &proof,
    );
    assert_eq!(r.status(), StatusCode::CREATED);

    let started = Instant::now();
    let url = gw.url("/api/v1/login");
    let body = serde_json::to_vec(&json!({ "username": "op1", "password": OPERATOR_PW })).unwrap();
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let http = http_client(&gw.ca_pem, None);
                let (url, body) = (&url, &body);
                s.spawn(move || {
                    let mut out = Vec::with_capacity(IDS / THREADS);
                    while out.len() < IDS / THREADS {
                        let r = http
                            .post(url)
                            .header("content-type", "application/json")
                            .body(body.clone())
                            .send()
                            .unwrap();
                        if r.status() == StatusCode::SERVICE_UNAVAILABLE {
                            continue; // the verification pool was full: try again
                        }
                        assert_eq!(r.status(), StatusCode::OK);
                        out.push(session_cookie(&r).expect("a session cookie"));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    eprintln!("{} logins in {:?}", ids.len(), started.elapsed());
    assert_eq!(ids.len(), IDS);

    let mut raw = Vec::with_capacity(IDS * 32);
    for id in &ids {
        assert!(
            id.len() == 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "not 64 lowercase hex digits: {} characters",
            id.len()
        );
        let bytes = hex::decode(id).unwrap();
        assert_eq!(bytes.len() * 8, 256);
        raw.extend_from_slice(&bytes);
    }
    let distinct: HashSet<&[u8]> = raw.chunks(32).collect();
    assert_eq!(distinct.len(), IDS, "duplicate session IDs");

    let blocks: Vec<Fips> = raw.chunks(BLOCK_BYTES).map(fips_140_2).collect();
    assert_eq!(blocks.len(), IDS * 256 / 20_000);
    let failed: Vec<(usize, Fips)> = blocks
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, f)| !f.passed())
        .collect();
    eprintln!(
        "FIPS 140-2: {} of {} blocks failed: {failed:?}",
        failed.len(),
        blocks.len()
    );
    assert!(
        failed.len() <= 3,
        "{} of {} blocks failed FIPS 140-2: {failed:?}",
        failed.len(),
        blocks.len()
    );
}

/// The false-alarm rate the allowance above is built on: blocks straight from the OS
/// generator fail the FIPS tests about once in 1,200 (ten times the session sample here;
/// `KAWAL_FIPS_BLOCKS` sets another count).
#[test]
fn the_os_generator_fails_fips_blocks_at_the_known_rate() {
    use std::io::Read;
    let n: usize = std::env::var("KAWAL_FIPS_BLOCKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_560);
    let mut urandom = std::fs::File::open("/dev/urandom").unwrap();
    let mut block = vec![0u8; BLOCK_BYTES];
    let mut failed = [0usize; 5];
    for _ in 0..n {
        urandom.read_exact(&mut block).unwrap();
        let f = fips_140_2(&block);
        failed[0] += usize::from(!f.passed());
        failed[1] += usize::from(f.monobit);
        failed[2] += usize::from(f.poker);
        failed[3] += usize::from(f.runs);
        failed[4] += usize::from(f.long_run);
    }
    eprintln!("{n} blocks; failed (any, monobit, poker, runs, long run): {failed:?}");
    // Expected about n/1200; ten times that fails a sound generator practically never.
    assert!(failed[0] <= (n / 130).max(10), "{failed:?}");
}

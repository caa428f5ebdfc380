//! The OS CSPRNG (through aws-lc-rs) and its continuous health tests.
//!
//! The health tests follow NIST SP 800-90B section 4.4: the repetition count test catches a
//! source stuck on one value, the adaptive proportion test one that repeats a value too often.
//! The cut-offs assume full entropy per byte (H = 8) at a false-alarm rate of about 2^-31.

use crate::{Error, Result};

/// Fills `dest` from the OS CSPRNG.
pub fn fill(dest: &mut [u8]) -> Result<()> {
    aws_lc_rs::rand::fill(dest).map_err(|_| Error::Rng("the OS random source failed"))
}

/// A fixed-size array of random bytes.
pub fn array<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    fill(&mut out)?;
    Ok(out)
}

/// Repetition count cut-off: C = 1 + ceil(40 / H) with H = 8 (alpha = 2^-40).
pub const REPETITION_CUTOFF: usize = 6;
/// Adaptive proportion window (non-binary sources).
pub const PROPORTION_WINDOW: usize = 512;
/// Adaptive proportion cut-off for H = 8 (binomial tail about 2^-31).
pub const PROPORTION_CUTOFF: usize = 16;

/// Result of one health run, with the worst statistics seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    /// Bytes examined.
    pub samples: usize,
    /// Longest run of one value.
    pub longest_run: usize,
    /// Highest count of a window's first value within its window.
    pub max_proportion: usize,
}

/// Runs both tests over `samples` bytes drawn from `source`.
pub fn health_check(
    samples: usize,
    mut source: impl FnMut(&mut [u8]) -> Result<()>,
) -> Result<HealthReport> {
    let mut buf = vec![0u8; samples];
    source(&mut buf)?;
    let longest_run = longest_run(&buf);
    if longest_run >= REPETITION_CUTOFF {
        return Err(Error::Rng("repetition count test failed"));
    }
    let max_proportion = max_proportion(&buf);
    if max_proportion >= PROPORTION_CUTOFF {
        return Err(Error::Rng("adaptive proportion test failed"));
    }
    Ok(HealthReport {
        samples,
        longest_run,
        max_proportion,
    })
}

/// Health check of the real OS source (4096 bytes: eight proportion windows).
pub fn os_health_check() -> Result<HealthReport> {
    health_check(4096, fill)
}

fn longest_run(buf: &[u8]) -> usize {
    let mut longest = 0;
    let mut run = 0;
    let mut prev = None;
    for &b in buf {
        run = if prev == Some(b) { run + 1 } else { 1 };
        prev = Some(b);
        longest = longest.max(run);
    }
    longest
}

fn max_proportion(buf: &[u8]) -> usize {
    buf.chunks_exact(PROPORTION_WINDOW)
        .map(|w| w.iter().filter(|&&b| b == w[0]).count())
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// G045: CR-1-1, PL-3-4
    #[test]
    fn os_source_passes_health_tests() {
        let r = os_health_check().unwrap();
        assert_eq!(r.samples, 4096);
        assert!(r.longest_run < REPETITION_CUTOFF);
    }

    /// G045: PL-3-4
    #[test]
    fn stuck_source_fails_repetition_test() {
        let err = health_check(4096, |b| {
            b.fill(0x5a);
            Ok(())
        })
        .unwrap_err();
        assert!(err.to_string().contains("repetition"));
    }

    /// G045: PL-3-4
    #[test]
    fn biased_source_fails_proportion_test() {
        // Never repeats back to back, but every other byte is the same value.
        let err = health_check(4096, |b| {
            for (i, x) in b.iter_mut().enumerate() {
                *x = if i % 2 == 0 {
                    7
                } else {
                    u8::try_from(i % 200).unwrap() + 8
                };
            }
            Ok(())
        })
        .unwrap_err();
        assert!(err.to_string().contains("proportion"));
    }
}

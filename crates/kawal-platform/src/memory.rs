//! How the process gives memory back. Argon2id needs 19 MiB per password check; glibc's
//! allocator raises its mmap threshold after the first such block is freed, so the next ones
//! come from the heap arenas and are never returned: an idle daemon that has checked a few
//! passwords holds ~50 MiB instead of ~14 MiB. A fixed threshold keeps large blocks mmapped,
//! so they go back to the kernel when freed (measured in docs/BENCHMARKS.md).

/// Blocks at least this large are always mmapped (and unmapped when freed).
pub const MMAP_THRESHOLD: usize = 1024 * 1024;

/// Fixes glibc's mmap threshold at [`MMAP_THRESHOLD`]; call once, before threads start.
/// Returns whether the allocator took it (always false on other C libraries).
pub fn return_large_blocks() -> bool {
    set_mmap_threshold(MMAP_THRESHOLD)
}

/// The second function of kawal allowed to use `unsafe` (ADR 0002, amended).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_mmap_threshold(bytes: usize) -> bool {
    let Ok(value) = libc::c_int::try_from(bytes) else {
        return false;
    };
    // SAFETY: mallopt(3) takes two integers and changes an allocator parameter; it reads or
    // writes no memory of ours, and M_MMAP_THRESHOLD with a value below the 32 MiB maximum
    // is a documented, valid setting at any time.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, value) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_mmap_threshold(_bytes: usize) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_takes_the_threshold() {
        assert_eq!(
            return_large_blocks(),
            cfg!(all(target_os = "linux", target_env = "gnu"))
        );
    }
}

//! How the process gives memory back. Argon2id needs 19 MiB per password check; glibc's
//! allocator raises its mmap threshold after the first such block is freed, so the next ones
//! come from the heap arenas and are never returned: an idle daemon that has checked a few
//! passwords holds ~50 MiB instead of ~14 MiB. A fixed threshold keeps large blocks mmapped,
//! so they go back to the kernel when freed (measured in docs/BENCHMARKS.md).
//!
//! Thousands of sensor handshakes leave the heap fragmented: each allocates and frees tens
//! of KiB around the few KiB its connection keeps. [`limit_arenas`] keeps every thread in
//! two arenas (one per core of the smallest gateways) instead of up to eight per core, and
//! [`trim`] hands whole free pages inside the heap back to the kernel.

/// Blocks at least this large are always mmapped (and unmapped when freed).
pub const MMAP_THRESHOLD: usize = 1024 * 1024;

/// The most malloc arenas the process uses (see [`limit_arenas`]).
pub const ARENAS: usize = 2;

/// Fixes glibc's mmap threshold at [`MMAP_THRESHOLD`]; call once, before threads start.
/// Returns whether the allocator took it (always false on other C libraries).
pub fn return_large_blocks() -> bool {
    allocator(Call::MmapThreshold(MMAP_THRESHOLD))
}

/// Caps glibc's malloc arenas at [`ARENAS`]; call once, before threads start. Returns whether
/// the allocator took it.
pub fn limit_arenas() -> bool {
    allocator(Call::ArenaMax(ARENAS))
}

/// Gives free heap pages back to the kernel (glibc's `malloc_trim(0)`). Returns whether any
/// memory was released. It holds each arena's lock while it walks it: a few milliseconds
/// for a heap of 100 MiB, so call it now and then, off the async runtime's threads.
pub fn trim() -> bool {
    allocator(Call::Trim)
}

#[derive(Clone, Copy)]
enum Call {
    MmapThreshold(usize),
    ArenaMax(usize),
    Trim,
}

/// The second function of kawal allowed to use `unsafe` (ADR 0002, amended).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn allocator(call: Call) -> bool {
    let (param, value) = match call {
        Call::MmapThreshold(bytes) => (libc::M_MMAP_THRESHOLD, bytes),
        Call::ArenaMax(n) => (libc::M_ARENA_MAX, n),
        // SAFETY: malloc_trim(3) takes an integer (the padding to keep at the heap's top) and
        // releases free pages under the allocator's own locks; it reads or writes no memory
        // of ours and is safe to call from any thread at any time.
        Call::Trim => return unsafe { libc::malloc_trim(0) == 1 },
    };
    let Ok(value) = libc::c_int::try_from(value) else {
        return false;
    };
    // SAFETY: mallopt(3) takes two integers and changes an allocator parameter; it reads or
    // writes no memory of ours. M_MMAP_THRESHOLD below its 32 MiB maximum and M_ARENA_MAX
    // with a positive count are documented, valid settings at any time.
    unsafe { libc::mallopt(param, value) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn allocator(_call: Call) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_takes_the_threshold_and_the_arena_cap() {
        let glibc = cfg!(all(target_os = "linux", target_env = "gnu"));
        assert_eq!(return_large_blocks(), glibc);
        assert_eq!(limit_arenas(), glibc);
    }

    #[test]
    fn trim_gives_freed_pages_back() {
        // 16 MB of small blocks, then all freed but one in 64: the free runs between the
        // survivors cannot go back by shrinking the heap's top, only by a trim.
        let mut blocks: Vec<Vec<u8>> = (0..4096).map(|_| vec![7u8; 4000]).collect();
        let survivors: Vec<Vec<u8>> = blocks.drain(..).step_by(64).collect();
        assert_eq!(
            trim(),
            cfg!(all(target_os = "linux", target_env = "gnu")),
            "glibc should release the free pages"
        );
        assert_eq!(survivors.len(), 64);
    }
}

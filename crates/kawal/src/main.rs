//! The `kawal` binary; everything lives in the library so it can be tested.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    // Before any thread starts: Argon2id's 19 MiB blocks must go back to the kernel.
    kawal_platform::memory::return_large_blocks();
    // And every thread shares two arenas: fewer half-empty heaps (ADR 0002, amended).
    kawal_platform::memory::limit_arenas();
    kawal::cli::main()
}

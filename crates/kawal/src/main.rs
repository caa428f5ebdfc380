//! The `kawal` binary; everything lives in the library so it can be tested.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    kawal::cli::main()
}

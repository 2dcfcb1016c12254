//! The `sluis` command line; see `sluis --help` and contract §1.

fn main() -> std::process::ExitCode {
    sluis::cli::main()
}

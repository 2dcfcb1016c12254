//! The `sluis` command line; see `sluis --help` and contract §1.

/// jemalloc for the whole process: Rust's allocations and, because it replaces `malloc` itself,
/// SQLite's. glibc's allocator was a fifth of the server's CPU under ingest
/// (docs/performance.md).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    sluis::cli::main()
}

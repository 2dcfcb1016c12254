//! The `sluis` command line; see `sluis --help` and contract §1.

/// jemalloc for the whole process: Rust's allocations and, because it replaces `malloc` itself,
/// SQLite's. glibc's allocator was a fifth of the server's CPU under ingest
/// (docs/performance.md). Built without the `jemalloc` feature, glibc's allocator is used.
#[cfg(all(feature = "jemalloc", target_os = "linux", target_env = "gnu"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    sluis::cli::main()
}

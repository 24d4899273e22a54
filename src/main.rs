//! `netrev`: the binary. Parses the command line and environment, then hands over to the
//! library crates: [`serve`] wires ingest and storage into one HTTP service.

mod cli;
mod commands;
mod devtools;

/// mimalloc instead of glibc's allocator: the ingest path allocates small, short-lived
/// buffers on every worker thread, where glibc's arenas showed up as a tenth of the CPU time
/// in profiles of the ingest benchmark.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its `mimalloc.h`; libmimalloc-sys names no constant
/// for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps the memory the allocator frees for reuse instead of handing it back to the OS a
/// second later (mimalloc's default), unless `MIMALLOC_PURGE_DELAY` says otherwise. For a
/// one-shot `recompute`: its stages free and allocate gigabytes one after another, and memory
/// handed back is zeroed again by the kernel when touched anew (a quarter of a recompute's CPU
/// time in profiles). `serve` keeps the default, so it shrinks back after its recomputes.
#[allow(unsafe_code)]
pub(crate) fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a process-wide option that mimalloc reads whenever it would purge.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
    }
}

/// Turns off transparent huge pages for this process, unless `MIMALLOC_ALLOW_THP` says
/// otherwise. For a one-shot `recompute`: mimalloc asks the kernel for 2 MiB pages, each zeroed
/// whole when first touched, and on this project's VM those faults cost more than the fewer
/// TLB misses save. Measured on the benchmark history (10M clicks), seven runs each, taking
/// turns, two of them right after another process had used and freed 2.7 GiB (as DuckDB does
/// in the benchmark): 8.8–9.4 s (1.6–2.3 s of system time) without them, 9.0–11.9 s (2.5–8.1 s)
/// with them.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub(crate) fn no_huge_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: sets a flag of this process that the kernel reads on page faults; passes no
        // memory.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn no_huge_pages() {}

use clap::Parser;

use cli::Cli;

/// Logging without `NETREV_LOG`: netrev at info; Ballista (which logs every task at info and
/// some harmless metric mismatches as errors) only at warn.
const DEFAULT_LOG: &str = "info,ballista=warn,ballista_core=warn,ballista_executor=warn,\
                           ballista_scheduler=warn,ballista_scheduler::display=off";

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NETREV_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // Deep query plans are walked recursively (Ballista encodes and decodes each plan it ships):
    // more room than tokio's 2 MiB workers and the main thread's 8 MiB, for the workers and
    // for the thread that drives the command.
    const STACK: usize = 16 << 20;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if cli.is_local_recompute() {
        // The blocking threads of a local recompute read local files and encode Parquet:
        // work for the cores, not for hundreds of threads. Each thread that ever allocated
        // keeps memory of its own in the allocator; with tokio's 512 (41 were started), peak
        // RSS was 3.5–4.1 GiB, with one per core 3.1–3.5 GiB, and no slower.
        builder.max_blocking_threads(std::thread::available_parallelism().map_or(2, |n| n.get()));
    }
    let runtime = builder.enable_all().thread_stack_size(STACK).build()?;
    std::thread::Builder::new()
        .name("netrev-main".into())
        .stack_size(STACK)
        .spawn(move || runtime.block_on(cli::run(cli)))?
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

#[cfg(test)]
mod tests {
    /// The option set by `keep_freed_memory` is mimalloc's purge delay: the only option whose
    /// default is 1000 (milliseconds). A mimalloc that renumbered its options fails here.
    #[test]
    #[allow(unsafe_code)]
    fn purge_delay_option_is_the_one_that_defaults_to_a_second() {
        // SAFETY: reads a process-wide option.
        let delay = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(delay, 1000);
    }

    #[cfg(target_os = "linux")]
    #[test]
    #[allow(unsafe_code)]
    fn no_huge_pages_sets_the_process_flag() {
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
            return; // the variable leaves the flag as it is
        }
        super::no_huge_pages();
        // SAFETY: reads a flag of this process.
        let disabled = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(disabled, 1);
    }
}

//! `netrev`: the binary. Sets the allocator and the runtime, then hands the command line to
//! [`netrev::cli`], which turns it into the configuration of the crate each command runs.

/// mimalloc instead of glibc's allocator: the ingest path allocates small, short-lived
/// buffers on every worker thread, where glibc's arenas showed up as a tenth of the CPU time
/// in profiles of the ingest benchmark.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;

use netrev::cli::{self, Cli};

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
        // Colours for a terminal only: a log file or journald gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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

//! Where analysts' queries run in a server, and what bounds them.
//!
//! A query from `POST /api/sql` (or one the dashboard's routes plan) is the one input of the
//! service whose cost the sender chooses, so it must not be able to take what postbacks need:
//!
//! - **Threads.** Queries run on a runtime of their own ([`Analysts`]), never on the threads
//!   that accept and acknowledge postbacks. Planning is part of the work sent there, so it
//!   counts against the time limit; at the limit the task is aborted, which drops the plan's
//!   streams and the tasks they spawned (a plan stops using CPU at its next await).
//! - **Memory.** Each query gets a memory pool of its own, drawn from one budget shared by all
//!   queries ([`QueryPool`]); DataFusion's operators reserve from it, spilling to disk is off,
//!   and the rows collected for the answer are reserved too. Scalar functions reserve nothing in
//!   DataFusion, and some make output far larger than their input (`repeat('x', 2147483647)`
//!   is 2 GiB from 20 bytes): every one is wrapped to reserve what it makes
//!   ([`crate::bounded`]).
//! - **Size and depth** of the SQL text are checked before anything is planned
//!   ([`crate::query::check`]).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{MemoryLimit, MemoryPool, MemoryReservation};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::SessionContext;

use crate::query::{Limits, QueryError};
use netrev_storage::Store;

/// The flag that sets the memory of all queries together, named in errors so the operator
/// knows what to raise.
pub const MEMORY_FLAG: &str = "--sql-max-memory";
/// The flag that sets the memory of one query.
pub const QUERY_MEMORY_FLAG: &str = "--sql-query-max-memory";

/// The runtime, budget and limits of analysts' queries in a server.
pub struct Analysts {
    /// The runtime queries run on: its own threads, apart from the ones serving postbacks.
    handle: tokio::runtime::Handle,
    /// Memory all queries together may reserve (`--sql-max-memory`).
    budget: Arc<Budget>,
    /// Per query: rows, time, text size, depth and memory.
    pub limits: Limits,
    /// Partitions a query is split into: one per thread of the runtime.
    threads: usize,
}

impl fmt::Debug for Analysts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Analysts")
            .field("limits", &self.limits)
            .field("threads", &self.threads)
            .field("budget", &self.budget.limit)
            .finish()
    }
}

impl Analysts {
    /// Starts `threads` worker threads for queries, with `budget` bytes for all of them.
    pub fn start(threads: usize, budget: usize, limits: Limits) -> std::io::Result<Analysts> {
        let threads = threads.max(1);
        // DataFusion walks plans recursively: 16 MiB of stack, as the main runtime's workers
        // have (tokio's default is 2 MiB). Blocking threads read local
        // files (object_store's reads are blocking calls): a few per worker let reads overlap
        // the work, without tokio's default of up to 512 threads.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .max_blocking_threads(threads * 4)
            .thread_name("netrev-sql")
            .thread_stack_size(16 << 20)
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        // Lives as long as the process: a runtime may not be dropped from async code, and the
        // server's state is dropped there at shutdown.
        std::mem::forget(runtime);
        Ok(Analysts {
            handle,
            budget: Arc::new(Budget {
                limit: budget,
                used: AtomicUsize::new(0),
            }),
            limits,
            threads,
        })
    }

    /// Runs `work` on the queries' runtime within the time limit; at the limit it is aborted.
    pub async fn run<T, F>(&self, work: F) -> Result<T, QueryError>
    where
        F: Future<Output = Result<T, QueryError>> + Send + 'static,
        T: Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let mut task = self.handle.spawn(STOP.scope(stop.clone(), work));
        match tokio::time::timeout(self.limits.timeout, &mut task).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) if e.is_panic() => Err(QueryError::Server(
                "the query's task panicked (a bug: the log has its message)".into(),
            )),
            Ok(Err(_)) => Err(QueryError::Server(
                "the query's task was cancelled: the server is stopping".into(),
            )),
            Err(_) => {
                // Aborting takes effect at the task's next await, which an operator looping
                // over batches that are all ready may not reach for long (a cross join feeding
                // an aggregate runs to its end without one). Operators reserve memory as they
                // go, so the query's pool refuses them from now on: that ends them too.
                stop.store(true, Ordering::Relaxed);
                task.abort();
                Err(QueryError::Timeout(self.limits.timeout))
            }
        }
    }

    /// A session over `store` for one query: its own memory pool, no spilling, the bounded
    /// functions. Call it inside [`Analysts::run`], so that its planning is timed too.
    pub async fn session(&self, store: &Store) -> crate::Result<SessionContext> {
        let pool: Arc<dyn MemoryPool> = Arc::new(QueryPool {
            limit: self.limits.max_memory.min(self.budget.limit),
            used: AtomicUsize::new(0),
            budget: self.budget.clone(),
            stop: STOP.try_with(Arc::clone).unwrap_or_default(),
        });
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(pool.clone())
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()?;
        let ctx = crate::query_session_in(store, runtime, self.threads).await?;
        crate::bounded::bound_functions(&ctx, &pool);
        Ok(ctx)
    }
}

tokio::task_local! {
    /// Set by [`Analysts::run`] when the query's time is up; the pools of sessions made in it
    /// then refuse every reservation.
    static STOP: Arc<AtomicBool>;
}

/// The memory all queries together may reserve.
#[derive(Debug)]
struct Budget {
    limit: usize,
    used: AtomicUsize,
}

/// One query's memory pool: at most `limit` bytes, and only while the shared budget has them.
#[derive(Debug)]
pub struct QueryPool {
    limit: usize,
    used: AtomicUsize,
    budget: Arc<Budget>,
    /// The query's time is up: refuse everything.
    stop: Arc<AtomicBool>,
}

impl QueryPool {
    /// The error of a reservation refused by `limit` (this query's or all queries' one).
    fn exhausted(
        &self,
        reservation: &MemoryReservation,
        additional: usize,
        limit: Exhausted,
    ) -> DataFusionError {
        let (what, bytes, flag) = match limit {
            Exhausted::Query => ("one query", self.limit, QUERY_MEMORY_FLAG),
            Exhausted::Budget => ("all queries together", self.budget.limit, MEMORY_FLAG),
        };
        DataFusionError::ResourcesExhausted(format!(
            "{} wanted {additional} more bytes: the query would pass the memory limit of \
             {what}, {bytes} bytes ({flag}; {} in use by this query, {} by all)",
            reservation.consumer().name(),
            self.used.load(Ordering::Relaxed),
            self.budget.used.load(Ordering::Relaxed),
        ))
    }
}

/// Which memory limit refused a reservation.
#[derive(Debug, Clone, Copy)]
enum Exhausted {
    Query,
    Budget,
}

impl fmt::Display for QueryPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "query pool ({} of {} bytes)",
            self.reserved(),
            self.limit
        )
    }
}

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        "netrev-query"
    }

    fn grow(&self, _reservation: &MemoryReservation, additional: usize) {
        self.used.fetch_add(additional, Ordering::Relaxed);
        self.budget.used.fetch_add(additional, Ordering::Relaxed);
    }

    fn shrink(&self, _reservation: &MemoryReservation, shrink: usize) {
        self.used.fetch_sub(shrink, Ordering::Relaxed);
        self.budget.used.fetch_sub(shrink, Ordering::Relaxed);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> DfResult<()> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(DataFusionError::Execution(
                "the query ran past its time limit and was stopped".into(),
            ));
        }
        let add =
            |limit: usize| move |used: usize| used.checked_add(additional).filter(|n| *n <= limit);
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, add(self.limit))
            .map_err(|_| self.exhausted(reservation, additional, Exhausted::Query))?;
        if self
            .budget
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, add(self.budget.limit))
            .is_err()
        {
            self.used.fetch_sub(additional, Ordering::Relaxed);
            return Err(self.exhausted(reservation, additional, Exhausted::Budget));
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::memory_pool::MemoryConsumer;

    #[tokio::test]
    async fn a_query_past_its_memory_is_refused_naming_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        let limits = Limits {
            max_memory: 64 << 20,
            ..Limits::default()
        };
        let analysts = Analysts::start(1, 256 << 20, limits).unwrap();
        let ctx = analysts.session(&store).await.unwrap();
        let small = crate::query::run(&ctx, "SELECT length(repeat('x', 1000)) AS n", limits)
            .await
            .unwrap();
        assert_eq!(small.batches[0].num_rows(), 1);
        for sql in [
            "SELECT length(repeat('x', 2147483647))",
            "SELECT length(lpad('x', 2147483647))",
            "SELECT cardinality(range(0, 10000000000))",
            "SELECT length(replace(repeat('a', 100000), '', repeat('b', 100000)))",
        ] {
            match crate::query::run(&ctx, sql, limits).await {
                Err(QueryError::OutOfMemory(m)) => {
                    assert!(m.contains(QUERY_MEMORY_FLAG), "{m}")
                }
                other => panic!("{sql}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn queries_together_stay_within_the_budget_naming_its_flag() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        let limits = Limits {
            max_memory: 32 << 20,
            ..Limits::default()
        };
        let analysts = Analysts::start(1, 48 << 20, limits).unwrap();
        // One query holds 30 MiB of the 48.
        let first = analysts.session(&store).await.unwrap();
        let held = MemoryConsumer::new("first query").register(&first.runtime_env().memory_pool);
        held.try_grow(30 << 20).unwrap();
        // Another needs 20 MiB: within its own 32, not within what the budget has left.
        let second = analysts.session(&store).await.unwrap();
        let sql = "SELECT length(repeat('x', n)) AS n FROM (VALUES (20000000)) AS t(n)";
        match crate::query::run(&second, sql, limits).await {
            Err(QueryError::OutOfMemory(m)) => {
                assert!(m.contains(MEMORY_FLAG) && m.contains("all queries"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        // Once the first lets go, it runs.
        drop(held);
        let answer = crate::query::run(&second, sql, limits).await.unwrap();
        assert_eq!(answer.batches[0].num_rows(), 1);
    }
}

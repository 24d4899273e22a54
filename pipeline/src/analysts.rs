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
//!   DataFusion, and a few make output far larger than their input (`repeat('x', 2147483647)`
//!   is 2 GiB from 20 bytes): those are replaced by [`Bounded`] wrappers that reserve the most
//!   their arguments can produce before calling the built-in.
//! - **Size and depth** of the SQL text are checked before anything is planned
//!   ([`crate::query::check`]).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Int64Type, IntervalMonthDayNanoType, TimeUnit};
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
};
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
        bound_functions(&ctx, &pool);
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

/// The built-in scalar functions whose output can be far larger than their arguments.
const AMPLIFIERS: &[&str] = &[
    "repeat",
    "lpad",
    "rpad",
    "replace",
    "regexp_replace",
    "array_repeat",
    "array_resize",
    "range",
    "generate_series",
];

/// Replaces the [`AMPLIFIERS`] of `ctx` by [`Bounded`] wrappers reserving from `pool`.
fn bound_functions(ctx: &SessionContext, pool: &Arc<dyn MemoryPool>) {
    let state = ctx.state();
    for name in AMPLIFIERS {
        if let Some(inner) = state.scalar_functions().get(*name) {
            ctx.register_udf(ScalarUDF::new_from_impl(Bounded {
                inner: inner.clone(),
                pool: pool.clone(),
            }));
        }
    }
}

/// A built-in function that, before it runs, reserves from the query's pool the most its
/// arguments can make it produce ([`output_bound`]); the call is refused when that does not
/// fit. The reservation is released when the call returns: it bounds the allocation the call
/// makes, which no operator has accounted for yet.
#[derive(Debug)]
pub struct Bounded {
    inner: Arc<ScalarUDF>,
    pool: Arc<dyn MemoryPool>,
}

impl PartialEq for Bounded {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner && Arc::ptr_eq(&self.pool, &other.pool)
    }
}

impl Eq for Bounded {}

impl std::hash::Hash for Bounded {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
    }
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }
    fn signature(&self) -> &Signature {
        self.inner.signature()
    }
    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        self.inner.return_type(arg_types)
    }
    fn return_field_from_args(
        &self,
        args: ReturnFieldArgs,
    ) -> DfResult<arrow::datatypes::FieldRef> {
        self.inner.return_field_from_args(args)
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }
    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let bound = output_bound(self.inner.name(), &args.args, args.number_rows)?;
        let bytes = usize::try_from(bound).unwrap_or(usize::MAX);
        let reservation =
            MemoryConsumer::new(format!("{}()", self.inner.name())).register(&self.pool);
        reservation.try_grow(bytes)?;
        let out = self.inner.invoke_with_args(args);
        drop(reservation);
        out
    }
}

/// The most bytes `name` can produce from `args` over `rows` rows (an upper bound).
fn output_bound(name: &str, args: &[ColumnarValue], rows: usize) -> DfResult<u128> {
    let cols = args.iter().map(Arg::of).collect::<DfResult<Vec<_>>>()?;
    let arg = |i: usize| cols.get(i);
    let n = if args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
        1
    } else {
        rows
    };
    let mut total: u128 = 0;
    for r in 0..n {
        let len = |i: usize| arg(i).map_or(0, |a| a.len(r));
        let int = |i: usize| arg(i).map_or(0, |a| a.int(r));
        let count = |i: usize| u128::try_from(int(i)).unwrap_or(0);
        let row = match name {
            "repeat" => len(0) * count(1),
            // At most four bytes a character.
            "lpad" | "rpad" => 4 * count(1) + len(0),
            "replace" => {
                let pieces = len(0) / len(1).max(1) + 1;
                len(0) + pieces * len(2)
            }
            "regexp_replace" => {
                // A pattern can match between any two bytes, and a replacement that names a
                // group can repeat the whole text each time.
                let refs = arg(2).map_or(0, |a| a.refs(r));
                let each = len(2) + refs * len(0);
                len(0) + (len(0) + 1) * each
            }
            "array_repeat" => count(1) * (len(0) + 16),
            "array_resize" => count(1) * (len(2) + 16) + len(0),
            "range" | "generate_series" => 16 * series_len(&cols, r),
            _ => 0,
        };
        total = total.saturating_add(row);
    }
    if n == 1 && rows > 1 {
        total = total.saturating_mul(rows as u128);
    }
    Ok(total)
}

/// Elements of `range`/`generate_series` in row `r`: integers, or dates and times with an
/// interval step (a month counted as 28 days, so the count is never under-estimated).
fn series_len(cols: &[Arg], r: usize) -> u128 {
    let (start, stop, step) = match cols.len() {
        1 => (0, cols[0].int(r), 1),
        2 => (cols[0].int(r), cols[1].int(r), 1),
        _ => (cols[0].int(r), cols[1].int(r), cols[2].int(r)),
    };
    let span = (i128::from(stop) - i128::from(start)).unsigned_abs();
    span / step.unsigned_abs().max(1) as u128 + 1
}

/// An argument, read row by row as a length or a number.
enum Arg {
    /// A scalar, as a one-row array.
    Scalar(ArrayRef),
    Array(ArrayRef),
}

impl Arg {
    fn of(value: &ColumnarValue) -> DfResult<Arg> {
        Ok(match value {
            ColumnarValue::Scalar(s) => Arg::Scalar(s.to_array_of_size(1)?),
            ColumnarValue::Array(a) => Arg::Array(a.clone()),
        })
    }

    fn at(&self, r: usize) -> (&ArrayRef, usize) {
        match self {
            Arg::Scalar(a) => (a, 0),
            Arg::Array(a) => (a, r),
        }
    }

    /// Bytes of the value in row `r` (text, binary or a list's values; 8 for other types).
    fn len(&self, r: usize) -> u128 {
        let (a, i) = self.at(r);
        if a.is_null(i) {
            return 0;
        }
        let n = match a.data_type() {
            DataType::Utf8 => a.as_string::<i32>().value(i).len(),
            DataType::LargeUtf8 => a.as_string::<i64>().value(i).len(),
            DataType::Utf8View => a.as_string_view().value(i).len(),
            DataType::Binary => a.as_binary::<i32>().value(i).len(),
            DataType::LargeBinary => a.as_binary::<i64>().value(i).len(),
            DataType::BinaryView => a.as_binary_view().value(i).len(),
            DataType::List(_) => a.as_list::<i32>().value(i).get_array_memory_size(),
            DataType::LargeList(_) => a.as_list::<i64>().value(i).get_array_memory_size(),
            _ => 8,
        };
        n as u128
    }

    /// Places in the replacement text of row `r` that can name a group (`$1`, `\1`).
    fn refs(&self, r: usize) -> u128 {
        let (a, i) = self.at(r);
        let text = match a.data_type() {
            DataType::Utf8 if !a.is_null(i) => a.as_string::<i32>().value(i),
            DataType::LargeUtf8 if !a.is_null(i) => a.as_string::<i64>().value(i),
            DataType::Utf8View if !a.is_null(i) => a.as_string_view().value(i),
            _ => return 0,
        };
        text.bytes().filter(|b| matches!(b, b'$' | b'\\')).count() as u128
    }

    /// The value of row `r` as a number: integers as they are, dates in days, times in
    /// microseconds, intervals in microseconds (a month as 28 days); 0 for null or others.
    fn int(&self, r: usize) -> i64 {
        let (a, i) = self.at(r);
        if a.is_null(i) {
            return 0;
        }
        let one = a.slice(i, 1);
        let as_int = |target: &DataType| -> Option<i64> {
            let c = arrow::compute::cast(&one, target).ok()?;
            let c = arrow::compute::cast(&c, &DataType::Int64).ok()?;
            let v = c.as_primitive_opt::<Int64Type>()?;
            (!v.is_null(0)).then(|| v.value(0))
        };
        match a.data_type() {
            DataType::Date32 | DataType::Date64 => {
                as_int(&DataType::Date32).map_or(0, |d| d.saturating_mul(86_400_000_000))
            }
            DataType::Timestamp(_, tz) => {
                as_int(&DataType::Timestamp(TimeUnit::Microsecond, tz.clone())).unwrap_or(0)
            }
            DataType::Interval(_) => {
                let Ok(c) = arrow::compute::cast(
                    &one,
                    &DataType::Interval(arrow::datatypes::IntervalUnit::MonthDayNano),
                ) else {
                    return 0;
                };
                let v = c.as_primitive::<IntervalMonthDayNanoType>().value(0);
                let days = i64::from(v.months) * 28 + i64::from(v.days);
                days.saturating_mul(86_400_000_000)
                    .saturating_add(v.nanoseconds / 1000)
            }
            _ => as_int(&DataType::Int64).unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::scalar::ScalarValue;

    fn scalar(v: ScalarValue) -> ColumnarValue {
        ColumnarValue::Scalar(v)
    }

    #[test]
    fn bounds_cover_what_the_functions_make() {
        let s = |t: &str| scalar(ScalarValue::Utf8(Some(t.into())));
        let i = |n: i64| scalar(ScalarValue::Int64(Some(n)));
        assert_eq!(output_bound("repeat", &[s("ab"), i(3)], 1).unwrap(), 6);
        assert_eq!(
            output_bound("repeat", &[s("x"), i(2_147_483_647)], 1).unwrap(),
            2_147_483_647
        );
        // Scalars over a batch: every row makes the same.
        assert_eq!(output_bound("repeat", &[s("ab"), i(3)], 10).unwrap(), 60);
        assert_eq!(output_bound("repeat", &[s("ab"), i(-3)], 1).unwrap(), 0);
        assert!(output_bound("lpad", &[s("a"), i(5)], 1).unwrap() >= 5);
        // "aaaa".replace("", "XY") is "XYaXYaXYaXYaXY": 14 bytes.
        assert!(output_bound("replace", &[s("aaaa"), s(""), s("XY")], 1).unwrap() >= 14);
        assert_eq!(
            output_bound("range", &[i(0), i(1_000_000_000_000), i(1)], 1).unwrap(),
            16 * 1_000_000_000_001
        );
        let day = scalar(ScalarValue::Date32(Some(0)));
        let later = scalar(ScalarValue::Date32(Some(10)));
        let hour = scalar(ScalarValue::IntervalMonthDayNano(Some(
            arrow::datatypes::IntervalMonthDayNano::new(0, 0, 3_600_000_000_000),
        )));
        assert_eq!(
            output_bound("range", &[day, later, hour], 1).unwrap(),
            16 * (240 + 1)
        );
        let column = ColumnarValue::Array(Arc::new(arrow::array::StringArray::from(vec![
            Some("abc"),
            None,
            Some("d"),
        ])));
        assert_eq!(output_bound("repeat", &[column, i(10)], 3).unwrap(), 40);
    }

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
        let sql = "SELECT length(repeat('x', 20000000)) AS n";
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

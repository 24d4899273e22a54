//! Scalar functions that reserve what they make.
//!
//! DataFusion's operators reserve memory from the query's pool as they go, but a scalar
//! function reserves nothing, and some make output far larger than their input:
//! `repeat('x', 2147483647)` is 2 GiB from 20 bytes, `concat(r, r, r, r)` four times a large
//! `r`, `array_to_string(range(0, 1000000), d)` a million copies of `d`. So every built-in
//! function of an analyst's session is replaced by a [`Bounded`] wrapper
//! ([`bound_functions`]), and functions the optimizer makes itself are wrapped after it
//! ([`bound_plan`]). A wrapper:
//!
//! - **before the call** reserves the most its arguments can make it produce
//!   ([`output_bound`]) and refuses the call when that does not fit. The reservation is released
//!   when the call returns: the call's own allocation is what it bounds;
//! - **after the call** checks the output's real size: when it is larger than the bound (a case
//!   the bound does not know), the difference has to fit in the pool as well;
//! - keeps, **for a constant** (a single value, which the planner folds into the plan as a
//!   literal), [`PLAN_COPIES`] times its size reserved for the rest of the query. Four
//!   `repeat('x', 400000000)` in one query reserved 400 MB each and released it; the literals
//!   they left reached 9.2 GiB as the optimizer copied the plan.
//!
//! Bounds are exact formulas for the functions that amplify (a count or a separator repeated
//! per element), the width of the type for functions returning numbers, dates or times, and
//! four times the arguments (plus a little per row) for the rest, which at most re-encode,
//! case-map or join their arguments. Large constants and the sides of `||` reserve before they
//! are used, and the computed columns of a projection are held together ([`PassThrough`]).
//!
//! What this does not bound: the outputs of several expressions of one operator held together
//! for one batch (each is checked alone), and operators' own working memory, which DataFusion
//! reserves itself.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, FieldRef, Int64Type, IntervalMonthDayNanoType, TimeUnit};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, ExprSchema, Result as DfResult, ScalarValue};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::preimage::PreimageResult;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Documentation, Expr, ExpressionPlacement, LogicalPlan, Operator,
    Projection, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    StructFieldMapping, Volatility, WindowFunctionDefinition,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{DataFrame, SessionContext};

/// Copies of a constant the optimizer may hold at once, as it rewrites the plan (four 400 MB
/// constants took 9.2 GiB: 5.75 copies).
const PLAN_COPIES: usize = 8;

/// Bytes a row of output may take beyond its values: offsets, validity, views, a digest.
const ROW_OVERHEAD: u128 = 128;

/// Replaces every scalar function of `ctx` by a [`Bounded`] wrapper reserving from `pool`.
pub fn bound_functions(ctx: &SessionContext, pool: &Arc<dyn MemoryPool>) {
    let state = ctx.state();
    let constants = Arc::new(
        MemoryConsumer::new(format!(
            "constants folded into the plan (each counted {PLAN_COPIES} times, for the \
             optimizer's copies)"
        ))
        .register(pool),
    );
    for (key, udf) in state.scalar_functions() {
        // The registry holds each function under its aliases too; registering it once under
        // its name registers the aliases.
        if key != udf.name() {
            continue;
        }
        ctx.register_udf(ScalarUDF::new_from_impl(Bounded {
            inner: udf.clone(),
            pool: pool.clone(),
            constants: constants.clone(),
        }));
    }
}

/// A built-in function that reserves from the query's pool what it makes (see the module).
#[derive(Debug)]
pub struct Bounded {
    inner: Arc<ScalarUDF>,
    pool: Arc<dyn MemoryPool>,
    /// The query's reservation for constants, held until the query ends.
    constants: Arc<MemoryReservation>,
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

/// Everything but the call is the built-in's own.
impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }
    fn display_name(&self, args: &[Expr]) -> DfResult<String> {
        #[expect(deprecated)]
        self.inner.inner().display_name(args)
    }
    fn schema_name(&self, args: &[Expr]) -> DfResult<String> {
        self.inner.inner().schema_name(args)
    }
    fn signature(&self) -> &Signature {
        self.inner.signature()
    }
    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        self.inner.inner().return_type(arg_types)
    }
    fn with_updated_config(&self, config: &ConfigOptions) -> Option<ScalarUDF> {
        let updated = self.inner.inner().with_updated_config(config)?;
        Some(ScalarUDF::new_from_impl(Bounded {
            inner: Arc::new(updated),
            pool: self.pool.clone(),
            constants: self.constants.clone(),
        }))
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        self.inner.inner().return_field_from_args(args)
    }
    fn is_nullable(&self, args: &[Expr], schema: &dyn ExprSchema) -> bool {
        #[expect(deprecated)]
        self.inner.inner().is_nullable(args, schema)
    }
    fn is_strict(&self) -> bool {
        self.inner.inner().is_strict()
    }
    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> DfResult<ExprSimplifyResult> {
        self.inner.inner().simplify(args, info)
    }
    fn preimage(
        &self,
        args: &[Expr],
        lit_expr: &Expr,
        info: &SimplifyContext,
    ) -> DfResult<PreimageResult> {
        self.inner.inner().preimage(args, lit_expr, info)
    }
    fn short_circuits(&self) -> bool {
        self.inner.inner().short_circuits()
    }
    fn conditional_arguments<'a>(
        &self,
        args: &'a [Expr],
    ) -> Option<(Vec<&'a Expr>, Vec<&'a Expr>)> {
        self.inner.inner().conditional_arguments(args)
    }
    fn evaluate_bounds(&self, input: &[&Interval]) -> DfResult<Interval> {
        self.inner.inner().evaluate_bounds(input)
    }
    fn propagate_constraints(
        &self,
        interval: &Interval,
        inputs: &[&Interval],
    ) -> DfResult<Option<Vec<Interval>>> {
        self.inner.inner().propagate_constraints(interval, inputs)
    }
    fn output_ordering(&self, inputs: &[ExprProperties]) -> DfResult<SortProperties> {
        self.inner.inner().output_ordering(inputs)
    }
    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> DfResult<bool> {
        self.inner.inner().preserves_lex_ordering(inputs)
    }
    fn strictly_order_preserving(&self, inputs: &[ExprProperties]) -> DfResult<bool> {
        self.inner.inner().strictly_order_preserving(inputs)
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        self.inner.inner().coerce_types(arg_types)
    }
    fn struct_field_mapping(
        &self,
        literal_args: &[Option<ScalarValue>],
    ) -> Option<StructFieldMapping> {
        self.inner.inner().struct_field_mapping(literal_args)
    }
    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
    fn placement(&self, args: &[ExpressionPlacement]) -> ExpressionPlacement {
        self.inner.inner().placement(args)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let name = self.inner.name();
        let bound = output_bound(
            name,
            &args.args,
            args.number_rows,
            args.return_field.data_type(),
        )?;
        let bound = usize::try_from(bound).unwrap_or(usize::MAX);
        check_steps(name, &args.args, args.number_rows)?;
        let reservation = MemoryConsumer::new(format!("{name}()")).register(&self.pool);
        reservation.try_grow(bound)?;
        let out = self.inner.invoke_with_args(args)?;
        let made = match &out {
            ColumnarValue::Array(a) => a.get_array_memory_size(),
            ColumnarValue::Scalar(s) => s.size(),
        };
        if made > bound {
            reservation.try_grow(made - bound)?;
        }
        drop(reservation);
        if let ColumnarValue::Scalar(s) = &out {
            self.constants
                .try_grow(s.size().saturating_mul(PLAN_COPIES))?;
        }
        Ok(out)
    }
}

/// Constants above this size are wrapped to reserve their size times the rows of each batch
/// they are repeated on (`SELECT <100 kB literal> FROM clicks` is 800 MB a batch).
const LITERAL_CHECKED: usize = 1024;

/// Plans `df` to run with `pool`: the logical plan optimized (constants folded by the wrapped
/// functions of [`bound_functions`]), then [`bound_plan`], then the physical plan. The
/// optimizer is not run again after [`bound_plan`], so what it wrapped stays wrapped.
pub async fn physical_plan(
    df: DataFrame,
    pool: &Arc<dyn MemoryPool>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let (state, plan) = df.into_parts();
    let plan = bound_plan(state.optimize(&plan)?, pool)?;
    state
        .query_planner()
        .create_physical_plan(&plan, &state)
        .await
}

/// Wraps, in every expression of `plan` and its subqueries, what the optimizer left
/// unbounded: a function it made itself (simplifying `concat('a', x, 'b')` makes a new
/// `concat`, `[1, 2]` a `make_array`) becomes [`Bounded`]; a constant over
/// [`LITERAL_CHECKED`] reserves its size times a batch's rows before it is repeated on them;
/// each side of a text `||` reserves four times its size first (a chain `x || x || …` of a large `x`
/// grows with every term). Column names stay as they were.
pub fn bound_plan(plan: LogicalPlan, pool: &Arc<dyn MemoryPool>) -> DfResult<LogicalPlan> {
    let constants =
        Arc::new(MemoryConsumer::new("constants computed while the query runs").register(pool));
    let reserve = |factor: usize, what: &'static str| {
        PassThrough::udf(Check::Reserve {
            factor,
            what,
            pool: pool.clone(),
        })
    };
    let literal = reserve(1, "a constant repeated on every row");
    let operand = reserve(4, "a side of ||");
    let rewrite = |e: Expr| -> DfResult<Transformed<Expr>> {
        Ok(match e {
            Expr::ScalarFunction(f) if !is_bounded(&f.func) => {
                let wrapped = ScalarUDF::new_from_impl(Bounded {
                    inner: f.func,
                    pool: pool.clone(),
                    constants: constants.clone(),
                });
                Transformed::yes(Expr::ScalarFunction(ScalarFunction::new_udf(
                    Arc::new(wrapped),
                    f.args,
                )))
            }
            Expr::Literal(ref value, _) if value.size() > LITERAL_CHECKED => {
                Transformed::yes(literal.call(vec![e]))
            }
            Expr::BinaryExpr(b) if b.op == Operator::StringConcat => {
                Transformed::yes(Expr::BinaryExpr(BinaryExpr::new(
                    Box::new(operand.call(vec![*b.left])),
                    b.op,
                    Box::new(operand.call(vec![*b.right])),
                )))
            }
            other => Transformed::no(other),
        })
    };
    plan.transform_up_with_subqueries(|node| {
        let names = NamePreserver::new(&node);
        let node = node.map_expressions(|e| {
            refuse_growing_windows(&e)?;
            let saved = names.save(&e);
            Ok(e.transform_up(rewrite)?.update_data(|e| saved.restore(e)))
        })?;
        // The columns of a projection are held together for each batch it makes.
        match node.data {
            LogicalPlan::Projection(p) => {
                let held = Arc::new(Held::new(pool));
                let mut first = true;
                let expr = p
                    .expr
                    .into_iter()
                    .map(|e| {
                        // A column passes its input's arrays on: nothing new to hold.
                        if matches!(e.clone().unalias(), Expr::Column(_)) {
                            return e;
                        }
                        let saved = names.save(&e);
                        let hold = PassThrough::udf(Check::Hold {
                            first: std::mem::take(&mut first),
                            held: held.clone(),
                        });
                        saved.restore(hold.call(vec![e]))
                    })
                    .collect();
                let projection = Projection::try_new_with_schema(expr, p.input, p.schema)?;
                Ok(Transformed::yes(LogicalPlan::Projection(projection)))
            }
            other => Ok(Transformed::new(other, node.transformed, node.tnr)),
        }
    })
    .data()
}

/// Aggregates whose result grows with the rows they aggregate: over a frame that grows with
/// each row (`array_agg(x) OVER (ORDER BY t)`, or over a whole partition) the window's output
/// grows with the square of the rows, made inside the window operator before anything can
/// reserve it (an analyst's query over 4,000 clicks aborted the process).
const GROWING_AGGREGATES: &[&str] = &["array_agg", "string_agg"];

/// Refuses, in `e`, an aggregate of [`GROWING_AGGREGATES`] used as a window function over a
/// frame without a first row (`UNBOUNDED PRECEDING`, the default with `ORDER BY`).
fn refuse_growing_windows(e: &Expr) -> DfResult<()> {
    e.apply(|e| {
        if let Expr::WindowFunction(w) = e
            && let WindowFunctionDefinition::AggregateUDF(f) = &w.fun
            && GROWING_AGGREGATES.contains(&f.name())
            && (w.params.window_frame.start_bound.is_unbounded()
                || w.params.window_frame.end_bound.is_unbounded())
        {
            return Err(DataFusionError::Plan(format!(
                "{}() as a window function needs a frame bounded at both ends (such as ROWS \
                 BETWEEN 100 PRECEDING AND CURRENT ROW): over a growing frame its output \
                 grows with the square of the rows",
                f.name()
            )));
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(())
}

/// The outputs of one projection's columns for the batch each thread is making (see
/// [`Check::Hold`]), until that thread starts its next batch; dropped with the plan.
#[derive(Debug)]
struct Held {
    pool: Arc<dyn MemoryPool>,
    by_thread:
        std::sync::Mutex<std::collections::HashMap<std::thread::ThreadId, MemoryReservation>>,
}

impl Held {
    fn new(pool: &Arc<dyn MemoryPool>) -> Held {
        Held {
            pool: pool.clone(),
            by_thread: Default::default(),
        }
    }
}

/// Whether `f` is already a [`Bounded`] wrapper.
fn is_bounded(f: &ScalarUDF) -> bool {
    let inner: &dyn std::any::Any = f.inner().as_ref();
    inner.is::<Bounded>()
}

/// A function that passes its argument through once the memory it stands for is reserved:
/// refused when that does not fit, before anything that large is made from it.
#[derive(Debug)]
pub struct PassThrough {
    signature: Signature,
    check: Check,
}

/// What a [`PassThrough`] reserves.
#[derive(Debug)]
enum Check {
    /// For a moment, `factor` times the argument's size over the batch's rows (a constant
    /// about to be repeated on them, a side of `||`).
    Reserve {
        factor: usize,
        what: &'static str,
        pool: Arc<dyn MemoryPool>,
    },
    /// A projection's column: its output, held with the other columns' until the projection
    /// starts its next batch on this thread (a batch is made in one call), so columns that
    /// each fit but not together are refused before the next one is made. The `first` column
    /// lets go of the previous batch's.
    Hold { first: bool, held: Arc<Held> },
}

impl PassThrough {
    fn udf(check: Check) -> Arc<ScalarUDF> {
        Arc::new(ScalarUDF::new_from_impl(PassThrough {
            signature: Signature::any(1, Volatility::Volatile),
            check,
        }))
    }
}

impl PartialEq for PassThrough {
    fn eq(&self, other: &Self) -> bool {
        match (&self.check, &other.check) {
            (
                Check::Reserve {
                    factor: a, pool: p, ..
                },
                Check::Reserve {
                    factor: b, pool: q, ..
                },
            ) => a == b && Arc::ptr_eq(p, q),
            (Check::Hold { first: a, held: h }, Check::Hold { first: b, held: k }) => {
                a == b && Arc::ptr_eq(h, k)
            }
            _ => false,
        }
    }
}

impl Eq for PassThrough {}

impl std::hash::Hash for PassThrough {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name().hash(state);
    }
}

impl ScalarUDFImpl for PassThrough {
    fn name(&self) -> &str {
        match self.check {
            Check::Reserve { .. } => "netrev_reserve",
            Check::Hold { .. } => "netrev_hold",
        }
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(arg_types[0].clone())
    }
    /// The argument's type and nullability.
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        let arg = &args.arg_fields[0];
        Ok(Arc::new(arrow::datatypes::Field::new(
            self.name(),
            arg.data_type().clone(),
            arg.is_nullable(),
        )))
    }
    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let value = args.args.swap_remove(0);
        let size = value_size(&value, args.number_rows);
        let bytes = |factor: usize| {
            usize::try_from(size.saturating_mul(factor as u128)).unwrap_or(usize::MAX)
        };
        match &self.check {
            Check::Reserve { factor, what, pool } => {
                MemoryConsumer::new(*what)
                    .register(pool)
                    .try_grow(bytes(*factor))?;
            }
            Check::Hold { first, held } => {
                let mut by_thread = held.by_thread.lock().unwrap_or_else(|e| e.into_inner());
                let reservation =
                    by_thread
                        .entry(std::thread::current().id())
                        .or_insert_with(|| {
                            MemoryConsumer::new("a projection's columns").register(&held.pool)
                        });
                if *first {
                    reservation.free();
                }
                reservation.try_grow(bytes(1))?;
            }
        }
        Ok(value)
    }
}

/// Steps one call may take, for a function whose work grows faster than its input: a call
/// runs to its end, past the query's time limit, holding one of the query threads.
pub const MAX_STEPS: u128 = 100_000_000;

/// Refuses a call of `name` over `args` that would take more than [`MAX_STEPS`]: only
/// `levenshtein`, whose work is the product of its texts' lengths (two texts of 100,000 bytes
/// kept a thread busy for minutes).
fn check_steps(name: &str, args: &[ColumnarValue], rows: usize) -> DfResult<()> {
    if name != "levenshtein" {
        return Ok(());
    }
    let steps = row_by_row(name, args, rows)?;
    if steps > MAX_STEPS {
        return Err(DataFusionError::Execution(format!(
            "{name}() over texts this long would take about {steps} steps; at most {MAX_STEPS} \
             are allowed in one call, which runs to its end even past --sql-timeout-secs"
        )));
    }
    Ok(())
}

/// The most bytes `name` can produce from `args` over `rows` rows, returning `returns`.
pub fn output_bound(
    name: &str,
    args: &[ColumnarValue],
    rows: usize,
    returns: &DataType,
) -> DfResult<u128> {
    let rows_n = rows.max(1) as u128;
    let size = |i: usize| args.get(i).map_or(0, |a| value_size(a, rows));
    let all: u128 = (0..args.len()).map(size).sum();
    let fixed = match returns {
        DataType::Boolean | DataType::Null => Some(1),
        t => t.primitive_width(),
    };
    Ok(match name {
        "repeat" | "lpad" | "rpad" | "replace" | "regexp_replace" | "array_repeat"
        | "array_resize" | "range" | "generate_series" | "array_to_string" | "array_replace"
        | "array_replace_n" | "array_replace_all" => row_by_row(name, args, rows)?,
        // The separator between every two arguments.
        "concat_ws" => all + args.len() as u128 * size(0) + ROW_OVERHEAD * rows_n,
        // A two-byte format item (`%c`) can print some twenty-five bytes.
        "to_char" => 32 * size(1) + ROW_OVERHEAD * rows_n,
        // Each byte can end a piece (an empty one, with its view or offset).
        "string_to_array" => 24 * size(0) + ROW_OVERHEAD * rows_n,
        _ => match fixed {
            Some(width) => rows_n * (width as u128 + 1) + ROW_OVERHEAD,
            None => 4 * all + ROW_OVERHEAD * rows_n,
        },
    })
}

/// Bytes of an argument over `rows` rows: a constant counted on every row, a dictionary as if
/// unpacked (its widest value on every row).
fn value_size(value: &ColumnarValue, rows: usize) -> u128 {
    match value {
        ColumnarValue::Scalar(s) => {
            let rows = rows.max(1) as u128;
            match s.data_type() {
                DataType::Null => 0,
                DataType::Boolean => rows / 8 + 1,
                t => t
                    .primitive_width()
                    .map_or(s.size() as u128, |w| w as u128)
                    .saturating_mul(rows),
            }
        }
        ColumnarValue::Array(a) => match a.as_any_dictionary_opt() {
            Some(d) => {
                let values = d.values();
                let widest = (0..values.len())
                    .map(|i| value_len(values, i))
                    .max()
                    .unwrap_or(0);
                (widest + 16) * d.keys().len() as u128 + a.get_array_memory_size() as u128
            }
            None => slice_size(a) as u128,
        },
    }
}

/// Bytes of the rows of `a` only: a slice of a larger array shares its buffers, which
/// `get_array_memory_size` counts whole.
fn slice_size(a: &ArrayRef) -> usize {
    a.to_data()
        .get_slice_memory_size()
        .unwrap_or_else(|_| a.get_array_memory_size())
}

/// Bounds computed row by row, for the functions whose output follows a count or a
/// separator per element.
fn row_by_row(name: &str, args: &[ColumnarValue], rows: usize) -> DfResult<u128> {
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
        let elements = |i: usize| arg(i).map_or(0, |a| a.elements(r));
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
            // Not bytes: the steps of the edit distance.
            "levenshtein" => len(0) * len(1),
            // Each element printed (a number in at most 48 bytes), then the separator, or the
            // text given for a null.
            "array_to_string" => 4 * len(0) + elements(0) * (48 + len(1) + len(2)),
            // Each element may become the replacement.
            "array_replace" | "array_replace_n" | "array_replace_all" => {
                len(0) + elements(0) * (len(2) + 16)
            }
            _ => 0,
        };
        total = total.saturating_add(row + ROW_OVERHEAD);
    }
    if n == 1 && rows > 1 {
        total = total.saturating_mul(rows as u128);
    }
    Ok(total)
}

/// Bytes of the value in row `i` of `a` (text, binary or a list's values; 8 for other types).
fn value_len(a: &ArrayRef, i: usize) -> u128 {
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
        DataType::List(_) => slice_size(&a.as_list::<i32>().value(i)),
        DataType::LargeList(_) => slice_size(&a.as_list::<i64>().value(i)),
        _ => 8,
    };
    n as u128
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

    /// Bytes of the value in row `r` (see [`value_len`]).
    fn len(&self, r: usize) -> u128 {
        let (a, i) = self.at(r);
        value_len(a, i)
    }

    /// Elements of the list in row `r` (1 for a value that is not a list, 0 for null).
    fn elements(&self, r: usize) -> u128 {
        let (a, i) = self.at(r);
        if a.is_null(i) {
            return 0;
        }
        let n = match a.data_type() {
            DataType::List(_) => a.as_list::<i32>().value_length(i) as usize,
            DataType::LargeList(_) => a.as_list::<i64>().value_length(i) as usize,
            DataType::FixedSizeList(_, n) => *n as usize,
            _ => 1,
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

    fn scalar(v: ScalarValue) -> ColumnarValue {
        ColumnarValue::Scalar(v)
    }

    /// The bound of a function returning text, without the overhead of its rows.
    fn output_bound(name: &str, args: &[ColumnarValue], rows: usize) -> DfResult<u128> {
        let all = super::output_bound(name, args, rows, &DataType::Utf8)?;
        Ok(all - ROW_OVERHEAD * rows.max(1) as u128)
    }

    fn text(t: &str) -> ColumnarValue {
        scalar(ScalarValue::Utf8(Some(t.into())))
    }

    #[test]
    fn joining_and_replacing_count_every_element() {
        let big = "x".repeat(10_000);
        // concat of four copies is at least the four copies.
        let four = [text(&big), text(&big), text(&big), text(&big)];
        assert!(output_bound("concat", &four, 1).unwrap() >= 40_000);
        // A million elements joined by a 10 kB separator: 10 GB.
        let list = ColumnarValue::Array(Arc::new(arrow::array::ListArray::from_iter_primitive::<
            Int64Type,
            _,
            _,
        >([Some(
            (0..1_000_000).map(Some).collect::<Vec<_>>(),
        )])));
        assert!(
            output_bound("array_to_string", &[list.clone(), text(&big)], 1).unwrap()
                >= 10_000_000_000
        );
        let zero = scalar(ScalarValue::Int64(Some(0)));
        assert!(
            output_bound("array_replace_all", &[list, zero, text(&big)], 1).unwrap()
                >= 10_000_000_000
        );
        // The separator of concat_ws between every two arguments.
        let ws = [text(&big), text("a"), text("b"), text("c")];
        assert!(output_bound("concat_ws", &ws, 1).unwrap() >= 30_000);
    }

    #[test]
    fn numbers_are_bounded_by_their_width_and_dictionaries_as_unpacked() {
        let big = ColumnarValue::Array(Arc::new(arrow::array::StringArray::from(vec![
            "x".repeat(
                1_000_000
            );
            4
        ])));
        // length() of 4 MB of text makes four integers.
        let n = super::output_bound("length", &[big], 4, &DataType::Int32).unwrap();
        assert!(n < 1_000, "{n}");
        // A one-value dictionary of 100 kB on 1,000 rows is 100 MB once unpacked.
        let keys = arrow::array::Int32Array::from(vec![0; 1_000]);
        let values = arrow::array::StringArray::from(vec!["x".repeat(100_000)]);
        let dict = arrow::array::DictionaryArray::new(keys, Arc::new(values));
        let bound = output_bound("upper", &[ColumnarValue::Array(Arc::new(dict))], 1_000);
        assert!(bound.unwrap() >= 100_000_000);
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
}

//! Read-only SQL for analysts (`netrev sql`, `POST /api/sql`): queries over the raw and
//! derived tables, nothing else.
//!
//! Refused before anything is planned ([`check`]): text longer than `max_sql_bytes`,
//! expressions nested deeper than `max_depth` (a chain `1+1+…` is a nesting of its operators:
//! 20,000 terms overflowed a thread's stack in DataFusion's planner and 8,000 took 90 s to
//! plan), DDL (`CREATE [EXTERNAL] TABLE`, `CREATE VIEW`, `DROP`), DML (`INSERT`, `UPDATE`,
//! `DELETE`, `COPY`), other statements (`SET`, transactions) and any table function (a function
//! in `FROM` could read files or URLs; none is needed to query the tables). Paths and URLs as
//! table names are not enabled in the sessions. Answers are cut at a row limit and stopped at a
//! time limit; the rows collected are reserved from the session's memory pool
//! ([`crate::analysts`]).

use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use serde_json::{Map, Value};

/// Why a query was not answered.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The statement is not a read-only query, does not parse or is too large or deep: the
    /// user's to fix.
    #[error("{0}")]
    Refused(String),
    /// It ran longer than the time limit.
    #[error("the query ran longer than {0:?} and was stopped")]
    Timeout(Duration),
    /// It needed more memory than the limit for queries.
    #[error("{0}")]
    OutOfMemory(String),
    /// It failed while running.
    #[error(transparent)]
    Failed(DataFusionError),
}

impl From<DataFusionError> for QueryError {
    fn from(e: DataFusionError) -> Self {
        match e.find_root() {
            DataFusionError::ResourcesExhausted(m) => {
                QueryError::OutOfMemory(format!("the query needs more memory than it may use: {m}"))
            }
            _ => QueryError::Failed(e),
        }
    }
}

impl From<crate::Error> for QueryError {
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::DataFusion(e) => e.into(),
            other => QueryError::Failed(DataFusionError::External(Box::new(other))),
        }
    }
}

/// Limits of one query.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_rows: usize,
    pub timeout: Duration,
    /// Longest SQL text, in bytes.
    pub max_sql_bytes: usize,
    /// Deepest nesting of expressions and subqueries.
    pub max_depth: usize,
    /// Memory one query may reserve (where an [`crate::analysts::Analysts`] session runs it).
    pub max_memory: usize,
}

impl Default for Limits {
    /// The server's defaults (`netrev serve --help`): 100,000 rows, 30 s, 64 KiB of text (a
    /// long analyst's query is a few KiB), a depth of 256 (a chain of 256 `OR`s plans in
    /// milliseconds) and 512 MiB a query.
    fn default() -> Self {
        Limits {
            max_rows: 100_000,
            timeout: Duration::from_secs(30),
            max_sql_bytes: 64 << 10,
            max_depth: 256,
            max_memory: 512 << 20,
        }
    }
}

/// A query's answer: at most `max_rows` rows, and whether more were cut.
#[derive(Debug)]
pub struct Answer {
    pub batches: Vec<RecordBatch>,
    pub schema: arrow::datatypes::SchemaRef,
    pub truncated: bool,
}

/// Runs `sql` read-only in `ctx` within `limits`.
pub async fn run(ctx: &SessionContext, sql: &str, limits: Limits) -> Result<Answer, QueryError> {
    check(sql, &limits)?;
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let work = async {
        let df = ctx
            .sql_with_options(sql, options)
            .await
            .map_err(|e| match e {
                DataFusionError::Plan(m) if m.contains("not supported") => {
                    QueryError::Refused(format!("only read-only queries are allowed: {m}"))
                }
                DataFusionError::SQL(e, _) => QueryError::Refused(format!("SQL error: {e}")),
                other => other.into(),
            })?;
        let schema = std::sync::Arc::new(df.schema().as_arrow().clone());
        let mut stream = df.execute_stream().await?;
        // The answer is held until it is sent: it counts against the query's memory.
        let held = MemoryConsumer::new("answer rows").register(&ctx.runtime_env().memory_pool);
        let mut batches = Vec::new();
        let mut rows = 0;
        let mut truncated = false;
        while let Some(batch) = stream.next().await {
            let mut batch = batch?;
            if rows + batch.num_rows() > limits.max_rows {
                batch = batch.slice(0, limits.max_rows - rows);
                truncated = true;
            }
            held.try_grow(batch.get_array_memory_size())?;
            rows += batch.num_rows();
            batches.push(batch);
            if truncated {
                break;
            }
        }
        Ok(Answer {
            batches,
            schema,
            truncated,
        })
    };
    tokio::time::timeout(limits.timeout, work)
        .await
        .map_err(|_| QueryError::Timeout(limits.timeout))?
}

/// Refuses, before anything is planned, text longer than `max_sql_bytes`, anything but one
/// read-only query, table functions and expressions nested deeper than `max_depth`.
pub fn check(sql: &str, limits: &Limits) -> Result<(), QueryError> {
    if sql.len() > limits.max_sql_bytes {
        return Err(QueryError::Refused(format!(
            "the query is {} bytes long; at most {} are allowed (--sql-max-bytes)",
            sql.len(),
            limits.max_sql_bytes
        )));
    }
    refuse_table_functions(sql, limits.max_depth)
}

/// Refuses table functions (`FROM name(...)`): DataFusion's built-in ones only generate
/// numbers, but a session could be given ones that read files, and analysts need none. And
/// refuses expressions and subqueries nested deeper than `max_depth`: the walk stops there, so
/// its own recursion is bounded too. (The parser builds a chain `a + b + …` in a loop, not by
/// recursion; DataFusion's planner and the tree's drop walk it recursively.)
fn refuse_table_functions(sql: &str, max_depth: usize) -> Result<(), QueryError> {
    use datafusion::sql::sqlparser::ast::{Expr, Query, Statement, TableFactor, Visit, Visitor};
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    use std::ops::ControlFlow;

    struct Finder {
        depth: usize,
        max_depth: usize,
    }
    impl Finder {
        fn enter(&mut self) -> ControlFlow<String> {
            self.depth += 1;
            if self.depth > self.max_depth {
                ControlFlow::Break(format!(
                    "the query nests expressions more than {} deep (--sql-max-depth); write long \
                     chains of OR as IN (…), or split the query",
                    self.max_depth
                ))
            } else {
                ControlFlow::Continue(())
            }
        }
        fn leave(&mut self) -> ControlFlow<String> {
            self.depth -= 1;
            ControlFlow::Continue(())
        }
    }
    impl Visitor for Finder {
        type Break = String;
        fn pre_visit_expr(&mut self, _: &Expr) -> ControlFlow<String> {
            self.enter()
        }
        fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<String> {
            self.leave()
        }
        fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<String> {
            self.enter()
        }
        fn post_visit_query(&mut self, _: &Query) -> ControlFlow<String> {
            self.leave()
        }
        fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<String> {
            match t {
                TableFactor::Table {
                    name,
                    args: Some(_),
                    ..
                } => ControlFlow::Break(format!(
                    "table function {name}(…) is not allowed: query the tables by name"
                )),
                TableFactor::TableFunction { expr, .. } => ControlFlow::Break(format!(
                    "table function {expr} is not allowed: query the tables by name"
                )),
                TableFactor::Function { name, .. } => ControlFlow::Break(format!(
                    "table function {name}(…) is not allowed: query the tables by name"
                )),
                _ => ControlFlow::Continue(()),
            }
        }
    }
    let statements = Parser::new(&GenericDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statements())
        .map_err(|e| QueryError::Refused(format!("SQL error: {e}")))?;
    if statements.len() != 1 {
        return Err(QueryError::Refused(format!(
            "exactly one statement is allowed, got {}",
            statements.len()
        )));
    }
    if !matches!(
        statements[0],
        Statement::Query(_) | Statement::Explain { .. }
    ) {
        return Err(QueryError::Refused(
            "only read-only queries (SELECT, WITH, VALUES, EXPLAIN) are allowed".into(),
        ));
    }
    if let ControlFlow::Break(why) = statements.visit(&mut Finder {
        depth: 0,
        max_depth,
    }) {
        return Err(QueryError::Refused(why));
    }
    Ok(())
}

/// The answer as `{"columns":[…],"rows":[{col: value}]}`: money (decimals) as exact strings,
/// integers and floats as numbers, times as RFC 3339 strings, dates as `YYYY-MM-DD`.
pub fn to_json(answer: &Answer) -> Result<Value, arrow::error::ArrowError> {
    let columns: Vec<Value> = answer
        .schema
        .fields()
        .iter()
        .map(|f| Value::String(f.name().clone()))
        .collect();
    let mut rows = Vec::new();
    for batch in &answer.batches {
        let options = arrow::util::display::FormatOptions::default()
            .with_timestamp_tz_format(Some("%Y-%m-%dT%H:%M:%S%.f%:z"));
        let formatters = batch
            .columns()
            .iter()
            .map(|c| arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for r in 0..batch.num_rows() {
            let mut row = Map::new();
            for (i, field) in batch.schema().fields().iter().enumerate() {
                let col = batch.column(i);
                let v = if col.is_null(r) {
                    Value::Null
                } else {
                    match col.data_type() {
                        DataType::Boolean => Value::Bool(col.as_boolean().value(r)),
                        DataType::Int8
                        | DataType::Int16
                        | DataType::Int32
                        | DataType::Int64
                        | DataType::UInt8
                        | DataType::UInt16
                        | DataType::UInt32
                        | DataType::UInt64 => {
                            serde_json::from_str(&formatters[i].value(r).to_string())
                                .unwrap_or(Value::Null)
                        }
                        DataType::Decimal128(_, scale) => {
                            let d = rust_decimal::Decimal::from_i128_with_scale(
                                col.as_primitive::<arrow::datatypes::Decimal128Type>()
                                    .value(r),
                                u32::try_from(*scale).unwrap_or(0),
                            );
                            Value::String(netrev_storage::money::display(d))
                        }
                        DataType::Float32 | DataType::Float64 => {
                            serde_json::from_str(&formatters[i].value(r).to_string())
                                .unwrap_or(Value::Null)
                        }
                        _ => Value::String(formatters[i].value(r).to_string()),
                    }
                };
                row.insert(field.name().clone(), v);
            }
            rows.push(Value::Object(row));
        }
    }
    Ok(serde_json::json!({"columns": columns, "rows": rows, "truncated": answer.truncated}))
}

/// The answer as an Arrow IPC stream.
pub fn to_arrow_ipc(answer: &Answer) -> Result<Vec<u8>, arrow::error::ArrowError> {
    let mut buf = Vec::new();
    {
        let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut buf, &answer.schema)?;
        for b in &answer.batches {
            w.write(b)?;
        }
        w.finish()?;
    }
    Ok(buf)
}

//! Read-only SQL for analysts (`netrev sql`, `POST /api/sql`): queries over the raw and
//! derived tables, nothing else.
//!
//! Refused before anything runs: DDL (`CREATE [EXTERNAL] TABLE`, `CREATE VIEW`, `DROP`), DML
//! (`INSERT`, `UPDATE`, `DELETE`, `COPY`), other statements (`SET`, transactions) and any
//! table function (a function in `FROM` could read files or URLs; none is needed to query the
//! tables). Paths and URLs as table names are not enabled in the sessions. Answers are cut at
//! a row limit and stopped at a time limit.

use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use serde_json::{Map, Value};

/// Why a query was not answered.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The statement is not a read-only query (or does not parse): the user's to fix.
    #[error("{0}")]
    Refused(String),
    /// It ran longer than the time limit.
    #[error("the query ran longer than {0:?} and was stopped")]
    Timeout(Duration),
    /// It failed while running.
    #[error(transparent)]
    Failed(#[from] datafusion::error::DataFusionError),
}

/// Limits of one query.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_rows: usize,
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_rows: 100_000,
            timeout: Duration::from_secs(30),
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
    refuse_table_functions(sql)?;
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let work = async {
        let df = ctx
            .sql_with_options(sql, options)
            .await
            .map_err(|e| match e {
                datafusion::error::DataFusionError::Plan(m) if m.contains("not supported") => {
                    QueryError::Refused(format!("only read-only queries are allowed: {m}"))
                }
                datafusion::error::DataFusionError::SQL(e, _) => {
                    QueryError::Refused(format!("SQL error: {e}"))
                }
                other => QueryError::Failed(other),
            })?;
        let schema = std::sync::Arc::new(df.schema().as_arrow().clone());
        let mut stream = df.execute_stream().await?;
        let mut batches = Vec::new();
        let mut rows = 0;
        let mut truncated = false;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            if rows + batch.num_rows() > limits.max_rows {
                batches.push(batch.slice(0, limits.max_rows - rows));
                truncated = true;
                break;
            }
            rows += batch.num_rows();
            batches.push(batch);
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

/// Refuses table functions (`FROM name(...)`): DataFusion's built-in ones only generate
/// numbers, but a session could be given ones that read files, and analysts need none.
fn refuse_table_functions(sql: &str) -> Result<(), QueryError> {
    use datafusion::sql::sqlparser::ast::{Statement, TableFactor, Visit, Visitor};
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    use std::ops::ControlFlow;

    struct Finder;
    impl Visitor for Finder {
        type Break = String;
        fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<String> {
            match t {
                TableFactor::Table {
                    name,
                    args: Some(_),
                    ..
                } => ControlFlow::Break(format!("table function {name}(…)")),
                TableFactor::TableFunction { expr, .. } => {
                    ControlFlow::Break(format!("table function {expr}"))
                }
                TableFactor::Function { name, .. } => {
                    ControlFlow::Break(format!("table function {name}(…)"))
                }
                _ => ControlFlow::Continue(()),
            }
        }
    }
    let statements = Parser::parse_sql(&GenericDialect {}, sql)
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
    if let ControlFlow::Break(what) = statements.visit(&mut Finder) {
        return Err(QueryError::Refused(format!(
            "{what} is not allowed: query the tables by name"
        )));
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

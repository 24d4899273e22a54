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

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::prelude::{DataFrame, SessionContext};
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
    /// It failed to plan or while running, by its own fault (a bad cast, a missing column).
    #[error(transparent)]
    Failed(DataFusionError),
    /// The data store could not be read (object store or disk I/O): not the query's fault,
    /// and the same query may well succeed in a moment.
    #[error("{0}")]
    StoreUnavailable(String),
    /// The server failed to answer it: a file could not be decoded, a task panicked. Not the
    /// query's fault.
    #[error("{0}")]
    Server(String),
}

impl From<DataFusionError> for QueryError {
    fn from(e: DataFusionError) -> Self {
        match e.find_root() {
            DataFusionError::ResourcesExhausted(m) => {
                QueryError::OutOfMemory(format!("the query needs more memory than it may use: {m}"))
            }
            DataFusionError::ObjectStore(_) | DataFusionError::IoError(_) => {
                QueryError::StoreUnavailable(e.to_string())
            }
            DataFusionError::ParquetError(_) | DataFusionError::Internal(_) => {
                QueryError::Server(e.to_string())
            }
            _ => QueryError::Failed(e),
        }
    }
}

impl From<arrow::error::ArrowError> for QueryError {
    fn from(e: arrow::error::ArrowError) -> Self {
        DataFusionError::from(e).into()
    }
}

impl From<crate::Error> for QueryError {
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::DataFusion(e) => e.into(),
            crate::Error::Storage(e) => QueryError::StoreUnavailable(e.to_string()),
            other => QueryError::Server(other.to_string()),
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
    /// Most table references, a common table expression counting as the tables it reads
    /// each time it is named.
    pub max_tables: usize,
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
            max_tables: 64,
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
    /// The memory the rows and their renderings hold, reserved from the query's pool until
    /// the answer is dropped.
    memory: MemoryReservation,
}

impl Answer {
    /// Reserves `bytes` more from the query's pool for something made from the answer (its
    /// rendering), held as long as the answer.
    pub fn reserve(&self, bytes: usize) -> Result<(), QueryError> {
        Ok(self.memory.try_grow(bytes)?)
    }

    /// The answer's reservation, its rows let go: for what is made from them (its rendering)
    /// to hold until it is sent.
    pub fn into_memory(self) -> MemoryReservation {
        self.memory
    }

    /// Bytes held by the rows (dictionaries unpacked, see [`collect`]).
    pub fn rows_size(&self) -> usize {
        self.batches
            .iter()
            .map(RecordBatch::get_array_memory_size)
            .sum()
    }
}

/// Runs `df` and collects at most `max_rows` rows, reserving each batch from the session's
/// memory pool before keeping it. Planned by [`crate::bounded::physical_plan`], so that what
/// the query computes reserves its memory too. Dictionary columns are unpacked first, their size counted
/// before they are: a one-value dictionary of a long text repeated on every row is small in
/// Arrow but as large as its rows in JSON or CSV.
pub async fn collect(df: DataFrame, max_rows: usize) -> Result<Answer, QueryError> {
    let task = Arc::new(df.task_ctx());
    let pool = task.memory_pool().clone();
    let memory = MemoryConsumer::new("answer rows").register(&pool);
    let schema = unpacked_schema(df.schema().as_arrow());
    let plan = crate::bounded::physical_plan(df, &pool).await?;
    let mut stream = datafusion::physical_plan::execute_stream(plan, task)?;
    let mut batches = Vec::new();
    let mut rows = 0;
    let mut truncated = false;
    while let Some(batch) = stream.next().await {
        let mut batch = batch?;
        if rows + batch.num_rows() > max_rows {
            batch = batch.slice(0, max_rows - rows);
            truncated = true;
        }
        memory.try_grow(unpacked_size(&batch))?;
        let batch = unpack_dictionaries(&batch, &schema)?;
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
        memory,
    })
}

/// `schema` with every dictionary column of its value type.
fn unpacked_schema(schema: &arrow::datatypes::Schema) -> SchemaRef {
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Dictionary(_, value) => {
                Arc::new(f.as_ref().clone().with_data_type(value.as_ref().clone()))
            }
            _ => f.clone(),
        })
        .collect();
    Arc::new(arrow::datatypes::Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    ))
}

/// Bytes `batch` will hold once its dictionaries are unpacked: a dictionary column counts the
/// value of each row's key, plus its offset.
fn unpacked_size(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| match c.as_any_dictionary_opt() {
            Some(d) => {
                let lengths = value_lengths(d.values());
                d.normalized_keys()
                    .iter()
                    .map(|&k| lengths.get(k).copied().unwrap_or(0) + 16)
                    .fold(0usize, usize::saturating_add)
            }
            None => c.get_array_memory_size(),
        })
        .sum()
}

/// The length in bytes of each of `values` (text and binary exactly, others on average).
fn value_lengths(values: &arrow::array::ArrayRef) -> Vec<usize> {
    let each = |len: usize, at: &dyn Fn(usize) -> usize| (0..len).map(at).collect();
    if let Some(a) = values.as_string_opt::<i32>() {
        return each(a.len(), &|i| a.value(i).len());
    }
    if let Some(a) = values.as_string_opt::<i64>() {
        return each(a.len(), &|i| a.value(i).len());
    }
    if let Some(a) = values.as_string_view_opt() {
        return each(a.len(), &|i| a.value(i).len());
    }
    if let Some(a) = values.as_binary_opt::<i32>() {
        return each(a.len(), &|i| a.value(i).len());
    }
    if let Some(a) = values.as_binary_opt::<i64>() {
        return each(a.len(), &|i| a.value(i).len());
    }
    let average = values.get_array_memory_size() / values.len().max(1);
    vec![average; values.len()]
}

/// `batch` with every dictionary column cast to its value type (`schema`).
fn unpack_dictionaries(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, QueryError> {
    if !batch
        .columns()
        .iter()
        .any(|c| c.as_any_dictionary_opt().is_some())
    {
        return Ok(batch.clone());
    }
    Ok(crate::cast_to(batch, schema)?)
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
        collect(df, limits.max_rows).await
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
    let nesting = type_nesting(sql)?;
    if nesting > limits.max_depth {
        return Err(QueryError::Refused(format!(
            "the query nests a type {nesting} levels deep (`INT[][]…`, `STRUCT<…STRUCT<…>>`); at \
             most {} are allowed (--sql-max-depth)",
            limits.max_depth
        )));
    }
    refuse_table_functions(sql, limits)
}

/// How deep the types written in `sql` nest: the longest run of `[]` suffixes, the deepest
/// nesting of `STRUCT<`, `ARRAY<` and `MAP<`, and the deepest brackets in a string literal
/// (`arrow_cast(x, 'List(List(…))')` names a type in one). Found from the tokens, before
/// parsing, because types are read recursively without a recursion limit: `INT` with 1,000
/// `[]` overflowed a 16 MiB stack in the parser, 3,000 `List(` in Arrow's type parser.
fn type_nesting(sql: &str) -> Result<usize, QueryError> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|e| QueryError::Refused(format!("SQL error: {e}")))?;
    let tokens: Vec<&Token> = tokens
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    let (mut deepest, mut run, mut angles) = (0usize, 0usize, 0usize);
    let mut i = 0;
    while i < tokens.len() {
        let token = tokens[i];
        // `[]` and `[3]` both make a list of what precedes them.
        let suffix = match (tokens.get(i + 1), tokens.get(i + 2)) {
            (Some(Token::RBracket), _) => Some(2),
            (Some(Token::Number(..)), Some(Token::RBracket)) => Some(3),
            _ => None,
        };
        match token {
            Token::LBracket if suffix.is_some() => {
                run += 1;
                deepest = deepest.max(run);
                i += suffix.unwrap_or(1);
                continue;
            }
            Token::Lt
                if i > 0
                    && matches!(tokens[i - 1], Token::Word(w)
                        if matches!(w.keyword, Keyword::STRUCT | Keyword::ARRAY | Keyword::MAP)) =>
            {
                angles += 1;
                deepest = deepest.max(angles);
            }
            Token::Gt => angles = angles.saturating_sub(1),
            Token::ShiftRight => angles = angles.saturating_sub(2),
            // Any literal, however quoted (`'…'`, `$$…$$`, `"…"`), can name a type.
            other => deepest = deepest.max(bracket_depth(&other.to_string())),
        }
        run = 0;
        i += 1;
    }
    Ok(deepest)
}

/// Refuses table functions (`FROM name(...)`): DataFusion's built-in ones only generate
/// numbers, but a session could be given ones that read files, and analysts need none. And
/// refuses expressions and subqueries nested deeper than `max_depth`: the walk stops there, so
/// its own recursion is bounded too. (The parser builds a chain `a + b + …` in a loop, not by
/// recursion; DataFusion's planner and the tree's drop walk it recursively.)
fn refuse_table_functions(sql: &str, limits: &Limits) -> Result<(), QueryError> {
    let max_depth = limits.max_depth;
    use datafusion::sql::sqlparser::ast::{
        Expr, Query, SetExpr, Statement, TableFactor, Visit, Visitor,
    };
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
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<String> {
            // `a UNION b UNION …` nests set operations, which the visitor does not enter: a
            // chain of 3,000 overflowed the planner's stack. Count them as depth too.
            let mut chain = 0;
            let mut body = q.body.as_ref();
            while let SetExpr::SetOperation { left, .. } = body {
                chain += 1;
                body = left.as_ref();
            }
            if self.depth + chain > self.max_depth {
                return ControlFlow::Break(format!(
                    "the query chains {chain} set operations (UNION, INTERSECT, EXCEPT); with \
                     its nesting that is more than {} deep (--sql-max-depth)",
                    self.max_depth
                ));
            }
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
    let tables = table_references(&statements[0]);
    if tables > limits.max_tables {
        return Err(QueryError::Refused(format!(
            "the query reads {tables} tables (common table expressions counted as the tables \
             they read, each time they are named); at most {} are allowed (--sql-max-tables)",
            limits.max_tables
        )));
    }
    Ok(())
}

/// How many tables `statement` reads once its common table expressions are expanded: a
/// 1,000-way join planned for minutes, and 30 expressions each naming the one before twice
/// (2^30 tables) grew planning memory until the process died. An expression counts the
/// tables it reads each time it is named (an upper bound: its own text is counted once more).
fn table_references(statement: &datafusion::sql::sqlparser::ast::Statement) -> usize {
    use datafusion::sql::sqlparser::ast::{Cte, ObjectName, Query, Visit, Visitor};
    use std::collections::HashMap;
    use std::ops::ControlFlow;

    /// The common table expressions, in the order they are written.
    struct Ctes(Vec<Cte>);
    impl Visitor for Ctes {
        type Break = ();
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            if let Some(with) = &q.with {
                self.0.extend(with.cte_tables.iter().cloned());
            }
            ControlFlow::Continue(())
        }
    }
    /// Table references, each named expression counting its expansion.
    struct Count<'a> {
        ctes: &'a HashMap<String, usize>,
        total: usize,
    }
    impl Visitor for Count<'_> {
        type Break = ();
        fn pre_visit_relation(&mut self, name: &ObjectName) -> ControlFlow<()> {
            let n = self.ctes.get(&name.to_string().to_lowercase()).copied();
            self.total = self.total.saturating_add(n.unwrap_or(1));
            ControlFlow::Continue(())
        }
    }
    fn count(node: &impl Visit, ctes: &HashMap<String, usize>) -> usize {
        let mut c = Count { ctes, total: 0 };
        let _ = node.visit(&mut c);
        c.total
    }
    let mut found = Ctes(Vec::new());
    let _ = statement.visit(&mut found);
    let mut ctes = HashMap::new();
    for cte in found.0 {
        // At least one: an expression of constants is still a relation to plan.
        let n = count(&cte.query, &ctes).max(1);
        // A name given again (in a nested `WITH`) keeps the larger count.
        let name = cte.alias.name.value.to_lowercase();
        let known = ctes.entry(name).or_insert(n);
        *known = (*known).max(n);
    }
    count(statement, &ctes)
}

/// The deepest nesting of brackets (`(`, `[`, `<`) in `text`.
fn bracket_depth(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0);
    for c in text.chars() {
        match c {
            '(' | '[' | '<' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' | ']' | '>' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// The answer as `{"columns":[…],"rows":[{col: value}]}`: money (decimals) as exact strings,
/// integers and floats as numbers, times as RFC 3339 strings, dates as `YYYY-MM-DD`.
///
/// The tree it builds is several times the rows' Arrow size (a map entry per cell): each row's
/// share is reserved from the query's memory as it is built (see [`JSON_CELL_BYTES`]).
pub fn to_json(answer: &Answer) -> Result<Value, QueryError> {
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
            let mut size = 0;
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
                        // Money as netrev writes it; a decimal beyond rust_decimal's range
                        // (28 digits of scale, 96 bits) as Arrow prints it.
                        DataType::Decimal128(_, scale) => {
                            let d = rust_decimal::Decimal::try_from_i128_with_scale(
                                col.as_primitive::<arrow::datatypes::Decimal128Type>()
                                    .value(r),
                                u32::try_from(*scale).unwrap_or(u32::MAX),
                            );
                            Value::String(match d {
                                Ok(d) => netrev_storage::money::display(d),
                                Err(_) => formatters[i].value(r).to_string(),
                            })
                        }
                        DataType::Float32 | DataType::Float64 => {
                            serde_json::from_str(&formatters[i].value(r).to_string())
                                .unwrap_or(Value::Null)
                        }
                        _ => Value::String(formatters[i].value(r).to_string()),
                    }
                };
                // The text in the tree, then once more as the answer's body, escaped.
                size += JSON_CELL_BYTES
                    + 2 * field.name().len()
                    + match &v {
                        Value::String(s) => s.len() + escaped_len(s),
                        _ => 0,
                    };
                row.insert(field.name().clone(), v);
            }
            answer.reserve(size)?;
            rows.push(Value::Object(row));
        }
    }
    Ok(serde_json::json!({"columns": columns, "rows": rows, "truncated": answer.truncated}))
}

/// Bytes of `s` as a JSON string: a control character is written as `\u00XX` (6 bytes),
/// a quote or backslash with a backslash (2).
fn escaped_len(s: &str) -> usize {
    s.bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..0x20 => 6,
            _ => 1,
        })
        .sum::<usize>()
        + 2
}

/// What one cell of a JSON answer's tree holds besides its name's and text's bytes: a `Value`
/// (32 bytes), the name's own `String` (24) and its share of the map's nodes, counted high.
const JSON_CELL_BYTES: usize = 128;

/// The most text a CSV cell of a number, time or date takes (a `Decimal128(38, s)` or an RFC
/// 3339 time with nanoseconds and offset, with its separator).
const CSV_CELL_BYTES: usize = 48;

/// The answer as CSV, formula cells neutralised ([`crate::output::render`]). Reserved first:
/// the text columns copied for neutralising, and each cell's text. A list, struct or map column
/// is refused (400), CSV having no form for it.
pub fn to_csv(answer: &Answer) -> Result<String, QueryError> {
    if let Some(refusal) = crate::output::csv_refusal(&answer.schema) {
        return Err(QueryError::Refused(refusal));
    }
    // A null cell is empty: only its separator.
    let (cells, values) = answer
        .batches
        .iter()
        .flat_map(|b| b.columns())
        .fold((0usize, 0usize), |(cells, values), c| {
            (cells + c.len(), values + c.len() - c.logical_null_count())
        });
    answer.reserve(
        answer
            .rows_size()
            .saturating_mul(2)
            .saturating_add(cells)
            .saturating_add(values.saturating_mul(CSV_CELL_BYTES)),
    )?;
    Ok(crate::output::render(
        &answer.batches,
        crate::output::Format::Csv,
    )?)
}

/// The answer as an Arrow IPC stream (about the rows' own size, reserved first).
pub fn to_arrow_ipc(answer: &Answer) -> Result<Vec<u8>, QueryError> {
    answer.reserve(answer.rows_size())?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(sql: &str) -> usize {
        use datafusion::sql::sqlparser::dialect::GenericDialect;
        use datafusion::sql::sqlparser::parser::Parser;
        let statements = Parser::parse_sql(&GenericDialect {}, sql).unwrap();
        table_references(&statements[0])
    }

    #[test]
    fn common_table_expressions_count_as_the_tables_they_read() {
        assert_eq!(tables("SELECT 1"), 0);
        assert_eq!(tables("SELECT * FROM a JOIN b ON true, c"), 3);
        // t1 reads t0 twice; the query names t1 twice; t0's and t1's own text once more.
        let sql = "WITH t0 AS (SELECT * FROM a), t1 AS (SELECT * FROM t0 UNION ALL SELECT * FROM t0) \
                   SELECT * FROM t1 JOIN T1 ON true";
        assert_eq!(tables(sql), 1 + 2 + 2 * 2);
        let doubling = format!(
            "WITH t0 AS (SELECT 1 AS x){} SELECT count(*) FROM t30",
            (1..=30)
                .map(|i| format!(
                    ", t{i} AS (SELECT x FROM t{} UNION ALL SELECT x FROM t{})",
                    i - 1,
                    i - 1
                ))
                .collect::<String>()
        );
        assert!(tables(&doubling) >= 1 << 30);
        // An expression of constants counts as one table.
        assert_eq!(tables("WITH t AS (SELECT 1) SELECT * FROM t, t"), 2);
        // Naming the expressions again in a nested WITH does not reset their counts.
        let shadowed = format!(
            "{} SELECT (WITH {} SELECT 1) AS x",
            &doubling[..doubling.len() - " SELECT count(*) FROM t30".len()],
            (0..=30)
                .map(|i| format!("t{i} AS (SELECT 1)"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        assert!(tables(&format!("{shadowed}, (SELECT count(*) FROM t30) AS y")) >= 1 << 30);
    }

    #[test]
    fn types_nest_however_they_are_written() {
        let depth = |sql: &str| type_nesting(sql).unwrap();
        assert_eq!(depth("SELECT CAST(NULL AS INT[][]) AS a"), 2);
        assert_eq!(depth("SELECT CAST(NULL AS INT[3][3][3]) AS a"), 3);
        assert_eq!(depth("SELECT arrow_cast(NULL, 'List(List(Int32))')"), 2);
        assert_eq!(depth("SELECT arrow_cast(NULL, $$List(List(Int32))$$)"), 2);
        assert_eq!(depth("SELECT CAST(NULL AS STRUCT<a STRUCT<b INT>>)"), 2);
        assert_eq!(depth("SELECT 1 < 2, [1, 2][1]"), 1);
    }
}

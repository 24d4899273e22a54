//! Golden SQL tests: every `sql/tests/*.slt` file runs against the job files of `sql/`.
//!
//! The `.slt` files build the raw tables from literal rows, then say `RUN JOBS`, a directive
//! of this runner that creates every job's view, and query the views with hand-computed
//! expected answers. Cells print as Arrow displays them (`49.9900`, `2026-11-01T10:00:00Z`,
//! `NULL`).

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use sqllogictest::{DBOutput, DefaultColumnType};

struct Db {
    ctx: SessionContext,
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Db {
    type Error = DataFusionError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DataFusionError> {
        if sql.trim() == "RUN JOBS" {
            netrev_pipeline::jobs::create_views(&self.ctx)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            return Ok(DBOutput::StatementComplete(0));
        }
        let batches = self.ctx.sql(sql).await?.collect().await?;
        let head = sql.trim_start().to_ascii_uppercase();
        if !(head.starts_with("SELECT") || head.starts_with("WITH") || head.starts_with("VALUES")) {
            return Ok(DBOutput::StatementComplete(0));
        }
        Ok(DBOutput::Rows {
            types: batches
                .first()
                .map(|b| vec![DefaultColumnType::Any; b.num_columns()])
                .unwrap_or_default(),
            rows: rows(&batches)?,
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "netrev-datafusion"
    }
}

fn rows(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, DataFusionError> {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in batches {
        let formatters = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..b.num_rows() {
            out.push(
                formatters
                    .iter()
                    .map(|f| f.value(row).to_string())
                    .collect(),
            );
        }
    }
    Ok(out)
}

#[tokio::test]
async fn golden_sql_files() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sql/tests");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 2,
        "golden files missing in {}",
        dir.display()
    );
    for file in files {
        let mut runner = sqllogictest::Runner::new(|| async {
            Ok(Db {
                ctx: SessionContext::new(),
            })
        });
        if let Err(e) = runner.run_file_async(&file).await {
            panic!("{}: {e}", file.display());
        }
    }
}

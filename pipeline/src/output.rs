//! Rendering query results for people and programs: an aligned table, CSV or JSON.
//!
//! Money stays exact in every format: decimals are printed from their integer mantissa, never
//! through a float.

use arrow::array::RecordBatch;

use crate::Result;

/// How `netrev sql` prints results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "table" => Ok(Format::Table),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            other => Err(format!("unknown format {other:?} (table, csv or json)")),
        }
    }
}

/// Renders `batches` in `format`.
pub fn render(batches: &[RecordBatch], format: Format) -> Result<String> {
    let arrow_err = |e: arrow::error::ArrowError| datafusion::error::DataFusionError::from(e);
    Ok(match format {
        Format::Table => arrow::util::pretty::pretty_format_batches(batches)
            .map_err(arrow_err)?
            .to_string(),
        Format::Csv => {
            let mut buf = Vec::new();
            {
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut buf);
                for b in batches {
                    w.write(b).map_err(arrow_err)?;
                }
            }
            String::from_utf8(buf).expect("CSV is UTF-8")
        }
        Format::Json => {
            let mut buf = Vec::new();
            {
                let mut w = arrow::json::ArrayWriter::new(&mut buf);
                for b in batches {
                    w.write(b).map_err(arrow_err)?;
                }
                w.finish().map_err(arrow_err)?;
            }
            let text = String::from_utf8(buf).expect("JSON is UTF-8");
            if text.is_empty() {
                "[]".to_string()
            } else {
                text
            }
        }
    })
}

//! Rendering query results for people and programs: an aligned table, CSV or JSON.
//!
//! Money stays exact in every format: decimals are printed from their integer mantissa, never
//! through a float. CSV text cells that start like a spreadsheet formula get a leading `'`
//! ([`neutralise_csv_formula`]); numbers and money are written as they are.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, LargeStringArray, RecordBatch, StringArray, StringViewArray,
};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::error::ArrowError;
use netrev_storage::csv::neutralise_csv_formula;

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
    if let (Format::Csv, Some(first)) = (format, batches.first())
        && let Some(refusal) = csv_refusal(&first.schema())
    {
        return Err(datafusion::error::DataFusionError::Plan(refusal).into());
    }
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
                    w.write(&neutralise_text(b).map_err(arrow_err)?)
                        .map_err(arrow_err)?;
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

/// `batch` with every text column (`Utf8`, `LargeUtf8`, `Utf8View`, and dictionaries of them,
/// which become their plain value type) passed through [`neutralise_csv_formula`], for the CSV
/// writer. Other columns, numbers and `Decimal128` money among them, are shared unchanged.
fn neutralise_text(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let column = match field.data_type() {
            DataType::Dictionary(_, values) if is_text(values) => {
                arrow::compute::cast(column, values)?
            }
            _ => Arc::clone(column),
        };
        let neutralised: ArrayRef = match column.data_type() {
            DataType::Utf8 => Arc::new(
                column
                    .as_string::<i32>()
                    .iter()
                    .map(|v| v.map(neutralise_csv_formula))
                    .collect::<StringArray>(),
            ),
            DataType::LargeUtf8 => Arc::new(
                column
                    .as_string::<i64>()
                    .iter()
                    .map(|v| v.map(neutralise_csv_formula))
                    .collect::<LargeStringArray>(),
            ),
            DataType::Utf8View => Arc::new(
                column
                    .as_string_view()
                    .iter()
                    .map(|v| v.map(neutralise_csv_formula))
                    .collect::<StringViewArray>(),
            ),
            _ => column,
        };
        // A column's name is a cell too: the header's.
        let name = neutralise_csv_formula(field.name()).into_owned();
        fields.push(Arc::new(
            Field::clone(field)
                .with_name(name)
                .with_data_type(neutralised.data_type().clone()),
        ));
        columns.push(neutralised);
    }
    RecordBatch::try_new(
        Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())),
        columns,
    )
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// Why answers of `schema` cannot be written as CSV, if they cannot: a list, struct or map
/// column has no cell form (answer as JSON or Arrow instead).
pub fn csv_refusal(schema: &arrow::datatypes::Schema) -> Option<String> {
    let nested = schema.fields().iter().find(|f| f.data_type().is_nested())?;
    Some(format!(
        "column {:?} is of type {}, which CSV cannot hold: ask for format json or arrow, or \
         select it as text (CAST(… AS VARCHAR))",
        nested.name(),
        nested.data_type()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    use arrow::array::{Decimal128Array, DictionaryArray, Int64Array};
    use arrow::datatypes::Int32Type;

    fn csv(batch: RecordBatch) -> String {
        render(&[batch], Format::Csv).unwrap()
    }

    #[test]
    fn csv_neutralises_text_and_leaves_numbers_and_money() {
        let money = Decimal128Array::from(vec![Some(-50_000), Some(1_500_000), None, Some(0)])
            .with_precision_and_scale(18, 4)
            .unwrap();
        let source = StringArray::from(vec![
            Some(r#"=HYPERLINK("http://x")"#),
            Some("@SUM(1)"),
            None,
            Some("fb"),
        ]);
        let campaign = LargeStringArray::from(vec!["\tc", "\rc", "-promo", "summer-sale"]);
        let device = StringViewArray::from(vec!["+1", "mobile", "a=b", "desktop"]);
        let country: DictionaryArray<Int32Type> =
            vec!["=1", "US", "=1", "DE"].into_iter().collect();
        let clicks = Int64Array::from(vec![-1, 2, 3, 4]);
        let batch = RecordBatch::try_from_iter([
            ("source", Arc::new(source) as ArrayRef),
            ("campaign", Arc::new(campaign)),
            ("device", Arc::new(device)),
            ("country", Arc::new(country)),
            ("clicks", Arc::new(clicks)),
            ("net_revenue", Arc::new(money)),
        ])
        .unwrap();
        assert_eq!(
            csv(batch),
            "source,campaign,device,country,clicks,net_revenue\n\
             \"'=HYPERLINK(\"\"http://x\"\")\",'\tc,'+1,'=1,-1,-5.0000\n\
             '@SUM(1),\"'\rc\",mobile,US,2,150.0000\n\
             ,'-promo,a=b,'=1,3,\n\
             fb,summer-sale,desktop,DE,4,0.0000\n"
        );
    }

    #[test]
    fn json_and_table_are_not_neutralised() {
        let batch = RecordBatch::try_from_iter([(
            "source",
            Arc::new(StringArray::from(vec!["=1"])) as ArrayRef,
        )])
        .unwrap();
        assert_eq!(
            render(std::slice::from_ref(&batch), Format::Json).unwrap(),
            r#"[{"source":"=1"}]"#
        );
        assert!(!render(&[batch], Format::Table).unwrap().contains("'=1"));
    }
}

//! The raw Parquet files: documented schema, exact decimals, atomic visibility.

use std::str::FromStr;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, Decimal128Type, TimeUnit};
use netrev_storage::model::Table;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rust_decimal::Decimal;

use crate::harness::{Server, client, raw_files};

/// A column as documented: name, type, nullable.
type Column = (&'static str, DataType, bool);

fn read(path: &std::path::Path) -> Vec<RecordBatch> {
    let f = std::fs::File::open(path).unwrap();
    ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test]
async fn parquet_has_the_documented_schema_and_exact_decimals() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let c = client();
    let (cid, _) = s.click(&c, "source=a&cost=0.1").await;
    let cid = cid.as_str();
    for amount in ["0.1", "0.2", "99999999999999.9999", "0.0001"] {
        let r = c
            .get(s.url(&format!(
                "/api/conversion?cid={cid}&amount={amount}&txid=t{amount}"
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = c
        .get(s.url(&format!("/api/conversion/refund?cid={cid}&amount=0.3")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    s.stop();

    let expected: [(Table, &[Column]); 3] = [
        (
            Table::Clicks,
            &[
                ("cid", DataType::Utf8, false),
                ("vid", DataType::Utf8, false),
                (
                    "ts",
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                    false,
                ),
                ("source", DataType::Utf8, true),
                ("campaign", DataType::Utf8, true),
                ("link", DataType::Utf8, true),
                ("country", DataType::Utf8, true),
                ("device", DataType::Utf8, true),
                ("cost", DataType::Decimal128(18, 4), false),
                ("sub1", DataType::Utf8, true),
                ("sub2", DataType::Utf8, true),
                ("sub3", DataType::Utf8, true),
                ("sub4", DataType::Utf8, true),
                ("sub5", DataType::Utf8, true),
            ],
        ),
        (
            Table::Conversions,
            &[
                ("cid", DataType::Utf8, false),
                (
                    "ts",
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                    false,
                ),
                ("amount", DataType::Decimal128(18, 4), false),
                ("txid", DataType::Utf8, true),
                ("type", DataType::Utf8, true),
            ],
        ),
        (
            Table::Refunds,
            &[
                ("cid", DataType::Utf8, false),
                (
                    "ts",
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                    false,
                ),
                ("amount", DataType::Decimal128(18, 4), false),
                ("txid", DataType::Utf8, true),
                ("type", DataType::Utf8, false),
                ("ref", DataType::Utf8, true),
            ],
        ),
    ];
    for (table, cols) in expected {
        let files = raw_files(dir.path(), table);
        assert!(!files.is_empty(), "{}", table.name());
        for f in files {
            let rel = f
                .strip_prefix(dir.path())
                .unwrap()
                .to_string_lossy()
                .to_string();
            let parts: Vec<&str> = rel.split('/').collect();
            assert_eq!(parts[0], "events");
            assert_eq!(parts[1], table.name());
            assert!(
                parts[2].starts_with("date=") && parts[2].len() == 15,
                "{rel}"
            );
            for batch in read(&f) {
                let schema = batch.schema();
                let got: Vec<(&str, DataType, bool)> = schema
                    .fields()
                    .iter()
                    .map(|f| (f.name().as_str(), f.data_type().clone(), f.is_nullable()))
                    .collect();
                assert_eq!(got, cols.to_vec(), "{}", table.name());
            }
        }
    }

    // Exact sum over the Decimal128 mantissas: 0.1 + 0.2 + max + 0.0001.
    let mut sum = 0i128;
    for f in raw_files(dir.path(), Table::Conversions) {
        for b in read(&f) {
            sum += b
                .column_by_name("amount")
                .unwrap()
                .as_primitive::<Decimal128Type>()
                .values()
                .iter()
                .sum::<i128>();
        }
    }
    assert_eq!(
        Decimal::from_i128_with_scale(sum, 4),
        Decimal::from_str("100000000000000.3000").unwrap()
    );
    // No temporary or partial files are ever left behind in the table folders.
    for entry in walk(&dir.path().join("events")) {
        let name = entry.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            name.ends_with(".parquet") && !name.starts_with('.'),
            "stray file {entry:?}"
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

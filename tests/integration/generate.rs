//! `netrev generate`: the same history written into the raw tables and replayed as postbacks
//! to a running server gives the same events (the server's copy deduplicated).

use std::collections::BTreeMap;
use std::process::Command;

use netrev_storage::{Event, Table};
use rust_decimal::Decimal;

use crate::harness::{Server, client, read_table};

/// Conversions and refunds by (txid), each once, with their amounts; click count and cost.
fn summary(events_of: impl Fn(Table) -> Vec<Event>) -> (usize, Decimal, BTreeMap<String, Decimal>) {
    let clicks = events_of(Table::Clicks);
    let cost = clicks
        .iter()
        .map(|e| match e {
            Event::Click(c) => c.cost,
            _ => Decimal::ZERO,
        })
        .sum();
    let mut money = BTreeMap::new();
    for e in events_of(Table::Conversions)
        .into_iter()
        .chain(events_of(Table::Refunds))
    {
        let (txid, amount) = match e {
            Event::Conversion(c) => (c.txid.unwrap(), c.amount),
            Event::Refund(r) => (r.txid.unwrap(), r.amount),
            Event::Click(_) => unreachable!(),
        };
        money.insert(txid, amount);
    }
    (clicks.len(), cost, money)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_history_equals_the_generated_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (generated, served) = (tmp.path().join("generated"), tmp.path().join("served"));
    let generate = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_netrev"))
            .args([
                "generate", "--clicks", "3000", "--days", "4", "--seed", "11",
            ])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    generate(&["--data", generated.to_str().unwrap()]);
    let server = Server::start(&served, &["--rate-limit-per-ip", "0"]);
    let said = generate(&["--replay", &server.base, "--rate", "20000"]);
    assert!(said.contains("0 not answered 200"), "{said}");
    server.wait_flushed(&client()).await;
    server.stop();

    let want = summary(|t| read_table(&generated, t));
    let got = summary(|t| read_table(&served, t));
    assert_eq!(got.0, 3000);
    assert!(want.2.len() > 50, "a history with money: {}", want.2.len());
    assert_eq!(got, want);
    // The server stored each conversion and refund once, though 1% were sent twice.
    let stored =
        read_table(&served, Table::Conversions).len() + read_table(&served, Table::Refunds).len();
    assert_eq!(stored, want.2.len());
}

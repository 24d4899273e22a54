//! Crash safety with the real binary: concurrent postbacks, kill -9 at a random moment,
//! restart, and every acknowledged event is in Parquet exactly once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netrev_storage::Event;
use netrev_storage::model::Table;
use rand::{Rng, SeedableRng};

use crate::harness::{Server, client, read_table};

/// What the load generator got acknowledged.
#[derive(Default)]
struct Acked {
    clicks: Vec<String>,
    conversions: Vec<String>,
    refunds: Vec<String>,
}

/// Sends postbacks from `workers` concurrent loops until the server dies; records what was
/// acknowledged with 200.
async fn load(base: String, round: usize, workers: usize, acked: Arc<Mutex<Acked>>) {
    let c = client();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (c, base, acked) = (c.clone(), base.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let r = c.get(format!("{base}/api/click?source=s{w}&cost=0.01")).send().await;
                let Ok(r) = r else { return };
                let Ok(v) = r.json::<serde_json::Value>().await else { return };
                let cid = v["cid"].as_str().unwrap().to_string();
                acked.lock().unwrap().clicks.push(cid.clone());
                let txid = format!("t{round}-{w}-{i}");
                let r = c
                    .post(format!("{base}/api/conversion"))
                    .form(&[("cid", cid.as_str()), ("amount", "12.3456"), ("txid", &txid)])
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => acked.lock().unwrap().conversions.push(txid.clone()),
                    Ok(r) => panic!("conversion answered {}", r.status()),
                    Err(_) => return,
                }
                let rtx = format!("r{round}-{w}-{i}");
                let r = c
                    .get(format!("{base}/api/conversion/refund?cid={cid}&amount=-1.5&type=cb&ref={txid}&txid={rtx}"))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => acked.lock().unwrap().refunds.push(rtx),
                    Ok(r) => panic!("refund answered {}", r.status()),
                    Err(_) => return,
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn counts<I: IntoIterator<Item = String>>(items: I) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for i in items {
        *m.entry(i).or_insert(0) += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_at_random_moments_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6e65_7472_6576);
    let acked = Arc::new(Mutex::new(Acked::default()));
    let c = client();
    for round in 0..5 {
        let s = Server::start(dir.path(), &["--rate-limit-per-ip", "0"]);
        let load = tokio::spawn(load(s.base.clone(), round, 16, acked.clone()));
        tokio::time::sleep(Duration::from_millis(rng.random_range(150..900))).await;
        s.kill9();
        load.await.unwrap();
    }
    // Recover once more and let everything reach Parquet.
    let s = Server::start(dir.path(), &["--rate-limit-per-ip", "0"]);
    s.wait_flushed(&c).await;
    let acked = acked.lock().unwrap();
    assert!(
        acked.conversions.len() > 50,
        "the load was too small to mean anything: {}",
        acked.conversions.len()
    );

    let clicks = counts(
        read_table(dir.path(), Table::Clicks)
            .into_iter()
            .map(|e| match e {
                Event::Click(c) => c.cid,
                _ => unreachable!(),
            }),
    );
    let convs = counts(
        read_table(dir.path(), Table::Conversions)
            .into_iter()
            .map(|e| match e {
                Event::Conversion(c) => c.txid.unwrap(),
                _ => unreachable!(),
            }),
    );
    let refunds = counts(
        read_table(dir.path(), Table::Refunds)
            .into_iter()
            .map(|e| match e {
                Event::Refund(r) => r.txid.unwrap(),
                _ => unreachable!(),
            }),
    );
    for (name, stored, sent) in [
        ("click", &clicks, &acked.clicks),
        ("conversion", &convs, &acked.conversions),
        ("refund", &refunds, &acked.refunds),
    ] {
        for id in sent {
            assert_eq!(
                stored.get(id),
                Some(&1),
                "acknowledged {name} {id} stored {:?} times",
                stored.get(id)
            );
        }
        // Unacknowledged events may or may not have made it, but never twice.
        assert!(
            stored.values().all(|&n| n == 1),
            "a {name} was stored twice"
        );
    }
    eprintln!(
        "crash test: {} clicks, {} conversions, {} refunds acknowledged over 5 kill -9 rounds",
        acked.clicks.len(),
        acked.conversions.len(),
        acked.refunds.len()
    );
}

//! An S3-compatible data root against a real S3 API on 127.0.0.1 (moto's server, which
//! `.ci/run` installs): the same events give the same derived tables on S3 as in a local
//! directory, and two ingest nodes sharing one bucket count a postback retried on both once.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Server, client};
use crate::jobs::{CLICKS, CONVERSIONS, REFUNDS, ok, write};

/// moto's S3 server on a free port of 127.0.0.1, killed when dropped.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    async fn start() -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 with moto (pip install 'moto[server]'; .ci/run does)");
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::get(&endpoint).await.is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Moto { child, endpoint }
    }

    async fn bucket(&self, name: &str) {
        let r = client()
            .put(format!("{}/{name}", self.endpoint))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "creating bucket: {}", r.status());
    }

    /// The environment a netrev process needs to reach it.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    fn netrev(&self, data: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_netrev"))
            .args(args)
            .args(["--data", data])
            .envs(self.env())
            .env("NETREV_LOG", "warn")
            .output()
            .expect("run netrev")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every row of `table` as CSV lines, in a canonical order.
fn rows(out: Output) -> BTreeSet<String> {
    ok(out).lines().skip(1).map(str::to_owned).collect()
}

const DERIVED: [&str; 5] = [
    "stats_hourly",
    "cohort_ltv",
    "visitors",
    "refund_links",
    "cohort_sources",
];

/// A data root whose tables are recomputed on Ballista.
#[cfg(feature = "ballista")]
const ON_BALLISTA: &str = "s3://netrev/on-ballista";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derived_tables_on_s3_and_on_ballista_equal_those_of_a_local_directory() {
    let moto = Moto::start().await;
    moto.bucket("netrev").await;
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("data");
    let local = local.to_str().unwrap();
    let s3 = "s3://netrev/some/prefix";
    for (table, text) in [
        ("clicks", CLICKS),
        ("conversions", CONVERSIONS),
        ("refunds", REFUNDS),
    ] {
        let f = write(tmp.path(), &format!("{table}.csv"), text);
        let args = ["import", "--table", table, f.to_str().unwrap()];
        ok(moto.netrev(local, &args));
        ok(moto.netrev(s3, &args));
        #[cfg(feature = "ballista")]
        ok(moto.netrev(ON_BALLISTA, &args));
    }
    ok(moto.netrev(local, &["recompute"]));
    ok(moto.netrev(s3, &["recompute"]));
    // The SQL jobs on Ballista (in this process) read and write the bucket as well.
    #[cfg(feature = "ballista")]
    ok(moto.netrev(
        ON_BALLISTA,
        &["recompute", "--engine", "ballista", "--timeout-secs", "90"],
    ));
    for table in DERIVED {
        let query = format!("SELECT * FROM {table}");
        let args = ["sql", "--format", "csv", query.as_str()];
        let here = rows(moto.netrev(local, &args));
        assert!(!here.is_empty(), "{table} is empty");
        assert_eq!(rows(moto.netrev(s3, &args)), here, "{table}");
        #[cfg(feature = "ballista")]
        assert_eq!(
            rows(moto.netrev(ON_BALLISTA, &args)),
            here,
            "{table} on Ballista"
        );
    }
    // A partial recompute replaces partitions on S3 as well.
    let args = ["recompute", "--from", "2026-11-01", "--to", "2026-11-01"];
    ok(moto.netrev(s3, &args));
    let query = "SELECT * FROM stats_hourly";
    let args = ["sql", "--format", "csv", query];
    assert_eq!(
        rows(moto.netrev(s3, &args)),
        rows(moto.netrev(local, &args))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ingest_nodes_on_one_bucket_count_a_postback_retried_on_both_once() {
    let moto = Moto::start().await;
    moto.bucket("netrev").await;
    let tmp = tempfile::tempdir().unwrap();
    let data = "s3://netrev/shared";
    let env = moto.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let wal = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    let (wal_a, wal_b) = (wal("wal-a"), wal("wal-b"));
    let a = Server::start_env(Path::new(data), &["--wal-dir", &wal_a], &env);
    let b = Server::start_env(
        Path::new(data),
        &["--wal-dir", &wal_b, "--ingest-only"],
        &env,
    );
    let c = client();
    let (cid, _) = a.click(&c, "source=fb").await;
    // The network retries the sale and the refund; the retries land on the other node.
    let sale = format!("/api/conversion?cid={cid}&amount=49.99&txid=T1");
    let refund = format!("/api/conversion/refund?cid={cid}&amount=10&txid=R1&ref=T1");
    for (node, path) in [(&a, &sale), (&b, &sale), (&b, &refund), (&a, &refund)] {
        let r = c.get(node.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let other = format!("/api/conversion?cid={cid}&amount=0.01&txid=T2");
    assert_eq!(c.get(b.url(&other)).send().await.unwrap().status(), 200);
    for node in [&a, &b] {
        node.wait_flushed(&c).await;
    }
    assert_ne!(a.health(&c).await["node"], b.health(&c).await["node"]);
    a.stop();
    b.stop();

    let sql = |q: &str| ok(moto.netrev(data, &["sql", "--format", "csv", q]));
    // Both nodes wrote their copies, under their own file names.
    assert_eq!(
        sql("SELECT count(*) AS n FROM conversions"),
        "n\n3\n",
        "two copies of T1 and T2"
    );
    ok(moto.netrev(data, &["recompute"]));
    assert_eq!(
        sql(
            "SELECT sum(conversions) AS c, sum(gross_revenue) AS g, sum(refunds) AS r, \
             sum(refund_amount) AS a FROM stats_hourly"
        ),
        "c,g,r,a\n2,50.0000,1,10.0000\n"
    );
}

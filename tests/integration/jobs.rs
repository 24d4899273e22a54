//! The jobs through the real binary: import, recompute (full and by range), sql, the
//! scheduled recompute inside serve, and DuckDB reading the same files.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::harness::{Server, client};

pub fn netrev(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netrev"))
        .args(args)
        .arg("--data")
        .arg(data)
        .env("NETREV_LOG", "warn")
        .output()
        .expect("run netrev")
}

pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "netrev failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn sql(data: &Path, query: &str) -> String {
    ok(netrev(data, &["sql", "--format", "csv", query]))
}

pub const CLICKS: &str = "\
cid,vid,ts,source,campaign,link,country,device,cost
A-1,v1,2026-11-01T10:15:00Z,fb,c1,l1,DE,mobile,0.10
A-2,v2,2026-11-01 10:45:00,fb,c1,l1,DE,mobile,0.20
A-3,v1,2026-11-02T08:00:00+01:00,gg,c2,l2,US,desktop,1
";

pub const CONVERSIONS: &str = "\
cid,ts,amount,txid,type
A-1,2026-11-01T11:00:00Z,49.99,T1,sale
A-1,2026-11-01T11:00:00Z,49.99,T1,sale
A-2,2026-11-01T12:00:00Z,0.1,,
A-3,2026-11-03T00:00:00Z,20,T3,sale
";

pub const REFUNDS: &str = "\
cid,ts,amount,txid,type,ref
A-1,2026-11-04T10:00:00Z,-10,R1,refund,T1
A-2,2026-11-05T10:00:00Z,0.1,,cb,
ZZ,2026-11-05T10:00:00Z,7,R9,chargeback,
";

pub fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn import_recompute_and_sql() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    for (table, text) in [
        ("clicks", CLICKS),
        ("conversions", CONVERSIONS),
        ("refunds", REFUNDS),
    ] {
        let f = write(tmp.path(), &format!("{table}.csv"), text);
        let out = netrev(&data, &["import", "--table", table, f.to_str().unwrap()]);
        ok(out);
    }
    // The retried conversion was skipped; importing everything again adds nothing.
    let f = write(tmp.path(), "again.csv", CONVERSIONS);
    let out = netrev(
        &data,
        &["import", "--table", "conversions", f.to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("imported 0 of 4 rows"), "{stderr}");

    // A file with bad rows is refused whole, each bad row named by its line.
    let bad = write(
        tmp.path(),
        "bad.csv",
        "cid,ts,amount,txid\nA-1,2026-11-01T11:00:00Z,5,OK\nA-2,2026-11-01T11:00:00Z,1e3,X\nA-3,yesterday,1,Y\n",
    );
    let out = netrev(
        &data,
        &["import", "--table", "conversions", bad.to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(stderr.contains("line 3: amount"), "{stderr}");
    assert!(stderr.contains("line 4: ts"), "{stderr}");
    assert!(stderr.contains("nothing was imported"), "{stderr}");
    assert_eq!(
        sql(&data, "SELECT count(*) AS n FROM conversions"),
        "n\n3\n"
    );

    // A byte-order mark and spaces around header names are tolerated; a missing vid is
    // generated as for postbacks; a repeated column is refused.
    let bom = write(
        tmp.path(),
        "bom.csv",
        "\u{feff}cid , ts ,source\nB-1,2026-11-05T10:00:00Z,mail\n",
    );
    ok(netrev(
        &data,
        &["import", "--table", "clicks", bom.to_str().unwrap()],
    ));
    let twice = write(
        tmp.path(),
        "twice.csv",
        "cid,ts,cid\nX,2026-11-05T10:00:00Z,Y\n",
    );
    let out = netrev(
        &data,
        &["import", "--table", "clicks", twice.to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("appears twice"));
    let too_old = write(
        tmp.path(),
        "old.csv",
        "cid,ts,amount\nA-1,1970-01-01T00:00:00Z,1\n",
    );
    let out = netrev(
        &data,
        &[
            "import",
            "--table",
            "conversions",
            too_old.to_str().unwrap(),
        ],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2: ts"));

    ok(netrev(&data, &["recompute"]));
    assert_eq!(
        sql(
            &data,
            "SELECT sum(clicks) AS clicks, sum(conversions) AS conv, sum(gross_revenue) AS gross, \
             sum(refunds) AS refunds, sum(refund_amount) AS refund_amount, \
             sum(refunded_conversions) AS refunded FROM stats_hourly"
        ),
        "clicks,conv,gross,refunds,refund_amount,refunded\n4,3,70.0900,2,10.1000,2\n"
    );
    assert_eq!(
        sql(
            &data,
            "SELECT date, count(*) AS n FROM stats_hourly GROUP BY date ORDER BY date"
        ),
        "date,n\n2026-11-01,1\n2026-11-02,1\n2026-11-05,1\n"
    );
    assert_eq!(
        sql(
            &data,
            "SELECT cid, unmatched FROM refund_links WHERE unmatched"
        ),
        "cid,unmatched\nZZ,true\n"
    );
    assert_eq!(
        sql(
            &data,
            "SELECT vid, net_revenue FROM visitors WHERE vid IN ('v1', 'v2') ORDER BY vid"
        ),
        "vid,net_revenue\nv1,59.9900\nv2,0.0000\n"
    );
    // Each partition is one file; nothing half-written or temporary is left.
    let part = data.join("tables/stats_hourly/date=2026-11-01");
    let names: Vec<_> = std::fs::read_dir(&part)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["part-0.parquet"]);

    // A range rebuilds only its partitions.
    std::fs::remove_dir_all(data.join("tables/stats_hourly/date=2026-11-02")).unwrap();
    let before = std::fs::metadata(part.join("part-0.parquet"))
        .unwrap()
        .modified()
        .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let out = ok(netrev(
        &data,
        &["recompute", "--from", "2026-11-02", "--to", "2026-11-02"],
    ));
    let _ = out;
    assert!(
        data.join("tables/stats_hourly/date=2026-11-02/part-0.parquet")
            .exists()
    );
    let after = std::fs::metadata(part.join("part-0.parquet"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after, "a partition outside the range was rewritten");

    // Read-only: DDL and DML are refused.
    for statement in [
        "CREATE TABLE x AS SELECT 1",
        "INSERT INTO clicks SELECT * FROM clicks",
        "COPY (SELECT 1) TO 'x.csv'",
    ] {
        assert!(
            !netrev(&data, &["sql", statement]).status.success(),
            "{statement}"
        );
    }

    duckdb_agrees(&data);
}

/// DuckDB (installed by `.ci/run`) reads `tables/` and `events/` and gets the totals netrev's
/// own SQL gets.
fn duckdb_agrees(data: &Path) {
    let script = r#"
import duckdb, sys
d = sys.argv[1]
q = lambda s: duckdb.sql(s).fetchall()
stats = q(f"select sum(clicks), sum(gross_revenue), sum(refund_amount) from read_parquet('{d}/tables/stats_hourly/*/*.parquet', hive_partitioning=true)")[0]
raw = q(f"select count(*), sum(amount) from read_parquet('{d}/events/refunds/*/*.parquet', hive_partitioning=true)")[0]
ltv = q(f"select sum(ltv) from read_parquet('{d}/tables/cohort_ltv/*.parquet')")[0]
print(f"{stats[0]},{stats[1]:.4f},{stats[2]:.4f},{raw[0]},{raw[1]:.4f},{ltv[0]:.4f}")
"#;
    let out = Command::new("python3")
        .args(["-c", script, data.to_str().unwrap()])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "DuckDB (pip install duckdb) failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let duck = String::from_utf8(out.stdout).unwrap();
    let ours = sql(
        data,
        "SELECT (SELECT sum(clicks) FROM stats_hourly) AS a, \
         (SELECT sum(gross_revenue) FROM stats_hourly) AS b, \
         (SELECT sum(refund_amount) FROM stats_hourly) AS c, \
         (SELECT count(*) FROM refunds) AS d, (SELECT sum(amount) FROM refunds) AS e, \
         (SELECT sum(ltv) FROM cohort_ltv) AS f",
    );
    let ours = ours.lines().nth(1).unwrap();
    assert_eq!(duck.trim(), ours);
}

#[tokio::test]
async fn serve_recomputes_on_schedule() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = Server::start(&data, &["--recompute-interval-secs", "1"]);
    let c = client();
    let (cid, _) = s.click(&c, "source=sched&cost=0.5").await;
    let cid = cid.as_str();
    let r = c
        .get(s.url(&format!("/api/conversion?cid={cid}&amount=30&txid=T")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(s.url(&format!("/api/conversion/refund?cid={cid}&amount=12.5")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // visitors is only written by the recompute (stats_hourly is also kept live).
    let want = "clicks,gross_revenue,refund_amount\n1,30.0000,12.5000\n";
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = netrev(
            &data,
            &[
                "sql",
                "--format",
                "csv",
                "SELECT clicks, gross_revenue, refund_amount FROM visitors",
            ],
        );
        if out.status.success() && String::from_utf8_lossy(&out.stdout) == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stats never showed the refund: {out:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

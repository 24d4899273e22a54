//! The query API through the real server, on a small hand-computed history (docs/design.md §5 and
//! 8): `/api/stats` in every grouping, with filters, totals, CSV, a daylight-saving day in
//! America/New_York and empty ranges; read-only SQL and its refusals, agreeing with DuckDB;
//! the API key; cohorts, visitors, the refund log; and the OpenAPI description.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Server, client};
use crate::jobs::{netrev, ok, write};

// 2026-03-08 is the day New York moves to daylight time (02:00 EST → 03:00 EDT): 23 hours.
const CLICKS: &str = "\
cid,vid,ts,source,campaign,link,country,device,cost
A1,v1,2026-03-08T06:30:00Z,fb,c1,,US,mobile,0.50
A2,v2,2026-03-08T07:10:00Z,fb,c1,,US,desktop,0.25
A3,v1,2026-03-09T03:30:00Z,gg,c2,,DE,mobile,1
A4,v3,2026-03-09T05:00:00Z,gg,c2,,DE,mobile,0
";
const CONVERSIONS: &str = "\
cid,ts,amount,txid,type
A1,2026-03-08T07:00:00Z,100,T1,sale
A1,2026-03-08T08:00:00Z,50,T2,upsell
A3,2026-03-09T04:00:00Z,20,T3,sale
";
const REFUNDS: &str = "\
cid,ts,amount,txid,type,ref
A1,2026-03-20T10:00:00Z,30,R1,chargeback,T1
A3,2026-03-21T10:00:00Z,20,R2,refund,
ZZ,2026-03-22T10:00:00Z,5,R9,refund,
";

const KEY: &str = "test-api-key-123";

async fn history(tmp: &Path) -> Server {
    let data = tmp.join("data");
    for (table, text) in [
        ("clicks", CLICKS),
        ("conversions", CONVERSIONS),
        ("refunds", REFUNDS),
    ] {
        let f = write(tmp, &format!("{table}.csv"), text);
        ok(netrev(
            &data,
            &["import", "--table", table, f.to_str().unwrap()],
        ));
    }
    Server::start(&data, &["--api-key", KEY])
}

async fn get(server: &Server, http: &reqwest::Client, path: &str) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = http
            .get(server.url(path))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        if status == 503 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let text = r.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        return (status, body);
    }
}

async fn stats(server: &Server, http: &reqwest::Client, query: &str) -> Value {
    let (status, body) = get(server, http, &format!("/api/stats?{query}")).await;
    assert_eq!(status, 200, "{query}: {body}");
    body
}

fn day_row(date: &str, m: Value) -> Value {
    let mut row = m;
    row["date"] = json!(date);
    row
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_table_by_hand() {
    let tmp = tempfile::tempdir().unwrap();
    let http = client();
    let server = history(tmp.path()).await;
    let range = "from=2026-03-08&to=2026-03-09";

    // UTC days, every column.
    let by_day = stats(&server, &http, &format!("{range}&group_by=date")).await;
    let mar8 = json!({"clicks": 2, "conversions": 2, "cost": "0.75", "gross_revenue": "150.00",
        "refunds": 1, "refund_amount": "30.00", "refund_rate": 50.0, "chargebacks": 1,
        "chargeback_amount": "30.00", "net_revenue": "120.00", "profit": "119.25",
        "roi": 15900.0, "epc": 60.0, "cr": 100.0});
    let mar9 = json!({"clicks": 2, "conversions": 1, "cost": "1.00", "gross_revenue": "20.00",
        "refunds": 1, "refund_amount": "20.00", "refund_rate": 100.0, "chargebacks": 0,
        "chargeback_amount": "0.00", "net_revenue": "0.00", "profit": "-1.00",
        "roi": -100.0, "epc": 0.0, "cr": 50.0});
    assert_eq!(
        by_day["rows"],
        json!([day_row("2026-03-08", mar8), day_row("2026-03-09", mar9)])
    );
    let totals = json!({"clicks": 4, "conversions": 3, "cost": "1.75", "gross_revenue": "170.00",
        "refunds": 2, "refund_amount": "50.00", "refund_rate": 66.67, "chargebacks": 1,
        "chargeback_amount": "30.00", "net_revenue": "120.00", "profit": "118.25",
        "roi": 6757.14, "epc": 30.0, "cr": 75.0});
    assert_eq!(by_day["totals"], totals);

    // New York days: March 8 has 23 hours and ends at 04:00 UTC on March 9, so A3 belongs to it.
    let ny = stats(
        &server,
        &http,
        &format!("{range}&group_by=date&tz=America/New_York"),
    )
    .await;
    let local8 = json!({"date": "2026-03-08", "clicks": 3, "conversions": 3, "cost": "1.75",
        "gross_revenue": "170.00", "refunds": 2, "refund_amount": "50.00", "refund_rate": 66.67,
        "chargebacks": 1, "chargeback_amount": "30.00", "net_revenue": "120.00",
        "profit": "118.25", "roi": 6757.14, "epc": 40.0, "cr": 100.0});
    let local9 = json!({"date": "2026-03-09", "clicks": 1, "conversions": 0, "cost": "0.00",
        "gross_revenue": "0.00", "refunds": 0, "refund_amount": "0.00", "refund_rate": null,
        "chargebacks": 0, "chargeback_amount": "0.00", "net_revenue": "0.00", "profit": "0.00",
        "roi": null, "epc": 0.0, "cr": 0.0});
    assert_eq!(ny["rows"], json!([local8, local9]));
    let hours = stats(
        &server,
        &http,
        &format!("{range}&group_by=hour&columns=clicks&tz=America/New_York"),
    )
    .await;
    let labels: Vec<&str> = hours["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["hour"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        [
            "2026-03-08T01:00:00-05:00",
            "2026-03-08T03:00:00-04:00",
            "2026-03-08T23:00:00-04:00",
            "2026-03-09T01:00:00-04:00"
        ]
    );
    // Only March 8 in New York: the 23 hours from 05:00 UTC.
    let one = stats(
        &server,
        &http,
        "from=2026-03-08&to=2026-03-08&tz=America/New_York&columns=clicks",
    )
    .await;
    assert_eq!(one["totals"]["clicks"], 3);

    // Every grouping adds up to the totals.
    for (g, n) in [
        ("date", 2),
        ("hour", 4),
        ("source", 2),
        ("campaign", 2),
        ("link", 1),
        ("country", 2),
        ("device", 2),
    ] {
        let a = stats(&server, &http, &format!("{range}&group_by={g}")).await;
        let rows = a["rows"].as_array().unwrap();
        assert_eq!(rows.len(), n, "group_by={g}: {a}");
        assert_eq!(
            rows.iter()
                .map(|r| r["clicks"].as_i64().unwrap())
                .sum::<i64>(),
            4
        );
        assert_eq!(a["totals"], totals, "group_by={g}");
    }
    let two = stats(
        &server,
        &http,
        &format!("{range}&group_by=source,device&columns=clicks,net_revenue"),
    )
    .await;
    assert_eq!(
        two["rows"],
        json!([
            {"source": "fb", "device": "desktop", "clicks": 1, "net_revenue": "0.00"},
            {"source": "fb", "device": "mobile", "clicks": 1, "net_revenue": "120.00"},
            {"source": "gg", "device": "mobile", "clicks": 2, "net_revenue": "0.00"},
        ])
    );

    // Filters.
    let gg = stats(
        &server,
        &http,
        &format!("{range}&source=gg&columns=clicks,refund_rate,gross_revenue"),
    )
    .await;
    assert_eq!(
        gg["totals"],
        json!({"clicks": 2, "refund_rate": 100.0, "gross_revenue": "20.00"})
    );
    let none = stats(&server, &http, &format!("{range}&source=gg&country=US")).await;
    assert_eq!(none["rows"], json!([]));
    assert_eq!(none["totals"]["clicks"], 0);
    assert_eq!(none["totals"]["cr"], Value::Null);

    // An empty range.
    let empty = stats(
        &server,
        &http,
        "from=2020-01-01&to=2020-01-31&group_by=date",
    )
    .await;
    assert_eq!(empty["rows"], json!([]));
    assert_eq!(empty["totals"]["gross_revenue"], "0.00");
    assert_eq!(empty["totals"]["refund_rate"], Value::Null);

    // CSV says what JSON says.
    let q = format!("{range}&group_by=source,date");
    let json_rows = stats(&server, &http, &q).await["rows"].clone();
    let (status, csv) = get(&server, &http, &format!("/api/stats?{q}&format=csv")).await;
    assert_eq!(status, 200);
    let csv = csv.as_str().unwrap().to_string();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let mut n = 0;
    for (line, row) in lines.zip(json_rows.as_array().unwrap()) {
        let expected: Vec<String> = header
            .iter()
            .map(|h| match &row[*h] {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                v => v.to_string(),
            })
            .collect();
        assert_eq!(line.split(',').collect::<Vec<_>>(), expected);
        n += 1;
    }
    assert_eq!(n, json_rows.as_array().unwrap().len());

    // Refused parameters, each named.
    for (q, field) in [
        ("group_by=source,weekday", "group_by"),
        ("columns=clicks,margin", "columns"),
        ("from=2026-3-8", "from"),
        ("to=yesterday", "to"),
        ("from=2026-03-09&to=2026-03-08", "from"),
        ("from=0001-01-01&to=2026-03-08", "from"),
        ("tz=Mars/Olympus", "tz"),
        ("tz=Asia/Kolkata", "tz"),
        ("format=xml", "format"),
    ] {
        let (status, body) = get(&server, &http, &format!("/api/stats?{q}")).await;
        assert_eq!(
            (status, body["field"].as_str()),
            (400, Some(field)),
            "{q}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_cohorts_visitors_refunds_and_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let http = client();
    let server = history(tmp.path()).await;
    // The derived tables are written by the start-up recompute: wait for the live stats.
    stats(&server, &http, "from=2026-03-08&to=2026-03-09").await;

    // The key: none or a wrong one is refused on every query route; the docs are open.
    for path in [
        "/api/stats",
        "/api/cohorts",
        "/api/visitors/v1",
        "/api/refunds",
        "/api/refunds/unmatched",
        "/api/webhooks",
        "/api/webhooks/wh_1/deliveries",
    ] {
        let r = http.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let r = http
            .get(server.url(path))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    let r = http
        .post(server.url("/api/sql"))
        .json(&json!({"sql": "SELECT 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (_, doc) = get(&server, &http, "/api/openapi.json").await;

    // Read-only SQL: refusals.
    let sql = |text: &str| {
        let req = http
            .post(server.url("/api/sql"))
            .bearer_auth(KEY)
            .json(&json!({"sql": text}));
        async move {
            let r = req.send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    for refused in [
        "CREATE TABLE t AS SELECT 1",
        "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/etc/'",
        "CREATE VIEW v AS SELECT 1",
        "DROP TABLE clicks",
        "INSERT INTO clicks SELECT * FROM clicks",
        "DELETE FROM clicks",
        "COPY clicks TO '/tmp/x.parquet'",
        "SET datafusion.execution.batch_size = 1",
        "SELECT * FROM read_parquet('/etc/passwd')",
        "SELECT * FROM generate_series(1, 3)",
        "SELECT * FROM '/etc/passwd'",
        "SELECT 1; SELECT 2",
        "SELEC nonsense",
        "SELECT * INTO copied FROM clicks",
    ] {
        let (status, body) = sql(refused).await;
        assert_eq!(status, 400, "{refused}: {body}");
        assert_eq!(body["field"], "sql", "{refused}: {body}");
    }
    // A permitted query, and DuckDB's answer over the same files.
    let q = "SELECT source, sum(clicks) AS clicks, sum(gross_revenue) AS gross, sum(refund_amount) AS refunded \
             FROM stats_hourly GROUP BY source ORDER BY source";
    let (status, body) = sql(q).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["columns"],
        json!(["source", "clicks", "gross", "refunded"])
    );
    let ours: Vec<String> = body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{},{},{},{}",
                r["source"].as_str().unwrap(),
                r["clicks"],
                r["gross"].as_str().unwrap(),
                r["refunded"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(ours, ["fb,2,150.00,30.00", "gg,2,20.00,20.00"]);
    // DuckDB, with money printed the way netrev prints it (every digit, at least cents).
    let script = r#"
import duckdb, sys
from decimal import Decimal
def money(d):
    d = d.normalize()
    return format(d.quantize(Decimal("0.01")) if -d.as_tuple().exponent < 2 else d, "f")
rows = duckdb.sql(f"select source, sum(clicks), sum(gross_revenue), sum(refund_amount) from read_parquet('{sys.argv[1]}/tables/stats_hourly/*/*.parquet', hive_partitioning=true) group by source order by source").fetchall()
for s, c, g, r in rows:
    print(f"{s},{c},{money(g)},{money(r)}")
"#;
    let out = Command::new("python3")
        .args(["-c", script, data.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let duck: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(ours, duck);
    // CSV and Arrow answers, and the row limit.
    let csv = http
        .post(server.url("/api/sql?format=csv"))
        .bearer_auth(KEY)
        .json(&json!({"sql": q}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        csv.text().await.unwrap(),
        "source,clicks,gross,refunded\nfb,2,150.0000,30.0000\ngg,2,20.0000,20.0000\n"
    );
    let arrow = http
        .post(server.url("/api/sql"))
        .bearer_auth(KEY)
        .json(&json!({"sql": q, "format": "arrow"}))
        .send()
        .await
        .unwrap();
    let bytes = arrow.bytes().await.unwrap();
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes.to_vec()), None)
            .unwrap();
    let n: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(n, 2);

    // Cohorts: v1 (A1, then A3) and v2 start on March 8, v3 on March 9.
    let (status, c) = get(&server, &http, "/api/cohorts?max_age=14").await;
    assert_eq!(status, 200, "{c}");
    let first = &c["cohorts"][0];
    assert_eq!(
        (first["cohort"].as_str(), first["size"].as_i64()),
        (Some("2026-03-08"), Some(2))
    );
    assert_eq!(
        first["points"][0],
        json!({"age": 0, "gross": "170.00", "refunds": "0.00", "net": "170.00", "ltv": "85.00", "gross_ltv": "85.00"})
    );
    // Ages count from v1's first click (March 8, 06:30): A3's sale on March 9 at 04:00 is age 0,
    // the chargeback of March 20 age 12, the refund of March 21 age 13.
    assert_eq!(first["points"][11]["net"], "170.00");
    assert_eq!(first["points"][12]["net"], "140.00");
    assert_eq!(first["points"][13]["net"], "120.00");
    assert_eq!(first["points"][13]["ltv"], "60.00");
    let (_, weeks) = get(&server, &http, "/api/cohorts?granularity=week&max_age=3").await;
    assert_eq!(weeks["cohorts"][0]["cohort"], "2026-03-02");
    assert_eq!(weeks["cohorts"][1]["cohort"], "2026-03-09");
    for (q, field) in [
        ("granularity=year", "granularity"),
        ("max_age=999", "max_age"),
        ("from=x", "from"),
    ] {
        let (status, body) = get(&server, &http, &format!("/api/cohorts?{q}")).await;
        assert_eq!((status, body["field"].as_str()), (400, Some(field)), "{q}");
    }

    // A visitor and its refund history.
    let (status, v) = get(&server, &http, "/api/visitors/v1").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["clicks"], 2);
    assert_eq!(v["gross_revenue"], "170.00");
    assert_eq!(v["refund_amount"], "50.00");
    assert_eq!(v["net_revenue"], "120.00");
    let history = v["refund_history"].as_array().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(
        (
            history[0]["txid"].as_str(),
            history[0]["type"].as_str(),
            history[0]["conversion_txid"].as_str()
        ),
        (Some("R1"), Some("chargeback"), Some("T1"))
    );
    assert_eq!(
        history[1]["conversion_txid"], "T3",
        "no ref: the click's earliest conversion"
    );
    let (status, _) = get(&server, &http, "/api/visitors/nobody").await;
    assert_eq!(status, 404);

    // The refund log and the unmatched refunds.
    let (_, all) = get(&server, &http, "/api/refunds").await;
    let txids: Vec<&str> = all["refunds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["txid"].as_str().unwrap())
        .collect();
    assert_eq!(txids, ["R9", "R2", "R1"], "newest first");
    let (_, fb) = get(&server, &http, "/api/refunds?source=fb&type=chargeback").await;
    assert_eq!(fb["refunds"].as_array().unwrap().len(), 1);
    let (_, day) = get(&server, &http, "/api/refunds?from=2026-03-21&to=2026-03-21").await;
    assert_eq!(day["refunds"][0]["txid"], "R2");
    let (_, lost) = get(&server, &http, "/api/refunds/unmatched").await;
    assert_eq!(
        lost["refunds"],
        json!([{"ts": lost["refunds"][0]["ts"], "cid": "ZZ", "vid": null,
        "source": null, "amount": "5.00", "type": "customer_request", "txid": "R9", "ref": null,
        "linked": false, "conversion_txid": null, "conversion_amount": null, "over_refund": false,
        "unmatched": true}])
    );
    let (status, body) = get(&server, &http, "/api/refunds?type=refund").await;
    assert_eq!((status, body["field"].as_str()), (400, Some("type")));
    // Every described route is served (not 404 for an unknown path, not 405). Last: the
    // click routes record clicks.
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let url = server.url(
                &path
                    .replace("{vid}", "v1")
                    .replace("{id}", "wh_none")
                    .replace("{slug}", "none")
                    .replace("{message}", "msg_none")
                    .replace("{network}", "jvzoo"),
            );
            let req = match method.as_str() {
                "get" => http.get(url),
                "post" => http.post(url).json(&json!({"sql": "SELECT 1"})),
                // 404 names the missing endpoint or link, unlike an unknown route's empty 404.
                "delete" | "patch" => {
                    let req = if method == "delete" {
                        http.delete(url)
                    } else {
                        http.patch(url).json(&json!({}))
                    };
                    let r = req.bearer_auth(KEY).send().await.unwrap();
                    assert_eq!(r.status(), 404, "{method} {path}");
                    let body: Value = r.json().await.unwrap();
                    assert!(
                        ["id", "slug"].contains(&body["field"].as_str().unwrap()),
                        "{path}"
                    );
                    continue;
                }
                "head" => {
                    let r = http.head(url).send().await.unwrap();
                    assert_eq!(r.status(), 404, "{method} {path}");
                    continue;
                }
                other => panic!("unexpected method {other}"),
            };
            let r = req.bearer_auth(KEY).send().await.unwrap();
            let status = r.status().as_u16();
            assert_ne!(status, 405, "{method} {path}");
            if status == 404 {
                // Served, and saying which of the path's resources is missing.
                let body: Value = r.json().await.unwrap();
                assert!(body["field"].is_string(), "{method} {path}: {body}");
            }
        }
    }
}

#[test]
fn a_public_address_needs_an_api_key() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_netrev"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data"])
        .arg(tmp.path().join("data"))
        .env("NETREV_LOG", "warn")
        .env_remove("NETREV_API_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("without an API key"));
}

/// Settings → Webhooks: endpoints are created with a secret shown once, listed without it,
/// kept across restarts and removed; bad URLs and events and private targets are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let http = client();
    let server = Server::start(&data, &["--api-key", KEY]);
    let post = |body: Value| {
        let req = http
            .post(server.url("/api/webhooks"))
            .bearer_auth(KEY)
            .json(&body);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, created) = post(json!({"url": "https://crm.example.com/hooks/refunds",
        "events": ["refund", "refund"], "description": "CRM win-back"}))
    .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().unwrap();
    assert!(
        secret.starts_with("whsec_") && secret.len() > 40,
        "{secret}"
    );
    assert_eq!(created["events"], json!(["refund"]));
    let id = created["id"].as_str().unwrap().to_string();
    for (body, field) in [
        (
            json!({"url": "ftp://x.example/", "events": ["refund"]}),
            "url",
        ),
        (json!({"url": "not a url", "events": ["refund"]}), "url"),
        (json!({"url": "https://x.example/", "events": []}), "events"),
        (
            json!({"url": "https://x.example/", "events": ["sale"]}),
            "events",
        ),
        (
            json!({"url": "http://127.0.0.1:9/", "events": ["refund"]}),
            "url",
        ),
        (
            json!({"url": "http://[::ffff:10.0.0.1]/", "events": ["refund"]}),
            "url",
        ),
        (json!({"events": ["refund"]}), "body"),
    ] {
        let (status, answer) = post(body.clone()).await;
        assert_eq!(
            (status, answer["field"].as_str()),
            (400, Some(field)),
            "{body}"
        );
    }
    let r = http.get(server.url("/api/webhooks")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    server.kill9();

    // Kept across a crash; the list never shows the secret.
    let server = Server::start(&data, &["--api-key", KEY]);
    let (_, list) = get(&server, &http, "/api/webhooks").await;
    assert_eq!(list["webhooks"].as_array().unwrap().len(), 1);
    assert_eq!(list["webhooks"][0]["id"], id.as_str());
    assert_eq!(list["webhooks"][0]["description"], "CRM win-back");
    assert!(list["webhooks"][0].get("secret").is_none(), "{list}");
    let r = http
        .delete(server.url(&format!("/api/webhooks/{id}")))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (_, list) = get(&server, &http, "/api/webhooks").await;
    assert_eq!(list["webhooks"], json!([]));
    server.stop();

    // Private targets only with the development switch.
    let server = Server::start(&data, &["--api-key", KEY, "--webhooks-allow-private"]);
    let r = http
        .post(server.url("/api/webhooks"))
        .bearer_auth(KEY)
        .json(&json!({"url": "http://127.0.0.1:9/hook", "events": ["conversion", "refund"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

/// The cells of one CSV line (RFC 4180 quoting; no line breaks inside the cells here).
fn csv_cells(line: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                cells.last_mut().unwrap().push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => cells.push(String::new()),
            c => cells.last_mut().unwrap().push(c),
        }
    }
    cells
}

/// CSV injection (OWASP): sources that a spreadsheet would run as formulas come back from the
/// stats CSV, the SQL CSV and `netrev sql --format csv` with a leading `'`; money, negative
/// included, is written as the number it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_answers_neutralise_formula_cells() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let http = client();
    let server = Server::start(&data, &["--api-key", KEY]);
    let hyperlink = r#"=HYPERLINK("http://evil","x")"#;
    for source in [hyperlink, "@SUM(1)"] {
        let r: Value = http
            .get(server.url("/api/click"))
            .query(&[("source", source), ("cost", "5")])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["ok"], true, "{r}");
    }
    let no_formula = |csv: &str| {
        for line in csv.lines() {
            for cell in csv_cells(line) {
                assert!(!cell.starts_with(['=', '@']), "{cell:?} in {csv}");
            }
        }
    };

    // The stats CSV: the source cells neutralised, profit -5.00 as it is.
    let (status, csv) = get(
        &server,
        &http,
        "/api/stats?format=csv&group_by=source&columns=clicks,profit",
    )
    .await;
    assert_eq!(status, 200, "{csv}");
    let csv = csv.as_str().unwrap();
    assert_eq!(
        csv,
        "source,clicks,profit\n\
         \"'=HYPERLINK(\"\"http://evil\"\",\"\"x\"\")\",1,-5.00\n\
         '@SUM(1),1,-5.00\n"
    );
    no_formula(csv);

    // The SQL CSV over the raw clicks: text (the dictionary-encoded `date` partition too)
    // neutralised, Decimal128 money not.
    server.wait_flushed(&http).await;
    let q = "SELECT source, cost, -cost AS negative, date FROM clicks ORDER BY source";
    let expected = |csv: &str| {
        let rows: Vec<Vec<String>> = csv.lines().map(csv_cells).collect();
        assert_eq!(rows.len(), 3, "{csv}");
        assert_eq!(rows[0], ["source", "cost", "negative", "date"]);
        for (row, source) in rows[1..].iter().zip([hyperlink, "@SUM(1)"]) {
            assert_eq!(
                row[..3],
                [format!("'{source}"), "5.0000".into(), "-5.0000".into()],
                "{csv}"
            );
            assert_eq!(row[3].len(), "YYYY-MM-DD".len(), "{csv}");
        }
        assert!(
            csv.contains("\"'=HYPERLINK(\"\"http://evil\"\",\"\"x\"\")\","),
            "{csv}"
        );
        no_formula(csv);
    };
    let r = http
        .post(server.url("/api/sql?format=csv"))
        .bearer_auth(KEY)
        .json(&json!({"sql": q}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    expected(&r.text().await.unwrap());
    server.stop();
    expected(&crate::jobs::sql(&data, q));
}

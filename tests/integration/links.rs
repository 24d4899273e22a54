//! Tracking links end to end, with the real binary: a link made through the API, visits to
//! `/r/{slug}` answered 302 to the offer with the click ID in it, the click credited to the
//! link's source and campaign when a conversion names it, the visitor cookie, macros
//! URL-encoded, the country from a MaxMind database the test builds itself, 404/410, a
//! `javascript:` destination refused, and no click lost to kill -9 right after its 302.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Server, client, postback, read_table};
use netrev_storage::{Event, Table};

/// A client that does not follow redirects (the 302 is what is tested).
fn visitor() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";

/// The query string parameters of `url`, decoded.
fn query(url: &str) -> Vec<(String, String)> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn param(url: &str, name: &str) -> String {
    query(url)
        .into_iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no {name} in {url}"))
        .1
}

/// A visit: its status, `Location` and the `netrev_vid` the answer sets.
async fn visit(
    server: &Server,
    http: &reqwest::Client,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Option<String>, Option<String>) {
    let mut req = http.get(server.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let location = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    let cookie = r
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string());
    if let Some(c) = &cookie {
        assert!(
            c.contains("HttpOnly") && c.contains("SameSite=Lax") && c.contains("Max-Age=31536000"),
            "{c}"
        );
    }
    let vid = cookie.and_then(|c| {
        c.split(';')
            .next()
            .and_then(|kv| kv.strip_prefix("netrev_vid="))
            .map(str::to_string)
    });
    (r.status().as_u16(), location, vid)
}

async fn create(server: &Server, http: &reqwest::Client, body: Value) -> (u16, Value) {
    let r = http
        .post(server.url("/api/links"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// A MaxMind DB (format 2.0, IPv4, 24-bit records) mapping each network to
/// `{"country": {"iso_code": …}}`, built by hand from the format's specification.
fn geoip_db(networks: &[(Ipv4Addr, u8, &str)]) -> Vec<u8> {
    // Data section: one map per network.
    fn string(out: &mut Vec<u8>, s: &str) {
        assert!(s.len() < 29);
        out.push((2 << 5) | s.len() as u8);
        out.extend(s.as_bytes());
    }
    fn map_header(out: &mut Vec<u8>, n: usize) {
        out.push((7 << 5) | n as u8);
    }
    fn uint(out: &mut Vec<u8>, kind: u8, v: u64) {
        let bytes: Vec<u8> = v
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        if kind <= 7 {
            out.push((kind << 5) | bytes.len() as u8);
        } else {
            out.push(bytes.len() as u8);
            out.push(kind - 7);
        }
        out.extend(bytes);
    }
    let mut data = Vec::new();
    let mut offsets = Vec::new();
    for (_, _, code) in networks {
        offsets.push(data.len());
        map_header(&mut data, 1);
        string(&mut data, "country");
        map_header(&mut data, 1);
        string(&mut data, "iso_code");
        string(&mut data, code);
    }
    // Search tree: node 0 is the root; a record is a node, data, or nothing.
    #[derive(Clone, Copy)]
    enum Record {
        Empty,
        Node(usize),
        Data(usize),
    }
    let mut nodes: Vec<[Record; 2]> = vec![[Record::Empty; 2]];
    for ((net, len, _), offset) in networks.iter().zip(&offsets) {
        let bits = u32::from(*net);
        let mut node = 0;
        for depth in 0..*len {
            let bit = ((bits >> (31 - depth)) & 1) as usize;
            if depth + 1 == *len {
                nodes[node][bit] = Record::Data(*offset);
            } else {
                node = match nodes[node][bit] {
                    Record::Node(n) => n,
                    _ => {
                        nodes.push([Record::Empty; 2]);
                        let n = nodes.len() - 1;
                        nodes[node][bit] = Record::Node(n);
                        n
                    }
                };
            }
        }
    }
    let count = nodes.len();
    let mut out = Vec::new();
    for node in &nodes {
        for record in node {
            let v = match *record {
                Record::Empty => count,
                Record::Node(n) => n,
                Record::Data(off) => count + 16 + off,
            };
            out.extend(&(v as u32).to_be_bytes()[1..]);
        }
    }
    out.extend([0u8; 16]);
    out.extend(&data);
    out.extend(b"\xAB\xCD\xEFMaxMind.com");
    map_header(&mut out, 9);
    string(&mut out, "node_count");
    uint(&mut out, 6, count as u64);
    string(&mut out, "record_size");
    uint(&mut out, 5, 24);
    string(&mut out, "ip_version");
    uint(&mut out, 5, 4);
    string(&mut out, "database_type");
    string(&mut out, "netrev-test-country");
    string(&mut out, "languages");
    out.extend([0, 11 - 7]); // an empty array
    string(&mut out, "binary_format_major_version");
    uint(&mut out, 5, 2);
    string(&mut out, "binary_format_minor_version");
    uint(&mut out, 5, 0);
    string(&mut out, "build_epoch");
    uint(&mut out, 9, 1_700_000_000);
    string(&mut out, "description");
    map_header(&mut out, 0);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_records_its_click_redirects_and_credits_the_conversion() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let db = tmp.path().join("countries.mmdb");
    std::fs::write(
        &db,
        geoip_db(&[
            (Ipv4Addr::new(81, 2, 69, 0), 24, "GB"),
            (Ipv4Addr::new(5, 9, 0, 0), 16, "DE"),
        ]),
    )
    .unwrap();
    let args = [
        "--geoip-db",
        db.to_str().unwrap(),
        "--geoip-header",
        "CF-IPCountry",
        "--trusted-proxy",
        "127.0.0.1",
    ];
    let server = Server::start(&data, &args);
    let http = client();
    let browser = visitor();

    // Created through the API; a javascript: or macro-hosted destination is refused.
    let (status, link) = create(
        &server,
        &http,
        json!({"slug": "spring", "url": "https://offer.example/lp?clickid={cid}&s1=[sub1]&v={vid}&src={source}",
               "source": "fb", "campaign": "spring-sale", "cost": "0.25"}),
    )
    .await;
    assert_eq!(status, 201, "{link}");
    assert_eq!(link["path"], "/r/spring");
    assert_eq!(link["cost"], "0.25");
    assert_eq!(link["enabled"], true);
    for (bad, field) in [
        (json!({"url": "javascript:alert(1)"}), "url"),
        (json!({"url": "https://{sub1}/"}), "url"),
        (
            json!({"url": "https://x.example/", "slug": "no spaces"}),
            "slug",
        ),
        (json!({"url": "https://x.example/", "cost": "-1"}), "cost"),
        (json!({"url": "https://x.example/", "cost": 0.1}), "cost"),
        (
            json!({"url": "https://x.example/", "cost": "1000.01"}),
            "cost",
        ),
        (
            json!({"url": "https://x.example/", "colour": "red"}),
            "body",
        ),
        (json!({"source": "fb"}), "url"),
    ] {
        let (status, e) = create(&server, &http, bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {e}");
        assert_eq!(e["field"], field, "{bad}: {e}");
    }
    let (status, e) = create(
        &server,
        &http,
        json!({"slug": "spring", "url": "https://x.example/"}),
    )
    .await;
    assert_eq!(status, 409, "{e}");

    // A mobile visit from Britain (through the trusted proxy) with sub1 = "a&b=c".
    let (status, location, vid) = visit(
        &server,
        &browser,
        "/r/spring?sub1=a%26b%3Dc&utm_x=ignored",
        &[("user-agent", IPHONE), ("x-forwarded-for", "81.2.69.160")],
    )
    .await;
    assert_eq!(status, 302);
    let location = location.unwrap();
    assert!(
        location.starts_with("https://offer.example/lp?clickid="),
        "{location}"
    );
    assert!(location.contains("&s1=a%26b%3Dc&"), "{location}");
    let cid = param(&location, "clickid");
    let vid = vid.expect("the visitor cookie is set");
    assert_eq!(param(&location, "v"), vid);
    assert_eq!(param(&location, "s1"), "a&b=c");
    assert_eq!(param(&location, "src"), "fb");

    // The cookie comes back: the same visitor. The header's country wins over the database.
    let cookie = format!("netrev_vid={vid}");
    let (status, second, again) = visit(
        &server,
        &browser,
        "/r/spring?source=native",
        &[
            ("cookie", cookie.as_str()),
            ("cf-ipcountry", "fr"),
            ("x-forwarded-for", "5.9.1.1"),
        ],
    )
    .await;
    assert_eq!(status, 302);
    let second = second.unwrap();
    assert_eq!(again.as_deref(), Some(vid.as_str()));
    assert_eq!(param(&second, "v"), vid);
    assert_eq!(param(&second, "src"), "native");
    assert_ne!(param(&second, "clickid"), cid);

    // A conversion naming the first click is credited to the link's source and campaign.
    postback(
        &server,
        &http,
        &format!("/api/conversion?cid={cid}&amount=40"),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = http
            .get(server.url("/api/stats?group_by=source,campaign,link,country,device"))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            let s: Value = r.json().await.unwrap();
            let rows = s["rows"].as_array().unwrap().clone();
            let fb = rows.iter().find(|r| r["source"] == "fb");
            if let Some(fb) = fb
                && fb["conversions"] == 1
            {
                assert_eq!(fb["campaign"], "spring-sale", "{s}");
                assert_eq!(fb["link"], "spring", "{s}");
                assert_eq!(fb["country"], "GB", "{s}");
                assert_eq!(fb["device"], "mobile", "{s}");
                assert_eq!(fb["clicks"], 1, "{s}");
                assert_eq!(fb["cost"], "0.25", "{s}");
                assert_eq!(fb["gross_revenue"], "40.00", "{s}");
                let native = rows.iter().find(|r| r["source"] == "native").unwrap();
                assert_eq!(native["country"], "FR", "{s}");
                assert_eq!(native["campaign"], "spring-sale", "{s}");
                break;
            }
        }
        assert!(Instant::now() < deadline, "the conversion was not credited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A malformed override is 400 and records nothing; other parameters are ignored however
    // malformed (an ad platform's additions never cost a visitor).
    for bad in ["cost=abc", "cost=1000.0001", "sub1=%01"] {
        let path = format!("/r/spring?{bad}");
        assert_eq!(visit(&server, &browser, &path, &[]).await.0, 400, "{bad}");
    }
    let (status, third, _) = visit(
        &server,
        &browser,
        "/r/spring?fbclid=%zz&utm=a&utm=b&sub2=x&sub2=y",
        &[("cookie", cookie.as_str())],
    )
    .await;
    assert_eq!(status, 302);
    assert!(third.unwrap().contains("clickid="));

    // HEAD records nothing and sets no cookie; unknown is 404, disabled 410, deleted 404.
    let r = browser
        .head(server.url("/r/spring?sub1=h"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert!(r.headers().get("set-cookie").is_none());
    let location = r.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with("https://offer.example/lp?clickid=&s1=h&v=&src=fb"),
        "{location}"
    );
    assert_eq!(visit(&server, &browser, "/r/nope", &[]).await.0, 404);
    // PATCH: null clears a field (cost: back to 0); a slug in the body is refused.
    let r = http
        .patch(server.url("/api/links/spring"))
        .json(&json!({"source": null, "cost": null, "sub3": "fixed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let changed: Value = r.json().await.unwrap();
    assert_eq!(changed["source"], Value::Null, "{changed}");
    assert_eq!(changed["cost"], "0.00", "{changed}");
    assert_eq!(changed["sub3"], "fixed", "{changed}");
    assert_eq!(changed["campaign"], "spring-sale", "{changed}");
    let r = http
        .patch(server.url("/api/links/spring"))
        .json(&json!({"slug": "autumn"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .patch(server.url("/api/links/spring"))
        .json(&json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(visit(&server, &browser, "/r/spring", &[]).await.0, 410);
    let r = http
        .delete(server.url("/api/links/spring"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(visit(&server, &browser, "/r/spring", &[]).await.0, 404);

    // Exactly the three visits became clicks, with what the link and the visit said.
    server.stop();
    let clicks: Vec<_> = read_table(&data, Table::Clicks)
        .into_iter()
        .filter_map(|e| match e {
            Event::Click(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(clicks.len(), 3, "{clicks:?}");
    assert!(
        clicks.iter().any(|c| c.subs[1].as_deref() == Some("x")),
        "the first of a repeated override counts: {clicks:?}"
    );
    let first = clicks.iter().find(|c| c.cid == cid).unwrap();
    assert_eq!(first.vid, vid);
    assert_eq!(first.link.as_deref(), Some("spring"));
    assert_eq!(first.subs[0].as_deref(), Some("a&b=c"));
    assert_eq!(first.device.as_deref(), Some("mobile"));
    assert!(clicks.iter().all(|c| c.vid == vid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_right_after_a_redirect_loses_no_click() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Nothing is flushed to Parquet before the kill: every click is in the log only.
    let server = Server::start(
        &data,
        &["--flush-interval-ms", "3600000", "--links-max", "1"],
    );
    let http = client();
    let browser = visitor();
    let (status, _) = create(
        &server,
        &http,
        json!({"slug": "crash", "url": "https://offer.example/?id={cid}"}),
    )
    .await;
    assert_eq!(status, 201);
    // One more than --links-max.
    let (status, e) = create(&server, &http, json!({"url": "https://offer.example/"})).await;
    assert_eq!(status, 409, "{e}");
    let mut cids = Vec::new();
    for _ in 0..20 {
        let (status, location, _) = visit(&server, &browser, "/r/crash", &[]).await;
        assert_eq!(status, 302);
        cids.push(param(&location.unwrap(), "id"));
    }
    server.kill9();
    let server = Server::start(&data, &[]);
    // The link survived the restart too.
    assert_eq!(visit(&server, &browser, "/r/crash", &[]).await.0, 302);
    server.stop();
    let stored: Vec<String> = read_table(&data, Table::Clicks)
        .into_iter()
        .filter_map(|e| match e {
            Event::Click(c) => Some(c.cid),
            _ => None,
        })
        .collect();
    for cid in &cids {
        assert_eq!(
            stored.iter().filter(|s| *s == cid).count(),
            1,
            "click {cid} lost or doubled"
        );
    }
    assert_eq!(stored.len(), 21);
}

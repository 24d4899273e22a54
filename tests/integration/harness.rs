//! Starting the real server and reading what it stored.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use netrev_storage::Event;
use netrev_storage::model::{self, Table};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// A running `netrev serve`, killed (SIGKILL) when dropped. Its HTTP helpers are those of
/// [`Endpoint`].
pub struct Server {
    child: Child,
    endpoint: Endpoint,
}

impl std::ops::Deref for Server {
    type Target = Endpoint;

    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl Server {
    pub fn start(data: &Path, extra: &[&str]) -> Server {
        Server::start_env(data, extra, &[])
    }

    /// Like [`Server::start`] with extra environment variables (e.g. `NETREV_FAILPOINTS`).
    /// Flushes every 200 ms unless `extra` sets `--flush-interval-ms`.
    pub fn start_env(data: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        Server::spawn(data, extra, env, Stdio::inherit())
    }

    /// Like [`Server::start_env`], its log (standard error) written to `log`.
    pub fn start_logged(data: &Path, extra: &[&str], env: &[(&str, &str)], log: &Path) -> Server {
        let file = std::fs::File::create(log).expect("create the log file");
        Server::spawn(data, extra, env, Stdio::from(file))
    }

    fn spawn(data: &Path, extra: &[&str], env: &[(&str, &str)], stderr: Stdio) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_netrev"));
        cmd.arg("serve")
            .arg("--data")
            .arg(data)
            .args(["--listen", "127.0.0.1:0"]);
        if !extra.contains(&"--flush-interval-ms") {
            cmd.args(["--flush-interval-ms", "200"]);
        }
        cmd.env("NETREV_LOG", "warn");
        let mut child = cmd
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn netrev");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read stdout");
        let base = line
            .trim()
            .strip_prefix("netrev listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Server {
            child,
            endpoint: Endpoint { base },
        }
    }

    /// The server's process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no flush, no cleanup, like a crash.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    /// SIGTERM and wait for the graceful flush.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "netrev exited with {status}");
    }
}

/// Where a service answers HTTP, and the requests every test makes of it.
pub struct Endpoint {
    pub base: String,
}

impl Endpoint {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn health(&self, client: &reqwest::Client) -> serde_json::Value {
        client
            .get(self.url("/api/health"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits until the live stats are built (`/api/stats` answers 503 while they are).
    pub async fn wait_serving(&self, client: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while client
            .get(self.url("/api/stats"))
            .send()
            .await
            .unwrap()
            .status()
            == 503
        {
            assert!(Instant::now() < deadline, "live stats never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Records a click with the given query string; returns its (cid, vid).
    pub async fn click(&self, client: &reqwest::Client, query: &str) -> (String, String) {
        let r: serde_json::Value = client
            .get(self.url(&format!("/api/click?{query}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["ok"], true, "{r}");
        (
            r["cid"].as_str().unwrap().to_string(),
            r["vid"].as_str().unwrap().to_string(),
        )
    }

    /// Waits until the live state has taken every event acknowledged so far (an
    /// acknowledgement means durable in the log; the live thread applies it just after).
    pub async fn wait_live(&self, client: &reqwest::Client) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let h = self.health(client).await;
            if h["live"]["received_seq"] == h["ingest"]["durable_seq"] {
                return h;
            }
            assert!(
                Instant::now() < deadline,
                "the live state did not catch up: {h}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until everything acknowledged is in Parquet.
    pub async fn wait_flushed(&self, client: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let h = self.health(client).await;
            let ingest = &h["ingest"];
            if ingest["buffered_events"] == 0 && ingest["flushed_seq"] == ingest["durable_seq"] {
                return;
            }
            assert!(Instant::now() < deadline, "not flushed in time: {h}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The whole service running inside the test's process ([`netrev_server::spawn`]) on an
/// in-memory data root with a manual clock: for tests that need no real disk and no kill -9.
/// Its flags and defaults are those of `netrev serve` ([`netrev::cli::serve_config`]); the
/// write-ahead log is in a temporary directory. Its HTTP helpers are those of [`Endpoint`].
pub struct Service {
    endpoint: Endpoint,
    /// The data root, to read what the service stored.
    pub store: netrev_storage::Store,
    /// The service's clock: the time events are received at; moved by the test only.
    pub clock: netrev_storage::Clock,
    running: netrev_server::InProcess,
    wal: tempfile::TempDir,
    /// The flags it was started with.
    extra: Vec<String>,
}

impl std::ops::Deref for Service {
    type Target = Endpoint;

    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

/// Where a [`Service`]'s clock starts: 2026-03-10 12:00:00 UTC.
pub fn service_epoch() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(1_773_144_000, 0).unwrap()
}

impl Service {
    /// Starts the service with `netrev serve`'s flags `extra`, the clock at
    /// [`service_epoch`]; flushes every 200 ms unless `extra` sets `--flush-interval-ms`.
    pub async fn start(extra: &[&str]) -> Service {
        let clock = netrev_storage::Clock::manual(service_epoch());
        let memory = std::sync::Arc::new(object_store::memory::InMemory::new());
        let store = netrev_storage::Store::from_object_store(memory, "memory://tests")
            .with_clock(clock.clone());
        let args: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        Service::spawn(store, tempfile::tempdir().unwrap(), args).await
    }

    async fn spawn(
        store: netrev_storage::Store,
        wal: tempfile::TempDir,
        extra: Vec<String>,
    ) -> Service {
        let mut args: Vec<String> = [
            "--data",
            "memory://tests",
            "--listen",
            "127.0.0.1:0",
            "--wal-dir",
            wal.path().to_str().unwrap(),
        ]
        .map(String::from)
        .into();
        if !extra.iter().any(|a| a == "--flush-interval-ms") {
            args.extend(["--flush-interval-ms".into(), "200".into()]);
        }
        args.extend(extra.iter().cloned());
        let config = netrev::cli::serve_config(&args).expect("netrev serve's flags");
        let running = netrev_server::spawn(config, store.clone())
            .await
            .expect("start the service in process");
        Service {
            endpoint: Endpoint {
                base: format!("http://{}", running.addr),
            },
            clock: store.clock().clone(),
            store,
            running,
            wal,
            extra,
        }
    }

    /// Stops it and starts it again on the same data root, log and flags, as a clean restart
    /// of `netrev serve` would.
    pub async fn restart(self) -> Service {
        let (store, wal, extra) = (self.store.clone(), self.wal, self.extra);
        self.running
            .stop()
            .await
            .expect("the service stopped cleanly");
        Service::spawn(store, wal, extra).await
    }

    /// Stops it as SIGTERM would: everything acknowledged is flushed first.
    pub async fn stop(self) {
        self.running
            .stop()
            .await
            .expect("the service stopped cleanly");
    }

    /// Every event the service stored in a raw table.
    pub async fn read_table(&self, table: Table) -> Vec<Event> {
        let mut out = Vec::new();
        for file in self.store.raw_files(table).await.unwrap() {
            out.extend(self.store.read_events(table, &file.location).await.unwrap());
        }
        out
    }
}

/// Sends the postback `path` (with its query) and checks it is acknowledged (200).
pub async fn postback(server: &Endpoint, http: &reqwest::Client, path: &str) {
    let r = http.get(server.url(path)).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}: {}", r.text().await.unwrap());
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Every Parquet file of a raw table.
pub fn raw_files(data: &Path, table: Table) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let root = data.join("events").join(table.name());
    let Ok(parts) = std::fs::read_dir(&root) else {
        return out;
    };
    for part in parts {
        let part = part.unwrap().path();
        for f in std::fs::read_dir(&part).unwrap() {
            let f = f.unwrap().path();
            if f.extension().is_some_and(|e| e == "parquet") {
                out.push(f);
            }
        }
    }
    out.sort();
    out
}

/// Every event stored in a raw table, read straight from the Parquet files.
pub fn read_table(data: &Path, table: Table) -> Vec<Event> {
    let mut out = Vec::new();
    for f in raw_files(data, table) {
        let file = std::fs::File::open(&f).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            out.extend(model::from_batch(table, &batch.unwrap()).unwrap());
        }
    }
    out
}

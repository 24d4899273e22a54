//! `netrev recompute --engine ballista|df://…`: the SQL jobs on Ballista write byte for byte
//! the derived tables of the local engine, in a Ballista cluster inside the netrev process and
//! in one running as a separate process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::jobs::{CLICKS, CONVERSIONS, REFUNDS, netrev, ok, write};

/// A generated history plus the hand-written edge cases of the job tests, and a click ID
/// imported twice with different attributes (so the duplicate-click ranking has work).
fn history(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    let args = ["generate", "--clicks", "3000", "--days", "6", "--seed", "3"];
    ok(netrev(&data, &args));
    let again = "cid,vid,ts,source,campaign,link,country,device,cost\n\
                 A-1,v7,2026-11-01T10:15:00Z,gg,c9,l9,US,desktop,0.30\n";
    for (table, name, text) in [
        ("clicks", "clicks.csv", CLICKS),
        ("clicks", "again.csv", again),
        ("conversions", "conversions.csv", CONVERSIONS),
        ("refunds", "refunds.csv", REFUNDS),
    ] {
        let f = write(dir, name, text);
        ok(netrev(
            &data,
            &["import", "--table", table, f.to_str().unwrap()],
        ));
    }
    data
}

/// `netrev recompute --engine ENGINE ARGS…` on `data`, which must succeed. A recompute the
/// scheduler loses track of gives up at its timeout and fails the test.
pub fn recompute_on(data: &Path, engine: &str, args: &[&str]) {
    let mut all = vec!["recompute", "--engine", engine, "--timeout-secs", "90"];
    all.extend_from_slice(args);
    ok(netrev(data, &all));
}

/// [`history`] in `dir/data`, and a copy of it in `dir/NAME` (both not yet recomputed).
fn history_and_copy(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let data = history(dir);
    let copy = dir.join(name);
    copy_dir(&data, &copy);
    (data, copy)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Every file under `tables/` (relative path → bytes), lock files aside.
fn derived_files(data: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if !path
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .ends_with(".lock")
            {
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                out.push((rel, std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(&data.join("tables"), data, &mut out);
    out.sort();
    out
}

fn assert_same_tables(local: &Path, other: &Path, engine: &str) {
    let (want, got) = (derived_files(local), derived_files(other));
    let names = |files: &[(String, Vec<u8>)]| files.iter().map(|f| f.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(&got), names(&want), "{engine}: the same files");
    for table in [
        "stats_hourly",
        "cohort_ltv",
        "visitors",
        "refund_links",
        "cohort_sources",
    ] {
        assert!(
            want.iter()
                .any(|(n, _)| n.starts_with(&format!("tables/{table}/"))),
            "{table} written"
        );
    }
    for ((name, a), (_, b)) in want.iter().zip(&got) {
        assert!(a == b, "{engine}: {name} differs from the local engine's");
    }
}

#[test]
fn ballista_in_process_writes_the_same_bytes_as_the_local_engine() {
    let tmp = tempfile::tempdir().unwrap();
    let (local, other) = history_and_copy(tmp.path(), "ballista");
    ok(netrev(&local, &["recompute"]));
    recompute_on(&other, "ballista", &[]);
    assert_same_tables(&local, &other, "ballista");
    assert!(
        !other.join("tables/.work").exists(),
        "the scratch Parquet of the intermediate views is removed"
    );
    // A by-range recompute after more clicks arrive: again the same partitions.
    let late = "cid,vid,ts,source,campaign,link,country,device,cost\n\
                L-1,v1,2026-11-02T09:00:00Z,fb,c1,l1,DE,mobile,0.50\n";
    let f = write(tmp.path(), "late.csv", late);
    for data in [&local, &other] {
        ok(netrev(
            data,
            &["import", "--table", "clicks", f.to_str().unwrap()],
        ));
    }
    let range = ["--from", "2026-11-02", "--to", "2026-11-02"];
    ok(netrev(&local, &[&["recompute"][..], &range].concat()));
    recompute_on(&other, "ballista", &range);
    assert_same_tables(&local, &other, "ballista, by range");
}

/// `netrev ballista-cluster` (a scheduler and an executor) as a process of its own.
struct Cluster(Child);

impl Cluster {
    /// Starts one; returns it and its scheduler's `df://` address.
    fn start(args: &[&str]) -> (Cluster, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_netrev"))
            .arg("ballista-cluster")
            .args(args)
            .env("NETREV_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let cluster = Cluster(child);
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
        let url = line.trim().to_string();
        assert!(url.starts_with("df://localhost:"), "{line:?}");
        (cluster, url)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_ballista_cluster_in_another_process_writes_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let (local, other) = history_and_copy(tmp.path(), "cluster");
    let (_cluster, url) = Cluster::start(&[]);
    let url = url.as_str();
    ok(netrev(&local, &["recompute"]));
    recompute_on(&other, url, &[]);
    assert_same_tables(&local, &other, url);

    // A scheduler that is not there is a clear error, and nothing is written.
    let third = tmp.path().join("third");
    copy_dir(&local, &third);
    std::fs::remove_dir_all(third.join("tables")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = netrev(
        &third,
        &["recompute", "--engine", &format!("df://127.0.0.1:{port}")],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("recompute failed"), "{err}");
    assert!(!third.join("tables/visitors").exists());
}

/// Ballista queues a job while its cluster has no executor: `--timeout-secs` ends the wait.
#[test]
fn a_recompute_on_a_cluster_without_executors_gives_up_at_its_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let data = history(tmp.path());
    let (_cluster, url) = Cluster::start(&["--no-executor"]);
    let started = std::time::Instant::now();
    let out = netrev(
        &data,
        &["recompute", "--engine", &url, "--timeout-secs", "3"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gave up after 3 s"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    assert!(!data.join("tables/visitors").exists());
    assert!(
        !data.join("tables/.work").exists(),
        "a recompute that gives up removes its scratch"
    );
}

#[test]
fn an_unknown_engine_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = netrev(tmp.path(), &["recompute", "--engine", "spark"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not an engine"), "{err}");
}

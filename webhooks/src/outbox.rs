//! The webhook outbox: every message accepted for delivery, and every attempt, in an
//! append-only log on the node's local disk (`webhooks.outbox` in the write-ahead log's
//! directory), fsynced before anything depends on it. A message in the outbox survives kill -9
//! and is sent after a restart; an attempt that was under way when the process died is made
//! again (at least once).
//!
//! Each line is one JSON record: a message enqueued for one endpoint, an attempt and what
//! follows it, or a manual "retry now". Opening replays the lines (a torn last line, from a
//! crash mid-write, is dropped), then rewrites the log with only what is kept: undelivered
//! messages, and finished ones for [`KEEP_FINISHED`] (the deliveries API shows them, and a
//! message announced again, e.g. after the live stats are rebuilt, is recognised and not sent
//! twice). The log is rewritten the same way whenever it has grown by [`COMPACT_BYTES`].

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long finished deliveries are kept.
pub const KEEP_FINISHED_MS: i64 = 7 * 24 * 3600 * 1000;
/// Growth of the log after which it is rewritten.
const COMPACT_BYTES: u64 = 8 << 20;

/// A delivery: one message for one endpoint.
pub type Key = (String, String);

/// One attempt to deliver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// When it started, milliseconds since the epoch.
    pub at: i64,
    /// The HTTP status answered, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why there was no answer (connection refused, timeout, refused address…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting for its next attempt.
    Pending,
    /// A 2xx answer.
    Delivered,
    /// Every scheduled attempt failed, or the endpoint was disabled (410) or deleted.
    Failed,
}

/// A delivery as the outbox holds it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub endpoint: String,
    pub event_type: String,
    pub body: Arc<str>,
    pub created: i64,
    pub status: Status,
    pub attempts: Vec<Attempt>,
    /// When the next attempt is due (pending deliveries).
    pub next_attempt: Option<i64>,
    /// Why it failed for good, when it did.
    pub reason: Option<String>,
}

/// What [`Outbox::set`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Set {
    Done,
    NoSuchDelivery,
    /// An attempt is being made right now; nothing changed.
    UnderWay,
}

/// A message to enqueue for one endpoint.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: String,
    pub endpoint: String,
    pub event_type: String,
    pub body: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Record {
    Enqueued {
        id: String,
        endpoint: String,
        event_type: String,
        body: String,
        created: i64,
    },
    Attempted {
        id: String,
        endpoint: String,
        attempt: Attempt,
        /// The next attempt; `None`: finished (`status` says how).
        next: Option<i64>,
        status: Status,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A delivery's status set without an attempt: made pending again (a manual retry),
    /// given up (its endpoint was deleted), or restored by a rewrite of the log.
    Set {
        id: String,
        endpoint: String,
        status: Status,
        next: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

struct Inner {
    file: std::fs::File,
    /// The log's length: what is known to be whole in it.
    len: u64,
    deliveries: HashMap<Key, Delivery>,
    /// Deliveries being attempted now.
    in_flight: HashSet<Key>,
    /// Bytes appended since the log was last rewritten.
    grown: u64,
}

/// The outbox; see the module documentation.
pub struct Outbox {
    path: PathBuf,
    /// Milliseconds from acceptance to a message's first attempt.
    first_delay: i64,
    inner: Mutex<Inner>,
    /// Woken when something may have become due.
    pub wake: tokio::sync::Notify,
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Outbox {
    /// Opens (or creates) the outbox at `path`, replaying and rewriting it.
    /// A new message's first attempt is due `first_delay` after it is accepted.
    pub fn open(path: &Path, first_delay: Duration) -> crate::Result<Outbox> {
        let first_delay = i64::try_from(first_delay.as_millis()).unwrap_or(i64::MAX / 2);
        let mut deliveries = HashMap::new();
        match std::fs::read(path) {
            Ok(bytes) => {
                let lines: Vec<&[u8]> = bytes
                    .split(|&b| b == b'\n')
                    .filter(|l| !l.is_empty())
                    .collect();
                for (n, line) in lines.iter().enumerate() {
                    match serde_json::from_slice::<Record>(line) {
                        Ok(r) => apply(&mut deliveries, r, first_delay),
                        // A crash mid-append leaves a torn last line; the rewrite drops it.
                        Err(_) if n + 1 == lines.len() => {
                            tracing::warn!(path = %path.display(), line = n + 1, "dropping a torn last line of the webhook outbox");
                        }
                        Err(e) => {
                            return Err(crate::Error::Damaged(format!(
                                "{} line {} is damaged: {e}",
                                path.display(),
                                n + 1
                            )));
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(crate::Error::io("reading", path, e)),
        }
        let (file, len) = rewrite(path, &mut deliveries, now_ms())?;
        Ok(Outbox {
            path: path.to_path_buf(),
            first_delay,
            inner: Mutex::new(Inner {
                file,
                len,
                deliveries,
                in_flight: HashSet::new(),
                grown: 0,
            }),
            wake: tokio::sync::Notify::new(),
        })
    }

    fn append(&self, inner: &mut Inner, records: &[Record]) -> crate::Result<()> {
        let mut bytes = Vec::new();
        for r in records {
            serde_json::to_writer(&mut bytes, r)?;
            bytes.push(b'\n');
        }
        if let Err(e) = inner
            .file
            .write_all(&bytes)
            .and_then(|()| inner.file.sync_data())
        {
            // Cut off what part of this append made it (a full disk), so the next append
            // starts on a line of its own; nothing of it counts.
            let _ = inner.file.set_len(inner.len);
            return Err(crate::Error::io("appending to", &self.path, e));
        }
        inner.len += bytes.len() as u64;
        inner.grown += bytes.len() as u64;
        for r in records.iter().cloned() {
            apply(&mut inner.deliveries, r, self.first_delay);
        }
        if inner.grown >= COMPACT_BYTES {
            (inner.file, inner.len) = rewrite(&self.path, &mut inner.deliveries, now_ms())?;
            inner.grown = 0;
        }
        Ok(())
    }

    /// Accepts messages for delivery, durably; those already in the outbox (the same message
    /// for the same endpoint) are skipped. Returns how many were new.
    pub fn enqueue(&self, messages: Vec<NewMessage>) -> crate::Result<usize> {
        let mut inner = self.inner.lock().expect("outbox lock");
        let created = now_ms();
        let mut seen = HashSet::new();
        let records: Vec<Record> = messages
            .into_iter()
            .filter(|m| {
                let key = (m.endpoint.clone(), m.id.clone());
                !inner.deliveries.contains_key(&key) && seen.insert(key)
            })
            .map(|m| Record::Enqueued {
                id: m.id,
                endpoint: m.endpoint,
                event_type: m.event_type,
                body: m.body,
                created,
            })
            .collect();
        if records.is_empty() {
            return Ok(0);
        }
        self.append(&mut inner, &records)?;
        drop(inner);
        self.wake.notify_one();
        Ok(records.len())
    }

    /// Pending deliveries due by `now` and not being attempted, at most `max`, oldest due
    /// first; they are marked as being attempted until [`Outbox::record`].
    pub fn take_due(&self, now: i64, max: usize) -> Vec<Delivery> {
        let mut inner = self.inner.lock().expect("outbox lock");
        let mut due: Vec<&Delivery> = inner
            .deliveries
            .values()
            .filter(|d| d.status == Status::Pending && d.next_attempt.is_some_and(|t| t <= now))
            .filter(|d| {
                !inner
                    .in_flight
                    .contains(&(d.endpoint.clone(), d.id.clone()))
            })
            .collect();
        due.sort_by_key(|d| (d.next_attempt, d.created));
        let due: Vec<Delivery> = due.into_iter().take(max).cloned().collect();
        for d in &due {
            inner.in_flight.insert((d.endpoint.clone(), d.id.clone()));
        }
        due
    }

    /// When the earliest pending delivery not being attempted is due.
    pub fn next_due(&self) -> Option<i64> {
        let inner = self.inner.lock().expect("outbox lock");
        inner
            .deliveries
            .values()
            .filter(|d| d.status == Status::Pending)
            .filter(|d| {
                !inner
                    .in_flight
                    .contains(&(d.endpoint.clone(), d.id.clone()))
            })
            .filter_map(|d| d.next_attempt)
            .min()
    }

    /// Records an attempt of a delivery taken with [`Outbox::take_due`] and what follows:
    /// the next attempt at `next`, or none (`status` Delivered or Failed).
    pub fn record(
        &self,
        key: &Key,
        attempt: Attempt,
        next: Option<i64>,
        status: Status,
        reason: Option<String>,
    ) -> crate::Result<()> {
        let mut inner = self.inner.lock().expect("outbox lock");
        inner.in_flight.remove(key);
        let record = Record::Attempted {
            endpoint: key.0.clone(),
            id: key.1.clone(),
            attempt,
            next,
            status,
            reason,
        };
        self.commit(inner, record)
    }

    /// Appends `record` and wakes the delivery loop (something may be due, or a slot free).
    fn commit(
        &self,
        mut inner: std::sync::MutexGuard<'_, Inner>,
        record: Record,
    ) -> crate::Result<()> {
        self.append(&mut inner, &[record])?;
        drop(inner);
        self.wake.notify_one();
        Ok(())
    }

    /// Sets a delivery's status without an attempt: `Pending` with `next` to retry it (a
    /// manual "retry now"), `Failed` with a reason to give it up (for a delivery taken with
    /// [`Outbox::take_due`], which this ends).
    pub fn set(
        &self,
        key: &Key,
        status: Status,
        next: Option<i64>,
        reason: Option<String>,
    ) -> crate::Result<Set> {
        let mut inner = self.inner.lock().expect("outbox lock");
        if !inner.deliveries.contains_key(key) {
            return Ok(Set::NoSuchDelivery);
        }
        if status == Status::Pending && inner.in_flight.contains(key) {
            return Ok(Set::UnderWay);
        }
        inner.in_flight.remove(key);
        let record = Record::Set {
            endpoint: key.0.clone(),
            id: key.1.clone(),
            status,
            next,
            reason,
        };
        self.commit(inner, record)?;
        Ok(Set::Done)
    }

    /// The deliveries of an endpoint, newest first, at most `limit`.
    pub fn of_endpoint(&self, endpoint: &str, limit: usize) -> Vec<Delivery> {
        let inner = self.inner.lock().expect("outbox lock");
        let mut list: Vec<Delivery> = inner
            .deliveries
            .values()
            .filter(|d| d.endpoint == endpoint)
            .cloned()
            .collect();
        list.sort_by(|a, b| (b.created, &b.id).cmp(&(a.created, &a.id)));
        list.truncate(limit);
        list
    }
}

fn apply(deliveries: &mut HashMap<Key, Delivery>, record: Record, first_delay: i64) {
    match record {
        Record::Enqueued {
            id,
            endpoint,
            event_type,
            body,
            created,
        } => {
            deliveries
                .entry((endpoint.clone(), id.clone()))
                .or_insert(Delivery {
                    id,
                    endpoint,
                    event_type,
                    body: body.into(),
                    created,
                    status: Status::Pending,
                    attempts: Vec::new(),
                    next_attempt: Some(created + first_delay),
                    reason: None,
                });
        }
        Record::Attempted {
            id,
            endpoint,
            attempt,
            next,
            status,
            reason,
        } => {
            if let Some(d) = deliveries.get_mut(&(endpoint, id)) {
                d.attempts.push(attempt);
                d.next_attempt = next;
                d.status = status;
                d.reason = reason;
            }
        }
        Record::Set {
            id,
            endpoint,
            status,
            next,
            reason,
        } => {
            if let Some(d) = deliveries.get_mut(&(endpoint, id)) {
                d.status = status;
                d.next_attempt = next;
                d.reason = reason;
            }
        }
    }
}

/// The records that rebuild one delivery.
fn records_of(d: &Delivery) -> Vec<Record> {
    let mut out = vec![Record::Enqueued {
        id: d.id.clone(),
        endpoint: d.endpoint.clone(),
        event_type: d.event_type.clone(),
        body: d.body.to_string(),
        created: d.created,
    }];
    for a in &d.attempts {
        out.push(Record::Attempted {
            id: d.id.clone(),
            endpoint: d.endpoint.clone(),
            attempt: a.clone(),
            next: None,
            status: Status::Pending,
            reason: None,
        });
    }
    out.push(Record::Set {
        id: d.id.clone(),
        endpoint: d.endpoint.clone(),
        status: d.status,
        next: d.next_attempt,
        reason: d.reason.clone(),
    });
    out
}

/// Drops finished deliveries older than [`KEEP_FINISHED_MS`], writes the rest to a new log
/// (whole and synced before it replaces the old one), and returns it open for appending.
fn rewrite(
    path: &Path,
    deliveries: &mut HashMap<Key, Delivery>,
    now: i64,
) -> crate::Result<(std::fs::File, u64)> {
    deliveries.retain(|_, d| {
        d.status == Status::Pending
            || d.attempts.last().map_or(d.created, |a| a.at) + KEEP_FINISHED_MS > now
    });
    let mut list: Vec<&Delivery> = deliveries.values().collect();
    list.sort_by_key(|d| (d.created, d.id.clone(), d.endpoint.clone()));
    let mut bytes = Vec::new();
    for d in list {
        for r in records_of(d) {
            serde_json::to_writer(&mut bytes, &r)?;
            bytes.push(b'\n');
        }
    }
    let tmp = path.with_extension("outbox.tmp");
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| crate::Error::io("creating", dir, e))?;
    {
        let mut f =
            std::fs::File::create(&tmp).map_err(|e| crate::Error::io("creating", &tmp, e))?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).map_err(|e| crate::Error::io("replacing", path, e))?;
    std::fs::File::open(dir)?.sync_all()?;
    let file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| crate::Error::io("opening", path, e))?;
    Ok((file, bytes.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str, body: &str) -> NewMessage {
        NewMessage {
            id: id.into(),
            endpoint: "wh_1".into(),
            event_type: "refund.created".into(),
            body: body.into(),
        }
    }

    fn attempt(status: u16) -> Attempt {
        Attempt {
            at: now_ms(),
            status: Some(status),
            error: None,
            duration_ms: 1,
        }
    }

    /// What was accepted survives a reopen, with its attempts; the same message is accepted
    /// once; a torn last line (cut inside a multi-byte character) is dropped, not fatal.
    #[test]
    fn reopens_with_what_it_accepted_and_drops_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("webhooks.outbox");
        let outbox = Outbox::open(&path, Duration::ZERO).unwrap();
        let messages = vec![
            message("msg_1", r#"{"source":"Zürich"}"#),
            message("msg_2", "{}"),
        ];
        assert_eq!(outbox.enqueue(messages.clone()).unwrap(), 2);
        assert_eq!(outbox.enqueue(messages).unwrap(), 0, "already accepted");
        let due = outbox.take_due(now_ms(), 10);
        assert_eq!(due.len(), 2);
        assert!(outbox.take_due(now_ms(), 10).is_empty(), "being attempted");
        let first = ("wh_1".to_string(), "msg_1".to_string());
        let retry_at = now_ms() + 60_000;
        outbox
            .record(&first, attempt(500), Some(retry_at), Status::Pending, None)
            .unwrap();
        // A retry asked while the other is being attempted changes nothing.
        let second = ("wh_1".to_string(), "msg_2".to_string());
        assert_eq!(
            outbox.set(&second, Status::Pending, Some(0), None).unwrap(),
            Set::UnderWay
        );
        drop(outbox);

        // A crash in the middle of an append: half a line, cut inside "ü".
        let mut bytes = std::fs::read(&path).unwrap();
        let line = br#"{"op":"enqueued","id":"msg_3","endpoint":"wh_1","event_type":"x","body":"Z"#;
        bytes.extend_from_slice(line);
        bytes.push(0xc3);
        std::fs::write(&path, &bytes).unwrap();

        let outbox = Outbox::open(&path, Duration::ZERO).unwrap();
        let list = outbox.of_endpoint("wh_1", 10);
        assert_eq!(list.len(), 2, "{list:?}");
        let d1 = list.iter().find(|d| d.id == "msg_1").unwrap();
        assert_eq!(d1.attempts.len(), 1);
        assert_eq!(d1.next_attempt, Some(retry_at));
        assert_eq!(&*d1.body, r#"{"source":"Zürich"}"#);
        // msg_2's attempt was cut short by the "crash": due again.
        let due = outbox.take_due(now_ms(), 10);
        assert_eq!(
            due.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            ["msg_2"]
        );
        outbox
            .record(&second, attempt(200), None, Status::Delivered, None)
            .unwrap();
        assert_eq!(
            outbox.set(&second, Status::Pending, Some(0), None).unwrap(),
            Set::Done
        );
        assert_eq!(outbox.take_due(now_ms(), 10).len(), 1, "retried by hand");
    }

    /// A damaged line in the middle is not guessed around.
    #[test]
    fn a_damaged_middle_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("webhooks.outbox");
        let outbox = Outbox::open(&path, Duration::ZERO).unwrap();
        outbox.enqueue(vec![message("msg_1", "{}")]).unwrap();
        drop(outbox);
        let good = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{{broken\n{good}")).unwrap();
        let err = Outbox::open(&path, Duration::ZERO).err().unwrap();
        assert!(err.to_string().contains("line 1 is damaged"), "{err}");
    }
}

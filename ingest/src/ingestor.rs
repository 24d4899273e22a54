//! The ingest buffer behind the write-ahead log, and the flusher that empties it into Parquet.
//!
//! ```text
//! submit(event) ──► dedup check + sequence ──► pending ──► WAL writer thread
//!                                                           write + fdatasync (group commit)
//!      ◄── ack once durable ◄───────────────────────────────┘   │
//!                                                  Arrow batches ▼
//!                                                  buffer ──► flusher ──► events/<t>/date=D/
//!                                                                 └─► checkpoint, WAL trim
//! ```
//!
//! Exactly-once: a raw file is named `<node>-<first>-<last>.parquet` after the sequence range
//! of the flush that wrote it, and a flush writes, for each partition, every buffered record of
//! that partition in the range. So after a crash, a replayed record is already in Parquet
//! exactly when a file of its partition covers its sequence; those are dropped, the rest are
//! flushed again. The checkpoint only bounds how much of the log recovery must read.
//!
//! A consumer of the durable events (the live stats, which hand refunds and conversions to the
//! webhooks) implements [`DurableSink`] and opens the ingestor with it
//! ([`Ingestor::open_held`]): it is given every event as it becomes durable, and it holds the
//! log back: records it has not processed are kept even once flushed, and after a crash they
//! are offered to it again ([`Held::replayed`]), so it sees every acknowledged event at least
//! once.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use chrono::NaiveDate;
use tokio::sync::{Notify, oneshot, watch};

use netrev_storage::buffer::{Buffer, Frozen, Unpersisted};
use netrev_storage::clickid;
use netrev_storage::model::{self, Table};
use netrev_storage::store::layout;
use netrev_storage::{Event, Store};

use crate::dedup;
use crate::wal::{self, AppendError};
use crate::{Error, Result};

/// Settings of the ingest buffer.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Directory of this node's write-ahead log; must be a local disk.
    pub wal_dir: PathBuf,
    /// This node's ID (letters, digits, `_`); `None` reads or creates `<wal_dir>/node_id`.
    pub node_id: Option<String>,
    /// How often buffered events are flushed to Parquet, at multiples of it since the Unix
    /// epoch (so with 30 minutes a raw table gets at most 48 files a day from each node). The
    /// raw files' freshness for outside readers; the buffer itself is read by netrev's own
    /// queries ([`netrev_storage::buffer`]).
    pub flush_interval: Duration,
    /// Buffered events that trigger a flush before the interval ends, so memory stays bounded
    /// and files a sensible size under heavy load.
    pub flush_rows: usize,
    /// Events accepted but not yet in Parquet beyond which postbacks get 503: bounds memory
    /// when the object store is slow or down.
    pub max_buffered: usize,
    /// Size at which the log starts a new segment.
    pub segment_bytes: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            wal_dir: PathBuf::from("data/wal"),
            node_id: None,
            flush_interval: Duration::from_secs(30 * 60),
            flush_rows: 100_000,
            // About 1 KiB each in memory: ~1 GiB at the limit.
            max_buffered: 1_000_000,
            segment_bytes: 64 << 20,
        }
    }
}

/// What happened to a submitted event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Newly recorded under this sequence number; durable.
    Recorded(u64),
    /// The same event was recorded before; nothing new was stored. Also durable.
    Duplicate,
}

/// Why an event was not accepted. Nothing was recorded; the sender should retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// The buffer is full (the object store is behind); retry in a moment.
    #[error("ingest buffer is full; retry shortly")]
    Busy,
    /// The write-ahead log cannot vouch for new records (disk error); retry later.
    #[error("write-ahead log unavailable: {0}")]
    Unavailable(String),
    /// The service is shutting down.
    #[error("shutting down")]
    ShuttingDown,
}

/// Counters for the health route and the benchmarks.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct IngestStats {
    /// Highest sequence durable in the log.
    pub durable_seq: u64,
    /// Highest sequence flushed to Parquet (the checkpoint).
    pub flushed_seq: u64,
    /// Events accepted and not yet in Parquet.
    pub buffered_events: usize,
    /// fdatasync calls made by the log writer since start.
    pub wal_fsyncs: u64,
    /// Events recorded since start (duplicates excluded).
    pub recorded: u64,
    /// Raw Parquet files written since start.
    pub files_written: u64,
    /// Why postbacks are being refused with 503 (the log cannot write), if they are.
    pub wal_error: Option<String>,
    /// Why flushing to the object store is failing (being retried; the log keeps the events),
    /// if it is.
    pub flush_error: Option<String>,
}

/// Durable records not yet in Parquet, as Arrow batches per partition (cloned cheaply: the
/// batches are shared).
#[derive(Debug, Clone)]
struct Chunk {
    first_seq: u64,
    last_seq: u64,
    rows: usize,
    /// When its events were received, by the data root's clock (microseconds since the
    /// epoch; the latest, for merged chunks; `i64::MIN` for events replayed from the log): a
    /// flush at a boundary leaves the chunks received after it for the next.
    received: i64,
    /// One per partition, with the sequence of each row: what queries read meanwhile.
    parts: Vec<Unpersisted>,
}

/// An event encoded and sequenced, waiting for the log writer.
struct Pending {
    seq: u64,
    event: Event,
    json: Vec<u8>,
    key: Option<dedup::Key>,
    done: oneshot::Sender<Result<(), Rejected>>,
}

/// Everything guarded by the one ingest lock. Critical sections are a few map operations.
#[derive(Default)]
struct State {
    /// Sequence of the next accepted event.
    next_seq: u64,
    /// Accepted events the writer has not yet made durable, in sequence order.
    pending: Vec<Pending>,
    /// Keys of every recorded conversion and refund → sequence of the original (0 for ones
    /// recovered from disk), so a duplicate can wait for its original to be durable.
    seen: HashMap<dedup::Key, u64>,
    /// Durable records waiting for the flusher, oldest first.
    buffer: Vec<Chunk>,
    /// A flush unit whose write failed part-way: retried alone before anything newer.
    failed_flush: Option<Vec<Chunk>>,
    /// Events in `pending` and `buffer` together: what [`IngestConfig::max_buffered`] bounds.
    unflushed: usize,
    /// Set when the log cannot be appended to any more; every submit is refused.
    poisoned: Option<String>,
    /// Why the log is refusing appends until it recovers (a failed fsync), for the health
    /// route.
    log_error: Option<String>,
    /// Why the last flush to the object store failed, until one succeeds.
    flush_error: Option<String>,
    /// Set by shutdown: the writer drains `pending` and exits.
    closing: bool,
    /// The writer is asleep on the condition variable. Only then does a submit pay for a
    /// wake-up (a syscall); a busy writer takes the new pending events on its next round.
    writer_waiting: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the writer thread when `pending` fills or on shutdown.
    writer_wake: Condvar,
    /// Highest durable sequence.
    durable: watch::Sender<u64>,
    /// Highest sequence whose append is over, durable or failed; duplicates wait on it for
    /// their original.
    resolved: watch::Sender<u64>,
    /// Wakes the flusher early when the buffer reaches `flush_rows`.
    flush_now: Notify,
    /// Tells the flusher to do a last flush and stop.
    flusher_stop: watch::Sender<bool>,
    /// Serializes flushes (the periodic one, an explicit one, the last one at shutdown) with
    /// the merging of buffered batches and with rewrites of raw files ([`Ingestor::hold_flushes`]).
    flush_lock: tokio::sync::Mutex<()>,
    flushed_seq: AtomicU64,
    fsyncs: AtomicU64,
    recorded: AtomicU64,
    files_written: AtomicU64,
    config: IngestConfig,
    node: Arc<str>,
    store: Store,
    /// Where durable events go next (the live stats), in sequence order, when one holds the
    /// log.
    sink: Option<Arc<dyn DurableSink>>,
    /// That consumer's progress: the checkpoint (and the log's trim) never pass it.
    hold: Option<Arc<AtomicU64>>,
}

/// The consumer of durable events that holds the log back ([`Ingestor::open_held`]).
pub trait DurableSink: Send + Sync {
    /// Events numbered from `first` (consecutively) have just become durable, before they are
    /// acknowledged. Called on the log's writer thread, in sequence order: must not block.
    fn durable(&self, first: u64, events: Vec<Event>);
}

/// What the consumer of [`Ingestor::open_held`] is given, once.
#[derive(Debug)]
pub struct Held {
    /// Its progress: it advances this as it processes events (every event up to it done). The
    /// log keeps every record after it, flushed or not. Starts at the checkpoint found at open.
    pub processed: Arc<AtomicU64>,
    /// The events the log held after its checkpoint at open (already flushed or not), in
    /// sequence order: what it may not have processed before a crash.
    pub replayed: Vec<(u64, Event)>,
}

/// The ingest buffer: accepts events, makes them durable, flushes them to Parquet.
pub struct Ingestor {
    shared: Arc<Shared>,
    clicks: clickid::Generator,
    /// The writer thread, joined on shutdown.
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The flusher task, awaited on shutdown.
    flusher: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Ingestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingestor")
            .field("node", &self.shared.node)
            .finish()
    }
}

impl Ingestor {
    /// Recovers the log (replaying what is not yet in Parquet), loads the deduplication keys
    /// of everything stored, and starts the writer and the flusher.
    pub async fn open(store: Store, config: IngestConfig) -> Result<Arc<Ingestor>> {
        Ok(Ingestor::open_with(store, config, None).await?.0)
    }

    /// Opens the ingestor for `sink`, which is given every event as it becomes durable and
    /// holds the log back until it has processed them: what it is given once is in [`Held`].
    pub async fn open_held(
        store: Store,
        config: IngestConfig,
        sink: Arc<dyn DurableSink>,
    ) -> Result<(Arc<Ingestor>, Held)> {
        let (ingestor, held) = Ingestor::open_with(store, config, Some(sink)).await?;
        Ok((ingestor, held.expect("a sink holds the log")))
    }

    async fn open_with(
        store: Store,
        config: IngestConfig,
        sink: Option<Arc<dyn DurableSink>>,
    ) -> Result<(Arc<Ingestor>, Option<Held>)> {
        let dir = config.wal_dir.clone();
        netrev_storage::store::create_dir_durable(&dir)?;
        let node: Arc<str> = node_id(&dir, config.node_id.as_deref())?.into();
        let key = store.click_id_key().await?;

        let checkpoint = wal::read_checkpoint(&dir)?;
        let replayed = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || wal::replay(&dir))
                .await
                .expect("replay task panicked")?
        };
        let max_replayed = replayed.last().map_or(0, |r| r.seq);
        let unflushed: Vec<wal::Record> = replayed
            .into_iter()
            .filter(|r| r.seq > checkpoint)
            .collect();
        let replayed_count = unflushed.len();
        let replayed_events: Vec<(u64, Event)> =
            unflushed.iter().map(|r| (r.seq, r.event.clone())).collect();
        let (covered, todo, partial) = split_covered(&store, &node, unflushed).await?;
        // Everything before the first record still to flush is in Parquet (flush units are
        // written in sequence order); the checkpoint may lag behind it when the log was held.
        let flushed = todo
            .first()
            .map_or(checkpoint.max(max_replayed), |r| r.seq - 1);

        let history = scan_history(&store, &node).await?;
        let mut seen = history.keys;
        for r in &todo {
            if let Some(k) = dedup::key(&r.event) {
                seen.insert(k, 0);
            }
        }
        // Never reuse a sequence this node already put in a file name, even if its log
        // directory was lost: a reused range could overwrite or shadow stored rows. Nor start
        // below the newest segment (one left empty after a failed fsync skipped sequences):
        // the segment being written must stay the newest, the one trimming never removes.
        let newest_segment = wal::segments(&dir)?.last().map_or(0, |(first, _)| *first);
        let next_seq =
            (checkpoint.max(max_replayed).max(history.max_seq_of_node) + 1).max(newest_segment);
        tracing::info!(
            node = %node,
            checkpoint,
            replayed = replayed_count,
            already_in_parquet = covered,
            to_flush = todo.len(),
            dedup_keys = seen.len(),
            "write-ahead log recovered"
        );

        let mut state = State {
            next_seq,
            seen,
            ..State::default()
        };
        if !todo.is_empty() {
            state.unflushed = todo.len();
            // The records of a flush unit a crash left half-written go out again alone, under
            // that unit's own name (as a failed flush would), before anything newer: so every
            // file keeps holding exactly the rows of its partition in its range, and no two
            // files' ranges overlap.
            let split = partial.map_or(0, |(_, last)| todo.partition_point(|r| r.seq <= last));
            let (unit, rest) = todo.split_at(split);
            if let (Some((first, last)), false) = (partial, unit.is_empty()) {
                state.failed_flush = Some(vec![chunk_of(&node, first, last, unit)?]);
            }
            if let (Some(first), Some(last)) = (rest.first(), rest.last()) {
                state
                    .buffer
                    .push(chunk_of(&node, first.seq, last.seq, rest)?);
            }
        }

        let writer_log = wal::Writer::create(&dir, next_seq, config.segment_bytes)?;
        let (durable, _) = watch::channel(next_seq - 1);
        let (resolved, _) = watch::channel(next_seq - 1);
        let (flusher_stop, stop_rx) = watch::channel(false);
        let hold = sink.as_ref().map(|_| Arc::new(AtomicU64::new(checkpoint)));
        let held = hold.as_ref().map(|processed| Held {
            processed: processed.clone(),
            replayed: replayed_events,
        });
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            writer_wake: Condvar::new(),
            durable,
            resolved,
            flush_now: Notify::new(),
            flusher_stop,
            flush_lock: tokio::sync::Mutex::new(()),
            flushed_seq: AtomicU64::new(flushed),
            fsyncs: AtomicU64::new(0),
            recorded: AtomicU64::new(0),
            files_written: AtomicU64::new(0),
            config,
            node,
            store: store.clone(),
            sink,
            hold,
        });
        // Readers of the raw tables through this store (or a clone) see the buffer too.
        let buffer: Weak<dyn Buffer> = Arc::downgrade(&shared) as Weak<Shared>;
        store.attach_buffer(buffer);
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("netrev-wal".into())
                .spawn(move || {
                    let guard = WriterGuard(&shared);
                    writer_loop(&shared, writer_log);
                    std::mem::forget(guard);
                })
                .map_err(|e| Error::io("spawn", "wal writer thread", e))?
        };
        if shared.state.lock().expect("ingest lock").unflushed >= shared.config.flush_rows {
            // Replayed enough to flush at once (the permit waits for the flusher).
            shared.flush_now.notify_one();
        }
        let flusher = tokio::spawn(flusher_loop(shared.clone(), stop_rx));
        let ingestor = Arc::new(Ingestor {
            shared,
            clicks: clickid::Generator::new(key),
            writer: Mutex::new(Some(writer)),
            flusher: tokio::sync::Mutex::new(Some(flusher)),
        });
        Ok((ingestor, held))
    }

    /// This node's ID.
    pub fn node(&self) -> &str {
        &self.shared.node
    }

    /// The directory of this node's write-ahead log (and of its other node-local files).
    pub fn wal_dir(&self) -> &std::path::Path {
        &self.shared.config.wal_dir
    }

    /// The data root's clock: the time of an event received now.
    pub fn clock(&self) -> &netrev_storage::Clock {
        self.shared.store.clock()
    }

    /// Issues a click ID for a click at `now_ms`; see [`clickid::Generator::issue`].
    pub fn issue_click_id(&self, now_ms: u64) -> (String, u64) {
        self.clicks.issue(now_ms)
    }

    /// The MAC key click IDs are checked with.
    pub fn click_id_key(&self) -> &clickid::Key {
        self.clicks.key()
    }

    /// Records `event` durably, once. Returns when the event (or its original, for a
    /// duplicate) is fsynced in the write-ahead log.
    pub async fn submit(&self, event: Event) -> Result<Outcome, Rejected> {
        let key = dedup::key(&event);
        let json = wal::encode_event(&event);
        let (tx, rx) = oneshot::channel();
        let (duplicate_of, seq, wake) = {
            let mut st = self.shared.state.lock().expect("ingest lock");
            if st.closing {
                return Err(Rejected::ShuttingDown);
            }
            if let Some(reason) = &st.poisoned {
                return Err(Rejected::Unavailable(reason.clone()));
            }
            match key.and_then(|k| st.seen.get(&k).copied()) {
                Some(original) => (Some(original), 0, false),
                None => {
                    if st.unflushed >= self.shared.config.max_buffered {
                        return Err(Rejected::Busy);
                    }
                    let seq = st.next_seq;
                    st.next_seq += 1;
                    if let Some(k) = key {
                        st.seen.insert(k, seq);
                    }
                    st.unflushed += 1;
                    st.pending.push(Pending {
                        seq,
                        event,
                        json,
                        key,
                        done: tx,
                    });
                    (None, seq, st.writer_waiting)
                }
            }
        };
        if let Some(original) = duplicate_of {
            return self
                .await_original(key.expect("duplicates have keys"), original)
                .await;
        }
        if wake {
            self.shared.writer_wake.notify_one();
        }
        match rx.await {
            Ok(Ok(())) => Ok(Outcome::Recorded(seq)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Rejected::ShuttingDown),
        }
    }

    /// A duplicate is acknowledged only once its original is durable, so an ack never
    /// outruns the log even for retries that race the first copy.
    async fn await_original(&self, key: dedup::Key, original: u64) -> Result<Outcome, Rejected> {
        let mut rx = self.shared.resolved.subscribe();
        if rx.wait_for(|&d| d >= original).await.is_err() {
            return Err(Rejected::ShuttingDown);
        }
        let st = self.shared.state.lock().expect("ingest lock");
        // A failed append removes its keys before the resolved mark can pass it.
        match st.seen.get(&key) {
            Some(&s) if s == original => Ok(Outcome::Duplicate),
            _ => Err(Rejected::Unavailable(
                "the first copy of this event failed to be written; retry".into(),
            )),
        }
    }

    /// Highest sequence durable in the log: every acknowledged event is at or below it.
    pub fn durable_seq(&self) -> u64 {
        *self.shared.durable.borrow()
    }

    /// Keeps the buffer from being flushed until the guard is dropped (the rows stay buffered
    /// and readable): for rewriting raw files without a flush writing beside them. Hold it
    /// briefly: a buffer that reaches `--max-buffered` meanwhile makes postbacks wait (503).
    pub async fn hold_flushes(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.shared.flush_lock.lock().await
    }

    /// Highest sequence flushed to Parquet: every event up to it is in a raw file that a
    /// listing started now will see.
    pub fn flushed_seq(&self) -> u64 {
        self.shared.flushed_seq.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> IngestStats {
        let st = self.shared.state.lock().expect("ingest lock");
        IngestStats {
            durable_seq: *self.shared.durable.borrow(),
            flushed_seq: self.shared.flushed_seq.load(Ordering::Relaxed),
            buffered_events: st.unflushed,
            wal_fsyncs: self.shared.fsyncs.load(Ordering::Relaxed),
            recorded: self.shared.recorded.load(Ordering::Relaxed),
            files_written: self.shared.files_written.load(Ordering::Relaxed),
            wal_error: st.poisoned.clone().or_else(|| st.log_error.clone()),
            flush_error: st.flush_error.clone(),
        }
    }

    /// Flushes everything accepted so far to Parquet now (tests, shutdown).
    pub async fn flush(&self) -> Result<()> {
        flush_once(&self.shared, None).await
    }

    /// Stops accepting, writes what is pending, flushes the buffer and stops the background
    /// work. Events acknowledged before are in Parquet when this returns `Ok`.
    pub async fn shutdown(&self) -> Result<()> {
        {
            let mut st = self.shared.state.lock().expect("ingest lock");
            st.closing = true;
        }
        self.shared.writer_wake.notify_all();
        let writer = self.writer.lock().expect("writer handle").take();
        if let Some(handle) = writer {
            tokio::task::spawn_blocking(move || handle.join())
                .await
                .expect("join task")
                .map_err(|_| Error::Config("write-ahead log thread panicked".into()))?;
        }
        let _ = self.shared.flusher_stop.send(true);
        if let Some(handle) = self.flusher.lock().await.take() {
            let _ = handle.await;
        }
        flush_once(&self.shared, None).await
    }
}

/// This node's ID: the configured one or the one kept in the log directory (created on first
/// start). A configured ID that differs from the kept one is refused: the log's records were
/// flushed under the kept name, and replaying them under another would store them twice.
fn node_id(dir: &std::path::Path, configured: Option<&str>) -> Result<String> {
    let path = dir.join("node_id");
    let kept = match std::fs::read_to_string(&path) {
        Ok(id) => Some(id.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io("read", &path, e)),
    };
    let node = match (kept, configured) {
        (Some(k), Some(c)) if k != c => {
            return Err(Error::Config(format!(
                "node id {c:?} was configured, but the write-ahead log in {} belongs to node \
                 {k:?}; use that id or another log directory",
                dir.display()
            )));
        }
        (Some(k), _) => return Ok(k),
        (None, Some(c)) => c.to_string(),
        (None, None) => (0..8)
            .map(|_| b"abcdefghjkmnpqrstvwxyz0123456789"[rand::random_range(0..32)] as char)
            .collect(),
    };
    if node.is_empty() || !node.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(Error::Config(format!(
            "node id {node:?} must be letters, digits or _"
        )));
    }
    wal::write_small_file(dir, "node_id", &node)?;
    Ok(node)
}

/// What start-up needs from the stored raw tables.
struct History {
    /// Deduplication keys of every stored conversion and refund (all nodes).
    keys: HashMap<dedup::Key, u64>,
    /// The highest sequence in any raw file name of this node.
    max_seq_of_node: u64,
}

/// Lists the raw tables and reads the key columns of conversions and refunds.
async fn scan_history(store: &Store, node: &str) -> Result<History> {
    let mut keys = HashMap::new();
    let mut max_seq_of_node = 0;
    for table in Table::ALL {
        for meta in store.raw_files(table).await? {
            let Some(name) = meta.location.filename() else {
                continue;
            };
            if let Some((n, _, last)) = layout::parse_raw_file(name)
                && n == node
            {
                max_seq_of_node = max_seq_of_node.max(last);
            }
            if table == Table::Clicks {
                continue;
            }
            for event in store.read_events(table, &meta.location).await? {
                if let Some(k) = dedup::key(&event) {
                    keys.insert(k, 0);
                }
            }
        }
    }
    Ok(History {
        keys,
        max_seq_of_node,
    })
}

/// Every event of a raw table (all nodes).
#[cfg(test)]
async fn read_all(store: &Store, table: Table) -> Result<Vec<Event>> {
    let mut out = Vec::new();
    for meta in store.raw_files(table).await? {
        out.extend(store.read_events(table, &meta.location).await?);
    }
    Ok(out)
}

/// Splits replayed records into those some raw file of this node already covers (counted) and
/// those still to flush; with the range of the flush unit a crash left half-written, if the
/// first record to flush belongs to one (a file of that range holds other partitions' rows).
async fn split_covered(
    store: &Store,
    node: &str,
    records: Vec<wal::Record>,
) -> Result<(usize, Vec<wal::Record>, Option<(u64, u64)>)> {
    let mut ranges: BTreeMap<(Table, NaiveDate), Vec<(u64, u64)>> = BTreeMap::new();
    for r in &records {
        ranges.entry((r.event.table(), r.event.date())).or_default();
    }
    for ((table, date), list) in ranges.iter_mut() {
        for meta in store.list(&layout::raw_partition(*table, *date)).await? {
            let Some(name) = meta.location.filename() else {
                continue;
            };
            if let Some((n, first, last)) = layout::parse_raw_file(name)
                && n == node
            {
                list.push((first, last));
            }
        }
    }
    let mut covered = 0;
    let mut todo = Vec::new();
    for r in records {
        let list = &ranges[&(r.event.table(), r.event.date())];
        if list.iter().any(|&(a, b)| (a..=b).contains(&r.seq)) {
            covered += 1;
        } else {
            todo.push(r);
        }
    }
    let partial = todo.first().and_then(|r| {
        ranges
            .values()
            .flatten()
            .copied()
            .find(|&(a, b)| (a..=b).contains(&r.seq))
    });
    Ok((covered, todo, partial))
}

/// The chunk of replayed `records`, which hold sequences `first..=last` (with gaps).
fn chunk_of(node: &Arc<str>, first: u64, last: u64, records: &[wal::Record]) -> Result<Chunk> {
    Ok(Chunk {
        first_seq: first,
        last_seq: last,
        rows: records.len(),
        received: i64::MIN,
        parts: partitions(node, records.iter().map(|r| (r.seq, &r.event)))?,
    })
}

/// The chunk of `events`, numbered consecutively from `first_seq` to `last_seq`.
fn build_chunk(
    node: &Arc<str>,
    first_seq: u64,
    last_seq: u64,
    events: &[Event],
    received: i64,
) -> Result<Chunk> {
    Ok(Chunk {
        first_seq,
        last_seq,
        rows: events.len(),
        received,
        parts: partitions(node, (first_seq..).zip(events))?,
    })
}

/// Events with their sequence numbers as a batch per partition.
fn partitions<'a>(
    node: &Arc<str>,
    events: impl IntoIterator<Item = (u64, &'a Event)>,
) -> Result<Vec<Unpersisted>> {
    /// A partition's events and their sequences.
    type Rows<'a> = (Vec<&'a Event>, Vec<u64>);
    let mut groups: BTreeMap<(Table, NaiveDate), Rows<'a>> = BTreeMap::new();
    for (seq, e) in events {
        let (list, seqs) = groups.entry((e.table(), e.date())).or_default();
        list.push(e);
        seqs.push(seq);
    }
    let mut parts = Vec::with_capacity(groups.len());
    for ((table, date), (list, seqs)) in groups {
        parts.push(Unpersisted {
            node: node.clone(),
            table,
            date,
            seqs: seqs.into(),
            batch: model::to_batch(table, list)?,
        });
    }
    Ok(parts)
}

/// The events a node's write-ahead log holds after its checkpoint, read without changing the
/// log (its writer may be running): for a reader beside `serve` (`netrev sql`), which adds
/// them to the raw tables ([`netrev_storage::Store::attach_buffer`]); some may be in raw
/// files already, which the reader tells by their sequence numbers. `None` when `wal_dir`
/// holds no log.
pub fn read_unpersisted(wal_dir: &std::path::Path) -> Result<Option<Frozen>> {
    let node = match std::fs::read_to_string(wal_dir.join("node_id")) {
        Ok(node) => Arc::<str>::from(node.trim()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", wal_dir.join("node_id"), e)),
    };
    let checkpoint = wal::read_checkpoint(wal_dir)?;
    let records = wal::read(wal_dir, checkpoint)?;
    let parts = partitions(&node, records.iter().map(|r| (r.seq, &r.event)))?;
    Ok(Some(Frozen(parts)))
}

/// Consecutive chunks as one, each partition's rows concatenated: the buffer keeps a few
/// large batches rather than one per group commit, so a query reads them quickly.
fn merge_chunks(chunks: &[Chunk]) -> Result<Chunk> {
    let mut groups: BTreeMap<(Table, NaiveDate), Vec<&Unpersisted>> = BTreeMap::new();
    for part in chunks.iter().flat_map(|c| &c.parts) {
        groups
            .entry((part.table, part.date))
            .or_default()
            .push(part);
    }
    let mut parts = Vec::with_capacity(groups.len());
    for ((table, date), list) in groups {
        let batches: Vec<&RecordBatch> = list.iter().map(|p| &p.batch).collect();
        let batch = arrow::compute::concat_batches(&list[0].batch.schema(), batches)
            .map_err(netrev_storage::Error::from)?;
        let seqs: Vec<u64> = list.iter().flat_map(|p| p.seqs.iter().copied()).collect();
        parts.push(Unpersisted {
            node: list[0].node.clone(),
            table,
            date,
            seqs: seqs.into(),
            batch,
        });
    }
    Ok(Chunk {
        first_seq: chunks[0].first_seq,
        last_seq: chunks[chunks.len() - 1].last_seq,
        rows: chunks.iter().map(|c| c.rows).sum(),
        received: chunks.iter().map(|c| c.received).max().unwrap_or(i64::MIN),
        parts,
    })
}

/// Chunks of at least this many rows are left as they are by [`tidy_buffer`]; smaller ones
/// are merged.
const SEALED_ROWS: usize = 16_384;

/// Merges the small chunks at the end of the buffer into one, so the buffer holds at most one
/// chunk under [`SEALED_ROWS`] rows (plus the few taken in since). Each call re-merges at most
/// that many rows. Runs under the flush lock, so no flush takes chunks meanwhile.
async fn tidy_buffer(shared: &Shared) {
    let (start, tail): (usize, Vec<Chunk>) = {
        let st = shared.state.lock().expect("ingest lock");
        // Never across a flush boundary: a boundary flush takes the chunks before it.
        let interval = interval_micros(shared.config.flush_interval);
        let last = st.buffer.last().map(|c| c.received.div_euclid(interval));
        let start = st
            .buffer
            .iter()
            .rposition(|c| c.rows >= SEALED_ROWS || Some(c.received.div_euclid(interval)) != last)
            .map_or(0, |i| i + 1);
        if st.buffer.len() - start < 2 {
            return;
        }
        // Batches are shared, so this copies only the chunks' bookkeeping.
        let tail = st.buffer[start..].to_vec();
        (start, tail)
    };
    let merged = match tokio::task::spawn_blocking(move || merge_chunks(&tail)).await {
        Ok(Ok(merged)) => merged,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "merging buffered batches failed; they stay as they are");
            return;
        }
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    let mut st = shared.state.lock().expect("ingest lock");
    // The writer only appends meanwhile: the merged chunks are still at `start..`, followed by
    // any taken in since.
    let end = st
        .buffer
        .iter()
        .position(|c| c.last_seq == merged.last_seq)
        .expect("the merged chunks are still buffered")
        + 1;
    st.buffer.splice(start..end, [merged]);
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("node", &self.node).finish()
    }
}

impl Buffer for Shared {
    fn unpersisted(&self) -> Vec<Unpersisted> {
        let st = self.state.lock().expect("ingest lock");
        st.failed_flush
            .iter()
            .flatten()
            .chain(&st.buffer)
            .flat_map(|c| c.parts.iter().cloned())
            .collect()
    }
}

/// The log writer: takes everything pending, writes it with one fsync, acknowledges it all.
/// Under load many postbacks share each fsync (group commit); when idle a lone postback is
/// written at once.
fn writer_loop(shared: &Shared, mut log: wal::Writer) {
    let mut framed = Vec::new();
    // Set by a failed fsync: the reason and when the log was last found failing.
    let mut broken: Option<(String, Instant)> = None;
    loop {
        let (batch, poisoned): (Vec<Pending>, Option<String>) = {
            let mut st = shared.state.lock().expect("ingest lock");
            while st.pending.is_empty() && !st.closing {
                st.writer_waiting = true;
                st = shared.writer_wake.wait(st).expect("ingest lock");
                st.writer_waiting = false;
            }
            if st.pending.is_empty() {
                return;
            }
            let n = st.pending.len().min(wal::MAX_EVENTS_PER_RECORD);
            (st.pending.drain(..n).collect(), st.poisoned.clone())
        };
        let first = batch[0].seq;
        let last = batch[batch.len() - 1].seq;
        // After a failed fsync the log cannot vouch for anything: never append behind it.
        let refused = poisoned.map_or_else(|| heal(shared, &mut log, &mut broken), Err);
        // Refused without trying: the failure was logged when it happened.
        let attempted = refused.is_ok();
        let result = match refused {
            Err(reason) => Err(AppendError::Write(wal::WalError::Io {
                op: "append",
                path: shared.config.wal_dir.clone(),
                source: std::io::Error::other(reason),
            })),
            Ok(()) => {
                framed.clear();
                wal::frame(&mut framed, first, batch.iter().map(|p| p.json.as_slice()));
                let r = log.append(first, &framed);
                shared.fsyncs.fetch_add(1, Ordering::Relaxed);
                r
            }
        };
        match result {
            Ok(()) => {
                let (events, dones): (Vec<Event>, Vec<_>) =
                    batch.into_iter().map(|p| (p.event, p.done)).unzip();
                // Buffer before acknowledging, so whatever was acknowledged is in the buffer
                // (an explicit flush or the live state sees it).
                let chunk = build_chunk(
                    &shared.node,
                    first,
                    last,
                    &events,
                    shared.store.clock().timer_micros(),
                );
                let full = {
                    let mut st = shared.state.lock().expect("ingest lock");
                    match chunk {
                        Ok(c) => st.buffer.push(c),
                        // Validated events always fit their schema. If one did not, it is
                        // safe in the log but could never be flushed, and a later checkpoint
                        // would skip it: stop accepting rather than lose it quietly.
                        Err(e) => {
                            tracing::error!(error = %e, first, last, "could not buffer durable events; refusing new postbacks");
                            st.poisoned = Some(format!(
                                "internal error buffering events {first}..={last}: {e}"
                            ));
                        }
                    }
                    st.unflushed >= shared.config.flush_rows
                };
                // Before the acknowledgements: whoever reads the live state after an ack finds
                // the event at least on its way.
                if let Some(sink) = &shared.sink {
                    sink.durable(first, events);
                }
                shared
                    .recorded
                    .fetch_add(dones.len() as u64, Ordering::Relaxed);
                shared.durable.send_replace(last);
                shared.resolved.send_replace(last);
                for done in dones {
                    let _ = done.send(Ok(()));
                }
                if full {
                    shared.flush_now.notify_one();
                }
            }
            Err(e) => {
                let reason = e.to_string();
                if attempted {
                    tracing::error!(error = %reason, "write-ahead log append failed; postbacks get 503");
                }
                {
                    let mut st = shared.state.lock().expect("ingest lock");
                    for p in &batch {
                        if let Some(k) = p.key
                            && st.seen.get(&k) == Some(&p.seq)
                        {
                            st.seen.remove(&k);
                        }
                    }
                    st.unflushed -= batch.len();
                    if let AppendError::Sync(_) = e {
                        broken = Some((reason.clone(), Instant::now()));
                        st.log_error = Some(reason.clone());
                    }
                }
                // Let duplicates waiting on these sequences wake and see the keys are gone.
                shared.resolved.send_replace(last);
                for p in batch {
                    let _ = p.done.send(Err(Rejected::Unavailable(reason.clone())));
                }
            }
        }
    }
}

/// How often a broken log is tried again; postbacks in between get 503 at once.
const HEAL_INTERVAL: Duration = Duration::from_millis(200);

/// `Ok` when the log may be appended to: it is healthy, or it was broken by a failed fsync and
/// [`wal::Writer::recover`] now succeeds (the disk is back). Otherwise the reason to refuse.
fn heal(
    shared: &Shared,
    log: &mut wal::Writer,
    broken: &mut Option<(String, Instant)>,
) -> Result<(), String> {
    let Some((reason, since)) = broken else {
        return Ok(());
    };
    if since.elapsed() < HEAL_INTERVAL {
        return Err(reason.clone());
    }
    match log.recover() {
        Ok(()) => {
            tracing::warn!(after = %reason, "write-ahead log recovered; accepting postbacks again");
            *broken = None;
            shared.state.lock().expect("ingest lock").log_error = None;
            Ok(())
        }
        Err(e) => {
            let reason = format!("write-ahead log still failing: {e}");
            *broken = Some((reason.clone(), Instant::now()));
            shared.state.lock().expect("ingest lock").log_error = Some(reason.clone());
            Err(reason)
        }
    }
}

/// Fails everything pending if the writer thread unwinds, so no postback waits forever on a
/// log that is gone.
struct WriterGuard<'a>(&'a Shared);

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        let Ok(mut st) = self.0.state.lock() else {
            return;
        };
        st.poisoned = Some("write-ahead log thread stopped".into());
        let pending = std::mem::take(&mut st.pending);
        st.unflushed -= pending.len();
        for p in pending {
            let _ = p.done.send(Err(Rejected::Unavailable(
                "write-ahead log thread stopped".into(),
            )));
        }
    }
}

/// Base delay between flush retries after an object-store failure; doubled up to
/// [`FLUSH_RETRY_MAX`]. The log keeps the data meanwhile.
const FLUSH_RETRY_BASE: Duration = Duration::from_millis(200);
const FLUSH_RETRY_MAX: Duration = Duration::from_secs(30);

/// How often the buffer's small batches are merged ([`tidy_buffer`]).
const TIDY_INTERVAL: Duration = Duration::from_secs(1);

/// The next multiple of `interval` since the Unix epoch by `clock` (microseconds), and how
/// long (in real time) until it comes: flushes fall on the same times of every UTC day (with
/// 30 minutes: :00 and :30) and a day gets at most `1 day / interval` of them.
fn next_boundary(clock: &netrev_storage::Clock, interval: Duration) -> (i64, Duration) {
    let interval_us = interval_micros(interval);
    let now = clock.timer_micros();
    let left = interval_us - now.rem_euclid(interval_us);
    let wait = clock.real_wait(Duration::from_micros(left.unsigned_abs()));
    (now.saturating_add(left), wait)
}

fn interval_micros(interval: Duration) -> i64 {
    i64::try_from(interval.as_micros())
        .unwrap_or(i64::MAX)
        .max(1)
}

async fn flusher_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    use tokio::time::Instant;
    let interval = shared.config.flush_interval;
    let mut delay = FLUSH_RETRY_BASE;
    // The next boundary (by the clock, and when it comes), or sooner: to retry a failed
    // flush, or when the buffer is full.
    let (mut boundary, wait) = next_boundary(shared.store.clock(), interval);
    let mut next_flush = Instant::now() + wait;
    // Set after a failed flush: no flush before then, however full the buffer (backoff).
    let mut retry_at: Option<Instant> = None;
    loop {
        let tidy = Instant::now() + TIDY_INTERVAL;
        // A flush at a boundary (not one forced by a full buffer, nor a retry) takes only the
        // chunks received before it, so a day's first file is not a few seconds of events.
        let mut at_boundary = retry_at.is_none();
        tokio::select! {
            _ = tokio::time::sleep_until(next_flush.min(tidy)) => {}
            _ = shared.flush_now.notified() => {
                next_flush = retry_at.map_or(Instant::now(), |at| at.max(Instant::now()));
                at_boundary = false;
            }
            _ = stop.changed() => return,
        }
        if Instant::now() < next_flush {
            let _guard = shared.flush_lock.lock().await;
            tidy_buffer(&shared).await;
            continue;
        }
        let before = at_boundary.then_some(boundary);
        let result = flush_once(&shared, before).await;
        shared.state.lock().expect("ingest lock").flush_error =
            result.as_ref().err().map(|e| e.to_string());
        match result {
            Ok(()) => {
                delay = FLUSH_RETRY_BASE;
                retry_at = None;
                let wait;
                (boundary, wait) = next_boundary(shared.store.clock(), interval);
                next_flush = Instant::now() + wait;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "flush to Parquet failed; will retry");
                next_flush = Instant::now() + delay;
                retry_at = Some(next_flush);
                delay = (delay * 2).min(FLUSH_RETRY_MAX);
            }
        }
    }
}

/// Writes the buffered chunks (those received `before` a time, if given) as one file per
/// partition, then advances the checkpoint and trims the log. A unit that failed is retried
/// first, alone and under the same file names, so files it already wrote are not written
/// again under another range (which would duplicate their rows).
async fn flush_once(shared: &Shared, before: Option<i64>) -> Result<()> {
    let _guard = shared.flush_lock.lock().await;
    loop {
        // The unit stays where queries find it ([`Buffer::unpersisted`]) until its files are
        // written: a query meanwhile reads each row from the buffer or, once a file lists it,
        // from the file. Under the flush lock only the writer changes the buffer, by appending.
        let (chunks, retrying) = {
            let st = shared.state.lock().expect("ingest lock");
            match &st.failed_flush {
                Some(unit) => (unit.clone(), true),
                None => {
                    let take = before.map_or(st.buffer.len(), |b| {
                        st.buffer.iter().take_while(|c| c.received < b).count()
                    });
                    (st.buffer.iter().take(take).cloned().collect(), false)
                }
            }
        };
        if chunks.is_empty() {
            return Ok(());
        }
        let result = write_unit(shared, &chunks).await;
        let mut st = shared.state.lock().expect("ingest lock");
        match result {
            Ok(rows) => {
                st.unflushed -= rows;
                if retrying {
                    st.failed_flush = None;
                } else {
                    st.buffer.drain(..chunks.len());
                    return Ok(());
                }
            }
            Err(e) => {
                if !retrying {
                    let unit = st.buffer.drain(..chunks.len()).collect();
                    st.failed_flush = Some(unit);
                }
                return Err(e);
            }
        }
    }
}

/// Writes one flush unit: a file per partition named by the unit's sequence range, then the
/// checkpoint. Returns the rows written.
async fn write_unit(shared: &Shared, chunks: &[Chunk]) -> Result<usize> {
    let first = chunks[0].first_seq;
    let last = chunks[chunks.len() - 1].last_seq;
    let rows: usize = chunks.iter().map(|c| c.rows).sum();
    let mut parts: BTreeMap<(Table, NaiveDate), Vec<RecordBatch>> = BTreeMap::new();
    for c in chunks {
        for p in &c.parts {
            parts
                .entry((p.table, p.date))
                .or_default()
                .push(p.batch.clone());
        }
    }
    for ((table, date), batches) in &parts {
        let path = layout::raw_file(*table, *date, &shared.node, first, last);
        // Group commits make many small batches; one contiguous batch encodes much faster.
        // Encoding is CPU work, kept off the threads that serve postbacks.
        let batches = batches.clone();
        let bytes = tokio::task::spawn_blocking(move || -> Result<bytes::Bytes> {
            let one = arrow::compute::concat_batches(&batches[0].schema(), &batches)
                .map_err(netrev_storage::Error::from)?;
            Ok(netrev_storage::store::encode_parquet(&[one])?)
        })
        .await
        .expect("encode task panicked")?;
        // A file of this name can only exist from an earlier attempt at this very unit, with
        // the same rows: never overwrite.
        netrev_storage::failpoint::check("raw-put").map_err(|e| {
            netrev_storage::Error::from(object_store::Error::Generic {
                store: "failpoint",
                source: Box::new(e),
            })
        })?;
        if shared.store.put_if_absent(&path, bytes).await? {
            shared.files_written.fetch_add(1, Ordering::Relaxed);
        }
    }
    let dir = shared.config.wal_dir.clone();
    // Records a consumer has not processed stay in the log (see `open_held`).
    let keep = shared
        .hold
        .as_ref()
        .map_or(last, |h| h.load(Ordering::Acquire).min(last));
    tokio::task::spawn_blocking(move || -> Result<()> {
        wal::write_checkpoint(&dir, keep)?;
        wal::remove_flushed(&dir, keep)?;
        Ok(())
    })
    .await
    .expect("checkpoint task panicked")?;
    shared.flushed_seq.store(last, Ordering::Release);
    tracing::debug!(first, last, rows, files = parts.len(), "flushed to Parquet");
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netrev_storage::{Conversion, Refund, RefundType};
    use rust_decimal::Decimal;

    const DAY1: i64 = 1_795_000_000_000_000;
    const DAY2: i64 = DAY1 + 86_400_000_000;

    fn conv(i: i64, ts: i64) -> Event {
        Event::Conversion(Conversion {
            cid: format!("c{i}"),
            ts,
            amount: Decimal::new(1000 + i, 2),
            txid: Some(format!("t{i}")),
            kind: None,
        })
    }

    fn refund(i: i64, ts: i64) -> Event {
        Event::Refund(Refund {
            cid: format!("c{i}"),
            ts,
            amount: Decimal::new(100 + i, 2),
            txid: None,
            kind: RefundType::Chargeback,
            reference: None,
        })
    }

    fn config(dir: &std::path::Path) -> IngestConfig {
        IngestConfig {
            wal_dir: dir.join("wal"),
            node_id: Some("n1".into()),
            // Flushes happen only when a test asks.
            flush_interval: Duration::from_secs(3600),
            ..IngestConfig::default()
        }
    }

    async fn stored(store: &Store) -> Vec<Event> {
        let mut all = Vec::new();
        for t in Table::ALL {
            all.extend(read_all(store, t).await.unwrap());
        }
        all.sort_by_key(|e| (e.table(), e.ts()));
        all
    }

    fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
        let _ = std::fs::remove_dir_all(to);
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }

    /// A consumer holding the log: what it has not processed stays in the log once flushed,
    /// is offered again after a crash (without a second copy in Parquet), and is let go by
    /// the flush after it is processed.
    #[tokio::test]
    async fn a_held_log_replays_what_its_consumer_had_not_processed() {
        /// A consumer that keeps what it is given.
        #[derive(Default)]
        struct Kept(Mutex<Vec<(u64, Event)>>);
        impl DurableSink for Kept {
            fn durable(&self, first: u64, events: Vec<Event>) {
                let mut kept = self.0.lock().unwrap();
                kept.extend((first..).zip(events));
            }
        }
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("data").to_str().unwrap()).unwrap();
        let events: Vec<Event> = (0..5).map(|i| conv(i, DAY1 + i)).collect();
        let open = || async {
            let sink = Arc::new(Kept::default());
            let (ing, held) = Ingestor::open_held(store.clone(), config(tmp.path()), sink.clone())
                .await
                .unwrap();
            (ing, held, sink)
        };
        let (ing, held, sink) = open().await;
        assert_eq!(held.processed.load(Ordering::Acquire), 0);
        for e in &events[..4] {
            ing.submit(e.clone()).await.unwrap();
        }
        let given: Vec<(u64, Event)> = (1..).zip(events[..4].iter().cloned()).collect();
        assert_eq!(*sink.0.lock().unwrap(), given);
        held.processed.store(2, Ordering::Release);
        ing.flush().await.unwrap();
        assert_eq!(ing.stats().flushed_seq, 4);
        let wal = tmp.path().join("wal");
        assert_eq!(wal::read_checkpoint(&wal).unwrap(), 2);
        drop(ing); // a crash

        let (ing, held, _) = open().await;
        assert_eq!(ing.stats().buffered_events, 0, "all of it is in Parquet");
        assert_eq!(ing.stats().flushed_seq, 4);
        assert_eq!(
            held.replayed,
            vec![(3, events[2].clone()), (4, events[3].clone())]
        );
        assert_eq!(stored(&store).await, events[..4].to_vec());
        assert_eq!(held.processed.load(Ordering::Acquire), 2);
        held.processed.store(4, Ordering::Release);
        ing.submit(events[4].clone()).await.unwrap();
        ing.flush().await.unwrap();
        assert_eq!(wal::read_checkpoint(&wal).unwrap(), 4);
        drop(ing);

        let (_, held, _) = open().await;
        assert_eq!(held.replayed, vec![(5, events[4].clone())]);
        assert_eq!(stored(&store).await, events);
    }

    /// A crash after the Parquet files were written but before the checkpoint: on restart the
    /// whole log is replayed, and the files' sequence ranges keep every event out of a second
    /// copy. With one partition's file missing (a crash between two files), exactly that
    /// partition is written again.
    #[tokio::test]
    async fn replay_after_flush_without_checkpoint_is_exactly_once() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("data").to_str().unwrap()).unwrap();
        let events: Vec<Event> = (0..6)
            .flat_map(|i| {
                [
                    conv(i, if i % 2 == 0 { DAY1 } else { DAY2 } + i),
                    refund(i, DAY1 + i),
                ]
            })
            .collect();
        let ing = Ingestor::open(store.clone(), config(tmp.path()))
            .await
            .unwrap();
        for e in &events {
            assert!(matches!(
                ing.submit(e.clone()).await,
                Ok(Outcome::Recorded(_))
            ));
        }
        // The log as it was just before the flush (what a crash before the checkpoint leaves).
        let wal = tmp.path().join("wal");
        copy_dir(&wal, &tmp.path().join("wal-before"));
        ing.flush().await.unwrap();
        assert_eq!(ing.stats().flushed_seq, 12);
        drop(ing);
        let mut want = events.clone();
        want.sort_by_key(|e| (e.table(), e.ts()));
        assert_eq!(stored(&store).await, want);

        // Crash before the checkpoint: every file written.
        copy_dir(&tmp.path().join("wal-before"), &wal);
        let ing = Ingestor::open(store.clone(), config(tmp.path()))
            .await
            .unwrap();
        assert_eq!(
            ing.stats().buffered_events,
            0,
            "everything was covered by files"
        );
        ing.shutdown().await.unwrap();
        drop(ing);
        assert_eq!(stored(&store).await, want);

        // Crash between files: the day-2 conversions file is missing.
        copy_dir(&tmp.path().join("wal-before"), &wal);
        let day2 = chrono::NaiveDate::from_ymd_opt(2026, 11, 19).unwrap();
        assert_eq!(model::date_of_micros(DAY2), day2);
        let lost = layout::raw_file(Table::Conversions, day2, "n1", 1, 12);
        store.delete(&lost).await.unwrap();
        let ing = Ingestor::open(store.clone(), config(tmp.path()))
            .await
            .unwrap();
        assert_eq!(ing.stats().buffered_events, 3);
        ing.shutdown().await.unwrap();
        drop(ing);
        assert_eq!(stored(&store).await, want);
    }

    /// After a failed fsync the log continues in a segment named by the next sequence, past
    /// the refused ones; if that segment is still empty at a restart, the restarted log must
    /// not start below it, or trimming would take the newer-named empty segment for the one
    /// being written and delete the real one.
    #[tokio::test]
    async fn a_restart_never_writes_below_the_newest_segment() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("data").to_str().unwrap()).unwrap();
        let cfg = config(tmp.path());
        let ing = Ingestor::open(store.clone(), cfg.clone()).await.unwrap();
        assert!(matches!(
            ing.submit(conv(1, DAY1)).await,
            Ok(Outcome::Recorded(1))
        ));
        drop(ing);
        // What a recovered log leaves: an empty segment for sequence 50 onwards.
        let empty = cfg.wal_dir.join(format!("{:020}.wal", 50));
        std::fs::write(&empty, wal::MAGIC).unwrap();
        let ing = Ingestor::open(store.clone(), cfg.clone()).await.unwrap();
        let Ok(Outcome::Recorded(seq)) = ing.submit(conv(2, DAY1)).await else {
            panic!("recorded")
        };
        assert!(seq >= 50, "sequence {seq} written below the newest segment");
        ing.flush().await.unwrap();
        // Trimming after the flush kept the segment being written: a third event written
        // now survives a crash.
        assert!(matches!(
            ing.submit(conv(3, DAY1)).await,
            Ok(Outcome::Recorded(_))
        ));
        drop(ing);
        let replayed = wal::replay(&cfg.wal_dir).unwrap();
        assert_eq!(replayed.last().map(|r| r.seq), Some(seq + 1));
    }

    #[tokio::test]
    async fn duplicates_are_acknowledged_but_stored_once() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("data").to_str().unwrap()).unwrap();
        let ing = Ingestor::open(store.clone(), config(tmp.path()))
            .await
            .unwrap();
        let results = futures::future::join_all((0..20).map(|_| ing.submit(conv(1, DAY1)))).await;
        let recorded = results
            .iter()
            .filter(|r| matches!(r, Ok(Outcome::Recorded(_))))
            .count();
        let dups = results
            .iter()
            .filter(|r| matches!(r, Ok(Outcome::Duplicate)))
            .count();
        assert_eq!((recorded, dups), (1, 19));
        ing.shutdown().await.unwrap();
        drop(ing);
        // After a restart the key comes from Parquet.
        let ing = Ingestor::open(store.clone(), config(tmp.path()))
            .await
            .unwrap();
        assert_eq!(ing.submit(conv(1, DAY2)).await, Ok(Outcome::Duplicate));
        assert!(matches!(
            ing.submit(conv(2, DAY2)).await,
            Ok(Outcome::Recorded(_))
        ));
        ing.shutdown().await.unwrap();
        assert_eq!(stored(&store).await.len(), 2);
    }

    #[tokio::test]
    async fn full_buffer_refuses_instead_of_queueing() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("data").to_str().unwrap()).unwrap();
        let cfg = IngestConfig {
            max_buffered: 3,
            ..config(tmp.path())
        };
        let ing = Ingestor::open(store.clone(), cfg).await.unwrap();
        for i in 0..3 {
            assert!(ing.submit(conv(i, DAY1)).await.is_ok());
        }
        assert_eq!(ing.submit(conv(9, DAY1)).await, Err(Rejected::Busy));
        ing.flush().await.unwrap();
        assert!(ing.submit(conv(9, DAY1)).await.is_ok());
        ing.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn restarts_without_events_in_between() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("data").to_str().unwrap()).unwrap();
        for round in 0..3 {
            let ing = Ingestor::open(store.clone(), config(tmp.path()))
                .await
                .unwrap();
            if round == 1 {
                ing.submit(conv(1, DAY1)).await.unwrap();
            }
            // Dropped without shutdown: like a crash.
        }
        let ing = Ingestor::open(store.clone(), config(tmp.path()))
            .await
            .unwrap();
        ing.shutdown().await.unwrap();
        assert_eq!(stored(&store).await.len(), 1);
    }

    /// The (table, date, sequence) of every row a buffer holds, sorted.
    fn rows_of(parts: &[Unpersisted]) -> Vec<(Table, NaiveDate, u64)> {
        let mut rows: Vec<_> = parts
            .iter()
            .flat_map(|p| {
                assert_eq!(p.seqs.len(), p.batch.num_rows());
                assert_eq!(&*p.node, "n1");
                p.seqs.iter().map(|&s| (p.table, p.date, s))
            })
            .collect();
        rows.sort();
        rows
    }

    /// Until the flush, acknowledged events are read from the buffer (each row with its
    /// sequence), whose group commits merge into one batch per partition, and from the log
    /// by a reader beside the writer; after it, from the files only.
    #[tokio::test]
    async fn unflushed_events_are_read_from_the_buffer_and_from_the_log() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("data").to_str().unwrap()).unwrap();
        let ing = Ingestor::open(store.clone(), config(tmp.path()))
            .await
            .unwrap();
        for i in 0..50 {
            ing.submit(conv(i, DAY1)).await.unwrap();
        }
        for i in 0..10 {
            ing.submit(refund(i, DAY2)).await.unwrap();
        }
        let buffered = rows_of(&store.unpersisted());
        assert_eq!(buffered.len(), 60);
        assert_eq!(
            buffered.iter().filter(|r| r.0 == Table::Refunds).count(),
            10
        );
        assert!(stored(&store).await.is_empty());
        let from_log = read_unpersisted(&tmp.path().join("wal")).unwrap().unwrap();
        assert_eq!(rows_of(&from_log.0), buffered);

        {
            let _flushing = ing.shared.flush_lock.lock().await;
            tidy_buffer(&ing.shared).await;
        }
        let parts = store.unpersisted();
        assert_eq!(parts.len(), 2, "one batch per partition");
        assert_eq!(rows_of(&parts), buffered);

        ing.flush().await.unwrap();
        assert!(store.unpersisted().is_empty());
        assert_eq!(stored(&store).await.len(), 60);
        let from_log = read_unpersisted(&tmp.path().join("wal")).unwrap().unwrap();
        assert!(from_log.0.is_empty(), "the checkpoint passed them");
        assert!(
            read_unpersisted(&tmp.path().join("nothing"))
                .unwrap()
                .is_none()
        );
        ing.shutdown().await.unwrap();
    }

    /// A flush at a boundary writes what was received before it; what came after (the next
    /// day's first events, at midnight) waits for the next flush, so it does not open a day
    /// with a small file. Merging small batches never joins the two sides either.
    #[tokio::test]
    async fn a_boundary_flush_leaves_what_came_after_it() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("data").to_str().unwrap()).unwrap();
        let ing = Ingestor::open(store.clone(), config(tmp.path()))
            .await
            .unwrap();
        let hour = 3_600_000_000;
        let shared = &ing.shared;
        // Marks the chunks taken in since the last call as received `at`, then merges.
        let tidy_as_received = |at: i64| async move {
            let _flushing = shared.flush_lock.lock().await;
            {
                let mut st = shared.state.lock().unwrap();
                for c in st.buffer.iter_mut().filter(|c| c.received > hour * 2) {
                    c.received = at;
                }
            }
            tidy_buffer(shared).await;
            shared.state.lock().unwrap().buffer.len()
        };
        for i in 0..30 {
            ing.submit(conv(i, DAY1)).await.unwrap();
        }
        assert_eq!(tidy_as_received(hour - 1).await, 1);
        for i in 0..20 {
            ing.submit(refund(i, DAY2)).await.unwrap();
        }
        assert_eq!(
            tidy_as_received(hour + 1).await,
            2,
            "not merged across the boundary"
        );
        flush_once(&ing.shared, Some(hour)).await.unwrap();
        let files = stored(&store).await;
        assert_eq!(files.len(), 30);
        assert!(files.iter().all(|e| e.table() == Table::Conversions));
        assert_eq!(rows_of(&store.unpersisted()).len(), 20);
        ing.flush().await.unwrap();
        assert_eq!(stored(&store).await.len(), 50);
        ing.shutdown().await.unwrap();
    }

    #[test]
    fn flushes_fall_on_multiples_of_the_interval() {
        let interval = Duration::from_secs(30 * 60);
        let system = netrev_storage::Clock::default();
        let (_, left) = next_boundary(&system, interval);
        assert!(left > Duration::ZERO && left <= interval);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let at = (now + left).as_secs_f64();
        let off = at % interval.as_secs_f64();
        assert!(off < 1.0 || interval.as_secs_f64() - off < 1.0, "{off}");
        // A clock 1,440 times as fast: the next :00 or :30 of its time comes within 1.25 s.
        let fast = netrev_storage::Clock::accelerated(1440);
        let (at, left) = next_boundary(&fast, interval);
        assert_eq!(at.rem_euclid(1_800_000_000), 0);
        assert!(left <= Duration::from_millis(1250), "{left:?}");
        let at = fast.now_micros() + i64::try_from(left.as_micros()).unwrap() * 1440;
        let off = at.rem_euclid(1_800_000_000);
        assert!(
            !(2_000_000..1_798_000_000).contains(&off),
            "{off} µs past a boundary"
        );
    }

    /// An in-memory object store whose puts under `events/refunds/` fail while `failures`
    /// is above zero: an object store timing out in the middle of a flush.
    #[derive(Debug)]
    struct Flaky {
        inner: object_store::memory::InMemory,
        failures: std::sync::atomic::AtomicUsize,
    }

    impl std::fmt::Display for Flaky {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Flaky")
        }
    }

    #[async_trait::async_trait]
    impl object_store::ObjectStore for Flaky {
        async fn put_opts(
            &self,
            location: &object_store::path::Path,
            payload: object_store::PutPayload,
            opts: object_store::PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            if location.as_ref().starts_with("events/refunds/")
                && self
                    .failures
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
            {
                return Err(object_store::Error::Generic {
                    store: "Flaky",
                    source: "injected timeout".into(),
                });
            }
            self.inner.put_opts(location, payload, opts).await
        }
        async fn put_multipart_opts(
            &self,
            location: &object_store::path::Path,
            opts: object_store::PutMultipartOptions,
        ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }
        async fn get_opts(
            &self,
            location: &object_store::path::Path,
            options: object_store::GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            self.inner.get_opts(location, options).await
        }
        fn delete_stream(
            &self,
            locations: futures::stream::BoxStream<
                'static,
                object_store::Result<object_store::path::Path>,
            >,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>>
        {
            self.inner.delete_stream(locations)
        }
        fn list(
            &self,
            prefix: Option<&object_store::path::Path>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>
        {
            self.inner.list(prefix)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&object_store::path::Path>,
        ) -> object_store::Result<object_store::ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &object_store::path::Path,
            to: &object_store::path::Path,
            options: object_store::CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    /// A flush that fails after writing some partitions is retried as the same unit: the
    /// partitions it already wrote are not written again under a wider range, so no row is
    /// stored twice, and nothing is lost.
    #[tokio::test]
    async fn failed_flush_is_retried_as_the_same_unit() {
        let tmp = tempfile::tempdir().unwrap();
        let flaky = Arc::new(Flaky {
            inner: object_store::memory::InMemory::new(),
            failures: std::sync::atomic::AtomicUsize::new(2),
        });
        let store = Store::from_object_store(flaky.clone(), "memory://flaky");
        let ing = Ingestor::open(store.clone(), config(tmp.path()))
            .await
            .unwrap();
        let mut want = Vec::new();
        for i in 0..3 {
            for e in [conv(i, DAY1 + i), refund(i, DAY1 + i)] {
                ing.submit(e.clone()).await.unwrap();
                want.push(e);
            }
        }
        assert!(
            ing.flush().await.is_err(),
            "refunds fail, conversions are written"
        );
        for i in 3..5 {
            for e in [conv(i, DAY1 + i), refund(i, DAY1 + i)] {
                ing.submit(e.clone()).await.unwrap();
                want.push(e);
            }
        }
        assert!(ing.flush().await.is_err(), "the retry fails again");
        assert_eq!(ing.stats().buffered_events, 10);
        // The failed unit and the newer events stay readable: once each, with files or not.
        assert_eq!(rows_of(&store.unpersisted()).len(), 10);
        ing.flush().await.unwrap();
        assert_eq!(ing.stats().buffered_events, 0);
        assert_eq!(ing.stats().flushed_seq, 10);
        want.sort_by_key(|e| (e.table(), e.ts()));
        assert_eq!(stored(&store).await, want);
        ing.shutdown().await.unwrap();
    }

    /// A crash after a flush wrote some partitions of its unit: the rest of that unit goes out
    /// again under the unit's own name (so no file's range holds another's), the events after
    /// it under theirs, each row readable meanwhile with its own sequence.
    #[tokio::test]
    async fn a_half_written_flush_is_finished_under_its_own_name() {
        let tmp = tempfile::tempdir().unwrap();
        let flaky = Arc::new(Flaky {
            inner: object_store::memory::InMemory::new(),
            failures: std::sync::atomic::AtomicUsize::new(1),
        });
        let store = Store::from_object_store(flaky.clone(), "memory://flaky");
        let ing = Ingestor::open(store.clone(), config(tmp.path()))
            .await
            .unwrap();
        let mut want = Vec::new();
        for i in 0..3 {
            for e in [conv(i, DAY1 + i), refund(i, DAY1 + i)] {
                ing.submit(e.clone()).await.unwrap();
                want.push(e);
            }
        }
        assert!(
            ing.flush().await.is_err(),
            "conversions written, refunds not"
        );
        for i in 3..5 {
            ing.submit(conv(i, DAY1 + i)).await.unwrap();
            want.push(conv(i, DAY1 + i));
        }
        drop(ing); // a crash: the unit 1..=6 is half written, 7..=8 only in the log

        let ing = Ingestor::open(store.clone(), config(tmp.path()))
            .await
            .unwrap();
        // Refunds 2, 4, 6 and conversions 7, 8, numbered as they were.
        let mut seqs: Vec<u64> = rows_of(&store.unpersisted()).iter().map(|r| r.2).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, [2, 4, 6, 7, 8]);
        ing.flush().await.unwrap();
        let mut names: Vec<String> = Vec::new();
        for t in Table::ALL {
            for m in store.raw_files(t).await.unwrap() {
                names.push(format!("{}/{}", t.name(), m.location.filename().unwrap()));
            }
        }
        names.sort();
        let name = |t: &str, a: u64, b: u64| format!("{t}/n1-{a:020}-{b:020}.parquet");
        assert_eq!(
            names,
            [
                name("conversions", 1, 6),
                name("conversions", 7, 8),
                name("refunds", 1, 6)
            ]
        );
        want.sort_by_key(|e| (e.table(), e.ts()));
        assert_eq!(stored(&store).await, want);
        ing.shutdown().await.unwrap();
    }

    /// A node that lost its log directory (same node ID, fresh log) continues after the
    /// sequences in its existing file names instead of reusing them.
    #[tokio::test]
    async fn sequences_are_never_reused_after_losing_the_log() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("data").to_str().unwrap()).unwrap();
        let ing = Ingestor::open(store.clone(), config(tmp.path()))
            .await
            .unwrap();
        for i in 0..4 {
            ing.submit(conv(i, DAY1)).await.unwrap();
        }
        ing.shutdown().await.unwrap();
        drop(ing);
        std::fs::remove_dir_all(tmp.path().join("wal")).unwrap();
        let ing = Ingestor::open(store.clone(), config(tmp.path()))
            .await
            .unwrap();
        assert_eq!(ing.submit(conv(9, DAY1)).await, Ok(Outcome::Recorded(5)));
        ing.shutdown().await.unwrap();
        assert_eq!(stored(&store).await.len(), 5);
        // A different configured node ID for the same log is refused.
        let other = IngestConfig {
            node_id: Some("n2".into()),
            ..config(tmp.path())
        };
        let err = Ingestor::open(store.clone(), other).await.unwrap_err();
        assert!(err.to_string().contains("belongs to node"), "{err}");
    }
}

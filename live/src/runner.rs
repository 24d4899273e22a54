//! The live stats inside `serve`: every durable event goes from the ingest writer to one
//! thread that applies it to the updating aggregate ([`LiveStats`]) within milliseconds, and
//! rewrites the `stats_hourly` partitions it changed every `persist_every`.
//!
//! Where the state comes from (and why nothing counts twice):
//! - A *rebase* builds a fresh state from a batch recompute over a snapshot of the raw files.
//!   Before the snapshot is listed, the ingestor's flushed sequence `F` is read: every event
//!   up to `F` is in a file the snapshot holds.
//! - The thread keeps the events it received that may not be in a file yet (sequence above
//!   the ingestor's flushed sequence, and above `F` while a rebase runs). Once the new state
//!   is built, those above `F` are applied to it, then it replaces the old one.
//! - Applying an event that the state already holds changes nothing (the per-click state
//!   deduplicates exactly as the SQL jobs do), so an event both in the snapshot and re-applied
//!   counts once.
//!
//! At start (after the events replayed from the write-ahead log are flushed) the state is
//! restored from its checkpoint beside the log ([`checkpoint`]), given the events of the raw
//! files the checkpoint may not hold; the first recompute then runs by difference from what
//! the last one read (kept beside it too), or in full but for `stats_hourly`. Without a
//! usable checkpoint (none, damaged, another node's or root's, too far behind) the first
//! rebase is full. Either way a restart, also after kill -9, gives a batch recompute's
//! numbers. The scheduled recomputes after it run by difference and keep the state: they hand
//! it the events of files other nodes and imports wrote, move its horizon on (old clicks leave
//! memory and stay findable in Parquet, see `click_lookup`) and point its lookup at the new
//! files; one that cannot runs in full and rebases. After each, the closed days' raw files
//! are compacted (local roots).
//!
//! The live thread writes the checkpoint after each recompute it takes, every
//! `checkpoint_every` while events arrive and when stopped; not while a full recompute runs,
//! a partition write fails or an event waits for a lookup (the previous one then stays).

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::NaiveDate;

use netrev_ingest::{DurableSink, Held, Ingestor};
use netrev_pipeline::incremental::{self, Seen};
use netrev_pipeline::recompute::{self, Progress, Report};
use object_store::path::Path;

use crate::checkpoint;
use crate::click_lookup::ParquetClicks;
use crate::state::{Attributed, AttributionSink, ClickLookup, LiveStats, NoLookup};
use netrev_storage::{Event, Store};

#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// UTC days of clicks (today included) held in memory; older ones are looked up.
    pub days: u32,
    /// How often changed `stats_hourly` partitions are rewritten.
    pub persist_every: Duration,
    /// Time between rebases (the scheduled recompute); `None`: only the one at start.
    pub rebase_every: Option<Duration>,
    /// Time between checkpoints of the live state while events arrive (beside the write-ahead
    /// log: [`checkpoint`]); they are also written after each recompute the state takes and
    /// when the service stops, and a start restores the state from one instead of
    /// recomputing in full. `None`: no checkpoints.
    pub checkpoint_every: Option<Duration>,
    /// Bytes (estimated) the events waiting for a click not known yet may take
    /// ([`LiveStats::limit_pending`]).
    pub pending_max: usize,
}

/// The default of `--live-pending-max-mib`.
pub const PENDING_MAX_MIB: usize = 32;

/// What the HTTP handlers read.
pub struct Live {
    /// `None` until the first rebase is done.
    pub state: RwLock<Option<LiveStats>>,
    /// Highest event sequence received from ingest and applied (or held for the next state).
    pub received_seq: AtomicU64,
    /// The same, for readers that wait for their own acknowledged events.
    applied: tokio::sync::watch::Sender<u64>,
    ingestor: Arc<Ingestor>,
    /// Sequence floor of a running rebase: events above it must be kept for the new state.
    floor: Mutex<Option<u64>>,
    /// Set by [`Live::stop`]; the live and recompute threads end when they see it.
    stopped: (Mutex<bool>, Condvar),
    /// The live thread, which [`Live::stop`] waits for (its last checkpoint).
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// How long a read waits for events acknowledged before it to be applied.
const READ_YOUR_WRITES: Duration = Duration::from_secs(1);

impl Live {
    /// Ends the live thread and the recompute thread (a recompute under way first finishes):
    /// for a service stopped inside a process that goes on ([`start`]'s threads would
    /// otherwise stay). Blocks until the live thread has applied what it was handed and
    /// written its checkpoint (seconds for a large state).
    pub fn stop(&self) {
        *self.stopped.0.lock().expect("stop lock") = true;
        self.stopped.1.notify_all();
        // The live thread applies what is left and writes its checkpoint, then ends.
        let thread = self.thread.lock().expect("thread lock").take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("the live thread panicked");
        }
    }

    /// Before a snapshot of the raw files is listed for a new state: the ingestor's flushed
    /// sequence, every event up to which is in a file the listing holds; the live thread keeps
    /// the events above it for the new state (until it is taken, or the floor let go).
    fn pin_floor(&self, ingestor: &Ingestor) -> u64 {
        let mut floor = self.floor.lock().expect("floor lock");
        let f = ingestor.flushed_seq();
        *floor = Some(f);
        f
    }

    fn is_stopped(&self) -> bool {
        *self.stopped.0.lock().expect("stop lock")
    }

    /// Waits `time`, or less if stopped meanwhile; returns whether it is stopped.
    fn sleep_unless_stopped(&self, time: Duration) -> bool {
        let stopped = self.stopped.0.lock().expect("stop lock");
        let (stopped, _) = self
            .stopped
            .1
            .wait_timeout_while(stopped, time, |s| !*s)
            .expect("stop lock");
        *stopped
    }

    /// The data root's clock (the "today" of a stats request without `to`).
    pub fn clock(&self) -> &netrev_storage::Clock {
        self.ingestor.clock()
    }

    /// Waits (at most a second) until every event acknowledged before this call is applied,
    /// so a read that follows an acknowledgement sees it. Returns whether it got there.
    pub async fn catch_up(&self) -> bool {
        let target = self.ingestor.durable_seq();
        let mut rx = self.applied.subscribe();
        matches!(
            tokio::time::timeout(READ_YOUR_WRITES, rx.wait_for(|&s| s >= target)).await,
            Ok(Ok(_))
        )
    }
}

/// A finished recompute, handed from the recompute thread to the live thread.
enum Rebased {
    /// A new state: a full recompute's, or the one restored from its checkpoint at start.
    Full {
        state: Box<LiveStats>,
        lookup: Box<ParquetClicks>,
        /// Every event up to this sequence is in the state's snapshot.
        flushed: u64,
        /// The raw files of that snapshot: the state holds every event of them.
        files: Arc<HashSet<Path>>,
        /// Days whose `stats_hourly` partition the state changed since it was written.
        changed: BTreeSet<NaiveDate>,
        /// For a state restored from its checkpoint with nothing applied since: the sequence
        /// up to which that checkpoint holds this node's events (it need not be written again).
        on_disk: Option<u64>,
    },
    /// A recompute by difference, the first recompute after a restore, or a compaction of
    /// closed days: the state stays, with what else the snapshot held.
    Refreshed {
        /// The raw files of its snapshot, for the lookup.
        files: Arc<HashSet<Path>>,
        /// Events in files this server did not write (other nodes, imports): not fed to it.
        foreign: Vec<Event>,
        /// The new horizon, when every click before it is in the snapshot's files.
        horizon: Option<NaiveDate>,
    },
}

/// Where the ingest writer hands durable events to the live thread: a channel, so the writer
/// never waits. Opened before the ingestor ([`Ingestor::open_held`]), handed to [`start`].
pub struct Feed(std::sync::mpsc::Sender<(u64, Vec<Event>)>);

/// The live thread's end of the [`Feed`].
pub struct FeedReceiver(Receiver<(u64, Vec<Event>)>);

/// A feed for [`Ingestor::open_held`] and its receiving end for [`start`].
pub fn feed() -> (Arc<Feed>, FeedReceiver) {
    let (tx, rx) = std::sync::mpsc::channel();
    (Arc::new(Feed(tx)), FeedReceiver(rx))
}

impl DurableSink for Feed {
    fn durable(&self, first: u64, events: Vec<Event>) {
        // The receiver is gone only when the live thread ended, which ends the server.
        let _ = self.0.send((first, events));
    }
}

/// Starts the live thread and the rebase (recompute) thread on the ingestor opened for `feed`
/// (with what it `held` for us); returns what the handlers read.
pub fn start(
    ingestor: Arc<Ingestor>,
    held: Held,
    feed: FeedReceiver,
    store: Store,
    config: LiveConfig,
    hooks: Arc<dyn AttributionSink>,
) -> crate::Result<Arc<Live>> {
    // Events durable before now are replayed into files and the first snapshot, not fed.
    let durable = ingestor.durable_seq();
    let live = Arc::new(Live {
        state: RwLock::new(None),
        received_seq: AtomicU64::new(durable),
        applied: tokio::sync::watch::Sender::new(durable),
        ingestor: ingestor.clone(),
        floor: Mutex::new(None),
        stopped: (Mutex::new(false), Condvar::new()),
        thread: Mutex::new(None),
    });
    let feed_rx = feed.0;
    // The webhooks must see every acknowledged conversion and refund, even one acknowledged
    // just before a crash: the log keeps what this thread has not handed to them yet, and
    // what it held at start is offered again.
    let Held {
        processed,
        replayed,
    } = held;
    let (rebased_tx, rebased_rx) = std::sync::mpsc::channel();
    let thread = {
        let (live, ingestor, store, config) = (
            live.clone(),
            ingestor.clone(),
            store.clone(),
            config.clone(),
        );
        std::thread::Builder::new()
            .name("netrev-live".into())
            .spawn(move || {
                let webhooks = Webhooks {
                    hooks: hooks.as_ref(),
                    processed: &processed,
                    replayed: Some(replayed.into_iter().map(|(_, e)| e).collect()),
                };
                apply_loop(
                    &live,
                    &ingestor,
                    &store,
                    &config,
                    webhooks,
                    &feed_rx,
                    &rebased_rx,
                );
            })?
    };
    *live.thread.lock().expect("thread lock") = Some(thread);
    {
        let live = live.clone();
        std::thread::Builder::new()
            .name("netrev-recompute".into())
            .spawn(move || rebase_loop(&live, &ingestor, &store, &config, &rebased_tx))?;
    }
    Ok(live)
}

/// First retry after a failed recompute; doubled up to the interval.
const RECOMPUTE_RETRY: Duration = Duration::from_secs(30);

/// Runs the recompute at start and then on schedule, on a thread and runtime of its own (the
/// SQL jobs are CPU-heavy; on the ingest runtime they would delay acknowledgements). At start
/// the live state is restored from its checkpoint when it can be (see the module's docs), else
/// the first recompute is full and rebuilds it from its snapshot; the scheduled ones rebuild by
/// difference what the events since the last one touched ([`incremental`]) and hand the live
/// state what it was not fed (other nodes' files, imports), or run in full when they cannot
/// (the last one's files were replaced). A failed run is logged and retried sooner, with
/// backoff, in full.
fn rebase_loop(
    live: &Live,
    ingestor: &Ingestor,
    store: &Store,
    config: &LiveConfig,
    rebased: &std::sync::mpsc::Sender<Rebased>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("recompute runtime");
    let mut retry = RECOMPUTE_RETRY;
    let mut first = true;
    // What the last recompute read, for the next one by difference.
    let mut seen: Option<Seen> = None;
    // The raw files of a live state restored from its checkpoint, until a recompute after it
    // is done: their events are not handed to it again. Without `seen` that recompute is
    // full (but for `stats_hourly`), the state kept.
    let mut held: Option<Arc<HashSet<Path>>> = None;
    if config.checkpoint_every.is_some() {
        let path = ingestor.wal_dir().join(checkpoint::FILE_NAME);
        let started = Instant::now();
        let (_, horizon) = live_days(store, config);
        match rt.block_on(restore(
            live,
            ingestor,
            store,
            &path,
            horizon,
            config.pending_max,
        )) {
            Ok(Some(RestoredState {
                state,
                lookup,
                flushed,
                files,
                events_from_files,
                changed,
                checkpointed_seq,
            })) => {
                tracing::info!(
                    live = ?state.sizes(),
                    events_applied = events_from_files,
                    secs = started.elapsed().as_secs_f64(),
                    "live stats restored from their checkpoint"
                );
                let full = Rebased::Full {
                    state,
                    lookup: Box::new(lookup),
                    flushed,
                    files: files.clone(),
                    changed,
                    on_disk: (events_from_files == 0).then_some(checkpointed_seq),
                };
                if rebased.send(full).is_err() {
                    return;
                }
                first = false;
                // The derived tables start from what the last recompute read, if it is known,
                // else from a full recompute.
                match Seen::read(
                    &ingestor.wal_dir().join(incremental::SEEN_FILE),
                    &checkpoint::owner(ingestor.node(), ingestor.click_id_key()),
                ) {
                    Ok(last) => seen = last,
                    Err(e) => {
                        tracing::warn!(error = %e, "what the last recompute read is unknown; the derived tables are recomputed in full");
                    }
                }
                held = Some(files);
            }
            Ok(None) => {}
            Err(e) => {
                *live.floor.lock().expect("floor lock") = None;
                tracing::warn!(error = %e, "the live state's checkpoint cannot be used; a full recompute rebuilds it");
            }
        }
    }
    loop {
        let started = Instant::now();
        let (today, horizon) = live_days(store, config);
        // A recompute that keeps the state: by difference, or the first after a restore.
        if seen.is_some() || held.is_some() {
            let last = seen.take();
            let by_difference = last.is_some();
            let (owned, node, base) = (store.clone(), ingestor.node().to_string(), held.clone());
            let outcome = rt.block_on(async move {
                tokio::spawn(async move {
                    keeping_state(&owned, last.as_ref(), base.as_deref(), &node, horizon).await
                })
                .await
            });
            match outcome {
                Ok(Ok(kept)) => {
                    held = None;
                    match state_kept(&rt, ingestor, store, config, today, rebased, kept) {
                        Err(Gone) => return,
                        Ok(None) => continue,
                        Ok(Some(last)) => seen = Some(last),
                    }
                    retry = RECOMPUTE_RETRY;
                    match config.rebase_every {
                        Some(every) if !live.sleep_unless_stopped(every) => continue,
                        _ => return,
                    }
                }
                Ok(Err(netrev_pipeline::Error::Stale(why))) if by_difference && held.is_some() => {
                    // Just restored: the tables in full, the state kept.
                    tracing::info!(%why, "a full recompute of the tables instead of one by difference");
                    continue;
                }
                Ok(Err(netrev_pipeline::Error::Stale(why))) => {
                    tracing::info!(%why, "a full recompute rebuilds the live stats");
                    held = None;
                }
                Ok(Err(e)) => {
                    // The first recompute after a restore is tried again as such; one by
                    // difference gives way to a full one.
                    if by_difference {
                        held = None;
                    }
                    tracing::error!(error = %e, retry_in = ?retry, by_difference, "recompute failed");
                    if wait_to_retry(live, config, &mut retry) {
                        return;
                    }
                    continue;
                }
                Err(join) => {
                    held = None;
                    tracing::error!(error = %join, "the recompute panicked; a full one rebuilds the live stats");
                    if wait_to_retry(live, config, &mut retry) {
                        return;
                    }
                    continue;
                }
            }
        }
        let outcome = rt.block_on(async {
            if first {
                // Events replayed from the write-ahead log are only in the ingest buffer:
                // into files with them, so the first snapshot holds them.
                ingestor.flush().await.map_err(|e| e.to_string())?;
            }
            let flushed = live.pin_floor(ingestor);
            let store = store.clone();
            let pending_max = config.pending_max;
            // A pass runs as a task of its own: a panic in it is a failed pass.
            let pass = tokio::spawn(async move {
                recompute_live(&store, Some(horizon), pending_max, &mut |_| {}).await
            });
            match pass.await {
                Ok(Ok(built)) => Ok((built, flushed)),
                Ok(Err(e)) => Err(e.to_string()),
                Err(join) => Err(format!("the recompute panicked: {join}")),
            }
        });
        match outcome {
            Ok(((report, state, lookup, last), flushed)) => {
                let files = last.files.clone();
                tracing::info!(
                    tables = report.tables.len(),
                    live = ?state.sizes(),
                    secs = started.elapsed().as_secs_f64(),
                    "recompute done; live stats rebuilt"
                );
                if rebased
                    .send(Rebased::Full {
                        state: Box::new(state),
                        lookup: Box::new(lookup),
                        flushed,
                        files,
                        changed: BTreeSet::new(),
                        on_disk: None,
                    })
                    .is_err()
                {
                    return;
                }
                let mut last = last;
                if compact_closed_days(&rt, ingestor, store, &mut last, today, rebased) {
                    save_seen(ingestor, config, &last);
                    seen = Some(last);
                }
                retry = RECOMPUTE_RETRY;
                first = false;
                match config.rebase_every {
                    Some(every) if !live.sleep_unless_stopped(every) => {}
                    _ => return,
                }
            }
            Err(e) => {
                *live.floor.lock().expect("floor lock") = None;
                tracing::error!(error = %e, retry_in = ?retry, "recompute failed");
                if wait_to_retry(live, config, &mut retry) {
                    return;
                }
            }
        }
    }
}

/// The live thread is gone (the service stops).
struct Gone;

/// After a recompute that kept the live state (by difference, or the first after a restore):
/// hands the live thread the files it read (`last`), the events of other nodes' files and the
/// new horizon, compacts the closed days and saves what it read. Returns what the next
/// recompute starts from, `None` when it must be full (a compaction failed; then at once).
fn state_kept(
    rt: &tokio::runtime::Runtime,
    ingestor: &Ingestor,
    store: &Store,
    config: &LiveConfig,
    today: NaiveDate,
    rebased: &std::sync::mpsc::Sender<Rebased>,
    (mut last, foreign, horizon): (Seen, Vec<Event>, Option<NaiveDate>),
) -> Result<Option<Seen>, Gone> {
    let message = Rebased::Refreshed {
        files: last.files.clone(),
        foreign,
        horizon,
    };
    rebased.send(message).map_err(|_| Gone)?;
    if !compact_closed_days(rt, ingestor, store, &mut last, today, rebased) {
        return Ok(None);
    }
    save_seen(ingestor, config, &last);
    Ok(Some(last))
}

/// Waits `retry` after a failed recompute, and doubles it (up to the schedule's interval) for
/// the next failure; returns whether the service stopped meanwhile.
fn wait_to_retry(live: &Live, config: &LiveConfig, retry: &mut Duration) -> bool {
    if live.sleep_unless_stopped(*retry) {
        return true;
    }
    *retry = (*retry * 2).min(config.rebase_every.unwrap_or(*retry * 2));
    false
}

/// Foreign events (other nodes', imports) read since the last recompute beyond which a full
/// recompute reads them instead: they are held in memory at once (about 0.3 KiB each) and
/// applied to the live state in steps of [`FOREIGN_STEP`].
const FOREIGN_EVENTS_MAX: usize = 100_000;

/// Foreign events applied under one hold of the live state's lock.
const FOREIGN_STEP: usize = 1_000;

/// Why the live state cannot take these foreign events, if it cannot: a click of a day before
/// its horizon would be looked up in the very file that brought it, and found already counted.
fn refused(foreign: &[Event], horizon: NaiveDate) -> Option<String> {
    let old = foreign.iter().filter(|e| match e {
        Event::Click(c) => {
            netrev_storage::model::date_of_micros(c.ts) < horizon
                || netrev_storage::clickid::millis(&c.cid)
                    .and_then(|ms| i64::try_from(ms).ok()?.checked_mul(1000))
                    .is_some_and(|us| netrev_storage::model::date_of_micros(us) < horizon)
        }
        _ => false,
    });
    match old.count() {
        0 => None,
        n => Some(format!(
            "{n} clicks from other nodes or imports are older than the live days"
        )),
    }
}

/// Closed days compacted after one recompute at most: an old root is compacted a few days at
/// a time (or at once by `netrev compact`, with the server stopped).
const COMPACT_DAYS_MAX: usize = 3;

/// Rewrites the small raw files of (at most [`COMPACT_DAYS_MAX`]) days before `today` that
/// the last recompute read (`seen`, updated to name the new files) as a few large ones, one
/// day at a time with the ingest's flushes held meanwhile, and hands the live thread's lookup
/// the new files. Only on a local data root: on S3 the old files would be visible beside the
/// new ones for a moment. Returns false when it failed: files may have changed, so the next
/// recompute must be full.
fn compact_closed_days(
    rt: &tokio::runtime::Runtime,
    ingestor: &Ingestor,
    store: &Store,
    seen: &mut Seen,
    today: NaiveDate,
    rebased: &std::sync::mpsc::Sender<Rebased>,
) -> bool {
    if store.local_root().is_none() {
        return true;
    }
    let started = Instant::now();
    let (mut before, mut after, mut partitions) = (0, 0, 0);
    let days = incremental::days_to_compact(seen, today);
    for day in days.into_iter().take(COMPACT_DAYS_MAX) {
        let done = rt.block_on(async {
            let _held = ingestor.hold_flushes().await;
            incremental::compact_seen(store, seen, day).await
        });
        match done {
            Ok(done) => {
                partitions += done.len();
                before += done.iter().map(|c| c.files_before).sum::<usize>();
                after += done.iter().map(|c| c.files_after).sum::<usize>();
            }
            Err(e) => {
                tracing::warn!(error = %e, %day, "compacting the raw files of a closed day failed; a full recompute follows");
                return false;
            }
        }
    }
    if partitions > 0 {
        tracing::info!(
            partitions,
            files_before = before,
            files_after = after,
            secs = started.elapsed().as_secs_f64(),
            "compacted the raw files of closed days"
        );
        let _ = rebased.send(Rebased::Refreshed {
            files: seen.files.clone(),
            foreign: Vec::new(),
            horizon: None,
        });
    }
    true
}

/// A recompute that keeps the live state: by difference from what the last one read (`last`),
/// or without it in full but for `stats_hourly` (after a restore). Returns what it read, the
/// events of the files it found new that `node` did not write and the state does not hold
/// already (those of `held`), and the horizon the state may move on to;
/// [`netrev_pipeline::Error::Stale`] (a full recompute instead) when the pass cannot run by
/// difference or the live state cannot take those events (see [`refused`]).
async fn keeping_state(
    store: &Store,
    last: Option<&Seen>,
    held: Option<&HashSet<Path>>,
    node: &str,
    horizon: NaiveDate,
) -> netrev_pipeline::Result<(Seen, Vec<Event>, Option<NaiveDate>)> {
    let started = Instant::now();
    // What a pass by difference rebuilt: touched click IDs, click IDs and visitors, new files.
    let mut rebuilt = None;
    let (seen, added, moved) = match last {
        Some(last) => {
            let pass = incremental::recompute_incremental(store, last, &mut |_| {}).await?;
            rebuilt = Some((
                pass.touched,
                pass.click_ids,
                pass.visitors,
                pass.added.len(),
            ));
            // Clicks still buffered are in no file: their day stays in memory.
            let buffered_before = pass
                .seen
                .rows
                .iter()
                .any(|r| r.table == netrev_storage::Table::Clicks && r.date < horizon);
            (pass.seen, pass.added, (!buffered_before).then_some(horizon))
        }
        None => {
            let (_, kept) = recompute::recompute_kept(store, false, &mut |_| {}).await?;
            let seen = kept.finish(store).await;
            let files = seen.files.iter().cloned().collect();
            (seen, files, None)
        }
    };
    let added: Vec<Path> = added
        .into_iter()
        .filter(|f| held.is_none_or(|h| !h.contains(f)))
        .collect();
    let foreign = foreign_events(store, &added, node, horizon).await?;
    let secs = started.elapsed().as_secs_f64();
    match rebuilt {
        Some((touched, click_ids, visitors, new_files)) => tracing::info!(
            touched,
            click_ids,
            visitors,
            new_files,
            foreign = foreign.len(),
            secs,
            "recompute by difference done"
        ),
        None => tracing::info!(
            foreign = foreign.len(),
            secs,
            "recompute done (the live stats kept)"
        ),
    }
    Ok((seen, foreign, moved))
}

/// The events of those of the raw files `added` that `node` did not write; `Stale` when the
/// live state cannot take them.
async fn foreign_events(
    store: &Store,
    added: &[Path],
    node: &str,
    horizon: NaiveDate,
) -> netrev_pipeline::Result<Vec<Event>> {
    let foreign: Vec<Path> = added
        .iter()
        .filter(|f| {
            f.filename()
                .and_then(netrev_storage::store::layout::parse_raw_file)
                .is_none_or(|(n, _, _)| n != node)
        })
        .cloned()
        .collect();
    // Counted from the footers before any is read.
    let rows = incremental::rows_in(store, &foreign).await?;
    if rows > FOREIGN_EVENTS_MAX {
        return Err(netrev_pipeline::Error::Stale(format!(
            "{rows} events in files from other nodes or imports"
        )));
    }
    let events = incremental::events_in(store, &foreign).await?;
    if let Some(why) = refused(&events, horizon) {
        return Err(netrev_pipeline::Error::Stale(why));
    }
    Ok(events)
}

/// Writes what the last recompute read beside the write-ahead log, for the first recompute
/// after a restart from a checkpoint (with checkpoints only). A failure leaves an older one,
/// from which a pass is still right (it rebuilds more), or stale (then a full recompute).
fn save_seen(ingestor: &Ingestor, config: &LiveConfig, seen: &Seen) {
    if config.checkpoint_every.is_none() {
        return;
    }
    let path = ingestor.wal_dir().join(incremental::SEEN_FILE);
    let owner = checkpoint::owner(ingestor.node(), ingestor.click_id_key());
    if let Err(e) = seen.write(&path, &owner) {
        tracing::warn!(error = %e, "keeping what the recompute read failed");
    }
}

/// Today (the data root's clock) and the first day whose clicks the live state holds.
fn live_days(store: &Store, config: &LiveConfig) -> (NaiveDate, NaiveDate) {
    let today = store.clock().now().date_naive();
    let horizon = today - chrono::Days::new(u64::from(config.days.max(1) - 1));
    (today, horizon)
}

/// Events read from raw files at start beyond which a checkpoint is not used (a full
/// recompute is then faster): they are held in memory at once, about 0.3 KiB each.
const RESTORE_EVENTS_MAX: usize = 500_000;

/// A state restored from its checkpoint at `path`, with the events of every raw file it may
/// not hold applied (see [`checkpoint`]); its lookup, the flushed sequence up to which the
/// raw files hold every event (later ones reach the live thread), the raw files read, and
/// how many events were applied. `None` without a checkpoint; an error when it cannot be
/// used (damaged, too old, or files it does not cover hold what the state cannot take).
async fn restore(
    live: &Live,
    ingestor: &Ingestor,
    store: &Store,
    path: &std::path::Path,
    horizon: NaiveDate,
    pending_max: usize,
) -> Result<Option<RestoredState>, String> {
    // Events replayed from the write-ahead log are only in the ingest buffer: into files.
    ingestor.flush().await.map_err(|e| e.to_string())?;
    let owner = checkpoint::owner(ingestor.node(), ingestor.click_id_key());
    let owned_path = path.to_path_buf();
    let read = tokio::task::spawn_blocking(move || checkpoint::read(&owned_path, &owner))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let Some(mut cp) = read else {
        return Ok(None);
    };
    cp.state.limit_pending(pending_max);
    // Every event up to it is in a file listed next; later ones are kept for the state.
    let flushed = live.pin_floor(ingestor);
    let files = incremental::raw_files_now(store)
        .await
        .map_err(|e| e.to_string())?;
    let node = ingestor.node();
    let todo: Vec<Path> = files
        .iter()
        .filter(|f| !checkpoint_holds(&cp, f, node))
        .cloned()
        .collect();
    let rows = incremental::rows_in(store, &todo)
        .await
        .map_err(|e| e.to_string())?;
    if rows > RESTORE_EVENTS_MAX {
        return Err(format!(
            "{rows} events in files written since it (more than {RESTORE_EVENTS_MAX})"
        ));
    }
    let events = incremental::events_in(store, &todo)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(horizon) = cp.state.horizon()
        && let Some(why) = refused(&events, horizon)
    {
        return Err(why);
    }
    let mut lookup = ParquetClicks::over(store, &files);
    // Reported to the webhooks through the log's replay, not from here.
    let mut unannounced = Vec::new();
    let mut changed = BTreeSet::new();
    let mut apply_all = |state: &mut LiveStats, events: &[Event]| {
        for e in events {
            let changes = state
                .apply_with(e, &mut lookup, &mut unannounced)
                .map_err(|err| format!("applying an event of {}: {err}", e.cid()))?;
            changed.extend(changes.iter().map(|c| c.key().date()));
        }
        Ok::<_, String>(())
    };
    apply_all(&mut cp.state, &events)?;
    // Clicks that arrived for events the state had left to the files: those events again.
    let arrived = cp.state.take_arrived();
    let spilled = incremental::events_of_clicks(store, files.clone(), Vec::new(), &arrived)
        .await
        .map_err(|e| e.to_string())?;
    apply_all(&mut cp.state, &spilled)?;
    // The files hold every click of the days before the horizon, unless some wait in the
    // buffer (arrived since the flush above).
    let buffered_before = store
        .unpersisted()
        .iter()
        .any(|r| r.table == netrev_storage::Table::Clicks && r.date < horizon);
    if !buffered_before {
        cp.state.advance_horizon(horizon);
    }
    Ok(Some(RestoredState {
        state: Box::new(cp.state),
        lookup,
        flushed,
        files,
        events_from_files: events.len(),
        changed,
        checkpointed_seq: cp.applied,
    }))
}

/// A live state restored from its checkpoint ([`restore`]).
struct RestoredState {
    state: Box<LiveStats>,
    /// Over `files`.
    lookup: ParquetClicks,
    /// Every event up to this sequence is in `files`.
    flushed: u64,
    files: Arc<HashSet<Path>>,
    /// Events read from the files the checkpoint did not hold, and applied.
    events_from_files: usize,
    /// Days whose `stats_hourly` partition they changed.
    changed: BTreeSet<NaiveDate>,
    /// The checkpoint holds every event of this node up to this sequence.
    checkpointed_seq: u64,
}

/// Whether checkpoint `cp` holds every event of raw file `f`: one of this node's log (not
/// compacted) within its sequence, or one of the files it covers.
fn checkpoint_holds(cp: &checkpoint::Checkpoint, f: &Path, node: &str) -> bool {
    match logged_by(f, node) {
        Some(last) => last <= cp.applied,
        None => cp.covered.contains(f),
    }
}

/// The last sequence of raw file `f` when it is a flush of `node`'s log (not compacted).
fn logged_by(f: &Path, node: &str) -> Option<u64> {
    let name = f.filename()?;
    match netrev_storage::store::layout::parse_raw_file(name) {
        Some((n, _, last)) if n == node && !netrev_storage::store::layout::is_compacted(name) => {
            Some(last)
        }
        _ => None,
    }
}

/// The files among `files` whose events a checkpoint cannot tell by its sequence.
fn not_by_sequence(files: &HashSet<Path>, node: &str) -> HashSet<Path> {
    files
        .iter()
        .filter(|f| logged_by(f, node).is_none())
        .cloned()
        .collect()
}

/// What the live thread owes the webhooks.
struct Webhooks<'a> {
    hooks: &'a dyn AttributionSink,
    /// Every event up to this sequence is handed to the webhooks (the log keeps the rest).
    processed: &'a AtomicU64,
    /// Events of the log at start, offered again once the first state is built (they may have
    /// been acknowledged but not handed over before a crash).
    replayed: Option<Vec<Event>>,
}

/// The live thread: applies events, swaps in rebased states, persists changed partitions,
/// and hands the conversions and refunds attributed to their click to the webhooks.
fn apply_loop(
    live: &Live,
    ingestor: &Ingestor,
    store: &Store,
    config: &LiveConfig,
    mut webhooks: Webhooks<'_>,
    feed: &Receiver<(u64, Vec<Event>)>,
    rebased: &Receiver<Rebased>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("live runtime");
    let mut lookup: Box<dyn ClickLookup + Send> = Box::new(NoLookup);
    // Events that may not be in a raw file yet, in sequence order.
    let mut log: VecDeque<(u64, Event)> = VecDeque::new();
    // Events whose click lookup failed; applied again later.
    let mut retry: Vec<Event> = Vec::new();
    let mut dirty: BTreeSet<NaiveDate> = BTreeSet::new();
    // Events attributed to their click and not yet in the webhook outbox.
    let mut attributed: Vec<Attributed> = Vec::new();
    // Partitions written while a rebase ran: its recompute may have written them from its
    // snapshot in between, so the new state writes them again.
    let mut written_during_rebase: BTreeSet<NaiveDate> = BTreeSet::new();
    let mut last_persist = Instant::now();
    // The raw files of the last recompute the state took: it holds all their events.
    let mut covered: Arc<HashSet<Path>> = Arc::default();
    // When the next checkpoint is due: at once after a recompute is taken, else on schedule.
    let mut checkpoint_due = false;
    let mut last_checkpoint = Instant::now();
    // What the checkpoint on disk holds: this node's events up to a sequence, and the files
    // it covers that the sequence does not tell; one holding the same is not written again.
    let mut on_disk: Option<(u64, HashSet<Path>)> = None;
    // Click IDs whose click arrived while events of theirs were left to the raw files
    // ([`LiveStats::take_arrived`]): those events are read back and applied.
    let mut arrived: BTreeSet<String> = BTreeSet::new();
    // When reading them last failed: tried again on the partitions' schedule, not every turn.
    let mut spilled_read_failed: Option<Instant> = None;
    loop {
        // Once stopped, what is left is applied, and the state checkpointed.
        let stopping = live.is_stopped();
        let wait = match stopping {
            true => Duration::ZERO,
            false => Duration::from_millis(100),
        };
        match feed.recv_timeout(wait) {
            Ok((first, events)) => {
                let mut batch = vec![(first, events)];
                // Take what else is waiting, to apply it under one lock.
                while let Ok(more) = feed.try_recv() {
                    batch.push(more);
                }
                let mut guard = live.state.write().expect("live lock");
                for (first, events) in batch {
                    let n = events.len() as u64;
                    for (i, e) in events.into_iter().enumerate() {
                        if let Some(state) = guard.as_mut() {
                            let out = (&mut dirty, &mut retry, &mut attributed);
                            apply(state, &e, true, lookup.as_mut(), out);
                        }
                        log.push_back((first + i as u64, e));
                    }
                    live.received_seq.store(first + n - 1, Ordering::Release);
                }
                drop(guard);
                live.applied
                    .send_replace(live.received_seq.load(Ordering::Acquire));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        match rebased.try_recv() {
            Ok(Rebased::Refreshed {
                files,
                foreign,
                horizon,
            }) => {
                // Not announced: the server that took them in does that. Their clicks are of
                // the live days (see `refused`), held in memory, never looked up. In steps, so
                // reads are not held up for long.
                let mut unannounced = Vec::new();
                for step in foreign.chunks(FOREIGN_STEP) {
                    let mut guard = live.state.write().expect("live lock");
                    if let Some(state) = guard.as_mut() {
                        for e in step {
                            let out = (&mut dirty, &mut retry, &mut unannounced);
                            apply(state, e, false, lookup.as_mut(), out);
                        }
                    }
                }
                if let Some(h) = horizon
                    && let Some(state) = live.state.write().expect("live lock").as_mut()
                {
                    state.advance_horizon(h);
                }
                lookup.refresh(&files);
                covered = files;
                checkpoint_due = true;
            }
            Ok(Rebased::Full {
                state,
                lookup: found,
                flushed,
                files,
                changed,
                on_disk: restored,
            }) => {
                // Already held to `config.pending_max` (by its build, or by `restore`).
                let mut state = *state;
                // The snapshot holds their events and clicks both.
                arrived.clear();
                spilled_read_failed = None;
                let mut new_lookup: Box<dyn ClickLookup + Send> = found;
                let mut failed = Vec::new();
                // Not as clicks of the log: the snapshot may hold another node's conversion of
                // one of them, which the new state may have spilled.
                for (_, e) in log.iter().filter(|(seq, _)| *seq > flushed) {
                    let out = (&mut dirty, &mut failed, &mut attributed);
                    apply(&mut state, e, false, new_lookup.as_mut(), out);
                }
                for e in std::mem::take(&mut retry) {
                    let out = (&mut dirty, &mut failed, &mut attributed);
                    apply(&mut state, &e, false, new_lookup.as_mut(), out);
                }
                retry = failed;
                // The first state: events received before it existed were never applied to
                // one, and those of the log at start may never have reached the webhooks.
                // Offered again (the outbox knows the ones it has).
                if let Some(replayed) = webhooks.replayed.take() {
                    let waited = log.iter().map(|(_, e)| e);
                    for e in replayed.iter().chain(waited) {
                        attributed.extend(state.attributions_of(e));
                    }
                }
                dirty.append(&mut written_during_rebase);
                dirty.extend(changed);
                *live.state.write().expect("live lock") = Some(state);
                lookup = new_lookup;
                *live.floor.lock().expect("floor lock") = None;
                on_disk = restored.map(|seq| (seq, not_by_sequence(&files, ingestor.node())));
                covered = files;
                checkpoint_due = true;
            }
            Err(TryRecvError::Empty) => {}
            // The recompute thread ends after its last rebase when there is no schedule.
            Err(TryRecvError::Disconnected) => {}
        }
        // At once; after a failed read, on the partitions' schedule.
        collect_arrived(live, &mut arrived);
        let due = spilled_read_failed.is_none_or(|t| t.elapsed() >= config.persist_every);
        if !arrived.is_empty() && (due || stopping) {
            let outputs = (&mut dirty, &mut retry);
            match apply_spilled(live, store, &rt, &log, lookup.as_mut(), &arrived, outputs) {
                Ok(()) => {
                    arrived.clear();
                    spilled_read_failed = None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, click_ids = arrived.len(), "reading events left to the raw files failed; will retry");
                    spilled_read_failed = Some(Instant::now());
                }
            }
        }
        if !attributed.is_empty() {
            match webhooks.hooks.attributed(&attributed) {
                Ok(()) => attributed.clear(),
                // Kept, and offered again on the next turn.
                Err(e) => {
                    tracing::error!(error = %e, "accepting webhook messages failed; will retry")
                }
            }
        }
        // Every event received is applied and its attributions accepted: the log may let go
        // of it. Not while a state is missing, or events wait for a lookup to work again.
        if attributed.is_empty() && retry.is_empty() && webhooks.replayed.is_none() {
            let received = live.received_seq.load(Ordering::Acquire);
            webhooks.processed.fetch_max(received, Ordering::AcqRel);
        }
        // Forget events that a future snapshot is sure to hold; not before the first state,
        // which offers them to the webhooks.
        if webhooks.replayed.is_none() {
            let floor = live.floor.lock().expect("floor lock");
            let limit = floor.map_or(ingestor.flushed_seq(), |f| f.min(ingestor.flushed_seq()));
            while log.front().is_some_and(|(seq, _)| *seq <= limit) {
                log.pop_front();
            }
        }
        if last_persist.elapsed() >= config.persist_every || stopping {
            last_persist = Instant::now();
            if !retry.is_empty() {
                let mut guard = live.state.write().expect("live lock");
                if let Some(state) = guard.as_mut() {
                    let mut failed = Vec::new();
                    for e in std::mem::take(&mut retry) {
                        let out = (&mut dirty, &mut failed, &mut attributed);
                        apply(state, &e, false, lookup.as_mut(), out);
                    }
                    retry = failed;
                }
            }
            let rebasing = live.floor.lock().expect("floor lock").is_some();
            if !rebasing {
                // A full recompute that failed may have written some of them from its
                // snapshot too: written again from the state.
                dirty.append(&mut written_during_rebase);
            }
            let written = persist(live, store, &rt, &mut dirty);
            if rebasing {
                written_during_rebase.extend(written);
            }
        }
        if let Some(every) = config.checkpoint_every {
            // Clicks applied since (a retried lookup) may wait for their spilled events too.
            collect_arrived(live, &mut arrived);
            let received = live.received_seq.load(Ordering::Acquire);
            let scheduled = last_checkpoint.elapsed() >= every
                && on_disk.as_ref().is_none_or(|(seq, _)| received > *seq);
            // Its partitions written, so a restart from it has none to rewrite; nothing
            // waiting for a lookup, so it holds every event up to `received`; no full
            // recompute under way, whose `stats_hourly` partitions (from an older snapshot)
            // are written again from the state only once it is taken.
            let rebasing = live.floor.lock().expect("floor lock").is_some();
            if (checkpoint_due || scheduled || stopping)
                && dirty.is_empty()
                && retry.is_empty()
                && arrived.is_empty()
                && written_during_rebase.is_empty()
                && !rebasing
            {
                let guard = live.state.read().expect("live lock");
                let holds = (received, not_by_sequence(&covered, ingestor.node()));
                if on_disk.as_ref() == Some(&holds) {
                    checkpoint_due = false;
                } else if let Some(state) = guard.as_ref() {
                    let started = Instant::now();
                    let path = ingestor.wal_dir().join(checkpoint::FILE_NAME);
                    let owner = checkpoint::owner(ingestor.node(), ingestor.click_id_key());
                    match checkpoint::write(&path, &owner, state, received, &covered) {
                        Ok(bytes) => {
                            tracing::info!(
                                bytes,
                                applied = received,
                                secs = started.elapsed().as_secs_f64(),
                                "live state checkpointed"
                            );
                            on_disk = Some(holds);
                        }
                        // Tried again on schedule, not at once: the previous one stays.
                        Err(e) => {
                            tracing::error!(error = %e, "writing the live state's checkpoint failed")
                        }
                    }
                    checkpoint_due = false;
                    last_checkpoint = Instant::now();
                }
            }
        }
        if stopping {
            return;
        }
    }
}

/// Adds to `arrived` the click IDs whose click the state took while events of theirs may have
/// been spilled ([`LiveStats::take_arrived`]).
fn collect_arrived(live: &Live, arrived: &mut BTreeSet<String>) {
    // Nearly always none: readers are not held up by a write lock every turn.
    let any = live.state.read().expect("live lock");
    if !any.as_ref().is_some_and(LiveStats::has_arrived) {
        return;
    }
    drop(any);
    if let Some(state) = live.state.write().expect("live lock").as_mut() {
        arrived.extend(state.take_arrived());
    }
}

/// Applies the conversions and refunds of the click IDs `arrived` (whose click arrived after
/// the state had left events of theirs to the raw files), read from the raw files, the ingest
/// buffer and `log`; the days they change go to `dirty`, events whose lookup failed to
/// `failed`. They are not announced to the webhooks: like those of other nodes' files,
/// through which their clicks come.
fn apply_spilled(
    live: &Live,
    store: &Store,
    rt: &tokio::runtime::Runtime,
    log: &VecDeque<(u64, Event)>,
    lookup: &mut dyn ClickLookup,
    arrived: &BTreeSet<String>,
    (dirty, failed): (&mut BTreeSet<NaiveDate>, &mut Vec<Event>),
) -> netrev_pipeline::Result<()> {
    let started = Instant::now();
    let cids: Vec<String> = arrived.iter().cloned().collect();
    // The buffer before the files: a flush in between puts rows in both, not in neither.
    let buffered = store.unpersisted();
    let found = rt.block_on(async {
        let files = incremental::raw_files_now(store).await?;
        incremental::events_of_clicks(store, files, buffered, &cids).await
    })?;
    let logged = log
        .iter()
        .map(|(_, e)| e)
        .filter(|e| !matches!(e, Event::Click(_)) && arrived.contains(e.cid()));
    let mut guard = live.state.write().expect("live lock");
    let Some(state) = guard.as_mut() else {
        return Ok(());
    };
    let mut unannounced = Vec::new();
    let mut events = 0;
    for e in found.iter().chain(logged) {
        let out = (&mut *dirty, &mut *failed, &mut unannounced);
        apply(state, e, false, lookup, out);
        events += 1;
    }
    tracing::info!(
        click_ids = cids.len(),
        events,
        secs = started.elapsed().as_secs_f64(),
        "events left to the raw files applied, their clicks arrived"
    );
    Ok(())
}

/// Where [`apply`] puts what follows from an event: the partitions it changed, the event
/// itself when its click lookup failed, and the events it attributed to their click.
type Outputs<'a> = (
    &'a mut BTreeSet<NaiveDate>,
    &'a mut Vec<Event>,
    &'a mut Vec<Attributed>,
);

/// Applies `e` to `state`; `logged` when it comes from this node's own log (see
/// [`LiveStats::apply_logged`]).
fn apply(
    state: &mut LiveStats,
    e: &Event,
    logged: bool,
    lookup: &mut dyn ClickLookup,
    (dirty, failed, attributed): Outputs<'_>,
) {
    let applied = match logged {
        true => state.apply_logged(e, lookup, attributed),
        false => state.apply_with(e, lookup, attributed),
    };
    match applied {
        Ok(changes) => dirty.extend(changes.iter().map(|c| c.key().date())),
        Err(err) => {
            tracing::warn!(error = %err, cid = e.cid(), "finding an event's click failed; will retry");
            failed.push(e.clone());
        }
    }
}

/// A full recompute, and the live state of its snapshot with a lookup over the snapshot's
/// click files, and what it read (for a recompute by difference next). Clicks before
/// `horizon` are left to the lookup; events waiting for a click not known yet take at most
/// `pending_max` bytes.
pub async fn recompute_live(
    store: &Store,
    horizon: Option<NaiveDate>,
    pending_max: usize,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> crate::Result<(Report, LiveStats, ParquetClicks, Seen)> {
    let (report, kept) = recompute::recompute_kept(store, true, progress).await?;
    progress(Progress::Computing {
        table: "live state",
    });
    let built = LiveStats::from_session(kept.ctx(), &kept.stats, horizon, pending_max).await;
    let lookup = ParquetClicks::over(store, &kept.seen.files);
    let seen = kept.finish(store).await;
    Ok((report, built?, lookup, seen))
}

/// Rewrites every changed `stats_hourly` partition from the live rows; returns the days
/// written. The state takes what was written as the rows of a day before the horizon (the
/// live thread, the only one that changes it, is here meanwhile).
fn persist(
    live: &Live,
    store: &Store,
    rt: &tokio::runtime::Runtime,
    dirty: &mut BTreeSet<NaiveDate>,
) -> Vec<NaiveDate> {
    let mut written = Vec::new();
    for date in std::mem::take(dirty) {
        let encoded = match live.state.read().expect("live lock").as_ref() {
            Some(state) => state.encoded_date(date),
            None => break,
        };
        let written_day = async {
            let encoded = encoded?;
            recompute::write_stats_partition(store, date, encoded.clone()).await?;
            Ok::<_, crate::Error>(encoded)
        };
        match rt.block_on(written_day) {
            Ok(encoded) => {
                if let Some(state) = live.state.write().expect("live lock").as_mut() {
                    state.settle_cold(date, encoded);
                }
                written.push(date);
            }
            Err(e) => {
                tracing::error!(error = %e, %date, "writing a stats_hourly partition failed; will retry");
                dirty.insert(date);
            }
        }
    }
    written
}

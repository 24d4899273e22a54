//! The data root: an object store plus the paths of the Hive layout.
//!
//! Reads and listings go through `object_store` for every backend. Writes that must survive a
//! power loss ([`Store::put_durable`]) use the object store's atomic put on remote backends, and
//! on the local backend a temporary file that is fsynced, renamed into place and followed by an
//! fsync of its directory, because a rename alone does not make the new file's contents durable.

use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Weak};

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use bytes::Bytes;
use chrono::NaiveDate;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::buffer::{Buffer, Unpersisted};
use crate::clickid;
use crate::model::{self, Event, Table};
use crate::{Error, Result};

/// Where the click-ID MAC key lives; shared by every node that uses this data root.
const CLICK_ID_KEY_PATH: &str = "meta/click_id.key";

/// A data root.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    /// The directory behind the local backend; `None` for remote stores.
    local_root: Option<PathBuf>,
    /// The data root as the operator wrote it, for messages.
    location: String,
    /// The time events are received at ([`Store::clock`]).
    clock: crate::Clock,
    /// The acknowledged rows not yet in raw files, shared by every clone of this store
    /// ([`Store::attach_buffer`]).
    buffer: Arc<std::sync::Mutex<Option<Weak<dyn Buffer>>>>,
}

impl Store {
    /// Opens a data root: a directory (created when missing), or `s3://bucket/prefix` on any
    /// S3-compatible store, configured by the usual AWS environment variables
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT`,
    /// `AWS_ALLOW_HTTP=true` for a local endpoint without TLS).
    pub fn open(location: &str) -> Result<Store> {
        if let Some(rest) = location.strip_prefix("s3://") {
            return Store::open_s3(location, rest);
        }
        if location.contains("://") {
            return Err(Error::DataRoot(
                location.into(),
                "a data root is a local directory or s3://bucket/prefix".into(),
            ));
        }
        let dir = PathBuf::from(location);
        create_dir_durable(&dir)?;
        let dir = dir
            .canonicalize()
            .map_err(|e| Error::io("resolve", &dir, e))?;
        let inner = LocalFileSystem::new_with_prefix(&dir)?;
        Ok(Store {
            inner: Arc::new(inner),
            local_root: Some(dir),
            location: location.into(),
            clock: crate::Clock::default(),
            buffer: Arc::default(),
        })
    }

    fn open_s3(location: &str, rest: &str) -> Result<Store> {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::DataRoot(
                location.into(),
                "no bucket: write s3://bucket or s3://bucket/prefix".into(),
            ));
        }
        let s3 = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .map_err(|e| Error::DataRoot(location.into(), e.to_string()))?;
        let prefix = prefix.trim_matches('/');
        let inner: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(PrefixStore::new(s3, prefix))
        };
        Ok(Store {
            inner,
            local_root: None,
            location: location.into(),
            clock: crate::Clock::default(),
            buffer: Arc::default(),
        })
    }

    /// A store over any object store (tests use `InMemory`).
    pub fn from_object_store(inner: Arc<dyn ObjectStore>, location: &str) -> Store {
        Store {
            inner,
            local_root: None,
            location: location.into(),
            clock: crate::Clock::default(),
            buffer: Arc::default(),
        }
    }

    /// This store, read and written by a service whose clock is `clock` (tests set one).
    pub fn with_clock(mut self, clock: crate::Clock) -> Store {
        self.clock = clock;
        self
    }

    /// The clock of the service using this store: the system clock unless a test set one
    /// ([`Store::with_clock`]).
    pub fn clock(&self) -> &crate::Clock {
        &self.clock
    }

    /// Makes the rows of `buffer` part of the raw tables for every reader of this store and of
    /// its clones (`serve`'s ingest buffer, or a write-ahead log read by `netrev sql`),
    /// replacing any buffer attached before. The store holds it weakly: it is gone with its
    /// owner.
    pub fn attach_buffer(&self, buffer: Weak<dyn Buffer>) {
        *self.buffer.lock().expect("buffer lock") = Some(buffer);
    }

    /// The rows acknowledged and not yet in raw files, from the attached buffer (none without
    /// one). Take them *before* listing the files they are to be added to
    /// ([`crate::buffer`]).
    pub fn unpersisted(&self) -> Vec<Unpersisted> {
        let buffer = self.buffer.lock().expect("buffer lock").clone();
        buffer
            .and_then(|b| b.upgrade())
            .map(|b| b.unpersisted())
            .unwrap_or_default()
    }

    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.inner.clone()
    }

    /// The local directory behind this store, if it is local.
    pub fn local_root(&self) -> Option<&FsPath> {
        self.local_root.as_deref()
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    /// Writes `bytes` at `path` so that a reader sees the old object, or the new one whole, and
    /// so that once this returns the object survives a crash or power loss.
    pub async fn put_durable(&self, path: &Path, bytes: Bytes) -> Result<()> {
        match &self.local_root {
            Some(root) => {
                let target = root.join(path.as_ref());
                tokio::task::spawn_blocking(move || write_file_durably(&target, &bytes))
                    .await
                    .expect("durable write task panicked")
            }
            None => {
                self.inner.put(path, PutPayload::from(bytes)).await?;
                Ok(())
            }
        }
    }

    /// Writes `bytes` at `path` unless something is already there; returns whether it wrote.
    /// Like [`Store::put_durable`], the object is whole and durable once visible.
    pub async fn put_if_absent(&self, path: &Path, bytes: Bytes) -> Result<bool> {
        if let Some(root) = &self.local_root {
            let target = root.join(path.as_ref());
            return tokio::task::spawn_blocking(move || write_new_file_durably(&target, &bytes))
                .await
                .expect("durable write task panicked");
        }
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .inner
            .put_opts(path, PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes several new objects so that an error leaves none of them visible: on the local
    /// backend every file is first written and fsynced under a hidden temporary name, and only
    /// then are all renamed into place (a crash during those renames, a moment, can still leave
    /// some in place). Remote stores write them one by one.
    pub async fn put_all_durable(&self, objects: Vec<(Path, Bytes)>) -> Result<()> {
        let Some(root) = self.local_root.clone() else {
            for (path, bytes) in objects {
                self.put_durable(&path, bytes).await?;
            }
            return Ok(());
        };
        tokio::task::spawn_blocking(move || -> Result<()> {
            let mut staged = Vec::new();
            for (path, bytes) in &objects {
                let target = root.join(path.as_ref());
                match write_temp_beside(&target, bytes) {
                    Ok(tmp) => staged.push((tmp, target)),
                    Err(e) => {
                        for (tmp, _) in &staged {
                            let _ = std::fs::remove_file(tmp);
                        }
                        return Err(e);
                    }
                }
            }
            for (tmp, target) in &staged {
                std::fs::rename(tmp, target).map_err(|e| Error::io("rename", target, e))?;
            }
            for (_, target) in &staged {
                sync_dir(target.parent().expect("object paths have a parent"))?;
            }
            Ok(())
        })
        .await
        .expect("durable write task panicked")
    }

    /// The object at `path`, or `None` when there is none.
    pub async fn get(&self, path: &Path) -> Result<Option<Bytes>> {
        match self.inner.get(path).await {
            Ok(r) => Ok(Some(r.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Every object under `prefix` (recursively), in no particular order.
    pub async fn list(&self, prefix: &Path) -> Result<Vec<ObjectMeta>> {
        Ok(self.inner.list(Some(prefix)).try_collect().await?)
    }

    /// Whether some object under `prefix` (recursively) has a name ending in `suffix`; the
    /// listing stops at the first.
    pub async fn holds(&self, prefix: &Path, suffix: &str) -> Result<bool> {
        let mut objects = self.inner.list(Some(prefix));
        while let Some(meta) = objects.try_next().await? {
            if meta.location.as_ref().ends_with(suffix) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    pub async fn delete(&self, path: &Path) -> Result<()> {
        match self.inner.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Encodes `batches` as one Parquet file and writes it durably at `path`. The encoding
    /// runs on a blocking thread, so several writes can encode in parallel.
    pub async fn write_parquet(&self, path: &Path, batches: &[RecordBatch]) -> Result<()> {
        let batches = batches.to_vec();
        let bytes = tokio::task::spawn_blocking(move || encode_parquet(&batches))
            .await
            .expect("Parquet encoding task panicked")?;
        self.put_durable(path, bytes).await
    }

    /// Every record batch of the Parquet file at `path`.
    /// Raw event files are micro-batch sized, so the file is fetched whole and decoded in
    /// memory; large scans go through DataFusion instead.
    pub async fn read_parquet(&self, path: &Path) -> Result<Vec<RecordBatch>> {
        let bytes = self.fetch(path).await?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
        Ok(reader.collect::<Result<Vec<_>, _>>()?)
    }

    /// The row count of the Parquet file at `path`, from its footer; fails on a damaged file.
    pub async fn parquet_rows(&self, path: &Path) -> Result<u64> {
        let bytes = self.fetch(path).await?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
        Ok(builder.metadata().file_metadata().num_rows() as u64)
    }

    async fn fetch(&self, path: &Path) -> Result<Bytes> {
        Ok(self.inner.get(path).await?.bytes().await?)
    }

    /// Every Parquet file of a raw table (all nodes, all days).
    pub async fn raw_files(&self, table: Table) -> Result<Vec<ObjectMeta>> {
        let mut files = self.list(&layout::raw_table(table)).await?;
        files.retain(|m| m.location.as_ref().ends_with(".parquet"));
        Ok(files)
    }

    /// The events of one raw file of `table`.
    pub async fn read_events(&self, table: Table, path: &Path) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        for batch in self.read_parquet(path).await? {
            out.extend(model::from_batch(table, &batch)?);
        }
        Ok(out)
    }

    /// The click-ID MAC key of this data root, created on first use. Every node sharing the
    /// root gets the same key, so IDs issued by one are accepted by all.
    pub async fn click_id_key(&self) -> Result<clickid::Key> {
        let path = Path::from(CLICK_ID_KEY_PATH);
        if let Some(bytes) = self.get(&path).await? {
            return parse_key(&path, &bytes);
        }
        let fresh = clickid::Key::random();
        if self
            .put_if_absent(&path, Bytes::from(fresh.to_hex()))
            .await?
        {
            return Ok(fresh);
        }
        // Another node created it first; use theirs.
        let bytes = self.get(&path).await?.ok_or_else(|| Error::Corrupt {
            path: CLICK_ID_KEY_PATH.into(),
            what: "vanished right after being created".into(),
        })?;
        parse_key(&path, &bytes)
    }
}

fn parse_key(path: &Path, bytes: &[u8]) -> Result<clickid::Key> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(clickid::Key::from_hex)
        .ok_or_else(|| Error::Corrupt {
            path: path.to_string(),
            what: "not a 64-digit hex key".into(),
        })
}

/// Most rows in one data page of the files netrev writes.
pub const PAGE_ROWS: usize = 4096;

/// Parquet encoding of every file netrev writes: Snappy (fast, read by every engine) and
/// page statistics so readers can prune by time and key.
pub fn encode_parquet(batches: &[RecordBatch]) -> Result<Bytes> {
    let Some(first) = batches.first() else {
        return Err(Error::Corrupt {
            path: "<batch>".into(),
            what: "no batches to encode".into(),
        });
    };
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_statistics_enabled(EnabledStatistics::Page)
        // Pages of at most 4,096 rows: a lookup of one click ID (live stats, an analyst's
        // `WHERE cid = …`) decodes one small page, however large the day's file.
        .set_data_page_row_count_limit(PAGE_ROWS)
        // Near-unique columns: a dictionary would grow to its size limit in every file and
        // be read whole before any page of the column.
        .set_column_dictionary_enabled(ColumnPath::from("cid"), false)
        .set_column_dictionary_enabled(ColumnPath::from("txid"), false)
        .set_column_dictionary_enabled(ColumnPath::from("ts"), false)
        .set_column_dictionary_enabled(ColumnPath::from("vid"), false)
        .build();
    let mut buf = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buf, first.schema(), Some(props))?;
    // The writer checks page limits after every 1,024 rows of each `write` and at its end, so
    // the caller's batch boundaries would show in the file. Writing whole chunks of
    // WRITE_ROWS makes the bytes depend on the rows alone: engines that cut the same rows into
    // different batches write the same file.
    let mut pending: Vec<RecordBatch> = Vec::new();
    let mut pending_rows = 0;
    for b in batches {
        let mut offset = 0;
        while offset < b.num_rows() {
            let take = (WRITE_ROWS - pending_rows).min(b.num_rows() - offset);
            pending.push(b.slice(offset, take));
            pending_rows += take;
            offset += take;
            if pending_rows == WRITE_ROWS {
                write_joined(&mut writer, &pending)?;
                pending.clear();
                pending_rows = 0;
            }
        }
    }
    if pending_rows > 0 {
        write_joined(&mut writer, &pending)?;
    }
    writer.close()?;
    Ok(Bytes::from(buf))
}

/// Writes `pieces` as one batch; a single piece (the usual case of a small file, or of a
/// batch that already ends on a chunk boundary) without copying it.
fn write_joined<W: std::io::Write + Send>(
    writer: &mut ArrowWriter<W>,
    pieces: &[RecordBatch],
) -> Result<()> {
    match pieces {
        [one] => writer.write(one)?,
        _ => writer.write(&concat_batches(&pieces[0].schema(), pieces)?)?,
    }
    Ok(())
}

/// Rows per write of [`encode_parquet`]: a multiple of the Parquet writer's 1,024-row steps.
const WRITE_ROWS: usize = 8192;

/// Writes a hidden temporary file beside `target` and fsyncs it; returns its path. A leading
/// dot and a non-.parquet suffix keep readers' globs off it.
fn write_temp_beside(target: &FsPath, bytes: &[u8]) -> Result<PathBuf> {
    use std::io::Write;
    let dir = target.parent().expect("object paths have a parent");
    create_dir_durable(dir)?;
    let name = target
        .file_name()
        .expect("object paths have a name")
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", rand::random::<u32>()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        f.write_all(bytes)
            .map_err(|e| Error::io("write", &tmp, e))?;
        f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))
    })();
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Replaces `target` atomically with `bytes`, durable once this returns.
pub fn write_file_durably(target: &FsPath, bytes: &[u8]) -> Result<()> {
    let tmp = write_temp_beside(target, bytes)?;
    crate::failpoint::check("durable-before-rename").map_err(|e| Error::io("rename", target, e))?;
    if let Err(e) = std::fs::rename(&tmp, target) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io("rename", target, e));
    }
    sync_dir(target.parent().expect("object paths have a parent"))
}

/// Creates `target` with `bytes` unless it exists (then `Ok(false)`); whole and durable once
/// visible, because the data is fsynced before the name is linked.
fn write_new_file_durably(target: &FsPath, bytes: &[u8]) -> Result<bool> {
    let tmp = write_temp_beside(target, bytes)?;
    let linked = std::fs::hard_link(&tmp, target);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_dir(target.parent().expect("object paths have a parent"))?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(Error::io("link", target, e)),
    }
}

/// Creates `dir` and any missing parents so that they survive a power loss: each new
/// directory's entry is fsynced in its parent.
pub fn create_dir_durable(dir: &FsPath) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let cwd;
    let dir = if dir.is_relative() {
        cwd = std::env::current_dir()
            .map_err(|e| Error::io("resolve", dir, e))?
            .join(dir);
        cwd.as_path()
    } else {
        dir
    };
    let mut missing = Vec::new();
    let mut cur = dir;
    while !cur.exists() {
        missing.push(cur.to_path_buf());
        match cur.parent() {
            Some(p) => cur = p,
            None => break,
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    for d in missing.iter().rev() {
        if let Some(parent) = d.parent() {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

/// Makes a directory's entries (a new or renamed file) durable.
pub fn sync_dir(dir: &FsPath) -> Result<()> {
    let d = std::fs::File::open(dir).map_err(|e| Error::io("open", dir, e))?;
    d.sync_all().map_err(|e| Error::io("fsync", dir, e))
}

/// Paths of the Hive layout (docs/design.md §7).
pub mod layout {
    use super::*;

    /// `events/<table>/`
    pub fn raw_table(table: Table) -> Path {
        Path::from(format!("events/{}", table.name()))
    }

    /// `events/<table>/date=YYYY-MM-DD/`
    pub fn raw_partition(table: Table, date: NaiveDate) -> Path {
        Path::from(format!(
            "events/{}/date={}",
            table.name(),
            date.format("%Y-%m-%d")
        ))
    }

    /// A raw file written by ingest node `node` from its write-ahead-log records `first..=last`.
    /// The range in the name is what makes flushing idempotent across crashes: on recovery a
    /// record is known to be in a partition exactly when a file of that partition covers its
    /// sequence number.
    pub fn raw_file(table: Table, date: NaiveDate, node: &str, first: u64, last: u64) -> Path {
        raw_partition(table, date).join(format!("{node}-{first:020}-{last:020}.parquet"))
    }

    /// A raw file written by `netrev compact` from files of node `node` whose ranges lie in
    /// `first..=last`: named like [`raw_file`] with `.c` before `.parquet`. It holds every row
    /// of its partition that node numbered in its range, and so does each file it replaced: a
    /// file within a compacted file's range is one an interrupted compaction left behind.
    pub fn compacted_file(
        table: Table,
        date: NaiveDate,
        node: &str,
        first: u64,
        last: u64,
    ) -> Path {
        raw_partition(table, date).join(format!("{node}-{first:020}-{last:020}.c.parquet"))
    }

    /// Whether a raw file's name is that of a [`compacted_file`].
    pub fn is_compacted(name: &str) -> bool {
        name.ends_with(".c.parquet")
    }

    /// The (node, first, last) of a raw file name written by [`raw_file`] or
    /// [`compacted_file`].
    pub fn parse_raw_file(name: &str) -> Option<(&str, u64, u64)> {
        let stem = name.strip_suffix(".parquet")?;
        let stem = stem.strip_suffix(".c").unwrap_or(stem);
        let mut parts = stem.rsplitn(3, '-');
        let last = parts.next()?.parse().ok()?;
        let first = parts.next()?.parse().ok()?;
        let node = parts.next()?;
        Some((node, first, last))
    }

    /// Whether `path` is a Parquet file of the raw `table`: under `…/events/<table>/`, relative
    /// to the data root or an absolute path of the local file system.
    pub fn is_raw_file(path: &Path, table: Table) -> bool {
        let parts: Vec<_> = path.parts().collect();
        path.as_ref().ends_with(".parquet")
            && parts
                .windows(2)
                .any(|w| w[0].as_ref() == "events" && w[1].as_ref() == table.name())
    }

    /// The date of a `date=YYYY-MM-DD` path segment.
    pub fn partition_date(path: &Path) -> Option<NaiveDate> {
        path.parts()
            .find_map(|p| p.as_ref().strip_prefix("date=").map(str::to_owned))
            .and_then(|d| NaiveDate::parse_from_str(&d, "%Y-%m-%d").ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_file_names_round_trip() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
        let p = layout::raw_file(Table::Refunds, d, "node-a", 7, 1234);
        assert_eq!(
            p.as_ref(),
            "events/refunds/date=2026-11-27/node-a-00000000000000000007-00000000000000001234.parquet"
        );
        assert_eq!(
            layout::parse_raw_file(p.filename().unwrap()),
            Some(("node-a", 7, 1234))
        );
        assert_eq!(layout::partition_date(&p), Some(d));
        assert_eq!(layout::parse_raw_file("x.parquet"), None);
        let c = layout::compacted_file(Table::Refunds, d, "node-a", 7, 1234);
        assert!(c.as_ref().ends_with("-00000000000000001234.c.parquet"));
        assert!(layout::is_compacted(c.filename().unwrap()));
        assert!(!layout::is_compacted(p.filename().unwrap()));
        assert_eq!(
            layout::parse_raw_file(c.filename().unwrap()),
            Some(("node-a", 7, 1234))
        );
    }

    /// Two engines may cut the same rows into different batches; the file must not show it.
    #[test]
    fn the_same_rows_encode_to_the_same_bytes_however_they_are_batched() {
        let clicks: Vec<Event> = (0..20_000_i64)
            .map(|i| {
                Event::Click(model::Click {
                    cid: format!("c{i:06}"),
                    vid: format!("v{}", i % 977),
                    ts: 1_795_000_000_000_000 + i * 1_000_000,
                    source: Some(format!("s{}", i % 7)),
                    campaign: None,
                    link: None,
                    country: Some("DE".into()),
                    device: None,
                    cost: rust_decimal::Decimal::new(i % 100, 2),
                    subs: Default::default(),
                })
            })
            .collect();
        let all = model::to_batch(Table::Clicks, &clicks).unwrap();
        let cut = |sizes: &[usize]| {
            let mut out = Vec::new();
            let mut offset = 0;
            for &n in sizes {
                out.push(all.slice(offset, n));
                offset += n;
            }
            out.push(all.slice(offset, all.num_rows() - offset));
            encode_parquet(&out).unwrap()
        };
        let whole = encode_parquet(std::slice::from_ref(&all)).unwrap();
        assert_eq!(cut(&[8192, 8192]), whole);
        assert_eq!(cut(&[5000, 7000, 1, 3000]), whole);
    }

    #[tokio::test]
    async fn durable_put_is_readable_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        let p = Path::from("a/b/c.bin");
        store
            .put_durable(&p, Bytes::from_static(b"hello"))
            .await
            .unwrap();
        assert_eq!(
            store.get(&p).await.unwrap().unwrap(),
            Bytes::from_static(b"hello")
        );
        let names: Vec<_> = std::fs::read_dir(dir.path().join("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["c.bin"]);
    }

    #[tokio::test]
    async fn click_id_key_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        let a = store.click_id_key().await.unwrap();
        let b = store.click_id_key().await.unwrap();
        assert_eq!(a.to_hex(), b.to_hex());
    }
}

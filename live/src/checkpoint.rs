//! The live state on disk, so that a restart loads it instead of recomputing the history.
//!
//! A checkpoint holds the state ([`LiveStats::write_parts`]: its hourly rows, the conversions
//! and refunds, the clicks it holds) and says which events it has:
//! - every event of this node's log up to `applied` (the live thread had applied them all, and
//!   none was waiting for a lookup to work again);
//! - every event of the raw files in `covered` (the snapshot of the last recompute whose
//!   result the state took).
//!
//! A restart ([`crate::runner`]) loads it, reads the raw files that may hold anything else
//! (this node's files past `applied`, compacted files and other nodes' files not in
//! `covered`) and applies them: applying an event the state already holds changes nothing.
//!
//! The file is written whole beside the write-ahead log (temporary file, fsync, rename), so a
//! crash leaves the previous one. It ends with a CRC-32C of everything before it; a file that
//! fails it, comes from another node or another version is refused and the restart recomputes
//! in full.
//!
//! Layout: a magic line, the [`Meta`] as JSON (length first), four Arrow IPC streams (rows,
//! conversions, refunds, clicks), the CRC.

use std::collections::HashSet;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path as FsPath;

use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use chrono::NaiveDate;
use object_store::path::Path;

use netrev_storage::Table;

use crate::state::{Builder, LiveStats, Part, stats_schema};
use crate::{Error, Result};

/// The first bytes of a checkpoint file.
const MAGIC: &[u8] = b"netrev live state\n";

/// Changed whenever what a checkpoint holds, or means, changes: an older one is not read.
const VERSION: u32 = 1;

/// Rows per record batch written.
const CHUNK: usize = 64 * 1024;

/// The file's name in the write-ahead log's directory.
pub const FILE_NAME: &str = "live.checkpoint";

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Meta {
    version: u32,
    node: String,
    applied: u64,
    horizon: Option<NaiveDate>,
    covered: Vec<String>,
}

/// A checkpoint as read back.
pub struct Checkpoint {
    pub state: LiveStats,
    /// Every event of this node's log up to this sequence is in the state.
    pub applied: u64,
    /// Every event of these raw files is in the state.
    pub covered: HashSet<Path>,
}

/// The sections of the file, in order, with their schemas.
fn sections() -> [(Part, SchemaRef); 4] {
    [
        (Part::Rows, stats_schema()),
        (Part::Conversions, Table::Conversions.schema()),
        (Part::Refunds, Table::Refunds.schema()),
        (Part::Clicks, Table::Clicks.schema()),
    ]
}

/// Writes `state` as the checkpoint at `path` (replacing any), durably; returns its size.
pub fn write(
    path: &FsPath,
    node: &str,
    state: &LiveStats,
    applied: u64,
    covered: &HashSet<Path>,
) -> Result<u64> {
    let failed = |e: std::io::Error| Error::DataRoot(format!("writing {}: {e}", path.display()));
    let tmp = path.with_extension("tmp");
    let file = std::fs::File::create(&tmp).map_err(failed)?;
    let mut out = Crc {
        inner: BufWriter::with_capacity(1 << 20, file),
        crc: 0,
        bytes: 0,
    };
    out.write_all(MAGIC).map_err(failed)?;
    let meta = serde_json::to_vec(&Meta {
        version: VERSION,
        node: node.to_string(),
        applied,
        horizon: state.horizon(),
        covered: covered.iter().map(|p| p.to_string()).collect(),
    })
    .map_err(|e| Error::DataRoot(format!("encoding the checkpoint: {e}")))?;
    out.write_all(&(meta.len() as u64).to_le_bytes())
        .map_err(failed)?;
    out.write_all(&meta).map_err(failed)?;

    let sections = sections();
    let mut at = 0;
    let mut writer = Some(StreamWriter::try_new(&mut out, &sections[0].1)?);
    state.write_parts(CHUNK, &mut |part, batch| {
        while sections[at].0 != part {
            let w = writer.take().expect("a writer").into_inner()?;
            at += 1;
            writer = Some(StreamWriter::try_new(w, &sections[at].1)?);
        }
        writer.as_mut().expect("a writer").write(&batch)?;
        Ok(())
    })?;
    let mut w = writer.take().expect("a writer").into_inner()?;
    for (_, schema) in &sections[at + 1..] {
        w = StreamWriter::try_new(w, schema)?.into_inner()?;
    }
    let crc = out.crc;
    let mut inner = out.inner;
    inner.write_all(&crc.to_le_bytes()).map_err(failed)?;
    let file = inner.into_inner().map_err(|e| failed(e.into_error()))?;
    file.sync_all().map_err(failed)?;
    let size = file.metadata().map_err(failed)?.len();
    drop(file);
    std::fs::rename(&tmp, path).map_err(failed)?;
    if let Some(dir) = path.parent() {
        netrev_storage::store::sync_dir(dir)
            .map_err(|e| Error::DataRoot(format!("syncing {}: {e}", dir.display())))?;
    }
    Ok(size)
}

/// Reads the checkpoint at `path` written by `node`: `None` when there is none; an error when
/// it is damaged, another node's or another version's.
pub fn read(path: &FsPath, node: &str) -> Result<Option<Checkpoint>> {
    let bad = |what: String| Error::DataRoot(format!("checkpoint {}: {what}", path.display()));
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(e.to_string())),
    };
    let len = file.metadata().map_err(|e| bad(e.to_string()))?.len();
    let Some(body) = len.checked_sub(4) else {
        return Err(bad("too short".into()));
    };
    let mut input = Crc {
        inner: BufReader::with_capacity(1 << 20, file).take(body),
        crc: 0,
        bytes: 0,
    };
    let mut magic = vec![0; MAGIC.len()];
    input
        .read_exact(&mut magic)
        .map_err(|e| bad(e.to_string()))?;
    if magic != MAGIC {
        return Err(bad("not a checkpoint".into()));
    }
    let mut n = [0; 8];
    input.read_exact(&mut n).map_err(|e| bad(e.to_string()))?;
    let n = u64::from_le_bytes(n);
    if n > body {
        return Err(bad("truncated".into()));
    }
    let mut meta = vec![0; n as usize];
    input
        .read_exact(&mut meta)
        .map_err(|e| bad(e.to_string()))?;
    let meta: Meta = serde_json::from_slice(&meta).map_err(|e| bad(e.to_string()))?;
    if meta.version != VERSION {
        return Err(bad(format!(
            "version {}, this netrev reads {VERSION}",
            meta.version
        )));
    }
    if meta.node != node {
        return Err(bad(format!("written by node {}, not {node}", meta.node)));
    }
    let mut built = Builder::exact(meta.horizon);
    for (part, schema) in sections() {
        let reader = StreamReader::try_new(&mut input, None)?;
        if reader.schema().fields() != schema.fields() {
            return Err(bad(format!("{part:?} do not have the expected columns")));
        }
        for batch in reader {
            let batch = batch?;
            match part {
                Part::Rows => built.rows(&batch)?,
                Part::Clicks => built.clicks(&batch)?,
                Part::Conversions => built.events(Table::Conversions, &batch)?,
                Part::Refunds => built.events(Table::Refunds, &batch)?,
            }
        }
    }
    if input.bytes != body {
        return Err(bad("trailing bytes".into()));
    }
    let crc = input.crc;
    let mut stored = [0; 4];
    input
        .inner
        .into_inner()
        .read_exact(&mut stored)
        .map_err(|e| bad(e.to_string()))?;
    if u32::from_le_bytes(stored) != crc {
        return Err(bad("damaged (checksum)".into()));
    }
    let covered = meta
        .covered
        .iter()
        .map(|p| Path::parse(p).map_err(|e| bad(e.to_string())))
        .collect::<Result<_>>()?;
    Ok(Some(Checkpoint {
        state: built.finish(),
        applied: meta.applied,
        covered,
    }))
}

/// A reader or writer that keeps the CRC-32C of the bytes through it.
struct Crc<T> {
    inner: T,
    crc: u32,
    bytes: u64,
}

impl<W: Write> Write for Crc<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Crc<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::NoLookup;
    use netrev_storage::{Click, Conversion, Event};
    use rust_decimal::Decimal;

    const T: i64 = 1_795_000_000_000_000;

    fn state() -> LiveStats {
        let mut live = LiveStats::new();
        for i in 0..3 {
            let click = Event::Click(Click {
                cid: format!("c{i}"),
                vid: format!("v{i}"),
                ts: T + i,
                source: Some("s".into()),
                campaign: None,
                link: None,
                country: Some("DE".into()),
                device: None,
                cost: Decimal::new(12, 2),
                subs: Default::default(),
            });
            live.apply(&click, &mut NoLookup).unwrap();
        }
        let sale = Event::Conversion(Conversion {
            cid: "c1".into(),
            ts: T + 10,
            amount: Decimal::new(4999, 2),
            txid: Some("t".into()),
            kind: None,
        });
        live.apply(&sale, &mut NoLookup).unwrap();
        live
    }

    #[test]
    fn a_damaged_foreign_or_missing_checkpoint_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        assert!(read(&path, "n1").unwrap().is_none());
        let live = state();
        let covered = HashSet::new();
        write(&path, "n1", &live, 7, &covered).unwrap();
        let back = read(&path, "n1").unwrap().unwrap();
        assert_eq!(back.applied, 7);
        assert_eq!(back.state.sizes(), live.sizes());
        assert_eq!(back.state.visitor("v1"), live.visitor("v1"));
        assert!(read(&path, "n2").is_err(), "another node's");

        let bytes = std::fs::read(&path).unwrap();
        for at in [
            MAGIC.len() + 3,
            bytes.len() / 2,
            bytes.len() - 6,
            bytes.len() - 1,
        ] {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x10;
            std::fs::write(&path, &flipped).unwrap();
            assert!(read(&path, "n1").is_err(), "a byte flipped at {at}");
        }
        for len in [0, 3, MAGIC.len() + 4, bytes.len() / 2, bytes.len() - 1] {
            std::fs::write(&path, &bytes[..len]).unwrap();
            assert!(read(&path, "n1").is_err(), "cut at {len}");
        }
        // A crash while writing leaves the previous checkpoint whole.
        std::fs::write(&path, &bytes).unwrap();
        std::fs::write(path.with_extension("tmp"), &bytes[..10]).unwrap();
        assert_eq!(read(&path, "n1").unwrap().unwrap().applied, 7);
    }
}

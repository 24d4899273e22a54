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
//! The file is written whole beside the write-ahead log ([`sealed`]), so a crash leaves the
//! previous one; one that is damaged, another node's or another version's is refused and the
//! restart recomputes in full.
//!
//! Layout: a magic line, the [`Meta`] as JSON, seven Arrow IPC streams (hourly rows from the
//! horizon day on, the day sums before it, the hourly rows before it encoded by day,
//! conversions, refunds, clicks, what the state spilled), a CRC-32C.

use std::collections::HashSet;
use std::path::Path as FsPath;

use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::StreamWriter;
use chrono::NaiveDate;
use object_store::path::Path;

use netrev_storage::{Table, sealed};

use crate::state::{Builder, LiveStats, Part, cold_schema, spilled_schema, stats_schema};
use crate::{Error, Result};

/// The first bytes of a checkpoint file.
const MAGIC: &[u8] = b"netrev live state\n";

/// Changed whenever what a checkpoint holds, or means, changes: an older one is not read.
const VERSION: u32 = 4;

/// Rows per record batch written.
const CHUNK: usize = 64 * 1024;

/// The file's name in the write-ahead log's directory.
pub const FILE_NAME: &str = "live.checkpoint";

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Meta {
    version: u32,
    /// The node and data root ([`owner`]).
    owner: String,
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

/// Whose checkpoint (and what-the-last-recompute-read file) it is: this node of this data root,
/// as `node@fingerprint` ([`netrev_storage::clickid::Key::fingerprint`]).
pub fn owner(node: &str, key: &netrev_storage::clickid::Key) -> String {
    format!("{node}@{}", key.fingerprint())
}

/// The sections of the file, in order, with their schemas.
fn sections() -> [(Part, SchemaRef); 7] {
    [
        (Part::Rows, stats_schema()),
        (Part::Days, stats_schema()),
        (Part::Cold, cold_schema()),
        (Part::Conversions, Table::Conversions.schema()),
        (Part::Refunds, Table::Refunds.schema()),
        (Part::Clicks, Table::Clicks.schema()),
        (Part::Spilled, spilled_schema()),
    ]
}

/// Writes `state` as the checkpoint at `path` (replacing any), durably; returns its size.
pub fn write(
    path: &FsPath,
    owner: &str,
    state: &LiveStats,
    applied: u64,
    covered: &HashSet<Path>,
) -> Result<u64> {
    let meta = Meta {
        version: VERSION,
        owner: owner.to_string(),
        applied,
        horizon: state.horizon(),
        covered: covered.iter().map(|p| p.to_string()).collect(),
    };
    let written = sealed::write(path, MAGIC, |out| {
        sealed::write_json(out, &meta)?;
        // The sections one after another, each an IPC stream (an empty one too).
        let sections = sections();
        let mut at = 0;
        let mut writer = Some(StreamWriter::try_new(&mut *out, &sections[0].1)?);
        state
            .write_parts(CHUNK, &mut |part, batch| {
                while sections[at].0 != part {
                    let w = writer.take().expect("a writer").into_inner()?;
                    at += 1;
                    writer = Some(StreamWriter::try_new(w, &sections[at].1)?);
                }
                writer.as_mut().expect("a writer").write(&batch)?;
                Ok(())
            })
            .map_err(|e| netrev_storage::Error::Corrupt {
                path: path.display().to_string(),
                what: format!("encoding the state: {e}"),
            })?;
        let w = writer.take().expect("a writer").into_inner()?;
        for (_, schema) in &sections[at + 1..] {
            sealed::write_stream(w, schema, [])?;
        }
        Ok(())
    })?;
    Ok(written)
}

/// Reads the checkpoint at `path` written by `owner`: `None` when there is none; an error when
/// it is damaged, another node's or data root's, or another version's.
pub fn read(path: &FsPath, owner: &str) -> Result<Option<Checkpoint>> {
    let bad = |what: String| Error::DataRoot(format!("checkpoint {}: {what}", path.display()));
    let mut refused = None;
    let read = sealed::read(path, MAGIC, |input| {
        let meta: Meta = sealed::read_json(input, META_MAX)?;
        if meta.version != VERSION {
            refused = Some(format!(
                "version {}, this netrev reads {VERSION}",
                meta.version
            ));
        } else if meta.owner != owner {
            refused = Some(format!("written by {}, not {owner}", meta.owner));
        }
        if refused.is_some() {
            // Not read further: the body is another's.
            std::io::copy(input, &mut std::io::sink()).map_err(|e| {
                netrev_storage::Error::Corrupt {
                    path: String::new(),
                    what: e.to_string(),
                }
            })?;
            return Ok(None);
        }
        let mut built = Builder::exact(meta.horizon);
        for (part, schema) in sections() {
            sealed::read_stream(input, Some(&schema), &mut |batch| {
                match part {
                    Part::Rows => built.rows(&batch),
                    Part::Days => built.days(&batch),
                    Part::Cold => built.cold(&batch),
                    Part::Clicks => built.clicks(&batch),
                    Part::Conversions => built.events(Table::Conversions, &batch),
                    Part::Refunds => built.events(Table::Refunds, &batch),
                    Part::Spilled => built.spilled(&batch),
                }
                .map_err(|e| netrev_storage::Error::Corrupt {
                    path: String::new(),
                    what: e.to_string(),
                })
            })?;
        }
        Ok(Some((meta, built)))
    })
    .map_err(|e| bad(e.to_string()))?;
    if let Some(why) = refused {
        return Err(bad(why));
    }
    let Some(Some((meta, built))) = read else {
        return Ok(None);
    };
    let covered = meta
        .covered
        .iter()
        .map(|p| Path::parse(p).map_err(|e| bad(e.to_string())))
        .collect::<Result<_>>()?;
    Ok(Some(Checkpoint {
        state: built.finish()?,
        applied: meta.applied,
        covered,
    }))
}

/// The largest header read: the paths of the raw files covered (a few per table and day).
const META_MAX: u64 = 256 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::NoLookup;
    use netrev_storage::{Click, Conversion, Event};
    use rust_decimal::Decimal;

    const T: i64 = 1_795_000_000_000_000;

    fn click(cid: &str) -> Event {
        Event::Click(Click {
            cid: cid.into(),
            vid: format!("v-{cid}"),
            ts: T,
            source: Some("s".into()),
            campaign: None,
            link: None,
            country: Some("DE".into()),
            device: None,
            cost: Decimal::new(12, 2),
            subs: Default::default(),
        })
    }

    /// Three clicks, a sale, and a sale of an unknown click spilled past a cap of nothing.
    fn state() -> LiveStats {
        let mut live = LiveStats::new();
        for i in 0..3 {
            live.apply(&click(&format!("c{i}")), &mut NoLookup).unwrap();
        }
        let sale = Event::Conversion(Conversion {
            cid: "c1".into(),
            ts: T + 10,
            amount: Decimal::new(4999, 2),
            txid: Some("t".into()),
            kind: None,
        });
        live.apply(&sale, &mut NoLookup).unwrap();
        live.limit_pending(0);
        let unknown = Event::Conversion(Conversion {
            cid: "spilled".into(),
            ts: T + 11,
            amount: Decimal::new(100, 0),
            txid: None,
            kind: None,
        });
        live.apply(&unknown, &mut NoLookup).unwrap();
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
        assert_eq!(back.state.sizes().spilled_events, 1);
        // What it spilled is known after the round trip: its click asks for a read back.
        assert_eq!(back.state.visitor("v-c1"), live.visitor("v-c1"));
        assert!(!live.visitor("v-c1").gross.is_zero());
        let mut back = back.state;
        back.apply(&click("spilled"), &mut NoLookup).unwrap();
        assert_eq!(back.take_arrived(), vec!["spilled".to_string()]);
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

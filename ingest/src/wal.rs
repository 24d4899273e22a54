//! The write-ahead log: segment files of checksummed records.
//!
//! Layout of a directory:
//!
//! ```text
//! <dir>/00000000000000000001.wal   segment: header, then records; named by its first sequence
//! <dir>/00000000000000004711.wal
//! <dir>/checkpoint                 highest sequence flushed to Parquet (written atomically)
//! <dir>/node_id                    this node's ID, part of every raw file name
//! ```
//!
//! A segment starts with the 8-byte [`MAGIC`]; then one record per group commit:
//! `[u32 LE payload length][u32 LE CRC-32C of payload][payload]` with payload
//! `[u64 LE first sequence][u32 LE count]` and `count` times `[u32 LE length][JSON of an
//! event]`; the events carry consecutive sequences. Sequences increase strictly across
//! records and segments.
//!
//! One record per group commit (not per event) matters for power loss: the pages of one write
//! may reach the disk in any order, so a torn group can leave a hole followed by intact later
//! events. As one checksummed record, the whole group is either intact or torn.
//!
//! Replay rules: a damaged record at the very end of the newest segment is a torn write (the
//! process or machine died mid-append, before the group was acknowledged): it is truncated
//! away. A damaged record anywhere else, or one followed by a valid record, is corruption of
//! acknowledged records: replay stops with an error naming file and offset rather than
//! skipping data.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use netrev_storage::{Event, failpoint};

/// First bytes of every segment: identifies the file and its format version.
pub const MAGIC: &[u8; 8] = b"NRWAL\x00\x00\x01";
/// Bytes before each payload: length and checksum.
const FRAME_HEADER: usize = 8;
/// Most events in one record: bounds a record's size (events are at most ~13 KiB, all text
/// being bounded) while leaving group commit plenty of room.
pub const MAX_EVENTS_PER_RECORD: usize = 8192;
/// Largest payload accepted on replay: [`MAX_EVENTS_PER_RECORD`] of the largest events. A
/// larger length can only be damage.
pub const MAX_PAYLOAD: usize = 128 << 20;
/// Smallest possible payload: first sequence and count.
const MIN_PAYLOAD: usize = 12;

/// A failure of the write-ahead log.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The disk refused an operation (full, read-only, failing). External.
    #[error("write-ahead log {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// Acknowledged records are damaged. Refusing to start is the only way not to lose or
    /// invent data silently; an operator must look.
    #[error(
        "write-ahead log {path} is corrupt at byte {offset}: {what}. Acknowledged records \
         follow this point, so netrev will not skip it. Keep a copy of the file for analysis; \
         to start anyway, truncate the file at byte {offset} (records after it are then lost)"
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: String,
    },
}

pub type Result<T, E = WalError> = std::result::Result<T, E>;

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> WalError + 'a {
    move |source| WalError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Appends one framed record to `out`: the events `jsons`, with sequences `first_seq`,
/// `first_seq + 1`, ….
pub fn frame<'a>(
    out: &mut Vec<u8>,
    first_seq: u64,
    jsons: impl ExactSizeIterator<Item = &'a [u8]>,
) {
    assert!(jsons.len() <= MAX_EVENTS_PER_RECORD, "record too large");
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    out.extend_from_slice(&first_seq.to_le_bytes());
    out.extend_from_slice(&(jsons.len() as u32).to_le_bytes());
    for json in jsons {
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(json);
    }
    let len = (out.len() - start - FRAME_HEADER) as u32;
    let crc = crc32c::crc32c(&out[start + FRAME_HEADER..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The events of a record's payload whose checksum is already verified.
fn decode_payload(payload: &[u8]) -> Result<Vec<Record>, String> {
    let first = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
    let count = u32::from_le_bytes(payload[8..12].try_into().expect("4 bytes")) as usize;
    let mut pos = MIN_PAYLOAD;
    let mut out = Vec::with_capacity(count.min(MAX_EVENTS_PER_RECORD));
    for i in 0..count {
        let len_bytes = payload
            .get(pos..pos + 4)
            .ok_or("event length runs past the record")?;
        let len = u32::from_le_bytes(len_bytes.try_into().expect("4 bytes")) as usize;
        let json = payload
            .get(pos + 4..pos + 4 + len)
            .ok_or("event runs past the record")?;
        let event =
            serde_json::from_slice(json).map_err(|e| format!("event {i} does not decode: {e}"))?;
        out.push(Record {
            seq: first + i as u64,
            event,
        });
        pos += 4 + len;
    }
    if pos != payload.len() {
        return Err("bytes left after the last event".into());
    }
    Ok(out)
}

/// The JSON of an event as stored in a record.
pub fn encode_event(event: &Event) -> Vec<u8> {
    serde_json::to_vec(event).expect("events always serialize")
}

/// One replayed record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub seq: u64,
    pub event: Event,
}

/// What a segment scan found.
#[derive(Debug)]
pub enum Scan {
    /// Every byte is a valid record.
    Clean,
    /// The segment ends in a torn record starting at this offset.
    TornAt(u64),
}

/// Decodes the records of one segment's bytes. `is_last` says whether a damaged tail may be a
/// torn write.
pub fn scan_segment(
    path: &Path,
    bytes: &[u8],
    is_last: bool,
    out: &mut Vec<Record>,
) -> Result<Scan> {
    let corrupt = |offset: usize, what: String| WalError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        what,
    };
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        // A segment whose header never got fully written holds no records: a crash or a full
        // disk while creating it.
        if bytes.len() < MAGIC.len() && MAGIC.starts_with(bytes) {
            return Ok(Scan::TornAt(0));
        }
        return Err(corrupt(
            0,
            "not a netrev write-ahead-log segment (bad header)".into(),
        ));
    }
    let mut pos = MAGIC.len();
    // A bad record is a torn write only if it is the last thing in the newest segment: no
    // valid record follows it anywhere. Otherwise acknowledged records would be cut away.
    let torn_or = |pos: usize, what: String| -> Result<Scan> {
        if is_last && !valid_record_after(bytes, pos + 1) {
            Ok(Scan::TornAt(pos as u64))
        } else {
            Err(corrupt(pos, what))
        }
    };
    let mut prev_seq = out.last().map(|r| r.seq);
    while pos < bytes.len() {
        if bytes.len() - pos < FRAME_HEADER {
            return torn_or(pos, "incomplete record header".into());
        }
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().expect("4 bytes"));
        let end = pos + FRAME_HEADER + len;
        if !(MIN_PAYLOAD..=MAX_PAYLOAD).contains(&len) {
            return torn_or(pos, format!("impossible record length {len}"));
        }
        if end > bytes.len() {
            return torn_or(pos, "record runs past the end of the file".into());
        }
        let payload = &bytes[pos + FRAME_HEADER..end];
        if crc32c::crc32c(payload) != crc {
            return torn_or(pos, "checksum mismatch".into());
        }
        let records = decode_payload(payload).map_err(|e| {
            corrupt(
                pos,
                format!("checksum is right but the record does not decode: {e}"),
            )
        })?;
        if let Some(first) = records.first()
            && prev_seq.is_some_and(|p| first.seq <= p)
        {
            return Err(corrupt(
                pos,
                format!("sequence {} does not follow {prev_seq:?}", first.seq),
            ));
        }
        if let Some(last) = records.last() {
            prev_seq = Some(last.seq);
        }
        out.extend(records);
        pos = end;
    }
    Ok(Scan::Clean)
}

/// Bytes hashed at most while looking for a valid record after a damaged one: the search only
/// runs on damage, and past this budget the damage is treated as corruption (the safe side).
const SEARCH_BUDGET: usize = 256 << 20;

/// Whether a complete record with a valid checksum starts anywhere at or after `from`.
fn valid_record_after(bytes: &[u8], from: usize) -> bool {
    let mut budget = SEARCH_BUDGET;
    for p in from..bytes.len().saturating_sub(FRAME_HEADER) {
        let len = u32::from_le_bytes(bytes[p..p + 4].try_into().expect("4 bytes")) as usize;
        if !(MIN_PAYLOAD..=MAX_PAYLOAD).contains(&len) || p + FRAME_HEADER + len > bytes.len() {
            continue;
        }
        if budget < len {
            return true;
        }
        budget -= len;
        let crc = u32::from_le_bytes(bytes[p + 4..p + 8].try_into().expect("4 bytes"));
        if crc32c::crc32c(&bytes[p + FRAME_HEADER..p + FRAME_HEADER + len]) == crc {
            return true;
        }
    }
    false
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.wal")
}

/// The segments of `dir`, oldest first, as (first sequence, path).
pub fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io("list", dir))? {
        let entry = entry.map_err(io("list", dir))?;
        let name = entry.file_name();
        let Some(first) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((first, entry.path()));
    }
    out.sort();
    Ok(out)
}

/// Reads every record of `dir`, truncating a torn tail of the newest segment in place.
/// Returns the records in sequence order.
pub fn replay(dir: &Path) -> Result<Vec<Record>> {
    let segs = segments(dir)?;
    let mut records = Vec::new();
    for (i, (_, path)) in segs.iter().enumerate() {
        let is_last = i + 1 == segs.len();
        let mut bytes = Vec::new();
        File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io("read", path))?;
        if let Scan::TornAt(offset) = scan_segment(path, &bytes, is_last, &mut records)? {
            if offset == 0 && !is_last {
                // An older segment that never got its header: it holds nothing.
                std::fs::remove_file(path).map_err(io("remove", path))?;
                continue;
            }
            tracing::warn!(
                path = %path.display(),
                offset,
                dropped_bytes = bytes.len() as u64 - offset,
                "truncating a torn write at the end of the write-ahead log (an unacknowledged record)"
            );
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io("open", path))?;
            f.set_len(offset).map_err(io("truncate", path))?;
            f.sync_all().map_err(io("fsync", path))?;
        }
    }
    Ok(records)
}

/// Reads the records of `dir` after sequence `after` and changes nothing: for a reader beside
/// the running writer (`netrev sql`). Segments wholly at or below `after` are not read. A
/// damaged end of the newest segment (an append under way, or a torn write that the writer's
/// next start will cut) is left out; a segment removed meanwhile (trimmed, its records
/// flushed first) is skipped.
pub fn read(dir: &Path, after: u64) -> Result<Vec<Record>> {
    let segs = segments(dir)?;
    let mut records = Vec::new();
    for (i, (_, path)) in segs.iter().enumerate() {
        if segs.get(i + 1).is_some_and(|(next, _)| *next <= after + 1) {
            continue;
        }
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io("read", path)(e)),
        };
        scan_segment(path, &bytes, i + 1 == segs.len(), &mut records)?;
    }
    records.retain(|r| r.seq > after);
    Ok(records)
}

/// Deletes the segments all of whose records are at or below `flushed_seq`. The newest segment
/// is never deleted: it is the one being written.
pub fn remove_flushed(dir: &Path, flushed_seq: u64) -> Result<usize> {
    let segs = segments(dir)?;
    let mut removed = 0;
    for pair in segs.windows(2) {
        let ((_, path), (next_first, _)) = (&pair[0], &pair[1]);
        if *next_first <= flushed_seq + 1 {
            std::fs::remove_file(path).map_err(io("remove", path))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Appends to the newest segment; used by one thread only.
#[derive(Debug)]
pub struct Writer {
    dir: PathBuf,
    file: File,
    path: PathBuf,
    /// Bytes in the current segment, the offset the next append starts at.
    len: u64,
    /// Size after which the next append starts a new segment: big enough that rotation is
    /// rare, small enough that flushed segments are deleted promptly.
    segment_bytes: u64,
}

impl Writer {
    /// Starts a new segment whose first record will be `next_seq`.
    pub fn create(dir: &Path, next_seq: u64, segment_bytes: u64) -> Result<Writer> {
        let (file, path) = new_segment(dir, next_seq)?;
        Ok(Writer {
            dir: dir.to_path_buf(),
            file,
            path,
            len: MAGIC.len() as u64,
            segment_bytes,
        })
    }

    /// Writes framed records whose first sequence is `first_seq` and makes them durable
    /// (`fdatasync`) before returning. On a failed write the segment is cut back to where it
    /// was, so a later append never follows garbage. A failed fsync is reported as
    /// [`AppendError::Sync`]: after it the kernel may have dropped the dirty pages, so the log
    /// can no longer vouch for anything written since the last good sync.
    pub fn append(&mut self, first_seq: u64, framed: &[u8]) -> Result<(), AppendError> {
        if self.len >= self.segment_bytes {
            let (file, path) = new_segment(&self.dir, first_seq).map_err(AppendError::Write)?;
            self.file = file;
            self.path = path;
            self.len = MAGIC.len() as u64;
        }
        if let Err(e) = failpoint::check("wal-write").and_then(|()| self.file.write_all(framed)) {
            let err = io("write", &self.path)(e);
            return Err(match self.file.set_len(self.len) {
                Ok(()) => AppendError::Write(err),
                Err(_) => AppendError::Sync(err),
            });
        }
        if let Err(e) = failpoint::check("wal-fsync").and_then(|()| self.file.sync_data()) {
            // Not acknowledged, so it must not be replayed either: cut it off now, as far as
            // the failing disk lets us ([`Writer::recover`] makes the cut durable).
            let _ = self.file.set_len(self.len);
            return Err(AppendError::Sync(io("fsync", &self.path)(e)));
        }
        self.len += framed.len() as u64;
        Ok(())
    }

    /// Makes the log appendable again after [`AppendError::Sync`]: cuts the segment back to
    /// its last synced length (what follows was never acknowledged), makes that durable, and
    /// sends the next append to a new segment, whose fresh file descriptor reports only its
    /// own errors. Fails, changing nothing that matters, while the disk still fails.
    pub fn recover(&mut self) -> Result<()> {
        self.file
            .set_len(self.len)
            .map_err(io("truncate", &self.path))?;
        self.file.sync_all().map_err(io("fsync", &self.path))?;
        self.len = self.len.max(self.segment_bytes);
        Ok(())
    }
}

/// Why an append failed.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Nothing was appended; the log is intact and later appends may succeed.
    #[error("{0}")]
    Write(WalError),
    /// The log's state on disk is unknown; it must not be appended to again.
    #[error("{0}")]
    Sync(WalError),
}

fn new_segment(dir: &Path, first_seq: u64) -> Result<(File, PathBuf)> {
    let path = dir.join(segment_name(first_seq));
    // A segment of this name can only exist if a previous run created it and died before
    // writing a record to it (its records would have sequences ≥ `first_seq`, and the caller
    // starts past every replayed one). Replace it only if it is indeed empty.
    if let Ok(meta) = std::fs::metadata(&path) {
        if meta.len() > MAGIC.len() as u64 {
            return Err(WalError::Corrupt {
                path,
                offset: 0,
                what: "a segment that should be new already holds records".into(),
            });
        }
        std::fs::remove_file(&path).map_err(io("remove", &path))?;
    }
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(io("create", &path))?;
    if let Err(e) = file.write_all(MAGIC).and_then(|()| file.sync_all()) {
        // Leave no headerless segment behind (a full disk, typically).
        let _ = std::fs::remove_file(&path);
        return Err(io("write", &path)(e));
    }
    // The new file's directory entry must be durable too, or a power loss forgets the segment.
    netrev_storage::store::sync_dir(dir).map_err(|e| WalError::Io {
        op: "fsync directory",
        path: dir.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok((file, path))
}

/// Reads the flush checkpoint (0 when none was written yet).
pub fn read_checkpoint(dir: &Path) -> Result<u64> {
    let path = dir.join("checkpoint");
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map_err(|_| WalError::Corrupt {
            path,
            offset: 0,
            what: format!("checkpoint {text:?} is not a number"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io("read", &path)(e)),
    }
}

/// Durably records that every record up to `seq` is in Parquet.
pub fn write_checkpoint(dir: &Path, seq: u64) -> Result<()> {
    write_small_file(dir, "checkpoint", &seq.to_string())
}

/// Writes a small file atomically and durably (temporary file, fsync, rename, directory fsync).
pub fn write_small_file(dir: &Path, name: &str, contents: &str) -> Result<()> {
    let path = dir.join(name);
    netrev_storage::store::write_file_durably(&path, contents.as_bytes()).map_err(|e| {
        WalError::Io {
            op: "write",
            path: path.clone(),
            source: std::io::Error::other(e.to_string()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netrev_storage::{Conversion, Event};
    use rust_decimal::Decimal;

    fn event(i: u64) -> Event {
        Event::Conversion(Conversion {
            cid: format!("c{i}"),
            ts: 1_795_000_000_000_000 + i as i64,
            amount: Decimal::new(4999 + i as i64, 2),
            txid: Some(format!("t{i}")),
            kind: None,
        })
    }

    fn write(dir: &Path, seqs: std::ops::RangeInclusive<u64>) -> Vec<usize> {
        let mut w = Writer::create(dir, *seqs.start(), 1 << 20).unwrap();
        let mut ends = Vec::new();
        let mut offset = MAGIC.len();
        for s in seqs {
            let mut buf = Vec::new();
            let json = encode_event(&event(s));
            frame(&mut buf, s, [json.as_slice()].into_iter());
            w.append(s, &buf).unwrap();
            offset += buf.len();
            ends.push(offset);
        }
        ends
    }

    #[test]
    fn replays_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 1..=20);
        let recs = replay(dir.path()).unwrap();
        assert_eq!(recs.len(), 20);
        assert!(
            recs.iter()
                .enumerate()
                .all(|(i, r)| r.seq == i as u64 + 1 && r.event == event(r.seq))
        );
    }

    /// Cutting the log at every byte offset of its last record yields the complete records and
    /// only those, and the file is truncated to the last complete record.
    #[test]
    fn torn_tail_at_every_offset() {
        let dir = tempfile::tempdir().unwrap();
        let ends = write(dir.path(), 1..=5);
        let (_, path) = segments(dir.path()).unwrap().pop().unwrap();
        let full = std::fs::read(&path).unwrap();
        let last_start = ends[3];
        for cut in last_start..full.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            let recs = replay(dir.path()).unwrap();
            assert_eq!(
                recs.iter().map(|r| r.seq).collect::<Vec<_>>(),
                vec![1, 2, 3, 4],
                "cut at {cut}"
            );
            assert_eq!(
                std::fs::metadata(&path).unwrap().len(),
                last_start as u64,
                "cut at {cut}"
            );
        }
        std::fs::write(&path, &full).unwrap();
        assert_eq!(replay(dir.path()).unwrap().len(), 5);
    }

    #[test]
    fn torn_tail_followed_by_zeros_is_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let ends = write(dir.path(), 1..=3);
        let (_, path) = segments(dir.path()).unwrap().pop().unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(ends[1] + 10);
        bytes.extend_from_slice(&[0u8; 4096]);
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(replay(dir.path()).unwrap().len(), 2);
    }

    #[test]
    fn corruption_before_the_tail_stops_replay() {
        let dir = tempfile::tempdir().unwrap();
        let ends = write(dir.path(), 1..=5);
        let (_, path) = segments(dir.path()).unwrap().pop().unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[ends[1] + 12] ^= 0x40; // inside record 3's payload
        std::fs::write(&path, &bytes).unwrap();
        let err = replay(dir.path()).unwrap_err();
        match &err {
            WalError::Corrupt { offset, .. } => assert_eq!(*offset, ends[1] as u64),
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains("will not skip"), "{err}");
        // Nothing was truncated.
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn damaged_length_in_the_middle_is_corruption_not_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let ends = write(dir.path(), 1..=5);
        let (_, path) = segments(dir.path()).unwrap().pop().unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[ends[1] + 1] ^= 0x10; // record 3's length grows by 4096: runs past the end
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(replay(dir.path()), Err(WalError::Corrupt { .. })));
    }

    #[test]
    fn corruption_in_an_older_segment_stops_replay() {
        let dir = tempfile::tempdir().unwrap();
        let ends = write(dir.path(), 1..=3);
        write(dir.path(), 4..=6);
        let (_, old) = segments(dir.path()).unwrap().remove(0);
        let bytes = std::fs::read(&old).unwrap();
        std::fs::write(&old, &bytes[..ends[2] - 3]).unwrap();
        assert!(matches!(replay(dir.path()), Err(WalError::Corrupt { .. })));
    }

    #[test]
    fn a_group_is_one_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::create(dir.path(), 10, 1 << 20).unwrap();
        let jsons: Vec<Vec<u8>> = (10..15).map(|s| encode_event(&event(s))).collect();
        let mut buf = Vec::new();
        frame(&mut buf, 10, jsons.iter().map(Vec::as_slice));
        w.append(10, &buf).unwrap();
        let recs = replay(dir.path()).unwrap();
        assert_eq!(
            recs.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![10, 11, 12, 13, 14]
        );
        assert!(recs.iter().all(|r| r.event == event(r.seq)));
        // A hole in the middle of the group (pages persisted out of order) drops the whole
        // unacknowledged group rather than reporting corruption.
        let (_, path) = segments(dir.path()).unwrap().pop().unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = MAGIC.len() + buf.len() / 2;
        bytes[mid..mid + 16].fill(0);
        std::fs::write(&path, &bytes).unwrap();
        assert!(replay(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn headerless_segments_hold_nothing() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 1..=2);
        std::fs::write(dir.path().join(segment_name(3)), &MAGIC[..3]).unwrap();
        write(dir.path(), 5..=6);
        let recs = replay(dir.path()).unwrap();
        assert_eq!(
            recs.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![1, 2, 5, 6]
        );
        assert!(!dir.path().join(segment_name(3)).exists());
    }

    #[test]
    fn flushed_segments_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 1..=3);
        write(dir.path(), 4..=6);
        write(dir.path(), 7..=9);
        assert_eq!(remove_flushed(dir.path(), 4).unwrap(), 1);
        assert_eq!(remove_flushed(dir.path(), 9).unwrap(), 1);
        let left: Vec<u64> = segments(dir.path())
            .unwrap()
            .into_iter()
            .map(|s| s.0)
            .collect();
        assert_eq!(left, vec![7]);
        assert_eq!(replay(dir.path()).unwrap().len(), 3);
    }

    #[test]
    fn checkpoint_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_checkpoint(dir.path()).unwrap(), 0);
        write_checkpoint(dir.path(), 42).unwrap();
        assert_eq!(read_checkpoint(dir.path()).unwrap(), 42);
    }
}

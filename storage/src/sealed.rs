//! Node-local files written whole and read back whole or not at all: the live state's
//! checkpoint, what the last recompute read. A crash while one is written leaves the previous
//! one (temporary file, fsync, rename, directory fsync); a damaged one (a bad disk, an edit) is
//! refused as a whole, so the caller falls back to rebuilding what it held.
//!
//! Layout: the caller's magic bytes, its body, and a CRC-32C of both (4 bytes, little endian).
//! Bodies are usually a [`write_json`] header and Arrow IPC streams ([`write_stream`]); every
//! part carries its own length, so a reader knows where it ends.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use arrow::array::RecordBatch;
use arrow::datatypes::Schema;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;

use crate::{Error, Result};

/// Writes `path` as `magic` and the body that `body` writes, durably; returns the file's size.
pub fn write(
    path: &Path,
    magic: &[u8],
    body: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<u64> {
    let tmp = path.with_extension("tmp");
    let written = write_to(path, &tmp, magic, body);
    if written.is_err() {
        // A large one must not stay behind on a full disk.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn write_to(
    path: &Path,
    tmp: &Path,
    magic: &[u8],
    body: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<u64> {
    let io = |op: &'static str| move |e: std::io::Error| Error::io(op, path, e);
    let file = std::fs::File::create(tmp).map_err(io("create"))?;
    let mut out = Crc {
        inner: BufWriter::with_capacity(1 << 20, file),
        crc: 0,
        bytes: 0,
    };
    out.write_all(magic).map_err(io("write"))?;
    body(&mut out)?;
    let crc = out.crc;
    let mut inner = out.inner;
    inner.write_all(&crc.to_le_bytes()).map_err(io("write"))?;
    let file = inner
        .into_inner()
        .map_err(|e| Error::io("write", path, e.into_error()))?;
    file.sync_all().map_err(io("fsync"))?;
    let size = file.metadata().map_err(io("stat"))?.len();
    drop(file);
    std::fs::rename(tmp, path).map_err(io("rename"))?;
    crate::store::sync_dir(path.parent().unwrap_or(Path::new(".")))?;
    Ok(size)
}

/// Reads `path`, written by [`write`] with `magic`, through `body`, which must read the whole
/// body; `None` when there is no such file. A file cut short, with other magic bytes, trailing
/// bytes or a wrong checksum is an error (whatever `body` made of it is dropped).
pub fn read<T>(
    path: &Path,
    magic: &[u8],
    body: impl FnOnce(&mut dyn Read) -> Result<T>,
) -> Result<Option<T>> {
    let bad = |what: &str| Error::Corrupt {
        path: path.display().to_string(),
        what: what.to_string(),
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    let Some(size) = len.checked_sub(4) else {
        return Err(bad("too short"));
    };
    let mut input = Crc {
        inner: BufReader::with_capacity(1 << 20, file).take(size),
        crc: 0,
        bytes: 0,
    };
    let mut head = vec![0; magic.len()];
    if input.read_exact(&mut head).is_err() || head != magic {
        return Err(bad("not the expected kind of file"));
    }
    let value = body(&mut input).map_err(|e| match e {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::UnexpectedEof => {
            bad("cut short")
        }
        Error::Corrupt { what, .. } => bad(&what),
        other => bad(&other.to_string()),
    })?;
    if input.bytes != size {
        return Err(bad("bytes after its end"));
    }
    let crc = input.crc;
    let mut stored = [0; 4];
    input
        .inner
        .into_inner()
        .read_exact(&mut stored)
        .map_err(|e| Error::io("read", path, e))?;
    if u32::from_le_bytes(stored) != crc {
        return Err(bad("damaged (checksum)"));
    }
    Ok(Some(value))
}

/// Writes `value` as JSON, its length first.
pub fn write_json<T: serde::Serialize>(out: &mut dyn Write, value: &T) -> Result<()> {
    let json = serde_json::to_vec(value).map_err(|e| corrupt(e.to_string()))?;
    out.write_all(&(json.len() as u64).to_le_bytes())
        .and_then(|()| out.write_all(&json))
        .map_err(|e| Error::io("write", "", e))
}

/// Reads what [`write_json`] wrote; at most `max` bytes of JSON.
pub fn read_json<T: serde::de::DeserializeOwned>(input: &mut dyn Read, max: u64) -> Result<T> {
    let mut n = [0; 8];
    input
        .read_exact(&mut n)
        .map_err(|e| Error::io("read", "", e))?;
    let n = u64::from_le_bytes(n);
    if n > max {
        return Err(corrupt(format!("a header of {n} bytes")));
    }
    let mut json = vec![0; n as usize];
    input
        .read_exact(&mut json)
        .map_err(|e| Error::io("read", "", e))?;
    serde_json::from_slice(&json).map_err(|e| corrupt(e.to_string()))
}

/// Writes `batches` as one Arrow IPC stream of `schema`.
pub fn write_stream<'a>(
    out: &mut dyn Write,
    schema: &Schema,
    batches: impl IntoIterator<Item = &'a RecordBatch>,
) -> Result<()> {
    let mut w = StreamWriter::try_new(out, schema)?;
    for b in batches {
        w.write(b)?;
    }
    w.finish()?;
    Ok(())
}

/// Reads one Arrow IPC stream, handing each batch to `each`; with `schema`, the stream must
/// have its columns.
pub fn read_stream(
    input: &mut dyn Read,
    schema: Option<&Schema>,
    each: &mut dyn FnMut(RecordBatch) -> Result<()>,
) -> Result<()> {
    let reader = StreamReader::try_new(input, None)?;
    if schema.is_some_and(|s| reader.schema().fields() != s.fields()) {
        return Err(corrupt("a stream of other columns".into()));
    }
    for batch in reader {
        each(batch?)?;
    }
    Ok(())
}

fn corrupt(what: String) -> Error {
    Error::Corrupt {
        path: String::new(),
        what,
    }
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

//! A frozen view of the raw files for one recompute.
//!
//! Ingest adds files every second and imports add more. A recompute plans several queries
//! over the same tables; if each listed the files afresh, one derived table could see a file
//! another did not (or, worse, one query could see a repeated click ID that an earlier
//! materialized view had not). Listing once and serving every later listing from that list
//! makes the whole recompute read one consistent set of files.

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// An object store whose listings show only the objects that existed when it was made (under
/// the given prefixes); reads and everything else pass through.
#[derive(Debug)]
pub struct Snapshot {
    inner: Arc<dyn ObjectStore>,
    /// Objects visible to listings (shared with the listing streams, not copied per listing).
    files: Arc<HashSet<Path>>,
    /// Every directory that holds a visible object, at any depth.
    dirs: HashSet<Path>,
    /// Listings under these prefixes are frozen; others pass through.
    prefixes: Vec<Path>,
}

impl Snapshot {
    /// Lists every object under `prefixes` of `inner` now.
    pub async fn take(
        inner: Arc<dyn ObjectStore>,
        prefixes: Vec<Path>,
    ) -> object_store::Result<Self> {
        let mut files = HashSet::new();
        for p in &prefixes {
            let mut list = inner.list(Some(p));
            while let Some(meta) = list.next().await {
                files.insert(meta?.location);
            }
        }
        Ok(Snapshot::of(inner, Arc::new(files), prefixes))
    }

    /// A snapshot whose listings under `prefixes` show `files` (those of them that still
    /// exist): an earlier snapshot's files, read again.
    pub fn of(inner: Arc<dyn ObjectStore>, files: Arc<HashSet<Path>>, prefixes: Vec<Path>) -> Self {
        let mut dirs = HashSet::new();
        for location in files.iter() {
            let parts: Vec<_> = location.parts().collect();
            for n in 1..parts.len() {
                dirs.insert(Path::from_iter(parts[..n].iter().cloned()));
            }
        }
        Snapshot {
            inner,
            files,
            dirs,
            prefixes,
        }
    }

    /// Every object the snapshot lists.
    pub fn files(&self) -> Arc<HashSet<Path>> {
        self.files.clone()
    }

    fn frozen(&self, prefix: Option<&Path>) -> bool {
        prefix.is_some_and(|p| {
            self.prefixes
                .iter()
                .any(|f| p.as_ref().starts_with(f.as_ref()))
        })
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Snapshot({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for Snapshot {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let stream = self.inner.list(prefix);
        if !self.frozen(prefix) {
            return stream;
        }
        let files = self.files.clone();
        stream
            .filter(move |m| {
                let keep = m.as_ref().map_or(true, |m| files.contains(&m.location));
                futures::future::ready(keep)
            })
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let mut result = self.inner.list_with_delimiter(prefix).await?;
        if self.frozen(prefix) {
            result.objects.retain(|m| self.files.contains(&m.location));
            result.common_prefixes.retain(|p| self.dirs.contains(p));
        }
        Ok(result)
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

//! An operator's settings kept under the data root as one JSON document (`meta/….json`):
//! read once when the service starts, held in memory, rewritten whole (atomically, durably)
//! on every change. Changes apply one after another; readers take a snapshot and never wait
//! on a write. The webhook endpoints and the tracking links are kept this way.

use std::sync::{Arc, RwLock};

use object_store::path::Path;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, Result, Store};

#[derive(Debug)]
pub struct Settings<T> {
    store: Store,
    path: Path,
    /// The document as last saved.
    current: RwLock<Arc<T>>,
    /// Held while a change is saved, so changes apply one after another.
    writing: tokio::sync::Mutex<()>,
}

impl<T> Settings<T>
where
    T: Serialize + DeserializeOwned + Clone + Default,
{
    /// Loads the document at `path` of `store` (none yet: the default). A document that does
    /// not parse is an error naming it: the operator's to repair, never silently replaced.
    pub async fn open(store: Store, path: &str) -> Result<Self> {
        let path = Path::from(path);
        let current = match store.get(&path).await? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
                path: path.to_string(),
                what: format!("not valid settings: {e}"),
            })?,
            None => T::default(),
        };
        Ok(Settings {
            store,
            path,
            current: RwLock::new(Arc::new(current)),
            writing: tokio::sync::Mutex::new(()),
        })
    }

    /// The document as last saved.
    pub fn get(&self) -> Arc<T> {
        self.current.read().expect("settings lock").clone()
    }

    /// Applies `change` to a copy of the document; when it answers `Ok`, saves the copy and
    /// makes it the document (visible once saved). An `Err` leaves everything as it was.
    pub async fn try_change<R, E>(
        &self,
        change: impl FnOnce(&mut T) -> std::result::Result<R, E>,
    ) -> Result<std::result::Result<R, E>> {
        let _writing = self.writing.lock().await;
        let mut next = self.get().as_ref().clone();
        let out = match change(&mut next) {
            Ok(out) => out,
            Err(refused) => return Ok(Err(refused)),
        };
        let bytes = serde_json::to_vec_pretty(&next).map_err(|e| Error::Corrupt {
            path: self.path.to_string(),
            what: format!("settings could not be encoded: {e}"),
        })?;
        self.store.put_durable(&self.path, bytes.into()).await?;
        *self.current.write().expect("settings lock") = Arc::new(next);
        Ok(Ok(out))
    }

    /// Applies `change` and saves the document.
    pub async fn change<R>(&self, change: impl FnOnce(&mut T) -> R) -> Result<R> {
        let applied = self
            .try_change(|doc| Ok::<R, std::convert::Infallible>(change(doc)))
            .await?;
        Ok(match applied {
            Ok(out) => out,
            Err(never) => match never {},
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_change_is_saved_and_a_refused_one_leaves_the_document_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        let settings: Settings<Vec<u32>> = Settings::open(store.clone(), "meta/test.json")
            .await
            .unwrap();
        assert!(settings.get().is_empty());
        settings.change(|v| v.push(7)).await.unwrap();
        let refused = settings
            .try_change(|v| {
                v.push(8);
                Err::<(), _>("no")
            })
            .await
            .unwrap();
        assert_eq!(refused, Err("no"));
        assert_eq!(*settings.get(), vec![7]);
        let again: Settings<Vec<u32>> = Settings::open(store.clone(), "meta/test.json")
            .await
            .unwrap();
        assert_eq!(*again.get(), vec![7]);
        store
            .put_durable(&Path::from("meta/test.json"), "[1,".into())
            .await
            .unwrap();
        let damaged = Settings::<Vec<u32>>::open(store, "meta/test.json").await;
        assert!(matches!(damaged, Err(Error::Corrupt { .. })));
    }
}

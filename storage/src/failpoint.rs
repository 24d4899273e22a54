//! Fault injection for tests, read once from the environment variable `NETREV_FAILPOINTS`:
//!
//! ```text
//! NETREV_FAILPOINTS="wal-fsync=3,raw-put=2,durable-before-rename=abort"
//! ```
//!
//! `name=N` makes the next `N` passes through the point fail with an injected I/O error and
//! later passes succeed (a full disk that is cleared, an object store that comes back);
//! `name=abort` kills the process there, as `kill -9` or a power loss would. Unset (always in
//! production) every point is a no-op costing one load of an initialised cell.
//!
//! Points: `wal-write` (a write to the write-ahead log fails as on a full disk), `wal-fsync`
//! (its fsync fails), `raw-put` (writing a raw Parquet file to the object store fails),
//! `durable-before-rename` (a file replaced whole, such as a derived-table partition, is
//! written and fsynced under its temporary name and not yet renamed into place),
//! `compact-before-swap` / `compact-after-swap` (`netrev compact` on a local root has
//! assembled a partition's new files / has swapped them in and not yet removed the old ones),
//! `compact-before-delete` (on an object store: has put the new files, not yet deleted the
//! old ones).

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

enum Action {
    Fail(AtomicU64),
    Abort,
}

fn points() -> &'static HashMap<String, Action> {
    static POINTS: OnceLock<HashMap<String, Action>> = OnceLock::new();
    POINTS.get_or_init(|| match std::env::var("NETREV_FAILPOINTS") {
        Ok(spec) => parse(&spec),
        Err(_) => HashMap::new(),
    })
}

fn parse(spec: &str) -> HashMap<String, Action> {
    let mut points = HashMap::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, action) = item.split_once('=').unwrap_or((item, "1"));
        let action = match action {
            "abort" => Action::Abort,
            n => match n.parse() {
                Ok(n) => Action::Fail(AtomicU64::new(n)),
                // A typo must not silently test nothing.
                Err(_) => panic!("NETREV_FAILPOINTS: `{item}` is not name=N or name=abort"),
            },
        };
        points.insert(name.to_string(), action);
    }
    points
}

/// Passes through the point `name`: `Err` while it is set to fail, process exit if set to
/// abort, `Ok` otherwise.
pub fn check(name: &str) -> std::io::Result<()> {
    let points = points();
    if points.is_empty() {
        return Ok(());
    }
    pass(points, name)
}

fn pass(points: &HashMap<String, Action>, name: &str) -> std::io::Result<()> {
    match points.get(name) {
        None => Ok(()),
        Some(Action::Abort) => {
            eprintln!("failpoint {name}: aborting the process");
            std::process::abort()
        }
        Some(Action::Fail(left)) => {
            let failing = left
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok();
            if failing {
                Err(std::io::Error::other(format!("injected failure at {name}")))
            } else {
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_down_then_passes() {
        let points = parse("a=2, b=abort");
        assert!(pass(&points, "a").is_err());
        assert!(pass(&points, "a").is_err());
        assert!(pass(&points, "a").is_ok());
        assert!(pass(&points, "c").is_ok());
        assert!(matches!(points.get("b"), Some(Action::Abort)));
    }

    #[test]
    #[should_panic(expected = "not name=N")]
    fn refuses_a_typo() {
        parse("a=sometimes");
    }
}

//! Settings of the whole process that the commands choose (the allocator's and the kernel's),
//! kept apart from the command line.

/// mimalloc's `mi_option_purge_delay` (its `mimalloc.h`; libmimalloc-sys names no constant
/// for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps the memory the allocator frees for reuse instead of handing it back to the OS a
/// second later (mimalloc's default), unless `MIMALLOC_PURGE_DELAY` says otherwise. For a
/// one-shot `recompute`: its stages free and allocate gigabytes one after another, and memory
/// handed back is zeroed again by the kernel when touched anew (a quarter of a recompute's CPU
/// time in profiles). `serve` keeps the default, so it shrinks back after its recomputes.
#[allow(unsafe_code)]
pub(crate) fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a process-wide option that mimalloc reads whenever it would purge.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
    }
}

/// Turns off transparent huge pages for this process, unless `MIMALLOC_ALLOW_THP` says
/// otherwise. For a one-shot `recompute` and for `serve`, whose start restores the live state
/// (over a gigabyte of maps at 20M clicks): mimalloc asks the kernel for 2 MiB pages, each
/// zeroed whole when first touched, and on this project's VM those faults cost more than the
/// fewer TLB misses save. A restart at 20M clicks: 9.5–9.7 s without them, 12.0–13.5 s with
/// them, ingest no slower (bench/RESULTS.md). Measured on the benchmark history (10M clicks), seven runs each, taking
/// turns, two of them right after another process had used and freed 2.7 GiB (as DuckDB does
/// in the benchmark): 8.8–9.4 s (1.6–2.3 s of system time) without them, 9.0–11.9 s (2.5–8.1 s)
/// with them.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub(crate) fn no_huge_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: sets a flag of this process that the kernel reads on page faults; passes no
        // memory.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn no_huge_pages() {}

#[cfg(test)]
mod tests {
    /// The option set by `keep_freed_memory` is mimalloc's purge delay: the only option whose
    /// default is 1000 (milliseconds). A mimalloc that renumbered its options fails here.
    #[test]
    #[allow(unsafe_code)]
    fn purge_delay_option_is_the_one_that_defaults_to_a_second() {
        // SAFETY: reads a process-wide option.
        let delay = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(delay, 1000);
    }

    #[cfg(target_os = "linux")]
    #[test]
    #[allow(unsafe_code)]
    fn no_huge_pages_sets_the_process_flag() {
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
            return; // the variable leaves the flag as it is
        }
        super::no_huge_pages();
        // SAFETY: reads a flag of this process.
        let disabled = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(disabled, 1);
    }
}

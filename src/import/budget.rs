//! How much memory an import's workers may hold at once for the images they decode: a
//! big image waits until the others are done instead of the workers together running
//! the machine out of memory, which ends the whole import (docs/security.md).

use std::sync::{Condvar, Mutex, OnceLock};

/// Bytes of memory the workers of one process may reserve together.
pub struct MemoryBudget {
    limit: u64,
    used: Mutex<u64>,
    freed: Condvar,
}

/// Memory held for one image; given back when dropped.
pub struct Reservation<'a> {
    budget: &'a MemoryBudget,
    bytes: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut used = self
            .budget
            .used
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *used = used.saturating_sub(self.bytes);
        self.budget.freed.notify_all();
    }
}

/// The environment variable that sets the budget, in MiB (default: half of the
/// machine's memory).
pub const LIMIT_VARIABLE: &str = "CDWQC_IMPORT_MEMORY_MB";

impl MemoryBudget {
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            used: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// The process's budget: [`LIMIT_VARIABLE`] MiB, or half of the memory the process
    /// may use (the machine's, its cgroup's limit or its address-space limit, the
    /// least).
    pub fn shared() -> &'static Self {
        static BUDGET: OnceLock<MemoryBudget> = OnceLock::new();
        BUDGET.get_or_init(|| {
            let set = std::env::var(LIMIT_VARIABLE)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|mib| mib.saturating_mul(1 << 20));
            Self::new(set.unwrap_or_else(|| usable_memory() / 2))
        })
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Holds `bytes`, waiting while other images hold too much for them to fit. `Err`
    /// when `bytes` alone exceed the budget: that image cannot be imported here.
    pub fn reserve(&self, bytes: u64) -> Result<Reservation<'_>, u64> {
        if bytes > self.limit {
            return Err(self.limit);
        }
        let mut used = self
            .used
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        while *used + bytes > self.limit {
            used = self
                .freed
                .wait(used)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        *used += bytes;
        Ok(Reservation {
            budget: self,
            bytes,
        })
    }
}

/// The memory this process may use: the machine's, bounded by its cgroup's limit
/// (Slurm jobs and containers) and its address-space limit (`ulimit -v`).
fn usable_memory() -> u64 {
    let mut usable = physical_memory();
    if let Some(limit) = cgroup_limit() {
        usable = usable.min(limit);
    }
    let mut rlimit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut rlimit) } == 0
        && rlimit.rlim_cur != libc::RLIM_INFINITY
    {
        usable = usable.min(rlimit.rlim_cur);
    }
    usable
}

/// The memory limit of the process's cgroup (v2), when one is set.
fn cgroup_limit() -> Option<u64> {
    let membership = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = membership.lines().find_map(|l| l.strip_prefix("0::"))?;
    let limit =
        std::fs::read_to_string(format!("/sys/fs/cgroup{}/memory.max", path.trim())).ok()?;
    limit.trim().parse().ok()
}

/// The machine's memory in bytes (8 GiB when the system does not say).
fn physical_memory() -> u64 {
    // SAFETY: sysconf has no preconditions; a negative result means "unknown".
    let (pages, size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    match (u64::try_from(pages), u64::try_from(size)) {
        (Ok(pages), Ok(size)) if pages > 0 && size > 0 => pages.saturating_mul(size),
        _ => 8 << 30,
    }
}

/// What importing one image holds at its peak, from its header and its file size: the
/// file's bytes when read whole, the inflated bytes of a gzip file inflated whole, the
/// first volume as floats, and the quality metrics' working set (its masks, labels and
/// field, about six bytes per voxel).
pub fn import_need(
    file_size: u64,
    read_whole: bool,
    inflated: Option<u64>,
    voxels: u64,
    iqm: bool,
) -> u64 {
    let per_voxel = if iqm { 4 + 6 } else { 4 };
    (if read_whole { file_size } else { 0 })
        .saturating_add(inflated.unwrap_or(0))
        .saturating_add(voxels.saturating_mul(per_voxel))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_reservation_waits_for_room_and_a_too_big_one_is_refused() {
        let budget = Arc::new(MemoryBudget::new(100));
        assert_eq!(budget.reserve(101).err(), Some(100));
        let first = budget.reserve(60).expect("fits");
        let waiting = {
            let budget = Arc::clone(&budget);
            std::thread::spawn(move || {
                let _second = budget.reserve(60).expect("fits alone");
                std::time::Instant::now()
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        let released = std::time::Instant::now();
        drop(first);
        let got = waiting.join().expect("thread");
        assert!(got >= released, "the second reservation did not wait");
        // Both given back: the whole budget is free again.
        let all = budget.reserve(100).expect("all of it");
        drop(all);
    }

    #[test]
    fn the_need_counts_what_import_holds() {
        // A 1 mm gzip volume: 8 MB read whole, 14.4 MB inflated, 7.2 M voxels.
        assert_eq!(
            import_need(8_000_000, true, Some(14_400_352), 7_200_000, true),
            8_000_000 + 14_400_352 + 72_000_000
        );
        assert_eq!(import_need(1 << 40, false, None, 10, false), 40);
        assert_eq!(
            import_need(u64::MAX, true, Some(1), u64::MAX, true),
            u64::MAX
        );
    }
}

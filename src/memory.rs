//! The process's heap policy: memory that one volume or one batch frees stays in the
//! process for the next, instead of going back to the kernel and faulting in again.
//!
//! glibc's malloc serves blocks over 32 MiB (a 1 mm volume in f32, a batch's
//! activations) with their own `mmap` and unmaps them when freed, and it trims the
//! heap's free top. Each new volume or batch then touches fresh pages that the kernel
//! must fault in and zero: measured on 40 cold 1 mm FLAIR, 620,000 page faults and a
//! third of the CPU time in the kernel, and the network's forward pass 1.6x slower than
//! with the memory kept (docs/benchmarks.md, "Four grid points per step, the head's box
//! by blocks, freed memory kept").
//!
//! `import`, `iqm` and `infer` (their Slurm shards included) keep freed memory: they
//! handle one volume after another, and their peak resident size grew by 6-35%.
//! Training does not: its tensors of many sizes left the kept heap fragmented, at 1.7x
//! the resident size for 1.15x the speed.

/// Environment variables through which glibc's malloc is configured directly; when one is
/// set, its settings stand and cdwqc leaves the allocator as it is.
const GLIBC_SETTINGS: [&str; 5] = [
    "GLIBC_TUNABLES",
    "MALLOC_MMAP_MAX_",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
];

/// Keeps freed memory in the process: every block from the heap (no block of its own
/// mapping), and no trimming of the heap's free top. The process's resident size then
/// stays near its peak until it exits, which a command that handles one volume or batch
/// after another reaches anyway. Returns whether the policy was applied: not where the C
/// library is not glibc, nor when the environment configures glibc's malloc itself.
pub fn retain_freed_memory() -> bool {
    let configured = GLIBC_SETTINGS
        .iter()
        .any(|name| std::env::var_os(name).is_some());
    if configured {
        return false;
    }
    apply()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> bool {
    // SAFETY: mallopt only changes the allocator's parameters, under its own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_freed_large_block_is_not_unmapped() {
        // The suite's processes never set glibc's malloc variables.
        assert!(
            GLIBC_SETTINGS
                .iter()
                .all(|name| std::env::var_os(name).is_none())
        );
        assert!(retain_freed_memory());
        // Over glibc's largest mmap threshold (32 MiB), under the 64 MiB heaps of the
        // arenas of threads other than the main one (beyond which glibc maps a block
        // anyway).
        let len = 48 << 20;
        // Writing a block, freeing it and allocating one of the same size must not fault
        // in new pages: the second block reuses the first's.
        let faults = || {
            // SAFETY: getrusage writes into the struct it is given.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
            usage.ru_minflt
        };
        let first = vec![1u8; len];
        std::hint::black_box(&first);
        drop(first);
        let before = faults();
        let mut second = Vec::<u8>::with_capacity(len);
        second.resize(len, 2);
        std::hint::black_box(&second);
        let faulted = faults() - before;
        // 48 MiB of fresh 4 KiB pages would be 12,288 faults.
        assert!(faulted < 1_000, "{faulted} page faults");
    }
}

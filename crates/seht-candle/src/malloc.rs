//! Keep freed tensor buffers in the process instead of handing them back to
//! the kernel after every operation.
//!
//! A training step allocates and frees gigabytes of tensor buffers. glibc's
//! `malloc` serves blocks above a moving threshold with `mmap` and trims the
//! top of the heap when 128 KiB or more is free, so each step gets fresh
//! pages from the kernel, which zeroes them on first touch. Profiled on
//! full-width ResNet-18 (batch 32, 2-core CPU): a plain step took 458,000
//! minor page faults and about 1 s of kernel time, and page faults were a
//! third of the host-side work of the first-order penalty. With
//! [`retain_freed_memory`] the same steps take no page faults after the
//! first one (see `docs/performance.md`).
//!
//! The price: memory freed by a step stays with the process (the heap is
//! never trimmed), so its resident size stays at its peak, which the next
//! step reaches again anyway.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Largest mmap threshold glibc accepts on 64-bit targets (32 MiB):
/// blocks below it come from the heap and are reused.
pub const MMAP_THRESHOLD: i32 = 32 << 20;
/// Free memory kept at the top of the heap before trimming: −1 turns
/// trimming off (mallopt(3)). A finite threshold (2 GiB was tried) still
/// hands most of a trace estimate's 17 GB back after every step, and the
/// next step faults it in again.
pub const TRIM_THRESHOLD: i32 = -1;
/// Extra memory requested from the kernel whenever the heap grows.
pub const TOP_PAD: i32 = 64 << 20;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    use std::ffi::c_int;

    const M_TRIM_THRESHOLD: c_int = -1;
    const M_TOP_PAD: c_int = -2;
    const M_MMAP_THRESHOLD: c_int = -3;

    unsafe extern "C" {
        fn mallopt(param: c_int, value: c_int) -> c_int;
    }

    pub fn apply() -> bool {
        // SAFETY: `mallopt` is glibc's documented, thread-safe (it takes the
        // arena lock) way to set these parameters at any time; it only reads
        // its two integer arguments.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, super::MMAP_THRESHOLD) == 1
                && mallopt(M_TRIM_THRESHOLD, super::TRIM_THRESHOLD) == 1
                && mallopt(M_TOP_PAD, super::TOP_PAD) == 1
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub fn apply() -> bool {
        false
    }
}

/// Tells glibc's `malloc` to keep freed buffers for reuse (see the module
/// docs). Returns whether the settings took effect: `false` on other
/// platforms and allocators, where nothing is changed. Safe to call at any
/// time, from any thread; it affects the whole process. Call it once at the
/// start of a program that trains or benchmarks on the CPU.
pub fn retain_freed_memory() -> bool {
    imp::apply()
}

/// A global allocator that counts live and peak heap bytes, for peak-memory
/// measurements (install it with `#[global_allocator]`, read it with
/// [`peak_bytes`]). It forwards to the system allocator.
pub struct CountingAlloc;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only adds bookkeeping.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
}

/// Heap bytes live now (0 unless [`CountingAlloc`] is the global allocator).
pub fn live_bytes() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// Runs `f` and returns the peak of live heap bytes above those live before it
/// (bytes; 0 unless [`CountingAlloc`] is the global allocator).
pub fn peak_bytes<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Minor page faults of the calling thread so far.
    fn thread_minor_faults() -> Option<u64> {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
        // Fields after the command name (which may hold spaces): state is 3rd, minflt 10th.
        stat.rsplit_once(')')?.1.split_whitespace().nth(7)?.parse().ok()
    }

    #[test]
    fn freed_blocks_are_reused_without_new_page_faults() {
        let applied = retain_freed_memory();
        assert_eq!(applied, cfg!(all(target_os = "linux", target_env = "gnu")));
        let Some(_) = thread_minor_faults().filter(|_| applied) else { return };
        const N: usize = 16 << 20; // 4,096 pages, under the mmap threshold
        let a = std::hint::black_box(vec![1u8; N]);
        drop(a);
        let before = thread_minor_faults().expect("minflt");
        let b = std::hint::black_box(vec![2u8; N]);
        let faults = thread_minor_faults().expect("minflt") - before;
        assert_eq!(b[N - 1], 2);
        // Without the settings the block is a fresh mapping: 4,096 faults.
        assert!(faults < 256, "{faults} page faults re-allocating a freed 16 MiB block");
    }
}

//! nsgflow: Azure NSG and VNet flow logs into answers — what talked to what, which rule
//! decided each flow, and what was skipped on the way.
//!
//! The library holds every stage; the `nsgflow` binary, the tests and the benches call it.
//! Data flows one way (see `DESIGN.md` in the team's shared folder):
//! [`discover`] → [`parse`] → [`aggregate`] (the folds) → renderers ([`summary`],
//! [`report`], [`export`]), all driven by one [`pipeline`]; [`state`] saves unfinished
//! folds as partial files and merges them. [`gen`] writes synthetic containers for demos, tests and benchmarks.

pub mod addr;
pub mod aggregate;
pub mod app;
pub mod audit;
pub mod cli;
pub mod detect;
pub mod discover;
pub mod export;
pub mod filter;
pub mod gen;
pub mod hash;
pub mod model;
pub mod parse;
pub mod pipeline;
pub mod rejects;
pub mod report;
pub mod source;
pub mod state;
pub mod summary;
pub mod tables;
pub mod text;

/// The unit tests' allocator: the system's, counting the bytes each thread holds and
/// its peak, so a test can assert what a stage costs in memory.
#[cfg(test)]
pub(crate) mod test_alloc {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static NOW: Cell<isize> = const { Cell::new(0) };
        static PEAK: Cell<isize> = const { Cell::new(0) };
    }

    struct Counting;

    fn moved(d: isize) {
        // `try_with`: a thread's last frees can come after its locals are gone.
        let _ = NOW.try_with(|n| {
            let v = n.get() + d;
            n.set(v);
            let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
        });
    }

    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            moved(l.size() as isize);
            unsafe { System.alloc(l) }
        }
        unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
            moved(l.size() as isize);
            unsafe { System.alloc_zeroed(l) }
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            moved(-(l.size() as isize));
            unsafe { System.dealloc(p, l) }
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
            moved(new as isize - l.size() as isize);
            unsafe { System.realloc(p, l, new) }
        }
    }

    #[global_allocator]
    static A: Counting = Counting;

    /// Run `f` on this thread and return what it returned with the most bytes it held
    /// at once beyond what the thread held before.
    pub(crate) fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
        let base = NOW.with(|n| n.get());
        PEAK.with(|p| p.set(base));
        let out = f();
        let peak = PEAK.with(|p| p.get());
        (out, (peak - base).max(0) as usize)
    }
}

//! Counting the API requests a run sends (reads and writes), exposed in reports; the benchmark
//! and the tests rely on it.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::report::RequestCounts;

/// Counts the API requests the engine sends (exposed in reports; the benchmark relies on it).
#[derive(Debug, Default)]
pub struct Requests {
    reads: AtomicU64,
    writes: AtomicU64,
}

impl Requests {
    pub fn read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }
    pub fn write(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }
    pub fn snapshot(&self) -> RequestCounts {
        RequestCounts {
            reads: self.reads.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
        }
    }
}

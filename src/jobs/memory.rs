//! The memory the analysis workers of one process share. A job reserves what its largest image
//! declares before it decodes anything ([`MemoryBudget::reserve`]), so two big studies wait for
//! each other instead of running at once and taking the process (which also answers hooks)
//! down. A job that needs more than the whole budget takes all of it and runs alone; the decode
//! limits (`[analysis] max_*`) still refuse what no budget could hold.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes an analysis holds per decoded sample, beyond the retrieved instance itself: an estimate
/// of four f32-sized copies at source resolution (the modality values, the normalised grey image,
/// the saliency map mapped back to the source, and the overlay rendering), not a measurement.
pub const BYTES_PER_SAMPLE: u64 = 16;

const MIB: u64 = 1 << 20;

/// A budget in MiB shared by every worker of the process.
#[derive(Clone, Debug)]
pub struct MemoryBudget {
    permits: Arc<Semaphore>,
    mib: u32,
}

/// Held while a job decodes and analyses; returned when dropped.
#[derive(Debug)]
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
    pub mib: u32,
}

impl MemoryBudget {
    pub fn new(mib: u64) -> MemoryBudget {
        let mib = mib.clamp(1, u64::from(u32::MAX >> 4)) as u32;
        MemoryBudget { permits: Arc::new(Semaphore::new(mib as usize)), mib }
    }

    /// What analysing instances of these declared sample counts needs, in MiB: the largest
    /// (instances are tried one at a time) times [`BYTES_PER_SAMPLE`], plus the retrieved bytes.
    pub fn need_mib(declared_samples: impl IntoIterator<Item = u64>, retrieved_bytes: u64) -> u64 {
        let largest = declared_samples.into_iter().max().unwrap_or(0);
        largest.saturating_mul(BYTES_PER_SAMPLE).saturating_add(retrieved_bytes).div_ceil(MIB).max(1)
    }

    /// Waits until `mib` (at most the whole budget) is free and holds it.
    pub async fn reserve(&self, mib: u64) -> Reservation {
        let mib = mib.clamp(1, u64::from(self.mib)) as u32;
        let permit = self.permits.clone().acquire_many_owned(mib).await.expect("the budget's semaphore is never closed");
        Reservation { _permit: permit, mib }
    }

    /// MiB free now.
    pub fn available_mib(&self) -> usize {
        self.permits.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_job_needs_its_largest_image_not_the_sum() {
        // Two 2048 x 2048 radiographs: 64 MiB each at 16 bytes a sample, tried one at a time.
        let radiograph = 2048 * 2048;
        assert_eq!(MemoryBudget::need_mib([radiograph, radiograph], 8 << 20), 64 + 8);
        assert_eq!(MemoryBudget::need_mib([], 0), 1, "at least one MiB");
        assert_eq!(MemoryBudget::need_mib([u64::MAX], 0), u64::MAX.div_ceil(MIB), "saturates");
    }

    #[tokio::test]
    async fn a_second_big_job_waits_until_the_first_is_done_and_an_oversized_one_runs_alone() {
        let budget = MemoryBudget::new(1000);
        let first = budget.reserve(600).await;
        let second = tokio::time::timeout(Duration::from_millis(50), budget.reserve(600)).await;
        assert!(second.is_err(), "600 + 600 MiB do not fit in 1000");
        let small = tokio::time::timeout(Duration::from_millis(50), budget.reserve(300)).await.expect("300 fits beside 600");
        drop((first, small));
        let huge = budget.reserve(50_000).await;
        assert_eq!((huge.mib, budget.available_mib()), (1000, 0), "more than the budget takes all of it");
        drop(huge);
        assert_eq!(budget.available_mib(), 1000);
    }
}

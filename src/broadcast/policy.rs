//! A subscriber's policy: whether the writer waits for it.

/// How a subscriber of a broadcast region treats a writer that is faster than it.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use shm_arena::{Error, Policy, Region, RegionOptions};
///
/// let region = Region::create_with(RegionOptions::new(4096).broadcast(1))?;
/// let leaky = region.subscriber(Policy::Leaky)?;
/// let mut writer = region.writer()?;
/// for i in 0..100u32 {
///     writer.write_unit(&[&i.to_le_bytes()])?; // never waits for a leaky subscriber
/// }
/// let Err(Error::Lagged { missed }) = leaky.try_next_unit() else { panic!("lapped") };
/// let oldest = leaky.try_next_unit()?.expect("the oldest unit still in the ring");
/// assert_eq!(oldest.blob(0)?, &(missed as u32).to_le_bytes());
/// # Ok::<(), shm_arena::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// The writer waits for this subscriber (with the writer's deadline): it misses nothing.
    Backpressure,
    /// The writer never waits for this subscriber's pace: when it falls a ring behind, its
    /// next take returns [`Error::Lagged`](crate::Error::Lagged) with the exact number of
    /// units it lost, and it goes on from the oldest unit still in the ring. A unit it holds
    /// is never overwritten (the writer waits for it to end).
    Leaky,
}

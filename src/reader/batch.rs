//! A run of units taken and ended together (see [`Reader::next_batch`]).

use std::fmt;

use crate::reader::unit::BatchUnit;
use crate::reader::Reader;
use crate::ring::release::{release, release_run};
use crate::ring::view::View;

/// Units taken together by [`Reader::next_batch`]: read them with [`get`](Self::get) or
/// [`iter`](Self::iter); they all end when the batch is dropped (or
/// [`end_batch`](Self::end_batch)), with one tail store and one wake-up check for the run
/// when they are contiguous (an SPSC reader's batch), instead of one per unit.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use shm_arena::Region;
///
/// let region = Region::create(1 << 16)?;
/// let (mut writer, reader) = (region.writer()?, region.reader()?);
/// for i in 0..10u8 {
///     writer.write_unit(&[&[i; 64]])?;
/// }
/// let batch = reader.next_batch(8, Duration::from_secs(1))?;
/// assert_eq!(batch.len(), 8);
/// let sum: u64 = batch.iter().map(|u| u64::from(u.blob(0).unwrap()[0])).sum();
/// assert_eq!(sum, (0..8).sum());
/// batch.end_batch();
/// assert_eq!(reader.try_next_batch(8)?.len(), 2);
/// # Ok::<(), shm_arena::Error>(())
/// ```
pub struct UnitBatch<'r> {
    reader: &'r Reader,
    views: Vec<View>,
}

impl<'r> UnitBatch<'r> {
    pub(crate) fn new(reader: &'r Reader, views: Vec<View>) -> UnitBatch<'r> {
        UnitBatch { reader, views }
    }

    /// Number of units in the batch.
    pub fn len(&self) -> usize {
        self.views.len()
    }

    /// Whether the batch holds no unit (`try_next_batch` found none).
    pub fn is_empty(&self) -> bool {
        self.views.is_empty()
    }

    /// Unit `index` of the batch, in the order they were taken.
    pub fn get(&self, index: usize) -> Option<BatchUnit<'_>> {
        let view = *self.views.get(index)?;
        Some(BatchUnit::new(self.reader.store(), view))
    }

    /// The units in the order they were taken.
    pub fn iter(&self) -> impl Iterator<Item = BatchUnit<'_>> + '_ {
        let store = self.reader.store();
        self.views
            .iter()
            .map(move |&view| BatchUnit::new(store, view))
    }

    /// Ends every unit of the batch (the same as dropping it).
    pub fn end_batch(self) {}
}

impl Drop for UnitBatch<'_> {
    fn drop(&mut self) {
        let store = self.reader.store();
        let views = std::mem::take(&mut self.views);
        if let Some(last) = views.last() {
            let contiguous = views
                .windows(2)
                .all(|w| w[0].lane == w[1].lane && w[0].start + w[0].span == w[1].start);
            if contiguous {
                let next_not_taken = self.reader.is_last_taken(last.start + last.span);
                release_run(store, &views, next_not_taken);
            } else {
                for view in &views {
                    release(store, view);
                }
            }
        }
        self.reader.recycle(views);
    }
}

impl fmt::Debug for UnitBatch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnitBatch")
            .field("units", &self.views.len())
            .finish()
    }
}

//! Unit guards: a committed unit as its reader holds it, borrowed ([`Unit`]) or owned
//! ([`OwnedUnit`]); blob views, values, and ending.

use std::fmt;

use serde::Deserialize;

use crate::codec;
use crate::layout::{align_up, DESCRIPTOR_SIZE, INLINE_BLOBS, RECORD_SIZE};
use crate::reader::subscriber::{Shared as SubscriberShared, Subscriber};
use crate::reader::Reader;
use crate::ring::participants::SlotLease;
use crate::ring::release::{release, release_with};
use crate::ring::view::View;
use crate::storage::Store;
use crate::sync::Arc;
use crate::Result;

/// The blobs of a unit as the codec reads them.
struct UnitBlobs<'u> {
    store: &'u Store,
    view: &'u View,
}

impl<'u> codec::arena::UnitSource<'u> for UnitBlobs<'u> {
    fn blob_count(&self) -> u64 {
        self.view.count
    }

    fn blob(&self, index: usize) -> Result<&'u [u8]> {
        self.view.blob(self.store, index)
    }
}

/// A committed unit, borrowed from its [`Reader`]. [`end_unit`](Self::end_unit) or dropping
/// it ends the unit.
///
/// Blob views borrow from the guard, so the borrow checker rejects any use of a view after the
/// unit was ended. Units may be ended in any order.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use shm_arena::Region;
///
/// let region = Region::create(1 << 16)?;
/// let (mut writer, reader) = (region.writer()?, region.reader()?);
/// writer.write_unit(&[b"meta", &[1u8; 256]])?;
///
/// let unit = reader.next_unit(Duration::from_secs(1))?;
/// assert_eq!(unit.blob_count(), 2);
/// assert_eq!(unit.blob(0)?, b"meta");
/// let pixels: &[u8] = unit.blob(1)?;              // a view of shared memory
/// assert_eq!(pixels.as_ptr() as usize % 64, 0);   // 64-byte aligned
/// unit.end_unit();                                // the space returns to the writer
/// # Ok::<(), shm_arena::Error>(())
/// ```
///
/// A view cannot outlive its unit:
///
/// ```compile_fail
/// # use std::time::Duration;
/// # let region = shm_arena::Region::create(1 << 16).unwrap();
/// # let (mut writer, reader) = (region.writer().unwrap(), region.reader().unwrap());
/// # writer.write_unit(&[b"hello"]).unwrap();
/// let bytes: &[u8] = {
///     let unit = reader.next_unit(Duration::from_secs(1)).unwrap();
///     unit.blob(0).unwrap()
/// }; // the unit is ended here, so `bytes` would dangle: rejected
/// println!("{bytes:?}");
/// ```
pub struct Unit<'r> {
    taker: Taker<'r>,
    view: View,
}

/// Who took a unit, which decides how it ends.
enum Taker<'r> {
    /// A reader: the unit ends in the shared records and tail.
    Reader(&'r Reader),
    /// A broadcast subscriber: the unit ends in its private bookkeeping and pin.
    Subscriber(&'r Subscriber),
}

impl<'r> Unit<'r> {
    /// The guard for a unit `reader` just took.
    #[inline]
    pub(crate) fn new(reader: &'r Reader, view: View) -> Unit<'r> {
        Unit {
            taker: Taker::Reader(reader),
            view,
        }
    }

    /// The guard for a unit `subscriber` just took.
    #[inline]
    pub(crate) fn of_subscriber(subscriber: &'r Subscriber, view: View) -> Unit<'r> {
        Unit {
            taker: Taker::Subscriber(subscriber),
            view,
        }
    }

    fn store(&self) -> &Store {
        match self.taker {
            Taker::Reader(reader) => reader.store(),
            Taker::Subscriber(subscriber) => subscriber.store(),
        }
    }

    /// Gives up the guard without ending the unit (a batch ends it). Readers only.
    pub(crate) fn into_view(self) -> View {
        debug_assert!(matches!(self.taker, Taker::Reader(_)));
        let view = self.view;
        std::mem::forget(self);
        view
    }

    /// Detaches the unit from the reader's borrow: the owned form is `Send + 'static` and keeps
    /// the region mapped. The space stays reserved until it is dropped.
    pub fn into_owned(self) -> OwnedUnit {
        let owned = match self.taker {
            Taker::Reader(reader) => {
                let lease = reader.lease();
                OwnedUnit {
                    store: Arc::clone(&lease.store),
                    view: self.view,
                    ender: Ender::Reader(lease),
                }
            }
            Taker::Subscriber(subscriber) => OwnedUnit {
                store: subscriber.store_arc(),
                view: self.view,
                ender: Ender::Subscriber(subscriber.shared()),
            },
        };
        std::mem::forget(self);
        owned
    }
}

impl Drop for Unit<'_> {
    fn drop(&mut self) {
        match self.taker {
            Taker::Reader(reader) => {
                let next_not_taken = reader.is_last_taken(self.view.start + self.view.span);
                release_with(reader.store(), &self.view, next_not_taken);
            }
            Taker::Subscriber(subscriber) => subscriber.end(self.view.start),
        }
    }
}

/// A committed unit that owns a handle on its region: it may move to another thread and outlive
/// the reader's borrow. [`end_unit`](Self::end_unit) or dropping it ends the unit. It keeps
/// its reader's slot attached until it ends, so no other reader can take the slot over from
/// under it.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use shm_arena::Region;
///
/// let region = Region::create(1 << 16)?;
/// let (mut writer, reader) = (region.writer()?, region.reader()?);
/// writer.send(&("frame", 7u32))?;
/// let unit = reader.next_unit(Duration::from_secs(1))?.into_owned();
/// let consumer = std::thread::spawn(move || {
///     let (name, n): (&str, u32) = unit.decode().unwrap(); // borrowed from shared memory
///     assert_eq!((name, n), ("frame", 7));
/// }); // the unit ends on the consumer's thread
/// consumer.join().unwrap();
/// # Ok::<(), shm_arena::Error>(())
/// ```
pub struct OwnedUnit {
    store: Arc<Store>,
    view: View,
    ender: Ender,
}

/// How an owned unit ends, and what keeps its taker's slot attached until it has.
enum Ender {
    /// A reader's unit: keeps the reader's slot attached while this unit is the slot's
    /// (dropped after the unit is ended, in `Drop`).
    Reader(#[allow(dead_code, reason = "held for its reference count")] Arc<SlotLease>),
    /// A subscriber's unit: ends in the subscriber's bookkeeping.
    Subscriber(Arc<SubscriberShared>),
}

impl OwnedUnit {
    fn store(&self) -> &Store {
        &self.store
    }

    /// Whether the unit's bytes are shared with other takers (a broadcast subscriber's unit):
    /// a binding must then expose them read-only, whatever [`blob_ptr`](Self::blob_ptr)'s
    /// pointer type allows.
    pub fn is_shared(&self) -> bool {
        matches!(self.ender, Ender::Subscriber(_))
    }

    /// Blob `index` as a raw pointer and length, validated as [`blob`](Self::blob) is: for
    /// bindings that hand the bytes to code the borrow checker cannot follow (a Python buffer,
    /// say), which must keep this unit alive as long as the bytes are used. Until the unit
    /// ends, a reader's unit's bytes are this reader's: writing through the pointer is sound as
    /// long as nothing else reads or writes them meanwhile, which is the caller's to ensure (the
    /// writer never touches a committed unit). A subscriber's unit ([`is_shared`](Self::is_shared))
    /// is read by other subscribers at the same time: never write through the pointer then.
    ///
    /// # Errors
    /// As [`blob`](Self::blob).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use shm_arena::Region;
    ///
    /// let region = Region::create(1 << 16)?;
    /// let (mut writer, reader) = (region.writer()?, region.reader()?);
    /// writer.write_unit(&[b"abc"])?;
    /// let unit = reader.next_unit(Duration::from_secs(1))?.into_owned();
    /// let (ptr, len) = unit.blob_ptr(0)?;
    /// assert_eq!((ptr as usize % 64, len), (0, 3));
    /// assert_eq!(ptr as *const u8, unit.blob(0)?.as_ptr());
    /// # Ok::<(), shm_arena::Error>(())
    /// ```
    pub fn blob_ptr(&self, index: usize) -> Result<(*mut u8, usize)> {
        self.view.blob_range(&self.store, index, !self.is_shared())
    }
}

impl Drop for OwnedUnit {
    fn drop(&mut self) {
        match &self.ender {
            Ender::Reader(_) => release(&self.store, &self.view),
            Ender::Subscriber(shared) => shared.end(self.view.start),
        }
    }
}

/// The read access both unit forms share, written once.
macro_rules! unit_access {
    ($unit:ty, $name:literal) => {
        impl $unit {
            /// Number of blobs in the unit.
            pub fn blob_count(&self) -> usize {
                self.view.count as usize
            }

            /// Blob `index`: contiguous, 64-byte aligned, straight from shared memory.
            ///
            /// # Errors
            /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) if there is no such
            /// blob; [`Error::Corrupt`](crate::Error::Corrupt) if the
            /// writer's descriptor of it points outside the unit.
            #[inline]
            pub fn blob(&self, index: usize) -> Result<&[u8]> {
                self.view.blob(self.store(), index)
            }

            /// Every blob in order.
            pub fn blobs(&self) -> impl Iterator<Item = Result<&[u8]>> + '_ {
                (0..self.blob_count()).map(|i| self.blob(i))
            }

            /// The unit's ring position in its lane (unique for the region's lifetime within
            /// the lane: `(lane(), position())` names a unit).
            pub fn position(&self) -> u64 {
                self.view.start
            }

            /// The lane the unit came from: always 0 in an SPSC region, the writer's lane
            /// ([`Writer::lane`](crate::Writer::lane)) in an MPMC region.
            pub fn lane(&self) -> u32 {
                self.view.lane
            }

            /// Bytes the unit occupies in the ring, record and padding included.
            pub fn span(&self) -> u64 {
                self.view.span
            }

            /// Decodes a unit written by [`Writer::send`](crate::Writer::send). `&str`,
            /// `&[u8]` (with `serde_bytes`), `Cow`, [`codec::Bytes`] and [`codec::Array`]
            /// fields borrow from shared memory; owned types copy.
            ///
            /// # Errors
            /// [`Error::Codec`](crate::Error::Codec) if the envelope is malformed, does not
            /// match `T`, or points at blobs the unit does not have;
            /// [`Error::Corrupt`](crate::Error::Corrupt) if a blob lies outside the unit.
            pub fn decode<'u, T: Deserialize<'u>>(&'u self) -> Result<T> {
                codec::arena::decode_unit(&UnitBlobs {
                    store: self.store(),
                    view: &self.view,
                })
            }
        }

        impl fmt::Debug for $unit {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct($name)
                    .field("lane", &self.view.lane)
                    .field("position", &self.view.start)
                    .field("span", &self.view.span)
                    .field("blobs", &self.view.count)
                    .finish()
            }
        }
    };
}

unit_access!(Unit<'_>, "Unit");
unit_access!(OwnedUnit, "OwnedUnit");
unit_access!(BatchUnit<'_>, "BatchUnit");

/// Ending by name, for the guards that end a unit when they go.
macro_rules! end_unit {
    ($unit:ty) => {
        impl $unit {
            /// Ends the unit: its space returns to the writer once every unit before it has
            /// ended. The same as dropping it; the borrow checker keeps every view of the unit
            /// from outliving this call.
            pub fn end_unit(self) {}
        }
    };
}

end_unit!(Unit<'_>);
end_unit!(OwnedUnit);

/// One unit of a [`UnitBatch`](crate::UnitBatch): the same read access as [`Unit`]; it ends
/// with its batch.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use shm_arena::Region;
///
/// let region = Region::create(1 << 16)?;
/// let (mut writer, reader) = (region.writer()?, region.reader()?);
/// writer.send(&("a", 1u32))?;
/// writer.write_unit(&[b"raw"])?;
/// let batch = reader.next_batch(2, Duration::from_secs(1))?;
/// let first = batch.get(0).unwrap();
/// assert_eq!(first.decode::<(&str, u32)>()?, ("a", 1));
/// assert_eq!(batch.get(1).unwrap().blob(0)?, b"raw");
/// # Ok::<(), shm_arena::Error>(())
/// ```
pub struct BatchUnit<'b> {
    store: &'b Store,
    view: View,
}

impl<'b> BatchUnit<'b> {
    pub(crate) fn new(store: &'b Store, view: View) -> BatchUnit<'b> {
        BatchUnit { store, view }
    }

    fn store(&self) -> &'b Store {
        self.store
    }
}

/// Bytes a unit with blobs of these lengths needs, record and alignment included, not counting
/// padding at the ring's end (which the [`crate::Writer::max_unit`] limit already allows for).
pub fn unit_size(blob_lengths: &[usize]) -> u64 {
    let blobs = blob_lengths.iter().fold(0u64, |sum, &l| {
        sum.saturating_add(align_up((l as u64).min(u64::MAX / 2)))
    });
    let table = if blob_lengths.len() as u64 > INLINE_BLOBS {
        align_up(blob_lengths.len() as u64 * DESCRIPTOR_SIZE)
    } else {
        0
    };
    RECORD_SIZE.saturating_add(blobs).saturating_add(table)
}

//! Values as units: the codec (`crate::codec`) on top of the ring.
//!
//! [`Writer::send`] encodes a value into one unit: every byte string or typed array at or above
//! the writer's offload threshold is copied once into its own 64-byte-aligned blob, in the
//! order the serializer meets them, and the envelope (everything else, with markers pointing at
//! those blobs) is the unit's **last** blob. [`Unit::decode`] reads it back borrowing straight
//! from shared memory: no copy out, for offloaded and inline leaves alike.

use serde::{Deserialize, Serialize};

use crate::codec::{self, BlobSink, BlobSource, EncodeOptions};
use crate::storage::Store;
use crate::unit::{OwnedUnit, Unit, View};
use crate::writer::{UnitWriter, Writer};
use crate::{Error, Result};

impl BlobSink for UnitWriter<'_> {
    fn put_blob(&mut self, bytes: &[u8]) -> Result<u32> {
        let index = self.push(bytes)?;
        u32::try_from(index)
            .map_err(|_| Error::Codec(format!("a unit holds at most {} blobs", u32::MAX)))
    }
}

/// The blobs of a unit other than its envelope, as the decoder sees them.
struct Leaves<'u> {
    store: &'u Store,
    view: View,
}

impl<'u> BlobSource<'u> for Leaves<'u> {
    fn blob(&self, index: u32) -> Result<&'u [u8]> {
        // The last blob is the envelope, not a leaf.
        if u64::from(index) + 1 >= self.view.count {
            return Err(Error::Codec(format!(
                "marker names blob {index}, but the unit has {} leaf blobs",
                self.view.count.saturating_sub(1)
            )));
        }
        self.view.blob(self.store, index as usize)
    }
}

fn decode<'u, T: Deserialize<'u>>(store: &'u Store, view: View) -> Result<T> {
    let Some(last) = view.count.checked_sub(1) else {
        return Err(Error::Codec(
            "the unit has no blobs, so no envelope: it was not written by send".into(),
        ));
    };
    let envelope = view.blob(store, last as usize)?;
    codec::decode(envelope, &Leaves { store, view })
}

impl Writer {
    /// Encodes `value` as one unit and commits it, waiting for space up to the writer's
    /// timeout.
    ///
    /// Byte strings (`serde_bytes`, [`codec::Bytes`]) and [`codec::Array`]s of at least the
    /// offload threshold (default 4096 bytes, see
    /// [`set_encode_options`](Self::set_encode_options)) are copied once, straight into the
    /// ring; the rest is encoded into a small envelope. A plain `Vec<u8>` is a serde sequence
    /// and stays inline: wrap it in `serde_bytes` or [`codec::Bytes`] to offload it.
    ///
    /// # Errors
    /// [`Error::Codec`] if serialization fails; [`Error::UnitTooLarge`] if the encoded value
    /// needs more than [`max_unit`](Self::max_unit); otherwise as
    /// [`UnitWriter::push`]. On error nothing is published.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use serde::{Deserialize, Serialize};
    /// use shm_arena::{codec::Array, Region};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Frame<'a> {
    ///     name: &'a str,
    ///     #[serde(borrow)]
    ///     pixels: Array<'a, f32>,
    /// }
    ///
    /// let region = Region::create(1 << 20)?;
    /// let (mut writer, reader) = (region.writer()?, region.reader()?);
    /// let data = vec![0.5f32; 64 * 64];
    /// writer.send(&Frame { name: "cam0", pixels: Array::from_slice(&data, &[64, 64])? })?;
    ///
    /// let unit = reader.next_unit(Duration::from_secs(1))?;
    /// let frame: Frame = unit.decode()?;          // borrows from shared memory
    /// assert_eq!(frame.name, "cam0");
    /// assert_eq!(frame.pixels.shape(), &[64, 64]);
    /// assert!(frame.pixels.is_borrowed());        // zero copies out
    /// assert_eq!(frame.pixels.as_slice()[4095], 0.5);
    /// # Ok::<(), shm_arena::Error>(())
    /// ```
    pub fn send<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.send_unit(value, true)
    }

    /// [`send`](Self::send) that never waits: a full ring gives [`Error::WouldBlock`] and
    /// nothing is published.
    ///
    /// # Errors
    /// As [`send`](Self::send), plus [`Error::WouldBlock`].
    pub fn try_send<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.send_unit(value, false)
    }

    fn send_unit<T: Serialize + ?Sized>(&mut self, value: &T, blocking: bool) -> Result<()> {
        // The envelope is built in a buffer the writer keeps, so sending allocates nothing
        // once the buffer has grown to the largest envelope.
        let mut envelope = std::mem::take(&mut self.envelope);
        envelope.clear();
        let options = self.encode_options;
        let result = (|| {
            let mut unit = if blocking {
                self.begin_unit()?
            } else {
                self.try_begin_unit()?
            };
            codec::encode(value, &options, &mut envelope, &mut unit)?;
            unit.push(&envelope)?;
            unit.commit()
        })();
        self.envelope = envelope;
        result
    }

    /// Sets the encoder options [`send`](Self::send) uses (the offload threshold).
    pub fn set_encode_options(&mut self, options: EncodeOptions) {
        self.encode_options = options;
    }

    /// The encoder options [`send`](Self::send) uses.
    pub fn encode_options(&self) -> EncodeOptions {
        self.encode_options
    }
}

impl Unit<'_> {
    /// Decodes a unit written by [`Writer::send`]. `&str`, `&[u8]` (with `serde_bytes`),
    /// `Cow`, [`codec::Bytes`] and [`codec::Array`] fields borrow from shared memory; owned
    /// types copy.
    ///
    /// The decoded value borrows the unit, so it cannot outlive it:
    ///
    /// ```compile_fail
    /// # use std::time::Duration;
    /// # let region = shm_arena::Region::create(1 << 16).unwrap();
    /// # let (mut writer, reader) = (region.writer().unwrap(), region.reader().unwrap());
    /// # writer.send("hello").unwrap();
    /// let text: &str = {
    ///     let unit = reader.next_unit(Duration::from_secs(1)).unwrap();
    ///     unit.decode().unwrap()
    /// }; // the unit is ended here, so `text` would dangle: rejected
    /// println!("{text}");
    /// ```
    ///
    /// # Errors
    /// [`Error::Codec`] if the envelope is malformed, does not match `T`, or points at blobs
    /// the unit does not have; [`Error::Corrupt`] if a blob lies outside the unit.
    pub fn decode<'u, T: Deserialize<'u>>(&'u self) -> Result<T> {
        decode(self.reader.store(), self.view)
    }
}

impl OwnedUnit {
    /// Decodes a unit written by [`Writer::send`], as [`Unit::decode`].
    ///
    /// # Errors
    /// As [`Unit::decode`].
    pub fn decode<'u, T: Deserialize<'u>>(&'u self) -> Result<T> {
        decode(&self.store, self.view)
    }
}

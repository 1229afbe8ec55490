//! Serde values into units: large leaves offloaded once into blobs, decoded without copies.
//!
//! A value becomes an **envelope**, a compact, self-describing binary serialization (so
//! `deserialize_any`, untagged enums and `#[serde(flatten)]` work), in which large byte buffers
//! and typed arrays are replaced by **markers**, in the manner of pickle's `persistent_id`: each
//! such leaf is copied exactly once, through a [`BlobSink`], into a 64-byte aligned blob of its
//! own, and the envelope records the blob index and length (for arrays also the dtype and
//! shape). Decoding borrows: `&'a str`, `&'a [u8]`, `Cow<'a, _>`, [`Bytes<'a>`](Bytes) and
//! [`Array<'a, T>`](Array) point into the envelope (inline leaves) or straight into the blob
//! (offloaded leaves). `DeserializeOwned` types work as well; they copy.
//!
//! The byte layout is specified in `docs/FORMAT.md`, precisely enough for a reader in another
//! language.
//!
//! # Examples
//!
//! ```
//! use std::collections::BTreeMap;
//! use serde::{Deserialize, Serialize};
//! use shm_arena::codec::{decode, encode, Array, Bytes, EncodeOptions, HeapBlobs};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Item<'a> {
//!     name: &'a str,
//!     tags: BTreeMap<String, i64>,
//!     #[serde(borrow)]
//!     audio: Bytes<'a>,
//!     #[serde(borrow)]
//!     spectrum: Array<'a, f32>,
//! }
//!
//! let spectrum = vec![0.25f32; 128 * 40];
//! let item = Item {
//!     name: "clip-7",
//!     tags: BTreeMap::from([("speaker".to_owned(), 3)]),
//!     audio: Bytes::from(vec![0u8; 16_000]),
//!     spectrum: Array::from_slice(&spectrum, &[128, 40])?,
//! };
//!
//! // The arena's writer is the sink in real use; `HeapBlobs` keeps blobs on the heap.
//! let mut envelope = Vec::new();
//! let mut blobs = HeapBlobs::new();
//! encode(&item, &EncodeOptions::default(), &mut envelope, &mut blobs)?;
//! assert_eq!(blobs.len(), 2, "audio and spectrum are offloaded");
//! assert!(envelope.len() < 100, "the envelope holds only metadata and markers");
//!
//! let decoded: Item = decode(&envelope, &&blobs)?;
//! assert_eq!(decoded.name, "clip-7");
//! assert_eq!(decoded.spectrum.shape(), &[128, 40]);
//! // Zero copies out: the leaves are views of the blobs.
//! assert_eq!(decoded.audio.as_ptr(), blobs.get(0).unwrap().as_ptr());
//! assert!(decoded.spectrum.is_borrowed());
//! # Ok::<(), shm_arena::Error>(())
//! ```
//!
//! # Which leaves are offloaded
//!
//! Byte strings (`serialize_bytes`) and [`Array`]s whose byte length is at least
//! [`EncodeOptions::offload_threshold`]. Nothing else: strings, numbers and containers are always
//! inline.
//!
//! A plain `Vec<u8>` (or `[u8; N]`, or `&[u8]` without a helper) field is, to serde, a *sequence
//! of `u8`*: it is encoded inline element by element and never offloaded. Use [`Bytes`] or the
//! `serde_bytes` crate (`#[serde(with = "serde_bytes")]`, `serde_bytes::ByteBuf`) to have it
//! treated as bytes. A field of type `&'a [u8]` deserializes as borrowed bytes by itself; to
//! *serialize* it as bytes too, give it `#[serde(with = "serde_bytes")]`.
//!
//! # Borrowing and lifetimes
//!
//! Serde's derive borrows `&'a str` and `&'a [u8]` fields by itself; `Cow<'a, str>`,
//! [`Bytes<'a>`](Bytes) and [`Array<'a, T>`](Array) fields need `#[serde(borrow)]`: without it a
//! `Cow` decodes owned (a copy), and `Bytes`/`Array` fields fail to compile with "lifetime may not
//! live long enough".
//!
//! Offloaded arrays always borrow: blobs are 64-byte aligned. Inline array data is padded to its
//! element size relative to the envelope's first byte, so it borrows whenever the envelope starts
//! 8-byte aligned (the arena stores envelopes as blobs, so they do); if it does not, the array is
//! copied into owned memory rather than failing ([`Array::is_borrowed`] tells).
//!
//! A decoded value cannot outlive the envelope and blobs it borrows from: the borrow checker
//! enforces it, so no view can be used after its unit is released.
//!
//! ```compile_fail,E0505
//! use shm_arena::codec::{decode, encode, EncodeOptions, HeapBlobs, NoBlobs};
//!
//! let mut envelope = Vec::new();
//! encode("hello", &EncodeOptions::default(), &mut envelope, &mut HeapBlobs::new()).unwrap();
//! let text: &str = decode(&envelope, &NoBlobs).unwrap();
//! drop(envelope); // error: cannot move out of `envelope` because it is borrowed
//! println!("{text}");
//! ```
//!
//! # Untrusted input
//!
//! The envelope is read from memory another process wrote, so [`decode`] treats it as hostile:
//! truncated input, unknown tags, invalid UTF-8, lengths such as 2^60, markers naming missing
//! blobs or claiming more bytes than the blob has, arrays whose shape disagrees with their byte
//! length or overflows, and nesting deeper than [`MAX_DEPTH`] all give an [`Error::Codec`] whose
//! message starts with the envelope offset. Decoding never panics, never reads out of bounds,
//! never allocates more than a small multiple of the envelope's length, and recurses at most
//! [`MAX_DEPTH`] levels.

pub(crate) mod arena;
mod array;
mod bytes;
mod de;
mod format;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod heap;
mod ser;
mod value;

use std::fmt::Display;

pub use array::{Array, Dtype, Element};
pub use bytes::Bytes;
pub use format::{MAX_DEPTH, MAX_NDIM};
pub use heap::{HeapBlobs, NoBlobs};
pub use value::{RawArray, Value};

use crate::{Error, Result};

/// Where the encoder puts large leaves. Implemented by the arena's unit writer
/// ([`UnitWriter`](crate::UnitWriter)) and by [`HeapBlobs`]; another runtime's storage can
/// implement it too.
///
/// # Examples
///
/// ```
/// use shm_arena::codec::{encode, BlobSink, Bytes, EncodeOptions};
///
/// /// Keeps leaves in a list (what `HeapBlobs` does).
/// struct Leaves(Vec<Vec<u8>>);
///
/// impl BlobSink for Leaves {
///     fn put_blob(&mut self, bytes: &[u8]) -> shm_arena::Result<u32> {
///         self.0.push(bytes.to_vec());
///         Ok(self.0.len() as u32 - 1)
///     }
/// }
///
/// let mut leaves = Leaves(Vec::new());
/// let mut envelope = Vec::new();
/// encode(&Bytes::from(vec![1u8; 8192]), &EncodeOptions::default(), &mut envelope, &mut leaves)?;
/// assert_eq!(leaves.0.len(), 1);
/// # Ok::<(), shm_arena::Error>(())
/// ```
pub trait BlobSink {
    /// Copies `bytes` into a new blob, 64-byte aligned, and returns its index within the unit.
    ///
    /// # Errors
    ///
    /// Whatever the sink cannot do (no room in the unit, too many blobs); [`encode`] passes the
    /// error on unchanged.
    fn put_blob(&mut self, bytes: &[u8]) -> Result<u32>;
}

/// Where the decoder finds offloaded leaves. Implemented for the arena's units and for
/// `&`[`HeapBlobs`]; another runtime's storage can implement it too.
///
/// # Examples
///
/// ```
/// use std::cell::Cell;
/// use shm_arena::codec::{decode, encode, BlobSource, Bytes, EncodeOptions, HeapBlobs};
///
/// /// Counts the look-ups of leaves kept in `HeapBlobs` (64-byte aligned, as leaves must be).
/// struct Counted<'a>(&'a HeapBlobs, Cell<u32>);
///
/// impl<'a> BlobSource<'a> for Counted<'a> {
///     fn blob(&self, index: u32) -> shm_arena::Result<&'a [u8]> {
///         self.1.set(self.1.get() + 1);
///         self.0
///             .get(index)
///             .ok_or_else(|| shm_arena::Error::Codec(format!("no blob {index}")))
///     }
/// }
///
/// let (mut envelope, mut heap) = (Vec::new(), HeapBlobs::new());
/// encode(&Bytes::from(vec![3u8; 5000]), &EncodeOptions::default(), &mut envelope, &mut heap)?;
/// let source = Counted(&heap, Cell::new(0));
/// let back: Bytes = decode(&envelope, &source)?;
/// assert_eq!((back.len(), source.1.get()), (5000, 1));
/// # Ok::<(), shm_arena::Error>(())
/// ```
pub trait BlobSource<'a> {
    /// The whole blob `index` (64-byte aligned start), or an error if there is no such blob.
    ///
    /// A blob may be longer than the leaf a marker takes from it (the marker's length is checked
    /// to be at most the blob's length), so an implementation may return padded blobs.
    ///
    /// # Errors
    ///
    /// Any error if the unit has no blob `index`; [`decode`] reports it as [`Error::Codec`] with
    /// the marker's envelope offset.
    fn blob(&self, index: u32) -> Result<&'a [u8]>;
}

/// Encoder settings.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use shm_arena::codec::{Bytes, EncodeOptions};
/// use shm_arena::Region;
///
/// let region = Region::create(1 << 16)?;
/// let (mut writer, reader) = (region.writer()?, region.reader()?);
/// // Offload byte strings from 256 bytes on (the default is 4096).
/// let options = EncodeOptions::with_offload_threshold(256);
/// writer.send_with(&Bytes::from(vec![0u8; 1000]), &options)?;
/// let unit = reader.next_unit(Duration::from_secs(1))?;
/// assert_eq!(unit.blob_count(), 2); // the leaf, then the envelope
/// # Ok::<(), shm_arena::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct EncodeOptions {
    offload_threshold: usize,
}

impl EncodeOptions {
    /// The default threshold, 4096 bytes: below it, a blob's alignment padding and bookkeeping
    /// cost more than copying the bytes inline.
    pub const DEFAULT_OFFLOAD_THRESHOLD: usize = 4096;

    /// The defaults (see [`Default`]).
    pub fn new() -> Self {
        EncodeOptions::default()
    }

    /// Options with the given [`offload_threshold`](EncodeOptions::offload_threshold).
    pub const fn with_offload_threshold(offload_threshold: usize) -> Self {
        EncodeOptions { offload_threshold }
    }

    /// The offload threshold (default [`DEFAULT_OFFLOAD_THRESHOLD`](Self::DEFAULT_OFFLOAD_THRESHOLD)).
    pub fn offload_threshold(&self) -> usize {
        self.offload_threshold
    }
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions::with_offload_threshold(EncodeOptions::DEFAULT_OFFLOAD_THRESHOLD)
    }
}

/// Serializes `value`: inline parts are appended to `envelope`, leaves at or above the threshold
/// are sent to `sink`.
///
/// The envelope starts at `envelope.len()` on entry: that byte is the version byte, and inline
/// array data is aligned relative to it. Store the envelope 8-byte aligned (the arena stores it
/// as a blob) for inline arrays to decode borrowed. Never blocks, unless `sink` does.
///
/// # Errors
///
/// [`Error::Codec`] if `value`'s `Serialize` fails, nests deeper than [`MAX_DEPTH`], or announces
/// a length it does not keep; any error of `sink`. On error `envelope` is truncated back to its
/// length on entry; blobs already put into `sink` stay there (abort the unit to drop them).
///
/// # Examples
///
/// ```
/// use shm_arena::codec::{encode, EncodeOptions, HeapBlobs};
///
/// let mut envelope = Vec::new();
/// let mut blobs = HeapBlobs::new();
/// encode(&("small", vec![1u32, 2]), &EncodeOptions::default(), &mut envelope, &mut blobs)?;
/// assert!(blobs.is_empty());
/// assert_eq!(envelope[0], 1, "format version");
/// # Ok::<(), shm_arena::Error>(())
/// ```
pub fn encode<T: serde::Serialize + ?Sized>(
    value: &T,
    options: &EncodeOptions,
    envelope: &mut Vec<u8>,
    sink: &mut dyn BlobSink,
) -> Result<()> {
    let base = envelope.len();
    envelope.push(format::VERSION);
    let result = value.serialize(&mut ser::Encoder::new(
        envelope,
        base,
        sink,
        options.offload_threshold,
    ));
    if result.is_err() {
        envelope.truncate(base);
    }
    result
}

/// Deserializes a value from an envelope and its unit's blobs, borrowing from both for `'a`.
///
/// Never blocks.
///
/// # Errors
///
/// [`Error::Codec`] if the envelope is malformed (see "Untrusted input" in the
/// [module docs](self)), holds bytes after the value, references blobs `blobs` does not have, or
/// does not fit `T`. The message starts with `envelope offset N:`.
///
/// # Examples
///
/// ```
/// use shm_arena::codec::{decode, encode, EncodeOptions, HeapBlobs, NoBlobs};
///
/// let mut envelope = Vec::new();
/// encode(&("id", 42u64), &EncodeOptions::default(), &mut envelope, &mut HeapBlobs::new())?;
/// let (name, id): (&str, u64) = decode(&envelope, &NoBlobs)?;
/// assert_eq!((name, id), ("id", 42));
///
/// let err = decode::<(&str, u64)>(&envelope[..4], &NoBlobs).unwrap_err();
/// assert!(err.to_string().contains("envelope offset"));
/// # Ok::<(), shm_arena::Error>(())
/// ```
pub fn decode<'a, T: serde::Deserialize<'a>>(
    envelope: &'a [u8],
    blobs: &dyn BlobSource<'a>,
) -> Result<T> {
    match envelope.first() {
        None => return Err(Error::Codec("envelope is empty".into())),
        Some(&format::VERSION) => {}
        Some(&v) => {
            return Err(Error::Codec(format!(
                "envelope offset 0: format version {v} is not supported (this decoder reads version {})",
                format::VERSION
            )))
        }
    }
    let mut decoder = de::Decoder::new(envelope, blobs);
    let value = T::deserialize(&mut decoder).map_err(|e| decoder.locate(e))?;
    let end = decoder.position();
    if end != envelope.len() {
        return Err(Error::Codec(format!(
            "envelope offset {end}: {} bytes after the end of the value",
            envelope.len() - end
        )));
    }
    Ok(value)
}

impl serde::ser::Error for Error {
    fn custom<T: Display>(msg: T) -> Self {
        Error::Codec(msg.to_string())
    }
}

impl serde::de::Error for Error {
    fn custom<T: Display>(msg: T) -> Self {
        Error::Codec(msg.to_string())
    }
}

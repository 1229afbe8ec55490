//! A byte buffer that serde sees as bytes (so the encoder can offload it) and that borrows on
//! decode.

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;

use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};
use serde::ser::{Serialize, Serializer};

/// A byte buffer, borrowed or owned, that serializes with `serialize_bytes`.
///
/// A plain `Vec<u8>` field is, to serde, a *sequence of `u8`*: it is encoded inline element by
/// element and never offloaded. Use `Bytes` (or `serde_bytes`) for byte buffers: at or above the
/// offload threshold they are copied once into a blob of their own, and decoding borrows them
/// straight from that blob. As a field of a derived struct, give it `#[serde(borrow)]`.
///
/// # Examples
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use shm_arena::codec::{decode, encode, Bytes, EncodeOptions, HeapBlobs};
///
/// #[derive(Serialize, Deserialize)]
/// struct Frame<'a> {
///     id: u64,
///     #[serde(borrow)]
///     pixels: Bytes<'a>,
/// }
///
/// let frame = Frame { id: 7, pixels: Bytes::from(vec![1u8; 10_000]) };
/// let mut envelope = Vec::new();
/// let mut blobs = HeapBlobs::new();
/// encode(&frame, &EncodeOptions::default(), &mut envelope, &mut blobs)?;
///
/// let decoded: Frame = decode(&envelope, &&blobs)?;
/// assert!(decoded.pixels.is_borrowed());
/// assert_eq!(decoded.pixels.as_ptr(), blobs.get(0).unwrap().as_ptr());
/// # Ok::<(), shm_arena::Error>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes<'a>(Cow<'a, [u8]>);

impl<'a> Bytes<'a> {
    /// Bytes borrowing `bytes`.
    pub const fn borrowed(bytes: &'a [u8]) -> Self {
        Bytes(Cow::Borrowed(bytes))
    }

    /// Whether the bytes are borrowed rather than owned.
    pub fn is_borrowed(&self) -> bool {
        matches!(self.0, Cow::Borrowed(_))
    }

    /// The bytes as a slice.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// Copies borrowed bytes, so the buffer no longer borrows anything.
    pub fn into_owned(self) -> Bytes<'static> {
        Bytes(Cow::Owned(self.0.into_owned()))
    }

    /// The underlying `Cow`.
    pub fn into_cow(self) -> Cow<'a, [u8]> {
        self.0
    }

    /// The bytes as a `Vec`, copying them if they are borrowed.
    pub fn into_vec(self) -> Vec<u8> {
        self.0.into_owned()
    }
}

impl fmt::Debug for Bytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Payloads are large: show the size and a prefix, not megabytes of numbers.
        const SHOWN: usize = 16;
        let prefix = &self.0[..self.0.len().min(SHOWN)];
        write!(f, "Bytes(len {}, {:02x?}", self.0.len(), prefix)?;
        if self.0.len() > SHOWN {
            f.write_str("...")?;
        }
        f.write_str(")")
    }
}

impl Deref for Bytes<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Bytes<'_> {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl<'a> From<&'a [u8]> for Bytes<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        Bytes(Cow::Borrowed(bytes))
    }
}

impl From<Vec<u8>> for Bytes<'static> {
    fn from(bytes: Vec<u8>) -> Self {
        Bytes(Cow::Owned(bytes))
    }
}

impl<'a> From<Cow<'a, [u8]>> for Bytes<'a> {
    fn from(bytes: Cow<'a, [u8]>) -> Self {
        Bytes(bytes)
    }
}

impl<'a> From<Bytes<'a>> for Cow<'a, [u8]> {
    fn from(bytes: Bytes<'a>) -> Self {
        bytes.0
    }
}

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Bytes<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_bytes(BytesVisitor)
    }
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Bytes<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte buffer")
    }

    fn visit_borrowed_bytes<E>(self, v: &'de [u8]) -> Result<Self::Value, E> {
        Ok(Bytes(Cow::Borrowed(v)))
    }

    fn visit_bytes<E>(self, v: &[u8]) -> Result<Self::Value, E> {
        Ok(Bytes(Cow::Owned(v.to_vec())))
    }

    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Self::Value, E> {
        Ok(Bytes(Cow::Owned(v)))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Bytes(Cow::Borrowed(v.as_bytes())))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Bytes(Cow::Owned(v.as_bytes().to_vec())))
    }

    /// Formats without a byte type (JSON) write bytes as a sequence of numbers.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // The hint comes from the input: trust it only up to a bound.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64 * 1024));
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        Ok(Bytes(Cow::Owned(out)))
    }
}

//! Typed n-dimensional arrays that the encoder offloads into blobs and the decoder borrows back.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeTuple, Serializer};

use super::bytes::Bytes;
use super::format::{ARRAY_MAGIC, MAX_NDIM};
use crate::{Error, Result};

/// Element type of an [`Array`], as stored in the envelope.
///
/// The codes are the one-character type codes of Python's `struct` module and NumPy, so a Python
/// reader can build an array with `numpy.frombuffer(blob, dtype=chr(code))`.
///
/// # Examples
///
/// ```
/// use shm_arena::codec::{Array, Dtype};
///
/// let data = [1.5f32, 2.5];
/// let array = Array::from_slice_1d(&data);
/// assert_eq!(array.dtype(), Dtype::F32);
/// assert_eq!(Dtype::F32.code(), b'f'); // numpy.dtype('f')
/// assert_eq!(Dtype::from_code(b'q'), Some(Dtype::I64));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Dtype {
    /// `u8`, code `b'B'`.
    U8 = b'B',
    /// `i8`, code `b'b'`.
    I8 = b'b',
    /// `u16`, code `b'H'`.
    U16 = b'H',
    /// `i16`, code `b'h'`.
    I16 = b'h',
    /// `u32`, code `b'I'`.
    U32 = b'I',
    /// `i32`, code `b'i'`.
    I32 = b'i',
    /// `u64`, code `b'Q'`.
    U64 = b'Q',
    /// `i64`, code `b'q'`.
    I64 = b'q',
    /// `f32`, code `b'f'`.
    F32 = b'f',
    /// `f64`, code `b'd'`.
    F64 = b'd',
}

impl Dtype {
    /// The code byte written into the envelope.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The dtype with this code byte, if any.
    pub const fn from_code(code: u8) -> Option<Dtype> {
        Some(match code {
            b'B' => Dtype::U8,
            b'b' => Dtype::I8,
            b'H' => Dtype::U16,
            b'h' => Dtype::I16,
            b'I' => Dtype::U32,
            b'i' => Dtype::I32,
            b'Q' => Dtype::U64,
            b'q' => Dtype::I64,
            b'f' => Dtype::F32,
            b'd' => Dtype::F64,
            _ => return None,
        })
    }

    /// Size of one element in bytes; also the alignment the format guarantees for its data.
    pub const fn size(self) -> usize {
        match self {
            Dtype::U8 | Dtype::I8 => 1,
            Dtype::U16 | Dtype::I16 => 2,
            Dtype::U32 | Dtype::I32 | Dtype::F32 => 4,
            Dtype::U64 | Dtype::I64 | Dtype::F64 => 8,
        }
    }

    /// The Rust name of the element type, for messages.
    pub const fn name(self) -> &'static str {
        match self {
            Dtype::U8 => "u8",
            Dtype::I8 => "i8",
            Dtype::U16 => "u16",
            Dtype::I16 => "i16",
            Dtype::U32 => "u32",
            Dtype::I32 => "i32",
            Dtype::U64 => "u64",
            Dtype::I64 => "i64",
            Dtype::F32 => "f32",
            Dtype::F64 => "f64",
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

mod sealed {
    pub trait Sealed {}
}

/// An element type an [`Array`] can hold: the ten plain numeric types of [`Dtype`].
///
/// Sealed: the format has a code for each of these and no others.
///
/// # Examples
///
/// ```
/// use shm_arena::codec::{Dtype, Element};
///
/// fn code_of<T: Element>() -> u8 {
///     T::DTYPE.code()
/// }
/// assert_eq!(code_of::<u16>(), b'H');
/// assert_eq!(<f64 as Element>::DTYPE, Dtype::F64);
/// ```
pub trait Element: bytemuck::Pod + sealed::Sealed {
    /// The dtype written for this type.
    const DTYPE: Dtype;
}

macro_rules! element {
    ($($ty:ty => $dtype:ident),* $(,)?) => {$(
        impl sealed::Sealed for $ty {}
        impl Element for $ty {
            const DTYPE: Dtype = Dtype::$dtype;
        }
    )*};
}

element!(
    u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32,
    u64 => U64, i64 => I64, f32 => F32, f64 => F64,
);

/// Number of elements of `shape`, or `None` on overflow. The empty shape is a scalar: one element.
pub(crate) fn element_count(shape: impl IntoIterator<Item = u64>) -> Option<u64> {
    shape
        .into_iter()
        .try_fold(1u64, |acc, dim| acc.checked_mul(dim))
}

/// A typed, row-major, n-dimensional array whose data is borrowed when it can be.
///
/// Encoding writes the data exactly once: into a blob of its own when its byte length reaches
/// [`EncodeOptions::offload_threshold`](super::EncodeOptions::offload_threshold), else inline in
/// the envelope (still typed and aligned). Decoding borrows the data straight from the blob or the
/// envelope: `is_borrowed()` is true whenever the bytes are aligned for `T`, which is always the
/// case for blobs (64-byte aligned) and for inline data when the envelope starts 8-byte aligned
/// (envelopes the arena stores are blobs, so they do). If the bytes are misaligned anyway (an
/// envelope in an arbitrary `Vec<u8>`, or another serde format such as postcard), the data is
/// copied into an owned buffer rather than failing.
///
/// As a field of a derived struct, give it `#[serde(borrow)]` so the decoded array can borrow.
///
/// With serde formats other than this crate's, an array is a 3-tuple `(dtype code, shape, data
/// bytes)`.
///
/// # Examples
///
/// ```
/// use shm_arena::codec::{decode, encode, Array, EncodeOptions, HeapBlobs};
///
/// let image = Array::from_vec(vec![0.5f32; 64 * 64 * 3], vec![64, 64, 3])?;
/// let mut envelope = Vec::new();
/// let mut blobs = HeapBlobs::new();
/// encode(&image, &EncodeOptions::default(), &mut envelope, &mut blobs)?;
/// assert_eq!(blobs.len(), 1); // 48 KiB: offloaded
///
/// let decoded: Array<f32> = decode(&envelope, &&blobs)?;
/// assert_eq!(decoded.shape(), &[64, 64, 3]);
/// assert!(decoded.is_borrowed());
/// assert_eq!(decoded.as_slice().as_ptr().cast::<u8>(), blobs.get(0).unwrap().as_ptr());
/// # Ok::<(), shm_arena::Error>(())
/// ```
#[derive(Clone)]
pub struct Array<'a, T: Element> {
    shape: Vec<usize>,
    data: Cow<'a, [T]>,
}

impl<'a, T: Element> Array<'a, T> {
    /// An array over `data` with the given `shape` (row-major).
    ///
    /// # Errors
    ///
    /// [`Error::Codec`] if the product of `shape` overflows or differs from `data.len()`, or if
    /// `shape` has more than [`MAX_NDIM`] dimensions.
    pub fn new(data: Cow<'a, [T]>, shape: Vec<usize>) -> Result<Self> {
        check_shape(&shape, data.len())?;
        Ok(Array { shape, data })
    }

    /// An array borrowing `data`, with the given `shape`.
    ///
    /// # Errors
    ///
    /// As [`Array::new`].
    pub fn from_slice(data: &'a [T], shape: &[usize]) -> Result<Self> {
        Array::new(Cow::Borrowed(data), shape.to_vec())
    }

    /// A one-dimensional array borrowing `data`. Cannot fail.
    pub fn from_slice_1d(data: &'a [T]) -> Self {
        Array {
            shape: vec![data.len()],
            data: Cow::Borrowed(data),
        }
    }

    /// The extent of each dimension, outermost first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of dimensions (0 for a scalar).
    pub fn ndim(&self) -> usize {
        self.shape.len()
    }

    /// An `ndarray` view of the array with its shape, borrowing the same memory (for a decoded
    /// array: shared memory). Needs the `ndarray` feature.
    ///
    /// ```
    /// use shm_arena::codec::Array;
    /// let data = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    /// let array = Array::from_slice(&data, &[2, 3])?;
    /// let view = array.view()?;
    /// assert_eq!(view.shape(), &[2, 3]);
    /// assert_eq!(view[[1, 2]], 6.0);
    /// # Ok::<(), shm_arena::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) if ndarray refuses the shape
    /// (the constructors and the decoder already check that it matches the length).
    #[cfg(feature = "ndarray")]
    pub fn view(&self) -> crate::Result<ndarray::ArrayViewD<'_, T>> {
        ndarray::ArrayViewD::from_shape(ndarray::IxDyn(&self.shape), &self.data).map_err(|e| {
            crate::Error::InvalidArgument(format!("array of shape {:?}: {e}", self.shape))
        })
    }

    /// All elements in row-major order.
    pub fn as_slice(&self) -> &[T] {
        &self.data
    }

    /// The elements as raw bytes (native byte order).
    pub fn as_bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.data)
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Whether the data is borrowed (from a blob, the envelope or a slice) rather than owned.
    pub fn is_borrowed(&self) -> bool {
        matches!(self.data, Cow::Borrowed(_))
    }

    /// The dtype of the elements.
    pub fn dtype(&self) -> Dtype {
        T::DTYPE
    }

    /// Copies borrowed data, so the array no longer borrows anything.
    pub fn into_owned(self) -> Array<'static, T> {
        Array {
            shape: self.shape,
            data: Cow::Owned(self.data.into_owned()),
        }
    }

    /// The shape and the data.
    pub fn into_parts(self) -> (Vec<usize>, Cow<'a, [T]>) {
        (self.shape, self.data)
    }
}

impl<T: Element> Array<'static, T> {
    /// An array owning `data`, with the given `shape`.
    ///
    /// # Errors
    ///
    /// As [`Array::new`].
    pub fn from_vec(data: Vec<T>, shape: Vec<usize>) -> Result<Self> {
        Array::new(Cow::Owned(data), shape)
    }
}

fn check_shape(shape: &[usize], len: usize) -> Result<()> {
    if shape.len() > MAX_NDIM {
        return Err(Error::Codec(format!(
            "array has {} dimensions, more than the limit of {MAX_NDIM}",
            shape.len()
        )));
    }
    match element_count(shape.iter().map(|&d| d as u64)) {
        Some(n) if n == len as u64 => Ok(()),
        Some(n) => Err(Error::Codec(format!(
            "array shape {shape:?} holds {n} elements but the data has {len}"
        ))),
        None => Err(Error::Codec(format!(
            "array shape {shape:?} overflows the element count"
        ))),
    }
}

impl<T: Element + fmt::Debug> fmt::Debug for Array<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Array")
            .field("dtype", &T::DTYPE)
            .field("shape", &self.shape)
            .field("borrowed", &self.is_borrowed())
            .field("data", &self.data)
            .finish()
    }
}

/// Element-wise equality (so, as for `f32`, an array holding NaN is not equal to itself).
impl<T: Element + PartialEq> PartialEq for Array<'_, T> {
    fn eq(&self, other: &Self) -> bool {
        self.shape == other.shape && self.data == other.data
    }
}

/// What an array serializes as, inside its magic newtype struct: `(dtype code, shape, bytes)`.
/// Shared by [`Array`] (`usize` dimensions) and [`RawArray`](super::RawArray) (`u64`).
pub(crate) struct Parts<'s, D> {
    pub(crate) dtype: Dtype,
    pub(crate) shape: &'s [D],
    pub(crate) data: &'s [u8],
}

impl<D: Dim> Serialize for Parts<'_, D> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(3)?;
        tuple.serialize_element(&self.dtype.code())?;
        tuple.serialize_element(&Shape(self.shape))?;
        tuple.serialize_element(&Bytes::borrowed(self.data))?;
        tuple.end()
    }
}

/// A dimension as the format writes it: a `u64`.
pub(crate) trait Dim: Copy {
    fn as_u64(self) -> u64;
}

impl Dim for usize {
    fn as_u64(self) -> u64 {
        self as u64
    }
}

impl Dim for u64 {
    fn as_u64(self) -> u64 {
        self
    }
}

/// A shape as a sequence of `u64`, so it reads the same on 32- and 64-bit hosts.
struct Shape<'s, D>(&'s [D]);

impl<D: Dim> Serialize for Shape<'_, D> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|&d| d.as_u64()))
    }
}

impl<T: Element> Serialize for Array<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_newtype_struct(
            ARRAY_MAGIC,
            &Parts {
                dtype: T::DTYPE,
                shape: &self.shape,
                data: self.as_bytes(),
            },
        )
    }
}

impl<'de: 'a, 'a, T: Element> Deserialize<'de> for Array<'a, T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_newtype_struct(ARRAY_MAGIC, ArrayVisitor(PhantomData))
    }
}

struct ArrayVisitor<'a, T>(PhantomData<(&'a (), T)>);

impl<'de: 'a, 'a, T: Element> Visitor<'de> for ArrayVisitor<'a, T> {
    type Value = Array<'a, T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array of {}", T::DTYPE)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_tuple(3, self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let code: u8 = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(0, &self))?;
        let shape: Vec<u64> = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(1, &self))?;
        let bytes: Bytes<'de> = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(2, &self))?;
        if code != T::DTYPE.code() {
            let found = Dtype::from_code(code).map_or("an unknown type", Dtype::name);
            return Err(de::Error::custom(format_args!(
                "array of {found} (dtype code {code:#04x}) where an array of {} was expected",
                T::DTYPE
            )));
        }
        if shape.len() > MAX_NDIM {
            return Err(de::Error::custom(format_args!(
                "array has {} dimensions, more than the limit of {MAX_NDIM}",
                shape.len()
            )));
        }
        let bytes_needed = element_count(shape.iter().copied())
            .and_then(|n| n.checked_mul(T::DTYPE.size() as u64));
        if bytes_needed != Some(bytes.len() as u64) {
            return Err(de::Error::custom(format_args!(
                "array of {} with shape {shape:?} needs {} bytes but has {}",
                T::DTYPE,
                bytes_needed.map_or_else(|| "more than 2^64".to_owned(), |n| n.to_string()),
                bytes.len()
            )));
        }
        let shape = shape
            .into_iter()
            .map(usize::try_from)
            .collect::<Result<Vec<usize>, _>>()
            .map_err(|_| de::Error::custom("array dimension does not fit in usize"))?;
        let data = match bytes.into_cow() {
            Cow::Borrowed(b) => match bytemuck::try_cast_slice::<u8, T>(b) {
                Ok(typed) => Cow::Borrowed(typed),
                // Misaligned bytes (not from a blob, nor from an aligned envelope): copy once
                // rather than fail, so envelopes in plain `Vec<u8>`s and other formats still work.
                Err(_) => Cow::Owned(copy_elements(b)),
            },
            Cow::Owned(v) => Cow::Owned(copy_elements(&v)),
        };
        Ok(Array { shape, data })
    }
}

fn copy_elements<T: Element>(bytes: &[u8]) -> Vec<T> {
    let mut out = vec![T::zeroed(); bytes.len() / std::mem::size_of::<T>()];
    bytemuck::cast_slice_mut::<T, u8>(&mut out).copy_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_codes_round_trip() {
        for code in 0..=255u8 {
            if let Some(d) = Dtype::from_code(code) {
                assert_eq!(d.code(), code);
            }
        }
        assert_eq!(<f64 as Element>::DTYPE.size(), 8);
        assert_eq!(<i16 as Element>::DTYPE, Dtype::I16);
    }

    #[test]
    fn shape_must_match_length() {
        assert!(Array::from_slice(&[1u8, 2, 3, 4, 5, 6], &[2, 3]).is_ok());
        assert!(Array::from_slice(&[1u8, 2, 3, 4, 5, 6], &[4, 2]).is_err());
        assert!(
            Array::from_slice(&[7u32], &[]).is_ok(),
            "a scalar has one element"
        );
        assert!(Array::<u8>::from_slice(&[], &[usize::MAX, usize::MAX, 0]).is_err());
        assert!(Array::<u8>::from_slice(&[], &[0, 5]).is_ok());
        assert!(Array::<u8>::from_slice(&[1], &[1; MAX_NDIM + 1]).is_err());
    }
}

//! Values of any shape: what a consumer without Rust types for the data gets (another language's
//! binding, a generic inspector, a field whose shape varies).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use super::array::{element_count, Dtype, Parts};
use super::format::{ARRAY_MAGIC, MAX_NDIM, VALUE_MAGIC};
use crate::{Error, Result};

/// Any value the envelope format can hold, borrowing strings, byte strings and array data from
/// the envelope and the unit's blobs.
///
/// `Value` is what [`decode`](super::decode) gives for a unit whose Rust type is unknown (or
/// that another language wrote), and it [`Serialize`]s back to the same envelope: byte strings
/// and arrays at or above the offload threshold go to blobs of their own again. Integers keep
/// their sign; their width is widened to 64 bits (128-bit values stay 128-bit), so a `u16`
/// written by Rust reads back as `Value::Uint(n)`. Arrays keep their dtype and shape
/// ([`RawArray`]). With this crate's decoder, offloaded leaves are borrowed straight from shared
/// memory; the docs/FORMAT.md section "Across languages" lists how Rust types, `Value` and Python
/// types correspond.
///
/// With other serde formats, a `Value` deserializes from whatever that format presents (arrays
/// appear as the 3-element sequence `(dtype code, shape, data)`).
///
/// # Examples
///
/// ```
/// use serde::Serialize;
/// use shm_arena::codec::{Array, Value};
/// use shm_arena::Region;
/// use std::time::Duration;
///
/// #[derive(Serialize)]
/// struct Frame<'a> {
///     seq: u32,
///     label: &'a str,
///     samples: Array<'a, f32>,
/// }
///
/// let region = Region::create(1 << 20)?;
/// let (mut writer, reader) = (region.writer()?, region.reader()?);
/// let samples = vec![0.5f32; 2048];
/// writer.send(&Frame { seq: 7, label: "mic-1", samples: Array::from_slice_1d(&samples) })?;
///
/// let unit = reader.next_unit(Duration::from_secs(1))?;
/// let value: Value = unit.decode()?;
/// assert_eq!(value.get("seq"), Some(&Value::Uint(7)));
/// assert_eq!(value.get("label").and_then(Value::as_str), Some("mic-1"));
/// let Some(Value::Array(array)) = value.get("samples") else { panic!("an array") };
/// assert_eq!((array.dtype().code(), array.shape()), (b'f', &[2048u64][..]));
/// assert!(array.is_borrowed(), "a view of shared memory");
/// # Ok::<(), shm_arena::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Value<'a> {
    /// `()`, a unit struct (tag UNIT).
    Unit,
    /// `Option::None` (tag NONE).
    None,
    /// `Option::Some` (tag SOME).
    Some(Box<Value<'a>>),
    /// A boolean.
    Bool(bool),
    /// A signed integer of at most 64 bits.
    Int(i64),
    /// An unsigned integer of at most 64 bits.
    Uint(u64),
    /// A signed 128-bit integer.
    Int128(i128),
    /// An unsigned 128-bit integer.
    Uint128(u128),
    /// A 32-bit float.
    F32(f32),
    /// A 64-bit float.
    F64(f64),
    /// A Unicode scalar value.
    Char(char),
    /// A string (also what a unit enum variant is).
    Str(Cow<'a, str>),
    /// A byte string (`serialize_bytes`: [`Bytes`](super::Bytes), `serde_bytes`).
    Bytes(Cow<'a, [u8]>),
    /// A sequence, tuple or tuple struct.
    Seq(Vec<Value<'a>>),
    /// A map or struct, entries in envelope order (keys need not be strings or unique).
    Map(Vec<(Value<'a>, Value<'a>)>),
    /// A typed n-dimensional array ([`Array`](super::Array) of any element type).
    Array(RawArray<'a>),
}

impl<'a> Value<'a> {
    /// The value of the first entry whose key is the string `key`, if this is a map.
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        match self {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A value that borrows nothing (copies borrowed strings, bytes and array data).
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::Unit => Value::Unit,
            Value::None => Value::None,
            Value::Some(v) => Value::Some(Box::new(v.into_owned())),
            Value::Bool(b) => Value::Bool(b),
            Value::Int(n) => Value::Int(n),
            Value::Uint(n) => Value::Uint(n),
            Value::Int128(n) => Value::Int128(n),
            Value::Uint128(n) => Value::Uint128(n),
            Value::F32(x) => Value::F32(x),
            Value::F64(x) => Value::F64(x),
            Value::Char(c) => Value::Char(c),
            Value::Str(s) => Value::Str(Cow::Owned(s.into_owned())),
            Value::Bytes(b) => Value::Bytes(Cow::Owned(b.into_owned())),
            Value::Seq(items) => Value::Seq(items.into_iter().map(Value::into_owned).collect()),
            Value::Map(entries) => Value::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.into_owned()),
        }
    }
}

/// An n-dimensional array of any [`Dtype`], its data as raw bytes (native byte order,
/// row-major): the dynamically typed counterpart of [`Array`](super::Array).
///
/// The data need not be aligned for its element type (the bytes are only ever handed on, e.g. to
/// NumPy, which copes); offloaded arrays are 64-byte aligned anyway.
///
/// # Examples
///
/// ```
/// use shm_arena::codec::{Dtype, RawArray};
///
/// let data = [0u8; 24];
/// let array = RawArray::new(Dtype::F64, vec![3], &data[..])?;
/// assert_eq!(array.len(), 3);
/// assert!(RawArray::new(Dtype::F64, vec![4], &data[..]).is_err(), "32 bytes needed");
/// # Ok::<(), shm_arena::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RawArray<'a> {
    dtype: Dtype,
    shape: Vec<u64>,
    data: Cow<'a, [u8]>,
}

impl<'a> RawArray<'a> {
    /// An array of `dtype` with `shape` over `data`.
    ///
    /// # Errors
    ///
    /// [`Error::Codec`] if `shape` has more than [`MAX_NDIM`] dimensions, or its element count
    /// times the element size overflows or differs from `data.len()`.
    pub fn new(dtype: Dtype, shape: Vec<u64>, data: impl Into<Cow<'a, [u8]>>) -> Result<Self> {
        let data = data.into();
        let needed =
            element_count(shape.iter().copied()).and_then(|n| n.checked_mul(dtype.size() as u64));
        if shape.len() > MAX_NDIM || needed != Some(data.len() as u64) {
            return Err(Error::Codec(format!(
                "array of {dtype} with shape {shape:?} does not match its {} data bytes \
                 (at most {MAX_NDIM} dimensions)",
                data.len()
            )));
        }
        Ok(RawArray { dtype, shape, data })
    }

    /// The element type.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// The extent of each dimension, outermost first (empty for a scalar).
    pub fn shape(&self) -> &[u64] {
        &self.shape
    }

    /// The data bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len() / self.dtype.size()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Whether the data is borrowed rather than owned.
    pub fn is_borrowed(&self) -> bool {
        matches!(self.data, Cow::Borrowed(_))
    }

    /// Copies borrowed data.
    pub fn into_owned(self) -> RawArray<'static> {
        RawArray {
            dtype: self.dtype,
            shape: self.shape,
            data: Cow::Owned(self.data.into_owned()),
        }
    }
}

impl Serialize for Value<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Unit => serializer.serialize_unit(),
            Value::None => serializer.serialize_none(),
            Value::Some(v) => serializer.serialize_some(v),
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::Int(n) => serializer.serialize_i64(*n),
            Value::Uint(n) => serializer.serialize_u64(*n),
            Value::Int128(n) => serializer.serialize_i128(*n),
            Value::Uint128(n) => serializer.serialize_u128(*n),
            Value::F32(x) => serializer.serialize_f32(*x),
            Value::F64(x) => serializer.serialize_f64(*x),
            Value::Char(c) => serializer.serialize_char(*c),
            Value::Str(s) => serializer.serialize_str(s),
            Value::Bytes(b) => serializer.serialize_bytes(b),
            Value::Seq(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Map(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
            Value::Array(array) => array.serialize(serializer),
        }
    }
}

impl Serialize for RawArray<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_newtype_struct(
            ARRAY_MAGIC,
            &Parts {
                dtype: self.dtype,
                shape: &self.shape,
                data: &self.data,
            },
        )
    }
}

/// Asks the deserializer for a value of any shape. This crate's decoder, seeing the magic name,
/// presents arrays as one-entry maps keyed by the array magic name (instead of the 3-element
/// sequence `deserialize_any` gives), so they stay arrays; other formats just see a newtype struct.
impl<'de: 'a, 'a> Deserialize<'de> for Value<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_newtype_struct(VALUE_MAGIC, ValueVisitor(std::marker::PhantomData))
    }
}

struct ValueVisitor<'a>(std::marker::PhantomData<&'a ()>);

/// Seeds for the elements inside a value, so nested values are read with the same visitor (a
/// nested `Value::deserialize` would wrap each level in the magic newtype again).
impl<'de: 'a, 'a> DeserializeSeed<'de> for ValueVisitor<'a> {
    type Value = Value<'a>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value<'a>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// Most elements reserved ahead from a size hint: the hint comes from untrusted input (this
/// crate's decoder bounds it by the bytes left, other formats may not).
const MAX_RESERVE: usize = 4096;

impl<'de: 'a, 'a> Visitor<'de> for ValueVisitor<'a> {
    type Value = Value<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Value<'a>, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_unit<E>(self) -> Result<Value<'a>, E> {
        Ok(Value::Unit)
    }

    fn visit_none<E>(self) -> Result<Value<'a>, E> {
        Ok(Value::None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value<'a>, D::Error> {
        Ok(Value::Some(Box::new(d.deserialize_any(self)?)))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value<'a>, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value<'a>, E> {
        Ok(Value::Int(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value<'a>, E> {
        Ok(Value::Uint(v))
    }

    fn visit_i128<E>(self, v: i128) -> Result<Value<'a>, E> {
        Ok(Value::Int128(v))
    }

    fn visit_u128<E>(self, v: u128) -> Result<Value<'a>, E> {
        Ok(Value::Uint128(v))
    }

    fn visit_f32<E>(self, v: f32) -> Result<Value<'a>, E> {
        Ok(Value::F32(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value<'a>, E> {
        Ok(Value::F64(v))
    }

    fn visit_char<E>(self, v: char) -> Result<Value<'a>, E> {
        Ok(Value::Char(v))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Value<'a>, E> {
        Ok(Value::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value<'a>, E> {
        Ok(Value::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Value<'a>, E> {
        Ok(Value::Str(Cow::Owned(v)))
    }

    fn visit_borrowed_bytes<E>(self, v: &'de [u8]) -> Result<Value<'a>, E> {
        Ok(Value::Bytes(Cow::Borrowed(v)))
    }

    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value<'a>, E> {
        Ok(Value::Bytes(Cow::Owned(v.to_vec())))
    }

    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Value<'a>, E> {
        Ok(Value::Bytes(Cow::Owned(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value<'a>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_RESERVE));
        while let Some(item) = seq.next_element_seed(ValueVisitor(std::marker::PhantomData))? {
            items.push(item);
        }
        Ok(Value::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value<'a>, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(MAX_RESERVE));
        while let Some(key) = map.next_key_seed(ValueVisitor(std::marker::PhantomData))? {
            if entries.is_empty() && key.as_str() == Some(ARRAY_MAGIC) {
                // This crate's decoder presents an array so (see `Deserialize for Value`).
                let array = map.next_value_seed(ArraySeed(std::marker::PhantomData))?;
                if map
                    .next_key_seed(ValueVisitor(std::marker::PhantomData))?
                    .is_some()
                {
                    return Err(de::Error::custom(
                        "an array record with more than one entry",
                    ));
                }
                return Ok(Value::Array(array));
            }
            let value = map.next_value_seed(ValueVisitor(std::marker::PhantomData))?;
            entries.push((key, value));
        }
        Ok(Value::Map(entries))
    }
}

/// Reads `(dtype code, shape, data)`, the parts of an array record.
struct ArraySeed<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> DeserializeSeed<'de> for ArraySeed<'a> {
    type Value = RawArray<'a>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawArray<'a>, D::Error> {
        d.deserialize_tuple(3, self)
    }
}

impl<'de: 'a, 'a> Visitor<'de> for ArraySeed<'a> {
    type Value = RawArray<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array record (dtype code, shape, data)")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawArray<'a>, A::Error> {
        let missing = || de::Error::custom("an array record with fewer than 3 parts");
        let code: u8 = seq.next_element()?.ok_or_else(missing)?;
        let shape: Vec<u64> = seq.next_element()?.ok_or_else(missing)?;
        let data: super::Bytes<'a> = seq.next_element()?.ok_or_else(missing)?;
        let dtype = Dtype::from_code(code)
            .ok_or_else(|| de::Error::custom(format!("unknown array dtype code {code:#04x}")))?;
        RawArray::new(dtype, shape, data.into_cow()).map_err(de::Error::custom)
    }
}

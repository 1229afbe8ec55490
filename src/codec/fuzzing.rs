//! Fuzzing entry points, always compiled so the same checks run as ordinary tests.
//!
//! Not part of the stable API.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use super::{decode, encode, Array, BlobSink, Bytes, EncodeOptions, HeapBlobs};

/// Any value the format can hold, as `deserialize_any` presents it; borrows strings and bytes.
///
/// Arrays appear as `Seq([UInt(dtype code), Seq(shape), Bytes(data)])`.
#[derive(Debug, Clone)]
pub enum Value<'a> {
    /// `()`.
    Unit,
    /// A boolean.
    Bool(bool),
    /// Any signed integer.
    Int(i128),
    /// Any unsigned integer.
    UInt(u128),
    /// An `f32`.
    F32(f32),
    /// An `f64`.
    F64(f64),
    /// A `char`.
    Char(char),
    /// A string.
    Str(Cow<'a, str>),
    /// A byte string.
    Bytes(Cow<'a, [u8]>),
    /// `None`.
    None,
    /// `Some`.
    Some(Box<Value<'a>>),
    /// A sequence.
    Seq(Vec<Value<'a>>),
    /// A map, in envelope order.
    Map(Vec<(Value<'a>, Value<'a>)>),
}

/// Structural equality, comparing floats by their bits (so NaN equals itself).
impl PartialEq for Value<'_> {
    fn eq(&self, other: &Self) -> bool {
        use Value::*;
        match (self, other) {
            (Unit, Unit) | (None, None) => true,
            (Bool(a), Bool(b)) => a == b,
            (Int(a), Int(b)) => a == b,
            (UInt(a), UInt(b)) => a == b,
            (F32(a), F32(b)) => a.to_bits() == b.to_bits(),
            (F64(a), F64(b)) => a.to_bits() == b.to_bits(),
            (Char(a), Char(b)) => a == b,
            (Str(a), Str(b)) => a == b,
            (Bytes(a), Bytes(b)) => a == b,
            (Some(a), Some(b)) => a == b,
            (Seq(a), Seq(b)) => a == b,
            (Map(a), Map(b)) => a == b,
            _ => false,
        }
    }
}

impl Serialize for Value<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Unit => s.serialize_unit(),
            Value::Bool(v) => s.serialize_bool(*v),
            Value::Int(v) => match i64::try_from(*v) {
                Ok(v) => s.serialize_i64(v),
                Err(_) => s.serialize_i128(*v),
            },
            Value::UInt(v) => match u64::try_from(*v) {
                Ok(v) => s.serialize_u64(v),
                Err(_) => s.serialize_u128(*v),
            },
            Value::F32(v) => s.serialize_f32(*v),
            Value::F64(v) => s.serialize_f64(*v),
            Value::Char(v) => s.serialize_char(*v),
            Value::Str(v) => s.serialize_str(v),
            Value::Bytes(v) => s.serialize_bytes(v),
            Value::None => s.serialize_none(),
            Value::Some(v) => s.serialize_some(v),
            Value::Seq(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Value<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

/// Pre-allocation bound for hints coming from the input.
const HINT_CAP: usize = 4096;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_unit<E>(self) -> Result<Value<'de>, E> {
        Ok(Value::Unit)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value<'de>, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value<'de>, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Value<'de>, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value<'de>, E> {
        Ok(Value::UInt(v.into()))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Value<'de>, E> {
        Ok(Value::UInt(v))
    }
    fn visit_f32<E>(self, v: f32) -> Result<Value<'de>, E> {
        Ok(Value::F32(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value<'de>, E> {
        Ok(Value::F64(v))
    }
    fn visit_char<E>(self, v: char) -> Result<Value<'de>, E> {
        Ok(Value::Char(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Value<'de>, E> {
        Ok(Value::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value<'de>, E> {
        Ok(Value::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_borrowed_bytes<E>(self, v: &'de [u8]) -> Result<Value<'de>, E> {
        Ok(Value::Bytes(Cow::Borrowed(v)))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value<'de>, E> {
        Ok(Value::Bytes(Cow::Owned(v.to_vec())))
    }
    fn visit_none<E>(self) -> Result<Value<'de>, E> {
        Ok(Value::None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value<'de>, D::Error> {
        Ok(Value::Some(Box::new(Value::deserialize(d)?)))
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Value<'de>, D::Error> {
        Value::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(HINT_CAP));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value<'de>, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(HINT_CAP));
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Value::Map(entries))
    }
}

/// A representative item: metadata, borrowed and owned strings, bytes, a map, an option, enums
/// of every variant kind and an array.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Sample<'a> {
    /// Owned string.
    pub name: String,
    /// Borrowed string.
    pub label: &'a str,
    /// Possibly offloaded bytes.
    #[serde(borrow)]
    pub payload: Bytes<'a>,
    /// A map.
    pub counts: HashMap<String, i64>,
    /// An option around a borrowing `Cow`.
    #[serde(borrow)]
    pub note: Option<Cow<'a, str>>,
    /// Enums.
    pub items: Vec<Variant>,
    /// A possibly offloaded array.
    #[serde(borrow)]
    pub samples: Array<'a, f32>,
}

/// One variant of each kind.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Variant {
    /// Unit variant.
    Empty,
    /// Newtype variant.
    Number(i64),
    /// Newtype variant with a string.
    Text(String),
    /// Tuple variant.
    Pair(u8, bool),
    /// Struct variant.
    Named {
        /// A number.
        id: u32,
        /// An optional char.
        tag: Option<char>,
    },
}

impl Sample<'_> {
    /// Field-wise equality, comparing the array by its bytes (so NaN equals itself).
    pub fn same_as(&self, other: &Sample<'_>) -> bool {
        self.name == other.name
            && self.label == other.label
            && self.payload == other.payload
            && self.counts == other.counts
            && self.note == other.note
            && self.items == other.items
            && self.samples.shape() == other.samples.shape()
            && self.samples.as_bytes() == other.samples.as_bytes()
    }
}

/// Splits fuzz input into fake blobs and an envelope, each in a 64-byte aligned buffer.
///
/// Layout: byte 0 = number of blobs (mod 8); per blob a little-endian `u16` length (cut short at
/// the end of the input) and that many bytes; the rest is the envelope.
pub fn split_input(data: &[u8]) -> (HeapBlobs, HeapBlobs) {
    let mut blobs = HeapBlobs::new();
    let (count, mut rest) = match data.split_first() {
        Some((&n, rest)) => (n % 8, rest),
        None => (0, data),
    };
    for _ in 0..count {
        let len = match rest {
            [a, b, tail @ ..] => {
                rest = tail;
                usize::from(u16::from_le_bytes([*a, *b]))
            }
            _ => 0,
        };
        let (blob, tail) = rest.split_at(len.min(rest.len()));
        rest = tail;
        put(&mut blobs, blob);
    }
    let mut envelope = HeapBlobs::new();
    put(&mut envelope, rest);
    (envelope, blobs)
}

fn put(store: &mut HeapBlobs, bytes: &[u8]) {
    // A fresh store holds at most 9 blobs, far below the u32 limit.
    if store.put_blob(bytes).is_err() {
        unreachable!("heap store full");
    }
}

/// Decodes arbitrary bytes as an envelope plus blobs (see [`split_input`]) into several types;
/// whatever decodes must encode again and decode to an equal value.
///
/// # Panics
///
/// Only if the codec is wrong: a decode that panics, or a round trip that fails or changes the
/// value.
pub fn decode_envelope(data: &[u8]) {
    let (envelope_store, blobs) = split_input(data);
    let envelope = envelope_store.get(0).unwrap_or_default();
    let source = &blobs;

    let _ = decode::<IgnoredAny>(envelope, &source);

    if let Ok(value) = decode::<Value>(envelope, &source) {
        let (envelope2, blobs2) = reencode(&value);
        let again: Value = decode(envelope2.get(0).unwrap_or_default(), &&blobs2)
            .unwrap_or_else(|e| panic!("re-encoded value does not decode: {e}"));
        assert_eq!(value, again, "value changed in a round trip");
    }

    // The public dynamic value keeps arrays as arrays: once normalized by a first re-encoding
    // (integers widen to 64 bits), encoding what it decodes gives the same bytes again.
    if let Ok(value) = decode::<super::Value>(envelope, &source) {
        let (envelope2, blobs2) = reencode(&value);
        let again: super::Value = decode(envelope2.get(0).unwrap_or_default(), &&blobs2)
            .unwrap_or_else(|e| panic!("re-encoded Value does not decode: {e}"));
        let (envelope3, blobs3) = reencode(&again);
        assert_eq!(
            envelope2.get(0),
            envelope3.get(0),
            "Value changed in a round trip"
        );
        assert_eq!(
            blobs2.len(),
            blobs3.len(),
            "Value changed its leaves in a round trip"
        );
        for i in 0..blobs2.len() as u32 {
            assert_eq!(
                blobs2.get(i),
                blobs3.get(i),
                "leaf {i} changed in a round trip"
            );
        }
    }

    if let Ok(sample) = decode::<Sample>(envelope, &source) {
        let (envelope2, blobs2) = reencode(&sample);
        let again: Sample = decode(envelope2.get(0).unwrap_or_default(), &&blobs2)
            .unwrap_or_else(|e| panic!("re-encoded sample does not decode: {e}"));
        assert!(sample.same_as(&again), "sample changed in a round trip");
    }
}

/// Encodes `value` into an aligned envelope store and a blob store.
fn reencode<T: Serialize>(value: &T) -> (HeapBlobs, HeapBlobs) {
    let mut envelope = Vec::new();
    let mut blobs = HeapBlobs::new();
    encode(value, &EncodeOptions::default(), &mut envelope, &mut blobs)
        .unwrap_or_else(|e| panic!("a decoded value does not encode again: {e}"));
    let mut store = HeapBlobs::new();
    put(&mut store, &envelope);
    (store, blobs)
}

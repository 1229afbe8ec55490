//! The decoder: a serde `Deserializer` over an untrusted envelope, borrowing from it and from the
//! unit's blobs.
//!
//! Every read is bounds-checked against the envelope; every length is checked against the bytes
//! that remain before anything is sliced or allocated; nesting is bounded by [`MAX_DEPTH`].

use std::collections::HashSet;

use serde::de::value::{
    BorrowedBytesDeserializer, BorrowedStrDeserializer, SeqAccessDeserializer, SeqDeserializer,
    U8Deserializer,
};
use serde::de::{self, DeserializeSeed, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};

use super::array::{element_count, Dtype};
use super::format::{padding, tag, unzigzag, ARRAY_MAGIC, MAX_DEPTH, MAX_NDIM, VALUE_MAGIC};
use super::BlobSource;
use crate::{Error, Result};

/// The prefix of every message the decoder writes itself; errors raised by visitors get it added
/// by [`Decoder::locate`].
const LOCATED: &str = "envelope offset ";

pub(crate) struct Decoder<'de, 'b> {
    input: &'de [u8],
    pos: usize,
    blobs: &'b dyn BlobSource<'de>,
    depth: usize,
    /// Blobs already referenced: each blob holds exactly one leaf, so a second marker for the
    /// same blob means the envelope is corrupt.
    used_blobs: HashSet<u32>,
    /// Offset of the last tag read, where errors raised by visitors are reported.
    token: usize,
    /// Inside a [`Value`](super::Value): arrays are presented as `{ARRAY_MAGIC: parts}`.
    tagged_arrays: bool,
}

fn located(at: usize, msg: impl std::fmt::Display) -> Error {
    Error::Codec(format!("{LOCATED}{at}: {msg}"))
}

impl<'de, 'b> Decoder<'de, 'b> {
    /// A decoder positioned after the version byte, which the caller checked.
    pub(crate) fn new(input: &'de [u8], blobs: &'b dyn BlobSource<'de>) -> Self {
        Decoder {
            input,
            pos: 1,
            blobs,
            depth: 0,
            used_blobs: HashSet::new(),
            token: 0,
            tagged_arrays: false,
        }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// Adds the position to errors that visitors raised (wrong type, missing field, ...).
    pub(crate) fn locate(&self, error: Error) -> Error {
        match error {
            Error::Codec(msg) if !msg.starts_with(LOCATED) => located(self.token, msg),
            other => other,
        }
    }

    fn remaining(&self) -> usize {
        self.input.len() - self.pos
    }

    fn byte(&mut self) -> Result<u8> {
        let b = *self
            .input
            .get(self.pos)
            .ok_or_else(|| located(self.pos, "unexpected end of envelope"))?;
        self.pos += 1;
        Ok(b)
    }

    fn peek(&self) -> Result<u8> {
        self.input
            .get(self.pos)
            .copied()
            .ok_or_else(|| located(self.pos, "unexpected end of envelope"))
    }

    fn take(&mut self, len: u64, what: &str) -> Result<&'de [u8]> {
        if len > self.remaining() as u64 {
            return Err(located(
                self.pos,
                format!(
                    "{what} of {len} bytes runs past the end of the envelope ({} bytes left)",
                    self.remaining()
                ),
            ));
        }
        let bytes = &self.input[self.pos..self.pos + len as usize];
        self.pos += len as usize;
        Ok(bytes)
    }

    /// An unsigned LEB128 varint of at most `bits` bits, in its shortest form.
    fn varint(&mut self, bits: u32) -> Result<u128> {
        let start = self.pos;
        let mut value = 0u128;
        let mut shift = 0u32;
        loop {
            let byte = self.byte()?;
            let group = u128::from(byte & 0x7f);
            let room = bits - shift;
            if room < 7 && group >> room != 0 {
                return Err(located(start, format!("varint overflows {bits} bits")));
            }
            value |= group << shift;
            if byte & 0x80 == 0 {
                if byte == 0 && shift > 0 {
                    return Err(located(start, "varint is not in its shortest form"));
                }
                return Ok(value);
            }
            shift += 7;
            if shift >= bits {
                return Err(located(start, format!("varint overflows {bits} bits")));
            }
        }
    }

    fn varint64(&mut self) -> Result<u64> {
        Ok(self.varint(64)? as u64)
    }

    /// A count of items each at least `min_item_bytes` long: checked against the remaining input,
    /// so no size hint or allocation can exceed what the envelope justifies.
    fn count(&mut self, min_item_bytes: u64, what: &str) -> Result<usize> {
        let at = self.pos;
        let n = self.varint64()?;
        match n.checked_mul(min_item_bytes) {
            Some(bytes) if bytes <= self.remaining() as u64 => Ok(n as usize),
            _ => Err(located(
                at,
                format!(
                    "{what} claims {n} entries but only {} bytes are left",
                    self.remaining()
                ),
            )),
        }
    }

    fn enter(&mut self, at: usize, levels: usize) -> Result<()> {
        self.depth += levels;
        if self.depth > MAX_DEPTH {
            return Err(located(
                at,
                format!("value nests deeper than the limit of {MAX_DEPTH} levels"),
            ));
        }
        Ok(())
    }

    fn leave(&mut self, levels: usize) {
        debug_assert!(self.depth >= levels);
        self.depth -= levels;
    }

    /// The first `len` bytes of blob `index`, checked against what the unit really holds.
    fn blob(&mut self, at: usize, index: u64, len: u64) -> Result<&'de [u8]> {
        let index = u32::try_from(index)
            .map_err(|_| located(at, format!("blob index {index} is out of range")))?;
        if !self.used_blobs.insert(index) {
            return Err(located(
                at,
                format!("blob {index} is referenced by a second marker"),
            ));
        }
        let blob = self
            .blobs
            .blob(index)
            .map_err(|e| located(at, format!("marker refers to blob {index}: {e}")))?;
        if !blob.is_empty() && blob.as_ptr() as usize % 64 != 0 {
            return Err(located(at, format!("blob {index} is not 64-byte aligned")));
        }
        if len > blob.len() as u64 {
            return Err(located(
                at,
                format!(
                    "marker length {len} exceeds the {} bytes of blob {index}",
                    blob.len()
                ),
            ));
        }
        Ok(&blob[..len as usize])
    }

    /// An array record after its tag: dtype code, shape and data bytes (validated).
    fn array(&mut self, at: usize, offloaded: bool) -> Result<(u8, Vec<u64>, &'de [u8])> {
        let code = self.byte()?;
        let dtype = Dtype::from_code(code)
            .ok_or_else(|| located(at + 1, format!("unknown array dtype code {code:#04x}")))?;
        let ndim_at = self.pos;
        let ndim = self.varint64()?;
        if ndim > MAX_NDIM as u64 {
            return Err(located(
                ndim_at,
                format!("array has {ndim} dimensions, more than the limit of {MAX_NDIM}"),
            ));
        }
        let mut shape = Vec::with_capacity(ndim as usize);
        for _ in 0..ndim {
            shape.push(self.varint64()?);
        }
        let needed = element_count(shape.iter().copied())
            .and_then(|n| n.checked_mul(dtype.size() as u64))
            .ok_or_else(|| {
                located(
                    ndim_at,
                    format!("array of {dtype} with shape {shape:?} has more than 2^64 bytes"),
                )
            })?;
        let marker_at = self.pos;
        let index = if offloaded {
            Some(self.varint64()?)
        } else {
            None
        };
        let len = self.varint64()?;
        if len != needed {
            return Err(located(
                marker_at,
                format!(
                    "array of {dtype} with shape {shape:?} needs {needed} bytes but the record says {len}"
                ),
            ));
        }
        let data = match index {
            Some(index) => self.blob(marker_at, index, len)?,
            None => {
                let pad = padding(self.pos, dtype.size());
                let pad_at = self.pos;
                if self
                    .take(pad as u64, "array padding")?
                    .iter()
                    .any(|&b| b != 0)
                {
                    return Err(located(pad_at, "array padding is not zero"));
                }
                self.take(len, "array data")?
            }
        };
        Ok((code, shape, data))
    }

    fn str(&mut self) -> Result<&'de str> {
        let len = self.varint64()?;
        let data_at = self.pos;
        let bytes = self.take(len, "string")?;
        std::str::from_utf8(bytes)
            .map_err(|e| located(data_at + e.valid_up_to(), "string is not valid UTF-8"))
    }

    fn unexpected(&self, at: usize, found: u8, expected: &str) -> Error {
        located(at, format!("expected {expected}, found tag {found:#04x}"))
    }
}

impl<'de> de::Deserializer<'de> for &mut Decoder<'de, '_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let at = self.pos;
        let t = self.byte()?;
        self.token = at;
        match t {
            tag::UNIT => visitor.visit_unit(),
            tag::FALSE => visitor.visit_bool(false),
            tag::TRUE => visitor.visit_bool(true),
            tag::NONE => visitor.visit_none(),
            tag::SOME => {
                self.enter(at, 1)?;
                let value = visitor.visit_some(&mut *self)?;
                self.leave(1);
                Ok(value)
            }
            tag::U8 => visitor.visit_u8(self.byte()?),
            tag::U16 => visitor.visit_u16(self.varint(16)? as u16),
            tag::U32 => visitor.visit_u32(self.varint(32)? as u32),
            tag::U64 => visitor.visit_u64(self.varint(64)? as u64),
            tag::U128 => visitor.visit_u128(self.varint(128)?),
            tag::I8 => visitor.visit_i8(self.byte()? as i8),
            tag::I16 => visitor.visit_i16(unzigzag(self.varint(16)?) as i16),
            tag::I32 => visitor.visit_i32(unzigzag(self.varint(32)?) as i32),
            tag::I64 => visitor.visit_i64(unzigzag(self.varint(64)?) as i64),
            tag::I128 => visitor.visit_i128(unzigzag(self.varint(128)?)),
            tag::F32 => {
                let b = self.take(4, "f32")?;
                visitor.visit_f32(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            tag::F64 => {
                let b = self.take(8, "f64")?;
                let mut le = [0u8; 8];
                le.copy_from_slice(b);
                visitor.visit_f64(f64::from_le_bytes(le))
            }
            tag::CHAR => {
                let v = self.varint(32)? as u32;
                let c = char::from_u32(v)
                    .ok_or_else(|| located(at, format!("{v:#x} is not a Unicode scalar value")))?;
                visitor.visit_char(c)
            }
            tag::STR => visitor.visit_borrowed_str(self.str()?),
            tag::BYTES => {
                let len = self.varint64()?;
                visitor.visit_borrowed_bytes(self.take(len, "byte string")?)
            }
            tag::BYTES_BLOB => {
                let index = self.varint64()?;
                let len = self.varint64()?;
                visitor.visit_borrowed_bytes(self.blob(at, index, len)?)
            }
            tag::SEQ | tag::SEQ_OPEN => {
                // Every element takes at least its tag byte.
                let left = if t == tag::SEQ {
                    Some(self.count(1, "sequence")?)
                } else {
                    None
                };
                self.enter(at, 1)?;
                let mut access = Entries::new(self, left);
                let value = visitor.visit_seq(&mut access)?;
                access.finish(at, "sequence")?;
                self.leave(1);
                Ok(value)
            }
            tag::MAP | tag::MAP_OPEN => {
                // Every entry takes at least a key tag and a value tag.
                let left = if t == tag::MAP {
                    Some(self.count(2, "map")?)
                } else {
                    None
                };
                self.enter(at, 1)?;
                let mut access = Entries::new(self, left);
                let value = visitor.visit_map(&mut access)?;
                access.finish(at, "map")?;
                self.leave(1);
                Ok(value)
            }
            tag::ARRAY | tag::ARRAY_BLOB => {
                let (code, shape, data) = self.array(at, t == tag::ARRAY_BLOB)?;
                // Two levels: the array is presented as a sequence holding the shape sequence.
                self.enter(at, 2)?;
                let mut access = ArrayParts {
                    code,
                    shape,
                    data,
                    next: 0,
                };
                let value = if self.tagged_arrays {
                    let mut entry = ArrayEntry {
                        parts: &mut access,
                        key_taken: false,
                    };
                    visitor.visit_map(&mut entry)?
                } else {
                    visitor.visit_seq(&mut access)?
                };
                if access.next != 3 {
                    return Err(located(at, "array record was not read to its end"));
                }
                self.leave(2);
                Ok(value)
            }
            tag::END => Err(located(at, "END tag outside an open sequence or map")),
            other => Err(located(at, format!("unknown tag {other:#04x}"))),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let at = self.pos;
        match self.peek()? {
            tag::NONE => {
                self.pos += 1;
                self.token = at;
                visitor.visit_none()
            }
            tag::SOME => self.deserialize_any(visitor),
            // A bare value where an option is expected is `Some`: languages without an option
            // type (Python's `None` or a value) write it so. Counted as SOME would be.
            _ => {
                self.enter(at, 1)?;
                let value = visitor.visit_some(&mut *self)?;
                self.leave(1);
                Ok(value)
            }
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        if name == ARRAY_MAGIC {
            return self.deserialize_any(visitor);
        }
        if name == VALUE_MAGIC {
            // Not a level of its own: it has no bytes and cannot recurse by itself.
            let outer = std::mem::replace(&mut self.tagged_arrays, true);
            let value = visitor.visit_newtype_struct(&mut *self);
            self.tagged_arrays = outer;
            return value;
        }
        // Transparent in the envelope, but counted, as the encoder counts it.
        let at = self.pos;
        self.enter(at, 1)?;
        let value = visitor.visit_newtype_struct(&mut *self)?;
        self.leave(1);
        Ok(value)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        let at = self.pos;
        match self.peek()? {
            // A unit variant is its name.
            tag::STR => visitor.visit_enum(Variant {
                de: self,
                payload: false,
            }),
            // Any other variant is a one-entry map from its name to its payload.
            tag::MAP => {
                self.pos += 1;
                self.token = at;
                let n = self.varint64()?;
                if n != 1 {
                    return Err(located(
                        at,
                        format!("an enum is a one-entry map, this map has {n} entries"),
                    ));
                }
                self.enter(at, 1)?;
                let value = visitor.visit_enum(Variant {
                    de: &mut *self,
                    payload: true,
                })?;
                self.leave(1);
                Ok(value)
            }
            other => Err(self.unexpected(at, other, "an enum (a string or a one-entry map)")),
        }
    }

    fn is_human_readable(&self) -> bool {
        false
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

/// Elements of a sequence, or entries of a map, counted (`left`) or END-terminated.
struct Entries<'a, 'de, 'b> {
    de: &'a mut Decoder<'de, 'b>,
    left: Option<usize>,
    ended: bool,
}

impl<'a, 'de, 'b> Entries<'a, 'de, 'b> {
    fn new(de: &'a mut Decoder<'de, 'b>, left: Option<usize>) -> Self {
        Entries {
            de,
            left,
            ended: false,
        }
    }

    /// Whether another entry follows; consumes the END tag of an open container.
    fn has_next(&mut self) -> Result<bool> {
        match &mut self.left {
            Some(0) => Ok(false),
            Some(n) => {
                *n -= 1;
                Ok(true)
            }
            None if self.ended => Ok(false),
            None => {
                if self.de.peek()? == tag::END {
                    self.de.pos += 1;
                    self.ended = true;
                    Ok(false)
                } else {
                    Ok(true)
                }
            }
        }
    }

    /// Checks that the visitor read every entry: leftovers would be misread as what follows.
    fn finish(mut self, at: usize, what: &str) -> Result<()> {
        if self.has_next()? {
            return Err(located(
                at,
                format!("{what} has more entries than the type being decoded takes"),
            ));
        }
        Ok(())
    }
}

impl<'de> SeqAccess<'de> for Entries<'_, 'de, '_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if !self.has_next()? {
            return Ok(None);
        }
        seed.deserialize(&mut *self.de).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        self.left
    }
}

impl<'de> MapAccess<'de> for Entries<'_, 'de, '_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if !self.has_next()? {
            return Ok(None);
        }
        seed.deserialize(&mut *self.de).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        seed.deserialize(&mut *self.de)
    }

    fn size_hint(&self) -> Option<usize> {
        self.left
    }
}

/// An array record presented to visitors as `(dtype code, shape, data bytes)`.
struct ArrayParts<'de> {
    code: u8,
    shape: Vec<u64>,
    data: &'de [u8],
    next: usize,
}

impl<'de> SeqAccess<'de> for ArrayParts<'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        let value = match self.next {
            0 => seed.deserialize(U8Deserializer::<Error>::new(self.code))?,
            1 => seed.deserialize(SeqDeserializer::<_, Error>::new(self.shape.iter().copied()))?,
            2 => seed.deserialize(BorrowedBytesDeserializer::<Error>::new(self.data))?,
            _ => return Ok(None),
        };
        self.next += 1;
        Ok(Some(value))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(3 - self.next.min(3))
    }
}

/// An array record presented as the one-entry map `{ARRAY_MAGIC: (dtype code, shape, data)}`,
/// inside a [`Value`](super::Value).
struct ArrayEntry<'p, 'de> {
    parts: &'p mut ArrayParts<'de>,
    key_taken: bool,
}

impl<'de> MapAccess<'de> for ArrayEntry<'_, 'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if self.key_taken {
            return Ok(None);
        }
        self.key_taken = true;
        seed.deserialize(BorrowedStrDeserializer::<Error>::new(ARRAY_MAGIC))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        seed.deserialize(SeqAccessDeserializer::new(&mut *self.parts))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(usize::from(!self.key_taken))
    }
}

/// The variant of an enum: its name, then (if `payload`) the payload.
struct Variant<'a, 'de, 'b> {
    de: &'a mut Decoder<'de, 'b>,
    payload: bool,
}

impl<'a, 'de, 'b> EnumAccess<'de> for Variant<'a, 'de, 'b> {
    type Error = Error;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self)> {
        let name = seed.deserialize(&mut *self.de)?;
        Ok((name, self))
    }
}

impl<'de> VariantAccess<'de> for Variant<'_, 'de, '_> {
    type Error = Error;

    fn unit_variant(self) -> Result<()> {
        if self.payload {
            // `{name: ()}` is accepted for a unit variant, like serde_json accepts `{"A": null}`.
            let at = self.de.pos;
            match self.de.byte()? {
                tag::UNIT => Ok(()),
                other => Err(self
                    .de
                    .unexpected(at, other, "the unit payload of a unit variant")),
            }
        } else {
            Ok(())
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        if !self.payload {
            return Err(de::Error::invalid_type(
                de::Unexpected::UnitVariant,
                &"newtype variant",
            ));
        }
        seed.deserialize(&mut *self.de)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value> {
        if !self.payload {
            return Err(de::Error::invalid_type(
                de::Unexpected::UnitVariant,
                &"tuple variant",
            ));
        }
        de::Deserializer::deserialize_any(&mut *self.de, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        if !self.payload {
            return Err(de::Error::invalid_type(
                de::Unexpected::UnitVariant,
                &"struct variant",
            ));
        }
        de::Deserializer::deserialize_any(&mut *self.de, visitor)
    }
}

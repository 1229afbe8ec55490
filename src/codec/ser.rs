//! The encoder: a serde `Serializer` writing the envelope and sending large leaves to a sink.

use serde::ser::{self, Impossible, Serialize};

use super::array::{element_count, Dtype};
use super::format::{
    padding, put_varint, put_varint128, tag, zigzag, ARRAY_MAGIC, MAX_DEPTH, MAX_NDIM,
};
use super::BlobSink;
use crate::{Error, Result};

pub(crate) struct Encoder<'s> {
    out: &'s mut Vec<u8>,
    /// Where this envelope starts in `out`: inline array data is aligned relative to it.
    base: usize,
    sink: &'s mut dyn BlobSink,
    threshold: usize,
    depth: usize,
}

impl<'s> Encoder<'s> {
    pub(crate) fn new(
        out: &'s mut Vec<u8>,
        base: usize,
        sink: &'s mut dyn BlobSink,
        threshold: usize,
    ) -> Self {
        Encoder {
            out,
            base,
            sink,
            threshold,
            depth: 0,
        }
    }

    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Error::Codec(format!(
                "value nests deeper than the limit of {MAX_DEPTH} levels"
            )));
        }
        Ok(())
    }

    fn leave(&mut self, levels: usize) {
        debug_assert!(self.depth >= levels);
        self.depth -= levels;
    }

    fn varint(&mut self, value: u64) {
        put_varint(self.out, value);
    }

    fn str(&mut self, s: &str) {
        self.out.push(tag::STR);
        self.varint(s.len() as u64);
        self.out.extend_from_slice(s.as_bytes());
    }

    fn bytes(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.len() >= self.threshold {
            let index = self.sink.put_blob(bytes)?;
            self.out.push(tag::BYTES_BLOB);
            self.varint(u64::from(index));
            self.varint(bytes.len() as u64);
        } else {
            self.out.push(tag::BYTES);
            self.varint(bytes.len() as u64);
            self.out.extend_from_slice(bytes);
        }
        Ok(())
    }

    fn array(&mut self, code: u8, shape: &[u64], data: &[u8]) -> Result<()> {
        let dtype = Dtype::from_code(code)
            .ok_or_else(|| Error::Codec(format!("unknown array dtype code {code:#04x}")))?;
        // Arrays are built by `Array`, which checked this already; a hand-made value using the
        // magic name must not produce an envelope the decoder rejects.
        let needed =
            element_count(shape.iter().copied()).and_then(|n| n.checked_mul(dtype.size() as u64));
        if shape.len() > MAX_NDIM || needed != Some(data.len() as u64) {
            return Err(Error::Codec(format!(
                "array of {dtype} with shape {shape:?} does not match its {} data bytes",
                data.len()
            )));
        }
        let offload = data.len() >= self.threshold;
        self.out
            .push(if offload { tag::ARRAY_BLOB } else { tag::ARRAY });
        self.out.push(code);
        self.varint(shape.len() as u64);
        for &dim in shape {
            self.varint(dim);
        }
        if offload {
            let index = self.sink.put_blob(data)?;
            self.varint(u64::from(index));
            self.varint(data.len() as u64);
        } else {
            self.varint(data.len() as u64);
            let pad = padding(self.out.len() - self.base, dtype.size());
            self.out.resize(self.out.len() + pad, 0);
            self.out.extend_from_slice(data);
        }
        Ok(())
    }

    fn compound(&mut self, open: u8, counted: u8, len: Option<usize>) -> Result<Compound<'_, 's>> {
        self.enter()?;
        match len {
            Some(n) => {
                self.out.push(counted);
                self.varint(n as u64);
            }
            // Unknown length (iterators, `#[serde(flatten)]`): an END-terminated container, so
            // nothing written so far has to move (moving would break inline array alignment).
            None => self.out.push(open),
        }
        Ok(Compound {
            enc: self,
            expected: len,
            count: 0,
            levels: 1,
        })
    }

    /// `{variant: payload}`, the externally tagged form, opened up to the payload's tag.
    fn variant(&mut self, variant: &'static str) -> Result<()> {
        self.enter()?;
        self.out.push(tag::MAP);
        self.varint(1);
        self.str(variant);
        Ok(())
    }
}

pub(crate) struct Compound<'a, 's> {
    enc: &'a mut Encoder<'s>,
    expected: Option<usize>,
    count: usize,
    /// Nesting levels this compound opened (2 for a tuple or struct variant).
    levels: usize,
}

impl Compound<'_, '_> {
    fn finish(self) -> Result<()> {
        match self.expected {
            Some(n) if n != self.count => {
                return Err(Error::Codec(format!(
                    "a Serialize impl announced {n} entries but produced {}",
                    self.count
                )))
            }
            Some(_) => {}
            None => self.enc.out.push(tag::END),
        }
        self.enc.leave(self.levels);
        Ok(())
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.count += 1;
        value.serialize(&mut *self.enc)
    }

    fn field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<()> {
        self.count += 1;
        self.enc.str(key);
        value.serialize(&mut *self.enc)
    }
}

impl<'a, 's> ser::Serializer for &'a mut Encoder<'s> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Compound<'a, 's>;
    type SerializeTuple = Compound<'a, 's>;
    type SerializeTupleStruct = Compound<'a, 's>;
    type SerializeTupleVariant = Compound<'a, 's>;
    type SerializeMap = Compound<'a, 's>;
    type SerializeStruct = Compound<'a, 's>;
    type SerializeStructVariant = Compound<'a, 's>;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn serialize_bool(self, v: bool) -> Result<()> {
        self.out.push(if v { tag::TRUE } else { tag::FALSE });
        Ok(())
    }

    fn serialize_i8(self, v: i8) -> Result<()> {
        self.out.extend_from_slice(&[tag::I8, v as u8]);
        Ok(())
    }

    fn serialize_i16(self, v: i16) -> Result<()> {
        self.out.push(tag::I16);
        self.varint(zigzag(v.into()) as u64);
        Ok(())
    }

    fn serialize_i32(self, v: i32) -> Result<()> {
        self.out.push(tag::I32);
        self.varint(zigzag(v.into()) as u64);
        Ok(())
    }

    fn serialize_i64(self, v: i64) -> Result<()> {
        self.out.push(tag::I64);
        self.varint(zigzag(v.into()) as u64);
        Ok(())
    }

    fn serialize_i128(self, v: i128) -> Result<()> {
        self.out.push(tag::I128);
        put_varint128(self.out, zigzag(v));
        Ok(())
    }

    fn serialize_u8(self, v: u8) -> Result<()> {
        self.out.extend_from_slice(&[tag::U8, v]);
        Ok(())
    }

    fn serialize_u16(self, v: u16) -> Result<()> {
        self.out.push(tag::U16);
        self.varint(v.into());
        Ok(())
    }

    fn serialize_u32(self, v: u32) -> Result<()> {
        self.out.push(tag::U32);
        self.varint(v.into());
        Ok(())
    }

    fn serialize_u64(self, v: u64) -> Result<()> {
        self.out.push(tag::U64);
        self.varint(v);
        Ok(())
    }

    fn serialize_u128(self, v: u128) -> Result<()> {
        self.out.push(tag::U128);
        put_varint128(self.out, v);
        Ok(())
    }

    fn serialize_f32(self, v: f32) -> Result<()> {
        self.out.push(tag::F32);
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }

    fn serialize_f64(self, v: f64) -> Result<()> {
        self.out.push(tag::F64);
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }

    fn serialize_char(self, v: char) -> Result<()> {
        self.out.push(tag::CHAR);
        self.varint(u32::from(v).into());
        Ok(())
    }

    fn serialize_str(self, v: &str) -> Result<()> {
        self.str(v);
        Ok(())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<()> {
        self.bytes(v)
    }

    fn serialize_none(self) -> Result<()> {
        self.out.push(tag::NONE);
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<()> {
        self.enter()?;
        self.out.push(tag::SOME);
        value.serialize(&mut *self)?;
        self.leave(1);
        Ok(())
    }

    fn serialize_unit(self) -> Result<()> {
        self.out.push(tag::UNIT);
        Ok(())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<()> {
        self.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<()> {
        self.str(variant);
        Ok(())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<()> {
        // Newtypes are transparent in the envelope but still count as a level, as on decode, so
        // recursion through newtypes is bounded too. An array counts two levels: the decoder
        // presents it as a sequence holding the shape sequence.
        let levels = if name == ARRAY_MAGIC { 2 } else { 1 };
        for _ in 0..levels {
            self.enter()?;
        }
        if name == ARRAY_MAGIC {
            value.serialize(Capture {
                enc: self,
                part: Part::Tuple,
            })?;
        } else {
            value.serialize(&mut *self)?;
        }
        self.leave(levels);
        Ok(())
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<()> {
        self.variant(variant)?;
        value.serialize(&mut *self)?;
        self.leave(1);
        Ok(())
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Compound<'a, 's>> {
        self.compound(tag::SEQ_OPEN, tag::SEQ, len)
    }

    fn serialize_tuple(self, len: usize) -> Result<Compound<'a, 's>> {
        self.compound(tag::SEQ_OPEN, tag::SEQ, Some(len))
    }

    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<Compound<'a, 's>> {
        self.compound(tag::SEQ_OPEN, tag::SEQ, Some(len))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Compound<'a, 's>> {
        self.variant(variant)?;
        let mut compound = self.compound(tag::SEQ_OPEN, tag::SEQ, Some(len))?;
        compound.levels = 2;
        Ok(compound)
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Compound<'a, 's>> {
        self.compound(tag::MAP_OPEN, tag::MAP, len)
    }

    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<Compound<'a, 's>> {
        self.compound(tag::MAP_OPEN, tag::MAP, Some(len))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Compound<'a, 's>> {
        self.variant(variant)?;
        let mut compound = self.compound(tag::MAP_OPEN, tag::MAP, Some(len))?;
        compound.levels = 2;
        Ok(compound)
    }
}

impl ser::SerializeSeq for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.element(value)
    }

    fn end(self) -> Result<()> {
        self.finish()
    }
}

impl ser::SerializeTuple for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.element(value)
    }

    fn end(self) -> Result<()> {
        self.finish()
    }
}

impl ser::SerializeTupleStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.element(value)
    }

    fn end(self) -> Result<()> {
        self.finish()
    }
}

impl ser::SerializeTupleVariant for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.element(value)
    }

    fn end(self) -> Result<()> {
        self.finish()
    }
}

impl ser::SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<()> {
        key.serialize(&mut *self.enc)
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        // Entries are counted as pairs, at the value.
        self.element(value)
    }

    fn end(self) -> Result<()> {
        self.finish()
    }
}

impl ser::SerializeStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<()> {
        self.field(key, value)
    }

    fn end(self) -> Result<()> {
        self.finish()
    }
}

impl ser::SerializeStructVariant for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<()> {
        self.field(key, value)
    }

    fn end(self) -> Result<()> {
        self.finish()
    }
}

/// Which piece of an array's `(dtype, shape, data)` tuple the capture serializer expects.
enum Part {
    Tuple,
    Dtype,
    Shape,
    Dim,
    Data { code: u8, shape: Vec<u64> },
}

/// What a capture produced.
enum Captured {
    Nothing,
    Dtype(u8),
    Dim(u64),
    Shape(Vec<u64>),
}

/// Takes an array apart as `Array`'s `Serialize` hands it over, then writes one array record.
struct Capture<'a, 's> {
    enc: &'a mut Encoder<'s>,
    part: Part,
}

fn not_an_array() -> Error {
    Error::Codec(format!(
        "the newtype struct name {ARRAY_MAGIC:?} is reserved for shm_arena::codec::Array"
    ))
}

macro_rules! reject {
    ($($method:ident($($ty:ty),*);)*) => {$(
        fn $method(self, $(_: $ty),*) -> Result<Captured> {
            Err(not_an_array())
        }
    )*};
}

impl<'a, 's> ser::Serializer for Capture<'a, 's> {
    type Ok = Captured;
    type Error = Error;
    type SerializeSeq = ShapeSeq<'a, 's>;
    type SerializeTuple = ArrayTuple<'a, 's>;
    type SerializeTupleStruct = Impossible<Captured, Error>;
    type SerializeTupleVariant = Impossible<Captured, Error>;
    type SerializeMap = Impossible<Captured, Error>;
    type SerializeStruct = Impossible<Captured, Error>;
    type SerializeStructVariant = Impossible<Captured, Error>;

    fn is_human_readable(&self) -> bool {
        false
    }

    reject! {
        serialize_bool(bool);
        serialize_i8(i8);
        serialize_i16(i16);
        serialize_i32(i32);
        serialize_i64(i64);
        serialize_i128(i128);
        serialize_u16(u16);
        serialize_u32(u32);
        serialize_u128(u128);
        serialize_f32(f32);
        serialize_f64(f64);
        serialize_char(char);
        serialize_str(&str);
        serialize_none();
        serialize_unit();
        serialize_unit_struct(&'static str);
        serialize_unit_variant(&'static str, u32, &'static str);
    }

    fn serialize_u8(self, v: u8) -> Result<Captured> {
        match self.part {
            Part::Dtype => Ok(Captured::Dtype(v)),
            _ => Err(not_an_array()),
        }
    }

    fn serialize_u64(self, v: u64) -> Result<Captured> {
        match self.part {
            Part::Dim => Ok(Captured::Dim(v)),
            _ => Err(not_an_array()),
        }
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<Captured> {
        match self.part {
            Part::Data { code, shape } => {
                self.enc.array(code, &shape, v)?;
                Ok(Captured::Nothing)
            }
            _ => Err(not_an_array()),
        }
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<ShapeSeq<'a, 's>> {
        match self.part {
            Part::Shape => Ok(ShapeSeq {
                enc: self.enc,
                // The shape comes from our own `Array`, but cap the hint all the same.
                shape: Vec::with_capacity(len.unwrap_or(0).min(MAX_NDIM)),
            }),
            _ => Err(not_an_array()),
        }
    }

    fn serialize_tuple(self, len: usize) -> Result<ArrayTuple<'a, 's>> {
        match self.part {
            Part::Tuple if len == 3 => Ok(ArrayTuple {
                enc: self.enc,
                code: None,
                shape: None,
                written: false,
            }),
            _ => Err(not_an_array()),
        }
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<Captured> {
        Err(not_an_array())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<Captured> {
        Err(not_an_array())
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<Captured> {
        Err(not_an_array())
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Impossible<Captured, Error>> {
        Err(not_an_array())
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Impossible<Captured, Error>> {
        Err(not_an_array())
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Impossible<Captured, Error>> {
        Err(not_an_array())
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Impossible<Captured, Error>> {
        Err(not_an_array())
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Impossible<Captured, Error>> {
        Err(not_an_array())
    }
}

struct ArrayTuple<'a, 's> {
    enc: &'a mut Encoder<'s>,
    code: Option<u8>,
    shape: Option<Vec<u64>>,
    written: bool,
}

impl ser::SerializeTuple for ArrayTuple<'_, '_> {
    type Ok = Captured;
    type Error = Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        let part = match (self.code, &mut self.shape, self.written) {
            (None, _, _) => Part::Dtype,
            (Some(_), None, _) => Part::Shape,
            (Some(code), Some(shape), false) => Part::Data {
                code,
                shape: std::mem::take(shape),
            },
            (Some(_), Some(_), true) => return Err(not_an_array()),
        };
        let enc = &mut *self.enc;
        match value.serialize(Capture { enc, part })? {
            Captured::Dtype(code) => self.code = Some(code),
            Captured::Shape(shape) => self.shape = Some(shape),
            Captured::Nothing => self.written = true,
            Captured::Dim(_) => return Err(not_an_array()),
        }
        Ok(())
    }

    fn end(self) -> Result<Captured> {
        if self.written {
            Ok(Captured::Nothing)
        } else {
            Err(not_an_array())
        }
    }
}

struct ShapeSeq<'a, 's> {
    enc: &'a mut Encoder<'s>,
    shape: Vec<u64>,
}

impl ser::SerializeSeq for ShapeSeq<'_, '_> {
    type Ok = Captured;
    type Error = Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        if self.shape.len() >= MAX_NDIM {
            return Err(Error::Codec(format!(
                "array has more than the limit of {MAX_NDIM} dimensions"
            )));
        }
        let enc = &mut *self.enc;
        match value.serialize(Capture {
            enc,
            part: Part::Dim,
        })? {
            Captured::Dim(d) => self.shape.push(d),
            _ => return Err(not_an_array()),
        }
        Ok(())
    }

    fn end(self) -> Result<Captured> {
        Ok(Captured::Shape(self.shape))
    }
}

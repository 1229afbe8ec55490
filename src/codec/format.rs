//! The envelope's byte-level vocabulary: version, tag bytes, limits and varints.
//!
//! `docs/FORMAT.md` is the normative description; this file and that one change together.

/// The first byte of every envelope. Bumped on any incompatible change.
pub(crate) const VERSION: u8 = 1;

/// Deepest nesting of containers the encoder writes and the decoder reads.
///
/// Both sides count the same things (see `docs/FORMAT.md`, "Nesting"), so anything the decoder
/// accepted can be encoded again.
pub const MAX_DEPTH: usize = 128;

/// Most dimensions an array may have (NumPy's limit is 64 as well).
pub const MAX_NDIM: usize = 64;

/// The type name the array's `Serialize` passes to `serialize_newtype_struct`, so the encoder
/// recognises arrays without knowing their Rust type (the trick `toml` uses for datetimes).
pub(crate) const ARRAY_MAGIC: &str = "$shm_arena::Array";

/// The type name [`Value`](super::Value)'s `Deserialize` passes to `deserialize_newtype_struct`:
/// inside it, the decoder presents arrays as one-entry maps keyed by [`ARRAY_MAGIC`], so a
/// dynamically typed value can tell an array from a 3-element sequence.
pub(crate) const VALUE_MAGIC: &str = "$shm_arena::Value";

/// Tag bytes. Zero is deliberately not a tag, so zero-filled memory never decodes.
pub(crate) mod tag {
    pub(crate) const UNIT: u8 = 0x01;
    pub(crate) const FALSE: u8 = 0x02;
    pub(crate) const TRUE: u8 = 0x03;
    pub(crate) const NONE: u8 = 0x04;
    pub(crate) const SOME: u8 = 0x05;

    pub(crate) const U8: u8 = 0x10;
    pub(crate) const U16: u8 = 0x11;
    pub(crate) const U32: u8 = 0x12;
    pub(crate) const U64: u8 = 0x13;
    pub(crate) const U128: u8 = 0x14;
    pub(crate) const I8: u8 = 0x18;
    pub(crate) const I16: u8 = 0x19;
    pub(crate) const I32: u8 = 0x1a;
    pub(crate) const I64: u8 = 0x1b;
    pub(crate) const I128: u8 = 0x1c;
    pub(crate) const F32: u8 = 0x20;
    pub(crate) const F64: u8 = 0x21;
    pub(crate) const CHAR: u8 = 0x22;

    pub(crate) const STR: u8 = 0x30;
    pub(crate) const BYTES: u8 = 0x31;
    pub(crate) const BYTES_BLOB: u8 = 0x32;

    pub(crate) const SEQ: u8 = 0x40;
    pub(crate) const MAP: u8 = 0x41;
    pub(crate) const SEQ_OPEN: u8 = 0x42;
    pub(crate) const MAP_OPEN: u8 = 0x43;
    pub(crate) const END: u8 = 0x4f;

    pub(crate) const ARRAY: u8 = 0x50;
    pub(crate) const ARRAY_BLOB: u8 = 0x51;
}

/// Appends `value` as an unsigned LEB128 varint (7 bits per byte, low group first).
pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// [`put_varint`] for 128-bit values.
pub(crate) fn put_varint128(out: &mut Vec<u8>, mut value: u128) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Maps signed to unsigned so that small magnitudes give short varints: 0, -1, 1, -2 -> 0, 1, 2, 3.
/// The mapping is independent of the width, so one function serves every signed type.
pub(crate) fn zigzag(value: i128) -> u128 {
    ((value << 1) ^ (value >> 127)) as u128
}

/// Inverse of [`zigzag`].
pub(crate) fn unzigzag(value: u128) -> i128 {
    ((value >> 1) as i128) ^ -((value & 1) as i128)
}

/// Bytes of padding that bring `offset` (relative to the envelope start) to a multiple of `align`.
pub(crate) fn padding(offset: usize, align: usize) -> usize {
    debug_assert!(align.is_power_of_two());
    offset.wrapping_neg() & (align - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zigzag_round_trips_and_orders_by_magnitude() {
        for v in [
            0i128,
            -1,
            1,
            -2,
            2,
            i64::MIN.into(),
            i64::MAX.into(),
            i128::MIN,
            i128::MAX,
        ] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(zigzag(0), 0);
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
        assert_eq!(zigzag(-2), 3);
    }

    #[test]
    fn varints_are_minimal_leb128() {
        let mut out = Vec::new();
        put_varint(&mut out, 0);
        put_varint(&mut out, 127);
        put_varint(&mut out, 128);
        put_varint(&mut out, 300);
        assert_eq!(out, [0x00, 0x7f, 0x80, 0x01, 0xac, 0x02]);
        let mut long = Vec::new();
        put_varint(&mut long, u64::MAX);
        assert_eq!(long.len(), 10);
        let mut wide = Vec::new();
        put_varint128(&mut wide, u128::MAX);
        assert_eq!(wide.len(), 19);
    }

    #[test]
    fn padding_aligns_offsets() {
        assert_eq!(padding(0, 8), 0);
        assert_eq!(padding(1, 8), 7);
        assert_eq!(padding(8, 8), 0);
        assert_eq!(padding(13, 4), 3);
        assert_eq!(padding(13, 1), 0);
    }
}

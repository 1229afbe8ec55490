//! The codec: round trips, borrowing, offloading and hostile envelopes.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;

use proptest::prelude::*;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use shm_arena::codec::fuzzing::{decode_envelope, Sample, Variant};
use shm_arena::codec::{
    decode, encode, Array, BlobSink, BlobSource, Bytes, Dtype, EncodeOptions, HeapBlobs, NoBlobs,
    Value, MAX_DEPTH,
};
use shm_arena::Error;

/// An encoded value: the envelope stored as an aligned blob (as the arena stores it) and the
/// unit's blobs.
struct Unit {
    envelope: HeapBlobs,
    blobs: HeapBlobs,
}

impl Unit {
    fn envelope(&self) -> &[u8] {
        self.envelope.get(0).unwrap()
    }

    fn decode<'a, T: Deserialize<'a>>(&'a self) -> shm_arena::Result<T> {
        decode(self.envelope(), &&self.blobs)
    }
}

fn encode_with<T: Serialize + ?Sized>(value: &T, threshold: usize) -> Unit {
    let mut envelope = Vec::new();
    let mut blobs = HeapBlobs::new();
    encode(
        value,
        &EncodeOptions::with_offload_threshold(threshold),
        &mut envelope,
        &mut blobs,
    )
    .unwrap();
    let mut store = HeapBlobs::new();
    store.put_blob(&envelope).unwrap();
    Unit {
        envelope: store,
        blobs,
    }
}

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) {
    for threshold in [0, 1, 16, 4096] {
        let unit = encode_with(value, threshold);
        let back: T = unit.decode().unwrap();
        assert_eq!(&back, value, "threshold {threshold}");
        // Self-describing: every envelope also decodes without a type.
        unit.decode::<IgnoredAny>().unwrap();
        unit.decode::<Value>().unwrap();
    }
}

/// `bytes` after the version byte.
fn envelope(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![1];
    out.extend_from_slice(bytes);
    out
}

fn codec_error<T: Debug>(result: shm_arena::Result<T>) -> String {
    match result {
        Err(Error::Codec(msg)) => msg,
        other => panic!("expected a codec error, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Round trips

#[test]
fn scalars_round_trip() {
    round_trip(&());
    round_trip(&true);
    round_trip(&false);
    for v in [0u8, 1, 127, 128, 255] {
        round_trip(&v);
    }
    for v in [i8::MIN, -1, 0, 1, i8::MAX] {
        round_trip(&v);
    }
    for v in [0u16, 300, u16::MAX] {
        round_trip(&v);
    }
    for v in [i16::MIN, -300, i16::MAX] {
        round_trip(&v);
    }
    for v in [0u32, u32::MAX] {
        round_trip(&v);
    }
    for v in [i32::MIN, -1, i32::MAX] {
        round_trip(&v);
    }
    for v in [0u64, 1 << 60, u64::MAX] {
        round_trip(&v);
    }
    for v in [i64::MIN, -(1 << 60), i64::MAX] {
        round_trip(&v);
    }
    for v in [0u128, u128::MAX] {
        round_trip(&v);
    }
    for v in [i128::MIN, -1, i128::MAX] {
        round_trip(&v);
    }
    for v in [0.0f32, -1.5, f32::MAX, f32::MIN_POSITIVE, f32::INFINITY] {
        round_trip(&v);
    }
    for v in [0.0f64, -1.5e300, f64::NEG_INFINITY] {
        round_trip(&v);
    }
    for v in ['a', 'é', '\u{10ffff}', '\0'] {
        round_trip(&v);
    }
    round_trip(&String::new());
    round_trip(&"héllo wörld".to_owned());
    round_trip(&"x".repeat(10_000));
}

#[test]
fn containers_round_trip() {
    round_trip(&Some(3u8));
    round_trip(&None::<u8>);
    round_trip(&Some(Some(None::<u8>)));
    round_trip(&(1u8, "two".to_owned(), 3.0f64));
    round_trip(&vec![1u32, 2, 3]);
    round_trip(&Vec::<String>::new());
    round_trip(&vec![vec![1u8], vec![], vec![2, 3]]);
    round_trip(&HashMap::from([
        ("a".to_owned(), 1i64),
        ("b".to_owned(), -2),
    ]));
    round_trip(&BTreeMap::from([(1u32, vec![true]), (2, vec![])]));
    round_trip(&[7u16; 4]);
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Unit0;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Newtype(u32);

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Tuple(u8, String);

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Record {
    id: u64,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent: Option<u64>,
    #[serde(with = "serde_bytes")]
    raw: Vec<u8>,
    plain: Vec<u8>,
    unit: Unit0,
    newtype: Newtype,
    tuple: Tuple,
    items: Vec<Variant>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum Untagged {
    Number(i64),
    Text(String),
    Point { x: f64, y: f64 },
    List(Vec<Untagged>),
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
enum Internal {
    Start { at: u64 },
    Stop,
    Data(Record2),
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Record2 {
    value: i32,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", content = "c")]
enum Adjacent {
    A(u8),
    B { s: String },
    C,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct WithFlatten {
    id: u32,
    #[serde(flatten)]
    extra: HashMap<String, i64>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Outer {
    name: String,
    #[serde(flatten)]
    inner: Record2,
}

#[test]
fn serde_data_model_round_trips() {
    round_trip(&Unit0);
    round_trip(&Newtype(5));
    round_trip(&Tuple(1, "x".into()));
    let items = vec![
        Variant::Empty,
        Variant::Number(-5),
        Variant::Text("t".into()),
        Variant::Pair(9, true),
        Variant::Named {
            id: 3,
            tag: Some('q'),
        },
    ];
    round_trip(&items);
    round_trip(&Record {
        id: 1,
        name: "rec".into(),
        parent: None,
        raw: vec![0xab; 5000],
        plain: vec![1, 2, 3],
        unit: Unit0,
        newtype: Newtype(7),
        tuple: Tuple(2, "y".into()),
        items,
    });
    round_trip(&Untagged::Number(-3));
    round_trip(&Untagged::Text("s".into()));
    round_trip(&Untagged::Point { x: 1.0, y: 2.5 });
    round_trip(&Untagged::List(vec![
        Untagged::Number(1),
        Untagged::Point { x: 0.0, y: 0.0 },
    ]));
    round_trip(&Internal::Start { at: 9 });
    round_trip(&Internal::Stop);
    round_trip(&Internal::Data(Record2 { value: -1 }));
    round_trip(&Adjacent::A(1));
    round_trip(&Adjacent::B { s: "b".into() });
    round_trip(&Adjacent::C);
    round_trip(&WithFlatten {
        id: 4,
        extra: HashMap::from([("x".into(), 1), ("y".into(), 2)]),
    });
    round_trip(&Outer {
        name: "o".into(),
        inner: Record2 { value: 3 },
    });
}

#[test]
fn arrays_of_every_dtype_round_trip() {
    fn check<T: shm_arena::codec::Element + PartialEq + Debug>(values: Vec<T>, dtype: Dtype) {
        let n = values.len();
        let array = Array::from_vec(values, vec![n / 2, 2]).unwrap();
        assert_eq!(array.dtype(), dtype);
        for threshold in [0, 4096] {
            let unit = encode_with(&array, threshold);
            let back: Array<T> = unit.decode().unwrap();
            assert_eq!(back, array);
            assert!(back.is_borrowed(), "aligned data is borrowed");
        }
    }
    check(vec![1u8, 2, 3, 4], Dtype::U8);
    check(vec![-1i8, 2, 3, 4], Dtype::I8);
    check(vec![1u16, 2, 3, 4], Dtype::U16);
    check(vec![-1i16, 2, 3, 4], Dtype::I16);
    check(vec![1u32, 2, 3, 4], Dtype::U32);
    check(vec![-1i32, 2, 3, 4], Dtype::I32);
    check(vec![1u64, 2, 3, u64::MAX], Dtype::U64);
    check(vec![-1i64, 2, 3, i64::MIN], Dtype::I64);
    check(vec![1.5f32, 2.0, -3.0, 4.0], Dtype::F32);
    check(vec![1.5f64, 2.0, -3.0, 4.0], Dtype::F64);

    let scalar = Array::from_vec(vec![42u32], vec![]).unwrap();
    let unit = encode_with(&scalar, 4096);
    let back: Array<u32> = unit.decode().unwrap();
    assert_eq!(back.shape(), &[] as &[usize]);
    assert_eq!(back.as_slice(), &[42]);

    let empty = Array::<f64>::from_vec(vec![], vec![3, 0]).unwrap();
    let unit = encode_with(&empty, 0);
    let back: Array<f64> = unit.decode().unwrap();
    assert_eq!(back.shape(), &[3, 0]);
    assert!(back.is_empty());
}

#[test]
fn inline_arrays_are_aligned_after_odd_prefixes() {
    // Strings of every length before the array shift its start through every residue mod 8.
    for prefix in 0..16 {
        let array = Array::from_vec(vec![1.0f64, 2.0, 3.0], vec![3]).unwrap();
        let value = ("p".repeat(prefix), array);
        let unit = encode_with(&value, 4096);
        assert!(unit.blobs.is_empty());
        let (_, back): (String, Array<f64>) = unit.decode().unwrap();
        assert!(back.is_borrowed(), "prefix {prefix}");
        assert_eq!(back.as_slice(), &[1.0, 2.0, 3.0]);
    }
}

#[test]
fn misaligned_envelope_copies_inline_arrays() {
    let array = Array::from_vec(vec![1u32, 2, 3], vec![3]).unwrap();
    let unit = encode_with(&array, 4096);
    // The same envelope, one byte into a buffer: the data is no longer 4-aligned in memory.
    let mut shifted = HeapBlobs::new();
    let mut bytes = vec![0u8];
    bytes.extend_from_slice(unit.envelope());
    shifted.put_blob(&bytes).unwrap();
    let back: Array<u32> = decode(&shifted.get(0).unwrap()[1..], &NoBlobs).unwrap();
    assert!(!back.is_borrowed());
    assert_eq!(back.as_slice(), &[1, 2, 3]);
}

#[test]
fn other_formats_can_carry_arrays_and_bytes() {
    let array = Array::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], vec![2, 2]).unwrap();
    let bytes = postcard::to_allocvec(&(&array, Bytes::from(vec![5u8; 10]))).unwrap();
    let (back, b): (Array<f32>, Bytes) = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back, array);
    assert_eq!(b.as_slice(), &[5u8; 10]);
}

#[test]
fn encode_appends_after_existing_bytes() {
    let mut envelope = b"prefix".to_vec();
    encode(
        &"value",
        &EncodeOptions::default(),
        &mut envelope,
        &mut HeapBlobs::new(),
    )
    .unwrap();
    let back: &str = decode(&envelope[6..], &NoBlobs).unwrap();
    assert_eq!(back, "value");
}

// ---------------------------------------------------------------------------------------------
// Borrowing and offloading

#[derive(Debug, Serialize, Deserialize)]
struct Borrowing<'a> {
    name: &'a str,
    #[serde(borrow)]
    note: Cow<'a, str>,
    #[serde(with = "serde_bytes")]
    small: &'a [u8],
    #[serde(with = "serde_bytes")]
    large: &'a [u8],
    #[serde(borrow)]
    bytes: Bytes<'a>,
    #[serde(borrow)]
    array: Array<'a, i16>,
}

fn contains(outer: &[u8], inner: &[u8]) -> bool {
    let range = outer.as_ptr_range();
    let inner = inner.as_ptr_range();
    range.start <= inner.start && inner.end <= range.end
}

#[test]
fn decoded_leaves_borrow_from_envelope_and_blobs() {
    let large = vec![7u8; 8192];
    let bytes = vec![8u8; 5000];
    let data: Vec<i16> = (0..4096).collect();
    let value = Borrowing {
        name: "name",
        note: Cow::Borrowed("note"),
        small: b"small",
        large: &large,
        bytes: Bytes::borrowed(&bytes),
        array: Array::from_slice(&data, &[64, 64]).unwrap(),
    };
    let unit = encode_with(&value, 4096);
    assert_eq!(unit.blobs.len(), 3);
    let back: Borrowing = unit.decode().unwrap();
    let env = unit.envelope();
    assert!(contains(env, back.name.as_bytes()));
    assert!(matches!(back.note, Cow::Borrowed(_)));
    assert!(contains(env, back.note.as_bytes()));
    assert!(contains(env, back.small));
    assert_eq!(back.large.as_ptr(), unit.blobs.get(0).unwrap().as_ptr());
    assert_eq!(back.large, &large[..]);
    assert!(back.bytes.is_borrowed());
    assert_eq!(back.bytes.as_ptr(), unit.blobs.get(1).unwrap().as_ptr());
    assert!(back.array.is_borrowed());
    assert_eq!(
        back.array.as_bytes().as_ptr(),
        unit.blobs.get(2).unwrap().as_ptr()
    );
    assert_eq!(back.array.as_slice(), &data[..]);
    assert_eq!(back.array.shape(), &[64, 64]);
}

#[test]
fn threshold_decides_inline_or_blob() {
    for threshold in [1usize, 100, 4096] {
        let below = Bytes::from(vec![1u8; threshold - 1]);
        let at = Bytes::from(vec![1u8; threshold]);
        let above = Bytes::from(vec![1u8; threshold + 1]);
        assert_eq!(encode_with(&below, threshold).blobs.len(), 0);
        assert_eq!(encode_with(&at, threshold).blobs.len(), 1);
        assert_eq!(encode_with(&above, threshold).blobs.len(), 1);
        let unit = encode_with(&(&below, &at, &above), threshold);
        assert_eq!(unit.blobs.len(), 2);
        assert_eq!(unit.blobs.total_bytes(), 2 * threshold + 1);

        let elems = threshold.div_ceil(4);
        let array = Array::from_vec(vec![0f32; elems], vec![elems]).unwrap();
        let expected = usize::from(elems * 4 >= threshold);
        assert_eq!(encode_with(&array, threshold).blobs.len(), expected);
    }
    // A plain Vec<u8> is a sequence: never offloaded.
    assert_eq!(encode_with(&vec![1u8; 10_000], 16).blobs.len(), 0);
    // serde_bytes makes it bytes.
    let buf = serde_bytes::ByteBuf::from(vec![1u8; 10_000]);
    assert_eq!(encode_with(&buf, 16).blobs.len(), 1);
}

/// A sink that counts what it is given, to show each leaf is copied exactly once.
#[derive(Default)]
struct CountingSink {
    blobs: HeapBlobs,
    puts: usize,
    bytes: usize,
}

impl BlobSink for CountingSink {
    fn put_blob(&mut self, bytes: &[u8]) -> shm_arena::Result<u32> {
        self.puts += 1;
        self.bytes += bytes.len();
        self.blobs.put_blob(bytes)
    }
}

#[test]
fn each_leaf_goes_to_the_sink_once() {
    let payload = vec![3u8; 1 << 16];
    // 4 MiB of f32, scaled down so Miri finishes.
    let side = if cfg!(miri) { 64 } else { 1024 };
    let data = vec![1.0f32; side * side];
    let value = (
        Bytes::borrowed(&payload),
        Array::from_slice(&data, &[side, side]).unwrap(),
        "metadata",
    );
    let mut sink = CountingSink::default();
    let mut envelope = Vec::new();
    encode(&value, &EncodeOptions::default(), &mut envelope, &mut sink).unwrap();
    assert_eq!(sink.puts, 2);
    assert_eq!(sink.bytes, payload.len() + data.len() * 4);
    assert!(envelope.len() < 64);
}

#[derive(Debug)]
struct FailingSink;

impl BlobSink for FailingSink {
    fn put_blob(&mut self, _: &[u8]) -> shm_arena::Result<u32> {
        Err(Error::WouldBlock("no room"))
    }
}

#[test]
fn sink_errors_pass_through_and_truncate_the_envelope() {
    let mut envelope = b"keep".to_vec();
    let err = encode(
        &Bytes::from(vec![0u8; 5000]),
        &EncodeOptions::default(),
        &mut envelope,
        &mut FailingSink,
    )
    .unwrap_err();
    assert!(matches!(err, Error::WouldBlock(_)));
    assert_eq!(envelope, b"keep");
}

// ---------------------------------------------------------------------------------------------
// Hostile envelopes

#[test]
fn empty_wrong_version_and_trailing_bytes() {
    assert!(codec_error(decode::<()>(&[], &NoBlobs)).contains("empty"));
    assert!(codec_error(decode::<()>(&[2, 0x01], &NoBlobs)).contains("version 2"));
    let msg = codec_error(decode::<()>(&envelope(&[0x01, 0x01]), &NoBlobs));
    assert!(msg.starts_with("envelope offset 2:"), "{msg}");
}

#[test]
fn unknown_tags_are_errors() {
    for t in [0x00u8, 0x06, 0x15, 0x33, 0x44, 0x52, 0xff] {
        let msg = codec_error(decode::<Value>(&envelope(&[t]), &NoBlobs));
        assert!(msg.contains("unknown tag"), "{t:#x}: {msg}");
        codec_error(decode::<IgnoredAny>(&envelope(&[t]), &NoBlobs));
    }
    assert!(codec_error(decode::<Value>(&envelope(&[0x4f]), &NoBlobs)).contains("END"));
}

#[test]
fn huge_lengths_are_errors_not_allocations() {
    let mut huge = vec![];
    // 2^60 as a varint.
    let mut v = 1u64 << 60;
    while v >= 0x80 {
        huge.push(v as u8 | 0x80);
        v >>= 7;
    }
    huge.push(v as u8);
    for t in [0x30u8, 0x31, 0x40, 0x41] {
        let mut bytes = vec![t];
        bytes.extend_from_slice(&huge);
        bytes.extend_from_slice(&[0x01; 8]);
        let msg = codec_error(decode::<Value>(&envelope(&bytes), &NoBlobs));
        assert!(msg.contains("1152921504606846976"), "{msg}");
        codec_error(decode::<Vec<u64>>(&envelope(&bytes), &NoBlobs));
        codec_error(decode::<HashMap<String, u8>>(&envelope(&bytes), &NoBlobs));
    }
    // An offloaded leaf claiming 2^60 bytes of a small blob.
    let mut blobs = HeapBlobs::new();
    blobs.put_blob(&[0; 100]).unwrap();
    let mut bytes = vec![0x32, 0x00];
    bytes.extend_from_slice(&huge);
    let msg = codec_error(decode::<Bytes>(&envelope(&bytes), &&blobs));
    assert!(msg.contains("exceeds the 100 bytes of blob 0"), "{msg}");
}

#[test]
fn markers_must_name_existing_blobs_once() {
    let mut blobs = HeapBlobs::new();
    blobs.put_blob(&[1; 10]).unwrap();
    // BYTES_BLOB index 5 len 1
    let msg = codec_error(decode::<Bytes>(&envelope(&[0x32, 0x05, 0x01]), &&blobs));
    assert!(
        msg.starts_with("envelope offset 1:") && msg.contains("blob 5"),
        "{msg}"
    );
    // Index beyond u32.
    let msg = codec_error(decode::<Bytes>(
        &envelope(&[0x32, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x01]),
        &&blobs,
    ));
    assert!(msg.contains("out of range"), "{msg}");
    // Two markers for blob 0.
    let msg = codec_error(decode::<(Bytes, Bytes)>(
        &envelope(&[0x40, 0x02, 0x32, 0x00, 0x01, 0x32, 0x00, 0x01]),
        &&blobs,
    ));
    assert!(msg.contains("second marker"), "{msg}");
    // A shorter length is a prefix of the blob; the blob may be padded.
    let bytes = envelope(&[0x32, 0x00, 0x04]);
    let back: Bytes = decode(&bytes, &&blobs).unwrap();
    assert_eq!(back.as_slice(), &[1; 4]);
    // A plain `&[u8]` borrows straight from the blob too.
    let raw: &[u8] = decode(&bytes, &&blobs).unwrap();
    assert_eq!(raw.as_ptr(), blobs.get(0).unwrap().as_ptr());
}

/// A source whose blobs are deliberately misaligned.
struct Misaligned(HeapBlobs);

impl<'a> BlobSource<'a> for &'a Misaligned {
    fn blob(&self, index: u32) -> shm_arena::Result<&'a [u8]> {
        Ok(&self.0.get(index).unwrap()[1..])
    }
}

#[test]
fn misaligned_blobs_are_rejected() {
    let mut blobs = HeapBlobs::new();
    blobs.put_blob(&[0; 65]).unwrap();
    let source = Misaligned(blobs);
    let msg = codec_error(decode::<Bytes>(&envelope(&[0x32, 0x00, 0x08]), &&source));
    assert!(msg.contains("not 64-byte aligned"), "{msg}");
}

#[test]
fn invalid_utf8_is_an_error_with_its_offset() {
    let msg = codec_error(decode::<String>(
        &envelope(&[0x30, 0x04, b'a', b'b', 0xff, b'c']),
        &NoBlobs,
    ));
    assert_eq!(msg, "envelope offset 5: string is not valid UTF-8");
    codec_error(decode::<&str>(
        &envelope(&[0x30, 0x02, 0xc3, 0x28]),
        &NoBlobs,
    ));
    codec_error(decode::<Value>(&envelope(&[0x30, 0x01, 0x80]), &NoBlobs));
}

#[test]
fn invalid_chars_and_varints_are_errors() {
    // Surrogate code point.
    assert!(codec_error(decode::<char>(
        &envelope(&[0x22, 0x80, 0xb0, 0x03]),
        &NoBlobs
    ))
    .contains("Unicode"));
    // 11-byte u64 varint, u16 overflow, non-minimal varint.
    let long = [
        0x13, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
    ];
    assert!(codec_error(decode::<u64>(&envelope(&long), &NoBlobs)).contains("overflows"));
    assert!(codec_error(decode::<u16>(
        &envelope(&[0x11, 0xff, 0xff, 0x7f]),
        &NoBlobs
    ))
    .contains("overflows"));
    assert!(
        codec_error(decode::<u8>(&envelope(&[0x13, 0x81, 0x00]), &NoBlobs)).contains("shortest")
    );
    // A u64 where a u8 is expected: the visitor's error, located.
    let msg = codec_error(decode::<u8>(&envelope(&[0x13, 0xac, 0x02]), &NoBlobs));
    assert!(msg.starts_with("envelope offset 1:"), "{msg}");
}

/// An array record: ARRAY tag, dtype, shape, byte length, padding to the element size, data.
fn inline_array(code: u8, shape: &[u64], len: u64, data: &[u8]) -> Vec<u8> {
    let mut out = vec![1, 0x50, code, shape.len() as u8];
    for &d in shape {
        push_varint(&mut out, d);
    }
    push_varint(&mut out, len);
    let size = Dtype::from_code(code).map_or(1, Dtype::size);
    while out.len() % size != 0 {
        out.push(0);
    }
    out.extend_from_slice(data);
    out
}

fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn aligned(bytes: &[u8]) -> HeapBlobs {
    let mut store = HeapBlobs::new();
    store.put_blob(bytes).unwrap();
    store
}

#[test]
fn hand_written_array_records_decode() {
    let data: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|f| f.to_le_bytes()).collect();
    let store = aligned(&inline_array(b'f', &[2], 8, &data));
    let back: Array<f32> = decode(store.get(0).unwrap(), &NoBlobs).unwrap();
    assert_eq!(back.as_slice(), &[1.0, 2.0]);
    assert!(back.is_borrowed());
}

#[test]
fn bad_arrays_are_errors() {
    let check = |bytes: Vec<u8>, needle: &str| {
        let store = aligned(&bytes);
        let msg = codec_error(decode::<Array<f32>>(store.get(0).unwrap(), &NoBlobs));
        assert!(msg.contains(needle), "{needle}: {msg}");
        codec_error(decode::<Value>(store.get(0).unwrap(), &NoBlobs));
    };
    // Element size times shape differs from the byte length.
    check(inline_array(b'f', &[3], 8, &[0; 8]), "needs 12 bytes");
    // Shape product overflows.
    check(
        inline_array(b'f', &[u64::MAX, u64::MAX, 0], 0, &[]),
        "more than 2^64",
    );
    check(inline_array(b'f', &[1 << 62], 0, &[]), "more than 2^64");
    // Unknown dtype.
    check(inline_array(b'z', &[1], 1, &[0]), "unknown array dtype");
    // Data runs past the end.
    check(inline_array(b'f', &[4], 16, &[0; 8]), "runs past the end");
    // Nonzero padding.
    let mut padded = inline_array(b'f', &[1], 4, &[0; 4]);
    padded[6] = 0xee;
    check(padded, "padding");
    // Too many dimensions.
    check(inline_array(b'f', &[1; 65], 4, &[0; 4]), "dimensions");

    // Dtype mismatch: an i32 array decoded as f32.
    let store = aligned(&inline_array(b'i', &[1], 4, &[0; 4]));
    let msg = codec_error(decode::<Array<f32>>(store.get(0).unwrap(), &NoBlobs));
    assert!(msg.contains("array of i32"), "{msg}");

    // An offloaded array whose blob is shorter than the shape needs.
    let mut blobs = HeapBlobs::new();
    blobs.put_blob(&[0; 8]).unwrap();
    let bytes = envelope(&[0x51, b'f', 0x01, 0x04, 0x00, 0x10]);
    let msg = codec_error(decode::<Array<f32>>(&bytes, &&blobs));
    assert!(msg.contains("exceeds the 8 bytes of blob 0"), "{msg}");
}

#[test]
fn every_truncation_of_a_valid_envelope_is_an_error() {
    let data: Vec<f32> = (0..100).map(|i| i as f32).collect();
    let sample = Sample {
        name: "name".into(),
        label: "label",
        payload: Bytes::from(vec![1u8; 300]),
        counts: HashMap::from([("k".into(), -7)]),
        note: Some(Cow::Borrowed("note")),
        items: vec![
            Variant::Empty,
            Variant::Pair(1, false),
            Variant::Named { id: 1, tag: None },
        ],
        samples: Array::from_slice(&data, &[10, 10]).unwrap(),
    };
    let unit = encode_with(&sample, 256);
    let full = unit.envelope();
    let back: Sample = unit.decode().unwrap();
    assert!(back.same_as(&sample));
    for len in 0..full.len() {
        let store = aligned(&full[..len]);
        let env = store.get(0).unwrap();
        let msg = codec_error(decode::<Sample>(env, &&unit.blobs));
        assert!(len == 0 || msg.starts_with("envelope offset"), "{msg}");
        assert!(decode::<Value>(env, &&unit.blobs).is_err());
        assert!(decode::<IgnoredAny>(env, &&unit.blobs).is_err());
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    const DEEP: usize = 100_000;
    // SEQ of one element, 100,000 times; SOME 100,000 times; open maps; enum maps.
    let cases: Vec<Vec<u8>> = vec![
        [0x40, 0x01].repeat(DEEP),
        vec![0x05; DEEP],
        [0x43, 0x01].repeat(DEEP),
        [0x42].repeat(DEEP),
        [0x41, 0x01, 0x30, 0x01, b'A'].repeat(DEEP),
    ];
    for (i, body) in cases.iter().enumerate() {
        let bytes = envelope(body);
        let msg = codec_error(decode::<Value>(&bytes, &NoBlobs));
        assert!(msg.contains("limit of 128"), "case {i}: {msg}");
        assert!(decode::<IgnoredAny>(&bytes, &NoBlobs).is_err());
        assert!(decode::<Untagged>(&bytes, &NoBlobs).is_err());
        assert!(decode::<Vec<Variant>>(&bytes, &NoBlobs).is_err());
    }

    // Exactly at the limit is fine.
    let mut ok = [0x40, 0x01].repeat(MAX_DEPTH - 1);
    ok.extend_from_slice(&[0x40, 0x00]);
    decode::<Value>(&envelope(&ok), &NoBlobs).unwrap();
}

/// A value nested `depth` deep without any heap structure (which could itself overflow the stack
/// when dropped).
struct Nest(usize);

impl Serialize for Nest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(usize::from(self.0 > 0)))?;
        if self.0 > 0 {
            seq.serialize_element(&Nest(self.0 - 1))?;
        }
        seq.end()
    }
}

#[test]
fn encoding_deep_nesting_is_an_error() {
    let mut envelope = Vec::new();
    let err = encode(
        &Nest(100_000),
        &EncodeOptions::default(),
        &mut envelope,
        &mut HeapBlobs::new(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("limit of 128"), "{err}");
    assert!(envelope.is_empty());
    encode(
        &Nest(MAX_DEPTH - 1),
        &EncodeOptions::default(),
        &mut envelope,
        &mut HeapBlobs::new(),
    )
    .unwrap();
}

/// A `Serialize` that announces more elements than it writes.
struct Liar;

impl Serialize for Liar {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(3))?;
        seq.serialize_element(&1u8)?;
        seq.end()
    }
}

#[test]
fn lying_lengths_are_encode_errors() {
    let mut envelope = Vec::new();
    assert!(encode(
        &Liar,
        &EncodeOptions::default(),
        &mut envelope,
        &mut HeapBlobs::new()
    )
    .is_err());
}

#[test]
fn extra_elements_are_errors() {
    // A 3-element sequence decoded as a 2-tuple.
    let bytes = envelope(&[0x40, 0x03, 0x10, 1, 0x10, 2, 0x10, 3]);
    let msg = codec_error(decode::<(u8, u8)>(&bytes, &NoBlobs));
    assert!(msg.contains("more entries"), "{msg}");
}

#[test]
fn error_messages_carry_offsets() {
    let bytes = envelope(&[0x40, 0x02, 0x10, 1, 0x30, 0x01, b'x']);
    let msg = codec_error(decode::<Vec<u8>>(&bytes, &NoBlobs));
    assert!(msg.starts_with("envelope offset 5:"), "{msg}");
    let msg = codec_error(decode::<Record2>(&envelope(&[0x41, 0x00]), &NoBlobs));
    assert!(msg.contains("missing field"), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// Property tests

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Tree {
    Leaf,
    Int(i64),
    Float(f64),
    Text(String),
    Blob(#[serde(with = "serde_bytes")] Vec<u8>),
    Maybe(Option<Box<Tree>>),
    List(Vec<Tree>),
    Map(BTreeMap<String, Tree>),
    Pair { left: Box<Tree>, right: Box<Tree> },
}

fn tree() -> impl Strategy<Value = Tree> {
    let leaf = prop_oneof![
        Just(Tree::Leaf),
        any::<i64>().prop_map(Tree::Int),
        (-1e300f64..1e300).prop_map(Tree::Float),
        ".{0,20}".prop_map(Tree::Text),
        prop::collection::vec(any::<u8>(), 0..200).prop_map(Tree::Blob),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::option::of(inner.clone().prop_map(Box::new)).prop_map(Tree::Maybe),
            prop::collection::vec(inner.clone(), 0..6).prop_map(Tree::List),
            prop::collection::btree_map(".{0,6}", inner.clone(), 0..6).prop_map(Tree::Map),
            (inner.clone(), inner).prop_map(|(l, r)| Tree::Pair {
                left: Box::new(l),
                right: Box::new(r),
            }),
        ]
    })
}

fn config() -> ProptestConfig {
    let mut config = ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 256 });
    if cfg!(miri) {
        // Miri isolates the file system; regressions are replayed by the ordinary test run.
        config.failure_persistence = None;
    }
    config
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn trees_round_trip(value in tree(), threshold in 0usize..300) {
        let unit = encode_with(&value, threshold);
        let back: Tree = unit.decode().unwrap();
        prop_assert_eq!(&back, &value);
        // Through the self-describing path and back.
        let any: Value = unit.decode().unwrap();
        let again = encode_with(&any, threshold);
        let back2: Tree = again.decode().unwrap();
        prop_assert_eq!(&back2, &value);
    }

    #[test]
    fn fuzz_entry_never_panics_on_random_input(data in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_envelope(&data);
    }

    #[test]
    fn fuzz_entry_never_panics_on_mutated_envelopes(
        value in tree(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let unit = encode_with(&value, 64);
        let mut env = unit.envelope().to_vec();
        for (index, byte) in flips {
            let i = index.index(env.len());
            env[i] = byte;
        }
        // Feed the blobs and the mutated envelope through the fuzz entry's input layout.
        let mut data = vec![unit.blobs.len() as u8];
        for i in 0..unit.blobs.len() as u32 {
            let blob = unit.blobs.get(i).unwrap();
            data.extend_from_slice(&(blob.len() as u16).to_le_bytes());
            data.extend_from_slice(blob);
        }
        data.extend_from_slice(&env);
        decode_envelope(&data);
    }
}

#[test]
fn fuzz_entry_round_trips_a_valid_sample() {
    let data = vec![0.5f32; 2048];
    let sample = Sample {
        name: "n".into(),
        label: "l",
        payload: Bytes::from(vec![9u8; 5000]),
        counts: HashMap::from([("a".into(), 1)]),
        note: None,
        items: vec![Variant::Text("t".into())],
        samples: Array::from_slice(&data, &[2, 1024]).unwrap(),
    };
    let unit = encode_with(&sample, 4096);
    assert_eq!(unit.blobs.len(), 2);
    let mut input = vec![2u8];
    for i in 0..2 {
        let blob = unit.blobs.get(i).unwrap();
        input.extend_from_slice(&(blob.len() as u16).to_le_bytes());
        input.extend_from_slice(blob);
    }
    input.extend_from_slice(unit.envelope());
    decode_envelope(&input);
    decode_envelope(&[]);
    decode_envelope(&[7]);
}

#[test]
fn format_doc_example_is_exact() {
    let array = Array::from_vec(vec![1.5f32, 2.5], vec![2]).unwrap();
    let value = ("hey", Some(300u16), array);
    let unit = encode_with(&value, 4096);
    assert_eq!(
        unit.envelope(),
        [
            0x01, 0x40, 0x03, 0x30, 0x03, 0x68, 0x65, 0x79, 0x05, 0x11, 0xac, 0x02, 0x50, 0x66,
            0x01, 0x02, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x3f, 0x00, 0x00, 0x20, 0x40
        ]
    );
    let offloaded = encode_with(&value, 8);
    assert_eq!(
        &offloaded.envelope()[12..],
        [0x51, 0x66, 0x01, 0x02, 0x00, 0x08]
    );
    assert_eq!(offloaded.blobs.get(0).unwrap(), &unit.envelope()[20..]);
}

//! `codec::Value`: any envelope decoded without its Rust type (what other languages' bindings
//! use), arrays kept as arrays, leaves borrowed, and written back to an equivalent envelope.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shm_arena::codec::{
    decode, encode, Array, BlobSink, Bytes, Dtype, EncodeOptions, HeapBlobs, RawArray, Value,
};
use shm_arena::Region;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
enum Kind {
    Plain,
    Scaled(f64),
    Window { start: u32, len: u32 },
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Frame<'a> {
    seq: u16,
    delta: i32,
    big: u128,
    name: String,
    initial: char,
    ratio: f32,
    #[serde(borrow)]
    raw: Bytes<'a>,
    #[serde(borrow)]
    samples: Array<'a, f32>,
    #[serde(borrow)]
    tiny: Array<'a, i16>,
    kinds: Vec<Kind>,
    pair: (bool, Option<i8>),
    missing: Option<u64>,
    meta: BTreeMap<String, String>,
    unit: (),
}

fn frame(samples: &[f32]) -> Frame<'_> {
    Frame {
        seq: 300,
        delta: -5,
        big: u128::MAX,
        name: "clip".into(),
        initial: 'ß',
        ratio: 0.5,
        raw: Bytes::from(vec![7u8; 5000]),
        samples: Array::from_slice(samples, &[2, samples.len() / 2]).unwrap(),
        tiny: Array::from_vec(vec![-1i16, 2, -3], vec![3]).unwrap(),
        kinds: vec![
            Kind::Plain,
            Kind::Scaled(2.5),
            Kind::Window { start: 1, len: 2 },
        ],
        pair: (true, Some(-8)),
        missing: None,
        meta: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
        unit: (),
    }
}

/// The envelope as the arena stores it (an aligned blob of its own) and the leaves.
fn encoded<T: Serialize + ?Sized>(value: &T) -> (HeapBlobs, HeapBlobs) {
    let mut envelope = Vec::new();
    let mut blobs = HeapBlobs::new();
    encode(value, &EncodeOptions::default(), &mut envelope, &mut blobs).unwrap();
    let mut store = HeapBlobs::new();
    store.put_blob(&envelope).unwrap();
    (store, blobs)
}

#[test]
fn value_keeps_every_kind_and_borrows_leaves() {
    let data: Vec<f32> = (0..2048).map(|i| i as f32).collect();
    let (envelope, blobs) = encoded(&frame(&data));
    let value: Value = decode(envelope.get(0).unwrap(), &&blobs).unwrap();

    assert_eq!(
        value.get("seq"),
        Some(&Value::Uint(300)),
        "widened, unsigned"
    );
    assert_eq!(value.get("delta"), Some(&Value::Int(-5)));
    assert_eq!(value.get("big"), Some(&Value::Uint128(u128::MAX)));
    assert_eq!(value.get("name").and_then(Value::as_str), Some("clip"));
    assert_eq!(value.get("initial"), Some(&Value::Char('ß')));
    assert_eq!(value.get("ratio"), Some(&Value::F32(0.5)));
    assert_eq!(value.get("missing"), Some(&Value::None));
    assert_eq!(value.get("unit"), Some(&Value::Unit));
    assert_eq!(
        value.get("pair"),
        Some(&Value::Seq(vec![
            Value::Bool(true),
            Value::Some(Box::new(Value::Int(-8)))
        ]))
    );
    let Some(Value::Seq(kinds)) = value.get("kinds") else {
        panic!("kinds: {value:?}")
    };
    assert_eq!(
        kinds[0],
        Value::Str("Plain".into()),
        "a unit variant is its name"
    );
    assert_eq!(
        kinds[1],
        Value::Map(vec![(Value::Str("Scaled".into()), Value::F64(2.5))])
    );

    // Offloaded leaves point into their blobs; the small array is inline but still an array.
    let Some(Value::Bytes(raw)) = value.get("raw") else {
        panic!("raw: {value:?}")
    };
    assert_eq!(raw.as_ptr(), blobs.get(0).unwrap().as_ptr());
    let Some(Value::Array(samples)) = value.get("samples") else {
        panic!("samples: {value:?}")
    };
    assert_eq!(samples.dtype(), Dtype::F32);
    assert_eq!(samples.shape(), &[2, 1024]);
    assert!(samples.is_borrowed());
    assert_eq!(samples.data().as_ptr(), blobs.get(1).unwrap().as_ptr());
    assert_eq!(samples.data(), bytemuck_bytes(&data));
    let Some(Value::Array(tiny)) = value.get("tiny") else {
        panic!("tiny: {value:?}")
    };
    assert_eq!(
        (tiny.dtype(), tiny.shape(), tiny.len()),
        (Dtype::I16, &[3u64][..], 3)
    );
    assert!(tiny.is_borrowed(), "inline arrays borrow from the envelope");
}

fn bytemuck_bytes(data: &[f32]) -> Vec<u8> {
    data.iter().flat_map(|x| x.to_ne_bytes()).collect()
}

#[test]
fn a_value_encodes_back_to_what_the_typed_decoder_reads() {
    let data: Vec<f32> = (0..2048).map(|i| i as f32 * 0.5).collect();
    let original = frame(&data);
    let (envelope, blobs) = encoded(&original);
    let value: Value = decode(envelope.get(0).unwrap(), &&blobs).unwrap();

    let (envelope2, blobs2) = encoded(&value);
    assert_eq!(blobs2.len(), 2, "the leaves are offloaded again");
    let back: Frame = decode(envelope2.get(0).unwrap(), &&blobs2).unwrap();
    assert_eq!(back, original);
    // Normalized once, a value's envelope is a fixed point.
    let again: Value = decode(envelope2.get(0).unwrap(), &&blobs2).unwrap();
    assert_eq!(again, value);
}

#[test]
fn a_bare_value_where_an_option_is_expected_is_some() {
    // What a writer without an option type (Python) writes for `Some(5)`.
    let (envelope, blobs) = encoded(&Value::Map(vec![
        (Value::Str("missing".into()), Value::None),
        (Value::Str("present".into()), Value::Int(5)),
    ]));
    #[derive(Deserialize, Debug, PartialEq)]
    struct Options {
        missing: Option<u32>,
        present: Option<u32>,
    }
    let options: Options = decode(envelope.get(0).unwrap(), &&blobs).unwrap();
    assert_eq!(
        options,
        Options {
            missing: None,
            present: Some(5)
        }
    );
}

#[test]
fn a_value_can_be_one_field_of_a_typed_struct() {
    #[derive(Serialize, Deserialize)]
    struct Envelope<'a> {
        kind: String,
        #[serde(borrow)]
        body: Value<'a>,
    }
    let body = Value::Seq(vec![
        Value::Array(RawArray::new(Dtype::U8, vec![8192], vec![1u8; 8192]).unwrap()),
        Value::Bytes(vec![2u8; 3].into()),
    ]);
    let (envelope, blobs) = encoded(&Envelope {
        kind: "batch".into(),
        body: body.clone(),
    });
    let back: Envelope = decode(envelope.get(0).unwrap(), &&blobs).unwrap();
    assert_eq!(back.kind, "batch");
    assert_eq!(back.body, body);
}

#[test]
fn raw_arrays_check_their_shape() {
    assert!(RawArray::new(Dtype::F64, vec![2, 2], vec![0u8; 32]).is_ok());
    assert!(RawArray::new(Dtype::F64, vec![2, 3], vec![0u8; 32]).is_err());
    assert!(RawArray::new(Dtype::U8, vec![u64::MAX, 2], vec![0u8; 0]).is_err());
    assert!(RawArray::new(Dtype::U8, vec![1; 65], vec![0u8; 1]).is_err());
    let scalar = RawArray::new(Dtype::I32, vec![], vec![0u8; 4]).unwrap();
    assert_eq!(scalar.len(), 1);
}

#[test]
fn a_unit_decodes_as_a_value_borrowing_shared_memory() {
    let region = Region::create(1 << 20).unwrap();
    let (mut writer, reader) = (region.writer().unwrap(), region.reader().unwrap());
    let data: Vec<f32> = (0..4096).map(|i| i as f32).collect();
    writer.send(&frame(&data)).unwrap();
    let unit = reader.next_unit(Duration::from_secs(5)).unwrap();
    let value: Value = unit.decode().unwrap();
    let Some(Value::Array(samples)) = value.get("samples") else {
        panic!("samples: {value:?}")
    };
    let blob = unit.blob(1).unwrap();
    assert_eq!(samples.data().as_ptr(), blob.as_ptr());
    assert_eq!(samples.data().len(), blob.len());
}

#[test]
fn every_truncation_and_byte_flip_is_an_error_or_a_value() {
    let data: Vec<f32> = (0..64).map(|i| i as f32).collect();
    let mut envelope = Vec::new();
    let mut blobs = HeapBlobs::new();
    encode(
        &frame(&data),
        &EncodeOptions::with_offload_threshold(64),
        &mut envelope,
        &mut blobs,
    )
    .unwrap();
    let mut store = HeapBlobs::new();
    for len in 0..envelope.len() {
        store.put_blob(&envelope[..len]).unwrap();
        let truncated = store.get(store.len() as u32 - 1).unwrap();
        let err = decode::<Value>(truncated, &&blobs).unwrap_err();
        assert!(
            len == 0 || err.to_string().contains("envelope offset"),
            "{err}"
        );
    }
    // Flips: never a panic; whatever decodes encodes again.
    for at in 0..envelope.len() {
        for bit in 0..8 {
            let mut bad = envelope.clone();
            bad[at] ^= 1 << bit;
            store.put_blob(&bad).unwrap();
            let bad = store.get(store.len() as u32 - 1).unwrap();
            if let Ok(value) = decode::<Value>(bad, &&blobs) {
                encoded(&value);
            }
        }
    }
}

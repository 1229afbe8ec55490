//! Fuzzing entry points, always compiled so the same checks run as ordinary tests.
//!
//! Not part of the stable API.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::de::IgnoredAny;
use serde::ser::Serialize;

use super::{decode, encode, Array, BlobSink, Bytes, EncodeOptions, HeapBlobs, Value};

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

    // The public dynamic value keeps arrays as arrays: once normalized by a first re-encoding
    // (integers widen to 64 bits), encoding what it decodes gives the same bytes again.
    if let Ok(value) = decode::<Value>(envelope, &source) {
        let (envelope2, blobs2) = reencode(&value);
        let again: Value = decode(envelope2.get(0).unwrap_or_default(), &&blobs2)
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

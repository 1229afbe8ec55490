//! `Writer::send` / `Unit::decode` on a real ring: zero-copy decoding, offloading, bad input.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shm_arena::codec::{Array, Bytes, EncodeOptions};
use shm_arena::{Error, Region};

const WAIT: Duration = Duration::from_secs(5);

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Item<'a> {
    id: u64,
    name: &'a str,
    tags: BTreeMap<&'a str, &'a str>,
    #[serde(borrow)]
    note: Cow<'a, str>,
    #[serde(borrow)]
    samples: Array<'a, f32>,
    #[serde(borrow)]
    raw: Bytes<'a>,
    #[serde(with = "serde_bytes")]
    small: &'a [u8],
}

fn item<'a>(samples: &'a [f32], raw: &'a [u8]) -> Item<'a> {
    Item {
        id: 42,
        name: "frame-7",
        tags: [("camera", "left"), ("unit", "volts")].into(),
        note: Cow::Borrowed("calibrated"),
        samples: Array::from_slice(samples, &[samples.len() / 4, 4]).unwrap(),
        raw: Bytes::from(raw),
        small: b"tiny",
    }
}

/// Whether `inner` lies within `outer` (both slices of the same address space).
fn within(inner: &[u8], outer: &[u8]) -> bool {
    let (i, o) = (inner.as_ptr() as usize, outer.as_ptr() as usize);
    i >= o && i + inner.len() <= o + outer.len()
}

#[test]
fn decoded_leaves_borrow_the_units_blobs() {
    let region = Region::create(1 << 20).unwrap();
    let (mut writer, reader) = (region.writer().unwrap(), region.reader().unwrap());
    let samples: Vec<f32> = (0..8192).map(|i| i as f32 * 0.5).collect();
    let raw: Vec<u8> = (0..10_000).map(|i| (i * 7) as u8).collect();
    writer.send(&item(&samples, &raw)).unwrap();

    let unit = reader.next_unit(WAIT).unwrap();
    // Two leaves over the 4096-byte threshold, then the envelope.
    assert_eq!(unit.blob_count(), 3);
    let decoded: Item = unit.decode().unwrap();
    assert_eq!(decoded, item(&samples, &raw));
    assert!(decoded.samples.is_borrowed() && decoded.raw.is_borrowed());
    assert!(within(decoded.samples.as_bytes(), unit.blob(0).unwrap()));
    assert!(within(decoded.raw.as_slice(), unit.blob(1).unwrap()));
    // Inline leaves borrow from the envelope, which is itself in shared memory.
    let envelope = unit.blob(2).unwrap();
    assert!(within(decoded.name.as_bytes(), envelope));
    assert!(within(decoded.small, envelope));
    assert!(decoded.tags.keys().all(|k| within(k.as_bytes(), envelope)));
    // serde borrows a `Cow` only when the field itself says `#[serde(borrow)]`.
    assert!(matches!(&decoded.note, Cow::Borrowed(s) if within(s.as_bytes(), envelope)));
}

#[test]
fn threshold_decides_what_is_offloaded() {
    let region = Region::create(1 << 20).unwrap();
    let (mut writer, reader) = (region.writer().unwrap(), region.reader().unwrap());
    let samples = vec![1.0f32; 64];
    let raw = vec![9u8; 100];
    for (threshold, blobs) in [(usize::MAX, 1), (256, 2), (0, 4)] {
        let options = EncodeOptions::with_offload_threshold(threshold);
        writer.send_with(&item(&samples, &raw), &options).unwrap();
        let unit = reader.next_unit(WAIT).unwrap();
        assert_eq!(unit.blob_count(), blobs, "threshold {threshold}");
        let decoded: Item = unit.decode().unwrap();
        assert_eq!(decoded, item(&samples, &raw));
    }
}

#[test]
fn owned_units_decode_on_another_thread() {
    let region = Region::create(1 << 20).unwrap();
    let (mut writer, reader) = (region.writer().unwrap(), region.reader().unwrap());
    for i in 0..10u32 {
        writer.send(&(i, "text", vec![i; 3])).unwrap();
    }
    let units: Vec<_> = (0..10)
        .map(|_| reader.next_unit(WAIT).unwrap().into_owned())
        .collect();
    std::thread::spawn(move || {
        for (i, unit) in units.iter().enumerate().rev() {
            let (n, s, v): (u32, &str, Vec<u32>) = unit.decode().unwrap();
            assert_eq!((n, s, v), (i as u32, "text", vec![i as u32; 3]));
        }
    })
    .join()
    .unwrap();
    let cursors = region.cursors();
    assert_eq!(cursors.tail, cursors.head, "every owned unit was ended");
}

#[test]
fn failed_sends_publish_nothing() {
    let region = Region::create(1 << 16).unwrap();
    let (mut writer, reader) = (region.writer().unwrap(), region.reader().unwrap());
    let before = region.cursors();
    let huge = vec![0u8; 1 << 16];
    match writer.send(&Bytes::from(&huge[..])) {
        Err(Error::UnitTooLarge { max, .. }) => assert_eq!(max, 1 << 15),
        other => panic!("expected UnitTooLarge, got {other:?}"),
    }
    assert_eq!(region.cursors(), before);

    // A serializer error half-way (a map key that is not allowed by the type) aborts the unit.
    struct Fails;
    impl Serialize for Fails {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::{Error as _, SerializeSeq};
            let mut seq = s.serialize_seq(Some(2))?;
            seq.serialize_element(&Bytes::from(&[1u8; 8192][..]))?;
            drop(seq);
            Err(S::Error::custom("refused on purpose"))
        }
    }
    let err = writer.send(&Fails).unwrap_err();
    assert!(err.to_string().contains("refused on purpose"), "{err}");
    assert_eq!(region.cursors(), before);

    // Fill the ring, then try_send must refuse without publishing.
    let chunk = vec![1u8; 8000];
    let mut sent = 0;
    loop {
        match writer.try_send(&Bytes::from(&chunk[..])) {
            Ok(()) => sent += 1,
            Err(Error::WouldBlock(_)) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        sent >= 6,
        "a 64 KiB ring holds several 8 KB units, sent {sent}"
    );
    let full = region.cursors();
    assert!(matches!(
        writer.try_send(&Bytes::from(&chunk[..])),
        Err(Error::WouldBlock(_))
    ));
    assert_eq!(region.cursors(), full);
    for _ in 0..sent {
        let unit = reader.next_unit(WAIT).unwrap();
        let bytes: Bytes = unit.decode().unwrap();
        assert_eq!(bytes.as_slice(), &chunk[..]);
    }
}

#[test]
fn units_not_written_by_send_give_codec_errors() {
    let region = Region::create(1 << 16).unwrap();
    let (mut writer, reader) = (region.writer().unwrap(), region.reader().unwrap());
    // No blobs at all, garbage as an envelope, and a valid envelope whose marker points at the
    // envelope itself (index 0 of a one-blob unit, which has no leaves).
    writer.write_unit(&[]).unwrap();
    writer
        .write_unit(&[&[0xff, 0x13, 0x37, 0x00, 0x01]])
        .unwrap();
    let mut envelope = Vec::new();
    let mut blobs = shm_arena::codec::HeapBlobs::new();
    shm_arena::codec::encode(
        &Bytes::from(&[5u8; 5000][..]),
        &EncodeOptions::default(),
        &mut envelope,
        &mut blobs,
    )
    .unwrap();
    assert_eq!(blobs.len(), 1);
    writer.write_unit(&[&envelope]).unwrap();
    // The same envelope with its leaf: decodes.
    writer
        .write_unit(&[blobs.get(0).unwrap(), &envelope])
        .unwrap();

    for expect in ["no envelope", "", "leaf blobs"] {
        let unit = reader.next_unit(WAIT).unwrap();
        match unit.decode::<Bytes>() {
            Err(Error::Codec(message)) => assert!(message.contains(expect), "{message}"),
            other => panic!("expected a codec error, got {other:?}"),
        }
    }
    let unit = reader.next_unit(WAIT).unwrap();
    let bytes: Bytes = unit.decode().unwrap();
    assert_eq!(bytes.as_slice(), &[5u8; 5000][..]);
    assert!(bytes.is_borrowed());
}

#[cfg(feature = "ndarray")]
#[test]
fn decoded_arrays_give_ndarray_views_of_shared_memory() {
    let region = Region::create(1 << 20).unwrap();
    let (mut writer, reader) = (region.writer().unwrap(), region.reader().unwrap());
    let data: Vec<f64> = (0..6000).map(f64::from).collect();
    writer
        .send(&Array::from_slice(&data, &[20, 30, 10]).unwrap())
        .unwrap();
    let unit = reader.next_unit(WAIT).unwrap();
    let array: Array<f64> = unit.decode().unwrap();
    let view = array.view().unwrap();
    assert_eq!(view.shape(), &[20, 30, 10]);
    assert_eq!(view[[19, 29, 9]], 5999.0);
    assert_eq!(view[[1, 2, 3]], 323.0);
    assert!(within(
        bytemuck_bytes(view.as_slice().unwrap()),
        unit.blob(0).unwrap()
    ));
}

#[cfg(feature = "ndarray")]
fn bytemuck_bytes(values: &[f64]) -> &[u8] {
    // SAFETY: f64 has no padding and every byte pattern is a valid u8.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast(), std::mem::size_of_val(values)) }
}

//! Entry points for the fuzz targets in `fuzz/`, and the placement model the tests share;
//! compiled with the `fuzzing` feature only (fuzz/ and the crate's own tests turn it on), so
//! the committed corpus also replays as ordinary tests on stable (`tests/fuzz_corpus.rs`).
//!
//! Each function must never panic on any input except where it found a bug.

#![doc(hidden)]

pub mod placement;

use std::collections::VecDeque;

use placement::{predict_unit, UnitOutcome};

pub use crate::layout::validate_header_bytes;
use crate::layout::HEADER_SIZE;
use crate::{Backing, Error, Region, RegionOptions};

/// Header validation on arbitrary bytes: never panics; accepts only self-consistent prefixes.
///
/// Two readings of the input: all of it as the header of a region exactly its length, and
/// (the one that reaches accepted headers within the fuzzer's 4 KiB inputs: the smallest
/// region is 8 KiB) its first 8 bytes as a region length with the rest as that region's
/// header.
pub fn region_header(data: &[u8]) {
    let check = |bytes: &[u8], region_len: u64| {
        if let Ok(prefix) = validate_header_bytes(bytes, region_len) {
            assert_eq!(region_len, prefix.region_len());
            assert!(prefix.data_offset >= HEADER_SIZE as u64);
            assert!(prefix.capacity.is_power_of_two());
        }
    };
    check(data, data.len() as u64);
    if let Some((len, header)) = data.split_first_chunk::<8>() {
        check(header, u64::from_le_bytes(*len));
    }
}

/// Byte cursor over the fuzz input.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.byte()?, self.byte()?]))
    }
}

fn pattern(unit: u64, blob: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (unit as usize * 31 + blob * 7 + i) as u8)
        .collect()
}

/// A unit the model knows: position, span and contents.
struct Known {
    position: u64,
    span: u64,
    contents: Vec<Vec<u8>>,
}

/// Arena operations decoded from `data`, run on a heap region and checked against a model:
/// every unit lands exactly where the placement rule says, comes out in order with its bytes
/// intact, a try-write fails exactly when the model says the ring is full or the unit too
/// large, and units ended out of order return space exactly when the released prefix grows.
pub fn arena_ops(data: &[u8]) {
    let mut input = Input(data);
    let capacity = 4096u64 << (input.byte().unwrap_or(0) % 3);
    let region =
        Region::create_with(RegionOptions::new(capacity).backing(Backing::Anonymous)).unwrap();
    let mut writer = region.writer().unwrap();
    let reader = region.reader().unwrap();
    let mut queued: VecDeque<Known> = VecDeque::new();
    let mut held: Vec<(Known, crate::OwnedUnit)> = Vec::new();
    let mut head = 0u64;
    let mut next_id = 0u64;
    while let Some(op) = input.byte() {
        match op % 4 {
            0 | 1 => {
                let blobs = usize::from(op >> 2) % 5;
                let mut lens = Vec::new();
                for _ in 0..blobs {
                    let raw = usize::from(input.u16().unwrap_or(0));
                    lens.push(if raw > 60000 {
                        capacity as usize / 2
                    } else {
                        raw % 3000
                    });
                }
                let contents: Vec<Vec<u8>> = lens
                    .iter()
                    .enumerate()
                    .map(|(b, &l)| pattern(next_id, b, l))
                    .collect();
                let tail = held
                    .iter()
                    .map(|h| h.0.position)
                    .chain(queued.front().map(|k| k.position))
                    .min()
                    .unwrap_or(head);
                let expected = predict_unit(head, &lens, capacity, tail);
                let abort = op & 0x80 != 0;
                let mut unit = writer.try_begin_unit().unwrap();
                let mut result = Ok(());
                for (b, blob) in contents.iter().enumerate() {
                    result = if b % 2 == 0 {
                        unit.push(blob).map(drop)
                    } else {
                        unit.blob_mut(blob.len())
                            .map(|dst| dst.copy_from_slice(blob))
                    };
                    if result.is_err() {
                        break;
                    }
                }
                if result.is_ok() && !abort {
                    result = unit.commit();
                }
                match (result, expected) {
                    (Ok(()), UnitOutcome::Span(span)) if !abort => {
                        queued.push_back(Known {
                            position: head,
                            span,
                            contents,
                        });
                        head += span;
                        next_id += 1;
                    }
                    (Ok(()), _) if abort => {}
                    // An aborted unit may still have hit the limit or a full ring on a blob.
                    (Err(Error::UnitTooLarge { .. }), UnitOutcome::TooLarge) => {}
                    (Err(Error::WouldBlock(_)), UnitOutcome::Full) => {}
                    (result, expected) => {
                        if !(abort && result.is_ok()) {
                            panic!("unit {lens:?} at {head} (tail {tail}): got {result:?}, model says {expected:?}");
                        }
                    }
                }
                assert_eq!(region.cursors().head, head, "head after a write");
            }
            2 => match reader.try_next_unit().unwrap() {
                Some(unit) => {
                    let known = queued.pop_front().expect("a unit the model lacks");
                    assert_eq!((unit.position(), unit.span()), (known.position, known.span));
                    assert_eq!(unit.blob_count(), known.contents.len());
                    for (b, want) in known.contents.iter().enumerate() {
                        let got = unit.blob(b).unwrap();
                        assert_eq!(got, &want[..], "unit at {} blob {b}", known.position);
                        assert_eq!(got.as_ptr() as usize % 64, 0);
                    }
                    held.push((known, unit.into_owned()));
                }
                None => assert!(queued.is_empty(), "a committed unit was not delivered"),
            },
            _ => {
                if !held.is_empty() {
                    let i = usize::from(input.byte().unwrap_or(0)) % held.len();
                    drop(held.remove(i));
                }
            }
        }
        let expected_tail = held
            .iter()
            .map(|h| h.0.position)
            .chain(queued.front().map(|k| k.position))
            .min()
            .unwrap_or(head);
        let c = region.cursors();
        assert_eq!((c.head, c.tail), (head, expected_tail), "cursors");
        assert!(c.head - c.tail <= capacity);
    }
}

/// Arbitrary bytes written over a live region's header and ring (as a hostile peer could),
/// then every reader operation: errors are fine, panics and out-of-bounds reads are not.
pub fn corrupt_region(data: &[u8]) {
    let mut input = Input(data);
    let capacity = 4096u64;
    let region =
        Region::create_with(RegionOptions::new(capacity).backing(Backing::Anonymous)).unwrap();
    let mut writer = region.writer().unwrap();
    let reader = region.reader().unwrap();
    // A few genuine units first, so there are records to damage.
    for i in 0..(input.byte().unwrap_or(3) % 6) {
        let _ = writer.write_unit(&[&[i; 100], &[i; 5], &[i; 70]]);
    }
    let store = region.store();
    let base = store.base();
    let len = HEADER_SIZE + capacity as usize;
    while let (Some(hi), Some(lo), Some(value)) = (input.byte(), input.byte(), input.byte()) {
        // Offsets cluster on the interesting bytes: the header's signals and lane cursors
        // (128..1152), and the records.
        let offset = (usize::from(hi) << 8 | usize::from(lo)) % len;
        let offset = if hi & 0x80 != 0 {
            128 + offset % 1024
        } else {
            offset
        };
        // SAFETY: offset < len, the size of the region's heap buffer. Under the fuzzer only
        // this thread touches the region, so the byte write races with nothing.
        unsafe { base.add(offset).write_volatile(value) };
    }
    let mut units = Vec::new();
    for _ in 0..8 {
        match reader.try_next_unit() {
            Ok(Some(unit)) => {
                for blob in unit.blobs().flatten() {
                    std::hint::black_box(blob.iter().map(|&b| u64::from(b)).sum::<u64>());
                }
                units.push(unit.into_owned());
            }
            Ok(None) | Err(_) => break,
        }
    }
    drop(units);
    let _ = writer.try_begin_unit().and_then(|mut u| {
        u.push(&[1; 64])?;
        u.commit()
    });
}

/// The same attack on a live MPMC region: two lanes with committed, claimed, held and ended
/// units, then hostile bytes over the lanes' cursors, owners, reader slots (intents) and
/// rings; then claims by two readers, the clean-up of a (supposedly) dead reader's units in
/// every lane, ends, and writes. Errors are fine; panics and out-of-bounds accesses are not.
pub fn corrupt_mpmc_region(data: &[u8]) {
    use crate::layout::LANES_OFFSET;
    use crate::storage::Storage;
    let mut input = Input(data);
    let capacity = 4096u64;
    let region = Region::create_with(
        RegionOptions::new(capacity)
            .mpmc(2, 2)
            .backing(Backing::Anonymous),
    )
    .unwrap();
    let mut writers = [region.writer().unwrap(), region.writer().unwrap()];
    let readers = [region.reader().unwrap(), region.reader().unwrap()];
    for i in 0..(input.byte().unwrap_or(3) % 6) {
        for w in &mut writers {
            let _ = w.write_unit(&[&[i; 100], &[i; 5], &[i; 70]]);
        }
    }
    // Some units claimed and held across the damage, one of them by each reader.
    let mut held: Vec<_> = readers
        .iter()
        .filter_map(|r| r.try_next_unit().ok().flatten().map(|u| u.into_owned()))
        .collect();
    let store = region.store();
    let geometry = store.geometry();
    let base = store.base();
    let len = (geometry.data_offset() as u64 + 2 * capacity) as usize;
    let header_end = geometry.readers_offset() + 2 * 128;
    while let (Some(hi), Some(lo), Some(value)) = (input.byte(), input.byte(), input.byte()) {
        let offset = (usize::from(hi) << 8 | usize::from(lo)) % len;
        let offset = if hi & 0x80 != 0 {
            LANES_OFFSET + offset % (header_end - LANES_OFFSET)
        } else {
            offset
        };
        // SAFETY: offset < len, the size of the region's heap buffer. Under the fuzzer only
        // this thread touches the region, so the byte write races with nothing.
        unsafe { base.add(offset).write_volatile(value) };
    }
    for round in 0..6 {
        let reader = &readers[round % 2];
        if let Ok(Some(unit)) = reader.try_next_unit() {
            for blob in unit.blobs().flatten() {
                std::hint::black_box(blob.iter().map(|&b| u64::from(b)).sum::<u64>());
            }
            held.push(unit.into_owned());
        }
    }
    // What a survivor runs for a dead reader, over hostile cursors, records and intents.
    for lane in 0..2 {
        for slot in 0..2 {
            crate::ring::reap::reap_lane(store, lane, slot);
        }
        let _ = crate::ring::participants::check_readers(store, lane, false);
    }
    let _ = crate::ring::participants::check_writers(store, false);
    drop(held);
    for w in &mut writers {
        let _ = w.try_begin_unit().and_then(|mut u| {
            u.push(&[1; 64])?;
            u.commit()
        });
    }
}

//! Batches: a writer publishing several units with one head store, a reader taking and ending
//! a run of units together.

use std::time::Duration;

use shm_arena::{Error, Region, RegionOptions};

const WAIT: Duration = Duration::from_secs(5);

/// Units committed in a batch are published when it is flushed, when `max_units` are pending,
/// or when it is dropped; not before (this reader has not started taking units by their
/// stamps, so it sees only what the head publishes).
#[test]
fn a_batch_publishes_at_its_flush_its_limit_and_its_drop() {
    let region = Region::create(1 << 16).unwrap();
    let (mut writer, reader) = (region.writer().unwrap(), region.reader().unwrap());
    let mut batch = writer.begin_batch(4);
    for i in 0..3u8 {
        batch.write_unit(&[&[i]]).unwrap();
    }
    assert_eq!(batch.pending(), 3);
    assert!(
        reader.try_next_unit().unwrap().is_none(),
        "pending units are not published"
    );
    assert_eq!(region.cursors().head, 0);
    batch.flush();
    assert_eq!(batch.pending(), 0);
    assert_eq!(region.cursors().head, 3 * 128);
    for i in 3..7u8 {
        batch.write_unit(&[&[i]]).unwrap();
    }
    // The fourth pending unit reached the limit: published.
    assert_eq!((batch.pending(), region.cursors().head), (0, 7 * 128));
    batch.write_unit(&[&[7]]).unwrap();
    assert_eq!(region.cursors().head, 7 * 128);
    drop(batch);
    assert_eq!(region.cursors().head, 8 * 128);
    // Out of the batch, every commit publishes again.
    writer.write_unit(&[&[8]]).unwrap();
    assert_eq!(region.cursors().head, 9 * 128);
    let got: Vec<u8> = (0..9)
        .map(|_| reader.next_unit(WAIT).unwrap().blob(0).unwrap()[0])
        .collect();
    assert_eq!(got, (0..9).collect::<Vec<_>>());
}

/// A batch writer that runs out of space publishes what is pending before it waits, so the
/// reader can free the space: a batch limit far above what the ring holds does not deadlock.
#[test]
fn a_batch_writer_waiting_for_space_publishes_first() {
    let region = Region::create(1 << 12).unwrap();
    let (mut writer, reader) = (region.writer().unwrap(), region.reader().unwrap());
    writer.set_timeout(Some(WAIT));
    let units = 1000u32;
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut batch = writer.begin_batch(u32::MAX);
            for i in 0..units {
                batch.write_unit(&[&i.to_le_bytes()]).unwrap();
            }
        });
        for i in 0..units {
            let unit = reader.next_unit(WAIT).unwrap();
            assert_eq!(unit.blob(0).unwrap(), i.to_le_bytes());
        }
    });
    assert!(matches!(reader.try_next_unit(), Err(Error::Closed(_))));
}

/// A full ring with `try_begin_unit` in a batch: `WouldBlock` comes with the pending units
/// published (a caller that retries is not left waiting for units nobody can see).
#[test]
fn would_block_in_a_batch_publishes_the_pending_units() {
    let region = Region::create(1 << 12).unwrap();
    let (mut writer, reader) = (region.writer().unwrap(), region.reader().unwrap());
    let mut batch = writer.begin_batch(1000);
    let mut written = 0u32;
    loop {
        let mut unit = batch.try_begin_unit().unwrap();
        match unit.push(&written.to_le_bytes()) {
            Ok(_) => unit.commit().unwrap(),
            Err(Error::WouldBlock(_)) => break,
            Err(e) => panic!("{e:?}"),
        }
        written += 1;
    }
    assert_eq!(batch.pending(), 0);
    let batch_in = reader.try_next_batch(usize::MAX).unwrap();
    assert_eq!(batch_in.len(), written as usize);
}

/// Reader batches: one ends its contiguous run at once; two batches ended in reverse order
/// still return every byte; the units are the stream in order.
#[test]
fn reader_batches_end_their_runs_in_any_order() {
    let region = Region::create(1 << 16).unwrap();
    let (mut writer, reader) = (region.writer().unwrap(), region.reader().unwrap());
    for i in 0..30u32 {
        writer.write_unit(&[&i.to_le_bytes()]).unwrap();
    }
    let first = reader.next_batch(10, WAIT).unwrap();
    let second = reader.next_batch(10, WAIT).unwrap();
    assert_eq!((first.len(), second.len()), (10, 10));
    let seen: Vec<u32> = first
        .iter()
        .chain(second.iter())
        .map(|u| u32::from_le_bytes(u.blob(0).unwrap().try_into().unwrap()))
        .collect();
    assert_eq!(seen, (0..20).collect::<Vec<_>>());
    drop(second); // out of order: marked, the tail waits for the first batch
    assert_eq!(region.cursors().tail, 0);
    first.end_batch();
    assert_eq!(region.cursors().tail, 20 * 128);
    let rest = reader.try_next_batch(64).unwrap();
    assert_eq!(rest.len(), 10);
    assert_eq!(rest.get(9).unwrap().blob(0).unwrap(), 29u32.to_le_bytes());
    drop(rest);
    assert_eq!(region.cursors().tail, 30 * 128);
    assert!(reader.try_next_batch(64).unwrap().is_empty());
}

/// Batches stream through a small ring between two threads, values included.
#[test]
fn batched_streams_of_values() {
    let region = Region::create_with(RegionOptions::new(1 << 14)).unwrap();
    let (mut writer, reader) = (region.writer().unwrap(), region.reader().unwrap());
    writer.set_timeout(Some(WAIT));
    let units = 20_000u64;
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut batch = writer.begin_batch(32);
            for i in 0..units {
                batch.send(&(i, "unit")).unwrap();
            }
        });
        let mut next = 0;
        while next < units {
            let batch = reader.next_batch(64, WAIT).unwrap();
            for unit in batch.iter() {
                let (i, text): (u64, &str) = unit.decode().unwrap();
                assert_eq!((i, text), (next, "unit"));
                next += 1;
            }
        }
    });
}

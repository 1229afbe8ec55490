//! Round trip of a realistic item between two threads: a 4 MiB `f32` array (1 Mi elements), a
//! 64 KiB byte buffer and some metadata (an id, two strings, a small string map). Each contender
//! encodes and sends on a writer thread; the measured thread receives, decodes and touches the
//! data.
//!
//! - `shm-arena`: `Writer::send` of an item borrowing the prepared source (`Array::from_slice_1d`,
//!   `serde_bytes`): the array and the buffer are copied once into their own blobs, the small
//!   envelope is the last blob. The reader decodes `ItemRef<'_>`, which borrows everything
//!   (strings, map entries, array, buffer) straight from shared memory.
//! - `postcard`: what a user of a byte-oriented serde format does: serialize into a `Vec<u8>`,
//!   send it through a bounded `crossbeam-channel`, deserialize into an owned struct (`Vec<f32>`,
//!   `serde_bytes` for the buffer, `String`s).
//! - `memcpy`: the limit. The payload bytes (array and buffer) copied once, source to a
//!   destination of the same size, on one thread with no synchronisation and no encoding. It is
//!   the limit in bytes copied, not in wall time: the two-thread contenders overlap the writer's
//!   copy with the reader's read of the previous item, so shm-arena can beat it.
//!
//! Every contender's reader does the same work: it sums all the `f32`s (16 independent lanes, so
//! it is bound by memory rather than by the latency of a float add), checksums every byte of the
//! buffer, checks the id and the metadata, and asserts the sums match the source, so a contender
//! that lost or garbled data fails instead of looking fast.
//!
//! The bytes each contender copies per item are printed at start. The writer thread is long-lived
//! and fed batch sizes by the measured thread, as in `benches/spsc.rs`, so thread start-up is not
//! measured. `cargo bench --bench codec` takes about 15 s.

mod harness;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use harness::{contender, Transfer, TwoThreads};
use serde::{Deserialize, Serialize};
use shm_arena::codec::{self, Array, EncodeOptions, HeapBlobs};
use shm_arena::Region;

/// Elements of the `f32` array: 4 MiB.
const SAMPLES: usize = 1 << 20;
/// Bytes of the byte buffer: 64 KiB.
const BUFFER: usize = 64 << 10;
/// Payload bytes per item (what Throughput counts): the array and the buffer.
const PAYLOAD: usize = SAMPLES * size_of::<f32>() + BUFFER;

/// Ring capacity of the arena. A unit may use at most half the ring, so 32 MiB holds about seven
/// items; the channel gets the same number of slots, so both buffer equally far ahead.
const RING: u64 = 32 << 20;

/// A stuck benchmark should fail, not hang the machine.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The prepared data every writer sends: built once, shared with the writer thread.
struct Source {
    name: String,
    origin: String,
    tags: BTreeMap<String, String>,
    samples: Vec<f32>,
    buffer: Vec<u8>,
    /// `touch` of item 0, computed once: re-reading the source per item would double the
    /// reader's work.
    touched_0: u64,
}

/// The id's share of `touch`: added, so `touch` of item `id` is `touched_0 + id_term(id)`.
fn id_term(id: u64) -> u64 {
    id.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

impl Source {
    fn new() -> Self {
        let mut source = Source {
            name: "camera-3/frame".to_owned(),
            origin: "bench://codec/writer-thread".to_owned(),
            tags: BTreeMap::from([
                ("units".to_owned(), "volts".to_owned()),
                ("sensor".to_owned(), "adc-7 rev B".to_owned()),
                ("calibration".to_owned(), "2024-11-02".to_owned()),
                ("site".to_owned(), "lab 2".to_owned()),
            ]),
            // Values whose sum depends on every element and stays exactly representable per
            // lane, so the same sum comes out of every contender.
            samples: (0..SAMPLES).map(|i| (i % 1024) as f32 * 0.25).collect(),
            buffer: (0..BUFFER).map(|i| (i * 31 + 7) as u8).collect(),
            touched_0: 0,
        };
        source.touched_0 = touch(&Touched {
            id: 0,
            name: &source.name,
            origin: &source.origin,
            tags: source.tags.len(),
            samples: &source.samples,
            buffer: &source.buffer,
        });
        source
    }

    /// Bytes of metadata text a decoder into owned types copies (strings, map keys and values).
    fn text_bytes(&self) -> usize {
        self.name.len()
            + self.origin.len()
            + self
                .tags
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }

    /// What the reader's touch must return for item `id`.
    fn expected(&self, id: u64) -> u64 {
        self.touched_0.wrapping_add(id_term(id))
    }
}

/// What the shm-arena writer sends: everything borrowed from the source.
#[derive(Serialize)]
struct ArenaOut<'a> {
    id: u64,
    name: &'a str,
    origin: &'a str,
    tags: &'a BTreeMap<String, String>,
    samples: Array<'a, f32>,
    #[serde(with = "serde_bytes")]
    buffer: &'a [u8],
}

impl<'a> ArenaOut<'a> {
    fn new(source: &'a Source, id: u64) -> Self {
        ArenaOut {
            id,
            name: &source.name,
            origin: &source.origin,
            tags: &source.tags,
            samples: Array::from_slice_1d(&source.samples),
            buffer: &source.buffer,
        }
    }
}

/// What the shm-arena reader decodes: everything borrowed from the unit.
#[derive(Deserialize)]
struct ItemRef<'a> {
    id: u64,
    name: &'a str,
    origin: &'a str,
    #[serde(borrow)]
    tags: BTreeMap<&'a str, &'a str>,
    #[serde(borrow)]
    samples: Array<'a, f32>,
    buffer: &'a [u8],
}

/// What the postcard writer serializes: the same fields, the array as a plain slice.
#[derive(Serialize)]
struct PostcardOut<'a> {
    id: u64,
    name: &'a str,
    origin: &'a str,
    tags: &'a BTreeMap<String, String>,
    samples: &'a [f32],
    #[serde(with = "serde_bytes")]
    buffer: &'a [u8],
}

impl<'a> PostcardOut<'a> {
    fn new(source: &'a Source, id: u64) -> Self {
        PostcardOut {
            id,
            name: &source.name,
            origin: &source.origin,
            tags: &source.tags,
            samples: &source.samples,
            buffer: &source.buffer,
        }
    }
}

/// What the postcard reader deserializes into: owned, as a user of a byte format would.
#[derive(Deserialize)]
struct Item {
    id: u64,
    name: String,
    origin: String,
    tags: BTreeMap<String, String>,
    samples: Vec<f32>,
    #[serde(with = "serde_bytes")]
    buffer: Vec<u8>,
}

/// The parts of a received item the reader looks at, whatever the contender.
struct Touched<'a> {
    id: u64,
    name: &'a str,
    origin: &'a str,
    tags: usize,
    samples: &'a [f32],
    buffer: &'a [u8],
}

/// Sums every `f32` in 16 independent lanes: a single accumulator would be bound by the latency of
/// a float add, which would hide the differences between contenders.
fn sum_f32(samples: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let mut chunks = samples.chunks_exact(16);
    for chunk in &mut chunks {
        for (lane, x) in lanes.iter_mut().zip(chunk) {
            *lane += x;
        }
    }
    lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// Reads every byte: a wrapping sum of little-endian words (the compiler vectorises it).
fn checksum(bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(8);
    let sum = words.by_ref().fold(0u64, |acc, w| {
        acc.wrapping_add(u64::from_le_bytes(w.try_into().expect("8-byte chunk")))
    });
    words
        .remainder()
        .iter()
        .fold(sum, |acc, &b| acc.wrapping_add(u64::from(b)))
}

/// The reader's work on one item, identical for every contender.
fn touch(item: &Touched<'_>) -> u64 {
    let meta = (item.name.len() + item.origin.len() + item.tags) as u64;
    u64::from(sum_f32(item.samples).to_bits())
        .wrapping_add(checksum(item.buffer))
        .wrapping_add(meta)
        .wrapping_add(id_term(item.id))
}

/// Sizes derived from the design, printed at start and used to size the buffers.
struct Sizes {
    /// Envelope bytes of one arena unit (metadata and the two markers).
    envelope: usize,
    /// Bytes of one arena unit in the ring (record, aligned blobs).
    unit: u64,
    /// Bytes of one postcard message.
    message: usize,
}

impl Sizes {
    fn new(source: &Source) -> Self {
        let mut envelope = Vec::new();
        let mut blobs = HeapBlobs::new();
        codec::encode(
            &ArenaOut::new(source, 0),
            &EncodeOptions::default(),
            &mut envelope,
            &mut blobs,
        )
        .expect("encode");
        assert_eq!(blobs.total_bytes(), PAYLOAD, "array and buffer offloaded");
        let blob_lens: Vec<usize> = (0..blobs.len() as u32)
            .map(|i| blobs.get(i).expect("blob").len())
            .chain([envelope.len()])
            .collect();
        let message = postcard::to_allocvec(&PostcardOut::new(source, 0))
            .expect("postcard")
            .len();
        Sizes {
            envelope: envelope.len(),
            unit: shm_arena::unit_size(&blob_lens),
            message,
        }
    }

    /// Items either contender can have in flight.
    fn in_flight(&self) -> usize {
        (RING / self.unit) as usize
    }

    fn report(&self, source: &Source) {
        let text = source.text_bytes();
        eprintln!(
            "codec bench: payload {PAYLOAD} B per item (4 MiB f32 array + 64 KiB buffer), \
             metadata text {text} B; {} items in flight",
            self.in_flight()
        );
        eprintln!("bytes copied per item, by design:");
        eprintln!(
            "  shm-arena: {} = payload once into the ring + envelope ({} B) twice (built in the \
             writer's buffer, then pushed into the ring); decode copies nothing",
            PAYLOAD + 2 * self.envelope,
            self.envelope
        );
        eprintln!(
            "  postcard:  {} = message ({} B) serialized into a Vec + payload and text copied \
             out by deserialize; allocates the message, a Vec<f32> (grown past serde's 1 MiB \
             preallocation cap, so up to 3 MiB more if realloc moves it), the buffer, strings \
             and map nodes",
            self.message + PAYLOAD + text,
            self.message
        );
        eprintln!("  memcpy:    {PAYLOAD} = payload once");
    }
}

fn arena(source: &Arc<Source>, sizes: &Sizes) -> impl Transfer {
    let region = Region::create(RING).expect("memfd region");
    let mut writer = region.writer().expect("writer");
    writer.set_timeout(Some(TIMEOUT));
    let reader = region.reader().expect("reader");
    // Writer and reader keep the mapping alive.
    drop(region);
    assert!(sizes.unit <= writer.max_unit(), "an item fits one unit");
    let out = Arc::clone(source);
    let check = Arc::clone(source);
    TwoThreads::new(
        move |i| writer.send(&ArenaOut::new(&out, i)).expect("send"),
        move |i| {
            let unit = reader.next_unit(TIMEOUT).expect("next unit");
            let item: ItemRef<'_> = unit.decode().expect("decode");
            // The claim under test: the array is a view of shared memory, not a copy.
            assert!(item.samples.is_borrowed(), "array decoded borrowed");
            let sum = touch(&Touched {
                id: item.id,
                name: item.name,
                origin: item.origin,
                tags: item.tags.len(),
                samples: item.samples.as_slice(),
                buffer: item.buffer,
            });
            assert_eq!(sum, check.expected(i), "item {i} arrived intact");
            sum
        },
    )
}

fn postcard(source: &Arc<Source>, sizes: &Sizes) -> impl Transfer {
    let (sender, receiver) = crossbeam_channel::bounded::<Vec<u8>>(sizes.in_flight());
    let out = Arc::clone(source);
    let check = Arc::clone(source);
    let message = sizes.message;
    TwoThreads::new(
        move |i| {
            // Sized up front, so serializing never reallocates: one copy, one allocation.
            let bytes =
                postcard::to_extend(&PostcardOut::new(&out, i), Vec::with_capacity(message))
                    .expect("serialize");
            sender.send_timeout(bytes, TIMEOUT).expect("send");
        },
        move |i| {
            let bytes = receiver.recv_timeout(TIMEOUT).expect("recv");
            let item: Item = postcard::from_bytes(&bytes).expect("deserialize");
            let sum = touch(&Touched {
                id: item.id,
                name: &item.name,
                origin: &item.origin,
                tags: item.tags.len(),
                samples: &item.samples,
                buffer: &item.buffer,
            });
            assert_eq!(sum, check.expected(i), "item {i} arrived intact");
            sum
        },
    )
}

/// The payload copied once into a destination of the same size and read there, on one thread.
struct Memcpy {
    source: Arc<Source>,
    samples: Vec<f32>,
    buffer: Vec<u8>,
}

fn memcpy(source: &Arc<Source>) -> impl Transfer {
    Memcpy {
        source: Arc::clone(source),
        samples: vec![0.0; SAMPLES],
        buffer: vec![0; BUFFER],
    }
}

impl Transfer for Memcpy {
    fn transfer(&mut self, items: u64) -> Duration {
        let start = Instant::now();
        let mut sum = 0u64;
        for i in 0..items {
            self.samples.copy_from_slice(&self.source.samples);
            self.buffer.copy_from_slice(&self.source.buffer);
            let item = Touched {
                id: i,
                name: &self.source.name,
                origin: &self.source.origin,
                tags: self.source.tags.len(),
                samples: &self.samples,
                buffer: &self.buffer,
            };
            let touched = touch(&item);
            assert_eq!(touched, self.source.expected(i), "item {i} copied intact");
            sum = sum.wrapping_add(touched);
        }
        black_box(sum);
        start.elapsed()
    }
}

fn codec(c: &mut Criterion) {
    let source = Arc::new(Source::new());
    let sizes = Sizes::new(&source);
    sizes.report(&source);
    let mut group = c.benchmark_group("codec/4MiB-f32+64KiB");
    group.throughput(Throughput::Bytes(PAYLOAD as u64));
    contender(&mut group, "shm-arena", || arena(&source, &sizes));
    contender(&mut group, "postcard", || postcard(&source, &sizes));
    contender(&mut group, "memcpy", || memcpy(&source));
    group.finish();
}

criterion_group! {
    name = benches;
    // Short by default; command-line options such as `--measurement-time` still override these.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10);
    targets = codec
}
criterion_main!(benches);

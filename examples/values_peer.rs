//! The Rust end of a Rust <-> Python exchange of values (docs/FORMAT.md, "Across languages"):
//! Python creates a named region (`shm_arena.Region(cap, backing="named")`) and starts this
//! program with its name.
//!
//! ```sh
//! # Rust sends `count` frames; Python reads them with `reader.recv()`:
//! values_peer send --name /shm-arena-... --count 100 --size 4194304
//! # Rust reads `count` items Python sent with `writer.send(dict)` and prints one line per item:
//! values_peer recv --name /shm-arena-... --count 100
//! ```
//!
//! `send` writes `Frame`s: a struct with strings, an enum, an option, a tuple, a
//! `codec::Array<f32>` of shape `[2, 64]` (element `[i, j]` = `seq * 1000 + i * 64 + j`) and a
//! `codec::Array<u8>` of `--size` bytes (its first and last bytes `seq % 251`). Python receives
//! dicts whose arrays are views of shared memory. `recv` decodes what the Python tests send into
//! `Item` and prints a summary the test compares with what it sent.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shm_arena::codec::{Array, Bytes};
use shm_arena::Region;

const WAIT: Duration = Duration::from_secs(30);

/// What Rust sends.
#[derive(Serialize)]
struct Frame<'a> {
    seq: u64,
    label: String,
    kind: Kind,
    tags: Vec<&'a str>,
    gain: Option<f32>,
    pair: (i16, f64),
    spectrum: Array<'a, f32>,
    data: Array<'a, u8>,
}

/// What Python sends (a dict with these keys), decoded borrowing from shared memory.
#[derive(Deserialize, Debug)]
struct Item<'a> {
    seq: u64,
    name: &'a str,
    #[serde(borrow)]
    samples: Array<'a, f32>,
    #[serde(borrow)]
    raw: Bytes<'a>,
    flags: Vec<bool>,
    meta: BTreeMap<String, i64>,
    missing: Option<i32>,
    present: Option<i32>,
    kind: Kind,
    pair: (i16, f64),
}

#[derive(Serialize, Deserialize, Debug)]
enum Kind {
    Plain,
    Scaled(f64),
    Window { start: u32, len: u32 },
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| -> Option<&str> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(String::as_str)
    };
    let name = flag("--name").ok_or("--name is required")?;
    let count: u64 = flag("--count").unwrap_or("10").parse()?;
    let size: usize = flag("--size").unwrap_or("4096").parse()?;
    let region = Region::open_name(name)?;
    match args.first().map(String::as_str) {
        Some("send") => send(&region, count, size),
        Some("recv") => recv(&region, count),
        _ => Err("usage: values_peer send|recv --name NAME [--count N] [--size BYTES]".into()),
    }
}

fn send(region: &Region, count: u64, size: usize) -> Result<(), Box<dyn std::error::Error>> {
    let mut writer = region.writer()?;
    writer.set_timeout(Some(WAIT));
    let mut data = vec![0u8; size];
    let mut spectrum = vec![0f32; 128];
    for seq in 0..count {
        // Stamped, not refilled: the Python producers send the same array every time too, so
        // what is measured is the transport's one copy (the test reads both ends).
        let stamp = (seq % 251) as u8;
        if let Some(last) = data.len().checked_sub(1) {
            data[0] = stamp;
            data[last] = stamp;
        }
        for (i, x) in spectrum.iter_mut().enumerate() {
            *x = (seq * 1000 + i as u64) as f32;
        }
        let kind = match seq % 3 {
            0 => Kind::Plain,
            1 => Kind::Scaled(seq as f64 / 2.0),
            _ => Kind::Window {
                start: seq as u32,
                len: 7,
            },
        };
        writer.send(&Frame {
            seq,
            label: format!("frame-{seq}"),
            kind,
            tags: vec!["rust", "f32"],
            gain: (seq % 2 == 0).then_some(0.5),
            pair: (-(seq as i16), 0.25),
            spectrum: Array::from_slice(&spectrum, &[2, 64])?,
            data: Array::from_slice_1d(&data),
        })?;
    }
    // The reader may still be reading: dropping the writer detaches it, which the reader sees
    // as the end of the stream once it drained the ring.
    Ok(())
}

fn recv(region: &Region, count: u64) -> Result<(), Box<dyn std::error::Error>> {
    let reader = region.reader()?;
    for _ in 0..count {
        let unit = reader.next_unit(WAIT)?;
        let item: Item = unit.decode()?;
        let sum: f64 = item.samples.as_slice().iter().map(|&x| f64::from(x)).sum();
        println!(
            "seq={} name={} samples={:?} sum={:.1} borrowed={} raw={}x{} flags={:?} meta={:?} \
             missing={:?} present={:?} kind={:?} pair={:?}",
            item.seq,
            item.name,
            item.samples.shape(),
            sum,
            item.samples.is_borrowed(),
            item.raw.len(),
            item.raw.first().copied().unwrap_or(0),
            item.flags,
            item.meta,
            item.missing,
            item.present,
            item.kind,
            item.pair,
        );
    }
    Ok(())
}

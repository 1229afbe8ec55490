//! A data-loading pipeline: a worker process produces items (an `f32` array of a few MiB plus
//! metadata), this process verifies every one. First through the arena
//! (`shm_arena::worker::iterate_in_subprocess`: one copy into shared memory, decoded in place),
//! then, for comparison, the same items through the worker's stdout pipe encoded with postcard
//! (length-prefixed frames, the array as `serde_bytes`), which is what such pipelines do today.
//!
//! ```text
//! cargo run --release --example pipeline
//! cargo run --release --example pipeline -- --items 1000 --mib 2 --capacity-mib 16 --reps 5
//! ```
//!
//! Both runs generate the same values with the same code, verify every element the same way,
//! and include starting the worker process. The program exits non-zero if any item is wrong
//! or missing, or if a worker fails.

#[path = "common/spread.rs"]
mod spread;

use spread::spread;
use std::collections::BTreeMap;
use std::io::{BufWriter, IsTerminal, Read, Write};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use shm_arena::codec::Array;
use shm_arena::worker::{iterate_in_subprocess, Options, Output, Registry};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// What the worker is asked to produce.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Plan {
    items: u64,
    /// Elements per array.
    elems: usize,
}

/// One item as it travels through the arena: the array is offloaded into its own blob.
#[derive(Serialize, Deserialize)]
struct Sample<'a> {
    id: u64,
    name: String,
    meta: BTreeMap<String, u64>,
    #[serde(borrow)]
    data: Array<'a, f32>,
}

/// The same item as it travels through the pipe.
#[derive(Serialize, Deserialize)]
struct PipeSample<'a> {
    id: u64,
    name: String,
    meta: BTreeMap<String, u64>,
    #[serde(with = "serde_bytes")]
    data: &'a [u8],
}

/// Element `i` of item `id`: exact in `f32` (below 2^24), different for neighbouring items.
fn pattern(id: u64, i: usize) -> f32 {
    ((id as usize).wrapping_mul(7919).wrapping_add(i) % 65_536) as f32
}

fn fill(id: u64, data: &mut [f32]) {
    for (i, x) in data.iter_mut().enumerate() {
        *x = pattern(id, i);
    }
}

fn metadata(id: u64, elems: usize) -> BTreeMap<String, u64> {
    BTreeMap::from([
        ("elems".to_owned(), elems as u64),
        ("shard".to_owned(), id % 8),
    ])
}

/// Checks an item's metadata and every element; returns the number of payload bytes.
fn verify(
    expected_id: u64,
    plan: &Plan,
    id: u64,
    name: &str,
    meta: &BTreeMap<String, u64>,
    elems: impl ExactSizeIterator<Item = f32>,
) -> Result<usize> {
    if id != expected_id || name != format!("sample-{id}") || *meta != metadata(id, plan.elems) {
        return Err(format!("item {expected_id}: wrong metadata (id {id}, name {name:?})").into());
    }
    if elems.len() != plan.elems {
        return Err(format!(
            "item {id}: {} elements, expected {}",
            elems.len(),
            plan.elems
        )
        .into());
    }
    for (i, x) in elems.enumerate() {
        if x != pattern(id, i) {
            return Err(
                format!("item {id}: element {i} is {x}, expected {}", pattern(id, i)).into(),
            );
        }
    }
    Ok(plan.elems * 4)
}

// ---------------------------------------------------------------------------------------------
// Worker side
// ---------------------------------------------------------------------------------------------

/// The arena worker: registered in `main`, run in the re-executed process.
fn produce(plan: Plan, out: &mut Output) -> shm_arena::Result<()> {
    let mut data = vec![0f32; plan.elems];
    for id in 0..plan.items {
        fill(id, &mut data);
        out.send(&Sample {
            id,
            name: format!("sample-{id}"),
            meta: metadata(id, plan.elems),
            data: Array::from_slice_1d(&data),
        })?;
    }
    Ok(())
}

/// The pipe worker: this program started with `--pipe-child ITEMS ELEMS`.
fn pipe_child(plan: Plan) -> Result<()> {
    let mut out = BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut data = vec![0f32; plan.elems];
    let mut bytes = vec![0u8; plan.elems * 4];
    let mut frame = Vec::new();
    for id in 0..plan.items {
        fill(id, &mut data);
        for (dst, x) in bytes.chunks_exact_mut(4).zip(&data) {
            dst.copy_from_slice(&x.to_le_bytes());
        }
        let sample = PipeSample {
            id,
            name: format!("sample-{id}"),
            meta: metadata(id, plan.elems),
            data: &bytes,
        };
        frame.clear();
        frame = postcard::to_extend(&sample, frame)?;
        out.write_all(&(frame.len() as u64).to_le_bytes())?;
        out.write_all(&frame)?;
    }
    out.flush()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Parent side
// ---------------------------------------------------------------------------------------------

/// A progress line on stderr, redrawn at most four times a second, only on a terminal.
struct Progress {
    label: &'static str,
    total: u64,
    last: Instant,
    enabled: bool,
}

impl Progress {
    fn new(label: &'static str, total: u64) -> Self {
        Progress {
            label,
            total,
            last: Instant::now(),
            enabled: std::io::stderr().is_terminal(),
        }
    }

    fn update(&mut self, done: u64) {
        if !self.enabled || self.last.elapsed() < Duration::from_millis(250) {
            return;
        }
        self.last = Instant::now();
        let width = 30;
        let filled = (done * width / self.total.max(1)) as usize;
        eprint!(
            "\r{:>6} [{}{}] {done}/{}",
            self.label,
            "#".repeat(filled),
            " ".repeat(width as usize - filled),
            self.total
        );
    }

    fn clear(&self) {
        if self.enabled {
            eprint!("\r{:60}\r", "");
        }
    }
}

/// Items, bytes and time of one run.
struct Run {
    items: u64,
    bytes: u64,
    elapsed: Duration,
}

impl Run {
    fn gb_per_sec(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64().max(1e-9) / 1e9
    }

    fn report(&self, label: &str) {
        let secs = self.elapsed.as_secs_f64();
        println!(
            "{label:<28} {:>6} items in {secs:>6.3} s: {:>9.1} items/s {:>7.2} GB/s",
            self.items,
            self.items as f64 / secs,
            self.bytes as f64 / secs / 1e9,
        );
    }
}

fn run_arena(plan: Plan, capacity: u64) -> Result<Run> {
    let started = Instant::now();
    let mut progress = Progress::new("arena", plan.items);
    let worker = iterate_in_subprocess("produce", &plan, Options::new().capacity(capacity))?;
    let (mut items, mut bytes) = (0u64, 0u64);
    for item in worker {
        let item = item?;
        let sample: Sample = item.decode()?;
        if !sample.data.is_borrowed() {
            return Err(format!("item {}: the array was copied out", sample.id).into());
        }
        let data = sample.data.as_slice();
        bytes += verify(
            items,
            &plan,
            sample.id,
            &sample.name,
            &sample.meta,
            data.iter().copied(),
        )? as u64;
        items += 1;
        progress.update(items);
    }
    progress.clear();
    if items != plan.items {
        return Err(format!("arena: {items} items, expected {}", plan.items).into());
    }
    Ok(Run {
        items,
        bytes,
        elapsed: started.elapsed(),
    })
}

fn run_pipe(plan: Plan) -> Result<Run> {
    let started = Instant::now();
    let mut progress = Progress::new("pipe", plan.items);
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "--pipe-child",
            &plan.items.to_string(),
            &plan.elems.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let result = (|| -> Result<(u64, u64)> {
        let (mut items, mut bytes) = (0u64, 0u64);
        let mut frame = Vec::new();
        let mut len = [0u8; 8];
        while items < plan.items {
            stdout.read_exact(&mut len)?;
            let len = usize::try_from(u64::from_le_bytes(len))?;
            if len > plan.elems * 4 + 4096 {
                return Err(format!("frame of {len} bytes").into());
            }
            frame.resize(len, 0);
            stdout.read_exact(&mut frame)?;
            let sample: PipeSample = postcard::from_bytes(&frame)?;
            let data = sample
                .data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("chunks of four bytes")));
            bytes += verify(items, &plan, sample.id, &sample.name, &sample.meta, data)? as u64;
            items += 1;
            progress.update(items);
        }
        Ok((items, bytes))
    })();
    progress.clear();
    drop(stdout);
    let status = child.wait()?;
    let (items, bytes) = result?;
    if !status.success() {
        return Err(format!("pipe worker {status}").into());
    }
    Ok(Run {
        items,
        bytes,
        elapsed: started.elapsed(),
    })
}

fn parse_args(args: &[String]) -> Result<(Plan, u64, u32)> {
    let mut items = 300u64;
    let mut mib = 4.0f64;
    let mut capacity_mib = 16u64;
    let mut reps = 3u32;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--items" => items = value.parse()?,
            "--mib" => mib = value.parse()?,
            "--capacity-mib" => capacity_mib = value.parse()?,
            "--reps" => reps = value.parse::<u32>()?.max(1),
            _ => {
                return Err(format!(
                    "unknown option {flag} (--items N --mib M --capacity-mib C --reps R)"
                )
                .into())
            }
        }
    }
    let elems = ((mib * 1024.0 * 1024.0) / 4.0) as usize;
    let capacity = capacity_mib << 20;
    if elems * 4 + 4096 > (capacity / 2) as usize {
        return Err(format!(
            "items of {mib} MiB do not fit a {capacity_mib} MiB ring (at most half of it)"
        )
        .into());
    }
    Ok((Plan { items, elems }, capacity, reps))
}

fn parent(args: &[String]) -> Result<()> {
    let (plan, capacity, reps) = parse_args(args)?;
    println!(
        "pipeline: {} items of {:.2} MiB (f32 array + id, name, map), arena ring {} MiB",
        plan.items,
        (plan.elems * 4) as f64 / (1 << 20) as f64,
        capacity >> 20
    );
    // Alternating runs: the machine's load moves both sides alike, and the median of each is
    // compared (the pipe side swings the most: it is bound by the kernel's copies).
    let (mut arenas, mut pipes) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let arena = run_arena(plan, capacity)?;
        arena.report("arena (shared memory)");
        arenas.push(arena.gb_per_sec());
        let pipe = run_pipe(plan)?;
        pipe.report("pipe (postcard on stdout)");
        pipes.push(pipe.gb_per_sec());
    }
    let (arena, arena_lo, arena_hi) = spread(arenas);
    let (pipe, pipe_lo, pipe_hi) = spread(pipes);
    println!(
        "median of {reps} alternating runs: arena {arena:.2} GB/s ({arena_lo:.2}-{arena_hi:.2}), \
         pipe {pipe:.2} GB/s ({pipe_lo:.2}-{pipe_hi:.2})"
    );
    println!(
        "ratio arena/pipe: {:.2}x (item bytes produced, moved and verified per second, worker start \
         included; median over median)",
        arena / pipe
    );
    Ok(())
}

fn main() -> ExitCode {
    // First thing: in the arena worker process this runs `produce` and exits.
    Registry::new().register("produce", produce).run_if_worker();

    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = if args.first().map(String::as_str) == Some("--pipe-child") {
        (|| -> Result<()> {
            let items = args.get(1).ok_or("items")?.parse()?;
            let elems = args.get(2).ok_or("elems")?.parse()?;
            pipe_child(Plan { items, elems })
        })()
    } else {
        parent(&args)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

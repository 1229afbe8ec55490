//! Two processes, one arena: a child process writes units into a memfd region, this process
//! reads them in place and verifies every one; then the same transfer goes through a pipe, for
//! comparison.
//!
//! ```text
//! cargo run --release --example two_process
//! cargo run --release --example two_process -- --units 500 --size 4M
//! cargo run --release --example two_process -- --units 5000000 --size 64 --capacity 4M
//! ```
//!
//! The child is this same program started with `--child`. It fills each unit's payload in place
//! in shared memory with a pattern derived from the unit's index, and adds a 24-byte trailer
//! blob (index, payload length, checksum of the payload). The parent checksums every payload
//! byte where it lies, checks the trailer and the pattern's ends, and exits non-zero if anything
//! is wrong. The pipe run moves the same bytes (child's stdout to a `read_exact` here, 64 KiB
//! buffers on both sides so small units are batched, default kernel pipe buffer), with the same
//! pattern generation and the same verification, so the difference is the transport.

#[path = "common/spread.rs"]
mod spread;

use spread::spread;
use std::error::Error;
use std::fmt;
use std::io::{BufReader, BufWriter, Read, Write};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use shm_arena::{unit_size, Region};

/// How long the parent waits for any one unit, and the child for space in the ring.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Trailer: index, payload length, checksum, each a little-endian u64.
const TRAILER_LEN: usize = 24;
/// First byte on the pipe: the child is up, start the clock.
const PIPE_READY: u8 = b'R';
/// Smallest ring the example picks by itself: larger than a core's L2 cache (see
/// [`auto_capacity`]), within this machine class's L3.
const MIN_CAPACITY: u64 = 8 << 20;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = if args.first().map(String::as_str) == Some("--child") {
        child(&args[1..]).map_err(|e| format!("child (pid {}): {e}", std::process::id()).into())
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

/// One batch of units of one size.
#[derive(Debug, Clone, Copy)]
struct Batch {
    units: u64,
    size: usize,
}

#[derive(Debug)]
struct Options {
    batches: Vec<Batch>,
    /// `None`: sized for each batch by [`auto_capacity`].
    capacity: Option<u64>,
    /// Units the arena side publishes (and the reader ends) together; `None`: see
    /// [`auto_publish`].
    publish: Option<u32>,
    /// Alternating runs of each transport.
    reps: u32,
}

/// Units per publication when not given: the pipe side hands the kernel 64 KiB at a time (its
/// `BufWriter`), so small units go through it hundreds at a time; the arena side publishes
/// (and ends) small units 64 at a time with a batch, large ones one by one.
fn auto_publish(batch: Batch) -> u32 {
    if batch.size <= 4096 {
        64
    } else {
        1
    }
}

/// Room for two units (a power of two), at least 8 MiB: the writer fills one while the reader
/// verifies the other. A ring that fits a core's L2 (1 MiB here) is slow when writer and reader
/// run on different cores: every line the writer comes back to a lap later is still in the
/// reader's L2, and each store waits for that core to give it up (64 B units: 0.39 GB/s with
/// a 1 MiB ring, 0.78 with 8 MiB; 4 KiB units 2.4 vs 4.7 GB/s). Much larger rings are slower
/// again once they outgrow the last-level cache: the reader then fetches from DRAM what the
/// writer wrote long before (a 64 MiB ring moved 1 MiB units at less than half the speed of a
/// 4 MiB one).
fn auto_capacity(batch: Batch) -> u64 {
    (2 * unit_size(&[batch.size, TRAILER_LEN]))
        .next_power_of_two()
        .max(MIN_CAPACITY)
}

const USAGE: &str = "usage: two_process [--units N] [--size BYTES] [--capacity BYTES]
  --units N          units to move (default: 2000 units of 1 MiB, then 1000000 of 64 B)
  --size BYTES       payload bytes per unit, e.g. 64, 4K, 1M (default: both runs above)
  --publish N        units shm-arena publishes and ends at a time (default: 64 up to 4 KiB, else 1)
  --reps N           alternating runs of each transport; the median is compared (default 3)
  --capacity BYTES   ring size, a power of two (default: room for two units, at least 8M)
Giving --units or --size makes a single run of that batch.";

fn parse_options(args: &[String]) -> Result<Options> {
    let mut units = None;
    let mut size = None;
    let mut capacity = None;
    let mut publish = None;
    let mut reps = 3;
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--units" => {
                units = Some(
                    value
                        .parse::<u64>()
                        .map_err(|e| format!("--units {value}: {e}"))?,
                )
            }
            "--size" => size = Some(usize::try_from(parse_bytes(value)?)?),
            "--capacity" => capacity = Some(parse_bytes(value)?),
            "--publish" => {
                publish = Some(
                    value
                        .parse::<u32>()
                        .map_err(|e| format!("--publish {value}: {e}"))?,
                )
            }
            "--reps" => {
                reps = value
                    .parse::<u32>()
                    .map_err(|e| format!("--reps {value}: {e}"))?
                    .max(1)
            }
            _ => return Err(format!("unknown argument {flag}\n{USAGE}").into()),
        }
    }
    let batches = if units.is_none() && size.is_none() {
        vec![
            Batch {
                units: 2000,
                size: 1 << 20,
            },
            Batch {
                units: 1_000_000,
                size: 64,
            },
        ]
    } else {
        vec![Batch {
            units: units.unwrap_or(2000),
            size: size.unwrap_or(1 << 20),
        }]
    };
    Ok(Options {
        batches,
        capacity,
        publish,
        reps,
    })
}

/// `123`, `4K`/`4KiB`, `1M`/`1MiB`, `1G`/`1GiB` (binary multiples).
fn parse_bytes(text: &str) -> Result<u64> {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let shift = match &text[digits.len()..] {
        "" | "B" => 0,
        "K" | "KiB" | "k" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        suffix => return Err(format!("{text}: unknown unit {suffix:?} (use K, M or G)").into()),
    };
    let n: u64 = digits.parse().map_err(|e| format!("{text}: {e}"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{text} is too large").into())
}

// ---------------------------------------------------------------------------------------------
// The payload: a pattern derived from the unit's index, and a checksum of it.

/// First word of unit `index`'s pattern (splitmix64 of the index, so units differ everywhere).
fn seed(index: u64) -> u64 {
    let mut z = index.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Word `j` of unit `index`'s pattern; the payload is these words' little-endian bytes.
fn pattern_word(index: u64, j: usize) -> u64 {
    seed(index).wrapping_add((j as u64).wrapping_mul(0xd6e8_feb8_6659_fd93))
}

/// Fletcher-style checksum over little-endian words (a short tail is zero-padded): the second
/// sum makes it depend on each word's position, so swapped or shifted data is caught.
#[derive(Default)]
struct Checksum {
    a: u64,
    b: u64,
}

impl Checksum {
    fn add(&mut self, word: u64) {
        self.a = self.a.wrapping_add(word);
        self.b = self.b.wrapping_add(self.a);
    }

    fn value(&self) -> u64 {
        self.a ^ self.b.rotate_left(32)
    }
}

fn tail_word(tail: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word[..tail.len()].copy_from_slice(tail);
    u64::from_le_bytes(word)
}

/// Writes unit `index`'s pattern into `payload` and returns its checksum, in one pass.
fn fill(payload: &mut [u8], index: u64) -> u64 {
    let mut sum = Checksum::default();
    let mut words = payload.chunks_exact_mut(8);
    let mut j = 0;
    for chunk in words.by_ref() {
        let word = pattern_word(index, j);
        chunk.copy_from_slice(&word.to_le_bytes());
        sum.add(word);
        j += 1;
    }
    let tail = words.into_remainder();
    if !tail.is_empty() {
        let bytes = pattern_word(index, j).to_le_bytes();
        tail.copy_from_slice(&bytes[..tail.len()]);
        sum.add(tail_word(tail));
    }
    sum.value()
}

fn checksum(payload: &[u8]) -> u64 {
    let mut sum = Checksum::default();
    let mut words = payload.chunks_exact(8);
    for chunk in words.by_ref() {
        sum.add(u64::from_le_bytes(chunk.try_into().expect("8-byte chunk")));
    }
    if !words.remainder().is_empty() {
        sum.add(tail_word(words.remainder()));
    }
    sum.value()
}

fn trailer(index: u64, len: usize, sum: u64) -> [u8; TRAILER_LEN] {
    let mut bytes = [0u8; TRAILER_LEN];
    bytes[0..8].copy_from_slice(&index.to_le_bytes());
    bytes[8..16].copy_from_slice(&(len as u64).to_le_bytes());
    bytes[16..24].copy_from_slice(&sum.to_le_bytes());
    bytes
}

/// Data that arrived wrong: the one failure not to blame on the child.
#[derive(Debug)]
struct Mismatch(String);

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "verification failed: {}", self.0)
    }
}

impl Error for Mismatch {}

/// Checks unit `index`: its trailer names it, with the right length and the checksum of every
/// payload byte; the pattern's first and last words are this unit's (a checksum alone would
/// accept a well-formed copy of another unit).
fn verify(
    index: u64,
    size: usize,
    payload: &[u8],
    trailer: &[u8],
) -> std::result::Result<(), Mismatch> {
    let field =
        |i: usize| u64::from_le_bytes(trailer[8 * i..8 * i + 8].try_into().expect("8 bytes"));
    if trailer.len() != TRAILER_LEN {
        return Err(Mismatch(format!(
            "unit {index}: trailer of {} bytes, expected {TRAILER_LEN}",
            trailer.len()
        )));
    }
    let (got_index, got_len, got_sum) = (field(0), field(1), field(2));
    if got_index != index {
        return Err(Mismatch(format!(
            "expected unit {index}, got unit {got_index}"
        )));
    }
    if got_len != size as u64 || payload.len() != size {
        return Err(Mismatch(format!(
            "unit {index}: trailer says {got_len} bytes, payload has {}, expected {size}",
            payload.len()
        )));
    }
    let sum = checksum(payload);
    if sum != got_sum {
        return Err(Mismatch(format!(
            "unit {index}: checksum {sum:#018x}, the writer's was {got_sum:#018x}"
        )));
    }
    if size >= 8 {
        for j in [0, size / 8 - 1] {
            let word = u64::from_le_bytes(payload[8 * j..8 * j + 8].try_into().expect("8 bytes"));
            if word != pattern_word(index, j) {
                return Err(Mismatch(format!(
                    "unit {index}: word {j} is {word:#018x}, not this unit's pattern"
                )));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The child: writes a batch through the arena (`--child arena`) or to stdout (`--child pipe`).

fn child(args: &[String]) -> Result<()> {
    let (transport, rest) = args.split_first().ok_or("--child needs arena or pipe")?;
    let options = parse_options(rest)?;
    let batch = options.batches[0];
    match transport.as_str() {
        "arena" => {
            let region = Region::from_env()?;
            let mut writer = region.writer()?;
            writer.set_timeout(Some(TIMEOUT));
            // A unit with no blobs says "ready": the parent starts its clock on it.
            writer.write_unit(&[])?;
            let mut writer = writer.begin_batch(options.publish.unwrap_or(1));
            for index in 0..batch.units {
                let mut unit = writer.begin_unit()?;
                // The payload is generated straight into shared memory: the only copy.
                let sum = fill(unit.blob_mut(batch.size)?, index);
                unit.push(&trailer(index, batch.size, sum))?;
                unit.commit()?;
            }
            // Dropping the batch publishes what is pending; dropping the writer then closes the
            // ring: the parent sees `Closed` after the last unit.
            Ok(())
        }
        "pipe" => {
            use std::os::fd::AsFd;
            // A File on fd 1 rather than `Stdout`, whose line buffering would scan the payload
            // for newlines.
            let stdout = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
            let mut out = BufWriter::with_capacity(64 << 10, stdout);
            let mut payload = vec![0u8; batch.size];
            out.write_all(&[PIPE_READY])?;
            out.flush()?;
            for index in 0..batch.units {
                let sum = fill(&mut payload, index);
                out.write_all(&payload)?;
                out.write_all(&trailer(index, batch.size, sum))?;
            }
            out.flush()?;
            Ok(())
        }
        other => Err(format!("unknown transport {other:?}").into()),
    }
}

// ---------------------------------------------------------------------------------------------
// The parent.

/// A child process that is killed and reaped if we leave early.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn spawn(command: &mut Command) -> Result<ChildGuard> {
        let child = command
            .spawn()
            .map_err(|e| format!("starting the child: {e}"))?;
        Ok(ChildGuard(Some(child)))
    }

    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("child not reaped yet")
    }

    /// The child's status if it exits within `grace` (polled: `Child` has no timed wait).
    fn exited_within(&mut self, grace: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + grace;
        loop {
            match self.child().try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => return None,
            }
        }
    }

    /// Our error `e`, prefixed with the child's failure if it failed (the likelier cause: a
    /// dead writer shows up here as a closed pipe or a gone peer), unless `e` is a mismatch.
    fn blame(&mut self, e: Box<dyn Error>) -> Box<dyn Error> {
        if e.is::<Mismatch>() {
            // The child fails too (we closed our end), but only because of this.
            return e;
        }
        match self.exited_within(Duration::from_secs(2)) {
            Some(status) if !status.success() => format!("the child failed ({status}); {e}").into(),
            // Still running after we closed our end, or exited cleanly: ours is the error. The
            // guard kills and reaps a child still running.
            _ => e,
        }
    }

    /// Reaps the child; an error if it did not exit successfully.
    fn finish(mut self) -> Result<()> {
        let status = self.0.take().expect("child not reaped yet").wait()?;
        check_status(status)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            // It may have exited already: then kill fails harmlessly and wait reaps it.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn check_status(status: ExitStatus) -> Result<()> {
    if status.success() {
        Ok(())
    } else {
        Err(format!("the child failed ({status})").into())
    }
}

/// How one transport did.
struct Measured {
    elapsed: Duration,
}

fn child_command(transport: &str, batch: Batch, publish: u32) -> Result<Command> {
    let mut command = Command::new(std::env::current_exe()?);
    command.args([
        "--child",
        transport,
        "--units",
        &batch.units.to_string(),
        "--size",
        &batch.size.to_string(),
        "--publish",
        &publish.to_string(),
    ]);
    Ok(command)
}

/// Reads the batch from a child through the arena; `Err` names what went wrong, and the child's
/// own failure when there is one (it is the likelier cause).
fn through_arena(batch: Batch, capacity: u64, publish: u32) -> Result<Measured> {
    let region = Region::create(capacity)?;
    let reader = region.reader()?;
    let mut command = child_command("arena", batch, publish)?;
    region.share_with_child(&mut command)?;
    let mut child = ChildGuard::spawn(&mut command)?;

    let received = (|| -> Result<Measured> {
        let ready = reader
            .next_unit(TIMEOUT)
            .map_err(|e| format!("waiting for the child: {e}"))?;
        if ready.blob_count() != 0 {
            return Err("the child's first unit is not the ready marker".into());
        }
        drop(ready);
        let start = Instant::now();
        let mut index = 0;
        while index < batch.units {
            // Up to `publish` units at once, ended together when the run is dropped.
            let run = reader
                .next_batch(publish.max(1) as usize, TIMEOUT)
                .map_err(|e| format!("waiting for unit {index}: {e}"))?;
            for unit in run.iter() {
                if unit.blob_count() != 2 {
                    let count = unit.blob_count();
                    return Err(
                        Mismatch(format!("unit {index} has {count} blobs, expected 2")).into(),
                    );
                }
                verify(index, batch.size, unit.blob(0)?, unit.blob(1)?)?;
                index += 1;
            }
            // Dropping the run ends its units: their space goes back to the child.
        }
        let elapsed = start.elapsed();
        match reader.next_unit(TIMEOUT) {
            Err(shm_arena::Error::Closed(_)) => Ok(Measured { elapsed }),
            Ok(_) => Err(format!("the child sent more than {} units", batch.units).into()),
            Err(e) => Err(format!("after the last unit: {e}").into()),
        }
    })();
    // Closing our end wakes a child blocked on a full ring, so it exits rather than waits.
    drop(reader);
    match received {
        Ok(measured) => child.finish().map(|()| measured),
        Err(e) => Err(child.blame(e)),
    }
}

/// The same batch, through an anonymous pipe (the child's stdout; default pipe buffer).
fn through_pipe(batch: Batch) -> Result<Measured> {
    let mut command = child_command("pipe", batch, 1)?;
    command.stdout(Stdio::piped());
    let mut child = ChildGuard::spawn(&mut command)?;
    let stdout = child.child().stdout.take().ok_or("no pipe to the child")?;

    let mut input = BufReader::with_capacity(64 << 10, stdout);
    let mut received = || -> Result<Measured> {
        let mut ready = [0u8; 1];
        input
            .read_exact(&mut ready)
            .map_err(|e| format!("waiting for the child: {e}"))?;
        if ready[0] != PIPE_READY {
            return Err("the child's first byte is not the ready marker".into());
        }
        let mut payload = vec![0u8; batch.size];
        let mut trailer = [0u8; TRAILER_LEN];
        let start = Instant::now();
        for index in 0..batch.units {
            input
                .read_exact(&mut payload)
                .and_then(|()| input.read_exact(&mut trailer))
                .map_err(|e| format!("reading unit {index} from the pipe: {e}"))?;
            verify(index, batch.size, &payload, &trailer)?;
        }
        let elapsed = start.elapsed();
        if input.read(&mut ready)? != 0 {
            return Err(format!("the child sent more than {} units", batch.units).into());
        }
        Ok(Measured { elapsed })
    };
    let received = received();
    match received {
        Ok(measured) => child.finish().map(|()| measured),
        Err(e) => {
            // Closing our end makes a child blocked on a full pipe fail (EPIPE) and exit.
            drop(input);
            Err(child.blame(e))
        }
    }
}

struct Bytes(u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        match n {
            _ if n >= 1 << 30 && n % (1 << 30) == 0 => write!(f, "{} GiB", n >> 30),
            _ if n >= 1 << 20 && n % (1 << 20) == 0 => write!(f, "{} MiB", n >> 20),
            _ if n >= 1 << 10 && n % (1 << 10) == 0 => write!(f, "{} KiB", n >> 10),
            _ => write!(f, "{n} B"),
        }
    }
}

fn report(name: &str, batch: Batch, measured: &Measured) -> f64 {
    let secs = measured.elapsed.as_secs_f64().max(1e-9);
    let gbps = (batch.units as f64 * batch.size as f64) / secs / 1e9;
    println!(
        "  {name:<9} {:>10}  {:>12.0} units/s  {gbps:>7.2} GB/s   verified {}/{} units: OK",
        format!("{:.3?}", measured.elapsed),
        batch.units as f64 / secs,
        batch.units,
        batch.units,
    );
    gbps
}

fn parent(args: &[String]) -> Result<()> {
    let options = parse_options(args)?;
    let capacity = |batch: Batch| options.capacity.unwrap_or_else(|| auto_capacity(batch));
    for &batch in &options.batches {
        let needed = unit_size(&[batch.size, TRAILER_LEN]);
        if needed > capacity(batch) / 2 {
            return Err(format!(
                "a unit of {} needs {needed} bytes of ring, more than half the {} ring; \
                 raise --capacity",
                Bytes(batch.size as u64),
                Bytes(capacity(batch))
            )
            .into());
        }
    }
    println!("shm-arena: two processes, one arena");
    if cfg!(debug_assertions) {
        println!("  (debug build: the speeds below mean little; run with --release)");
    }
    println!("  A child process (this program with --child) writes units into a memfd ring:");
    println!(
        "  a payload generated in place from the unit's index, and a trailer with its checksum."
    );
    println!(
        "  This process (pid {}) reads each unit where it lies and verifies it: index, length,",
        std::process::id()
    );
    println!(
        "  checksum of every payload byte. Then the same bytes go through a pipe, for comparison."
    );
    for &batch in &options.batches {
        println!();
        println!(
            "{} units of {} ({:.2} GB of payload), ring of {}",
            batch.units,
            Bytes(batch.size as u64),
            batch.units as f64 * batch.size as f64 / 1e9,
            Bytes(capacity(batch)),
        );
        let publish = options.publish.unwrap_or_else(|| auto_publish(batch));
        if publish > 1 {
            println!(
                "  (shm-arena publishes and ends {publish} units at a time; the pipe side writes \
                 64 KiB at a time)"
            );
        }
        let (mut arenas, mut pipes) = (Vec::new(), Vec::new());
        for _ in 0..options.reps {
            let arena = through_arena(batch, capacity(batch), publish)
                .map_err(|e| format!("shm-arena run: {e}"))?;
            arenas.push(report("shm-arena", batch, &arena));
            let pipe = through_pipe(batch).map_err(|e| format!("pipe run: {e}"))?;
            pipes.push(report("pipe", batch, &pipe));
        }
        let (arena, arena_lo, arena_hi) = spread(arenas);
        let (pipe, pipe_lo, pipe_hi) = spread(pipes);
        println!(
            "  median of {} alternating runs: shm-arena {arena:.2} GB/s ({arena_lo:.2}-{arena_hi:.2}), \
             pipe {pipe:.2} GB/s ({pipe_lo:.2}-{pipe_hi:.2})",
            options.reps
        );
        if pipe > 0.0 {
            println!(
                "  shm-arena / pipe: {:.2}x (payload bytes moved and verified per second, median \
                 over median)",
                arena / pipe
            );
        }
    }
    println!();
    println!("All units verified.");
    Ok(())
}

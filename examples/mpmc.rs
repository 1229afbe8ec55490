//! Many processes, one arena: writer processes and reader processes share one MPMC region.
//! Every unit is delivered to exactly one reader; each reader verifies the bytes of what it
//! got and reports counts and checksums, and this process checks that the totals add up.
//!
//! ```text
//! cargo run --release --example mpmc
//! cargo run --release --example mpmc -- --writers 4 --readers 2 --units 200000 --size 4096
//! ```
//!
//! Children are this same program started with `--writer N` or `--reader`; the region is
//! inherited as a memfd (`Region::share_with_child` / `Region::from_env`). Each writer fills
//! its units in place with a pattern derived from (writer, sequence number) and puts both in
//! the first 16 bytes; readers recompute the pattern where the bytes lie. Every writer is
//! attached before any reader starts reading, so readers see `Closed` only once all writers
//! have finished.

use std::error::Error;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use shm_arena::{Region, RegionOptions, Role};

/// How long any one wait may take, in every process.
const TIMEOUT: Duration = Duration::from_secs(30);

type Result<T> = std::result::Result<T, Box<dyn Error>>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("--writer") => writer(&args[1..]),
        Some("--reader") => reader(),
        _ => parent(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error (pid {}): {e}", std::process::id());
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    writers: u32,
    readers: u32,
    units: u64,
    size: usize,
}

fn parse(args: &[String]) -> Result<Settings> {
    let mut s = Settings {
        writers: 3,
        readers: 3,
        units: 300_000,
        size: 1024,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--writers" => s.writers = value.parse()?,
            "--readers" => s.readers = value.parse()?,
            "--units" => s.units = value.parse()?,
            "--size" => s.size = value.parse()?,
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    if s.size < 16 {
        return Err("--size must be at least 16 (writer id and sequence number)".into());
    }
    Ok(s)
}

/// Byte `i` of unit `seq` of writer `w` (after the 16-byte header).
fn pattern(w: u64, seq: u64, i: usize) -> u8 {
    (seq.wrapping_mul(31) ^ w.wrapping_mul(131) ^ i as u64) as u8
}

fn parent(args: &[String]) -> Result<()> {
    let s = parse(args)?;
    // Each lane holds at least 64 units, so writers rarely wait for readers.
    let lane = (64 * shm_arena::unit_size(&[s.size]))
        .next_power_of_two()
        .max(1 << 16);
    let region = Region::create_with(RegionOptions::new(lane).mpmc(s.writers, s.readers))?;
    let exe = std::env::current_exe()?;
    let spawn = |args: &[String]| -> Result<Child> {
        let mut cmd = Command::new(&exe);
        cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped());
        region.share_with_child(&mut cmd)?;
        Ok(cmd.spawn()?)
    };
    let share = s.units / u64::from(s.writers);
    let mut children = Vec::new();
    for w in 0..s.writers {
        let args = [
            "--writer".to_string(),
            share.to_string(),
            s.size.to_string(),
            w.to_string(),
        ];
        children.push(spawn(&args)?);
    }
    for _ in 0..s.readers {
        children.push(spawn(&["--reader".to_string()])?);
    }
    // Everyone attached (each child says "ready"), then go: nobody sees Closed too early.
    let mut outputs = Vec::new();
    for child in &mut children {
        let mut out = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut line = String::new();
        out.read_line(&mut line)?;
        if line.trim() != "ready" {
            return Err(format!("a child said {line:?} instead of ready").into());
        }
        outputs.push(out);
    }
    let started = Instant::now();
    for child in &mut children {
        child.stdin.take().ok_or("no stdin")?.write_all(b"go\n")?;
    }
    let (mut units, mut bytes) = (0u64, 0u64);
    for (child, out) in children.iter_mut().zip(&mut outputs) {
        let mut line = String::new();
        out.read_line(&mut line)?;
        let status = child.wait()?;
        if !status.success() {
            return Err(format!("a child failed: {status}").into());
        }
        if let Some(rest) = line.strip_prefix("read ") {
            let mut f = rest.split_whitespace().map(str::parse::<u64>);
            units += f.next().ok_or("count")??;
            bytes += f.next().ok_or("bytes")??;
        }
    }
    let elapsed = started.elapsed();
    let expected = share * u64::from(s.writers);
    if units != expected {
        return Err(format!("readers got {units} units, writers wrote {expected}").into());
    }
    println!(
        "mpmc: {} writer and {} reader processes, {units} units of {} B, lanes of {} KiB",
        s.writers,
        s.readers,
        s.size,
        lane >> 10
    );
    println!(
        "{units} units verified in {:.3} s: {:.2} M units/s, {:.2} GB/s",
        elapsed.as_secs_f64(),
        units as f64 / elapsed.as_secs_f64() / 1e6,
        bytes as f64 / elapsed.as_secs_f64() / 1e9
    );
    Ok(())
}

/// Attaches, says ready, waits for the parent's go.
fn attach<T>(make: impl FnOnce(&Region) -> shm_arena::Result<T>) -> Result<T> {
    let region = Region::from_env()?;
    let handle = make(&region)?;
    println!("ready");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(handle)
}

fn writer(args: &[String]) -> Result<()> {
    let units: u64 = args.first().ok_or("units")?.parse()?;
    let size: usize = args.get(1).ok_or("size")?.parse()?;
    let mut writer = attach(Region::writer)?;
    writer.set_timeout(Some(TIMEOUT));
    let w = u64::from(writer.lane());
    for seq in 0..units {
        let mut unit = writer.begin_unit()?;
        let blob = unit.blob_mut(size)?;
        blob[..8].copy_from_slice(&w.to_le_bytes());
        blob[8..16].copy_from_slice(&seq.to_le_bytes());
        for (i, b) in blob[16..].iter_mut().enumerate() {
            *b = pattern(w, seq, i);
        }
        unit.commit()?;
    }
    println!("wrote {units}");
    Ok(())
}

fn reader() -> Result<()> {
    let reader = attach(Region::reader)?;
    let (mut units, mut bytes) = (0u64, 0u64);
    loop {
        let unit = match reader.next_unit(TIMEOUT) {
            Ok(unit) => unit,
            Err(shm_arena::Error::Closed(Role::Writer)) => break,
            Err(e) => return Err(e.into()),
        };
        let blob = unit.blob(0)?;
        let w = u64::from_le_bytes(blob[..8].try_into()?);
        let seq = u64::from_le_bytes(blob[8..16].try_into()?);
        if w != u64::from(unit.lane()) {
            return Err(format!("unit from lane {} says writer {w}", unit.lane()).into());
        }
        if let Some(i) = blob[16..]
            .iter()
            .enumerate()
            .position(|(i, &b)| b != pattern(w, seq, i))
        {
            return Err(format!("unit ({w}, {seq}): byte {} is wrong", 16 + i).into());
        }
        units += 1;
        bytes += blob.len() as u64;
    }
    println!("read {units} {bytes}");
    Ok(())
}

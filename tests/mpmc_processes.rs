//! Multi-process tests of MPMC regions: writer and reader child processes, some of them
//! SIGKILLed in the middle of their work.
//!
//! A child is this test binary started again (`std::env::current_exe()`) with a filter that
//! runs only the ignored [`child_main`], plus [`ROLE_ENV`] naming what it should do. A child
//! attaches its handle, says `@ready` on stdout and waits for one byte on stdin (the parent's
//! "go") before it starts: every participant is attached before anyone works, so no reader
//! sees `Closed` because one writer finished before another attached. Children report what
//! they do as `@` lines on stdout (the test harness's own text on the same stream is skipped),
//! read by one thread per child so the pipe never fills.
//!
//! Every unit carries a trailer (writer id, sequence number, blob count, payload bytes and a
//! checksum seeded by the writer id and sequence number), so a reader checks every byte without
//! knowing how the payload was generated, and a stale or foreign payload fails the check.
//!
//! Every child is owned by a [`ChildGuard`] that kills and reaps it on every path, and every
//! wait in the parent and in the children has a deadline, so a broken ring fails a test
//! instead of hanging CI. A child blocked on stdin exits by itself when the parent dies.
//!
//! Environment: `SHM_ARENA_STRESS=1` moves 1,000,000 units in the stress test instead of
//! 30,000; `SHM_ARENA_KILL_ROUNDS=N` runs N kill rounds instead of 3, and
//! `SHM_ARENA_KILL_SEED=S` repeats the victims and kill points of an earlier run.

mod common;

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use common::child::{env_u64, kill_later, park_until_killed, wait_for_go};

use shm_arena::{unit_size, Error, Region, RegionOptions, Role, Unit, UnitWriter, Writer};

// ---------------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------------

/// Names the part a child process plays; absent in a normal test run.
const ROLE_ENV: &str = "SHM_ARENA_CHILD_ROLE";
/// Writer id put in each unit's trailer.
const ID_ENV: &str = "SHM_ARENA_CHILD_ID";
/// Seed of a writer child's unit sizes and bytes.
const SEED_ENV: &str = "SHM_ARENA_CHILD_SEED";
/// Number of units a writer child commits.
const COUNT_ENV: &str = "SHM_ARENA_CHILD_COUNT";
/// Largest payload blob a writer child writes.
const MAX_BLOB_ENV: &str = "SHM_ARENA_CHILD_MAX_BLOB";
/// "1": report every step at once (a killed child's reports must be complete up to its death);
/// otherwise reports are buffered and writers do not report commits (the stress test).
const EAGER_ENV: &str = "SHM_ARENA_CHILD_EAGER";
/// Longest any one wait of a child may take: a hang guard, far above what a test needs.
const CHILD_WAIT: Duration = Duration::from_secs(30);

const SIGKILL: i32 = 9;

/// Entry point of child processes (see the module docs): ignored in a normal run, started with
/// `--ignored --exact child_main` by the tests.
#[test]
#[ignore = "child-process entry point, started by the other tests"]
fn child_main() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    match role.as_str() {
        "writer" => child_writer(),
        "reader" => child_reader(),
        "half_writer" => child_half_writer(),
        "holder" => child_holder(),
        other => panic!("unknown child role {other:?}"),
    }
}

/// Writes `@` report lines to stdout.
struct Reporter {
    out: BufWriter<std::io::Stdout>,
    eager: bool,
}

impl Reporter {
    fn new() -> Reporter {
        Reporter {
            out: BufWriter::with_capacity(1 << 16, std::io::stdout()),
            eager: std::env::var(EAGER_ENV).is_ok_and(|v| v == "1"),
        }
    }

    /// Reports one line; flushed at once in eager mode, so that the parent has it even if this
    /// process is killed right after.
    fn say(&mut self, line: std::fmt::Arguments<'_>) {
        writeln!(self.out, "@{line}").unwrap();
        if self.eager {
            self.flush();
        }
    }

    /// Reports one line the parent waits for, flushed whatever the mode.
    fn say_now(&mut self, line: std::fmt::Arguments<'_>) {
        self.say(line);
        self.flush();
    }

    fn flush(&mut self) {
        self.out.flush().unwrap();
    }
}

fn child_writer() {
    let id = env_u64(ID_ENV);
    let seed = env_u64(SEED_ENV);
    let count = env_u64(COUNT_ENV);
    let max_blob = env_u64(MAX_BLOB_ENV) as usize;
    let mut out = Reporter::new();
    let region = Region::from_env().unwrap();
    let mut writer = region.writer().unwrap();
    writer.set_timeout(Some(CHILD_WAIT));
    out.say(format_args!("lane {}", writer.lane()));
    out.say_now(format_args!("ready"));
    wait_for_go();
    let mut plan = Rng::new(seed);
    for seq in 0..count {
        let lens = plan_unit(&mut plan, max_blob);
        write_test_unit(&mut writer, id, seed, seq, &lens)
            .unwrap_or_else(|e| panic!("writer {id}, unit {seq}: {e}"));
        if out.eager {
            out.say(format_args!("c {seq}"));
        }
    }
    // Dropping the last writer closes the region once every lane is drained.
    drop(writer);
    out.say_now(format_args!("done"));
}

/// Units a reader keeps while more are ready at once: it ends them out of order, and a reader
/// killed while units flow dies holding some.
const READER_WINDOW: usize = 2;

fn child_reader() {
    let mut out = Reporter::new();
    let region = Region::from_env().unwrap();
    let reader = region.reader().unwrap();
    out.say_now(format_args!("ready"));
    wait_for_go();
    let mut held = std::collections::VecDeque::new();
    for taken in 0u64.. {
        let next = match reader.try_next_unit() {
            Ok(Some(unit)) => Ok(unit),
            Ok(None) => {
                // End everything before waiting: a unit held while blocked could be the one
                // its writer waits for, and no reader would ever end it.
                held.clear();
                reader.next_unit(CHILD_WAIT)
            }
            Err(e) => Err(e),
        };
        match next {
            // Reported before the unit is ended (dropped): a unit this reader took is in its
            // reports even if it is killed while holding it.
            Ok(unit) => {
                report_unit(&mut out, &unit);
                held.push_back(unit);
                if held.len() > READER_WINDOW {
                    // Oldest or second oldest: ends out of claim order.
                    held.remove((taken % 2) as usize);
                }
            }
            Err(Error::Closed(Role::Writer)) => {
                out.say_now(format_args!("closed"));
                return;
            }
            Err(Error::PeerGone {
                role: Role::Writer,
                pid,
            }) => {
                out.say_now(format_args!("gone {pid}"));
                return;
            }
            Err(e) => {
                out.say_now(format_args!("error {e}"));
                panic!("reader: {e}");
            }
        }
    }
}

fn report_unit(out: &mut Reporter, unit: &Unit<'_>) {
    match check_unit(unit) {
        Ok(trailer) => out.say(format_args!(
            "u {} {} {}",
            unit.lane(),
            trailer.writer,
            trailer.seq
        )),
        Err(what) => out.say_now(format_args!(
            "bad lane {} position {}: {what}",
            unit.lane(),
            unit.position()
        )),
    }
}

/// Units the half writer commits before the one it leaves unfinished.
const HALF_WRITER_UNITS: u64 = 60;

fn child_half_writer() {
    let id = env_u64(ID_ENV);
    let seed = env_u64(SEED_ENV);
    let mut out = Reporter::new();
    let region = Region::from_env().unwrap();
    let mut writer = region.writer().unwrap();
    writer.set_timeout(Some(CHILD_WAIT));
    out.say(format_args!("lane {}", writer.lane()));
    out.say_now(format_args!("ready"));
    wait_for_go();
    let mut plan = Rng::new(seed);
    for seq in 0..HALF_WRITER_UNITS {
        let lens = plan_unit(&mut plan, 8192);
        write_test_unit(&mut writer, id, seed, seq, &lens).unwrap();
    }
    let mut unit = writer.begin_unit().unwrap();
    unit.push(&[0xAB; 5000]).unwrap();
    unit.blob_mut(100).unwrap().fill(0xCD);
    // Half a unit is written and not committed: the parent kills us now.
    out.say_now(format_args!("half"));
    park_until_killed();
}

/// Units the holder takes and keeps until it is killed.
const HOLDER_UNITS: usize = 2;

fn child_holder() {
    let mut out = Reporter::new();
    let region = Region::from_env().unwrap();
    let reader = region.reader().unwrap();
    out.say_now(format_args!("ready"));
    wait_for_go();
    let held: Vec<Unit<'_>> = (0..HOLDER_UNITS)
        .map(|_| reader.next_unit(CHILD_WAIT).unwrap())
        .collect();
    for unit in &held {
        report_unit(&mut out, unit);
    }
    out.say_now(format_args!("held"));
    park_until_killed();
}

// ---------------------------------------------------------------------------------------------
// The parent's side of a child
// ---------------------------------------------------------------------------------------------

/// One `@` line of a child.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Report {
    Ready,
    /// A writer's lane.
    Lane(u32),
    /// A writer's `commit` returned for this sequence number.
    Committed(u64),
    /// A writer dropped its handle after its last unit.
    Done,
    /// The half writer left its last unit unfinished.
    Half,
    /// The holder took its units.
    Held,
    /// A reader took a unit whose bytes match its trailer.
    Unit {
        lane: u32,
        writer: u64,
        seq: u64,
    },
    /// A reader took a unit that failed the check.
    Bad(String),
    /// A reader's `next_unit` said `Closed(Writer)`.
    Closed,
    /// A reader's `next_unit` said `PeerGone { role: Writer, pid }`.
    Gone(u32),
    /// A reader's `next_unit` failed otherwise.
    Failed(String),
    /// A line that is none of the above.
    Unknown(String),
}

impl Report {
    fn parse(line: &str) -> Option<Report> {
        // The harness prints "test child_main ... " before the test's first line.
        let line = &line[line.find('@')? + 1..];
        let words: Vec<&str> = line.split(' ').collect();
        let num = |i: usize| -> Option<u64> { words.get(i)?.parse().ok() };
        let report = match words[0] {
            "ready" => Some(Report::Ready),
            "lane" => num(1).map(|l| Report::Lane(l as u32)),
            "c" => num(1).map(Report::Committed),
            "done" => Some(Report::Done),
            "half" => Some(Report::Half),
            "held" => Some(Report::Held),
            "u" => match (num(1), num(2), num(3)) {
                (Some(lane), Some(writer), Some(seq)) => Some(Report::Unit {
                    lane: lane as u32,
                    writer,
                    seq,
                }),
                _ => None,
            },
            "closed" => Some(Report::Closed),
            "gone" => num(1).map(|p| Report::Gone(p as u32)),
            "bad" => Some(Report::Bad(line.to_owned())),
            "error" => Some(Report::Failed(line.to_owned())),
            _ => None,
        };
        Some(report.unwrap_or_else(|| Report::Unknown(line.to_owned())))
    }
}

/// A child process reporting [`Report`]s.
type ChildGuard = common::child::ChildGuard<Report>;

/// Starts this test binary as a child playing `role`, sharing `region` with it.
fn spawn(name: String, role: &str, region: &Region, env: &[(&str, String)]) -> ChildGuard {
    ChildGuard::spawn_parsed(name, ROLE_ENV, role, region, env, Report::parse)
}

/// Waits until the child reports `what`; returns everything it reported so far.
fn wait_for<'c>(child: &'c mut ChildGuard, what: &Report, timeout: Duration) -> &'c [Report] {
    child.wait_for(|report| report == what, timeout)
}

/// Waits until the child reported `units` units (committed or taken), or exited.
fn wait_progress(child: &mut ChildGuard, units: usize, timeout: Duration) {
    let is_unit = |r: &Report| matches!(r, Report::Committed(_) | Report::Unit { .. });
    let mut done = child.seen().iter().filter(|r| is_unit(r)).count();
    let until = Instant::now() + timeout;
    while done < units {
        let left = until.saturating_duration_since(Instant::now());
        match child.next_report(left) {
            Some(report) => done += usize::from(is_unit(report)),
            None if Instant::now() < until => return, // stdout closed: it exited
            None => panic!(
                "{} (pid {}) reported {done} units in {timeout:?}",
                child.name,
                child.pid()
            ),
        }
    }
}

fn spawn_writer(
    region: &Region,
    id: u64,
    seed: u64,
    count: u64,
    max_blob: usize,
    eager: bool,
) -> ChildGuard {
    spawn(
        format!("writer {id}"),
        "writer",
        region,
        &[
            (ID_ENV, id.to_string()),
            (SEED_ENV, seed.to_string()),
            (COUNT_ENV, count.to_string()),
            (MAX_BLOB_ENV, max_blob.to_string()),
            (EAGER_ENV, u8::from(eager).to_string()),
        ],
    )
}

fn spawn_reader(region: &Region, index: usize, eager: bool) -> ChildGuard {
    spawn(
        format!("reader {index}"),
        "reader",
        region,
        &[(EAGER_ENV, u8::from(eager).to_string())],
    )
}

/// The lane a writer child reported.
fn reported_lane(reports: &[Report]) -> u32 {
    reports
        .iter()
        .find_map(|r| match r {
            Report::Lane(lane) => Some(*lane),
            _ => None,
        })
        .expect("a writer reports its lane before it is ready")
}

// ---------------------------------------------------------------------------------------------
// Units: random sizes, bytes checked through a trailer
// ---------------------------------------------------------------------------------------------

// xorshift64*: tiny, seedable, identical in every process.
use common::rng::{checksum, Rng};

/// Where a unit's checksum starts: tied to its writer and sequence number, so that the payload
/// of another unit (a stale lap, another lane) never passes for this one.
fn checksum_seed(writer: u64, seq: u64) -> u64 {
    0xCBF2_9CE4_8422_2325 ^ writer.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seq.rotate_left(29)
}

/// The last blob of every unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Trailer {
    writer: u64,
    seq: u64,
    /// Payload blobs before the trailer.
    blobs: u64,
    /// Payload bytes.
    bytes: u64,
    /// Checksum of the payload blobs, in order.
    sum: u64,
}

const TRAILER_LEN: usize = 40;

impl Trailer {
    fn encode(&self) -> [u8; TRAILER_LEN] {
        let mut out = [0u8; TRAILER_LEN];
        let words = [self.writer, self.seq, self.blobs, self.bytes, self.sum];
        for (chunk, word) in out.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<Trailer, String> {
        if bytes.len() != TRAILER_LEN {
            return Err(format!("trailer of {} bytes", bytes.len()));
        }
        let word = |i: usize| u64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().unwrap());
        Ok(Trailer {
            writer: word(0),
            seq: word(1),
            blobs: word(2),
            bytes: word(3),
            sum: word(4),
        })
    }
}

/// Payload blob lengths of the next unit: 0 to 3 blobs (1 to 4 with the trailer, so both inline
/// descriptors and descriptor tables occur), mostly small, a few up to `max_blob`.
fn plan_unit(rng: &mut Rng, max_blob: usize) -> Vec<usize> {
    assert!(max_blob > 4096, "max_blob {max_blob}");
    let blobs = rng.below(4) as usize;
    (0..blobs)
        .map(|_| match rng.below(100) {
            0..=2 => 0,
            3..=69 => 1 + rng.below(256) as usize,
            70..=96 => 257 + rng.below(4096 - 256) as usize,
            _ => 4097 + rng.below(max_blob as u64 - 4096) as usize,
        })
        .collect()
}

/// Seed of the bytes of payload blob `blob` of unit `seq`.
fn blob_rng(seed: u64, seq: u64, blob: usize) -> Rng {
    Rng::new(seed ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((blob as u64) << 56))
}

/// Fills `unit` with the payload blobs `lens` and the trailer.
fn fill_test_unit(
    unit: &mut UnitWriter<'_>,
    writer: u64,
    seed: u64,
    seq: u64,
    lens: &[usize],
) -> shm_arena::Result<()> {
    let mut sum = checksum_seed(writer, seq);
    let mut scratch = Vec::new();
    for (i, &len) in lens.iter().enumerate() {
        let mut rng = blob_rng(seed, seq, i);
        // Both ways of adding a blob: filled in place, or copied in.
        if (seq + i as u64) % 2 == 0 {
            let blob = unit.blob_mut(len)?;
            rng.fill(blob);
            sum = checksum(sum, blob);
        } else {
            scratch.resize(len, 0);
            rng.fill(&mut scratch);
            sum = checksum(sum, &scratch);
            unit.push(&scratch)?;
        }
    }
    let trailer = Trailer {
        writer,
        seq,
        blobs: lens.len() as u64,
        bytes: lens.iter().sum::<usize>() as u64,
        sum,
    };
    unit.push(&trailer.encode())?;
    Ok(())
}

/// Writes and commits one unit (see [`fill_test_unit`]).
fn write_test_unit(
    writer: &mut Writer,
    id: u64,
    seed: u64,
    seq: u64,
    lens: &[usize],
) -> shm_arena::Result<()> {
    let mut all = lens.to_vec();
    all.push(TRAILER_LEN);
    assert!(
        unit_size(&all) <= writer.max_unit(),
        "unit plan {lens:?} exceeds the lane's unit limit"
    );
    let mut unit = writer.begin_unit()?;
    fill_test_unit(&mut unit, id, seed, seq, lens)?;
    unit.commit()
}

/// Checks a unit's bytes against its trailer.
fn check_unit(unit: &Unit<'_>) -> Result<Trailer, String> {
    let count = unit.blob_count();
    if count == 0 {
        return Err("no blobs".into());
    }
    let trailer = Trailer::decode(unit.blob(count - 1).map_err(|e| e.to_string())?)?;
    if trailer.blobs != count as u64 - 1 {
        return Err(format!("{count} blobs, trailer says {}", trailer.blobs + 1));
    }
    let mut sum = checksum_seed(trailer.writer, trailer.seq);
    let mut bytes = 0;
    for i in 0..count - 1 {
        let blob = unit.blob(i).map_err(|e| e.to_string())?;
        if !blob.is_empty() && blob.as_ptr() as usize % 64 != 0 {
            return Err(format!("blob {i} is not 64-byte aligned"));
        }
        sum = checksum(sum, blob);
        bytes += blob.len() as u64;
    }
    if bytes != trailer.bytes || sum != trailer.sum {
        return Err(format!(
            "writer {} unit {}: {bytes} payload bytes with checksum {sum:#x}, trailer says {} \
             and {:#x}",
            trailer.writer, trailer.seq, trailer.bytes, trailer.sum
        ));
    }
    Ok(trailer)
}

// ---------------------------------------------------------------------------------------------
// What readers received
// ---------------------------------------------------------------------------------------------

/// One unit a reader reported.
#[derive(Debug, Clone, Copy)]
struct Delivery {
    reader: usize,
    lane: u32,
    writer: u64,
    seq: u64,
}

/// Every unit the readers reported (`reports[r]` is reader `r`'s), after checking that none
/// failed its byte check, that none came twice (across all readers) and that each reader saw
/// each writer's units in increasing order (a lane's units are claimed in commit order).
fn deliveries(reports: &[Vec<Report>]) -> HashMap<(u64, u64), Delivery> {
    let mut all = HashMap::new();
    for (reader, reports) in reports.iter().enumerate() {
        let mut last: HashMap<u64, u64> = HashMap::new();
        for report in reports {
            match report {
                Report::Unit { lane, writer, seq } => {
                    let d = Delivery {
                        reader,
                        lane: *lane,
                        writer: *writer,
                        seq: *seq,
                    };
                    if let Some(first) = all.insert((*writer, *seq), d) {
                        panic!("unit {seq} of writer {writer} delivered twice: {first:?}, {d:?}");
                    }
                    if let Some(prev) = last.insert(*writer, *seq) {
                        assert!(
                            prev < *seq,
                            "reader {reader} got unit {seq} of writer {writer} after unit {prev}"
                        );
                    }
                }
                Report::Bad(what) => panic!("reader {reader} got a bad unit: {what}"),
                Report::Unknown(line) => panic!("reader {reader} printed {line:?}"),
                _ => {}
            }
        }
    }
    all
}

/// Checks that the units of `writer` in `got` are exactly its sequence numbers `0..count`,
/// all from `lane`.
fn assert_all_delivered(got: &HashMap<(u64, u64), Delivery>, writer: u64, count: u64, lane: u32) {
    let mut seen = 0;
    for d in got.values().filter(|d| d.writer == writer) {
        assert!(
            d.seq < count,
            "unit {} of writer {writer}, which wrote {count}",
            d.seq
        );
        assert_eq!(d.lane, lane, "lane of writer {writer}'s unit {}", d.seq);
        seen += 1;
    }
    if seen != count {
        let missing: Vec<u64> = (0..count)
            .filter(|seq| !got.contains_key(&(writer, *seq)))
            .take(20)
            .collect();
        panic!(
            "writer {writer}: {seen} of {count} units delivered; missing (first 20) {missing:?}"
        );
    }
}

/// How a reader's `next_unit` ended.
fn reader_end(name: &str, reports: &[Report]) -> Report {
    match reports.iter().rev().find(|r| {
        matches!(
            r,
            Report::Closed | Report::Gone(_) | Report::Failed(_) | Report::Unit { .. }
        )
    }) {
        Some(end @ (Report::Closed | Report::Gone(_))) => end.clone(),
        other => panic!("{name} ended with {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Test 1: 3 writer and 3 reader processes
// ---------------------------------------------------------------------------------------------

fn stress_total() -> u64 {
    if std::env::var("SHM_ARENA_STRESS").is_ok_and(|v| v == "1") {
        1_000_000
    } else {
        30_000
    }
}

/// Three writer processes each commit a third of the units (random sizes up to 64 KiB, 1 to 4
/// blobs); three reader processes take units until the region closes. Every unit arrives
/// exactly once, intact, from its writer's lane, and each reader sees a writer's units in the
/// order they were committed.
#[test]
fn stress_3_writers_3_readers() {
    let total = stress_total();
    let lane_capacity = 1 << 20;
    let max_blob = 64 * 1024;
    let region = Region::create_with(RegionOptions::new(lane_capacity).mpmc(3, 3)).unwrap();
    let counts: Vec<u64> = (0..3)
        .map(|w| total / 3 + u64::from(w < total % 3))
        .collect();
    let started = Instant::now();
    let mut writers: Vec<ChildGuard> = (0..3)
        .map(|w| {
            spawn_writer(
                &region,
                w,
                0x5EED_0100 + w,
                counts[w as usize],
                max_blob,
                false,
            )
        })
        .collect();
    let mut readers: Vec<ChildGuard> = (0..3).map(|r| spawn_reader(&region, r, false)).collect();
    for child in writers.iter_mut().chain(readers.iter_mut()) {
        wait_for(child, &Report::Ready, CHILD_WAIT);
    }
    for child in writers.iter_mut().chain(readers.iter_mut()) {
        child.go();
    }
    let deadline = Instant::now() + Duration::from_secs(if total > 100_000 { 900 } else { 120 });
    let mut lanes = Vec::new();
    for writer in &mut writers {
        let (status, reports) = writer.finish(deadline);
        assert!(status.success(), "{}: {status}", writer.name);
        assert!(
            reports.contains(&Report::Done),
            "{}: {reports:?}",
            writer.name
        );
        lanes.push(reported_lane(&reports));
    }
    let mut reader_reports = Vec::new();
    for reader in &mut readers {
        let (status, reports) = reader.finish(deadline);
        assert!(status.success(), "{}: {status}", reader.name);
        assert_eq!(
            reader_end(&reader.name, &reports),
            Report::Closed,
            "{}: every writer dropped its handle",
            reader.name
        );
        reader_reports.push(reports);
    }
    let mut sorted = lanes.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 3, "writers share lanes: {lanes:?}");
    let got = deliveries(&reader_reports);
    for w in 0..3 {
        assert_all_delivered(&got, w as u64, counts[w], lanes[w]);
    }
    let per_reader: Vec<usize> = (0..3)
        .map(|r| got.values().filter(|d| d.reader == r).count())
        .collect();
    eprintln!(
        "stress: {total} units in {:?}, per reader {per_reader:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// Test 2: kill rounds
// ---------------------------------------------------------------------------------------------

/// Units each writer commits in a kill round.
const KILL_ROUND_UNITS: u64 = 2000;
/// Small lanes, so writers also block on full lanes when a reader dies.
const KILL_ROUND_LANE: u64 = 64 * 1024;
const KILL_ROUND_MAX_BLOB: usize = 8 * 1024;
/// The victim is killed once it reported up to this many units (committed or taken), so the
/// kill lands in the middle of its work however fast the build is...
const KILL_PROGRESS: u64 = KILL_ROUND_UNITS / 2;
/// ...plus up to this many milliseconds, so that it does not always land right after a report.
const KILL_JITTER_MS: u64 = 3;
/// Survivors must have exited this long after the kill.
const SURVIVOR_DEADLINE: Duration = Duration::from_secs(20);
/// Committed units a killed reader may take with it unreported. The units it holds are not
/// among them (a reader reports a unit before it keeps it; they are lost to the application,
/// but the reports show where they went); only a unit it claimed and died before reporting
/// is, and a reader has at most one claim in flight.
const KILLED_READER_LOSS: usize = 1;

/// Each round: 3 writer and 3 reader processes; one of them, picked at random, is SIGKILLed at
/// a random point of its work (see [`KillPoint`]). Writers report each unit as soon as `commit`
/// returned, readers as soon as they took it (before ending it). Then: no unit is delivered
/// twice; every unit a writer (surviving or killed) reported committed is delivered, except at
/// most [`KILLED_READER_LOSS`] taken by a killed reader; nothing a writer did not commit
/// appears; and every survivor exits cleanly before [`SURVIVOR_DEADLINE`].
#[test]
fn kill_rounds() {
    let rounds: u64 = std::env::var("SHM_ARENA_KILL_ROUNDS")
        .map(|v| v.parse().expect("SHM_ARENA_KILL_ROUNDS"))
        .unwrap_or(3);
    let seed: u64 = std::env::var("SHM_ARENA_KILL_SEED")
        .map(|v| v.parse().expect("SHM_ARENA_KILL_SEED"))
        .unwrap_or_else(|_| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            now.as_nanos() as u64
        });
    eprintln!("kill_rounds: {rounds} rounds, SHM_ARENA_KILL_SEED={seed}");
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let mut mid_run = 0;
    let mut lost = 0;
    for round in 0..rounds {
        let victim = rng.below(6) as usize;
        let point = KillPoint {
            progress: rng.below(KILL_PROGRESS) as usize,
            jitter: Duration::from_millis(rng.below(KILL_JITTER_MS + 1)),
        };
        let outcome = kill_round(round, rng.next(), victim, point);
        mid_run += u64::from(outcome.mid_run);
        lost += outcome.lost;
    }
    eprintln!(
        "kill_rounds: {rounds} rounds in {:?}; victim killed before it finished in {mid_run}; \
         {lost} units lost with killed readers",
        started.elapsed()
    );
}

struct RoundOutcome {
    /// The victim had not finished its work when it was killed.
    mid_run: bool,
    /// Committed units never reported by a reader.
    lost: usize,
}

/// When the victim of a round dies.
#[derive(Debug, Clone, Copy)]
struct KillPoint {
    /// Units the victim reported (committed or taken) first.
    progress: usize,
    /// Then this long.
    jitter: Duration,
}

/// One kill round; `victim` 0..3 is a writer, 3..6 a reader.
fn kill_round(round: u64, seed: u64, victim: usize, point: KillPoint) -> RoundOutcome {
    let region = Region::create_with(RegionOptions::new(KILL_ROUND_LANE).mpmc(3, 3)).unwrap();
    let mut children: Vec<ChildGuard> = (0..3)
        .map(|w| {
            let seed = seed ^ (w + 1u64).wrapping_mul(0xA24B_AED4_963E_E407);
            spawn_writer(
                &region,
                w,
                seed,
                KILL_ROUND_UNITS,
                KILL_ROUND_MAX_BLOB,
                true,
            )
        })
        .collect();
    children.extend((0..3).map(|r| spawn_reader(&region, r, true)));
    for child in &mut children {
        wait_for(child, &Report::Ready, CHILD_WAIT);
    }
    for child in &mut children {
        child.go();
    }
    wait_progress(&mut children[victim], point.progress, CHILD_WAIT);
    std::thread::sleep(point.jitter);
    let victim_pid = children[victim].pid();
    children[victim].kill();
    let deadline = Instant::now() + SURVIVOR_DEADLINE;
    let mut statuses = Vec::new();
    let mut reports = Vec::new();
    for child in &mut children {
        let (status, child_reports) = child.finish(deadline);
        statuses.push(status);
        reports.push(child_reports);
    }
    let victim_name = children[victim].name.clone();
    let victim_killed = statuses[victim].signal() == Some(SIGKILL);
    let context = format!(
        "round {round} (seed {seed}, {victim_name} killed after {} units + {:?})",
        point.progress, point.jitter
    );
    for (i, status) in statuses.iter().enumerate() {
        if i != victim {
            assert!(
                status.success(),
                "{context}: {} exited with {status}",
                children[i].name
            );
        } else {
            assert!(
                status.success() || victim_killed,
                "{context}: victim exited with {status}"
            );
        }
    }

    // Writers: the units each reported committed, which must be 0, 1, 2, ... in order.
    let mut lanes = Vec::new();
    let mut committed = Vec::new();
    for (w, reports) in reports[..3].iter().enumerate() {
        lanes.push(reported_lane(reports));
        let seqs: Vec<u64> = reports
            .iter()
            .filter_map(|r| match r {
                Report::Committed(seq) => Some(*seq),
                _ => None,
            })
            .collect();
        assert!(
            seqs.iter().enumerate().all(|(i, &s)| s == i as u64),
            "{context}: writer {w} reported commits out of order"
        );
        if w != victim || !victim_killed {
            assert_eq!(seqs.len() as u64, KILL_ROUND_UNITS, "{context}: writer {w}");
        }
        committed.push(seqs.len() as u64);
    }

    let got = deliveries(&reports[3..]);
    assert!(
        got.values().all(|d| d.writer < 3),
        "{context}: a unit of an unknown writer"
    );
    let mut missing = Vec::new();
    for (w, &count) in committed.iter().enumerate() {
        let w = w as u64;
        for d in got.values().filter(|d| d.writer == w) {
            assert_eq!(d.lane, lanes[w as usize], "{context}: lane of {d:?}");
            // A killed writer may have committed one unit more than it could report.
            assert!(
                d.seq < count + u64::from(w as usize == victim),
                "{context}: {d:?} but writer {w} committed {count} units"
            );
            assert!(d.seq < KILL_ROUND_UNITS, "{context}: {d:?}");
        }
        missing.extend(
            (0..count)
                .filter(|seq| !got.contains_key(&(w, *seq)))
                .map(|seq| (w, seq)),
        );
    }
    let reader_killed = victim >= 3 && victim_killed;
    let allowed = if reader_killed { KILLED_READER_LOSS } else { 0 };
    assert!(
        missing.len() <= allowed,
        "{context}: committed units never delivered: {missing:?}"
    );

    // Surviving readers saw the end: Closed, or PeerGone naming the killed writer.
    for r in 3..6 {
        if r == victim {
            continue;
        }
        let name = &children[r].name;
        match reader_end(name, &reports[r]) {
            Report::Closed => {}
            Report::Gone(pid) if victim < 3 && victim_killed && pid == victim_pid => {}
            other => panic!("{context}: {name} ended with {other:?}"),
        }
    }
    let mid_run = victim_killed
        && if victim < 3 {
            committed[victim] < KILL_ROUND_UNITS
        } else {
            !reports[victim].contains(&Report::Closed)
        };
    let taken: Vec<usize> = (0..3)
        .map(|r| got.values().filter(|d| d.reader == r).count())
        .collect();
    eprintln!(
        "  {context}: {} committed, per reader {taken:?}, lost {}{}",
        committed.iter().sum::<u64>(),
        missing.len(),
        if mid_run {
            ""
        } else {
            " (victim had finished)"
        }
    );
    RoundOutcome {
        mid_run,
        lost: missing.len(),
    }
}

// ---------------------------------------------------------------------------------------------
// Test 3: a writer killed in the middle of a unit
// ---------------------------------------------------------------------------------------------

/// A writer process killed between `begin_unit` and `commit` does not wedge the readers: they
/// get every unit it committed, its half unit never appears, and once every lane is held a new
/// writer can only come by taking over the dead one's lane, whose units are delivered too.
#[test]
fn writer_killed_mid_unit_does_not_wedge_readers() {
    const HALF_ID: u64 = 0;
    const OWN_ID: u64 = 1;
    const HEIR_ID: u64 = 2;
    const UNITS: u64 = 40;
    let region = Region::create_with(RegionOptions::new(64 * 1024).mpmc(2, 2)).unwrap();
    // This process holds one lane for the whole test, so the child gets the other one and the
    // readers cannot see the region close while the child is dead.
    let mut own = region.writer().unwrap();
    own.set_timeout(Some(CHILD_WAIT));
    let own_lane = own.lane();
    let mut half = spawn(
        "half writer".into(),
        "half_writer",
        &region,
        &[
            (ID_ENV, HALF_ID.to_string()),
            (SEED_ENV, "77".into()),
            (EAGER_ENV, "1".into()),
        ],
    );
    let mut readers: Vec<ChildGuard> = (0..2).map(|r| spawn_reader(&region, r, true)).collect();
    let half_lane = reported_lane(wait_for(&mut half, &Report::Ready, CHILD_WAIT));
    assert_ne!(half_lane, own_lane);
    for reader in &mut readers {
        wait_for(reader, &Report::Ready, CHILD_WAIT);
        reader.go();
    }
    half.go();
    let mut plan = Rng::new(5);
    for seq in 0..UNITS {
        write_test_unit(&mut own, OWN_ID, 5, seq, &plan_unit(&mut plan, 8192)).unwrap();
    }
    wait_for(&mut half, &Report::Half, CHILD_WAIT);
    match region.writer() {
        Err(Error::RoleTaken {
            role: Role::Writer,
            pid,
        }) => assert!(pid == half.pid() || pid == std::process::id(), "pid {pid}"),
        other => panic!("a third writer on two live lanes: {other:?}"),
    }

    half.kill();
    let status = half.wait_exit(Instant::now() + CHILD_WAIT);
    assert_eq!(status.signal(), Some(SIGKILL));
    let mut heir = region
        .writer()
        .expect("a new writer takes over the dead writer's lane");
    assert_eq!(heir.lane(), half_lane);
    heir.set_timeout(Some(CHILD_WAIT));
    // More than a lane's worth, so the heir's lane wraps past the abandoned reservation.
    let mut plan = Rng::new(9);
    for seq in 0..3 * UNITS {
        write_test_unit(&mut heir, HEIR_ID, 9, seq, &plan_unit(&mut plan, 8192)).unwrap();
        if seq < UNITS {
            write_test_unit(
                &mut own,
                OWN_ID,
                5,
                UNITS + seq,
                &plan_unit(&mut plan, 8192),
            )
            .unwrap();
        }
    }
    drop(heir);
    drop(own);

    let deadline = Instant::now() + CHILD_WAIT;
    let mut reports = Vec::new();
    for reader in &mut readers {
        let (status, r) = reader.finish(deadline);
        assert!(status.success(), "{}: {status}", reader.name);
        // The dead writer's lane was taken over, so whether the end counts it as a writer that
        // died is not specified; either way the readers must get to the end.
        let end = reader_end(&reader.name, &r);
        assert!(matches!(end, Report::Closed | Report::Gone(_)), "{end:?}");
        reports.push(r);
    }
    let (_, half_reports) = half.finish(Instant::now() + CHILD_WAIT);
    assert!(half_reports.contains(&Report::Half));
    let got = deliveries(&reports);
    assert_all_delivered(&got, HALF_ID, HALF_WRITER_UNITS, half_lane);
    assert_all_delivered(&got, HEIR_ID, 3 * UNITS, half_lane);
    assert_all_delivered(&got, OWN_ID, 2 * UNITS, own_lane);
    // Every report is one of those three writers' committed units (`deliveries` rejects units
    // whose bytes do not match a trailer, which the half unit has not got).
    assert_eq!(got.len() as u64, HALF_WRITER_UNITS + 3 * UNITS + 2 * UNITS);
    let per_reader: Vec<usize> = (0..2)
        .map(|r| got.values().filter(|d| d.reader == r).count())
        .collect();
    eprintln!(
        "writer killed mid-unit: {} units delivered, per reader {per_reader:?}",
        got.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Test 4: a reader killed while it holds units
// ---------------------------------------------------------------------------------------------

/// A reader process killed while it holds units does not wedge the writer whose lane those
/// units fill: the writer, blocked for space, gets it once the dead reader's units are
/// released, and the other reader receives every later unit. The held units are lost.
#[test]
fn reader_killed_holding_units_does_not_wedge_writer() {
    const SEED: u64 = 3;
    let region = Region::create_with(RegionOptions::new(64 * 1024).mpmc(1, 2)).unwrap();
    let mut writer = region.writer().unwrap();
    let mut holder = spawn(
        "holder".into(),
        "holder",
        &region,
        &[(EAGER_ENV, "1".into())],
    );
    let mut other = spawn_reader(&region, 1, true);
    wait_for(&mut holder, &Report::Ready, CHILD_WAIT);
    wait_for(&mut other, &Report::Ready, CHILD_WAIT);

    // Two big units, taken and held by the holder.
    for seq in 0..HOLDER_UNITS as u64 {
        write_test_unit(&mut writer, 0, SEED, seq, &[8000, 100]).unwrap();
    }
    holder.go();
    wait_for(&mut holder, &Report::Held, CHILD_WAIT);

    // Fill the lane without blocking: the other reader does not read yet.
    let mut seq = HOLDER_UNITS as u64;
    loop {
        let mut unit = match writer.try_begin_unit() {
            Ok(unit) => unit,
            Err(Error::WouldBlock(_)) => break,
            Err(e) => panic!("filling the lane: {e}"),
        };
        match fill_test_unit(&mut unit, 0, SEED, seq, &[1000]) {
            Ok(()) => unit.commit().unwrap(),
            Err(Error::WouldBlock(_)) => break,
            Err(e) => panic!("filling the lane: {e}"),
        }
        seq += 1;
        assert!(seq < 1000, "the lane never filled");
    }
    assert!(seq > 30, "only {seq} units fit");

    // The next unit fits only once the held units are released.
    writer.set_timeout(Some(Duration::from_secs(10)));
    let killer = kill_later(holder, Duration::from_millis(300));
    let started = Instant::now();
    let result = writer.begin_unit().and_then(|mut unit| {
        fill_test_unit(&mut unit, 0, SEED, seq, &[1000])?;
        unit.commit()
    });
    let waited = started.elapsed();
    let (mut holder, _) = killer.join().unwrap();
    if let Err(e) = result {
        panic!("writer blocked on a lane held by a killed reader: {e} after {waited:?}");
    }
    eprintln!("writer unblocked {waited:?} after it began waiting (kill at 300 ms)");
    seq += 1;

    // Now the other reader reads; the writer goes on for more than a lane's worth.
    other.go();
    let total = seq + 100;
    for s in seq..total {
        write_test_unit(&mut writer, 0, SEED, s, &[1000]).unwrap();
    }
    drop(writer);

    let deadline = Instant::now() + CHILD_WAIT;
    let (status, holder_reports) = holder.finish(deadline);
    assert_eq!(status.signal(), Some(SIGKILL));
    let (status, other_reports) = other.finish(deadline);
    assert!(status.success(), "other reader: {status}");
    assert_eq!(reader_end("other reader", &other_reports), Report::Closed);
    let got = deliveries(&[holder_reports, other_reports]);
    for s in 0..total {
        let d = got
            .get(&(0, s))
            .unwrap_or_else(|| panic!("unit {s} never delivered"));
        let expected = usize::from(s >= HOLDER_UNITS as u64);
        assert_eq!(d.reader, expected, "unit {s} went to the wrong reader");
    }
    assert_eq!(got.len() as u64, total);
}

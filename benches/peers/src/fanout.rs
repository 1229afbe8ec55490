//! Case 11: one writer, N subscriber processes that each receive every unit (broadcast).
//!
//! The parent writes; each subscriber is this executable re-started (`--child fanout-*`).
//! Every unit carries its sequence number (bytes 0..8), the writer's CLOCK_MONOTONIC time when
//! it sent the unit (bytes 8..16) and the sequence number's low byte as its last byte; every
//! subscriber checks all three for every unit, so no contender wins by skipping.
//!
//! Throughput: the writer sends as fast as the slowest subscriber lets it; each subscriber
//! times its units from its first to its last; the case reports the slowest subscriber's rate
//! (every subscriber must get every unit). Latency: the writer sends one unit every `gap`
//! (paced, so the queue stays empty and delivery, not queueing, is measured); each subscriber
//! records receipt time minus the stamp; p50/p99 are over all subscribers' samples.
//!
//! Settings, the same for both: in flight at most what shm-arena's ring holds (a ring of two
//! units' size rounded up to a power of two, at least 64 KiB; iceoryx2's subscriber buffer
//! holds as many units), the writer never drops (shm-arena: backpressure subscribers;
//! iceoryx2: safe overflow off, `RetryUntilDelivered`). shm-arena subscribers wait with the
//! crate's `next_unit` (spin, then futex); iceoryx2 subscribers busy-poll as its benchmarks do
//! (with the yields of `procs::iox_receive`, needed on this 2-CPU machine).

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

#[cfg(feature = "iceoryx2")]
use iceoryx2::prelude::*;
use shm_arena::{Policy, Region, RegionOptions};

use crate::procs::arg;
use crate::util::{inherited_fds, now_ns, source, ChildGuard, TIMEOUT};

/// How a run measures.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Throughput,
    /// Paced, one unit every this long.
    Latency(Duration),
}

impl Mode {
    fn arg(self) -> String {
        match self {
            Mode::Throughput => "0".into(),
            Mode::Latency(gap) => gap.as_nanos().to_string(),
        }
    }

    fn parse(s: &str) -> Mode {
        match s.parse::<u64>().expect("mode") {
            0 => Mode::Throughput,
            ns => Mode::Latency(Duration::from_nanos(ns)),
        }
    }
}

/// Ring bytes for units of `size`: two units' worth, a power of two, at least 64 KiB.
fn ring_bytes(size: usize) -> u64 {
    (2 * shm_arena::unit_size(&[size]))
        .next_power_of_two()
        .max(64 << 10)
}

/// Units of `size` the ring holds (units never wrap).
fn in_flight(size: usize) -> usize {
    (ring_bytes(size) / shm_arena::unit_size(&[size])) as usize
}

/// Writes unit `seq`'s stamps into `unit` (its bytes were copied in before).
#[inline]
fn stamp(unit: &mut [u8], seq: u64) {
    unit[..8].copy_from_slice(&seq.to_le_bytes());
    unit[8..16].copy_from_slice(&now_ns().to_le_bytes());
    let last = unit.len() - 1;
    unit[last] = seq as u8;
}

/// Checks unit `seq`'s stamps; returns the writer's send time.
#[inline]
fn check(unit: &[u8], seq: u64) -> u64 {
    let got = u64::from_le_bytes(unit[..8].try_into().expect("8 bytes"));
    assert_eq!(got, seq, "subscriber got unit {got}, expected {seq}");
    assert_eq!(unit[unit.len() - 1], seq as u8, "unit {seq}: last byte");
    u64::from_le_bytes(unit[8..16].try_into().expect("8 bytes"))
}

/// What a subscriber measured: its throughput in bytes/s, or its latency samples in ns.
struct Report(Vec<f64>);

/// What a subscriber child does with each unit, and what it reports.
struct Meter {
    mode: Mode,
    size: usize,
    first: Option<Instant>,
    latencies: Vec<f64>,
}

impl Meter {
    fn new(mode: Mode, size: usize, units: u64) -> Meter {
        Meter {
            mode,
            size,
            first: None,
            latencies: Vec::with_capacity(units as usize),
        }
    }

    #[inline]
    fn unit(&mut self, bytes: &[u8], seq: u64) {
        let sent = check(bytes, seq);
        match self.mode {
            Mode::Throughput => {
                self.first.get_or_insert_with(Instant::now);
            }
            Mode::Latency(_) => self.latencies.push(now_ns().saturating_sub(sent) as f64),
        }
    }

    fn report(self, units: u64, out: &mut std::fs::File) {
        let line = match self.mode {
            Mode::Throughput => {
                let elapsed = self.first.expect("units > 1").elapsed().as_secs_f64();
                format!(
                    "{}\n",
                    (units - 1) as f64 * self.size as f64 / elapsed.max(1e-9)
                )
            }
            Mode::Latency(_) => {
                let v: Vec<String> = self.latencies.iter().map(|l| l.to_string()).collect();
                format!("{}\n", v.join(" "))
            }
        };
        out.write_all(line.as_bytes()).expect("report");
    }
}

/// The parent's side of the children: ready bytes and reports come back on one pipe.
struct Children {
    guards: Vec<ChildGuard>,
    reports: std::fs::File,
}

impl Children {
    /// Starts `n` children of `kind`, each inheriting `fds` and the write end of the report
    /// pipe (always last).
    fn spawn(kind: &str, n: usize, args: &[String], fds: &[&OwnedFd]) -> Children {
        let (read, write) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe");
        let guards = (0..n)
            .map(|_| {
                let mut all: Vec<_> = fds.iter().map(|fd| fd.as_fd()).collect();
                all.push(write.as_fd());
                ChildGuard::spawn(kind, args, &all)
            })
            .collect();
        drop(write);
        Children {
            guards,
            reports: std::fs::File::from(read),
        }
    }

    /// Waits for one ready byte from every child.
    fn wait_ready(&mut self) {
        let mut ready = vec![0u8; self.guards.len()];
        self.reports.read_exact(&mut ready).expect("children ready");
        assert!(ready.iter().all(|&b| b == b'R'), "children not ready");
    }

    /// Every child's report, once all exited.
    fn finish(mut self) -> Vec<Report> {
        let mut text = String::new();
        self.reports.read_to_string(&mut text).expect("reports");
        for guard in self.guards.drain(..) {
            guard.finish();
        }
        text.lines()
            .map(|l| Report(l.split(' ').map(|v| v.parse().expect("number")).collect()))
            .collect()
    }
}

/// Turns the children's reports into the case's samples: the slowest subscriber's GB/s, or
/// every latency sample.
fn samples(mode: Mode, reports: Vec<Report>, subscribers: usize) -> Vec<f64> {
    assert_eq!(reports.len(), subscribers, "a subscriber did not report");
    match mode {
        Mode::Throughput => {
            let slowest = reports.iter().map(|r| r.0[0]).fold(f64::INFINITY, f64::min);
            vec![slowest / 1e9]
        }
        Mode::Latency(_) => reports.into_iter().flat_map(|r| r.0).collect(),
    }
}

/// Waits until `deadline` (pacing the latency runs): sleeps through most of the gap, so the
/// writer does not hold a CPU the subscribers need (2 CPUs for up to 5 processes), then spins.
fn pace(deadline: Instant) {
    let now = Instant::now();
    if let Some(left) = deadline.checked_duration_since(now) {
        if left > Duration::from_micros(100) {
            std::thread::sleep(left - Duration::from_micros(80));
        }
    }
    while Instant::now() < deadline {
        std::hint::spin_loop();
    }
}

/// shm-arena: a broadcast region, backpressure subscribers; `busy`: they busy-poll
/// (`Subscriber::set_busy_poll`) as iceoryx2's do, instead of sleeping between units.
pub fn arena(subscribers: usize, size: usize, units: u64, mode: Mode, busy: bool) -> Vec<f64> {
    let region =
        Region::create_with(RegionOptions::new(ring_bytes(size)).broadcast(subscribers as u32))
            .expect("broadcast region");
    let fd = region
        .fd()
        .expect("memfd")
        .try_clone_to_owned()
        .expect("dup");
    let args = [
        size.to_string(),
        units.to_string(),
        mode.arg(),
        u8::from(busy).to_string(),
    ];
    let mut children = Children::spawn("fanout-arena", subscribers, &args, &[&fd]);
    children.wait_ready();
    let mut writer = region.writer().expect("writer");
    writer.set_timeout(Some(TIMEOUT));
    let src = source(size);
    let start = Instant::now();
    for seq in 0..units {
        if let Mode::Latency(gap) = mode {
            pace(start + gap * seq as u32);
        }
        let mut unit = writer.begin_unit().expect("begin");
        let blob = unit.blob_mut(size).expect("blob");
        blob.copy_from_slice(&src);
        stamp(blob, seq);
        unit.commit().expect("commit");
    }
    drop(writer); // subscribers drain, then see Closed
    samples(mode, children.finish(), subscribers)
}

fn arena_child(args: &[String]) {
    let (size, units, mode): (usize, u64, Mode) =
        (arg(args, 0), arg(args, 1), Mode::parse(&args[2]));
    let mut fds = inherited_fds();
    let mut out = std::fs::File::from(fds.pop().expect("report fd"));
    let region = Region::open_fd(fds.pop().expect("memfd")).expect("open region");
    let mut sub = region.subscriber(Policy::Backpressure).expect("subscriber");
    sub.set_busy_poll(args[3] == "1");
    out.write_all(b"R").expect("ready");
    let mut meter = Meter::new(mode, size, units);
    for seq in 0..units {
        let unit = sub.next_unit(TIMEOUT).expect("unit");
        meter.unit(unit.blob(0).expect("blob"), seq);
    }
    assert!(
        matches!(sub.next_unit(TIMEOUT), Err(shm_arena::Error::Closed(_))),
        "nothing after the last unit"
    );
    meter.report(units, &mut out);
}

/// Marks the hello samples the publisher sends until every subscriber is connected.
#[cfg(feature = "iceoryx2")]
const HELLO: u64 = u64::MAX;

/// iceoryx2 publish-subscribe with the same subscriber count.
#[cfg(feature = "iceoryx2")]
pub fn iceoryx2(subscribers: usize, size: usize, units: u64, mode: Mode) -> Vec<f64> {
    let node = crate::procs::iox_node();
    let name = crate::procs::iox_name("fanout");
    let buffer = in_flight(size);
    let service = crate::procs::iox_service(&node, &name, true, subscribers, buffer);
    let publisher = service
        .publisher_builder()
        .initial_max_slice_len(size)
        .max_loaned_samples(1)
        .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
        .create()
        .expect("iceoryx2 publisher");
    let args = [
        size.to_string(),
        units.to_string(),
        mode.arg(),
        name,
        subscribers.to_string(),
        buffer.to_string(),
    ];
    let mut children = Children::spawn("fanout-iceoryx2", subscribers, &args, &[]);
    // A sample sent before a subscriber is connected never reaches it: say hello until every
    // child has received one (children skip hellos).
    let mut ready = 0;
    rustix::io::ioctl_fionbio(&children.reports, true).expect("nonblocking");
    while ready < subscribers {
        let mut hello = vec![0u8; 16];
        hello[..8].copy_from_slice(&HELLO.to_le_bytes());
        publisher
            .loan_slice_uninit(16)
            .expect("loan")
            .write_from_slice(&hello)
            .send()
            .expect("hello");
        std::thread::sleep(Duration::from_millis(1));
        let mut bytes = [0u8; 16];
        match children.reports.read(&mut bytes) {
            Ok(n) => ready += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("ready pipe: {e}"),
        }
    }
    rustix::io::ioctl_fionbio(&children.reports, false).expect("blocking");
    let src = source(size);
    let start = Instant::now();
    for seq in 0..units {
        if let Mode::Latency(gap) = mode {
            pace(start + gap * seq as u32);
        }
        let mut sample = publisher
            .loan_slice_uninit(size)
            .expect("loan")
            .write_from_slice(&src);
        stamp(sample.payload_mut(), seq);
        sample.send().expect("send");
    }
    let reports = children.finish();
    drop(publisher);
    samples(mode, reports, subscribers)
}

#[cfg(feature = "iceoryx2")]
fn iceoryx2_child(args: &[String]) {
    let (size, units, mode): (usize, u64, Mode) =
        (arg(args, 0), arg(args, 1), Mode::parse(&args[2]));
    let mut out = std::fs::File::from(inherited_fds().pop().expect("report fd"));
    let node = crate::procs::iox_node();
    let service = crate::procs::iox_service(&node, &args[3], false, arg(args, 4), arg(args, 5));
    let subscriber = service
        .subscriber_builder()
        .buffer_size(arg(args, 5))
        .create()
        .expect("subscriber");
    let mut said_ready = false;
    let mut meter = Meter::new(mode, size, units);
    let mut seq = 0;
    while seq < units {
        let sample = crate::procs::iox_receive(&subscriber)
            .unwrap_or_else(|| panic!("iceoryx2 unit {seq} of {units} timed out"));
        let bytes = sample.payload();
        if u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) == HELLO {
            if !said_ready {
                out.write_all(b"R").expect("ready");
                said_ready = true;
            }
            continue;
        }
        meter.unit(bytes, seq);
        seq += 1;
    }
    meter.report(units, &mut out);
}

/// Entry point of the `fanout-*` children.
pub fn child_main(kind: &str, args: &[String]) -> bool {
    match kind {
        "fanout-arena" => arena_child(args),
        #[cfg(feature = "iceoryx2")]
        "fanout-iceoryx2" => iceoryx2_child(args),
        _ => return false,
    }
    true
}

//! shm-arena against its peers and the physical limits, side by side in one run.
//!
//! ```text
//! shm-arena-peers [--quick] [--cases 1,2,3,4,7,sweep] [--out raw.json]
//! ```
//!
//! Writes raw measurements (every contender's value and samples, the throughput sweeps for the
//! plot, and the cases that could not run) as JSON; `report.py` turns them into the ratio
//! table. Contenders of one case are interleaved (rep 1 of each, then rep 2 of each, ...) so a
//! change of machine load hits them alike; each value is the best rep's (see
//! [`best_throughput`]).
//!
//! Run through `ci/bench-report.sh`, which builds this in release mode.

mod fanout;
mod mpmc_case;
mod procs;
mod threads;
mod util;
#[cfg(feature = "worker")]
mod worker_case;

use std::time::Duration;

use serde_json::{json, Value};

use crate::util::{median, quantile};

struct Settings {
    quick: bool,
    reps: usize,
}

/// One contender of a case: its name, its role, and one rep of the measurement.
struct Contender<'a> {
    name: &'static str,
    role: &'static str,
    run: Box<dyn FnMut() -> Vec<f64> + 'a>,
}

fn contender<'a>(
    name: &'static str,
    role: &'static str,
    run: impl FnMut() -> Vec<f64> + 'a,
) -> Contender<'a> {
    Contender {
        name,
        role,
        run: Box::new(run),
    }
}

/// Runs every contender `reps` times, interleaved, and returns each one's pooled samples.
///
/// `SHM_ARENA_PEERS_ONLY=NAME` runs only the contenders whose name contains NAME (for profiling
/// one of them with perf); the others get no samples and no row.
fn interleave(reps: usize, label: &str, contenders: &mut [Contender<'_>]) -> Vec<Vec<Vec<f64>>> {
    let only = std::env::var("SHM_ARENA_PEERS_ONLY").ok();
    let mut runs = vec![Vec::new(); contenders.len()];
    for rep in 0..reps {
        for (c, runs) in contenders.iter_mut().zip(&mut runs) {
            if only.as_ref().is_some_and(|o| !c.name.contains(o.as_str())) {
                continue;
            }
            eprintln!("  [{label}] rep {}/{reps}: {}", rep + 1, c.name);
            runs.push((c.run)());
        }
    }
    runs
}

/// A throughput contender's value: its best rep. On a shared machine other load only ever
/// slows a run down, so the best rep is the one least disturbed (the same rule for everyone).
fn best_throughput(runs: &[Vec<f64>]) -> Option<f64> {
    runs.iter().flatten().copied().reduce(f64::max)
}

/// A latency contender's (median, p99, rounds): those of its rep with the lowest median (see
/// [`best_throughput`]). On this 2-CPU machine reps are bimodal: whether the scheduler leaves
/// the two processes a CPU each depends on what else runs.
fn best_latency(runs: &[Vec<f64>]) -> Option<(f64, f64, usize)> {
    runs.iter()
        .filter(|r| !r.is_empty())
        .map(|r| {
            let mut r = r.clone();
            (median(&mut r), quantile(&mut r, 0.99), r.len())
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
}

#[derive(Default)]
struct Output {
    measurements: Vec<Value>,
    series: Vec<Value>,
    unavailable: Vec<Value>,
}

impl Output {
    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        case: &str,
        metric: &str,
        unit: &str,
        higher_is_better: bool,
        c: &Contender<'_>,
        value: f64,
        samples: usize,
    ) {
        eprintln!("    {case} | {metric}: {} = {value:.4} {unit}", c.name);
        self.measurements.push(json!({
            "case": case, "metric": metric, "unit": unit,
            "higher_is_better": higher_is_better,
            "contender": c.name, "role": c.role, "value": value,
            "samples": samples,
        }));
    }

    /// Throughput cases: one value per rep; the median is reported.
    fn throughput(
        &mut self,
        s: &Settings,
        case: &str,
        unit: &str,
        contenders: &mut [Contender<'_>],
    ) {
        let runs = interleave(s.reps, case, contenders);
        for (c, runs) in contenders.iter().zip(runs) {
            if let Some(value) = best_throughput(&runs) {
                self.record(case, "throughput", unit, true, c, value, runs.len());
            }
        }
    }

    /// Latency cases: every round is a sample; median and p99 over all reps.
    fn latency(&mut self, s: &Settings, case: &str, contenders: &mut [Contender<'_>]) {
        let runs = interleave(s.reps, case, contenders);
        for (c, runs) in contenders.iter().zip(runs) {
            if let Some((med, p99, n)) = best_latency(&runs) {
                self.record(case, "latency median", "ns", false, c, med, n);
                self.record(case, "latency p99", "ns", false, c, p99, n);
            }
        }
    }

    fn unavailable(&mut self, case: &str, why: &str) {
        eprintln!("    {case}: not available ({why})");
        self.unavailable.push(json!({"case": case, "why": why}));
    }
}

/// Units per second from the time to move `units` units.
fn per_sec(units: u64, elapsed: Duration) -> Vec<f64> {
    vec![units as f64 / elapsed.as_secs_f64().max(1e-9)]
}

/// GB/s (1e9 bytes per second).
fn gb_per_sec(size: usize, units: u64, elapsed: Duration) -> Vec<f64> {
    vec![size as f64 * units as f64 / elapsed.as_secs_f64().max(1e-9) / 1e9]
}

fn case1(s: &Settings, out: &mut Output) {
    let units = if s.quick { 1_000_000 } else { 4_000_000 };
    let size = threads::SMALL;
    let mut cs = [
        contender("shm-arena", "ours", || {
            per_sec(units, threads::arena(size, units))
        }),
        contender("rtrb", "peer", || {
            per_sec(units, threads::rtrb(size, units))
        }),
        contender("crossbeam-queue ArrayQueue", "peer", || {
            per_sec(units, threads::array_queue(units))
        }),
        contender("crossbeam-channel", "peer", || {
            per_sec(units, threads::channel_array(units))
        }),
        contender("bbqueue (framed)", "peer", || {
            per_sec(units, threads::bbqueue_framed(units))
        }),
    ];
    out.throughput(s, "1 SPSC threads, 64 B units", "units/s", &mut cs);
    // The same stream with batches on both sides (64 units per head store and per tail
    // store); the peers as above, one unit at a time (none of them has a batch API that keeps
    // units apart: rtrb's chunks are bytes).
    let mut batched = [
        contender("shm-arena (batches of 64)", "ours", || {
            per_sec(units, threads::arena_batched(size, units, 64))
        }),
        contender("rtrb", "peer", || {
            per_sec(units, threads::rtrb(size, units))
        }),
        contender("crossbeam-channel", "peer", || {
            per_sec(units, threads::channel_array(units))
        }),
    ];
    out.throughput(
        s,
        "1 SPSC threads, 64 B units, batched",
        "units/s",
        &mut batched,
    );
    // The same, with the reader on CPU 0 and the writer on CPU 1 for every contender. Unpinned,
    // the scheduler sometimes runs both threads on one CPU, where a ring without
    // per-unit fences or validation (rtrb: 32-111 M units/s there) turns into a single-thread
    // loop; the best-rep rule then picks that rep. Pinned, every contender crosses cores.
    if !crate::util::pinning() {
        crate::util::force_pinning(true);
        if crate::util::pinning() {
            out.throughput(
                s,
                "1 SPSC threads, 64 B units, one CPU each (pinned)",
                "units/s",
                &mut cs,
            );
        }
        crate::util::force_pinning(false);
    }
}

fn case2(s: &Settings, out: &mut Output) {
    for (size, label, units) in [
        (1usize << 20, "1 MiB", if s.quick { 256u64 } else { 1024 }),
        (16 << 20, "16 MiB", if s.quick { 16 } else { 64 }),
    ] {
        let mut cs = [
            contender("shm-arena", "ours", || {
                gb_per_sec(size, units, threads::arena(size, units))
            }),
            contender("crossbeam-channel (Vec<u8>)", "peer", || {
                gb_per_sec(size, units, threads::channel_vec(size, units))
            }),
            contender("memcpy", "limit", || {
                gb_per_sec(size, units, threads::memcpy(size, units))
            }),
        ];
        out.throughput(
            s,
            &format!("2 SPSC threads, {label} units"),
            "GB/s",
            &mut cs,
        );
    }
}

fn case3(s: &Settings, out: &mut Output) {
    let (rounds, warmup) = if s.quick {
        (20_000, 2_000)
    } else {
        (100_000, 5_000)
    };
    // Each run also stops at this budget (a loaded machine can make spinning round trips take
    // a scheduler tick each).
    let budget = Duration::from_secs(if s.quick { 1 } else { 5 });
    let mut cs = [
        contender("shm-arena", "ours", || {
            procs::pingpong_arena(rounds, warmup, budget)
        }),
        #[cfg(feature = "iceoryx2")]
        contender("iceoryx2", "peer", || {
            procs::pingpong_iceoryx2(rounds, warmup, budget)
        }),
        contender("unix socket", "peer", || {
            procs::pingpong_uds(rounds, warmup, budget)
        }),
        contender("atomic ping-pong", "limit", || {
            procs::pingpong_atomic(rounds, warmup, budget)
        }),
    ];
    out.latency(s, "3 two processes, 64 B ping-pong one-way", &mut cs);
}

fn case4(s: &Settings, out: &mut Output) {
    let size = 4 << 20;
    let units = if s.quick { 64 } else { 256 };
    let mut cs = [
        contender("shm-arena", "ours", || {
            vec![procs::stream_arena(size, units)]
        }),
        #[cfg(feature = "iceoryx2")]
        contender("iceoryx2", "peer", || {
            vec![procs::stream_iceoryx2(size, units)]
        }),
        contender("pipe", "peer", || vec![procs::stream_pipe(size, units)]),
        contender("memcpy", "limit", || {
            gb_per_sec(size, units, threads::memcpy(size, units))
        }),
    ];
    out.throughput(s, "4 two processes, 4 MiB units", "GB/s", &mut cs);
}

fn case5(s: &Settings, out: &mut Output) {
    let units = if s.quick { 1_000_000 } else { 4_000_000 };
    let mut cs = [
        contender("shm-arena", "ours", || {
            per_sec(units, mpmc_case::arena(units))
        }),
        contender("crossbeam ArrayQueue", "peer", || {
            per_sec(units, mpmc_case::array_queue(units))
        }),
    ];
    out.throughput(
        s,
        "5 MPMC 2 writers + 2 readers, 64 B units",
        "units/s",
        &mut cs,
    );
}

/// Item sizes and counts of case 6: the same as `spdl_bench.py`'s.
#[cfg(feature = "worker")]
fn case6(s: &Settings, out: &mut Output) {
    use worker_case::Produce;
    for (size, label, count) in [
        (2usize << 20, "2 MiB", if s.quick { 100u64 } else { 500 }),
        (32 << 20, "32 MiB", if s.quick { 12 } else { 60 }),
    ] {
        let produces = [Produce::Send, Produce::SendPrepared, Produce::InPlace];
        let mut cs = produces.map(|produce| {
            contender(produce.contender(), "ours", move || {
                vec![worker_case::items_per_sec(size, count, produce)]
            })
        });
        let runs = interleave(s.reps, &format!("6 worker {label}"), &mut cs);
        for ((c, runs), produce) in cs.iter().zip(runs).zip(produces) {
            let Some(value) = best_throughput(&runs) else {
                continue;
            };
            let variant = produce.label();
            let case = format!("6 worker pipeline ({variant}) vs SPDL iterate_in_subprocess");
            let metric = format!("throughput ({label})");
            eprintln!("    {case} | {metric}: {} = {value:.1} items/s", c.name);
            out.measurements.push(json!({
                "case": case, "metric": metric, "unit": "items/s", "higher_is_better": true,
                "contender": c.name, "role": c.role, "value": value, "samples": runs.len(),
                "size": size, "items": count,
            }));
        }
    }
}

#[cfg(not(feature = "worker"))]
fn case6(_: &Settings, out: &mut Output) {
    out.unavailable(
        "6 worker pipeline, 2 MiB and 32 MiB items",
        "the harness was built without its `worker` feature: the crate had no \
         shm_arena::worker::iterate_in_subprocess (issue 5) or it did not build against it",
    );
}

fn case7(s: &Settings, out: &mut Output) {
    let rounds = if s.quick { 200 } else { 1000 };
    let mut cs = [
        contender("shm-arena (futex)", "ours", || procs::wake_arena(rounds)),
        contender("pipe", "peer", || procs::wake_pipe(rounds)),
        contender("bare futex", "limit", || procs::wake_futex(rounds)),
    ];
    out.latency(s, "7 blocked reader wake-up across processes", &mut cs);
}

/// Throughput against unit size for the plot: two threads, and two processes.
fn sweep(s: &Settings, out: &mut Output) {
    let budget: usize = if s.quick { 128 << 20 } else { 512 << 20 };
    let units_for = |size: usize, max: usize| (budget / size).clamp(16, max) as u64;
    let thread_sizes: &[usize] = if s.quick {
        &[64, 4 << 10, 64 << 10, 1 << 20, 16 << 20]
    } else {
        &[64, 1 << 10, 16 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20]
    };
    for &size in thread_sizes {
        let units = units_for(size, 1_000_000);
        let mut cs = [
            contender("shm-arena", "ours", || {
                gb_per_sec(size, units, threads::arena(size, units))
            }),
            contender("rtrb", "peer", || {
                gb_per_sec(size, units, threads::rtrb(size, units))
            }),
            contender("crossbeam-channel (Vec<u8>)", "peer", || {
                gb_per_sec(size, units, threads::channel_vec(size, units))
            }),
            contender("memcpy", "limit", || {
                gb_per_sec(size, units, threads::memcpy(size, units))
            }),
        ];
        let runs = interleave(s.reps, &format!("sweep threads {size} B"), &mut cs);
        for (c, runs) in cs.iter().zip(runs) {
            let Some(gbps) = best_throughput(&runs) else {
                continue;
            };
            out.series.push(
                json!({"panel": "threads", "contender": c.name, "role": c.role,
                "size": size, "gbps": gbps}),
            );
        }
    }
    let proc_sizes: &[usize] = if s.quick {
        &[64 << 10, 1 << 20, 4 << 20]
    } else {
        &[4 << 10, 64 << 10, 1 << 20, 4 << 20, 16 << 20]
    };
    for &size in proc_sizes {
        let units = units_for(size, 200_000);
        let mut cs = [
            contender("shm-arena", "ours", || {
                vec![procs::stream_arena(size, units)]
            }),
            #[cfg(feature = "iceoryx2")]
            contender("iceoryx2", "peer", || {
                vec![procs::stream_iceoryx2(size, units)]
            }),
            contender("pipe", "peer", || vec![procs::stream_pipe(size, units)]),
            contender("memcpy", "limit", || {
                gb_per_sec(size, units, threads::memcpy(size, units))
            }),
        ];
        let runs = interleave(s.reps, &format!("sweep processes {size} B"), &mut cs);
        for (c, runs) in cs.iter().zip(runs) {
            let Some(gbps) = best_throughput(&runs) else {
                continue;
            };
            out.series.push(
                json!({"panel": "processes", "contender": c.name, "role": c.role,
                "size": size, "gbps": gbps}),
            );
        }
    }
}

/// Case 11: one writer, 2 and 4 subscriber processes (broadcast), 64 B and 4 MiB units:
/// the slowest subscriber's throughput, and paced one-way latency over all subscribers.
fn case11(s: &Settings, out: &mut Output) {
    for subscribers in [2usize, 4] {
        for (size, label) in [(64usize, "64 B"), (4 << 20, "4 MiB")] {
            let units: u64 = match (size, s.quick) {
                (64, true) => 200_000,
                (64, false) => 1_000_000,
                (_, true) => 100,
                (_, false) => 400,
            };
            let mut cs = vec![contender("shm-arena", "ours", move || {
                fanout::arena(subscribers, size, units, fanout::Mode::Throughput, false)
            })];
            #[cfg(feature = "iceoryx2")]
            cs.push(contender("iceoryx2", "peer", move || {
                fanout::iceoryx2(subscribers, size, units, fanout::Mode::Throughput)
            }));
            cs.push(contender("memcpy", "limit", move || {
                gb_per_sec(size, units, threads::memcpy(size, units))
            }));
            out.throughput(
                s,
                &format!("11 broadcast, 1 writer -> {subscribers} subscriber processes, {label} units, slowest subscriber"),
                "GB/s",
                &mut cs,
            );
            // Paced: a unit every 500 us (64 B) or 5 ms (4 MiB), far apart enough that nothing
            // queues and the writer sleeps between units.
            let (gap, units) = match (size, s.quick) {
                (64, true) => (Duration::from_micros(500), 1_000),
                (64, false) => (Duration::from_micros(500), 4_000),
                (_, true) => (Duration::from_millis(5), 40),
                (_, false) => (Duration::from_millis(5), 200),
            };
            // Twice: our subscribers sleeping between units (the default), then busy-polling
            // as iceoryx2's always do (like for like); iceoryx2 runs in both.
            for busy in [false, true] {
                let mut cs = vec![contender("shm-arena", "ours", move || {
                    fanout::arena(subscribers, size, units, fanout::Mode::Latency(gap), busy)
                })];
                #[cfg(feature = "iceoryx2")]
                cs.push(contender("iceoryx2", "peer", move || {
                    fanout::iceoryx2(subscribers, size, units, fanout::Mode::Latency(gap))
                }));
                let how = if busy { "busy-polling" } else { "sleeping" };
                out.latency(
                    s,
                    &format!("11 broadcast, 1 writer -> {subscribers} subscriber processes, {label} one-way latency (paced, our subscribers {how})"),
                    &mut cs,
                );
            }
        }
    }
}

const USAGE: &str = "usage: shm-arena-peers [--quick] [--cases LIST] [--out FILE]
  --quick       shorter runs (the whole report in well under 3 minutes)
  --cases LIST  comma-separated subset of 1,2,3,4,5,6,7,11,sweep (default: all)
  --out FILE    where to write the raw JSON (default: stdout)";

fn main() {
    // In a case-6 worker process this runs the worker and exits.
    #[cfg(feature = "worker")]
    worker_case::run_if_worker();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        procs::child_main(&args[1], &args[2..]);
        return;
    }
    let mut quick = false;
    let mut cases = "1,2,3,4,5,6,7,11,sweep".to_string();
    let mut out_path = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--cases" => cases = it.next().expect(USAGE).clone(),
            "--out" => out_path = Some(it.next().expect(USAGE).clone()),
            _ => {
                eprintln!("{USAGE}");
                std::process::exit(2);
            }
        }
    }
    let s = Settings {
        quick,
        reps: if quick { 3 } else { 5 },
    };
    if cfg!(debug_assertions) {
        eprintln!("warning: debug build, the numbers mean little (use --release)");
    }
    let mut out = Output::default();
    #[cfg(not(feature = "iceoryx2"))]
    out.unavailable(
        "3, 4 and the sweep: iceoryx2",
        "the harness was built without its `iceoryx2` feature (iceoryx2 did not build here)",
    );
    for case in cases.split(',') {
        eprintln!("case {case}");
        let run: fn(&Settings, &mut Output) = match case {
            "1" => case1,
            "2" => case2,
            "3" => case3,
            "4" => case4,
            "5" => case5,
            // Our side needs the crate's worker API (the `worker` feature); the SPDL side is a
            // Python script (spdl_bench.py) run by ci/bench-report.sh.
            "6" => case6,
            "7" => case7,
            "11" => case11,
            "sweep" => sweep,
            other => {
                eprintln!("unknown case {other:?}\n{USAGE}");
                std::process::exit(2);
            }
        };
        // A contender that fails (a peer that breaks, a timeout) costs its case, not the
        // report: the case is listed as not available with the reason. Children are killed and
        // reaped by their guards while unwinding.
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&s, &mut out)));
        if let Err(panic) = ran {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("a panic");
            out.unavailable(
                &format!("{case} (whole case)"),
                &format!("failed in this run: {why}"),
            );
        }
    }
    let doc = json!({
        "quick": quick,
        "reps": s.reps,
        "measurements": out.measurements,
        "series": out.series,
        "unavailable": out.unavailable,
    });
    let text = serde_json::to_string_pretty(&doc).expect("json");
    match out_path {
        Some(path) => std::fs::write(&path, text).expect("write output"),
        None => println!("{text}"),
    }
}

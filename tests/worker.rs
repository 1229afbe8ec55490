//! Worker processes for real: each test starts workers with `iterate_in_subprocess` and checks
//! what the parent sees, and that nothing is left behind.
//!
//! A worker is this test binary re-executed with a filter that runs only [`worker_main`], which
//! calls `Registry::run_if_worker` (as a program's `main` would). A normal test run skips it as
//! ignored. The "parent killed" test adds one more level: a *middle*
//! process (also this binary, selected by [`MIDDLE_ENV`]) starts a worker and is SIGKILLed.
//!
//! Every test holds [`LOCK`] and compares a [`Baseline`] taken before with the state after:
//! `/dev/shm` entries, this process's descriptors, memfd mappings and child processes. Tests
//! run one at a time for that (they are short: the whole file takes a few seconds).
//!
//! `SHM_ARENA_SOAK=1` enables a soak test: hundreds of worker lifetimes, thousands of items.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use shm_arena::codec::Array;
use shm_arena::worker::{iterate_in_subprocess, Item, Options, Output, Registry, WorkerError};
use shm_arena::Error;

use common::proc::{proc_ppid, proc_state};

// ---------------------------------------------------------------------------------------------
// The workers
// ---------------------------------------------------------------------------------------------

/// Selects the middle process of [`parent_killed_by_sigkill_takes_the_worker_with_it`].
const MIDDLE_ENV: &str = "SHM_ARENA_TEST_MIDDLE";
/// Longest any worker sleeps: a hang guard, far above what any test needs.
const WORKER_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Serialize, Deserialize)]
struct Params {
    count: u64,
    len: usize,
}

#[derive(Serialize, Deserialize)]
struct Record<'a> {
    id: u64,
    name: String,
    #[serde(borrow)]
    data: Array<'a, f32>,
}

fn value(id: u64, i: usize) -> f32 {
    ((id as usize * 7 + i) % 1000) as f32
}

fn items(params: Params, out: &mut Output) -> shm_arena::Result<()> {
    let mut data = vec![0f32; params.len];
    for id in 0..params.count {
        for (i, x) in data.iter_mut().enumerate() {
            *x = value(id, i);
        }
        out.send(&Record {
            id,
            name: format!("item-{id}"),
            data: Array::from_slice_1d(&data),
        })?;
    }
    Ok(())
}

fn numbers(count: u64, out: &mut Output) -> shm_arena::Result<()> {
    (0..count).try_for_each(|i| out.send(&i))
}

fn fail(sent_first: u64, out: &mut Output) -> Result<(), String> {
    numbers(sent_first, out).map_err(|e| e.to_string())?;
    Err(format!("boom: {sent_first} items were enough"))
}

fn panics(sent_first: u64, out: &mut Output) -> shm_arena::Result<()> {
    numbers(sent_first, out)?;
    panic!("kaboom after {sent_first} items");
}

/// Sends `first` items, then sleeps (until killed, or the hang guard).
fn sleepy(first: u64, out: &mut Output) -> shm_arena::Result<()> {
    numbers(first, out)?;
    std::thread::sleep(WORKER_DEADLINE);
    Ok(())
}

/// Sends items until the parent stops reading.
fn endless(_: (), out: &mut Output) -> shm_arena::Result<()> {
    let started = Instant::now();
    let payload = serde_bytes::ByteBuf::from(vec![7u8; 8192]);
    for i in 0u64.. {
        out.send(&(i, &payload))?;
        if started.elapsed() > WORKER_DEADLINE {
            break;
        }
    }
    Ok(())
}

/// Ignores the closed ring: only a signal stops it.
fn stubborn(_: (), out: &mut Output) -> shm_arena::Result<()> {
    let _ = endless((), out);
    std::thread::sleep(WORKER_DEADLINE);
    Ok(())
}

/// Sends `first` items, then exits with status 0 in the middle of its stream (as a library
/// calling `exit(0)` would).
fn exits_early(first: u64, out: &mut Output) -> shm_arena::Result<()> {
    numbers(first, out)?;
    std::process::exit(0);
}

static INIT_RUNS: AtomicU32 = AtomicU32::new(0);

fn count_init() -> Result<(), String> {
    INIT_RUNS.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

fn report_init_runs(_: (), out: &mut Output) -> shm_arena::Result<()> {
    out.send(&INIT_RUNS.load(Ordering::SeqCst))
}

fn registry() -> Registry {
    Registry::new()
        .register("items", items)
        .register("numbers", numbers)
        .register("fail", fail)
        .register("panics", panics)
        .register("sleepy", sleepy)
        .register("endless", endless)
        .register("stubborn", stubborn)
        .register("exits_early", exits_early)
        .register("report_init_runs", report_init_runs)
        .register_initializer("count_init", count_init)
}

/// Entry point of worker (and middle) processes: ignored in a normal run, started with
/// `--ignored --exact worker_main` by the tests.
#[test]
#[ignore = "worker-process entry point, started by the other tests"]
fn worker_main() {
    registry().run_if_worker();
    if std::env::var_os(MIDDLE_ENV).is_some() {
        middle();
    }
}

fn options() -> Options {
    let exe = std::env::current_exe().expect("path of the test binary");
    Options::new()
        .capacity(1 << 20)
        .program(
            exe,
            [
                "--ignored",
                "--exact",
                "worker_main",
                "--nocapture",
                "--test-threads=1",
            ],
        )
        .inactivity_timeout(Duration::from_secs(30))
}

// ---------------------------------------------------------------------------------------------
// Leak checks
// ---------------------------------------------------------------------------------------------

static LOCK: Mutex<()> = Mutex::new(());

/// What a test must leave as it found it.
struct Baseline {
    _lock: MutexGuard<'static, ()>,
    shm: BTreeSet<String>,
    fds: usize,
    memfd_maps: usize,
}

fn dev_shm() -> BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn memfd_maps() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains("memfd:shm-arena"))
        .count()
}

/// Pids of this process's children (zombies included).
fn children() -> Vec<u32> {
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if proc_ppid(pid) == Some(me) {
            found.push(pid);
        }
    }
    found
}

impl Baseline {
    fn take() -> Baseline {
        let lock = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!(children(), Vec::<u32>::new(), "children before the test");
        Baseline {
            _lock: lock,
            shm: dev_shm(),
            fds: fd_count(),
            memfd_maps: memfd_maps(),
        }
    }

    /// Asserts that nothing leaked. `/dev/shm` is shared with every other process on the
    /// machine, so a new entry counts only if it is still there after a while (another
    /// process's short-lived segment is not ours; this crate's workers create none at all).
    fn check(self) {
        assert_eq!(children(), Vec::<u32>::new(), "child processes left behind");
        assert_eq!(fd_count(), self.fds, "descriptors leaked");
        assert_eq!(memfd_maps(), self.memfd_maps, "memfd mappings leaked");
        let until = Instant::now() + Duration::from_secs(3);
        loop {
            let new: Vec<String> = dev_shm().difference(&self.shm).cloned().collect();
            if new.is_empty() {
                break;
            }
            assert!(
                Instant::now() < until,
                "/dev/shm entries appeared and stayed: {new:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn expect_end(sub: &mut shm_arena::worker::Subprocess) {
    assert!(sub.next().is_none(), "the iteration goes on after its end");
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn items_round_trip_zero_copy() {
    let base = Baseline::take();
    let params = Params {
        count: 40,
        len: 20_000,
    };
    let mut sub = iterate_in_subprocess("items", &params, options()).unwrap();
    let mut seen = 0;
    for item in &mut sub {
        let item = item.unwrap();
        let record: Record = item.decode().unwrap();
        assert_eq!(record.id, seen);
        assert_eq!(record.name, format!("item-{seen}"));
        assert!(record.data.is_borrowed(), "the array is read in place");
        assert_eq!(record.data.shape(), &[params.len]);
        for (i, &x) in record.data.as_slice().iter().enumerate() {
            assert_eq!(x, value(seen, i), "item {seen} element {i}");
        }
        seen += 1;
    }
    assert_eq!(seen, params.count);
    expect_end(&mut sub);
    drop(sub);
    base.check();
}

#[test]
fn items_decode_into_owned_values() {
    let base = Baseline::take();
    let got: Vec<u64> = iterate_in_subprocess("numbers", &30u64, options())
        .unwrap()
        .map(|item| item.unwrap().decode::<u64>().unwrap())
        .collect();
    assert_eq!(got, (0..30).collect::<Vec<_>>());
    base.check();
}

#[test]
fn several_items_held_at_once() {
    let base = Baseline::take();
    let sub = iterate_in_subprocess("numbers", &200u64, options()).unwrap();
    // Held across later calls, sent to another thread, ended out of order.
    let held: Vec<Item> = sub.map(Result::unwrap).collect();
    assert_eq!(held.len(), 200);
    let (evens, odds): (Vec<_>, Vec<_>) = held
        .into_iter()
        .partition(|item| item.decode::<u64>().unwrap() % 2 == 0);
    std::thread::spawn(move || {
        for (i, item) in odds.into_iter().enumerate() {
            assert_eq!(item.decode::<u64>().unwrap(), 2 * i as u64 + 1);
        }
    })
    .join()
    .unwrap();
    for (i, item) in evens.into_iter().rev().enumerate() {
        assert_eq!(item.decode::<u64>().unwrap(), 198 - 2 * i as u64);
    }
    base.check();
}

#[test]
fn worker_error_ends_the_iteration_with_its_message() {
    let base = Baseline::take();
    let mut sub = iterate_in_subprocess("fail", &3u64, options()).unwrap();
    for expected in 0..3u64 {
        let item = sub.next().unwrap().unwrap();
        assert_eq!(item.decode::<u64>().unwrap(), expected);
    }
    let err = sub.next().unwrap().unwrap_err();
    match &err {
        WorkerError::Failed {
            worker, message, ..
        } => {
            assert_eq!(worker, "fail");
            assert_eq!(message, "boom: 3 items were enough");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(err.to_string().contains("boom: 3 items were enough"));
    expect_end(&mut sub);
    drop(sub);
    base.check();
}

#[test]
fn worker_panic_ends_the_iteration_with_its_message() {
    let base = Baseline::take();
    let mut sub = iterate_in_subprocess("panics", &2u64, options()).unwrap();
    assert_eq!(sub.next().unwrap().unwrap().decode::<u64>().unwrap(), 0);
    assert_eq!(sub.next().unwrap().unwrap().decode::<u64>().unwrap(), 1);
    match sub.next().unwrap().unwrap_err() {
        WorkerError::Panicked { message, .. } => {
            assert!(message.contains("kaboom after 2 items"), "{message}");
            assert!(message.contains("worker.rs"), "location in {message}");
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
    expect_end(&mut sub);
    drop(sub);
    base.check();
}

#[test]
fn setup_failures_are_reported() {
    let base = Baseline::take();
    let mut sub = iterate_in_subprocess("no_such_worker", &(), options()).unwrap();
    match sub.next().unwrap().unwrap_err() {
        WorkerError::Setup { message, .. } => {
            assert!(message.contains("no_such_worker"), "{message}");
            assert!(
                message.contains("numbers"),
                "lists the registered: {message}"
            );
        }
        other => panic!("expected Setup, got {other:?}"),
    }
    drop(sub);
    // Arguments of the wrong type.
    let mut sub = iterate_in_subprocess("numbers", "not a number", options()).unwrap();
    match sub.next().unwrap().unwrap_err() {
        WorkerError::Setup { message, .. } => assert!(message.contains("u64"), "{message}"),
        other => panic!("expected Setup, got {other:?}"),
    }
    expect_end(&mut sub);
    drop(sub);
    base.check();
}

#[test]
fn worker_killed_by_sigkill_is_named() {
    let base = Baseline::take();
    let mut sub = iterate_in_subprocess("sleepy", &1u64, options()).unwrap();
    assert_eq!(sub.next().unwrap().unwrap().decode::<u64>().unwrap(), 0);
    let pid = rustix::process::Pid::from_raw(sub.pid() as i32).unwrap();
    let killer = std::thread::spawn(move || {
        // Let the parent block in next() first (not required for the result).
        std::thread::sleep(Duration::from_millis(200));
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    });
    let err = sub.next().unwrap().unwrap_err();
    killer.join().unwrap();
    match &err {
        WorkerError::Signaled { name, signal, .. } => {
            assert_eq!(*name, "SIGKILL");
            assert_eq!(*signal, rustix::process::Signal::KILL.as_raw());
        }
        other => panic!("expected Signaled, got {other:?}"),
    }
    assert!(err.to_string().contains("SIGKILL"), "{err}");
    expect_end(&mut sub);
    drop(sub);
    base.check();
}

#[test]
fn worker_exit_0_mid_stream_is_an_error() {
    let base = Baseline::take();
    let mut sub = iterate_in_subprocess("exits_early", &3u64, options()).unwrap();
    let pid = sub.pid();
    for expected in 0..3u64 {
        assert_eq!(
            sub.next().unwrap().unwrap().decode::<u64>().unwrap(),
            expected
        );
    }
    // Exit status 0, but no done message: a truncated stream, not a finish.
    let err = sub.next().expect("an error, not the end").unwrap_err();
    match &err {
        WorkerError::ExitedEarly {
            worker,
            pid: p,
            code,
        } => {
            assert_eq!((worker.as_str(), *p, *code), ("exits_early", pid, 0));
        }
        other => panic!("expected ExitedEarly, got {other:?}"),
    }
    assert!(
        err.to_string().contains("without finishing its stream"),
        "{err}"
    );
    expect_end(&mut sub);
    drop(sub);
    base.check();
}

#[test]
fn early_drop_stops_and_reaps_the_worker() {
    let base = Baseline::take();
    let mut sub = iterate_in_subprocess("endless", &(), options()).unwrap();
    for _ in 0..5 {
        sub.next().unwrap().unwrap();
    }
    let pid = sub.pid();
    assert!(proc_state(pid).is_some());
    drop(sub);
    assert_eq!(proc_state(pid), None, "worker {pid} not reaped");
    base.check();
}

#[test]
fn early_drop_escalates_to_signals() {
    let base = Baseline::take();
    let options = options().stop_timeout(Duration::from_millis(200));
    let mut sub = iterate_in_subprocess("stubborn", &(), options).unwrap();
    sub.next().unwrap().unwrap();
    let pid = sub.pid();
    drop(sub);
    assert_eq!(proc_state(pid), None, "worker {pid} not reaped");
    base.check();
}

#[test]
fn inactivity_timeout_stops_the_worker() {
    let base = Baseline::take();
    // Long enough for the worker to start (it counts for the first item too).
    let timeout = Duration::from_secs(1);
    let options = options().inactivity_timeout(timeout);
    let mut sub = iterate_in_subprocess("sleepy", &1u64, options).unwrap();
    sub.next().unwrap().unwrap();
    let pid = sub.pid();
    match sub.next().unwrap().unwrap_err() {
        WorkerError::Inactive { waited, .. } => assert!(waited >= timeout),
        other => panic!("expected Inactive, got {other:?}"),
    }
    assert_eq!(proc_state(pid), None, "worker {pid} not stopped and reaped");
    expect_end(&mut sub);
    drop(sub);
    base.check();
}

#[test]
fn initializer_runs_once_before_the_worker() {
    let base = Baseline::take();
    let options = options().initializer("count_init");
    let runs: Vec<u32> = iterate_in_subprocess("report_init_runs", &(), options)
        .unwrap()
        .map(|item| item.unwrap().decode().unwrap())
        .collect();
    assert_eq!(runs, [1]);
    // Without the option it does not run.
    let runs: Vec<u32> = iterate_in_subprocess("report_init_runs", &(), self::options())
        .unwrap()
        .map(|item| item.unwrap().decode().unwrap())
        .collect();
    assert_eq!(runs, [0]);
    base.check();
}

#[test]
fn max_in_flight_bounds_items_held() {
    let base = Baseline::take();
    let options = options()
        .max_in_flight(3)
        .inactivity_timeout(Duration::from_secs(1));
    let mut sub = iterate_in_subprocess("numbers", &100u64, options).unwrap();
    let mut held: Vec<Item> = (0..3).map(|_| sub.next().unwrap().unwrap()).collect();
    // Ending one lets exactly one more through.
    held.remove(0);
    held.push(sub.next().unwrap().unwrap());
    assert_eq!(held[2].decode::<u64>().unwrap(), 3);
    // With three held the worker cannot send a fourth, however long we wait (the ring itself
    // has room for all hundred).
    match sub.next().unwrap().unwrap_err() {
        WorkerError::Inactive { .. } => {}
        other => panic!("expected Inactive, got {other:?}"),
    }
    drop(held);
    drop(sub);
    base.check();
}

#[test]
fn parent_killed_by_sigkill_takes_the_worker_with_it() {
    use rustix::process::{getpid, set_child_subreaper, waitpid, Pid, Signal, WaitOptions};
    let base = Baseline::take();
    // Orphans of our descendants are re-parented to us instead of init (which, in a container,
    // may never reap them): we can see how the worker ended and leave no zombie.
    set_child_subreaper(Some(getpid())).unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut middle = Command::new(exe)
        .args([
            "--ignored",
            "--exact",
            "worker_main",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(MIDDLE_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Kept open to the end: the worker inherits this pipe as its stdout, and its test harness
    // prints there as it starts. With the read end closed that print fails (EPIPE) and the
    // worker exits with status 101 on its own, racing the kill this test is about (it failed
    // that way in about one run of four).
    let mut lines = BufReader::new(middle.stdout.take().unwrap()).lines();
    let mut worker = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(pid) = line.split("WORKER_PID ").nth(1) {
            worker = Some(pid.trim().parse::<u32>().unwrap());
            break;
        }
    }
    let worker = worker.expect("the middle process printed its worker's pid");
    assert!(matches!(proc_state(worker), Some(s) if s != 'Z'));
    middle.kill().unwrap();
    middle.wait().unwrap();
    // The worker is now our child; PR_SET_PDEATHSIG must have killed it.
    let pid = Pid::from_raw(worker as i32).unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some((_, status)) = waitpid(Some(pid), WaitOptions::NOHANG).unwrap() {
            break status;
        }
        assert!(
            Instant::now() < until,
            "worker {worker} still runs after its parent was killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    set_child_subreaper(None).unwrap();
    drop(lines);
    assert_eq!(status.terminating_signal(), Some(Signal::KILL.as_raw()));
    base.check();
}

/// The middle process: starts a worker, says its pid, waits to be killed.
fn middle() {
    let sub = iterate_in_subprocess("endless", &(), options()).unwrap();
    println!("WORKER_PID {}", sub.pid());
    std::thread::sleep(WORKER_DEADLINE);
    // Not killed: leave as cleanly as possible.
    drop(sub);
    std::process::exit(3);
}

#[test]
fn soak_many_worker_lifetimes() {
    // A short soak in every run; hundreds of lifetimes with SHM_ARENA_SOAK=1.
    let rounds = if std::env::var_os("SHM_ARENA_SOAK").is_some_and(|v| v == "1") {
        300
    } else {
        12
    };
    let base = Baseline::take();
    let mut items = 0u64;
    for round in 0..rounds {
        match round % 4 {
            0 | 1 => {
                let count = 10 + round % 17;
                let got: Vec<u64> = iterate_in_subprocess("numbers", &count, options())
                    .unwrap()
                    .map(|item| item.unwrap().decode().unwrap())
                    .collect();
                assert_eq!(got, (0..count).collect::<Vec<_>>());
                items += count;
            }
            2 => {
                let mut sub = iterate_in_subprocess("endless", &(), options()).unwrap();
                for _ in 0..20 {
                    sub.next().unwrap().unwrap();
                }
                items += 20;
            }
            _ => {
                let mut sub = iterate_in_subprocess("fail", &5u64, options()).unwrap();
                let results: Vec<_> = (&mut sub).collect();
                assert_eq!(results.len(), 6);
                assert!(matches!(results[5], Err(WorkerError::Failed { .. })));
                items += 5;
            }
        }
    }
    eprintln!("soak: {items} items through {rounds} worker lifetimes");
    assert!(items > rounds * 10, "every lifetime delivered its items");
    base.check();
}

#[test]
fn capacity_errors_come_from_the_parent() {
    let base = Baseline::take();
    match iterate_in_subprocess("numbers", &1u64, options().capacity(1000)) {
        Err(WorkerError::Arena(Error::InvalidArgument(_))) => {}
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    base.check();
}

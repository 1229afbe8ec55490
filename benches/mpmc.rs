//! MPMC throughput between threads: shm-arena's MPMC mode against crossbeam-queue's
//! `ArrayQueue` and a bounded crossbeam-channel, with 2 writers + 2 readers and, oversubscribed
//! (more threads than this machine's 2 cores), 4 writers + 4 readers; units of 64 B and 4 KiB.
//!
//! Every contender does the same work per unit: a writer copies `size` bytes from a prepared
//! source and stamps its counter into the first 8 bytes; a reader checksums every byte it gets
//! (through `black_box`). Throughput counts units (all writers together) per second.
//!
//! - `shm-arena`: an anonymous MPMC region, one lane per writer; each writer thread owns a
//!   `Writer` and fills a blob in place, each reader thread owns a `Reader` and sums the blob
//!   where it lies (one copy in, zero out). Readers block in `next_unit` (futex) when idle.
//! - `ArrayQueue`: `ArrayQueue<[u8; N]>`, the bytes stored by value in the queue's own slots.
//!   That is the closest analogue of the arena (a preallocated buffer, no allocator on the
//!   path), and it was the faster of the two ways to carry the bytes here: boxing each unit
//!   (`ArrayQueue<Box<[u8]>>`) added an allocation and a cross-thread free per unit, which cost
//!   more than the by-value copy out of the slot even at 4 KiB. Both sides spin (then yield) on
//!   full/empty, the queue's intended use: it has no blocking.
//! - `crossbeam-channel`: `bounded::<[u8; N]>`, the same bytes by value, for the same reason;
//!   it blocks (parks) when full or empty, as shm-arena does.
//!
//! Every contender gets the same bytes of buffering: 1 MiB in all (the arena splits it evenly
//! between its lanes; the queue and the channel get 1 MiB / size slots).
//!
//! The writer and reader threads are long-lived (per contender); the measured thread sends each
//! writer its share of the units and waits until the readers have counted them all, so thread
//! start-up is never measured and criterion's linear fit removes the constant cost of waking
//! them. Readers count units locally and add them to a shared counter when they find nothing
//! to read (or every [`FLUSH`] units), so counting adds no shared cache line per unit.
//!
//! `cargo bench --bench mpmc` takes about a minute and a half.

// The two-thread fixture (`TwoThreads`) in there does not fit many writers and readers; only
// `Transfer` and `contender` are used here.
#[allow(dead_code)]
mod harness;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use crossbeam_queue::ArrayQueue;
use crossbeam_utils::{Backoff, CachePadded};
use harness::{contender, Transfer};
use shm_arena::{Backing, Error, Region, RegionOptions};

/// A stuck benchmark should fail, not hang the machine.
const TIMEOUT: Duration = Duration::from_secs(10);

/// How long an idle reader waits before reporting "nothing yet" and looking again.
const IDLE_WAIT: Duration = Duration::from_millis(100);

/// Bytes of buffering each contender gets, all writers together.
const BUFFER: usize = 1 << 20;

/// A reader adds its local count to the shared one at least this often.
const FLUSH: u64 = 256;

/// What every writer copies in; distinct bytes so the checksum depends on all of them.
fn source(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 31 + 7) as u8).collect()
}

/// One copy of `src`, then the counter over the first bytes, so consecutive units differ.
#[inline]
fn fill(unit: &mut [u8], src: &[u8], counter: u64) {
    unit.copy_from_slice(src);
    let n = unit.len().min(8);
    unit[..n].copy_from_slice(&counter.to_le_bytes()[..n]);
}

/// Reads every byte: a wrapping sum of little-endian words (the compiler vectorises it).
#[inline]
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

/// What a reader's one attempt found.
enum Read {
    /// A unit, read, with its checksum.
    Unit(u64),
    /// Nothing to read now (or within the wait, when asked to wait).
    Empty,
    /// Nothing to read ever again: every writer is gone and the queue is drained.
    Closed,
}

/// Units counted by the readers against units asked of the writers, shared by every thread.
#[derive(Default)]
struct Tally {
    /// Units read so far (all batches).
    read: CachePadded<AtomicU64>,
    /// Units written once the current batch is done (all batches).
    target: CachePadded<AtomicU64>,
}

/// Writer threads fed with batch sizes, reader threads reading until closed, and the tally
/// that tells the measured thread a batch has been read.
struct Threads {
    tally: Arc<Tally>,
    commands: Vec<mpsc::Sender<u64>>,
    writers: Vec<JoinHandle<()>>,
    readers: Vec<JoinHandle<()>>,
    done_tx: mpsc::Sender<()>,
    done: mpsc::Receiver<()>,
    /// Runs once every writer thread has ended (so readers of a queue without a notion of
    /// "closed" learn it).
    on_writers_gone: Option<Box<dyn FnOnce()>>,
}

impl Threads {
    fn new() -> Self {
        let (done_tx, done) = mpsc::channel();
        Threads {
            tally: Arc::default(),
            commands: Vec::new(),
            writers: Vec::new(),
            readers: Vec::new(),
            done_tx,
            done,
            on_writers_gone: None,
        }
    }

    /// Starts a writer thread: `write_unit(i)` writes the `i`-th unit it is asked for.
    fn writer(&mut self, mut write_unit: impl FnMut(u64) + Send + 'static) {
        let (commands, batches) = mpsc::channel::<u64>();
        self.commands.push(commands);
        self.writers.push(std::thread::spawn(move || {
            let mut i = 0u64;
            for units in batches {
                for _ in 0..units {
                    write_unit(i);
                    i += 1;
                }
            }
        }));
    }

    /// Starts a reader thread: `read(wait)` tries once to read a unit (waiting a while for one
    /// when `wait`); the thread ends on [`Read::Closed`].
    fn reader(&mut self, mut read: impl FnMut(bool) -> Read + Send + 'static) {
        let tally = Arc::clone(&self.tally);
        let done = self.done_tx.clone();
        self.readers.push(std::thread::spawn(move || {
            let mut sum = 0u64;
            let mut counted = 0u64;
            let flush = |counted: &mut u64| {
                if *counted == 0 {
                    return;
                }
                let read = tally.read.fetch_add(*counted, Ordering::Relaxed) + *counted;
                *counted = 0;
                // The batch's target was stored before its units were handed to the writers,
                // and we read some of those units, so this load sees it; exactly one reader's
                // add reaches it.
                if read == tally.target.load(Ordering::Relaxed) {
                    // The measured thread may be gone at teardown: nothing to tell then.
                    let _ = done.send(());
                }
            };
            let mut wait = false;
            loop {
                match read(wait) {
                    Read::Unit(s) => {
                        sum = sum.wrapping_add(s);
                        counted += 1;
                        if counted == FLUSH {
                            flush(&mut counted);
                        }
                        wait = false;
                    }
                    // Idle: report what we read (the batch may be over), then wait for more.
                    Read::Empty => {
                        flush(&mut counted);
                        wait = true;
                    }
                    Read::Closed => break,
                }
            }
            flush(&mut counted);
            black_box(sum);
        }));
    }
}

impl Transfer for Threads {
    fn transfer(&mut self, units: u64) -> Duration {
        if units == 0 {
            // No reader would ever reach the target to say so.
            return Duration::ZERO;
        }
        let start = Instant::now();
        // Before any unit of the batch exists (see the load in `reader`).
        let target = self.tally.target.load(Ordering::Relaxed) + units;
        self.tally.target.store(target, Ordering::Relaxed);
        let writers = self.commands.len() as u64;
        for (w, commands) in self.commands.iter().enumerate() {
            let share = units / writers + u64::from((w as u64) < units % writers);
            commands.send(share).expect("writer thread alive");
        }
        self.done
            .recv_timeout(TIMEOUT)
            .expect("readers read the batch in time");
        start.elapsed()
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        // Closing the command channels ends the writers' loops; the writers' handles drop with
        // their threads, which closes the arena and the channel for the readers.
        self.commands.clear();
        let mut panicked = false;
        for writer in self.writers.drain(..) {
            panicked |= writer.join().is_err();
        }
        if let Some(gone) = self.on_writers_gone.take() {
            gone();
        }
        for reader in self.readers.drain(..) {
            panicked |= reader.join().is_err();
        }
        if panicked && !std::thread::panicking() {
            panic!("a writer or reader thread panicked");
        }
    }
}

fn arena(size: usize, writers: u32, readers: u32) -> impl Transfer {
    let lane_capacity = (BUFFER / writers as usize)
        .max(2 * shm_arena::unit_size(&[size]) as usize)
        .next_power_of_two() as u64;
    let region = Region::create_with(
        RegionOptions::new(lane_capacity)
            .mpmc(writers, readers)
            .backing(Backing::Anonymous),
    )
    .expect("anonymous MPMC region");
    let mut threads = Threads::new();
    // Every handle is attached before any thread starts, so no reader sees "no writer left"
    // early; the handles keep the mapping alive after `region` drops.
    let handles: Vec<_> = (0..writers)
        .map(|_| {
            let mut writer = region.writer().expect("writer");
            writer.set_timeout(Some(TIMEOUT));
            writer
        })
        .collect();
    let reader_handles: Vec<_> = (0..readers)
        .map(|_| region.reader().expect("reader"))
        .collect();
    drop(region);
    for mut writer in handles {
        let src = source(size);
        threads.writer(move |i| {
            let mut unit = writer.begin_unit().expect("begin unit");
            fill(unit.blob_mut(size).expect("blob"), &src, i);
            unit.commit().expect("commit");
        });
    }
    for reader in reader_handles {
        threads.reader(move |wait| {
            let unit = if wait {
                match reader.next_unit(IDLE_WAIT) {
                    Ok(unit) => unit,
                    Err(Error::Timeout { .. }) => return Read::Empty,
                    Err(Error::Closed(_)) => return Read::Closed,
                    Err(e) => panic!("next unit: {e}"),
                }
            } else {
                match reader.try_next_unit() {
                    Ok(Some(unit)) => unit,
                    Ok(None) => return Read::Empty,
                    Err(Error::Closed(_)) => return Read::Closed,
                    Err(e) => panic!("try next unit: {e}"),
                }
            };
            Read::Unit(checksum(unit.blob(0).expect("blob 0")))
        });
    }
    threads
}

fn array_queue<const N: usize>(writers: u32, readers: u32) -> impl Transfer {
    let queue = Arc::new(ArrayQueue::<[u8; N]>::new(BUFFER / N));
    let closed = Arc::new(AtomicBool::new(false));
    let mut threads = Threads::new();
    for _ in 0..writers {
        let queue = Arc::clone(&queue);
        let src = source(N);
        threads.writer(move |i| {
            let mut unit = [0u8; N];
            fill(&mut unit, &src, i);
            let backoff = Backoff::new();
            let deadline = Instant::now() + TIMEOUT;
            while let Err(back) = queue.push(unit) {
                unit = back;
                if backoff.is_completed() {
                    assert!(Instant::now() < deadline, "ArrayQueue writer timed out");
                }
                backoff.snooze();
            }
        });
    }
    for _ in 0..readers {
        let queue = Arc::clone(&queue);
        let closed = Arc::clone(&closed);
        threads.reader(move |wait| {
            if let Some(unit) = queue.pop() {
                return Read::Unit(checksum(&unit));
            }
            if !wait {
                return Read::Empty;
            }
            // Spin, then yield, as a user of this queue would; past IDLE_WAIT (between
            // batches, never within one) sleep a little so an idle fixture does not hold both
            // cores while criterion analyses.
            let backoff = Backoff::new();
            let start = Instant::now();
            loop {
                // Acquire: pairs with the Release store after the writers ended; their last
                // pushes are then visible to the pop below.
                let last_look = closed.load(Ordering::Acquire);
                if let Some(unit) = queue.pop() {
                    return Read::Unit(checksum(&unit));
                }
                if last_look {
                    return Read::Closed;
                }
                if backoff.is_completed() && start.elapsed() > IDLE_WAIT {
                    std::thread::sleep(Duration::from_millis(1));
                    return Read::Empty;
                }
                backoff.snooze();
            }
        });
    }
    threads.on_writers_gone = Some(Box::new(move || {
        // Release: pairs with the Acquire load in the readers' wait.
        closed.store(true, Ordering::Release);
    }));
    threads
}

fn crossbeam_channel<const N: usize>(writers: u32, readers: u32) -> impl Transfer {
    let (sender, receiver) = crossbeam_channel::bounded::<[u8; N]>(BUFFER / N);
    let mut threads = Threads::new();
    for _ in 0..writers {
        let sender = sender.clone();
        let src = source(N);
        threads.writer(move |i| {
            let mut unit = [0u8; N];
            fill(&mut unit, &src, i);
            sender.send_timeout(unit, TIMEOUT).expect("send");
        });
    }
    // The writers' clones are the only senders: the channel disconnects when they end.
    drop(sender);
    for _ in 0..readers {
        let receiver = receiver.clone();
        threads.reader(move |wait| {
            let got = if wait {
                match receiver.recv_timeout(IDLE_WAIT) {
                    Ok(unit) => Some(unit),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => return Read::Empty,
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => None,
                }
            } else {
                match receiver.try_recv() {
                    Ok(unit) => Some(unit),
                    Err(crossbeam_channel::TryRecvError::Empty) => return Read::Empty,
                    Err(crossbeam_channel::TryRecvError::Disconnected) => None,
                }
            };
            match got {
                Some(unit) => Read::Unit(checksum(&unit)),
                None => Read::Closed,
            }
        });
    }
    threads
}

/// One group: the three contenders for `N`-byte units, `writers` + `readers` threads.
fn group<const N: usize>(c: &mut Criterion, label: &str, writers: u32, readers: u32) {
    let mut group = c.benchmark_group(format!("mpmc/{writers}w{readers}r/{label}"));
    group.throughput(Throughput::Elements(1));
    contender(&mut group, "shm-arena", || arena(N, writers, readers));
    contender(&mut group, "ArrayQueue", || {
        array_queue::<N>(writers, readers)
    });
    contender(&mut group, "crossbeam-channel", || {
        crossbeam_channel::<N>(writers, readers)
    });
    group.finish();
}

fn mpmc(c: &mut Criterion) {
    for (writers, readers) in [(2, 2), (4, 4)] {
        group::<64>(c, "64B", writers, readers);
        group::<4096>(c, "4KiB", writers, readers);
    }
}

criterion_group! {
    name = benches;
    // Short by default (the whole run takes about a minute and a half); command-line options
    // such as `--measurement-time` still override these.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10);
    targets = mpmc
}
criterion_main!(benches);

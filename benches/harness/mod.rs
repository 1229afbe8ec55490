//! The two-thread harness shared by the criterion benches: a writer thread fed with batch
//! sizes, the reading half on the measured thread, and one criterion function per contender.

use std::hint::black_box;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::BenchmarkGroup;

/// Something that moves `units` units and reports how long that took.
pub trait Transfer {
    fn transfer(&mut self, units: u64) -> Duration;
}

/// A writer thread fed with batch sizes, and the reading half run on the measured thread.
pub struct TwoThreads<R> {
    commands: Option<mpsc::Sender<u64>>,
    writer: Option<JoinHandle<()>>,
    /// Takes unit `i` of a batch and returns its checksum.
    read_unit: R,
}

impl<R: FnMut(u64) -> u64> TwoThreads<R> {
    /// `write_unit(i)` writes the `i`-th unit of a batch; it runs on a new thread.
    pub fn new(mut write_unit: impl FnMut(u64) + Send + 'static, read_unit: R) -> Self {
        let (commands, batches) = mpsc::channel::<u64>();
        let writer = std::thread::spawn(move || {
            for units in batches {
                for i in 0..units {
                    write_unit(i);
                }
            }
        });
        TwoThreads {
            commands: Some(commands),
            writer: Some(writer),
            read_unit,
        }
    }
}

impl<R: FnMut(u64) -> u64> Transfer for TwoThreads<R> {
    fn transfer(&mut self, units: u64) -> Duration {
        let start = Instant::now();
        self.commands
            .as_ref()
            .expect("writer running")
            .send(units)
            .expect("writer thread alive");
        let mut sum = 0u64;
        for i in 0..units {
            sum = sum.wrapping_add((self.read_unit)(i));
        }
        black_box(sum);
        start.elapsed()
    }
}

impl<R> Drop for TwoThreads<R> {
    fn drop(&mut self) {
        // Closing the command channel ends the writer's loop.
        drop(self.commands.take());
        if let Some(writer) = self.writer.take() {
            // Re-raise a writer panic here, unless we are already unwinding from the reader's.
            if writer.join().is_err() && !std::thread::panicking() {
                panic!("writer thread panicked");
            }
        }
    }
}

/// Benchmarks one contender; its threads and buffers exist only while it is measured (and not
/// at all when a filter skips it).
pub fn contender<T: Transfer>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    mut make: impl FnMut() -> T,
) {
    let mut fixture = None;
    group.bench_function(name, |b| {
        let fixture = fixture.get_or_insert_with(&mut make);
        b.iter_custom(|units| fixture.transfer(units));
    });
}

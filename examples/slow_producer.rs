//! SPSC throughput when the consumer keeps up with a slower producer: the writer thread
//! pauses a little after each 64-byte unit, the reader takes units one by one as they come.
//!
//! This is the regime where a reader that loads the ring's head for every unit slows the
//! writer down (each head load pulls the head's line from the writer, whose next head store
//! waits for it under the commit's fence). Prints units/s and ns per unit for a few producer
//! paces next to the pause's own cost, so the overhead per unit can be read off directly.
//!
//! ```text
//! cargo run --release --example slow_producer
//! ```

use std::time::{Duration, Instant};

use shm_arena::Region;

const UNITS: u64 = 2_000_000;

/// Units/s with the writer issuing `pauses` PAUSE instructions after every commit.
fn run(pauses: u32) -> shm_arena::Result<f64> {
    let region = Region::create(1 << 20)?;
    let mut writer = region.writer()?;
    let reader = region.reader()?;
    let started = Instant::now();
    let sum = std::thread::scope(|s| -> shm_arena::Result<u64> {
        let producer = s.spawn(move || -> shm_arena::Result<()> {
            let payload = [7u8; 64];
            for i in 0..UNITS {
                let mut unit = writer.begin_unit()?;
                let blob = unit.blob_mut(64)?;
                blob.copy_from_slice(&payload);
                blob[..8].copy_from_slice(&i.to_le_bytes());
                unit.commit()?;
                for _ in 0..pauses {
                    std::hint::spin_loop();
                }
            }
            Ok(())
        });
        let mut sum = 0u64;
        for _ in 0..UNITS {
            let unit = reader.next_unit(Duration::from_secs(10))?;
            sum = sum.wrapping_add(unit.blob(0)?.iter().map(|&b| u64::from(b)).sum::<u64>());
        }
        producer.join().expect("producer thread")?;
        Ok(sum)
    })?;
    std::hint::black_box(sum);
    Ok(UNITS as f64 / started.elapsed().as_secs_f64())
}

/// What `pauses` PAUSE instructions cost by themselves, in ns.
fn pause_cost(pauses: u32) -> f64 {
    let started = Instant::now();
    for _ in 0..1_000_000 {
        for _ in 0..pauses {
            std::hint::spin_loop();
        }
    }
    started.elapsed().as_nanos() as f64 / 1e6
}

fn main() -> shm_arena::Result<()> {
    println!("pauses  units/s      ns/unit  (the pauses alone)");
    for pauses in [0, 2, 4, 8] {
        let rate = run(pauses)?;
        println!(
            "{pauses:>6}  {:>6.2} M  {:>9.1}  ({:.1} ns)",
            rate / 1e6,
            1e9 / rate,
            pause_cost(pauses)
        );
    }
    Ok(())
}

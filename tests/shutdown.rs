//! Shutting a region down ends every wait on it at once, whatever holds the ring.

use std::time::{Duration, Instant};

use shm_arena::{Error, Region, RegionOptions};

/// A writer blocked on a ring whose reader holds every unit (and would for ever) is released
/// by `shutdown` with `Error::Shutdown`, long before its own deadline; the held units stay
/// readable; the reader drains, then gets `Shutdown` too.
#[test]
fn shutdown_releases_a_writer_blocked_on_held_units() {
    let region = Region::create(1 << 12).unwrap();
    let (mut writer, reader) = (region.writer().unwrap(), region.reader().unwrap());
    writer.set_timeout(Some(Duration::from_secs(30)));
    writer.write_unit(&[&[1u8; 1000]]).unwrap();
    let held = reader
        .next_unit(Duration::from_secs(1))
        .unwrap()
        .into_owned();
    let blocked = std::thread::spawn(move || {
        let started = Instant::now();
        let mut result = Ok(());
        for _ in 0..10 {
            result = writer.write_unit(&[&[2u8; 1000]]);
            if result.is_err() {
                break;
            }
        }
        (result, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(200));
    region.shutdown();
    let (result, waited) = blocked.join().unwrap();
    assert!(matches!(result, Err(Error::Shutdown)), "{result:?}");
    assert!(
        waited < Duration::from_secs(10),
        "released after {waited:?}"
    );
    assert!(held.blob(0).unwrap().iter().all(|&b| b == 1));
    let mut drained = 0;
    loop {
        match reader.next_unit(Duration::from_secs(5)) {
            Ok(unit) => {
                assert!(unit.blob(0).unwrap().iter().all(|&b| b == 2));
                drained += 1;
            }
            Err(Error::Shutdown) => break,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(
        drained >= 1,
        "the units committed before the shutdown are still read"
    );
}

/// MPMC: a reader waiting for units is woken by the shutdown at once.
#[test]
fn shutdown_wakes_a_waiting_mpmc_reader() {
    let region = Region::create_with(RegionOptions::new(1 << 12).mpmc(2, 2)).unwrap();
    let _writer = region.writer().unwrap();
    let reader = region.reader().unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(100));
            region.shutdown();
        });
        let started = Instant::now();
        assert!(matches!(
            reader.next_unit(Duration::from_secs(30)),
            Err(Error::Shutdown)
        ));
        assert!(started.elapsed() < Duration::from_secs(10));
    });
}

use shm_arena::{Backing, Region, RegionOptions};
use std::time::Duration;

#[test]
fn threads_many_laps() {
    for backing in [Backing::Memfd, Backing::Named, Backing::Anonymous] {
        let region = Region::create_with(RegionOptions::new(1 << 14).backing(backing)).unwrap();
        let mut w = region.writer().unwrap();
        let r = region.reader().unwrap();
        let t = std::thread::spawn(move || {
            for i in 0..20000u32 {
                let n = (i as usize * 7919) % 3000;
                let mut u = w.begin_unit().unwrap();
                u.push(&i.to_le_bytes()).unwrap();
                let b = u.blob_mut(n).unwrap();
                b.fill(i as u8);
                u.commit().unwrap();
            }
        });
        for i in 0..20000u32 {
            let u = r.next_unit(Duration::from_secs(5)).unwrap();
            assert_eq!(u.blob(0).unwrap(), i.to_le_bytes());
            let n = (i as usize * 7919) % 3000;
            let b = u.blob(1).unwrap();
            assert_eq!(b.len(), n);
            assert!(b.iter().all(|&x| x == i as u8));
        }
        t.join().unwrap();
        assert!(matches!(
            r.next_unit(Duration::from_secs(1)),
            Err(shm_arena::Error::Closed(_))
        ));
    }
}

/// This process's resident shared-memory pages, in KiB (`RssShmem` in /proc/self/status).
fn rss_shmem_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("RssShmem:"))
        .expect("RssShmem in /proc/self/status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `prefault`: the creator's mapping and any later opener's mapping have every page resident
/// before the first unit; without it, pages come in as the ring is first written.
#[test]
fn prefault_populates_every_mapping() {
    let capacity = 32u64 << 20;
    let before = rss_shmem_kib();
    let lazy = Region::create(capacity).unwrap();
    let lazy_delta = rss_shmem_kib().saturating_sub(before);
    assert!(
        lazy_delta < 1024,
        "{lazy_delta} KiB resident without prefault"
    );

    let before = rss_shmem_kib();
    let eager = Region::create_with(RegionOptions::new(capacity).prefault(true)).unwrap();
    let created = rss_shmem_kib().saturating_sub(before);
    assert!(
        created >= capacity / 1024,
        "{created} KiB resident after create"
    );
    // A second mapping (what a child gets from `open_fd`) is populated too: the flag travels
    // in the header.
    let fd = eager.fd().unwrap().try_clone_to_owned().unwrap();
    let before = rss_shmem_kib();
    let opened = Region::open_fd(fd).unwrap();
    let delta = rss_shmem_kib().saturating_sub(before);
    assert!(delta >= capacity / 1024, "{delta} KiB resident after open");
    drop((lazy, eager, opened));
}

/// CPU time this thread has used.
fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Runs `wait` (a blocking call that must time out) three times and checks the thread used
/// little CPU meanwhile.
fn assert_sleeps(who: &str, mut wait: impl FnMut() -> shm_arena::Result<()>) {
    let before = thread_cpu_time();
    for _ in 0..3 {
        let err = wait().expect_err("nothing can arrive");
        assert!(
            matches!(err, shm_arena::Error::Timeout { .. }),
            "{who}: {err}"
        );
    }
    let used = thread_cpu_time() - before;
    assert!(
        used < Duration::from_millis(60),
        "a {who} blocked for 300 ms used {used:?} of CPU"
    );
}

/// A blocked side sleeps: its spin budget is bounded (50 µs) and shrinks with long waits, so
/// a reader waiting 300 ms for a unit, and then a writer waiting 300 ms for space, use little
/// CPU. (A spin without a bound, or a budget that grew without limit, would use ~300 ms each.)
#[test]
fn blocked_sides_sleep_instead_of_spinning() {
    let region = Region::create(64 << 10).expect("region");
    let mut writer = region.writer().expect("writer");
    let reader = region.reader().expect("reader");
    assert_sleeps("reader", || {
        reader.next_unit(Duration::from_millis(100)).map(drop)
    });

    writer.set_timeout(Some(Duration::from_millis(100)));
    while writer
        .try_begin_unit()
        .and_then(|mut u| {
            u.push(&[7; 1024])?;
            u.commit()
        })
        .is_ok()
    {}
    assert_sleeps("writer", || writer.write_unit(&[&[7; 1024]]));
}

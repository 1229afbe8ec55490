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

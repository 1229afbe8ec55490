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

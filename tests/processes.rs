//! Multi-process tests: real child processes share a region with this one.
//!
//! A child is this test binary started again (`std::env::current_exe()`) with a filter that
//! runs only the ignored [`child_main`] (`--ignored --exact child_main`), plus [`ROLE_ENV`]
//! naming what it should do; a normal test run skips it as ignored. Every child is owned
//! by a [`ChildGuard`] that kills and reaps it on every path, and every wait has a deadline, so
//! a broken ring fails a test instead of hanging CI.
//!
//! Corruption and truncation are done through the named object's file under /dev/shm with
//! plain `std::fs`, i.e. through a second view of the same memory, as a buggy or hostile peer
//! would.

mod common;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::child::{env_u64, kill_later, park_until_killed, ChildGuard};
use common::proc::proc_state;

use shm_arena::{unit_size, Backing, Error, Region, RegionOptions, Role};

// ---------------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------------

/// Names the part a child process plays; absent in a normal test run.
const ROLE_ENV: &str = "SHM_ARENA_CHILD_ROLE";
/// Seed of the stream a writer child produces.
const SEED_ENV: &str = "SHM_ARENA_CHILD_SEED";
/// Number of units a writer child produces.
const COUNT_ENV: &str = "SHM_ARENA_CHILD_COUNT";
/// Line a child prints on stdout once it reached the state the parent waits for.
const READY: &str = "SHM_ARENA_CHILD_READY";

/// Entry point of child processes (see the module docs): ignored in a normal run, started with
/// `--ignored --exact child_main` by the tests.
#[test]
#[ignore = "child-process entry point, started by the other tests"]
fn child_main() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    match role.as_str() {
        "stream_writer" => child_stream_writer(),
        "killed_writer" => child_killed_writer(),
        "killed_reader" => child_killed_reader(),
        "role_taker" => child_role_taker(),
        other => panic!("unknown child role {other:?}"),
    }
}

fn say_ready() {
    common::child::say(READY);
}

/// A child playing `role`, sharing `region`.
fn spawn(role: &str, region: &Region, env: &[(&str, String)]) -> ChildGuard {
    ChildGuard::spawn(ROLE_ENV, role, region, env)
}

/// Waits for the child to print [`READY`] (after the harness's "test child_main ... ", which
/// has no line break of its own).
fn wait_ready(child: &mut ChildGuard, timeout: Duration) {
    child.wait_for(|line| line.ends_with(READY), timeout);
}

// ---------------------------------------------------------------------------------------------
// Deterministic stream: both processes generate the same units from a seed
// ---------------------------------------------------------------------------------------------

// xorshift64*: tiny, seedable, identical in both processes.
use common::rng::{checksum, Rng};

const CHECKSUM_SEED: u64 = 0xCBF2_9CE4_8422_2325;
/// Each unit ends with a trailer blob: sequence number, payload blob count, checksum.
const TRAILER_LEN: usize = 24;
/// Ring of the stream test: 1 MiB, so the largest unit is 512 KiB.
const STREAM_CAPACITY: u64 = 1 << 20;

/// Payload blob lengths of the next unit (0 to 3 payload blobs plus the trailer: 1 to 4 blobs).
fn plan_unit(rng: &mut Rng, max_unit: u64) -> Vec<usize> {
    if rng.below(2000) == 0 {
        // A unit as large as the ring allows (up to exactly max_unit): record, one big blob and
        // the trailer, each 64-aligned.
        let fixed = unit_size(&[0, TRAILER_LEN]) as usize;
        let len = max_unit as usize - fixed - rng.below(4096) as usize;
        return vec![len];
    }
    let blobs = rng.below(4) as usize;
    (0..blobs)
        .map(|_| match rng.below(1000) {
            0..=19 => 0,
            20..=719 => 1 + rng.below(512) as usize,
            720..=989 => 513 + rng.below(4096 - 512) as usize,
            _ => 4097 + rng.below(32 * 1024 - 4096) as usize,
        })
        .collect()
}

/// Seed of the bytes of payload blob `blob` of unit `seq`.
fn blob_rng(seed: u64, seq: u64, blob: usize) -> Rng {
    Rng::new(seed ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((blob as u64) << 56))
}

fn stream_count() -> u64 {
    if std::env::var_os("SHM_ARENA_STRESS").is_some_and(|v| v == "1") {
        1_000_000
    } else {
        100_000
    }
}

fn child_stream_writer() {
    let seed = env_u64(SEED_ENV);
    let count = env_u64(COUNT_ENV);
    let region = Region::from_env().unwrap();
    let mut writer = region.writer().unwrap();
    // A parent that stops reading must not keep this child alive for ever.
    writer.set_timeout(Some(Duration::from_secs(30)));
    let max_unit = writer.max_unit();
    let mut plan = Rng::new(seed);
    let mut scratch = Vec::new();
    for seq in 0..count {
        let lens = plan_unit(&mut plan, max_unit);
        let mut all = lens.clone();
        all.push(TRAILER_LEN);
        assert!(unit_size(&all) <= max_unit, "plan {lens:?} too large");
        let mut unit = writer.begin_unit().unwrap();
        let mut sum = CHECKSUM_SEED;
        for (i, &len) in lens.iter().enumerate() {
            let mut rng = blob_rng(seed, seq, i);
            // Both ways of adding a blob: filled in place, or copied in.
            if (seq + i as u64) % 2 == 0 {
                let blob = unit.blob_mut(len).unwrap();
                rng.fill(blob);
                sum = checksum(sum, blob);
            } else {
                scratch.resize(len, 0);
                rng.fill(&mut scratch);
                sum = checksum(sum, &scratch);
                unit.push(&scratch).unwrap();
            }
        }
        let mut trailer = [0u8; TRAILER_LEN];
        trailer[..8].copy_from_slice(&seq.to_le_bytes());
        trailer[8..16].copy_from_slice(&(lens.len() as u64).to_le_bytes());
        trailer[16..].copy_from_slice(&sum.to_le_bytes());
        unit.push(&trailer).unwrap();
        unit.commit().unwrap();
    }
    // Dropping the writer closes the ring: the parent drains, then sees Closed(Writer).
}

/// Test 1: a child writes many units of random sizes across many laps; every byte, the order
/// and the count are checked here, then the child's exit closes the ring.
#[test]
fn child_writer_stream_every_byte_checked() {
    let seed = 0x5EED_0001;
    let count = stream_count();
    let region = Region::create(STREAM_CAPACITY).unwrap();
    let reader = region.reader().unwrap();
    let mut child = spawn(
        "stream_writer",
        &region,
        &[(SEED_ENV, seed.to_string()), (COUNT_ENV, count.to_string())],
    );
    let max_unit = STREAM_CAPACITY / 2;
    let mut plan = Rng::new(seed);
    let mut expected = Vec::new();
    let mut next_position = 0;
    let mut largest = 0;
    for seq in 0..count {
        let lens = plan_unit(&mut plan, max_unit);
        let unit = reader
            .next_unit(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("unit {seq}: {e}"));
        assert_eq!(
            unit.position(),
            next_position,
            "unit {seq} is not contiguous"
        );
        next_position += unit.span();
        assert_eq!(unit.blob_count(), lens.len() + 1, "unit {seq}");
        let trailer = unit.blob(lens.len()).unwrap();
        assert_eq!(trailer.len(), TRAILER_LEN);
        let word = |i: usize| u64::from_le_bytes(trailer[8 * i..8 * i + 8].try_into().unwrap());
        assert_eq!(word(0), seq, "sequence number");
        assert_eq!(word(1), lens.len() as u64, "unit {seq}: payload blob count");
        let mut sum = CHECKSUM_SEED;
        for (i, &len) in lens.iter().enumerate() {
            let blob = unit.blob(i).unwrap();
            assert_eq!(blob.len(), len, "unit {seq} blob {i}");
            largest = largest.max(len as u64);
            if len > 0 {
                assert_eq!(
                    blob.as_ptr() as usize % 64,
                    0,
                    "unit {seq} blob {i} alignment"
                );
            }
            sum = checksum(sum, blob);
            expected.resize(len, 0);
            blob_rng(seed, seq, i).fill(&mut expected);
            assert!(blob == &expected[..], "unit {seq} blob {i}: bytes differ");
        }
        assert_eq!(word(2), sum, "unit {seq}: checksum");
    }
    // Many laps, and the largest units came near the limit (their spans may be larger: a blob
    // that skips the ring's end takes the skipped bytes into its unit's span).
    assert!(
        next_position / STREAM_CAPACITY >= 50,
        "only {} laps",
        next_position / STREAM_CAPACITY
    );
    assert!(largest > max_unit - 8192, "largest blob {largest}");
    match reader.next_unit(Duration::from_secs(30)) {
        Err(Error::Closed(Role::Writer)) => {}
        other => panic!("after the last unit: {other:?}"),
    }
    assert!(child
        .wait_exit(Instant::now() + Duration::from_secs(30))
        .success());
}

// ---------------------------------------------------------------------------------------------
// Peers killed with SIGKILL
// ---------------------------------------------------------------------------------------------

/// Units the killed writer commits before its last, unfinished one.
const KILLED_WRITER_UNITS: u64 = 50;

fn child_killed_writer() {
    let region = Region::from_env().unwrap();
    let mut writer = region.writer().unwrap();
    for i in 0..KILLED_WRITER_UNITS {
        writer
            .write_unit(&[&i.to_le_bytes(), &vec![i as u8; (i as usize * 37) % 3000]])
            .unwrap();
    }
    writer.write_unit(&[b"marker"]).unwrap();
    let mut unit = writer.begin_unit().unwrap();
    unit.push(&[0xAB; 5000]).unwrap();
    unit.blob_mut(100).unwrap().fill(0xCD);
    // Half a unit is written and not committed: the parent kills us now.
    say_ready();
    park_until_killed();
}

/// Test 2: a writer SIGKILLed in the middle of a unit gives its blocked reader `PeerGone`,
/// promptly, even while the dead child is an unreaped zombie.
#[test]
fn writer_killed_mid_unit_gives_peer_gone() {
    let region = Region::create(1 << 16).unwrap();
    let reader = region.reader().unwrap();
    let mut child = spawn("killed_writer", &region, &[]);
    let pid = child.pid();
    for i in 0..KILLED_WRITER_UNITS {
        let unit = reader.next_unit(Duration::from_secs(30)).unwrap();
        assert_eq!(unit.blob(0).unwrap(), i.to_le_bytes());
        let body = unit.blob(1).unwrap();
        assert_eq!(body.len(), (i as usize * 37) % 3000);
        assert!(body.iter().all(|&b| b == i as u8));
    }
    let marker = reader.next_unit(Duration::from_secs(30)).unwrap();
    assert_eq!(marker.blob(0).unwrap(), b"marker");
    drop(marker);
    wait_ready(&mut child, Duration::from_secs(30));
    assert!(region.peer_alive(Role::Writer));

    let killer = kill_later(child, Duration::from_millis(300));
    let started = Instant::now();
    let result = reader.next_unit(Duration::from_secs(30));
    let waited = started.elapsed();
    match result {
        Err(Error::PeerGone {
            role: Role::Writer,
            pid: gone,
        }) => assert_eq!(gone, pid),
        other => panic!("reader blocked on a killed writer got {other:?}"),
    }
    // Hang guard, not a speed check: 30 s would mean liveness was never checked.
    assert!(waited < Duration::from_secs(10), "waited {waited:?}");
    let (child, _) = killer.join().unwrap();
    // Nobody reaped it: the check above saw a zombie, which must count as dead.
    assert_eq!(proc_state(pid), Some('Z'));
    assert!(!region.peer_alive(Role::Writer));
    // The uncommitted half unit never shows, and asking again still says PeerGone.
    assert!(reader.try_next_unit().unwrap().is_none());
    assert!(matches!(
        reader.next_unit(Duration::from_secs(30)),
        Err(Error::PeerGone {
            role: Role::Writer,
            ..
        })
    ));
    drop(child);
}

/// Test 2, the other order: a writer killed before its units were read loses none of them;
/// `PeerGone` comes only once everything it committed was taken.
#[test]
fn units_of_a_killed_writer_are_still_read() {
    let region = Region::create(1 << 16).unwrap();
    let reader = region.reader().unwrap();
    let mut child = spawn("killed_writer", &region, &[]);
    let pid = child.pid();
    wait_ready(&mut child, Duration::from_secs(30));
    child.kill();
    let until = Instant::now() + Duration::from_secs(10);
    while proc_state(pid) != Some('Z') {
        assert!(Instant::now() < until, "child {pid} did not die");
        std::thread::sleep(Duration::from_millis(5));
    }
    for i in 0..KILLED_WRITER_UNITS {
        let unit = reader.next_unit(Duration::from_secs(30)).unwrap();
        assert_eq!(unit.blob(0).unwrap(), i.to_le_bytes());
    }
    let marker = reader.next_unit(Duration::from_secs(30)).unwrap();
    assert_eq!(marker.blob(0).unwrap(), b"marker");
    drop(marker);
    match reader.next_unit(Duration::from_secs(30)) {
        Err(Error::PeerGone {
            role: Role::Writer,
            pid: gone,
        }) => assert_eq!(gone, pid),
        other => panic!("after the dead writer's units: {other:?}"),
    };
}

fn child_killed_reader() {
    let region = Region::from_env().unwrap();
    let reader = region.reader().unwrap();
    let unit = reader.next_unit(Duration::from_secs(30)).unwrap();
    assert_eq!(unit.blob(0).unwrap(), b"hello");
    drop(unit);
    say_ready();
    park_until_killed();
}

/// Test 2, mirrored: a writer blocked on a full ring learns that the reader was killed.
#[test]
fn reader_killed_gives_blocked_writer_peer_gone() {
    let region = Region::create(1 << 16).unwrap();
    let mut writer = region.writer().unwrap();
    let mut child = spawn("killed_reader", &region, &[]);
    let pid = child.pid();
    writer.write_unit(&[b"hello"]).unwrap();
    wait_ready(&mut child, Duration::from_secs(30));

    // Fill the ring without blocking.
    let mut written = 0;
    loop {
        let mut unit = writer.try_begin_unit().unwrap();
        match unit.push(&[7; 1000]) {
            Ok(_) => unit.commit().unwrap(),
            Err(Error::WouldBlock(_)) => break,
            Err(e) => panic!("filling the ring: {e}"),
        }
        written += 1;
        assert!(written < 1000, "the ring never filled");
    }
    assert!(written > 30, "only {written} units fit");

    writer.set_timeout(Some(Duration::from_secs(30)));
    let killer = kill_later(child, Duration::from_millis(300));
    let started = Instant::now();
    let result = writer
        .begin_unit()
        .and_then(|mut unit| unit.push(&[8; 1000]));
    let waited = started.elapsed();
    match result {
        Err(Error::PeerGone {
            role: Role::Reader,
            pid: gone,
        }) => assert_eq!(gone, pid),
        other => panic!("writer blocked on a killed reader got {other:?}"),
    }
    assert!(waited < Duration::from_secs(10), "waited {waited:?}");
    let (child, _) = killer.join().unwrap();
    assert_eq!(proc_state(pid), Some('Z'));
    assert!(!region.peer_alive(Role::Reader));
    drop(child);
}

// ---------------------------------------------------------------------------------------------
// Corruption through a second view of a named region
// ---------------------------------------------------------------------------------------------

/// The file of a named shared-memory object.
fn shm_path(name: &str) -> PathBuf {
    PathBuf::from("/dev/shm").join(name.trim_start_matches('/'))
}

fn open_shm_file(name: &str) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(shm_path(name))
        .unwrap()
}

fn read_u64(file: &File, offset: u64) -> u64 {
    let mut bytes = [0u8; 8];
    file.read_exact_at(&mut bytes, offset).unwrap();
    u64::from_ne_bytes(bytes)
}

fn write_u64(file: &File, offset: u64, value: u64) {
    file.write_all_at(&value.to_ne_bytes(), offset).unwrap();
}

fn expect_corrupt<T: std::fmt::Debug>(result: shm_arena::Result<T>, what: &str) {
    match result {
        Err(Error::Corrupt { .. }) => {}
        other => panic!("{what}: expected Corrupt, got {other:?}"),
    }
}

const HEADER: u64 = 4096;

/// Region offset of the record of the unit starting at ring position `pos`.
fn record_offset(pos: u64, capacity: u64) -> u64 {
    HEADER + (pos & (capacity - 1))
}

/// Test 3a: a header with a bad magic, version, mode, capacity or data offset does not open.
#[test]
fn corrupt_header_does_not_open() {
    let region = Region::create_with(RegionOptions::new(1 << 16).backing(Backing::Named)).unwrap();
    let name = region.name().unwrap().to_owned();
    let file = open_shm_file(&name);
    let mut good = [0u8; 40];
    file.read_exact_at(&mut good, 0).unwrap();
    assert_eq!(&good[..8], b"SHMARENA");
    Region::open_name(&name).expect("an intact header opens");

    let cases: [(&str, u64, &[u8]); 7] = [
        ("magic", 0, b"SHMAREN!"),
        ("version", 8, &99u32.to_ne_bytes()),
        ("mode", 12, &77u32.to_ne_bytes()),
        (
            "capacity not a power of two",
            16,
            &((1u64 << 16) + 64).to_ne_bytes(),
        ),
        (
            "capacity larger than the object",
            16,
            &(1u64 << 17).to_ne_bytes(),
        ),
        ("capacity below the minimum", 16, &1024u64.to_ne_bytes()),
        ("data offset", 24, &8192u64.to_ne_bytes()),
    ];
    for (what, offset, bytes) in cases {
        file.write_all_at(bytes, offset).unwrap();
        expect_corrupt(Region::open_name(&name), what);
        file.write_all_at(&good, 0).unwrap();
    }
    Region::open_name(&name).expect("the restored header opens");
}

/// Test 3b: a record with an impossible stamp, span or blob count stops the reader with
/// `Corrupt`, every time it asks, without skipping the unit.
#[test]
fn corrupt_record_stops_the_reader() {
    let capacity = 1 << 16;
    let region = Region::create_with(RegionOptions::new(capacity).backing(Backing::Named)).unwrap();
    let file = open_shm_file(region.name().unwrap());
    let mut writer = region.writer().unwrap();
    let reader = region.reader().unwrap();
    writer.write_unit(&[b"first"]).unwrap();
    writer.write_unit(&[b"second", &[2; 300]]).unwrap();
    writer.write_unit(&[b"a", b"b", b"c", b"d"]).unwrap();

    let first = reader.next_unit(Duration::from_secs(5)).unwrap();
    let second_pos = first.position() + first.span();
    drop(first);
    let rec = record_offset(second_pos, capacity);
    // Record fields: word (stamp | state) @0, span @8, count @16, table @24, inline @32.
    let cases: [(&str, u64, u64); 6] = [
        ("stamp of another lap", 0, (second_pos + capacity) | 1),
        ("stamp not committed", 0, second_pos),
        ("garbage stamp", 0, 0xDEAD_BEEF_DEAD_BEEF),
        ("span past the head", 8, capacity * 4),
        ("span not a multiple of 64", 8, 100),
        ("huge blob count", 16, u64::MAX / 2),
    ];
    for (what, field, bad) in cases {
        let good = read_u64(&file, rec + field);
        write_u64(&file, rec + field, bad);
        expect_corrupt(reader.try_next_unit(), what);
        expect_corrupt(reader.try_next_unit(), what);
        expect_corrupt(reader.next_unit(Duration::from_secs(5)), what);
        write_u64(&file, rec + field, good);
    }
    // Restored: the reader did not move past the unit.
    let second = reader.next_unit(Duration::from_secs(5)).unwrap();
    assert_eq!(second.position(), second_pos);
    assert_eq!(second.blob(0).unwrap(), b"second");
    let third_pos = second_pos + second.span();
    drop(second);

    // A descriptor table outside the span.
    let rec = record_offset(third_pos, capacity);
    let good = read_u64(&file, rec + 24);
    write_u64(&file, rec + 24, 1 << 40);
    expect_corrupt(reader.try_next_unit(), "table offset");
    write_u64(&file, rec + 24, good);
    let third = reader.next_unit(Duration::from_secs(5)).unwrap();
    assert_eq!(third.blob(3).unwrap(), b"d");
}

/// Region offsets of lane 0's head and tail cursors (each on its own 128-byte line; the lane
/// array starts at 512, see docs/FORMAT.md); the test checks them against
/// [`Region::cursors`] before relying on them.
const HEAD_OFFSET: u64 = 512;
const TAIL_OFFSET: u64 = 640;

/// Test 3b, cursors: a head or tail cursor moved to an impossible place gives `Corrupt` to
/// the side that reads it, never an access outside the ring or a wait for ever.
#[test]
fn corrupt_cursors_are_caught() {
    let capacity = 1 << 16;
    let region = Region::create_with(RegionOptions::new(capacity).backing(Backing::Named)).unwrap();
    let file = open_shm_file(region.name().unwrap());
    let mut writer = region.writer().unwrap();
    let reader = region.reader().unwrap();
    writer.write_unit(&[&[1; 1000]]).unwrap();
    drop(reader.next_unit(Duration::from_secs(5)).unwrap());
    let cursors = region.cursors();
    assert!(cursors.head > 0 && cursors.tail == cursors.head);
    assert_eq!(read_u64(&file, HEAD_OFFSET), cursors.head, "head offset");
    assert_eq!(read_u64(&file, TAIL_OFFSET), cursors.tail, "tail offset");

    // A head more than one ring ahead of the reader, or behind it.
    for bad in [cursors.head + 2 * capacity, cursors.head - 64] {
        write_u64(&file, HEAD_OFFSET, bad);
        expect_corrupt(reader.try_next_unit(), "head cursor");
        expect_corrupt(reader.next_unit(Duration::from_secs(5)), "head cursor");
        write_u64(&file, HEAD_OFFSET, cursors.head);
    }
    assert!(reader.try_next_unit().unwrap().is_none());

    // A tail past the writer's head, or behind what the writer saw: the writer must load the
    // tail (the ring looks full to it) to notice, so fill the ring first.
    writer.set_timeout(Some(Duration::from_secs(5)));
    let mut held = Vec::new();
    loop {
        let mut unit = writer.try_begin_unit().unwrap();
        match unit.push(&[2; 4000]) {
            Ok(_) => unit.commit().unwrap(),
            Err(Error::WouldBlock(_)) => break,
            Err(e) => panic!("filling the ring: {e}"),
        }
        held.push(
            reader
                .next_unit(Duration::from_secs(5))
                .unwrap()
                .into_owned(),
        );
        assert!(held.len() < 100, "the ring never filled");
    }
    let tail = read_u64(&file, TAIL_OFFSET);
    for bad in [u64::MAX - 63, tail.saturating_sub(64)] {
        write_u64(&file, TAIL_OFFSET, bad);
        let result = writer
            .begin_unit()
            .and_then(|mut unit| unit.push(&[3; 4000]));
        expect_corrupt(result, "tail cursor");
        write_u64(&file, TAIL_OFFSET, tail);
    }
    drop(held);
    writer
        .write_unit(&[&[4; 4000]])
        .expect("space after the units ended");
}

/// Test 3c: a blob descriptor that points outside its unit gives `Corrupt` from `blob(i)`,
/// both for descriptors kept in the record and for those in a descriptor table.
#[test]
fn corrupt_blob_descriptor_is_caught() {
    let capacity = 1 << 16;
    let region = Region::create_with(RegionOptions::new(capacity).backing(Backing::Named)).unwrap();
    let file = open_shm_file(region.name().unwrap());
    let mut writer = region.writer().unwrap();
    let reader = region.reader().unwrap();
    writer.write_unit(&[&[1; 100], &[2; 200]]).unwrap();
    writer.write_unit(&[b"a", b"b", &[3; 500], b"d"]).unwrap();

    // Inline descriptors: (offset, len) pairs at record offset 32.
    let unit = reader.next_unit(Duration::from_secs(5)).unwrap();
    let rec = record_offset(unit.position(), capacity);
    let span = unit.span();
    let cases: [(&str, u64, u64); 5] = [
        ("length past the span", 40, span),
        ("huge length", 40, u64::MAX),
        ("offset past the span", 32, span + 64),
        ("unaligned offset", 32, 65),
        ("offset inside the record", 32, 0),
    ];
    for (what, field, bad) in cases {
        let good = read_u64(&file, rec + field);
        write_u64(&file, rec + field, bad);
        expect_corrupt(unit.blob(0), what);
        assert_eq!(
            unit.blob(1).unwrap(),
            &[2; 200][..],
            "{what}: blob 1 untouched"
        );
        write_u64(&file, rec + field, good);
        assert_eq!(unit.blob(0).unwrap(), &[1; 100][..]);
    }
    drop(unit);

    // Table descriptors: blob i at unit start + table + 16 * i.
    let unit = reader.next_unit(Duration::from_secs(5)).unwrap();
    let rec = record_offset(unit.position(), capacity);
    let table = read_u64(&file, rec + 24);
    let desc = record_offset(unit.position() + table + 16 * 2, capacity);
    let good_len = read_u64(&file, desc + 8);
    assert_eq!(good_len, 500, "the table is where the layout says");
    write_u64(&file, desc + 8, unit.span() * 2);
    expect_corrupt(unit.blob(2), "table length past the span");
    assert_eq!(unit.blob(3).unwrap(), b"d");
    write_u64(&file, desc + 8, good_len);
    assert_eq!(unit.blob(2).unwrap(), &[3; 500][..]);
}

// ---------------------------------------------------------------------------------------------
// Truncated and sealed regions
// ---------------------------------------------------------------------------------------------

/// A file under /dev/shm removed on drop.
struct ShmFile {
    name: String,
    file: File,
}

impl ShmFile {
    /// Creates `/dev/shm/<name>` holding a copy of `region`'s header page.
    fn with_header_of(region: &Region, tag: &str) -> ShmFile {
        let source = open_shm_file(region.name().unwrap());
        let mut header = vec![0u8; HEADER as usize];
        source.read_exact_at(&mut header, 0).unwrap();
        let name = format!("/shm-arena-test-{tag}-{}", std::process::id());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(shm_path(&name))
            .unwrap();
        file.write_all_at(&header, 0).unwrap();
        ShmFile { name, file }
    }
}

impl Drop for ShmFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(shm_path(&self.name));
    }
}

/// Test 4: an object shorter (or longer) than its header says fails to open with `Corrupt`,
/// by name and by descriptor, instead of faulting later.
#[test]
fn truncated_region_does_not_open() {
    let capacity = 1 << 16;
    let region = Region::create_with(RegionOptions::new(capacity).backing(Backing::Named)).unwrap();
    let shm = ShmFile::with_header_of(&region, "truncated");
    let full = HEADER + capacity;
    shm.file.set_len(full).unwrap();
    Region::open_name(&shm.name).expect("the full-size copy opens");

    for len in [
        HEADER + capacity / 2,
        full - 1,
        HEADER,
        HEADER - 1,
        40,
        0,
        full + 4096,
    ] {
        shm.file.set_len(len).unwrap();
        expect_corrupt(
            Region::open_name(&shm.name),
            &format!("{len} bytes by name"),
        );
        let fd = std::os::fd::OwnedFd::from(open_shm_file(&shm.name));
        expect_corrupt(Region::open_fd(fd), &format!("{len} bytes by descriptor"));
    }
}

/// Test 4: a memfd region is sealed: nobody holding its descriptor can shrink or grow it.
#[test]
fn sealed_memfd_cannot_be_resized() {
    let capacity = 1 << 16;
    let region = Region::create(capacity).unwrap();
    let file = File::from(region.fd().unwrap().try_clone_to_owned().unwrap());
    assert_eq!(file.metadata().unwrap().len(), HEADER + capacity);
    assert!(file.set_len(HEADER).is_err(), "shrinking a sealed memfd");
    assert!(file.set_len(0).is_err(), "truncating a sealed memfd");
    assert!(
        file.set_len(HEADER + 2 * capacity).is_err(),
        "growing a sealed memfd"
    );
    assert_eq!(file.metadata().unwrap().len(), HEADER + capacity);
    // Still usable.
    let mut writer = region.writer().unwrap();
    let reader = region.reader().unwrap();
    writer.write_unit(&[b"ok"]).unwrap();
    assert_eq!(
        reader
            .next_unit(Duration::from_secs(5))
            .unwrap()
            .blob(0)
            .unwrap(),
        b"ok"
    );
}

// ---------------------------------------------------------------------------------------------
// Roles and names
// ---------------------------------------------------------------------------------------------

fn child_role_taker() {
    let region = Region::from_env().unwrap();
    let parent = std::os::unix::process::parent_id();
    match region.writer() {
        Err(Error::RoleTaken {
            role: Role::Writer,
            pid,
        }) => assert_eq!(pid, parent),
        other => panic!("second writer in another process: {other:?}"),
    }
    let _reader = region.reader().unwrap();
    say_ready();
    park_until_killed();
}

/// Test 5: each role is held by one live handle at a time, in this process or another; a
/// dropped or dead holder's role can be taken.
#[test]
fn roles_are_exclusive_across_processes() {
    let region = Region::create(1 << 16).unwrap();
    let writer = region.writer().unwrap();
    let me = std::process::id();
    match region.writer() {
        Err(Error::RoleTaken {
            role: Role::Writer,
            pid,
        }) => assert_eq!(pid, me),
        other => panic!("second writer in the same process: {other:?}"),
    }
    // Once the first writer is dropped, a new one may attach: it continues the stream after
    // the last committed unit.
    let mut writer = writer;
    writer.write_unit(&[b"before"]).unwrap();
    drop(writer);
    let mut writer = region.writer().unwrap();
    writer.write_unit(&[b"after"]).unwrap();
    let reader = region.reader().unwrap();
    for expected in [&b"before"[..], b"after"] {
        let unit = reader.next_unit(Duration::from_secs(5)).unwrap();
        assert_eq!(unit.blob(0).unwrap(), expected);
    }
    drop(reader);

    let mut child = spawn("role_taker", &region, &[]);
    let pid = child.pid();
    wait_ready(&mut child, Duration::from_secs(30));
    match region.reader() {
        Err(Error::RoleTaken {
            role: Role::Reader,
            pid: holder,
        }) => assert_eq!(holder, pid),
        other => panic!("reader taken by the child, then asked here: {other:?}"),
    }
    // Once the child's process is dead (even a zombie), its reader role can be taken over.
    child.kill();
    let until = Instant::now() + Duration::from_secs(10);
    let reader = loop {
        match region.reader() {
            Ok(reader) => break reader,
            Err(Error::RoleTaken { .. }) if Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(5))
            }
            other => panic!("taking over the reader of a killed child: {other:?}"),
        }
    };
    writer.write_unit(&[b"to the new reader"]).unwrap();
    let unit = reader.next_unit(Duration::from_secs(5)).unwrap();
    assert_eq!(unit.blob(0).unwrap(), b"to the new reader");
    drop(child);
}

/// Test 6: a named region's name goes away with the creator's last handle, not before, and
/// not when another opener's handles go.
#[test]
fn named_region_is_unlinked_by_its_creator() {
    let region = Region::create_with(RegionOptions::new(1 << 16).backing(Backing::Named)).unwrap();
    let path = shm_path(region.name().unwrap());
    assert!(path.exists());
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    drop(Region::open_name(region.name().unwrap()).unwrap());
    assert!(
        path.exists(),
        "an opener's drop unlinked the creator's name"
    );
    let mut writer = region.writer().unwrap();
    let reader = region.reader().unwrap();
    drop(region);
    assert!(path.exists(), "unlinked while handles remain");
    writer.write_unit(&[b"still mapped"]).unwrap();
    drop(writer);
    assert_eq!(
        reader
            .next_unit(Duration::from_secs(5))
            .unwrap()
            .blob(0)
            .unwrap(),
        b"still mapped"
    );
    drop(reader);
    assert!(!path.exists(), "{} left behind", path.display());

    // An explicit unlink removes the name at once; the mapping stays usable.
    let mut region =
        Region::create_with(RegionOptions::new(1 << 16).backing(Backing::Named)).unwrap();
    let path = shm_path(region.name().unwrap());
    region.unlink().unwrap();
    assert!(!path.exists());
    assert!(region.name().is_none());
    let mut writer = region.writer().unwrap();
    let reader = region.reader().unwrap();
    drop(region);
    writer.write_unit(&[b"x"]).unwrap();
    assert_eq!(
        reader
            .next_unit(Duration::from_secs(5))
            .unwrap()
            .blob(0)
            .unwrap(),
        b"x"
    );
}

//! Replays the committed fuzz corpora and crash artifacts through the same library functions the
//! cargo-fuzz targets call, so every input the fuzzers kept is checked on stable by `cargo test`.
//! Also runs each entry point on pseudo-random inputs, so the checks run even without a corpus.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in [
        root.join("corpus").join(target),
        root.join("artifacts").join(target),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let data = std::fs::read(entry.path()).unwrap();
            check(&data);
            n += 1;
        }
    }
    n
}

/// Inputs from a fixed xorshift stream: varied lengths and byte values.
fn random_inputs(count: usize, max_len: usize, check: fn(&[u8])) {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..count {
        let len = (next() as usize) % max_len;
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        check(&data);
    }
}

#[test]
fn region_header() {
    assert!(
        replay("region_header", shm_arena::fuzzing::region_header) > 0,
        "the committed corpus of region_header is missing"
    );
    random_inputs(2000, 200, shm_arena::fuzzing::region_header);
}

/// The region_header corpus holds headers this build accepts (SPSC, MPMC and broadcast ones, read as
/// an 8-byte region length and then the header), so the fuzzer starts from the accepting path
/// too, not only from rejections; a layout change that leaves them stale fails here.
#[test]
fn region_header_corpus_has_accepted_headers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/region_header");
    let mut modes = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let data = std::fs::read(entry.path()).unwrap();
        if let Some((len, header)) = data.split_first_chunk::<8>() {
            if let Ok(prefix) =
                shm_arena::fuzzing::validate_header_bytes(header, u64::from_le_bytes(*len))
            {
                modes.push(prefix.mode);
            }
        }
    }
    modes.sort_unstable();
    modes.dedup();
    assert_eq!(
        modes,
        [1, 2, 3],
        "accepted SPSC (1), MPMC (2) and broadcast (3) headers in the corpus"
    );
}

#[test]
fn arena_ops() {
    assert!(
        replay("arena_ops", shm_arena::fuzzing::arena_ops) > 0,
        "the committed corpus of arena_ops is missing"
    );
    random_inputs(
        if cfg!(miri) { 5 } else { 300 },
        600,
        shm_arena::fuzzing::arena_ops,
    );
}

#[test]
fn corrupt_region() {
    assert!(
        replay("corrupt_region", shm_arena::fuzzing::corrupt_region) > 0,
        "the committed corpus of corrupt_region is missing"
    );
    random_inputs(
        if cfg!(miri) { 5 } else { 500 },
        300,
        shm_arena::fuzzing::corrupt_region,
    );
}

#[test]
fn corrupt_mpmc_region() {
    assert!(
        replay(
            "corrupt_mpmc_region",
            shm_arena::fuzzing::corrupt_mpmc_region
        ) > 0,
        "the committed corpus of corrupt_mpmc_region is missing"
    );
    random_inputs(
        if cfg!(miri) { 5 } else { 500 },
        300,
        shm_arena::fuzzing::corrupt_mpmc_region,
    );
}

#[test]
fn envelope() {
    assert!(
        replay("envelope", shm_arena::codec::fuzzing::decode_envelope) > 0,
        "the committed corpus of envelope is missing"
    );
    random_inputs(
        if cfg!(miri) { 5 } else { 2000 },
        400,
        shm_arena::codec::fuzzing::decode_envelope,
    );
}

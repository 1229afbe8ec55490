#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| shm_arena::fuzzing::corrupt_mpmc_region(data));

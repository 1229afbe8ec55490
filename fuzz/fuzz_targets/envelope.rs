#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| shm_arena::codec::fuzzing::decode_envelope(data));

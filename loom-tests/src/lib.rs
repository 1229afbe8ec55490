//! Nothing here: the models are in `tests/`, built only with `--cfg shm_arena_loom`.

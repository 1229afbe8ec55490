//! The proptest settings the model tests share.

use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence};

/// 256 cases (or `PROPTEST_CASES`), failures kept in `proptest-regressions/<name>.txt`; 4 cases
/// and no files under Miri.
pub fn proptest_config(regressions: &'static str) -> ProptestConfig {
    if cfg!(miri) {
        // No file system under Miri's isolation: no regression files either.
        ProptestConfig {
            cases: 4,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    } else {
        ProptestConfig {
            // Integration tests have no lib.rs beside them for the default location.
            failure_persistence: Some(Box::new(FileFailurePersistence::Direct(regressions))),
            ..ProptestConfig::default()
        }
    }
}

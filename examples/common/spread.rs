//! The spread of a few timed runs, for the examples that compare transports.

/// Median, smallest and largest of a few runs.
pub fn spread(mut runs: Vec<f64>) -> (f64, f64, f64) {
    runs.sort_by(f64::total_cmp);
    let n = runs.len();
    let median = if n % 2 == 1 {
        runs[n / 2]
    } else {
        (runs[n / 2 - 1] + runs[n / 2]) / 2.0
    };
    (median, runs[0], runs[n - 1])
}

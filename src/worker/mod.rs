//! Placeholder: `iterate_in_subprocess` is being written (issue 5).

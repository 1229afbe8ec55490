//! Placeholder: the codec is being written in parallel (see issue 4).

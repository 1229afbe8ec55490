//! Blobs on the heap: a [`BlobSink`] and [`BlobSource`] without an arena.

use super::{BlobSink, BlobSource};
use crate::{Error, Result};

/// One cache line; a `Vec` of these is a 64-byte aligned byte buffer without any `unsafe`.
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// Blobs kept in 64-byte aligned heap buffers.
///
/// The arena stores blobs in shared memory; this store keeps them on the heap, with the same
/// alignment, for tests, examples, fuzzing and for encoding a value within one process.
/// `&HeapBlobs` is the [`BlobSource`] (decoded values borrow from the store).
///
/// # Examples
///
/// ```
/// use shm_arena::codec::{decode, encode, Bytes, EncodeOptions, HeapBlobs};
///
/// let mut envelope = Vec::new();
/// let mut blobs = HeapBlobs::new();
/// encode(&Bytes::from(vec![9u8; 5000]), &EncodeOptions::default(), &mut envelope, &mut blobs)?;
/// assert_eq!(blobs.len(), 1);
/// let back: Bytes = decode(&envelope, &&blobs)?;
/// assert_eq!(back.len(), 5000);
/// # Ok::<(), shm_arena::Error>(())
/// ```
#[derive(Default)]
pub struct HeapBlobs {
    blobs: Vec<(Vec<Line>, usize)>,
}

impl HeapBlobs {
    /// An empty store.
    pub fn new() -> Self {
        HeapBlobs::default()
    }

    /// Number of blobs stored.
    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    /// Whether no blob is stored.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Blob `index`, if it exists. Its first byte is 64-byte aligned.
    pub fn get(&self, index: u32) -> Option<&[u8]> {
        let (lines, len) = self.blobs.get(index as usize)?;
        Some(&bytemuck::cast_slice::<Line, u8>(lines)[..*len])
    }

    /// Total bytes in all blobs (without alignment padding).
    pub fn total_bytes(&self) -> usize {
        self.blobs.iter().map(|(_, len)| len).sum()
    }

    /// Removes every blob.
    pub fn clear(&mut self) {
        self.blobs.clear();
    }
}

impl std::fmt::Debug for HeapBlobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeapBlobs")
            .field(
                "lens",
                &self.blobs.iter().map(|(_, l)| *l).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl BlobSink for HeapBlobs {
    /// Copies `bytes` into a new 64-byte aligned heap buffer.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if the store already holds `u32::MAX` blobs.
    fn put_blob(&mut self, bytes: &[u8]) -> Result<u32> {
        let index = u32::try_from(self.blobs.len())
            .ok()
            .filter(|&i| i < u32::MAX)
            .ok_or_else(|| Error::InvalidArgument("too many blobs in one store".into()))?;
        let mut lines = vec![Line([0; 64]); bytes.len().div_ceil(64)];
        bytemuck::cast_slice_mut::<Line, u8>(&mut lines)[..bytes.len()].copy_from_slice(bytes);
        self.blobs.push((lines, bytes.len()));
        Ok(index)
    }
}

impl<'a> BlobSource<'a> for &'a HeapBlobs {
    fn blob(&self, index: u32) -> Result<&'a [u8]> {
        let store: &'a HeapBlobs = self;
        store
            .get(index)
            .ok_or_else(|| Error::Codec(format!("no blob {index} (the unit has {})", store.len())))
    }
}

/// A [`BlobSource`] with no blobs, for envelopes that reference none.
///
/// # Examples
///
/// ```
/// use shm_arena::codec::{decode, encode, EncodeOptions, HeapBlobs, NoBlobs};
///
/// // A threshold no leaf reaches: the envelope holds everything.
/// let options = EncodeOptions::with_offload_threshold(usize::MAX);
/// let mut envelope = Vec::new();
/// encode(&("small", 7u8), &options, &mut envelope, &mut HeapBlobs::new())?;
/// let (text, n): (&str, u8) = decode(&envelope, &NoBlobs)?;
/// assert_eq!((text, n), ("small", 7));
/// # Ok::<(), shm_arena::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct NoBlobs;

impl<'a> BlobSource<'a> for NoBlobs {
    fn blob(&self, index: u32) -> Result<&'a [u8]> {
        Err(Error::Codec(format!("no blob {index} (the unit has none)")))
    }
}

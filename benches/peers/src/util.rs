//! What every contender shares: payload generation and checksums, clocks, statistics, child
//! processes and passing file descriptors to them.

use std::hint::black_box;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Child, Command};
use std::time::Duration;

/// A stuck contender should fail the run, not hang the machine.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// Environment variable carrying the file descriptors a child inherits (comma separated).
const FDS_ENV: &str = "SHM_ARENA_PEERS_FDS";
/// Environment variable naming the CPU a child pins itself to.
const CHILD_CPU_ENV: &str = "SHM_ARENA_PEERS_CHILD_CPU";

/// Whether two-process (and two-thread) contenders run pinned: parent (reader thread) on CPU 0,
/// child (writer thread) on CPU 1, with `SHM_ARENA_PEERS_PIN=1` (and 2+ CPUs). Off by default:
/// on a quiet machine pinning gives every contender the same placement, but on a shared,
/// loaded one it forces a spinning side to share its CPU with someone else's process (a bare
/// atomic ping-pong then takes milliseconds); unpinned, the scheduler can move it.
///
/// Decided once, on first use: `available_parallelism` follows the calling thread's affinity,
/// so asked again from a thread spawned by a pinned one it says 1, and the writer thread was
/// then left on the parent's CPU (both threads on CPU 0: what "pinned" measured until this
/// was fixed).
pub fn pinning() -> bool {
    FORCE_PINNING.load(std::sync::atomic::Ordering::Relaxed) || pinning_asked()
}

/// Pinning for the runs that follow, whatever `SHM_ARENA_PEERS_PIN` says (case 1's pinned
/// variant); only when there are 2+ CPUs.
pub fn force_pinning(on: bool) {
    let cpus = std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
    FORCE_PINNING.store(on && cpus, std::sync::atomic::Ordering::Relaxed);
}

static FORCE_PINNING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn pinning_asked() -> bool {
    static PINNING: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PINNING.get_or_init(|| {
        std::env::var("SHM_ARENA_PEERS_PIN").is_ok_and(|v| v == "1")
            && std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
    })
}

/// While alive, the calling thread runs on CPU 0 only (if [`pinning`]); restores the previous
/// CPU set when dropped.
pub struct Pinned(Option<rustix::thread::CpuSet>);

pub fn pin_parent() -> Pinned {
    if !pinning() {
        return Pinned(None);
    }
    let before = rustix::thread::sched_getaffinity(None).expect("sched_getaffinity");
    pin_to(0);
    Pinned(Some(before))
}

impl Drop for Pinned {
    fn drop(&mut self) {
        if let Some(before) = self.0.take() {
            let _ = rustix::thread::sched_setaffinity(None, &before);
        }
    }
}

/// Pins the calling thread to `cpu` (the writer thread of a two-thread contender), if
/// [`pinning`].
pub fn pin_thread(cpu: usize) {
    if pinning() {
        pin_to(cpu);
    }
}

fn pin_to(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).expect("sched_setaffinity");
}

/// Child side: pins to the CPU the parent chose, if any.
pub fn pin_child() {
    if let Some(cpu) = std::env::var(CHILD_CPU_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
    {
        pin_to(cpu);
    }
}

/// What every writer copies in: distinct bytes so the checksum depends on all of them.
pub fn source(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 31 + 7) as u8).collect()
}

/// Writes a unit's payload: one copy of `src`, then the counter over the first bytes so
/// consecutive units differ.
#[inline]
pub fn fill(dst: &mut [u8], src: &[u8], counter: u64) {
    dst.copy_from_slice(src);
    stamp(dst, counter);
}

#[inline]
pub fn stamp(unit: &mut [u8], counter: u64) {
    let n = unit.len().min(8);
    unit[..n].copy_from_slice(&counter.to_le_bytes()[..n]);
}

/// Reads every byte: a wrapping sum of little-endian words (vectorised by the compiler).
#[inline]
pub fn checksum(bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(8);
    let sum = words.by_ref().fold(0u64, |acc, w| {
        acc.wrapping_add(u64::from_le_bytes(w.try_into().expect("8-byte chunk")))
    });
    black_box(
        words
            .remainder()
            .iter()
            .fold(sum, |acc, &b| acc.wrapping_add(u64::from(b))),
    )
}

/// The first 8 bytes as a little-endian u64 (the stamp, or a timestamp).
#[inline]
pub fn first_word(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes[..8].try_into().expect("at least 8 bytes"))
}

/// CLOCK_MONOTONIC in nanoseconds: the same clock in every process, so a timestamp taken in one
/// process can be subtracted from one taken in another.
pub fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Median of the samples (sorted in place).
pub fn median(samples: &mut [f64]) -> f64 {
    quantile(samples, 0.5)
}

/// The `q`-quantile (nearest rank) of the samples (sorted in place).
pub fn quantile(samples: &mut [f64], q: f64) -> f64 {
    assert!(!samples.is_empty(), "no samples");
    samples.sort_by(f64::total_cmp);
    let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}

/// A child process, killed and reaped if the parent leaves early (a failed contender must not
/// leave a spinning process behind on a shared machine).
pub struct ChildGuard(Option<Child>);

impl ChildGuard {
    /// Starts this executable as `--child kind args...`, inheriting `fds`.
    pub fn spawn(kind: &str, args: &[String], fds: &[BorrowedFd<'_>]) -> ChildGuard {
        let exe = std::env::current_exe().expect("current exe");
        let mut command = Command::new(exe);
        command.arg("--child").arg(kind).args(args);
        if pinning() {
            command.env(CHILD_CPU_ENV, "1");
        }
        share_fds(&mut command, fds);
        ChildGuard(Some(command.spawn().expect("spawn child")))
    }

    /// Waits for the child; panics if it failed (its own message is on stderr).
    pub fn finish(mut self) {
        let status = self
            .0
            .take()
            .expect("not reaped")
            .wait()
            .expect("wait child");
        assert!(status.success(), "child failed: {status}");
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Lets the child inherit `fds` (they are CLOEXEC in the parent) and names them in the
/// environment, in order.
fn share_fds(command: &mut Command, fds: &[BorrowedFd<'_>]) {
    use std::os::unix::process::CommandExt;
    let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let list = raw
        .iter()
        .map(|fd| fd.to_string())
        .collect::<Vec<_>>()
        .join(",");
    command.env(FDS_ENV, list);
    // SAFETY: the closure only calls fcntl (async-signal-safe) on descriptors that stay open in
    // the parent until the child has been spawned.
    unsafe {
        command.pre_exec(move || {
            for &fd in &raw {
                let fd = BorrowedFd::borrow_raw(fd);
                rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
            }
            Ok(())
        });
    }
}

/// Child side of [`share_fds`]: takes ownership of the inherited descriptors.
pub fn inherited_fds() -> Vec<OwnedFd> {
    let list = std::env::var(FDS_ENV).expect("child started without its descriptors");
    list.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let fd: RawFd = s.parse().expect("fd number");
            // SAFETY: the parent passed this descriptor open to us and nothing else in this
            // process owns it; we take it exactly once.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let _ = rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC);
            fd
        })
        .collect()
}

/// A shared, writable mapping of `len` bytes on a fresh memfd (for the bare-atomic limit).
pub fn shared_memfd(len: usize) -> (OwnedFd, memmap2::MmapMut) {
    let fd = rustix::fs::memfd_create("shm-arena-peers", rustix::fs::MemfdFlags::CLOEXEC)
        .expect("memfd_create");
    rustix::fs::ftruncate(&fd, len as u64).expect("ftruncate");
    let map = map_fd(&fd);
    (fd, map)
}

pub fn map_fd(fd: &OwnedFd) -> memmap2::MmapMut {
    let file = std::fs::File::from(fd.try_clone().expect("dup"));
    // SAFETY: the memfd is shared only with our own child, which accesses it through atomics
    // (and the payload bytes under the protocol's acquire/release handshakes).
    unsafe { memmap2::MmapMut::map_mut(&file).expect("mmap memfd") }
}

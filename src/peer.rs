//! Liveness of the process playing the other role: pid plus start time, so a pid reused by an
//! unrelated process after the peer died is not mistaken for the peer.

use crate::error::Role;
use crate::layout::{PeerSlot, Shared};
use crate::sync::Ordering;
use crate::{Error, Result};

fn slot(shared: &Shared, role: Role) -> &PeerSlot {
    match role {
        Role::Writer => &shared.peers.0.writer,
        Role::Reader => &shared.peers.0.reader,
    }
}

/// This process: (pid, start time in clock ticks since boot; 0 where unknown).
pub(crate) fn me() -> (u32, u64) {
    let pid = std::process::id();
    #[cfg(any(miri, shm_arena_loom))]
    return (pid, 0);
    #[cfg(not(any(miri, shm_arena_loom)))]
    return (pid, stat(pid).map_or(0, |s| s.start_time));
}

/// Claims `role` for this process.
///
/// # Errors
/// [`Error::RoleTaken`] if any handle, live or dead, has claimed it before: an SPSC ring's
/// cursors belong to the handle that claimed the role, and a newcomer could not know them.
pub(crate) fn register(shared: &Shared, role: Role) -> Result<()> {
    let slot = slot(shared, role);
    let (pid, start) = me();
    // Relaxed is enough for the start time: it is only read after the pid (Acquire below).
    slot.start_time.store(0, Ordering::Relaxed);
    // AcqRel: the winning CAS publishes our claim; a loser's Acquire sees the holder's pid.
    match slot
        .pid
        .compare_exchange(0, u64::from(pid), Ordering::AcqRel, Ordering::Acquire)
    {
        Ok(_) => {
            // Release: pairs with the Acquire load in `check`.
            slot.start_time.store(start, Ordering::Release);
            Ok(())
        }
        Err(holder) => Err(Error::RoleTaken {
            role,
            pid: holder as u32,
        }),
    }
}

/// Whether the process registered for `role` (if any) still runs.
///
/// # Errors
/// [`Error::PeerGone`] if it exited, is a zombie, or its pid now names another process;
/// [`Error::Corrupt`] if the slot holds an impossible pid.
pub(crate) fn check(shared: &Shared, role: Role) -> Result<()> {
    let slot = slot(shared, role);
    // Acquire: pairs with the Release stores in `register`.
    let pid = slot.pid.load(Ordering::Acquire);
    let start = slot.start_time.load(Ordering::Acquire);
    if pid == 0 {
        return Ok(());
    }
    if pid > u64::from(u32::MAX) {
        return Err(Error::corrupt(
            format!("the {role} slot holds pid {pid}, which no process can have"),
            0,
        ));
    }
    if alive(pid as u32, start) {
        Ok(())
    } else {
        Err(Error::PeerGone {
            role,
            pid: pid as u32,
        })
    }
}

/// Whether the process `pid` that started at `start` (0: unknown) is alive.
#[cfg(not(any(miri, shm_arena_loom)))]
pub(crate) fn alive(pid: u32, start: u64) -> bool {
    match stat(pid) {
        None => false,
        Some(s) => !matches!(s.state, 'Z' | 'X' | 'x') && (start == 0 || s.start_time == start),
    }
}

/// Under Miri and loom there is no /proc: every peer counts as alive.
#[cfg(any(miri, shm_arena_loom))]
pub(crate) fn alive(_pid: u32, _start: u64) -> bool {
    true
}

/// The fields of /proc/PID/stat we need.
#[cfg(not(any(miri, shm_arena_loom)))]
pub(crate) struct Stat {
    pub state: char,
    pub start_time: u64,
}

/// Reads /proc/PID/stat; `None` if the process does not exist.
#[cfg(not(any(miri, shm_arena_loom)))]
pub(crate) fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses a stat line. The command name (field 2) may hold spaces and parentheses, so fields
/// are counted from the last ')'.
#[cfg(not(any(miri, shm_arena_loom)))]
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the state (field 3), start time is field 22: 18 fields further on.
    let start_time = fields.nth(18)?.parse().ok()?;
    Some(Stat { state, start_time })
}

#[cfg(all(test, not(any(miri, shm_arena_loom))))]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_spaces_and_parens() {
        let line = "42 (a b) c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 10";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.state, 'S');
        assert_eq!(s.start_time, 123456);
    }

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let (pid, start) = me();
        assert!(start > 0);
        assert!(alive(pid, start));
        assert!(!alive(pid, start + 1));
        assert!(!alive(u32::MAX - 1, 0));
    }
}

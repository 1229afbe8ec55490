//! Whether a process is alive: pid plus start time, so a pid reused by an unrelated process
//! after the participant died is not mistaken for it.

/// This process: (pid, start time in clock ticks since boot; 0 where unknown).
pub(crate) fn me() -> (u32, u64) {
    let pid = std::process::id();
    #[cfg(any(miri, shm_arena_loom))]
    return (pid, 0);
    #[cfg(not(any(miri, shm_arena_loom)))]
    return (pid, stat(pid).map_or(0, |s| s.start_time));
}

/// This process's pid (no /proc look-up).
pub(crate) fn me_pid() -> u32 {
    std::process::id()
}

/// Whether the process `pid` that started at `start` (0: unknown) is alive.
#[cfg(not(any(miri, shm_arena_loom)))]
pub(crate) fn alive(pid: u32, start: u64) -> bool {
    match stat(pid) {
        None => false,
        Some(s) => !matches!(s.state, 'Z' | 'X' | 'x') && (start == 0 || s.start_time == start),
    }
}

/// Under Miri there is no /proc: every process counts as alive.
#[cfg(all(miri, not(shm_arena_loom)))]
pub(crate) fn alive(_pid: u32, _start: u64) -> bool {
    true
}

/// Under loom there is no /proc and one process: every process counts as alive but the one a
/// model killed (see `presence::model_kill`).
#[cfg(shm_arena_loom)]
pub(crate) fn alive(pid: u32, _start: u64) -> bool {
    pid != MODEL_DEAD_PID
}

/// Under loom: the pid a killed participant's slot names.
#[cfg(shm_arena_loom)]
pub(crate) const MODEL_DEAD_PID: u32 = u32::MAX;

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

//! What /proc says about a process: the tests check zombies, parents and leftovers there.

/// The fields of /proc/PID/stat after the command name (field 3, the state, first), if the
/// process exists. The name (field 2) may hold spaces and parentheses: fields are counted
/// from the last ')'.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_ascii_whitespace().map(str::to_owned).collect())
}

/// The state letter of `pid` (`Z` for a zombie), if the process exists.
pub fn proc_state(pid: u32) -> Option<char> {
    stat_fields(pid)?.first()?.chars().next()
}

/// The parent of `pid`, if the process exists.
pub fn proc_ppid(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

//! Starting this test binary again as a child process that plays a role.

use std::process::{Command, Stdio};

use shm_arena::Region;

/// The command that runs only the ignored `child_main` test of this binary with `role` in
/// `role_env` (plus `env`), sharing `region`; stdout is piped for reports, stderr inherited.
pub fn command(
    role_env: &str,
    role: &str,
    region: &Region,
    env: &[(&str, String)],
    stdin: Stdio,
) -> Command {
    let exe = std::env::current_exe().expect("path of the test binary");
    let mut command = Command::new(exe);
    command
        .args([
            "--ignored",
            "--exact",
            "child_main",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(role_env, role)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (key, value) in env {
        command.env(key, value);
    }
    region.share_with_child(&mut command).unwrap();
    command
}

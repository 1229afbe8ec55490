//! Two unrelated processes on one named region: the creator hands the name over (here on the
//! command line; a file or a socket does as well), the other process opens it by name.
//!
//! ```sh
//! cargo run --release --example named
//! ```
//!
//! The creator makes a `Backing::Named` region (a random name, created exclusively, mode 0600),
//! starts a reader process with the name, waits for it to attach (`wait_for_peer`: the region
//! cannot know a stranger is coming), then removes the name (mappings stay valid, nothing is
//! left in /dev/shm even if either process is killed later) and writes units the reader
//! checks.

use std::process::Command;
use std::time::{Duration, Instant};

use shm_arena::{Backing, Error, Region, RegionOptions, Role};

const UNITS: u64 = 10_000;
const WAIT: Duration = Duration::from_secs(10);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, name] = args.as_slice() {
        if flag == "--reader" {
            return reader(name);
        }
    }
    let region = Region::create_with(RegionOptions::new(1 << 20).backing(Backing::Named))?;
    let name = region.name().expect("a named region has a name").to_owned();
    println!("creator: region {name} ({} bytes)", region.capacity());
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--reader", &name])
        .spawn()?;
    let mut writer = region.writer()?;
    region.wait_for_peer(Role::Reader, WAIT)?;
    let mut region = region;
    region.unlink()?;
    println!(
        "creator: reader attached, name removed (in /dev/shm: {})",
        std::path::Path::new("/dev/shm").join(&name[1..]).exists()
    );
    writer.set_timeout(Some(WAIT));
    let started = Instant::now();
    for i in 0..UNITS {
        let mut unit = writer.begin_unit()?;
        unit.push(&i.to_le_bytes())?;
        unit.blob_mut(4096)?.fill(i as u8);
        unit.commit()?;
    }
    drop(writer); // the reader drains, then sees the ring closed
    let status = child.wait()?;
    println!(
        "creator: {UNITS} units of 4 KiB in {:?}; reader exited with {status}",
        started.elapsed()
    );
    assert!(status.success());
    Ok(())
}

fn reader(name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let region = Region::open_name(name)?;
    let reader = region.reader()?;
    let mut next = 0u64;
    loop {
        match reader.next_unit(WAIT) {
            Ok(unit) => {
                let i = u64::from_le_bytes(unit.blob(0)?.try_into()?);
                assert_eq!(i, next, "units arrive in order");
                assert!(
                    unit.blob(1)?.iter().all(|&b| b == i as u8),
                    "unit {i} intact"
                );
                next += 1;
            }
            Err(Error::Closed(Role::Writer)) => break,
            Err(e) => return Err(e.into()),
        }
    }
    println!("reader: {next} units checked");
    assert_eq!(next, UNITS);
    Ok(())
}

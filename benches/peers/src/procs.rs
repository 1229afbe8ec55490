//! Cases 3, 4 and 7, and the two-process sweep for the plot: this executable re-started as a
//! child (`--child KIND ...`), connected to the parent through the contender's transport.
//!
//! Payload is written and read in every case: the writing side copies the bytes in (and stamps
//! a counter or a timestamp), the reading side checksums every byte it receives.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[cfg(feature = "iceoryx2")]
use iceoryx2::prelude::*;
use shm_arena::Region;

use crate::util::{
    checksum, fill, first_word, inherited_fds, now_ns, shared_memfd, source, ChildGuard, TIMEOUT,
};

/// Ping-pong and wake-up payloads.
const SMALL: usize = 64;

pub(crate) fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T {
    args.get(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("child argument {i} missing or malformed: {args:?}"))
}

#[cfg(feature = "iceoryx2")]
/// iceoryx2's subscriber buffer for units of `size`: the number of such units
/// [`region_for`]'s ring holds, at least 2.
fn iox_buffer(size: usize) -> usize {
    let ring = 2 * shm_arena::unit_size(&[size]);
    let ring = ring.next_power_of_two().max(64 << 10);
    ((ring / shm_arena::unit_size(&[size])) as usize).max(2)
}

/// A region able to hold two units of `size` (at least 64 KiB).
fn region_for(size: usize) -> Region {
    let need = 2 * shm_arena::unit_size(&[size]);
    Region::create(need.next_power_of_two().max(64 << 10)).expect("memfd region")
}

#[cfg(feature = "iceoryx2")]
/// iceoryx2 service names must be unique per run (a killed run may leave its files behind).
pub(crate) fn iox_name(what: &str) -> String {
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "shm-arena-peers/{what}/{}/{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(feature = "iceoryx2")]
pub(crate) fn iox_node() -> Node<ipc::Service> {
    NodeBuilder::new()
        .create::<ipc::Service>()
        .expect("iceoryx2 node")
}

#[cfg(feature = "iceoryx2")]
pub(crate) fn iox_service(
    node: &Node<ipc::Service>,
    name: &str,
    create: bool,
    subscribers: usize,
    buffer: usize,
) -> iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, [u8], ()> {
    let name: ServiceName = name.try_into().expect("service name");
    let builder = node
        .service_builder(&name)
        .publish_subscribe::<[u8]>()
        .max_publishers(1)
        .max_subscribers(subscribers)
        .history_size(0)
        .subscriber_max_buffer_size(buffer)
        // Back-pressure instead of dropping: every unit must arrive.
        .enable_safe_overflow(false);
    if create {
        builder.create().expect("create iceoryx2 service")
    } else {
        builder.open().expect("open iceoryx2 service")
    }
}

#[cfg(feature = "iceoryx2")]
fn iox_publisher(
    service: &iceoryx2::service::port_factory::publish_subscribe::PortFactory<
        ipc::Service,
        [u8],
        (),
    >,
    size: usize,
) -> iceoryx2::port::publisher::Publisher<ipc::Service, [u8], ()> {
    service
        .publisher_builder()
        .initial_max_slice_len(size)
        .max_loaned_samples(1)
        .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
        .create()
        .expect("iceoryx2 publisher")
}

#[cfg(feature = "iceoryx2")]
/// Busy-polls an iceoryx2 subscriber (how iceoryx2's own benchmarks receive).
pub(crate) fn iox_receive(
    subscriber: &iceoryx2::port::subscriber::Subscriber<ipc::Service, [u8], ()>,
) -> Option<iceoryx2::sample::Sample<ipc::Service, [u8], ()>> {
    let start = Instant::now();
    let deadline = start + TIMEOUT;
    let mut polls = 0u32;
    loop {
        if let Some(sample) = subscriber.receive().expect("iceoryx2 receive") {
            return Some(sample);
        }
        polls += 1;
        busy_wait_step(polls, start);
        if polls.is_multiple_of(1 << 16) && Instant::now() > deadline {
            return None;
        }
    }
}

/// How the spinning contenders (iceoryx2's subscriber, the bare atomic limit) wait: a pure
/// spin for the first [`PURE_SPIN`], then a yield every 1024 polls. The pure spin gives the
/// hardware's latency when the two processes have a CPU each; the yields keep a round trip
/// from costing a scheduler tick (milliseconds) when the scheduler has put both on one CPU,
/// which happens on this shared 2-CPU machine.
#[inline]
fn busy_wait_step(polls: u32, start: Instant) {
    if polls.is_multiple_of(1024) && start.elapsed() > PURE_SPIN {
        std::thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

const PURE_SPIN: Duration = Duration::from_micros(50);

// ---------------------------------------------------------------------------------------------
// Case 3: 64-byte ping-pong. Each function returns the round trips' one-way latencies (half a
// round trip) in nanoseconds, after `warmup` unmeasured round trips.

pub fn pingpong_arena(rounds: usize, mut warmup: usize, budget: Duration) -> Vec<f64> {
    let _pin = crate::util::pin_parent();
    let ping = Region::create(64 << 10).expect("ping region");
    let pong = Region::create(64 << 10).expect("pong region");
    let mut writer = ping.writer().expect("ping writer");
    writer.set_timeout(Some(TIMEOUT));
    let reader = pong.reader().expect("pong reader");
    let child = ChildGuard::spawn(
        "pingpong-arena",
        &[(rounds + warmup).to_string()],
        &[ping.fd().expect("memfd"), pong.fd().expect("memfd")],
    );
    let src = source(SMALL);
    let mut out = Vec::with_capacity(rounds);
    let started = Instant::now();
    for i in 0..rounds + warmup {
        let t0 = Instant::now();
        let mut unit = writer.begin_unit().expect("begin");
        fill(unit.blob_mut(SMALL).expect("blob"), &src, i as u64);
        unit.commit().expect("commit");
        let reply = reader.next_unit(TIMEOUT).expect("pong");
        std::hint::black_box(checksum(reply.blob(0).expect("blob")));
        drop(reply);
        if i >= warmup {
            out.push(t0.elapsed().as_nanos() as f64 / 2.0);
            // A loaded machine can make rounds very slow: stop at the time budget.
            if started.elapsed() > budget {
                break;
            }
        } else if started.elapsed() > budget / 4 {
            // Warm-up too is bounded in time: measure from here on.
            warmup = i + 1;
        }
    }
    drop(writer);
    child.finish();
    out
}

fn pingpong_arena_child(args: &[String]) {
    let rounds: usize = arg(args, 0);
    let mut fds = inherited_fds().into_iter();
    let ping = Region::open_fd(fds.next().expect("ping fd")).expect("open ping");
    let pong = Region::open_fd(fds.next().expect("pong fd")).expect("open pong");
    let reader = ping.reader().expect("ping reader");
    let mut writer = pong.writer().expect("pong writer");
    writer.set_timeout(Some(TIMEOUT));
    let src = source(SMALL);
    for i in 0..rounds {
        // The parent closes its writer when done (maybe before `rounds`).
        let unit = match reader.next_unit(TIMEOUT) {
            Ok(unit) => unit,
            Err(shm_arena::Error::Closed(_)) => break,
            Err(e) => panic!("ping: {e}"),
        };
        std::hint::black_box(checksum(unit.blob(0).expect("blob")));
        drop(unit);
        let mut reply = writer.begin_unit().expect("begin");
        fill(reply.blob_mut(SMALL).expect("blob"), &src, i as u64);
        reply.commit().expect("commit");
    }
}

#[cfg(feature = "iceoryx2")]
pub fn pingpong_iceoryx2(rounds: usize, mut warmup: usize, budget: Duration) -> Vec<f64> {
    let _pin = crate::util::pin_parent();
    let node = iox_node();
    let (ping_name, pong_name) = (iox_name("ping"), iox_name("pong"));
    let ping = iox_service(&node, &ping_name, true, 1, 2);
    let pong = iox_service(&node, &pong_name, true, 1, 2);
    let publisher = iox_publisher(&ping, SMALL);
    let subscriber = pong.subscriber_builder().create().expect("subscriber");
    let (done_rx, done_tx) = done_pipe();
    let child = ChildGuard::spawn(
        "pingpong-iceoryx2",
        &[(rounds + warmup).to_string(), ping_name, pong_name],
        &[done_rx.as_fd()],
    );
    drop(done_rx);
    // The child says it is subscribed before the first ping, which would otherwise be lost.
    iox_receive(&subscriber).expect("iceoryx2 child never became ready");
    let src = source(SMALL);
    let mut out = Vec::with_capacity(rounds);
    let started = Instant::now();
    for i in 0..rounds + warmup {
        let t0 = Instant::now();
        let mut sample = publisher
            .loan_slice_uninit(SMALL)
            .expect("loan")
            .write_from_slice(&src);
        crate::util::stamp(sample.payload_mut(), i as u64);
        sample.send().expect("send");
        let reply = iox_receive(&subscriber).expect("iceoryx2 pong timed out");
        std::hint::black_box(checksum(reply.payload()));
        drop(reply);
        if i >= warmup {
            out.push(t0.elapsed().as_nanos() as f64 / 2.0);
            // A loaded machine can make rounds very slow: stop at the time budget.
            if started.elapsed() > budget {
                break;
            }
        } else if started.elapsed() > budget / 4 {
            // Warm-up too is bounded in time: measure from here on.
            warmup = i + 1;
        }
    }
    // A 1-byte sample (pings are 64) tells the child to stop.
    publisher
        .loan_slice_uninit(1)
        .expect("loan")
        .write_from_slice(&src[..1])
        .send()
        .expect("stop");
    drop(done_tx);
    child.finish();
    out
}

#[cfg(feature = "iceoryx2")]
fn pingpong_iceoryx2_child(args: &[String]) {
    let rounds: usize = arg(args, 0);
    let done = inherited_fds().pop().expect("done fd");
    let node = iox_node();
    let ping = iox_service(&node, &args[1], false, 1, 2);
    let pong = iox_service(&node, &args[2], false, 1, 2);
    let subscriber = ping.subscriber_builder().create().expect("subscriber");
    let publisher = iox_publisher(&pong, SMALL);
    let src = source(SMALL);
    publisher
        .loan_slice_uninit(SMALL)
        .expect("loan")
        .write_from_slice(&src)
        .send()
        .expect("ready");
    for i in 0..rounds {
        let sample = iox_receive(&subscriber).expect("iceoryx2 ping timed out");
        if sample.payload().len() != SMALL {
            break;
        }
        std::hint::black_box(checksum(sample.payload()));
        drop(sample);
        let mut reply = publisher
            .loan_slice_uninit(SMALL)
            .expect("loan")
            .write_from_slice(&src);
        crate::util::stamp(reply.payload_mut(), i as u64);
        reply.send().expect("send");
    }
    // Keep the publisher (and its data segment) until the parent has read the last reply.
    wait_parent_done(done);
}

pub fn pingpong_uds(rounds: usize, mut warmup: usize, budget: Duration) -> Vec<f64> {
    let _pin = crate::util::pin_parent();
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let child = ChildGuard::spawn(
        "pingpong-uds",
        &[(rounds + warmup).to_string()],
        &[theirs.as_fd()],
    );
    drop(theirs);
    let mut ours = Some(ours);
    let src = source(SMALL);
    let (mut msg, mut reply) = ([0u8; SMALL], [0u8; SMALL]);
    let mut out = Vec::with_capacity(rounds);
    let started = Instant::now();
    for i in 0..rounds + warmup {
        let t0 = Instant::now();
        fill(&mut msg, &src, i as u64);
        let socket = ours.as_mut().expect("open");
        socket.write_all(&msg).expect("write");
        socket.read_exact(&mut reply).expect("read");
        std::hint::black_box(checksum(&reply));
        if i >= warmup {
            out.push(t0.elapsed().as_nanos() as f64 / 2.0);
            // A loaded machine can make rounds very slow: stop at the time budget.
            if started.elapsed() > budget {
                break;
            }
        } else if started.elapsed() > budget / 4 {
            // Warm-up too is bounded in time: measure from here on.
            warmup = i + 1;
        }
    }
    // End of file tells the child to stop.
    drop(ours.take());
    child.finish();
    out
}

fn pingpong_uds_child(args: &[String]) {
    let rounds: usize = arg(args, 0);
    let fd = inherited_fds().pop().expect("socket fd");
    let mut socket = UnixStream::from(fd);
    let src = source(SMALL);
    let (mut msg, mut reply) = ([0u8; SMALL], [0u8; SMALL]);
    for i in 0..rounds {
        if socket.read_exact(&mut msg).is_err() {
            break; // the parent closed its end
        }
        std::hint::black_box(checksum(&msg));
        fill(&mut reply, &src, i as u64);
        socket.write_all(&reply).expect("write");
    }
}

/// The bare-atomic limit: per direction one cache line with a sequence number and one with the
/// 64-byte payload, both sides spinning.
struct Mailboxes {
    base: *mut u8,
}

impl Mailboxes {
    const PING: usize = 0;
    const PONG: usize = 256;
    const STOP: u64 = u64::MAX;

    fn seq(&self, box_at: usize) -> &AtomicU64 {
        // SAFETY: the mapping is 4096 bytes, page-aligned, and `box_at` is 0 or 256, so the
        // word is in bounds and 8-aligned; it is only ever accessed atomically.
        unsafe { &*(self.base.add(box_at).cast::<AtomicU64>()) }
    }

    /// Writes the payload, then publishes `seq` (Release).
    fn send(&self, box_at: usize, payload: &[u8; SMALL], seq: u64) {
        // SAFETY: bytes `box_at + 64 .. box_at + 128` are in bounds; the peer reads them only
        // after seeing `seq` (Acquire), and we write them again only after its reply.
        unsafe {
            std::ptr::copy_nonoverlapping(payload.as_ptr(), self.base.add(box_at + 64), SMALL)
        };
        self.seq(box_at).store(seq, Ordering::Release);
    }

    /// Spins until `seq` is published, then copies the payload out (reading it). False if
    /// the peer published [`Mailboxes::STOP`] instead.
    fn receive(&self, box_at: usize, seq: u64, into: &mut [u8; SMALL]) -> bool {
        let start = Instant::now();
        let deadline = start + TIMEOUT;
        let mut polls = 0u32;
        loop {
            let seen = self.seq(box_at).load(Ordering::Acquire);
            if seen == seq {
                break;
            }
            if seen == Self::STOP {
                return false;
            }
            polls += 1;
            busy_wait_step(polls, start);
            if polls.is_multiple_of(1 << 16) {
                assert!(Instant::now() < deadline, "atomic ping-pong timed out");
            }
        }
        // SAFETY: as in `send`; the Acquire load above orders this read after the peer's write.
        unsafe {
            std::ptr::copy_nonoverlapping(self.base.add(box_at + 64), into.as_mut_ptr(), SMALL)
        };
        true
    }
}

pub fn pingpong_atomic(rounds: usize, mut warmup: usize, budget: Duration) -> Vec<f64> {
    let _pin = crate::util::pin_parent();
    let (fd, mut map) = shared_memfd(4096);
    let boxes = Mailboxes {
        base: map.as_mut_ptr(),
    };
    let child = ChildGuard::spawn(
        "pingpong-atomic",
        &[(rounds + warmup).to_string()],
        &[fd.as_fd()],
    );
    let src = source(SMALL);
    let (mut msg, mut reply) = ([0u8; SMALL], [0u8; SMALL]);
    let mut out = Vec::with_capacity(rounds);
    let started = Instant::now();
    for i in 0..rounds + warmup {
        let t0 = Instant::now();
        fill(&mut msg, &src, i as u64);
        boxes.send(Mailboxes::PING, &msg, i as u64 + 1);
        assert!(boxes.receive(Mailboxes::PONG, i as u64 + 1, &mut reply));
        std::hint::black_box(checksum(&reply));
        if i >= warmup {
            out.push(t0.elapsed().as_nanos() as f64 / 2.0);
            // A loaded machine can make rounds very slow: stop at the time budget.
            if started.elapsed() > budget {
                break;
            }
        } else if started.elapsed() > budget / 4 {
            // Warm-up too is bounded in time: measure from here on.
            warmup = i + 1;
        }
    }
    boxes
        .seq(Mailboxes::PING)
        .store(Mailboxes::STOP, Ordering::Release);
    child.finish();
    drop(map);
    out
}

fn pingpong_atomic_child(args: &[String]) {
    let rounds: usize = arg(args, 0);
    let fd = inherited_fds().pop().expect("memfd");
    let mut map = crate::util::map_fd(&fd);
    let boxes = Mailboxes {
        base: map.as_mut_ptr(),
    };
    let src = source(SMALL);
    let (mut msg, mut reply) = ([0u8; SMALL], [0u8; SMALL]);
    for i in 0..rounds {
        if !boxes.receive(Mailboxes::PING, i as u64 + 1, &mut msg) {
            break;
        }
        std::hint::black_box(checksum(&msg));
        fill(&mut reply, &src, i as u64);
        boxes.send(Mailboxes::PONG, &reply, i as u64 + 1);
    }
}

// ---------------------------------------------------------------------------------------------
// Case 4 and the sweep: the child writes `units` units of `size` bytes, the parent checksums
// them. The clock runs from the first unit's arrival to the last one's (so process start-up is
// not measured); returns GB/s over the units after the first.

fn gbps(size: usize, units: u64, elapsed: Duration) -> f64 {
    (units - 1) as f64 * size as f64 / elapsed.as_secs_f64().max(1e-9) / 1e9
}

pub fn stream_arena(size: usize, units: u64) -> f64 {
    let _pin = crate::util::pin_parent();
    let region = region_for(size);
    let reader = region.reader().expect("reader");
    let child = ChildGuard::spawn(
        "stream-arena",
        &[size.to_string(), units.to_string()],
        &[region.fd().expect("memfd")],
    );
    let mut start = None;
    let mut sum = 0u64;
    for _ in 0..units {
        let unit = reader.next_unit(TIMEOUT).expect("unit");
        sum = sum.wrapping_add(checksum(unit.blob(0).expect("blob")));
        start.get_or_insert_with(Instant::now);
    }
    let elapsed = start.expect("units > 0").elapsed();
    std::hint::black_box(sum);
    drop(reader);
    child.finish();
    gbps(size, units, elapsed)
}

fn stream_arena_child(args: &[String]) {
    let (size, units): (usize, u64) = (arg(args, 0), arg(args, 1));
    let region = Region::open_fd(inherited_fds().pop().expect("memfd")).expect("open region");
    let mut writer = region.writer().expect("writer");
    writer.set_timeout(Some(TIMEOUT));
    let src = source(size);
    for i in 0..units {
        let mut unit = writer.begin_unit().expect("begin");
        fill(unit.blob_mut(size).expect("blob"), &src, i);
        unit.commit().expect("commit");
    }
}

#[cfg(feature = "iceoryx2")]
pub fn stream_iceoryx2(size: usize, units: u64) -> f64 {
    let _pin = crate::util::pin_parent();
    let node = iox_node();
    let name = iox_name("stream");
    // As many samples in flight as shm-arena's ring holds units of this size (at least 2).
    let buffer = iox_buffer(size);
    let service = iox_service(&node, &name, true, 1, buffer);
    let subscriber = service
        .subscriber_builder()
        .buffer_size(buffer)
        .create()
        .expect("subscriber");
    let (control_rx, control_tx) = control_pipe();
    let child = ChildGuard::spawn(
        "stream-iceoryx2",
        &[
            size.to_string(),
            units.to_string(),
            name,
            buffer.to_string(),
        ],
        &[control_rx.as_fd()],
    );
    drop(control_rx);
    let mut control = std::fs::File::from(control_tx);
    // Handshake: a publisher that fills the subscriber's queue before the subscriber has
    // attached to the new connection has its further samples discarded (iceoryx2 treats the
    // receiver as not connected), so the child sends one sample, we receive it (which
    // attaches us), and only then tell it to go.
    iox_receive(&subscriber).expect("iceoryx2 child never became ready");
    control.write_all(b"g").expect("tell the child to go");
    let mut start = None;
    let mut sum = 0u64;
    for i in 0..units {
        let sample = iox_receive(&subscriber)
            .unwrap_or_else(|| panic!("iceoryx2 unit {i} of {units} timed out"));
        sum = sum.wrapping_add(checksum(sample.payload()));
        drop(sample);
        start.get_or_insert_with(Instant::now);
    }
    let elapsed = start.expect("units > 0").elapsed();
    std::hint::black_box(sum);
    // End of file on the control pipe: the child may drop its publisher now.
    drop(control);
    child.finish();
    gbps(size, units, elapsed)
}

#[cfg(feature = "iceoryx2")]
fn stream_iceoryx2_child(args: &[String]) {
    let (size, units): (usize, u64) = (arg(args, 0), arg(args, 1));
    let mut control = std::fs::File::from(inherited_fds().pop().expect("control fd"));
    let node = iox_node();
    let service = iox_service(&node, &args[2], false, 1, arg(args, 3));
    let publisher = iox_publisher(&service, size);
    let src = source(size);
    publisher
        .loan_slice_uninit(1)
        .expect("loan")
        .write_from_slice(&src[..1])
        .send()
        .expect("ready");
    let mut go = [0u8; 1];
    control.read_exact(&mut go).expect("wait for go");
    for i in 0..units {
        let mut sample = publisher
            .loan_slice_uninit(size)
            .expect("loan")
            .write_from_slice(&src);
        crate::util::stamp(sample.payload_mut(), i);
        sample.send().expect("send");
    }
    // Keep the publisher (its data segment holds the samples) until the parent has read them.
    wait_parent_done(control);
}

pub fn stream_pipe(size: usize, units: u64) -> f64 {
    let _pin = crate::util::pin_parent();
    let (read_end, write_end) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe");
    // The largest pipe buffer an unprivileged process may ask for by default (1 MiB), not the
    // 64 KiB default: the pipe's best case.
    let _ = rustix::pipe::fcntl_setpipe_size(&write_end, 1 << 20);
    let child = ChildGuard::spawn(
        "stream-pipe",
        &[size.to_string(), units.to_string()],
        &[write_end.as_fd()],
    );
    drop(write_end);
    let mut input = std::fs::File::from(read_end);
    let mut unit = vec![0u8; size];
    let mut start = None;
    let mut sum = 0u64;
    for _ in 0..units {
        input.read_exact(&mut unit).expect("read unit");
        sum = sum.wrapping_add(checksum(&unit));
        start.get_or_insert_with(Instant::now);
    }
    let elapsed = start.expect("units > 0").elapsed();
    std::hint::black_box(sum);
    child.finish();
    gbps(size, units, elapsed)
}

fn stream_pipe_child(args: &[String]) {
    let (size, units): (usize, u64) = (arg(args, 0), arg(args, 1));
    let mut out = std::fs::File::from(inherited_fds().pop().expect("pipe fd"));
    let src = source(size);
    let mut unit = vec![0u8; size];
    for i in 0..units {
        fill(&mut unit, &src, i);
        out.write_all(&unit).expect("write unit");
    }
}

// ---------------------------------------------------------------------------------------------
// Case 7: the parent blocks waiting; the child sleeps `gap` (long enough for any spin phase to
// end and the parent to be asleep in the kernel), stamps CLOCK_MONOTONIC into a 64-byte unit
// and sends it. Latency = the parent's clock after waking minus the stamp.

const WAKE_GAP: Duration = Duration::from_millis(2);

pub fn wake_arena(rounds: usize) -> Vec<f64> {
    let _pin = crate::util::pin_parent();
    let region = Region::create(64 << 10).expect("region");
    let reader = region.reader().expect("reader");
    let child = ChildGuard::spawn(
        "wake-arena",
        &[rounds.to_string()],
        &[region.fd().expect("memfd")],
    );
    let mut out = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let unit = reader.next_unit(TIMEOUT).expect("unit");
        let woke = now_ns();
        let payload = unit.blob(0).expect("blob");
        out.push(woke.saturating_sub(first_word(payload)) as f64);
        std::hint::black_box(checksum(payload));
    }
    drop(reader);
    child.finish();
    out
}

fn wake_arena_child(args: &[String]) {
    let rounds: usize = arg(args, 0);
    let region = Region::open_fd(inherited_fds().pop().expect("memfd")).expect("open region");
    let mut writer = region.writer().expect("writer");
    writer.set_timeout(Some(TIMEOUT));
    let src = source(SMALL);
    for _ in 0..rounds {
        std::thread::sleep(WAKE_GAP);
        let mut unit = writer.begin_unit().expect("begin");
        let blob = unit.blob_mut(SMALL).expect("blob");
        blob.copy_from_slice(&src);
        // The stamp is taken last, just before the commit that wakes the reader.
        crate::util::stamp(blob, now_ns());
        unit.commit().expect("commit");
    }
}

pub fn wake_pipe(rounds: usize) -> Vec<f64> {
    let _pin = crate::util::pin_parent();
    let (read_end, write_end) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe");
    let child = ChildGuard::spawn("wake-pipe", &[rounds.to_string()], &[write_end.as_fd()]);
    drop(write_end);
    let mut input = std::fs::File::from(read_end);
    let mut msg = [0u8; SMALL];
    let mut out = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        input.read_exact(&mut msg).expect("read");
        let woke = now_ns();
        out.push(woke.saturating_sub(first_word(&msg)) as f64);
        std::hint::black_box(checksum(&msg));
    }
    child.finish();
    out
}

fn wake_pipe_child(args: &[String]) {
    let rounds: usize = arg(args, 0);
    let mut out = std::fs::File::from(inherited_fds().pop().expect("pipe fd"));
    let src = source(SMALL);
    let mut msg = [0u8; SMALL];
    for _ in 0..rounds {
        std::thread::sleep(WAKE_GAP);
        msg.copy_from_slice(&src);
        crate::util::stamp(&mut msg, now_ns());
        out.write_all(&msg).expect("write");
    }
}

/// The futex limit for case 7: one futex word, the 64-byte message in the next line, and
/// nothing else. The child writes the message (timestamp first), bumps the word (Release) and
/// calls FUTEX_WAKE every time (no check whether anyone sleeps); the parent sleeps in
/// FUTEX_WAIT until the word changes. Any futex-based wake-up pays at least this; what
/// shm-arena adds on top is its protocol (the armed bit and its fences, the unit's record).
struct WakeBox {
    map: memmap2::MmapMut,
}

impl WakeBox {
    fn word(&self) -> &std::sync::atomic::AtomicU32 {
        // SAFETY: the mapping is 4096 bytes and page-aligned, so its first 4 bytes are an
        // aligned u32 in bounds; both processes only ever access them atomically.
        unsafe { &*self.map.as_ptr().cast::<std::sync::atomic::AtomicU32>() }
    }

    fn message(&mut self) -> &mut [u8] {
        &mut self.map[64..64 + SMALL]
    }
}

pub fn wake_futex(rounds: usize) -> Vec<f64> {
    let _pin = crate::util::pin_parent();
    let (fd, map) = shared_memfd(4096);
    let mut wake_box = WakeBox { map };
    let child = ChildGuard::spawn("wake-futex", &[rounds.to_string()], &[fd.as_fd()]);
    let mut out = Vec::with_capacity(rounds);
    let mut seen = 0u32;
    for _ in 0..rounds {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            // Acquire: pairs with the child's Release bump; its message is visible.
            let now = wake_box.word().load(Ordering::Acquire);
            if now != seen {
                seen = now;
                break;
            }
            assert!(Instant::now() < deadline, "bare futex wake-up timed out");
            let timeout = rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: 100_000_000,
            };
            // EAGAIN (the word changed), ETIMEDOUT, EINTR: all mean "look again".
            let _ = rustix::thread::futex::wait(
                wake_box.word(),
                rustix::thread::futex::Flags::empty(),
                seen,
                Some(&timeout),
            );
        }
        let woke = now_ns();
        let msg = wake_box.message();
        out.push(woke.saturating_sub(first_word(msg)) as f64);
        std::hint::black_box(checksum(msg));
    }
    child.finish();
    out
}

fn wake_futex_child(args: &[String]) {
    let rounds: usize = arg(args, 0);
    let map = crate::util::map_fd(&inherited_fds().pop().expect("memfd"));
    let mut wake_box = WakeBox { map };
    let src = source(SMALL);
    for _ in 0..rounds {
        std::thread::sleep(WAKE_GAP);
        let msg = wake_box.message();
        msg.copy_from_slice(&src);
        crate::util::stamp(msg, now_ns());
        // Release: pairs with the parent's Acquire load; the message is written before.
        wake_box.word().fetch_add(1, Ordering::Release);
        let _ = rustix::thread::futex::wake(
            wake_box.word(),
            rustix::thread::futex::Flags::empty(),
            u32::MAX,
        );
    }
}

/// Entry point of `--child KIND ARGS...`.
pub fn child_main(kind: &str, args: &[String]) {
    crate::util::pin_child();
    match kind {
        "pingpong-arena" => pingpong_arena_child(args),
        #[cfg(feature = "iceoryx2")]
        "pingpong-iceoryx2" => pingpong_iceoryx2_child(args),
        "pingpong-uds" => pingpong_uds_child(args),
        "pingpong-atomic" => pingpong_atomic_child(args),
        "stream-arena" => stream_arena_child(args),
        #[cfg(feature = "iceoryx2")]
        "stream-iceoryx2" => stream_iceoryx2_child(args),
        "stream-pipe" => stream_pipe_child(args),
        "wake-arena" => wake_arena_child(args),
        "wake-pipe" => wake_pipe_child(args),
        "wake-futex" => wake_futex_child(args),
        other => assert!(
            crate::fanout::child_main(other, args),
            "unknown child kind {other:?}"
        ),
    }
}

#[cfg(feature = "iceoryx2")]
/// A pipe whose read end a child inherits; the parent drops the write end when it has taken
/// everything, which the child sees as end of file.
fn done_pipe() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe")
}

#[cfg(feature = "iceoryx2")]
fn wait_parent_done(fd: impl Into<std::fs::File>) {
    let mut rest = Vec::new();
    let _ = fd.into().read_to_end(&mut rest);
}

#[cfg(feature = "iceoryx2")]
/// [`done_pipe`] that also carries a "go" byte from the parent.
fn control_pipe() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    done_pipe()
}

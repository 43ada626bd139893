//! No system call on a polling hot path: two processes pinned to two CPUs
//! make 1,000,000 busy-polling round trips over a pair of links under
//! `strace -f`, and the test counts every system call each messaging
//! thread made between its two marker calls (after setup and a warm-up).
//! The count must be zero on both sides. Skipped, with the reason, when
//! strace is missing or the machine has one CPU.

mod common {
    // Helpers and parameters this binary does not use.
    #[allow(dead_code)]
    pub mod child;
    #[allow(dead_code)]
    pub mod drive;
    #[allow(dead_code)]
    pub mod peer;
}

use common::child::Ctx;
use common::peer::Peer;
use hwlink::{LinkBuilder, RecvError, WaitStrategy};
use std::time::Duration;

const WARM: u64 = 20_000;
const ROUND_TRIPS: u64 = 1_000_000;
/// `getpriority(PRIO_PROCESS, MARK_*)`: a call nothing else makes, so that
/// the trace shows where each measured window starts and ends.
const MARK_START: u32 = 31_249;
const MARK_END: u32 = 31_250;

#[test]
fn peer_entry() {
    common::child::peer_entry_with(roles);
}

fn roles(role: &str, ctx: &Ctx) -> bool {
    match role {
        "pinger" => pinger(ctx),
        "echo" => echo(ctx),
        _ => return false,
    }
    true
}

fn mark(which: u32) {
    // SAFETY: getpriority takes plain integers and touches no memory.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, which) };
}

fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and
    // sched_setaffinity only read and write that local set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set),
            0,
            "pin to CPU {cpu}"
        );
    }
}

/// Creates the links on CPU 0, starts the echo process (traced too),
/// warms up, then makes the measured round trips between two marks.
fn pinger(ctx: &Ctx) {
    pin(0);
    let name = ctx.name();
    let mut tx = LinkBuilder::new(format!("{name}-ping"))
        .wait(WaitStrategy::BusyPoll)
        .create_sender()
        .expect("create ping");
    let mut rx = LinkBuilder::new(format!("{name}-pong"))
        .wait(WaitStrategy::BusyPoll)
        .create_receiver()
        .expect("create pong");
    let mut peer = Peer::spawn("echo", &[("NAME", name.clone())]);
    let mut buf = [0u8; 8];
    let mut trip = |seq: u64| {
        tx.send(seq.to_le_bytes()).expect("send");
        let n = rx.recv_into(&mut buf).expect("recv");
        assert_eq!(n, 8);
        assert_eq!(u64::from_le_bytes(buf), seq, "echo of {seq}");
    };
    for seq in 0..WARM {
        trip(seq);
    }
    mark(MARK_START);
    for seq in WARM..WARM + ROUND_TRIPS {
        trip(seq);
    }
    mark(MARK_END);
    drop(tx);
    peer.wait_success(Duration::from_secs(60));
    ctx.report("DONE");
}

/// Echoes every message on CPU 1; marks its window by the messages'
/// numbers, so both windows cover the same round trips.
fn echo(ctx: &Ctx) {
    pin(1);
    let name = ctx.name();
    let mut rx = LinkBuilder::new(format!("{name}-ping"))
        .wait(WaitStrategy::BusyPoll)
        .open_receiver()
        .expect("open ping");
    let mut tx = LinkBuilder::new(format!("{name}-pong"))
        .wait(WaitStrategy::BusyPoll)
        .open_sender()
        .expect("open pong");
    let mut buf = [0u8; 8];
    loop {
        match rx.recv_into(&mut buf) {
            Ok(_) => {
                let seq = u64::from_le_bytes(buf);
                if seq == WARM {
                    mark(MARK_START);
                }
                tx.send(buf).expect("echo");
                if seq == WARM + ROUND_TRIPS - 1 {
                    mark(MARK_END);
                }
            }
            Err(RecvError::Disconnected) => return,
            Err(e) => panic!("echo: {e}"),
        }
    }
}

/// Per thread that marked a window: the system calls between its marks.
fn calls_in_windows(trace: &str) -> Vec<(String, Vec<String>)> {
    // Without the closing parenthesis: strace may split the line
    // (`<unfinished ...>`) when another thread's call comes between.
    let start = format!("getpriority(PRIO_PROCESS, {MARK_START}");
    let end = format!("getpriority(PRIO_PROCESS, {MARK_END}");
    let mut open: Vec<(String, Vec<String>)> = Vec::new();
    let mut done = Vec::new();
    for line in trace.lines() {
        let Some((tid, call)) = line.split_once(' ') else {
            continue;
        };
        let call = call.trim_start();
        if call.starts_with(&start) {
            open.push((tid.to_string(), Vec::new()));
        } else if let Some(i) = open.iter().position(|(t, _)| t == tid) {
            if call.starts_with("<... getpriority resumed>") {
                // The end of the start mark itself, split by strace.
            } else if call.starts_with(&end) {
                done.push(open.swap_remove(i));
            } else {
                open[i].1.push(call.to_string());
            }
        }
    }
    assert!(open.is_empty(), "a window never ended: {open:?}");
    done
}

#[test]
fn a_million_polling_round_trips_make_no_system_call() {
    if hwlink_drivers::qemu::skip_under_qemu(
        "syscalls::a_million_polling_round_trips_make_no_system_call",
        "no robust futexes under qemu-user, so a polling end looks for its peer's death by \
         its file lock, one F_OFD_GETLK a millisecond (hw/SPEC.md §8.8); and strace sees \
         qemu's own system calls",
    ) {
        return;
    }
    let strace = std::process::Command::new("strace").arg("-V").output();
    if !strace.is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED: strace is not installed (apt-get install strace)");
        return;
    }
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("SKIPPED: needs two CPUs (the peers are pinned apart)");
        return;
    }
    let trace = std::env::temp_dir().join(format!("hwlink-syscalls-{}.trace", std::process::id()));
    let file = trace.to_str().unwrap().to_string();
    let name = format!("t-{}-sys", std::process::id());
    // strace runs at a real-time priority, its tracees at the normal one:
    // each mark stops its caller until strace has logged it, and with both
    // CPUs busy polling, an ordinary strace would wait for a time slice
    // (milliseconds, during which the other side waits long enough to make
    // the slow checks of a long wait). Root only; else ordinary.
    // SAFETY: geteuid has no preconditions.
    let rt = unsafe { libc::geteuid() } == 0;
    let mut wrapper = vec![];
    if rt {
        wrapper.extend(["chrt", "-f", "10"]);
    }
    wrapper.extend(["strace", "-f", "-qq", "-o", &file]);
    if rt {
        wrapper.extend(["chrt", "-o", "0"]);
    }
    let mut p = Peer::spawn_wrapped(&wrapper, "pinger", &[("NAME", name)]);
    p.expect("DONE", Duration::from_secs(120));
    p.wait_success(Duration::from_secs(60));
    let text = std::fs::read_to_string(&trace).unwrap();
    let windows = calls_in_windows(&text);
    if windows.iter().all(|(_, c)| c.is_empty()) {
        let _ = std::fs::remove_file(&trace);
    } else {
        eprintln!("the whole trace is kept in {file}");
    }
    eprintln!(
        "{} trace lines in all; {} windows of {ROUND_TRIPS} round trips; system calls in each: {:?}",
        text.lines().count(),
        windows.len(),
        windows.iter().map(|(_, c)| c.len()).collect::<Vec<_>>()
    );
    assert_eq!(windows.len(), 2, "both sides mark their window");
    for (tid, calls) in &windows {
        assert!(
            calls.is_empty(),
            "thread {tid} made {} system calls while polling, first: {:?}",
            calls.len(),
            &calls[..calls.len().min(10)]
        );
    }
}

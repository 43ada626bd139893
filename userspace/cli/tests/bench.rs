//! `hwlink bench` with real processes: the CLI's JSON report, and a tiny verified round trip and stream through every transport family.

mod run_hwlink;

use hwlink::Backend;
use hwlink_benches::bench::{self, BenchError, Mechanism, Options};
use std::process::Command;
use std::time::Duration;

/// The peer is the `hwlink` binary's hidden `bench-peer` subcommand.
fn launcher(args: &[String]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hwlink"));
    cmd.arg("bench-peer").arg("--").args(args);
    cmd
}

fn opts() -> Options {
    let two = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    Options {
        backend: Backend::Auto,
        cpus: Some(if two { (0, 1) } else { (0, 0) }),
    }
}

/// A few round trips and a short stream of `size`-byte messages; the
/// stream's peer verifies every message.
fn exercise(m: Mechanism, size: usize) {
    let o = opts();
    let rt = bench::round_trip(m, size, &o, 5, Duration::from_millis(20), 200, &launcher)
        .unwrap_or_else(|e| panic!("{m} round trip of {size} B: {e}"));
    assert!(!rt.samples.is_empty() && rt.samples.len() <= 200, "{m}");
    assert_eq!(rt.cpu.measurer_msgs, rt.samples.len() as u64);
    assert!(
        (1..=5).contains(&rt.warmup),
        "{m}: {} warm-up round trips",
        rt.warmup
    );
    assert_eq!(
        rt.cpu.peer_msgs,
        rt.warmup + rt.samples.len() as u64,
        "{m}: the peer echoed every message"
    );
    let st = bench::stream(m, size, &o, Duration::from_millis(30), &launcher)
        .unwrap_or_else(|e| panic!("{m} stream of {size} B: {e}"));
    assert!(st.messages > 0, "{m}");
    assert_eq!(st.bytes, st.messages * size as u64);
}

/// Like `exercise`, but a refusal with a reason is fine (io_uring may be
/// disabled, SQPOLL refused).
fn exercise_if_supported(m: Mechanism, size: usize) {
    let o = opts();
    match bench::round_trip(m, size, &o, 5, Duration::from_millis(20), 200, &launcher) {
        Err(BenchError::Unsupported(reason)) => {
            assert!(!reason.is_empty());
            eprintln!("{m} skipped here: {reason}");
        }
        Err(e) => panic!("{m}: {e}"),
        Ok(_) => exercise(m, size),
    }
}

#[test]
fn hwlink_links_carry_and_verify() {
    for m in [
        Mechanism::HwlinkPoll,
        Mechanism::HwlinkSpinPark,
        Mechanism::HwlinkPark,
    ] {
        exercise(m, 64);
    }
    exercise(Mechanism::HwlinkPoll, 1 << 20);
}

/// A select over four links on the echo side, busy-polling and parked:
/// round trips only (streams refused with the reason).
#[test]
fn select_over_links_round_trips() {
    let o = opts();
    for m in [Mechanism::HwlinkSelectPoll, Mechanism::HwlinkSelectPark] {
        for size in [8, 4096] {
            let rt = bench::round_trip(m, size, &o, 5, Duration::from_millis(20), 200, &launcher)
                .unwrap_or_else(|e| panic!("{m} round trip of {size} B: {e}"));
            assert!(!rt.samples.is_empty(), "{m}");
            assert_eq!(rt.cpu.peer_msgs, rt.warmup + rt.samples.len() as u64, "{m}");
        }
        match bench::stream(m, 64, &o, Duration::from_millis(10), &launcher) {
            Err(BenchError::Unsupported(r)) => assert!(r.contains("round trips only"), "{r}"),
            other => panic!("{m} stream: expected a skip, got {other:?}"),
        }
    }
}

/// hwlink ends waited on through their descriptor: in epoll on the echo
/// side, and as tokio async ends on both sides (skipped with the reason
/// where the kernel gives no descriptor).
#[test]
fn hwlink_descriptor_rows_carry_and_verify() {
    for m in [Mechanism::HwlinkEpoll, Mechanism::HwlinkAsync] {
        exercise_if_supported(m, 8);
        exercise_if_supported(m, 64 << 10);
    }
}

/// Zero copy: streams written and checked in place, every message verified
/// by the peer; round trips are refused with a reason.
#[test]
fn zero_copy_streams_verify_in_place() {
    let o = opts();
    for size in [8, 64, 4096, 1 << 20] {
        let st = bench::stream(
            Mechanism::HwlinkZeroCopy,
            size,
            &o,
            Duration::from_millis(30),
            &launcher,
        )
        .unwrap_or_else(|e| panic!("zero-copy stream of {size} B: {e}"));
        assert!(st.messages > 0);
        assert_eq!(st.bytes, st.messages * size as u64);
    }
    match bench::round_trip(
        Mechanism::HwlinkZeroCopy,
        8,
        &o,
        5,
        Duration::from_millis(20),
        200,
        &launcher,
    ) {
        Err(BenchError::Unsupported(r)) => assert!(r.contains("streams only"), "{r}"),
        other => panic!("zero-copy round trip: expected a skip, got {other:?}"),
    }
}

/// Typed: a 64-byte struct through send_value / recv_value, round trips
/// and a stream the peer verifies; other sizes are refused with the reason.
#[test]
fn typed_rows_carry_a_64_byte_struct_only() {
    exercise(Mechanism::HwlinkTyped, 64);
    match bench::round_trip(
        Mechanism::HwlinkTyped,
        8,
        &opts(),
        5,
        Duration::from_millis(20),
        200,
        &launcher,
    ) {
        Err(BenchError::Unsupported(r)) => assert!(r.contains("--sizes 64"), "{r}"),
        other => panic!("typed round trip of 8 B: expected a skip, got {other:?}"),
    }
}

#[test]
fn floor_round_trips_and_refuses_streams() {
    let o = opts();
    if o.cpus.is_some_and(|(a, b)| a != b) {
        let rt = bench::round_trip(
            Mechanism::Floor,
            8,
            &o,
            5,
            Duration::from_millis(10),
            100,
            &launcher,
        )
        .expect("floor round trip");
        assert!(!rt.samples.is_empty());
    }
    match bench::stream(
        Mechanism::Floor,
        8,
        &o,
        Duration::from_millis(10),
        &launcher,
    ) {
        Err(BenchError::Unsupported(r)) => assert!(r.contains("round trip only"), "{r}"),
        other => panic!("expected the floor to refuse streaming, got {other:?}"),
    }
}

/// The reference ring carries and verifies round trips and streams of
/// small and large messages (on two CPUs; on one it refuses, like the
/// floor).
#[test]
fn ring_lamport_carries_and_verifies() {
    if opts().cpus.is_some_and(|(a, b)| a != b) {
        exercise(Mechanism::RingLamport, 8);
        exercise(Mechanism::RingLamport, 64 << 10);
    }
}

#[test]
fn descriptors_carry_and_verify() {
    for m in [
        Mechanism::Pipe,
        Mechanism::UnixStream,
        Mechanism::UnixDgram,
        Mechanism::UnixSeqpacket,
        Mechanism::Tcp,
    ] {
        exercise(m, 1024);
    }
    exercise(Mechanism::Pipe, 1 << 20);
    exercise(Mechanism::UnixStream, 8);
}

#[test]
fn eventfd_carries_and_verifies() {
    exercise(Mechanism::Eventfd, 8);
    exercise(Mechanism::Eventfd, 64 << 10);
}

/// The kernel's readiness path: non-blocking descriptors waited on in
/// epoll, and tokio's runtime; large messages make the non-blocking
/// writes come up short and wait for room.
#[test]
fn readiness_baselines_carry_and_verify() {
    for m in [
        Mechanism::EventfdEpoll,
        Mechanism::UnixEpoll,
        Mechanism::TokioUnix,
    ] {
        exercise(m, 8);
    }
    exercise(Mechanism::EventfdEpoll, 64 << 10);
    exercise(Mechanism::UnixEpoll, 1 << 20);
    exercise(Mechanism::TokioUnix, 1 << 20);
}

#[test]
fn message_queues_carry_and_verify() {
    exercise(Mechanism::PosixMq, 64);
    exercise(Mechanism::SysvMq, 64);
    // Far above any queue's hard limit: skipped with a reason.
    for m in [Mechanism::PosixMq, Mechanism::SysvMq] {
        match bench::stream(m, 64 << 20, &opts(), Duration::from_millis(10), &launcher) {
            Err(BenchError::Unsupported(r)) => assert!(r.contains("raise"), "{r}"),
            other => panic!("expected {m} to refuse 64 MiB messages, got {other:?}"),
        }
    }
}

#[test]
fn io_uring_carries_and_verifies() {
    for m in [
        Mechanism::UringPipe,
        Mechanism::UringUnix,
        Mechanism::UringUnixSqpoll,
    ] {
        exercise_if_supported(m, 4096);
    }
}

/// (Mechanisms without end-of-file, such as message queues, or an hwlink
/// link the peer never attached to, are ended by the watchdog instead,
/// which exits the process: not testable in-process.)
/// Four processes in a chain: every message goes round 0 → 1 → 2 → 3 → 0
/// and is checked at each stage and, at the sink, for order and content;
/// any loss, duplicate or reordering is an error.
#[test]
fn pipeline_carries_every_message_in_order() {
    let o = opts();
    for m in Mechanism::ALL {
        let r = bench::pipeline(
            m,
            8,
            &o,
            3,
            Duration::from_millis(10),
            50,
            Duration::from_millis(10),
            &launcher,
        );
        let p = match (m, r) {
            (Mechanism::Floor, Err(BenchError::Unsupported(r))) => {
                assert!(r.contains("round trip only"), "{r}");
                continue;
            }
            (Mechanism::Floor, other) => panic!("floor pipeline: expected a skip, got {other:?}"),
            (Mechanism::RingLamport, Err(BenchError::Unsupported(r))) => {
                assert!(r.contains("round trips and streams only"), "{r}");
                continue;
            }
            (Mechanism::HwlinkZeroCopy, Err(BenchError::Unsupported(r))) => {
                assert!(r.contains("hwlink-spin-park"), "{r}");
                continue;
            }
            (
                Mechanism::HwlinkTopic | Mechanism::HwlinkTopicPark,
                Err(BenchError::Unsupported(r)),
            ) => {
                assert!(r.contains("fan-out only"), "{m}: {r}");
                continue;
            }
            (Mechanism::HwlinkTyped, Err(BenchError::Unsupported(r))) => {
                assert!(r.contains("hwlink-poll"), "{r}");
                continue;
            }
            // Rows that compare ways of waiting have no pipeline.
            (
                Mechanism::EventfdEpoll
                | Mechanism::UnixEpoll
                | Mechanism::TokioUnix
                | Mechanism::HwlinkSelectPoll
                | Mechanism::HwlinkSelectPark
                | Mechanism::HwlinkEpoll
                | Mechanism::HwlinkAsync,
                Err(BenchError::Unsupported(r)),
            ) => {
                assert!(r.contains("ways of waiting"), "{m}: {r}");
                continue;
            }
            // A kernel may refuse io_uring (or SQPOLL); the reason says so.
            (
                Mechanism::UringPipe | Mechanism::UringUnix | Mechanism::UringUnixSqpoll,
                Err(BenchError::Unsupported(r)),
            ) => {
                assert!(r.contains("io_uring") || r.contains("SQPOLL"), "{m}: {r}");
                continue;
            }
            (_, r) => r.unwrap_or_else(|e| panic!("{m} pipeline: {e}")),
        };
        assert!(!p.samples.is_empty() && p.samples.len() <= 50, "{m}");
        assert!(
            p.messages > 0,
            "{m}: some messages streamed round the chain"
        );
        assert!(p.window >= 1, "{m}");
    }
    // Every hop (regions, mailboxes, queues) is gone with its pipeline.
    assert_eq!(leftovers(), Vec::<String>::new());
}

/// Shared-memory files this test process's sessions left behind, in
/// /dev/shm and every hugetlbfs mount.
fn leftovers() -> Vec<String> {
    let tag = format!("hb{}-", std::process::id());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut dirs = vec!["/dev/shm".to_string()];
    dirs.extend(
        mounts
            .lines()
            .filter(|l| l.split_whitespace().nth(2) == Some("hugetlbfs"))
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string)),
    );
    let mut found = Vec::new();
    for d in dirs {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.contains(&tag) {
                found.push(format!("{d}/{name}"));
            }
        }
    }
    found
}

/// One publisher and one or four subscriber processes through every
/// fan-out transport: timed messages one at a time, then a short stream;
/// every subscriber checks every message (order and content) and received
/// exactly what was sent.
#[test]
fn fanout_delivers_every_message_to_every_subscriber() {
    let o = opts();
    for m in Mechanism::ALL.into_iter().filter(|m| m.fans_out()) {
        for (size, n) in [(8, 1), (8, 4), (4096, 2)] {
            let f = bench::fanout(
                m,
                size,
                n,
                &o,
                3,
                Duration::from_millis(10),
                50,
                Duration::from_millis(10),
                &launcher,
            )
            .unwrap_or_else(|e| panic!("{m} fan-out of {size} B to {n}: {e}"));
            assert!(!f.latency.is_empty() && f.latency.len() <= 50, "{m}");
            assert_eq!(f.answered.len(), f.latency.len(), "{m}");
            assert!(f.messages > 0, "{m}: some messages streamed");
            assert_eq!(
                f.delivered,
                vec![f.sent; n],
                "{m}: every subscriber got every message"
            );
        }
    }
    // A mechanism with no fan-out, and a topic outside the fan-out: skipped
    // with the reason.
    match bench::fanout(
        Mechanism::Tcp,
        8,
        1,
        &o,
        3,
        Duration::from_millis(10),
        10,
        Duration::from_millis(10),
        &launcher,
    ) {
        Err(BenchError::Unsupported(r)) => assert!(r.contains("hwlink-topic"), "{r}"),
        other => panic!("tcp fan-out: expected a skip, got {other:?}"),
    }
    match bench::round_trip(
        Mechanism::HwlinkTopic,
        8,
        &o,
        5,
        Duration::from_millis(10),
        10,
        &launcher,
    ) {
        Err(BenchError::Unsupported(r)) => assert!(r.contains("fan-out only"), "{r}"),
        other => panic!("topic round trip: expected a skip, got {other:?}"),
    }
    // Every topic, link and socket is gone with its fan-out.
    assert_eq!(leftovers(), Vec::<String>::new());
}

/// `--workloads fanout` alone: the fan-out table with a row per mechanism
/// and subscriber count, the ratio to the pipes, and the JSON figures.
#[test]
fn cli_fanout_prints_rows_and_json() {
    let path = temp_json("fanout");
    let p = path.to_str().expect("utf-8 temp path");
    let (out, _) = run_hwlink::hwlink(
        &[
            "bench",
            "--quick",
            "--workloads",
            "fanout",
            "--mechanisms",
            "hwlink-topic,hwlink-poll,pipe",
            "--subscribers",
            "1,2",
            "--json",
            p,
        ],
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "hwlink bench failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Fan-out, publisher on CPU"), "{stdout}");
    assert!(!stdout.contains("Round trip"), "only the fan-out: {stdout}");
    for m in ["hwlink-topic", "hwlink-poll", "pipe"] {
        for n in [1, 2] {
            let row = format!("8B {n:>4} {m} ");
            assert!(stdout.contains(&row), "no row `{row}` in {stdout}");
        }
    }
    assert!(
        stdout.contains("msgs/s = "),
        "ratios to the pipes: {stdout}"
    );
    assert!(
        stdout.contains("hwlink-poll×1"),
        "ratios to one link: {stdout}"
    );
    let json = std::fs::read_to_string(&path).expect("the JSON file");
    let _ = std::fs::remove_file(&path);
    assert!(json.contains("\"fanout_subscribers\":[1,2]"), "{json}");
    let line = mechanism_line(&json, "hwlink-topic");
    for figure in [
        "\"subscribers\":2,",
        "\"to_last_subscriber_ns\":{\"p50\":",
        "\"answered_ns\":{",
        "\"msgs_per_s_to_pipe\":",
        "\"fanout_note\":",
    ] {
        assert!(line.contains(figure), "hwlink-topic lacks {figure}: {line}");
    }
    assert!(!json.contains("\"failed\""), "{json}");
}

#[test]
fn a_peer_that_dies_is_an_error_not_a_hang() {
    let dead = |_: &[String]| Command::new("true");
    for m in [Mechanism::Pipe, Mechanism::UnixStream, Mechanism::Tcp] {
        let r = bench::round_trip(m, 64, &opts(), 5, Duration::from_millis(10), 10, &dead);
        assert!(r.is_err(), "{m}: a peer that never answered gave {r:?}");
    }
}

#[test]
fn mailbox_round_trips_and_streams() {
    exercise(Mechanism::HwlinkMailbox, 64);
    exercise(Mechanism::HwlinkMailbox, 4096);
    // Mailboxes outlive their creator unless removed: the bench removes
    // its own.
    let left: Vec<_> = hwlink::admin::list()
        .unwrap()
        .into_iter()
        .filter(|r| r.name.starts_with("mbx.") && r.name.contains(&std::process::id().to_string()))
        .map(|r| r.name)
        .collect();
    assert!(left.is_empty(), "mailboxes left behind: {left:?}");
}

/// The JSON line of mechanism `name` (the report writes one per line).
fn mechanism_line<'a>(json: &'a str, name: &str) -> &'a str {
    let key = format!("{{\"name\":\"{name}\",");
    json.lines()
        .find(|l| l.starts_with(&key))
        .unwrap_or_else(|| panic!("no entry for {name} in\n{json}"))
}

fn temp_json(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("hwlink-bench-{}-{tag}.json", std::process::id()))
}

#[test]
fn cli_quick_writes_every_mechanism() {
    let path = temp_json("quick");
    let p = path.to_str().expect("utf-8 temp path");
    let plots = std::env::temp_dir().join(format!("hwlink-bench-{}-plots", std::process::id()));
    let plots_arg = plots.to_str().expect("utf-8 temp path");
    let (out, _) = run_hwlink::hwlink(
        &[
            "bench",
            "--quick",
            "--mechanisms",
            "hwlink-poll,pipe,unix-stream",
            "--sizes",
            "8,4096",
            "--json",
            p,
            "--plots",
            plots_arg,
        ],
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "hwlink bench failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Round trip"), "{stdout}");
    assert!(stdout.contains("pipe p50 = "), "ratios to hwlink: {stdout}");
    let json = std::fs::read_to_string(&path).expect("the JSON file");
    let _ = std::fs::remove_file(&path);
    let (a, b) = opts().cpus.expect("pinned");
    for svg in [
        format!("rtt-cdf-8B-cpus{a}-{b}.svg"),
        format!("stream-throughput-cpus{a}-{b}.svg"),
    ] {
        let text = std::fs::read_to_string(plots.join(&svg))
            .unwrap_or_else(|e| panic!("plot {svg}: {e}\nstdout:\n{stdout}"));
        assert!(text.starts_with("<svg") && text.contains("pipe"), "{svg}");
    }
    let _ = std::fs::remove_dir_all(&plots);
    assert!(json.contains("\"machine\":{\"cpu_model\":"), "{json}");
    assert!(json.contains("\"kernel\":"), "{json}");
    assert!(!json.contains("\"failed\""), "{json}");
    assert!(
        mechanism_line(&json, "pipe").contains("\"ratio_to\":{\"mechanism\":\"hwlink-poll\""),
        "{json}"
    );
    for name in ["hwlink-poll", "pipe", "unix-stream"] {
        let line = mechanism_line(&json, name);
        assert!(line.contains("\"run\":true"), "{line}");
        for size in ["\"size\":8,", "\"size\":4096,"] {
            assert!(line.contains(size), "{line}");
        }
        for figure in [
            "\"rtt_ns\":{\"p50\":",
            "\"p999\":",
            "\"msgs_per_s\":",
            "\"gb_per_s\":",
            "\"cpu_ns_per_round_trip\":{\"measurer\":",
            "\"cpu_ns_per_msg\":{\"sender\":",
        ] {
            assert!(line.contains(figure), "{name} lacks {figure}: {line}");
        }
        assert!(!line.contains("\"skipped\""), "{line}");
    }
    // Every other mechanism is listed, with the reason it did not run.
    for m in Mechanism::ALL {
        let line = mechanism_line(&json, m.name());
        if !["hwlink-poll", "pipe", "unix-stream"].contains(&m.name()) {
            assert!(line.contains("\"run\":false,\"reason\":\""), "{line}");
        }
    }
}

#[test]
fn cli_reports_sizes_a_mechanism_cannot_carry() {
    let path = temp_json("skip");
    let p = path.to_str().expect("utf-8 temp path");
    let (out, _) = run_hwlink::hwlink(
        &[
            "bench",
            "--quick",
            "--mechanisms",
            "posix-mq,unix-dgram",
            "--sizes",
            "32M",
            "--cpus",
            "0,0",
            "--json",
            p,
        ],
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("skipped: "), "{stdout}");
    let json = std::fs::read_to_string(&path).expect("the JSON file");
    let _ = std::fs::remove_file(&path);
    for name in ["posix-mq", "unix-dgram"] {
        let line = mechanism_line(&json, name);
        assert!(line.contains("\"size\":33554432"), "{line}");
        assert!(
            line.contains("\"status\":\"skipped\",\"reason\":\""),
            "{name} should be skipped with a reason: {line}"
        );
        assert!(!line.contains("\"status\":\"ok\""), "{line}");
    }
}

/// `hwlink bench-unbounded`: every send timed into an unbounded mailbox
/// with no receiver. 300,000 messages of 64 bytes fill segments of 256,
/// 512, ... slots: ten segments are linked, each made ahead or inside the
/// send (all inside with `--inline`), the percentiles are printed, and the
/// mailbox is gone afterwards.
#[test]
fn cli_bench_unbounded_times_every_send_and_removes_its_mailbox() {
    for inline in [false, true] {
        let mut args = vec![
            "bench-unbounded",
            "--messages",
            "300000",
            "--size",
            "64",
            "--backend",
            "shm",
        ];
        if inline {
            args.push("--inline");
        }
        let (out, pid) = run_hwlink::hwlink(&args, Duration::from_secs(120));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "hwlink bench-unbounded failed\nstdout:\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("300000 sends of 64 B"), "{stdout}");
        for figure in ["p50 ", "p99 ", "p99.9 ", "p99.99 ", "max "] {
            assert!(stdout.contains(figure), "no {figure}in {stdout}");
        }
        assert!(stdout.contains("sends over 1 ms: "), "{stdout}");
        let line = stdout
            .lines()
            .find(|l| l.starts_with("segments linked by the sends: "))
            .unwrap_or_else(|| panic!("no segment line in {stdout}"));
        let numbers: Vec<u64> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|w| w.parse().ok())
            .collect();
        let (linked, ahead, made_inline) = (numbers[0], numbers[1], numbers[2]);
        assert_eq!(ahead + made_inline, linked, "{line}");
        if inline {
            assert_eq!(linked, 10, "{line}");
            assert_eq!((ahead, made_inline), (0, 10), "{line}");
            assert!(line.ends_with("offers made 0, thrown away 0"), "{line}");
        } else {
            // Ten, unless a send gave up waiting for a starved preparation
            // and made its segment itself: then the offer made later
            // cannot follow, and a smaller one is made after it.
            assert!(linked >= 10, "{line}");
        }
        let each = stdout
            .lines()
            .find(|l| l.starts_with("each segment "))
            .unwrap_or_else(|| panic!("no per-segment line in {stdout}"));
        // One `n:how` entry per segment linked.
        let entries = each
            .split_whitespace()
            .filter(|w| {
                w.split_once(':')
                    .is_some_and(|(n, _)| n.parse::<u64>().is_ok())
            })
            .count();
        assert_eq!(entries as u64, linked, "{each}");
        assert!(stdout.contains("mailbox removed"), "{stdout}");
        let name = format!("mbx.bu{pid}");
        let left: Vec<String> = hwlink::admin::list()
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .filter(|n| n == &name || n.starts_with(&format!("{name}.")))
            .collect();
        assert_eq!(left, Vec::<String>::new(), "files left behind");
    }
}

//! The bridge between two network hosts on one machine: two network
//! namespaces joined by a veth pair, made by each test (root only; skipped
//! with the reason otherwise). A producer process on host A and a consumer
//! process on host B (`hwlink-bridge check-send` / `check-recv`, which
//! number and fill every message and verify every byte) exchange messages
//! through a local object on each side and a bridge on each host over
//! zenoh TCP across the veth.

use hwlink_bridge::netns::{sh, Hosts, IP_A};
use hwlink_drivers::bridges::BridgeDirection;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_hwlink-bridge");
const PORT: u16 = 7447;

/// A process in a namespace, its stdout lines read by a thread.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    fn spawn(ns: &str, args: &[&str]) -> Proc {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, EXE])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hwlink-bridge");
        let (tx, lines) = mpsc::channel();
        let out: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
        for r in [out, err] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines().map_while(Result::ok) {
                    eprintln!("    | {line}");
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Proc {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line starting with `prefix`; returns it.
    fn expect(&mut self, prefix: &str, timeout: Duration) -> String {
        let until = Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.starts_with(prefix) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "no `{prefix}` line within {timeout:?}; lines so far: {:?}",
                    self.seen
                ),
            }
        }
    }

    fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let until = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < until,
                "process still running after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops a bridge cleanly (SIGTERM); returns its last counters line.
    fn term(&mut self) -> String {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on our own child's pid, which we have not reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let line = self.expect("hwlink-bridge: at exit", Duration::from_secs(20));
        assert!(
            self.wait(Duration::from_secs(10)).success(),
            "{:?}",
            self.seen
        );
        line
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The bridges of a test: A exports `obj_a` to the key, B imports the key
/// into `obj_b`.
fn bridge_a(h: &Hosts, obj_a: &str, key: &str, extra: &[&str]) -> Proc {
    let listen = format!("tcp/{IP_A}:{PORT}");
    let export = format!("{obj_a}={key}");
    let mut args = vec![
        "--listen",
        &listen,
        "--export",
        &export,
        "--lease-ms",
        "1000",
    ];
    args.extend_from_slice(extra);
    Proc::spawn(&h.a, &args)
}

fn bridge_b(h: &Hosts, obj_b: &str, key: &str, extra: &[&str]) -> Proc {
    let connect = format!("tcp/{IP_A}:{PORT}");
    let import = format!("{key}={obj_b}");
    let mut args = vec![
        "--connect",
        &connect,
        "--import",
        &import,
        "--lease-ms",
        "1000",
    ];
    args.extend_from_slice(extra);
    Proc::spawn(&h.b, &args)
}

/// Removes the test's objects when dropped, also when the test fails
/// (mailboxes persist until removed).
struct Objects(Vec<String>);

impl Drop for Objects {
    fn drop(&mut self) {
        remove(&self.0.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

fn remove(objs: &[&str]) {
    for o in objs {
        let (kind, name) = o.split_once(':').unwrap();
        let region = match kind {
            "mailbox" => format!("{}{name}", hwlink::MAILBOX_PREFIX),
            "topic" => format!("{}{name}", hwlink::TOPIC_PREFIX),
            _ => name.to_string(),
        };
        let _ = hwlink::admin::remove(&region);
    }
}

/// The number just before `word` in a counters line.
fn number_before(line: &str, word: &str) -> u64 {
    let at = line
        .find(word)
        .unwrap_or_else(|| panic!("no `{word}` in {line}"));
    let w = line[..at].split_whitespace().last().unwrap();
    w.trim_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap()
}

/// The number just after `word` in a counters line.
fn number_after(line: &str, word: &str) -> u64 {
    let at = line
        .find(word)
        .unwrap_or_else(|| panic!("no `{word}` in {line}"))
        + word.len();
    let w = line[at..].split_whitespace().next().unwrap();
    w.trim_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap()
}

fn parse_tally(line: &str) -> (u64, u64, u64, u64) {
    // "received R next N lost L duplicated D in S s"
    let w: Vec<&str> = line.split_whitespace().collect();
    let n = |i: usize| w[i].parse::<u64>().unwrap();
    (n(1), n(3), n(5), n(7))
}

/// `count` checked messages A -> B through `obj` on each side: every one
/// delivered exactly once and in order.
fn exactly_once(tag: &str, kind: &str, count: u64) {
    let Some(h) = Hosts::new(tag) else { return };
    let id = format!("{}{tag}", std::process::id());
    let (obj_a, obj_b) = (format!("{kind}:ba{id}"), format!("{kind}:bb{id}"));
    let _objects = Objects(vec![obj_a.clone(), obj_b.clone()]);
    let key = format!("hwlink-test/{id}");
    let n = count.to_string();
    let mut consumer = Proc::spawn(&h.b, &["check-recv", &obj_b, "--count", &n]);
    consumer.expect("ready", Duration::from_secs(20));
    let mut b = bridge_b(&h, &obj_b, &key, &[]);
    let mut a = bridge_a(&h, &obj_a, &key, &[]);
    a.expect("hwlink-bridge: ready", Duration::from_secs(20));
    b.expect("hwlink-bridge: ready", Duration::from_secs(20));
    // `hwlink ls` shows each bridged object and its bridge process.
    let listed = hwlink_drivers::bridges::list_bridges();
    for (p, obj, dir) in [
        (&a, &obj_a, BridgeDirection::Export),
        (&b, &obj_b, BridgeDirection::Import),
    ] {
        let name = obj.split_once(':').unwrap().1;
        let r = listed
            .iter()
            .find(|r| r.pid == p.pid())
            .unwrap_or_else(|| panic!("bridge pid {} not listed: {listed:?}", p.pid()));
        assert!(r.alive);
        assert!(
            r.entries
                .iter()
                .any(|e| e.direction == dir && e.name.ends_with(name) && e.key == key),
            "{r:?}"
        );
    }
    let mut producer = Proc::spawn(&h.a, &["check-send", &obj_a, "--count", &n, "--size", "64"]);
    let sent = producer.expect("sent", Duration::from_secs(240));
    let got = consumer.expect("received", Duration::from_secs(60));
    eprintln!("{kind}: producer `{sent}`, consumer `{got}`");
    assert!(consumer.wait(Duration::from_secs(10)).success(), "{got}");
    assert_eq!(parse_tally(&got), (count, count, 0, 0));
    // A clean exit leaves no registry file.
    for p in [&mut a, &mut b] {
        let pid = p.pid();
        p.term();
        let left = hwlink_drivers::bridges::list_bridges();
        assert!(left.iter().all(|r| r.pid != pid), "{left:?}");
    }
}

#[test]
fn mailbox_a_million_messages_exactly_once_in_order() {
    exactly_once("m", "mailbox", 1_000_000);
}

#[test]
fn link_a_million_messages_exactly_once_in_order() {
    exactly_once("l", "link", 1_000_000);
}

#[test]
fn topic_messages_exactly_once_in_order() {
    exactly_once("t", "topic", 200_000);
}

/// Kills (SIGKILL) and restarts the exporting bridge, then the importing
/// one, in the middle of a 1,000,000-message stream, and counts what the
/// consumer lost or got twice.
#[test]
fn bridges_killed_and_restarted_mid_stream() {
    let Some(h) = Hosts::new("k") else { return };
    let id = format!("{}k", std::process::id());
    let (obj_a, obj_b) = (format!("mailbox:ba{id}"), format!("mailbox:bb{id}"));
    let _objects = Objects(vec![obj_a.clone(), obj_b.clone()]);
    let key = format!("hwlink-test/{id}");
    let count = 1_000_000u64;
    let n = count.to_string();
    let mut consumer = Proc::spawn(
        &h.b,
        &[
            "check-recv",
            &obj_b,
            "--count",
            &n,
            "--progress",
            "50000",
            "--idle-ms",
            "20000",
        ],
    );
    consumer.expect("ready", Duration::from_secs(20));
    let mut b = bridge_b(&h, &obj_b, &key, &[]);
    let mut a = bridge_a(&h, &obj_a, &key, &[]);
    let mut producer = Proc::spawn(&h.a, &["check-send", &obj_a, "--count", &n, "--size", "64"]);
    consumer.expect("progress 200000", Duration::from_secs(120));
    a.kill();
    eprintln!("exporting bridge killed");
    std::thread::sleep(Duration::from_millis(200));
    a = bridge_a(&h, &obj_a, &key, &[]);
    consumer.expect("progress 500000", Duration::from_secs(120));
    b.kill();
    eprintln!("importing bridge killed");
    std::thread::sleep(Duration::from_millis(200));
    b = bridge_b(&h, &obj_b, &key, &[]);
    let sent = producer.expect("sent", Duration::from_secs(240));
    let got = consumer.expect("received", Duration::from_secs(120));
    let (received, next, lost, dups) = parse_tally(&got);
    eprintln!(
        "kill and restart: producer `{sent}`; consumer `{got}`: \
         {lost} lost (exporting bridge killed), {dups} duplicated (importing bridge killed)"
    );
    // Every message after the restarts arrived; what was lost is at most
    // what the killed exporter had taken and not had acknowledged, what
    // came twice at most what the killed importer had delivered and the
    // exporter had not yet seen acknowledged: each within the window
    // (8192 messages; acknowledgements go every 1024).
    assert_eq!(next, count, "{got}");
    assert!(lost <= 8192, "{got}");
    assert!(dups <= 8192, "{got}");
    assert_eq!(received, count - lost + dups, "{got}");
    a.term();
    b.term();
    // The killed bridges' registry files are what `hwlink rm --stale`
    // removes.
    hwlink_drivers::bridges::remove_dead_bridges();
}

fn rss_kib(pid: u32) -> u64 {
    // `ip netns exec` execs the bridge in place: the pid is the bridge's.
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// A consumer on B that stops reading makes the producer on A block
/// within a bounded number of messages in flight, and the bridges' memory
/// stays bounded meanwhile.
#[test]
fn stalled_consumer_blocks_the_producer() {
    let Some(h) = Hosts::new("p") else { return };
    let id = format!("{}p", std::process::id());
    let (obj_a, obj_b) = (format!("mailbox:ba{id}"), format!("mailbox:bb{id}"));
    let _objects = Objects(vec![obj_a.clone(), obj_b.clone()]);
    let key = format!("hwlink-test/{id}");
    let mut consumer = Proc::spawn(
        &h.b,
        &[
            "check-recv",
            &obj_b,
            "--count",
            "100000000",
            "--stall-after",
            "1000",
            "--stall-ms",
            "60000",
        ],
    );
    consumer.expect("ready", Duration::from_secs(20));
    let b = bridge_b(&h, &obj_b, &key, &[]);
    let a = bridge_a(&h, &obj_a, &key, &[]);
    let mut producer = Proc::spawn(
        &h.a,
        &[
            "check-send",
            &obj_a,
            "--count",
            "100000000",
            "--size",
            "64",
            "--timeout-ms",
            "3000",
        ],
    );
    consumer.expect("stalling after 1000", Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    let rss_early = (rss_kib(a.pid()), rss_kib(b.pid()));
    let line = producer.expect("blocked after", Duration::from_secs(60));
    let rss_late = (rss_kib(a.pid()), rss_kib(b.pid()));
    let sent: u64 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
    // In flight at most: what the consumer read, both mailboxes' slots
    // (1024 each), the export window (8192 messages) and one batch.
    let bound = 1000 + 1024 + 1024 + 8192 + 16 * 1024 / 20;
    eprintln!(
        "back-pressure: the producer blocked after {sent} messages (bound {bound}); \
         bridge RSS A {} -> {} KiB, B {} -> {} KiB",
        rss_early.0, rss_late.0, rss_early.1, rss_late.1
    );
    assert!(sent <= bound, "{sent} messages in flight, bound {bound}");
    let (mut a, mut b) = (a, b);
    assert!(producer.wait(Duration::from_secs(10)).code() == Some(3));
    for (early, late) in [(rss_early.0, rss_late.0), (rss_early.1, rss_late.1)] {
        assert!(
            early > 0 && late < early + 16 * 1024,
            "RSS {early} -> {late} KiB"
        );
    }
    drop(consumer);
    a.term();
    b.term();
}

/// The network between the hosts goes down for 3 s in the middle of a
/// 1,000,000-message stream and zenoh's TCP connections are destroyed: zenoh
/// closes the session and drops what it had queued; it comes back, zenoh
/// reconnects, the importer sees the gap and the exporter sends again from
/// it: nothing lost, nothing twice.
#[test]
fn network_down_and_up_mid_stream_loses_nothing() {
    let Some(h) = Hosts::new("n") else { return };
    let id = format!("{}n", std::process::id());
    let (obj_a, obj_b) = (format!("mailbox:ba{id}"), format!("mailbox:bb{id}"));
    let _objects = Objects(vec![obj_a.clone(), obj_b.clone()]);
    let key = format!("hwlink-test/{id}");
    let conf = std::env::temp_dir().join(format!("hwlink-bridge-test-{id}.json5"));
    std::fs::write(
        &conf,
        "{ transport: { link: { tx: { lease: 1000, keep_alive: 4 } } } }\n",
    )
    .unwrap();
    let conf_s = conf.to_str().unwrap().to_string();
    let count = 1_000_000u64;
    let n = count.to_string();
    let mut consumer = Proc::spawn(
        &h.b,
        &[
            "check-recv",
            &obj_b,
            "--count",
            &n,
            "--progress",
            "50000",
            "--idle-ms",
            "30000",
        ],
    );
    consumer.expect("ready", Duration::from_secs(20));
    let b = bridge_b(&h, &obj_b, &key, &["--config", &conf_s]);
    let a = bridge_a(&h, &obj_a, &key, &["--config", &conf_s]);
    let mut producer = Proc::spawn(&h.a, &["check-send", &obj_a, "--count", &n, "--size", "64"]);
    consumer.expect("progress 300000", Duration::from_secs(120));
    let dev = h.dev_a.clone();
    let conns = || {
        let o = Command::new("ip")
            .args(["netns", "exec", &h.a, "ss", "-tnH", "state", "established"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let before = conns();
    // Down, and zenoh's TCP connections destroyed (as a reset would), so
    // that zenoh drops what it had queued on them and must reconnect.
    assert!(sh(&["ip", "-n", &h.a, "link", "set", &dev, "down"]));
    assert!(sh(&[
        "ip",
        "netns",
        "exec",
        &h.a,
        "ss",
        "-K",
        "-tnH",
        "state",
        "established"
    ]));
    std::thread::sleep(Duration::from_secs(3));
    let during = conns();
    assert!(sh(&["ip", "-n", &h.a, "link", "set", &dev, "up"]));
    eprintln!("network down for 3 s, then up");
    let after = (0..100)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            conns()
        })
        .find(|c| !c.trim().is_empty())
        .unwrap_or_default();
    eprintln!("zenoh's TCP connection before the cut: {before}during: {during}after: {after}");
    // zenoh lost its connections and made new ones.
    assert!(!before.trim().is_empty() && during.trim().is_empty() && !after.trim().is_empty());
    let ports = |c: &str| {
        c.lines()
            .map(|l| l.split_whitespace().nth(3).unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    assert!(
        ports(&after).iter().all(|p| !ports(&before).contains(p)),
        "the session was not re-established: before {before}, after {after}"
    );
    let sent = producer.expect("sent", Duration::from_secs(240));
    let got = consumer.expect("received", Duration::from_secs(120));
    eprintln!("network cut: producer `{sent}`, consumer `{got}`");
    assert_eq!(parse_tally(&got), (count, count, 0, 0));
    let (mut a, mut b) = (a, b);
    let (sa, sb) = (a.term(), b.term());
    eprintln!("network cut: exporting bridge `{sa}`; importing bridge `{sb}`");
    // What zenoh dropped with the old session, if anything was in it, was
    // asked for again (a gap) and sent again.
    let resent = number_before(&sa, "resent)");
    let gaps = number_after(&sb, "gaps re-asked");
    eprintln!("network cut: {resent} frames resent, {gaps} gaps re-asked");
    let _ = std::fs::remove_file(&conf);
}

//! The `hwlink` command line: pingpong with JSON output, ls, rm.

#[path = "../../tests/common/mod.rs"]
mod common;
mod run_hwlink;

use common::*;
use run_hwlink::hwlink;
use std::time::{Duration, Instant};

#[test]
fn peer_entry() {
    common::peer_entry();
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The value of `"key":` in a flat JSON object text: a string or a number.
fn json_value<'a>(obj: &'a str, key: &str) -> &'a str {
    let pat = format!("\"{key}\":");
    let at = obj
        .find(&pat)
        .unwrap_or_else(|| panic!("no key {key} in {obj}"))
        + pat.len();
    let rest = &obj[at..];
    if let Some(s) = rest.strip_prefix('"') {
        &s[..s.find('"').expect("closing quote")]
    } else if rest.starts_with('{') {
        &rest[..=rest.find('}').expect("closing brace")]
    } else {
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        rest[..end].trim()
    }
}

fn json_u64(obj: &str, key: &str) -> u64 {
    json_value(obj, key)
        .parse()
        .unwrap_or_else(|e| panic!("{key} in {obj}: {e}"))
}

/// Runs `hwlink pingpong` with `extra` args and checks its JSON line.
fn pingpong(count: u64, extra: &[&str], wait: &str) {
    let count_arg = count.to_string();
    let mut args = vec!["pingpong", "--count", &count_arg, "--wait", wait, "--json"];
    args.extend_from_slice(extra);
    let t0 = Instant::now();
    let (out, pid) = hwlink(&args, Duration::from_secs(120));
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "hwlink {args:?} failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        text(&out.stderr)
    );
    eprintln!("hwlink {}: {:?}\n{stdout}", args.join(" "), t0.elapsed());
    let last = stdout.lines().last().expect("no output").trim();
    assert!(
        last.starts_with('{') && last.ends_with('}'),
        "last line is not a JSON object: {last}"
    );
    let backend = json_value(last, "backend");
    assert!(["hugepage", "shm"].contains(&backend), "backend {backend}");
    assert_eq!(json_value(last, "wait"), wait);
    assert_eq!(json_u64(last, "size"), 8);
    assert_eq!(json_u64(last, "count"), count);
    let rtt = json_value(last, "rtt_ns");
    let [p50, p90, p99, p999, max, mean] =
        ["p50", "p90", "p99", "p999", "max", "mean"].map(|k| json_u64(rtt, k));
    assert!(p50 > 0, "{rtt}");
    assert!(
        p50 <= p90 && p90 <= p99 && p99 <= p999 && p999 <= max,
        "{rtt}"
    );
    assert!(mean <= max, "{rtt}");
    // Its probe and link regions are gone.
    let left: Vec<_> = hwlink::admin::list()
        .unwrap()
        .into_iter()
        .filter(|r| r.name == format!("probe{pid}") || r.name.starts_with(&format!("pp{pid}-")))
        .map(|r| r.name)
        .collect();
    assert!(left.is_empty(), "pingpong left regions behind: {left:?}");
}

#[test]
fn cli_pingpong_json() {
    pingpong(2000, &[], "poll");
}

/// `--baseline` measures a pipe and the cache-line floor in the same run and
/// reports both in the JSON line, each a well-formed set of percentiles.
#[test]
fn cli_pingpong_baseline_reports_pipe_and_floor() {
    let (out, _) = hwlink(
        &[
            "pingpong",
            "--count",
            "300",
            "--wait",
            "poll",
            "--baseline",
            "--json",
        ],
        Duration::from_secs(120),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("hwlink p50 / floor p50 = "), "{stdout}");
    assert!(stdout.contains("pipe p50 / hwlink p50 = "), "{stdout}");
    let last = stdout.lines().last().expect("no output").trim();
    for key in ["rtt_ns", "pipe_rtt_ns", "floor_rtt_ns"] {
        let stats = json_value(last, key);
        let [p50, max] = ["p50", "max"].map(|k| json_u64(stats, k));
        assert!(p50 > 0 && p50 <= max, "{key}: {stats}");
    }
}

/// Both ends busy-poll on CPU 0: each end must notice the shared core and
/// yield between polls, or every round trip waits for the scheduler to
/// preempt the spinning end (milliseconds each).
#[test]
fn cli_pingpong_one_shared_cpu_poll() {
    pingpong(2000, &["--cpus", "0,0"], "poll");
}

/// Both ends on CPU 0 with spin-then-park, which yields, then sleeps.
#[test]
fn cli_pingpong_one_shared_cpu_spin_park() {
    pingpong(2000, &["--cpus", "0,0"], "spin-park");
}

/// The lines of `hwlink ls` about region `name`: its own line and the
/// indented lines after it.
fn ls_entry(name: &str) -> Option<Vec<String>> {
    let (out, _) = hwlink(&["ls"], Duration::from_secs(30));
    assert!(out.status.success(), "hwlink ls: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.split_whitespace().next() == Some(name))?;
    let entry = std::iter::once(lines[at])
        .chain(
            lines[at + 1..]
                .iter()
                .copied()
                .take_while(|l| l.starts_with("    ")),
        )
        .map(str::to_string)
        .collect();
    Some(entry)
}

/// `hwlink ls` shows a live creator's region with its pid and the ring's
/// occupancy; after the creator is SIGKILLed it shows it stale, `hwlink
/// rm --stale` removes it, and `ls` no longer lists it.
#[test]
fn cli_ls_and_rm_stale() {
    let name = unique("ls");
    let _cleanup = Cleanup(name.clone());
    let mut peer = Peer::spawn(
        "create_and_wait",
        &[
            ("NAME", name.clone()),
            ("END", "sender".to_string()),
            ("COUNT", "3".to_string()),
        ],
    );
    peer.expect("READY", PEER_WAIT);
    let pid = peer.pid();
    let entry = ls_entry(&name).expect("hwlink ls does not list the region");
    let cols: Vec<&str> = entry[0].split_whitespace().collect();
    // NAME BACKING BYTES CREATOR ALIVE STALE
    assert_eq!(cols.len(), 6, "{entry:?}");
    assert_eq!(cols[3], pid.to_string(), "creator pid: {entry:?}");
    assert_eq!(
        (cols[4], cols[5]),
        ("yes", "no"),
        "alive, not stale: {entry:?}"
    );
    let ring = entry
        .iter()
        .find(|l| l.trim_start().starts_with("ring"))
        .unwrap_or_else(|| panic!("no ring line: {entry:?}"));
    assert!(ring.contains("3/256 messages queued"), "{ring}");
    assert!(
        ring.contains(&format!("sender attached pid {pid};")),
        "{ring}"
    );
    assert!(ring.contains("receiver free"), "{ring}");

    peer.kill();
    let entry = ls_entry(&name).expect("the dead creator's region is still listed");
    let cols: Vec<&str> = entry[0].split_whitespace().collect();
    assert_eq!(
        (cols[4], cols[5]),
        ("no", "yes"),
        "dead and stale: {entry:?}"
    );
    assert!(
        entry
            .iter()
            .any(|l| l.contains(&format!("sender attached pid {pid} (dead)"))),
        "{entry:?}"
    );
    assert!(region(&name).unwrap().is_stale());

    let (out, _) = hwlink(&["rm", "--stale"], Duration::from_secs(30));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "rm --stale: {}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("removed stale region {name}")),
        "{stdout}"
    );
    assert!(ls_entry(&name).is_none(), "still listed after rm --stale");
    assert_no_regions(&name);
}

/// `hwlink rm NAME` removes a live region by name (its users keep their
/// mapping); `hwlink rm` of a region that does not exist fails helpfully.
#[test]
fn cli_rm_by_name() {
    let name = unique("rm");
    let _cleanup = Cleanup(name.clone());
    let mut tx = hwlink::LinkBuilder::new(&name).create_sender().unwrap();
    let mut rx = hwlink::LinkBuilder::new(&name).open_receiver().unwrap();
    assert!(ls_entry(&name).is_some());
    let (out, _) = hwlink(&["rm", &name], Duration::from_secs(30));
    assert!(out.status.success(), "rm {name}: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("removed {name}")));
    assert!(ls_entry(&name).is_none(), "still listed after rm");
    assert_no_regions(&name);
    // The ends still work through their mappings.
    tx.send(b"still here").unwrap();
    assert_eq!(rx.recv().unwrap(), b"still here");
    drop((tx, rx));
    assert_no_regions(&name);

    let missing = unique("nosuch");
    let (out, _) = hwlink(&["rm", &missing], Duration::from_secs(30));
    assert!(!out.status.success(), "rm of a missing region succeeded");
    let err = text(&out.stderr);
    assert!(err.contains(&missing), "{err}");
    assert!(err.contains("hwlink ls"), "not helpful: {err}");
}

/// `hwlink ls` shows why it cannot read a region (here: another ABI
/// version); since its creator is alive, it is not stale, so `hwlink rm
/// --stale` must not remove it.
#[test]
fn cli_ls_unreadable_region_of_a_live_creator() {
    let name = unique("lsv");
    let _cleanup = Cleanup(name.clone());
    let tx = hwlink::LinkBuilder::new(&name).create_sender().unwrap();
    let raw = RawRegion::open(&name);
    raw.set32(hdr::ABI_VERSION, hwlink_hw::HWL_ABI_VERSION + 1);
    let entry = ls_entry(&name).expect("listed");
    assert!(
        entry
            .iter()
            .any(|l| l.trim_start().starts_with("error:") && l.contains("version")),
        "{entry:?}"
    );
    let status = region(&name).unwrap();
    assert!(status.error.is_some());
    assert!(
        !status.is_stale(),
        "a region whose creator (pid {}) is alive is reported stale: {status:?}",
        std::process::id()
    );
    drop((raw, tx));
    assert_no_regions(&name);
}

/// `hwlink ls` shows a topic: how many were published, its publisher and
/// each subscriber's lag; the last handle to go removes the topic.
#[test]
fn cli_ls_shows_a_topic_and_each_subscribers_lag() {
    let name = unique("tp");
    let _cleanup = Cleanup(format!("topic.{name}"));
    let mut p = hwlink::TopicBuilder::new(&name)
        .capacity(64)
        .history(8)
        .publish()
        .unwrap();
    let mut a = hwlink::Topic::subscribe(&name).unwrap();
    let _b = hwlink::Topic::subscribe(&name).unwrap();
    for i in 0..10u32 {
        p.send(i.to_le_bytes()).unwrap();
    }
    for _ in 0..4 {
        a.recv().unwrap();
    }
    let entry = ls_entry(&format!("topic.{name}")).expect("hwlink ls does not list the topic");
    let topic = entry
        .iter()
        .find(|l| l.trim_start().starts_with("topic:"))
        .unwrap_or_else(|| panic!("no topic line: {entry:?}"));
    let me = std::process::id();
    assert!(topic.contains("10 published"), "{topic}");
    assert!(topic.contains("2 of 64 subscribers"), "{topic}");
    assert!(topic.contains(&format!("publisher pid {me}")), "{topic}");
    let lags: Vec<&String> = entry
        .iter()
        .filter(|l| l.trim_start().starts_with("subscriber pid"))
        .collect();
    assert_eq!(lags.len(), 2, "{entry:?}");
    assert!(lags.iter().any(|l| l.contains("at 4, lag 6")), "{lags:?}");
    assert!(lags.iter().any(|l| l.contains("at 0, lag 10")), "{lags:?}");
    drop((p, a, _b));
    assert!(
        ls_entry(&format!("topic.{name}")).is_none(),
        "the topic outlived its last handle"
    );
}

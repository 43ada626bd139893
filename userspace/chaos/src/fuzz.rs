//! The hostile-peer fuzzer. Each trial (replayable from the campaign seed
//! and its number) starts victims that use one object kind with random
//! wait strategies in a private region directory, attacks their files for
//! the trial's run time, and judges what happened. A trial fails if a
//! victim dies by a signal or a panic, a call overstays its own deadline by
//! more than 2 s, a victim does not finish, a blocking call with no
//! deadline does not end after its peer died, a victim's peak memory
//! passes the limit, or a victim receives a message with wrong contents
//! (or, a topic's subscriber, one from before a message it already had)
//! while the attacker touched no data word (payload or length), slot turn
//! (a forged "published" turn, or topic slot sequence, delivers whatever
//! the slot holds) or attachment token (a forged one makes a live holder
//! look dead: its slot is handed on while it copies) and no corruption was
//! reported.

use crate::attack;
use crate::proto::{self, env, Kind, Rng, WAITS};
use crate::spawn::{Exit, Victim};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long past its deadline a call may return.
const OVERSTAY_LIMIT_MS: f64 = 2000.0;
/// Peak resident memory a victim may reach.
const RSS_LIMIT_KIB: i64 = 512 * 1024;

/// Campaign options.
pub struct Options {
    pub seed: u64,
    pub kinds: Vec<Kind>,
    pub until: Instant,
    pub max_trials: u64,
    pub only_trial: Option<u64>,
    pub verbose: bool,
}

/// Totals of one kind.
#[derive(Default, Clone)]
pub struct Totals {
    pub trials: u64,
    pub writes: u64,
    pub resizes: u64,
    pub corruptions: u64,
    /// Victims that saw at least one corruption reported.
    pub corrupt_victims: u64,
    pub failures: u64,
    pub blocking_checks: u64,
    /// Longest a call returned past its own deadline.
    pub max_over_ms: f64,
    /// Calls with a deadline, and how many returned over 10 ms past it.
    pub bounded: u64,
    pub over10: u64,
    /// The same less the caller's run-queue wait (see victim.rs).
    pub max_own_ms: f64,
    pub own_over10: u64,
}

/// What one trial found.
pub struct Trial {
    pub kind: Kind,
    pub writes: u64,
    pub resizes: u64,
    pub corruptions: u64,
    pub corrupt_victims: u64,
    pub failures: Vec<String>,
    pub blocking_checked: bool,
    pub max_over_ms: f64,
    pub bounded: u64,
    pub over10: u64,
    pub max_own_ms: f64,
    pub own_over10: u64,
}

pub fn run(opts: &Options) -> (BTreeMap<Kind, Totals>, Vec<String>) {
    let mut totals: BTreeMap<Kind, Totals> = BTreeMap::new();
    let mut failures = Vec::new();
    let trials: Box<dyn Iterator<Item = u64>> = match opts.only_trial {
        Some(t) => Box::new(std::iter::once(t)),
        None => Box::new(0..opts.max_trials),
    };
    for trial in trials {
        if opts.only_trial.is_none() && Instant::now() >= opts.until {
            break;
        }
        let t = run_trial(opts, trial);
        let tot = totals.entry(t.kind).or_default();
        tot.trials += 1;
        tot.writes += t.writes;
        tot.resizes += t.resizes;
        tot.corruptions += t.corruptions;
        tot.corrupt_victims += t.corrupt_victims;
        tot.blocking_checks += u64::from(t.blocking_checked);
        tot.max_over_ms = tot.max_over_ms.max(t.max_over_ms);
        tot.bounded += t.bounded;
        tot.over10 += t.over10;
        tot.max_own_ms = tot.max_own_ms.max(t.max_own_ms);
        tot.own_over10 += t.own_over10;
        if !t.failures.is_empty() {
            tot.failures += 1;
            for f in &t.failures {
                let line = format!(
                    "FAILED trial {trial} ({}, replay: hwlink-chaos fuzz --seed {} --trial {trial}): {f}",
                    t.kind, opts.seed
                );
                eprintln!("{line}");
                failures.push(line);
            }
        }
        if opts.verbose {
            eprintln!(
                "trial {trial}: {} writes={} resizes={} corruptions={} failures={}",
                t.kind,
                t.writes,
                t.resizes,
                t.corruptions,
                t.failures.len()
            );
        }
    }
    (totals, failures)
}

fn parse_report(line: &str) -> BTreeMap<String, String> {
    line.split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn run_trial(opts: &Options, trial: u64) -> Trial {
    let seed = proto::trial_seed(opts.seed, trial);
    let mut rng = Rng::new(seed);
    let kind = rng.pick(&opts.kinds);
    let dir = crate::spawn::private_dir("chaos", trial);
    let writes_planned = rng.pick(&[1u64, 4, 16, 64, 256, 1024, 2048]);
    let run_ms = 250u64;
    let blocking = !kind.is_mailbox() && rng.chance(30);
    let size = rng.pick(&[32usize, 200, 1000]);
    let name = format!("f{trial}");
    let common = |id: u32, wait: hwlink::WaitStrategy, peers: &str| {
        let extra = [(env::RUN_MS, run_ms.to_string())];
        crate::spawn::victim_env(kind, wait, &name, id, seed, size, peers, &extra)
    };
    let mut victims: Vec<Victim> = Vec::new();
    // (index of the victim whose blocking call is checked, index of its peer)
    let mut block_pair = None;
    match kind {
        Kind::Link => {
            victims.push(Victim::spawn(
                &dir,
                "fuzz-send",
                &common(0, rng.pick(&WAITS), ""),
            ));
            let role = if blocking { "block-recv" } else { "fuzz-recv" };
            victims.push(Victim::spawn(&dir, role, &common(1, rng.pick(&WAITS), "")));
            if blocking {
                block_pair = Some((1, 0));
            }
        }
        Kind::MailboxBounded | Kind::MailboxUnbounded | Kind::MailboxZero => {
            victims.push(Victim::spawn(
                &dir,
                "fuzz-recv",
                &common(0, rng.pick(&WAITS), ""),
            ));
            for id in 1..3 {
                victims.push(Victim::spawn(
                    &dir,
                    "fuzz-send",
                    &common(id, rng.pick(&WAITS), ""),
                ));
            }
        }
        Kind::TopicBlock | Kind::TopicOverwrite => {
            // One publisher, two subscribers; the first may end in a
            // blocking receive that the publisher's death must end.
            victims.push(Victim::spawn(
                &dir,
                "fuzz-send",
                &common(0, rng.pick(&WAITS), ""),
            ));
            for id in 1..3 {
                let role = if blocking && id == 1 {
                    "block-recv"
                } else {
                    "fuzz-recv"
                };
                victims.push(Victim::spawn(&dir, role, &common(id, rng.pick(&WAITS), "")));
            }
            if blocking {
                block_pair = Some((1, 0));
            }
        }
        _ => {
            let role = if blocking {
                "block-member"
            } else {
                "fuzz-member"
            };
            victims.push(Victim::spawn(
                &dir,
                role,
                &common(0, rng.pick(&WAITS), "m1"),
            ));
            victims.push(Victim::spawn(
                &dir,
                "fuzz-member",
                &common(1, rng.pick(&WAITS), "m0"),
            ));
            if blocking {
                block_pair = Some((0, 1));
            }
        }
    }
    let mut failures = Vec::new();
    for v in &mut victims {
        match v.wait_for(&["@ready", "@open-failed"], Duration::from_secs(5)) {
            Some(l) if l.starts_with("@ready") => {}
            Some(l) => failures.push(format!("{} could not open before any attack: {l}", v.role)),
            None => failures.push(format!("{} did not get ready", v.role)),
        }
    }
    let start = Instant::now();
    // The attack: spread over most of the run.
    let mut files = attack::map_all(&dir);
    let mut writes = 0u64;
    let mut resizes = 0u64;
    let mut data_hit = false;
    let window = Duration::from_millis(run_ms * 8 / 10);
    let gap = window / (writes_planned.max(1) as u32);
    let mut last_map = Instant::now();
    for n in 0..writes_planned {
        // New files (segments, links) appear as the victims go.
        if last_map.elapsed() > Duration::from_millis(20) || n % 64 == 63 {
            files = attack::map_all(&dir);
            last_map = Instant::now();
        }
        if files.is_empty() {
            std::thread::sleep(gap.max(Duration::from_micros(100)));
            continue;
        }
        let f = &files[rng.below(files.len() as u64) as usize];
        if rng.chance(2) {
            f.resize(&mut rng);
            resizes += 1;
            data_hit = true;
        } else if f.strike(&mut rng).may_spoil() {
            data_hit = true;
        }
        writes += 1;
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
    }
    drop(files);
    let mut blocking_checked = false;
    if let Some((waiter, peer)) = block_pair {
        // Past the run, the waiter sits in a blocking receive with no
        // deadline: kill its peer, and that call must end.
        std::thread::sleep(Duration::from_millis(run_ms + 50).saturating_sub(start.elapsed()));
        victims[peer].kill();
        let t_kill = Instant::now();
        match victims[waiter].wait_for(&["@blocking-ended"], Duration::from_secs(3)) {
            Some(_) => blocking_checked = true,
            None if victims[waiter].reap(Duration::ZERO) => blocking_checked = true,
            None => failures.push(format!(
                "a blocking receive with no deadline did not end within {:?} of its peer's death",
                t_kill.elapsed()
            )),
        }
    }
    let mut corruptions = 0;
    let mut corrupt_victims = 0;
    let mut max_over_ms: f64 = 0.0;
    let (mut bounded, mut over10, mut max_own_ms, mut own_over10) = (0u64, 0u64, 0f64, 0u64);
    for v in &mut victims {
        let wait = Duration::from_millis(run_ms + 3000).saturating_sub(start.elapsed());
        if !v.reap(wait) {
            failures.push(format!(
                "{} did not finish within {:?} of a {run_ms} ms run (hang); its last lines: {:?}",
                v.role,
                start.elapsed(),
                v.seen
                    .iter()
                    .rev()
                    .take(3)
                    .map(|(_, l)| l)
                    .collect::<Vec<_>>()
            ));
            if std::env::var_os("HWLINK_CHAOS_GDB").is_some() {
                let _ = std::process::Command::new("gdb")
                    .args([
                        "-batch",
                        "-p",
                        &v.pid.to_string(),
                        "-ex",
                        "thread apply all bt",
                    ])
                    .status();
            }
            v.kill();
            v.reap(Duration::from_secs(2));
            continue;
        }
        match v.exit.clone() {
            Some(Exit::Code(0)) => {}
            Some(Exit::Signal(9)) if v.killed => {}
            Some(Exit::Signal(s)) => failures.push(format!("{} killed by signal {s}", v.role)),
            Some(Exit::Code(c)) => failures.push(format!(
                "{} exited with code {c} (a panic?): {:?}",
                v.role,
                v.seen.iter().rev().take(3).collect::<Vec<_>>()
            )),
            None => {}
        }
        if v.max_rss_kib > RSS_LIMIT_KIB {
            failures.push(format!("{} peaked at {} MiB", v.role, v.max_rss_kib / 1024));
        }
        let Some(report) = v
            .seen
            .iter()
            .find(|(_, l)| l.starts_with("@report"))
            .map(|(_, l)| parse_report(l))
        else {
            if !v.killed {
                failures.push(format!("{} never reported", v.role));
            }
            continue;
        };
        let num = |k: &str| {
            report
                .get(k)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        corruptions += num("corrupt") as u64;
        corrupt_victims += u64::from(num("corrupt") > 0.0);
        bounded += num("bounded") as u64;
        over10 += num("over10") as u64;
        max_own_ms = max_own_ms.max(num("max_own_ms"));
        own_over10 += num("own_over10") as u64;
        if num("max_over_ms") > max_over_ms {
            max_over_ms = num("max_over_ms");
            if std::env::var_os("HWLINK_CHAOS_WORST").is_some() {
                eprintln!(
                    "trial {trial} {kind} {}: overstay {max_over_ms} ms, {}",
                    v.role,
                    report.get("worst").map_or("", String::as_str)
                );
            }
        }
        if num("max_over_ms") > OVERSTAY_LIMIT_MS {
            failures.push(format!(
                "{}: a call returned {} ms past its deadline",
                v.role,
                num("max_over_ms")
            ));
        }
        let wrong = num("wrong") - num("wrong_after_corrupt");
        if wrong > 0.0 && !data_hit {
            failures.push(format!(
                "{}: {wrong} messages with wrong contents, and no data word was written nor corruption reported",
                v.role
            ));
        }
    }
    drop(victims);
    let _ = std::fs::remove_dir_all(&dir);
    Trial {
        kind,
        writes,
        resizes,
        corruptions,
        corrupt_victims,
        failures,
        blocking_checked,
        max_over_ms,
        bounded,
        over10,
        max_own_ms,
        own_over10,
    }
}

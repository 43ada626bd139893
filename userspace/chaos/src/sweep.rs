//! The kill -9 sweep. Each trial (replayable from the campaign seed and its
//! number) streams checked messages through one object kind between real
//! processes, SIGKILLs a sender, a receiver or a domain member at a random
//! point (also in the middle of 1 MiB copies and of zero-copy loans), and
//! checks that every message whose send returned Ok was delivered exactly
//! once, in order per sender (unless its receiver was the one killed), and
//! that the survivor learned of the death, and how fast.

use crate::proto::{self, env, Kind, Rng, WAITS};
use crate::spawn::{Exit, Victim};
use hwlink::WaitStrategy;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

pub struct Options {
    pub seed: u64,
    pub kinds: Vec<Kind>,
    pub trials: u64,
    pub only_trial: Option<u64>,
    pub verbose: bool,
}

/// A measured detection: how long after the kill (or after the last
/// message it could still take) the survivor learned of the death.
#[derive(Clone, Debug)]
pub struct Detection {
    pub kind: Kind,
    pub wait: WaitStrategy,
    pub ms: f64,
}

#[derive(Default, Clone)]
pub struct Totals {
    pub trials: u64,
    pub accepted: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub taken_by_the_killed: u64,
    pub failures: u64,
}

pub struct Outcome {
    pub totals: BTreeMap<Kind, Totals>,
    pub detections: Vec<Detection>,
    /// Mailboxes: longest wait of the surviving receiver after the kill.
    pub stalls: Vec<(Kind, WaitStrategy, f64)>,
    pub failures: Vec<String>,
}

pub fn run(opts: &Options) -> Outcome {
    let mut out = Outcome {
        totals: BTreeMap::new(),
        detections: Vec::new(),
        stalls: Vec::new(),
        failures: Vec::new(),
    };
    let trials: Box<dyn Iterator<Item = u64>> = match opts.only_trial {
        Some(t) => Box::new(std::iter::once(t)),
        None => Box::new(0..opts.trials),
    };
    for trial in trials {
        let (kind, fails) = run_trial(opts, trial, &mut out);
        if !fails.is_empty() {
            out.totals.entry(kind).or_default().failures += 1;
        }
        for f in fails {
            let line = format!(
                "FAILED trial {trial} ({kind}, replay: hwlink-chaos sweep --seed {} --trial {trial}): {f}",
                opts.seed
            );
            eprintln!("{line}");
            out.failures.push(line);
        }
    }
    out
}

/// Who sends and who receives in a trial.
struct Cast {
    senders: Vec<usize>,
    receivers: Vec<usize>,
}

fn run_trial(opts: &Options, trial: u64, out: &mut Outcome) -> (Kind, Vec<String>) {
    let seed = proto::trial_seed(opts.seed ^ 0x5eed, trial);
    let mut rng = Rng::new(seed);
    let kind = rng.pick(&opts.kinds);
    let dir = crate::spawn::private_dir("sweep", trial);
    let big = rng.chance(25);
    let size = if big {
        1 << 20
    } else {
        64 + rng.below(448) as usize
    };
    let count = if big { 400 } else { 100_000 };
    let kill_sender = rng.chance(50);
    let loan = kind == Kind::Link && rng.chance(30);
    let name = format!("s{trial}");
    let mut failures = Vec::new();
    let mut victims: Vec<Victim> = Vec::new();
    let mut waits = Vec::new();
    let mut spawn =
        |victims: &mut Vec<Victim>, role: &str, id: u32, peers: &str, wait: WaitStrategy| {
            waits.push(wait);
            let extra = [
                (env::COUNT, count.to_string()),
                (env::LOAN, if loan { "1" } else { "0" }.to_string()),
            ];
            let env = crate::spawn::victim_env(kind, wait, &name, id, seed, size, peers, &extra);
            victims.push(Victim::spawn(&dir, role, &env));
        };
    let cast = if kind.is_mailbox() {
        // Receiver 0 creates; two senders; a second receiver when one is
        // to be killed (someone must still receive).
        spawn(&mut victims, "sweep-recv", 0, "", rng.pick(&WAITS));
        let mut receivers = vec![0];
        if !kill_sender {
            spawn(&mut victims, "sweep-recv", 1, "", rng.pick(&WAITS));
            receivers.push(1);
        }
        let first = victims.len();
        for id in 10..12 {
            spawn(&mut victims, "sweep-send", id, "", rng.pick(&WAITS));
        }
        Cast {
            senders: vec![first, first + 1],
            receivers,
        }
    } else if kind.is_domain() {
        spawn(&mut victims, "sweep-send", 0, "m1", rng.pick(&WAITS));
        spawn(&mut victims, "sweep-recv", 1, "m0", rng.pick(&WAITS));
        Cast {
            senders: vec![0],
            receivers: vec![1],
        }
    } else {
        spawn(&mut victims, "sweep-send", 0, "", rng.pick(&WAITS));
        spawn(&mut victims, "sweep-recv", 1, "", rng.pick(&WAITS));
        Cast {
            senders: vec![0],
            receivers: vec![1],
        }
    };
    for v in &mut victims {
        match v.wait_for(&["@ready", "@open-failed"], Duration::from_secs(5)) {
            Some(l) if l.starts_with("@ready") => {}
            other => failures.push(format!("{} did not get ready: {other:?}", v.role)),
        }
    }
    if !failures.is_empty() {
        let _ = std::fs::remove_dir_all(&dir);
        return (kind, failures);
    }
    // The victim: a sender (the first), or a receiver (the last).
    let target = if kill_sender {
        cast.senders[0]
    } else {
        *cast.receivers.last().expect("a receiver")
    };
    let delay = Duration::from_micros(rng.below(if big { 80_000 } else { 50_000 }));
    std::thread::sleep(delay);
    let t_kill = proto::now_ns();
    victims[target].kill();
    // Surviving senders finish (or learn the receiver is gone).
    for &s in &cast.senders {
        if s != target
            && victims[s]
                .wait_for(&["@sent-all", "G "], Duration::from_secs(20))
                .is_none()
        {
            failures.push(format!(
                "sender {} neither finished nor learned of the death",
                victims[s].role
            ));
        }
    }
    // Then receivers drain what is left and stop.
    for &r in &cast.receivers {
        if r == target {
            continue;
        }
        victims[r].tell("stop");
        if victims[r]
            .wait_for(&["@done"], Duration::from_secs(20))
            .is_none()
        {
            failures.push(format!(
                "receiver {} did not finish draining",
                victims[r].role
            ));
        }
    }
    for &s in &cast.senders {
        victims[s].tell("exit");
    }
    for v in &mut victims {
        if !v.reap(Duration::from_secs(5)) {
            failures.push(format!("{} did not exit", v.role));
        }
        match v.exit {
            Some(Exit::Code(0)) | None => {}
            Some(Exit::Signal(9)) if v.killed => {}
            Some(ref e) => failures.push(format!("{} ended with {e:?}", v.role)),
        }
    }
    // What was accepted, and what arrived where.
    let id_of = |v: &Victim| -> Option<u32> {
        v.seen.iter().find_map(|(_, l)| {
            l.strip_prefix("A ")
                .and_then(|r| r.split_whitespace().next())
                .and_then(|s| s.parse().ok())
        })
    };
    let mut accepted: HashMap<u32, Vec<u64>> = HashMap::new();
    for &s in &cast.senders {
        for (_, l) in &victims[s].seen {
            if let Some(rest) = l.strip_prefix("A ") {
                let mut it = rest.split_whitespace();
                if let (Some(id), Some(q)) = (it.next(), it.next()) {
                    if let (Ok(id), Ok(q)) = (id.parse(), q.parse()) {
                        accepted.entry(id).or_default().push(q);
                    }
                }
            }
        }
    }
    let killed_id = id_of(&victims[target]);
    let mut received: HashMap<u32, Vec<u64>> = HashMap::new();
    let mut seen_once: HashSet<(u32, u64)> = HashSet::new();
    let mut duplicated = 0;
    for &r in &cast.receivers {
        let mut last: HashMap<u32, u64> = HashMap::new();
        for (_, l) in &victims[r].seen {
            if let Some(rest) = l.strip_prefix("W ") {
                failures.push(format!("a message arrived malformed ({rest} bytes)"));
            }
            let Some(rest) = l.strip_prefix("R ") else {
                continue;
            };
            let mut it = rest.split_whitespace();
            let (Some(s), Some(q)) = (it.next(), it.next()) else {
                continue;
            };
            let Ok(s) = s.parse::<u32>() else { continue };
            if q == "end" {
                continue;
            }
            let Ok(q) = q.parse::<u64>() else { continue };
            if q == proto::END {
                continue;
            }
            if !seen_once.insert((s, q)) {
                duplicated += 1;
                failures.push(format!("message {q} of sender {s} arrived twice"));
            }
            if let Some(&p) = last.get(&s) {
                if q <= p {
                    failures.push(format!(
                        "sender {s}: message {q} after {p} at one receiver (out of order)"
                    ));
                }
            }
            last.insert(s, q);
            received.entry(s).or_default().push(q);
        }
    }
    // Every accepted message arrived, unless the receiver was killed.
    let tot = out.totals.entry(kind).or_default();
    tot.trials += 1;
    tot.duplicated += duplicated;
    let single_receiver = cast.receivers.len() == 1;
    let mut taken_by_the_killed = 0;
    for (s, qs) in &accepted {
        tot.accepted += qs.len() as u64;
        let got: HashSet<u64> = received
            .get(s)
            .map(|v| v.iter().copied().collect())
            .unwrap_or_default();
        let missing: Vec<u64> = qs.iter().filter(|q| !got.contains(q)).copied().collect();
        tot.delivered += (qs.len() - missing.len()) as u64;
        if missing.is_empty() {
            continue;
        }
        if !kill_sender && single_receiver {
            // The receiver died: what it had not taken is gone with it.
            continue;
        }
        if !kill_sender {
            // One of two receivers died: it may have died holding the one
            // message it had taken and not yet reported.
            taken_by_the_killed += missing.len() as u64;
            if missing.len() > 1 {
                failures.push(format!(
                    "sender {s}: {} accepted messages lost (a killed receiver holds at most one): {:?}",
                    missing.len(),
                    &missing[..missing.len().min(8)]
                ));
            }
            continue;
        }
        tot.lost += missing.len() as u64;
        failures.push(format!(
            "sender {s}: {} accepted messages never arrived: {:?}",
            missing.len(),
            &missing[..missing.len().min(8)]
        ));
    }
    tot.taken_by_the_killed += taken_by_the_killed;
    // Messages the killed sender reported as its last one in flight may
    // arrive without an A line; anything else unaccepted is an error.
    for (s, qs) in &received {
        let acc: HashSet<u64> = accepted
            .get(s)
            .map(|v| v.iter().copied().collect())
            .unwrap_or_default();
        let max_acc = acc.iter().max().copied();
        for q in qs {
            let in_flight = Some(*s) == killed_id && max_acc.map_or(*q == 0, |m| *q == m + 1);
            if !acc.contains(q) && !in_flight {
                failures.push(format!(
                    "message {q} of sender {s} arrived but was never accepted"
                ));
            }
        }
    }
    // The survivor learned of the death: when, from its `G` line.
    let learned = |v: &Victim| -> Option<u64> {
        v.seen.iter().find_map(|(_, l)| {
            l.strip_prefix("G ")
                .and_then(|r| r.split_whitespace().next())
                .and_then(|t| t.parse().ok())
        })
    };
    if !kind.is_mailbox() {
        let survivor = if kill_sender {
            cast.receivers[0]
        } else {
            cast.senders[0]
        };
        let sent_all = victims[survivor]
            .seen
            .iter()
            .any(|(_, l)| l.starts_with("@sent-all"));
        match learned(&victims[survivor]) {
            Some(t) => {
                // A receiver learns once it has taken everything: measure
                // from the later of the kill and its last message.
                let last_msg = victims[survivor]
                    .seen
                    .iter()
                    .filter(|(_, l)| l.starts_with("R "))
                    .map(|(at, _)| *at)
                    .max()
                    .unwrap_or(0);
                let from = t_kill.max(last_msg);
                let ms = t.saturating_sub(from) as f64 / 1e6;
                out.detections.push(Detection {
                    kind,
                    wait: waits[survivor],
                    ms,
                });
            }
            None if !kill_sender && sent_all => {}
            None => failures.push(format!(
                "the survivor ({}) never learned that its peer was killed",
                victims[survivor].role
            )),
        }
    } else if let Some(&r) = cast.receivers.iter().find(|&&r| r != target) {
        // Mailboxes: the longest the surviving receiver went without a
        // message after the kill while messages were still to come.
        let times: Vec<u64> = victims[r]
            .seen
            .iter()
            .filter(|(at, l)| l.starts_with("R ") && *at >= t_kill)
            .map(|(at, _)| *at)
            .collect();
        let mut prev = t_kill;
        let mut stall = 0u64;
        for t in times {
            stall = stall.max(t.saturating_sub(prev));
            prev = t;
        }
        out.stalls.push((kind, waits[r], stall as f64 / 1e6));
    }
    if opts.verbose && !failures.is_empty() {
        for v in &victims {
            let lines: Vec<&String> = v.seen.iter().map(|(_, l)| l).collect();
            let tail = &lines[lines.len().saturating_sub(6)..];
            eprintln!(
                "  {} (killed {}): {} lines, last {tail:?}",
                v.role,
                v.killed,
                lines.len()
            );
        }
    }
    if opts.verbose {
        eprintln!(
            "trial {trial}: {kind} {} killed after {delay:?}, size {size}, loan {loan}: accepted {} received {} failures {}",
            if kill_sender { "sender" } else { "receiver" },
            accepted.values().map(Vec::len).sum::<usize>(),
            received.values().map(Vec::len).sum::<usize>(),
            failures.len()
        );
    }
    drop(victims);
    let _ = std::fs::remove_dir_all(&dir);
    (kind, failures)
}

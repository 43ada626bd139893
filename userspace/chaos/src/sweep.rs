//! The kill -9 sweep. Each trial (replayable from the campaign seed and its
//! number) streams checked messages through one object kind between real
//! processes, SIGKILLs a sender, a receiver or a domain member at a random
//! point (also in the middle of 1 MiB copies and of zero-copy loans), and
//! checks that every message whose send returned Ok was delivered exactly
//! once, in order per sender (unless its receiver was the one killed), and
//! that the survivor learned of the death, and how fast.
//!
//! Topics: a publisher and two subscribers that join before it sends, so
//! each subscriber is owed every position. Under Block each one that
//! lives receives every accepted message exactly once, in order; under
//! Overwrite what it receives plus what its `Lagged(n)` count equals what
//! was published, in order, none torn. A killed publisher's subscribers
//! drain and end with Disconnected; a killed subscriber stops holding a
//! Block publisher back within [`HELD_LIMIT_MS`].

use crate::proto::{self, env, Kind, Rng, WAITS};
use crate::spawn::{Exit, Victim};
use hwlink::WaitStrategy;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

/// How long a dead subscriber may hold a Block publisher back (hw/SPEC.md
/// §16.6: it sleeps on the slowest subscriber's liveness word).
const HELD_LIMIT_MS: f64 = 100.0;

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
    /// Topics (Overwrite): positions subscribers were told they missed.
    pub lagged: u64,
    pub failures: u64,
}

pub struct Outcome {
    pub totals: BTreeMap<Kind, Totals>,
    pub detections: Vec<Detection>,
    /// Mailboxes: longest wait of the surviving receiver after the kill.
    pub stalls: Vec<(Kind, WaitStrategy, f64)>,
    /// Topics, a subscriber killed: longest the publisher (its wait
    /// strategy) went without sending although the surviving subscriber
    /// had read everything it had sent.
    pub held: Vec<(Kind, WaitStrategy, f64)>,
    pub failures: Vec<String>,
}

pub fn run(opts: &Options) -> Outcome {
    let mut out = Outcome {
        totals: BTreeMap::new(),
        detections: Vec::new(),
        stalls: Vec::new(),
        held: Vec::new(),
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
    let loan = (kind == Kind::Link || kind.is_topic()) && rng.chance(30);
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
    } else if kind.is_topic() {
        // Both subscribers join before the publisher sends: each is owed
        // every position from 0.
        spawn(&mut victims, "sweep-recv", 1, "", rng.pick(&WAITS));
        spawn(&mut victims, "sweep-recv", 2, "", rng.pick(&WAITS));
        for v in &mut victims {
            v.wait_for(&["@ready", "@open-failed"], Duration::from_secs(5));
        }
        spawn(&mut victims, "sweep-send", 0, "", rng.pick(&WAITS));
        Cast {
            senders: vec![2],
            receivers: vec![0, 1],
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
    if kind.is_topic() {
        let t = TopicTrial {
            kind,
            victims: &victims,
            cast: &cast,
            target,
            kill_sender,
            t_kill,
            waits: &waits,
        };
        let (accepted, received) = judge_topic(&t, out, &mut failures);
        if opts.verbose {
            eprintln!(
                "trial {trial}: {kind} {} killed after {delay:?}, size {size}, loan {loan}: accepted {accepted} received {received} failures {}",
                if kill_sender { "publisher" } else { "subscriber" },
                failures.len()
            );
        }
        show_tails(opts, &victims, &failures);
        drop(victims);
        let _ = std::fs::remove_dir_all(&dir);
        return (kind, failures);
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
    // Messages the killed receiver reported taking (zero capacity: it may
    // die after its closure ran but before its acknowledgement, so its
    // sender's send fails although the message was shown to it).
    let mut reported_by_killed: HashSet<(u32, u64)> = HashSet::new();
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
            if r == target {
                reported_by_killed.insert((s, q));
            }
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
    // arrive without an A line, and so may the one a killed receiver took
    // in a hand-off it did not live to acknowledge (its sender was told it
    // failed: the receiver is gone, as `send` must say); anything else
    // unaccepted is an error.
    let mut unacked_by_killed = 0;
    for (s, qs) in &received {
        let acc: HashSet<u64> = accepted
            .get(s)
            .map(|v| v.iter().copied().collect())
            .unwrap_or_default();
        let max_acc = acc.iter().max().copied();
        for q in qs {
            let next = max_acc.map_or(*q == 0, |m| *q == m + 1);
            // A sender killed before its first send returned has no `A`
            // line to name it: its id is then one no `A` line names.
            let killed_sender = Some(*s) == killed_id
                || (kill_sender && killed_id.is_none() && !accepted.contains_key(s));
            let in_flight = killed_sender && next;
            let unacked = !kill_sender
                && next
                && !acc.contains(q)
                && reported_by_killed.contains(&(*s, *q))
                && unacked_by_killed == 0;
            if unacked {
                unacked_by_killed += 1;
                continue;
            }
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
    show_tails(opts, &victims, &failures);
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

/// With -v, after a failed trial: each victim's last lines.
fn show_tails(opts: &Options, victims: &[Victim], failures: &[String]) {
    if opts.verbose && !failures.is_empty() {
        for v in victims {
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
}

/// A topic trial, once its victims have ended.
struct TopicTrial<'a> {
    kind: Kind,
    victims: &'a [Victim],
    cast: &'a Cast,
    /// The one killed.
    target: usize,
    kill_sender: bool,
    t_kill: u64,
    waits: &'a [WaitStrategy],
}

/// What a topic subscriber said (its `R` and `L` lines), in order.
enum Event {
    Received(u64),
    Lagged(u64),
}

/// Judges a topic trial: each subscriber's account of the positions
/// published, the survivors' news of a dead publisher, and how long a dead
/// subscriber held the publisher back. Returns (accepted, received).
fn judge_topic(t: &TopicTrial<'_>, out: &mut Outcome, failures: &mut Vec<String>) -> (u64, u64) {
    let block = t.kind == Kind::TopicBlock;
    let publisher = t.cast.senders[0];
    // The topic's only publisher, from position 0: its sequence numbers
    // are positions.
    let accepted: Vec<(u64, u64)> = t.victims[publisher]
        .seen
        .iter()
        .filter_map(|(at, l)| {
            let mut it = l.strip_prefix("A ")?.split_whitespace();
            it.next()?;
            Some((*at, it.next()?.parse().ok()?))
        })
        .collect();
    let acc = accepted.len() as u64;
    if let Some((i, (_, q))) = accepted
        .iter()
        .enumerate()
        .find(|(i, (_, q))| *q != *i as u64)
    {
        failures.push(format!(
            "the publisher's accepted message {i} has sequence number {q}"
        ));
    }
    // A killed publisher may have published the message it was sending.
    let most = acc + u64::from(t.kill_sender);
    let tot = out.totals.entry(t.kind).or_default();
    tot.trials += 1;
    let mut received_all = 0;
    // Arrival of each position at each subscriber.
    let mut arrivals: Vec<HashMap<u64, u64>> = Vec::new();
    for &r in &t.cast.receivers {
        let v = &t.victims[r];
        let mut events = Vec::new();
        for (at, l) in &v.seen {
            if let Some(rest) = l.strip_prefix("W ") {
                failures.push(format!(
                    "{} (subscriber {r}): a message arrived malformed or torn ({rest} bytes)",
                    v.role
                ));
            } else if let Some(n) = l.strip_prefix("L ") {
                events.push((*at, Event::Lagged(n.trim().parse().unwrap_or(0))));
            } else if let Some(rest) = l.strip_prefix("R ") {
                let mut it = rest.split_whitespace();
                let (Some(s), Some(q)) = (it.next(), it.next()) else {
                    continue;
                };
                if s != "0" {
                    failures.push(format!("a message of an unknown sender `{s}` arrived"));
                }
                if let Ok(q) = q.parse() {
                    events.push((*at, Event::Received(q)));
                }
            }
        }
        // Every position from 0 is received or counted in a Lagged, once,
        // in order.
        let mut next = 0u64;
        let mut got: HashMap<u64, u64> = HashMap::new();
        for (at, e) in events {
            match e {
                Event::Lagged(n) => {
                    if block || n == 0 {
                        failures.push(format!(
                            "subscriber {r}: Lagged({n}) at position {next} under {}",
                            t.kind
                        ));
                    }
                    tot.lagged += n;
                    next = next.saturating_add(n);
                }
                Event::Received(q) => {
                    if got.insert(q, at).is_some() {
                        tot.duplicated += 1;
                        failures.push(format!("subscriber {r}: message {q} arrived twice"));
                    } else if q < next {
                        failures.push(format!(
                            "subscriber {r}: message {q} arrived after position {} was accounted for (out of order, or also counted in a Lagged)",
                            next - 1
                        ));
                    } else if q > next {
                        tot.lost += q - next;
                        failures.push(format!(
                            "subscriber {r}: positions {next}..{q} neither arrived nor were counted in a Lagged"
                        ));
                    }
                    next = next.max(q + 1);
                }
            }
        }
        received_all += got.len() as u64;
        tot.accepted += acc;
        tot.delivered += got.keys().filter(|&&q| q < acc).count() as u64;
        if next > most {
            failures.push(format!(
                "subscriber {r}: accounts for {next} positions (received or lagged), but {acc} were accepted{}",
                if t.kill_sender { " (and perhaps one more in flight)" } else { "" }
            ));
        }
        if r != t.target && next < acc {
            tot.lost += acc - next;
            failures.push(format!(
                "subscriber {r}: accepted positions {next}..{acc} neither arrived nor were counted in a Lagged"
            ));
        }
        arrivals.push(got);
    }
    if t.kill_sender {
        // The survivors drain, then learn the publisher is gone.
        for (i, &r) in t.cast.receivers.iter().enumerate() {
            let v = &t.victims[r];
            let g = v.seen.iter().find_map(|(at, l)| {
                let mut it = l.strip_prefix("G ")?.split_whitespace();
                let when: u64 = it.next()?.parse().ok()?;
                Some((when, it.next().unwrap_or("").to_string(), *at))
            });
            let Some((when, err, _)) = g else {
                failures.push(format!(
                    "subscriber {r} never learned that the publisher was killed"
                ));
                continue;
            };
            if err != "disconnected" {
                failures.push(format!(
                    "subscriber {r} ended with `{err}`, not Disconnected, after the publisher was killed"
                ));
            }
            let last_msg = arrivals[i].values().copied().max().unwrap_or(0);
            let from = t.t_kill.max(last_msg);
            out.detections.push(Detection {
                kind: t.kind,
                wait: t.waits[r],
                ms: when.saturating_sub(from) as f64 / 1e6,
            });
        }
    } else {
        // A subscriber was killed: the publisher goes on; the dead one
        // stops holding it back. Each gap between two accepted messages
        // after the kill, from when the survivor had read the first of them
        // (the survivor then holds nothing back), is the dead one's doing.
        if let Some((_, l)) = t.victims[publisher]
            .seen
            .iter()
            .find(|(_, l)| l.starts_with("G "))
        {
            failures.push(format!(
                "the publisher's send failed after a subscriber was killed: {l}"
            ));
        }
        let survivor = t
            .cast
            .receivers
            .iter()
            .position(|&r| r != t.target)
            .expect("a surviving subscriber");
        let mut held = 0u64;
        for w in accepted.windows(2) {
            let ((t0, q0), (t1, _)) = (w[0], w[1]);
            if t1 <= t.t_kill {
                continue;
            }
            let Some(&r0) = arrivals[survivor].get(&q0) else {
                continue;
            };
            held = held.max(t1.saturating_sub(t0.max(r0).max(t.t_kill)));
        }
        let ms = held as f64 / 1e6;
        out.held.push((t.kind, t.waits[publisher], ms));
        if block && ms > HELD_LIMIT_MS {
            failures.push(format!(
                "the publisher ({}) sent nothing for {ms:.1} ms after subscriber {} was killed, while the other had read all it had sent",
                t.waits[publisher],
                t.target
            ));
        }
    }
    (acc, received_all)
}

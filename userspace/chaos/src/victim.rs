//! The victims: processes that use hwlink's public API normally (links,
//! mailboxes, domains, topics; every wait strategy; blocking, timed and
//! non-blocking calls; copies, loans and in-place reads) while the harness
//! attacks or kills them, and report what they saw on stdout, one line per
//! event.

use crate::proto::{self, env, Kind, Rng, HEADER};
use hwlink::{
    Access, Backend, Backpressure, Buffering, Domain, LinkBuilder, Mailbox, MailboxBuilder, Member,
    Publisher, Receiver, RecvError, SendError, Sender, Subscriber, TopicBuilder, WaitStrategy,
};
use std::io::Write;
use std::time::{Duration, Instant};

/// How long a victim keeps trying to open what another one creates.
const OPEN_PATIENCE: Duration = Duration::from_secs(3);
/// Subscriber entries of a topic (the trials use two).
const TOPIC_SUBSCRIBERS: u32 = 4;

/// One process's end of the object under test.
pub enum End {
    Tx(Sender),
    Rx(Receiver),
    Mbx(Mailbox),
    Member(Member, String),
    Pub(Publisher),
    Sub(Sub),
}

/// A topic subscriber, and what its receives keep beyond the handle.
pub struct Sub {
    s: Subscriber,
    /// n of the last `Lagged(n)` a receive returned.
    last_lag: u64,
    /// Receives so far: each takes the next of a copy (`recv`), a copy
    /// into a buffer (`recv_into`) and an in-place read (`read`).
    calls: u64,
    buf: Vec<u8>,
}

impl Sub {
    fn new(s: Subscriber) -> Sub {
        let buf = vec![0; s.max_message()];
        Sub {
            s,
            last_lag: 0,
            calls: 0,
            buf,
        }
    }

    /// The next message. An in-place read found overwritten when it was
    /// done says `torn`: the next receive counts it in `Lagged`.
    fn recv(&mut self, form: Form) -> Result<Vec<u8>, &'static str> {
        self.calls += 1;
        let s = &mut self.s;
        let r = match self.calls % 3 {
            0 => match form {
                Form::Try => s.try_recv(),
                Form::Timed(d) => s.recv_timeout(d),
                Form::Block => s.recv(),
            },
            1 => {
                let buf = &mut self.buf;
                match form {
                    Form::Try => s.try_recv_into(buf),
                    Form::Timed(d) => s.recv_into_timeout(buf, d),
                    Form::Block => s.recv_into(buf),
                }
                .map(|n| buf[..n].to_vec())
            }
            _ => {
                let sample = match form {
                    Form::Try => s.try_read(),
                    Form::Timed(d) => s.read_timeout(d),
                    Form::Block => s.read(),
                };
                match sample {
                    Ok(sample) => {
                        let m = sample.to_vec();
                        if !sample.intact() {
                            return Err("torn");
                        }
                        Ok(m)
                    }
                    Err(e) => Err(e),
                }
            }
        };
        r.map_err(|e| {
            if let RecvError::Lagged(n) = e {
                self.last_lag = n;
            }
            recv_err(&e)
        })
    }
}

/// How a call waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    Try,
    Timed(Duration),
    Block,
}

/// A call's outcome, by kind of error.
pub fn send_err<M>(e: &SendError<M>) -> &'static str {
    match e {
        SendError::Full(_) => "full",
        SendError::Timeout(_) => "timeout",
        SendError::Disconnected(_) => "disconnected",
        SendError::TooLarge { .. } => "too-large",
        SendError::MemoryLimit { .. } => "memory-limit",
        SendError::Corrupt(c) => {
            show_corruption(c);
            "corrupt"
        }
        SendError::NoSuchMember { .. } => "no-such-member",
        SendError::MemberGone { .. } => "member-gone",
        SendError::LinkFailed { .. } => "link-failed",
        SendError::Serialize(_) => "serialize",
    }
}

/// With HWLINK_CHAOS_CORRUPT set, a victim prints each corruption it is
/// told of to its stderr (HWLINK_CHAOS_STDERR keeps that in a file).
fn show_corruption(c: &impl std::fmt::Display) {
    if std::env::var_os("HWLINK_CHAOS_CORRUPT").is_some() {
        eprintln!("corrupt: {c}");
    }
}

pub fn recv_err(e: &RecvError) -> &'static str {
    match e {
        RecvError::Empty => "empty",
        RecvError::Timeout => "timeout",
        RecvError::Disconnected => "disconnected",
        RecvError::BufferTooSmall { .. } => "buffer-too-small",
        RecvError::Unavailable { .. } => "unavailable",
        RecvError::Corrupt(c) => {
            show_corruption(c);
            "corrupt"
        }
        RecvError::NoSuchMember { .. } => "no-such-member",
        RecvError::MemberGone { .. } => "member-gone",
        RecvError::LinkFailed { .. } => "link-failed",
        RecvError::Lagged(_) => "lagged",
        RecvError::WrongSize { .. } => "wrong-size",
        RecvError::Deserialize(_) => "deserialize",
    }
}

/// What the trial's environment says.
pub struct Setup {
    pub role: String,
    pub kind: Kind,
    pub wait: WaitStrategy,
    pub name: String,
    pub id: u32,
    pub seed: u64,
    pub size: usize,
    pub count: u64,
    pub run: Duration,
    pub peers: Vec<String>,
    pub loan: bool,
}

fn var(k: &str) -> String {
    std::env::var(k).unwrap_or_default()
}

impl Setup {
    pub fn from_env() -> Setup {
        Setup {
            role: var(env::ROLE),
            kind: var(env::KIND).parse().expect("kind"),
            wait: var(env::WAIT).parse().expect("wait strategy"),
            name: var(env::NAME),
            id: var(env::ID).parse().unwrap_or(0),
            seed: var(env::SEED).parse().unwrap_or(0),
            size: var(env::SIZE).parse().unwrap_or(64),
            count: var(env::COUNT).parse().unwrap_or(0),
            run: Duration::from_millis(var(env::RUN_MS).parse().unwrap_or(200)),
            peers: var(env::PEERS)
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            loan: var(env::LOAN) == "1",
        }
    }

    /// Slot size that fits this trial's messages.
    fn slot(&self) -> u32 {
        self.size.max(HEADER) as u32
    }

    /// How many past messages a subscriber asks for when it joins (from
    /// the seed: 0 up to a little over the topic's history).
    fn replay(&self) -> u32 {
        ((self.seed ^ u64::from(self.id).wrapping_mul(0x9E37)) % 6) as u32
    }

    /// Opens (or creates) this process's end; `sending` for a link's or a
    /// topic's sending end.
    pub fn open(&self, sending: bool) -> Result<End, String> {
        let t0 = Instant::now();
        loop {
            match self.try_open(sending) {
                Ok(end) => return Ok(end),
                Err(e) if t0.elapsed() < OPEN_PATIENCE => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn try_open(&self, sending: bool) -> Result<End, String> {
        let slot = self.slot();
        let capacity = if self.size > 64 * 1024 { 4 } else { 16 };
        let err = |e: hwlink::OpenError| e.to_string();
        match self.kind {
            Kind::Link => {
                let b = LinkBuilder::new(&self.name)
                    .capacity(capacity)
                    .slot_size(slot)
                    .backend(Backend::Shm)
                    .wait(self.wait)
                    .ready_timeout(Duration::from_millis(500));
                if sending {
                    b.create_sender().map(End::Tx).map_err(err)
                } else {
                    b.open_receiver().map(End::Rx).map_err(err)
                }
            }
            Kind::MailboxBounded | Kind::MailboxUnbounded | Kind::MailboxZero => {
                let buffering = match self.kind {
                    Kind::MailboxBounded => Buffering::Bounded(capacity),
                    Kind::MailboxUnbounded => Buffering::Unbounded {
                        byte_limit: 16 << 20,
                    },
                    _ => Buffering::Zero,
                };
                let b = MailboxBuilder::new()
                    .name(&self.name)
                    .buffering(buffering)
                    .slot_size(slot)
                    .backend(Backend::Shm)
                    .wait(self.wait)
                    .ready_timeout(Duration::from_millis(500));
                // Receiver 0 creates; everyone else opens.
                if self.role_creates() {
                    b.create(Access::SendRecv).map(End::Mbx).map_err(err)
                } else {
                    let access = if sending { Access::Send } else { Access::Recv };
                    b.open(&self.name, access).map(End::Mbx).map_err(err)
                }
            }
            Kind::DomainBounded | Kind::DomainUnbounded | Kind::DomainZero => {
                let buffering = match self.kind {
                    Kind::DomainBounded => Buffering::Bounded(capacity),
                    Kind::DomainUnbounded => Buffering::Unbounded {
                        byte_limit: 16 << 20,
                    },
                    _ => Buffering::Zero,
                };
                let me = format!("m{}", self.id);
                let m = Domain::builder(&self.name)
                    .capacity(capacity)
                    .buffering(buffering)
                    .slot_size(slot)
                    .backend(Backend::Shm)
                    .wait(self.wait)
                    .join(&me)
                    .map_err(err)?;
                let peer = self.peers.first().cloned().unwrap_or_default();
                // Wait for the peer to join: a send to a member not there
                // yet fails at once.
                let t0 = Instant::now();
                while !m.members().iter().any(|i| i.name == peer) {
                    if t0.elapsed() > OPEN_PATIENCE {
                        return Err(format!("member {peer} never joined"));
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Ok(End::Member(m, peer))
            }
            Kind::TopicBlock | Kind::TopicOverwrite => {
                let backpressure = if self.kind == Kind::TopicBlock {
                    Backpressure::Block
                } else {
                    Backpressure::Overwrite
                };
                // Publisher and subscribers alike open or create it, with
                // the same shape.
                let b = TopicBuilder::new(&self.name)
                    .capacity(capacity)
                    .slot_size(slot)
                    .max_subscribers(TOPIC_SUBSCRIBERS)
                    .history(capacity / 4)
                    .backpressure(backpressure)
                    .replay(self.replay())
                    .backend(Backend::Shm)
                    .wait(self.wait)
                    .ready_timeout(Duration::from_millis(500));
                if sending {
                    b.publish().map(End::Pub).map_err(err)
                } else {
                    b.subscribe().map(|s| End::Sub(Sub::new(s))).map_err(err)
                }
            }
        }
    }

    /// Whether this victim creates the mailbox (receiver 0).
    fn role_creates(&self) -> bool {
        self.role.ends_with("recv") && self.id == 0
    }
}

impl End {
    pub fn send(&mut self, msg: &[u8], form: Form, loan: bool) -> Result<(), &'static str> {
        let r = match (self, form) {
            (End::Tx(tx), form) if loan => {
                // A zero-copy loan, written in two halves: a kill may land
                // between them.
                let slot = match form {
                    Form::Try => tx.try_reserve(msg.len()),
                    _ => tx.reserve(msg.len()),
                };
                match slot {
                    Ok(mut s) => {
                        let half = msg.len() / 2;
                        s.write_at(0, &msg[..half]);
                        std::hint::black_box(&s);
                        s.write_at(half, &msg[half..]);
                        s.commit();
                        Ok(())
                    }
                    Err(e) => Err(send_err(&e)),
                }
            }
            (End::Pub(p), form) if loan => {
                // The same, on a topic: every subscriber reads the slot.
                let slot = match form {
                    Form::Try => p.try_loan(msg.len()),
                    Form::Timed(d) => p.loan_timeout(msg.len(), d),
                    Form::Block => p.loan(msg.len()),
                };
                match slot {
                    Ok(mut s) => {
                        let half = msg.len() / 2;
                        s.write_at(0, &msg[..half]);
                        std::hint::black_box(&s);
                        s.write_at(half, &msg[half..]);
                        s.publish();
                        Ok(())
                    }
                    Err(e) => Err(send_err(&e)),
                }
            }
            (End::Tx(tx), Form::Try) => tx.try_send(msg).map_err(|e| send_err(&e)),
            (End::Tx(tx), Form::Timed(d)) => tx.send_timeout(msg, d).map_err(|e| send_err(&e)),
            (End::Tx(tx), Form::Block) => tx.send(msg).map_err(|e| send_err(&e)),
            (End::Mbx(m), Form::Try) => m.try_send(msg).map_err(|e| send_err(&e)),
            (End::Mbx(m), Form::Timed(d)) => m.send_timeout(msg, d).map_err(|e| send_err(&e)),
            (End::Mbx(m), Form::Block) => m.send(msg).map_err(|e| send_err(&e)),
            (End::Member(m, p), Form::Try) => m.try_send(p, msg).map_err(|e| send_err(&e)),
            (End::Member(m, p), Form::Timed(d)) => {
                m.send_timeout(p, msg, d).map_err(|e| send_err(&e))
            }
            (End::Member(m, p), Form::Block) => m.send(p, msg).map_err(|e| send_err(&e)),
            (End::Pub(p), Form::Try) => p.try_send(msg).map_err(|e| send_err(&e)),
            (End::Pub(p), Form::Timed(d)) => p.send_timeout(msg, d).map_err(|e| send_err(&e)),
            (End::Pub(p), Form::Block) => p.send(msg).map_err(|e| send_err(&e)),
            (End::Rx(_) | End::Sub(_), _) => Err("not a sender"),
        };
        r
    }

    pub fn recv(&mut self, form: Form) -> Result<Vec<u8>, &'static str> {
        let e = |e: RecvError| recv_err(&e);
        match (self, form) {
            (End::Rx(rx), Form::Try) => rx.try_recv().map_err(e),
            (End::Rx(rx), Form::Timed(d)) => rx.recv_timeout(d).map_err(e),
            (End::Rx(rx), Form::Block) => rx.recv().map_err(e),
            (End::Mbx(m), Form::Try) => m.try_recv().map_err(e),
            (End::Mbx(m), Form::Timed(d)) => m.recv_timeout(d).map_err(e),
            (End::Mbx(m), Form::Block) => m.recv().map_err(e),
            (End::Member(m, p), Form::Try) => m.try_recv_from(p).map_err(e),
            (End::Member(m, p), Form::Timed(d)) => m.recv_from_timeout(p, d).map_err(e),
            (End::Member(m, p), Form::Block) => m.recv_from(p).map_err(e),
            (End::Sub(s), form) => s.recv(form),
            (End::Tx(_) | End::Pub(_), _) => Err("not a receiver"),
        }
    }

    /// n of the last `Lagged(n)` a topic subscriber's receive returned.
    pub fn last_lag(&self) -> u64 {
        match self {
            End::Sub(s) => s.last_lag,
            _ => 0,
        }
    }
}

/// One line to the harness (stdout is a pipe; each line is written whole).
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// What a fuzz victim counts.
#[derive(Default)]
struct Tally {
    ops: u64,
    ok: u64,
    corrupt: u64,
    wrong: u64,
    wrong_after_corrupt: u64,
    errors: std::collections::BTreeMap<&'static str, u64>,
    max_over_ms: f64,
    /// The call that overstayed most: its form and outcome.
    worst: String,
    /// Calls with a deadline (try and timed).
    bounded: u64,
    /// Of those, how many returned more than 10 ms past it.
    over10: u64,
    /// Overstay less the time this thread sat runnable on a run queue
    /// meanwhile (the CPU was the scheduler's to give, not ours to take):
    /// the longest, and how many past 10 ms.
    max_own_ms: f64,
    own_over10: u64,
}

impl Tally {
    fn note(&mut self, err: &'static str) {
        *self.errors.entry(err).or_insert(0) += 1;
        if err == "corrupt" {
            self.corrupt += 1;
        }
    }
    fn report(&self) {
        let errors: Vec<String> = self
            .errors
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        say(&format!(
            "@report ops={} ok={} corrupt={} wrong={} wrong_after_corrupt={} max_over_ms={:.1} worst={} bounded={} over10={} max_own_ms={:.1} own_over10={} errors={}",
            self.ops,
            self.ok,
            self.corrupt,
            self.wrong,
            self.wrong_after_corrupt,
            self.max_over_ms,
            self.worst.replace(' ', "_"),
            self.bounded,
            self.over10,
            self.max_own_ms,
            self.own_over10,
            errors.join(",")
        ));
    }
}

/// Runs one call the way `form` says, timing it against its own deadline.
fn timed<T>(
    t: &mut Tally,
    form: Form,
    f: impl FnOnce(Form) -> Result<T, &'static str>,
) -> Result<T, &'static str> {
    let queued0 = run_queue_wait();
    let t0 = Instant::now();
    let r = f(form);
    let took = t0.elapsed();
    let queued = run_queue_wait().saturating_sub(queued0);
    let allowed = match form {
        Form::Try => Duration::ZERO,
        Form::Timed(d) => d,
        Form::Block => Duration::MAX,
    };
    t.ops += 1;
    match &r {
        Ok(_) => t.ok += 1,
        Err(e) => t.note(e),
    }
    if form != Form::Block {
        t.bounded += 1;
    }
    if let Some(over) = took.checked_sub(allowed) {
        let ms = over.as_secs_f64() * 1e3;
        if ms > t.max_over_ms {
            t.max_over_ms = ms;
            t.worst = format!("{form:?}->{}", r.as_ref().err().unwrap_or(&"ok"));
        }
        t.over10 += u64::from(ms > 10.0);
        let own = over.saturating_sub(queued).as_secs_f64() * 1e3;
        t.max_own_ms = t.max_own_ms.max(own);
        t.own_over10 += u64::from(own > 10.0);
    }
    r
}

/// How long this thread has waited on a run queue, runnable but not
/// running (the second field of /proc/thread-self/schedstat).
fn run_queue_wait() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

fn pick_form(rng: &mut Rng) -> Form {
    match rng.below(10) {
        0..=2 => Form::Try,
        _ => Form::Timed(Duration::from_millis(1 + rng.below(60))),
    }
}

/// A fuzz victim: sends, receives, or both (domain members), for the
/// trial's run time under attack, then reports. Then, if told to
/// (`block-*` roles: link and topic receivers, domain members), waits in
/// a blocking receive with no deadline until it ends: the harness kills
/// the peer, and that call must end, whatever the attacker wrote.
pub fn fuzz_victim(setup: &Setup) {
    let mut rng = Rng::new(setup.seed ^ u64::from(setup.id).wrapping_mul(0x51));
    let sending = setup.role.contains("send");
    let member = setup.kind.is_domain();
    let mut end = match setup.open(sending) {
        Ok(e) => e,
        Err(e) => {
            say(&format!("@open-failed {e}"));
            Tally::default().report();
            return;
        }
    };
    say("@ready");
    let mut t = Tally::default();
    let mut seq = 0u64;
    // A topic's subscriber gets its one publisher's messages in order:
    // one that comes back to an earlier sequence number is wrong data too.
    let mut last_seq: Option<u64> = None;
    let stop = Instant::now() + setup.run;
    while Instant::now() < stop {
        let form = pick_form(&mut rng);
        let do_send = if member { rng.chance(50) } else { sending };
        if do_send {
            let len = HEADER + rng.below((setup.size - HEADER.min(setup.size)) as u64 + 1) as usize;
            let msg = proto::message(setup.id, seq, len.min(setup.size.max(HEADER)));
            // A topic's publisher also loans slots and writes them in place.
            let loan = setup.kind.is_topic() && rng.chance(30);
            if timed(&mut t, form, |f| end.send(&msg, f, loan)).is_ok() {
                seq += 1;
            }
        } else {
            if let Ok(m) = timed(&mut t, form, |f| end.recv(f)) {
                let checked = proto::check(&m);
                let in_order = match (checked, last_seq) {
                    (Some((_, q)), Some(last)) if setup.kind.is_topic() => q > last,
                    _ => true,
                };
                if let Some((_, q)) = checked {
                    last_seq = Some(q);
                }
                if checked.is_none() || !in_order {
                    t.wrong += 1;
                    if t.corrupt > 0 {
                        t.wrong_after_corrupt += 1;
                    }
                }
            }
        }
        // A poisoned end stays poisoned: no point in spinning on it.
        if t.errors.get("corrupt").is_some_and(|&n| n > 0) && t.ok + 1 < t.ops / 2 {
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    t.report();
    if setup.role.starts_with("block") {
        // A blocking call with no deadline: it may take messages, but must
        // end once the peer is gone.
        loop {
            match end.recv(Form::Block) {
                Ok(_) => continue,
                Err(e) => {
                    say(&format!("@blocking-ended {e}"));
                    break;
                }
            }
        }
    }
    drop(end);
}

/// Set once the harness writes a line to our stdin.
fn stdin_flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = flag.clone();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_line(&mut String::new());
        f.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    flag
}

/// A sweep sender: sends COUNT messages with blocking sends (a zero-copy
/// loan each, with LOAN), reporting each one accepted (`A id seq`) before
/// the next, or what ended it (`G time error`); then keeps its end open
/// until the harness says so (a link's creator unlinks its file when it
/// goes; a domain member leaving would end its links).
pub fn sweep_sender(setup: &Setup) {
    let mut end = match setup.open(true) {
        Ok(e) => e,
        Err(e) => {
            say(&format!("@open-failed {e}"));
            return;
        }
    };
    let done = stdin_flag();
    say("@ready");
    let mut ended = false;
    for seq in 0..setup.count {
        let msg = proto::message(setup.id, seq, setup.size);
        match end.send(&msg, Form::Block, setup.loan) {
            Ok(()) => say(&format!("A {} {seq}", setup.id)),
            Err(e) => {
                say(&format!("G {} {e}", proto::now_ns()));
                ended = true;
                break;
            }
        }
    }
    if !ended {
        say("@sent-all");
    }
    while !done.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(end);
}

/// A sweep receiver: receives and reports each message (`R id seq`, or
/// `W len` if malformed) and each `Lagged(n)` of a topic (`L n`) until its
/// peer is gone (`G time error`), or the harness says every sender is done
/// and nothing came for a while.
pub fn sweep_receiver(setup: &Setup) {
    let mut end = match setup.open(false) {
        Ok(e) => e,
        Err(e) => {
            say(&format!("@open-failed {e}"));
            return;
        }
    };
    let stop = stdin_flag();
    say("@ready");
    let mut idle_since = Instant::now();
    loop {
        match end.recv(Form::Timed(Duration::from_millis(50))) {
            Ok(m) => {
                idle_since = Instant::now();
                match proto::check(&m) {
                    Some((s, q)) => say(&format!("R {s} {q}")),
                    None => say(&format!("W {}", m.len())),
                }
            }
            Err("lagged") => {
                idle_since = Instant::now();
                say(&format!("L {}", end.last_lag()));
            }
            // An in-place read overwritten under it: the next receive
            // counts it in Lagged.
            Err("torn") => idle_since = Instant::now(),
            Err(e @ ("timeout" | "empty")) => {
                if std::env::var_os("HWLINK_CHAOS_TRACE").is_some() {
                    say(&format!("T {} {e}", proto::now_ns()));
                }
                if stop.load(std::sync::atomic::Ordering::SeqCst)
                    && idle_since.elapsed() >= Duration::from_millis(400)
                {
                    break;
                }
            }
            Err(e) => {
                say(&format!("G {} {e}", proto::now_ns()));
                break;
            }
        }
    }
    say("@done");
    drop(end);
}

//! Mailboxes between real processes: many producers and consumers on one
//! MPMC mailbox, every send/receive form with bounded and unbounded
//! buffering, back-pressure, an unbounded mailbox taking 1 GiB from a
//! stalled receiver, the memory limit, access modes and file modes, a
//! mailbox outliving its creator, and removal.
//!
//! The test binary re-executes itself as each peer process (`peer_entry`,
//! role in `HWLINK_MBX_ROLE`).

use hwlink::{
    admin, Access, Backend, Buffering, Mailbox, MailboxBuilder, MailboxId, OpenError, RecvError,
    SendError, WaitStrategy,
};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest any wait in a test or peer may take.
const PATIENCE: Duration = Duration::from_secs(60);

fn unique(tag: &str) -> String {
    format!("t{}-{tag}", std::process::id())
}

/// Removes the mailbox's regions when the test ends, however it ends.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let root = format!("mbx.{}", self.0);
        if let Ok(all) = admin::list() {
            for r in all {
                if r.name == root || r.name.starts_with(&format!("{root}.s")) {
                    let _ = admin::remove(&r.name);
                }
            }
        }
    }
}

/// Regions of mailbox `name` (root and segments) now on the machine.
fn regions_of(name: &str) -> Vec<String> {
    let root = format!("mbx.{name}");
    admin::list()
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .filter(|n| *n == root || n.starts_with(&format!("{root}.s")))
        .collect()
}

// ---------------------------------------------------------------------------
// Peers
// ---------------------------------------------------------------------------

/// A peer process running `role`, with `HWLINK_MBX_<K>` variables.
fn spawn(role: &str, env: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "peer_entry", "--nocapture", "--test-threads=1"])
        .env("HWLINK_MBX_ROLE", role)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(format!("HWLINK_MBX_{k}"), v);
    }
    cmd.spawn().expect("spawn peer")
}

/// Waits for a peer to exit 0 and returns its `@` report lines.
fn finish(child: Child, what: &str) -> Vec<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(PATIENCE * 3)
        .unwrap_or_else(|_| panic!("{what}: peer still running after {:?}", PATIENCE * 3))
        .unwrap();
    assert!(out.status.success(), "{what}: peer failed: {}", out.status);
    BufReader::new(&out.stdout[..])
        .lines()
        .map_while(Result::ok)
        // libtest may print "test peer_entry ... " on the same line first.
        .filter_map(|l| l.split_once('@').map(|(_, r)| r.to_string()))
        .collect()
}

fn var(k: &str) -> String {
    std::env::var(format!("HWLINK_MBX_{k}")).unwrap_or_else(|_| panic!("peer needs HWLINK_MBX_{k}"))
}

fn num(k: &str) -> u64 {
    var(k).parse().unwrap()
}

#[test]
fn peer_entry() {
    let Ok(role) = std::env::var("HWLINK_MBX_ROLE") else {
        return;
    };
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes plain integers.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    std::thread::spawn(|| {
        std::thread::sleep(PATIENCE * 3);
        eprintln!("peer: giving up after {:?}", PATIENCE * 3);
        std::process::exit(4);
    });
    match role.as_str() {
        "produce" => role_produce(),
        "consume" => role_consume(),
        "create_send_exit" => role_create_send_exit(),
        "offer_then_die" => role_offer_then_die(),
        "open_as_nobody" => role_open_as_nobody(),
        "stamp_receiver" => role_stamp_receiver(),
        other => panic!("unknown role {other}"),
    }
    std::process::exit(0);
}

/// Message `seq` of producer `p`: producer, sequence, then bytes derived
/// from both, `len` bytes long in all (at least 16).
fn message(p: u32, seq: u64, len: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&p.to_le_bytes());
    m.extend_from_slice(&[0; 4]);
    m.extend_from_slice(&seq.to_le_bytes());
    let mut x = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(p);
    while m.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        m.push(x as u8);
    }
    m
}

/// Checks a message built by [`message`]; returns (producer, sequence).
fn parse(m: &[u8]) -> (u32, u64) {
    assert!(m.len() >= 16, "message of {} bytes", m.len());
    let p = u32::from_le_bytes(m[..4].try_into().unwrap());
    let seq = u64::from_le_bytes(m[8..16].try_into().unwrap());
    assert_eq!(
        m,
        &message(p, seq, m.len())[..],
        "message {p}/{seq} corrupted"
    );
    (p, seq)
}

fn msg_len(seq: u64, max: usize) -> usize {
    16 + (seq.wrapping_mul(2_654_435_761) % (max as u64 - 15)) as usize
}

/// How a peer sends or receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    Blocking,
    Try,
    Polling,
    Timeout,
}

impl Form {
    fn all() -> [Form; 4] {
        [Form::Blocking, Form::Try, Form::Polling, Form::Timeout]
    }
    fn parse(s: &str) -> Form {
        match s {
            "blocking" => Form::Blocking,
            "try" => Form::Try,
            "polling" => Form::Polling,
            "timeout" => Form::Timeout,
            o => panic!("form {o}"),
        }
    }
    fn name(self) -> &'static str {
        match self {
            Form::Blocking => "blocking",
            Form::Try => "try",
            Form::Polling => "polling",
            Form::Timeout => "timeout",
        }
    }
    fn wait(self) -> WaitStrategy {
        if self == Form::Polling {
            WaitStrategy::BusyPoll
        } else {
            WaitStrategy::SpinPark
        }
    }
}

fn send_form(mbx: &mut Mailbox, form: Form, msg: &[u8]) {
    let deadline = Instant::now() + PATIENCE;
    match form {
        Form::Blocking | Form::Polling => mbx.send(msg).unwrap(),
        Form::Timeout => mbx.send_timeout(msg, PATIENCE).unwrap(),
        Form::Try => loop {
            match mbx.try_send(msg) {
                Ok(()) => break,
                Err(SendError::Full(_)) => {
                    assert!(Instant::now() < deadline, "try_send: full for too long");
                    std::thread::yield_now();
                }
                Err(e) => panic!("try_send: {e}"),
            }
        },
    }
}

fn recv_form(mbx: &mut Mailbox, form: Form) -> Vec<u8> {
    let deadline = Instant::now() + PATIENCE;
    match form {
        Form::Blocking | Form::Polling => mbx.recv().unwrap(),
        Form::Timeout => mbx.recv_timeout(PATIENCE).unwrap(),
        Form::Try => loop {
            match mbx.try_recv() {
                Ok(m) => break m,
                Err(RecvError::Empty) => {
                    assert!(Instant::now() < deadline, "try_recv: empty for too long");
                    std::thread::yield_now();
                }
                Err(e) => panic!("try_recv: {e}"),
            }
        },
    }
}

/// Producer `ID` sends `COUNT` messages of up to `MAX` bytes to mailbox
/// NAME with `FORM`.
fn role_produce() {
    let (id, count, max) = (num("ID") as u32, num("COUNT"), num("MAX") as usize);
    let form = Form::parse(&var("FORM"));
    let mut mbx = MailboxBuilder::new()
        .wait(form.wait())
        .open(&var("NAME"), Access::Send)
        .expect("producer: open");
    for seq in 0..count {
        send_form(&mut mbx, form, &message(id, seq, msg_len(seq, max)));
    }
    println!("@SENT {count}");
}

/// Consumer: receives with `FORM` until a stop message (producer u32::MAX),
/// checking each message and that each producer's sequence numbers rise;
/// reports per producer: count, sum of sequences, xor of their hashes.
fn role_consume() {
    let form = Form::parse(&std::env::var("HWLINK_MBX_CFORM").unwrap_or_else(|_| var("FORM")));
    let producers = num("PRODUCERS") as usize;
    let mut mbx = MailboxBuilder::new()
        .wait(form.wait())
        .open(&var("NAME"), Access::Recv)
        .expect("consumer: open");
    let mut last = vec![None::<u64>; producers];
    let mut stats = vec![(0u64, 0u64, 0u64); producers];
    loop {
        let m = recv_form(&mut mbx, form);
        let (p, seq) = parse(&m);
        if p == u32::MAX {
            break;
        }
        let p = p as usize;
        if let Some(prev) = last[p] {
            assert!(seq > prev, "producer {p}: {seq} after {prev}");
        }
        last[p] = Some(seq);
        stats[p].0 += 1;
        stats[p].1 += seq;
        stats[p].2 ^= hash(seq);
    }
    for (p, (n, sum, x)) in stats.iter().enumerate() {
        println!("@GOT {p} {n} {sum} {x}");
    }
}

fn hash(seq: u64) -> u64 {
    let mut x = seq.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^ (x >> 31)
}

/// Creates mailbox NAME (bounded), sends COUNT messages, and exits without
/// removing it.
fn role_create_send_exit() {
    let name = var("NAME").replace("{pid}", &std::process::id().to_string());
    let mut mbx = Mailbox::create(&name, Buffering::Bounded(64)).expect("create");
    for seq in 0..num("COUNT") {
        mbx.send(message(7, seq, 40)).unwrap();
    }
    println!("@ID {}", mbx.id().0);
}

/// Opens unbounded mailbox NAME to send, sends COUNT 64-byte messages
/// (enough for the next segment to be made ahead and offered), waits for
/// the offer, then exits without detaching: as if killed, with its offer
/// left in the mailbox.
fn role_offer_then_die() {
    let mut mbx = Mailbox::open(&var("NAME"), Access::Send).expect("open");
    for seq in 0..num("COUNT") {
        mbx.send(message(3, seq, 64)).unwrap();
    }
    let deadline = Instant::now() + PATIENCE;
    while mbx.segment_stats().unwrap().prepared == 0 {
        assert!(Instant::now() < deadline, "no segment was made ahead");
        std::thread::sleep(Duration::from_millis(1));
    }
    println!("@OFFERED {}", mbx.segment_stats().unwrap().prepared);
    std::io::Write::flush(&mut std::io::stdout()).unwrap();
    // No destructor runs: the handle neither detaches nor takes its offer
    // back.
    std::process::exit(0);
}

/// Drops to uid/gid 65534 and tries to open mailbox NAME; reports the
/// outcome.
fn role_open_as_nobody() {
    // SAFETY: plain syscalls with integer arguments; group first.
    unsafe {
        assert_eq!(libc::setgid(65534), 0);
        assert_eq!(libc::setuid(65534), 0);
    }
    match Mailbox::open(&var("NAME"), Access::Send) {
        Ok(mut m) => {
            m.send(message(9, 0, 20)).unwrap();
            println!("@OPENED");
        }
        Err(e) => println!("@DENIED {e}"),
    }
}

/// Sums the consumers' reports and checks every producer's messages
/// arrived exactly once.
fn check_exactly_once(reports: &[Vec<String>], producers: usize, count: u64) {
    let mut total = vec![(0u64, 0u64, 0u64); producers];
    for lines in reports {
        for l in lines {
            let w: Vec<u64> = l
                .strip_prefix("GOT ")
                .unwrap()
                .split(' ')
                .map(|x| x.parse().unwrap())
                .collect();
            let t = &mut total[w[0] as usize];
            t.0 += w[1];
            t.1 += w[2];
            t.2 ^= w[3];
        }
    }
    let want_xor = (0..count).fold(0, |x, s| x ^ hash(s));
    for (p, t) in total.iter().enumerate() {
        assert_eq!(
            *t,
            (count, count * (count - 1) / 2, want_xor),
            "producer {p}: (count, sum, xor) of what the consumers got"
        );
    }
}

/// Runs `producers` producer and `consumers` consumer processes on a new
/// mailbox; checks exactly-once delivery, FIFO per producer.
fn many_to_many(
    tag: &str,
    buffering: Buffering,
    producers: u32,
    consumers: u32,
    count: u64,
    form: Form,
) {
    many_to_many_forms(tag, buffering, producers, consumers, count, form, form)
}

/// [`many_to_many`] with one form for producers and another for consumers.
fn many_to_many_forms(
    tag: &str,
    buffering: Buffering,
    producers: u32,
    consumers: u32,
    count: u64,
    form: Form,
    consumer_form: Form,
) {
    let name = unique(tag);
    let _c = Cleanup(name.clone());
    let mut mbx = MailboxBuilder::new()
        .name(&name)
        .buffering(buffering)
        .slot_size(200)
        .create(Access::SendRecv)
        .unwrap();
    let common = |extra: Vec<(&'static str, String)>| {
        let mut v = vec![
            ("NAME", name.clone()),
            ("FORM", form.name().to_string()),
            ("CFORM", consumer_form.name().to_string()),
        ];
        v.extend(extra);
        v
    };
    let cons: Vec<Child> = (0..consumers)
        .map(|_| {
            spawn(
                "consume",
                &common(vec![("PRODUCERS", producers.to_string())]),
            )
        })
        .collect();
    let prods: Vec<Child> = (0..producers)
        .map(|p| {
            spawn(
                "produce",
                &common(vec![
                    ("ID", p.to_string()),
                    ("COUNT", count.to_string()),
                    ("MAX", "200".into()),
                ]),
            )
        })
        .collect();
    for p in prods {
        assert_eq!(finish(p, "producer"), vec![format!("SENT {count}")]);
    }
    for _ in 0..consumers {
        mbx.send(message(u32::MAX, 0, 16)).unwrap();
    }
    let reports: Vec<Vec<String>> = cons.into_iter().map(|c| finish(c, "consumer")).collect();
    check_exactly_once(&reports, producers as usize, count);
    assert!(mbx.is_empty());
    mbx.remove().unwrap();
    assert!(
        regions_of(&name).is_empty(),
        "files left: {:?}",
        regions_of(&name)
    );
}

#[test]
fn four_producers_four_consumers_bounded_exactly_once_fifo() {
    many_to_many("m44", Buffering::Bounded(64), 4, 4, 50_000, Form::Blocking);
}

#[test]
fn four_producers_four_consumers_unbounded_exactly_once_fifo() {
    many_to_many(
        "u44",
        Buffering::Unbounded {
            byte_limit: 1 << 30,
        },
        4,
        4,
        50_000,
        Form::Blocking,
    );
}

/// Every send/receive form with bounded and unbounded buffering, one
/// producer and one consumer process.
#[test]
fn every_form_with_bounded_and_unbounded() {
    for buffering in [
        Buffering::Bounded(8),
        Buffering::Unbounded {
            byte_limit: 64 << 20,
        },
    ] {
        for form in Form::all() {
            let tag = format!(
                "f{}{}",
                form.name(),
                if matches!(buffering, Buffering::Bounded(_)) {
                    "b"
                } else {
                    "u"
                }
            );
            many_to_many(&tag, buffering, 1, 1, 5_000, form);
        }
    }
}

/// Bounded back-pressure: with n messages queued, `try_send` is Full and
/// `send_timeout` times out; a consumer process then gets all, in order.
#[test]
fn bounded_back_pressure() {
    let name = unique("bp");
    let _c = Cleanup(name.clone());
    let n = 8u64;
    let mut mbx = MailboxBuilder::new()
        .name(&name)
        .buffering(Buffering::Bounded(n as u32))
        .create(Access::Send)
        .unwrap();
    for seq in 0..n {
        mbx.try_send(message(0, seq, 32)).unwrap();
    }
    assert_eq!(mbx.len(), n);
    let m = match mbx.try_send(message(0, n, 32)) {
        Err(SendError::Full(m)) => m,
        other => panic!("try_send on a full mailbox: {other:?}"),
    };
    let t0 = Instant::now();
    let m = match mbx.send_timeout(m, Duration::from_millis(100)) {
        Err(SendError::Timeout(m)) => m,
        other => panic!("send_timeout on a full mailbox: {other:?}"),
    };
    assert!(t0.elapsed() >= Duration::from_millis(100));
    let consumer = spawn(
        "consume",
        &[
            ("NAME", name.clone()),
            ("FORM", "blocking".into()),
            ("PRODUCERS", "1".into()),
        ],
    );
    // The consumer frees room: the blocked send goes through.
    mbx.send_timeout(m, PATIENCE).unwrap();
    mbx.send(message(u32::MAX, 0, 16)).unwrap();
    let got = finish(consumer, "consumer");
    check_exactly_once(&[got], 1, n + 1);
}

/// An unbounded mailbox takes 1 GiB from a producer process while the
/// receiver is stalled (no send ever waits), then everything drains
/// intact and the drained segments' files are gone.
#[test]
fn unbounded_one_gib_with_stalled_receiver() {
    let name = unique("gib");
    let _c = Cleanup(name.clone());
    let slot = 64 * 1024;
    let count = (1u64 << 30) / slot as u64;
    let mut mbx = MailboxBuilder::new()
        .name(&name)
        .buffering(Buffering::Unbounded {
            byte_limit: 3 << 29,
        })
        .slot_size(slot)
        .backend(Backend::Auto)
        .create(Access::Recv)
        .unwrap();
    let producer = spawn(
        "produce",
        &[
            ("NAME", name.clone()),
            ("FORM", "try".into()),
            ("ID", "0".into()),
            ("COUNT", count.to_string()),
            ("MAX", slot.to_string()),
        ],
    );
    assert_eq!(finish(producer, "producer"), vec![format!("SENT {count}")]);
    let queued_bytes = mbx.bytes_in_use();
    assert!(queued_bytes >= 1 << 29, "only {queued_bytes} bytes in use");
    assert!(regions_of(&name).len() > 2, "no segments were chained");
    let mut total = 0u64;
    for seq in 0..count {
        let m = mbx.try_recv().unwrap();
        assert_eq!(parse(&m), (0, seq));
        total += m.len() as u64;
    }
    assert_eq!(mbx.try_recv(), Err(RecvError::Empty));
    assert!(total > (1 << 29), "{total} bytes");
    // Drained segments were removed; at most the newest one lingers.
    assert!(
        regions_of(&name).len() <= 2,
        "left: {:?}",
        regions_of(&name)
    );
    eprintln!(
        "1 GiB test: {count} messages, {total} bytes, peak {} bytes of segments, now {}",
        queued_bytes,
        mbx.bytes_in_use()
    );
}

/// Past its byte limit an unbounded mailbox refuses at once with a clear
/// error (never blocking), keeps what it took, and takes more once
/// drained.
#[test]
fn unbounded_memory_limit_refuses_without_blocking() {
    let name = unique("lim");
    let _c = Cleanup(name.clone());
    let mut mbx = MailboxBuilder::new()
        .name(&name)
        .buffering(Buffering::Unbounded {
            byte_limit: 8 << 20,
        })
        .slot_size(4000)
        .backend(Backend::Shm)
        .create(Access::SendRecv)
        .unwrap();
    let mut sent = 0u64;
    let err = loop {
        let t0 = Instant::now();
        match mbx.send(message(0, sent, 4000)) {
            Ok(()) => sent += 1,
            Err(e) => {
                assert!(t0.elapsed() < Duration::from_secs(5), "send blocked");
                break e;
            }
        }
        assert!(sent < 100_000, "the limit never hit");
    };
    let text = err.to_string();
    assert!(
        matches!(err, SendError::MemoryLimit { limit, .. } if limit == 8 << 20),
        "{err:?}"
    );
    assert!(text.contains("8388608") && text.contains("drain"), "{text}");
    assert!(mbx.bytes_in_use() <= 8 << 20);
    for seq in 0..sent {
        assert_eq!(parse(&mbx.try_recv().unwrap()), (0, seq));
    }
    mbx.send(message(0, sent, 4000)).unwrap();
    assert_eq!(parse(&mbx.recv().unwrap()), (0, sent));
}

/// Bytes of the files of mailbox `name` (root and segments).
fn file_bytes(name: &str) -> u64 {
    let root = format!("mbx.{name}");
    admin::list()
        .unwrap()
        .into_iter()
        .filter(|r| r.name == root || r.name.starts_with(&format!("{root}.s")))
        .map(|r| r.size)
        .sum()
}

/// A producer that dies with the next segment made ahead and offered
/// leaves it to the mailbox: counted in its bytes, not stale for `hwlink rm
/// --stale`, linked by the next send that fills the newest segment, and
/// removed with the mailbox.
#[test]
fn an_offer_left_by_a_dead_producer_is_linked_by_the_next_sender() {
    let name = unique("off");
    let _c = Cleanup(name.clone());
    let mut mbx = MailboxBuilder::new()
        .name(&name)
        .buffering(Buffering::Unbounded {
            byte_limit: 64 << 20,
        })
        .slot_size(64)
        .backend(Backend::Shm)
        .create(Access::SendRecv)
        .unwrap();
    let count = 20u64;
    let out = finish(
        spawn(
            "offer_then_die",
            &[("NAME", name.clone()), ("COUNT", count.to_string())],
        ),
        "producer",
    );
    assert_eq!(out, vec!["OFFERED 1".to_string()]);
    assert_eq!(regions_of(&name).len(), 2, "{:?}", regions_of(&name));
    assert_eq!(mbx.bytes_in_use(), file_bytes(&name));
    let swept = admin::remove_stale().unwrap();
    assert!(!swept.iter().any(|n| n.contains(&name)), "{swept:?}");
    assert_eq!(regions_of(&name).len(), 2);
    // The send that finds segment 0 full links the dead producer's offer.
    let mut sent = 0u64;
    loop {
        let st = mbx.segment_stats().unwrap();
        if st.linked_ahead + st.linked_inline > 0 {
            // (This handle's own preparation of the next one may have run
            // already: the linking send pushed into the linked segment.)
            assert_eq!((st.linked_ahead, st.linked_inline), (1, 0));
            break;
        }
        mbx.send(message(4, sent, 64)).unwrap();
        sent += 1;
        assert!(sent < 10_000, "segment 0 never filled");
    }
    for seq in 0..count {
        assert_eq!(parse(&mbx.try_recv().unwrap()), (3, seq));
    }
    for seq in 0..sent {
        assert_eq!(parse(&mbx.try_recv().unwrap()), (4, seq));
    }
    mbx.remove().unwrap();
    assert_eq!(regions_of(&name), Vec::<String>::new());
}

/// `hwlink rm` of a mailbox whose producer died with an offer outstanding
/// (nobody attached) removes the offered segment with the rest.
#[test]
fn removing_a_mailbox_removes_the_offer_of_a_dead_producer() {
    let name = unique("offrm");
    let _c = Cleanup(name.clone());
    drop(
        MailboxBuilder::new()
            .name(&name)
            .buffering(Buffering::Unbounded {
                byte_limit: 64 << 20,
            })
            .slot_size(64)
            .backend(Backend::Shm)
            .create(Access::Recv)
            .unwrap(),
    );
    let out = finish(
        spawn(
            "offer_then_die",
            &[("NAME", name.clone()), ("COUNT", "20".into())],
        ),
        "producer",
    );
    assert_eq!(out, vec!["OFFERED 1".to_string()]);
    assert_eq!(regions_of(&name).len(), 2, "{:?}", regions_of(&name));
    // Not removed, so not stale: the offer stays the mailbox's.
    let swept = admin::remove_stale().unwrap();
    assert!(!swept.iter().any(|n| n.contains(&name)), "{swept:?}");
    admin::remove(&format!("mbx.{name}")).unwrap();
    assert_eq!(regions_of(&name), Vec::<String>::new());
}

/// The creator decides who may attach: by access mode (checked on open)
/// and by file mode (checked by the kernel, tested as another user).
#[test]
fn access_modes_and_file_modes() {
    let name = unique("acc");
    let _c = Cleanup(name.clone());
    let creator = MailboxBuilder::new()
        .name(&name)
        .allow(Access::Send)
        .create(Access::Send)
        .unwrap();
    match Mailbox::open(&name, Access::Recv) {
        Err(e @ OpenError::AccessDenied { .. }) => {
            assert!(e.to_string().contains("allows send"), "{e}")
        }
        other => panic!("receive attachment to a send-only mailbox: {other:?}"),
    }
    let mut sender = Mailbox::open(&name, Access::Send).unwrap();
    sender.send(b"hello").unwrap();
    assert_eq!(sender.try_recv(), Err(RecvError::Disconnected));
    drop(sender);
    drop(creator);

    // File mode 0600: another user cannot map it; 0666: it can.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "SKIPPED: file-mode half of access_modes_and_file_modes: needs root to switch users"
        );
        return;
    }
    for (mode, tag, opens) in [(0o600, "p", false), (0o666, "o", true)] {
        let name = unique(&format!("acc{tag}"));
        let _c = Cleanup(name.clone());
        let mut mbx = MailboxBuilder::new()
            .name(&name)
            .file_mode(mode)
            .backend(Backend::Shm)
            .create(Access::SendRecv)
            .unwrap();
        let report = finish(spawn("open_as_nobody", &[("NAME", name.clone())]), "nobody");
        if opens {
            assert_eq!(report, vec!["OPENED".to_string()], "mode {mode:o}");
            assert_eq!(parse(&mbx.recv_timeout(PATIENCE).unwrap()), (9, 0));
        } else {
            assert!(report[0].starts_with("DENIED"), "mode {mode:o}: {report:?}");
            assert!(
                report[0].to_lowercase().contains("permission"),
                "{report:?}"
            );
        }
    }
}

/// A mailbox outlives its creator; it is found by id; `hwlink rm` removes
/// it and a process waiting on it learns it is gone.
#[test]
fn outlives_its_creator_then_removed_by_rm() {
    let name = unique("out");
    let _c = Cleanup(name.clone());
    let report = finish(
        spawn(
            "create_send_exit",
            &[("NAME", name.clone()), ("COUNT", "10".into())],
        ),
        "creator",
    );
    let id: u64 = report[0].strip_prefix("ID ").unwrap().parse().unwrap();
    let status = admin::list()
        .unwrap()
        .into_iter()
        .find(|r| r.name == format!("mbx.{name}"))
        .expect("the mailbox outlived its creator");
    assert!(!status.creator_alive);
    assert!(!status.is_stale(), "a live mailbox is not stale");
    let mut mbx = MailboxBuilder::new()
        .open_id(MailboxId(id), Access::Recv)
        .unwrap();
    assert_eq!(mbx.name(), name);
    for seq in 0..10 {
        assert_eq!(parse(&mbx.recv_timeout(PATIENCE).unwrap()), (7, seq));
    }
    let waiter = std::thread::spawn(move || {
        let r = mbx.recv_timeout(PATIENCE);
        (r, mbx)
    });
    std::thread::sleep(Duration::from_millis(100));
    admin::remove(&format!("mbx.{name}")).unwrap();
    let (r, mbx) = waiter.join().unwrap();
    assert_eq!(r, Err(RecvError::Disconnected));
    // Its files stay while a process is attached (receivers may still need
    // a segment), and go with the last one.
    assert!(!regions_of(&name).is_empty());
    drop(mbx);
    assert!(regions_of(&name).is_empty());
    assert!(Mailbox::open(&name, Access::Send).is_err());
}

// ---------------------------------------------------------------------------
// Zero capacity (rendezvous)
// ---------------------------------------------------------------------------

#[test]
fn four_producers_four_consumers_zero_capacity_exactly_once_fifo() {
    many_to_many("z44", Buffering::Zero, 4, 4, 5_000, Form::Blocking);
}

/// Every form with zero capacity. A try on both sides can never meet (a
/// try_send needs a receiver already waiting, a try_recv a sender already
/// waiting), so each try form runs against the other side blocking.
#[test]
fn every_form_with_zero_capacity() {
    for (form, consumer_form) in [
        (Form::Blocking, Form::Blocking),
        (Form::Polling, Form::Polling),
        (Form::Timeout, Form::Timeout),
        (Form::Try, Form::Blocking),
        (Form::Blocking, Form::Try),
    ] {
        let tag = format!("z{}{}", &form.name()[..2], &consumer_form.name()[..2]);
        many_to_many_forms(&tag, Buffering::Zero, 1, 1, 2_000, form, consumer_form);
    }
}

/// A rendezvous sender is released only after a receiver has the message:
/// the receiver process stamps the moment its closure runs (CLOCK_MONOTONIC,
/// shared by every process), after a pause; the sender's `send` must return
/// after that stamp, every time. try_send succeeds only with a receiver
/// waiting; timeouts on both sides hand nothing over.
#[test]
fn zero_capacity_sender_released_only_after_receipt() {
    let name = unique("zr");
    let _c = Cleanup(name.clone());
    let mut mbx = MailboxBuilder::new()
        .name(&name)
        .buffering(Buffering::Zero)
        .create(Access::SendRecv)
        .unwrap();
    // Nobody waits: try forms fail, timeouts hand the message back.
    assert!(matches!(mbx.try_send(b"x"), Err(SendError::Full(_))));
    let t0 = Instant::now();
    match mbx.send_timeout(b"y", Duration::from_millis(50)) {
        Err(SendError::Timeout(m)) => assert_eq!(m, b"y"),
        other => panic!("send_timeout with no receiver: {other:?}"),
    }
    assert!(t0.elapsed() >= Duration::from_millis(50));
    assert_eq!(mbx.try_recv(), Err(RecvError::Empty));
    assert_eq!(
        mbx.recv_timeout(Duration::from_millis(20)),
        Err(RecvError::Timeout)
    );

    let rounds = 20u64;
    let receiver = spawn(
        "stamp_receiver",
        &[("NAME", name.clone()), ("COUNT", rounds.to_string())],
    );
    let mut returned = Vec::new();
    for seq in 0..rounds {
        mbx.send_timeout(message(0, seq, 32), PATIENCE).unwrap();
        returned.push(monotonic_ns());
    }
    let stamps = finish(receiver, "stamp receiver");
    assert_eq!(stamps.len() as u64, rounds);
    for (seq, (line, back)) in stamps.iter().zip(&returned).enumerate() {
        let got: u64 = line.strip_prefix("AT ").unwrap().parse().unwrap();
        assert!(
            *back > got,
            "send #{seq} returned at {back} before the receiver had it at {got}"
        );
    }

    // With a receiver already waiting, try_send succeeds.
    let waiting = spawn(
        "stamp_receiver",
        &[
            ("NAME", name.clone()),
            ("COUNT", "1".into()),
            ("PAUSE", "0".into()),
        ],
    );
    let deadline = Instant::now() + PATIENCE;
    loop {
        match mbx.try_send(message(0, 0, 32)) {
            Ok(()) => break,
            Err(SendError::Full(_)) => {
                assert!(
                    Instant::now() < deadline,
                    "try_send never met the waiting receiver"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(finish(waiting, "waiting receiver").len(), 1);
    mbx.remove().unwrap();
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Receives COUNT messages from mailbox NAME (waiting PAUSE ms, default 20,
/// before each), reporting `AT <ns>` from inside each receive's closure.
fn role_stamp_receiver() {
    let mut mbx = Mailbox::open(&var("NAME"), Access::Recv).expect("open");
    let pause = std::env::var("HWLINK_MBX_PAUSE").map_or(20, |p| p.parse().unwrap());
    for seq in 0..num("COUNT") {
        std::thread::sleep(Duration::from_millis(pause));
        let at = mbx
            .recv_with_timeout(PATIENCE, |m, _| {
                assert_eq!(parse(&m.to_vec()), (0, seq));
                monotonic_ns()
            })
            .expect("recv");
        println!("@AT {at}");
    }
}

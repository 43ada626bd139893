//! The Rust peer of the C API's programs: the other process of the C and
//! C++ examples (`examples/c`) and of the C test (`userspace/capi/tests/c`).
//!
//! ```text
//! peer produce --link NAME [--count N]    like examples/c/producer.c
//! peer consume --link NAME                like examples/c/consumer.cpp
//! peer ctest --prefix P --count N         the C test's peer (see ctest.c)
//! ```
//!
//! `produce` and `consume` speak the examples' protocol: each message is
//! an 8-byte little-endian sequence number followed by the text
//! `hello from <language> #<seq>`; the consumer creates the link's
//! receiving end, the producer opens the sending end (retrying until the
//! consumer has created it), sends, and closes; the consumer receives until
//! `Disconnected` and checks every sequence number arrived once, in order.
//!
//! `ctest` speaks the C test's protocol, described in ctest.c: numbered
//! messages of 8 to 64 bytes whose every byte is checked, over the links
//! `P.c2r` and `P.r2c` and the mailboxes `P.m-c2r` and `P.m-r2c`.

use hwlink::{Access, LinkBuilder, Mailbox, OpenError, Receiver, RecvError, Sender};
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Retries `open` while the other side has not created the object yet.
fn retry<T>(what: &str, mut open: impl FnMut() -> Result<T, OpenError>) -> Result<T, String> {
    let start = Instant::now();
    loop {
        match open() {
            Ok(t) => return Ok(t),
            Err(e) if start.elapsed() < Duration::from_secs(20) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(format!("opening {what}: {e}")),
        }
    }
}

/// The examples' message: sequence number, then the greeting.
fn example_message(seq: u64) -> Vec<u8> {
    let mut m = seq.to_le_bytes().to_vec();
    m.extend_from_slice(format!("hello from Rust #{seq}").as_bytes());
    m
}

fn produce(args: &[String]) -> Result<(), String> {
    let link = arg(args, "--link").unwrap_or_else(|| "c-demo".into());
    let count: u64 = arg(args, "--count")
        .map_or(Ok(100_000), |c| c.parse())
        .map_err(|e| format!("--count: {e}"))?;
    let mut tx = retry(&link, || LinkBuilder::new(&link).open_sender())?;
    for seq in 0..count {
        tx.send(example_message(seq))
            .map_err(|e| format!("send #{seq}: {e}"))?;
    }
    println!("rust producer: sent {count} messages on {link}");
    Ok(())
}

fn consume(args: &[String]) -> Result<(), String> {
    let link = arg(args, "--link").unwrap_or_else(|| "c-demo".into());
    let mut rx = LinkBuilder::new(&link)
        .create_receiver()
        .map_err(|e| e.to_string())?;
    let mut next = 0u64;
    let mut from = String::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(m) => {
                let seq = u64::from_le_bytes(m[..8].try_into().map_err(|_| "short message")?);
                let text = String::from_utf8_lossy(&m[8..]).into_owned();
                if seq != next
                    || !text.starts_with("hello from ")
                    || !text.ends_with(&format!("#{seq}"))
                {
                    return Err(format!("message #{next}: got #{seq} {text:?}"));
                }
                if from.is_empty() {
                    from = text["hello from ".len()..]
                        .split(" #")
                        .next()
                        .unwrap_or("")
                        .to_string();
                }
                next += 1;
            }
            Err(RecvError::Disconnected) => break,
            Err(e) => return Err(format!("recv #{next}: {e}")),
        }
    }
    println!("rust consumer: {next} messages from the {from} producer, each once, in order");
    Ok(())
}

/// The C test's message `seq`: 8 to 64 bytes, the sequence number, then
/// bytes that depend on it and their position.
fn test_message(seq: u64, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&seq.to_le_bytes());
    let len = 8 + (seq % 57) as usize;
    for i in 8..len {
        out.push((seq.wrapping_mul(131).wrapping_add(i as u64)) as u8);
    }
}

/// FNV-1a, over every byte of every message in order.
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}
const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

fn check(seq: u64, got: &[u8], want: &mut Vec<u8>) -> Result<(), String> {
    test_message(seq, want);
    if got != want.as_slice() {
        return Err(format!(
            "message #{seq}: {} bytes, not the {} expected (or wrong bytes)",
            got.len(),
            want.len()
        ));
    }
    Ok(())
}

fn summary(count: u64, sum: u64) -> Vec<u8> {
    let mut m = b"SUMMARY\0".to_vec();
    m.extend_from_slice(&count.to_le_bytes());
    m.extend_from_slice(&sum.to_le_bytes());
    m
}

/// The longest the C test's peer waits for anything: a mailbox does not
/// end when the C test dies (other processes could still attach), so every
/// wait is bounded, and a failed test leaves no peer behind for long.
const PATIENCE: Duration = Duration::from_secs(120);

fn ctest(args: &[String]) -> Result<(), String> {
    let prefix = arg(args, "--prefix").ok_or("--prefix is required")?;
    let count: u64 = arg(args, "--count")
        .ok_or("--count is required")?
        .parse()
        .map_err(|e| format!("--count: {e}"))?;
    let mut rx: Receiver = retry("c2r", || {
        LinkBuilder::new(format!("{prefix}.c2r")).open_receiver()
    })?;
    let mut tx: Sender = retry("r2c", || {
        LinkBuilder::new(format!("{prefix}.r2c")).open_sender()
    })?;
    let mut mrx = retry("m-c2r", || {
        Mailbox::open(&format!("{prefix}.m-c2r"), Access::Recv)
    })?;
    let mut mtx = retry("m-r2c", || {
        Mailbox::open(&format!("{prefix}.m-r2c"), Access::Send)
    })?;
    let mut want = Vec::new();
    let mut msg = Vec::new();

    // 1: the C test sends `count` messages on the link; check each.
    let mut sum = FNV_START;
    for seq in 0..count {
        let m = rx
            .recv_timeout(PATIENCE)
            .map_err(|e| format!("link recv #{seq}: {e}"))?;
        check(seq, &m, &mut want)?;
        sum = fnv(sum, &m);
    }
    tx.send(summary(count, sum)).map_err(|e| e.to_string())?;

    // 2: send `count` on the link.
    for seq in 0..count {
        test_message(seq, &mut msg);
        tx.send(&msg[..])
            .map_err(|e| format!("link send #{seq}: {e}"))?;
    }

    // 3: the C test sends `count` on its mailbox; check each.
    let mut sum = FNV_START;
    for seq in 0..count {
        let m = mrx
            .recv_timeout(PATIENCE)
            .map_err(|e| format!("mailbox recv #{seq}: {e}"))?;
        check(seq, &m, &mut want)?;
        sum = fnv(sum, &m);
    }
    tx.send(summary(count, sum)).map_err(|e| e.to_string())?;

    // 4: send `count` on the other mailbox.
    for seq in 0..count {
        test_message(seq, &mut msg);
        mtx.send_timeout(&msg[..], PATIENCE)
            .map_err(|e| format!("mailbox send #{seq}: {e}"))?;
    }

    // 5: say so, then wait on the link: the C test kills us
    // (SIGKILL) here and checks its ends see us gone.
    tx.send(b"DONE").map_err(|e| e.to_string())?;
    let last = rx.recv_timeout(PATIENCE);
    Err(format!(
        "the C test was to kill this process, but the link said {last:?}"
    ))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("produce") => produce(&args),
        Some("consume") => consume(&args),
        Some("ctest") => ctest(&args),
        _ => Err(
            "usage: peer produce|consume --link NAME [--count N] | peer ctest --prefix P --count N"
                .into(),
        ),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peer: {e}");
            ExitCode::FAILURE
        }
    }
}

//! The link roles a peer process runs (see `child.rs`): streaming,
//! idle ends, clean closes, creators, the zero-copy script and echo.

use super::child::{Ctx, PEER_WAIT};
use super::message::message;
use super::msg::{check, fill, MAX_MSG};
use super::raw::region;
use super::stream::{checksum, consume, produce, CHECKSUM_INIT};
use super::zc::{reader_side, writer_side, Chan};
use hwlink::{LinkBuilder, RecvError};
use std::time::{Duration, Instant};

/// Runs link role `role`; returns whether it is one. Every role drops its
/// links before it returns, so that a creator's region file is removed
/// before `exit`.
pub fn run(role: &str, ctx: &Ctx) -> bool {
    match role {
        "produce" => role_produce(ctx),
        "consume" => role_consume(ctx),
        "produce_forever" => role_produce_forever(ctx),
        "idle_receiver" => role_idle_receiver(ctx),
        "idle_sender" => role_idle_sender(ctx),
        "send_then_close" => role_send_then_close(ctx),
        "recv_then_close" => role_recv_then_close(ctx),
        "create_and_wait" => role_create_and_wait(ctx),
        "zc" => role_zc(ctx),
        "echo" => role_echo(ctx),
        "produce_batches" => role_produce_batches(ctx),
        _ => return false,
    }
    true
}

/// Sends messages `0..COUNT` to link NAME (opened), then reports the
/// checksum and closes.
fn role_produce(ctx: &Ctx) {
    let count = ctx.u64("COUNT");
    let mut tx = LinkBuilder::new(ctx.name())
        .wait(ctx.wait())
        .open_sender()
        .expect("open_sender");
    let h = produce(count, |seq, m| {
        if let Err(e) = tx.send_timeout(m, PEER_WAIT) {
            panic!("producer: sending message #{seq} failed: {e:?} ({e})");
        }
    });
    ctx.report(&format!("CHECKSUM {h:016x} {count}"));
    drop(tx);
}

/// Receives messages `0..COUNT` from link NAME (opened), checking each,
/// then expects Disconnected and reports the checksum.
fn role_consume(ctx: &Ctx) {
    let count = ctx.u64("COUNT");
    let mut rx = LinkBuilder::new(ctx.name())
        .wait(ctx.wait())
        .open_receiver()
        .expect("open_receiver");
    let h = consume(count, |seq, buf| {
        let recv_vec = |rx: &mut hwlink::Receiver, buf: &mut [u8]| {
            rx.recv_timeout(PEER_WAIT).map(|v| {
                let n = v.len();
                buf[..n].copy_from_slice(&v);
                n
            })
        };
        // Alternate the receive calls; each has a timeout.
        let got = if seq % 2 == 0 {
            recv_vec(&mut rx, buf)
        } else {
            match rx.try_recv_with(|m| m.copy_to(buf)) {
                Err(RecvError::Empty) => recv_vec(&mut rx, buf),
                other => other,
            }
        };
        got.unwrap_or_else(|e| panic!("consumer: message #{seq}: {e:?} ({e})"))
    });
    match rx.recv_timeout(PEER_WAIT) {
        Err(RecvError::Disconnected) => {}
        other => panic!("consumer: after {count} messages expected Disconnected, got {other:?}"),
    }
    ctx.report(&format!("CHECKSUM {h:016x} {count}"));
    drop(rx);
}

/// Opens the sender of NAME and sends messages 0, 1, 2, ... until killed.
/// MODE=fast: as fast as possible. MODE=idle: sends COUNT messages, reports
/// `IDLE`, then sends nothing more and waits to be killed.
fn role_produce_forever(ctx: &Ctx) {
    let mut tx = LinkBuilder::new(ctx.name())
        .wait(ctx.wait())
        .open_sender()
        .expect("open_sender");
    let mut buf = [0u8; MAX_MSG];
    let idle = ctx.var("MODE") == "idle";
    let limit = if idle { ctx.u64("COUNT") } else { u64::MAX };
    ctx.report("READY");
    for seq in 0..limit {
        let len = fill(seq, &mut buf);
        if let Err(e) = tx.send_timeout(&buf[..len], PEER_WAIT) {
            panic!("producer: sending message #{seq} failed: {e:?}");
        }
    }
    ctx.report("IDLE");
    std::thread::sleep(PEER_WAIT);
    panic!("producer: was not killed");
}

/// Opens the receiver of NAME, reports READY, and reads nothing until the
/// command `drain` (then receives COUNT messages, checks them, reports
/// `DRAINED <checksum>`), or `exit`; or, with DROP_AFTER_MS set, drops the
/// receiver after that long, reports `DROPPED` and waits for `exit`.
fn role_idle_receiver(ctx: &Ctx) {
    let mut rx = LinkBuilder::new(ctx.name())
        .wait(ctx.wait())
        .open_receiver()
        .expect("open_receiver");
    ctx.report("READY");
    if let Ok(ms) = std::env::var("HWLINK_TEST_DROP_AFTER_MS") {
        std::thread::sleep(Duration::from_millis(ms.parse().unwrap()));
        drop(rx);
        ctx.report("DROPPED");
        ctx.command("exit", PEER_WAIT);
        return;
    }
    match ctx.next_command(PEER_WAIT).as_deref() {
        Some("drain") => {
            let count = ctx.u64("COUNT");
            let mut scratch = [0u8; MAX_MSG];
            let mut h = CHECKSUM_INIT;
            for seq in 0..count {
                let m = rx
                    .recv_timeout(PEER_WAIT)
                    .unwrap_or_else(|e| panic!("receiver: message #{seq}: {e:?}"));
                check(seq, &m, &mut scratch).unwrap_or_else(|e| panic!("receiver: {e}"));
                h = checksum(h, &m);
            }
            ctx.report(&format!("DRAINED {h:016x}"));
            ctx.command("exit", PEER_WAIT);
        }
        Some("exit") => {}
        other => panic!("idle receiver: unexpected command {other:?}"),
    }
    drop(rx);
}

/// Opens the sender of NAME, reports READY, then on each command `send N`
/// sends messages up to N (exclusive) and reports `SENT`; `exit` ends.
fn role_idle_sender(ctx: &Ctx) {
    let mut tx = LinkBuilder::new(ctx.name())
        .wait(ctx.wait())
        .open_sender()
        .expect("open_sender");
    ctx.report("READY");
    let mut next = 0u64;
    loop {
        let cmd = ctx
            .next_command(PEER_WAIT)
            .expect("idle sender: no command");
        if cmd == "exit" {
            break;
        }
        let upto: u64 = cmd
            .strip_prefix("send ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("idle sender: bad command {cmd}"));
        while next < upto {
            tx.send_timeout(message(next), PEER_WAIT)
                .unwrap_or_else(|e| panic!("idle sender: #{next}: {e:?}"));
            next += 1;
        }
        ctx.report("SENT");
    }
    drop(tx);
}

/// Opens the sender of NAME, sends COUNT messages, waits PAUSE_MS (so the
/// receiver goes to sleep), closes the sender, reports `CLOSED` and stays
/// alive until `exit`: the receiver must see the close itself, not a death.
fn role_send_then_close(ctx: &Ctx) {
    let mut tx = LinkBuilder::new(ctx.name())
        .wait(ctx.wait())
        .open_sender()
        .expect("open_sender");
    for seq in 0..ctx.u64("COUNT") {
        tx.send_timeout(message(seq), PEER_WAIT)
            .unwrap_or_else(|e| panic!("sender: #{seq}: {e:?}"));
    }
    std::thread::sleep(ctx.millis("PAUSE_MS"));
    drop(tx);
    ctx.report("CLOSED");
    ctx.command("exit", PEER_WAIT);
}

/// Opens the receiver of NAME, receives COUNT messages, closes the
/// receiver, reports `DROPPED` and stays alive until `exit`.
fn role_recv_then_close(ctx: &Ctx) {
    let mut rx = LinkBuilder::new(ctx.name())
        .wait(ctx.wait())
        .open_receiver()
        .expect("open_receiver");
    let mut scratch = [0u8; MAX_MSG];
    for seq in 0..ctx.u64("COUNT") {
        let m = rx
            .recv_timeout(PEER_WAIT)
            .unwrap_or_else(|e| panic!("receiver: #{seq}: {e:?}"));
        check(seq, &m, &mut scratch).unwrap_or_else(|e| panic!("receiver: {e}"));
    }
    drop(rx);
    ctx.report("DROPPED");
    ctx.command("exit", PEER_WAIT);
}

/// Creates link NAME (END=sender or receiver, capacity CAP, slot 256); a
/// sender sends COUNT messages. Reports `READY <path>`, then waits for
/// `exit` and drops the link (removing the region) before exiting.
fn role_create_and_wait(ctx: &Ctx) {
    let b = LinkBuilder::new(ctx.name())
        .capacity(ctx.var_or("CAP", "256").parse().unwrap())
        .slot_size(256)
        .wait(ctx.wait());
    let end: Box<dyn std::any::Any> = if ctx.var("END") == "sender" {
        let mut tx = b.create_sender().expect("create_sender");
        for seq in 0..ctx.u64("COUNT") {
            tx.try_send(message(seq))
                .unwrap_or_else(|e| panic!("creator: #{seq}: {e:?}"));
        }
        Box::new(tx)
    } else {
        Box::new(b.create_receiver().expect("create_receiver"))
    };
    let path = region(&ctx.name())
        .expect("the created region is not listed")
        .path;
    ctx.report(&format!("READY {}", path.display()));
    ctx.command("exit", PEER_WAIT);
    drop(end);
}

impl Chan for &Ctx {
    fn tell(&mut self, word: &str) {
        self.report(word);
    }
    fn hear(&mut self, word: &str) {
        self.command(word, PEER_WAIT);
    }
}

/// Opens END (`write` or `read`) of link NAME and runs that side of the
/// zero-copy script with the parent.
fn role_zc(mut ctx: &Ctx) {
    let b = LinkBuilder::new(ctx.name()).wait(ctx.wait());
    match ctx.var("END").as_str() {
        "write" => writer_side(b.open_sender().expect("open_sender"), &mut ctx),
        "read" => reader_side(b.open_receiver().expect("open_receiver"), &mut ctx),
        other => panic!("zc: END {other}"),
    }
}

/// Opens the receiver of `NAME-a` and the sender of `NAME-b` and sends back
/// every message it receives, until `NAME-a`'s sender closes; then reports
/// `DONE <count>`.
fn role_echo(ctx: &Ctx) {
    let name = ctx.name();
    let wait = ctx.wait();
    let mut rx = LinkBuilder::new(format!("{name}-a"))
        .wait(wait)
        .open_receiver()
        .expect("open_receiver");
    let mut tx = LinkBuilder::new(format!("{name}-b"))
        .wait(wait)
        .open_sender()
        .expect("open_sender");
    let mut buf = vec![0u8; rx.max_message()];
    let mut n = 0u64;
    loop {
        match rx.recv_timeout(PEER_WAIT) {
            Ok(m) => {
                buf[..m.len()].copy_from_slice(&m);
                tx.send_timeout(&buf[..m.len()], PEER_WAIT)
                    .unwrap_or_else(|e| panic!("echo: sending back #{n}: {e:?}"));
                n += 1;
            }
            Err(RecvError::Disconnected) => break,
            Err(e) => panic!("echo: after {n} messages: {e:?}"),
        }
    }
    ctx.report(&format!("DONE {n}"));
    drop((rx, tx));
}

/// Sends messages `0..COUNT` to link NAME (opened) in batches of up to
/// BATCH with `write_batch` (alternating `push` and in-place `slot`), then
/// reports the checksum and closes.
fn role_produce_batches(ctx: &Ctx) {
    let count = ctx.u64("COUNT");
    let max = ctx.u64("BATCH") as usize;
    let mut tx = LinkBuilder::new(ctx.name())
        .wait(ctx.wait())
        .open_sender()
        .expect("open_sender");
    let mut buf = [0u8; MAX_MSG];
    let mut h = CHECKSUM_INIT;
    let mut seq = 0u64;
    let deadline = Instant::now() + PEER_WAIT;
    while seq < count {
        assert!(Instant::now() < deadline, "producer: too slow");
        let want = max.min((count - seq) as usize);
        let mut batch = match tx.write_batch(want) {
            Ok(b) => b,
            Err(e) => panic!("producer: write_batch at #{seq}: {e:?}"),
        };
        while batch.remaining() > 0 {
            let len = fill(seq, &mut buf);
            h = checksum(h, &buf[..len]);
            if seq % 2 == 0 {
                batch.push(&buf[..len]).expect("push");
            } else {
                batch.slot(len).expect("slot").copy_from(&buf[..len]);
            }
            seq += 1;
        }
        batch.commit();
    }
    ctx.report(&format!("CHECKSUM {h:016x} {count}"));
    drop(tx);
}

//! A pool of worker processes taking jobs from one mailbox.
//!
//! The parent creates two mailboxes, `jobs` and `results`, starts three
//! worker processes (this program again, with the argument `worker`),
//! hands out 100,000 jobs and collects one result per job. Each job reaches
//! exactly one worker; the parent checks every answer and prints how the
//! jobs were spread and the throughput.
//!
//! ```text
//! cargo run --release --example workers [-- --workers N --jobs N]
//! ```

use hwlink::{Access, Buffering, Mailbox, MailboxBuilder};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

mod common;
use common::arg;

/// A job: its number and the range of integers whose squares to sum.
fn job(id: u64) -> [u8; 24] {
    let mut b = [0u8; 24];
    b[..8].copy_from_slice(&id.to_le_bytes());
    b[8..16].copy_from_slice(&(id % 1000).to_le_bytes());
    b[16..].copy_from_slice(&(id % 1000 + 100).to_le_bytes());
    b
}

fn answer(from: u64, to: u64) -> u64 {
    (from..to).map(|x| x * x).sum()
}

fn word(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap())
}

const STOP: u64 = u64::MAX;

fn worker(tag: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut jobs = Mailbox::open(&format!("{tag}-jobs"), Access::Recv)?;
    let mut results = Mailbox::open(&format!("{tag}-results"), Access::Send)?;
    let me = std::process::id();
    loop {
        let j = jobs.recv_timeout(Duration::from_secs(30))?;
        let id = word(&j, 0);
        if id == STOP {
            return Ok(());
        }
        let mut r = [0u8; 24];
        r[..8].copy_from_slice(&id.to_le_bytes());
        r[8..16].copy_from_slice(&answer(word(&j, 1), word(&j, 2)).to_le_bytes());
        r[16..].copy_from_slice(&u64::from(me).to_le_bytes());
        results.send(r)?;
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("worker") {
        return worker(&args[2]);
    }
    let workers = arg("--workers", 3);
    let count = arg("--jobs", 100_000);
    let tag = format!("workers-{}", std::process::id());
    let mut jobs = MailboxBuilder::new()
        .name(format!("{tag}-jobs"))
        .buffering(Buffering::Bounded(256))
        .slot_size(64)
        .create(Access::Send)?;
    let mut results = MailboxBuilder::new()
        .name(format!("{tag}-results"))
        .buffering(Buffering::Unbounded {
            byte_limit: 256 << 20,
        })
        .slot_size(64)
        .create(Access::Recv)?;
    println!(
        "mailbox `jobs` id {} ({}), `results` id {} ({}), on {}",
        jobs.id(),
        jobs.buffering(),
        results.id(),
        results.buffering(),
        jobs.backing()
    );
    let exe = std::env::current_exe()?;
    let mut children: Vec<Child> = (0..workers)
        .map(|_| Command::new(&exe).args(["worker", &tag]).spawn())
        .collect::<Result<_, _>>()?;

    let t0 = Instant::now();
    let mut per_worker = std::collections::BTreeMap::<u64, u64>::new();
    let mut seen = vec![false; count as usize];
    let mut got = 0u64;
    let mut sent = 0u64;
    while got < count {
        // Keep the job queue topped up without blocking on it, and collect
        // whatever results are in.
        while sent < count && jobs.try_send(job(sent)).is_ok() {
            sent += 1;
        }
        let r = if sent < count {
            match results.try_recv() {
                Ok(r) => r,
                Err(_) => continue,
            }
        } else {
            results.recv_timeout(Duration::from_secs(30))?
        };
        let id = word(&r, 0);
        let j = job(id);
        assert_eq!(
            word(&r, 1),
            answer(word(&j, 1), word(&j, 2)),
            "job {id}: wrong answer"
        );
        assert!(
            !std::mem::replace(&mut seen[id as usize], true),
            "job {id} answered twice"
        );
        *per_worker.entry(word(&r, 2)).or_default() += 1;
        got += 1;
    }
    let elapsed = t0.elapsed();
    for _ in 0..workers {
        jobs.send(STOP.to_le_bytes())?;
    }
    for c in &mut children {
        assert!(c.wait()?.success(), "a worker failed");
    }
    println!(
        "{count} jobs done by {workers} worker processes in {:.3} s: {:.0} jobs/s, every job exactly once",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64()
    );
    for (pid, n) in per_worker {
        println!("  worker pid {pid}: {n} jobs");
    }
    jobs.remove()?;
    results.remove()?;
    Ok(())
}

//! Request and response between a client and a server process over a
//! direct link.
//!
//! The client (this process) joins a domain as `client` and starts the
//! server (this program again, with the argument `server`), which joins as
//! `server` and answers whoever asks (`recv_any`), by name. The client makes
//! 100,000 calls, checks every answer, and prints the call rate and the
//! round-trip percentiles.
//!
//! ```text
//! cargo run --release --example rpc [-- --calls N]
//! ```

use hwlink::Domain;
use std::process::Command;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

/// A request: call id, operation (0 add, 1 multiply, 2 stop), operands.
fn request(id: u64, op: u64, a: u64, b: u64) -> [u8; 32] {
    let mut r = [0u8; 32];
    for (i, v) in [id, op, a, b].into_iter().enumerate() {
        r[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
    }
    r
}

fn word(m: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(m[i * 8..i * 8 + 8].try_into().unwrap())
}

fn server(domain: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut me = Domain::join(domain, "server")?;
    loop {
        let (caller, req) = me.recv_any_timeout(T)?;
        let (id, op, a, b) = (word(&req, 0), word(&req, 1), word(&req, 2), word(&req, 3));
        let result = match op {
            0 => a.wrapping_add(b),
            1 => a.wrapping_mul(b),
            _ => return Ok(()),
        };
        let mut resp = [0u8; 16];
        resp[..8].copy_from_slice(&id.to_le_bytes());
        resp[8..].copy_from_slice(&result.to_le_bytes());
        me.send_timeout(&caller, resp, T)?;
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("server") {
        return server(&args[2]);
    }
    let calls: u64 = args
        .iter()
        .position(|a| a == "--calls")
        .and_then(|i| args.get(i + 1))
        .map_or(100_000, |v| v.parse().expect("a number"));
    let domain = format!("rpc-{}", std::process::id());
    let mut me = Domain::join(&domain, "client")?;
    let mut child = Command::new(std::env::current_exe()?)
        .args(["server", &domain])
        .spawn()?;
    let t0 = Instant::now();
    while me.members().len() < 2 {
        assert!(t0.elapsed() < T, "the server did not join");
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut rtt = Vec::with_capacity(calls as usize);
    let start = Instant::now();
    for id in 0..calls {
        let (op, a, b) = (id % 2, id, id * 3 + 1);
        let sent = Instant::now();
        me.send_timeout("server", request(id, op, a, b), T)?;
        let resp = me.recv_from_timeout("server", T)?;
        rtt.push(sent.elapsed().as_nanos() as u64);
        let want = if op == 0 {
            a.wrapping_add(b)
        } else {
            a.wrapping_mul(b)
        };
        assert_eq!(
            (word(&resp, 0), word(&resp, 1)),
            (id, want),
            "call {id}: wrong answer"
        );
    }
    let elapsed = start.elapsed();
    me.send_timeout("server", request(0, 2, 0, 0), T)?;
    assert!(child.wait()?.success(), "the server failed");
    rtt.sort_unstable();
    let pct = |p: f64| rtt[((rtt.len() as f64 * p) as usize).min(rtt.len() - 1)] as f64 / 1e3;
    println!("rpc client -> server over a direct link, {calls} calls, every answer checked");
    println!(
        "{:.0} calls/s; round trip p50 {:.2} us, p90 {:.2} us, p99 {:.2} us, max {:.2} us",
        calls as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0)
    );
    Ok(())
}

//! A TCP gateway in front of an hwlink worker process, served by one tokio
//! task: lines from a TCP client go into the mailbox `…-req`, a worker
//! process (this program again, with the argument `worker`) answers each
//! into the mailbox `…-resp`, and the answers go back to the client. The
//! task waits on the socket and the mailbox at once (`tokio::select!`).
//!
//! ```text
//! cargo run --release --features tokio --example async_gateway [-- --self-test N]
//! ```
//!
//! Without `--self-test` it listens on 127.0.0.1:7878 for one client
//! (try `nc 127.0.0.1 7878`); with it, a client thread sends N lines and
//! checks every answer, then everything stops.

use hwlink::tokio::AsyncMailbox;
use hwlink::{Access, Buffering, Mailbox, MailboxBuilder, WaitStrategy};
use std::io::{BufRead, BufReader, Write};
use std::process::Command;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(30);

/// The worker: answers each request with its text in capitals.
fn worker(base: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut req = Mailbox::open(&format!("{base}-req"), Access::Recv)?;
    let mut resp = Mailbox::open(&format!("{base}-resp"), Access::Send)?;
    loop {
        let line = req.recv_timeout(T)?;
        if line == b"stop" {
            return Ok(());
        }
        resp.send_timeout(line.to_ascii_uppercase(), T)?;
    }
}

/// The gateway task: the TCP client and the response mailbox, in one
/// `select!` loop.
async fn gateway(
    listener: tokio::net::TcpListener,
    req: &mut AsyncMailbox,
    resp: &mut AsyncMailbox,
) -> Result<u64, Box<dyn std::error::Error>> {
    let (socket, _) = listener.accept().await?;
    let (read, mut write) = socket.into_split();
    let mut lines = tokio::io::BufReader::new(read).lines();
    let (mut open, mut pending, mut served) = (true, 0u64, 0u64);
    while open || pending > 0 {
        tokio::select! {
            line = lines.next_line(), if open => match line? {
                Some(line) => {
                    req.send(line.into_bytes()).await.map_err(|e| e.to_string())?;
                    pending += 1;
                }
                None => open = false,
            },
            answer = resp.recv() => {
                let mut answer = answer?;
                answer.push(b'\n');
                write.write_all(&answer).await?;
                pending -= 1;
                served += 1;
            }
        }
    }
    req.send(&b"stop"[..]).await.map_err(|e| e.to_string())?;
    Ok(served)
}

/// The self-test's client: `n` lines, each answer checked.
fn client(port: u16, n: u64) -> Result<(), String> {
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let mut out = stream.try_clone().map_err(|e| e.to_string())?;
    let sender = std::thread::spawn(move || {
        for i in 0..n {
            writeln!(out, "request number {i}").expect("write");
        }
        out.shutdown(std::net::Shutdown::Write).expect("shutdown");
    });
    let mut answers = BufReader::new(stream).lines();
    for i in 0..n {
        let got = answers
            .next()
            .ok_or("the gateway closed early")?
            .map_err(|e| e.to_string())?;
        if got != format!("REQUEST NUMBER {i}") {
            return Err(format!("answer {i} is `{got}`"));
        }
    }
    sender.join().map_err(|_| "client writer panicked")?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("worker") {
        return worker(&args[2]);
    }
    let self_test: Option<u64> = args
        .iter()
        .position(|a| a == "--self-test")
        .map(|i| args.get(i + 1).map_or(Ok(1000), |v| v.parse()))
        .transpose()?;
    let base = format!("gw-{}", std::process::id());
    let make = |suffix: &str, access| {
        MailboxBuilder::new()
            .name(format!("{base}-{suffix}"))
            .buffering(Buffering::Bounded(256))
            .wait(WaitStrategy::SpinPark)
            .create(access)
    };
    let (mut req, resp) = (make("req", Access::Send)?, make("resp", Access::Recv)?);
    // The async front end waits on each mailbox's descriptor (io_uring): on
    // a kernel without it, say so and leave no mailbox behind.
    if let Err(e) = req.as_fd().map(drop) {
        req.remove()?;
        resp.remove()?;
        return Err(e.into());
    }
    let mut worker = Command::new(std::env::current_exe()?)
        .args(["worker", &base])
        .spawn()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let served = rt.block_on(async {
        let addr = if self_test.is_some() {
            "127.0.0.1:0"
        } else {
            "127.0.0.1:7878"
        };
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let port = listener.local_addr()?.port();
        let client = self_test.map(|n| std::thread::spawn(move || client(port, n)));
        if client.is_none() {
            println!("gateway: listening on 127.0.0.1:{port}");
        }
        let (mut req, mut resp) = (AsyncMailbox::new(req)?, AsyncMailbox::new(resp)?);
        let served = gateway(listener, &mut req, &mut resp).await?;
        if let Some(c) = client {
            c.join().map_err(|_| "client panicked")??;
        }
        // The creator removes the mailboxes: no file is left behind.
        req.into_inner().remove()?;
        resp.into_inner().remove()?;
        Ok::<_, Box<dyn std::error::Error>>(served)
    })?;
    if !worker.wait()?.success() {
        return Err("the worker failed".into());
    }
    println!("gateway: {served} requests answered through the worker process");
    Ok(())
}

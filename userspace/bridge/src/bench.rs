//! `hwlink-bridge bench` (run by `hwlink bench --workloads bridge`): round
//! trip and 64 B / 64 KiB one-way throughput between two network hosts
//! (namespaces joined by a veth pair) over three paths measured in one
//! run: an hwlink link on each host joined by two bridges, plain zenoh
//! pub/sub between two processes, and a TCP socket pair. Each peer is its
//! own process (`hwlink-bridge bench-peer`), started in its host with
//! `ip netns exec`; it prints one result line.

use crate::local::{Kind, LocalOptions, Put, Sink, Source, Took};
use crate::netns::{Hosts, IP_A, IP_B};
use crate::{wire, BridgeError};
use hwlink::WaitStrategy;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use zenoh::qos::CongestionControl;
use zenoh::Wait;

/// First word of a stop message: the sender has sent its last.
const STOP: u64 = u64::MAX;
/// Round trips before measuring.
const WARMUP: usize = 2000;
/// Messages per burst of the latency-under-load rows.
const BURST: u64 = 64;
const TCP_PORT: u16 = 7500;
const ZENOH_PORT: u16 = 7501;
const BRIDGE_PORT: u16 = 7502;

/// What `hwlink-bridge bench` measures.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Seconds each measurement runs.
    pub secs: f64,
    /// Throughput sizes.
    pub sizes: Vec<usize>,
    /// Round-trip size.
    pub rt_size: usize,
    /// More arguments for both bridges (e.g. `--wait poll`).
    pub bridge_args: Vec<String>,
}

fn now_ns(t0: Instant) -> u64 {
    t0.elapsed().as_nanos() as u64
}

fn percentiles(mut v: Vec<u64>) -> String {
    percentiles_as("rt", &mut v)
}

fn percentiles_as(what: &str, v: &mut [u64]) -> String {
    if v.is_empty() {
        return format!("{what} 0 0 0 0 0");
    }
    v.sort_unstable();
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    format!(
        "{what} {} {} {} {} {}",
        v.len(),
        p(0.5),
        p(0.99),
        p(0.999),
        v[v.len() - 1]
    )
}

/// Wall-clock nanoseconds: one clock for every process of the machine,
/// whatever its network namespace.
fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A source's pace: flat out, or bursts of `burst` messages every
/// millisecond, each stamped with its send time (bytes 8..16).
struct Pacer {
    burst: u64,
    start: Instant,
}

impl Pacer {
    fn stamp(&self, i: u64, buf: &mut [u8]) {
        if self.burst == 0 || buf.len() < 16 {
            return;
        }
        if i % self.burst == 0 {
            let due = self.start + Duration::from_millis(i / self.burst);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        buf[8..16].copy_from_slice(&wall_ns().to_le_bytes());
    }
}

/// One-way latencies of stamped messages, as a sink sees them.
#[derive(Default)]
struct Lat(Vec<u64>);

impl Lat {
    fn note(&mut self, msg: &[u8]) {
        if let Some(ts) = msg
            .get(8..16)
            .map(|w| u64::from_le_bytes(w.try_into().unwrap()))
        {
            if ts != 0 {
                self.0.push(wall_ns().saturating_sub(ts));
            }
        }
    }

    /// Prints the percentiles, the first `WARMUP` messages left out.
    fn print(mut self) {
        if self.0.len() > WARMUP {
            println!("{}", percentiles_as("lat", &mut self.0[WARMUP..]));
        }
    }
}

fn tag(buf: &mut [u8], seq: u64) {
    buf[..8].copy_from_slice(&seq.to_le_bytes());
}

fn seq_of(b: &[u8]) -> u64 {
    b.get(..8)
        .map_or(0, |w| u64::from_le_bytes(w.try_into().unwrap()))
}

fn zsession(
    listen: Option<String>,
    connect: Option<String>,
) -> Result<zenoh::Session, BridgeError> {
    let mut c = zenoh::Config::default();
    let mut set = |k: &str, v: String| {
        c.insert_json5(k, &v)
            .map_err(|e| BridgeError::zenoh(format!("setting {k}"), e))
    };
    set("scouting/multicast/enabled", "false".into())?;
    if let Some(l) = listen {
        set("listen/endpoints", format!("[{l:?}]"))?;
    }
    if let Some(c) = connect {
        set("connect/endpoints", format!("[{c:?}]"))?;
    }
    zenoh::open(c)
        .wait()
        .map_err(|e| BridgeError::zenoh("opening the session".into(), e))
}

fn local_opts(size: usize) -> LocalOptions {
    LocalOptions {
        capacity: 256,
        slot_size: (size.max(64) + 64) as u32,
        wait: WaitStrategy::SpinPark,
    }
}

fn open_err(kind: Kind, name: &str) -> impl FnOnce(hwlink::OpenError) -> BridgeError + '_ {
    move |source| BridgeError::Open {
        kind,
        name: name.to_string(),
        source,
    }
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> BridgeError {
    move |e| BridgeError::Local(format!("{what}: {e}"))
}

fn tcp_connect(addr: &str) -> Result<TcpStream, BridgeError> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => {
                s.set_nodelay(true).map_err(io("TCP_NODELAY"))?;
                return Ok(s);
            }
            Err(e) if Instant::now() >= until => return Err(io("connecting")(e)),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// One benchmark process: `role` on `size`-byte messages for `secs`.
pub fn peer(
    role: &str,
    size: usize,
    secs: f64,
    burst: u64,
    names: &[String],
) -> Result<(), BridgeError> {
    let size = size.max(8);
    let run = Duration::from_secs_f64(secs);
    let mut buf = vec![0u8; size];
    let t0 = Instant::now();
    let mut lat = Lat::default();
    let out = match role {
        "tcp-echo" | "tcp-sink" => {
            let l = TcpListener::bind((IP_B, TCP_PORT)).map_err(io("listening"))?;
            println!("ready");
            let _ = std::io::stdout().flush();
            let (mut s, _) = l.accept().map_err(io("accepting"))?;
            s.set_nodelay(true).map_err(io("TCP_NODELAY"))?;
            if role == "tcp-echo" {
                while s.read_exact(&mut buf).is_ok() {
                    s.write_all(&buf).map_err(io("echo"))?;
                }
                return Ok(());
            }
            let (mut msgs, mut start) = (0u64, None);
            loop {
                s.read_exact(&mut buf).map_err(io("reading"))?;
                if seq_of(&buf) == STOP {
                    break;
                }
                lat.note(&buf);
                start.get_or_insert_with(|| now_ns(t0));
                msgs += 1;
            }
            lat.print();
            format!(
                "tput {msgs} {} {}",
                msgs * size as u64,
                now_ns(t0) - start.unwrap_or(0)
            )
        }
        "tcp-ping" | "tcp-source" => {
            let mut s = tcp_connect(&format!("{IP_B}:{TCP_PORT}"))?;
            // A stream lets Nagle's algorithm coalesce small writes.
            s.set_nodelay(role == "tcp-ping")
                .map_err(io("TCP_NODELAY"))?;
            if role == "tcp-ping" {
                let mut rts = Vec::new();
                let mut i = 0u64;
                while t0.elapsed() < run || rts.len() < 1000 {
                    tag(&mut buf, i);
                    let t = Instant::now();
                    s.write_all(&buf).map_err(io("writing"))?;
                    s.read_exact(&mut buf).map_err(io("reading"))?;
                    if i as usize >= WARMUP {
                        rts.push(t.elapsed().as_nanos() as u64);
                    }
                    i += 1;
                }
                percentiles(rts)
            } else {
                let mut i = 0u64;
                let pace = Pacer {
                    burst,
                    start: Instant::now(),
                };
                while t0.elapsed() < run {
                    tag(&mut buf, i);
                    pace.stamp(i, &mut buf);
                    s.write_all(&buf).map_err(io("writing"))?;
                    i += 1;
                }
                tag(&mut buf, STOP);
                s.write_all(&buf).map_err(io("writing"))?;
                format!("sent {i}")
            }
        }
        "zenoh-pong" | "zenoh-sink" => {
            let z = zsession(Some(format!("tcp/{IP_B}:{ZENOH_PORT}")), None)?;
            let (tx, rx) = mpsc::channel::<Vec<u8>>();
            if role == "zenoh-pong" {
                let p = z
                    .declare_publisher("hwlink-bench/pong")
                    .congestion_control(CongestionControl::Block)
                    .express(true)
                    .wait()
                    .map_err(|e| BridgeError::zenoh("publisher".into(), e))?;
                let _s = z
                    .declare_subscriber("hwlink-bench/ping")
                    .callback(move |s| {
                        let _ = p.put(s.payload().clone()).wait();
                    })
                    .wait()
                    .map_err(|e| BridgeError::zenoh("subscriber".into(), e))?;
                println!("ready");
                let _ = std::io::stdout().flush();
                // Until the pinger sends its stop.
                let _ = std::io::stdin().read(&mut [0u8; 1]);
                return Ok(());
            }
            // The sink copies every message out, as the hwlink sink does.
            let copy = std::sync::Mutex::new(Vec::<u8>::new());
            let (len_tx, len_rx) = mpsc::channel::<Option<(usize, u64)>>();
            drop((tx, rx));
            let _s = z
                .declare_subscriber("hwlink-bench/data")
                .callback(move |s| {
                    let mut c = copy.lock().unwrap();
                    c.clear();
                    c.extend_from_slice(&s.payload().to_bytes());
                    let mut one = Lat::default();
                    one.note(&c);
                    let _ = len_tx.send(
                        (seq_of(&c) != STOP)
                            .then(|| (c.len(), one.0.first().copied().unwrap_or(u64::MAX))),
                    );
                })
                .wait()
                .map_err(|e| BridgeError::zenoh("subscriber".into(), e))?;
            let ready = z
                .declare_publisher("hwlink-bench/ready")
                .wait()
                .map_err(|e| BridgeError::zenoh("publisher".into(), e))?;
            let (mut msgs, mut bytes, mut start) = (0u64, 0u64, None);
            loop {
                match len_rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(None) => break,
                    Ok(Some((len, l))) => {
                        if l != u64::MAX {
                            lat.0.push(l);
                        }
                        start.get_or_insert_with(|| now_ns(t0));
                        msgs += 1;
                        bytes += len as u64;
                    }
                    Err(_) => {
                        if start.is_none() {
                            let _ = ready.put(vec![1u8]).wait();
                        }
                    }
                }
            }
            lat.print();
            format!("tput {msgs} {bytes} {}", now_ns(t0) - start.unwrap_or(0))
        }
        "zenoh-ping" | "zenoh-source" => {
            let z = zsession(None, Some(format!("tcp/{IP_B}:{ZENOH_PORT}")))?;
            let (tx, rx) = mpsc::channel::<()>();
            if role == "zenoh-ping" {
                let _s = z
                    .declare_subscriber("hwlink-bench/pong")
                    .callback(move |_| {
                        let _ = tx.send(());
                    })
                    .wait()
                    .map_err(|e| BridgeError::zenoh("subscriber".into(), e))?;
                let p = z
                    .declare_publisher("hwlink-bench/ping")
                    .congestion_control(CongestionControl::Block)
                    .express(true)
                    .wait()
                    .map_err(|e| BridgeError::zenoh("publisher".into(), e))?;
                // Until the path is up: a ping answered.
                loop {
                    p.put(buf.clone())
                        .wait()
                        .map_err(|e| BridgeError::zenoh("put".into(), e))?;
                    if rx.recv_timeout(Duration::from_millis(100)).is_ok() {
                        break;
                    }
                }
                while rx.try_recv().is_ok() {}
                let (mut rts, mut i, t1) = (Vec::new(), 0u64, Instant::now());
                while t1.elapsed() < run || rts.len() < 1000 {
                    tag(&mut buf, i);
                    let t = Instant::now();
                    p.put(buf.clone())
                        .wait()
                        .map_err(|e| BridgeError::zenoh("put".into(), e))?;
                    rx.recv_timeout(Duration::from_secs(10))
                        .map_err(|_| BridgeError::Local("no pong in 10 s".into()))?;
                    if i as usize >= WARMUP {
                        rts.push(t.elapsed().as_nanos() as u64);
                    }
                    i += 1;
                }
                percentiles(rts)
            } else {
                let _s = z
                    .declare_subscriber("hwlink-bench/ready")
                    .callback(move |_| {
                        let _ = tx.send(());
                    })
                    .wait()
                    .map_err(|e| BridgeError::zenoh("subscriber".into(), e))?;
                let p = z
                    .declare_publisher("hwlink-bench/data")
                    .congestion_control(CongestionControl::Block)
                    .wait()
                    .map_err(|e| BridgeError::zenoh("publisher".into(), e))?;
                rx.recv_timeout(Duration::from_secs(20))
                    .map_err(|_| BridgeError::Local("the zenoh sink never said ready".into()))?;
                let (mut i, t1) = (0u64, Instant::now());
                let pace = Pacer { burst, start: t1 };
                while t1.elapsed() < run {
                    tag(&mut buf, i);
                    pace.stamp(i, &mut buf);
                    p.put(buf.clone())
                        .wait()
                        .map_err(|e| BridgeError::zenoh("put".into(), e))?;
                    i += 1;
                }
                tag(&mut buf, STOP);
                p.put(buf.clone())
                    .wait()
                    .map_err(|e| BridgeError::zenoh("put".into(), e))?;
                // Let the last samples leave before the session closes.
                std::thread::sleep(Duration::from_millis(500));
                format!("sent {i}")
            }
        }
        "link-pong" | "link-sink" | "link-ping" | "link-source" => {
            let o = local_opts(size);
            let [rx_name, tx_name] = [&names[0], &names[1]];
            let mut frame = Vec::new();
            let take = |src: &mut Source, frame: &mut Vec<u8>| -> Result<(), BridgeError> {
                loop {
                    wire::begin_data(frame);
                    match src.take(frame, Some(Duration::from_secs(10))) {
                        Ok(Took::One) => return Ok(()),
                        Ok(Took::Nothing | Took::Closed) => {
                            return Err(BridgeError::Local("nothing for 10 s".into()))
                        }
                        Ok(Took::Lagged(_)) => continue,
                        Err(e) => return Err(BridgeError::Local(e.to_string())),
                    }
                }
            };
            let put = |sink: &mut Sink, msg: &[u8]| -> Result<(), BridgeError> {
                match sink.put(msg, Some(Duration::from_secs(10))) {
                    Ok(Put::Done) => Ok(()),
                    r => Err(BridgeError::Local(format!("send: {r:?}"))),
                }
            };
            match role {
                "link-pong" => {
                    let mut src = Source::open(Kind::Link, rx_name, &o)
                        .map_err(open_err(Kind::Link, rx_name))?;
                    let mut sink = Sink::open(Kind::Link, tx_name, &o)
                        .map_err(open_err(Kind::Link, tx_name))?;
                    println!("ready");
                    let _ = std::io::stdout().flush();
                    loop {
                        take(&mut src, &mut frame)?;
                        let msg = wire::records(&frame).next().unwrap_or_default().to_vec();
                        if seq_of(&msg) == STOP {
                            return Ok(());
                        }
                        put(&mut sink, &msg)?;
                    }
                }
                "link-sink" => {
                    let mut src = Source::open(Kind::Link, rx_name, &o)
                        .map_err(open_err(Kind::Link, rx_name))?;
                    println!("ready");
                    let _ = std::io::stdout().flush();
                    let (mut msgs, mut bytes, mut start) = (0u64, 0u64, None);
                    loop {
                        take(&mut src, &mut frame)?;
                        let msg = wire::records(&frame).next().unwrap_or_default();
                        if seq_of(msg) == STOP {
                            break;
                        }
                        lat.note(msg);
                        start.get_or_insert_with(|| now_ns(t0));
                        msgs += 1;
                        bytes += msg.len() as u64;
                    }
                    lat.print();
                    format!("tput {msgs} {bytes} {}", now_ns(t0) - start.unwrap_or(0))
                }
                "link-ping" => {
                    let mut sink = Sink::open(Kind::Link, tx_name, &o)
                        .map_err(open_err(Kind::Link, tx_name))?;
                    let mut src = Source::open(Kind::Link, rx_name, &o)
                        .map_err(open_err(Kind::Link, rx_name))?;
                    let (mut rts, mut i) = (Vec::new(), 0u64);
                    let mut t1 = None;
                    while t1.is_none_or(|t: Instant| t.elapsed() < run) || rts.len() < 1000 {
                        tag(&mut buf, i);
                        let t = Instant::now();
                        put(&mut sink, &buf)?;
                        take(&mut src, &mut frame)?;
                        if i as usize >= WARMUP {
                            t1.get_or_insert(t);
                            rts.push(t.elapsed().as_nanos() as u64);
                        }
                        i += 1;
                    }
                    tag(&mut buf, STOP);
                    put(&mut sink, &buf)?;
                    percentiles(rts)
                }
                _ => {
                    let mut sink = Sink::open(Kind::Link, tx_name, &o)
                        .map_err(open_err(Kind::Link, tx_name))?;
                    let mut i = 0u64;
                    let mut t1 = None;
                    let mut pace = Pacer {
                        burst,
                        start: Instant::now(),
                    };
                    while t1.is_none_or(|t: Instant| t.elapsed() < run) {
                        tag(&mut buf, i);
                        pace.stamp(i, &mut buf);
                        put(&mut sink, &buf)?;
                        if i == 0 {
                            // The clock starts once the path is up: the
                            // exporting bridge takes a message only when
                            // an importer across the network is there.
                            drained(tx_name, Duration::from_secs(30))?;
                            pace.start = Instant::now();
                        }
                        // The clock starts once the first message was taken
                        // (the bridges are up).
                        t1.get_or_insert_with(Instant::now);
                        i += 1;
                    }
                    tag(&mut buf, STOP);
                    put(&mut sink, &buf)?;
                    format!("sent {i}")
                }
            }
        }
        _ => return Err(BridgeError::Usage(format!("unknown bench role `{role}`"))),
    };
    println!("{out}");
    Ok(())
}

/// Waits until link `name` is empty (its receiver took everything).
fn drained(name: &str, patience: Duration) -> Result<(), BridgeError> {
    let until = Instant::now() + patience;
    loop {
        let empty = hwlink::admin::list()
            .map_err(|e| BridgeError::Local(e.to_string()))?
            .iter()
            .filter(|r| r.name == name)
            .flat_map(|r| &r.rings)
            .all(|ring| matches!(ring.occupancy, Ok(0)));
        if empty {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(BridgeError::Local(format!(
                "link `{name}` was not drained within {patience:?}: is the bridge path up?"
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A benchmark process in a host.
struct Peer {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Peer {
    fn spawn(exe: &str, ns: &str, args: &[String]) -> Result<Peer, BridgeError> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, exe])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(io("starting a benchmark process"))?;
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Ok(Peer { child, lines })
    }

    fn line(&self, prefix: &str, timeout: Duration) -> Result<String, BridgeError> {
        let until = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return Ok(l),
                Ok(l) => seen.push(l),
                Err(_) => {
                    return Err(BridgeError::Local(format!(
                    "a benchmark process gave no `{prefix}` line in {timeout:?} (it said {seen:?})"
                )))
                }
            }
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn peer_args(role: &str, size: usize, secs: f64, burst: u64, names: &[&str]) -> Vec<String> {
    let mut a = vec![
        "bench-peer".to_string(),
        "--role".into(),
        role.into(),
        "--size".into(),
        size.to_string(),
        "--secs".into(),
        secs.to_string(),
        "--burst".into(),
        burst.to_string(),
    ];
    a.extend(names.iter().map(|n| n.to_string()));
    a
}

/// Round-trip or throughput result of one row.
#[derive(Debug, Clone, Copy)]
enum Figure {
    Rt {
        p50: f64,
        p99: f64,
        p999: f64,
        max: f64,
        n: u64,
    },
    Tput {
        msgs_s: f64,
        mb_s: f64,
    },
}

fn parse(line: &str) -> Result<Figure, BridgeError> {
    let w: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    match (line.split_whitespace().next(), w.as_slice()) {
        (Some("rt" | "lat"), [n, p50, p99, p999, max]) => Ok(Figure::Rt {
            p50: *p50,
            p99: *p99,
            p999: *p999,
            max: *max,
            n: *n as u64,
        }),
        (Some("tput"), [msgs, bytes, ns]) if *ns > 0.0 => Ok(Figure::Tput {
            msgs_s: msgs * 1e9 / ns,
            mb_s: bytes * 1e9 / ns / 1e6,
        }),
        _ => Err(BridgeError::Local(format!("unreadable result `{line}`"))),
    }
}

/// The row's figure: the client's round trips, or the sink's rate after
/// checking that it received every message the source sent.
fn measured(
    client: &Peer,
    server: &Peer,
    rt: bool,
    burst: u64,
    t: Duration,
) -> Result<Figure, BridgeError> {
    if rt {
        return parse(&client.line("rt", t)?);
    }
    let lat = if burst > 0 {
        Some(parse(&server.line("lat", t)?)?)
    } else {
        None
    };
    let sent: u64 = client
        .line("sent", t)?
        .split_whitespace()
        .nth(1)
        .and_then(|w| w.parse().ok())
        .unwrap_or(0);
    let got = server.line("tput", t)?;
    let received: u64 = got
        .split_whitespace()
        .nth(1)
        .and_then(|w| w.parse().ok())
        .unwrap_or(0);
    if received != sent {
        return Err(BridgeError::Local(format!(
            "the sink received {received} messages of the {sent} sent"
        )));
    }
    lat.map_or_else(|| parse(&got), Ok)
}

/// Runs one row: `server` role on B, `client` role on A; `result_from`
/// says which prints the figure. For the hwlink row the two bridges run
/// too, carrying link `*-a` (A) to link `*-b` (B) and back.
fn row(
    exe: &str,
    h: &Hosts,
    path: &str,
    rt: bool,
    size: usize,
    burst: u64,
    o: &BenchOptions,
) -> Result<Figure, BridgeError> {
    let (secs, bridge_args) = (o.secs, &o.bridge_args);
    let t = Duration::from_secs_f64(secs + 30.0);
    let pid = std::process::id();
    let (req_a, req_b, rep_a, rep_b) = (
        format!("hbq{pid}a"),
        format!("hbq{pid}b"),
        format!("hbp{pid}a"),
        format!("hbp{pid}b"),
    );
    let figure = match path {
        "tcp" | "zenoh" => {
            let (srv, cli) = match (path, rt) {
                ("tcp", true) => ("tcp-echo", "tcp-ping"),
                ("tcp", false) => ("tcp-sink", "tcp-source"),
                (_, true) => ("zenoh-pong", "zenoh-ping"),
                _ => ("zenoh-sink", "zenoh-source"),
            };
            let server = Peer::spawn(exe, &h.b, &peer_args(srv, size, secs, burst, &[]))?;
            if srv != "zenoh-sink" {
                server.line("ready", Duration::from_secs(20))?;
            }
            let client = Peer::spawn(exe, &h.a, &peer_args(cli, size, secs, burst, &[]))?;
            measured(&client, &server, rt, burst, t)?
        }
        _ => {
            let mut b_args: Vec<String> = vec![
                "--connect".into(),
                format!("tcp/{IP_A}:{BRIDGE_PORT}"),
                "--import".into(),
                format!("hwlink-bench/{pid}/req=link:{req_b}"),
            ];
            let mut a_args: Vec<String> = vec![
                "--listen".into(),
                format!("tcp/{IP_A}:{BRIDGE_PORT}"),
                "--export".into(),
                format!("link:{req_a}=hwlink-bench/{pid}/req"),
            ];
            if rt {
                b_args.extend([
                    "--export".into(),
                    format!("link:{rep_b}=hwlink-bench/{pid}/rep"),
                ]);
                a_args.extend([
                    "--import".into(),
                    format!("hwlink-bench/{pid}/rep=link:{rep_a}"),
                ]);
            }
            let lo = local_opts(size);
            for a in [&mut a_args, &mut b_args] {
                a.extend(bridge_args.iter().cloned());
                a.extend([
                    "--capacity".into(),
                    lo.capacity.to_string(),
                    "--slot-size".into(),
                    lo.slot_size.to_string(),
                ]);
            }
            let server = Peer::spawn(
                exe,
                &h.b,
                &peer_args(
                    if rt { "link-pong" } else { "link-sink" },
                    size,
                    secs,
                    burst,
                    &[&req_b, &rep_b],
                ),
            )?;
            server.line("ready", Duration::from_secs(20))?;
            let _bridge_b = Peer::spawn(exe, &h.b, &b_args)?;
            let _bridge_a = Peer::spawn(exe, &h.a, &a_args)?;
            let client = Peer::spawn(
                exe,
                &h.a,
                &peer_args(
                    if rt { "link-ping" } else { "link-source" },
                    size,
                    secs,
                    burst,
                    &[&rep_a, &req_a],
                ),
            )?;
            let f = measured(&client, &server, rt, burst, t)?;
            drop((client, server));
            f
        }
    };
    for n in [&req_a, &req_b, &rep_a, &rep_b] {
        let _ = hwlink::admin::remove(n);
    }
    Ok(figure)
}

/// Prints a latency row; gives its (p50, p99.9).
fn print_latency(path: &str, f: Figure) -> Option<(f64, f64)> {
    let Figure::Rt {
        p50,
        p99,
        p999,
        max,
        n,
    } = f
    else {
        return None;
    };
    println!(
        "  {path:<18} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {n:>9}",
        p50 / 1e3,
        p99 / 1e3,
        p999 / 1e3,
        max / 1e3
    );
    Some((p50, p999))
}

/// Prints the bridge's latency against zenoh's (the first two rows).
fn print_ratio(rows: &[(f64, f64)], bar: &str) {
    if let [(b50, b999), (z50, z999), ..] = rows[..] {
        println!(
            "  hwlink-bridge / zenoh: p50 {:.2}x, p99.9 {:.2}x{bar}",
            b50 / z50,
            b999 / z999
        );
    }
}

/// Runs the bridge workload and prints its tables.
pub fn run(exe: &str, o: &BenchOptions) -> Result<(), BridgeError> {
    let Some(h) = Hosts::new("bench") else {
        println!("bridge workload: SKIPPED (two network namespaces need root)");
        return Ok(());
    };
    let paths = ["hwlink-bridge", "zenoh", "tcp"];
    println!(
        "bridge workload: host A and host B are network namespaces joined by a veth pair; \
         hwlink-bridge = hwlink link -> bridge -> zenoh TCP -> bridge -> hwlink link; \
         zenoh = zenoh pub/sub between two processes; tcp = a TCP socket pair. {} s per row.",
        o.secs
    );
    if !o.bridge_args.is_empty() {
        println!("bridges run with: {}", o.bridge_args.join(" "));
    }
    println!(
        "\nround trip, {} B     {:>10} {:>10} {:>10} {:>10} {:>9}",
        o.rt_size, "p50 µs", "p99 µs", "p99.9 µs", "max µs", "samples"
    );
    let mut rts = Vec::new();
    for p in paths {
        let f = row(exe, &h, p, true, o.rt_size, 0, o)?;
        rts.extend(print_latency(p, f));
    }
    print_ratio(&rts, " (bar: at most 1.3x)");
    println!(
        "\none-way latency under load: bursts of {BURST} messages of 64 B every ms\n\
         (each stamped when sent; latency to the sink; batching adds at most 50 µs)"
    );
    println!(
        "                      {:>10} {:>10} {:>10} {:>10} {:>9}",
        "p50 µs", "p99 µs", "p99.9 µs", "max µs", "samples"
    );
    let mut lats = Vec::new();
    for p in paths {
        lats.extend(print_latency(p, row(exe, &h, p, false, 64, BURST, o)?));
    }
    print_ratio(&lats, "");
    for &size in &o.sizes {
        println!("\nthroughput, {size} B     {:>12} {:>10}", "msgs/s", "MB/s");
        let mut rates = Vec::new();
        for p in paths {
            if let Figure::Tput { msgs_s, mb_s } = row(exe, &h, p, false, size, 0, o)? {
                println!("  {p:<18} {msgs_s:>12.0} {mb_s:>10.1}");
                rates.push(msgs_s);
            }
        }
        if let [b, z, ..] = rates[..] {
            println!(
                "  hwlink-bridge / zenoh: {:.2}x (bar: at least 0.8x)",
                b / z
            );
        }
    }
    Ok(())
}

//! The `hwlink` command: benchmark against kernel IPC, measure round trips, list and remove regions.

mod device_cmds;

use clap::{Parser, Subcommand};
use hwlink::{admin, Backend, WaitStrategy};
use hwlink_benches::pingpong::{self, Config, Mechanism, Session, Stats};
use std::process::{Command, ExitCode};

#[derive(Parser)]
#[command(
    name = "hwlink",
    version,
    about = "Kernel-bypass message passing between processes over shared memory"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Measure hwlink beside the kernel's IPC mechanisms (pipe, Unix
    /// sockets, eventfd, message queues, TCP, io_uring), side by side.
    Bench(BenchArgs),
    /// Measure the round trip of one message between this process and a
    /// peer process it spawns.
    Pingpong(PingpongArgs),
    /// Many-to-many throughput: an hwlink mailbox with P producer and C
    /// consumer processes, beside crossbeam's ArrayQueue with P + C threads.
    BenchMpmc(MpmcArgs),
    /// Round trips over direct links of each buffering kind (bounded,
    /// unbounded, zero-capacity rendezvous) and over a plain link pair,
    /// side by side, with the p50 ratios against issue 15's bars.
    BenchBuffering(BufferingArgs),
    /// Time every send into an unbounded mailbox that nobody receives from:
    /// percentiles, the slowest sends, and how each new segment was made
    /// (ahead of need, or inside the send). Removes the mailbox at the end.
    BenchUnbounded(UnboundedArgs),
    /// List the regions on this machine: creator, whether it is alive, rings
    /// and their occupancy, and the members of each domain.
    Ls,
    /// Remove a region by name, or every region left by dead processes.
    Rm {
        /// Region name (see `hwlink ls`).
        #[arg(required_unless_present = "stale", conflicts_with = "stale")]
        name: Option<String>,
        /// Remove every region whose creator and attached processes are dead.
        #[arg(long)]
        stale: bool,
    },
    /// One-time machine setup (root): let the members of a group share
    /// hugepage regions with each other (a 2 MiB hugetlbfs mount the group
    /// may create files in), and optionally reserve hugepages.
    Setup(SetupArgs),
    /// Move numbered messages both ways over ivshmem memory, checking each
    /// arrives exactly once: one side on the host, the other in the VM.
    Exchange(device_cmds::ExchangeArgs),
    /// QEMU's ivshmem-doorbell server: hands the shared memory and every
    /// peer's interrupt eventfds to QEMU and to host peers.
    IvshmemServer(device_cmds::IvshmemServerArgs),
    /// Answer `hwlink pingpong --backend ivshmem` from the other side of
    /// the VM.
    PingpongEcho(device_cmds::PingpongEchoArgs),
    /// Bind a PCI device to vfio-pci or give it back.
    #[command(subcommand)]
    Vfio(device_cmds::VfioCmd),
    /// The peer side of `bench` (internal).
    #[command(hide = true)]
    BenchPeer {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The peer side of `bench-buffering` (internal).
    #[command(hide = true)]
    BenchBufferingPeer {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The peer side of `bench-mpmc` (internal).
    #[command(hide = true)]
    BenchMpmcPeer {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The peer side of `pingpong` (internal).
    #[command(hide = true)]
    PingpongPeer {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(clap::Args)]
struct SetupArgs {
    /// The group whose members share regions (a name or a gid).
    #[arg(long)]
    group: String,
    /// Where to mount the shared hugetlbfs.
    #[arg(long, default_value = hwlink_drivers::SHARED_HUGETLBFS_DIR)]
    dir: std::path::PathBuf,
    /// Share /dev/shm regions only: mount no hugetlbfs.
    #[arg(long)]
    no_hugetlbfs: bool,
    /// Also reserve this many 2 MiB hugepages (vm.nr_hugepages), if fewer
    /// are reserved.
    #[arg(long)]
    hugepages: Option<u64>,
}

/// `hwlink setup`: the shared hugetlbfs mount, and hugepages if asked.
fn setup_cmd(args: SetupArgs) -> Result<(), BoxError> {
    let group = match args.group.parse::<u32>() {
        Ok(gid) => hwlink::Group::Id(gid),
        Err(_) => hwlink::Group::Name(args.group.clone()),
    };
    if let Some(want) = args.hugepages {
        const NR: &str = "/proc/sys/vm/nr_hugepages";
        let have: u64 = std::fs::read_to_string(NR)?.trim().parse()?;
        if have < want {
            std::fs::write(NR, want.to_string()).map_err(|e| {
                format!("cannot write {NR}: {e}; run as root (`sudo hwlink setup ...`)")
            })?;
            let now: u64 = std::fs::read_to_string(NR)?.trim().parse()?;
            println!("reserved 2 MiB hugepages: {have} -> {now} (asked for {want})");
        }
    }
    let huge = (!args.no_hugetlbfs).then_some(args.dir.as_path());
    let done = hwlink_drivers::share_dirs(&group, huge)?;
    let g = &args.group;
    println!(
        "{} is group {g}'s (gid {}), mode 0771: shared /dev/shm regions go there",
        done.shm_dir.display(),
        done.gid
    );
    if let Some(dir) = &done.hugetlbfs {
        let how = if done.mounted {
            "mounted a 2 MiB hugetlbfs at"
        } else {
            "gave the 2 MiB hugetlbfs mounted at"
        };
        println!(
            "{how} {} to group {g}, mode 0771: shared hugepage regions go there",
            dir.display()
        );
    }
    println!(
        "Members of {g} now share the links, domains, mailboxes and topics they create with \
         file_mode(0o660) (and group(\"{g}\")); add a user with `sudo usermod -aG {g} USER`."
    );
    if done.mounted {
        println!(
            "The mount lasts until reboot; to keep it, add to /etc/fstab:\n  none {} hugetlbfs \
             pagesize=2M,uid=0,gid={},mode=0771 0 0\nand run `hwlink setup --group {g}` at boot \
             (it makes the /dev/shm directory, which is lost at reboot too).",
            args.dir.display(),
            done.gid
        );
    }
    Ok(())
}

#[derive(clap::Args)]
struct BufferingArgs {
    /// Round trips per kind per round.
    #[arg(long, default_value_t = 20_000)]
    count: usize,
    /// Rounds, alternating the kinds.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// The measuring side uses the timed forms (`send_timeout`,
    /// `recv_timeout`, `recv_from_timeout`) on every row.
    #[arg(long)]
    timeouts: bool,
    /// Wait strategy of both processes: poll, spin-park or park.
    #[arg(long, default_value = "spin-park")]
    wait: WaitStrategy,
    /// Memory backend: auto, hugepage or shm.
    #[arg(long, default_value = "auto")]
    backend: Backend,
    /// CPUs of this process and of the peer.
    #[arg(long, default_value = "0,1", value_parser = parse_cpus)]
    cpus: (usize, usize),
}

fn buffering_cmd(args: BufferingArgs) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let figs = hwlink_benches::bench::buffering::run(
        args.count,
        args.rounds.max(1),
        args.timeouts,
        args.wait,
        args.backend,
        args.cpus,
    )?;
    use hwlink::Buffering;
    use hwlink_benches::bench::buffering::{p50_ratio, Kind, BOUNDED_BAR, UNBOUNDED_BAR};
    println!(
        "8-byte round trips, {} per kind in each of {} rounds, wait {}, {} forms, CPUs {},{} (µs)",
        args.count,
        args.rounds,
        args.wait,
        if args.timeouts { "timed" } else { "blocking" },
        args.cpus.0,
        args.cpus.1
    );
    println!(
        "{:<44} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "kind", "p50", "p90", "p99", "p99.9", "max", "mean*"
    );
    let us = |ns: u64| ns as f64 / 1e3;
    for f in &figs {
        println!(
            "{:<44} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.1} {:>8.3}",
            f.kind.to_string(),
            us(f.pct(0.5)),
            us(f.pct(0.9)),
            us(f.pct(0.99)),
            us(f.pct(0.999)),
            us(f.pct(1.0)),
            f.trimmed_mean() / 1e3,
        );
    }
    println!("(mean*: of the fastest 99.9%, finer than the clock's steps)");
    let bounded = figs
        .iter()
        .map(|f| f.kind)
        .find(|k| matches!(k, Kind::Direct(Buffering::Bounded(_))));
    let unbounded = figs
        .iter()
        .map(|f| f.kind)
        .find(|k| matches!(k, Kind::Direct(Buffering::Unbounded { .. })));
    let zero = Kind::Direct(Buffering::Zero);
    let verdict = |r: f64, bar: f64| if r <= bar { "within" } else { "OVER" };
    if let Some(b) = bounded {
        if let Some(r) = p50_ratio(&figs, b, Kind::PlainLink) {
            println!(
                "p50 bounded / plain link:   {r:.2}x  (bar {BOUNDED_BAR:.1}x: {})",
                verdict(r, BOUNDED_BAR)
            );
        }
        if let Some(r) = unbounded.and_then(|u| p50_ratio(&figs, u, b)) {
            println!(
                "p50 unbounded / bounded:    {r:.2}x  (bar {UNBOUNDED_BAR:.1}x: {})",
                verdict(r, UNBOUNDED_BAR)
            );
        }
        if let Some(r) = p50_ratio(&figs, zero, b) {
            println!("p50 zero / bounded:         {r:.2}x");
        }
    }
    Ok(())
}

#[derive(clap::Args)]
struct UnboundedArgs {
    /// Sends, each one timed.
    #[arg(long, default_value_t = 20_000_000)]
    messages: u64,
    /// Bytes per message.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Most bytes the mailbox's segments may take (default: enough for
    /// every message, plus 512 MiB).
    #[arg(long)]
    byte_limit: Option<u64>,
    /// Memory backend: auto, hugepage or shm.
    #[arg(long, default_value = "auto")]
    backend: Backend,
    /// Make every segment inside the send that needs it, as before segments
    /// were made ahead of need (for comparison).
    #[arg(long)]
    inline: bool,
    /// Pin the sending thread to this CPU once the mailbox is open (the
    /// background thread that prepares segments stays free to run on the
    /// others). Unpinned, a kernel thread that wakes on the sender's CPU
    /// (kdamond, a kworker) preempts it for milliseconds now and then.
    #[arg(long)]
    cpu: Option<usize>,
}

fn unbounded_cmd(args: UnboundedArgs) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use hwlink_benches::bench::unbounded::{run, UnboundedConfig};
    use std::time::Duration;
    let cfg = UnboundedConfig {
        messages: args.messages.max(1),
        size: args.size.max(1),
        byte_limit: args.byte_limit,
        backend: args.backend,
        inline: args.inline,
        cpu: args.cpu,
    };
    let r = run(&cfg)?;
    let us = |ns: u64| ns as f64 / 1e3;
    println!(
        "unbounded mailbox {}, no receiver: {} sends of {} B, byte limit {} B, backend {}, segments made {}",
        r.name,
        cfg.messages,
        cfg.size,
        r.byte_limit,
        cfg.backend,
        if cfg.inline { "inside the send (--inline)" } else { "ahead of need" }
    );
    println!(
        "send (µs): p50 {:.3}  p99 {:.3}  p99.9 {:.3}  p99.99 {:.3}  max {:.1}",
        us(r.pct(0.5)),
        us(r.pct(0.99)),
        us(r.pct(0.999)),
        us(r.pct(0.9999)),
        us(r.pct(1.0))
    );
    println!(
        "sends over 1 ms: {}; over 50 µs: {}",
        r.over(Duration::from_millis(1)),
        r.over(Duration::from_micros(50))
    );
    let s = r.stats;
    println!(
        "segments linked by the sends: {} ({} made ahead, {} made inside the send); sends that \
         waited for the preparation in progress: {}; offers made {}, thrown away {}",
        s.linked_ahead + s.linked_inline,
        s.linked_ahead,
        s.linked_inline,
        s.waited,
        s.prepared,
        s.discarded
    );
    if !r.links.is_empty() {
        let each: Vec<String> = r
            .links
            .iter()
            .enumerate()
            .map(|(i, l)| {
                format!(
                    "{}:{}{} {:.1}",
                    i + 1,
                    if l.ahead { "ahead" } else { "inline" },
                    if l.waited { "(waited)" } else { "" },
                    us(l.ns)
                )
            })
            .collect();
        println!(
            "each segment (n:how µs of the send that linked it): {}",
            each.join(" ")
        );
    }
    let linking: std::collections::HashSet<u64> = r.links.iter().map(|l| l.send).collect();
    let slow: Vec<String> = r
        .slowest
        .iter()
        .map(|&(i, ns)| {
            format!(
                "#{i} {:.1} µs{}",
                us(ns),
                if linking.contains(&i) {
                    " (linked a segment)"
                } else {
                    ""
                }
            )
        })
        .collect();
    println!("slowest sends: {}", slow.join(", "));
    println!(
        "{:.2} s, {:.1} M sends/s; {} bytes in use at the end; mailbox removed",
        r.elapsed.as_secs_f64(),
        cfg.messages as f64 / r.elapsed.as_secs_f64().max(1e-9) / 1e6,
        r.bytes_in_use
    );
    Ok(())
}

#[derive(clap::Args)]
struct MpmcArgs {
    /// Producer processes (and producer threads for ArrayQueue).
    #[arg(long, default_value_t = 2)]
    producers: u32,
    /// Consumer processes (and consumer threads for ArrayQueue).
    #[arg(long, default_value_t = 2)]
    consumers: u32,
    /// Messages per round, in all.
    #[arg(long, default_value_t = 2_000_000)]
    messages: u64,
    /// Bytes per message (at least 16).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Slots of the mailbox and of the queue.
    #[arg(long, default_value_t = 1024)]
    capacity: u32,
    /// Rounds of each, alternating; the median is reported.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Memory backend: auto, hugepage or shm.
    #[arg(long, default_value = "auto")]
    backend: Backend,
    /// How the mailbox's processes wait: poll (spin, then yield; never
    /// sleep: like the queue's threads), spin-park or park.
    #[arg(long, default_value = "poll")]
    wait: WaitStrategy,
}

fn mpmc_cmd(args: MpmcArgs) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use hwlink_benches::bench::mpmc::{median, run, MpmcConfig};
    let cfg = MpmcConfig {
        producers: args.producers,
        consumers: args.consumers,
        messages: args.messages,
        size: args.size,
        capacity: args.capacity,
        rounds: args.rounds.max(1),
        backend: args.backend,
        wait: args.wait,
    };
    println!(
        "{} producers, {} consumers, {} messages of {} B per round, capacity {}, {} rounds (alternating), mailbox wait {}",
        cfg.producers, cfg.consumers, cfg.messages, cfg.size, cfg.capacity, cfg.rounds, cfg.wait
    );
    let r = run(&cfg)?;
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{:.2}", x / 1e6))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (m, q) = (median(&r.mailbox), median(&r.array_queue));
    println!(
        "hwlink mailbox ({} + {} processes): median {:.2} M msg/s  [rounds: {}]",
        cfg.producers,
        cfg.consumers,
        m / 1e6,
        fmt(&r.mailbox)
    );
    println!(
        "crossbeam ArrayQueue ({} + {} threads): median {:.2} M msg/s  [rounds: {}]",
        cfg.producers,
        cfg.consumers,
        q / 1e6,
        fmt(&r.array_queue)
    );
    println!("mailbox / ArrayQueue = {:.2}", m / q.max(1.0));
    Ok(())
}

#[derive(clap::Args)]
struct PingpongArgs {
    /// Round trips to measure.
    #[arg(long, default_value_t = 100_000)]
    count: usize,
    /// Message size in bytes (at least 8).
    #[arg(long, default_value_t = 8)]
    size: usize,
    /// How both ends wait: poll, spin-park or park.
    #[arg(long, default_value_t = WaitStrategy::SpinPark)]
    wait: WaitStrategy,
    /// Memory: hugepage, shm, auto (hugepages with a fallback to shm), or
    /// ivshmem (with --device; the peer is `hwlink pingpong-echo` on the
    /// other side of the VM).
    #[arg(long, default_value_t = Backend::Auto)]
    backend: Backend,
    /// With --backend ivshmem: the VM's memory file or server:SOCKET (host
    /// side), vfio:BDF or pci:BDF (guest side).
    #[arg(long)]
    device: Option<hwlink_drivers::IvshmemTarget>,
    /// CPUs for this process and the peer, e.g. 0,1; 0,0 shares one core.
    #[arg(long, value_parser = parse_cpus, default_value = "0,1")]
    cpus: (usize, usize),
    /// Also measure a pipe and the raw cache-line floor in the same run.
    #[arg(long)]
    baseline: bool,
    /// Print a JSON object as the last line.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// A short run (fewer sizes, short durations): well under a minute.
    #[arg(long)]
    quick: bool,
    /// Message sizes in bytes, comma separated (at least 8); K and M
    /// suffixes allowed, e.g. 8,64,4K. Default: 8,64,1K,4K,64K for round
    /// trips, plus 1M for streams.
    #[arg(long, value_delimiter = ',', value_parser = parse_size)]
    sizes: Option<Vec<usize>>,
    /// Mechanisms, comma separated. Default: all of hwlink-poll,
    /// hwlink-spin-park, hwlink-park, hwlink-zero-copy, hwlink-typed (64
    /// bytes only), hwlink-mailbox,
    /// hwlink-select-poll, hwlink-select-park, hwlink-epoll, hwlink-async,
    /// floor, pipe, unix-stream, unix-epoll, tokio-unix, unix-dgram,
    /// unix-seqpacket, eventfd, eventfd-epoll, posix-mq, sysv-mq, tcp,
    /// uring-pipe, uring-unix, uring-unix-sqpoll, and for the fan-out
    /// only hwlink-topic, hwlink-topic-park (the fan-out runs those two,
    /// hwlink-poll, pipe and unix-dgram).
    #[arg(long, value_delimiter = ',')]
    mechanisms: Option<Vec<hwlink_benches::bench::Mechanism>>,
    /// Workloads, comma separated, from round-trip, stream, pipeline,
    /// fanout and bridge. Default: the first four; `bridge` (two bridges
    /// over zenoh between two network namespaces, beside zenoh itself and
    /// TCP; root, and the `hwlink-bridge` program) runs only when asked.
    #[arg(long, value_delimiter = ',', value_enum)]
    workloads: Option<Vec<BenchWorkload>>,
    /// Seconds spent on each mechanism × size × workload (default 1, or
    /// 0.1 with --quick).
    #[arg(long)]
    duration: Option<f64>,
    /// Subscriber processes of the fan-out, comma separated, 1 to 64.
    /// Default: 1,2,4 (1,4 with --quick).
    #[arg(long, value_delimiter = ',', value_parser = parse_subscribers)]
    subscribers: Option<Vec<usize>>,
    /// CPUs for the measuring process and the peer, e.g. 0,1; 0,0 shares
    /// one core. Default: every workload on 0,1, then again on 0,0.
    #[arg(long, value_parser = parse_cpus)]
    cpus: Option<(usize, usize)>,
    /// Memory: hugepage, shm, auto (hugepages with a fallback to shm), or
    /// ivshmem (with --device: round trips against `hwlink pingpong-echo`
    /// on the other side of a VM).
    #[arg(long, default_value_t = Backend::Auto)]
    backend: Backend,
    /// With --backend ivshmem: the VM's memory file or server:SOCKET (host
    /// side), vfio:BDF or pci:BDF (guest side).
    #[arg(long)]
    device: Option<hwlink_drivers::IvshmemTarget>,
    /// Write every figure, skipped mechanism and machine fact to FILE as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<std::path::PathBuf>,
    /// Write SVG plots into DIR: a round-trip latency CDF per size and CPU
    /// pair, and streaming throughput against message size.
    #[arg(long, value_name = "DIR")]
    plots: Option<std::path::PathBuf>,
}

/// A workload `hwlink bench` can run.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BenchWorkload {
    /// Ping-pong between two processes.
    RoundTrip,
    /// One-way, every message verified.
    Stream,
    /// Four processes in a chain.
    Pipeline,
    /// One publisher, 1, 2 and 4 subscriber processes.
    Fanout,
    /// Two hosts (network namespaces), an hwlink link on each joined by
    /// two `hwlink-bridge` processes over zenoh; only when asked.
    Bridge,
}

fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1024),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        _ => (s, 1),
    };
    let n: usize = num
        .parse()
        .map_err(|e| format!("bad size `{s}`: {e}; write e.g. 64, 4K or 1M"))?;
    if n * mult < 8 {
        return Err(format!(
            "size {s} is below 8 bytes; messages carry an 8-byte sequence number"
        ));
    }
    Ok(n * mult)
}

fn parse_subscribers(s: &str) -> Result<usize, String> {
    let max = hwlink_benches::bench::MAX_SUBSCRIBERS;
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "bad subscriber count `{s}`: give 1 to {max} processes, e.g. 1,2,4"
        )),
    }
}

fn parse_cpus(s: &str) -> Result<(usize, usize), String> {
    let (a, b) = s.split_once(',').ok_or("expected two CPUs, like 0,1")?;
    let cpu = |x: &str| {
        x.trim()
            .parse::<usize>()
            .map_err(|e| format!("bad CPU `{x}`: {e}"))
    };
    Ok((cpu(a)?, cpu(b)?))
}

fn bench_launcher(args: &[String]) -> Command {
    let exe = std::env::current_exe().expect("cannot find the hwlink executable");
    let mut cmd = Command::new(exe);
    cmd.arg("bench-peer").arg("--").args(args);
    cmd
}

/// The memory links really get with `backend` (auto may fall back).
fn backend_used(backend: Backend) -> Result<&'static str, BoxError> {
    let probe = hwlink::LinkBuilder::new(format!("probe{}", std::process::id()))
        .capacity(1)
        .slot_size(8)
        .backend(backend)
        .create_sender()?;
    Ok(if probe.backing().is_hugepage() {
        "hugepage"
    } else {
        "shm"
    })
}

/// The bridge workload: `hwlink-bridge bench`, from beside this program
/// or on PATH (the bridge is its own crate, so that hwlink does not pull
/// zenoh).
fn bridge_bench(args: &BenchArgs) -> Result<(), BoxError> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.join("hwlink-bridge")))
        .filter(|p| p.exists());
    let exe = beside.unwrap_or_else(|| std::path::PathBuf::from("hwlink-bridge"));
    let secs = args.duration.unwrap_or(if args.quick { 0.3 } else { 1.0 });
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(["bench", "--secs", &secs.to_string()]);
    if let Some(s) = &args.sizes {
        let list: Vec<String> = s.iter().map(usize::to_string).collect();
        cmd.args(["--sizes", &list.join(",")]);
    }
    match cmd.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("the bridge workload failed ({s})").into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!(
                "bridge workload: SKIPPED (no `hwlink-bridge` beside {} or on PATH: \
                 build it with `cargo build --release -p hwlink-bridge`)",
                std::env::current_exe()
                    .map_or_else(|_| "hwlink".into(), |p| p.display().to_string())
            );
            Ok(())
        }
        Err(e) => Err(format!("starting {}: {e}", exe.display()).into()),
    }
}

fn bench_cmd(args: BenchArgs) -> Result<(), BoxError> {
    use hwlink_benches::bench::{plan, report, Mechanism};
    use std::io::IsTerminal;
    if args.backend == Backend::Ivshmem {
        return device_cmds::bench_ivshmem(args);
    }
    let asked = |w: BenchWorkload| args.workloads.as_ref().is_some_and(|ws| ws.contains(&w));
    if asked(BenchWorkload::Bridge) {
        bridge_bench(&args)?;
        if args.workloads.as_ref().is_some_and(|ws| ws.len() == 1) {
            return Ok(());
        }
    }
    let mechanisms: Vec<Mechanism> = match args.mechanisms {
        Some(m) => m,
        None => Mechanism::ALL.to_vec(),
    };
    let (rt_sizes, st_sizes) = match (&args.sizes, args.quick) {
        (Some(s), _) => (s.clone(), s.clone()),
        (None, true) => (vec![8, 4096], vec![64, 65536]),
        (None, false) => (
            vec![8, 64, 1024, 4096, 65536],
            vec![8, 64, 1024, 4096, 65536, 1 << 20],
        ),
    };
    let secs = args.duration.unwrap_or(if args.quick { 0.1 } else { 1.0 });
    if !(secs > 0.0 && secs < 3600.0) {
        return Err("--duration must be between 0 and 3600 seconds, e.g. 0.5".into());
    }
    let two_cpus = hwlink_online_cpus() >= 2;
    let (rt_cpus, st_cpus) = match args.cpus {
        Some(c) => (vec![c], vec![c]),
        None if two_cpus => (vec![(0, 1), (0, 0)], vec![(0, 1), (0, 0)]),
        None => (vec![(0, 0)], vec![(0, 0)]),
    };
    let wants = |w: BenchWorkload| args.workloads.as_ref().map_or(true, |ws| ws.contains(&w));
    let pipeline_cpus = if wants(BenchWorkload::Pipeline) {
        st_cpus.clone()
    } else {
        Vec::new()
    };
    // The pipeline carries messages of the first round-trip size.
    let pipeline_size = rt_sizes.first().copied().unwrap_or(8);
    // The fan-out runs on one CPU pair: with up to five processes on two
    // CPUs, a second pass on one shared core would add minutes for figures
    // that only show the scheduler.
    let fanout_cpus = match (wants(BenchWorkload::Fanout), args.cpus) {
        (false, _) => Vec::new(),
        (true, Some(c)) => vec![c],
        (true, None) if two_cpus => vec![(0, 1)],
        (true, None) => vec![(0, 0)],
    };
    let fanout_sizes = match (&args.sizes, args.quick) {
        (Some(s), _) => s.clone(),
        (None, true) => vec![8],
        (None, false) => vec![8, 4096, 1 << 20],
    };
    let fanout_subscribers = match (&args.subscribers, args.quick) {
        (Some(n), _) => n.clone(),
        (None, true) => vec![1, 4],
        (None, false) => hwlink_benches::bench::DEFAULT_SUBSCRIBERS.to_vec(),
    };
    let plan = plan::Plan {
        mechanisms,
        round_trip_sizes: if wants(BenchWorkload::RoundTrip) {
            rt_sizes
        } else {
            Vec::new()
        },
        stream_sizes: if wants(BenchWorkload::Stream) {
            st_sizes
        } else {
            Vec::new()
        },
        round_trip_cpus: rt_cpus,
        stream_cpus: st_cpus,
        rounds: if args.quick { 2 } else { 5 },
        duration: std::time::Duration::from_secs_f64(secs),
        max_round_trips: if args.quick { 20_000 } else { 200_000 },
        backend: args.backend,
        pipeline_cpus,
        pipeline_size,
        fanout_sizes,
        fanout_subscribers,
        fanout_cpus,
    };
    for name in hwlink_benches::bench::remove_leftovers() {
        eprintln!("hwlink bench: removed {name}, left by an earlier hwlink bench that was killed");
    }
    let machine = report::Machine::detect(backend_used(args.backend)?);
    println!(
        "hwlink bench: {} on {} CPUs, kernel {}, hwlink memory {}; {} s per cell in {} rounds",
        machine.cpu_model, machine.cpus, machine.kernel, machine.backend, secs, plan.rounds
    );
    // A progress bar on stderr, shown only when stdout is a terminal.
    let bar = if std::io::stdout().is_terminal() {
        indicatif::ProgressBar::new(0)
    } else {
        indicatif::ProgressBar::hidden()
    };
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    let mut progress = |done: usize, total: usize, what: &str| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(what.to_string());
    };
    let results = plan::run(&plan, &bench_launcher, &mut progress);
    bar.finish_and_clear();
    print!("{}", report::round_trip_table(&results));
    print!("{}", report::stream_table(&results));
    print!("{}", report::pipeline_table(&results));
    print!("{}", report::fanout_table(&results));
    if let Some(path) = &args.json {
        std::fs::write(path, report::to_json(&machine, &plan, &results))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("\nwrote {}", path.display());
    }
    if let Some(dir) = &args.plots {
        for file in hwlink_benches::bench::plot::write_plots(dir, &results)? {
            println!("wrote {}", file.display());
        }
    }
    let failed = results
        .round_trip
        .iter()
        .filter(|c| matches!(c.status, plan::Status::Failed(_)))
        .count()
        + results
            .stream
            .iter()
            .filter(|c| matches!(c.status, plan::Status::Failed(_)))
            .count()
        + results
            .fanout
            .iter()
            .filter(|f| matches!(f.cell.status, plan::Status::Failed(_)))
            .count();
    if failed > 0 {
        return Err(format!("{failed} measurements failed (see FAILED above); rerun them alone with --mechanisms and --sizes to see the peer's errors").into());
    }
    Ok(())
}

fn hwlink_online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn launcher(peer: &pingpong::PeerArgs) -> Command {
    let exe = std::env::current_exe().expect("cannot find the hwlink executable");
    let mut cmd = Command::new(exe);
    cmd.arg("pingpong-peer").arg("--").args(peer.args());
    cmd
}

/// Rounds the measurement is split into. Mechanisms take turns round by
/// round, so that a change in the machine's load (these are shared virtual
/// machines) affects every mechanism alike and the ratios stay meaningful.
const ROUNDS: usize = 10;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Measures `mechanisms` side by side: `count` round trips each (the pipe's
/// capped, as each costs tens of microseconds), in interleaved rounds, each
/// round with a fresh peer process after a warm-up.
fn run_interleaved(args: &PingpongArgs, mechanisms: &[Mechanism]) -> Result<Vec<Stats>, BoxError> {
    let mut samples: Vec<Vec<u64>> = vec![Vec::new(); mechanisms.len()];
    for round in 0..ROUNDS {
        for (i, &mechanism) in mechanisms.iter().enumerate() {
            let count = if mechanism == Mechanism::Pipe {
                args.count.min(20_000)
            } else {
                args.count
            };
            let share = count / ROUNDS + usize::from(round < count % ROUNDS);
            if share == 0 {
                continue;
            }
            let cfg = Config {
                mechanism,
                size: args.size,
                wait: args.wait,
                backend: args.backend,
                cpus: Some(args.cpus),
            };
            let mut session = Session::start(&cfg, &launcher)?;
            session.measure((share / 10).clamp(50, 10_000))?;
            samples[i].extend(session.measure(share)?);
            session.finish()?;
        }
    }
    samples
        .iter_mut()
        .map(|s| Stats::from_samples(s).ok_or_else(|| "no samples: pass --count 1 or more".into()))
        .collect()
}

fn print_stats(label: &str, s: &Stats, reference: Option<&Stats>) {
    let ratio = reference.map_or(String::new(), |r| {
        let ratio = s.p50 as f64 / r.p50.max(1) as f64;
        if ratio < 0.1 {
            format!("  ({ratio:.4}x hwlink p50)")
        } else {
            format!("  ({ratio:.2}x hwlink p50)")
        }
    });
    let [p50, p90, p99, p999, max, mean] = s.micros();
    println!(
        "{label:<28} p50 {p50:>9.3}  p90 {p90:>9.3}  p99 {p99:>9.3}  p99.9 {p999:>9.3}  max {max:>10.3}  mean {mean:>9.3} µs{ratio}"
    );
}

fn pingpong_cmd(args: PingpongArgs) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if args.backend == Backend::Ivshmem {
        return device_cmds::pingpong_ivshmem(args);
    }
    let backend_used = {
        // Report the memory the links really use (auto may fall back).
        let probe = hwlink::LinkBuilder::new(format!("probe{}", std::process::id()))
            .capacity(1)
            .slot_size(8)
            .backend(args.backend)
            .create_sender()?;
        if probe.backing().is_hugepage() {
            "hugepage"
        } else {
            "shm"
        }
    };
    println!(
        "hwlink pingpong: {} round trips of {} bytes, wait {}, backend {backend_used}, CPUs {},{}",
        args.count, args.size, args.wait, args.cpus.0, args.cpus.1
    );
    let two_cores = args.cpus.0 != args.cpus.1;
    let mechanisms: &[Mechanism] = match (args.baseline, two_cores) {
        (false, _) => &[Mechanism::Hwlink],
        // The floor busy-polls: a bound for the spinning strategies only.
        (true, true) if args.wait != WaitStrategy::Park => {
            &[Mechanism::Hwlink, Mechanism::Pipe, Mechanism::Floor]
        }
        // A busy-polling floor on one core only measures the scheduler.
        (true, _) => &[Mechanism::Hwlink, Mechanism::Pipe],
    };
    let stats = run_interleaved(&args, mechanisms)?;
    let hw = stats[0];
    print_stats(&format!("hwlink ({})", args.wait), &hw, None);
    let mut extra = String::new();
    // The baselines after hwlink: pipe (slower: pipe / hwlink), then the
    // floor (faster: hwlink / floor).
    for (i, label, key) in [(1, "pipe", "pipe"), (2, "cache-line floor", "floor")] {
        let Some(other) = stats.get(i) else { continue };
        print_stats(label, other, Some(&hw));
        extra.push_str(&format!(r#","{key}_rtt_ns":{}"#, other.to_json()));
        let (slow, fast, text) = if i == 1 {
            (other.p50, hw.p50, "pipe p50 / hwlink p50")
        } else {
            (hw.p50, other.p50, "hwlink p50 / floor p50")
        };
        println!("{text} = {:.2}", slow as f64 / fast.max(1) as f64);
    }
    if args.json {
        println!(
            r#"{{"backend":"{backend_used}","wait":"{}","size":{},"count":{},"cpus":[{},{}],"rtt_ns":{}{extra}}}"#,
            args.wait,
            args.size,
            args.count,
            args.cpus.0,
            args.cpus.1,
            hw.to_json()
        );
    }
    Ok(())
}

use hwlink_drivers::bridges::BridgeDirection;

fn ls_cmd() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let regions = admin::list()?;
    let bridges = hwlink_drivers::bridges::list_bridges();
    if regions.is_empty() && bridges.is_empty() {
        println!("no hwlink regions on this machine");
        return Ok(());
    }
    println!(
        "{:<32} {:<14} {:>10} {:>8} {:<6} {:<6}",
        "NAME", "BACKING", "BYTES", "CREATOR", "ALIVE", "STALE"
    );
    for r in &regions {
        println!(
            "{:<32} {:<14} {:>10} {:>8} {:<6} {:<6}",
            r.name,
            r.kind.to_string(),
            r.size,
            r.creator_pid,
            if r.creator_alive { "yes" } else { "no" },
            if r.is_stale() { "yes" } else { "no" }
        );
        for ring in &r.rings {
            let occ = match &ring.occupancy {
                Ok(n) => format!("{n}/{}", ring.capacity),
                Err(e) => format!("unreadable: {e}"),
            };
            let ep = |e: &admin::EndpointStatus| {
                if e.pid == 0 {
                    e.state.to_string()
                } else {
                    format!(
                        "{} pid {}{}",
                        e.state,
                        e.pid,
                        if e.alive { "" } else { " (dead)" }
                    )
                }
            };
            println!(
                "    ring `{}`: {occ} messages queued, slot {} B, {} KiB pages; sender {}; receiver {}",
                ring.name,
                ring.slot_size,
                r.page_size / 1024,
                ep(&ring.sender),
                ep(&ring.receiver)
            );
        }
        if let Some(m) = &r.mailbox {
            println!(
                "    {} id {}: {}, {} messages queued, {} bytes in use{}",
                if r.name.starts_with("mbx.") {
                    "mailbox"
                } else {
                    "link queues"
                },
                m.id,
                m.buffering,
                m.queued,
                m.bytes_in_use,
                if m.removed { ", removed" } else { "" }
            );
            for a in &m.attachments {
                let access = match a.access {
                    hwlink::Access::Send => "send",
                    hwlink::Access::Recv => "receive",
                    hwlink::Access::SendRecv => "send+receive",
                };
                println!(
                    "      attached: pid {} ({access}){}",
                    a.pid,
                    if a.alive { "" } else { " (dead)" }
                );
            }
        }
        if let Some(z) = &r.rendezvous {
            println!(
                "    rendezvous: {} cells, {} senders offering, {} receivers waiting, {} in a hand-off",
                z.cells, z.senders_waiting, z.receivers_waiting, z.busy
            );
        }
        if let Some(t) = &r.topic {
            let publisher = match t.publisher {
                Some((pid, alive)) => {
                    format!("pid {pid}{}", if alive { "" } else { " (dead)" })
                }
                None => "none".to_string(),
            };
            println!(
                "    topic: {} published, {} slots of {} B, {:?}, history {}, {} of {} subscribers; publisher {publisher}",
                t.published,
                t.capacity,
                t.slot_size,
                t.backpressure,
                t.history,
                t.subscribers.len(),
                t.max_subscribers
            );
            for s in &t.subscribers {
                println!(
                    "      subscriber pid {}{}: at {}, lag {}{}",
                    s.pid,
                    if s.alive { "" } else { " (dead)" },
                    s.cursor,
                    s.lag,
                    if s.lagged > 0 {
                        format!(", missed {} in all", s.lagged)
                    } else {
                        String::new()
                    }
                );
            }
        }
        if let Some(root) = &r.segment_of {
            println!(
                "    segment of queue region `{root}`{}",
                if r.orphaned { " (gone)" } else { "" }
            );
        }
        for m in &r.members {
            println!(
                "    member `{}`: pid {}, alive {}",
                m.name,
                m.pid,
                if m.alive { "yes" } else { "no" }
            );
        }
        if let Some(e) = &r.error {
            println!("    error: {e}");
        }
        for b in &bridges {
            for e in b.entries.iter().filter(|e| e.name == r.name) {
                println!(
                    "    bridged: {} zenoh key `{}` by hwlink-bridge pid {}{}",
                    match e.direction {
                        BridgeDirection::Export => "exported to",
                        BridgeDirection::Import => "imported from",
                    },
                    e.key,
                    b.pid,
                    if b.alive { "" } else { " (dead)" }
                );
            }
        }
    }
    if !bridges.is_empty() {
        println!("\nbridges (hwlink-bridge processes):");
        for b in &bridges {
            println!(
                "    pid {} (token {:08x}), {}: {}",
                b.pid,
                b.token,
                if b.alive {
                    "alive"
                } else {
                    "dead (hwlink rm --stale removes its file)"
                },
                b.entries
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let procs = admin::processes();
    if !procs.is_empty() {
        println!("\nprocesses (liveness files):");
        for p in &procs {
            println!(
                "    token {:08x}: pid {}, {}",
                p.token,
                p.pid,
                if p.alive {
                    "alive"
                } else {
                    "dead (hwlink rm --stale removes it)"
                }
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Cmd::BenchPeer { .. }
            | Cmd::BenchBufferingPeer { .. }
            | Cmd::BenchMpmcPeer { .. }
            | Cmd::PingpongPeer { .. }
    ) {
        // A benchmark's peer: the measuring process has told the user once
        // already if hugepages ran out; twenty peers must not repeat it.
        hwlink_drivers::silence_fallback_warning();
    }
    let result = match cli.command {
        Cmd::Bench(args) => bench_cmd(args),
        Cmd::BenchPeer { args } => hwlink_benches::bench::peer_main(&args).map_err(Into::into),
        Cmd::Pingpong(args) => pingpong_cmd(args),
        Cmd::BenchMpmc(args) => mpmc_cmd(args),
        Cmd::BenchBuffering(args) => buffering_cmd(args),
        Cmd::BenchUnbounded(args) => unbounded_cmd(args),
        Cmd::BenchBufferingPeer { args } => {
            hwlink_benches::bench::buffering::peer_main(&args).map_err(Into::into)
        }
        Cmd::BenchMpmcPeer { args } => {
            hwlink_benches::bench::mpmc::peer_main(&args).map_err(Into::into)
        }
        Cmd::PingpongPeer { args } => pingpong::peer_main(&args),
        Cmd::Ls => ls_cmd(),
        Cmd::Setup(args) => setup_cmd(args),
        Cmd::Exchange(args) => device_cmds::exchange_cmd(args),
        Cmd::Vfio(cmd) => device_cmds::vfio_cmd(cmd),
        Cmd::IvshmemServer(args) => device_cmds::ivshmem_server_cmd(args),
        Cmd::PingpongEcho(args) => device_cmds::pingpong_echo_cmd(args),
        Cmd::Rm {
            name: Some(name), ..
        } => admin::remove(&name)
            .map(|()| println!("removed {name}"))
            .map_err(Into::into),
        Cmd::Rm { name: None, .. } => admin::remove_stale()
            .map(|names| {
                if names.is_empty() {
                    println!("no stale regions");
                }
                for n in names {
                    if n.starts_with('/') {
                        println!("removed a dead process's liveness file {n}");
                    } else {
                        println!("removed stale region {n}");
                    }
                }
            })
            .map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hwlink: error: {e}");
            ExitCode::FAILURE
        }
    }
}

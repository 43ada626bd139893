//! The `hwlink-bridge` command: one zenoh session, the exports and imports
//! the command line names, a registry file for `hwlink ls`, and counters
//! printed at an interval, on SIGUSR1 and at exit.

// The bridge's counters and stop flags are plain std atomics: it has no
// loom model (its concurrency is zenoh's callbacks and a few threads
// joined by mutexes), so the library's loom shim does not apply.
#![allow(clippy::disallowed_types)]

use clap::Parser;
use hwlink::WaitStrategy;
use hwlink_bridge::local::{LocalOptions, Sink, Source};
use hwlink_bridge::stats::Counters;
use hwlink_bridge::{export, import, parse_export, parse_import, BridgeError};
use hwlink_drivers::bridges::{register_bridge, BridgeDirection, BridgeEntry};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zenoh::Wait;

/// Carry hwlink mailboxes, links and topics between machines over zenoh.
#[derive(Parser, Debug)]
#[command(
    name = "hwlink-bridge",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: Args,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// Send checked messages into a local object (verify a bridged path
    /// end to end with `check-recv` on the other machine).
    CheckSend {
        /// The object: mailbox:NAME, link:NAME or topic:NAME.
        object: String,
        /// Messages to send.
        #[arg(long, default_value_t = 1_000_000)]
        count: u64,
        /// Largest message (lengths vary from 16 bytes up to this).
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Give up (print `blocked after N`, exit 3) when one send waits
        /// this long.
        #[arg(long, default_value_t = 30_000)]
        timeout_ms: u64,
        #[command(flatten)]
        local: LocalArgs,
    },
    /// Receive and verify checked messages from a local object; prints
    /// how many arrived, were lost or came twice (exit 1 unless each
    /// arrived exactly once, in order).
    CheckRecv {
        /// The object: mailbox:NAME, link:NAME or topic:NAME.
        object: String,
        /// Messages expected.
        #[arg(long, default_value_t = 1_000_000)]
        count: u64,
        /// Stop when nothing came for this long.
        #[arg(long, default_value_t = 10_000)]
        idle_ms: u64,
        /// Stop reading after this many messages ...
        #[arg(long)]
        stall_after: Option<u64>,
        /// ... for this long.
        #[arg(long, default_value_t = 0)]
        stall_ms: u64,
        /// Print `progress N` every this many messages.
        #[arg(long)]
        progress: Option<u64>,
        #[command(flatten)]
        local: LocalArgs,
    },
    /// Round trip and throughput over two bridges between two network
    /// namespaces, beside plain zenoh and TCP on the same path (root; run
    /// by `hwlink bench --workloads bridge`).
    Bench {
        /// Seconds per row.
        #[arg(long, default_value_t = 1.0)]
        secs: f64,
        /// Throughput message sizes.
        #[arg(long, value_delimiter = ',', default_values_t = [64usize, 65536])]
        sizes: Vec<usize>,
        /// Round-trip message size.
        #[arg(long, default_value_t = 8)]
        rt_size: usize,
        /// One more argument for both bridges, e.g. `--bridge-arg=--no-express`
        /// (repeatable).
        #[arg(long, allow_hyphen_values = true)]
        bridge_arg: Vec<String>,
    },
    /// One process of `bench`.
    #[command(hide = true)]
    BenchPeer {
        #[arg(long)]
        role: String,
        #[arg(long)]
        size: usize,
        #[arg(long)]
        secs: f64,
        #[arg(long, default_value_t = 0)]
        burst: u64,
        names: Vec<String>,
    },
}

/// How local objects are created and waited on.
#[derive(clap::Args, Debug, Clone)]
struct LocalArgs {
    /// How the bridge waits on its local objects: poll, spin-park, park.
    #[arg(long, default_value = "spin-park")]
    wait: WaitStrategy,
    /// Slots of a local object the bridge creates.
    #[arg(long, default_value_t = 1024)]
    capacity: u32,
    /// Largest message of a local object the bridge creates.
    #[arg(long, default_value_t = hwlink::DEFAULT_MAILBOX_SLOT_SIZE)]
    slot_size: u32,
}

impl LocalArgs {
    fn options(&self) -> LocalOptions {
        LocalOptions {
            capacity: self.capacity,
            slot_size: self.slot_size,
            wait: self.wait,
        }
    }
}

fn object(s: &str) -> Result<(hwlink_bridge::local::Kind, String), BridgeError> {
    let spec = parse_export(s)?;
    Ok((spec.kind, spec.name))
}

#[derive(clap::Args, Debug)]
struct Args {
    /// Take messages from a local object and publish them:
    /// `mailbox:NAME[=KEY]`, `link:NAME[=KEY]` or `topic:NAME[=KEY]`
    /// (default key `hwlink/<kind>/<name>`). Repeatable.
    #[arg(long = "export", value_name = "KIND:NAME[=KEY]")]
    exports: Vec<String>,
    /// Receive from a key and deliver into a local object, created if
    /// missing: `KEY=mailbox:NAME` (or `link:`, `topic:`). Repeatable.
    #[arg(long = "import", value_name = "KEY=KIND:NAME")]
    imports: Vec<String>,
    /// zenoh endpoint to connect to, e.g. `tcp/10.0.0.1:7447`. Repeatable.
    #[arg(long)]
    connect: Vec<String>,
    /// zenoh endpoint to listen on, e.g. `tcp/0.0.0.0:7447`. Repeatable.
    #[arg(long)]
    listen: Vec<String>,
    /// A zenoh configuration file (JSON5) for everything else: mode,
    /// routers, transports, scouting. `--connect`/`--listen` add to it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Turn zenoh's multicast scouting on (off by default: peers are
    /// named with --connect, or found through a router).
    #[arg(long)]
    multicast_scouting: bool,
    #[command(flatten)]
    local: LocalArgs,
    /// Most messages an export runs ahead of its importers'
    /// acknowledgements (the back-pressure window).
    #[arg(long, default_value_t = 8192)]
    window: u64,
    /// Most bytes in frames not yet acknowledged, in MiB.
    #[arg(long, default_value_t = 16)]
    window_mib: usize,
    /// A frame is published once it holds this many bytes.
    #[arg(long, default_value_t = 16 * 1024)]
    batch_bytes: usize,
    /// ... or once its first message waited this long for more (µs).
    #[arg(long, default_value_t = 50)]
    max_delay_us: u64,
    /// An importing bridge not heard from for this long no longer holds
    /// back an export (ms).
    #[arg(long, default_value_t = 3000)]
    lease_ms: u64,
    /// Print the counters every this many seconds (0: only on SIGUSR1 and
    /// at exit).
    #[arg(long, default_value_t = 0.0)]
    stats_interval: f64,
    /// Never use zenoh's express flag (by default frames up to 32 KiB go
    /// express, sent at once; larger ones through zenoh's batching).
    #[arg(long)]
    no_express: bool,
}

fn zenoh_config(a: &Args) -> Result<zenoh::Config, BridgeError> {
    let mut c = match &a.config {
        Some(p) => zenoh::Config::from_file(p)
            .map_err(|e| BridgeError::zenoh(format!("reading {}", p.display()), e))?,
        None => zenoh::Config::default(),
    };
    let mut set = |k: &str, v: String| {
        c.insert_json5(k, &v)
            .map_err(|e| BridgeError::zenoh(format!("setting {k} = {v}"), e))
    };
    if a.config.is_none() || a.multicast_scouting {
        set(
            "scouting/multicast/enabled",
            a.multicast_scouting.to_string(),
        )?;
    }
    let list = |v: &[String]| {
        format!(
            "[{}]",
            v.iter()
                .map(|e| format!("{e:?}"))
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    if !a.connect.is_empty() {
        set("connect/endpoints", list(&a.connect))?;
    }
    if !a.listen.is_empty() {
        set("listen/endpoints", list(&a.listen))?;
    }
    Ok(c)
}

fn peers(session: &zenoh::Session) -> Vec<String> {
    session
        .info()
        .peers_zid()
        .wait()
        .map(|z| z.to_string())
        .collect()
}

fn run(a: Args) -> Result<(), BridgeError> {
    let exports = a
        .exports
        .iter()
        .map(|s| parse_export(s))
        .collect::<Result<Vec<_>, _>>()?;
    let imports = a
        .imports
        .iter()
        .map(|s| parse_import(s))
        .collect::<Result<Vec<_>, _>>()?;
    if exports.is_empty() && imports.is_empty() {
        return Err(BridgeError::Usage(
            "nothing to carry: give --export KIND:NAME and/or --import KEY=KIND:NAME".into(),
        ));
    }
    let local = a.local.options();
    let lease = Duration::from_millis(a.lease_ms);
    let stats = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let usr1 = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| BridgeError::Local(format!("installing a signal handler: {e}")))?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, usr1.clone())
        .map_err(|e| BridgeError::Local(format!("installing a signal handler: {e}")))?;

    let session = zenoh::open(zenoh_config(&a)?)
        .wait()
        .map_err(|e| BridgeError::zenoh("opening the session".into(), e))?;

    let mut entries = Vec::new();
    let mut imported = Vec::new();
    for spec in &imports {
        let sink =
            Sink::open(spec.kind, &spec.name, &local).map_err(|source| BridgeError::Open {
                kind: spec.kind,
                name: spec.name.clone(),
                source,
            })?;
        let cfg = import::ImportConfig {
            key: spec.key.clone(),
            ack_every: (a.window / 8).max(1),
        };
        imported.push(import::spawn(
            &session,
            sink,
            cfg,
            stats.clone(),
            stop.clone(),
        )?);
        entries.push(BridgeEntry {
            direction: BridgeDirection::Import,
            kind: spec.kind.to_string(),
            name: spec.kind.region_name(&spec.name),
            key: spec.key.clone(),
        });
    }
    let mut exporting = Vec::new();
    for spec in &exports {
        let source =
            Source::open(spec.kind, &spec.name, &local).map_err(|source| BridgeError::Open {
                kind: spec.kind,
                name: spec.name.clone(),
                source,
            })?;
        let cfg = export::ExportConfig {
            key: spec.key.clone(),
            window_msgs: a.window.max(1),
            window_bytes: a.window_mib.max(1) << 20,
            batch_bytes: a.batch_bytes.max(1),
            max_delay: Duration::from_micros(a.max_delay_us),
            lease,
            express: !a.no_express,
        };
        let t = export::spawn(
            &session,
            source,
            cfg,
            stats.clone(),
            stop.clone(),
            Duration::from_secs(2),
        )?;
        exporting.push((spec.clone(), Some(t)));
        entries.push(BridgeEntry {
            direction: BridgeDirection::Export,
            kind: spec.kind.to_string(),
            name: spec.kind.region_name(&spec.name),
            key: spec.key.clone(),
        });
    }
    let registration = register_bridge(&entries)?;
    eprintln!(
        "hwlink-bridge: ready, pid {}, zenoh id {}: {}",
        std::process::id(),
        session.zid(),
        entries
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    );

    let interval = (a.stats_interval > 0.0).then(|| Duration::from_secs_f64(a.stats_interval));
    let mut last_stats = Instant::now();
    let mut result = Ok(());
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
        let due = interval.is_some_and(|i| last_stats.elapsed() >= i);
        if usr1.swap(false, Ordering::Relaxed) || due {
            last_stats = Instant::now();
            eprintln!("hwlink-bridge: {}", stats.line(&peers(&session)));
        }
        for (spec, slot) in &mut exporting {
            if slot.as_ref().is_some_and(|t| t.is_finished()) {
                match slot.take().map(|t| t.join()) {
                    Some(Ok(Ok(()))) => {}
                    Some(Ok(Err(e))) => {
                        result = Err(e);
                        stop.store(true, Ordering::Relaxed);
                    }
                    _ => {
                        result = Err(BridgeError::Local(format!(
                            "the export of {} `{}` panicked",
                            spec.kind, spec.name
                        )));
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for (_, slot) in exporting {
        if let Some(Ok(Err(e))) = slot.map(|t| t.join()) {
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    for i in imported {
        i.join();
    }
    eprintln!("hwlink-bridge: at exit: {}", stats.line(&peers(&session)));
    drop(registration);
    let _ = session.close().wait();
    result
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        None => run(cli.run).map(|()| true),
        Some(Cmd::CheckSend {
            object: o,
            count,
            size,
            timeout_ms,
            local,
        }) => object(&o).and_then(|(kind, name)| {
            let r = hwlink_bridge::check::send(
                kind,
                &name,
                &local.options(),
                count,
                size,
                Duration::from_millis(timeout_ms),
            );
            if matches!(r, Ok(false)) {
                return Ok(false);
            }
            r
        }),
        Some(Cmd::CheckRecv {
            object: o,
            count,
            idle_ms,
            stall_after,
            stall_ms,
            progress,
            local,
        }) => object(&o).and_then(|(kind, name)| {
            hwlink_bridge::check::recv(
                kind,
                &name,
                &local.options(),
                count,
                Duration::from_millis(idle_ms),
                stall_after.map(|n| (n, Duration::from_millis(stall_ms))),
                progress,
            )
        }),
        Some(Cmd::Bench {
            secs,
            sizes,
            rt_size,
            bridge_arg,
        }) => std::env::current_exe()
            .map_err(|e| BridgeError::Local(format!("finding this program: {e}")))
            .and_then(|exe| {
                hwlink_bridge::bench::run(
                    &exe.to_string_lossy(),
                    &hwlink_bridge::bench::BenchOptions {
                        secs,
                        sizes,
                        rt_size,
                        bridge_args: bridge_arg,
                    },
                )
            })
            .map(|()| true),
        Some(Cmd::BenchPeer {
            role,
            size,
            secs,
            burst,
            names,
        }) => hwlink_bridge::bench::peer(&role, size, secs, burst, &names).map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(3),
        Err(e) => {
            eprintln!("hwlink-bridge: {e}");
            ExitCode::FAILURE
        }
    }
}

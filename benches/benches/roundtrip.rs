//! Round trips of an 8-byte message between two real processes, measured
//! side by side in one run: the raw cache-line floor, hwlink with each wait
//! strategy, and a pipe.
//!
//! The peer process is this binary re-executed with `HWLINK_BENCH_PEER=1`;
//! it runs [`pingpong::peer_main`] and exits. Each benchmark keeps one
//! [`Session`] (and so one peer process) for all of criterion's iterations,
//! and finishes it when the benchmark is done. After the criterion groups a
//! short summary prints the ratios measured in this run.
//!
//! ```text
//! cargo bench -p hwlink-benches --bench roundtrip
//! cargo bench -p hwlink-benches --bench roundtrip -- --warm-up-time 1 --measurement-time 3
//! ```

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion};
use hwlink::{Backend, WaitStrategy};
use hwlink_benches::pingpong::{self, Config, Mechanism, PeerArgs, Session};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Set (to "1") in the environment of the peer process.
const PEER_ENV: &str = "HWLINK_BENCH_PEER";
/// The measuring process's pid, in the environment of the peer process.
const PARENT_ENV: &str = "HWLINK_BENCH_PARENT";
/// Message bytes (the smallest: the sequence number alone).
const SIZE: usize = 8;

/// What each benchmark's routine timed, keyed by `group/function`: every
/// call of `iter_custom` (warm-up and samples), in order.
#[derive(Default)]
struct Results(Vec<(String, Vec<Sample>)>);

/// One call of `iter_custom`: `iters` round trips in `elapsed`.
#[derive(Clone, Copy)]
struct Sample {
    iters: u64,
    elapsed: Duration,
}

/// One benchmark's figures, in nanoseconds per round trip.
struct Summary {
    /// Over every round trip timed (warm-up and samples together).
    mean: f64,
    /// Median of the per-call means.
    median: f64,
    round_trips: u64,
    calls: usize,
}

fn summarise(samples: &[Sample]) -> Option<Summary> {
    let round_trips: u64 = samples.iter().map(|s| s.iters).sum();
    if round_trips == 0 {
        return None;
    }
    let total: f64 = samples.iter().map(|s| s.elapsed.as_nanos() as f64).sum();
    let mut per_call: Vec<f64> = samples
        .iter()
        .filter(|s| s.iters > 0)
        .map(|s| s.elapsed.as_nanos() as f64 / s.iters as f64)
        .collect();
    per_call.sort_by(f64::total_cmp);
    Some(Summary {
        mean: total / round_trips as f64,
        median: per_call[per_call.len() / 2],
        round_trips,
        calls: samples.len(),
    })
}

impl Results {
    fn mean(&self, id: &str) -> Option<f64> {
        let (_, samples) = self.0.iter().find(|(k, _)| k == id)?;
        summarise(samples).map(|s| s.mean)
    }
}

fn config(mechanism: Mechanism, wait: WaitStrategy, cpus: (usize, usize)) -> Config {
    Config {
        mechanism,
        size: SIZE,
        wait,
        backend: Backend::Auto,
        cpus: Some(cpus),
    }
}

/// Benchmarks one configuration with one session: started on the first
/// call of the routine (so a filtered-out benchmark, `--list` or a skipped
/// run starts no peer), reused by every sample, finished afterwards.
fn bench_rtt(
    group: &mut BenchmarkGroup<'_, WallTime>,
    group_name: &str,
    name: &str,
    cfg: &Config,
    exe: &Path,
    results: &mut Results,
) {
    let launch = |peer: &PeerArgs| {
        let mut cmd = Command::new(exe);
        cmd.env(PEER_ENV, "1")
            .env(PARENT_ENV, std::process::id().to_string())
            .args(peer.args());
        cmd
    };
    let mut session: Option<Session> = None;
    let mut samples: Vec<Sample> = Vec::new();
    group.bench_function(name, |b| {
        let s = session.get_or_insert_with(|| {
            Session::start(cfg, &launch)
                .unwrap_or_else(|e| panic!("{group_name}/{name}: cannot start the session: {e}"))
        });
        b.iter_custom(|iters| {
            let elapsed = s
                .total(iters)
                .unwrap_or_else(|e| panic!("{group_name}/{name}: round trip failed: {e}"));
            samples.push(Sample { iters, elapsed });
            elapsed
        });
    });
    // A panic above drops the session instead, which kills and reaps the
    // peer; either way the regions are unlinked by their creator's drop.
    if let Some(s) = session.take() {
        s.finish()
            .unwrap_or_else(|e| panic!("{group_name}/{name}: {e}"));
    }
    if !samples.is_empty() {
        results.0.push((format!("{group_name}/{name}"), samples));
    }
}

fn rtt_two_cores(c: &mut Criterion, exe: &Path, results: &mut Results) {
    const GROUP: &str = "rtt_two_cores";
    let cpus = (0, 1);
    let mut group = c.benchmark_group(GROUP);
    let cases = [
        ("floor", Mechanism::Floor, WaitStrategy::BusyPoll),
        ("hwlink_poll", Mechanism::Hwlink, WaitStrategy::BusyPoll),
        ("hwlink_park", Mechanism::Hwlink, WaitStrategy::Park),
        ("pipe", Mechanism::Pipe, WaitStrategy::default()),
    ];
    for (name, mechanism, wait) in cases {
        let cfg = config(mechanism, wait, cpus);
        bench_rtt(&mut group, GROUP, name, &cfg, exe, results);
    }
    group.finish();
}

fn rtt_one_core(c: &mut Criterion, exe: &Path, results: &mut Results) {
    const GROUP: &str = "rtt_one_core";
    let cpus = (0, 0);
    let mut group = c.benchmark_group(GROUP);
    let cases = [
        ("hwlink_default", Mechanism::Hwlink, WaitStrategy::default()),
        ("pipe", Mechanism::Pipe, WaitStrategy::default()),
    ];
    for (name, mechanism, wait) in cases {
        let cfg = config(mechanism, wait, cpus);
        bench_rtt(&mut group, GROUP, name, &cfg, exe, results);
    }
    group.finish();
}

/// Whether criterion measures (rather than lists, tests or profiles): the
/// same rule as `Criterion::configure_from_args`.
fn measuring(args: &[String]) -> bool {
    let has = |flag: &str| args.iter().any(|a| a == flag);
    has("--bench")
        && !has("--test")
        && !has("--list")
        && !args.iter().any(|a| a.starts_with("--profile-time"))
}

/// One ratio of means, `num / den`, with its target.
struct Ratio {
    label: &'static str,
    num: &'static str,
    den: &'static str,
    target: &'static str,
    met: fn(f64) -> bool,
}

const RATIOS: [Ratio; 4] = [
    Ratio {
        label: "hwlink_poll/floor",
        num: "rtt_two_cores/hwlink_poll",
        den: "rtt_two_cores/floor",
        target: "<= 1.3",
        met: |r| r <= 1.3,
    },
    Ratio {
        label: "pipe/hwlink_poll",
        num: "rtt_two_cores/pipe",
        den: "rtt_two_cores/hwlink_poll",
        target: ">= 1, higher is better",
        met: |r| r >= 1.0,
    },
    Ratio {
        label: "hwlink_park/pipe",
        num: "rtt_two_cores/hwlink_park",
        den: "rtt_two_cores/pipe",
        target: "<= 1.0",
        met: |r| r <= 1.0,
    },
    Ratio {
        label: "hwlink_default/pipe (one core)",
        num: "rtt_one_core/hwlink_default",
        den: "rtt_one_core/pipe",
        target: "<= 1.0",
        met: |r| r <= 1.0,
    },
];

/// Relative gap between mean and median beyond which a benchmark is flagged
/// as disturbed (preempted peers make a few samples very slow).
const DISTURBED: f64 = 0.2;

fn print_summary(results: &Results, measured: bool) {
    if results.0.is_empty() {
        return;
    }
    println!();
    if measured {
        println!(
            "round-trip summary, {SIZE}-byte messages (ns per round trip over every round trip \
             each benchmark timed, warm-up included; median of its per-sample means):"
        );
    } else {
        println!(
            "round-trip summary (not a measurement: criterion ran each benchmark once, \
             ratios are meaningless):"
        );
    }
    let mut disturbed = Vec::new();
    for (id, samples) in &results.0 {
        if let Some(s) = summarise(samples) {
            println!(
                "  {id:<28} mean {:>9.1} ns  median {:>9.1} ns  ({} round trips in {} calls)",
                s.mean, s.median, s.round_trips, s.calls
            );
            if (s.mean / s.median - 1.0).abs() > DISTURBED {
                disturbed.push(id.as_str());
            }
        }
    }
    if measured && !disturbed.is_empty() {
        println!(
            "note: mean and median differ by more than {:.0}% for {}: something else ran on \
             these CPUs; rerun on an idle machine before trusting the ratios",
            DISTURBED * 100.0,
            disturbed.join(", ")
        );
    }
    for r in &RATIOS {
        match (results.mean(r.num), results.mean(r.den)) {
            (Some(n), Some(d)) if d > 0.0 => {
                let ratio = n / d;
                let verdict = if !measured {
                    ""
                } else if (r.met)(ratio) {
                    "  ok"
                } else {
                    "  MISSED"
                };
                println!(
                    "ratio {} = {ratio:.2} (target {}){verdict}",
                    r.label, r.target
                );
            }
            _ => println!("ratio {} = n/a (not measured in this run)", r.label),
        }
    }
}

/// Peer side: ends this process if the measuring process dies, so that a
/// busy-polling peer (the floor never sees a disconnection) cannot outlive
/// it. The measuring process spawns peers from its main thread, which lives
/// as long as it does.
fn die_with_parent() {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and changes nothing but
    // this process's parent-death signal.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    let expected = std::env::var(PARENT_ENV).ok().and_then(|p| p.parse().ok());
    if rc != 0 || expected.is_some_and(|p: libc::pid_t| p != parent) {
        // Could not arm it, or the parent died before it was armed.
        std::process::exit(1);
    }
}

fn main() {
    if std::env::var(PEER_ENV).as_deref() == Ok("1") {
        die_with_parent();
        let args: Vec<String> = std::env::args().skip(1).collect();
        if let Err(e) = pingpong::peer_main(&args) {
            eprintln!("roundtrip peer: {e}");
            std::process::exit(1);
        }
        return;
    }
    let exe = std::env::current_exe().expect("cannot find this benchmark's executable");
    let args: Vec<String> = std::env::args().collect();
    let mut c = Criterion::default().configure_from_args();
    let mut results = Results::default();
    rtt_two_cores(&mut c, &exe, &mut results);
    rtt_one_core(&mut c, &exe, &mut results);
    c.final_summary();
    print_summary(&results, measuring(&args));
}

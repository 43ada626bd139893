//! hwlink-chaos: the hostile-peer fuzzer and the kill -9 sweep (see
//! `fuzz.rs` and `sweep.rs`), and the victim processes they start.
//!
//! ```text
//! hwlink-chaos fuzz  [--minutes M | --seconds S] [--seed N] [--trials N] [--kinds a,b] [--trial T] [-v]
//! hwlink-chaos sweep [--trials N] [--seed N] [--kinds a,b] [--trial T] [-v]
//! ```
//!
//! Both print a summary per object kind and exit 1 if any trial failed,
//! with the command that replays it.
// The workspace's clippy.toml steers `hwlink` to its loom-switchable atomics
// (its `sync` module); this crate is never model-checked and uses std's.
#![allow(clippy::disallowed_types)]

mod attack;
mod fuzz;
mod proto;
mod spawn;
mod sweep;
mod victim;

use clap::{Parser, Subcommand};
use proto::{Kind, KINDS};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "hwlink-chaos",
    about = "hwlink's hostile-peer fuzzer and kill -9 sweep over real processes"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args)]
struct Common {
    /// Campaign seed; a failure prints the seed and trial that replay it
    /// (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Object kinds to cover, comma-separated (default: every kind).
    #[arg(long, value_delimiter = ',')]
    kinds: Vec<Kind>,
    /// Run this one trial of the campaign (replay).
    #[arg(long)]
    trial: Option<u64>,
    /// Print each trial and the victims' reports.
    #[arg(short, long)]
    verbose: bool,
}

impl Common {
    fn kinds(&self) -> Vec<Kind> {
        if self.kinds.is_empty() {
            KINDS.to_vec()
        } else {
            self.kinds.clone()
        }
    }
    fn seed(&self) -> u64 {
        self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Hostile peer: an attacker writes adversarial values into every
    /// shared word of live victims' regions.
    Fuzz {
        /// Run for this many minutes.
        #[arg(long, conflicts_with = "seconds")]
        minutes: Option<u64>,
        /// Run for this many seconds (default 60).
        #[arg(long)]
        seconds: Option<u64>,
        /// Stop after this many trials.
        #[arg(long)]
        trials: Option<u64>,
        #[command(flatten)]
        common: Common,
    },
    /// Crashing peer: SIGKILL a sender, receiver or member at random points.
    Sweep {
        /// Number of trials.
        #[arg(long, default_value_t = 100)]
        trials: u64,
        #[command(flatten)]
        common: Common,
    },
    /// A victim process (started by fuzz and sweep; set up by environment).
    #[command(hide = true)]
    Victim,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn fuzz_cmd(
    minutes: Option<u64>,
    seconds: Option<u64>,
    trials: Option<u64>,
    common: &Common,
) -> ExitCode {
    let seed = common.seed();
    let budget = match (minutes, seconds) {
        (Some(m), _) => Duration::from_secs(m.saturating_mul(60)),
        (None, Some(s)) => Duration::from_secs(s),
        (None, None) => Duration::from_secs(60),
    };
    let opts = fuzz::Options {
        seed,
        kinds: common.kinds(),
        until: Instant::now() + budget,
        max_trials: trials.unwrap_or(u64::MAX),
        only_trial: common.trial,
        verbose: common.verbose,
    };
    println!(
        "hwlink-chaos fuzz: seed {seed}, {} kinds, up to {budget:?}",
        opts.kinds.len()
    );
    let t0 = Instant::now();
    let (totals, failures) = fuzz::run(&opts);
    println!(
        "{:<18} {:>6} {:>9} {:>7} {:>11} {:>8} {:>8} {:>9} {:>10} {:>6} {:>10} {:>6} {:>8}",
        "kind",
        "trials",
        "writes",
        "resizes",
        "corruptions",
        "in-vict",
        "blocking",
        "bounded",
        "overstay",
        ">10ms",
        "own",
        ">10ms",
        "failures"
    );
    let row = |name: &str, t: &fuzz::Totals| {
        println!(
            "{:<18} {:>6} {:>9} {:>7} {:>11} {:>8} {:>8} {:>9} {:>7.1} ms {:>6} {:>7.1} ms {:>6} {:>8}",
            name,
            t.trials,
            t.writes,
            t.resizes,
            t.corruptions,
            t.corrupt_victims,
            t.blocking_checks,
            t.bounded,
            t.max_over_ms,
            t.over10,
            t.max_own_ms,
            t.own_over10,
            t.failures
        );
    };
    let mut all = fuzz::Totals::default();
    for (k, t) in &totals {
        row(k.name(), t);
        all.trials += t.trials;
        all.writes += t.writes;
        all.resizes += t.resizes;
        all.corruptions += t.corruptions;
        all.corrupt_victims += t.corrupt_victims;
        all.blocking_checks += t.blocking_checks;
        all.failures += t.failures;
        all.max_over_ms = all.max_over_ms.max(t.max_over_ms);
        all.bounded += t.bounded;
        all.over10 += t.over10;
        all.max_own_ms = all.max_own_ms.max(t.max_own_ms);
        all.own_over10 += t.own_over10;
    }
    row("all", &all);
    println!(
        "{} trials in {:.1} s; corruptions = calls that returned Corrupt (a poisoned end keeps returning it), in-vict = victim processes that saw one; blocking = blocking calls with no deadline that ended when their peer died; bounded = calls with a deadline (try and timed); overstay = longest any returned past its deadline, >10ms = how many returned over 10 ms past it; own, >10ms: the same less the time the caller sat runnable on a run queue (the victims and the attacker share the cores)",
        all.trials,
        t0.elapsed().as_secs_f64()
    );
    if failures.is_empty() {
        println!("0 failures");
        ExitCode::SUCCESS
    } else {
        println!("{} failures:", failures.len());
        for f in &failures {
            println!("  {f}");
        }
        ExitCode::FAILURE
    }
}

fn sweep_cmd(trials: u64, common: &Common) -> ExitCode {
    let seed = common.seed();
    let opts = sweep::Options {
        seed,
        kinds: common.kinds(),
        trials,
        only_trial: common.trial,
        verbose: common.verbose,
    };
    println!("hwlink-chaos sweep: seed {seed}, {} trials", opts.trials);
    let t0 = Instant::now();
    let out = sweep::run(&opts);
    println!(
        "{:<18} {:>7} {:>10} {:>10} {:>6} {:>6} {:>8} {:>9} {:>9}",
        "kind", "trials", "accepted", "delivered", "lost", "dups", "in-kill", "lagged", "failures"
    );
    for (k, t) in &out.totals {
        println!(
            "{:<18} {:>7} {:>10} {:>10} {:>6} {:>6} {:>8} {:>9} {:>9}",
            k.name(),
            t.trials,
            t.accepted,
            t.delivered,
            t.lost,
            t.duplicated,
            t.taken_by_the_killed,
            t.lagged,
            t.failures
        );
    }
    println!(
        "lost = accepted by a send that returned Ok and never delivered while its receiver lived (must be 0); \
         in-kill = taken by a mailbox receiver that was killed before it could report it (at most 1 per kill); \
         topics count per subscriber (accepted x 2), and lagged = positions a subscriber was told it missed (Overwrite)"
    );
    let mut by_wait: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for d in &out.detections {
        by_wait.entry(d.wait.to_string()).or_default().push(d.ms);
        by_wait
            .entry(format!("{} {}", d.kind, d.wait))
            .or_default()
            .push(d.ms);
        by_wait.entry("all".into()).or_default().push(d.ms);
    }
    println!(
        "death noticed by the survivor (links, domain links, a topic's subscribers), ms after the kill:"
    );
    for (w, v) in &mut by_wait {
        v.sort_by(|a, b| a.total_cmp(b));
        println!(
            "  {w:<28} n={:<5} p50 {:>7.2}  p99 {:>7.2}  max {:>7.2}",
            v.len(),
            percentile(v, 0.5),
            percentile(v, 0.99),
            percentile(v, 1.0)
        );
    }
    let mut stalls: Vec<f64> = out.stalls.iter().map(|s| s.2).collect();
    stalls.sort_by(|a, b| a.total_cmp(b));
    if !stalls.is_empty() {
        println!(
            "mailboxes: longest gap between messages at the surviving receiver after the kill, ms: n={} p50 {:.2} p99 {:.2} max {:.2}",
            stalls.len(),
            percentile(&stalls, 0.5),
            percentile(&stalls, 0.99),
            percentile(&stalls, 1.0)
        );
    }
    let mut held: Vec<f64> = out
        .held
        .iter()
        .filter(|h| h.0 == Kind::TopicBlock)
        .map(|h| h.2)
        .collect();
    held.sort_by(|a, b| a.total_cmp(b));
    if !held.is_empty() {
        println!(
            "topic-block: longest the publisher sent nothing after a subscriber was killed while the other had read all, ms: n={} p50 {:.2} p99 {:.2} max {:.2}",
            held.len(),
            percentile(&held, 0.5),
            percentile(&held, 0.99),
            percentile(&held, 1.0)
        );
    }
    println!("{:.1} s", t0.elapsed().as_secs_f64());
    if out.failures.is_empty() {
        println!("0 failures");
        ExitCode::SUCCESS
    } else {
        println!("{} failures:", out.failures.len());
        for f in &out.failures {
            println!("  {f}");
        }
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    match Cli::parse().cmd {
        Cmd::Fuzz {
            minutes,
            seconds,
            trials,
            common,
        } => fuzz_cmd(minutes, seconds, trials, &common),
        Cmd::Sweep { trials, common } => sweep_cmd(trials, &common),
        Cmd::Victim => {
            let setup = victim::Setup::from_env();
            match setup.role.as_str() {
                "sweep-send" => victim::sweep_sender(&setup),
                "sweep-recv" => victim::sweep_receiver(&setup),
                _ => victim::fuzz_victim(&setup),
            }
            ExitCode::SUCCESS
        }
    }
}

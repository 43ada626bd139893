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

mod attack;
mod fuzz;
mod proto;
mod spawn;
mod sweep;
mod victim;

use proto::{Kind, KINDS};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

struct Args {
    rest: Vec<String>,
}

impl Args {
    fn value(&self, flag: &str) -> Option<String> {
        let i = self.rest.iter().position(|a| a == flag)?;
        self.rest.get(i + 1).cloned()
    }
    fn num(&self, flag: &str) -> Option<u64> {
        self.value(flag).map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{flag} takes a number, not `{v}`"))
        })
    }
    fn has(&self, flag: &str) -> bool {
        self.rest.iter().any(|a| a == flag)
    }
    fn kinds(&self) -> Vec<Kind> {
        match self.value("--kinds") {
            None => KINDS.to_vec(),
            Some(list) => list
                .split(',')
                .map(|k| k.parse().unwrap_or_else(|e: String| panic!("{e}")))
                .collect(),
        }
    }
    fn seed(&self) -> u64 {
        self.num("--seed").unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn fuzz_cmd(args: &Args) -> ExitCode {
    let seed = args.seed();
    let budget = match (args.num("--minutes"), args.num("--seconds")) {
        (Some(m), _) => Duration::from_secs(m * 60),
        (None, Some(s)) => Duration::from_secs(s),
        (None, None) => Duration::from_secs(60),
    };
    let opts = fuzz::Options {
        seed,
        kinds: args.kinds(),
        until: Instant::now() + budget,
        max_trials: args.num("--trials").unwrap_or(u64::MAX),
        only_trial: args.num("--trial"),
        verbose: args.has("-v"),
    };
    println!(
        "hwlink-chaos fuzz: seed {seed}, {} kinds, up to {budget:?}",
        opts.kinds.len()
    );
    let t0 = Instant::now();
    let (totals, failures) = fuzz::run(&opts);
    println!(
        "{:<18} {:>7} {:>10} {:>8} {:>12} {:>10} {:>9} {:>10} {:>9}",
        "kind",
        "trials",
        "writes",
        "resizes",
        "corruptions",
        "in-victims",
        "blocking",
        "overstay",
        "failures"
    );
    let mut all = fuzz::Totals::default();
    for (k, t) in &totals {
        println!(
            "{:<18} {:>7} {:>10} {:>8} {:>12} {:>10} {:>9} {:>7.1} ms {:>9}",
            k.name(),
            t.trials,
            t.writes,
            t.resizes,
            t.corruptions,
            t.corrupt_victims,
            t.blocking_checks,
            t.max_over_ms,
            t.failures
        );
        all.trials += t.trials;
        all.writes += t.writes;
        all.resizes += t.resizes;
        all.corruptions += t.corruptions;
        all.corrupt_victims += t.corrupt_victims;
        all.blocking_checks += t.blocking_checks;
        all.failures += t.failures;
        all.max_over_ms = all.max_over_ms.max(t.max_over_ms);
    }
    println!(
        "{:<18} {:>7} {:>10} {:>8} {:>12} {:>10} {:>9} {:>7.1} ms {:>9}",
        "all",
        all.trials,
        all.writes,
        all.resizes,
        all.corruptions,
        all.corrupt_victims,
        all.blocking_checks,
        all.max_over_ms,
        all.failures
    );
    println!(
        "{} trials in {:.1} s; corruptions = calls that returned Corrupt (a poisoned end keeps returning it), in-victims = victim processes that saw one; blocking = blocking calls with no deadline that ended when their peer died; overstay = longest any call returned past its own deadline",
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

fn sweep_cmd(args: &Args) -> ExitCode {
    let seed = args.seed();
    let opts = sweep::Options {
        seed,
        kinds: args.kinds(),
        trials: args.num("--trials").unwrap_or(100),
        only_trial: args.num("--trial"),
        verbose: args.has("-v"),
    };
    println!("hwlink-chaos sweep: seed {seed}, {} trials", opts.trials);
    let t0 = Instant::now();
    let out = sweep::run(&opts);
    println!(
        "{:<18} {:>7} {:>10} {:>10} {:>6} {:>6} {:>8} {:>9}",
        "kind", "trials", "accepted", "delivered", "lost", "dups", "in-kill", "failures"
    );
    for (k, t) in &out.totals {
        println!(
            "{:<18} {:>7} {:>10} {:>10} {:>6} {:>6} {:>8} {:>9}",
            k.name(),
            t.trials,
            t.accepted,
            t.delivered,
            t.lost,
            t.duplicated,
            t.taken_by_the_killed,
            t.failures
        );
    }
    println!(
        "lost = accepted by a send that returned Ok and never delivered while its receiver lived (must be 0); \
         in-kill = taken by a mailbox receiver that was killed before it could report it (at most 1 per kill)"
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
    println!("death noticed by the survivor (links and domain links), ms after the kill:");
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
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.is_empty() {
        eprintln!("usage: hwlink-chaos fuzz|sweep [options]   (see the source's header)");
        return ExitCode::from(2);
    }
    let cmd = argv.remove(0);
    let args = Args { rest: argv };
    match cmd.as_str() {
        "fuzz" => fuzz_cmd(&args),
        "sweep" => sweep_cmd(&args),
        "victim" => {
            let setup = victim::Setup::from_env();
            match setup.role.as_str() {
                "sweep-send" => victim::sweep_sender(&setup),
                "sweep-recv" => victim::sweep_receiver(&setup),
                _ => victim::fuzz_victim(&setup),
            }
            ExitCode::SUCCESS
        }
        other => {
            eprintln!("hwlink-chaos: unknown command `{other}`: fuzz or sweep");
            ExitCode::from(2)
        }
    }
}

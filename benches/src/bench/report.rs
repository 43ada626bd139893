//! The results of a run as terminal tables and as one JSON document.

use super::plan::{Cell, FanoutCell, PipelineFigures, Plan, Results, RoundTripFigures, Status};
use super::{Mechanism, Streamed};
use crate::pingpong::Stats;
use std::fmt::Write as _;

/// Facts about the machine the run happened on.
#[derive(Clone, Debug)]
pub struct Machine {
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// CPUs online.
    pub cpus: usize,
    /// Kernel release.
    pub kernel: String,
    /// The memory hwlink really used: "hugepage" or "shm".
    pub backend: String,
}

impl Machine {
    /// Reads the facts; `backend` is what the caller found links use.
    pub fn detect(backend: &str) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "model name").then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        Machine {
            cpu_model,
            cpus: hwlink::liveness::online_cpus(),
            kernel,
            backend: backend.to_string(),
        }
    }
}

/// A ratio as text: two decimals, or more when it is small.
fn ratio(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}x")
    } else if x >= 0.1 {
        format!("{x:.2}x")
    } else {
        format!("{x:.4}x")
    }
}
/// The round-trip table, one block per CPU pair.
pub fn round_trip_table(res: &Results) -> String {
    let mut out = String::new();
    let mut pairs: Vec<(usize, usize)> = res.round_trip.iter().map(|c| c.cpus).collect();
    pairs.dedup();
    for cpus in pairs {
        let _ = writeln!(
            out,
            "\nRound trip, CPUs {},{} (µs; CPU ns per round trip for measurer/peer)",
            cpus.0, cpus.1
        );
        let _ = writeln!(
            out,
            "{:>7} {:<18} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>15}  p50 vs hwlink",
            "size", "mechanism", "p50", "p90", "p99", "p99.9", "max", "mean", "cpu ns/rt"
        );
        for c in res.round_trip.iter().filter(|c| c.cpus == cpus) {
            let _ = write!(out, "{:>7} {:<18} ", size_label(c.size), c.mechanism.name());
            match &c.status {
                Status::Done(f) => {
                    let reference = Results::reference(&res.round_trip, c.size, cpus)
                        .filter(|r| r.mechanism != c.mechanism)
                        .and_then(|r| r.status.done().map(|d| (r.mechanism, d.stats.p50)));
                    let vs = p50_versus(c.mechanism, f.stats.p50, reference);
                    let _ = writeln!(
                        out,
                        "{} {:>15}  {vs}",
                        latency_columns(&f.stats),
                        format!(
                            "{:.0}/{:.0}",
                            f.cpu.measurer_per_msg(),
                            f.cpu.peer_per_msg()
                        )
                    );
                }
                other => {
                    let _ = writeln!(out, "{}", not_done(other));
                }
            }
        }
    }
    out
}

fn not_done<T>(s: &Status<T>) -> String {
    match s {
        Status::Skipped(r) => format!("skipped: {r}"),
        Status::Failed(r) => format!("FAILED: {r}"),
        Status::Done(_) => String::new(),
    }
}

fn size_label(size: usize) -> String {
    if size >= 1 << 20 && size % (1 << 20) == 0 {
        format!("{}MiB", size >> 20)
    } else if size >= 1024 && size % 1024 == 0 {
        format!("{}KiB", size >> 10)
    } else {
        format!("{size}B")
    }
}

/// The streaming table.
pub fn stream_table(res: &Results) -> String {
    let mut out = String::new();
    let mut pairs: Vec<(usize, usize)> = res.stream.iter().map(|c| c.cpus).collect();
    pairs.dedup();
    for cpus in pairs {
        let _ = writeln!(
            out,
            "\nOne-way stream, every message verified, CPUs {},{} (CPU ns per message for sender/receiver)",
            cpus.0, cpus.1
        );
        let _ = writeln!(
            out,
            "{:>7} {:<18} {:>12} {:>8} {:>15}  msgs/s vs hwlink",
            "size", "mechanism", "msgs/s", "GB/s", "cpu ns/msg"
        );
        for c in res.stream.iter().filter(|c| c.cpus == cpus) {
            let _ = write!(out, "{:>7} {:<18} ", size_label(c.size), c.mechanism.name());
            match &c.status {
                Status::Done(s) => {
                    let reference = Results::reference(&res.stream, c.size, cpus)
                        .filter(|r| r.mechanism != c.mechanism)
                        .and_then(|r| r.status.done().map(|d| (r.mechanism, d.msgs_per_s())));
                    let vs = reference.map_or(String::new(), |(m, r)| {
                        format!(
                            "{} msgs/s = {} {m}",
                            c.mechanism,
                            ratio(s.msgs_per_s() / r.max(1e-9))
                        )
                    });
                    let _ = writeln!(
                        out,
                        "{:>12.0} {:>8.3} {:>15}  {vs}",
                        s.msgs_per_s(),
                        s.gb_per_s(),
                        format!(
                            "{:.0}/{:.0}",
                            s.cpu.measurer_per_msg(),
                            s.cpu.peer_per_msg()
                        )
                    );
                }
                other => {
                    let _ = writeln!(out, "{}", not_done(other));
                }
            }
        }
    }
    out
}

/// "M p50 = R× REF": a p50 against the reference mechanism's, if any.
fn p50_versus(m: Mechanism, p50: u64, reference: Option<(Mechanism, u64)>) -> String {
    reference.map_or(String::new(), |(r, r50)| {
        format!("{m} p50 = {} {r}", ratio(p50 as f64 / r50.max(1) as f64))
    })
}

/// p50, p90, p99, p99.9, max and mean in µs, as the latency tables align them.
fn latency_columns(s: &Stats) -> String {
    let [p50, p90, p99, p999, max, mean] = s.micros();
    format!("{p50:>9.3} {p90:>9.3} {p99:>9.3} {p999:>9.3} {max:>10.3} {mean:>9.3}")
}

/// The pipeline table: four processes in a chain, measured end to end.
pub fn pipeline_table(res: &Results) -> String {
    let mut out = String::new();
    let mut pairs: Vec<(usize, usize)> = res.pipeline.iter().map(|c| c.cpus).collect();
    pairs.dedup();
    for cpus in pairs {
        let _ = writeln!(
            out,
            "\nPipeline, 4 processes (0 → 1 → 2 → 3 → 0), stages on CPUs {},{},{},{} (end to end µs, one in flight; msgs/s with a window in flight, verified)",
            cpus.0, cpus.1, cpus.0, cpus.1
        );
        let _ = writeln!(
            out,
            "{:>7} {:<18} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9} {:>12} {:>6}  p50 vs hwlink",
            "size", "mechanism", "p50", "p90", "p99", "p99.9", "max", "mean", "msgs/s", "window"
        );
        for c in res.pipeline.iter().filter(|c| c.cpus == cpus) {
            let _ = write!(out, "{:>7} {:<18} ", size_label(c.size), c.mechanism.name());
            match &c.status {
                Status::Done(f) => {
                    let reference = Results::pipeline_reference(&res.pipeline, c.size, c.cpus)
                        .filter(|r| r.mechanism != c.mechanism)
                        .and_then(|r| r.status.done().map(|d| (r.mechanism, d.stats.p50)));
                    let vs = p50_versus(c.mechanism, f.stats.p50, reference);
                    let _ = writeln!(
                        out,
                        "{} {:>12.0} {:>6}  {vs}",
                        latency_columns(&f.stats),
                        f.msgs_per_s,
                        f.window
                    );
                }
                other => {
                    let _ = writeln!(out, "{}", not_done(other));
                }
            }
        }
    }
    out
}

/// The fan-out table: one publisher, N subscriber processes, then a note
/// per mechanism on what its publisher and subscribers do. Ratios: p50 to
/// the single busy-polling link's (hwlink-poll with one subscriber,
/// measured the same way), msgs/s to the pipes' with as many subscribers.
pub fn fanout_table(res: &Results) -> String {
    let mut out = String::new();
    let mut pairs: Vec<(usize, usize)> = res.fanout.iter().map(|f| f.cell.cpus).collect();
    pairs.dedup();
    for cpus in pairs {
        let _ = writeln!(
            out,
            "\nFan-out, publisher on CPU {}, subscribers alternating CPUs {},{} (µs from the send until the last subscriber had read the whole message, one in flight, CLOCK_MONOTONIC in every process; answered: until its answer was back; msgs/s with every subscriber receiving and checking every message)",
            cpus.0, cpus.1, cpus.0
        );
        let _ = writeln!(
            out,
            "{:>7} {:>4} {:<18} {:>9} {:>9} {:>9} {:>10} {:>9} {:>12} {:>8}  ratios",
            "size", "subs", "mechanism", "p50", "p99", "p99.9", "max", "answered", "msgs/s", "GB/s"
        );
        let cells: Vec<&FanoutCell> = res.fanout.iter().filter(|f| f.cell.cpus == cpus).collect();
        for f in &cells {
            let c = &f.cell;
            let _ = write!(
                out,
                "{:>7} {:>4} {:<18} ",
                size_label(c.size),
                f.subscribers,
                c.mechanism.name()
            );
            match &c.status {
                Status::Done(d) => {
                    let [p50, _, p99, p999, max, _] = d.stats.micros();
                    let mut vs = Vec::new();
                    if let Some(link) = res
                        .fanout_at(Mechanism::HwlinkPoll, c.size, 1, cpus)
                        .filter(|_| (c.mechanism, f.subscribers) != (Mechanism::HwlinkPoll, 1))
                    {
                        vs.push(format!(
                            "p50 = {} hwlink-poll×1",
                            ratio(d.stats.p50 as f64 / link.stats.p50.max(1) as f64)
                        ));
                    }
                    if let Some(pipe) = res
                        .fanout_at(Mechanism::Pipe, c.size, f.subscribers, cpus)
                        .filter(|_| c.mechanism != Mechanism::Pipe)
                    {
                        vs.push(format!(
                            "msgs/s = {} pipe",
                            ratio(d.msgs_per_s / pipe.msgs_per_s.max(1e-9))
                        ));
                    }
                    let _ = writeln!(
                        out,
                        "{p50:>9.3} {p99:>9.3} {p999:>9.3} {max:>10.3} {:>9.3} {:>12.0} {:>8.3}  {}",
                        d.answered.p50 as f64 / 1000.0,
                        d.msgs_per_s,
                        d.gb_per_s,
                        vs.join(", ")
                    );
                }
                other => {
                    let _ = writeln!(out, "{}", not_done(other));
                }
            }
        }
        let mut shown: Vec<Mechanism> = Vec::new();
        for f in &cells {
            if !shown.contains(&f.cell.mechanism) {
                shown.push(f.cell.mechanism);
            }
        }
        for m in shown {
            if let Some(n) = m.fanout_note() {
                let _ = writeln!(out, "  {m}: {n}");
            }
        }
    }
    out
}

/// A JSON string literal.
fn js(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for ch in s.chars() {
        match ch {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// A finite JSON number (NaN and infinities become null).
fn jf(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "null".into()
    }
}

fn status_json<T>(s: &Status<T>, figures: impl FnOnce(&T) -> String) -> String {
    match s {
        Status::Done(t) => format!(r#""status":"ok",{}"#, figures(t)),
        Status::Skipped(r) => format!(r#""status":"skipped","reason":{}"#, js(r)),
        Status::Failed(r) => format!(r#""status":"failed","reason":{}"#, js(r)),
    }
}

fn rt_json(res: &Results, c: &Cell<RoundTripFigures>) -> String {
    let body = status_json(&c.status, |f| {
        let reference = Results::reference(&res.round_trip, c.size, c.cpus)
            .and_then(|r| r.status.done().map(|d| (r.mechanism, d)));
        let vs = reference.map_or(String::new(), |(m, r)| {
            let q = |a: u64, b: u64| jf(a as f64 / b.max(1) as f64);
            let (s, t) = (&f.stats, &r.stats);
            format!(
                r#","ratio_to":{{"mechanism":{},"p50":{},"p90":{},"p99":{},"p999":{},"max":{},"mean":{},"cpu_measurer":{},"cpu_peer":{}}}"#,
                js(m.name()),
                q(s.p50, t.p50),
                q(s.p90, t.p90),
                q(s.p99, t.p99),
                q(s.p999, t.p999),
                q(s.max, t.max),
                q(s.mean, t.mean),
                jf(f.cpu.measurer_per_msg() / r.cpu.measurer_per_msg().max(1e-9)),
                jf(f.cpu.peer_per_msg() / r.cpu.peer_per_msg().max(1e-9))
            )
        });
        format!(
            r#""round_trips":{},"rtt_ns":{},"cpu_ns_per_round_trip":{{"measurer":{},"peer":{}}}{vs}"#,
            f.count,
            f.stats.to_json(),
            jf(f.cpu.measurer_per_msg()),
            jf(f.cpu.peer_per_msg())
        )
    });
    format!(
        r#"{{"size":{},"cpus":[{},{}],{body}}}"#,
        c.size, c.cpus.0, c.cpus.1
    )
}

fn st_json(res: &Results, c: &Cell<Streamed>) -> String {
    let body = status_json(&c.status, |s| {
        let reference = Results::reference(&res.stream, c.size, c.cpus)
            .and_then(|r| r.status.done().map(|d| (r.mechanism, d)));
        let vs = reference.map_or(String::new(), |(m, r)| {
            let q = |a: f64, b: f64| jf(a / b.max(1e-9));
            format!(
                r#","ratio_to":{{"mechanism":{},"msgs_per_s":{},"gb_per_s":{},"cpu_sender":{},"cpu_receiver":{}}}"#,
                js(m.name()),
                q(s.msgs_per_s(), r.msgs_per_s()),
                q(s.gb_per_s(), r.gb_per_s()),
                q(s.cpu.measurer_per_msg(), r.cpu.measurer_per_msg()),
                q(s.cpu.peer_per_msg(), r.cpu.peer_per_msg())
            )
        });
        format!(
            r#""messages":{},"verified":true,"msgs_per_s":{},"gb_per_s":{},"cpu_ns_per_msg":{{"sender":{},"receiver":{}}}{vs}"#,
            s.messages,
            jf(s.msgs_per_s()),
            jf(s.gb_per_s()),
            jf(s.cpu.measurer_per_msg()),
            jf(s.cpu.peer_per_msg())
        )
    });
    format!(
        r#"{{"size":{},"cpus":[{},{}],{body}}}"#,
        c.size, c.cpus.0, c.cpus.1
    )
}

fn pl_json(res: &Results, c: &Cell<PipelineFigures>) -> String {
    let body = status_json(&c.status, |f| {
        let reference = Results::pipeline_reference(&res.pipeline, c.size, c.cpus)
            .and_then(|r| r.status.done().map(|d| (r.mechanism, d)));
        let vs = reference.map_or(String::new(), |(m, r)| {
            format!(
                r#","ratio_to":{{"mechanism":{},"p50":{},"p99":{},"msgs_per_s":{}}}"#,
                js(m.name()),
                jf(f.stats.p50 as f64 / r.stats.p50.max(1) as f64),
                jf(f.stats.p99 as f64 / r.stats.p99.max(1) as f64),
                jf(f.msgs_per_s / r.msgs_per_s.max(1e-9))
            )
        });
        format!(
            r#""trips":{},"end_to_end_ns":{},"streamed":{{"messages":{},"window":{},"verified":true,"msgs_per_s":{}}}{vs}"#,
            f.count,
            f.stats.to_json(),
            f.messages,
            f.window,
            jf(f.msgs_per_s)
        )
    });
    format!(
        r#"{{"stages":4,"size":{},"cpus":[{},{},{},{}],{body}}}"#,
        c.size, c.cpus.0, c.cpus.1, c.cpus.0, c.cpus.1
    )
}

fn fo_json(res: &Results, f: &FanoutCell) -> String {
    let c = &f.cell;
    let body = status_json(&c.status, |d| {
        let mut vs = Vec::new();
        if let Some(l) = res.fanout_at(Mechanism::HwlinkPoll, c.size, 1, c.cpus) {
            vs.push(format!(
                r#""p50_to_hwlink_poll_1":{}"#,
                jf(d.stats.p50 as f64 / l.stats.p50.max(1) as f64)
            ));
        }
        if let Some(p) = res.fanout_at(Mechanism::Pipe, c.size, f.subscribers, c.cpus) {
            vs.push(format!(
                r#""msgs_per_s_to_pipe":{}"#,
                jf(d.msgs_per_s / p.msgs_per_s.max(1e-9))
            ));
        }
        let vs = if vs.is_empty() {
            String::new()
        } else {
            format!(r#","ratios":{{{}}}"#, vs.join(","))
        };
        format!(
            r#""timed":{},"to_last_subscriber_ns":{},"answered_ns":{},"streamed":{{"messages":{},"verified":true,"msgs_per_s":{},"gb_per_s":{}}}{vs}"#,
            d.count,
            d.stats.to_json(),
            d.answered.to_json(),
            d.messages,
            jf(d.msgs_per_s),
            jf(d.gb_per_s)
        )
    });
    format!(
        r#"{{"size":{},"subscribers":{},"cpus":[{},{}],{body}}}"#,
        c.size, f.subscribers, c.cpus.0, c.cpus.1
    )
}

/// The whole run as one JSON document: machine, plan, and every mechanism
/// (run, skipped or not selected, each with its reason).
pub fn to_json(machine: &Machine, plan: &Plan, res: &Results) -> String {
    let list = |v: &[usize]| v.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
    let pairs = |v: &[(usize, usize)]| {
        v.iter()
            .map(|(a, b)| format!("[{a},{b}]"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut mechs = Vec::new();
    for m in Mechanism::ALL {
        let entry = if !plan.mechanisms.contains(&m) {
            format!(
                r#"{{"name":{},"run":false,"reason":{}}}"#,
                js(m.name()),
                js("not selected with --mechanisms")
            )
        } else {
            let rt: Vec<String> = res
                .round_trip
                .iter()
                .filter(|c| c.mechanism == m)
                .map(|c| rt_json(res, c))
                .collect();
            let st: Vec<String> = res
                .stream
                .iter()
                .filter(|c| c.mechanism == m)
                .map(|c| st_json(res, c))
                .collect();
            let pl: Vec<String> = res
                .pipeline
                .iter()
                .filter(|c| c.mechanism == m)
                .map(|c| pl_json(res, c))
                .collect();
            let pl = format!(",\"pipeline\":[{}]", pl.join(","));
            let fo: Vec<String> = res
                .fanout
                .iter()
                .filter(|f| f.cell.mechanism == m)
                .map(|f| fo_json(res, f))
                .collect();
            let fo = format!(",\"fanout\":[{}]", fo.join(","));
            let fo_note = m
                .fanout_note()
                .map(|n| format!(",\"fanout_note\":{}", js(n)))
                .unwrap_or_default();
            let note = m
                .note()
                .map(|n| format!(",\"note\":{}", js(n)))
                .unwrap_or_default();
            format!(
                r#"{{"name":{},"run":true{note}{fo_note},"round_trip":[{}],"stream":[{}]{pl}{fo}}}"#,
                js(m.name()),
                rt.join(","),
                st.join(",")
            )
        };
        mechs.push(entry);
    }
    format!(
        "{{\"machine\":{{\"cpu_model\":{},\"cpus\":{},\"kernel\":{},\"backend\":{}}},\n\"plan\":{{\"round_trip_sizes\":[{}],\"stream_sizes\":[{}],\"round_trip_cpus\":[{}],\"stream_cpus\":[{}],\"pipeline_size\":{},\"pipeline_cpus\":[{}],\"fanout_sizes\":[{}],\"fanout_subscribers\":[{}],\"fanout_cpus\":[{}],\"rounds\":{},\"seconds_per_cell\":{}}},\n\"mechanisms\":[\n{}\n]}}\n",
        js(&machine.cpu_model),
        machine.cpus,
        js(&machine.kernel),
        js(&machine.backend),
        list(&plan.round_trip_sizes),
        list(&plan.stream_sizes),
        pairs(&plan.round_trip_cpus),
        pairs(&plan.stream_cpus),
        plan.pipeline_size,
        pairs(&plan.pipeline_cpus),
        list(&plan.fanout_sizes),
        list(&plan.fanout_subscribers),
        pairs(&plan.fanout_cpus),
        plan.rounds,
        jf(plan.duration.as_secs_f64()),
        mechs.join(",\n")
    )
}

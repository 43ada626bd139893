//! What `hwlink bench` measures and in which order: mechanisms × sizes × CPU pairs, interleaved in rounds.
//!
//! Every cell (mechanism, size, CPUs; for the fan-out also the number of
//! subscribers) is measured in `rounds` rounds, each with fresh peer
//! processes; within a round every mechanism takes its turn, so that a
//! change in the machine's load hits them all alike.

use super::{
    fanout, pipeline, round_trip, stream, BenchError, CpuTotals, FannedOut, Launcher, Mechanism,
    Options, Streamed,
};
use crate::pingpong::Stats;
use hwlink_drivers::Backend;
use std::time::Duration;

/// What to measure.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Mechanisms to run (the others are reported as not selected).
    pub mechanisms: Vec<Mechanism>,
    /// Message sizes of the round-trip workload.
    pub round_trip_sizes: Vec<usize>,
    /// Message sizes of the streaming workload.
    pub stream_sizes: Vec<usize>,
    /// CPU pairs (measurer, peer) of the round-trip workload.
    pub round_trip_cpus: Vec<(usize, usize)>,
    /// CPU pairs of the streaming workload.
    pub stream_cpus: Vec<(usize, usize)>,
    /// Rounds each cell is split into.
    pub rounds: usize,
    /// Time spent on each cell, over all its rounds.
    pub duration: Duration,
    /// Most round trips timed per cell.
    pub max_round_trips: usize,
    /// Memory for hwlink and the shared buffers.
    pub backend: Backend,
    /// The CPU pairs the pipeline's stages take turns on, one pipeline per
    /// pair (empty: no pipeline).
    pub pipeline_cpus: Vec<(usize, usize)>,
    /// Message bytes of the pipeline.
    pub pipeline_size: usize,
    /// Message sizes of the fan-out workload.
    pub fanout_sizes: Vec<usize>,
    /// Subscriber processes of the fan-out, one cell per count.
    pub fanout_subscribers: Vec<usize>,
    /// CPU pairs of the fan-out (empty: no fan-out): the publisher on the
    /// first, the subscribers alternating between the second and the first.
    pub fanout_cpus: Vec<(usize, usize)>,
}

/// How one cell went.
#[derive(Clone, Debug)]
pub enum Status<T> {
    /// Measured.
    Done(T),
    /// The mechanism cannot do this here; the reason says why.
    Skipped(String),
    /// It broke: a bug or a broken system.
    Failed(String),
}

impl<T> Status<T> {
    /// The figures, if measured.
    pub fn done(&self) -> Option<&T> {
        match self {
            Status::Done(t) => Some(t),
            _ => None,
        }
    }
}

/// Round-trip figures of one cell.
#[derive(Clone, Debug)]
pub struct RoundTripFigures {
    /// Percentiles in nanoseconds.
    pub stats: Stats,
    /// Round trips timed.
    pub count: usize,
    /// The latency distribution: `cdf[k]` is the round trip (ns) below
    /// which a fraction k / (cdf.len() - 1) of them fell.
    pub cdf: Vec<u64>,
    /// CPU time of both processes.
    pub cpu: CpuTotals,
}

/// Pipeline figures of one mechanism: four processes in a chain.
#[derive(Clone, Debug)]
pub struct PipelineFigures {
    /// End-to-end percentiles (four hops) in nanoseconds, one in flight.
    pub stats: Stats,
    /// End-to-end trips timed.
    pub count: usize,
    /// Messages streamed round the chain, each verified at the sink.
    pub messages: u64,
    /// Messages per second while streaming.
    pub msgs_per_s: f64,
    /// Messages in flight while streaming.
    pub window: usize,
}

/// Fan-out figures of one cell: one publisher, N subscriber processes.
#[derive(Clone, Debug)]
pub struct FanoutFigures {
    /// Percentiles (ns) from the send to the moment the last subscriber
    /// had read the whole message, one in flight (CLOCK_MONOTONIC in both
    /// processes).
    pub stats: Stats,
    /// Percentiles (ns) from the send to the last subscriber's answer
    /// reaching the publisher.
    pub answered: Stats,
    /// Messages timed.
    pub count: usize,
    /// Messages streamed, every subscriber receiving and checking each.
    pub messages: u64,
    /// Messages per second while streaming.
    pub msgs_per_s: f64,
    /// Message bytes per second while streaming (each subscriber receives
    /// this much; the publisher's transport carries it once or N times).
    pub gb_per_s: f64,
}

/// A fan-out cell: a cell of the plan and its subscriber count.
#[derive(Clone, Debug)]
pub struct FanoutCell {
    /// Subscriber processes.
    pub subscribers: usize,
    /// The cell (CPUs: the publisher's, and the one the subscribers
    /// alternate with).
    pub cell: Cell<FanoutFigures>,
}

/// One measured (or skipped) combination.
#[derive(Clone, Debug)]
pub struct Cell<T> {
    /// What carried the messages.
    pub mechanism: Mechanism,
    /// Message bytes.
    pub size: usize,
    /// (measurer, peer) CPUs.
    pub cpus: (usize, usize),
    /// The outcome.
    pub status: Status<T>,
}

/// Everything one run measured.
#[derive(Clone, Debug, Default)]
pub struct Results {
    /// Round trips.
    pub round_trip: Vec<Cell<RoundTripFigures>>,
    /// Streams.
    pub stream: Vec<Cell<Streamed>>,
    /// Pipelines (CPUs: the two the stages take turns on).
    pub pipeline: Vec<Cell<PipelineFigures>>,
    /// Fan-outs.
    pub fanout: Vec<FanoutCell>,
}

impl Results {
    /// The reference mechanism's cell for ratios: hwlink-poll, else the
    /// first hwlink mechanism measured at the same size and CPUs.
    pub fn reference<T>(cells: &[Cell<T>], size: usize, cpus: (usize, usize)) -> Option<&Cell<T>> {
        Self::reference_preferring(cells, size, cpus, Mechanism::HwlinkPoll)
    }

    /// The pipeline's reference: hwlink's default strategy (spin-park).
    /// Four busy-polling stages on fewer CPUs wait for the scheduler at
    /// every hop, so busy-poll is no fair yardstick there.
    pub fn pipeline_reference<T>(
        cells: &[Cell<T>],
        size: usize,
        cpus: (usize, usize),
    ) -> Option<&Cell<T>> {
        Self::reference_preferring(cells, size, cpus, Mechanism::HwlinkSpinPark)
    }

    /// A fan-out cell's figures, if measured.
    pub fn fanout_at(
        &self,
        m: Mechanism,
        size: usize,
        subscribers: usize,
        cpus: (usize, usize),
    ) -> Option<&FanoutFigures> {
        self.fanout
            .iter()
            .find(|f| {
                f.cell.mechanism == m
                    && f.cell.size == size
                    && f.subscribers == subscribers
                    && f.cell.cpus == cpus
            })
            .and_then(|f| f.cell.status.done())
    }

    fn reference_preferring<T>(
        cells: &[Cell<T>],
        size: usize,
        cpus: (usize, usize),
        first: Mechanism,
    ) -> Option<&Cell<T>> {
        let at = |m: Mechanism| {
            cells.iter().find(|c| {
                c.mechanism == m && c.size == size && c.cpus == cpus && c.status.done().is_some()
            })
        };
        at(first).or_else(|| {
            Mechanism::ALL
                .into_iter()
                .filter(|m| m.is_hwlink())
                .find_map(at)
        })
    }
}

/// Samples and CPU totals of a round-trip cell so far, or why it stopped.
type RoundTripAcc = Result<(Vec<u64>, CpuTotals), Status<RoundTripFigures>>;

fn status_of<T>(e: BenchError) -> Status<T> {
    match e {
        BenchError::Unsupported(r) => Status::Skipped(r),
        other => Status::Failed(other.to_string()),
    }
}

/// Points of the empirical CDF of sorted samples, at every 0.1 %.
fn cdf_points(sorted: &[u64]) -> Vec<u64> {
    const STEPS: usize = 1000;
    let n = sorted.len();
    if n == 0 {
        return Vec::new();
    }
    (0..=STEPS).map(|k| sorted[(k * (n - 1)) / STEPS]).collect()
}

/// A step done, for progress reporting: (steps done, steps in all, label).
pub type Progress<'a> = &'a mut dyn FnMut(usize, usize, &str);

/// A cell of the plan: mechanism, message size, CPU pair.
type CellKey = (Mechanism, usize, (usize, usize));

/// Measures every cell of `cells` on each CPU pair of `passes` (in that
/// order), `rounds` times over, reporting each step to `progress`:
/// `measure(index, mechanism, size, options)`.
#[allow(clippy::too_many_arguments)]
fn in_rounds(
    cells: &[CellKey],
    passes: &[(usize, usize)],
    rounds: usize,
    what: &str,
    done: &mut usize,
    total: usize,
    progress: &mut dyn FnMut(usize, usize, &str),
    mut measure: impl FnMut(usize, Mechanism, usize, &Options),
    backend: Backend,
) {
    for pass in passes {
        for round in 0..rounds {
            for (i, &(m, size, cpus)) in cells.iter().enumerate() {
                if cpus != *pass {
                    continue;
                }
                *done += 1;
                progress(
                    *done,
                    total,
                    &format!(
                        "{what} {m} {size} B CPUs {},{} round {}",
                        cpus.0,
                        cpus.1,
                        round + 1
                    ),
                );
                let opts = Options {
                    backend,
                    cpus: Some(cpus),
                };
                measure(i, m, size, &opts);
            }
        }
    }
}

/// Runs the plan. Failures are recorded in the results, not returned.
pub fn run(plan: &Plan, launch: Launcher<'_>, progress: Progress<'_>) -> Results {
    let rounds = plan.rounds.max(1);
    let mut res = Results::default();
    let cells = |sizes: &[usize], cpus: &[(usize, usize)]| {
        let mut v = Vec::new();
        for &c in cpus {
            for &size in sizes {
                for &m in plan.mechanisms.iter().filter(|m| !m.fanout_only()) {
                    v.push((m, size, c));
                }
            }
        }
        v
    };
    let rt_cells = cells(&plan.round_trip_sizes, &plan.round_trip_cpus);
    let st_cells = cells(&plan.stream_sizes, &plan.stream_cpus);
    let pl_size = plan.pipeline_size;
    let pl_cells = cells(&[pl_size], &plan.pipeline_cpus);
    let mut fo_cells = Vec::new();
    for &c in &plan.fanout_cpus {
        for &size in &plan.fanout_sizes {
            for &n in &plan.fanout_subscribers {
                for &m in plan.mechanisms.iter().filter(|m| m.fans_out()) {
                    fo_cells.push((m, size, n, c));
                }
            }
        }
    }
    let total = (rt_cells.len() + st_cells.len() + fo_cells.len()) * rounds + pl_cells.len();
    let mut done = 0;
    let per_round = plan.duration / rounds as u32;

    // Round trips: samples gathered over the rounds.
    let mut acc: Vec<RoundTripAcc> = vec![Ok((Vec::new(), CpuTotals::default())); rt_cells.len()];
    let max_share = plan.max_round_trips.div_ceil(rounds).max(1);
    in_rounds(
        &rt_cells,
        &plan.round_trip_cpus,
        rounds,
        "round trip",
        &mut done,
        total,
        progress,
        |i, m, size, opts| {
            let Ok((samples, cpu)) = &mut acc[i] else {
                return;
            };
            let warmup = (max_share / 20).clamp(20, 2000);
            match round_trip(m, size, opts, warmup, per_round, max_share, launch) {
                Ok(r) => {
                    samples.extend(r.samples);
                    cpu.add(&r.cpu);
                }
                Err(e) => acc[i] = Err(status_of(e)),
            }
        },
        plan.backend,
    );
    for (&(mechanism, size, cpus), a) in rt_cells.iter().zip(acc) {
        let status = match a {
            Ok((mut samples, cpu)) => match Stats::from_samples(&mut samples) {
                Some(stats) => Status::Done(RoundTripFigures {
                    stats,
                    count: samples.len(),
                    cdf: cdf_points(&samples),
                    cpu,
                }),
                None => Status::Failed("no round trips were measured".into()),
            },
            Err(s) => s,
        };
        res.round_trip.push(Cell {
            mechanism,
            size,
            cpus,
            status,
        });
    }

    // Streams: totals summed over the rounds.
    let mut acc: Vec<Result<Streamed, Status<Streamed>>> =
        vec![Ok(Streamed::default()); st_cells.len()];
    in_rounds(
        &st_cells,
        &plan.stream_cpus,
        rounds,
        "stream",
        &mut done,
        total,
        progress,
        |i, m, size, opts| {
            let Ok(total_so_far) = &mut acc[i] else {
                return;
            };
            match stream(m, size, opts, per_round, launch) {
                Ok(s) => total_so_far.add(&s),
                Err(e) => acc[i] = Err(status_of(e)),
            }
        },
        plan.backend,
    );
    for (&(mechanism, size, cpus), a) in st_cells.iter().zip(acc) {
        res.stream.push(Cell {
            mechanism,
            size,
            cpus,
            status: match a {
                Ok(s) => Status::Done(s),
                Err(s) => s,
            },
        });
    }

    // Pipelines: one session each, half the cell's time timing trips and
    // half streaming.
    for &(mechanism, size, cpus) in &pl_cells {
        done += 1;
        progress(
            done,
            total,
            &format!("pipeline {mechanism} {size} B CPUs {},{}", cpus.0, cpus.1),
        );
        let opts = Options {
            backend: plan.backend,
            cpus: Some(cpus),
        };
        let half = plan.duration / 2;
        let warmup = (plan.max_round_trips / 20).clamp(20, 2000);
        let status = match pipeline(
            mechanism,
            size,
            &opts,
            warmup,
            half,
            plan.max_round_trips.max(1),
            half,
            launch,
        ) {
            Ok(mut p) => match Stats::from_samples(&mut p.samples) {
                Some(stats) => Status::Done(PipelineFigures {
                    stats,
                    count: p.samples.len(),
                    messages: p.messages,
                    msgs_per_s: p.msgs_per_s(),
                    window: p.window,
                }),
                None => Status::Failed("no end-to-end trips were measured".into()),
            },
            Err(e) => status_of(e),
        };
        res.pipeline.push(Cell {
            mechanism,
            size,
            cpus,
            status,
        });
    }

    // Fan-outs: samples and streams gathered over the rounds, each round
    // half timing messages and half streaming.
    let mut acc: Vec<Result<FannedOut, Status<FanoutFigures>>> =
        vec![Ok(FannedOut::default()); fo_cells.len()];
    let max_share = plan.max_round_trips.div_ceil(rounds).max(1);
    for round in 0..rounds {
        for (i, &(m, size, n, cpus)) in fo_cells.iter().enumerate() {
            done += 1;
            progress(
                done,
                total,
                &format!(
                    "fan-out {m} {size} B to {n} CPUs {},{} round {}",
                    cpus.0,
                    cpus.1,
                    round + 1
                ),
            );
            let Ok(so_far) = &mut acc[i] else {
                continue;
            };
            let opts = Options {
                backend: plan.backend,
                cpus: Some(cpus),
            };
            let warmup = (max_share / 20).clamp(20, 2000);
            let half = per_round / 2;
            match fanout(m, size, n, &opts, warmup, half, max_share, half, launch) {
                Ok(f) => so_far.add(f),
                Err(e) => acc[i] = Err(status_of(e)),
            }
        }
    }
    for (&(mechanism, size, subscribers, cpus), a) in fo_cells.iter().zip(acc) {
        let status = match a {
            Ok(mut f) => match (
                Stats::from_samples(&mut f.latency),
                Stats::from_samples(&mut f.answered),
            ) {
                (Some(stats), Some(answered)) => Status::Done(FanoutFigures {
                    stats,
                    answered,
                    count: f.latency.len(),
                    messages: f.messages,
                    msgs_per_s: f.msgs_per_s(),
                    gb_per_s: f.msgs_per_s() * size as f64 / 1e9,
                }),
                _ => Status::Failed("no messages were timed".into()),
            },
            Err(s) => s,
        };
        res.fanout.push(FanoutCell {
            subscribers,
            cell: Cell {
                mechanism,
                size,
                cpus,
                status,
            },
        });
    }
    res
}

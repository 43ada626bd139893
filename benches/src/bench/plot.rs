//! SVG plots of a run: a round-trip latency CDF per size and CPU pair, and streaming throughput against message size.

use super::plan::{Results, Status};
use super::BenchError;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

const SIZE: (u32, u32) = (960, 600);

fn plot_err(path: &Path) -> impl Fn(String) -> BenchError + '_ {
    move |msg| BenchError::Plot {
        path: path.display().to_string(),
        msg,
    }
}

/// Writes every plot into `dir` (created if missing); returns the files.
pub fn write_plots(dir: &Path, res: &Results) -> Result<Vec<PathBuf>, BenchError> {
    std::fs::create_dir_all(dir).map_err(|e| plot_err(dir)(e.to_string()))?;
    let mut written = Vec::new();
    let mut keys: Vec<(usize, (usize, usize))> =
        res.round_trip.iter().map(|c| (c.size, c.cpus)).collect();
    keys.dedup();
    for (size, cpus) in keys {
        let path = dir.join(format!("rtt-cdf-{size}B-cpus{}-{}.svg", cpus.0, cpus.1));
        if latency_cdf(&path, res, size, cpus).map_err(plot_err(&path))? {
            written.push(path);
        }
    }
    let mut pairs: Vec<(usize, usize)> = res.stream.iter().map(|c| c.cpus).collect();
    pairs.dedup();
    for cpus in pairs {
        let path = dir.join(format!("stream-throughput-cpus{}-{}.svg", cpus.0, cpus.1));
        if throughput(&path, res, cpus).map_err(plot_err(&path))? {
            written.push(path);
        }
    }
    Ok(written)
}

/// One line per mechanism: the fraction of round trips at or below each
/// latency (µs, log scale). False if nothing was measured.
fn latency_cdf(
    path: &Path,
    res: &Results,
    size: usize,
    cpus: (usize, usize),
) -> Result<bool, String> {
    let lines: Vec<(&str, Vec<(f64, f64)>)> = res
        .round_trip
        .iter()
        .filter(|c| c.size == size && c.cpus == cpus)
        .filter_map(|c| match &c.status {
            Status::Done(f) if f.cdf.len() > 1 => {
                let last = (f.cdf.len() - 1) as f64;
                let pts = f
                    .cdf
                    .iter()
                    .enumerate()
                    .map(|(k, &ns)| ((ns.max(1)) as f64 / 1000.0, k as f64 / last))
                    .collect();
                Some((c.mechanism.name(), pts))
            }
            _ => None,
        })
        .collect();
    if lines.is_empty() {
        return Ok(false);
    }
    let all = lines.iter().flat_map(|(_, p)| p.iter().map(|&(x, _)| x));
    let (lo, hi) = all.fold((f64::MAX, 0f64), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Round trip of {size} B, CPUs {},{}: latency CDF",
                cpus.0, cpus.1
            ),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d((lo * 0.9..hi * 1.1).log_scale(), 0f64..1f64)
        .map_err(|e| e.to_string())?;
    draw_lines(
        &mut chart,
        "round trip (µs, log scale)",
        "fraction of round trips",
        lines,
        SeriesLabelPosition::LowerRight,
    )?;
    root.present().map_err(|e| e.to_string())?;
    Ok(true)
}

/// One line per mechanism: GB/s against message size, both log scale.
fn throughput(path: &Path, res: &Results, cpus: (usize, usize)) -> Result<bool, String> {
    let mut lines: Vec<(&str, Vec<(f64, f64)>)> = Vec::new();
    for c in res.stream.iter().filter(|c| c.cpus == cpus) {
        if let Status::Done(s) = &c.status {
            let pt = (c.size as f64, s.gb_per_s().max(1e-6));
            match lines.iter_mut().find(|(n, _)| *n == c.mechanism.name()) {
                Some((_, v)) => v.push(pt),
                None => lines.push((c.mechanism.name(), vec![pt])),
            }
        }
    }
    if lines.is_empty() {
        return Ok(false);
    }
    for (_, v) in &mut lines {
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let xs = lines.iter().flat_map(|(_, p)| p.iter().map(|&(x, _)| x));
    let (xlo, xhi) = xs.fold((f64::MAX, 0f64), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let ys = lines.iter().flat_map(|(_, p)| p.iter().map(|&(_, y)| y));
    let (ylo, yhi) = ys.fold((f64::MAX, 0f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "One-way stream, every message verified, CPUs {},{}",
                cpus.0, cpus.1
            ),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(
            (xlo * 0.8..xhi * 1.25).log_scale(),
            (ylo * 0.8..yhi * 1.25).log_scale(),
        )
        .map_err(|e| e.to_string())?;
    draw_lines(
        &mut chart,
        "message size (bytes, log scale)",
        "GB/s (log scale)",
        lines,
        SeriesLabelPosition::UpperLeft,
    )?;
    root.present().map_err(|e| e.to_string())?;
    Ok(true)
}

/// Axes with their descriptions, one line per mechanism, and the legend at
/// `legend`: the part every plot shares.
fn draw_lines<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    x_desc: &str,
    y_desc: &str,
    lines: Vec<(&'a str, Vec<(f64, f64)>)>,
    legend: SeriesLabelPosition,
) -> Result<(), String>
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, (name, pts)) in lines.into_iter().enumerate() {
        let color = Palette99::pick(i);
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(legend)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}

//! The SVG: latency distributions of the fixed-rate run (percentile on a "nines" axis, so the tail is
//! visible), the ramp (p99 create → push against the asked rate, with the target line), and the
//! timeline (p99 create → push second by second over every run, so one stalled second stands out).

use crate::measure::ms;
use crate::report::Report;
use hdrhistogram::Histogram;
use plotters::prelude::*;
use std::path::Path;

/// Percentiles plotted: from p0 to p99.99 on a -log10(1 - q) axis.
fn curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    (0..=80)
        .map(|i| {
            let nines = f64::from(i) / 20.0; // 0 .. 4 nines
            let q = 1.0 - 10f64.powf(-nines);
            (nines, ms(h.value_at_quantile(q)))
        })
        .collect()
}

/// Draws the report's figures into `path`.
pub fn draw(path: &Path, report: &Report) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1000, 1300)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (top, rest) = root.split_vertically(480);
    let (bottom, timeline) = rest.split_vertically(420);
    if let Some(w) = &report.fixed {
        let series = [
            ("create → push at mock", &w.create_to_push, RED),
            ("respond → watcher", &w.respond_to_watch, BLUE),
            ("create → decision", &w.create_to_decision, GREEN),
            ("CreateChallenge RPC", &w.create_rpc, BLACK),
        ];
        let ymax = series
            .iter()
            .map(|(_, h, _)| ms(h.value_at_quantile(0.9999)))
            .fold(1.0, f64::max)
            * 1.1;
        let mut chart = ChartBuilder::on(&top)
            .caption(
                format!("latency at {}/s (open loop)", w.rate),
                ("sans-serif", 22),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..4f64, 0f64..ymax)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("ms")
            .x_label_formatter(&|x| match x.round() as i64 {
                0 => "p0".into(),
                1 => "p90".into(),
                2 => "p99".into(),
                3 => "p99.9".into(),
                _ => "p99.99".into(),
            })
            .x_labels(5)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for (name, h, color) in series {
            chart
                .draw_series(LineSeries::new(curve(h), color.stroke_width(2)))
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    if !report.ramp.is_empty() {
        let xmax = report.ramp.iter().map(|s| s.rate).max().unwrap_or(1) as f64 * 1.05;
        let ymax = report
            .ramp
            .iter()
            .map(|s| s.create_to_push_p99_ms)
            .fold(12.0, f64::max)
            .min(200.0)
            * 1.1;
        let mut chart = ChartBuilder::on(&bottom)
            .caption("ramp: p99 create → push by rate", ("sans-serif", 22))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..xmax, 0f64..ymax)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_desc("challenges per second (asked)")
            .y_desc("p99 ms")
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let points: Vec<(f64, f64)> = report
            .ramp
            .iter()
            .map(|s| (f64::from(s.rate), s.create_to_push_p99_ms.min(ymax)))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), RED.stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 4, RED.filled())))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, 10.0), (xmax, 10.0)],
                BLACK.stroke_width(1),
            ))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    draw_timeline(&timeline, report)?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

fn draw_timeline(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    report: &Report,
) -> anyhow::Result<()> {
    if report.timeline.is_empty() {
        return Ok(());
    }
    let xmax = report.timeline.iter().map(|s| s.t_s).max().unwrap_or(1) as f64 + 1.0;
    let ymax = report
        .timeline
        .iter()
        .map(|s| s.p99_ms)
        .fold(12.0, f64::max)
        .min(100.0)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "timeline: p99 create → push per second (all runs)",
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("seconds since the generator started")
        .y_desc("p99 ms")
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let points = report
        .timeline
        .iter()
        .map(|s| Circle::new((s.t_s as f64, s.p99_ms.min(ymax)), 2, BLUE.filled()));
    chart
        .draw_series(points)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .draw_series(LineSeries::new(
            vec![(0.0, 10.0), (xmax, 10.0)],
            BLACK.stroke_width(1),
        ))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

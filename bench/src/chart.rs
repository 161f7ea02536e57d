//! `--chart FILE`: one self-contained HTML page (inline SVG and CSS, no
//! scripts, nothing fetched) with, per case, the latency distribution by
//! percentile on a "nines" axis and the per-second throughput of every
//! system, plus a summary of throughput side by side with ratios and the
//! fractions of the machine's limits.

use std::fmt::Write as _;

use crate::plan::System;
use crate::report::{CaseReport, Report, RunReport};
use crate::units::{format_latency_us, short};

const WIDTH: f64 = 560.0;
const HEIGHT: f64 = 300.0;
const MARGIN_LEFT: f64 = 78.0;
const MARGIN_RIGHT: f64 = 16.0;
const MARGIN_TOP: f64 = 16.0;
const MARGIN_BOTTOM: f64 = 44.0;
/// Where the maximum sits on the "nines" axis (p99.999 is at 5).
const NINES_MAX: f64 = 5.8;

fn color(system: System) -> &'static str {
    match system {
        System::Sluice => "#1d4ed8",
        System::Jetstream => "#d97706",
        System::NatsEcho => "#6b7280",
    }
}

fn dash(system: System) -> &'static str {
    match system {
        System::NatsEcho => " stroke-dasharray=\"6 4\"",
        _ => "",
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A chart axis: maps values to pixels, linearly or logarithmically.
struct Axis {
    min: f64,
    max: f64,
    log: bool,
    ticks: Vec<(f64, String)>,
    label: String,
}

impl Axis {
    fn fraction(&self, value: f64) -> f64 {
        let (v, lo, hi) = if self.log {
            (
                value.max(self.min).log10(),
                self.min.log10(),
                self.max.log10(),
            )
        } else {
            (value, self.min, self.max)
        };
        if hi > lo {
            ((v - lo) / (hi - lo)).clamp(0.0, 1.0)
        } else {
            0.5
        }
    }

    /// A log axis from `min` to `max` with ticks at 1-2-5 steps.
    fn log_latency(min_us: f64, max_us: f64, label: &str) -> Axis {
        let lo = 10f64.powf(min_us.max(1.0).log10().floor());
        let hi = 10f64.powf(max_us.max(lo * 10.0).log10().ceil());
        let mut ticks = Vec::new();
        let mut decade = lo;
        while decade <= hi {
            for m in [1.0, 2.0, 5.0] {
                let v = decade * m;
                if v >= lo && v <= hi {
                    ticks.push((v, tick_latency(v)));
                }
            }
            decade *= 10.0;
        }
        Axis {
            min: lo,
            max: hi,
            log: true,
            ticks,
            label: label.into(),
        }
    }

    /// A linear axis from 0 to a round number above `max`.
    /// A linear axis from 0: up to a round number above `max` when
    /// `round_top`, else exactly to `max` (ticks at round steps below it).
    fn linear(
        max: f64,
        min_step: f64,
        round_top: bool,
        label: &str,
        format: fn(f64) -> String,
    ) -> Axis {
        let max = if max > 0.0 { max } else { 1.0 };
        let step = nice_step(max / 5.0).max(min_step);
        let top = if round_top {
            (max / step).ceil() * step
        } else {
            max
        };
        let ticks = (0..=((top / step + 1e-9).floor() as usize))
            .map(|i| (i as f64 * step, format(i as f64 * step)))
            .collect();
        Axis {
            min: 0.0,
            max: top,
            log: false,
            ticks,
            label: label.into(),
        }
    }
}

/// A round latency for an axis tick: `500 µs`, `2 ms`, `1 s`.
fn tick_latency(us: f64) -> String {
    if us >= 1e6 {
        format!("{} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{} ms", us / 1e3)
    } else {
        format!("{us} µs")
    }
}

fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.log10().floor());
    let normalized = raw / magnitude;
    let nice = if normalized <= 1.0 {
        1.0
    } else if normalized <= 2.0 {
        2.0
    } else if normalized <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

struct Series {
    system: System,
    points: Vec<(f64, f64)>,
    title: String,
}

/// An SVG line chart of `series` on the two axes.
fn line_chart(series: &[Series], x: &Axis, y: &Axis) -> String {
    let plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
    let px = |v: f64| MARGIN_LEFT + x.fraction(v) * plot_w;
    let py = |v: f64| MARGIN_TOP + (1.0 - y.fraction(v)) * plot_h;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" role=\"img\">"
    );
    for (value, label) in &y.ticks {
        let y0 = py(*value);
        let _ = write!(
            svg,
            "<line x1=\"{MARGIN_LEFT}\" x2=\"{:.1}\" y1=\"{y0:.1}\" y2=\"{y0:.1}\" class=\"grid\"/><text x=\"{:.1}\" y=\"{:.1}\" class=\"tick\" text-anchor=\"end\">{}</text>",
            WIDTH - MARGIN_RIGHT,
            MARGIN_LEFT - 6.0,
            y0 + 4.0,
            escape(label)
        );
    }
    for (value, label) in &x.ticks {
        let x0 = px(*value);
        let _ = write!(
            svg,
            "<line x1=\"{x0:.1}\" x2=\"{x0:.1}\" y1=\"{MARGIN_TOP}\" y2=\"{:.1}\" class=\"grid\"/><text x=\"{x0:.1}\" y=\"{:.1}\" class=\"tick\" text-anchor=\"middle\">{}</text>",
            MARGIN_TOP + plot_h,
            MARGIN_TOP + plot_h + 16.0,
            escape(label)
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" class=\"axis\" text-anchor=\"middle\">{}</text>",
        MARGIN_LEFT + plot_w / 2.0,
        HEIGHT - 6.0,
        escape(&x.label)
    );
    let _ = write!(
        svg,
        "<text transform=\"translate(13 {:.1}) rotate(-90)\" class=\"axis\" text-anchor=\"middle\">{}</text>",
        MARGIN_TOP + plot_h / 2.0,
        escape(&y.label)
    );
    for s in series {
        if s.points.is_empty() {
            continue;
        }
        let path: Vec<String> = s
            .points
            .iter()
            .map(|(a, b)| format!("{:.1},{:.1}", px(*a), py(*b)))
            .collect();
        let _ = write!(
            svg,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{}><title>{}</title></polyline>",
            path.join(" "),
            color(s.system),
            dash(s.system),
            escape(&s.title)
        );
        for (a, b) in &s.points {
            let _ = write!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{}\"><title>{}</title></circle>",
                px(*a),
                py(*b),
                color(s.system),
                escape(&point_title(s, *a, *b, x.log || y.log))
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

fn point_title(series: &Series, x: f64, y: f64, latency: bool) -> String {
    if latency {
        format!(
            "{}: {} at {}",
            series.system.name(),
            format_latency_us(y),
            nines_label(x)
        )
    } else {
        format!(
            "{}: second {x:.0}: {} msg/s",
            series.system.name(),
            short(y)
        )
    }
}

/// Percentile → position on the "nines" axis: 90 % → 1, 99 % → 2, …; the
/// maximum sits a little past 99.999 %.
fn nines(percentile: f64) -> f64 {
    if percentile >= 100.0 {
        return NINES_MAX;
    }
    (-(1.0 - percentile / 100.0).log10()).min(5.0)
}

fn nines_label(x: f64) -> String {
    if x > 5.2 {
        return "the maximum".into();
    }
    let percentile = 100.0 * (1.0 - 10f64.powf(-x));
    format!("p{percentile:.3}")
        .trim_end_matches('0')
        .trim_end_matches('.')
        .to_string()
}

fn latency_chart(case: &CaseReport) -> String {
    let series: Vec<Series> = case
        .runs
        .iter()
        .map(|run| Series {
            system: run.system,
            points: run
                .latency
                .spectrum
                .iter()
                .map(|(p, us)| (nines(*p), *us))
                .collect(),
            title: format!("{} latency", run.system.name()),
        })
        .collect();
    let values = || series.iter().flat_map(|s| s.points.iter().map(|(_, y)| *y));
    let min = values().fold(f64::INFINITY, f64::min);
    let max = values().fold(0.0, f64::max);
    if !min.is_finite() {
        return "<p class=\"empty\">no latency samples</p>".into();
    }
    let x = Axis {
        min: 0.0,
        max: NINES_MAX,
        log: false,
        ticks: vec![
            (nines(50.0), "p50".into()),
            (1.0, "p90".into()),
            (2.0, "p99".into()),
            (3.0, "p99.9".into()),
            (4.0, "p99.99".into()),
            (5.0, "p99.999".into()),
            (NINES_MAX, "max".into()),
        ],
        label: "percentile".into(),
    };
    let y = Axis::log_latency(min, max, "latency");
    line_chart(&series, &x, &y)
}

fn timeline_chart(case: &CaseReport) -> String {
    let series: Vec<Series> = case
        .runs
        .iter()
        .map(|run| Series {
            system: run.system,
            points: run
                .timeline
                .iter()
                .filter(|s| s.drawable())
                .map(|s| (s.second as f64 + s.covered_s / 2.0, s.msg_per_s))
                .collect(),
            title: format!("{} msg/s per second", run.system.name()),
        })
        .collect();
    let max_x = case
        .runs
        .iter()
        .flat_map(|run| run.timeline.iter().map(|s| s.second as f64 + s.covered_s))
        .fold(1.0, f64::max);
    let max_y = series
        .iter()
        .flat_map(|s| s.points.iter().map(|(_, y)| *y))
        .fold(0.0, f64::max);
    let x = Axis::linear(max_x, 1.0, false, "seconds after warm-up", |v| {
        format!("{v:.0}")
    });
    let y = Axis::linear(max_y, 0.0, true, "messages per second", short);
    line_chart(&series, &x, &y)
}

/// Horizontal bars of msg/s per case and system.
fn summary_chart(report: &Report) -> String {
    let rows: Vec<(&CaseReport, &RunReport)> = report
        .cases
        .iter()
        .flat_map(|case| case.runs.iter().map(move |run| (case, run)))
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let bar_h = 18.0;
    let gap = 6.0;
    let label_w = 250.0;
    let width = 1100.0;
    let height = rows.len() as f64 * (bar_h + gap) + 40.0 + report.cases.len() as f64 * 8.0;
    let mut svg = format!("<svg viewBox=\"0 0 {width} {height:.0}\" width=\"{width}\" height=\"{height:.0}\" role=\"img\">");
    let mut y = 10.0;
    for case in &report.cases {
        // Bars are scaled per case: cases differ by orders of magnitude.
        let max = case
            .runs
            .iter()
            .map(|r| r.msg_per_s)
            .fold(0.0, f64::max)
            .max(1.0);
        for run in &case.runs {
            let w = (width - label_w - 400.0) * run.msg_per_s / max;
            let mut note = format!(
                "{} msg/s, {:.1} MB/s, p99 {}",
                short(run.msg_per_s),
                run.mb_per_s,
                format_latency_us(run.latency.p99_us)
            );
            if run.system == System::Sluice {
                if let Some(r) = &case.ratios {
                    let _ = write!(note, " — {:.2}x JetStream", r.msg_per_s);
                }
            }
            let _ = write!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" class=\"label\" text-anchor=\"end\">{} · {}</text><rect x=\"{label_w}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{bar_h}\" fill=\"{}\" rx=\"3\"><title>{}</title></rect><text x=\"{:.1}\" y=\"{:.1}\" class=\"value\">{}</text>",
                label_w - 8.0,
                y + 13.0,
                escape(&case.name),
                run.system.name(),
                color(run.system),
                escape(&note),
                label_w + w + 6.0,
                y + 13.0,
                escape(&note)
            );
            y += bar_h + gap;
        }
        y += 8.0;
    }
    svg.push_str("</svg>");
    svg
}

fn legend(case: &CaseReport) -> String {
    case.runs
        .iter()
        .map(|run| {
            format!(
                "<span class=\"key\"><span class=\"swatch\" style=\"background:{}\"></span>{}</span>",
                color(run.system),
                run.system.name()
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn numbers_table(case: &CaseReport) -> String {
    let mut table = String::from(
        "<table><tr><th>system</th><th>messages</th><th>msg/s</th><th>MB/s</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>p99.99</th><th>max</th><th>errors</th></tr>",
    );
    for run in &case.runs {
        let l = &run.latency;
        let _ = write!(
            table,
            "<tr><td><span class=\"swatch\" style=\"background:{}\"></span>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            color(run.system),
            run.system.name(),
            crate::units::group(run.messages),
            short(run.msg_per_s),
            run.mb_per_s,
            format_latency_us(l.p50_us),
            format_latency_us(l.p90_us),
            format_latency_us(l.p99_us),
            format_latency_us(l.p99_9_us),
            format_latency_us(l.p99_99_us),
            format_latency_us(l.max_us),
            run.errors + run.timeouts
        );
    }
    table.push_str("</table>");
    table
}

/// The whole page.
pub fn render(report: &Report) -> String {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>sluice-bench report</title><style>{STYLE}</style></head><body>"
    );
    let _ = write!(
        html,
        "<h1>sluice-bench</h1><p class=\"meta\">{} CPUs · Linux {} · data on {} · sluice sync: {} · nats: {}</p>",
        report.machine.cpus,
        escape(&report.machine.kernel),
        escape(&report.machine.data_filesystem),
        escape(&report.setup.sluice_sync),
        escape(&report.setup.nats_url)
    );
    html.push_str("<h2>Throughput</h2>");
    html.push_str(&summary_chart(report));
    if let Some(limits) = &report.limits {
        let _ = write!(
            html,
            "<p class=\"meta\">Limits: sequential read {} MB/s · loopback TCP {} MB/s (disk write and NATS echo per case, below).</p>",
            short(limits.sequential_read.mb_per_s),
            short(limits.loopback_tcp.mb_per_s)
        );
    }
    for case in &report.cases {
        let _ = write!(
            html,
            "<section><h2>{}</h2><p class=\"meta\">{} · {}</p>",
            escape(&case.name),
            legend(case),
            escape(case.runs.first().map_or("", |r| r.latency_of.as_str()))
        );
        html.push_str(
            "<div class=\"charts\"><figure><figcaption>Latency by percentile</figcaption>",
        );
        html.push_str(&latency_chart(case));
        html.push_str("</figure><figure><figcaption>Throughput per second</figcaption>");
        html.push_str(&timeline_chart(case));
        html.push_str("</figure></div>");
        html.push_str(&numbers_table(case));
        let mut lines = Vec::new();
        if let Some(r) = &case.ratios {
            lines.push(format!(
                "Sluice / JetStream: {:.2}x msg/s, {:.2}x MB/s, p50 {:.2}x, p99 {:.2}x (latency: lower is better).",
                r.msg_per_s, r.mb_per_s, r.p50, r.p99
            ));
        }
        for share in &case.limits {
            lines.push(format!(
                "Sluice = {:.0}% of {}: {} {}.",
                share.fraction * 100.0,
                share.limit,
                short(share.value),
                share.unit
            ));
        }
        for line in lines {
            let _ = write!(html, "<p>{}</p>", escape(&line));
        }
        html.push_str("</section>");
    }
    html.push_str("<h2>Notes</h2><ul>");
    for note in &report.notes {
        let _ = write!(html, "<li>{}</li>", escape(note));
    }
    html.push_str("</ul></body></html>\n");
    html
}

const STYLE: &str = "body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:1180px;color:#111827;padding:0 16px}\
h1{margin:0 0 4px}h2{margin:28px 0 6px;font-size:18px}section{border-top:1px solid #e5e7eb;margin-top:20px}\
.meta{color:#4b5563;margin:2px 0 10px}.charts{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}\
figcaption{font-weight:600;margin:4px 0}.grid{stroke:#e5e7eb;stroke-width:1}.tick{font-size:11px;fill:#4b5563}\
.axis{font-size:12px;fill:#374151}.label{font-size:12px;fill:#111827}.value{font-size:12px;fill:#374151}\
table{border-collapse:collapse;margin:10px 0;font-variant-numeric:tabular-nums}td,th{padding:3px 10px;text-align:right;border-bottom:1px solid #f3f4f6}\
td:first-child,th:first-child{text-align:left}.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px}\
.key{margin-right:12px}.empty{color:#9ca3af}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_axis() {
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(nines(100.0), NINES_MAX);
        assert_eq!(nines_label(2.0), "p99");
        assert_eq!(nines_label(NINES_MAX), "the maximum");
        assert_eq!(tick_latency(2000.0), "2 ms");
        assert_eq!(tick_latency(500.0), "500 µs");
    }

    #[test]
    fn axes_cover_their_values() {
        let axis = Axis::log_latency(150.0, 42_000.0, "latency");
        assert!(axis.min <= 150.0 && axis.max >= 42_000.0);
        assert_eq!(axis.fraction(axis.min), 0.0);
        assert_eq!(axis.fraction(axis.max), 1.0);
        let axis = Axis::linear(118_000.0, 0.0, true, "msg/s", short);
        assert!(axis.max >= 118_000.0 && axis.ticks.len() >= 2);
        assert_eq!(escape("<a&b>"), "&lt;a&amp;b&gt;");
    }
}

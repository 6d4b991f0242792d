//! `--plot FILE.svg|FILE.png`: throughput and latency percentiles over time.
//!
//! The chart is built once as a list of shapes (rectangles, polylines, text) and then written
//! either as SVG text or rasterised into a PNG by [`crate::raster`], so both files show the
//! same picture without a plotting or image dependency.

use std::fmt::Write;
use std::path::Path;

use crate::results::{BenchResults, Phase, SeriesPoint};

pub const WIDTH: f64 = 1000.0;
pub const HEIGHT: f64 = 720.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Color(pub u8, pub u8, pub u8);

impl Color {
    fn hex(self) -> String {
        format!("#{:02x}{:02x}{:02x}", self.0, self.1, self.2)
    }
}

const BLACK: Color = Color(0x20, 0x20, 0x20);
const GRID: Color = Color(0xdd, 0xdd, 0xdd);
const WARMUP: Color = Color(0xee, 0xee, 0xee);
const PAUSED: Color = Color(0xfd, 0xeb, 0xd0);
const FINISH: Color = Color(0xf4, 0xf4, 0xf4);
const PUBLISH: Color = Color(0x1f, 0x77, 0xb4);
const PUBLISH_LIGHT: Color = Color(0x8c, 0xbc, 0xe0);
const CONSUME: Color = Color(0x2c, 0xa0, 0x2c);
const CONSUME_LIGHT: Color = Color(0x9a, 0xd6, 0x9a);
const CONSUME_DARK: Color = Color(0x15, 0x5d, 0x15);
const MAX: Color = Color(0x99, 0x99, 0x99);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    Start,
    Middle,
    End,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    Rect { x: f64, y: f64, w: f64, h: f64, fill: Color },
    Line { points: Vec<(f64, f64)>, color: Color, width: f64, dashed: bool },
    Text { x: f64, y: f64, text: String, size: f64, anchor: Anchor, color: Color, bold: bool },
}

/// A picture as shapes in drawing order, on a `WIDTH` x `HEIGHT` canvas (y grows down).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figure {
    pub shapes: Vec<Shape>,
}

impl Figure {
    fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, fill: Color) {
        self.shapes.push(Shape::Rect { x, y, w, h, fill });
    }

    fn line(&mut self, points: Vec<(f64, f64)>, color: Color, width: f64, dashed: bool) {
        if points.len() >= 2 {
            self.shapes.push(Shape::Line { points, color, width, dashed });
        }
    }

    fn text(&mut self, x: f64, y: f64, text: impl Into<String>, size: f64, anchor: Anchor, bold: bool) {
        self.shapes.push(Shape::Text { x, y, text: text.into(), size, anchor, color: BLACK, bold });
    }

    pub fn to_svg(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">"#
        );
        let _ = writeln!(out, r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#);
        for shape in &self.shapes {
            match shape {
                Shape::Rect { x, y, w, h, fill } => {
                    let _ = writeln!(
                        out,
                        r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{}"/>"#,
                        fill.hex()
                    );
                }
                Shape::Line { points, color, width, dashed } => {
                    let coordinates: Vec<String> = points.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
                    let dash = if *dashed { r#" stroke-dasharray="6,4""# } else { "" };
                    let _ = writeln!(
                        out,
                        r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="{width}" stroke-linejoin="round"{dash}/>"#,
                        coordinates.join(" "),
                        color.hex()
                    );
                }
                Shape::Text { x, y, text, size, anchor, color, bold } => {
                    let anchor = match anchor {
                        Anchor::Start => "start",
                        Anchor::Middle => "middle",
                        Anchor::End => "end",
                    };
                    let weight = if *bold { r#" font-weight="bold""# } else { "" };
                    let _ = writeln!(
                        out,
                        r#"<text x="{x:.1}" y="{y:.1}" font-size="{size}" text-anchor="{anchor}" fill="{}"{weight}>{}</text>"#,
                        color.hex(),
                        escape(text)
                    );
                }
            }
        }
        out.push_str("</svg>\n");
        out
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Writes the plot; the extension (`.svg` or `.png`) picks the format.
pub fn write(results: &BenchResults, path: &Path) -> Result<(), String> {
    let figure = chart(results);
    let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    let bytes = match extension.as_deref() {
        Some("svg") => figure.to_svg().into_bytes(),
        Some("png") => crate::raster::png(&figure, WIDTH as u32, HEIGHT as u32),
        _ => return Err(format!("--plot {}: the file name must end in .svg or .png", path.display())),
    };
    std::fs::write(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// A value-to-pixel mapping for one axis.
#[derive(Debug, Clone, Copy)]
struct Scale {
    low: f64,
    high: f64,
    from: f64,
    to: f64,
    log: bool,
}

impl Scale {
    fn map(&self, value: f64) -> f64 {
        let (v, low, high) = if self.log {
            (value.max(self.low).log10(), self.low.log10(), self.high.log10())
        } else {
            (value, self.low, self.high)
        };
        let fraction = if high > low { ((v - low) / (high - low)).clamp(0.0, 1.0) } else { 0.0 };
        self.from + fraction * (self.to - self.from)
    }
}

/// A "nice" step (1, 2 or 5 times a power of ten) giving about `count` ticks over `range`.
pub fn nice_step(range: f64, count: f64) -> f64 {
    if range <= 0.0 || !range.is_finite() {
        return 1.0;
    }
    let raw = range / count;
    let power = 10f64.powf(raw.log10().floor());
    let fraction = raw / power;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * power
}

fn label(value: f64) -> String {
    if value == 0.0 {
        "0".to_string()
    } else if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        let text = format!("{value:.1}");
        text.strip_suffix(".0").map(str::to_string).unwrap_or(text)
    } else {
        let text = format!("{value:.3}");
        text.trim_end_matches('0').to_string()
    }
}

struct Panel {
    top: f64,
    bottom: f64,
    x: Scale,
}

impl Panel {
    /// Shades the parts of the run that are not the measured phase, and backlog building.
    fn shade(&self, figure: &mut Figure, series: &[SeriesPoint]) {
        let mut start = 0.0;
        for point in series {
            let fill = match point.phase {
                Phase::Warmup => Some(WARMUP),
                Phase::Measure if point.consumers_paused => Some(PAUSED),
                Phase::Measure => None,
                Phase::Finish => Some(FINISH),
            };
            if let Some(fill) = fill {
                let (x0, x1) = (self.x.map(start), self.x.map(point.t_s));
                figure.rect(x0, self.top, (x1 - x0).max(0.0), self.bottom - self.top, fill);
            }
            start = point.t_s;
        }
    }

    fn x_axis(&self, figure: &mut Figure) {
        let step = nice_step(self.x.high - self.x.low, 10.0);
        let mut t = 0.0;
        while t <= self.x.high + 1e-9 {
            let x = self.x.map(t);
            figure.line(vec![(x, self.top), (x, self.bottom)], GRID, 1.0, false);
            figure.text(x, self.bottom + 16.0, label(t), 11.0, Anchor::Middle, false);
            t += step;
        }
        figure.text(WIDTH - RIGHT, self.bottom + 32.0, "seconds since start", 11.0, Anchor::End, false);
    }

    fn y_grid(&self, figure: &mut Figure, y: &Scale, ticks: &[f64]) {
        for &value in ticks {
            let py = y.map(value);
            figure.line(vec![(LEFT, py), (WIDTH - RIGHT, py)], GRID, 1.0, false);
            figure.text(LEFT - 6.0, py + 4.0, label(value), 11.0, Anchor::End, false);
        }
        figure.line(vec![(LEFT, self.top), (LEFT, self.bottom), (WIDTH - RIGHT, self.bottom)], BLACK, 1.0, false);
    }

    /// Draws one series `width` pixels wide; points without a value (None) break the line.
    #[allow(clippy::too_many_arguments)]
    fn series(
        &self,
        figure: &mut Figure,
        y: &Scale,
        values: &[(f64, Option<f64>)],
        color: Color,
        width: f64,
        dashed: bool,
    ) {
        let mut run: Vec<(f64, f64)> = Vec::new();
        for &(t, value) in values {
            match value {
                Some(v) => run.push((self.x.map(t), y.map(v))),
                None => figure.line(std::mem::take(&mut run), color, width, dashed),
            }
        }
        figure.line(run, color, width, dashed);
    }

    fn legend(&self, figure: &mut Figure, entries: &[(&str, Color, bool)]) {
        let mut x = LEFT + 10.0;
        let y = self.top + 14.0;
        for &(name, color, dashed) in entries {
            figure.rect(x - 4.0, y - 11.0, 24.0 + name.len() as f64 * 7.0 + 8.0, 16.0, Color(0xff, 0xff, 0xff));
            figure.line(vec![(x, y - 4.0), (x + 18.0, y - 4.0)], color, 2.5, dashed);
            figure.text(x + 24.0, y, name, 11.0, Anchor::Start, false);
            x += 24.0 + name.len() as f64 * 7.0 + 16.0;
        }
    }
}

/// Builds the chart: a title, throughput over time, latency percentiles over time.
pub fn chart(r: &BenchResults) -> Figure {
    let mut figure = Figure::default();
    let series = &r.series;
    let t_max = series.last().map_or(1.0, |p| p.t_s).max(1.0);
    let x = Scale { low: 0.0, high: t_max, from: LEFT, to: WIDTH - RIGHT, log: false };
    figure.text(WIDTH / 2.0, 24.0, format!("keel bench: {}", r.name), 16.0, Anchor::Middle, true);
    let w = &r.workload;
    figure.text(
        WIDTH / 2.0,
        44.0,
        format!(
            "{} x {} partitions, {} B, {} producers, {}x{} consumers, brokers {} | publish {:.1} MiB/s, e2e p99 {:.2} ms",
            w.topics,
            w.partitions_per_topic,
            w.message_size,
            w.producers(),
            w.subscriptions_per_topic,
            w.consumers_per_subscription,
            r.brokers,
            r.publish.mib_per_s,
            r.end_to_end_latency.p99_ms
        ),
        11.0,
        Anchor::Middle,
        false,
    );

    // Throughput.
    let throughput = Panel { top: 80.0, bottom: 340.0, x };
    figure.text(
        LEFT,
        72.0,
        "throughput, MiB/s (grey: warm-up and finish; orange: consumers paused)",
        12.0,
        Anchor::Start,
        true,
    );
    throughput.shade(&mut figure, series);
    let peak = series.iter().map(|p| p.publish_mib_per_s.max(p.consume_mib_per_s)).fold(0.0, f64::max).max(1.0);
    let step = nice_step(peak, 5.0);
    let y_high = (peak / step).ceil() * step;
    let y = Scale { low: 0.0, high: y_high, from: throughput.bottom, to: throughput.top, log: false };
    let ticks: Vec<f64> = (0..=((y_high / step).round() as usize)).map(|i| i as f64 * step).collect();
    throughput.y_grid(&mut figure, &y, &ticks);
    throughput.x_axis(&mut figure);
    let points = |f: &dyn Fn(&SeriesPoint) -> Option<f64>| -> Vec<(f64, Option<f64>)> {
        series.iter().map(|p| (p.t_s, f(p))).collect()
    };
    // Publish wide underneath, consume narrow and dashed on top: equal rates stay visible.
    throughput.series(&mut figure, &y, &points(&|p| Some(p.publish_mib_per_s)), PUBLISH, 3.5, false);
    if w.subscriptions_per_topic > 0 {
        throughput.series(&mut figure, &y, &points(&|p| Some(p.consume_mib_per_s)), CONSUME, 2.0, true);
    }
    throughput.legend(&mut figure, &[("publish", PUBLISH, false), ("consume", CONSUME, true)]);

    // Latency, log scale.
    let latency = Panel { top: 410.0, bottom: 670.0, x };
    figure.text(LEFT, 402.0, "latency per interval, ms (log scale)", 12.0, Anchor::Start, true);
    latency.shade(&mut figure, series);
    let values = |p: &SeriesPoint| {
        [
            p.publish_latency.p50_ms,
            p.publish_latency.p99_ms,
            p.end_to_end_latency.p50_ms,
            p.end_to_end_latency.p99_ms,
            p.end_to_end_latency.p999_ms,
            p.end_to_end_latency.max_ms,
        ]
    };
    let positive = series.iter().flat_map(values).filter(|v| *v > 0.0);
    let (low, high) = positive.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (low, high) = if high > 0.0 { (low, high) } else { (0.1, 10.0) };
    let low = 10f64.powf(low.log10().floor()).max(0.001);
    let high = 10f64.powf(high.log10().ceil()).max(low * 10.0);
    let y = Scale { low, high, from: latency.bottom, to: latency.top, log: true };
    let mut ticks = Vec::new();
    let mut tick = low;
    while tick <= high * 1.0001 {
        ticks.push(tick);
        tick *= 10.0;
    }
    latency.y_grid(&mut figure, &y, &ticks);
    latency.x_axis(&mut figure);
    let some = |count: u64, v: f64| (count > 0).then_some(v);
    let publish = |f: fn(&SeriesPoint) -> f64| points(&|p| some(p.publish_latency.count, f(p)));
    let e2e = |f: fn(&SeriesPoint) -> f64| points(&|p| some(p.end_to_end_latency.count, f(p)));
    // End-to-end wide underneath, publish narrow on top: end-to-end latency is publish latency
    // plus the fetch, so the lines often lie on each other.
    let mut entries = vec![];
    if w.subscriptions_per_topic > 0 {
        latency.series(&mut figure, &y, &e2e(|p| p.end_to_end_latency.max_ms), MAX, 2.0, true);
        latency.series(&mut figure, &y, &e2e(|p| p.end_to_end_latency.p999_ms), CONSUME_DARK, 2.0, true);
        latency.series(&mut figure, &y, &e2e(|p| p.end_to_end_latency.p99_ms), CONSUME, 3.5, false);
        latency.series(&mut figure, &y, &e2e(|p| p.end_to_end_latency.p50_ms), CONSUME_LIGHT, 3.5, false);
        entries.extend([
            ("e2e p50", CONSUME_LIGHT, false),
            ("e2e p99", CONSUME, false),
            ("e2e p99.9", CONSUME_DARK, true),
            ("e2e max", MAX, true),
        ]);
    }
    latency.series(&mut figure, &y, &publish(|p| p.publish_latency.p99_ms), PUBLISH, 1.5, false);
    latency.series(&mut figure, &y, &publish(|p| p.publish_latency.p50_ms), PUBLISH_LIGHT, 1.5, false);
    entries.extend([("publish p50", PUBLISH_LIGHT, false), ("publish p99", PUBLISH, false)]);
    latency.legend(&mut figure, &entries);
    figure
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::LatencySummary;

    #[test]
    fn nice_steps_are_one_two_or_five_times_a_power_of_ten() {
        assert_eq!(nice_step(100.0, 5.0), 20.0);
        assert_eq!(nice_step(7.0, 10.0), 1.0);
        assert_eq!(nice_step(0.37, 5.0), 0.1);
        assert_eq!(nice_step(45.0, 10.0), 5.0);
        assert_eq!(nice_step(0.0, 5.0), 1.0);
        assert_eq!(label(2.0), "2");
        assert_eq!(label(0.05), "0.05");
        assert_eq!(label(2.5), "2.5");
    }

    #[test]
    fn the_svg_has_both_panels_and_a_line_per_series() {
        let mut results = crate::report::tests::sample(50.0, 2.0);
        results.series = (1..=10)
            .map(|i| SeriesPoint {
                t_s: f64::from(i),
                phase: if i <= 2 { Phase::Warmup } else { Phase::Measure },
                publish_messages_per_s: 51_200.0,
                publish_mib_per_s: 50.0 + f64::from(i),
                consume_messages_per_s: 51_200.0,
                consume_mib_per_s: 50.0,
                publish_errors: 0,
                backlog_messages: 0,
                consumers_paused: false,
                publish_latency: LatencySummary { count: 10, p50_ms: 1.0, p99_ms: 2.0, ..LatencySummary::default() },
                end_to_end_latency: LatencySummary {
                    count: 10,
                    p50_ms: 1.5,
                    p99_ms: 3.0,
                    p999_ms: 4.0,
                    max_ms: 9.0,
                    ..LatencySummary::default()
                },
            })
            .collect();
        let svg = chart(&results).to_svg();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("throughput, MiB/s") && svg.contains("latency per interval"));
        // Two throughput lines and six latency lines (legend samples are 2.5 wide, grid 1).
        let data_lines = ["2", "3.5", "1.5"].iter().map(|w| svg.matches(&format!(r#"stroke-width="{w}""#)).count());
        assert_eq!(data_lines.sum::<usize>(), 8, "{svg}");
        assert!(svg.contains("keel bench: sample"));
    }
}

//! A lag-over-time chart as inline SVG: drawn by the server, no script, no
//! font or library from the internet.

use maud::{Markup, html};

/// Width and height of the drawing, in SVG units.
const W: f64 = 720.0;
const H: f64 = 220.0;
/// Margins: left for the y labels, bottom for the x labels.
const ML: f64 = 64.0;
const MB: f64 = 28.0;
const MT: f64 = 12.0;
const MR: f64 = 16.0;

/// A "nice" upper bound for the y axis (1, 2 or 5 times a power of ten).
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if v <= m * p {
            return m * p;
        }
    }
    10.0 * p
}

fn label(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// A time offset for the x axis: `-90s`, `-30m`, `-1h 30m`.
fn ago(ms: i64) -> String {
    let s = ms / 1000;
    if s == 0 {
        "now".into()
    } else if s < 120 {
        format!("-{s}s")
    } else if s < 7200 {
        format!("-{}m", s / 60)
    } else {
        format!("-{}h {}m", s / 3600, s / 60 % 60)
    }
}

/// Draws `points` (epoch ms, lag) up to `now_ms`, over at most `span_ms`:
/// from the first sample (at least a minute back) while the console has
/// sampled for less than that. Fewer than two points draw an empty frame
/// saying the console is still sampling.
pub fn lag_chart(title: &str, points: &[(i64, i64)], now_ms: i64, span_ms: i64) -> Markup {
    let oldest = now_ms - span_ms.max(1);
    let shown: Vec<(i64, i64)> = points
        .iter()
        .copied()
        .filter(|(t, _)| *t >= oldest)
        .collect();
    let first = shown.first().map_or(oldest, |p| p.0);
    let span_ms = (now_ms - first).clamp(60_000, span_ms.max(60_000));
    let span = span_ms as f64;
    let from = now_ms - span_ms;
    let max = nice_max(shown.iter().map(|p| p.1).max().unwrap_or(0) as f64);
    // Round ticks: 2 x 10^k in quarters, 1 and 5 x 10^k in fifths.
    let lead = (max / 10f64.powf(max.log10().floor())).round();
    let intervals: u8 = if lead == 2.0 { 4 } else { 5 };
    let x = |t: i64| ML + (t - from) as f64 / span * (W - ML - MR);
    let y = |v: i64| MT + (1.0 - v as f64 / max) * (H - MT - MB);
    let line: String = shown
        .iter()
        .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
        .collect::<Vec<_>>()
        .join(" ");
    let area = if shown.len() >= 2 {
        format!(
            "{:.1},{:.1} {line} {:.1},{:.1}",
            x(shown[0].0),
            y(0),
            x(shown[shown.len() - 1].0),
            y(0)
        )
    } else {
        String::new()
    };
    let last = shown.last().map(|p| p.1);
    html! {
        figure.chart {
            svg viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(title) xmlns="http://www.w3.org/2000/svg" {
                title { (title) }
                @for i in 0..=intervals {
                    @let v = max * f64::from(i) / f64::from(intervals);
                    @let yy = y(v as i64);
                    line x1=(ML) x2=(W - MR) y1=(format!("{yy:.1}")) y2=(format!("{yy:.1}")) class="grid" {}
                    text x=(ML - 6.0) y=(format!("{:.1}", yy + 4.0)) text-anchor="end" class="axis" { (label(v)) }
                }
                @for (i, name) in [(0, ago(span_ms)), (1, ago(span_ms / 2)), (2, ago(0))] {
                    @let xx = ML + f64::from(i) / 2.0 * (W - ML - MR);
                    text x=(format!("{xx:.1}")) y=(H - 8.0) text-anchor="middle" class="axis" { (name) }
                }
                @if shown.len() >= 2 {
                    polygon points=(area) class="area" {}
                    polyline points=(line) class="line" fill="none" {}
                } @else {
                    text x=(W / 2.0) y=(H / 2.0) text-anchor="middle" class="empty" { "collecting samples…" }
                }
            }
            figcaption {
                (title)
                @if let Some(l) = last { " · now " strong { (l) } }
                " · " (shown.len()) " samples"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_bounds() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(10.0), 10.0);
        assert_eq!(nice_max(11.0), 20.0);
        assert_eq!(nice_max(4200.0), 5000.0);
    }

    #[test]
    fn draws_the_points_inside_the_window_only() {
        let now = 3_600_000;
        let pts = [(-1, 999_999), (0, 5), (now - 60_000, 10), (now, 20)];
        let svg = lag_chart("lag of <g>", &pts, now, 3_600_000).into_string();
        assert!(svg.contains("<polyline"), "{svg}");
        assert!(
            svg.contains("3 samples"),
            "the point before the window is left out: {svg}"
        );
        assert!(
            svg.contains("lag of &lt;g&gt;"),
            "the title is escaped: {svg}"
        );
        assert!(svg.contains(">20<"), "the axis tops at 20: {svg}");
        assert!(
            svg.contains(">-60m<"),
            "a full hour of samples spans the hour: {svg}"
        );
        // Two minutes of samples: the axis spans those two minutes.
        let young = lag_chart("x", &[(now - 120_000, 1), (now, 3)], now, 3_600_000).into_string();
        assert!(
            young.contains(">-2m<") && young.contains(">-60s<"),
            "{young}"
        );
        assert!(
            young.contains(">4<") && young.contains(">5<"),
            "ticks of 1 up to 5: {young}"
        );
        assert_eq!(label(0.5), "0.5");
        assert_eq!(label(25_000.0), "25k");
        let empty = lag_chart("x", &[(now, 5)], now, 3_600_000).into_string();
        assert!(empty.contains("collecting samples"), "{empty}");
        assert!(!empty.contains("<polyline"));
    }
}

//! `--report FILE.html|FILE.svg`: the timeline of a run as a picture that
//! needs nothing but a browser (no script, no network): per scenario, the
//! request rate, the redirect latency (p50, p99; the baseline's p99 in the
//! A/B), the backlog (outbox rows, the worker group's Kafka lag, the DLQ) and
//! the oldest click not yet stored, with outage and spike windows shaded.

use std::fmt::Write as _;

use crate::scenario::Outcome;
use crate::timeline::Timeline;

const WIDTH: f64 = 960.0;
const PANEL: f64 = 120.0;
const GAP: f64 = 34.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 150.0;

/// One line of a panel.
struct Series<'a> {
    name: &'a str,
    color: &'a str,
    points: Vec<(f64, f64)>,
}

/// The SVG of every scenario, one block of panels each.
pub(crate) fn svg(outcomes: &[Outcome]) -> String {
    let block = 30.0 + 4.0 * (PANEL + GAP);
    let height = 20.0 + block * outcomes.len() as f64;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">"#
    );
    s.push_str(r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (i, o) in outcomes.iter().enumerate() {
        scenario(&mut s, o, 20.0 + block * i as f64);
    }
    s.push_str("</svg>\n");
    s
}

/// A self-contained page: the picture and each scenario's figures.
pub(crate) fn html(outcomes: &[Outcome]) -> String {
    let mut rows = String::new();
    for o in outcomes {
        let figures = o.figures.as_object().cloned().unwrap_or_default();
        let cells: Vec<String> = figures
            .iter()
            .map(|(k, v)| format!("<code>{k}</code> {v}"))
            .collect();
        let _ = write!(
            rows,
            "<tr><th>{}</th><td>{}</td><td>{}</td></tr>",
            o.kind.name(),
            if o.ok { "held" } else { "FAILED" },
            cells.join(" · ")
        );
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>click pipeline run</title>\
         <style>body{{font-family:sans-serif;margin:24px}}td,th{{padding:4px 10px;text-align:left;vertical-align:top}}</style>\
         </head><body><h1>Click pipeline run</h1><table>{rows}</table>{}</body></html>\n",
        svg(outcomes)
    )
}

fn scenario(s: &mut String, o: &Outcome, y: f64) {
    let t = &o.timeline;
    let x_max = t
        .samples
        .iter()
        .map(|x| x.t_s)
        .fold(1.0_f64, f64::max)
        .ceil();
    let _ = write!(
        s,
        r#"<text x="{LEFT}" y="{}" font-size="15" font-weight="bold">{} — claims {}</text>"#,
        y + 14.0,
        o.kind.name(),
        if o.ok { "held" } else { "FAILED" }
    );
    let seconds = t.seconds();
    let mut y = y + 30.0;
    let rate = vec![Series {
        name: "requests/s",
        color: "#555",
        points: seconds
            .iter()
            .map(|x| (x.t_s as f64 + 0.5, x.requests as f64))
            .collect(),
    }];
    let mut latency = vec![
        Series {
            name: "redirect p50",
            color: "#2b8cbe",
            points: seconds
                .iter()
                .map(|x| (x.t_s as f64 + 0.5, x.p50_ms))
                .collect(),
        },
        Series {
            name: "redirect p99",
            color: "#08306b",
            points: seconds
                .iter()
                .map(|x| (x.t_s as f64 + 0.5, x.p99_ms))
                .collect(),
        },
    ];
    if seconds.iter().any(|x| x.baseline_p99_ms.is_some()) {
        latency.push(Series {
            name: "baseline p99",
            color: "#e6550d",
            points: seconds
                .iter()
                .filter_map(|x| Some((x.t_s as f64 + 0.5, x.baseline_p99_ms?)))
                .collect(),
        });
    }
    let backlog = backlog_series(t);
    let age = vec![Series {
        name: "oldest unstored (s)",
        color: "#756bb1",
        points: t
            .samples
            .iter()
            .map(|x| (x.t_s, x.oldest_unprocessed_ms as f64 / 1000.0))
            .collect(),
    }];
    for (title, series) in [
        ("request rate (per second)", rate),
        ("redirect latency (ms)", latency),
        ("backlog (messages)", backlog),
        ("oldest click not yet stored (s)", age),
    ] {
        panel(s, y, title, &series, x_max, t);
        y += PANEL + GAP;
    }
}

fn backlog_series(t: &Timeline) -> Vec<Series<'static>> {
    vec![
        Series {
            name: "outbox rows",
            color: "#31a354",
            points: t
                .samples
                .iter()
                .map(|x| (x.t_s, x.outbox_backlog as f64))
                .collect(),
        },
        Series {
            name: "Kafka lag",
            color: "#de2d26",
            // A gap (NaN) while the brokers cannot say.
            points: t
                .samples
                .iter()
                .map(|x| (x.t_s, x.lag.map_or(f64::NAN, |l| l as f64)))
                .collect(),
        },
        Series {
            name: "DLQ depth",
            color: "#636363",
            points: t.samples.iter().map(|x| (x.t_s, x.dlq as f64)).collect(),
        },
    ]
}

/// A rounded axis maximum: 1, 2 or 5 times a power of ten.
fn nice(max: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|v| *v >= max)
        .unwrap_or(10.0 * p)
}

fn panel(s: &mut String, y: f64, title: &str, series: &[Series], x_max: f64, t: &Timeline) {
    let w = WIDTH - LEFT - RIGHT;
    let y_max = nice(
        series
            .iter()
            .flat_map(|x| x.points.iter().map(|p| p.1))
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max),
    );
    let sx = |x: f64| LEFT + x / x_max * w;
    let sy = |v: f64| y + PANEL - v / y_max * PANEL;
    for win in &t.windows {
        let _ = write!(
            s,
            r##"<rect x="{:.1}" y="{y:.1}" width="{:.1}" height="{PANEL}" fill="#fdd49e" opacity="0.6"/><text x="{:.1}" y="{:.1}" fill="#a63603">{}</text>"##,
            sx(win.from_s),
            (sx(win.to_s) - sx(win.from_s)).max(1.0),
            sx(win.from_s) + 3.0,
            y + 11.0,
            win.label
        );
    }
    let _ = write!(
        s,
        r##"<text x="{LEFT}" y="{:.1}" font-weight="bold">{title}</text><rect x="{LEFT}" y="{y:.1}" width="{w:.1}" height="{PANEL}" fill="none" stroke="#bbb"/>"##,
        y - 5.0
    );
    for frac in [0.0, 0.5, 1.0] {
        let v = y_max * frac;
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + w,
            LEFT - 4.0,
            sy(v) + 4.0,
            label(v),
            yy = sy(v)
        );
    }
    let step = if x_max > 60.0 { 10.0 } else { 5.0 };
    let mut x = 0.0;
    while x <= x_max {
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#666">{x}s</text>"##,
            sx(x),
            y + PANEL + 13.0
        );
        x += step;
    }
    for (i, ser) in series.iter().enumerate() {
        // One polyline per run of known values: an unknown value (NaN) is a gap.
        for run in ser.points.split(|p| !p.1.is_finite()) {
            let pts: Vec<String> = run
                .iter()
                .map(|(x, v)| format!("{:.1},{:.1}", sx(*x), sy(*v)))
                .collect();
            if !pts.is_empty() {
                let _ = write!(
                    s,
                    r#"<polyline fill="none" stroke="{}" stroke-width="1.8" points="{}"/>"#,
                    ser.color,
                    pts.join(" ")
                );
            }
        }
        let _ = write!(
            s,
            r#"<rect x="{:.1}" y="{:.1}" width="12" height="3" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            LEFT + w + 12.0,
            y + 12.0 + 16.0 * i as f64,
            ser.color,
            LEFT + w + 28.0,
            y + 16.0 + 16.0 * i as f64,
            ser.name
        );
    }
}

fn label(v: f64) -> String {
    if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_value_breaks_the_line() {
        let mut s = String::new();
        let series = [Series {
            name: "lag",
            color: "red",
            points: vec![
                (0.0, 1.0),
                (1.0, 2.0),
                (2.0, f64::NAN),
                (3.0, 4.0),
                (4.0, 3.0),
            ],
        }];
        panel(&mut s, 0.0, "t", &series, 4.0, &Timeline::default());
        assert_eq!(s.matches("<polyline").count(), 2, "{s}");
        assert!(!s.contains("NaN"));
    }

    #[test]
    fn axis_maxima_are_round() {
        assert_eq!(nice(0.0), 1.0);
        assert_eq!(nice(7.0), 10.0);
        assert_eq!(nice(120.0), 200.0);
        assert_eq!(nice(0.3), 0.5);
    }
}

//! Plain SVG line charts, written by the bench itself (no plotting library): convergence
//! time and writes against the namespace count, and the new-namespace latency distribution.

use std::fmt::Write as _;

use crate::contenders::Kind;
use crate::results::RunResult;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 400.0;
const MARGIN: f64 = 60.0;

/// One line of a chart.
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) color: &'static str,
    pub(crate) points: Vec<(f64, f64)>,
}

fn color(kind: Kind) -> &'static str {
    match kind {
        Kind::Regcred => "#1f77b4",
        Kind::RegcredWatch => "#9467bd",
        Kind::Limit => "#2ca02c",
        Kind::Script => "#d62728",
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A chart of `series` with linear axes from 0 to the largest value.
pub(crate) fn chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let all = series.iter().flat_map(|s| s.points.iter());
    let x_max = all.clone().map(|p| p.0).fold(0.0, f64::max).max(1e-9);
    let y_max = all.map(|p| p.1).fold(0.0, f64::max).max(1e-9);
    let plot_w = WIDTH - 2.0 * MARGIN;
    let plot_h = HEIGHT - 2.0 * MARGIN;
    let x = |v: f64| MARGIN + v / x_max * plot_w;
    let y = |v: f64| HEIGHT - MARGIN - v / y_max * plot_h;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    // Axes, with five ticks each.
    let _ = writeln!(
        svg,
        r#"<path d="M{m} {t} V{b} H{r}" stroke="black" fill="none"/>"#,
        m = MARGIN,
        t = MARGIN,
        b = HEIGHT - MARGIN,
        r = WIDTH - MARGIN
    );
    for i in 0..=5 {
        let f = i as f64 / 5.0;
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            x(f * x_max),
            HEIGHT - MARGIN + 16.0,
            tick(f * x_max)
        );
        let _ = writeln!(
            svg,
            r##"<text x="{}" y="{}" text-anchor="end">{}</text><path d="M{} {} H{}" stroke="#ddd"/>"##,
            MARGIN - 6.0,
            y(f * y_max) + 4.0,
            tick(f * y_max),
            MARGIN,
            y(f * y_max),
            WIDTH - MARGIN
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        WIDTH / 2.0,
        HEIGHT - 18.0,
        escape(x_label)
    );
    let _ = writeln!(
        svg,
        r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{}</text>"#,
        HEIGHT / 2.0,
        HEIGHT / 2.0,
        escape(y_label)
    );
    for (i, s) in series.iter().enumerate() {
        let path: Vec<String> = s
            .points
            .iter()
            .map(|&(px, py)| format!("{:.1},{:.1}", x(px), y(py)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>"#,
            path.join(" "),
            s.color
        );
        for &(px, py) in &s.points {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"/>"#,
                x(px),
                y(py),
                s.color
            );
        }
        let ly = MARGIN + 16.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<rect x="{}" y="{}" width="12" height="3" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            MARGIN + 12.0,
            ly - 4.0,
            s.color,
            MARGIN + 30.0,
            ly,
            escape(&s.name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn tick(v: f64) -> String {
    if v >= 100.0 || v == 0.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn per_contender(results: &[RunResult], value: impl Fn(&RunResult) -> Option<f64>) -> Vec<Series> {
    let mut kinds: Vec<Kind> = results.iter().map(|r| r.contender).collect();
    kinds.sort();
    kinds.dedup();
    kinds
        .into_iter()
        .map(|kind| {
            let mut points: Vec<(f64, f64)> = results
                .iter()
                .filter(|r| r.contender == kind)
                .filter_map(|r| Some((r.namespaces as f64, value(r)?)))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series {
                name: kind.name().into(),
                color: color(kind),
                points,
            }
        })
        .collect()
}

/// The charts the bench writes: file name → SVG.
pub(crate) fn charts(results: &[RunResult]) -> Vec<(&'static str, String)> {
    let convergence = per_contender(results, |r| Some(r.cold.seconds));
    let writes = per_contender(results, |r| Some(r.cold.requests.object_writes as f64));
    let memory = per_contender(results, |r| r.peak_rss_mib);
    let latency: Vec<Series> = results
        .iter()
        .filter_map(|r| {
            let new = r.new_namespaces.as_ref()?;
            let n = new.entry_samples_ms.len() as f64;
            Some(Series {
                name: format!("{} ({} namespaces)", r.contender.name(), r.namespaces),
                color: color(r.contender),
                points: new
                    .entry_samples_ms
                    .iter()
                    .enumerate()
                    .map(|(i, ms)| (*ms, (i + 1) as f64 / n))
                    .collect(),
            })
        })
        .collect();
    vec![
        (
            "convergence.svg",
            chart(
                "Cold convergence",
                "namespaces (3 ServiceAccounts each)",
                "seconds to every Secret and entry",
                &convergence,
            ),
        ),
        (
            "writes.svg",
            chart(
                "Writes to Secrets and ServiceAccounts, cold",
                "namespaces",
                "writes",
                &writes,
            ),
        ),
        (
            "memory.svg",
            chart("Peak memory (VmHWM)", "namespaces", "MiB", &memory),
        ),
        (
            "new-namespace-latency.svg",
            chart(
                "New namespace: default ServiceAccount to entry (CDF)",
                "milliseconds",
                "fraction of namespaces",
                &latency,
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_places_its_points_inside_the_plot() {
        let svg = chart(
            "t",
            "x",
            "y",
            &[Series {
                name: "a<b".into(),
                color: "red",
                points: vec![(0.0, 0.0), (10.0, 5.0)],
            }],
        );
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("a&lt;b"));
        // (10, 5) is the top-right corner of the plot area.
        assert!(svg.contains(&format!("{:.1},{:.1}", WIDTH - MARGIN, MARGIN)));
        assert!(svg.contains(&format!("{:.1},{:.1}", MARGIN, HEIGHT - MARGIN)));
    }
}

//! `streamscore drift report --html`: the report as one self-contained
//! page, per column the reference against the live distribution and its
//! measures over time beside their thresholds, then the alerts.

use std::fmt::Write;

use plotters::prelude::*;

use super::{DriftReport, WindowReport};
use crate::charts::{SIZE, axis_top, bar_key, escape, legend, svg_chart};
use crate::drift::alerts::ThresholdRules;
use crate::drift::performance::PERFORMANCE;
use crate::drift::reference::References;
use crate::drift::window::{ColumnCounts, numeric_reference};

/// The page: per column, the reference against the live distribution over
/// the reported windows, and its measures over time beside their
/// thresholds; then the alerts.
/// `source` names the pipeline file; `thresholds` are its `[drift]`'s.
pub fn html(report: &DriftReport, source: &str, thresholds: Option<&ThresholdRules>) -> String {
    let mut page = String::new();
    let mut chance = crate::drift::chance::ChanceThresholds::default();
    let _ = write!(
        page,
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Drift report</title>\
         <style>body{{font-family:sans-serif;margin:2em;max-width:1300px}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px}}\
         .charts{{display:flex;flex-wrap:wrap;gap:1em}}</style></head><body>\n\
         <h1>Drift report</h1>\n<p>{windows} window(s), {alerts} alert(s), pipeline {pipeline}.</p>\n",
        windows = report.windows.len(),
        alerts = report.alerts.len(),
        pipeline = escape(source),
    );
    page.push_str("<h2>Alerts</h2>\n<table><tr><th>window</th><th>level</th><th>feature</th><th>metric</th><th>value</th><th>threshold</th><th>model</th><th>instance</th></tr>\n");
    for a in &report.alerts {
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.4}</td><td>{}</td><td>{} {}</td><td>{}</td></tr>",
            escape(&a.window_start),
            escape(&a.level),
            escape(&a.feature),
            escape(&a.metric),
            a.value,
            a.threshold.map_or("-".into(), |t| format!("{t}")),
            escape(&a.model),
            escape(&a.model_version),
            escape(&a.instance)
        );
    }
    page.push_str("</table>\n");
    let columns: std::collections::BTreeSet<&String> = report
        .windows
        .iter()
        .flat_map(|w| w.columns.keys())
        .collect();
    for column in columns {
        let _ = writeln!(page, "<h2>{}</h2>\n<div class=\"charts\">", escape(column));
        if let Some(chart) = distribution_chart(report, column) {
            page.push_str(&chart);
        }
        if column == PERFORMANCE {
            page.push_str(&performance_chart(report));
        }
        for metric in [
            "psi",
            "ks",
            "chi_square",
            "flag_rate",
            "auc_drop",
            "average_precision_drop",
        ] {
            let points: Vec<(f64, f64)> = report
                .windows
                .iter()
                .filter_map(|w| {
                    let v = w.columns.get(column)?.measures.get(metric)?;
                    Some((w.start_ms as f64 / 3_600_000.0, *v))
                })
                .collect();
            if points.is_empty() {
                continue;
            }
            let spread = report
                .windows
                .last()
                .and_then(|w| report.references.get(&w.model_version))
                .and_then(|r| r.chunks.get(column.as_str())?.get(metric))
                .map(|s| (s.mean, s.std));
            // A `p_value` threshold at the newest window's size.
            let newest = report.windows.last();
            let mut by_chance = |p| {
                let window = newest?;
                let references = report.references.get(&window.model_version)?;
                let events = window.columns.get(column.as_str())?.events;
                chance.quantile(references, column, metric, events, p)
            };
            let limits = thresholds
                .and_then(|t| t.resolve(column, metric, spread, &mut by_chance).ok())
                .unwrap_or_default();
            page.push_str(&metric_chart(column, metric, &points, limits));
        }
        page.push_str("</div>\n");
    }
    page.push_str("</body></html>\n");
    page
}

/// The reference's shares against the live shares of the reported windows
/// (the newest model version's), per bin: a numeric column's reference
/// bins (one per value for a discrete one, then its unseen bin), a
/// categorical column's categories (then the values training never had).
fn distribution_chart(report: &DriftReport, column: &str) -> Option<String> {
    let newest = report.windows.last()?;
    let references = report.references.get(&newest.model_version)?;
    let mut live: Option<ColumnCounts> = None;
    for w in report
        .windows
        .iter()
        .filter(|w| w.model_version == newest.model_version)
    {
        if let Some(c) = w.columns.get(column) {
            match &mut live {
                Some(l) => l.merge(&c.counts),
                None => live = Some(c.counts.clone()),
            }
        }
    }
    let Bins {
        labels,
        reference,
        live,
        axis: x_desc,
    } = bins_of(&live?, column, references)?;
    let n = live.iter().sum::<u64>().max(1) as f64;
    let live_shares: Vec<f64> = live.iter().map(|&c| c as f64 / n).collect();
    let bins = reference.len();
    let top = axis_top(reference.iter().chain(&live_shares).copied(), 0.01, 1.1);
    let title = format!("{column}: reference and live, by reference bin");
    Some(svg_chart(&title, SIZE, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(&title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(0f64..bins as f64, 0f64..top)?;
        let label = |x: &f64| {
            // Each bar pair sits over [b, b + 1): name it at its middle.
            let b = x.floor();
            match (x - b - 0.5).abs() < 1e-9 {
                true => labels.get(b as usize).cloned().unwrap_or_default(),
                false => String::new(),
            }
        };
        chart
            .configure_mesh()
            .x_labels(bins * 2 + 1)
            .x_label_formatter(&label)
            .x_desc(x_desc)
            .y_desc("share")
            .draw()?;
        for (name, shares, color, offset) in [
            ("reference", &reference, BLUE.mix(0.5), 0.0),
            ("live", &live_shares, RED.mix(0.5), 0.4),
        ] {
            chart
                .draw_series(shares.iter().enumerate().map(|(b, &h)| {
                    let x = b as f64 + 0.1 + offset;
                    Rectangle::new([(x, 0.0), (x + 0.4, h)], color.filled())
                }))?
                .label(name)
                .legend(bar_key(color));
        }
        legend(&mut chart)?;
        Ok(())
    }))
}

/// Each window's estimated AUC and average precision (solid) against what
/// its labels realised (dashed), over time.
fn performance_chart(report: &DriftReport) -> String {
    type Pick = fn(&WindowReport) -> Option<f64>;
    fn estimated(w: &WindowReport, name: &str) -> Option<f64> {
        w.columns.get(PERFORMANCE)?.measures.get(name).copied()
    }
    let series: [(&str, Pick, RGBColor, bool); 4] = [
        (
            "estimated AUC",
            |w| estimated(w, "estimated_auc"),
            BLUE,
            false,
        ),
        ("realised AUC", |w| w.realised.as_ref()?.auc, BLUE, true),
        (
            "estimated AP",
            |w| estimated(w, "estimated_average_precision"),
            RGBColor(200, 80, 0),
            false,
        ),
        (
            "realised AP",
            |w| w.realised.as_ref()?.average_precision,
            RGBColor(200, 80, 0),
            true,
        ),
    ];
    let hours = |w: &WindowReport| w.start_ms as f64 / 3_600_000.0;
    let x0 = report.windows.iter().map(hours).fold(f64::MAX, f64::min);
    let x1 = report.windows.iter().map(hours).fold(f64::MIN, f64::max);
    let width = if x1 > x0 { x1 - x0 } else { 1.0 };
    let title = "performance: estimated from the scores, realised from the labels";
    svg_chart(title, SIZE, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..width, 0f64..1.05)?;
        chart
            .configure_mesh()
            .x_desc("hours since the first window")
            .y_desc("AUC, average precision")
            .draw()?;
        for (name, pick, color, dashed) in series {
            let points: Vec<(f64, f64)> = report
                .windows
                .iter()
                .filter_map(|w| Some((hours(w) - x0, pick(w)?)))
                .collect();
            if points.is_empty() {
                continue;
            }
            let drawn = match dashed {
                true => {
                    chart.draw_series(DashedLineSeries::new(points, 6, 4, color.stroke_width(2)))?
                }
                false => chart.draw_series(LineSeries::new(points, color.stroke_width(2)))?,
            };
            drawn
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        legend(&mut chart)?;
        Ok(())
    })
}

/// A column's bins for the distribution chart.
struct Bins {
    labels: Vec<String>,
    reference: Vec<f64>,
    live: Vec<u64>,
    /// What the axis shows.
    axis: &'static str,
}

fn bins_of(live: &ColumnCounts, column: &str, references: &References) -> Option<Bins> {
    match live {
        ColumnCounts::Numeric(live) => {
            let reference = numeric_reference(column, references)?;
            let mut counts = live.bins.clone();
            let mut shares = reference.shares.clone();
            if !reference.discrete {
                return Some(Bins {
                    labels: (1..=shares.len()).map(|b| b.to_string()).collect(),
                    reference: shares,
                    live: counts,
                    axis: "bin (reference quantiles)",
                });
            }
            let mut labels: Vec<String> = reference.edges[..shares.len()]
                .iter()
                .map(|v| format!("{v}"))
                .collect();
            counts.push(live.unseen);
            shares.push(0.0);
            labels.push("unseen".into());
            Some(Bins {
                labels,
                reference: shares,
                live: counts,
                axis: "value",
            })
        }
        ColumnCounts::Categorical { counts } => {
            let reference = references.categories.get(column)?;
            let mut labels: Vec<String> = reference.keys().cloned().collect();
            let mut live: Vec<u64> = labels
                .iter()
                .map(|v| counts.get(v).copied().unwrap_or(0))
                .collect();
            live.push(counts.values().sum::<u64>() - live.iter().sum::<u64>());
            labels.push("unseen".into());
            let mut shares: Vec<f64> = reference.values().copied().collect();
            shares.push(0.0);
            Some(Bins {
                labels,
                reference: shares,
                live,
                axis: "value",
            })
        }
        _ => None,
    }
}

/// A metric over the windows (x: hours since the epoch), with its
/// thresholds as dashed lines.
fn metric_chart(
    column: &str,
    metric: &str,
    points: &[(f64, f64)],
    limits: crate::drift::alerts::Thresholds,
) -> String {
    let (x0, x1) = points.iter().fold((f64::MAX, f64::MIN), |(a, b), (x, _)| {
        (a.min(*x), b.max(*x))
    });
    let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
    let top = axis_top(
        points
            .iter()
            .map(|(_, y)| *y)
            .chain(limits.suspected)
            .chain(limits.detected),
        1e-6,
        1.15,
    );
    let title = format!("{column}: {metric} per window");
    svg_chart(&title, SIZE, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(&title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..(x1 - x0), 0f64..top)?;
        chart
            .configure_mesh()
            .x_desc("hours since the first window")
            .y_desc(metric)
            .draw()?;
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|(x, y)| (x - x0, *y)),
                BLUE.stroke_width(2),
            ))?
            .label(metric)
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE));
        for (name, limit, color) in [
            ("suspected", limits.suspected, RGBColor(230, 150, 0)),
            ("detected", limits.detected, RED),
        ] {
            let Some(limit) = limit else { continue };
            chart
                .draw_series(DashedLineSeries::new(
                    [(0.0, limit), (x1 - x0, limit)],
                    6,
                    4,
                    color.stroke_width(1),
                ))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        legend(&mut chart)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::drift::report::build;
    use crate::drift::stats::{Reference, WindowCounts};
    use crate::drift::store::Stored;
    use crate::drift::store::StoredWindow;

    /// The page shows each column's distribution on its own bins: a band's
    /// values and its unseen bin, a category's values and its unseen ones.
    #[test]
    fn the_page_shows_bands_and_categories_on_their_own_bins() {
        let band = Reference::of(&[10.0, 30.0, 50.0, 70.0, 10.0, 30.0], 10).unwrap();
        let mut band_counts = WindowCounts::new(band.shares.len());
        for v in [10.0, 40.0, 70.0] {
            band_counts.count(Some(v), &band);
        }
        let references = References {
            features: BTreeMap::from([("band".to_owned(), band)]),
            categories: BTreeMap::from([(
                "channel".to_owned(),
                BTreeMap::from([("pos".to_owned(), 0.75), ("web".to_owned(), 0.25)]),
            )]),
            ..References::default()
        };
        let window = StoredWindow {
            columns: BTreeMap::from([
                ("band".to_owned(), ColumnCounts::Numeric(band_counts)),
                (
                    "channel".to_owned(),
                    ColumnCounts::Categorical {
                        counts: BTreeMap::from([
                            ("pos".to_owned(), 5),
                            ("unseen:00ab".to_owned(), 3),
                        ]),
                    },
                ),
            ]),
            partitions: BTreeSet::from([0]),
        };
        let stored = Stored {
            windows: BTreeMap::from([((0, "v1".to_owned()), window)]),
            alerts: Vec::new(),
            references: BTreeMap::from([("v1".to_owned(), references)]),
        };
        let page = html(&build(stored, &[], 0), "pipeline.toml", None);
        for text in [
            "band: reference and live, by reference bin",
            "channel: reference and live, by reference bin",
            "\n70\n",
            "\nweb\n",
            "\nunseen\n",
        ] {
            assert!(page.contains(text), "no {text:?} in the page");
        }
    }
}

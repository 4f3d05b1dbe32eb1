//! `train --report out.html`: one self-contained page (inline SVG drawn by
//! plotters, no script, nothing fetched when it is opened) with the ROC and
//! precision-recall curves, score histograms by class, feature importance,
//! the CV table and precision and recall against the threshold, all on the
//! evaluated rows (hold-out, or out of fold).

use std::fmt::Write;

use plotters::prelude::*;

use super::build::TrainReport;
use crate::charts::{SIZE, axis_top, bar_key, escape, legend, svg_chart};
use crate::model::Model;

/// The page for a training run.
/// A line on the calibration, when the bundle has one: the Brier score
/// before and after.
fn calibration_note(report: &TrainReport) -> String {
    match (
        report.brier_uncalibrated,
        &report.bundle.manifest.calibration,
    ) {
        (Some(before), Some(calibration)) => format!(
            "<p>Calibrated ({}) on these rows: Brier score {before:.4} before, {:.4} after.</p>\n",
            calibration.method(),
            report.evaluation.brier.unwrap_or(f64::NAN)
        ),
        _ => String::new(),
    }
}

pub fn html(report: &TrainReport) -> String {
    let bundle = &report.bundle;
    let scores = &report.evaluated_scores;
    let labels = &report.evaluated_labels;
    let e = &report.evaluation;
    let mut page = String::new();
    let _ = write!(
        page,
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{name} {version}</title>\
         <style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}\
         .charts{{display:flex;flex-wrap:wrap;gap:1em}}</style></head><body>\n\
         <h1>{name} {version} ({kind})</h1>\n<p>Evaluated on {rows} rows ({how}), {positives} \
         positive. {metrics}.</p>\n",
        name = escape(bundle.name()),
        version = escape(bundle.version()),
        kind = bundle.manifest.kind.as_str(),
        rows = e.rows,
        how = if report.cv.is_some() {
            "out of fold"
        } else {
            "hold-out"
        },
        positives = e.frauds,
        metrics = escape(&e.describe()),
    );
    page.push_str(&calibration_note(report));
    page.push_str("<div class=\"charts\">\n");
    let curves = Curves::new(scores, labels);
    page.push_str(&line_chart(
        "ROC curve",
        "false positive rate",
        "true positive rate",
        &[
            ("ROC", curves.roc.clone(), &BLUE),
            ("chance", vec![(0.0, 0.0), (1.0, 1.0)], &BLACK),
        ],
    ));
    page.push_str(&line_chart(
        "Precision-recall curve",
        "recall",
        "precision",
        &[("precision", curves.pr.clone(), &RED)],
    ));
    page.push_str(&histogram(scores, labels));
    page.push_str(&line_chart(
        "Precision and recall against the threshold",
        "threshold",
        "share",
        &[
            ("precision", curves.precision_at.clone(), &RED),
            ("recall", curves.recall_at.clone(), &BLUE),
        ],
    ));
    page.push_str(&importance_chart(&importance(report)));
    page.push_str("</div>\n");
    if let Some(cv) = &report.cv {
        let _ = write!(
            page,
            "<h2>Cross-validation: {}, selected by {}</h2>\n<table><tr><th>kind</th><th>auc</th>\
             <th>ap</th><th>brier</th><th>card precision</th></tr>\n",
            escape(&cv.scheme),
            escape(&cv.metric)
        );
        for row in &cv.rows {
            let stat = |f: fn(&crate::fraud_metrics::Evaluation) -> Option<f64>| {
                let values: Vec<f64> = row.folds.iter().filter_map(f).collect();
                if values.is_empty() {
                    return "n/a".to_owned();
                }
                let mean = values.iter().sum::<f64>() / values.len() as f64;
                let sd = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>()
                    / values.len() as f64)
                    .sqrt();
                format!("{mean:.4} ± {sd:.4}")
            };
            let _ = writeln!(
                page,
                "<tr><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&row.kind),
                if row.kind == cv.winner {
                    " (selected)"
                } else {
                    ""
                },
                stat(|e| e.auc),
                stat(|e| e.average_precision),
                stat(|e| e.brier),
                stat(|e| e.card_precision),
            );
        }
        page.push_str("</table>\n");
    }
    page.push_str("</body></html>\n");
    page
}

/// The curves of one set of scores.
struct Curves {
    roc: Vec<(f64, f64)>,
    pr: Vec<(f64, f64)>,
    precision_at: Vec<(f64, f64)>,
    recall_at: Vec<(f64, f64)>,
}

impl Curves {
    fn new(scores: &[f64], labels: &[bool]) -> Self {
        let positives = labels.iter().filter(|l| **l).count().max(1) as f64;
        let negatives = labels.iter().filter(|l| !**l).count().max(1) as f64;
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        let (mut tp, mut fp) = (0.0, 0.0);
        let mut roc = vec![(0.0, 0.0)];
        let mut pr = Vec::new();
        for (n, &i) in order.iter().enumerate() {
            if labels[i] {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            let last_of_tie = order.get(n + 1).is_none_or(|&j| scores[j] != scores[i]);
            if last_of_tie {
                roc.push((fp / negatives, tp / positives));
                pr.push((tp / positives, tp / (tp + fp)));
            }
        }
        let steps = 100;
        let (mut precision_at, mut recall_at) = (Vec::new(), Vec::new());
        for s in 0..=steps {
            let t = f64::from(s) / f64::from(steps);
            let (p, r) = crate::fraud_metrics::precision_recall_at(scores, labels, t);
            if let Some(p) = p {
                precision_at.push((t, p));
            }
            if let Some(r) = r {
                recall_at.push((t, r));
            }
        }
        Self {
            roc,
            pr,
            precision_at,
            recall_at,
        }
    }
}

/// Feature importance: |coefficient| on the standardised scale for a
/// logistic regression; for trees, the training cover of the splits on
/// each feature; none for an ONNX model.
fn importance(report: &TrainReport) -> Vec<(String, f64)> {
    let bundle = &report.bundle;
    let k = bundle.manifest.features.len();
    let values = match &bundle.model {
        Model::Logistic(m) => m.coefficients.iter().map(|c| c.abs()).collect(),
        Model::Trees { ensemble, .. } | Model::Imported { ensemble, .. } => {
            ensemble.split_counts(k)
        }
        // An ONNX graph has no importance of its own to read.
        Model::Onnx { .. } => Vec::new(),
    };
    let mut named: Vec<(String, f64)> = bundle
        .manifest
        .features
        .iter()
        .map(|f| f.name.clone())
        .zip(values)
        .collect();
    named.sort_by(|a, b| b.1.total_cmp(&a.1));
    named.truncate(15);
    named
}

/// A named line and its colour.
type Series<'a> = (&'a str, Vec<(f64, f64)>, &'a RGBColor);

fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    svg_chart(title, SIZE, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(0f64..1f64, 0f64..1.02f64)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .draw()?;
        for (name, points, color) in series {
            let color = **color;
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        legend(&mut chart)?;
        Ok(())
    })
}

/// Score histograms of the two classes, each as shares of its class.
fn histogram(scores: &[f64], labels: &[bool]) -> String {
    const BINS: usize = 20;
    let shares = |class: bool| {
        let mut counts = [0.0f64; BINS];
        let members: Vec<f64> = scores
            .iter()
            .zip(labels)
            .filter(|(_, l)| **l == class)
            .map(|(s, _)| *s)
            .collect();
        for s in &members {
            counts[((s * BINS as f64) as usize).min(BINS - 1)] += 1.0;
        }
        let n = members.len().max(1) as f64;
        counts.map(|c| c / n)
    };
    let (positive, negative) = (shares(true), shares(false));
    let top = axis_top(positive.iter().chain(&negative).copied(), 0.01, 1.1);
    svg_chart("histogram", SIZE, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("Scores by class (share of each class)", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(0f64..1f64, 0f64..top)?;
        chart
            .configure_mesh()
            .x_desc("score")
            .y_desc("share")
            .draw()?;
        let width = 1.0 / BINS as f64;
        for (name, shares, color, offset) in [
            ("negative", negative, BLUE.mix(0.5), 0.0),
            ("positive", positive, RED.mix(0.5), width / 2.0),
        ] {
            chart
                .draw_series(shares.iter().enumerate().map(|(b, &h)| {
                    let x = b as f64 * width + offset;
                    Rectangle::new([(x, 0.0), (x + width / 2.0, h)], color.filled())
                }))?
                .label(name)
                .legend(bar_key(color));
        }
        legend(&mut chart)?;
        Ok(())
    })
}

fn importance_chart(importance: &[(String, f64)]) -> String {
    let top = axis_top(importance.iter().map(|(_, v)| *v), 1e-12, 1.05);
    let rows = importance.len().max(1);
    svg_chart("importance", (SIZE.0 + 200, SIZE.1), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("Feature importance (top 15)", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(230)
            .build_cartesian_2d(0f64..top, -0.5f64..rows as f64 - 0.5)?;
        // Labels every half step; the whole steps (bar centres) carry
        // the names, the half steps nothing.
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(2 * rows + 1)
            .y_label_formatter(&|y| {
                let nearest = y.round();
                if (y - nearest).abs() > 0.01 || nearest < 0.0 {
                    return String::new();
                }
                let i = rows.saturating_sub(1 + nearest as usize);
                importance
                    .get(i)
                    .map_or(String::new(), |(n, _)| tail(n, 36))
            })
            .draw()?;
        chart.draw_series(importance.iter().enumerate().map(|(i, (_, v))| {
            let y = (rows - 1 - i) as f64;
            Rectangle::new([(0.0, y - 0.35), (*v, y + 0.35)], BLUE.mix(0.6).filled())
        }))?;
        Ok(())
    })
}

/// The end of a long name (a one-hot column's level is at its end).
fn tail(name: &str, chars: usize) -> String {
    let count = name.chars().count();
    if count <= chars {
        return name.to_owned();
    }
    let kept: String = name.chars().skip(count - (chars - 1)).collect();
    format!("…{kept}")
}

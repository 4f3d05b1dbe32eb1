//! `streamscore drift report`: every judged window's measures per column,
//! and the alerts raised, read from one or more instances' state stores
//! (merged by window), as a table, as JSON, or as one self-contained HTML
//! page of charts (`html.rs`).

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use super::alerts::Alert;
use super::performance::PERFORMANCE;
use super::reference::References;
use super::store::Stored;
use super::window::ColumnCounts;

/// One column in one window.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnReport {
    pub events: u64,
    pub measures: BTreeMap<&'static str, f64>,
    #[serde(skip)]
    counts: ColumnCounts,
}

#[derive(Debug, Clone, Serialize)]
pub struct WindowReport {
    pub start: String,
    pub start_ms: i64,
    pub model_version: String,
    pub partitions: Vec<i32>,
    pub columns: BTreeMap<String, ColumnReport>,
    /// What the window's labels realised, once they are in: beside the
    /// `performance` column's estimate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub realised: Option<Realised>,
}

/// A window's confirmed outcomes and how its scores ranked them (every
/// model version's scores of the window's days; filled in by the CLI from
/// the outcomes the labels made).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Realised {
    pub labelled: usize,
    pub frauds: usize,
    pub auc: Option<f64>,
    pub average_precision: Option<f64>,
}

impl DriftReport {
    /// Fills in each window's realised performance from `realised(start,
    /// end)`.
    pub fn with_realised(
        mut self,
        window_ms: i64,
        realised: impl Fn(i64, i64) -> Option<Realised>,
    ) -> Self {
        for window in &mut self.windows {
            window.realised = realised(window.start_ms, window.start_ms + window_ms);
        }
        self
    }

    /// Each window's estimated AUC and average precision by its start, of
    /// the model version that scored most of it.
    pub fn estimated(&self) -> BTreeMap<i64, (f64, f64)> {
        let mut best: BTreeMap<i64, (u64, f64, f64)> = BTreeMap::new();
        for w in &self.windows {
            let Some(c) = w.columns.get(PERFORMANCE) else {
                continue;
            };
            let (Some(&auc), Some(&ap)) = (
                c.measures.get("estimated_auc"),
                c.measures.get("estimated_average_precision"),
            ) else {
                continue;
            };
            let entry = best.entry(w.start_ms).or_insert((0, auc, ap));
            if c.events >= entry.0 {
                *entry = (c.events, auc, ap);
            }
        }
        best.into_iter()
            .map(|(start, (_, auc, ap))| (start, (auc, ap)))
            .collect()
    }
}

#[derive(Debug, Serialize)]
pub struct DriftReport {
    pub windows: Vec<WindowReport>,
    pub alerts: Vec<Alert>,
    #[serde(skip)]
    references: BTreeMap<String, References>,
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Windows with fewer than `min_events` scored events show their counts
/// but no measures, as the monitor does not judge them (their PSI is mostly
/// chance).
pub fn build(stored: Stored, only: &[String], min_events: u64) -> DriftReport {
    let empty = References::default();
    let windows = stored
        .windows
        .into_iter()
        .map(|((start, version), window)| {
            let references = stored.references.get(&version).unwrap_or(&empty);
            let judged = window
                .columns
                .get(super::DECISION)
                .is_some_and(|c| c.events() >= min_events);
            let columns = window
                .columns
                .into_iter()
                .filter(|(column, _)| only.is_empty() || only.contains(column))
                .map(|(column, counts)| {
                    let report = ColumnReport {
                        events: counts.events(),
                        measures: match judged {
                            true => counts.measures(&column, references),
                            false => BTreeMap::new(),
                        },
                        counts,
                    };
                    (column, report)
                })
                .collect();
            WindowReport {
                start: rfc3339(start),
                start_ms: start,
                model_version: version,
                partitions: window.partitions.into_iter().collect(),
                columns,
                realised: None,
            }
        })
        .collect();
    DriftReport {
        windows,
        alerts: stored
            .alerts
            .into_iter()
            .filter(|a| only.is_empty() || only.contains(&a.feature))
            .collect(),
        references: stored.references,
    }
}

pub fn table(report: &DriftReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:<22} {:<26} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8}",
        "window",
        "model version",
        "column",
        "events",
        "psi",
        "ks",
        "js",
        "wass.",
        "nulls",
        "outside",
        "chi2",
        "flagged"
    );
    for window in &report.windows {
        for (column, c) in &window.columns {
            let _ = write!(
                out,
                "{:<20} {:<22} {:<26} {:>8}",
                window.start, window.model_version, column, c.events
            );
            // The metrics, in the order of the header.
            for metric in super::alerts::METRICS {
                let width = if metric == "chi_square" { 9 } else { 8 };
                match c.measures.get(metric) {
                    Some(v) => {
                        let _ = write!(out, " {v:>width$.4}");
                    }
                    None => {
                        let _ = write!(out, " {:>width$}", "-");
                    }
                }
            }
            out.push('\n');
        }
    }
    performance_table(report, &mut out);
    let _ = writeln!(out, "\n{} alert(s)", report.alerts.len());
    for a in &report.alerts {
        let _ = writeln!(
            out,
            "{} {:<9} {} {} = {:.4} (threshold {}) model {} {} on {}",
            a.window_start,
            a.level,
            a.feature,
            a.metric,
            a.value,
            a.threshold.map_or("-".into(), |t| format!("{t}")),
            a.model,
            a.model_version,
            a.instance
        );
    }
    out
}

/// Each window's estimated performance beside what its labels realised.
fn performance_table(report: &DriftReport, out: &mut String) {
    let rows: Vec<_> = report
        .windows
        .iter()
        .filter_map(|w| Some((w, w.columns.get(PERFORMANCE)?)))
        .filter(|(_, c)| !c.measures.is_empty())
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\nEstimated performance (from the scores alone) and realised (once labelled)\n\
         {:<20} {:<22} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "window",
        "model version",
        "events",
        "est. AUC",
        "est. AP",
        "est. prec",
        "est. rec",
        "labelled",
        "AUC",
        "AP"
    );
    let shown = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.4}"));
    for (w, c) in rows {
        let m = |name: &str| c.measures.get(name).copied();
        let r = w.realised.as_ref();
        let _ = writeln!(
            out,
            "{:<20} {:<22} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            w.start,
            w.model_version,
            c.events,
            shown(m("estimated_auc")),
            shown(m("estimated_average_precision")),
            shown(m("estimated_precision")),
            shown(m("estimated_recall")),
            r.map_or("-".to_owned(), |r| r.labelled.to_string()),
            shown(r.and_then(|r| r.auc)),
            shown(r.and_then(|r| r.average_precision)),
        );
    }
}

mod html;
pub use html::html;

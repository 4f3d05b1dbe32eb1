//! `streamscore drift report`: reads one or more instances' state stores
//! and prints the drift report (drift/report/ builds and renders it).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::StoreArgs;
use crate::drift::report::{Realised, build, html, table};
use crate::drift::store::{Stored, read_all};

#[derive(Debug, Subcommand)]
pub enum DriftCommand {
    /// Each window's drift per feature, the score and the decisions, and the
    /// alerts raised.
    Report(ReportArgs),
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub stores: StoreArgs,
    /// Windows starting at or after this time (RFC 3339, or a date).
    #[arg(long)]
    pub from: Option<String>,
    /// Windows starting before this time.
    #[arg(long)]
    pub to: Option<String>,
    /// Only these columns (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub feature: Vec<String>,
    /// Prints JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also writes a page of charts here.
    #[arg(long)]
    pub html: Option<PathBuf>,
}

pub fn run(command: &DriftCommand) -> anyhow::Result<String> {
    let DriftCommand::Report(args) = command;
    let (pipeline, stores) = args.stores.open(
        |p| p.drift.is_some(),
        "monitors no drift (no [drift] section)",
    )?;
    let (from, to) = (time_arg(&args.from)?, time_arg(&args.to)?);
    let mut stored = Stored::default();
    for store in &stores {
        stored.merge(read_all(store, from, to)?);
    }
    let min_events = pipeline.drift.as_ref().map_or(0, |d| d.min_events);
    let window_ms = pipeline.drift.as_ref().map_or(0, |d| d.window_ms);
    let mut report = build(stored, &args.feature, min_events);
    // Outcomes are kept by transaction day: windows of whole days get the
    // realised performance of their days.
    if pipeline.labels.is_some() && window_ms > 0 && window_ms % DAY_MS == 0 {
        let stores: Vec<&dyn crate::state::Store> = stores.iter().map(|s| s as _).collect();
        let by_day = crate::outcomes::by_day(&stores)?;
        report = report.with_realised(window_ms, |start, end| {
            let m = crate::outcomes::between(&by_day, start / DAY_MS, end / DAY_MS)?;
            Some(Realised {
                labelled: m.labelled,
                frauds: m.frauds,
                auc: m.auc,
                average_precision: m.average_precision,
            })
        });
    }
    if let Some(path) = &args.html {
        let source = pipeline.source_path.display().to_string();
        let thresholds = pipeline.drift.as_ref().map(|d| &d.thresholds);
        std::fs::write(path, html(&report, &source, thresholds))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(match args.json {
        true => serde_json::to_string_pretty(&report)? + "\n",
        false => table(&report),
    })
}

const DAY_MS: i64 = 86_400_000;

fn time_arg(text: &Option<String>) -> anyhow::Result<Option<i64>> {
    let Some(text) = text else {
        return Ok(None);
    };
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(Some(t.timestamp_millis()));
    }
    let date = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .with_context(|| format!("`{text}` is neither an RFC 3339 time nor a date (2026-11-30)"))?;
    Ok(Some(
        date.and_hms_opt(0, 0, 0)
            .expect("midnight exists")
            .and_utc()
            .timestamp_millis(),
    ))
}

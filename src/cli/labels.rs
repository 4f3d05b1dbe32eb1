//! `streamscore labels report`: every day's confirmed outcomes and how the
//! scores ranked them, read from one or more instances' state stores (while they run, too).

use clap::Subcommand;

use super::StoreArgs;
use crate::drift::performance::PERFORMANCE;
use crate::drift::store::{Stored, read_all};

#[derive(Debug, Subcommand)]
pub enum LabelsCommand {
    /// Per transaction day: labelled scores, frauds, AUC, average precision
    /// and card precision@100.
    Report(StoreArgs),
}

pub fn run(command: &LabelsCommand) -> anyhow::Result<String> {
    let LabelsCommand::Report(args) = command;
    let (pipeline, stores) = args.open(
        |p| p.labels.is_some(),
        "reads no labels (no [labels] section)",
    )?;
    let stores: Vec<&dyn crate::state::Store> = stores.iter().map(|s| s as _).collect();
    // With day-long drift windows, each day's estimated performance (from
    // its scores, before the labels) goes beside what the labels realised.
    let mut estimated = crate::outcomes::Estimated::new();
    if let Some(drift) = pipeline.drift.as_ref().filter(|d| d.window_ms == DAY_MS) {
        let mut stored = Stored::default();
        for store in &stores {
            stored.merge(read_all(*store, None, None)?);
        }
        let report =
            crate::drift::report::build(stored, &[PERFORMANCE.to_owned()], drift.min_events);
        estimated = report
            .estimated()
            .into_iter()
            .map(|(start, e)| (start / DAY_MS, e))
            .collect();
    }
    Ok(crate::outcomes::render(
        &crate::outcomes::all_days(&stores)?,
        &estimated,
    ))
}

const DAY_MS: i64 = 86_400_000;

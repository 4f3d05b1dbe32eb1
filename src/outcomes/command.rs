//! `streamscore labels report`: every day's confirmed outcomes and how the
//! scores ranked them, read from an instance's state (while it runs, too).

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Subcommand};

use crate::config::Pipeline;
use crate::state::RocksStore;

#[derive(Debug, Subcommand)]
pub enum LabelsCommand {
    /// Per transaction day: labelled scores, frauds, AUC, average precision
    /// and card precision@100.
    Report(ReportArgs),
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[arg(long, default_value = "pipelines/fraud.toml")]
    pub pipeline: PathBuf,
    /// Overrides `state.path`.
    #[arg(long, env = "STREAMSCORE_STATE")]
    pub state: Option<PathBuf>,
}

pub fn run(command: &LabelsCommand) -> anyhow::Result<String> {
    let LabelsCommand::Report(args) = command;
    let pipeline = Pipeline::load(&args.pipeline, None)?;
    if pipeline.labels.is_none() {
        bail!(
            "{} reads no labels (no [labels] section)",
            args.pipeline.display()
        );
    }
    let mut rendered = String::new();
    for path in pipeline.state_paths(args.state.as_slice())? {
        let store = RocksStore::open_read_only(&path)?;
        rendered.push_str(&super::render(&super::all_days(&store)?));
    }
    Ok(rendered)
}

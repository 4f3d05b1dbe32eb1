//! `streamscore state warm`: folds history into an instance's state before
//! it goes live, so that its first events find their windows full (a
//! card's 30 days, a terminal's confirmed frauds) instead of empty, and
//! score as the model was trained.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use super::DEFAULT_PIPELINE;
use crate::config::Pipeline;
use crate::engine::EngineState;

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Fold history (NDJSON or CSV, in any order; labels from its label
    /// column, visible after `labels.delay` as in `train`) into the state.
    /// Run it before the instance starts: it needs the state to itself.
    Warm(WarmArgs),
}

#[derive(Debug, Args)]
pub struct WarmArgs {
    #[arg(long, default_value = DEFAULT_PIPELINE)]
    pub pipeline: PathBuf,
    #[arg(long)]
    pub data: PathBuf,
    /// Overrides `state.path`.
    #[arg(long, env = "STREAMSCORE_STATE")]
    pub state: Option<PathBuf>,
}

pub async fn run(command: &StateCommand) -> anyhow::Result<String> {
    match command {
        StateCommand::Warm(args) => warm(args),
    }
}

fn warm(args: &WarmArgs) -> anyhow::Result<String> {
    let mut pipeline = Pipeline::load(&args.pipeline, None)?;
    if let Some(dir) = &args.state {
        pipeline.use_state_dir(dir.clone())?;
    }
    let started = Instant::now();
    let Some(state) = EngineState::open(&pipeline)? else {
        bail!(
            "{} keeps no state (no [state] section)",
            args.pipeline.display()
        );
    };
    let Some(windows) = &state.windows else {
        bail!("{} declares no window features", args.pipeline.display());
    };
    let (decoded, rejected) = crate::train::read_history(&pipeline, &args.data)?;
    let folded = windows
        .warm(&decoded, &state.checkpoint)
        .with_context(|| format!("cannot warm the state from {}", args.data.display()))?;
    let keys = folded.changes.len();
    let staged = state
        .checkpoint
        .stage("", &Default::default(), folded.changes);
    state.checkpoint.commit(staged)?;
    let path = pipeline
        .state
        .as_ref()
        .map(|s| s.path.display().to_string())
        .unwrap_or_default();
    Ok(format!(
        "folded {} events of {} into {path}: {keys} window keys written, {} late, {} lines \
         refused, in {:.1} s\n",
        decoded.num_rows(),
        args.data.display(),
        folded.late,
        rejected.len(),
        started.elapsed().as_secs_f64()
    ))
}

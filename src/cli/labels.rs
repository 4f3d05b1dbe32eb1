//! `streamscore labels report`: every day's confirmed outcomes and how the
//! scores ranked them, read from one or more instances' state stores (while they run, too).

use clap::Subcommand;

use super::StoreArgs;

#[derive(Debug, Subcommand)]
pub enum LabelsCommand {
    /// Per transaction day: labelled scores, frauds, AUC, average precision
    /// and card precision@100.
    Report(StoreArgs),
}

pub fn run(command: &LabelsCommand) -> anyhow::Result<String> {
    let LabelsCommand::Report(args) = command;
    let (_, stores) = args.open(
        |p| p.labels.is_some(),
        "reads no labels (no [labels] section)",
    )?;
    let mut rendered = String::new();
    for store in &stores {
        rendered.push_str(&crate::outcomes::render(&crate::outcomes::all_days(store)?));
    }
    Ok(rendered)
}

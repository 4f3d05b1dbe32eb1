//! `streamscore models ...`: the registry seen from a command line. Each
//! function returns the text to print, so tests read the same output.

use std::fmt::Write;

use std::path::PathBuf;

use anyhow::bail;
use clap::Subcommand;

use super::DEFAULT_PIPELINE;
use crate::config::Pipeline;
use crate::instance::operator;
use crate::model::bundle::foreign::{Import, import};
use crate::model::serving::registry::{Change, Registry, RegistryError, State};
use crate::model::{Bundle, ModelKind};
use crate::train;

/// Every model, its champion and challenger, and how many versions it has.
pub fn list(registry: &Registry) -> Result<String, RegistryError> {
    let mut out = String::new();
    let names = registry.names()?;
    if names.is_empty() {
        writeln!(out, "no models in {}", registry.dir().display()).ok();
    }
    for name in names {
        let state = registry.state(&name)?;
        writeln!(
            out,
            "{name}: champion {}, challenger {}, {} versions",
            state.champion.as_deref().unwrap_or("none"),
            state.challenger.as_deref().unwrap_or("none"),
            registry.versions(&name)?.len()
        )
        .ok();
    }
    Ok(out)
}

/// One model: its state, its versions with their metrics, and what each
/// running instance reported of champion against challenger.
pub fn show(registry: &Registry, name: &str) -> Result<String, RegistryError> {
    let state = registry.state(name)?;
    let mut out = String::new();
    writeln!(out, "model {name}").ok();
    writeln!(
        out,
        "  champion:   {}",
        state.champion.as_deref().unwrap_or("none")
    )
    .ok();
    writeln!(
        out,
        "  challenger: {}",
        state.challenger.as_deref().unwrap_or("none")
    )
    .ok();
    if !state.earlier.is_empty() {
        writeln!(out, "  earlier champions (rollback order): {}", {
            let mut e = state.earlier.clone();
            e.reverse();
            e.join(", ")
        })
        .ok();
    }
    writeln!(out, "versions:").ok();
    for version in registry.versions(name)? {
        let role = if state.champion.as_ref() == Some(&version) {
            " [champion]"
        } else if state.challenger.as_ref() == Some(&version) {
            " [challenger]"
        } else {
            ""
        };
        match Bundle::load(&registry.version_dir(name, &version)) {
            Ok(b) => {
                let metrics: Vec<String> = b
                    .manifest
                    .metrics
                    .iter()
                    .map(|(k, v)| format!("{k} {v:.4}"))
                    .collect();
                writeln!(
                    out,
                    "  {version}{role}: {}, {} features, threshold {}{}",
                    b.manifest.kind.as_str(),
                    b.manifest.features.len(),
                    b.manifest.threshold,
                    if metrics.is_empty() {
                        String::new()
                    } else {
                        format!(", {}", metrics.join(", "))
                    }
                )
                .ok();
            }
            Err(e) => {
                writeln!(
                    out,
                    "  {version}{role}: DOES NOT LOAD ({}): {e}",
                    e.reason()
                )
                .ok();
            }
        }
    }
    let live = registry.live_reports(name);
    if live.is_empty() {
        writeln!(out, "live: no engine has reported").ok();
    }
    for report in live {
        write!(
            out,
            "live at {} from {}: champion {}, challenger {}",
            report.at,
            report.instance,
            report.champion,
            report.challenger.as_deref().unwrap_or("none")
        )
        .ok();
        match report.comparison {
            Some(c) => writeln!(
                out,
                "\n  last {} events: flag rate champion {:.4}, challenger {:.4}; decisions \
                 differ on {:.4}; rank correlation {}",
                c.events,
                c.champion_flag_rate,
                c.challenger_flag_rate,
                c.disagreement_rate,
                c.rank_correlation
                    .map_or("n/a".into(), |r| format!("{r:.4}"))
            ),
            None => writeln!(out, "; no comparison yet"),
        }
        .ok();
    }
    Ok(out)
}

/// Applies a change, after checking that every version the new state names
/// loads (manifest, checksums, check row). Whether it fits a pipeline's SQL
/// only the engine can tell: it refuses a version that does not, and keeps
/// serving the old one.
pub fn change(
    registry: &Registry,
    name: &str,
    change: &Change,
    by: &str,
) -> Result<String, RegistryError> {
    let (state, ()) = registry.change(name, change, by, |next| verify(registry, name, next))?;
    Ok(format!(
        "{name}: champion {}, challenger {}\n",
        state.champion.as_deref().unwrap_or("none"),
        state.challenger.as_deref().unwrap_or("none")
    ))
}

fn verify(registry: &Registry, name: &str, state: &State) -> Result<(), RegistryError> {
    for version in state.champion.iter().chain(&state.challenger) {
        Bundle::load(&registry.version_dir(name, version))?;
    }
    Ok(())
}

/// The history, one line per change.
pub fn history(registry: &Registry, name: &str) -> Result<String, RegistryError> {
    let mut out = String::new();
    for e in registry.history(name)? {
        write!(
            out,
            "{} {} {}",
            e.at,
            e.event,
            e.version.as_deref().unwrap_or("-")
        )
        .ok();
        if let Some(role) = &e.role {
            write!(out, " as {role}").ok();
        }
        if !e.first_offsets.is_empty() {
            let offsets: Vec<String> = e
                .first_offsets
                .iter()
                .map(|(p, o)| format!("{p}@{o}"))
                .collect();
            write!(
                out,
                " from {} {}",
                e.topic.as_deref().unwrap_or("?"),
                offsets.join(" ")
            )
            .ok();
        }
        if let Some(state) = &e.state {
            write!(
                out,
                " -> champion {}, challenger {}",
                state.champion.as_deref().unwrap_or("none"),
                state.challenger.as_deref().unwrap_or("none")
            )
            .ok();
        }
        if let Some(reason) = &e.reason {
            write!(out, ": {reason}").ok();
        }
        writeln!(out, " (by {})", e.by).ok();
    }
    Ok(out)
}

#[derive(Subcommand)]
pub enum ModelsCommand {
    /// Every model with its champion and challenger.
    List {
        #[arg(long, env = "STREAMSCORE_REGISTRY")]
        registry: PathBuf,
    },
    /// A model's versions, state and the engines' live comparison.
    Show {
        #[arg(long, env = "STREAMSCORE_REGISTRY")]
        registry: PathBuf,
        name: String,
    },
    /// Make VERSION (or, without one, the challenger) the champion; with
    /// --challenger, make VERSION the challenger.
    Promote {
        #[arg(long, env = "STREAMSCORE_REGISTRY")]
        registry: PathBuf,
        name: String,
        version: Option<String>,
        #[arg(long, requires = "version")]
        challenger: bool,
    },
    /// Return to the previous champion; with --challenger, drop the challenger.
    Rollback {
        #[arg(long, env = "STREAMSCORE_REGISTRY")]
        registry: PathBuf,
        name: String,
        #[arg(long)]
        challenger: bool,
    },
    /// Every change, and where each version began to score.
    History {
        #[arg(long, env = "STREAMSCORE_REGISTRY")]
        registry: PathBuf,
        name: String,
    },
    /// Pruned and quantised variants of a tree or forest bundle, each
    /// measured on a validation file.
    Optimize(super::train::OptimizeArgs),
    /// Wrap a model trained elsewhere into a bundle.
    Import {
        /// xgboost (JSON from save_model), lightgbm (text from save_model) or
        /// onnx (one float input of rows x features, probabilities out).
        #[arg(long)]
        kind: String,
        #[arg(long)]
        file: PathBuf,
        /// The SQL output columns, in the order of the model's features.
        #[arg(long, value_delimiter = ',', required = true)]
        features: Vec<String>,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "1")]
        model_version: String,
        #[arg(long, default_value_t = 0.5)]
        threshold: f64,
        /// Where to write the bundle directory...
        #[arg(long, required_unless_present = "register")]
        out: Option<PathBuf>,
        /// ...and/or the registry to add it to.
        #[arg(long, env = "STREAMSCORE_REGISTRY")]
        register: Option<PathBuf>,
        /// History (.csv or NDJSON) to take the reference distributions of
        /// the features and the score from, through --pipeline's decode and
        /// SQL; drift monitoring compares against them.
        #[arg(long)]
        reference: Option<PathBuf>,
        #[arg(long, default_value = DEFAULT_PIPELINE)]
        pipeline: PathBuf,
    },
}

/// Runs one `models` subcommand and returns what to print.
pub async fn run(command: ModelsCommand) -> anyhow::Result<String> {
    let by = format!("cli:{}", operator());
    Ok(match command {
        ModelsCommand::List { registry } => list(&Registry::open(&registry))?,
        ModelsCommand::Show { registry, name } => show(&Registry::open(&registry), &name)?,
        ModelsCommand::Promote {
            registry,
            name,
            version,
            challenger,
        } => {
            let requested = match (version, challenger) {
                (Some(version), true) => Change::SetChallenger(version),
                (version, _) => Change::Promote(version),
            };
            change(&Registry::open(&registry), &name, &requested, &by)?
        }
        ModelsCommand::Rollback {
            registry,
            name,
            challenger,
        } => {
            let requested = if challenger {
                Change::ClearChallenger
            } else {
                Change::Rollback
            };
            change(&Registry::open(&registry), &name, &requested, &by)?
        }
        ModelsCommand::History { registry, name } => history(&Registry::open(&registry), &name)?,
        ModelsCommand::Optimize(args) => super::train::optimize(&args).await?,
        ModelsCommand::Import {
            kind,
            file,
            features,
            name,
            model_version,
            threshold,
            out,
            register,
            reference,
            pipeline,
        } => {
            let kind = match kind.as_str() {
                "xgboost" => ModelKind::Xgboost,
                "lightgbm" => ModelKind::Lightgbm,
                "onnx" => ModelKind::Onnx,
                other => bail!("--kind is xgboost, lightgbm or onnx, not `{other}`"),
            };
            let mut bundle = import(&Import {
                kind,
                file: &file,
                features: &features,
                name: &name,
                version: &model_version,
                threshold,
            })?;
            if let Some(history) = reference {
                let pipeline = Pipeline::load(&pipeline, None)?;
                let set = train::prepare(&pipeline, &history).await?;
                train::reference::attach_reference(&mut bundle, &set)?;
            }
            let mut written = Vec::new();
            if let Some(out) = out {
                bundle.save(&out)?;
                written.push(out);
            }
            if let Some(registry) = register {
                written.push(
                    Registry::open(&registry)
                        .register(&bundle, &format!("import:{}", operator()))?,
                );
            }
            format!(
                "wrote {} ({} {}, {}, {} features)\n",
                written
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" and "),
                bundle.name(),
                bundle.version(),
                bundle.manifest.kind.as_str(),
                bundle.manifest.features.len()
            )
        }
    })
}

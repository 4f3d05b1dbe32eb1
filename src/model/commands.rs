//! `streamscore models ...`: the registry seen from a command line. Each
//! function returns the text to print, so tests read the same output.

use std::fmt::Write;

use std::path::Path;

use super::registry::{Change, Registry, RegistryError, State};
use super::{Bundle, BundleError, BundleParts, FeatureSpec, Model, ModelKind, Preprocessing};

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

/// What `models import` wraps into a bundle.
pub struct Import<'a> {
    pub kind: ModelKind,
    pub file: &'a Path,
    /// The SQL output columns, in the order of the model's features.
    pub features: &'a [String],
    pub name: &'a str,
    pub version: &'a str,
    pub threshold: f64,
}

/// Reads another library's model and makes a bundle of it: the file itself
/// is the payload. The check row is all zeros (no training row is at hand).
pub fn import(request: &Import) -> Result<Bundle, BundleError> {
    let shown = request.file.display().to_string();
    let bytes = std::fs::read(request.file).map_err(|source| BundleError::Read {
        path: shown.clone(),
        source,
    })?;
    let model = Model::import(request.kind, bytes, request.features.len()).map_err(|message| {
        BundleError::Payload {
            path: shown.clone(),
            file: shown.clone(),
            message,
        }
    })?;
    let mut provenance = std::collections::BTreeMap::new();
    provenance.insert("imported_from".into(), shown);
    provenance.insert("at".into(), chrono::Utc::now().to_rfc3339());
    Bundle::assemble(BundleParts {
        name: request.name.to_owned(),
        version: request.version.to_owned(),
        features: request
            .features
            .iter()
            .map(|name| FeatureSpec {
                name: name.clone(),
                data_type: "Float64".into(),
            })
            .collect(),
        preprocessing: Preprocessing::None,
        threshold: request.threshold,
        provenance,
        metrics: std::collections::BTreeMap::new(),
        model,
        check_features: vec![0.0; request.features.len()],
    })
}

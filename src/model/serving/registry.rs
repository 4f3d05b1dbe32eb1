//! The model registry: a directory of bundles by name and version, and per
//! name a state file (which version is the champion, which the challenger)
//! and a history file (every change: who, when, what; and per partition
//! the first offset each version scored).
//!
//! ```text
//! <registry>/<name>/<version>/manifest.json, model.json, ...
//! <registry>/<name>/state.json     replaced atomically (write, then rename)
//! <registry>/<name>/history.jsonl  one JSON object per line, appended
//! <registry>/<name>/.lock          held while the state changes
//! <registry>/<name>/.live/         what each running instance serves
//! ```
//!
//! Every change happens under an exclusive lock on `.lock`, so a command
//! line and an engine's admin route never interleave a read-modify-write.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::bundle::manifest::{MANIFEST_FILE, is_path_safe};
use crate::model::{Bundle, BundleError};

const STATE_FILE: &str = "state.json";
const HISTORY_FILE: &str = "history.jsonl";
const LOCK_FILE: &str = ".lock";
/// Dot-named, so it can never be taken for a version.
const LIVE_DIR: &str = ".live";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("registry {path}: {message}")]
    Corrupt { path: String, message: String },
    #[error("registry has no model `{name}` (looked in {path})")]
    NoModel { name: String, path: String },
    #[error("model `{name}` has no version `{version}` in the registry")]
    NoVersion { name: String, version: String },
    #[error("model `{name}` already has a version `{version}`; versions are never overwritten")]
    VersionExists { name: String, version: String },
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Bundle(#[from] BundleError),
}

/// Which versions serve. `earlier` holds the champions before the current
/// one, the latest last: a rollback returns to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub champion: Option<String>,
    pub challenger: Option<String>,
    #[serde(default)]
    pub earlier: Vec<String>,
}

/// A change to the state, as asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `version`, or the challenger when `None`, becomes the champion.
    Promote(Option<String>),
    /// `version` is scored beside the champion.
    SetChallenger(String),
    /// The champion before the current one returns.
    Rollback,
    /// No challenger any more.
    ClearChallenger,
}

impl Change {
    fn label(&self) -> &'static str {
        match self {
            Change::Promote(_) => "promote",
            Change::SetChallenger(_) => "set_challenger",
            Change::Rollback => "rollback",
            Change::ClearChallenger => "clear_challenger",
        }
    }
}

/// One line of `history.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// RFC 3339, UTC, milliseconds.
    pub at: String,
    /// Who or what: `cli:user@host`, `http:<peer>@<instance>`, `train:user@host`,
    /// `engine:<host>:<pid>`.
    pub by: String,
    /// register, promote, set_challenger, rollback, clear_challenger,
    /// first_scored, refused.
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The state after a change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<State>,
    /// first_scored: the role the version scored in, and the input topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// first_scored: per input partition, the first offset this version
    /// scored after it was installed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub first_offsets: BTreeMap<i32, i64>,
    /// refused: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl HistoryEntry {
    pub fn new(by: &str, event: &str) -> Self {
        Self {
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            by: by.to_owned(),
            event: event.to_owned(),
            version: None,
            state: None,
            role: None,
            topic: None,
            first_offsets: BTreeMap::new(),
            reason: None,
        }
    }
}

/// What one engine instance serves, and its live comparison; written every
/// few seconds to `<name>/.live/<instance>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LiveReport {
    pub at: String,
    pub instance: String,
    pub champion: String,
    pub challenger: Option<String>,
    pub comparison: Option<super::comparison::ComparisonSummary>,
}

#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
}

impl Registry {
    pub fn open(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn model_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn version_dir(&self, name: &str, version: &str) -> PathBuf {
        self.dir.join(name).join(version)
    }

    pub fn state_path(&self, name: &str) -> PathBuf {
        self.model_dir(name).join(STATE_FILE)
    }

    /// The model names, sorted.
    pub fn names(&self) -> Result<Vec<String>, RegistryError> {
        let mut names: Vec<String> = self
            .entries(&self.dir)?
            .into_iter()
            .filter(|n| self.dir.join(n).join(STATE_FILE).exists() || self.has_versions(n))
            .collect();
        names.sort();
        Ok(names)
    }

    /// A model's versions, in the order they were registered.
    pub fn versions(&self, name: &str) -> Result<Vec<String>, RegistryError> {
        let dir = self.model_dir(name);
        if !dir.is_dir() {
            return Err(RegistryError::NoModel {
                name: name.to_owned(),
                path: self.dir.display().to_string(),
            });
        }
        let registered: Vec<String> = self
            .history(name)?
            .into_iter()
            .filter(|e| e.event == "register")
            .filter_map(|e| e.version)
            .collect();
        let mut on_disk: Vec<String> = self
            .entries(&dir)?
            .into_iter()
            .filter(|v| dir.join(v).join(MANIFEST_FILE).is_file())
            .collect();
        on_disk.sort_by_key(|v| {
            (
                registered.iter().position(|r| r == v).unwrap_or(usize::MAX),
                v.clone(),
            )
        });
        Ok(on_disk)
    }

    pub fn state(&self, name: &str) -> Result<State, RegistryError> {
        let path = self.state_path(name);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| RegistryError::Corrupt {
                path: path.display().to_string(),
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if self.model_dir(name).is_dir() {
                    Ok(State::default())
                } else {
                    Err(RegistryError::NoModel {
                        name: name.to_owned(),
                        path: self.dir.display().to_string(),
                    })
                }
            }
            Err(source) => Err(io(&path, source)),
        }
    }

    pub fn history(&self, name: &str) -> Result<Vec<HistoryEntry>, RegistryError> {
        let path = self.model_dir(name).join(HISTORY_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(io(&path, source)),
        };
        text.lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(i, line)| {
                serde_json::from_str(line).map_err(|e| RegistryError::Corrupt {
                    path: format!("{} line {}", path.display(), i + 1),
                    message: e.to_string(),
                })
            })
            .collect()
    }

    /// Adds a version. It is written beside its final place and renamed in,
    /// so an engine never sees half a bundle. The first version of a name
    /// becomes its champion.
    pub fn register(&self, bundle: &Bundle, by: &str) -> Result<PathBuf, RegistryError> {
        let (name, version) = (bundle.name(), bundle.version());
        let dir = self.model_dir(name);
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let _lock = self.lock(name)?;
        let target = self.version_dir(name, version);
        if target.exists() {
            return Err(RegistryError::VersionExists {
                name: name.to_owned(),
                version: version.to_owned(),
            });
        }
        let staging = dir.join(format!(".staging-{version}-{}", std::process::id()));
        bundle.save(&staging)?;
        std::fs::rename(&staging, &target).map_err(|e| io(&target, e))?;
        let mut entry = HistoryEntry::new(by, "register");
        entry.version = Some(version.to_owned());
        let mut state = self.state(name)?;
        if state.champion.is_none() {
            state.champion = Some(version.to_owned());
            self.write_state(name, &state)?;
            entry.state = Some(state);
        }
        self.append(name, &entry)?;
        Ok(target)
    }

    /// Applies `change` under the lock. `accept` sees the new state before
    /// it is written (to load and check its bundles); its refusal leaves
    /// the state as it was. Returns the new state and `accept`'s answer.
    pub fn change<T>(
        &self,
        name: &str,
        change: &Change,
        by: &str,
        accept: impl FnOnce(&State) -> Result<T, RegistryError>,
    ) -> Result<(State, T), RegistryError> {
        let _lock = self.lock(name)?;
        let current = self.state(name)?;
        let next = self.plan(name, &current, change)?;
        let accepted = accept(&next)?;
        self.write_state(name, &next)?;
        let mut entry = HistoryEntry::new(by, change.label());
        entry.version = match change {
            Change::Promote(_) => next.champion.clone(),
            Change::SetChallenger(v) => Some(v.clone()),
            Change::Rollback => next.champion.clone(),
            Change::ClearChallenger => current.challenger.clone(),
        };
        entry.state = Some(next.clone());
        self.append(name, &entry)?;
        Ok((next, accepted))
    }

    /// Appends one entry (the engine's first_scored and refused entries).
    pub fn record(&self, name: &str, entry: &HistoryEntry) -> Result<(), RegistryError> {
        let _lock = self.lock(name)?;
        self.append(name, entry)
    }

    /// The state `change` leads to, or why it cannot be made.
    fn plan(&self, name: &str, current: &State, change: &Change) -> Result<State, RegistryError> {
        let mut next = current.clone();
        match change {
            Change::Promote(version) => {
                let version = match version.as_ref().or(current.challenger.as_ref()) {
                    Some(v) => v.clone(),
                    None => {
                        return Err(RegistryError::Refused(format!(
                            "model `{name}` has no challenger to promote; name a version"
                        )));
                    }
                };
                self.require_version(name, &version)?;
                if current.champion.as_ref() == Some(&version) {
                    return Err(RegistryError::Refused(format!(
                        "version `{version}` of `{name}` is already the champion"
                    )));
                }
                if let Some(old) = current.champion.clone() {
                    next.earlier.push(old);
                }
                if next.challenger.as_ref() == Some(&version) {
                    next.challenger = None;
                }
                next.champion = Some(version);
            }
            Change::SetChallenger(version) => {
                self.require_version(name, version)?;
                if current.champion.as_ref() == Some(version) {
                    return Err(RegistryError::Refused(format!(
                        "version `{version}` of `{name}` is the champion; a challenger must \
                         be another version"
                    )));
                }
                next.challenger = Some(version.clone());
            }
            Change::Rollback => {
                let Some(previous) = next.earlier.pop() else {
                    return Err(RegistryError::Refused(format!(
                        "model `{name}` has no earlier champion to roll back to"
                    )));
                };
                if next.challenger.as_ref() == Some(&previous) {
                    next.challenger = None;
                }
                next.champion = Some(previous);
            }
            Change::ClearChallenger => {
                if next.challenger.take().is_none() {
                    return Err(RegistryError::Refused(format!(
                        "model `{name}` has no challenger"
                    )));
                }
            }
        }
        Ok(next)
    }

    pub fn write_live(&self, name: &str, report: &LiveReport) -> Result<(), RegistryError> {
        let dir = self.model_dir(name).join(LIVE_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let file: String = report
            .instance
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = dir.join(format!("{file}.json"));
        let staging = dir.join(format!(".{file}.tmp"));
        let bytes = serde_json::to_vec_pretty(report).expect("a live report serialises");
        std::fs::write(&staging, bytes).map_err(|e| io(&staging, e))?;
        std::fs::rename(&staging, &path).map_err(|e| io(&path, e))
    }

    /// The live reports of the instances, newest first.
    pub fn live_reports(&self, name: &str) -> Vec<LiveReport> {
        let dir = self.model_dir(name).join(LIVE_DIR);
        let mut reports: Vec<LiveReport> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
            .collect();
        reports.sort_by(|a, b| b.at.cmp(&a.at));
        reports
    }

    fn require_version(&self, name: &str, version: &str) -> Result<(), RegistryError> {
        if is_path_safe(version)
            && self
                .version_dir(name, version)
                .join(MANIFEST_FILE)
                .is_file()
        {
            Ok(())
        } else {
            Err(RegistryError::NoVersion {
                name: name.to_owned(),
                version: version.to_owned(),
            })
        }
    }

    fn write_state(&self, name: &str, state: &State) -> Result<(), RegistryError> {
        let path = self.state_path(name);
        let staging = path.with_extension("json.tmp");
        let mut bytes = serde_json::to_vec_pretty(state).expect("a state serialises");
        bytes.push(b'\n');
        let mut file = File::create(&staging).map_err(|e| io(&staging, e))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| io(&staging, e))?;
        std::fs::rename(&staging, &path).map_err(|e| io(&path, e))
    }

    fn append(&self, name: &str, entry: &HistoryEntry) -> Result<(), RegistryError> {
        let path = self.model_dir(name).join(HISTORY_FILE);
        let mut line = serde_json::to_vec(entry).expect("a history entry serialises");
        line.push(b'\n');
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(&line))
            .map_err(|e| io(&path, e))
    }

    /// Held until dropped.
    fn lock(&self, name: &str) -> Result<File, RegistryError> {
        let path = self.model_dir(name).join(LOCK_FILE);
        if !self.model_dir(name).is_dir() {
            return Err(RegistryError::NoModel {
                name: name.to_owned(),
                path: self.dir.display().to_string(),
            });
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        file.lock().map_err(|e| io(&path, e))?;
        Ok(file)
    }

    fn has_versions(&self, name: &str) -> bool {
        self.versions(name).is_ok_and(|v| !v.is_empty())
    }

    fn entries(&self, dir: &Path) -> Result<Vec<String>, RegistryError> {
        let read = std::fs::read_dir(dir).map_err(|e| io(dir, e))?;
        Ok(read
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| is_path_safe(n))
            .collect())
    }
}

fn io(path: &Path, source: std::io::Error) -> RegistryError {
    RegistryError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::bundle::tests::bundle;

    fn version(v: &str) -> Bundle {
        let mut b = bundle();
        b.manifest.version = v.into();
        b
    }

    #[test]
    fn versions_promote_and_roll_back_with_history() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path());
        for v in ["1", "2", "3"] {
            registry.register(&version(v), "test").unwrap();
        }
        assert_eq!(registry.versions("test").unwrap(), ["1", "2", "3"]);
        assert_eq!(
            registry.state("test").unwrap().champion.as_deref(),
            Some("1")
        );
        let ok = |_: &State| Ok(());
        registry
            .change("test", &Change::SetChallenger("2".into()), "t", ok)
            .unwrap();
        let (state, ()) = registry
            .change("test", &Change::Promote(None), "t", ok)
            .unwrap();
        assert_eq!(state.champion.as_deref(), Some("2"));
        assert_eq!(state.challenger, None);
        registry
            .change("test", &Change::Promote(Some("3".into())), "t", ok)
            .unwrap();
        let (state, ()) = registry.change("test", &Change::Rollback, "t", ok).unwrap();
        assert_eq!(state.champion.as_deref(), Some("2"));
        let (state, ()) = registry.change("test", &Change::Rollback, "t", ok).unwrap();
        assert_eq!(state.champion.as_deref(), Some("1"));
        let err = registry
            .change("test", &Change::Rollback, "t", ok)
            .unwrap_err();
        assert!(err.to_string().contains("no earlier champion"), "{err}");
        let events: Vec<String> = registry
            .history("test")
            .unwrap()
            .into_iter()
            .map(|e| e.event)
            .collect();
        assert_eq!(
            events,
            [
                "register",
                "register",
                "register",
                "set_challenger",
                "promote",
                "promote",
                "rollback",
                "rollback"
            ]
        );
    }

    #[test]
    fn a_refused_check_leaves_the_state_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path());
        registry.register(&version("1"), "test").unwrap();
        registry.register(&version("2"), "test").unwrap();
        let before = registry.state("test").unwrap();
        let err = registry
            .change("test", &Change::Promote(Some("2".into())), "t", |_| {
                Err::<(), _>(RegistryError::Refused("no".into()))
            })
            .unwrap_err();
        assert_eq!(err.to_string(), "no");
        assert_eq!(registry.state("test").unwrap(), before);
        let err = registry
            .change("test", &Change::Promote(Some("9".into())), "t", |_| Ok(()))
            .unwrap_err();
        assert!(matches!(err, RegistryError::NoVersion { .. }), "{err}");
        let err = registry.register(&version("2"), "test").unwrap_err();
        assert!(matches!(err, RegistryError::VersionExists { .. }), "{err}");
    }
}

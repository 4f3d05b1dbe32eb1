//! Keeps a running engine's models in step with a registry: a change to the
//! state file (seen by a file watch, debounced, or by a poll when the watch
//! is unavailable or misses one) loads the named versions, checks them and
//! swaps them in; the admin routes change the registry and swap at once.
//! It also writes to the history where each lineup began to score.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::Watcher;
use tokio_util::sync::CancellationToken;

use super::registry::{Change, HistoryEntry, LiveReport, Registry, RegistryError, State};
use super::slot::refused;
use crate::model::{Bundle, Lineup, ModelSlot, SharedBundle};

/// File events within this time are taken as one change.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// How often first-scored offsets are written to the history.
const HISTORY_FLUSH: Duration = Duration::from_millis(500);
/// How often the live comparison is written for `models show`.
const LIVE_REPORT: Duration = Duration::from_secs(5);

pub struct Follower {
    registry: Registry,
    name: String,
    slot: Arc<ModelSlot>,
    /// `engine:<host>:<pid>`, for the history.
    by: String,
    /// One swap at a time: a watch event and an admin route may race.
    swapping: Mutex<()>,
    /// The last state refused, so that a poll does not refuse it again.
    refused_state: Mutex<Option<State>>,
}

/// The champion and challenger bundles a state names, verified, from disk.
/// For the engine's start, before a slot exists.
pub fn load_state(
    registry: &Registry,
    name: &str,
) -> Result<(Bundle, Option<Bundle>), RegistryError> {
    let state = registry.state(name)?;
    let Some(champion) = &state.champion else {
        return Err(RegistryError::Refused(format!(
            "model `{name}` has no champion in the registry at {}; register or promote a \
             version first",
            registry.dir().display()
        )));
    };
    let champion = Bundle::load(&registry.version_dir(name, champion))?;
    // A challenger that does not load is logged and left out: it must not
    // keep the champion from serving.
    let challenger = state.challenger.as_ref().and_then(|version| {
        Bundle::load(&registry.version_dir(name, version))
            .map_err(refused)
            .ok()
    });
    Ok((champion, challenger))
}

impl Follower {
    pub fn new(registry: Registry, name: &str, slot: Arc<ModelSlot>) -> Self {
        Self {
            registry,
            name: name.to_owned(),
            slot,
            by: format!("engine:{}", crate::instance::instance_id()),
            swapping: Mutex::new(()),
            refused_state: Mutex::new(None),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn slot(&self) -> &Arc<ModelSlot> {
        &self.slot
    }

    /// Changes the registry and swaps at once (the admin routes). The new
    /// versions are loaded and checked before the state file is written: a
    /// refused version changes nothing.
    pub fn apply(&self, change: &Change, by: &str) -> Result<State, RegistryError> {
        let _one_swap = lock(&self.swapping);
        let (state, (champion, challenger)) =
            self.registry.change(&self.name, change, by, |next| {
                self.prepare(next, &self.slot.current())
            })?;
        self.slot.install(champion, challenger);
        Ok(state)
    }

    /// Reads the state file and swaps if it names other versions than
    /// those serving. Returns whether it swapped.
    pub fn reconcile(&self) -> Result<bool, RegistryError> {
        let _one_swap = lock(&self.swapping);
        let state = self.registry.state(&self.name)?;
        let lineup = self.slot.current();
        let mut refused_state = lock(&self.refused_state);
        if serves(&state, &lineup) {
            *refused_state = None;
            return Ok(false);
        }
        if refused_state.as_ref() == Some(&state) {
            return Ok(false);
        }
        match self.prepare(&state, &lineup) {
            Ok((champion, challenger)) => {
                *refused_state = None;
                self.slot.install(champion, challenger);
                Ok(true)
            }
            Err(error) => {
                *refused_state = Some(state.clone());
                let mut entry = HistoryEntry::new(&self.by, "refused");
                entry.state = Some(state);
                entry.reason = Some(error.to_string());
                self.registry.record(&self.name, &entry)?;
                Err(error)
            }
        }
    }

    /// Loads what `state` names, reusing bundles already in `lineup` (so a
    /// challenger promoted to champion swaps with no load at all).
    fn prepare(
        &self,
        state: &State,
        lineup: &Lineup,
    ) -> Result<(SharedBundle, Option<SharedBundle>), RegistryError> {
        let load = |version: &str| -> Result<SharedBundle, RegistryError> {
            let loaded = std::iter::once(&lineup.champion)
                .chain(&lineup.challenger)
                .find(|b| b.version() == version);
            if let Some(bundle) = loaded {
                return Ok(Arc::clone(bundle));
            }
            let bundle =
                Bundle::load(&self.registry.version_dir(&self.name, version)).map_err(refused)?;
            Ok(self.slot.admit(bundle)?)
        };
        let champion = state.champion.as_deref().ok_or_else(|| {
            RegistryError::Refused(format!("model `{}` has no champion", self.name))
        })?;
        let champion = load(champion)?;
        let challenger = state.challenger.as_deref().map(load).transpose()?;
        Ok((champion, challenger))
    }

    /// Writes the offsets where lineups began to score.
    pub fn flush_history(&self) {
        for first in self.slot.take_first_offsets() {
            let roles = std::iter::once(("champion", &first.lineup.champion))
                .chain(first.lineup.challenger.as_ref().map(|c| ("challenger", c)));
            for (role, bundle) in roles {
                let mut entry = HistoryEntry::new(&self.by, "first_scored");
                entry.version = Some(bundle.version().to_owned());
                entry.role = Some(role.to_owned());
                entry.topic = Some(first.topic.clone());
                entry.first_offsets = first.offsets.clone();
                if let Err(e) = self.registry.record(&self.name, &entry) {
                    tracing::warn!(error = %e, "cannot write to the model history");
                }
            }
        }
    }

    /// Writes what this instance serves, with the live champion-challenger
    /// comparison, to `<name>/.live/<instance>.json` for `models show`.
    fn write_live_report(&self) {
        let lineup = self.slot.current();
        let report = LiveReport {
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            instance: self.by.clone(),
            champion: lineup.champion.version().to_owned(),
            challenger: lineup.challenger.as_ref().map(|c| c.version().to_owned()),
            comparison: self.slot.comparison(),
        };
        if let Err(e) = self.registry.write_live(&self.name, &report) {
            tracing::warn!(error = %e, "cannot write the live model report");
        }
    }

    /// Follows the registry until `stop`: on file events (debounced) and
    /// every `poll`. Writes the history's pending entries on the way and
    /// once more at the end.
    pub async fn run(self: Arc<Self>, poll: Duration, stop: CancellationToken) {
        let (events, mut changed) = tokio::sync::mpsc::unbounded_channel::<()>();
        let _watcher = watch_state_file(&self.registry.model_dir(&self.name), events);
        let mut polls = tokio::time::interval(poll);
        let mut flushes = tokio::time::interval(HISTORY_FLUSH);
        let mut reports = tokio::time::interval(LIVE_REPORT);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = reports.tick() => {
                    self.blocking(|f| f.write_live_report()).await;
                    continue;
                }
                _ = flushes.tick() => {
                    self.blocking(|f| f.flush_history()).await;
                    continue;
                }
                Some(()) = changed.recv() => {
                    tokio::time::sleep(DEBOUNCE).await;
                    while changed.try_recv().is_ok() {}
                }
                _ = polls.tick() => {}
            }
            self.blocking(|f| {
                // A refusal is logged and counted where it happens.
                let _ = f.reconcile();
            })
            .await;
        }
        self.blocking(|f| f.flush_history()).await;
    }

    /// File reads and bundle loads run off the async workers.
    async fn blocking(self: &Arc<Self>, work: impl FnOnce(&Follower) + Send + 'static) {
        let this = Arc::clone(self);
        if let Err(e) = tokio::task::spawn_blocking(move || work(&this)).await {
            tracing::error!(error = %e, "the registry follower's work panicked");
        }
    }
}

/// Whether the lineup serves exactly what the state names.
fn serves(state: &State, lineup: &Lineup) -> bool {
    state.champion.as_deref() == Some(lineup.champion.version())
        && state.challenger.as_deref() == lineup.challenger.as_ref().map(|c| c.version())
}

/// Watches a model's directory for its state file being replaced. `None`
/// (with a warning) when the platform cannot watch: the poll still works.
fn watch_state_file(
    dir: &Path,
    changed: tokio::sync::mpsc::UnboundedSender<()>,
) -> Option<notify::RecommendedWatcher> {
    let handler = move |event: notify::Result<notify::Event>| {
        let touches_state = event.is_ok_and(|e| {
            e.paths
                .iter()
                .any(|p| p.file_name().is_some_and(|f| f == "state.json"))
        });
        if touches_state {
            let _ = changed.send(());
        }
    };
    let watched = notify::recommended_watcher(handler).and_then(|mut w| {
        w.watch(dir, notify::RecursiveMode::NonRecursive)?;
        Ok(w)
    });
    match watched {
        Ok(watcher) => Some(watcher),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e,
                "cannot watch the model registry; polling it instead");
            None
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::model::bundle::tests::bundle;
    use crate::model::serving::registry::Change;

    fn version(v: &str) -> Bundle {
        let mut b = bundle();
        b.manifest.version = v.into();
        b
    }

    /// The poll is an hour away: only the file watch can bring the swap.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_state_file_change_is_seen_by_the_watch_and_swapped_in() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path());
        registry.register(&version("1"), "test").unwrap();
        registry.register(&version("2"), "test").unwrap();
        let sql_output = Arc::new(Schema::new(
            ["a", "b", "c"]
                .map(|n| Field::new(n, DataType::Float64, true))
                .to_vec(),
        ));
        let (champion, challenger) = load_state(&registry, "test").unwrap();
        let slot = Arc::new(ModelSlot::new(champion, challenger, sql_output, None).unwrap());
        let follower = Arc::new(Follower::new(registry.clone(), "test", Arc::clone(&slot)));
        let stop = CancellationToken::new();
        let running =
            tokio::spawn(Arc::clone(&follower).run(Duration::from_secs(3600), stop.clone()));
        // Let the first (immediate) poll pass before the change.
        tokio::time::sleep(Duration::from_millis(300)).await;
        registry
            .change("test", &Change::Promote(Some("2".into())), "t", |_| Ok(()))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while slot.current().champion.version() != "2" {
            assert!(
                Instant::now() < deadline,
                "the watch did not bring the swap"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
        running.await.unwrap();
    }
}

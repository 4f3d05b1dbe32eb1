//! How drift state lies in the `drift` family:
//! - `w` window start, model version, input partition, column: the
//!   column's [`ColumnCounts`] in that window from that partition. A
//!   partition's counts can thus follow it to another instance; readers
//!   merge partitions by window.
//! - `a` window start, model version, column, metric: an alert raised.
//! - `h` model version, column, metric: the hysteresis state.
//! - `m` model version: the monitor's progress ([`Progress`]).
//! - `r` model version: the version's references, so that the report reads
//!   the store alone, even after the bundle is gone.
//! - `p` model version, input partition: the partition's Page-Hinkley test
//!   on the scores (`change.rs`).
//! - `c` event time, model version, input partition: an alarm of that
//!   test, which belongs to its partition (the judge's alerts, `a`, are
//!   the topic's).
//! - `z` model version, input partition: the newest event time counted
//!   from that partition, with state that follows its partitions (the
//!   judge of the whole topic reads every partition's).
//!
//! Window starts are big-endian, so a scan reads windows in time order.

use std::collections::{BTreeMap, BTreeSet};

use std::sync::atomic::{AtomicI64, Ordering};

use serde::{Deserialize, Serialize};

use super::alerts::Alert;
use super::window::ColumnCounts;
use crate::state::{Expiry, Family, StateError, Store};

const COUNTS: u8 = b'w';
const ALERT: u8 = b'a';
const HYSTERESIS: u8 = b'h';
const PROGRESS: u8 = b'm';
const REFERENCES: u8 = b'r';
const CHANGE: u8 = b'p';
const CHANGE_ALERT: u8 = b'c';
/// After the counts (`w`), so that a changelog carries a commit's counts
/// of a partition before its progress.
const WATERMARK: u8 = b'z';

/// Where the monitor of one model version has got to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Start of the first window not yet judged.
    pub next_window: Option<i64>,
    /// Per input partition, the newest event time seen. A window's counts
    /// are merged over these partitions when it is judged.
    pub watermarks: BTreeMap<i32, i64>,
}

impl Progress {
    pub fn saw(&mut self, partition: i32, time: i64) {
        let newest = self.watermarks.entry(partition).or_insert(time);
        *newest = (*newest).max(time);
    }

    /// The newest event time of any partition.
    pub fn newest(&self) -> Option<i64> {
        self.watermarks.values().copied().max()
    }

    /// How far event time has got everywhere: the oldest of the newest
    /// times of the partitions held (`assigned`, when known), leaving out
    /// those more than `idle_ms` behind the newest (idle ones), so that they
    /// do not hold every window back, unless they are `busy` (still
    /// reading: behind, not idle; `None`, not known yet: none is idle). A held partition not seen yet counts as being at
    /// `first_seen`, the first event time this process saw.
    pub fn complete_until(
        &self,
        idle_ms: i64,
        assigned: Option<&BTreeSet<i32>>,
        busy: Option<&BTreeSet<i32>>,
        first_seen: i64,
    ) -> Option<i64> {
        let newest = self.newest()?;
        let seen = self
            .watermarks
            .iter()
            .filter(|(p, _)| assigned.is_none_or(|a| a.contains(p)))
            .map(|(&p, &w)| (p, w));
        let unseen = assigned
            .into_iter()
            .flatten()
            .filter(|p| !self.watermarks.contains_key(p))
            .map(|&p| (p, first_seen));
        seen.chain(unseen)
            .filter(|(p, w)| busy.is_none_or(|b| b.contains(p)) || newest - w <= idle_ms)
            .map(|(_, w)| w)
            .min()
    }

    pub fn partitions(&self) -> Vec<i32> {
        self.watermarks.keys().copied().collect()
    }
}

fn push_text(key: &mut Vec<u8>, text: &str) {
    // Length-prefixed, so that no text can run into the next part.
    key.extend_from_slice(&(text.len() as u16).to_be_bytes());
    key.extend_from_slice(text.as_bytes());
}

fn read_text<'k>(key: &'k [u8], at: &mut usize) -> Option<&'k str> {
    let len = u16::from_be_bytes(key.get(*at..*at + 2)?.try_into().ok()?) as usize;
    let text = std::str::from_utf8(key.get(*at + 2..*at + 2 + len)?).ok()?;
    *at += 2 + len;
    Some(text)
}

fn read_i64(key: &[u8], at: usize) -> Option<i64> {
    Some(i64::from_be_bytes(key.get(at..at + 8)?.try_into().ok()?))
}

pub fn counts_key(window: i64, version: &str, partition: i32, column: &str) -> Vec<u8> {
    let mut key = vec![COUNTS];
    key.extend_from_slice(&window.to_be_bytes());
    push_text(&mut key, version);
    key.extend_from_slice(&partition.to_be_bytes());
    push_text(&mut key, column);
    key
}

pub fn alert_key(window: i64, version: &str, column: &str, metric: &str) -> Vec<u8> {
    let mut key = vec![ALERT];
    key.extend_from_slice(&window.to_be_bytes());
    push_text(&mut key, version);
    push_text(&mut key, column);
    push_text(&mut key, metric);
    key
}

pub fn hysteresis_prefix(version: &str) -> Vec<u8> {
    let mut key = vec![HYSTERESIS];
    push_text(&mut key, version);
    key
}

pub fn hysteresis_key(version: &str, column: &str, metric: &str) -> Vec<u8> {
    let mut key = hysteresis_prefix(version);
    push_text(&mut key, column);
    push_text(&mut key, metric);
    key
}

/// The column and metric of a hysteresis key under `prefix`.
pub fn parse_hysteresis_key(key: &[u8], prefix: &[u8]) -> Option<(String, String)> {
    let mut at = prefix.len();
    let column = read_text(key, &mut at)?.to_owned();
    let metric = read_text(key, &mut at)?.to_owned();
    Some((column, metric))
}

pub fn progress_key(version: &str) -> Vec<u8> {
    let mut key = vec![PROGRESS];
    push_text(&mut key, version);
    key
}

pub fn watermark_key(version: &str, partition: i32) -> Vec<u8> {
    let mut key = vec![WATERMARK];
    push_text(&mut key, version);
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

pub fn change_key(version: &str, partition: i32) -> Vec<u8> {
    let mut key = vec![CHANGE];
    push_text(&mut key, version);
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

pub fn change_alert_key(at: i64, version: &str, partition: i32) -> Vec<u8> {
    let mut key = vec![CHANGE_ALERT];
    key.extend_from_slice(&at.to_be_bytes());
    push_text(&mut key, version);
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

pub fn references_key(version: &str) -> Vec<u8> {
    let mut key = vec![REFERENCES];
    push_text(&mut key, version);
    key
}

/// Decodes the stored JSON value of `key`; one that does not read is
/// quarantined (`state::quarantined`) and read as absent.
pub fn decode<T: for<'de> Deserialize<'de>>(key: &[u8], bytes: &[u8]) -> Option<T> {
    serde_json::from_slice(bytes)
        .inspect_err(|e| {
            crate::state::quarantined(Family::Drift, partition_of(key), &e.to_string());
        })
        .ok()
}

/// The input partition of a counts, watermark or change key; `None` for the topic-wide keys
/// (judgements, hysteresis, progress, references).
pub fn partition_of(key: &[u8]) -> Option<i32> {
    if matches!(key.first(), Some(&WATERMARK | &CHANGE | &CHANGE_ALERT)) {
        // An alarm's key starts with its time.
        let mut at = if key.first() == Some(&CHANGE_ALERT) {
            9
        } else {
            1
        };
        read_text(key, &mut at)?;
        return Some(i32::from_be_bytes(key.get(at..at + 4)?.try_into().ok()?));
    }
    parse_counts_key(key).map(|(_, _, partition, _)| partition)
}

/// The window start, model version, partition and column of a counts key.
fn parse_counts_key(key: &[u8]) -> Option<(i64, String, i32, String)> {
    if key.first() != Some(&COUNTS) {
        return None;
    }
    let start = read_i64(key, 1)?;
    let mut at = 9;
    let version = read_text(key, &mut at)?.to_owned();
    let partition = i32::from_be_bytes(key.get(at..at + 4)?.try_into().ok()?);
    at += 4;
    let column = read_text(key, &mut at)?.to_owned();
    Some((start, version, partition, column))
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("drift state serialises")
}

/// Drops windows (and their alerts) a retention behind the newest event
/// time seen, at compaction.
#[derive(Debug)]
pub struct DriftExpiry {
    retention_ms: i64,
    newest: AtomicI64,
}

impl DriftExpiry {
    pub fn new(retention_ms: i64) -> Self {
        Self {
            retention_ms,
            newest: AtomicI64::new(i64::MIN),
        }
    }

    pub fn advance(&self, time: i64) {
        self.newest.fetch_max(time, Ordering::Relaxed);
    }
}

impl Expiry for DriftExpiry {
    fn expired(&self, key: &[u8], _value: &[u8]) -> bool {
        let newest = self.newest.load(Ordering::Relaxed);
        matches!(key.first(), Some(&COUNTS | &ALERT | &CHANGE_ALERT))
            && newest != i64::MIN
            && read_i64(key, 1).is_some_and(|start| start < newest - self.retention_ms)
    }
}

/// One judged or judgeable window, read back: per model version, per
/// column, the counts of every partition merged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredWindow {
    pub columns: BTreeMap<String, ColumnCounts>,
    pub partitions: BTreeSet<i32>,
}

/// What a store holds between two window starts.
#[derive(Debug, Default)]
pub struct Stored {
    /// Counts merged over partitions, by (window start, model version).
    pub windows: BTreeMap<(i64, String), StoredWindow>,
    /// The alerts raised, in window order.
    pub alerts: Vec<Alert>,
    /// Each model version's references.
    pub references: BTreeMap<String, super::reference::References>,
}

impl Stored {
    /// Adds another instance's store: windows merge by (start, version).
    pub fn merge(&mut self, other: Stored) {
        for (at, window) in other.windows {
            let mine = self.windows.entry(at).or_default();
            mine.partitions.extend(window.partitions);
            for (column, counts) in window.columns {
                match mine.columns.get_mut(&column) {
                    Some(merged) => merged.merge(&counts),
                    None => {
                        mine.columns.insert(column, counts);
                    }
                }
            }
        }
        self.alerts.extend(other.alerts);
        self.references.extend(other.references);
    }
}

/// Everything stored between `from` and `to` (window starts, ms): counts
/// merged by (window, version), the alerts raised, the references.
pub fn read_all(
    store: &dyn Store,
    from: Option<i64>,
    to: Option<i64>,
) -> Result<Stored, StateError> {
    let within = |start: i64| from.is_none_or(|f| start >= f) && to.is_none_or(|t| start < t);
    let mut windows: BTreeMap<(i64, String), StoredWindow> = BTreeMap::new();
    for (key, value) in store.scan_prefix(Family::Drift, &[COUNTS])? {
        let Some((start, version, partition, column)) = parse_counts_key(&key) else {
            crate::state::quarantined(Family::Drift, None, "an unreadable window key");
            continue;
        };
        if !within(start) {
            continue;
        }
        let Some(counts) = decode::<ColumnCounts>(&key, &value) else {
            continue;
        };
        let window = windows.entry((start, version)).or_default();
        window.partitions.insert(partition);
        match window.columns.get_mut(&column) {
            Some(merged) => merged.merge(&counts),
            None => {
                window.columns.insert(column, counts);
            }
        }
    }
    let mut alerts = Vec::new();
    for kind in [ALERT, CHANGE_ALERT] {
        for (key, value) in store.scan_prefix(Family::Drift, &[kind])? {
            if read_i64(&key, 1).is_some_and(within) {
                alerts.extend(decode::<Alert>(&key, &value));
            }
        }
    }
    // RFC 3339 times of one format sort as text.
    alerts.sort_by(|a, b| a.window_start.cmp(&b.window_start));
    let mut references = BTreeMap::new();
    for (key, value) in store.scan_prefix(Family::Drift, &[REFERENCES])? {
        let mut at = 1;
        let stored = decode::<super::reference::References>(&key, &value).filter(|r| {
            let usable = r.check();
            if let Err(reason) = &usable {
                crate::state::quarantined(Family::Drift, None, reason);
            }
            usable.is_ok()
        });
        if let (Some(version), Some(stored)) = (read_text(&key, &mut at), stored) {
            references.insert(version.to_owned(), stored);
        }
    }
    Ok(Stored {
        windows,
        alerts,
        references,
    })
}

#[cfg(test)]
mod tests {

    /// A backlog served one partition first: the partition left behind is
    /// days of event time back, but has records to read, so windows wait
    /// for it; once read to its end, it is idle and left out.
    #[test]
    fn a_backlogged_partition_is_behind_not_idle() {
        let mut progress = Progress::default();
        progress.saw(0, 10 * 86_400_000);
        progress.saw(1, 86_400_000);
        let held = BTreeSet::from([0, 1]);
        let idle = 6 * 3_600_000;
        let until =
            |busy: Option<&BTreeSet<i32>>| progress.complete_until(idle, Some(&held), busy, 0);
        assert_eq!(until(Some(&BTreeSet::from([1]))), Some(86_400_000));
        assert_eq!(until(Some(&BTreeSet::new())), Some(10 * 86_400_000));
        // Before the consumer has said, every partition may be behind.
        assert_eq!(until(None), Some(86_400_000));
    }

    use super::*;

    #[test]
    fn keys_read_back_and_sort_by_window() {
        let a = counts_key(1_000, "v1", 3, "amount");
        let b = counts_key(2_000, "v1", 0, "amount");
        assert!(a < b, "earlier windows sort first");
        let prefix = hysteresis_prefix("v1");
        let h = hysteresis_key("v1", "amount", "psi");
        assert_eq!(
            parse_hysteresis_key(&h, &prefix),
            Some(("amount".into(), "psi".into()))
        );
        let expiry = DriftExpiry::new(500);
        assert!(
            !expiry.expired(&a, b""),
            "nothing expires before time is known"
        );
        expiry.advance(1_600);
        assert!(expiry.expired(&a, b""));
        assert!(!expiry.expired(&b, b""));
        assert!(!expiry.expired(&h, b""), "hysteresis state does not expire");
    }
}

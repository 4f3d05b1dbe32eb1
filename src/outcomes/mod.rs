//! Labels meet scores. Each champion score is kept by event id for a while
//! (`labels.score_retention`); a label that finds its score becomes an
//! outcome of its transaction's day; a day's outcomes give its AUC, average
//! precision and card precision@100, as the bank confirms them. The gauges
//! show the newest day a label arrived for; `streamscore labels report`
//! prints every day kept.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::TimestampMillisecondType;
use arrow::record_batch::RecordBatch;

use crate::fraud_metrics::{auc_roc, average_precision, card_precision_at_k};
use crate::state::{Change, Checkpoint, Expiry, Family, StateError, Store};

const DAY_MS: i64 = 86_400_000;
/// Outcomes are kept this many days (by the transaction's day).
pub const OUTCOME_DAYS: i64 = 90;

/// Where a score waits for its label: the (scoped) partition and event id.
pub fn score_key(partition: i32, event_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(4 + event_id.len());
    key.extend_from_slice(&partition.to_be_bytes());
    key.extend_from_slice(event_id.as_bytes());
    key
}

/// The input partition of a kept score's or an outcome's key (an outcome
/// is keyed by its day, then its score's key).
pub fn partition_of_key(family: Family, key: &[u8]) -> Option<i32> {
    let at = match family {
        Family::Outcomes => 8,
        _ => 0,
    };
    Some(i32::from_be_bytes(key.get(at..at + 4)?.try_into().ok()?))
}

/// A kept score: the probability and when it was kept (wall clock, ms).
pub fn score_value(score: f64, kept_at_ms: i64) -> Vec<u8> {
    let mut value = Vec::with_capacity(16);
    value.extend_from_slice(&score.to_le_bytes());
    value.extend_from_slice(&kept_at_ms.to_le_bytes());
    value
}

fn read_score(value: &[u8]) -> Option<(f64, i64)> {
    Some((
        f64::from_le_bytes(value.get(..8)?.try_into().ok()?),
        i64::from_le_bytes(value.get(8..16)?.try_into().ok()?),
    ))
}

/// Days sort as unsigned big-endian numbers with the sign bit flipped.
fn day_prefix(day: i64) -> [u8; 8] {
    ((day as u64) ^ (1 << 63)).to_be_bytes()
}

fn day_of_key(key: &[u8]) -> Option<i64> {
    let bits = u64::from_be_bytes(key.get(..8)?.try_into().ok()?);
    Some((bits ^ (1 << 63)) as i64)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// What the store drops at compaction (by the wall clock): kept scores
/// older than `score_retention_ms`, outcomes of days older than
/// [`OUTCOME_DAYS`].
pub fn expiries(score_retention_ms: i64) -> [(Family, Arc<dyn Expiry>); 2] {
    [
        (Family::Scores, Arc::new(ScoreExpiry(score_retention_ms))),
        (Family::Outcomes, Arc::new(OutcomeExpiry)),
    ]
}

#[derive(Debug)]
struct ScoreExpiry(i64);

impl Expiry for ScoreExpiry {
    fn expired(&self, _key: &[u8], value: &[u8]) -> bool {
        read_score(value).is_some_and(|(_, kept)| kept < now_ms() - self.0)
    }
}

#[derive(Debug)]
struct OutcomeExpiry;

impl Expiry for OutcomeExpiry {
    fn expired(&self, key: &[u8], _value: &[u8]) -> bool {
        day_of_key(key).is_some_and(|day| day < now_ms().div_euclid(DAY_MS) - OUTCOME_DAYS)
    }
}

/// The changes that keep a batch's scores: (partition, event id, score).
pub fn keep_scores<'a>(scores: impl Iterator<Item = (i32, &'a str, f64)>) -> Vec<Change> {
    let now = now_ms();
    scores
        .map(|(partition, event_id, score)| Change {
            family: Family::Scores,
            key: score_key(partition, event_id),
            value: Some(score_value(score, now)),
        })
        .collect()
}

/// What a batch of labels found.
#[derive(Debug, Default)]
pub struct Joined {
    pub changes: Vec<Change>,
    /// The transaction days that gained outcomes.
    pub days: BTreeSet<i64>,
    pub matched: u64,
    /// Labels whose score is not kept (never scored here, or expired).
    pub unmatched: u64,
}

/// Joins decoded labels (event id, event time, `is_fraud`, and the card if
/// the labels carry one) to the scores kept under the same partition.
pub fn join(
    labels: &RecordBatch,
    partitions: &[i32],
    event_time: &str,
    state: &Checkpoint,
) -> Result<Joined, StateError> {
    let column = |name: &str| labels.column_by_name(name);
    let (Some(ids), Some(times), Some(fraud)) = (
        column("event_id").and_then(|c| c.as_string_opt::<i32>()),
        column(event_time).and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>()),
        column("is_fraud").and_then(|c| c.as_boolean_opt()),
    ) else {
        return Ok(Joined::default());
    };
    let cards = column("card_id").and_then(|c| c.as_string_opt::<i32>());
    let keys: Vec<Vec<u8>> = (0..labels.num_rows())
        .map(|row| score_key(partitions[row], ids.value(row)))
        .collect();
    let key_refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let kept = state.get_many(Family::Scores, &key_refs)?;
    let mut joined = Joined::default();
    for (row, kept) in kept.into_iter().enumerate() {
        let score = kept.as_deref().and_then(read_score);
        let (Some((score, _)), true, true) = (score, times.is_valid(row), fraud.is_valid(row))
        else {
            joined.unmatched += 1;
            continue;
        };
        joined.matched += 1;
        let day = times.value(row).div_euclid(DAY_MS);
        joined.days.insert(day);
        let mut key = day_prefix(day).to_vec();
        key.extend_from_slice(&keys[row]);
        let mut value = score.to_le_bytes().to_vec();
        value.push(u8::from(fraud.value(row)));
        if let Some(cards) = cards.filter(|c| c.is_valid(row)) {
            value.extend_from_slice(cards.value(row).as_bytes());
        }
        joined.changes.push(Change {
            family: Family::Outcomes,
            key,
            value: Some(value),
        });
    }
    Ok(joined)
}

/// A confirmed outcome: the score kept, whether it was fraud, the card.
pub type Outcome = (f64, bool, String);

/// Confirmed outcomes and how the scores ranked them: one transaction day's,
/// or a drift window's days'.
#[derive(Debug, Clone, PartialEq)]
pub struct DayMetrics {
    /// Days since the epoch (UTC): the first day covered.
    pub day: i64,
    pub labelled: usize,
    pub frauds: usize,
    pub auc: Option<f64>,
    pub average_precision: Option<f64>,
    pub card_precision_at_100: Option<f64>,
}

impl DayMetrics {
    pub fn of(day: i64, outcomes: &[Outcome]) -> Self {
        let scores: Vec<f64> = outcomes.iter().map(|o| o.0).collect();
        let labels: Vec<bool> = outcomes.iter().map(|o| o.1).collect();
        let cards: Vec<String> = outcomes.iter().map(|o| o.2.clone()).collect();
        let times = vec![day * DAY_MS; outcomes.len()];
        Self {
            day,
            labelled: outcomes.len(),
            frauds: labels.iter().filter(|&&f| f).count(),
            auc: auc_roc(&scores, &labels),
            average_precision: average_precision(&scores, &labels),
            card_precision_at_100: card_precision_at_k(&scores, &labels, &cards, &times, 100),
        }
    }
}

fn read_outcome(value: &[u8]) -> Option<Outcome> {
    Some((
        f64::from_le_bytes(value.get(..8)?.try_into().ok()?),
        *value.get(8)? == 1,
        String::from_utf8_lossy(value.get(9..)?).into_owned(),
    ))
}

/// The metrics of one day, from what the store holds.
pub fn day_metrics(store: &dyn Store, day: i64) -> Result<DayMetrics, StateError> {
    let outcomes: Vec<_> = store
        .scan_prefix(Family::Outcomes, &day_prefix(day))?
        .iter()
        .filter_map(|(_, v)| read_outcome(v))
        .collect();
    Ok(DayMetrics::of(day, &outcomes))
}

/// Every outcome the stores hold, by transaction day. An outcome held by
/// several stores (a standby's copy) is counted once.
pub fn by_day(stores: &[&dyn Store]) -> Result<BTreeMap<i64, Vec<Outcome>>, StateError> {
    let mut by_key: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for store in stores {
        by_key.extend(store.scan(Family::Outcomes)?);
    }
    let mut by_day: BTreeMap<i64, Vec<Outcome>> = BTreeMap::new();
    for (key, value) in by_key {
        if let (Some(day), Some(outcome)) = (day_of_key(&key), read_outcome(&value)) {
            by_day.entry(day).or_default().push(outcome);
        }
    }
    Ok(by_day)
}

/// The metrics of every day the stores hold outcomes for, oldest first.
pub fn all_days(stores: &[&dyn Store]) -> Result<Vec<DayMetrics>, StateError> {
    Ok(by_day(stores)?
        .into_iter()
        .map(|(day, outcomes)| DayMetrics::of(day, &outcomes))
        .collect())
}

/// The metrics of the days from `first_day` (inclusive) to `end_day`
/// (exclusive); `None` when none of them has an outcome.
pub fn between(
    by_day: &BTreeMap<i64, Vec<Outcome>>,
    first_day: i64,
    end_day: i64,
) -> Option<DayMetrics> {
    let outcomes: Vec<Outcome> = by_day
        .range(first_day..end_day)
        .flat_map(|(_, o)| o.iter().cloned())
        .collect();
    (!outcomes.is_empty()).then(|| DayMetrics::of(first_day, &outcomes))
}

/// A day's estimated AUC and average precision, from the drift monitor's
/// estimated performance (`drift/performance.rs`), shown beside what the
/// labels realised.
pub type Estimated = BTreeMap<i64, (f64, f64)>;

/// The report's table; with `estimated`, its AUC and average precision
/// beside the realised ones.
pub fn render(days: &[DayMetrics], estimated: &Estimated) -> String {
    let with_estimates = !estimated.is_empty();
    let mut out =
        String::from("| day | labelled | frauds | AUC | average precision | card precision@100 |");
    out.push_str(match with_estimates {
        true => " estimated AUC | estimated AP |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
        false => "\n|---|---:|---:|---:|---:|---:|\n",
    });
    let shown = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.4}"));
    for d in days {
        let date = chrono::DateTime::from_timestamp_millis(d.day * DAY_MS)
            .map_or(d.day.to_string(), |t| t.format("%Y-%m-%d").to_string());
        let _ = write!(
            out,
            "| {date} | {} | {} | {} | {} | {} |",
            d.labelled,
            d.frauds,
            shown(d.auc),
            shown(d.average_precision),
            shown(d.card_precision_at_100)
        );
        if with_estimates {
            let e = estimated.get(&d.day);
            let _ = write!(
                out,
                " {} | {} |",
                shown(e.map(|e| e.0)),
                shown(e.map(|e| e.1))
            );
        }
        out.push('\n');
    }
    if days.is_empty() {
        out.push_str("(no labelled scores yet)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use arrow::array::{BooleanArray, StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    use super::*;
    use crate::state::MemoryStore;

    #[test]
    fn labels_find_their_scores_and_make_day_metrics() -> Result<(), StateError> {
        let store = Arc::new(MemoryStore::default());
        let checkpoint = Checkpoint::new(store.clone())?;
        let kept =
            keep_scores([(0, "a", 0.9), (0, "b", 0.2), (0, "c", 0.7), (1, "d", 0.1)].into_iter());
        checkpoint.commit(checkpoint.stage("t", &BTreeMap::new(), kept))?;
        let labels = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("event_id", DataType::Utf8, false),
                Field::new("card_id", DataType::Utf8, true),
                Field::new(
                    "event_time",
                    DataType::Timestamp(TimeUnit::Millisecond, None),
                    false,
                ),
                Field::new("is_fraud", DataType::Boolean, false),
            ])),
            vec![
                Arc::new(StringArray::from(vec!["a", "b", "c", "d", "zz"])),
                Arc::new(StringArray::from(vec!["k1", "k2", "k3", "k4", "k5"])),
                Arc::new(TimestampMillisecondArray::from(vec![
                    10,
                    20,
                    30,
                    DAY_MS + 5,
                    40,
                ])),
                Arc::new(BooleanArray::from(vec![true, false, false, true, true])),
            ],
        )
        .expect("a batch");
        // `d` is kept under partition 1 but labelled on 0: no match.
        let joined = join(&labels, &[0, 0, 0, 0, 0], "event_time", &checkpoint)?;
        assert_eq!((joined.matched, joined.unmatched), (3, 2));
        assert_eq!(joined.days, BTreeSet::from([0]));
        checkpoint.commit(checkpoint.stage("l", &BTreeMap::new(), joined.changes))?;
        let day = day_metrics(store.as_ref(), 0)?;
        assert_eq!((day.labelled, day.frauds), (3, 1));
        assert_eq!(day.auc, Some(1.0));
        assert_eq!(day.average_precision, Some(1.0));
        // One fraudulent card among the top 100 (of 3), divided by 100.
        assert_eq!(day.card_precision_at_100, Some(0.01));
        let stores: [&dyn Store; 2] = [store.as_ref(), store.as_ref()];
        assert_eq!(all_days(&stores)?, vec![day.clone()]);
        assert!(
            render(&all_days(&stores)?, &Estimated::new())
                .contains("| 1970-01-01 | 3 | 1 | 1.0000 |")
        );
        let estimated = Estimated::from([(0, (0.9, 0.8))]);
        assert!(
            render(&[day], &estimated).contains("| 1.0000 | 1.0000 | 0.0100 | 0.9000 | 0.8000 |")
        );
        Ok(())
    }

    #[test]
    fn retention_drops_old_scores_and_old_days() {
        let [(_, scores), (_, outcomes)] = expiries(1_000);
        let now = now_ms();
        assert!(scores.expired(&score_key(0, "a"), &score_value(0.5, now - 10_000)));
        assert!(!scores.expired(&score_key(0, "a"), &score_value(0.5, now)));
        let old = day_prefix(now / DAY_MS - OUTCOME_DAYS - 1);
        let recent = day_prefix(now / DAY_MS);
        assert!(outcomes.expired(&old, &[0; 12]));
        assert!(!outcomes.expired(&recent, &[0; 12]));
    }
}

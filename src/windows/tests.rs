//! The window features' tests: against the in-memory store, batch by
//! batch as the stream computes them and against `history`.

use std::collections::BTreeMap;

use arrow::array::{AsArray, Float64Array, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{Field, Float64Type, TimeUnit};

use super::*;
use crate::state::{Family, MemoryStore};

const HOUR: i64 = 3_600_000;

fn feature(name: &str, column: Option<&str>, aggregate: Aggregate, hours: i64) -> WindowFeature {
    WindowFeature {
        name: name.into(),
        key: "card".into(),
        column: column.map(Into::into),
        aggregate,
        source: Source::Events,
        window_ms: hours * HOUR,
        tile_ms: HOUR,
        shift_ms: 0,
        include_current: true,
    }
}

fn windows() -> Windows {
    Windows::new(WindowSpec {
        event_time: "time".into(),
        scope: Scope::Partition,
        partition_key: None,
        features: vec![
            feature("count_24h", None, Aggregate::Count, 24),
            feature("mean_24h", Some("amount"), Aggregate::Mean, 24),
            feature("max_2h", Some("amount"), Aggregate::Max, 2),
            WindowFeature {
                include_current: false,
                ..feature("sum_before_24h", Some("amount"), Aggregate::Sum, 24)
            },
        ],
        labels: None,
    })
}

fn batch(rows: &[(&str, i64, f64)]) -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("card", DataType::Utf8, true),
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        ),
        Field::new("amount", DataType::Float64, true),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(TimestampMillisecondArray::from_iter_values(
                rows.iter().map(|r| r.1),
            )),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
    .expect("a valid batch")
}

fn column(output: &WindowOutput, f: usize) -> Vec<Option<f64>> {
    output.columns[f]
        .as_primitive::<Float64Type>()
        .iter()
        .collect()
}

#[test]
fn features_cover_their_window_of_tiles_and_survive_between_batches() -> Result<(), WindowError> {
    let windows = windows();
    // Count and mean share the card's amount series: one key per card.
    assert_eq!(windows.series.len(), 1);
    let checkpoint = Checkpoint::new(Arc::new(MemoryStore::default()))?;
    let first = batch(&[("a", 0, 10.0), ("b", HOUR, 1.0), ("a", 2 * HOUR, 30.0)]);
    let out = windows.compute(&first, &[0; 3], &[0, 1, 2], &[], &checkpoint)?;
    assert_eq!(column(&out, 0), [Some(1.0), Some(1.0), Some(2.0)]);
    assert_eq!(column(&out, 1), [Some(10.0), Some(1.0), Some(20.0)]);
    // Two tiles back from hour 2 is hour 1: the hour-0 event is out.
    assert_eq!(column(&out, 2), [Some(10.0), Some(1.0), Some(30.0)]);
    assert_eq!(column(&out, 3), [Some(0.0), Some(0.0), Some(10.0)]);
    let staged = checkpoint.stage("t", &BTreeMap::from([(0, 3)]), out.changes);
    checkpoint.commit(staged)?;

    // A day later the hour-0 event has left the 24-hour window; the
    // hour-2 one has not (hours 2..=25).
    let second = batch(&[("a", 25 * HOUR, 5.0)]);
    let out = windows.compute(&second, &[0], &[0], &[], &checkpoint)?;
    assert_eq!(column(&out, 0), [Some(2.0)]);
    assert_eq!(column(&out, 1), [Some(17.5)]);
    // Another partition's card `a` is another key.
    let out = windows.compute(&second, &[1], &[0], &[], &checkpoint)?;
    assert_eq!(column(&out, 0), [Some(1.0)]);
    Ok(())
}

/// A batch's keys are decoded when a row first uses them and encoded
/// after the last (`session::Slot`): batches of many rows, several of
/// a key, some staged and some written, folded in an order that is not
/// the rows', give each row the features, and leave the state, that
/// one row at a time does.
#[test]
fn a_batch_of_many_rows_a_key_computes_what_rows_one_at_a_time_do() -> Result<(), WindowError> {
    let windows = windows();
    let rows: Vec<(String, i64, f64)> = (0..120i64)
        .map(|i| (format!("card-{}", i * 7 % 5), i * HOUR / 3, (i % 11) as f64))
        .collect();
    let row_refs: Vec<(&str, i64, f64)> =
        rows.iter().map(|(c, t, a)| (c.as_str(), *t, *a)).collect();

    let one_at_a_time = Checkpoint::new(Arc::new(MemoryStore::default()))?;
    let mut expected = vec![Vec::new(); windows.planned.len()];
    for row in &row_refs {
        let out = windows.compute(&batch(&[*row]), &[0], &[0], &[], &one_at_a_time)?;
        for (f, values) in expected.iter_mut().enumerate() {
            values.extend(column(&out, f));
        }
        one_at_a_time.commit(one_at_a_time.stage("t", &BTreeMap::new(), out.changes))?;
    }

    let batched = Checkpoint::new(Arc::new(MemoryStore::default()))?;
    let mut unwritten = Vec::new();
    for (n, chunk) in row_refs.chunks(17).enumerate() {
        // Each chunk folded in time order; its rows given newest first.
        let reversed: Vec<_> = chunk.iter().rev().copied().collect();
        let order: Vec<usize> = (0..chunk.len()).rev().collect();
        let out = windows.compute(
            &batch(&reversed),
            &vec![0; chunk.len()],
            &order,
            &[],
            &batched,
        )?;
        let keys: Vec<&Vec<u8>> = out.changes.iter().map(|c| &c.key).collect();
        assert!(
            keys.windows(2).all(|k| k[0] < k[1]),
            "each key once, in order"
        );
        for (f, expected) in expected.iter().enumerate() {
            let mut got = column(&out, f);
            got.reverse();
            assert_eq!(
                got,
                expected[n * 17..n * 17 + chunk.len()],
                "feature {f}, chunk {n}"
            );
        }
        unwritten.push(batched.stage("t", &BTreeMap::new(), out.changes));
        // Every other chunk is written; the others are read staged.
        if n % 2 == 1 {
            batched.commit_all(std::mem::take(&mut unwritten))?;
        }
    }
    batched.commit_all(unwritten)?;
    assert_eq!(
        batched.store().scan(Family::Windows)?,
        one_at_a_time.store().scan(Family::Windows)?
    );
    Ok(())
}

/// A record read again below the checkpoint (a rewind) is scored from
/// the state as it is and not folded in a second time (at a342126 it
/// got no output at all).
#[test]
fn rows_already_folded_get_features_and_leave_the_state_alone() -> Result<(), WindowError> {
    let windows = windows();
    let checkpoint = Checkpoint::new(Arc::new(MemoryStore::default()))?;
    let rows = batch(&[("a", 0, 10.0), ("a", HOUR, 30.0)]);
    let out = windows.compute(&rows, &[0; 2], &[0, 1], &[], &checkpoint)?;
    checkpoint.commit(checkpoint.stage("t", &BTreeMap::from([(0, 2)]), out.changes))?;
    let again = windows.compute(&rows, &[0; 2], &[0, 1], &[true, true], &checkpoint)?;
    assert!(again.changes.is_empty(), "nothing folded again");
    // Each sees the state up to its own tile, itself included, and
    // counts itself once more as the current event.
    assert_eq!(column(&again, 0), [Some(2.0), Some(3.0)]);
    let next = windows.compute(
        &batch(&[("a", 2 * HOUR, 5.0)]),
        &[0],
        &[0],
        &[],
        &checkpoint,
    )?;
    assert_eq!(
        column(&next, 0),
        [Some(3.0)],
        "the two events counted once each"
    );
    Ok(())
}

#[test]
fn an_event_older_than_the_retained_history_is_late_and_not_folded() -> Result<(), WindowError> {
    let windows = windows();
    let checkpoint = Checkpoint::new(Arc::new(MemoryStore::default()))?;
    let rows = batch(&[
        ("a", 100 * HOUR, 10.0),
        ("a", 50 * HOUR, 99.0),
        ("a", 100 * HOUR, 20.0),
    ]);
    let out = windows.compute(&rows, &[0; 3], &[0, 1, 2], &[], &checkpoint)?;
    assert_eq!(out.late, 1);
    assert_eq!(
        column(&out, 0),
        [Some(1.0), Some(1.0), Some(2.0)],
        "the late event counts only itself"
    );
    assert_eq!(column(&out, 1)[2], Some(15.0), "and is not folded in");
    Ok(())
}

#[test]
fn the_compaction_filter_expires_keys_a_whole_retention_behind() -> Result<(), WindowError> {
    let windows = windows();
    let checkpoint = Checkpoint::new(Arc::new(MemoryStore::default()))?;
    let out = windows.compute(&batch(&[("old", 0, 1.0)]), &[0], &[0], &[], &checkpoint)?;
    let (key, value) = (
        &out.changes[0].key,
        out.changes[0].value.clone().unwrap_or_default(),
    );
    let expiry = windows.expiry();
    assert!(!expiry.expired(key, &value));
    windows.compute(
        &batch(&[("new", 24 * HOUR, 1.0)]),
        &[1],
        &[0],
        &[],
        &checkpoint,
    )?;
    assert!(
        !expiry.expired(key, &value),
        "another partition's time does not expire it"
    );
    windows.compute(
        &batch(&[("new", 24 * HOUR, 1.0)]),
        &[0],
        &[0],
        &[],
        &checkpoint,
    )?;
    assert!(expiry.expired(key, &value));
    Ok(())
}

const DAY: i64 = 24 * HOUR;

/// Terminal `t` on days 0..12, one event a day, frauds on days 1 and 2.
fn terminal_history() -> RecordBatch {
    terminal_days(&(0..12).map(|d| (d, d == 1 || d == 2)).collect::<Vec<_>>())
}

/// Terminal `t`, a row per (day, fraud).
fn terminal_days(days: &[(i64, bool)]) -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("terminal", DataType::Utf8, true),
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        ),
        Field::new("is_fraud", DataType::Boolean, true),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(StringArray::from_iter_values(days.iter().map(|_| "t"))),
            Arc::new(TimestampMillisecondArray::from_iter_values(
                days.iter().map(|(d, _)| d * DAY),
            )),
            Arc::new(arrow::array::BooleanArray::from_iter(
                days.iter().map(|(_, fraud)| Some(*fraud)),
            )),
        ],
    )
    .expect("a valid batch")
}

fn terminal_windows() -> Windows {
    let terminal =
        |name: &str, source, column: Option<&str>, aggregate, shift_days| WindowFeature {
            name: name.into(),
            key: "terminal".into(),
            column: column.map(Into::into),
            aggregate,
            source,
            window_ms: 7 * DAY,
            tile_ms: DAY,
            shift_ms: shift_days * DAY,
            include_current: true,
        };
    Windows::new(WindowSpec {
        event_time: "time".into(),
        scope: Scope::Partition,
        partition_key: None,
        features: vec![
            terminal(
                "frauds_shifted",
                Source::Labels,
                Some("is_fraud"),
                Aggregate::Sum,
                7,
            ),
            terminal("tx_shifted", Source::Events, None, Aggregate::Count, 7),
            WindowFeature {
                window_ms: 10 * DAY,
                ..terminal(
                    "frauds_unshifted",
                    Source::Labels,
                    Some("is_fraud"),
                    Aggregate::Sum,
                    0,
                )
            },
        ],
        labels: Some(LabelTiming {
            event_time: "time".into(),
            delay_ms: 7 * DAY,
        }),
    })
}

#[test]
fn label_features_see_labels_only_after_their_delay() -> Result<(), WindowError> {
    let windows = terminal_windows();
    let history = windows.history(&terminal_history())?;
    let values = |f: usize| -> Vec<f64> {
        history[f]
            .as_primitive::<Float64Type>()
            .iter()
            .map(|v| v.unwrap_or(f64::NAN))
            .collect()
    };
    // Day 9's shifted window ends before day 2 (9 - 7, which may hold
    // labels not yet arrived): days -5..=1, one fraud, two events.
    assert_eq!(values(0)[9], 1.0);
    assert_eq!(values(1)[9], 2.0);
    // Day 10's is -4..=2: both frauds; day 8's is -6..=0: none.
    assert_eq!(values(0)[10], 2.0);
    assert_eq!(values(0)[8], 0.0);
    // Unshifted (over 10 days), the day-1 fraud is visible only from
    // day 8, when its label has arrived.
    assert_eq!(
        &values(2)[..10],
        &[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 2.0]
    );
    Ok(())
}

/// The stream, one event at a time with each label folded in once its
/// delay has passed, computes what `history` computes.
#[test]
fn the_stream_with_delayed_labels_matches_history() -> Result<(), WindowError> {
    let windows = terminal_windows();
    let batch = terminal_history();
    let expected = windows.history(&batch)?;
    let checkpoint = Checkpoint::new(Arc::new(MemoryStore::default()))?;
    let mut labelled = 0;
    for day in 0..12 {
        while labelled < 12 && labelled as i64 * DAY + 7 * DAY <= day as i64 * DAY {
            let out = windows.fold_labels(&batch.slice(labelled, 1), &[0], &checkpoint)?;
            let staged = checkpoint.stage("labels", &BTreeMap::new(), out.changes);
            checkpoint.commit(staged)?;
            labelled += 1;
        }
        let out = windows.compute(&batch.slice(day, 1), &[0], &[0], &[], &checkpoint)?;
        for (f, column) in out.columns.iter().enumerate() {
            assert_eq!(
                column.as_primitive::<Float64Type>().value(0),
                expected[f].as_primitive::<Float64Type>().value(day),
                "feature {f} on day {day}"
            );
        }
        let staged = checkpoint.stage("events", &BTreeMap::new(), out.changes);
        checkpoint.commit(staged)?;
    }
    Ok(())
}

/// The terminal's events and labels spread over three partitions (day
/// d in partition d % 3), each folded under its own partition: with the
/// partition count known, every feature sums the three and equals the
/// history's, computed as one partition.
#[test]
fn a_key_spread_over_partitions_sums_them_as_history_does() -> Result<(), WindowError> {
    let windows = terminal_windows();
    windows.spread_over(3);
    let batch = terminal_history();
    let expected = terminal_windows().history(&batch)?;
    let checkpoint = Checkpoint::new(Arc::new(MemoryStore::default()))?;
    let mut labelled = 0;
    for day in 0..12usize {
        while labelled < 12 && labelled as i64 * DAY + 7 * DAY <= day as i64 * DAY {
            let partition = [labelled as i32 % 3];
            let out = windows.fold_labels(&batch.slice(labelled, 1), &partition, &checkpoint)?;
            checkpoint.commit(checkpoint.stage("labels", &BTreeMap::new(), out.changes))?;
            labelled += 1;
        }
        let partition = [day as i32 % 3];
        let out = windows.compute(&batch.slice(day, 1), &partition, &[0], &[], &checkpoint)?;
        for (f, column) in out.columns.iter().enumerate() {
            assert_eq!(
                column.as_primitive::<Float64Type>().value(0),
                expected[f].as_primitive::<Float64Type>().value(day),
                "feature {f} on day {day}"
            );
        }
        checkpoint.commit(checkpoint.stage("events", &BTreeMap::new(), out.changes))?;
    }
    Ok(())
}

/// The two topics' batches run concurrently: here an events batch and
/// a labels batch are both computed from the same staged state, the
/// labels batch staged first. The label must survive the events batch
/// written after it: events never write a label series, even when
/// their time has left its old tiles behind.
#[test]
fn a_label_folded_beside_an_events_batch_is_not_lost() -> Result<(), WindowError> {
    let windows = terminal_windows();
    let checkpoint = Checkpoint::new(Arc::new(MemoryStore::default()))?;
    let commit = |topic: &str, changes| {
        checkpoint.commit(checkpoint.stage(topic, &BTreeMap::new(), changes))
    };
    let out = windows.fold_labels(&terminal_days(&[(1, true)]), &[0], &checkpoint)?;
    commit("labels", out.changes)?;
    // Day 30's event is past the day-1 label's retention (15 day tiles:
    // the shifted feature reaches 7 + 7 days and one more).
    let events = windows.compute(&terminal_days(&[(30, false)]), &[0], &[0], &[], &checkpoint)?;
    let labels = windows.fold_labels(&terminal_days(&[(25, true)]), &[0], &checkpoint)?;
    let labels = checkpoint.stage("labels", &BTreeMap::new(), labels.changes);
    let events = checkpoint.stage("events", &BTreeMap::new(), events.changes);
    checkpoint.commit_all(vec![labels, events])?;
    let later = windows.compute(&terminal_days(&[(26, false)]), &[0], &[0], &[], &checkpoint)?;
    // frauds_unshifted: days 17..=26 hold the day-25 fraud.
    assert_eq!(column(&later, 2), vec![Some(1.0)]);
    Ok(())
}

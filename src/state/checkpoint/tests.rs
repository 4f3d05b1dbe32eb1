//! The checkpoint's tests: staging, commits in and out of order, the
//! merge of staged batches, revocations.

use super::super::{Changelog, MemoryStore, Position, change};
use super::*;

#[test]
fn later_batches_read_staged_values_and_commits_write_them_with_offsets() -> Result<(), StateError>
{
    let store = Arc::new(MemoryStore::default());
    let checkpoint = Checkpoint::new(store.clone())?;
    let first = checkpoint.stage(
        "tx",
        &BTreeMap::from([(0, 10)]),
        vec![change("a", Some("1"))],
    );
    let second = checkpoint.stage(
        "tx",
        &BTreeMap::from([(0, 20), (1, 5)]),
        vec![change("a", Some("2")), change("b", Some("x"))],
    );
    assert_eq!(checkpoint.get(Family::Windows, b"a")?, Some(b"2".to_vec()));
    assert_eq!(
        store.get(Family::Windows, b"a")?,
        None,
        "nothing written before commit"
    );
    assert_eq!(
        checkpoint.folded_until("tx"),
        BTreeMap::from([(0, 20), (1, 5)])
    );

    checkpoint.commit(first)?;
    assert_eq!(store.get(Family::Windows, b"a")?, Some(b"1".to_vec()));
    assert_eq!(
        checkpoint.get(Family::Windows, b"a")?,
        Some(b"2".to_vec()),
        "the second batch's value still shadows the first's"
    );
    checkpoint.commit(second)?;
    assert_eq!(checkpoint.pending_keys(), 0);
    assert_eq!(store.get(Family::Windows, b"a")?, Some(b"2".to_vec()));

    let reopened = Checkpoint::new(store)?;
    assert_eq!(
        reopened.folded_until("tx"),
        BTreeMap::from([(0, 20), (1, 5)])
    );
    assert!(reopened.folded_until("other").is_empty());
    Ok(())
}

#[test]
fn batches_committed_together_write_each_key_at_its_latest_value() -> Result<(), StateError> {
    let store = Arc::new(MemoryStore::default());
    let checkpoint = Checkpoint::new(store.clone())?;
    let first = checkpoint.stage(
        "tx",
        &BTreeMap::from([(0, 10)]),
        vec![change("a", Some("1")), change("b", Some("1"))],
    );
    let second = checkpoint.stage(
        "tx",
        &BTreeMap::from([(0, 20)]),
        vec![change("a", Some("2"))],
    );
    checkpoint.commit_all(vec![first, second])?;
    assert_eq!(store.get(Family::Windows, b"a")?, Some(b"2".to_vec()));
    assert_eq!(store.get(Family::Windows, b"b")?, Some(b"1".to_vec()));
    assert_eq!(checkpoint.pending_keys(), 0);
    assert_eq!(
        Checkpoint::new(store)?.folded_until("tx"),
        BTreeMap::from([(0, 20)])
    );
    Ok(())
}

/// The commit's merge against the plainest statement of it: per key,
/// the last change of the newest batch that changed it, in key order.
/// Batches of random keys over two families, some changed twice in a
/// batch, some deleted.
#[test]
fn the_merge_of_batches_keeps_each_keys_last_change_in_key_order() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let checkpoint = Checkpoint::new(Arc::new(MemoryStore::default())).expect("a checkpoint");
    for _ in 0..50 {
        let staged: Vec<Staged> = (0..rng.random_range(1..6))
            .map(|_| {
                let changes = (0..rng.random_range(0..30))
                    .map(|_| Change {
                        family: [Family::Windows, Family::Scores][rng.random_range(0..2)],
                        key: format!("k{}", rng.random_range(0..40)).into_bytes(),
                        value: rng
                            .random_bool(0.8)
                            .then(|| rng.random_range(0..1000).to_string().into_bytes()),
                    })
                    .collect();
                checkpoint.stage("tx", &BTreeMap::new(), changes)
            })
            .collect();
        let mut expected: BTreeMap<(Family, &[u8]), (u64, &Change)> = BTreeMap::new();
        for batch in &staged {
            for change in batch.changes.iter() {
                expected.insert((change.family, &change.key), (batch.seq, change));
            }
        }
        let expected: Vec<(u64, &Change)> = expected.into_values().collect();
        assert_eq!(latest_changes(&staged, &Written::default()), expected);
        checkpoint.commit_all(staged).expect("the commit");
    }
}

/// Stages a transactions batch (partition 0 folded to 10) and then a
/// labels batch (to 3), and commits the labels first, as the two topics'
/// own clocks can.
fn labels_written_before_transactions(
    transactions: Vec<Change>,
    labels: Vec<Change>,
) -> Result<(Arc<MemoryStore>, Checkpoint), StateError> {
    let store = Arc::new(MemoryStore::default());
    let checkpoint = Checkpoint::new(store.clone())?;
    let transactions = checkpoint.stage("tx", &BTreeMap::from([(0, 10)]), transactions);
    let labels = checkpoint.stage("labels", &BTreeMap::from([(0, 3)]), labels);
    checkpoint.commit(labels)?;
    checkpoint.commit(transactions)?;
    Ok((store, checkpoint))
}

/// A labels batch folded between a transactions batch's processing and
/// its checkpoint, and written first (the two topics commit on their
/// own clocks): at a342126 the transactions batch then wrote its older
/// value of the label series over it, and the label was lost.
#[test]
fn a_newer_batch_written_first_is_not_overwritten_by_an_older_one() -> Result<(), StateError> {
    let (store, checkpoint) = labels_written_before_transactions(
        vec![
            change("terminal-labels", Some("expired")),
            change("card", Some("1")),
        ],
        vec![change("terminal-labels", Some("expired+label"))],
    )?;
    assert_eq!(
        store.get(Family::Windows, b"terminal-labels")?,
        Some(b"expired+label".to_vec()),
        "the label survives"
    );
    assert_eq!(store.get(Family::Windows, b"card")?, Some(b"1".to_vec()));
    assert_eq!(
        checkpoint.get(Family::Windows, b"terminal-labels")?,
        Some(b"expired+label".to_vec()),
        "and is what later batches read"
    );
    let reopened = Checkpoint::new(store)?;
    assert_eq!(reopened.folded_until("tx"), BTreeMap::from([(0, 10)]));
    assert_eq!(reopened.folded_until("labels"), BTreeMap::from([(0, 3)]));
    // In order again, a later batch's value is written as usual.
    let next = checkpoint.stage(
        "tx",
        &BTreeMap::from([(0, 11)]),
        vec![change("terminal-labels", Some("next"))],
    );
    checkpoint.commit(next)?;
    assert_eq!(
        checkpoint
            .store()
            .get(Family::Windows, b"terminal-labels")?,
        Some(b"next".to_vec())
    );
    Ok(())
}

/// What a newer batch wrote first guards its own family's key only: the
/// same bytes in another family (a kept score's key beside a window key)
/// are the older batch's to write.
#[test]
fn a_key_written_first_by_a_newer_batch_guards_only_its_own_family() -> Result<(), StateError> {
    let kept_score = Change {
        family: Family::Scores,
        ..change("shared", Some("score"))
    };
    let (store, _) = labels_written_before_transactions(
        vec![kept_score],
        vec![change("shared", Some("label"))],
    )?;
    assert_eq!(
        store.get(Family::Scores, b"shared")?,
        Some(b"score".to_vec()),
        "the older batch's key in another family is written"
    );
    assert_eq!(
        store.get(Family::Windows, b"shared")?,
        Some(b"label".to_vec())
    );
    Ok(())
}

#[test]
fn an_uncommitted_batch_leaves_the_store_as_it_was() -> Result<(), StateError> {
    let store = Arc::new(MemoryStore::default());
    let checkpoint = Checkpoint::new(store.clone())?;
    let _lost = checkpoint.stage(
        "tx",
        &BTreeMap::from([(0, 10)]),
        vec![change("a", Some("1"))],
    );
    // A crash here: the store has neither the change nor the offset.
    let reopened = Checkpoint::new(store)?;
    assert!(reopened.folded_until("tx").is_empty());
    assert_eq!(reopened.get(Family::Windows, b"a")?, None);
    Ok(())
}

/// A changelog in memory: what was appended, per partition.
#[derive(Debug, Default)]
struct MemoryLog {
    records: Mutex<BTreeMap<i32, Vec<Change>>>,
}

impl Changelog for MemoryLog {
    fn topic(&self) -> &str {
        "log"
    }

    fn append(&self, changes: &[(i32, &Change)]) -> Result<BTreeMap<i32, i64>, StateError> {
        let mut records = self.records.lock().unwrap();
        let mut next = BTreeMap::new();
        for (partition, change) in changes {
            let log = records.entry(*partition).or_default();
            log.push((*change).clone());
            next.insert(*partition, log.len() as i64);
        }
        Ok(next)
    }
}

/// Keys are "<partition digit>...".
fn first_digit(_: Family, key: &[u8]) -> Option<i32> {
    key.first().map(|b| i32::from(b - b'0'))
}

#[test]
fn commits_go_to_the_changelog_first_and_a_revoked_partition_is_not_written()
-> Result<(), StateError> {
    let store = Arc::new(MemoryStore::default());
    let log = Arc::new(MemoryLog::default());
    let checkpoint = Checkpoint::new(store.clone())?.with_changelog(log.clone(), first_digit);
    checkpoint.hold(&[0, 1]);
    let batch = checkpoint.stage(
        "tx",
        &BTreeMap::from([(0, 5), (1, 7)]),
        vec![change("0a", Some("1")), change("1b", Some("1"))],
    );
    assert_eq!(checkpoint.commit(batch)?, Committed::default());
    let records = log.records.lock().unwrap().clone();
    assert_eq!(records[&0].len(), 2, "the key and partition 0's offset");
    assert_eq!(records[&1].len(), 2);
    assert_eq!(checkpoint.changelog_position(0)?, Some(2));
    assert_eq!(store.get(Family::Windows, b"0a")?, Some(b"1".to_vec()));

    // Partition 1 is revoked while a batch touching it is staged: its
    // changes and offset are not written, partition 0's are.
    let batch = checkpoint.stage(
        "tx",
        &BTreeMap::from([(0, 6), (1, 8)]),
        vec![change("0a", Some("2")), change("1b", Some("2"))],
    );
    checkpoint.revoke(&[1]);
    let committed = checkpoint.commit(batch)?;
    assert_eq!(committed.revoked, std::collections::BTreeSet::from([1]));
    assert_eq!(store.get(Family::Windows, b"0a")?, Some(b"2".to_vec()));
    assert_eq!(store.get(Family::Windows, b"1b")?, Some(b"1".to_vec()));
    assert_eq!(checkpoint.folded_until("tx"), BTreeMap::from([(0, 6)]));

    // Another instance wrote partition 1 meanwhile; restored, it is
    // held again with that instance's value and offset.
    checkpoint.hold(&[1]);
    checkpoint.apply_restored(
        1,
        9,
        vec![
            change("1b", Some("3")),
            Change {
                family: Family::Offsets,
                key: offset_key("tx", 1),
                value: Some(20i64.to_be_bytes().to_vec()),
            },
        ],
    )?;
    checkpoint.restored(&[1])?;
    assert_eq!(checkpoint.get(Family::Windows, b"1b")?, Some(b"3".to_vec()));
    assert_eq!(
        checkpoint.folded_until("tx"),
        BTreeMap::from([(0, 6), (1, 20)])
    );
    assert_eq!(checkpoint.changelog_position(1)?, Some(9));
    // The mirror leaves a held partition alone.
    assert!(!checkpoint.apply_mirrored(
        Position::Mirror,
        1,
        10,
        vec![change("1b", Some("old"))]
    )?);
    assert_eq!(checkpoint.get(Family::Windows, b"1b")?, Some(b"3".to_vec()));

    // Let go again, partition 1 is mirrored from where the store's
    // copy of it ends (the restore's position), not from the mirror's
    // own, older one; then from the mirror's as it moves past.
    checkpoint.revoke(&[1]);
    assert_eq!(checkpoint.position(Position::Mirror, 1)?, None);
    assert_eq!(checkpoint.mirrored_until(1)?, Some(9));
    assert!(checkpoint.apply_mirrored(Position::Mirror, 1, 12, Vec::new())?);
    assert_eq!(checkpoint.mirrored_until(1)?, Some(12));
    Ok(())
}

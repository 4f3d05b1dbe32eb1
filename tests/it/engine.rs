//! The I/O-free middle on the example pipeline: what a batch turns into.

use streamscore::batch::{Batch, SourceRecord};
use streamscore::config::Pipeline;
use streamscore::engine::{Engine, EngineSpec, EngineState};
use streamscore::model::{Bundle, BundleParts, FeatureSpec, Logistic, Model, Preprocessing};
use streamscore::output::{BatchOutput, Decision, ScoreRecord};
use streamscore::reject::RejectKind;

use crate::support::{example_pipeline, repo_path};

fn record(offset: i64, payload: &str) -> SourceRecord {
    SourceRecord::new(
        1,
        offset,
        Some(format!("k{offset}").into_bytes()),
        Some(payload.as_bytes().to_vec()),
    )
}

/// (source offset, kind) of each dead letter, in output order.
fn dead_letter_kinds(output: &BatchOutput) -> Vec<(i64, RejectKind)> {
    output
        .dead_letters
        .iter()
        .map(|d| (d.source_offset, d.kind))
        .collect()
}

#[tokio::test]
async fn a_batch_yields_scores_in_order_and_dead_letters_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = example_pipeline(dir.path(), None);
    let engine = Engine::for_pipeline(&pipeline).await.unwrap();
    let tx = |id: &str, amount: f64| {
        format!(
            r#"{{"event_id":"{id}","card_id":"c1","terminal_id":"t1","amount":{amount},"event_time":"2026-05-04T03:00:00Z"}}"#
        )
    };
    let mut batch = Batch::new("transactions");
    batch.records = vec![
        record(10, &tx("small", 12.0)),
        record(11, "{oops"),
        record(12, &tx("huge", 5000.0)),
        // ln(amount + 1) of a negative amount is NaN: the model cannot use it.
        record(13, &tx("negative", -5.0)),
    ];
    let output = engine.process(&batch).await.unwrap();

    let scores: Vec<ScoreRecord> = output
        .scores
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect();
    assert_eq!(
        scores.iter().map(|s| s.offset).collect::<Vec<_>>(),
        vec![10, 12]
    );
    assert_eq!(output.scores[1].key.as_deref(), Some(b"k12".as_slice()));
    let (small, huge) = (&scores[0], &scores[1]);
    assert_eq!((small.event_id.as_ref(), small.partition), ("small", 1));
    assert!(
        huge.score > small.score,
        "{} <= {}",
        huge.score,
        small.score
    );
    assert_eq!(huge.decision, Decision::Flag);
    assert_eq!(small.decision, Decision::Pass);
    assert_eq!(output.flagged, 1);
    assert!(
        huge.reasons
            .iter()
            .any(|r| r.feature.contains("amount") && r.contribution > 0.0),
        "{:?}",
        huge.reasons
    );
    // Largest first.
    assert!(
        huge.reasons
            .windows(2)
            .all(|w| w[0].contribution >= w[1].contribution)
    );
    assert_eq!(
        huge.model_version,
        engine.models().current().champion.version()
    );

    assert_eq!(
        dead_letter_kinds(&output),
        vec![(11, RejectKind::NotJson), (13, RejectKind::InvalidFeature)]
    );
    assert!(output.dead_letters[1].message.contains("log_amount"));
    assert_eq!(
        output.dead_letters[0].payload.as_deref(),
        Some(b"{oops".as_slice())
    );
}

/// An engine for the example pipeline with `sql` and a one-feature model
/// over its `card_number` column.
async fn engine_with_sql(sql: &str) -> Engine {
    let pipeline = Pipeline::load(&repo_path("pipelines/fraud.toml"), None).unwrap();
    let model = Bundle::assemble(BundleParts {
        name: "cast".into(),
        version: "1".into(),
        features: vec![FeatureSpec {
            name: "card_number".into(),
            data_type: "Float64".into(),
        }],
        preprocessing: Preprocessing::None,
        threshold: 0.5,
        provenance: Default::default(),
        metrics: Default::default(),
        model: Model::Logistic(Logistic {
            coefficients: vec![0.1],
            intercept: 0.0,
        }),
        check_features: vec![1.0],
    })
    .unwrap();
    Engine::new(EngineSpec {
        sql,
        ..EngineSpec::for_pipeline(&pipeline, model)
    })
    .await
    .unwrap()
}

/// Card ids are text: casting them to numbers fails at run time, not at
/// planning time, which is the case these tests pin.
const CAST_CARD_SQL: &str =
    "SELECT event_id, CAST(card_id AS DOUBLE) AS card_number FROM transactions";

fn with_card(offset: i64, card: &str) -> SourceRecord {
    record(
        offset,
        &format!(
            r#"{{"event_id":"e{offset}","card_id":"{card}","terminal_id":"t","amount":1,"event_time":1700000000000}}"#
        ),
    )
}

fn scored_offsets(output: &BatchOutput) -> Vec<i64> {
    output
        .scores
        .iter()
        .map(|m| {
            serde_json::from_slice::<ScoreRecord>(&m.payload)
                .unwrap()
                .offset
        })
        .collect()
}

#[tokio::test]
async fn only_the_rows_the_sql_fails_on_are_dead_lettered_without_their_values() {
    let engine = engine_with_sql(CAST_CARD_SQL).await;
    let mut batch = Batch::new("transactions");
    batch.records = vec![
        with_card(0, "7"),
        with_card(1, "card-4111111111111111"),
        record(2, "not json"),
        with_card(3, "42"),
    ];
    let output = engine.process(&batch).await.unwrap();
    assert_eq!(
        scored_offsets(&output),
        vec![0, 3],
        "the rows around the bad one are still scored"
    );
    assert_eq!(
        dead_letter_kinds(&output),
        vec![(2, RejectKind::NotJson), (1, RejectKind::TransformFailed)]
    );
    let message = &output.dead_letters[1].message;
    assert!(message.contains("Cannot cast"), "{message}");
    assert!(
        !message.contains("4111"),
        "the card number leaked: {message}"
    );
}

/// A bug in the SQL fails every row: that must stop the stream, not
/// dead-letter it.
#[tokio::test]
async fn an_sql_that_fails_on_most_rows_is_an_error_not_dead_letters() {
    let engine = engine_with_sql(CAST_CARD_SQL).await;
    let mut batch = Batch::new("transactions");
    batch.records = (0..40)
        .map(|i| with_card(i, &format!("card-{i}")))
        .collect();
    let err = engine.process(&batch).await.unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("the SQL is wrong, not the data"),
        "{message}"
    );
    // Below the limit the same failures are only dead letters.
    batch.records.truncate(9);
    let output = engine.process(&batch).await.unwrap();
    assert_eq!(output.dead_letters.len(), 9);
}

#[tokio::test]
async fn an_int64_event_id_is_echoed_as_a_string() {
    use streamscore::schema::{FieldSpec, FieldType, RecordSchema};

    let pipeline = Pipeline::load(&repo_path("pipelines/fraud.toml"), None).unwrap();
    let mut fields = pipeline.schema.fields.clone();
    fields[0] = FieldSpec::new("event_id", FieldType::Int64, true);
    let schema = RecordSchema::new("transactions".into(), fields).unwrap();
    let model = Bundle::load(&repo_path("pipelines/models/fraud-lr")).unwrap();
    let engine = Engine::new(EngineSpec {
        schema,
        state: Some(EngineState::in_memory(&pipeline).unwrap()),
        ..EngineSpec::for_pipeline(&pipeline, model)
    })
    .await
    .unwrap();
    let mut batch = Batch::new("transactions");
    batch.records = vec![record(
        5,
        r#"{"event_id":9007199254740993,"card_id":"c","terminal_id":"t","amount":3,"event_time":"2019-06-03 05:51:33"}"#,
    )];
    let output = engine.process(&batch).await.unwrap();
    assert!(output.dead_letters.is_empty(), "{:?}", output.dead_letters);
    let score: ScoreRecord = serde_json::from_slice(&output.scores[0].payload).unwrap();
    assert_eq!(score.event_id, "9007199254740993");
}

/// A stored value that does not read (a damaged window tile, drift count,
/// offset or reference) is dropped and its key starts afresh: at a342126
/// it failed the batch, and every restart the same way.
#[tokio::test]
async fn damaged_state_values_are_dropped_and_scoring_goes_on() {
    use streamscore::state::{Change, Family, RocksStore, Store};

    let dir = tempfile::tempdir().unwrap();
    let pipeline = example_pipeline(dir.path(), None);
    let tx = |id: &str, time: &str| {
        format!(
            r#"{{"event_id":"{id}","card_id":"c1","terminal_id":"t1","amount":1e160,"event_time":"{time}","merchant_category":"5411"}}"#
        )
    };
    let mut batch = Batch::new("transactions");
    batch.records = (0..3)
        .map(|i| {
            record(
                i,
                &tx(&format!("e{i}"), &format!("2026-05-0{}T03:00:00Z", i + 1)),
            )
        })
        .collect();
    {
        let engine = Engine::for_pipeline(&pipeline).await.unwrap();
        let output = engine.process(&batch).await.unwrap();
        assert_eq!(output.scores.len(), 3, "{:?}", output.dead_letters);
        engine.checkpoint(output.staged).unwrap();
    }

    let path = &pipeline.state.as_ref().unwrap().path;
    let store = RocksStore::open(path, false, &[]).unwrap();
    let mut damaged = Vec::new();
    for family in [Family::Windows, Family::Drift, Family::Offsets] {
        for (key, _) in store.scan(family).unwrap() {
            damaged.push(Change {
                family,
                key,
                value: Some(b"\xffnot a value".to_vec()),
            });
        }
    }
    assert!(
        damaged.iter().any(|c| c.family == Family::Drift),
        "drift wrote nothing to damage"
    );
    store.write(&damaged.iter().collect::<Vec<_>>()).unwrap();
    drop(store);

    // A restart on the damaged store scores, and scores again.
    let engine = Engine::for_pipeline(&pipeline).await.unwrap();
    batch.records = vec![record(3, &tx("e3", "2026-05-04T03:00:00Z"))];
    for _ in 0..2 {
        let output = engine.process(&batch).await.unwrap();
        assert_eq!(output.scores.len(), 1, "{:?}", output.dead_letters);
        engine.checkpoint(output.staged).unwrap();
    }
    let report =
        streamscore::drift::store::read_all(&RocksStore::open_read_only(path).unwrap(), None, None);
    assert!(report.is_ok(), "the report reads the damaged store too");
}

/// Records read again below the checkpoint (a rewind) are scored as
/// usual; only their state update is skipped. At a342126 they got no
/// output at all.
#[tokio::test]
async fn records_below_the_checkpoint_are_scored_and_not_folded_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut pipeline = example_pipeline(dir.path(), None);
    pipeline.include_features = true;
    let engine = Engine::for_pipeline(&pipeline).await.unwrap();
    let tx = |id: &str| {
        format!(
            r#"{{"event_id":"{id}","card_id":"c1","terminal_id":"t1","amount":20,"event_time":"2026-05-01T03:00:00Z"}}"#
        )
    };
    let mut batch = Batch::new("transactions");
    batch.records = (0..3).map(|i| record(i, &tx(&format!("e{i}")))).collect();
    let first = engine.process(&batch).await.unwrap();
    engine.checkpoint(first.staged).unwrap();
    let again = engine.process(&batch).await.unwrap();
    assert_eq!(again.scores.len(), 3, "{:?}", again.dead_letters);
    engine.checkpoint(again.staged).unwrap();
    // One new event: the card has three before it, not six.
    batch.records = vec![record(3, &tx("e3"))];
    let next = engine.process(&batch).await.unwrap();
    let score: ScoreRecord = serde_json::from_slice(&next.scores[0].payload).unwrap();
    let features = score.features.expect("the example includes features");
    assert_eq!(features["card_tx_count_1d"], 4.0);
}

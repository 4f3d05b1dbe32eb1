//! The I/O-free middle on the example pipeline: what a batch turns into.

use streamscore::batch::{Batch, SourceRecord};
use streamscore::config::Pipeline;
use streamscore::decode::RejectKind;
use streamscore::engine::Engine;
use streamscore::output::{BatchOutput, Decision, ScoreRecord};

use crate::support::repo_path;

fn record(offset: i64, payload: &str) -> SourceRecord {
    SourceRecord {
        partition: 1,
        offset,
        key: Some(format!("k{offset}").into_bytes()),
        payload: Some(payload.as_bytes().to_vec()),
    }
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
    let pipeline = Pipeline::load(&repo_path("pipelines/fraud.toml"), None).unwrap();
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
        huge.reasons.iter().any(|r| r.contains("amount")),
        "{:?}",
        huge.reasons
    );
    assert_eq!(huge.model_version, engine.model().version.as_str());

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

#[tokio::test]
async fn only_the_rows_the_sql_fails_on_are_dead_lettered_with_the_sql_error() {
    use streamscore::engine::EngineSpec;
    use streamscore::model::{BUNDLE_FORMAT, ModelBundle};

    let pipeline = Pipeline::load(&repo_path("pipelines/fraud.toml"), None).unwrap();
    // Card ids are text: casting them to numbers fails at run time, not at
    // planning time, which is the case this pins.
    let sql = "SELECT event_id, CAST(card_id AS DOUBLE) AS card_number FROM transactions";
    let model = ModelBundle {
        format: BUNDLE_FORMAT.into(),
        name: "cast".into(),
        version: "1".into(),
        features: vec!["card_number".into()],
        mean: vec![0.0],
        std: vec![1.0],
        coefficients: vec![0.1],
        intercept: 0.0,
        threshold: 0.5,
        trained: Default::default(),
    };
    let engine = Engine::new(EngineSpec {
        schema: pipeline.schema.clone(),
        max_record_bytes: pipeline.max_record_bytes,
        event_id_field: &pipeline.event_id_field,
        sql,
        model,
        threshold_override: None,
    })
    .await
    .unwrap();
    let tx = |card: &str| {
        format!(
            r#"{{"event_id":"e","card_id":"{card}","terminal_id":"t","amount":1,"event_time":1}}"#
        )
    };
    let mut batch = Batch::new("transactions");
    batch.records = vec![
        record(0, &tx("7")),
        record(1, &tx("card-1")),
        record(2, "not json"),
        record(3, &tx("42")),
    ];
    let output = engine.process(&batch).await.unwrap();
    let scored: Vec<i64> = output
        .scores
        .iter()
        .map(|m| {
            serde_json::from_slice::<ScoreRecord>(&m.payload)
                .unwrap()
                .offset
        })
        .collect();
    assert_eq!(
        scored,
        vec![0, 3],
        "the rows around the bad one are still scored"
    );
    assert_eq!(
        dead_letter_kinds(&output),
        vec![(2, RejectKind::NotJson), (1, RejectKind::TransformFailed)]
    );
    assert!(
        output.dead_letters[1].message.contains("card-1"),
        "{}",
        output.dead_letters[1].message
    );
}

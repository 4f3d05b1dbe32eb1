//! Training input: CSV and NDJSON of the same history give the same features.

use std::fmt::Write;

use streamscore::config::Pipeline;
use streamscore::simulate::{SimulationConfig, simulate};
use streamscore::train;

use crate::support::repo_path;

#[tokio::test]
async fn csv_columns_are_matched_by_name_and_give_the_ndjson_features() {
    let pipeline = Pipeline::load(&repo_path("pipelines/fraud.toml"), None).unwrap();
    let history: Vec<_> = simulate(&SimulationConfig {
        customers: 100,
        terminals: 200,
        days: 3,
        ..SimulationConfig::default()
    })
    .into_iter()
    .take(300)
    .collect();
    let dir = tempfile::tempdir().unwrap();

    let ndjson_path = dir.path().join("history.ndjson");
    let mut ndjson = String::new();
    for t in &history {
        writeln!(ndjson, "{}", serde_json::to_string(t).unwrap()).unwrap();
    }
    std::fs::write(&ndjson_path, ndjson).unwrap();

    // Shuffled columns, one the schema does not know, optional ones absent.
    let csv_path = dir.path().join("history.csv");
    let mut csv = String::from("is_fraud,amount,note,event_time,terminal_id,card_id,event_id\n");
    for t in &history {
        writeln!(
            csv,
            "{},{},hello,{},{},{},{}",
            t.is_fraud, t.amount, t.event_time, t.terminal_id, t.card_id, t.event_id
        )
        .unwrap();
    }
    std::fs::write(&csv_path, &csv).unwrap();

    let from_ndjson = train::prepare(&pipeline, &ndjson_path).await.unwrap();
    let from_csv = train::prepare(&pipeline, &csv_path).await.unwrap();
    assert_eq!(from_csv.decoded.num_rows(), history.len());
    assert_eq!(from_csv.features, from_ndjson.features);
    assert_eq!(from_csv.decoded, from_ndjson.decoded);

    let without_amount = csv.replacen("is_fraud,amount,", "is_fraud,amount_usd,", 1);
    std::fs::write(&csv_path, without_amount).unwrap();
    let err = train::prepare(&pipeline, &csv_path)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("no column `amount`") && err.contains("history.csv"),
        "{err}"
    );
}

/// arrow-csv would read an epoch number as milliseconds whatever the schema
/// declares; history must be read as the stream reads it.
#[tokio::test]
async fn csv_timestamps_are_read_as_the_schema_declares_them() {
    use streamscore::schema::RecordSchema;
    use streamscore::timestamp::EpochUnit;

    let mut pipeline = Pipeline::load(&repo_path("pipelines/fraud.toml"), None).unwrap();
    let mut fields = pipeline.schema.fields.clone();
    let at = fields.iter_mut().find(|f| f.name == "event_time").unwrap();
    at.unit = Some(EpochUnit::S);
    pipeline.schema = RecordSchema::new(pipeline.schema.name.clone(), fields).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let rows = [
        ("e1", "12.5", "2019-06-03T05:51:33Z", "1559541093"),
        ("e2", "300", "2019-06-03T23:59:59Z", "1559606399"),
    ];
    let mut ndjson = String::new();
    let mut csv = String::from("event_id,card_id,terminal_id,amount,event_time\n");
    for (id, amount, rfc3339, epoch_seconds) in rows {
        writeln!(
            ndjson,
            r#"{{"event_id":"{id}","card_id":"c","terminal_id":"t","amount":{amount},"event_time":"{rfc3339}"}}"#
        )
        .unwrap();
        writeln!(csv, "{id},c,t,{amount},{epoch_seconds}").unwrap();
    }
    let (ndjson_path, csv_path) = (dir.path().join("h.ndjson"), dir.path().join("h.csv"));
    std::fs::write(&ndjson_path, ndjson).unwrap();
    std::fs::write(&csv_path, csv).unwrap();
    let from_ndjson = train::prepare(&pipeline, &ndjson_path).await.unwrap();
    let from_csv = train::prepare(&pipeline, &csv_path).await.unwrap();
    assert_eq!(from_csv.decoded, from_ndjson.decoded);
    assert_eq!(from_csv.features, from_ndjson.features);
}

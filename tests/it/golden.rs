//! Golden test of the example SQL: tests/golden/fraud.input.jsonl through the
//! pipeline's decode and SQL must give tests/golden/fraud.expected.jsonl.
//! After an intended change, rewrite the expected file with
//! `STREAMSCORE_BLESS=1 cargo test golden` and review the diff.

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type};
use arrow::record_batch::RecordBatch;
use streamscore::config::Pipeline;
use streamscore::decode::Decoder;
use streamscore::train;

use crate::support::repo_path;

fn rows_as_json(batch: &RecordBatch) -> String {
    let mut out = String::new();
    for row in 0..batch.num_rows() {
        let mut object = serde_json::Map::new();
        for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
            let value = if column.is_null(row) {
                serde_json::Value::Null
            } else if field.data_type() == &DataType::Utf8 {
                column.as_string::<i32>().value(row).into()
            } else {
                let as_f64 = cast(column, &DataType::Float64).expect("numeric feature");
                // Rounded so the file does not depend on the last ulp of ln().
                let v = as_f64.as_primitive::<Float64Type>().value(row);
                ((v * 1e9).round() / 1e9).into()
            };
            object.insert(field.name().clone(), value);
        }
        out.push_str(&serde_json::Value::Object(object).to_string());
        out.push('\n');
    }
    out
}

#[tokio::test]
async fn the_example_sql_turns_transactions_into_the_expected_features() {
    let pipeline = Pipeline::load(&repo_path("pipelines/fraud.toml"), None).unwrap();
    let decoder = Decoder::new(pipeline.schema.clone(), pipeline.max_record_bytes);
    let input = std::fs::read(repo_path("tests/golden/fraud.input.jsonl")).unwrap();
    let (decoded, rejected) = train::decode_lines(&decoder, &input).unwrap();
    assert!(rejected.is_empty(), "{rejected:?}");
    let set = train::features_for(&pipeline, decoded, rejected)
        .await
        .unwrap();
    let actual = rows_as_json(&set.features);
    let expected_path = repo_path("tests/golden/fraud.expected.jsonl");
    if std::env::var_os("STREAMSCORE_BLESS").is_some() {
        std::fs::write(&expected_path, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap();
    assert_eq!(actual, expected, "run with STREAMSCORE_BLESS=1 to accept");
}

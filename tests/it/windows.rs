//! Window features through the real broker and the running engine: they
//! equal, row for row, what `train` computes in batch over the same events,
//! even when the engine is killed with SIGKILL in the middle and restarted
//! on its RocksDB state.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::Float64Type;
use rdkafka::Message;
use streamscore::config::Pipeline;
use streamscore::decode::Decoder;
use streamscore::output::ScoreRecord;
use streamscore::simulate::{SimulationConfig, simulate};
use streamscore::train;

use crate::support::*;

/// Per event id, the values `train` gives each window feature.
async fn batch_features(
    pipeline: &Pipeline,
    ndjson: &[u8],
) -> HashMap<String, BTreeMap<String, f64>> {
    let decoder = Decoder::new(pipeline.schema.clone(), pipeline.max_record_bytes);
    let (decoded, rejected) = train::decode_lines(&decoder, ndjson).unwrap();
    assert!(rejected.is_empty());
    let set = train::features_for(pipeline, decoded, rejected)
        .await
        .unwrap();
    let ids = set
        .features
        .column_by_name("event_id")
        .unwrap()
        .as_string::<i32>();
    let windows = pipeline.windows.as_ref().unwrap();
    let mut by_event: HashMap<String, BTreeMap<String, f64>> = HashMap::new();
    for feature in &windows.features {
        let column = set.features.column_by_name(&feature.name).unwrap();
        let column = column.as_primitive::<Float64Type>();
        for row in 0..column.len() {
            by_event
                .entry(ids.value(row).to_owned())
                .or_default()
                .insert(feature.name.clone(), column.value(row));
        }
    }
    by_event
}

/// Per event id, the window features on its last score.
fn streamed_features(
    scores: &[rdkafka::message::OwnedMessage],
    names: &[String],
) -> HashMap<String, BTreeMap<String, f64>> {
    let mut by_event = HashMap::new();
    for message in scores {
        let score: ScoreRecord = serde_json::from_slice(message.payload().unwrap()).unwrap();
        let features = score.features.expect("scores carry their features");
        let windows = names
            .iter()
            .map(|name| (name.clone(), features[name.as_str()]))
            .collect();
        by_event.insert(score.event_id.into_owned(), windows);
    }
    by_event
}

#[tokio::test(flavor = "multi_thread")]
async fn streamed_window_features_equal_train_even_across_a_kill_nine() {
    // One partition: a terminal's events come from every card, so only
    // then does the stream see all of a terminal's events, as train does.
    let topics = Topics::create(1).await;
    let dir = tempfile::tempdir().unwrap();
    let written = topics.write_pipeline(dir.path(), 40);
    let text = std::fs::read_to_string(&written)
        .unwrap()
        .replace("[model]\n", "[model]\ninclude_features = true\n")
        // Kafka's commit lags the checkpoint by up to 5 s, so the kill
        // lands between them: the restart re-reads events already folded
        // into the state, which must be skipped, not counted again.
        .replace(
            "\"auto.commit.interval.ms\" = \"200\"",
            "\"auto.commit.interval.ms\" = \"5000\"",
        );
    std::fs::write(&written, text).unwrap();
    let pipeline = Pipeline::load(&written, None).unwrap();

    let events = simulate(&SimulationConfig {
        customers: 400,
        terminals: 800,
        days: 20,
        ..SimulationConfig::default()
    });
    let lines: Vec<Vec<u8>> = events
        .iter()
        .map(|t| serde_json::to_vec(t).unwrap())
        .collect();
    let expected = batch_features(&pipeline, &lines.join(&b'\n')).await;
    let keyed: Vec<KeyedPayload> = events
        .iter()
        .zip(&lines)
        .map(|(t, line)| (Some(t.card_id.clone().into_bytes()), Some(line.clone())))
        .collect();
    produce(&topics.input, &keyed).await;

    // One crash in this group: Tansu keeps a SIGKILLed member for minutes,
    // so a second crash would leave the restarted one without partitions.
    let mut first = spawn_run(&written, dir.path(), "first");
    let mut scores = TopicReader::new(&topics.output, 1);
    let started = scores.read_until(Duration::from_secs(120), |m| m.len() >= events.len() / 4);
    assert!(started, "no scores; log:\n{}", log_of(dir.path(), "first"));
    first.kill().unwrap();
    first.wait().unwrap();
    let at_kill = scores.messages.len();
    assert!(
        at_kill < events.len(),
        "the kill came after the stream ended"
    );

    let mut second = spawn_run(&written, dir.path(), "second");
    let names: Vec<String> = pipeline
        .windows
        .as_ref()
        .unwrap()
        .features
        .iter()
        .map(|f| f.name.clone())
        .collect();
    let complete = scores.read_until(Duration::from_secs(120), |m| {
        streamed_features(m, &names).len() >= events.len()
    });
    assert!(
        complete,
        "not every event was scored; log:\n{}",
        log_of(dir.path(), "second")
    );
    stop_cleanly(&mut second, dir.path(), "second");
    let restarted = log_of(dir.path(), "second");
    assert!(
        restarted.contains("state opened") && restarted.contains("partitions=0@"),
        "the restart found no checkpointed offset; log:\n{restarted}"
    );

    // Every event's features, those scored again after the restart
    // included, equal the batch computation's: an event folded twice (or
    // lost from the state) would change the counts of every later event of
    // its card and terminal.
    let streamed = streamed_features(&scores.messages, &names);
    let mut differing: Vec<_> = expected
        .iter()
        .filter(|(id, values)| streamed.get(*id) != Some(values))
        .map(|(id, values)| (id.clone(), values.clone(), streamed.get(id).cloned()))
        .collect();
    differing.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        differing.is_empty(),
        "{} of {} events differ from train, first: {:?}",
        differing.len(),
        expected.len(),
        differing.first()
    );
}

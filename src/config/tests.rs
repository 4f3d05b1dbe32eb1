use super::*;

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/fraud.toml")
}

/// Writes a variant of the example pipeline next to it, so that its
/// relative paths still resolve; gone when dropped. Other rooms' tests use
/// it too (the bench's).
pub(crate) fn example_variant(edit: impl Fn(String) -> String) -> tempfile::NamedTempFile {
    let text = edit(std::fs::read_to_string(example_path()).unwrap());
    let dir = example_path().parent().unwrap().to_owned();
    let file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile_in(dir)
        .unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

/// Loads a variant of the example pipeline ([`example_variant`]).
fn load_variant(edit: impl Fn(String) -> String) -> Result<Pipeline, ConfigError> {
    Pipeline::load(example_variant(edit).path(), None)
}

/// The labels consumer waits at least 500 ms on an empty fetch, and
/// keeps a longer wait it was given; its group is its own.
/// Each case, `from` in the example replaced by `to`, is refused with an
/// error that names `needle`.
fn each_refused<S: AsRef<str>>(cases: impl IntoIterator<Item = (&'static str, S, &'static str)>) {
    for (from, to, needle) in cases {
        let to = to.as_ref();
        let err = load_variant(|t| {
            assert!(t.contains(from), "the example no longer has {from:?}");
            t.replacen(from, to, 1)
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains(needle), "{to:?}: {err}");
    }
}

#[test]
fn the_labels_consumer_does_not_fetch_hot() {
    let mut kafka = Pipeline::load(&example_path(), None).unwrap().kafka;
    kafka
        .consumer
        .insert("fetch.wait.max.ms".into(), "10".into());
    let labels = kafka.for_labels("labels");
    assert_eq!(labels.consumer["fetch.wait.max.ms"], "500");
    assert_eq!(labels.group_id, format!("{}-labels", kafka.group_id));
    assert_eq!(kafka.consumer["fetch.wait.max.ms"], "10");
    kafka
        .consumer
        .insert("fetch.wait.max.ms".into(), "900".into());
    assert_eq!(
        kafka.for_labels("labels").consumer["fetch.wait.max.ms"],
        "900"
    );
}

#[test]
fn the_example_pipeline_loads() {
    let p = Pipeline::load(&example_path(), None).unwrap();
    assert_eq!(p.kafka.input_topic, "transactions");
    assert_eq!(p.batch.max_rows, 2000);
    assert_eq!(p.schema.name, "transactions");
    assert!(p.sql.contains("FROM transactions"));
    assert!(
        matches!(&p.model, ModelSource::Bundle(path) if path.ends_with("models/fraud-lr")),
        "{:?}",
        p.model
    );
    assert_eq!(p.kafka.consumer["session.timeout.ms"], "10000");
}

#[test]
fn a_model_is_a_bundle_or_a_registry_and_name_not_both() {
    let p = load_variant(|t| {
        t.replace(
            "bundle = \"models/fraud-lr\"",
            "registry = \"models\"\nname = \"fraud-lr\"",
        )
    })
    .unwrap();
    assert!(
        matches!(&p.model, ModelSource::Registry { name, .. } if name == "fraud-lr"),
        "{:?}",
        p.model
    );
    let err = load_variant(|t| {
        t.replace(
            "bundle = \"models/fraud-lr\"",
            "bundle = \"models/fraud-lr\"\nregistry = \"models\"\nname = \"x\"",
        )
    })
    .unwrap_err();
    assert!(err.to_string().contains("`model`"), "{err}");
    let err = load_variant(|t| t.replace("bundle = \"models/fraud-lr\"", "registry = \"m\""))
        .unwrap_err();
    assert!(err.to_string().contains("`model.name`"), "{err}");
}

#[test]
fn brokers_can_be_overridden() {
    let p = Pipeline::load(&example_path(), Some("kafka-1:9092")).unwrap();
    assert_eq!(p.kafka.brokers, "kafka-1:9092");
}

#[test]
fn unknown_keys_are_refused_by_name() {
    let err = load_variant(|t| t.replace("max_rows = 2000", "max_rows = 2000\nmax_rowz = 1"))
        .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("unknown field `max_rowz`"), "{message}");
    assert!(message.contains(".toml"), "{message}");
}

#[test]
fn a_missing_file_is_refused_with_key_and_path() {
    let err = load_variant(|t| t.replace("sql = \"fraud.sql\"", "sql = \"nope.sql\""))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`transform.sql`") && err.contains("nope.sql"),
        "{err}"
    );
    let err = load_variant(|t| t.replace("../schemas/transaction.json", "gone.json"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`schema.path`") && err.contains("gone.json"),
        "{err}"
    );
}

#[test]
fn bad_window_features_and_labels_are_refused_with_their_key() {
    let count_1d =
        "name = \"card_tx_count_1d\"\nkey = \"card_id\"\naggregate = \"count\"\nwindow = \"1d\"";
    let cases = [
        (
            count_1d,
            count_1d.replace("key = \"card_id\"", "key = \"no_such\""),
            "key `no_such` is not a field",
        ),
        (
            count_1d,
            count_1d.replace("aggregate", "column = \"amount\"\naggregate"),
            "takes no `column`",
        ),
        (
            count_1d,
            count_1d.replace("\"1d\"", "\"90m\""),
            "whole number of tiles",
        ),
        (
            "topic = \"transaction-labels\"",
            "topic = \"transactions\"".to_owned(),
            "`labels.topic`",
        ),
        (
            "tile = \"1h\"",
            "tile = \"1h\"\nsurprise = 1".to_owned(),
            "unknown field",
        ),
    ];
    each_refused(cases);
}

#[test]
fn bad_drift_settings_are_refused_with_their_key() {
    let cases = [
        ("window = \"1d\"", "window = \"0s\"", "`drift.window`"),
        (
            "psi = { suspected = 0.1, detected = 0.25 }",
            "pis = { suspected = 0.1 }",
            "`pis` is not a drift metric",
        ),
        (
            "psi = { suspected = 0.1, detected = 0.25 }",
            "psi = { suspected = 0.3, detected = 0.25 }",
            "suspected (0.3) is above detected (0.25)",
        ),
        (
            "alerts_topic = \"drift-alerts\"",
            "alerts_topic = \"scores\"",
            "`drift.alerts_topic`",
        ),
        (
            "event_time = \"event_time\"\n# A day",
            "event_time = \"amount\"\n# A day",
            "`drift.event_time`",
        ),
        ("raise_after = 3", "raise_after = 0", "`drift.raise_after`"),
        (
            "psi = { suspected = 0.1, detected = 0.25 }",
            "null_rate = { suspected = { p_value = 0.01 } }",
            "`null_rate` cannot take a `p_value`",
        ),
        (
            "psi = { suspected = 0.1, detected = 0.25 }",
            "psi = { suspected = { p_value = 0.7 } }",
            "p_value 0.7 must lie between 0 and 0.5",
        ),
        (
            "psi = { suspected = 0.1, detected = 0.25 }",
            "psi = { suspected = { p_value = 0.001 }, detected = { p_value = 0.01 } }",
            "the suspected p_value (0.001) is below the detected one (0.01)",
        ),
        (
            "[drift.features.is_weekend]",
            "[drift.change]\nthreshold = -1.0\n[drift.features.is_weekend]",
            "`drift.change.threshold`",
        ),
        (
            "[drift.features.is_weekend]",
            "[drift.change]\ndelta = nan\n[drift.features.is_weekend]",
            "`drift.change.delta`",
        ),
        (
            "[drift.features.is_weekend]",
            "[drift.change]\nlambda = 50.0\n[drift.features.is_weekend]",
            "unknown field `lambda`",
        ),
    ];
    each_refused(cases);
}

#[test]
fn out_of_range_values_are_refused_by_key() {
    let cases = [
        ("max_rows = 2000", "max_rows = 0", "`batch.max_rows`"),
        ("linger_ms = 20", "linger_ms = 0", "`batch.linger_ms`"),
        ("# threshold = 0.5", "threshold = 1.5", "`model.threshold`"),
        (
            "output_topic = \"scores\"",
            "output_topic = \"transactions\"",
            "`kafka.input_topic`",
        ),
        (
            "# shadow_topic = \"scores-shadow\"",
            "shadow_topic = \"scores\"",
            "`kafka.shadow_topic`",
        ),
        (
            "group_id = \"streamscore-fraud\"",
            "group_id = \"\"",
            "`kafka.group_id`",
        ),
        (
            "\"auto.commit.interval.ms\" = \"1000\"",
            "\"enable.auto.offset.store\" = \"true\"",
            "`kafka.consumer` sets `enable.auto.offset.store`",
        ),
        (
            "\"auto.commit.interval.ms\" = \"1000\"",
            "\"enable.auto.commit\" = \"false\"",
            "`kafka.consumer` sets `enable.auto.commit`",
        ),
        (
            "\"linger.ms\" = \"5\"",
            "\"acks\" = \"1\"",
            "`kafka.producer` sets `acks`",
        ),
        (
            "\"linger.ms\" = \"5\"",
            "\"max.in.flight.requests.per.connection\" = \"3\"",
            "`kafka.producer` sets `max.in.flight.requests.per.connection`",
        ),
        (
            "\"linger.ms\" = \"5\"",
            "\"message.max.bytes\" = \"20000\"",
            "`dead_letter.max_payload_bytes`",
        ),
        (
            "max_payload_bytes = 65536",
            "max_payload_bytes = 0",
            "`dead_letter.max_payload_bytes`",
        ),
        (
            "drain_timeout_ms = 30000",
            "drain_timeout_ms = 0",
            "`shutdown.drain_timeout_ms`",
        ),
        (
            "listen = \"127.0.0.1:9464\"",
            "listen = \"localhost\"",
            "`admin.listen`",
        ),
        (
            "status_interval_ms = 10000",
            "status_interval_ms = 0",
            "`telemetry.status_interval_ms`",
        ),
        (
            "max_failed_share = 0.5",
            "max_failed_share = 1.5",
            "`transform.max_failed_share`",
        ),
        (
            "event_id_field = \"event_id\"",
            "event_id_field = \"amount\"",
            "`schema.event_id_field`",
        ),
    ];
    for (from, to, needle) in cases {
        let err = load_variant(|t| t.replace(from, to))
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{to}: {err}");
    }
}

#[test]
fn serving_several_instances_needs_the_key_the_changelog_and_an_address() {
    let per_partition = |extra: &'static str, serve: &'static str| {
        move |t: String| {
            format!(
                "{}\n[serve]\n{serve}\n",
                t.replace(
                    "checkpoint_ms = 1000\n",
                    &format!("checkpoint_ms = 1000\n{extra}"),
                )
                .replace("\nscope = \"instance\"", "\nscope = \"partition\"")
            )
        }
    };
    let refused = |edit: &dyn Fn(String) -> String, needle: &str| {
        let err = load_variant(edit).unwrap_err().to_string();
        assert!(err.contains(needle), "{err}");
    };
    refused(
        &per_partition("changelog = true\n", "listen = \"127.0.0.1:0\""),
        "windows.partition_key",
    );
    let keyed = |extra: &'static str, serve: &'static str| {
        let edit = per_partition(extra, serve);
        move |t: String| {
            edit(t).replace(
                "\nscope = \"partition\"",
                "\nscope = \"partition\"\npartition_key = \"card_id\"",
            )
        }
    };
    refused(
        &keyed("", "listen = \"127.0.0.1:0\""),
        "state.changelog = true",
    );
    refused(
        &keyed("changelog = true\n", "listen = \"0.0.0.0:8080\""),
        "`serve.advertise`",
    );
    refused(
        &keyed(
            "changelog = true\n",
            "listen = \"127.0.0.1:0\"\npartitioner = \"fnv\"",
        ),
        "`serve.partitioner`",
    );
    let p = load_variant(keyed(
        "changelog = true\n",
        "listen = \"0.0.0.0:8080\"\nadvertise = \"http://10.0.0.5:8080\"\npartitioner = \"murmur2_random\"",
    ))
    .unwrap();
    let serve = p.serve.unwrap();
    assert_eq!(serve.routing.unwrap().key, "card_id");
    assert_eq!(serve.partitioner, Partitioner::Murmur2);
}

//! The binary as a user runs it: the demo, training, and refusals at start.

use std::process::{Command, Output};

use streamscore::model::Bundle;

use crate::support::{repo_path, state_sections, tampered_payload};

fn streamscore(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_streamscore"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("STREAMSCORE_BROKERS")
        .output()
        .expect("streamscore runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Also pins a bug: the embedded broker keeps only 5 MiB per partition, and
/// 20,000 scores on one partition (about 6.6 MB) lost the oldest ones until
/// the demo spread them over more partitions.
#[test]
fn the_demo_runs_green_on_its_embedded_broker() {
    let out = streamscore(&[
        "demo",
        "--events",
        "20000",
        "--history-days",
        "10",
        "--partitions",
        "1",
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("scored                   20000 (read back 20000, distinct 20000)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("dead-lettered                6"),
        "{stdout}"
    );
    assert!(
        stderr.contains("events/s"),
        "no live progress in:\n{stderr}"
    );
    // Halfway, version 2 is trained, promoted and swapped in.
    assert!(stderr.contains("promoted version 2"), "{stderr}");
    let by_version: Vec<u64> = stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("scored by version "))
        .map(|rest| rest.split_whitespace().nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(by_version.len(), 2, "{stdout}");
    assert!(by_version.iter().all(|&n| n > 0), "{stdout}");
    assert_eq!(by_version.iter().sum::<u64>(), 20_000, "{stdout}");
    // Drift monitoring ran, and its alerts topic was read back (how many
    // alerts depends on the data; the summary line is always there).
    assert!(stdout.contains("drift alerts"), "{stdout}");
}

/// The features the demo's summary lists under a level (`detected`,
/// `suspected`, `cleared`): `amount (psi v2), score (psi v2)` gives
/// `["amount", "score"]`.
fn alerted_features(stdout: &str, level: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix(level))
        .flat_map(|rest| rest.split("), "))
        .filter_map(|entry| entry.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// The demo as a new user first runs it: the live stream is the same world
/// the models were trained on, so drift monitoring raises nothing. (It
/// raised 3 to 6 alerts on the terminals' counts in release runs while
/// the live feed was produced in one burst: the producer's batches landed
/// one partition's days before another's; README, "What the demo shows".)
#[test]
fn the_demo_as_it_comes_raises_no_drift_alert() {
    let out = streamscore(&["demo"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("scored                   50000 (read back 50000, distinct 50000)"),
        "{stdout}"
    );
    let alerts = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("drift alerts"))
        .unwrap_or_else(|| panic!("no drift summary:\n{stdout}"));
    assert_eq!(alerts.trim(), "0", "{stdout}");
}

/// `demo --shift` (amounts tripled in the second half of the live events)
/// shows the drift alert path: the amount features are `detected`, and
/// nothing but what the amounts drive (their features, the score, the
/// decisions) raises an alert. At 806ea5c this failed now and then:
/// windows were judged on the partitions in front of the backlog alone, so
/// most were skipped as too small.
#[test]
fn the_demo_with_a_shift_detects_the_amount_features() {
    let out = streamscore(&["demo", "--shift"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains("--shift: amounts x3"), "{stderr}");
    let detected = alerted_features(&stdout, "detected");
    assert!(detected.iter().any(|f| f == "amount"), "{stdout}");
    let driven_by_amounts = |f: &String| f.contains("amount") || f == "score" || f == "decision";
    for level in ["detected", "suspected", "cleared"] {
        let others: Vec<_> = alerted_features(&stdout, level)
            .into_iter()
            .filter(|f| !driven_by_amounts(f))
            .collect();
        assert!(others.is_empty(), "{level}: {others:?}\n{stdout}");
    }
}

#[test]
fn simulate_then_train_writes_a_bundle_that_serves() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("history.ndjson");
    let model = dir.path().join("bundle");
    let out = streamscore(&[
        "simulate",
        "--out",
        data.to_str().unwrap(),
        "--days",
        "10",
        "--customers",
        "300",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = streamscore(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        model.to_str().unwrap(),
        "--model-version",
        "t1",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("(hold-out): AUC"),
        "{}",
        text(&out.stdout)
    );
    let bundle = Bundle::load(&model).unwrap();
    assert_eq!(bundle.version(), "t1");
    let features: Vec<&str> = bundle.manifest.feature_names().collect();
    assert!(
        !features.contains(&"is_fraud"),
        "the label leaked into the features"
    );
    assert!(features.contains(&"log_amount"));
    // Drift monitoring's references, with each metric's spread over the
    // training data's own chunks (for `sigmas` thresholds).
    let reference = bundle.manifest.reference.as_ref().unwrap();
    assert_eq!(
        reference["features"]["log_amount"]["edges"]
            .as_array()
            .unwrap()
            .len(),
        11
    );
    let psi = &reference["chunks"]["log_amount"]["psi"];
    assert!(
        psi["mean"].as_f64().unwrap() < 0.05 && psi["std"].as_f64().unwrap() >= 0.0,
        "{psi}"
    );

    // The handbook's method: all history folds into the windows, only the
    // rows past a warm-up (or in a period) are fitted and evaluated.
    let rows = |stdout: &str| -> usize {
        stdout
            .split(" training rows")
            .next()
            .and_then(|head| head.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no training rows in {stdout}"))
    };
    let all = rows(&text(&out.stdout));
    let warm = dir.path().join("warm");
    let out = streamscore(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        warm.to_str().unwrap(),
        "--warmup",
        "5d",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let fitted = rows(&text(&out.stdout));
    assert!(
        fitted < all * 3 / 4 && fitted > all / 4,
        "{fitted} of {all} rows fitted after a 5-day warm-up of 10 days"
    );
    // The handbook's test set: the rows of cards whose fraud was known a
    // day earlier are left out, and said so.
    // `evaluate` of the warmed bundle on the data, with `extra` options.
    let evaluate = |extra: &[&str]| {
        let mut args = vec![
            "evaluate",
            "--bundle",
            warm.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ];
        args.extend(extra);
        streamscore(&args)
    };
    let evaluated = |extra: &[&str]| -> (usize, String) {
        let out = evaluate(&[&["--warmup", "5d"], extra].concat());
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        let rows = stdout
            .split(" rows, ")
            .next()
            .and_then(|head| head.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no row count in {stdout}"));
        (rows, stdout)
    };
    let (all_rows, _) = evaluated(&[]);
    let (kept, stdout) = evaluated(&["--remove-known-compromised", "--delay", "1d"]);
    let left_out: usize = stdout
        .split(" rows of cards known compromised left out")
        .next()
        .and_then(|head| head.rsplit('(').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count left out in {stdout}"));
    assert!(left_out > 0, "{stdout}");
    assert_eq!(kept + left_out, all_rows, "{stdout}");
    // Refused, with the reason.
    for (extra, reason) in [
        (
            &["--delay", "36h", "--remove-known-compromised"][..],
            "not a whole number of days",
        ),
        (
            &["--from", "2100-01-01"][..],
            "no history row lies in the period",
        ),
    ] {
        let out = evaluate(extra);
        assert!(!out.status.success());
        assert!(text(&out.stderr).contains(reason), "{}", text(&out.stderr));
    }
}

/// A pipeline file in `dir` that differs from the example in `edit`, with
/// the example's other files by absolute path and an unreachable broker.
fn pipeline_variant(
    dir: &std::path::Path,
    sql: &str,
    model: &std::path::Path,
) -> std::path::PathBuf {
    std::fs::write(dir.join("p.sql"), sql).unwrap();
    let text = format!(
        r#"
[kafka]
brokers = "127.0.0.1:1"
group_id = "g"
input_topic = "in"
output_topic = "out"
dead_letter_topic = "dlq"
[schema]
path = "{schema}"
[transform]
sql = "p.sql"
[model]
bundle = "{model}"
"#,
        schema = repo_path("schemas/transaction.json").display(),
        model = model.display(),
    ) + &state_sections(dir, "labels");
    let path = dir.join("p.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn bad_sql_and_bad_bundles_stop_the_start_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let good_sql = std::fs::read_to_string(repo_path("pipelines/fraud.sql")).unwrap();
    let good_model = repo_path("pipelines/models/fraud-lr");
    let tampered = dir.path().join("tampered");
    std::fs::create_dir(&tampered).unwrap();
    for file in ["manifest.json", "model.json"] {
        std::fs::copy(good_model.join(file), tampered.join(file)).unwrap();
    }
    // One coefficient changed: the payload's checksum no longer holds.
    let payload = std::fs::read_to_string(tampered.join("model.json")).unwrap();
    std::fs::write(tampered.join("model.json"), tampered_payload(&payload)).unwrap();
    let absent = dir.path().join("absent");

    // (SQL, model bundle, what the error must say)
    let cases: [(&str, &std::path::Path, &[&str]); 5] = [
        (
            "SELECT amount, no_such_column FROM transactions",
            &good_model,
            &["pipeline SQL does not plan", "no_such_column"],
        ),
        (
            "SELECT * FROM transactions WHERE amount > 10",
            &good_model,
            &["one row per input row"],
        ),
        (
            "SELECT event_id, amount FROM transactions",
            &good_model,
            &["feature `log_amount` is not a column"],
        ),
        (
            &good_sql,
            &tampered,
            &["checksum", "model.json", "tampered"],
        ),
        (&good_sql, &absent, &["cannot read model bundle", "absent"]),
    ];
    for (sql, model, needles) in cases {
        let pipeline = pipeline_variant(dir.path(), sql, model);
        let out = streamscore(&["run", "--pipeline", pipeline.to_str().unwrap()]);
        assert!(
            !out.status.success(),
            "{sql} with {} started",
            model.display()
        );
        let err = text(&out.stderr);
        assert!(needles.iter().all(|n| err.contains(n)), "{sql}: {err}");
    }
}

/// Drift settings the model cannot meet stop the start, saying why: a
/// feature the model lacks, a `sigmas` threshold without the reference's
/// chunk statistics (the committed bundle predates them).
#[test]
fn drift_settings_the_model_cannot_meet_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let sql = std::fs::read_to_string(repo_path("pipelines/fraud.sql")).unwrap();
    let pipeline = pipeline_variant(dir.path(), &sql, &repo_path("pipelines/models/fraud-lr"));
    let base = std::fs::read_to_string(&pipeline).unwrap();
    let cases = [
        (
            "[drift.features.no_such_feature]\npsi = { detected = 0.5 }\n",
            "`drift.features.no_such_feature` names no monitored column",
        ),
        (
            "[drift.thresholds]\nks = { detected = { sigmas = 3 } }\n",
            "no chunk statistics",
        ),
    ];
    for (section, needle) in cases {
        std::fs::write(
            &pipeline,
            format!("{base}\n[drift]\nevent_time = \"event_time\"\n{section}"),
        )
        .unwrap();
        let out = streamscore(&["run", "--pipeline", pipeline.to_str().unwrap()]);
        assert!(!out.status.success(), "{section} started");
        let err = text(&out.stderr);
        assert!(
            err.contains("drift monitoring cannot start") && err.contains(needle),
            "{section}: {err}"
        );
    }
}

/// Pins a bug: a bad SQL file printed DataFusion's message four times, once
/// per level of the error chain that both showed and returned its cause.
#[test]
fn an_error_prints_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = pipeline_variant(
        dir.path(),
        "SELECT amount, no_such_column FROM transactions",
        &repo_path("pipelines/models/fraud-lr"),
    );
    let out = streamscore(&["run", "--pipeline", pipeline.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_eq!(
        err.matches("No field named no_such_column").count(),
        1,
        "{err}"
    );
    let printed = err.lines().filter(|l| l.starts_with("error:")).count();
    assert_eq!(printed, 1, "{err}");
}

/// `evaluate` prints every metric of a bundle on a labelled file.
#[test]
fn evaluate_prints_the_metrics_of_a_bundle_on_labelled_data() {
    let out = streamscore(&[
        "evaluate",
        "--pipeline",
        "pipelines/german_credit.toml",
        "--bundle",
        "pipelines/models/german-credit",
        "--data",
        "data/german_credit.csv",
        "--label",
        "creditability",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("1000 rows, 300 positives"), "{stdout}");
    for metric in [
        "AUC 0.",
        "average precision 0.",
        "Brier 0.",
        "precision 0.",
        "recall 0.",
    ] {
        assert!(stdout.contains(metric), "{metric}: {stdout}");
    }
}

/// `models optimize` measures pruned variants of a forest on labelled data
/// and writes each as a bundle that loads.
#[test]
fn optimize_measures_and_writes_pruned_variants() {
    let dir = tempfile::tempdir().unwrap();
    let original = Bundle::load(&repo_path("pipelines/models/german-credit")).unwrap();
    let out = streamscore(&[
        "models",
        "optimize",
        "--pipeline",
        "pipelines/german_credit.toml",
        "--bundle",
        "pipelines/models/german-credit",
        "--data",
        "data/german_credit.csv",
        "--label",
        "creditability",
        "--out-dir",
        dir.path().to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let bytes = |variant: &str| -> u64 {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(variant))
            .unwrap_or_else(|| panic!("no {variant} row:\n{stdout}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    assert!(
        bytes("depth-4") < bytes("depth-6") && bytes("depth-6") < bytes("original"),
        "{stdout}"
    );
    assert!(bytes("min-leaf-50") < bytes("min-leaf-20"), "{stdout}");
    assert!(
        bytes("ccp-0.002") < bytes("ccp-0.0005") && bytes("ccp-0.0005") < bytes("original"),
        "{stdout}"
    );
    assert!(
        bytes("quant-u8") < bytes("quant-u16")
            && bytes("quant-u16") < bytes("quant-f32")
            && bytes("quant-f32") < bytes("original"),
        "{stdout}"
    );
    for variant in [
        "original",
        "depth-4",
        "depth-6",
        "min-leaf-20",
        "min-leaf-50",
        "ccp-0.0005",
        "ccp-0.002",
        "quant-f32",
        "quant-u16",
        "quant-u8",
    ] {
        let bundle = Bundle::load(&dir.path().join(variant)).unwrap();
        assert!(
            bundle.version().starts_with(original.version()),
            "{variant}"
        );
    }
}

/// `state warm` folds history into the state a run then opens, and refuses
/// per-partition state, whose partitions history cannot tell.
#[test]
fn state_warm_folds_history_and_refuses_partition_scope() {
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history.ndjson");
    let out = streamscore(&[
        "simulate",
        "--out",
        history.to_str().unwrap(),
        "--days",
        "10",
        "--customers",
        "100",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let state = dir.path().join("state");
    let warm = |pipeline: &str| {
        streamscore(&[
            "state",
            "warm",
            "--pipeline",
            pipeline,
            "--data",
            history.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
        ])
    };
    let out = warm("pipelines/fraud.toml");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let keys: usize = stdout
        .split(" window keys written")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no key count in {stdout}"));
    assert!(keys > 100, "{stdout}");

    let example = std::fs::read_to_string(repo_path("pipelines/fraud.toml")).unwrap();
    let per_partition =
        repo_path("pipelines").join(format!("partition-scope-{}.toml", std::process::id()));
    std::fs::write(
        &per_partition,
        example.replace("scope = \"instance\"", "scope = \"partition\""),
    )
    .unwrap();
    let out = warm(per_partition.to_str().unwrap());
    std::fs::remove_file(&per_partition).unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("needs `windows.scope = \"instance\"`"),
        "{}",
        text(&out.stderr)
    );
}

//! Models that change while the stream runs, against the real broker and
//! the real binary: swaps under load lose and duplicate nothing and every
//! score carries the version that was current; bad versions are refused and
//! the old one keeps serving; the admin routes need the token; a challenger
//! scores beside the champion to the shadow topic.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use streamscore::model::serving::registry::{HistoryEntry, Registry};
use streamscore::model::{Bundle, BundleParts, FeatureSpec, Logistic, Model};

use crate::support::*;

const NAME: &str = "fraud-lr";
const TOKEN: &str = "test-token-7c1e";

/// The committed bundle with another version and its intercept moved by
/// `shift` (so the two versions score differently).
fn variant(version: &str, shift: f64, rename_features: bool) -> Bundle {
    let base = Bundle::load(&repo_path("pipelines/models/fraud-lr")).unwrap();
    let Model::Logistic(logistic) = &base.model else {
        panic!("the committed bundle is a logistic regression");
    };
    let features = base
        .manifest
        .features
        .iter()
        .map(|f| FeatureSpec {
            name: if rename_features {
                format!("{}_gone", f.name)
            } else {
                f.name.clone()
            },
            data_type: f.data_type.clone(),
        })
        .collect();
    Bundle::assemble(BundleParts {
        name: NAME.into(),
        version: version.into(),
        features,
        preprocessing: base.manifest.preprocessing.clone(),
        threshold: base.manifest.threshold,
        provenance: BTreeMap::new(),
        metrics: BTreeMap::new(),
        model: Model::Logistic(Logistic {
            coefficients: logistic.coefficients.clone(),
            intercept: logistic.intercept + shift,
        }),
        check_features: base.manifest.check_row.features.clone(),
    })
    .unwrap()
}

/// A registry under `dir` with versions `a` (the champion) and `b`.
fn registry_with_a_and_b(dir: &Path) -> PathBuf {
    let path = dir.join("registry");
    let registry = Registry::open(&path);
    registry
        .register(&variant("a", 0.0, false), "test")
        .unwrap();
    registry
        .register(&variant("b", 2.0, false), "test")
        .unwrap();
    path
}

/// The test pipeline, following `registry` (polled every 200 ms), with the
/// admin token in a file, and optionally a shadow topic.
fn registry_pipeline(
    topics: &Topics,
    dir: &Path,
    registry: &Path,
    shadow: Option<&str>,
) -> PathBuf {
    let path = topics.write_pipeline(dir, 500);
    let token_file = dir.join("admin-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let bundle_line = format!(
        "bundle = \"{}\"",
        repo_path("pipelines/models/fraud-lr").display()
    );
    let mut text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(&bundle_line));
    text = text
        .replace(
            &bundle_line,
            &format!(
                "registry = \"{}\"\nname = \"{NAME}\"\nregistry_poll_ms = 200",
                registry.display()
            ),
        )
        .replace(
            "[admin]\n",
            &format!("[admin]\ntoken_file = \"{}\"\n", token_file.display()),
        );
    if let Some(shadow) = shadow {
        let line = format!("dead_letter_topic = \"{}\"", topics.dead_letters);
        text = text.replace(&line, &format!("{line}\nshadow_topic = \"{shadow}\""));
    }
    std::fs::write(&path, text).unwrap();
    path
}

fn models_cli(args: &[&str], registry: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_streamscore"))
        .arg("models")
        .args(args)
        .arg("--registry")
        .arg(registry)
        .output()
        .unwrap()
}

fn post(address: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let auth = token.map(|t| format!("Authorization: Bearer {t}"));
    let mut headers = vec!["X-Streamscore-Actor: models-test"];
    headers.extend(auth.as_deref());
    http_request(address, "POST", path, &headers, body)
}

/// Waits until the engine's GET /models names `champion`.
fn wait_until_serving(address: &str, champion: &str) {
    let auth = format!("Authorization: Bearer {TOKEN}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = http_request(address, "GET", "/models", &[&auth], "");
        assert_eq!(status, 200, "{body}");
        let serving: serde_json::Value = serde_json::from_str(&body).unwrap();
        if serving["champion"] == champion {
            return;
        }
        assert!(Instant::now() < deadline, "still serving {body}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn score_json(message: &OwnedMessage) -> serde_json::Value {
    serde_json::from_slice(message.payload().unwrap()).unwrap()
}

fn champion_in_state(registry: &Path) -> Option<String> {
    Registry::open(registry).state(NAME).unwrap().champion
}

/// Per partition, (first offset, version) of each champion's first_scored
/// entry, in history order.
fn first_scored(history: &[HistoryEntry]) -> HashMap<i32, Vec<(i64, String)>> {
    let mut starts: HashMap<i32, Vec<(i64, String)>> = HashMap::new();
    for e in history
        .iter()
        .filter(|e| e.event == "first_scored" && e.role.as_deref() == Some("champion"))
    {
        for (&partition, &offset) in &e.first_offsets {
            starts
                .entry(partition)
                .or_default()
                .push((offset, e.version.clone().unwrap()));
        }
    }
    starts
}

/// 100,000 events with 20 promotions and rollbacks during the stream, half
/// from the command line and half over HTTP. One instance, one group, a
/// clean stop: no Tansu restart or crash is involved.
#[tokio::test(flavor = "multi_thread")]
async fn swaps_under_load_lose_nothing_and_every_score_names_the_current_version() {
    const EVENTS: usize = 100_000;
    const CHANGES: usize = 20;
    let topics = Topics::create(3).await;
    let dir = tempfile::tempdir().unwrap();
    let registry = registry_with_a_and_b(dir.path());
    let pipeline = registry_pipeline(&topics, dir.path(), &registry, None);
    let mut run = spawn_run(&pipeline, dir.path(), "run");
    let address = admin_address(dir.path(), "run");
    let mut scores = TopicReader::new(&topics.output, topics.partitions);
    // The events go out in one chunk per change, and each change is made
    // while the engine scores its chunk. The next chunk waits until the
    // engine serves the new champion and has scored this chunk.
    let events = valid_events(EVENTS);
    let mut produced = Vec::new();
    for (i, chunk) in events.chunks(EVENTS / CHANGES).enumerate() {
        produced.extend(produce(&topics.input, chunk).await);
        let promote = i % 2 == 0;
        let by_cli = i % 4 < 2;
        if by_cli {
            let out = if promote {
                models_cli(&["promote", NAME, "b"], &registry)
            } else {
                models_cli(&["rollback", NAME], &registry)
            };
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        } else {
            let route = if promote { "promote" } else { "rollback" };
            let body = if promote { r#"{"version": "b"}"# } else { "" };
            let (status, reply) = post(
                &address,
                &format!("/models/{NAME}/{route}"),
                Some(TOKEN),
                body,
            );
            assert_eq!(status, 200, "{reply}");
        }
        let expected = if promote { "b" } else { "a" };
        wait_until_serving(&address, expected);
        let so_far = produced.len();
        assert!(
            scores.read_until(Duration::from_secs(120), |m| m.len() >= so_far),
            "{} of {so_far} scores; log:\n{}",
            scores.messages.len(),
            log_of(dir.path(), "run")
        );
    }
    assert!(
        scores.read_until(Duration::from_secs(240), |m| m.len() >= EVENTS),
        "{} of {EVENTS} scores; log:\n{}",
        scores.messages.len(),
        log_of(dir.path(), "run")
    );
    stop_cleanly(&mut run, dir.path(), "run");
    scores.poll_for(Duration::from_secs(1));

    // Every input offset has exactly one score.
    let counts = scored_offsets(&scores.messages);
    let missing: Vec<_> = produced
        .iter()
        .filter(|p| !counts.contains_key(p))
        .collect();
    assert!(
        missing.is_empty(),
        "{} offsets unscored, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let duplicated = counts.values().filter(|&&n| n > 1).count();
    assert_eq!(duplicated, 0, "a clean stop left duplicates");
    assert_eq!(scores.messages.len(), EVENTS);

    // Each score's version is the one whose activation last began at or
    // before its offset in its partition, as the history records.
    let history = Registry::open(&registry).history(NAME).unwrap();
    let starts = first_scored(&history);
    let mut versions_seen = HashSet::new();
    for message in &scores.messages {
        let score = score_json(message);
        let partition = score["partition"].as_i64().unwrap() as i32;
        let offset = score["offset"].as_i64().unwrap();
        let version = score["model_version"].as_str().unwrap();
        let current = starts[&partition]
            .iter()
            .rfind(|(first, _)| *first <= offset)
            .map(|(_, v)| v.as_str());
        assert_eq!(
            Some(version),
            current,
            "partition {partition} offset {offset}: history says {current:?}"
        );
        versions_seen.insert(version.to_owned());
    }
    assert_eq!(
        versions_seen,
        HashSet::from(["a".to_owned(), "b".to_owned()])
    );
    // No assertion on how many version changes each partition saw: whether
    // a chunk is scored before or after the change that follows it is a
    // race by design (an earlier version of this test counted them and
    // failed one run in three). Each change is confirmed served above
    // (wait_until_serving), and every score's version is checked against
    // the history.
    let changes: Vec<&HistoryEntry> = history
        .iter()
        .filter(|e| e.event == "promote" || e.event == "rollback")
        .collect();
    assert_eq!(changes.len(), CHANGES);
    assert!(changes.iter().any(|e| e.by.starts_with("cli:")));
    assert!(
        changes
            .iter()
            .any(|e| e.by.starts_with("http:models-test@"))
    );
}

/// A tampered payload, a bundle whose features the SQL does not produce and
/// a truncated manifest are each promoted and refused; the old version goes
/// on serving, and the refusals show in the log and in /metrics. Without
/// the token, or with a wrong one, the routes answer 401 and change nothing.
#[tokio::test(flavor = "multi_thread")]
async fn bad_versions_and_bad_tokens_are_refused_and_the_old_version_serves_on() {
    let topics = Topics::create(3).await;
    let dir = tempfile::tempdir().unwrap();
    let registry_dir = registry_with_a_and_b(dir.path());
    let registry = Registry::open(&registry_dir);
    for (version, rename) in [("tampered", false), ("misfit", true), ("truncated", false)] {
        registry
            .register(&variant(version, 1.0, rename), "test")
            .unwrap();
    }
    let tampered = registry.version_dir(NAME, "tampered").join("model.json");
    let text = std::fs::read_to_string(&tampered).unwrap();
    std::fs::write(&tampered, tampered_payload(&text)).unwrap();
    let manifest = registry
        .version_dir(NAME, "truncated")
        .join("manifest.json");
    let text = std::fs::read(&manifest).unwrap();
    std::fs::write(&manifest, &text[..text.len() / 2]).unwrap();

    let pipeline = registry_pipeline(&topics, dir.path(), &registry_dir, None);
    let mut run = spawn_run(&pipeline, dir.path(), "run");
    let address = admin_address(dir.path(), "run");
    produce(&topics.input, &valid_events(200)).await;
    let mut scores = TopicReader::new(&topics.output, topics.partitions);
    assert!(scores.read_until(Duration::from_secs(60), |m| m.len() >= 200));

    // The token.
    let promote_b = format!("/models/{NAME}/promote");
    for token in [None, Some("wrong-token")] {
        let (status, _) = post(&address, &promote_b, token, r#"{"version": "b"}"#);
        assert_eq!(status, 401, "token {token:?}");
        let (status, _) = post(&address, &format!("/models/{NAME}/rollback"), token, "");
        assert_eq!(status, 401, "token {token:?}");
    }
    assert_eq!(http_request(&address, "GET", "/models", &[], "").0, 401);
    assert_eq!(champion_in_state(&registry_dir).as_deref(), Some("a"));

    // Over HTTP: refused before the state changes (422).
    for (version, needle) in [
        ("tampered", "checksum"),
        ("truncated", "manifest is not valid"),
        ("misfit", "does not fit this pipeline"),
    ] {
        let (status, reply) = post(
            &address,
            &promote_b,
            Some(TOKEN),
            &format!(r#"{{"version": "{version}"}}"#),
        );
        assert_eq!(status, 422, "{version}: {reply}");
        assert!(reply.contains(needle), "{version}: {reply}");
        assert_eq!(champion_in_state(&registry_dir).as_deref(), Some("a"));
    }
    // From the command line: the CLI refuses what it can check itself...
    let out = models_cli(&["promote", NAME, "tampered"], &registry_dir);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("checksum"));
    // ...but only the engine knows its SQL: it refuses the misfit when the
    // state file names it, and keeps serving `a`.
    let out = models_cli(&["promote", NAME, "misfit"], &registry_dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused_by_engine = loop {
        let history = registry.history(NAME).unwrap();
        let refused = history.iter().any(|e| {
            e.event == "refused"
                && e.reason
                    .as_deref()
                    .is_some_and(|r| r.contains("does not fit"))
        });
        if refused || Instant::now() > deadline {
            break refused;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(refused_by_engine, "{}", log_of(dir.path(), "run"));
    assert_eq!(champion_in_state(&registry_dir).as_deref(), Some("misfit"));

    produce(&topics.input, &valid_events(200)).await;
    assert!(scores.read_until(Duration::from_secs(60), |m| m.len() >= 400));
    let versions: HashSet<String> = scores
        .messages
        .iter()
        .map(|m| score_json(m)["model_version"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(versions, HashSet::from(["a".to_owned()]));

    let (_, metrics) = http_get(&address, "/metrics");
    for (reason, at_least) in [
        ("checksum", 1.0),
        ("invalid_manifest", 1.0),
        ("does_not_fit", 2.0),
    ] {
        let refused = sample_sum(
            &metrics,
            "streamscore_model_refusals_total",
            &[&format!("reason=\"{reason}\"")],
        );
        assert!(
            refused.is_some_and(|n| n >= at_least),
            "{reason}: {refused:?}\n{metrics}"
        );
    }
    assert!(
        sample_sum(
            &metrics,
            "streamscore_model_info",
            &["version=\"a\"", "role=\"champion\""]
        ) == Some(1.0),
        "{metrics}"
    );
    assert!(log_of(dir.path(), "run").contains("model version refused"));
    stop_cleanly(&mut run, dir.path(), "run");
}

/// A challenger set over HTTP scores every event beside the champion, to
/// the shadow topic, marked as challenger; the live comparison reaches
/// `models show`, GET /models and /metrics; promoting it makes it the
/// champion.
#[tokio::test(flavor = "multi_thread")]
async fn a_challenger_scores_to_the_shadow_topic_and_is_promoted_without_a_gap() {
    const EVENTS: usize = 1_000;
    let topics = Topics::create(3).await;
    let shadow = unique("shadow");
    streamscore::kafka::admin::ensure_topics(&brokers(), &[&shadow], topics.partitions)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let registry = registry_with_a_and_b(dir.path());
    let pipeline = registry_pipeline(&topics, dir.path(), &registry, Some(&shadow));
    let mut run = spawn_run(&pipeline, dir.path(), "run");
    let address = admin_address(dir.path(), "run");

    let (status, reply) = post(
        &address,
        &format!("/models/{NAME}/promote"),
        Some(TOKEN),
        r#"{"version": "b", "role": "challenger"}"#,
    );
    assert_eq!(status, 200, "{reply}");
    produce(&topics.input, &valid_events(EVENTS)).await;
    let mut scores = TopicReader::new(&topics.output, topics.partitions);
    let mut shadows = TopicReader::new(&shadow, topics.partitions);
    assert!(scores.read_until(Duration::from_secs(60), |m| m.len() >= EVENTS));
    assert!(shadows.read_until(Duration::from_secs(60), |m| m.len() >= EVENTS));
    let by_event = |messages: &[OwnedMessage]| -> HashMap<String, serde_json::Value> {
        messages
            .iter()
            .map(|m| {
                let s = score_json(m);
                (s["event_id"].as_str().unwrap().to_owned(), s)
            })
            .collect()
    };
    let (champion, challenger) = (by_event(&scores.messages), by_event(&shadows.messages));
    assert_eq!(champion.len(), EVENTS);
    assert_eq!(
        champion.keys().collect::<HashSet<_>>(),
        challenger.keys().collect::<HashSet<_>>()
    );
    for (event, c) in &challenger {
        assert_eq!(
            (c["role"].as_str(), c["model_version"].as_str()),
            (Some("challenger"), Some("b"))
        );
        let main = &champion[event];
        assert_eq!(
            (main["role"].as_str(), main["model_version"].as_str()),
            (Some("champion"), Some("a"))
        );
        // b's intercept is 2 higher: it scores every event higher.
        assert!(c["score"].as_f64() > main["score"].as_f64(), "{event}");
    }

    // The comparison: over HTTP at once, in `models show` once written.
    let (status, body) = http_request(
        &address,
        "GET",
        "/models",
        &[&format!("Authorization: Bearer {TOKEN}")],
        "",
    );
    assert_eq!(status, 200, "{body}");
    let live: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(live["comparison"]["events"], EVENTS);
    // Same coefficients, shifted intercept: the same ranking.
    assert!(
        live["comparison"]["rank_correlation"].as_f64().unwrap() > 0.999,
        "{body}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let shown = loop {
        let out = models_cli(&["show", NAME], &registry);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains(&format!("last {EVENTS} events")) || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        shown.contains(&format!("last {EVENTS} events"))
            && shown.contains("rank correlation 1.0000"),
        "{shown}"
    );
    let (_, metrics) = http_get(&address, "/metrics");
    assert!(
        sample_sum(&metrics, "streamscore_challenger_disagreement_rate", &[]).is_some(),
        "{metrics}"
    );

    // Promote the challenger: it becomes the champion, nothing is lost.
    let (status, reply) = post(
        &address,
        &format!("/models/{NAME}/promote"),
        Some(TOKEN),
        "",
    );
    assert_eq!(status, 200, "{reply}");
    assert!(
        reply.contains(r#""champion":"b""#) && reply.contains(r#""challenger":null"#),
        "{reply}"
    );
    produce(&topics.input, &valid_events(EVENTS)).await;
    assert!(scores.read_until(Duration::from_secs(60), |m| m.len() >= 2 * EVENTS));
    stop_cleanly(&mut run, dir.path(), "run");
    let after: Vec<serde_json::Value> = scores.messages[EVENTS..].iter().map(score_json).collect();
    assert!(
        after
            .iter()
            .all(|s| s["model_version"] == "b" && s["role"] == "champion")
    );
    shadows.poll_for(Duration::from_secs(1));
    assert_eq!(
        shadows.messages.len(),
        EVENTS,
        "no shadow scores once b is champion"
    );
}

/// The request API during swaps: each request is scored by one lineup, so
/// every record of an array names the same version; after each swap the
/// next request names the new champion. On the mock cluster: the swaps
/// come from the registry, not the broker.
#[tokio::test(flavor = "multi_thread")]
async fn api_requests_during_swaps_are_each_scored_by_one_version() {
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    let topics = Topics::on_mock(&mock, 1);
    let dir = tempfile::tempdir().unwrap();
    let registry = registry_with_a_and_b(dir.path());
    let pipeline = registry_pipeline(&topics, dir.path(), &registry, None);
    let mut text = std::fs::read_to_string(&pipeline).unwrap();
    text.push_str("\n[serve]\nlisten = \"127.0.0.1:0\"\ndeadline_ms = 60000\n");
    std::fs::write(&pipeline, text).unwrap();
    let mut run = spawn_run(&pipeline, dir.path(), "run");
    let admin = admin_address(dir.path(), "run");
    let api = listening_address(dir.path(), "run", "scoring API listening");
    let records: Vec<String> = valid_events(100)
        .into_iter()
        .map(|(_, payload)| String::from_utf8(payload.unwrap()).unwrap())
        .collect();
    let body = format!("[{}]", records.join(","));
    // The versions of one request's records: all of them must agree.
    let versions_of = |body: &str| -> HashSet<String> {
        let (status, reply) = http_request(&api, "POST", "/v1/score", &[], body);
        assert_eq!(status, 200, "{reply}");
        let answers: serde_json::Value = serde_json::from_str(&reply).unwrap();
        answers
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["model_version"].as_str().unwrap().to_owned())
            .collect()
    };
    for _ in 0..300 {
        if http_request(&api, "POST", "/v1/score", &[], "[]").0 == 400 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut seen_while_swapping = Vec::new();
    std::thread::scope(|scope| {
        let hammer = scope.spawn(|| {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                seen.push(versions_of(&body));
            }
            seen
        });
        for i in 0..6 {
            let (args, expected) = match i % 2 {
                0 => (vec!["promote", NAME, "b"], "b"),
                _ => (vec!["rollback", NAME], "a"),
            };
            let out = models_cli(&args, &registry);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            wait_until_serving(&admin, expected);
            assert_eq!(
                versions_of(&body),
                HashSet::from([expected.to_owned()]),
                "a request after the swap to {expected}"
            );
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        seen_while_swapping = hammer.join().unwrap();
    });
    stop_cleanly(&mut run, dir.path(), "run");
    assert!(!seen_while_swapping.is_empty());
    for versions in &seen_while_swapping {
        assert_eq!(versions.len(), 1, "one request named {versions:?}");
    }
}

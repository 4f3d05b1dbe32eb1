//! The world before the stream: the simulated history and live part
//! (shifted with `--shift`), a model trained on history past its warm-up,
//! and the history folded into the engine's window state.

use super::{DemoError, DemoOptions, step};
use crate::config::Pipeline;
use crate::engine::EngineState;
use crate::model::Bundle;
use crate::simulate::{SimulationConfig, Transaction, simulate};
use crate::train;
use crate::train::fit::TrainOptions;

/// How much `--shift` multiplies the live amounts by.
const SHIFT_FACTOR: f64 = 3.0;

pub(super) fn simulate_split(options: &DemoOptions) -> (Vec<Transaction>, Vec<Transaction>) {
    // About 2,000 transactions a day with the default world; add days until
    // the live part has enough events.
    let live_days = (options.events / 1_500 + 1) as u32;
    let all = simulate(&SimulationConfig {
        days: options.history_days + live_days,
        seed: options.seed,
        ..SimulationConfig::default()
    });
    let cut = chrono::Duration::days(i64::from(options.history_days));
    let start = SimulationConfig::default().start;
    let (history, mut live): (Vec<_>, Vec<_>) = all.into_iter().partition(|t| t.time < start + cut);
    live.truncate(options.events);
    if options.shift {
        let half = live.len() / 2;
        for t in &mut live[half..] {
            t.amount *= SHIFT_FACTOR;
        }
        if let Some(first) = live.get(half) {
            eprintln!(
                "--shift: amounts x{SHIFT_FACTOR} from {} ({} live transactions)",
                first.time,
                live.len() - half
            );
        }
    }
    (history, live)
}

pub(super) async fn train_on(
    pipeline: &Pipeline,
    history: &[Transaction],
    version: &str,
) -> Result<(Bundle, Option<f64>), DemoError> {
    let decoder = pipeline.input_decoder();
    let (decoded, rejected) =
        train::decode_lines(&decoder, &to_ndjson(history)).map_err(step("decode history"))?;
    let set = train::features_for(pipeline, decoded, rejected)
        .await
        .map_err(step("derive features"))?;
    let set = past_the_warmup(pipeline, set)?;
    let options = TrainOptions {
        name: "fraud-lr-demo".into(),
        version: version.to_owned(),
        ..TrainOptions::default()
    };
    let request = train::TrainRequest::new("is_fraud", options);
    let report = train::train(&set, &request, |_, _| {}).map_err(step("train"))?;
    eprintln!(
        "trained {} {} on {} rows and {} features; hold-out AUC {}",
        report.bundle.name(),
        report.bundle.version(),
        report.training_rows,
        report.bundle.manifest.features.len(),
        report
            .evaluation
            .auc
            .map_or("n/a".into(), |a| format!("{a:.3}"))
    );
    Ok((report.bundle, report.evaluation.auc))
}

/// The rows past the pipeline's longest window (with its shift), as
/// `train --warmup` gives them: earlier rows' windows cannot be full yet,
/// unlike the live stream's (README, "A warm-up, and periods"). History
/// shorter than twice that is used whole, with a note.
fn past_the_warmup(
    pipeline: &Pipeline,
    set: train::TrainingSet,
) -> Result<train::TrainingSet, DemoError> {
    let reach = pipeline.windows.as_ref().and_then(|w| {
        w.features
            .iter()
            .map(|f| f.window_ms.saturating_add(f.shift_ms))
            .max()
    });
    let Some(reach) = reach else {
        return Ok(set);
    };
    let times = set.decoded.column_by_name("event_time").and_then(|c| {
        c.as_any()
            .downcast_ref::<arrow::array::TimestampMillisecondArray>()
            .and_then(|t| Some((arrow::compute::min(t)?, arrow::compute::max(t)?)))
    });
    if times.is_none_or(|(first, last)| last - first < 2 * reach) {
        eprintln!(
            "history shorter than twice the longest window ({} days): trained on all of it, \
             warm-up included",
            reach / 86_400_000
        );
        return Ok(set);
    }
    let period = train::data::Period {
        warmup_ms: Some(reach),
        ..Default::default()
    };
    set.within("event_time", period)
        .map_err(step("cut the warm-up"))
}

/// Folds history into the engine's window state, as `streamscore state
/// warm` does, before the engine opens it.
pub(super) async fn warm_state(
    pipeline: &Pipeline,
    history: &[Transaction],
) -> Result<(), DemoError> {
    let Some(state) = EngineState::open(pipeline).map_err(step("open the state"))? else {
        return Ok(());
    };
    let Some(windows) = &state.windows else {
        return Ok(());
    };
    let decoder = pipeline.input_decoder();
    let (decoded, _) =
        train::decode_lines(&decoder, &to_ndjson(history)).map_err(step("decode history"))?;
    let folded = windows
        .warm(&decoded, &state.checkpoint)
        .map_err(step("warm the state"))?;
    let staged = state
        .checkpoint
        .stage("", &Default::default(), folded.changes);
    state
        .checkpoint
        .commit(staged)
        .map_err(step("warm the state"))?;
    Ok(())
}

fn to_ndjson(transactions: &[Transaction]) -> Vec<u8> {
    transactions
        .iter()
        .flat_map(|t| {
            let mut line = serde_json::to_vec(t).expect("a transaction serialises");
            line.push(b'\n');
            line
        })
        .collect()
}

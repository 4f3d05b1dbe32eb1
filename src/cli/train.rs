//! `streamscore train`: its options, and the run from a history file to a
//! written (and read back) bundle.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::DEFAULT_PIPELINE;
use crate::config::{Pipeline, parse_duration};
use crate::fraud_metrics::ThresholdRule;
use crate::model::Bundle;
use crate::model::serving::registry::Registry;
use crate::train::build::{TrainReport, TrainRequest};
use crate::train::data::KnownCompromised;
use crate::train::fit::{Candidate, TrainOptions};
use crate::train::select::{Folds, Metric};

/// The labelled history a command reads, and the pipeline that decodes it
/// and makes its features.
#[derive(Debug, Args)]
pub struct LabelledData {
    #[arg(long, default_value = DEFAULT_PIPELINE)]
    pub pipeline: PathBuf,
    /// History file: .csv with a header row, otherwise NDJSON.
    #[arg(long)]
    pub data: PathBuf,
    /// Column that holds the label: of the SQL output if it has one, else
    /// of the decoded records.
    #[arg(long, default_value = "is_fraud")]
    pub label: String,
    /// Use only the rows from this event time on (RFC 3339, or a date such
    /// as 2026-04-01). The history before it still fills the windows, in
    /// event-time order, as in the stream.
    #[arg(long, alias = "train-from", value_parser = parse_time)]
    pub from: Option<i64>,
    /// ...up to (not including) this event time.
    #[arg(long, alias = "train-to", value_parser = parse_time)]
    pub to: Option<i64>,
    /// Use only the rows this long after the first event (30d for the
    /// example's 30-day windows): before, windows cannot be full yet, as
    /// they always are in the stream.
    #[arg(long, conflicts_with = "from", value_parser = parse_duration)]
    pub warmup: Option<Duration>,
}

impl LabelledData {
    /// The pipeline, and the history through its decode and SQL, cut to
    /// the period asked for by the event times in `time_column`.
    async fn prepare(
        &self,
        time_column: &str,
    ) -> Result<(Pipeline, crate::train::TrainingSet), TrainCommandError> {
        let pipeline = Pipeline::load(&self.pipeline, None)?;
        let set = crate::train::prepare(&pipeline, &self.data).await?;
        Ok((pipeline, set.within(time_column, self.period())?))
    }

    fn period(&self) -> crate::train::data::Period {
        crate::train::data::Period {
            from_ms: self.from,
            to_ms: self.to,
            warmup_ms: self.warmup.map(|w| w.as_millis() as i64),
        }
    }
}

/// An event time on the command line: RFC 3339, or a date (midnight UTC).
fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(time.timestamp_millis());
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(|d| {
            d.and_hms_opt(0, 0, 0)
                .unwrap_or_default()
                .and_utc()
                .timestamp_millis()
        })
        .map_err(|_| format!("`{text}` is neither RFC 3339 nor a date such as 2026-04-01"))
}

/// The columns card precision@k (and time folds) read, and k.
#[derive(Debug, Args)]
pub struct CardColumns {
    #[arg(long, default_value = "card_id")]
    pub card_column: String,
    #[arg(long, default_value = "event_time")]
    pub time_column: String,
    /// k of card precision@k per day.
    #[arg(long, default_value_t = 100)]
    pub k: usize,
}

impl CardColumns {
    /// A request for `label` reading these columns.
    fn request(&self, label: &str, options: TrainOptions) -> TrainRequest {
        TrainRequest {
            card_column: self.card_column.clone(),
            time_column: self.time_column.clone(),
            card_precision_k: self.k,
            ..TrainRequest::new(label, options)
        }
    }
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub input: LabelledData,
    #[command(flatten)]
    pub cards: CardColumns,
    /// Where to write the bundle directory.
    #[arg(long, required_unless_present = "register")]
    pub out: Option<PathBuf>,
    /// Add the bundle to this registry as a new version (the first version
    /// of a name becomes its champion).
    #[arg(long, env = "STREAMSCORE_REGISTRY")]
    pub register: Option<PathBuf>,
    /// The model's name; default: the pipeline file's name (`fraud` for
    /// fraud.toml, `german-credit` for german_credit.toml).
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, default_value = "1")]
    pub model_version: String,
    /// Comma-separated feature columns; default: every numeric SQL column.
    #[arg(long, value_delimiter = ',')]
    pub features: Vec<String>,
    /// Candidate kinds: logistic, tree, forest, gbm. More than one needs --cv
    /// or --time-folds to choose between them.
    #[arg(long, value_delimiter = ',', default_value = "logistic")]
    pub models: Vec<String>,
    /// Stratified k-fold cross-validation with this many folds.
    #[arg(long, conflicts_with = "time_folds")]
    pub cv: Option<usize>,
    /// Time folds: train on the past, skip --gap, validate on the next period.
    #[arg(long)]
    pub time_folds: Option<usize>,
    /// The label delay skipped between training and validation (7d, 12h, 30m).
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    pub gap: Duration,
    /// Selection metric: ap (average precision), auc, brier, card-precision.
    #[arg(long, default_value = "ap")]
    pub metric: String,
    /// A fixed decision threshold...
    #[arg(long, default_value_t = 0.5)]
    pub threshold: f64,
    /// ...or the lowest threshold reaching this precision...
    #[arg(long, conflicts_with = "alert_budget")]
    pub target_precision: Option<f64>,
    /// ...or the one that flags at most this many events a day.
    #[arg(long)]
    pub alert_budget: Option<f64>,
    /// Logistic regression: the L2 penalty on the standardised coefficients.
    #[arg(long, default_value_t = 0.1)]
    pub l2_penalty: f64,
    /// Trees, forests and boosting: the deepest split level.
    #[arg(long, default_value_t = 8)]
    pub max_depth: usize,
    /// Trees and forests: the fewest training rows a leaf may hold.
    #[arg(long, default_value_t = 5)]
    pub min_leaf: usize,
    /// Forests: how many trees; gbm: how many boosting rounds.
    #[arg(long, default_value_t = 100)]
    pub trees: usize,
    /// Forests: features each split chooses from (default: the square root
    /// of the feature count).
    #[arg(long)]
    pub max_features: Option<usize>,
    /// gbm: the step of each round (its tree's leaves are scaled by it).
    #[arg(long, default_value_t = 0.1)]
    pub learning_rate: f64,
    /// Calibrate the scores on the evaluated rows: isotonic or platt.
    #[arg(long)]
    pub calibrate: Option<String>,
    /// Also write a self-contained HTML page of the evaluation here.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainCommandError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Training(#[from] crate::train::TrainingError),
    #[error(transparent)]
    Fit(#[from] crate::train::fit::TrainError),
    #[error(transparent)]
    Bundle(#[from] crate::model::BundleError),
    #[error(transparent)]
    Registry(#[from] crate::model::serving::registry::RegistryError),
    #[error("{0}")]
    Usage(String),
    #[error("cannot write the report {path}: {source}")]
    Report {
        path: String,
        source: std::io::Error,
    },
}

impl TrainArgs {
    fn request(&self) -> Result<TrainRequest, TrainCommandError> {
        let candidates = self
            .models
            .iter()
            .map(|m| m.parse::<Candidate>())
            .collect::<Result<Vec<_>, _>>()?;
        let folds = match (self.cv, self.time_folds) {
            (Some(k), _) => Some(Folds::Stratified { k }),
            (None, Some(folds)) => Some(Folds::Time {
                folds,
                gap_ms: self.gap.as_millis() as i64,
            }),
            (None, None) => None,
        };
        if candidates.len() > 1 && folds.is_none() {
            return Err(TrainCommandError::Usage(
                "several --models need --cv or --time-folds to choose between them".into(),
            ));
        }
        let threshold = match (self.target_precision, self.alert_budget) {
            (Some(p), _) => ThresholdRule::Precision(p),
            (None, Some(b)) => ThresholdRule::AlertBudget(b),
            (None, None) => ThresholdRule::Fixed(self.threshold),
        };
        let options = TrainOptions {
            name: self.name.clone().unwrap_or_else(|| {
                self.input
                    .pipeline
                    .file_stem()
                    .map_or("model".into(), |s| s.to_string_lossy().replace('_', "-"))
            }),
            version: self.model_version.clone(),
            features: self.features.clone(),
            threshold: self.threshold,
            l2_penalty: self.l2_penalty,
            max_depth: self.max_depth,
            min_leaf: self.min_leaf,
            trees: self.trees,
            max_features: self.max_features.unwrap_or(0),
            learning_rate: self.learning_rate,
            ..TrainOptions::default()
        };
        Ok(TrainRequest {
            candidates,
            folds,
            metric: self.metric.parse::<Metric>()?,
            threshold,
            calibrate: self
                .calibrate
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(TrainCommandError::Usage)?,
            ..self.cards.request(&self.input.label, options)
        })
    }
}

/// Trains, writes the bundle where asked, reads it back, and returns what
/// to print.
pub async fn run(args: &TrainArgs) -> Result<String, TrainCommandError> {
    let request = args.request()?;
    let (_, set) = args.input.prepare(&args.cards.time_column).await?;
    if let Some(first) = set.rejected.first() {
        eprintln!(
            "warning: {} records of {} refused; first, line {}: {}",
            set.rejected.len(),
            args.input.data.display(),
            first.index + 1,
            first.message
        );
    }
    let bar = progress_bar();
    let report = crate::train::train(&set, &request, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let mut written = Vec::new();
    if let Some(out) = &args.out {
        report.bundle.save(out)?;
        written.push(out.clone());
    }
    if let Some(registry) = &args.register {
        let by = format!("train:{}", crate::instance::operator());
        written.push(Registry::open(registry).register(&report.bundle, &by)?);
    }
    for path in &written {
        // Read it back: what was written is what will be served.
        Bundle::load(path)?;
    }
    if let Some(page) = &args.report {
        std::fs::write(page, crate::train::report::html(&report)).map_err(|source| {
            TrainCommandError::Report {
                path: page.display().to_string(),
                source,
            }
        })?;
        written.push(page.clone());
    }
    let shown: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
    Ok(summary(&report, &shown.join(" and ")))
}

#[derive(Debug, Args)]
pub struct EvaluateArgs {
    #[arg(long)]
    pub bundle: PathBuf,
    #[command(flatten)]
    pub input: LabelledData,
    #[command(flatten)]
    pub cards: CardColumns,
    /// Leave out the rows of cards already known compromised on their day
    /// (a fraud at least --delay earlier), as the handbook judges a test
    /// period: a model earns nothing for a card the team had blocked.
    #[arg(long)]
    pub remove_known_compromised: bool,
    /// The label delay, in whole days: a fraud is known this long after.
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    pub delay: Duration,
    /// Count frauds as known only from this event time on (the handbook:
    /// the start of training); default: the whole history.
    #[arg(long, value_parser = parse_time)]
    pub known_from: Option<i64>,
}

impl EvaluateArgs {
    /// The known-compromised rule asked for, if any; the delay must be
    /// whole days (the rule is by day, as the handbook's).
    fn known_compromised(&self) -> Result<Option<KnownCompromised>, TrainCommandError> {
        if !self.remove_known_compromised {
            return Ok(None);
        }
        let seconds = self.delay.as_secs();
        if !seconds.is_multiple_of(86_400) || self.delay.subsec_nanos() != 0 {
            return Err(TrainCommandError::Usage(format!(
                "--delay {}s is not a whole number of days; the known-compromised rule is by day",
                seconds
            )));
        }
        Ok(Some(KnownCompromised {
            label: self.input.label.clone(),
            card_column: self.cards.card_column.clone(),
            time_column: self.cards.time_column.clone(),
            delay_days: (seconds / 86_400) as i64,
            known_from_ms: self.known_from,
        }))
    }
}

/// `streamscore evaluate`: every metric of any bundle on any labelled file,
/// at the bundle's own threshold.
pub async fn evaluate(args: &EvaluateArgs) -> Result<String, TrainCommandError> {
    let bundle = Bundle::load(&args.bundle)?;
    let known = args.known_compromised()?;
    let pipeline = Pipeline::load(&args.input.pipeline, None)?;
    let mut set = crate::train::prepare(&pipeline, &args.input.data).await?;
    let (time_column, period) = (&args.cards.time_column, args.input.period());
    // Known cards come from the whole history, before the period is cut.
    let mut removed = None;
    if let Some(rule) = &known {
        let in_period = set.clone().within(time_column, period)?.decoded.num_rows();
        set = set.without_known_compromised(rule)?;
        let set = set.clone().within(time_column, period)?;
        removed = Some(in_period - set.decoded.num_rows());
    }
    let set = set.within(time_column, period)?;
    let request = args
        .cards
        .request(&args.input.label, TrainOptions::default());
    let (evaluation, unscored) = crate::train::build::evaluate_bundle(&bundle, &set, &request)?;
    let mut notes = String::new();
    if unscored > 0 {
        notes.push_str(&format!(
            " ({unscored} rows the model cannot score left out)"
        ));
    }
    if let Some(count) = removed {
        notes.push_str(&format!(
            " ({count} rows of cards known compromised left out)"
        ));
    }
    Ok(format!(
        "{} {} ({}) on {}: {} rows, {} positives{notes}\n  {}\n",
        bundle.name(),
        bundle.version(),
        bundle.manifest.kind.as_str(),
        args.input.data.display(),
        evaluation.rows,
        evaluation.frauds,
        evaluation.describe(),
    ))
}

fn summary(report: &TrainReport, written: &str) -> String {
    let mut out = report.cv.as_ref().map(|cv| cv.render()).unwrap_or_default();
    out.push_str(&format!(
        "wrote {written} ({} {}, {}): {} training rows\n  evaluated on {} rows ({}): {}\n",
        report.bundle.name(),
        report.bundle.version(),
        report.bundle.manifest.kind.as_str(),
        report.training_rows,
        report.evaluated_rows,
        if report.cv.is_some() {
            "out of fold"
        } else {
            "hold-out"
        },
        report.evaluation.describe(),
    ));
    if let (Some(before), Some(calibration)) = (
        report.brier_uncalibrated,
        &report.bundle.manifest.calibration,
    ) {
        out.push_str(&format!(
            "  calibrated ({}): Brier score {before:.4} before, {:.4} after\n",
            calibration.method(),
            report.evaluation.brier.unwrap_or(f64::NAN),
        ));
    }
    out
}

/// A progress bar on a terminal; nothing otherwise.
fn progress_bar() -> indicatif::ProgressBar {
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let bar = indicatif::ProgressBar::new(1);
        bar.set_style(
            indicatif::ProgressStyle::with_template("fitting {bar:30} {pos}/{len} fits, {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_with_their_unit() {
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1_800)));
        assert!(parse_duration("7").unwrap_err().contains("no unit"));
        // At a342126 this overflowed (a panic in debug, a wrapped value in
        // release) instead of being refused.
        assert!(
            parse_duration("18446744073709551615d")
                .unwrap_err()
                .contains("longer than a century")
        );
        assert!(parse_duration("36501d").is_err());
        assert!(parse_duration("36500d").is_ok());
        assert!(parse_duration("xd").is_err());
    }
}

#[derive(Debug, Args)]
pub struct OptimizeArgs {
    /// A tree or forest bundle.
    #[arg(long)]
    pub bundle: PathBuf,
    /// Labelled validation data.
    #[command(flatten)]
    pub input: LabelledData,
    /// Write every variant here as a bundle directory named after it.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
}

/// `streamscore models optimize`: every variant's size, speed and metrics.
pub async fn optimize(args: &OptimizeArgs) -> Result<String, TrainCommandError> {
    use crate::model::maths::quantised::Precision;
    use crate::train::optimize::{Variant, bundle_size, ns_per_row, variant_of};
    let bundle = Bundle::load(&args.bundle)?;
    let (_, set) = args.input.prepare("event_time").await?;
    let names: Vec<String> = bundle.manifest.feature_names().map(str::to_owned).collect();
    let x = crate::train::fit::feature_matrix(&set.features, &names)?;
    let request = TrainRequest::new(&args.input.label, TrainOptions::default());
    let variants = [
        Variant::Original,
        Variant::MaxDepth(4),
        Variant::MaxDepth(6),
        Variant::MinLeaf(20.0),
        Variant::MinLeaf(50.0),
        Variant::CostComplexity(0.0005),
        Variant::CostComplexity(0.002),
        Variant::Quantise(Precision::F32),
        Variant::Quantise(Precision::Codes(16)),
        Variant::Quantise(Precision::Codes(8)),
    ];
    let show = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.4}"));
    let delta = |v: Option<f64>, base: Option<f64>| match (v, base) {
        (Some(v), Some(b)) => format!("{:+.4}", v - b),
        _ => "n/a".into(),
    };
    let mut out = format!(
        "{} {} ({}) on {}:\n{:<14} {:>10} {:>10} {:>16} {:>16} {:>16}\n",
        bundle.name(),
        bundle.version(),
        bundle.manifest.kind.as_str(),
        args.input.data.display(),
        "variant",
        "bytes",
        "ns/row",
        "auc (change)",
        "ap (change)",
        "brier (change)"
    );
    let mut base = None;
    for variant in variants {
        let Some(made) = variant_of(&bundle, variant) else {
            if matches!(bundle.model, crate::model::Model::Trees { .. }) {
                // A variant that does not apply to these trees (cost
                // complexity needs leaves holding class frequencies).
                continue;
            }
            return Err(TrainCommandError::Usage(format!(
                "`models optimize` prunes and quantises trees and forests; {} is a {}",
                args.bundle.display(),
                bundle.manifest.kind.as_str()
            )));
        };
        let candidate = made?;
        let (e, _) = crate::train::build::evaluate_bundle(&candidate, &set, &request)?;
        let base_e = base.get_or_insert_with(|| e.clone()).clone();
        out.push_str(&format!(
            "{:<14} {:>10} {:>10.1} {:>16} {:>16} {:>16}\n",
            variant.label(),
            bundle_size(&candidate),
            ns_per_row(&candidate.model, x.view()),
            format!("{} ({})", show(e.auc), delta(e.auc, base_e.auc)),
            format!(
                "{} ({})",
                show(e.average_precision),
                delta(e.average_precision, base_e.average_precision)
            ),
            format!("{} ({})", show(e.brier), delta(e.brier, base_e.brier)),
        ));
        if let Some(dir) = &args.out_dir {
            candidate.save(&dir.join(variant.label()))?;
        }
    }
    if let Some(dir) = &args.out_dir {
        out.push_str(&format!(
            "wrote every variant under {}; register the one you keep with `models` or copy it\n",
            dir.display()
        ));
    }
    Ok(out)
}

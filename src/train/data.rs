//! `streamscore train`: history file -> the serving decode + SQL -> linfa.
//! Using the serving path is what keeps training and serving features equal.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, TimestampMillisecondBuilder, new_null_array,
};
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{DataType, Field, Schema, TimestampMillisecondType};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;

use super::fit::TrainError;
use crate::config::Pipeline;
use crate::decode::Decoder;
use crate::engine::features::{FeatureError, FeaturePath, WindowState};
use crate::reject::Rejected;
use crate::timestamp::TimestampFormat;
use crate::transform::TransformError;

#[derive(Debug, thiserror::Error)]
pub enum TrainingError {
    #[error("cannot read training data {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("training data {path}: {source}")]
    Csv {
        path: String,
        source: arrow::error::ArrowError,
    },
    #[error("training data has no valid records ({rejected} refused; first: {first})")]
    NothingValid { rejected: usize, first: String },
    #[error(transparent)]
    Transform(#[from] TransformError),
    #[error(transparent)]
    Features(#[from] FeatureError),
    #[error(
        "the pipeline SQL fails on {rows} history rows (first: {first}); training needs every \
         decoded row to have its features"
    )]
    SqlFailed { rows: usize, first: String },
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(
        "the period asked for needs event times, but `{column}` is not a timestamp column of \
         the schema (set --time-column)"
    )]
    NoEventTime { column: String },
    #[error("no history row lies in the period asked for ({from} to {to})")]
    EmptyPeriod { from: String, to: String },
    #[error("internal error: {0}")]
    Internal(String),
}

/// Decoded history and its features, row for row (cheap to clone: the
/// columns are shared).
#[derive(Clone)]
pub struct TrainingSet {
    pub decoded: RecordBatch,
    pub features: RecordBatch,
    /// NDJSON lines the decoder refused, with their line index.
    pub rejected: Vec<Rejected>,
    /// The event id column (`schema.event_id_field`): never a feature.
    pub event_id: String,
}

/// Which rows of history a model is fitted (or evaluated) on, by event
/// time: from `from` (inclusive), or `warmup` after the first event, up to
/// `to` (exclusive). The whole history is still folded into the window
/// state first, in event-time order, as the stream folds it: rows in a
/// warm-up have windows that cannot be full yet (a 30-day count on day 3),
/// unlike anything the stream scores, so fitting them teaches the model a
/// world it will not see.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Period {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub warmup_ms: Option<i64>,
}

impl Period {
    pub fn is_all(&self) -> bool {
        *self == Period::default()
    }
}

impl TrainingSet {
    /// The rows in `period`, by the event times in `time_column`.
    pub fn within(self, time_column: &str, period: Period) -> Result<Self, TrainingError> {
        if period.is_all() {
            return Ok(self);
        }
        let no_time = || TrainingError::NoEventTime {
            column: time_column.to_owned(),
        };
        let column = self
            .decoded
            .column_by_name(time_column)
            .ok_or_else(no_time)?;
        let times = arrow::compute::cast(
            column,
            &DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None),
        )
        .map_err(|_| no_time())?;
        let times = times
            .as_any()
            .downcast_ref::<arrow::array::TimestampMillisecondArray>()
            .ok_or_else(no_time)?;
        let first = arrow::compute::min(times);
        let from = match (period.from_ms, period.warmup_ms, first) {
            (Some(from), _, _) => Some(from),
            (None, Some(warmup), Some(first)) => Some(first.saturating_add(warmup)),
            _ => None,
        };
        let keep: arrow::array::BooleanArray = times
            .iter()
            .map(|t| {
                Some(t.is_some_and(|t| {
                    from.is_none_or(|from| t >= from) && period.to_ms.is_none_or(|to| t < to)
                }))
            })
            .collect();
        if keep.true_count() == 0 {
            let show = |ms: Option<i64>| {
                ms.and_then(chrono::DateTime::from_timestamp_millis)
                    .map_or("the end".to_owned(), |t| t.to_rfc3339())
            };
            return Err(TrainingError::EmptyPeriod {
                from: show(from),
                to: show(period.to_ms),
            });
        }
        self.keep_rows(&keep)
    }

    /// The rows `keep` marks, in both batches.
    fn keep_rows(self, keep: &arrow::array::BooleanArray) -> Result<Self, TrainingError> {
        let filter = |batch: &RecordBatch| {
            arrow::compute::filter_record_batch(batch, keep)
                .map_err(|e| TrainingError::Internal(e.to_string()))
        };
        Ok(Self {
            decoded: filter(&self.decoded)?,
            features: filter(&self.features)?,
            ..self
        })
    }

    /// Leaves out the rows of cards already known compromised on the
    /// row's day (`KnownCompromised`).
    pub fn without_known_compromised(self, rule: &KnownCompromised) -> Result<Self, TrainingError> {
        let labels = self.labels(&rule.label)?;
        let cards = self.text_column(&rule.card_column).ok_or_else(|| {
            TrainError::BadLabel(format!(
                "--remove-known-compromised needs the card column `{}` without nulls",
                rule.card_column
            ))
        })?;
        let times =
            self.time_column(&rule.time_column)
                .ok_or_else(|| TrainingError::NoEventTime {
                    column: rule.time_column.clone(),
                })?;
        let keep: arrow::array::BooleanArray = rule
            .known_rows(&labels, &cards, &times)
            .iter()
            .map(|&known| Some(!known))
            .collect();
        self.keep_rows(&keep)
    }

    /// The label of each row: from the SQL output when the SQL produces
    /// the column (it may encode text classes as 0/1), else the records'.
    pub fn labels(&self, label: &str) -> Result<Vec<bool>, TrainError> {
        let source = match self.features.column_by_name(label) {
            Some(_) => &self.features,
            None => &self.decoded,
        };
        labels_from(source, label)
    }

    /// A decoded column as text, when it exists and has no nulls.
    pub fn text_column(&self, name: &str) -> Option<Vec<String>> {
        let column = self.decoded.column_by_name(name)?;
        if column.null_count() > 0 {
            return None;
        }
        let text = cast(column, &DataType::Utf8).ok()?;
        Some(
            text.as_string::<i32>()
                .iter()
                .map(|v| v.unwrap_or_default().to_owned())
                .collect(),
        )
    }

    /// A decoded timestamp column in epoch milliseconds, when it exists
    /// and has no nulls.
    pub fn time_column(&self, name: &str) -> Option<Vec<i64>> {
        let column = self.decoded.column_by_name(name)?;
        if column.null_count() > 0 {
            return None;
        }
        let millis = cast(column, &crate::schema::TIMESTAMP_TYPE).ok()?;
        Some(
            millis
                .as_primitive::<TimestampMillisecondType>()
                .values()
                .to_vec(),
        )
    }
}

/// The handbook's rule for judging a model on a test period: fraud labels
/// arrive `delay_days` late, and a card whose fraud was known by then has
/// been blocked, so a model earns nothing for finding it again. A row on
/// day D is left out when its card had a fraud on a day from `known_from`
/// up to D − delay − 1 (UTC days of the event time). With `known_from` at
/// the start of training, this is the handbook's `get_train_delay_test_set`.
#[derive(Debug, Clone)]
pub struct KnownCompromised {
    pub label: String,
    pub card_column: String,
    pub time_column: String,
    pub delay_days: i64,
    /// Frauds before this are not counted; `None`: all of the history.
    pub known_from_ms: Option<i64>,
}

const DAY_MS: i64 = 86_400_000;

impl KnownCompromised {
    /// Per row, whether its card was known compromised on its day.
    pub fn known_rows(&self, labels: &[bool], cards: &[String], times: &[i64]) -> Vec<bool> {
        let from_day = self.known_from_ms.map(|t| t.div_euclid(DAY_MS));
        let mut first_fraud_day: std::collections::HashMap<&str, i64> =
            std::collections::HashMap::new();
        for ((&fraud, card), &t) in labels.iter().zip(cards).zip(times) {
            let day = t.div_euclid(DAY_MS);
            if fraud && from_day.is_none_or(|from| day >= from) {
                let first = first_fraud_day.entry(card).or_insert(day);
                *first = (*first).min(day);
            }
        }
        cards
            .iter()
            .zip(times)
            .map(|(card, &t)| {
                first_fraud_day
                    .get(card.as_str())
                    .is_some_and(|&first| first < t.div_euclid(DAY_MS) - self.delay_days)
            })
            .collect()
    }
}

/// Reads a label column (boolean, or numbers where non-zero means fraud).
pub(crate) fn labels_from(batch: &RecordBatch, column: &str) -> Result<Vec<bool>, TrainError> {
    let array = batch
        .column_by_name(column)
        .ok_or_else(|| TrainError::BadLabel(format!("`{column}` is not in the data")))?;
    if array.null_count() > 0 {
        return Err(TrainError::BadLabel(format!(
            "`{column}` is missing on {} rows",
            array.null_count()
        )));
    }
    let as_bool = cast(array, &DataType::Boolean)
        .map_err(|e| TrainError::BadLabel(format!("`{column}` is not boolean or numeric: {e}")))?;
    Ok(as_bool
        .as_boolean()
        .iter()
        .map(|v| v.unwrap_or(false))
        .collect())
}

/// Runs history through the pipeline's decode and SQL.
pub async fn prepare(pipeline: &Pipeline, data: &Path) -> Result<TrainingSet, TrainingError> {
    let (decoded, rejected) = read_history(pipeline, data)?;
    features_for(pipeline, decoded, rejected).await
}

/// Decodes a history file (NDJSON, or CSV with a header) with the
/// pipeline's schema; the refused NDJSON lines come back beside it.
pub fn read_history(
    pipeline: &Pipeline,
    data: &Path,
) -> Result<(RecordBatch, Vec<Rejected>), TrainingError> {
    let decoder = pipeline.input_decoder();
    let shown = data.display().to_string();
    let is_csv = data
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let (decoded, rejected) = if is_csv {
        (
            read_csv(&decoder, data, &shown, &pipeline.event_id_field)?,
            Vec::new(),
        )
    } else {
        let text = std::fs::read(data).map_err(|source| TrainingError::Read {
            path: shown.clone(),
            source,
        })?;
        decode_lines(&decoder, &text)?
    };
    Ok((decoded, rejected))
}

/// Decodes NDJSON bytes, one record per non-blank line.
pub fn decode_lines(
    decoder: &Decoder,
    ndjson: &[u8],
) -> Result<(RecordBatch, Vec<Rejected>), TrainingError> {
    let lines: Vec<&[u8]> = ndjson
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .collect();
    let decoded = decoder
        .decode(lines.iter().map(|l| Some(*l)))
        .map_err(|e| TrainingError::Internal(e.to_string()))?;
    Ok((decoded.batch, decoded.rejected))
}

/// Reads a CSV file with a header row. Columns are matched to the schema by
/// name, in any order: arrow-csv reads by position, so the file's own
/// header decides which column is which. A file without the event-id column
/// (history often has none) gets its row numbers as ids.
fn read_csv(
    decoder: &Decoder,
    data: &Path,
    shown: &str,
    event_id_field: &str,
) -> Result<RecordBatch, TrainingError> {
    let csv_error = |source| TrainingError::Csv {
        path: shown.to_owned(),
        source,
    };
    let open = || {
        std::fs::File::open(data).map_err(|source| TrainingError::Read {
            path: shown.to_owned(),
            source,
        })
    };
    let record_schema = decoder.schema();
    let schema = &record_schema.arrow;
    let format = arrow::csv::reader::Format::default().with_header(true);
    let (header, _) = format.infer_schema(open()?, Some(0)).map_err(csv_error)?;
    // Each file column gets the declared type of the schema field it names;
    // timestamps and columns the schema does not know are read as text (the
    // former are then read as the stream reads them, the latter dropped).
    let file_schema = Arc::new(Schema::new(
        header
            .fields()
            .iter()
            .map(|f| match schema.field_with_name(f.name()) {
                Ok(declared) if declared.data_type() != &crate::schema::TIMESTAMP_TYPE => {
                    Field::new(f.name(), declared.data_type().clone(), true)
                }
                _ => Field::new(f.name(), DataType::Utf8, true),
            })
            .collect::<Vec<_>>(),
    ));
    let reader = arrow::csv::ReaderBuilder::new(file_schema.clone())
        .with_header(true)
        .build(open()?)
        .map_err(csv_error)?;
    let batches = reader.collect::<Result<Vec<_>, _>>().map_err(csv_error)?;
    let file = concat_batches(&file_schema, &batches).map_err(csv_error)?;
    let columns = schema
        .fields()
        .iter()
        .zip(&record_schema.timestamp_formats)
        .map(
            |(field, timestamp)| match file.column_by_name(field.name()) {
                Some(column) => match timestamp {
                    Some(format) => timestamps_from_text(column, format, field.name())
                        .map_err(|message| csv_error(ArrowError::ParseError(message))),
                    None => Ok(column.clone()),
                },
                None if field.is_nullable() => {
                    Ok(new_null_array(field.data_type(), file.num_rows()))
                }
                None if field.name() == event_id_field => {
                    let numbers = Int64Array::from_iter_values(1..=file.num_rows() as i64);
                    arrow::compute::cast(&numbers, field.data_type()).map_err(csv_error)
                }
                None => Err(csv_error(ArrowError::SchemaError(format!(
                    "the header has no column `{}`, which the schema requires",
                    field.name()
                )))),
            },
        )
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns).map_err(csv_error)
}

/// A text column of timestamps, read with the field's declared format, as
/// the stream's decoder reads them; an empty cell is null.
fn timestamps_from_text(
    column: &ArrayRef,
    format: &TimestampFormat,
    name: &str,
) -> Result<ArrayRef, String> {
    let text = column.as_string::<i32>();
    let mut millis = TimestampMillisecondBuilder::with_capacity(text.len());
    for (row, cell) in text.iter().enumerate() {
        match cell.map(str::trim).filter(|c| !c.is_empty()) {
            None => millis.append_null(),
            Some(cell) => millis.append_value(
                format
                    .from_str(cell)
                    .map_err(|e| format!("data row {}, column `{name}`: {e}", row + 1))?,
            ),
        }
    }
    Ok(Arc::new(millis.finish()))
}

/// Applies the pipeline's window features and SQL to decoded history.
pub async fn features_for(
    pipeline: &Pipeline,
    decoded: RecordBatch,
    rejected: Vec<Rejected>,
) -> Result<TrainingSet, TrainingError> {
    if decoded.num_rows() == 0 {
        return Err(TrainingError::NothingValid {
            rejected: rejected.len(),
            first: rejected
                .first()
                .map_or("none".into(), |r| r.message.clone()),
        });
    }
    // The stream's own feature path, with the windows replayed over
    // history from an empty state.
    let path = FeaturePath::for_pipeline(pipeline).await?;
    let computed = path
        .compute(decoded.clone(), Some(WindowState::History))
        .await?;
    let features = match (computed.features, computed.failed.first()) {
        (Some(features), None) => features,
        (_, first) => {
            return Err(TrainingError::SqlFailed {
                rows: computed.failed.len(),
                first: first.map_or("no row left".into(), |(_, e)| e.clone()),
            });
        }
    };
    Ok(TrainingSet {
        decoded,
        features,
        rejected,
        event_id: pipeline.event_id_field.clone(),
    })
}

/// Decoded records back to JSON objects, one per row, as a producer would
/// send them (nulls left out): for replaying history into a topic, and for
/// tests and benches that need the records of a CSV file.
pub fn to_json_records(batch: &RecordBatch) -> Vec<Vec<u8>> {
    use arrow::datatypes::{Float64Type, Int64Type, TimestampMillisecondType};
    (0..batch.num_rows())
        .map(|row| {
            let mut object = serde_json::Map::new();
            for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
                if column.is_null(row) {
                    continue;
                }
                let value: serde_json::Value = match field.data_type() {
                    DataType::Int64 => column.as_primitive::<Int64Type>().value(row).into(),
                    DataType::Float64 => column.as_primitive::<Float64Type>().value(row).into(),
                    DataType::Boolean => column.as_boolean().value(row).into(),
                    DataType::Utf8 => column.as_string::<i32>().value(row).into(),
                    DataType::Timestamp(_, _) => column
                        .as_primitive::<TimestampMillisecondType>()
                        .value(row)
                        .into(),
                    _ => continue,
                };
                object.insert(field.name().clone(), value);
            }
            serde_json::to_vec(&object).expect("a JSON object serialises")
        })
        .collect()
}

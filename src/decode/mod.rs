//! JSON records -> one Arrow `RecordBatch`, record by record, so that one bad
//! record is set aside with its reason while the rest of the batch goes on.
//!
//! arrow-json decodes a whole buffer or fails as a whole, and cannot say which
//! record broke or why; a fraud stream must dead-letter exactly the bad record.
//! So each record is parsed once by serde_json straight into typed cells
//! (borrowing strings from the input where it can; `row`), checked against
//! the schema, and only then appended to the Arrow builders (`columns`).

mod bounds;
mod columns;
#[cfg(test)]
mod properties;
mod row;

use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use serde::de::{DeserializeSeed, IgnoredAny};

use crate::reject::{RejectKind, Rejected};
use crate::schema::RecordSchema;
pub use bounds::{EARLIEST_EVENT_MS, EventTimeBounds};
use columns::ColumnBuilders;
use row::{Cell, Failure, RowSeed};

/// One record as the decoder sees it: its bytes (`None`: a Kafka message
/// without a payload) and its size as sent. The source may keep only a
/// prefix of a record too big to decode, so `size` can exceed `bytes.len()`.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    pub bytes: Option<&'a [u8]>,
    pub size: usize,
}

impl<'a> From<Option<&'a [u8]>> for RawRecord<'a> {
    fn from(bytes: Option<&'a [u8]>) -> Self {
        Self {
            bytes,
            size: bytes.map_or(0, <[u8]>::len),
        }
    }
}

impl<'a> From<&'a [u8]> for RawRecord<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        Some(bytes).into()
    }
}

/// The valid records as one batch, and the refused ones with their reasons.
#[derive(Debug)]
pub struct Decoded {
    pub batch: RecordBatch,
    /// For each batch row, the index of the input record it came from.
    pub source_index: Vec<usize>,
    pub rejected: Vec<Rejected>,
}

pub struct Decoder {
    schema: RecordSchema,
    max_record_bytes: usize,
    /// The event-time fields (by schema index) that must fall in range.
    event_times: Vec<usize>,
    max_future_ms: i64,
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

impl Decoder {
    pub fn new(schema: RecordSchema, max_record_bytes: usize) -> Self {
        Self {
            schema,
            max_record_bytes,
            event_times: Vec::new(),
            max_future_ms: 0,
        }
    }

    /// Refuses records whose event times lie out of `bounds`.
    pub fn with_event_time_bounds(mut self, bounds: &EventTimeBounds) -> Self {
        self.event_times = bounds
            .fields
            .iter()
            .filter_map(|f| self.schema.index_of(f))
            .collect();
        self.event_times.sort_unstable();
        self.event_times.dedup();
        self.max_future_ms = bounds.max_future_ms;
        self
    }

    pub fn schema(&self) -> &RecordSchema {
        &self.schema
    }

    /// Decodes every record, in order.
    pub fn decode<'a, R: Into<RawRecord<'a>>>(
        &self,
        records: impl IntoIterator<Item = R>,
    ) -> Result<Decoded, ArrowError> {
        let records = records.into_iter();
        let capacity = records.size_hint().0;
        let mut columns = ColumnBuilders::new(&self.schema, capacity);
        let mut source_index = Vec::with_capacity(capacity);
        let mut rejected = Vec::new();
        let mut scratch = Scratch::default();
        let latest = chrono::Utc::now()
            .timestamp_millis()
            .saturating_add(self.max_future_ms);
        for (index, record) in records.enumerate() {
            match self
                .decode_one(record.into(), &mut scratch)
                .and_then(|()| self.within_time_bounds(&scratch.row, latest))
            {
                Ok(()) => {
                    columns.append(&scratch.row);
                    source_index.push(index);
                }
                Err((kind, message)) => rejected.push(Rejected {
                    index,
                    kind,
                    message,
                }),
            }
        }
        let batch = RecordBatch::try_new(self.schema.arrow.clone(), columns.finish())?;
        Ok(Decoded {
            batch,
            source_index,
            rejected,
        })
    }

    /// Fills `scratch.row` with one cell per schema field, or says why it
    /// cannot.
    fn decode_one<'a>(
        &self,
        record: RawRecord<'a>,
        scratch: &mut Scratch<'a>,
    ) -> Result<(), (RejectKind, String)> {
        let payload = record.bytes.unwrap_or_default();
        // The size check comes first: it needs no bytes, only the size sent.
        if record.size > self.max_record_bytes {
            return Err((
                RejectKind::Oversized,
                format!(
                    "the record is {} bytes, over the limit of {} bytes (schema.max_record_bytes)",
                    record.size, self.max_record_bytes
                ),
            ));
        }
        let payload = payload.strip_prefix(UTF8_BOM).unwrap_or(payload);
        if payload.iter().all(u8::is_ascii_whitespace) {
            return Err((RejectKind::Empty, "the record is empty".into()));
        }
        let text = std::str::from_utf8(payload)
            .map_err(|e| (RejectKind::NotUtf8, format!("the record is not UTF-8: {e}")))?;
        if !text.trim_start().starts_with('{') {
            return Err(not_an_object(text));
        }

        let row = &mut scratch.row;
        row.clear();
        row.resize(self.schema.fields.len(), Cell::Null);
        let mut failure = None;
        let seed = RowSeed {
            schema: &self.schema,
            row,
            seen: &mut scratch.seen,
            failure: &mut failure,
        };
        let mut de = serde_json::Deserializer::from_str(text);
        seed.deserialize(&mut de)
            .and_then(|()| de.end())
            .map_err(|e| self.classify(&e, failure))?;

        for (field, cell) in self.schema.fields.iter().zip(row.iter()) {
            if field.required && matches!(cell, Cell::Null) {
                return Err((
                    RejectKind::MissingField,
                    format!("required field `{}` is missing or null", field.name),
                ));
            }
        }
        Ok(())
    }

    /// Whether the row's event times lie in [`EARLIEST_EVENT_MS`, `latest`].
    fn within_time_bounds(
        &self,
        row: &[Cell<'_>],
        latest: i64,
    ) -> Result<(), (RejectKind, String)> {
        for &index in &self.event_times {
            if let Cell::I64(at) = row[index]
                && !(EARLIEST_EVENT_MS..=latest).contains(&at)
            {
                return Err((
                    RejectKind::EventTimeOutOfRange,
                    format!(
                        "field `{}`: the event time is before 1990-01-01 or more than {} s past \
                         this instance's clock (schema.max_future)",
                        self.schema.fields[index].name,
                        self.max_future_ms / 1000
                    ),
                ));
            }
        }
        Ok(())
    }

    fn classify(
        &self,
        error: &serde_json::Error,
        failure: Option<Failure>,
    ) -> (RejectKind, String) {
        use serde_json::error::Category;
        let field = |index: usize| self.schema.fields[index].name.as_str();
        match (failure, error.classify()) {
            (Some(Failure::DuplicateKey), _) => (RejectKind::DuplicateKey, error.to_string()),
            (Some(Failure::Field(i)), Category::Data) => (
                RejectKind::WrongType,
                format!("field `{}`: {error}", field(i)),
            ),
            // `1e400`: valid JSON syntax, but no f64 holds it.
            (Some(Failure::Field(i)), Category::Syntax)
                if error.to_string().starts_with("number out of range") =>
            {
                (
                    RejectKind::WrongType,
                    format!("field `{}`: {error}", field(i)),
                )
            }
            _ => (
                RejectKind::NotJson,
                format!("the record is not valid JSON: {error}"),
            ),
        }
    }
}

/// Buffers reused from record to record.
#[derive(Default)]
struct Scratch<'a> {
    row: Vec<Cell<'a>>,
    seen: Vec<bool>,
}

/// Says what a record that does not start with `{` is, without quoting it:
/// serde's message for `4111111111111111` would carry the number.
fn not_an_object(text: &str) -> (RejectKind, String) {
    let mut de = serde_json::Deserializer::from_str(text);
    if let Err(e) = <IgnoredAny as serde::Deserialize>::deserialize(&mut de).and_then(|_| de.end())
    {
        return (
            RejectKind::NotJson,
            format!("the record is not valid JSON: {e}"),
        );
    }
    let what = match text.trim_start().as_bytes().first() {
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    };
    (
        RejectKind::NotAnObject,
        format!("the record is not a JSON object: it is {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{FieldSpec, FieldType};
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, Int64Type, TimestampMillisecondType};

    fn schema() -> RecordSchema {
        RecordSchema::new(
            "transactions".into(),
            vec![
                FieldSpec::new("event_id", FieldType::String, true),
                FieldSpec::new("amount", FieldType::Float64, true),
                FieldSpec::new("event_time", FieldType::Timestamp, true),
                FieldSpec::new("is_online", FieldType::Bool, false),
                FieldSpec::new("items", FieldType::Int64, false),
            ],
        )
        .unwrap()
    }

    fn decode(records: &[&[u8]]) -> Decoded {
        Decoder::new(schema(), 200)
            .decode(records.iter().copied())
            .unwrap()
    }

    fn only_rejection(record: &[u8]) -> Rejected {
        let decoded = decode(&[record]);
        assert_eq!(decoded.batch.num_rows(), 0, "{record:?} should be refused");
        assert_eq!(decoded.rejected.len(), 1);
        decoded.rejected[0].clone()
    }

    const GOOD: &[u8] =
        br#"{"event_id":"e1","amount":12,"event_time":"2026-01-02T03:04:05Z","extra":[1,{"a":2}]}"#;

    /// At a342126 an event dated 9999 was scored and moved its
    /// partition's clocks (late events, expiry, drift) for every later one.
    #[test]
    fn event_times_out_of_bounds_are_refused_as_their_own_kind() {
        let decoder = Decoder::new(schema(), 400).with_event_time_bounds(&EventTimeBounds {
            fields: vec!["event_time".into(), "not_a_field".into()],
            max_future_ms: 3_600_000,
        });
        let now = chrono::Utc::now().timestamp_millis();
        let at = |ms: i64| format!(r#"{{"event_id":"e","amount":1,"event_time":{ms}}}"#);
        let records = [
            at(now),
            at(now + 3_000_000),
            at(now + 4_000_000),
            at(EARLIEST_EVENT_MS),
            r#"{"event_id":"e","amount":1,"event_time":"1989-12-31T23:59:59Z"}"#.to_owned(),
            r#"{"event_id":"e","amount":1,"event_time":"9999-01-01T00:00:00Z"}"#.to_owned(),
            r#"{"event_id":"e","amount":1,"event_time":"1970-01-01T00:00:00Z"}"#.to_owned(),
        ];
        let decoded = decoder
            .decode(records.iter().map(|r| r.as_bytes()))
            .unwrap();
        assert_eq!(decoded.source_index, vec![0, 1, 3]);
        assert!(
            decoded
                .rejected
                .iter()
                .all(|r| r.kind == RejectKind::EventTimeOutOfRange
                    && r.message.contains("schema.max_future")),
            "{:?}",
            decoded.rejected
        );
        // Without bounds (history, tests) nothing is refused for its time.
        let unbounded = Decoder::new(schema(), 400)
            .decode(records.iter().map(|r| r.as_bytes()))
            .unwrap();
        assert!(unbounded.rejected.is_empty());
    }

    #[test]
    fn decodes_valid_records_with_types_and_nulls() {
        let second = br#"{"event_id":"e\"2","amount":7.5,"event_time":1700000000000,"is_online":true,"items":3}"#;
        let decoded = decode(&[GOOD, second]);
        assert!(decoded.rejected.is_empty(), "{:?}", decoded.rejected);
        assert_eq!(decoded.source_index, vec![0, 1]);
        let batch = &decoded.batch;
        assert_eq!(batch.column(0).as_string::<i32>().value(1), "e\"2");
        let amount = batch.column(1).as_primitive::<Float64Type>();
        assert_eq!((amount.value(0), amount.value(1)), (12.0, 7.5));
        let time = batch.column(2).as_primitive::<TimestampMillisecondType>();
        assert_eq!(time.value(0), 1_767_323_045_000);
        assert_eq!(time.value(1), 1_700_000_000_000);
        assert!(batch.column(3).is_null(0));
        assert!(batch.column(3).as_boolean().value(1));
        assert_eq!(batch.column(4).as_primitive::<Int64Type>().value(1), 3);
    }

    #[test]
    fn every_error_class_is_named_and_the_batch_goes_on() {
        let oversized = format!(r#"{{"event_id":"{}"}}"#, "x".repeat(300));
        let cases: Vec<(&[u8], RejectKind, &str)> = vec![
            (b"", RejectKind::Empty, "empty"),
            (b"  \n", RejectKind::Empty, "empty"),
            (b"\xEF\xBB\xBF", RejectKind::Empty, "empty"),
            (
                oversized.as_bytes(),
                RejectKind::Oversized,
                "over the limit",
            ),
            (b"{\"event_id\":\"\xff\"}", RejectKind::NotUtf8, "not UTF-8"),
            (b"{\"event_id\": ", RejectKind::NotJson, "not valid JSON"),
            (b"hello", RejectKind::NotJson, "not valid JSON"),
            (br#"{"event_id":"a"} {}"#, RejectKind::NotJson, "trailing"),
            (
                br#"{"event_id":"a","amount":1.2.3,"event_time":1}"#,
                RejectKind::NotJson,
                "not valid JSON",
            ),
            (b"[1,2]", RejectKind::NotAnObject, "it is an array"),
            (b"42", RejectKind::NotAnObject, "it is a number"),
            (br#""text""#, RejectKind::NotAnObject, "it is a string"),
            (
                br#"{"event_id":"a","amount":1,"amount":2,"event_time":1}"#,
                RejectKind::DuplicateKey,
                "key `amount` appears more than once",
            ),
            (
                br#"{"event_id":"a","note":1,"note":2}"#,
                RejectKind::DuplicateKey,
                "key `note` appears more than once",
            ),
            (
                br#"{"event_id":"a","event_time":1700000000000}"#,
                RejectKind::MissingField,
                "`amount`",
            ),
            (
                br#"{"event_id":"a","amount":null,"event_time":1700000000000}"#,
                RejectKind::MissingField,
                "`amount`",
            ),
            (
                br#"{"event_id":"a","amount":"12","event_time":1700000000000}"#,
                RejectKind::WrongType,
                "field `amount`: expected a number, got a string at line 1 column",
            ),
            (
                br#"{"event_id":"a","amount":1e400,"event_time":1700000000000}"#,
                RejectKind::WrongType,
                "field `amount`: number out of range",
            ),
            (
                br#"{"event_id":1,"amount":1,"event_time":1700000000000}"#,
                RejectKind::WrongType,
                "field `event_id`: expected a string, got a number",
            ),
            (
                br#"{"event_id":"a","amount":1,"event_time":"yesterday"}"#,
                RejectKind::WrongType,
                "RFC 3339",
            ),
            (
                br#"{"event_id":"a","amount":1,"event_time":1700000000}"#,
                RejectKind::WrongType,
                "out of range for unit `ms`",
            ),
            (
                br#"{"event_id":"a","amount":1,"event_time":1700000000000,"items":1.5}"#,
                RejectKind::WrongType,
                "field `items`: expected an integer, got a fractional number",
            ),
            (
                br#"{"event_id":"a","amount":[1],"event_time":1700000000000}"#,
                RejectKind::WrongType,
                "field `amount`: expected a number, got an array",
            ),
        ];
        let mut records: Vec<&[u8]> = vec![GOOD];
        records.extend(cases.iter().map(|c| c.0));
        records.push(GOOD);
        let decoded = decode(&records);
        assert_eq!(decoded.batch.num_rows(), 2);
        assert_eq!(decoded.source_index, vec![0, records.len() - 1]);
        for (i, (record, kind, needle)) in cases.iter().enumerate() {
            let rejected = &decoded.rejected[i];
            assert_eq!(rejected.index, i + 1);
            assert_eq!(
                rejected.kind,
                *kind,
                "{:?}: {}",
                String::from_utf8_lossy(record),
                rejected.message
            );
            assert!(
                rejected.message.contains(needle),
                "{:?}: message {:?} lacks {needle:?}",
                String::from_utf8_lossy(record),
                rejected.message
            );
            assert_eq!(only_rejection(record).kind, *kind);
        }
    }

    #[test]
    fn a_missing_payload_is_empty_and_a_cut_one_is_oversized_by_its_sent_size() {
        let cut = RawRecord {
            bytes: Some(b"{\"event_id\":"),
            size: 5_000_000,
        };
        let decoded = Decoder::new(schema(), 200)
            .decode([None.into(), Some(GOOD).into(), cut])
            .unwrap();
        assert_eq!(decoded.rejected[0].kind, RejectKind::Empty);
        assert_eq!(decoded.rejected[1].kind, RejectKind::Oversized);
        assert!(decoded.rejected[1].message.contains("5000000 bytes"));
        assert_eq!(decoded.source_index, vec![1]);
    }

    #[test]
    fn a_leading_byte_order_mark_is_skipped() {
        let with_bom = [b"\xEF\xBB\xBF".as_slice(), GOOD].concat();
        let decoded = decode(&[&with_bom]);
        assert!(decoded.rejected.is_empty(), "{:?}", decoded.rejected);
        assert_eq!(decoded.batch.num_rows(), 1);
    }

    /// A card number in the wrong place must not be echoed in the message
    /// that becomes a dead-letter header.
    #[test]
    fn messages_name_the_field_never_the_value() {
        let pan = "4111111111111111";
        let records = [
            format!(r#"{{"event_id":"a","amount":"{pan}","event_time":1700000000000}}"#),
            format!(r#"{{"event_id":"a","amount":1,"event_time":"{pan}"}}"#),
            format!(r#"{{"event_id":"a","amount":1,"event_time":{pan}}}"#),
            format!(r#"{{"event_id":"a","amount":1,"event_time":1700000000000,"items":{pan}.5}}"#),
            format!(
                r#"{{"event_id":"a","amount":1,"event_time":1700000000000,"is_online":{pan}}}"#
            ),
            format!(r#"{{"event_id":{pan},"amount":1,"event_time":1700000000000}}"#),
            pan.to_string(),
            format!(r#""{pan}""#),
            format!("[{pan}]"),
        ];
        for record in &records {
            let rejected = only_rejection(record.as_bytes());
            assert!(
                !rejected.message.contains("4111"),
                "{record} -> {:?}: {}",
                rejected.kind,
                rejected.message
            );
        }
    }

    #[test]
    fn timestamps_follow_the_field_declaration() {
        let mut fields = vec![
            FieldSpec::new("event_id", FieldType::String, true),
            FieldSpec::new("at", FieldType::Timestamp, true),
        ];
        fields[1].unit = Some(crate::timestamp::EpochUnit::S);
        fields[1].timezone = Some("Europe/Paris".into());
        let schema = RecordSchema::new("t".into(), fields).unwrap();
        let decoded = Decoder::new(schema, 1000)
            .decode([
                br#"{"event_id":"a","at":1559541093}"#.as_slice(),
                br#"{"event_id":"b","at":"2019-06-03 07:51:33"}"#,
                br#"{"event_id":"c","at":"2019-06-03T05:51:33Z"}"#,
                br#"{"event_id":"d","at":1559541093.5}"#,
                br#"{"event_id":"e","at":1559541093000}"#,
            ])
            .unwrap();
        let times = decoded
            .batch
            .column(1)
            .as_primitive::<TimestampMillisecondType>();
        let expected = 1_559_541_093_000;
        assert_eq!(
            times.values().to_vec(),
            vec![expected, expected, expected, expected + 500]
        );
        assert_eq!(
            decoded.rejected.len(),
            1,
            "milliseconds where seconds are declared"
        );
        assert!(decoded.rejected[0].message.contains("unit `s`"));
    }
}

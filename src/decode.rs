//! JSON records -> one Arrow `RecordBatch`, record by record, so that one bad
//! record is set aside with its reason while the rest of the batch goes on.
//!
//! arrow-json decodes a whole buffer or fails as a whole, and cannot say which
//! record broke or why; a fraud stream must dead-letter exactly the bad record.
//! So each record is parsed once by serde_json straight into typed cells
//! (borrowing strings from the input where it can), checked against the
//! schema, and only then appended to the Arrow builders.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMillisecondBuilder,
};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::schema::{FieldType, RecordSchema};

/// Why a record was refused. The names are the `error.kind` header values on
/// the dead-letter topic, so they are part of the output contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectKind {
    Empty,
    Oversized,
    NotUtf8,
    NotJson,
    NotAnObject,
    MissingField,
    WrongType,
    /// Set by later stages: the SQL or the model could not use the record.
    InvalidFeature,
    TransformFailed,
}

impl RejectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectKind::Empty => "empty",
            RejectKind::Oversized => "oversized",
            RejectKind::NotUtf8 => "not_utf8",
            RejectKind::NotJson => "not_json",
            RejectKind::NotAnObject => "not_an_object",
            RejectKind::MissingField => "missing_field",
            RejectKind::WrongType => "wrong_type",
            RejectKind::InvalidFeature => "invalid_feature",
            RejectKind::TransformFailed => "transform_failed",
        }
    }
}

impl fmt::Display for RejectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A record the decoder (or a later stage) refused, by its index in the input.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub index: usize,
    pub kind: RejectKind,
    pub message: String,
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
}

impl Decoder {
    pub fn new(schema: RecordSchema, max_record_bytes: usize) -> Self {
        Self {
            schema,
            max_record_bytes,
        }
    }

    pub fn schema(&self) -> &RecordSchema {
        &self.schema
    }

    /// Decodes every record; `None` is a Kafka message without a payload.
    pub fn decode<'a>(
        &self,
        records: impl ExactSizeIterator<Item = Option<&'a [u8]>>,
    ) -> Result<Decoded, ArrowError> {
        let mut columns = ColumnBuilders::new(&self.schema, records.len());
        let mut source_index = Vec::with_capacity(records.len());
        let mut rejected = Vec::new();
        let mut row: Vec<Cell<'a>> = Vec::with_capacity(self.schema.fields.len());
        for (index, payload) in records.enumerate() {
            match self.decode_one(payload.unwrap_or_default(), &mut row) {
                Ok(()) => {
                    columns.append(&row);
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

    /// Fills `row` with one cell per schema field, or says why it cannot.
    fn decode_one<'a>(
        &self,
        payload: &'a [u8],
        row: &mut Vec<Cell<'a>>,
    ) -> Result<(), (RejectKind, String)> {
        if payload.iter().all(u8::is_ascii_whitespace) {
            return Err((RejectKind::Empty, "the record is empty".into()));
        }
        if payload.len() > self.max_record_bytes {
            return Err((
                RejectKind::Oversized,
                format!(
                    "the record is {} bytes, over the limit of {} bytes (schema.max_record_bytes)",
                    payload.len(),
                    self.max_record_bytes
                ),
            ));
        }
        let text = std::str::from_utf8(payload)
            .map_err(|e| (RejectKind::NotUtf8, format!("the record is not UTF-8: {e}")))?;

        row.clear();
        row.resize(self.schema.fields.len(), Cell::Null);
        let mut failed_field = None;
        let seed = RowSeed {
            schema: &self.schema,
            row,
            failed_field: &mut failed_field,
        };
        let mut de = serde_json::Deserializer::from_str(text);
        seed.deserialize(&mut de)
            .and_then(|()| de.end())
            .map_err(|e| {
                classify(
                    &e,
                    failed_field.map(|i| self.schema.fields[i].name.as_str()),
                )
            })?;

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
}

fn classify(error: &serde_json::Error, failed_field: Option<&str>) -> (RejectKind, String) {
    use serde_json::error::Category;
    match (error.classify(), failed_field) {
        (Category::Data, Some(field)) => {
            (RejectKind::WrongType, format!("field `{field}`: {error}"))
        }
        (Category::Data, None) => (
            RejectKind::NotAnObject,
            format!("the record is not a JSON object: {error}"),
        ),
        _ => (
            RejectKind::NotJson,
            format!("the record is not valid JSON: {error}"),
        ),
    }
}

/// One decoded value. Strings borrow from the payload unless JSON escapes
/// forced a copy.
#[derive(Debug, Clone)]
enum Cell<'a> {
    Null,
    Str(Cow<'a, str>),
    F64(f64),
    I64(i64),
    Bool(bool),
}

/// Deserialises a JSON object into `row`, one slot per schema field; keys the
/// schema does not know are skipped.
struct RowSeed<'s, 'a> {
    schema: &'s RecordSchema,
    row: &'s mut Vec<Cell<'a>>,
    /// Index of the field whose value did not fit, for the error message.
    failed_field: &'s mut Option<usize>,
}

impl<'de, 's> DeserializeSeed<'de> for RowSeed<'s, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, 's> Visitor<'de> for RowSeed<'s, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let Some(index) = self.schema.index_of(&key) else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let field = &self.schema.fields[index];
            match map.next_value_seed(CellSeed(field.field_type)) {
                Ok(cell) => self.row[index] = cell,
                Err(e) => {
                    *self.failed_field = Some(index);
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

/// Reads one value as the declared type; anything else is a type error.
struct CellSeed(FieldType);

impl<'de> DeserializeSeed<'de> for CellSeed {
    type Value = Cell<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Cell<'de>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for CellSeed {
    type Value = Cell<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.0.describe())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Cell<'de>, E> {
        Ok(Cell::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Cell<'de>, E> {
        match self.0 {
            FieldType::Bool => Ok(Cell::Bool(v)),
            _ => Err(E::invalid_type(de::Unexpected::Bool(v), &self)),
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Cell<'de>, E> {
        match self.0 {
            FieldType::Int64 | FieldType::Timestamp => Ok(Cell::I64(v)),
            // Integral amounts are common ("amount": 12) and exact in f64 up to 2^53.
            FieldType::Float64 => Ok(Cell::F64(v as f64)),
            _ => Err(E::invalid_type(de::Unexpected::Signed(v), &self)),
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Cell<'de>, E> {
        match i64::try_from(v) {
            Ok(v) => self.visit_i64(v),
            Err(_) if self.0 == FieldType::Float64 => Ok(Cell::F64(v as f64)),
            Err(_) => Err(E::invalid_value(de::Unexpected::Unsigned(v), &self)),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Cell<'de>, E> {
        match self.0 {
            FieldType::Float64 => Ok(Cell::F64(v)),
            _ => Err(E::invalid_type(de::Unexpected::Float(v), &self)),
        }
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Cell<'de>, E> {
        self.string(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Cell<'de>, E> {
        self.string(Cow::Owned(v.to_owned()))
    }
}

impl CellSeed {
    fn string<'de, E: de::Error>(self, v: Cow<'de, str>) -> Result<Cell<'de>, E> {
        match self.0 {
            FieldType::String => Ok(Cell::Str(v)),
            FieldType::Timestamp => chrono::DateTime::parse_from_rfc3339(&v)
                .map(|t| Cell::I64(t.timestamp_millis()))
                .map_err(|_| E::invalid_value(de::Unexpected::Str(&v), &self)),
            _ => Err(E::invalid_type(de::Unexpected::Str(&v), &self)),
        }
    }
}

/// One Arrow builder per schema field.
enum ColumnBuilder {
    Str(StringBuilder),
    F64(Float64Builder),
    I64(Int64Builder),
    Bool(BooleanBuilder),
    Timestamp(TimestampMillisecondBuilder),
}

struct ColumnBuilders(Vec<ColumnBuilder>);

impl ColumnBuilders {
    fn new(schema: &RecordSchema, capacity: usize) -> Self {
        Self(
            schema
                .fields
                .iter()
                .map(|f| match f.field_type {
                    FieldType::String => {
                        ColumnBuilder::Str(StringBuilder::with_capacity(capacity, capacity * 16))
                    }
                    FieldType::Float64 => {
                        ColumnBuilder::F64(Float64Builder::with_capacity(capacity))
                    }
                    FieldType::Int64 => ColumnBuilder::I64(Int64Builder::with_capacity(capacity)),
                    FieldType::Bool => ColumnBuilder::Bool(BooleanBuilder::with_capacity(capacity)),
                    FieldType::Timestamp => ColumnBuilder::Timestamp(
                        TimestampMillisecondBuilder::with_capacity(capacity),
                    ),
                })
                .collect(),
        )
    }

    /// Appends one row whose cells already match the builders' types.
    fn append(&mut self, row: &[Cell<'_>]) {
        for (builder, cell) in self.0.iter_mut().zip(row) {
            match (builder, cell) {
                (ColumnBuilder::Str(b), Cell::Str(s)) => b.append_value(s),
                (ColumnBuilder::F64(b), Cell::F64(v)) => b.append_value(*v),
                (ColumnBuilder::I64(b), Cell::I64(v)) => b.append_value(*v),
                (ColumnBuilder::Bool(b), Cell::Bool(v)) => b.append_value(*v),
                (ColumnBuilder::Timestamp(b), Cell::I64(v)) => b.append_value(*v),
                (ColumnBuilder::Str(b), _) => b.append_null(),
                (ColumnBuilder::F64(b), _) => b.append_null(),
                (ColumnBuilder::I64(b), _) => b.append_null(),
                (ColumnBuilder::Bool(b), _) => b.append_null(),
                (ColumnBuilder::Timestamp(b), _) => b.append_null(),
            }
        }
    }

    fn finish(self) -> Vec<ArrayRef> {
        self.0
            .into_iter()
            .map(|builder| -> ArrayRef {
                match builder {
                    ColumnBuilder::Str(mut b) => Arc::new(b.finish()),
                    ColumnBuilder::F64(mut b) => Arc::new(b.finish()),
                    ColumnBuilder::I64(mut b) => Arc::new(b.finish()),
                    ColumnBuilder::Bool(mut b) => Arc::new(b.finish()),
                    ColumnBuilder::Timestamp(mut b) => Arc::new(b.finish()),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::FieldSpec;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, TimestampMillisecondType};

    fn schema() -> RecordSchema {
        let field = |name: &str, field_type, required| FieldSpec {
            name: name.into(),
            field_type,
            required,
            description: String::new(),
        };
        RecordSchema::new(
            "transactions".into(),
            vec![
                field("event_id", FieldType::String, true),
                field("amount", FieldType::Float64, true),
                field("event_time", FieldType::Timestamp, true),
                field("is_online", FieldType::Bool, false),
                field("items", FieldType::Int64, false),
            ],
        )
        .unwrap()
    }

    fn decode(records: &[&[u8]]) -> Decoded {
        Decoder::new(schema(), 200)
            .decode(records.iter().map(|r| Some(*r)))
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
    }

    #[test]
    fn every_error_class_is_named_and_the_batch_goes_on() {
        let oversized = format!(r#"{{"event_id":"{}"}}"#, "x".repeat(300));
        let cases: Vec<(&[u8], RejectKind, &str)> = vec![
            (b"", RejectKind::Empty, "empty"),
            (b"  \n", RejectKind::Empty, "empty"),
            (
                oversized.as_bytes(),
                RejectKind::Oversized,
                "over the limit",
            ),
            (b"{\"event_id\":\"\xff\"}", RejectKind::NotUtf8, "not UTF-8"),
            (b"{\"event_id\": ", RejectKind::NotJson, "not valid JSON"),
            (b"hello", RejectKind::NotJson, "not valid JSON"),
            (br#"{"event_id":"a"} {}"#, RejectKind::NotJson, "trailing"),
            (b"[1,2]", RejectKind::NotAnObject, "not a JSON object"),
            (b"42", RejectKind::NotAnObject, "not a JSON object"),
            (
                br#"{"event_id":"a","event_time":1}"#,
                RejectKind::MissingField,
                "`amount`",
            ),
            (
                br#"{"event_id":"a","amount":null,"event_time":1}"#,
                RejectKind::MissingField,
                "`amount`",
            ),
            (
                br#"{"event_id":"a","amount":"12","event_time":1}"#,
                RejectKind::WrongType,
                "field `amount`: invalid type: string \"12\", expected a number",
            ),
            (
                br#"{"event_id":1,"amount":1,"event_time":1}"#,
                RejectKind::WrongType,
                "field `event_id`",
            ),
            (
                br#"{"event_id":"a","amount":1,"event_time":"yesterday"}"#,
                RejectKind::WrongType,
                "RFC 3339",
            ),
            (
                br#"{"event_id":"a","amount":1,"event_time":1,"items":1.5}"#,
                RejectKind::WrongType,
                "field `items`",
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
            assert_eq!(rejected.kind, *kind, "{:?}: {}", record, rejected.message);
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
    fn a_missing_payload_is_empty() {
        let decoded = Decoder::new(schema(), 200)
            .decode([None, Some(GOOD)].into_iter())
            .unwrap();
        assert_eq!(decoded.rejected[0].kind, RejectKind::Empty);
        assert_eq!(decoded.source_index, vec![1]);
    }
}

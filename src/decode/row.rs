//! The serde side of decoding: one JSON object straight into typed cells,
//! one slot per schema field, without building a `serde_json::Value`.
//!
//! Errors are written here, not taken from serde: serde's own messages quote
//! the offending value (`invalid type: string "4111…"`), and a card number
//! must not reach a dead-letter header or a log line. Ours name the field,
//! the expected type and the kind of value found; serde_json adds the line
//! and column.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::schema::{FieldSpec, FieldType, RecordSchema};
use crate::timestamp::TimestampFormat;

/// One decoded value. Strings borrow from the payload unless JSON escapes
/// forced a copy.
#[derive(Debug, Clone)]
pub(super) enum Cell<'a> {
    Null,
    Str(Cow<'a, str>),
    F64(f64),
    I64(i64),
    Bool(bool),
}

/// What went wrong inside the object, for classifying serde's error.
#[derive(Debug)]
pub(super) enum Failure {
    /// The value of this schema field did not fit its type.
    Field(usize),
    DuplicateKey,
}

/// Deserialises a JSON object into `row`; keys the schema does not know are
/// skipped, and any key seen twice is refused.
pub(super) struct RowSeed<'s, 'a> {
    pub schema: &'s RecordSchema,
    pub row: &'s mut Vec<Cell<'a>>,
    /// Per schema field, whether its key was seen.
    pub seen: &'s mut Vec<bool>,
    pub failure: &'s mut Option<Failure>,
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        self.seen.clear();
        self.seen.resize(self.schema.fields.len(), false);
        // Keys the schema does not know, kept only to spot their duplicates.
        let mut unknown: Vec<Cow<'de, str>> = Vec::new();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let Some(index) = self.schema.index_of(&key) else {
                if unknown.contains(&key) {
                    return Err(self.duplicate(&key));
                }
                map.next_value::<IgnoredAny>()?;
                unknown.push(key);
                continue;
            };
            if std::mem::replace(&mut self.seen[index], true) {
                return Err(self.duplicate(&key));
            }
            let seed = CellSeed {
                field: &self.schema.fields[index],
                timestamp: self.schema.timestamp_formats[index].as_ref(),
            };
            match map.next_value_seed(seed) {
                Ok(cell) => self.row[index] = cell,
                Err(e) => {
                    *self.failure = Some(Failure::Field(index));
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

/// An object's key, borrowed from the payload unless JSON escapes forced a
/// copy. (serde's own `Cow<str>` always copies: a `String` allocated per
/// key and record was a quarter of the engine's allocations.)
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(v.to_owned())))
    }
}

impl RowSeed<'_, '_> {
    fn duplicate<E: de::Error>(&mut self, key: &str) -> E {
        *self.failure = Some(Failure::DuplicateKey);
        // A key is a name, not a value, but bound its length all the same.
        let shown: String = key.chars().take(64).collect();
        E::custom(format_args!("key `{shown}` appears more than once"))
    }
}

/// Reads one value as the declared type; anything else is a type error.
struct CellSeed<'s> {
    field: &'s FieldSpec,
    timestamp: Option<&'s TimestampFormat>,
}

impl<'de> DeserializeSeed<'de> for CellSeed<'_> {
    type Value = Cell<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Cell<'de>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for CellSeed<'_> {
    type Value = Cell<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.field.field_type.describe())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Cell<'de>, E> {
        Ok(Cell::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Cell<'de>, E> {
        match self.field.field_type {
            FieldType::Bool => Ok(Cell::Bool(v)),
            _ => Err(self.mismatch("a boolean")),
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Cell<'de>, E> {
        match self.field.field_type {
            FieldType::Int64 => Ok(Cell::I64(v)),
            FieldType::Timestamp => self.epoch(|t| t.from_epoch(v)),
            // Integral amounts are common ("amount": 12) and exact in f64 up to 2^53.
            FieldType::Float64 => Ok(Cell::F64(v as f64)),
            _ => Err(self.mismatch("a number")),
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Cell<'de>, E> {
        match i64::try_from(v) {
            Ok(v) => self.visit_i64(v),
            Err(_) if self.field.field_type == FieldType::Float64 => Ok(Cell::F64(v as f64)),
            Err(_) if self.field.field_type == FieldType::Int64 => Err(E::custom(
                "expected an integer, got one beyond the 64-bit signed range",
            )),
            // Beyond i64: read as a float, like any other epoch number.
            Err(_) if self.field.field_type == FieldType::Timestamp => {
                self.epoch(|t| t.from_epoch_float(v as f64))
            }
            Err(_) => Err(self.mismatch("a number")),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Cell<'de>, E> {
        match self.field.field_type {
            FieldType::Float64 => Ok(Cell::F64(v)),
            FieldType::Timestamp => self.epoch(|t| t.from_epoch_float(v)),
            FieldType::Int64 => Err(E::custom("expected an integer, got a fractional number")),
            _ => Err(self.mismatch("a number")),
        }
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Cell<'de>, E> {
        match self.field.field_type {
            FieldType::String => Ok(Cell::Str(Cow::Borrowed(v))),
            _ => self.non_string(v),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Cell<'de>, E> {
        match self.field.field_type {
            FieldType::String => Ok(Cell::Str(Cow::Owned(v.to_owned()))),
            _ => self.non_string(v),
        }
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Cell<'de>, A::Error> {
        Err(self.mismatch("an array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Cell<'de>, A::Error> {
        Err(self.mismatch("an object"))
    }
}

impl CellSeed<'_> {
    /// A string for a non-string field: only timestamps take strings.
    fn non_string<'de, E: de::Error>(&self, v: &str) -> Result<Cell<'de>, E> {
        match self.field.field_type {
            FieldType::Timestamp => self.epoch(|t| t.from_str(v)),
            _ => Err(self.mismatch("a string")),
        }
    }

    fn epoch<'de, E: de::Error>(
        &self,
        read: impl FnOnce(&TimestampFormat) -> Result<i64, crate::timestamp::TimestampError>,
    ) -> Result<Cell<'de>, E> {
        let format = self
            .timestamp
            .ok_or_else(|| E::custom("internal: timestamp field without a format"))?;
        read(format)
            .map(Cell::I64)
            .map_err(|e| E::custom(format_args!("expected a timestamp: {e}")))
    }

    fn mismatch<E: de::Error>(&self, found: &str) -> E {
        E::custom(format_args!(
            "expected {}, got {found}",
            self.field.field_type.describe()
        ))
    }
}

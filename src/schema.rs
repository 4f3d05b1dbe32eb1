//! Record schemas: the JSON files in `schemas/` that say which fields an
//! event has, their types and which are required. A schema is the contract
//! the decoder enforces and the Arrow schema the SQL sees.

use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::Deserialize;

use crate::timestamp::{EpochUnit, TimestampFormat};

/// Timestamps are kept as UTC milliseconds: the resolution card networks send.
pub const TIMESTAMP_TYPE: DataType = DataType::Timestamp(TimeUnit::Millisecond, None);

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("cannot read schema {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("schema {path} is not valid: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("schema {path}: {message}")]
    Invalid { path: String, message: String },
}

/// The value types a field may declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    String,
    Float64,
    Int64,
    Bool,
    /// A string (RFC 3339, zone-less `YYYY-MM-DD HH:MM:SS`, or a declared
    /// format) or an epoch number in a declared unit; see [`crate::timestamp`].
    Timestamp,
}

impl FieldType {
    pub fn arrow_type(self) -> DataType {
        match self {
            FieldType::String => DataType::Utf8,
            FieldType::Float64 => DataType::Float64,
            FieldType::Int64 => DataType::Int64,
            FieldType::Bool => DataType::Boolean,
            FieldType::Timestamp => TIMESTAMP_TYPE,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            FieldType::String => "a string",
            FieldType::Float64 => "a number",
            FieldType::Int64 => "an integer",
            FieldType::Bool => "a boolean",
            FieldType::Timestamp => "a timestamp",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub field_type: FieldType,
    /// A required field that is missing or null sends the record to the
    /// dead-letter topic.
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub description: String,
    /// Timestamps only: the unit of epoch numbers (`s`, `ms`, `us`, `ns`;
    /// default `ms`).
    #[serde(default)]
    pub unit: Option<EpochUnit>,
    /// Timestamps only: a chrono strftime format for strings, instead of
    /// RFC 3339 / `YYYY-MM-DD HH:MM:SS`.
    #[serde(default)]
    pub format: Option<String>,
    /// Timestamps only: the zone of strings written without one: an IANA
    /// name, `UTC` (the default) or an offset such as `+02:00`.
    #[serde(default)]
    pub timezone: Option<String>,
}

impl FieldSpec {
    /// A field with no timestamp options, for schemas built in code.
    pub fn new(name: &str, field_type: FieldType, required: bool) -> Self {
        Self {
            name: name.into(),
            field_type,
            required,
            description: String::new(),
            unit: None,
            format: None,
            timezone: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SchemaFile {
    name: String,
    #[serde(default)]
    #[allow(dead_code)] // documentation for people reading the file
    description: String,
    fields: Vec<FieldSpec>,
}

/// A validated record schema: unique, non-empty field names.
#[derive(Debug, Clone)]
pub struct RecordSchema {
    /// Also the table name the pipeline SQL selects from.
    pub name: String,
    pub fields: Vec<FieldSpec>,
    pub arrow: SchemaRef,
    /// Per field, how a timestamp field is read (`None` for other types).
    pub timestamp_formats: Vec<Option<TimestampFormat>>,
}

impl RecordSchema {
    pub fn load(path: &Path) -> Result<Self, SchemaError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SchemaError::Read {
            path: shown.clone(),
            source,
        })?;
        let file: SchemaFile =
            serde_json::from_str(&text).map_err(|source| SchemaError::Parse {
                path: shown.clone(),
                source,
            })?;
        Self::new(file.name, file.fields).map_err(|message| SchemaError::Invalid {
            path: shown,
            message,
        })
    }

    pub fn new(name: String, fields: Vec<FieldSpec>) -> Result<Self, String> {
        if name.trim().is_empty() {
            return Err("`name` must not be empty".into());
        }
        if fields.is_empty() {
            return Err("`fields` must list at least one field".into());
        }
        for (i, field) in fields.iter().enumerate() {
            if field.name.is_empty() {
                return Err(format!("field #{} has an empty name", i + 1));
            }
            if fields[..i].iter().any(|f| f.name == field.name) {
                return Err(format!("field `{}` is declared twice", field.name));
            }
        }
        let timestamp_formats = fields
            .iter()
            .map(timestamp_format_of)
            .collect::<Result<Vec<_>, _>>()?;
        let arrow = Arc::new(Schema::new(
            fields
                .iter()
                .map(|f| Field::new(&f.name, f.field_type.arrow_type(), !f.required))
                .collect::<Vec<_>>(),
        ));
        Ok(Self {
            name,
            fields,
            arrow,
            timestamp_formats,
        })
    }

    pub fn field(&self, name: &str) -> Option<&FieldSpec> {
        self.fields.iter().find(|f| f.name == name)
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }
}

/// A timestamp field's reading rules; the options on any other type are an
/// error, since they would be silently ignored.
fn timestamp_format_of(field: &FieldSpec) -> Result<Option<TimestampFormat>, String> {
    let has_options = field.unit.is_some() || field.format.is_some() || field.timezone.is_some();
    if field.field_type != FieldType::Timestamp {
        return match has_options {
            true => Err(format!(
                "field `{}`: `unit`, `format` and `timezone` apply to timestamp fields only",
                field.name
            )),
            false => Ok(None),
        };
    }
    TimestampFormat::new(
        field.unit,
        field.format.as_deref(),
        field.timezone.as_deref(),
    )
    .map(Some)
    .map_err(|e| format!("field `{}`: {e}", field.name))
}

//! Record schemas: the JSON files in `schemas/` that say which fields an
//! event has, their types and which are required. A schema is the contract
//! the decoder enforces and the Arrow schema the SQL sees.

use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::Deserialize;

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
    /// An RFC 3339 string or an integer of epoch milliseconds.
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
            FieldType::Timestamp => "an RFC 3339 timestamp or epoch milliseconds",
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
        })
    }

    pub fn field(&self, name: &str) -> Option<&FieldSpec> {
        self.fields.iter().find(|f| f.name == name)
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }
}

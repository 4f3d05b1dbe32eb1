//! The Arrow side of decoding: one builder per schema field, fed a row of
//! cells that already match the declared types.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMillisecondBuilder,
};

use super::row::Cell;
use crate::schema::{FieldType, RecordSchema};

enum ColumnBuilder {
    Str(StringBuilder),
    F64(Float64Builder),
    I64(Int64Builder),
    Bool(BooleanBuilder),
    Timestamp(TimestampMillisecondBuilder),
}

pub(super) struct ColumnBuilders(Vec<ColumnBuilder>);

impl ColumnBuilders {
    pub(super) fn new(schema: &RecordSchema, capacity: usize) -> Self {
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
    pub(super) fn append(&mut self, row: &[Cell<'_>]) {
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

    pub(super) fn finish(self) -> Vec<ArrayRef> {
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

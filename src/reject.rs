//! Why a record gets no score. Every stage that can refuse a record (the
//! decoder, the SQL, the model, the sink) files it under one of these kinds;
//! the names are the `streamscore.error.kind` header values on the
//! dead-letter topic, so they are part of the output contract.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectKind {
    // Decoding.
    Empty,
    Oversized,
    NotUtf8,
    NotJson,
    NotAnObject,
    /// The same key twice in one object: parsers disagree on which wins.
    DuplicateKey,
    MissingField,
    WrongType,
    /// The event time is before 1990 or past the wall clock plus
    /// `schema.max_future`: it would move the partition's clocks (windows,
    /// expiry, drift judging) for every later event.
    EventTimeOutOfRange,
    // The SQL.
    TransformFailed,
    // The model.
    InvalidFeature,
    /// The model's log-odds overflowed to infinity or NaN: such a score is
    /// neither a `flag` nor a `pass`.
    NonFiniteScore,
    // The sink.
    /// Kafka refused the score for good (too large, invalid record).
    Undeliverable,
}

impl RejectKind {
    pub const ALL: [RejectKind; 13] = [
        RejectKind::Empty,
        RejectKind::Oversized,
        RejectKind::NotUtf8,
        RejectKind::NotJson,
        RejectKind::NotAnObject,
        RejectKind::DuplicateKey,
        RejectKind::MissingField,
        RejectKind::WrongType,
        RejectKind::EventTimeOutOfRange,
        RejectKind::TransformFailed,
        RejectKind::InvalidFeature,
        RejectKind::NonFiniteScore,
        RejectKind::Undeliverable,
    ];

    /// Its position in [`RejectKind::ALL`], for per-kind arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RejectKind::Empty => "empty",
            RejectKind::Oversized => "oversized",
            RejectKind::NotUtf8 => "not_utf8",
            RejectKind::NotJson => "not_json",
            RejectKind::NotAnObject => "not_an_object",
            RejectKind::DuplicateKey => "duplicate_key",
            RejectKind::MissingField => "missing_field",
            RejectKind::WrongType => "wrong_type",
            RejectKind::EventTimeOutOfRange => "event_time_out_of_range",
            RejectKind::TransformFailed => "transform_failed",
            RejectKind::InvalidFeature => "invalid_feature",
            RejectKind::NonFiniteScore => "non_finite_score",
            RejectKind::Undeliverable => "undeliverable",
        }
    }
}

impl fmt::Display for RejectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused record, by its index in the batch. The message names fields,
/// expected types and positions, never the record's values: dead-letter
/// headers and logs must not carry card numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub index: usize,
    pub kind: RejectKind,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_kind_at_its_index() {
        for (position, kind) in RejectKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), position, "{kind}");
        }
    }
}

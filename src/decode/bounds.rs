//! The range an event time must fall in: windows, state expiry and drift
//! judging move with event time, so one event far in the future (or the
//! past) would move them for every event after it.

/// The event-time fields of a schema (those that place an event in windows
/// and drift windows), and how far past the wall clock they may lie.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventTimeBounds {
    pub fields: Vec<String>,
    pub max_future_ms: i64,
}

/// 1990-01-01T00:00:00Z: no card event is older. An event time must be at
/// or after it, and at most `schema.max_future` past the wall clock, or the
/// record is refused (`event_time_out_of_range`): one event dated 9999
/// would otherwise move its partition's watermark, and with it window
/// lateness, state expiry and drift judging, for every later event.
pub const EARLIEST_EVENT_MS: i64 = 631_152_000_000;

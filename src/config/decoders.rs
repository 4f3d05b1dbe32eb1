//! The decoders a pipeline's settings make: the schema, the size limit
//! and the event-time bounds of the input and labels topics. Here, not in
//! `decode/`, because settings are built into domain types in `config/`
//! and the domain rooms never read the pipeline (ARCHITECTURE.md §4).

use super::Pipeline;
use crate::decode::{Decoder, EventTimeBounds};

impl Pipeline {
    /// The input's event-time bounds: the event times its windows and
    /// drift read.
    pub fn input_event_time_bounds(&self) -> EventTimeBounds {
        let windows = self.windows.as_ref().map(|w| w.event_time.clone());
        let drift = self.drift.as_ref().map(|d| d.event_time.clone());
        EventTimeBounds {
            fields: windows.into_iter().chain(drift).collect(),
            max_future_ms: self.max_future_ms,
        }
    }

    /// The input topic's decoder: the pipeline's schema and size limit,
    /// and bounds on the event times that its windows and drift read.
    pub fn input_decoder(&self) -> Decoder {
        Decoder::new(self.schema.clone(), self.max_record_bytes)
            .with_event_time_bounds(&self.input_event_time_bounds())
    }

    /// The labels topic's decoder, when a window feature reads labels.
    pub fn labels_decoder(&self) -> Option<Decoder> {
        let labels = self.labels.as_ref()?;
        let event_time = self.windows.as_ref()?.labels.as_ref()?.event_time.clone();
        Some(
            Decoder::new(labels.schema.clone(), self.max_record_bytes).with_event_time_bounds(
                &EventTimeBounds {
                    fields: vec![event_time],
                    max_future_ms: self.max_future_ms,
                },
            ),
        )
    }
}

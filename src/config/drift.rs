//! `[drift]`: checked here, so that a misspelt metric or a window of no
//! length fails at start-up with its key.

use std::collections::BTreeMap;

use super::file::{ChangeSection, DriftSection, ThresholdSection};
use super::parse_duration;
use super::windows::{Invalid, timestamp_field};
use crate::drift::DriftSettings;
use crate::drift::alerts::{Hysteresis, Limit, Limits, ThresholdRules, threshold_metrics};
use crate::drift::chance::CHANCE_METRICS;
use crate::drift::change::ChangeSettings;
use crate::schema::RecordSchema;

/// PSI's credit-risk convention: 0.1 is worth a look, 0.25 is a shift.
fn default_thresholds() -> BTreeMap<String, Limits> {
    BTreeMap::from([(
        "psi".to_owned(),
        (Some(Limit::Value(0.1)), Some(Limit::Value(0.25))),
    )])
}

pub fn drift_settings(
    section: Option<DriftSection>,
    has_state: bool,
    schema: &RecordSchema,
) -> Result<Option<DriftSettings>, Invalid> {
    let Some(section) = section else {
        return Ok(None);
    };
    if !has_state {
        return Err((
            "drift",
            "needs a `[state]` section: drift windows are kept in the state store".into(),
        ));
    }
    timestamp_field(
        schema,
        &section.event_time,
        "drift.event_time",
        "the schema",
    )?;
    let ms = |key: &'static str, text: &str| {
        parse_duration(text)
            .map(|d| d.as_millis() as i64)
            .map_err(|e| (key, e))
    };
    let window_ms = ms("drift.window", &section.window)?;
    if window_ms == 0 {
        return Err(("drift.window", "must be at least 1s".into()));
    }
    let retention_ms = ms("drift.retention", &section.retention)?;
    if retention_ms < window_ms {
        return Err((
            "drift.retention",
            "must be at least one `drift.window`".into(),
        ));
    }
    if section.raise_after == 0 || section.clear_after == 0 {
        return Err((
            "drift.raise_after",
            "`raise_after` and `clear_after` count windows and must be at least 1".into(),
        ));
    }
    let mut thresholds = ThresholdRules {
        metrics: default_thresholds(),
        features: BTreeMap::new(),
    };
    for (metric, limits) in section.thresholds {
        thresholds.metrics.insert(
            metric.clone(),
            limits_of(&metric, &limits, "drift.thresholds")?,
        );
    }
    for (feature, metrics) in section.features {
        let mut resolved = BTreeMap::new();
        for (metric, limits) in metrics {
            resolved.insert(
                metric.clone(),
                limits_of(&metric, &limits, "drift.features")?,
            );
        }
        thresholds.features.insert(feature, resolved);
    }
    let change = section.change.map(change_settings).transpose()?;
    Ok(Some(DriftSettings {
        event_time: section.event_time,
        window_ms,
        lateness_ms: ms("drift.lateness", &section.lateness)?,
        idle_ms: ms("drift.idle", &section.idle)?,
        retention_ms,
        min_events: section.min_events,
        alerts_topic: section.alerts_topic,
        hysteresis: Hysteresis {
            raise_after: section.raise_after,
            clear_after: section.clear_after,
            cooldown_ms: ms("drift.cooldown", &section.cooldown)?,
        },
        thresholds,
        change,
    }))
}

fn change_settings(section: ChangeSection) -> Result<ChangeSettings, Invalid> {
    if !(section.delta.is_finite() && section.delta >= 0.0) {
        return Err((
            "drift.change.delta",
            format!(
                "{} must be a finite number of standard deviations, 0 or more",
                section.delta
            ),
        ));
    }
    if !(section.threshold.is_finite() && section.threshold > 0.0) {
        return Err((
            "drift.change.threshold",
            format!(
                "{} must be a finite number of standard deviations above 0",
                section.threshold
            ),
        ));
    }
    Ok(ChangeSettings {
        delta: section.delta,
        threshold: section.threshold,
        min_events: section.min_events,
    })
}

fn limits_of(
    metric: &str,
    limits: &ThresholdSection,
    key: &'static str,
) -> Result<Limits, Invalid> {
    if !threshold_metrics().any(|m| m == metric) {
        return Err((
            key,
            format!(
                "`{metric}` is not a drift metric; use one of {}",
                threshold_metrics().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    if let (Some(Limit::Value(s)), Some(Limit::Value(d))) = (limits.suspected, limits.detected)
        && s > d
    {
        return Err((
            key,
            format!("`{metric}`: suspected ({s}) is above detected ({d})"),
        ));
    }
    for limit in [limits.suspected, limits.detected].into_iter().flatten() {
        let Limit::Chance { p_value } = limit else {
            continue;
        };
        if !CHANCE_METRICS.contains(&metric) {
            return Err((
                key,
                format!(
                    "`{metric}` cannot take a `p_value`: it applies to {}",
                    CHANCE_METRICS.join(", ")
                ),
            ));
        }
        if !(p_value > 0.0 && p_value < 0.5) {
            return Err((
                key,
                format!("`{metric}`: p_value {p_value} must lie between 0 and 0.5"),
            ));
        }
    }
    if let (Some(Limit::Chance { p_value: s }), Some(Limit::Chance { p_value: d })) =
        (limits.suspected, limits.detected)
        && s < d
    {
        return Err((
            key,
            format!(
                "`{metric}`: the suspected p_value ({s}) is below the detected one ({d}); \
                 a rarer value is the stronger sign"
            ),
        ));
    }
    Ok((limits.suspected, limits.detected))
}

//! `[state]` and `[windows]`: checked against the schema here, so that a
//! feature naming a missing column fails at start-up with its key.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::file::{LabelsSection, StateSection, WindowFeatureSection, WindowsSection};
use crate::schema::{FieldType, RecordSchema};
use crate::windows::{Aggregate, LabelTiming, Source, WindowFeature, WindowSpec};

/// Where the instance's RocksDB lives.
#[derive(Debug, Clone)]
pub struct StateSettings {
    pub path: PathBuf,
    pub sync: bool,
    /// How long delivered batches' state may wait to be written together.
    pub checkpoint_interval: Duration,
    /// The compacted topic every checkpoint is copied to, when state
    /// follows its partitions between instances.
    pub changelog_topic: Option<String>,
    /// Keep a warm copy of the partitions not held (with a changelog).
    pub standby: bool,
}

/// The labels topic and the schema its records are decoded with.
#[derive(Debug, Clone)]
pub struct LabelSettings {
    pub topic: String,
    pub schema: RecordSchema,
    /// How long a score is kept for its label (ms).
    pub score_retention_ms: i64,
}

/// The longest duration a pipeline may name: a century. Every duration is
/// used in milliseconds as an `i64` and added to event times and windows;
/// under this cap none of that arithmetic can overflow.
const LONGEST_DURATION_S: u64 = 100 * 365 * 86_400;

/// Reads `7d`, `12h`, `30m` or `45s`, up to a century.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.ends_with(|c: char| c.is_ascii_digit()) {
        return Err(format!("`{text}` has no unit; use d, h, m or s"));
    }
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 7d, 12h, 30m or 45s"))?;
    let unit_s: u64 = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        _ => return Err(format!("`{text}` has no unit; use d, h, m or s")),
    };
    match n.checked_mul(unit_s) {
        Some(seconds) if seconds <= LONGEST_DURATION_S => Ok(Duration::from_secs(seconds)),
        _ => Err(format!("`{text}` is longer than a century (36500d)")),
    }
}

pub(super) type Invalid = (&'static str, String);

/// Refuses `field` under `key` unless it is a timestamp field of `schema`
/// (`which` names the schema in the message).
pub(super) fn timestamp_field(
    schema: &RecordSchema,
    field: &str,
    key: &'static str,
    which: &str,
) -> Result<(), Invalid> {
    match schema.field(field) {
        Some(f) if f.field_type == FieldType::Timestamp => Ok(()),
        _ => Err((
            key,
            format!("names `{field}`, which is not a timestamp field of {which}"),
        )),
    }
}

/// `[state]`; the changelog topic defaults to `<group_id>-changelog`.
pub fn state_settings(
    section: Option<StateSection>,
    base: &Path,
    group_id: &str,
) -> Option<StateSettings> {
    section.map(|s| StateSettings {
        path: base.join(s.path),
        sync: s.sync,
        checkpoint_interval: Duration::from_millis(s.checkpoint_ms),
        changelog_topic: (s.changelog || s.changelog_topic.is_some()).then(|| {
            s.changelog_topic
                .unwrap_or_else(|| format!("{group_id}-changelog"))
        }),
        standby: s.standby,
    })
}

/// `[labels]`, its schema read (relative to `base`).
pub fn label_settings(
    section: Option<&LabelsSection>,
    base: &Path,
) -> Result<Option<(LabelSettings, LabelTiming)>, Invalid> {
    let Some(section) = section else {
        return Ok(None);
    };
    let path = base.join(&section.schema);
    let schema = RecordSchema::load(&path)
        .map_err(|e| ("labels.schema", format!("{}: {e}", path.display())))?;
    timestamp_field(
        &schema,
        &section.event_time,
        "labels.event_time",
        &path.display().to_string(),
    )?;
    if section.topic.trim().is_empty() {
        return Err(("labels.topic", "must not be empty".into()));
    }
    let delay = parse_duration(&section.delay).map_err(|e| ("labels.delay", e))?;
    let score_retention =
        parse_duration(&section.score_retention).map_err(|e| ("labels.score_retention", e))?;
    Ok(Some((
        LabelSettings {
            topic: section.topic.clone(),
            schema,
            score_retention_ms: score_retention.as_millis() as i64,
        },
        LabelTiming {
            event_time: section.event_time.clone(),
            delay_ms: delay.as_millis() as i64,
        },
    )))
}

/// The window features, valid against `schema` (and the labels' schema for
/// label features). They need a `[state]`.
pub fn window_spec(
    section: Option<WindowsSection>,
    has_state: bool,
    schema: &RecordSchema,
    labels: Option<(&RecordSchema, LabelTiming)>,
) -> Result<Option<WindowSpec>, Invalid> {
    let Some(section) = section else {
        return Ok(None);
    };
    let (label_schema, label_timing) = labels.unzip();
    if !has_state {
        return Err((
            "windows",
            "needs a `[state]` section with the path of this instance's state store".into(),
        ));
    }
    timestamp_field(
        schema,
        &section.event_time,
        "windows.event_time",
        "the schema",
    )?;
    let tile = parse_duration(&section.tile).map_err(|e| ("windows.tile", e))?;
    if tile.is_zero() {
        return Err(("windows.tile", "must be at least 1s".into()));
    }
    let tile_ms = tile.as_millis() as i64;
    if section.features.is_empty() {
        return Err((
            "windows.feature",
            "declares no feature; add one or drop `[windows]`".into(),
        ));
    }
    let mut names = HashSet::new();
    let features = section
        .features
        .into_iter()
        .map(|f| {
            window_feature(
                f,
                schema,
                label_schema,
                &mut names,
                (tile_ms, &section.tile),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(WindowSpec {
        event_time: section.event_time,
        scope: section.scope,
        partition_key: section.partition_key,
        features,
        labels: label_timing,
    }))
}

/// One `[[windows.feature]]`, checked against the schema of the records it
/// reads; `names` holds the names taken so far, `default_tile` the
/// section's tile (ms, as written).
fn window_feature(
    f: WindowFeatureSection,
    schema: &RecordSchema,
    label_schema: Option<&RecordSchema>,
    names: &mut HashSet<String>,
    default_tile: (i64, &str),
) -> Result<WindowFeature, Invalid> {
    let at = |message: String| ("windows.feature", format!("`{}`: {message}", f.name));
    if schema.field(&f.name).is_some() || !names.insert(f.name.clone()) {
        return Err(at(
            "the name is already a schema field or another feature".into()
        ));
    }
    if schema.field(&f.key).is_none() {
        return Err(at(format!("key `{}` is not a field of the schema", f.key)));
    }
    let source_schema = match (f.source, label_schema) {
        (Source::Events, _) => schema,
        (Source::Labels, Some(labels)) => labels,
        (Source::Labels, None) => {
            return Err(at(
                "reads labels, but the pipeline has no `[labels]` section".into(),
            ));
        }
    };
    if source_schema.field(&f.key).is_none() {
        return Err(at(format!(
            "key `{}` is not a field of the labels' schema",
            f.key
        )));
    }
    match (&f.column, f.aggregate) {
        (Some(_), Aggregate::Count) => {
            return Err(at("`count` counts events and takes no `column`".into()));
        }
        (None, aggregate) if aggregate != Aggregate::Count => {
            return Err(at(
                format!("`{aggregate:?}` needs a `column` to aggregate").to_lowercase()
            ));
        }
        (Some(column), _) => match source_schema.field(column) {
            Some(c)
                if matches!(
                    c.field_type,
                    FieldType::Float64 | FieldType::Int64 | FieldType::Bool
                ) => {}
            _ => {
                return Err(at(format!(
                    "column `{column}` is not a numeric or bool field of its source's schema"
                )));
            }
        },
        (None, _) => {}
    }
    let window = parse_duration(&f.window).map_err(at)?;
    let window_ms = window.as_millis() as i64;
    let (tile_ms, tile): (i64, &str) = match &f.tile {
        Some(tile) => {
            let ms = parse_duration(tile).map_err(at)?.as_millis() as i64;
            if ms == 0 {
                return Err(at("tile must be at least 1s".into()));
            }
            (ms, &tile[..])
        }
        None => default_tile,
    };
    if window_ms < tile_ms || window_ms % tile_ms != 0 {
        return Err(at(format!(
            "window {} must be a whole number of tiles (tile = {tile})",
            f.window
        )));
    }
    let shift_ms = match &f.shift {
        Some(shift) => parse_duration(shift).map_err(at)?.as_millis() as i64,
        None => 0,
    };
    if shift_ms % tile_ms != 0 {
        return Err(at(format!(
            "shift {} must be a whole number of tiles",
            f.shift.as_deref().unwrap_or_default()
        )));
    }
    Ok(WindowFeature {
        name: f.name,
        key: f.key,
        column: f.column,
        aggregate: f.aggregate,
        source: f.source,
        window_ms,
        tile_ms,
        shift_ms,
        include_current: f.include_current,
    })
}

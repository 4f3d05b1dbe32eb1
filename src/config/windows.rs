//! `[state]` and `[windows]`: checked against the schema here, so that a
//! feature naming a missing column fails at start-up with its key.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::file::{StateSection, WindowsSection};
use crate::schema::{FieldType, RecordSchema};
use crate::windows::{Aggregate, WindowFeature, WindowSpec};

/// Where the instance's RocksDB lives.
#[derive(Debug, Clone)]
pub struct StateSettings {
    pub path: PathBuf,
    pub sync: bool,
}

/// Reads `7d`, `12h`, `30m` or `45s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.ends_with(|c: char| c.is_ascii_digit()) {
        return Err(format!("`{text}` has no unit; use d, h, m or s"));
    }
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 7d, 12h, 30m or 45s"))?;
    let seconds = match unit {
        "d" => n * 86_400,
        "h" => n * 3_600,
        "m" => n * 60,
        "s" => n,
        _ => return Err(format!("`{text}` has no unit; use d, h, m or s")),
    };
    Ok(Duration::from_secs(seconds))
}

type Invalid = (&'static str, String);

pub fn state_settings(section: Option<StateSection>, base: &Path) -> Option<StateSettings> {
    section.map(|s| StateSettings {
        path: base.join(s.path),
        sync: s.sync,
    })
}

/// The window features, valid against `schema`. They need a `[state]`.
pub fn window_spec(
    section: Option<WindowsSection>,
    has_state: bool,
    schema: &RecordSchema,
) -> Result<Option<WindowSpec>, Invalid> {
    let Some(section) = section else {
        return Ok(None);
    };
    if !has_state {
        return Err((
            "windows",
            "needs a `[state]` section with the path of this instance's state store".into(),
        ));
    }
    match schema.field(&section.event_time) {
        Some(f) if f.field_type == FieldType::Timestamp => {}
        _ => {
            return Err((
                "windows.event_time",
                format!(
                    "names `{}`, which is not a timestamp field of the schema",
                    section.event_time
                ),
            ));
        }
    }
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
            let at = |message: String| ("windows.feature", format!("`{}`: {message}", f.name));
            if schema.field(&f.name).is_some() || !names.insert(f.name.clone()) {
                return Err(at(
                    "the name is already a schema field or another feature".into()
                ));
            }
            if schema.field(&f.key).is_none() {
                return Err(at(format!("key `{}` is not a field of the schema", f.key)));
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
                (Some(column), _) => match schema.field(column) {
                    Some(c) if matches!(c.field_type, FieldType::Float64 | FieldType::Int64) => {}
                    _ => {
                        return Err(at(format!(
                            "column `{column}` is not a numeric field of the schema"
                        )));
                    }
                },
                (None, _) => {}
            }
            let window = parse_duration(&f.window).map_err(at)?;
            let window_ms = window.as_millis() as i64;
            if window_ms < tile_ms || window_ms % tile_ms != 0 {
                return Err(at(format!(
                    "window {} must be a whole number of tiles (windows.tile = {})",
                    f.window, section.tile
                )));
            }
            Ok(WindowFeature {
                name: f.name,
                key: f.key,
                column: f.column,
                aggregate: f.aggregate,
                window_ms,
                include_current: f.include_current,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(WindowSpec {
        event_time: section.event_time,
        tile_ms,
        features,
    }))
}

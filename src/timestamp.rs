//! Reading the timestamps real producers send, as a schema field declares
//! them: RFC 3339 strings; `YYYY-MM-DD HH:MM:SS[.fraction]` with no zone,
//! read in the field's zone (UTC unless the schema names one); a declared
//! strftime format; and epoch numbers in a declared unit.
//!
//! Every form ends as UTC epoch milliseconds, the resolution of the Arrow
//! column (finer units are truncated towards the past).
//!
//! An epoch number's unit cannot be told from the number, and the wrong unit
//! gives a plausible-looking date (seconds read as milliseconds land in
//! January 1970). So an epoch value must land in [`EPOCH_RANGE`]; outside it
//! the value is refused as out of range for its unit instead of being misread.

use chrono::{DateTime, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, TimeZone};
use serde::Deserialize;

/// The unit of an epoch number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EpochUnit {
    S,
    #[default]
    Ms,
    Us,
    Ns,
}

impl EpochUnit {
    pub fn as_str(self) -> &'static str {
        match self {
            EpochUnit::S => "s",
            EpochUnit::Ms => "ms",
            EpochUnit::Us => "us",
            EpochUnit::Ns => "ns",
        }
    }

    /// How many of this unit make a millisecond, or how many milliseconds
    /// one of it makes: (multiplier, divisor).
    fn to_millis(self) -> (i64, i64) {
        match self {
            EpochUnit::S => (1_000, 1),
            EpochUnit::Ms => (1, 1),
            EpochUnit::Us => (1, 1_000),
            EpochUnit::Ns => (1, 1_000_000),
        }
    }
}

/// Epoch values must fall in [1990-01-01, 2200-01-01) UTC, in milliseconds.
/// Wide enough for any card transaction, narrow enough that a value in the
/// wrong unit (a factor of 1,000 off) always falls outside.
pub const EPOCH_RANGE: std::ops::Range<i64> = 631_152_000_000..7_258_118_400_000;

/// Why a value is not a timestamp. The messages never quote the value: a
/// timestamp field that received a card number must not echo it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error(
        "the epoch value is out of range for unit `{0}` (it must fall between 1990 and 2199); \
         check the field's declared unit"
    )]
    OutOfRange(&'static str),
    #[error("the string does not match {0}")]
    NoMatch(String),
    #[error("the local time does not exist in zone {0} (a daylight-saving gap)")]
    NonexistentLocalTime(String),
}

/// A zone for timestamps written without one.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Zone {
    Fixed(FixedOffset),
    Named(chrono_tz::Tz),
}

/// How one timestamp field is read.
#[derive(Debug, Clone, PartialEq)]
pub struct TimestampFormat {
    unit: EpochUnit,
    /// A strftime format for strings, instead of the default forms.
    format: Option<String>,
    /// Whether `format` carries its own offset (%z and friends).
    format_has_zone: bool,
    zone: Zone,
    zone_name: String,
}

impl Default for TimestampFormat {
    fn default() -> Self {
        Self {
            unit: EpochUnit::Ms,
            format: None,
            format_has_zone: false,
            zone: Zone::Fixed(FixedOffset::east_opt(0).expect("0 is a valid offset")),
            zone_name: "UTC".into(),
        }
    }
}

impl TimestampFormat {
    /// `timezone` is an IANA name (`Europe/Paris`), `UTC`, or a fixed offset
    /// (`+02:00`); `format` is a chrono strftime format.
    pub fn new(
        unit: Option<EpochUnit>,
        format: Option<&str>,
        timezone: Option<&str>,
    ) -> Result<Self, String> {
        let mut parsed = Self {
            unit: unit.unwrap_or_default(),
            ..Self::default()
        };
        if let Some(name) = timezone {
            parsed.zone = parse_zone(name)?;
            parsed.zone_name = name.to_owned();
        }
        if let Some(format) = format {
            check_format(format)?;
            parsed.format_has_zone = ["%z", "%:z", "%::z", "%#z", "%Z"]
                .iter()
                .any(|z| format.contains(z));
            parsed.format = Some(format.to_owned());
        }
        Ok(parsed)
    }

    /// An integer epoch value in the declared unit.
    pub fn from_epoch(&self, value: i64) -> Result<i64, TimestampError> {
        let out_of_range = || TimestampError::OutOfRange(self.unit.as_str());
        let (multiplier, divisor) = self.unit.to_millis();
        let millis = value
            .checked_mul(multiplier)
            .ok_or_else(out_of_range)?
            .div_euclid(divisor);
        EPOCH_RANGE
            .contains(&millis)
            .then_some(millis)
            .ok_or_else(out_of_range)
    }

    /// A fractional epoch value (`1717400000.25` seconds, as Python's
    /// `time.time()` writes) in the declared unit.
    pub fn from_epoch_float(&self, value: f64) -> Result<i64, TimestampError> {
        let (multiplier, divisor) = self.unit.to_millis();
        let millis = (value * multiplier as f64 / divisor as f64).floor();
        let range = EPOCH_RANGE.start as f64..EPOCH_RANGE.end as f64;
        if range.contains(&millis) {
            Ok(millis as i64)
        } else {
            Err(TimestampError::OutOfRange(self.unit.as_str()))
        }
    }

    /// A string: the declared format, or else RFC 3339, a zone-less
    /// `YYYY-MM-DD[ T]HH:MM:SS[.fraction]`, or epoch digits.
    pub fn from_str(&self, text: &str) -> Result<i64, TimestampError> {
        let text = text.trim();
        if let Some(format) = &self.format {
            return self.with_format(text, format);
        }
        if let Ok(t) = DateTime::parse_from_rfc3339(text) {
            return Ok(t.timestamp_millis());
        }
        for naive_format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
            if let Ok(naive) = NaiveDateTime::parse_from_str(text, naive_format) {
                return self.localise(naive);
            }
        }
        let digits = text.strip_prefix('-').unwrap_or(text);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            let value = text
                .parse::<i64>()
                .map_err(|_| TimestampError::OutOfRange(self.unit.as_str()))?;
            return self.from_epoch(value);
        }
        Err(TimestampError::NoMatch(format!(
            "RFC 3339, `YYYY-MM-DD HH:MM:SS[.fraction]` (read in {}) or epoch {}",
            self.zone_name,
            self.unit.as_str()
        )))
    }

    fn with_format(&self, text: &str, format: &str) -> Result<i64, TimestampError> {
        let no_match = || TimestampError::NoMatch(format!("the declared format `{format}`"));
        if self.format_has_zone {
            return DateTime::parse_from_str(text, format)
                .map(|t| t.timestamp_millis())
                .map_err(|_| no_match());
        }
        let naive = NaiveDateTime::parse_from_str(text, format)
            .or_else(|_| {
                // A date-only format: midnight, local to the zone.
                NaiveDate::parse_from_str(text, format).map(|d| d.and_time(Default::default()))
            })
            .map_err(|_| no_match())?;
        self.localise(naive)
    }

    /// A wall-clock time in the field's zone. In a daylight-saving overlap
    /// the earlier instant is taken; a time in a gap does not exist.
    fn localise(&self, naive: NaiveDateTime) -> Result<i64, TimestampError> {
        let local = match self.zone {
            Zone::Fixed(offset) => offset
                .from_local_datetime(&naive)
                .map(|t| t.timestamp_millis()),
            Zone::Named(tz) => tz.from_local_datetime(&naive).map(|t| t.timestamp_millis()),
        };
        match local {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Ok(t),
            LocalResult::None => Err(TimestampError::NonexistentLocalTime(self.zone_name.clone())),
        }
    }
}

fn parse_zone(name: &str) -> Result<Zone, String> {
    if name.eq_ignore_ascii_case("utc") || name == "Z" {
        return Ok(TimestampFormat::default().zone);
    }
    if let Ok(offset) = name.parse::<FixedOffset>() {
        return Ok(Zone::Fixed(offset));
    }
    name.parse::<chrono_tz::Tz>().map(Zone::Named).map_err(|_| {
        format!(
            "timezone `{name}` is neither an IANA zone name (such as `Europe/Paris`), \
             `UTC`, nor an offset such as `+02:00`"
        )
    })
}

/// Refuses a format chrono cannot use, at schema load rather than per record.
fn check_format(format: &str) -> Result<(), String> {
    use chrono::format::{Item, StrftimeItems};
    if StrftimeItems::new(format).any(|item| matches!(item, Item::Error)) {
        return Err(format!(
            "format `{format}` is not a valid strftime format (see chrono's strftime docs)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .timestamp_millis()
    }

    fn format(unit: Option<EpochUnit>, f: Option<&str>, tz: Option<&str>) -> TimestampFormat {
        TimestampFormat::new(unit, f, tz).unwrap()
    }

    #[test]
    fn rfc3339_in_any_offset() {
        let f = TimestampFormat::default();
        let expected = millis("2019-06-03T05:51:33Z");
        assert_eq!(f.from_str("2019-06-03T05:51:33Z"), Ok(expected));
        assert_eq!(f.from_str("2019-06-03T07:51:33+02:00"), Ok(expected));
        assert_eq!(f.from_str("2019-06-03T05:51:33.250Z"), Ok(expected + 250));
    }

    #[test]
    fn zone_less_strings_are_utc_unless_the_schema_names_a_zone() {
        let utc = TimestampFormat::default();
        assert_eq!(
            utc.from_str("2019-06-03 05:51:33"),
            Ok(millis("2019-06-03T05:51:33Z"))
        );
        assert_eq!(
            utc.from_str("2019-06-03T05:51:33.5"),
            Ok(millis("2019-06-03T05:51:33.5Z"))
        );
        let paris = format(None, None, Some("Europe/Paris"));
        // Summer time: UTC+2.
        assert_eq!(
            paris.from_str("2019-06-03 05:51:33"),
            Ok(millis("2019-06-03T03:51:33Z"))
        );
        // Winter time: UTC+1.
        assert_eq!(
            paris.from_str("2019-01-03 05:51:33"),
            Ok(millis("2019-01-03T04:51:33Z"))
        );
        let fixed = format(None, None, Some("-05:00"));
        assert_eq!(
            fixed.from_str("2019-06-03 05:51:33"),
            Ok(millis("2019-06-03T10:51:33Z"))
        );
        // 02:30 on the last Sunday of March does not exist in Paris.
        assert_eq!(
            paris.from_str("2019-03-31 02:30:00"),
            Err(TimestampError::NonexistentLocalTime("Europe/Paris".into()))
        );
    }

    #[test]
    fn epoch_values_in_each_declared_unit() {
        let expected = millis("2023-11-14T22:13:20Z");
        let cases = [
            (EpochUnit::S, 1_700_000_000i64),
            (EpochUnit::Ms, 1_700_000_000_000),
            (EpochUnit::Us, 1_700_000_000_000_000),
            (EpochUnit::Ns, 1_700_000_000_000_000_000),
        ];
        for (unit, value) in cases {
            let f = format(Some(unit), None, None);
            assert_eq!(f.from_epoch(value), Ok(expected), "{unit:?}");
            assert_eq!(f.from_str(&value.to_string()), Ok(expected), "{unit:?}");
        }
        let seconds = format(Some(EpochUnit::S), None, None);
        assert_eq!(
            seconds.from_epoch_float(1_700_000_000.25),
            Ok(expected + 250)
        );
    }

    #[test]
    fn a_value_in_the_wrong_unit_is_refused_not_misread() {
        // Seconds where milliseconds are declared: January 1970.
        let ms = TimestampFormat::default();
        assert_eq!(
            ms.from_epoch(1_700_000_000),
            Err(TimestampError::OutOfRange("ms"))
        );
        // Milliseconds where seconds are declared: the year 55,000.
        let s = format(Some(EpochUnit::S), None, None);
        assert_eq!(
            s.from_epoch(1_700_000_000_000),
            Err(TimestampError::OutOfRange("s"))
        );
        // Overflowing the multiplication is out of range too, not a panic.
        assert_eq!(s.from_epoch(i64::MAX), Err(TimestampError::OutOfRange("s")));
        assert_eq!(s.from_epoch(i64::MIN), Err(TimestampError::OutOfRange("s")));
        assert!(s.from_epoch_float(f64::NAN).is_err());
        assert!(s.from_epoch_float(1e300).is_err());
        assert!(ms.from_str("99999999999999999999999").is_err());
    }

    #[test]
    fn a_declared_format_with_or_without_its_own_zone() {
        let european = format(None, Some("%d/%m/%Y %H:%M"), Some("Europe/Paris"));
        assert_eq!(
            european.from_str("03/06/2019 05:51"),
            Ok(millis("2019-06-03T03:51:00Z"))
        );
        let date_only = format(None, Some("%Y%m%d"), None);
        assert_eq!(
            date_only.from_str("20190603"),
            Ok(millis("2019-06-03T00:00:00Z"))
        );
        let zoned = format(None, Some("%d.%m.%Y %H:%M:%S %z"), None);
        assert_eq!(
            zoned.from_str("03.06.2019 05:51:33 +0100"),
            Ok(millis("2019-06-03T04:51:33Z"))
        );
        let refused = european.from_str("2019-06-03 05:51:33").unwrap_err();
        assert!(refused.to_string().contains("%d/%m/%Y %H:%M"), "{refused}");
    }

    #[test]
    fn bad_declarations_are_refused_with_what_is_wrong() {
        let err = TimestampFormat::new(None, None, Some("Mars/Olympus")).unwrap_err();
        assert!(err.contains("Mars/Olympus"), "{err}");
        let err = TimestampFormat::new(None, Some("%Y-%m-%d %Q"), None).unwrap_err();
        assert!(err.contains("not a valid strftime"), "{err}");
    }

    #[test]
    fn messages_never_quote_the_value() {
        let f = TimestampFormat::default();
        let err = f.from_str("4111111111111111x").unwrap_err().to_string();
        assert!(!err.contains("4111"), "{err}");
        let err = f.from_epoch(4_111_111_111_111_111).unwrap_err().to_string();
        assert!(!err.contains("4111"), "{err}");
    }
}

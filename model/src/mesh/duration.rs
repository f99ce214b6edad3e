//! Durations as Istio resources write them: protobuf `Duration` JSON (`"1.5s"`) and Go-style strings
//! (`"100ms"`, `"1m30s"`, `"2h"`).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::Duration as StdDuration;

/// A non-negative duration parsed from an Istio/Go duration string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(StdDuration);

/// Why a string is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {0:?} (expected e.g. \"10s\", \"250ms\", \"1m30s\")")]
pub struct DurationError(String);

impl Duration {
    pub const ZERO: Duration = Duration(StdDuration::ZERO);

    pub fn from_millis(ms: u64) -> Self {
        Self(StdDuration::from_millis(ms))
    }

    pub fn as_std(self) -> StdDuration {
        self.0
    }

    pub fn as_millis_f64(self) -> f64 {
        self.0.as_secs_f64() * 1000.0
    }
}

impl From<StdDuration> for Duration {
    fn from(d: StdDuration) -> Self {
        Self(d)
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = || DurationError(input.to_owned());
        let s = input.trim();
        if s == "0" {
            return Ok(Self::ZERO);
        }
        let mut rest = s;
        let mut total_nanos: f64 = 0.0;
        if rest.is_empty() {
            return Err(err());
        }
        while !rest.is_empty() {
            let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(err)?;
            if number_len == 0 {
                return Err(err());
            }
            let number: f64 = rest[..number_len].parse().map_err(|_| err())?;
            rest = &rest[number_len..];
            let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
            let nanos_per_unit = match &rest[..unit_len] {
                "h" => 3_600e9,
                "m" => 60e9,
                "s" => 1e9,
                "ms" => 1e6,
                "us" | "µs" => 1e3,
                "ns" => 1.0,
                _ => return Err(err()),
            };
            rest = &rest[unit_len..];
            total_nanos += number * nanos_per_unit;
        }
        if !total_nanos.is_finite() || total_nanos > u64::MAX as f64 {
            return Err(err());
        }
        Ok(Self(StdDuration::from_nanos(total_nanos.round() as u64)))
    }
}

impl fmt::Display for Duration {
    /// The shortest exact form: `30s`, `250ms`, `1.5s`, `2m`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos == 0 {
            f.write_str("0s")
        } else if nanos.is_multiple_of(60_000_000_000) && nanos >= 60_000_000_000 {
            write!(f, "{}m", nanos / 60_000_000_000)
        } else if nanos.is_multiple_of(1_000_000) && nanos < 1_000_000_000 {
            write!(f, "{}ms", nanos / 1_000_000)
        } else if nanos.is_multiple_of(1_000_000) {
            write!(f, "{}s", self.0.as_secs_f64())
        } else {
            write!(f, "{}us", self.0.as_secs_f64() * 1e6)
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_istio_and_go_forms() {
        let ms = |s: &str| s.parse::<Duration>().unwrap().as_std().as_millis();
        assert_eq!(ms("10s"), 10_000);
        assert_eq!(ms("0.5s"), 500);
        assert_eq!(ms("250ms"), 250);
        assert_eq!(ms("1m30s"), 90_000);
        assert_eq!(ms("2h"), 7_200_000);
        assert_eq!(ms("0"), 0);
        assert_eq!(ms("0.001s"), 1);
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "s", "10", "10x", "-1s", "1.2.3s", "ten seconds", "1e400h"] {
            assert!(bad.parse::<Duration>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn displays_readably() {
        for (input, shown) in [("30s", "30s"), ("250ms", "250ms"), ("1.5s", "1.5s"), ("120s", "2m"), ("0s", "0s")] {
            assert_eq!(input.parse::<Duration>().unwrap().to_string(), shown);
        }
    }

    proptest! {
        #[test]
        fn display_round_trips(ms in 0u64..10_000_000) {
            let d = Duration::from_millis(ms);
            prop_assert_eq!(d.to_string().parse::<Duration>().unwrap(), d);
        }

        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = s.parse::<Duration>();
        }
    }
}

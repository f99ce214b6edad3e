//! Reading one JSON object per line, bounded to [`MAX_JSON_FIELDS`] fields; shared by the JSON formats.

use crate::error::{MAX_JSON_FIELDS, ParseError};
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde_json::{Map, Value};
use std::cell::Cell;
use std::fmt;

/// Parses `line` as one JSON object with at most [`MAX_JSON_FIELDS`] fields (duplicates count).
pub(crate) fn read_object(line: &str) -> Result<Map<String, Value>, ParseError> {
    let overflowed = Cell::new(false);
    let mut deserializer = serde_json::Deserializer::from_str(line);
    let object = BoundedObject { overflowed: &overflowed }
        .deserialize(&mut deserializer)
        .and_then(|object| deserializer.end().map(|()| object));
    object.map_err(|err| {
        if overflowed.get() {
            ParseError::TooManyFields { limit: MAX_JSON_FIELDS }
        } else {
            ParseError::Json(err.to_string())
        }
    })
}

/// Deserializes an object, stopping at the first field over the limit instead of reading them all. The flag
/// tells the caller that this, not bad syntax, was the error.
struct BoundedObject<'a> {
    overflowed: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for BoundedObject<'_> {
    type Value = Map<String, Value>;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for BoundedObject<'_> {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut object = Map::new();
        let mut fields = 0;
        while let Some((key, value)) = access.next_entry::<String, Value>()? {
            fields += 1;
            if fields > MAX_JSON_FIELDS {
                self.overflowed.set(true);
                return Err(de::Error::custom(format_args!("more than {MAX_JSON_FIELDS} fields")));
            }
            object.insert(key, value);
        }
        Ok(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_object() {
        let object = read_object(r#" {"a": 1, "b": null} "#).unwrap();
        assert_eq!(object.len(), 2);
    }

    #[test]
    fn rejects_non_objects_and_trailing_data() {
        for bad in ["[1]", "1", "\"x\"", "{\"a\":1} x", "{\"a\":", ""] {
            assert!(matches!(read_object(bad), Err(ParseError::Json(_))), "{bad}");
        }
    }

    #[test]
    fn limits_the_number_of_fields_counting_duplicates() {
        let fields = |n: usize, key: &dyn Fn(usize) -> String| {
            format!("{{{}}}", (0..n).map(|i| format!("\"{}\":{i}", key(i))).collect::<Vec<_>>().join(","))
        };
        assert!(read_object(&fields(MAX_JSON_FIELDS, &|i| format!("k{i}"))).is_ok());
        let too_many = ParseError::TooManyFields { limit: MAX_JSON_FIELDS };
        assert_eq!(read_object(&fields(MAX_JSON_FIELDS + 1, &|i| format!("k{i}"))).unwrap_err(), too_many);
        assert_eq!(read_object(&fields(MAX_JSON_FIELDS + 1, &|_| "k".into())).unwrap_err(), too_many);
    }
}

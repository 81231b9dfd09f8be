//! Whole numbers in request bodies as the management API's OpenAPI document
//! describes them: a JSON Schema `integer` is any number without a
//! fractional part, so `5.0` is one; serde alone takes only `5`.

use serde::{Deserialize, Deserializer};

fn whole_i64<'de, D: Deserializer<'de>>(number: serde_json::Number) -> Result<i64, D::Error> {
    if let Some(n) = number.as_i64() {
        return Ok(n);
    }
    // i64::MIN..2^63 as f64, exactly; the cast below is then exact too.
    match number.as_f64() {
        Some(f) if f.fract() == 0.0 && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&f) => {
            Ok(f as i64)
        }
        _ => Err(serde::de::Error::custom(format!("{number} is not a whole number in range"))),
    }
}

/// A whole number that fits `T`, for `#[serde(deserialize_with = "…")]`.
pub fn whole<'de, D: Deserializer<'de>, T: TryFrom<i64>>(deserializer: D) -> Result<T, D::Error> {
    let n = whole_i64::<D>(serde_json::Number::deserialize(deserializer)?)?;
    T::try_from(n).map_err(|_| serde::de::Error::custom(format!("{n} is out of range")))
}

/// An optional whole number (`null` or absent: `None`), with `#[serde(default)]`.
pub fn whole_or_null<'de, D: Deserializer<'de>, T: TryFrom<i64>>(deserializer: D) -> Result<Option<T>, D::Error> {
    match Option::<serde_json::Number>::deserialize(deserializer)? {
        None => Ok(None),
        Some(number) => {
            let n = whole_i64::<D>(number)?;
            T::try_from(n).map(Some).map_err(|_| serde::de::Error::custom(format!("{n} is out of range")))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize, Debug, PartialEq)]
    struct Body {
        #[serde(deserialize_with = "super::whole")]
        percent: u8,
        #[serde(default, deserialize_with = "super::whole_or_null")]
        secs: Option<i64>,
    }

    #[test]
    fn whole_numbers_with_or_without_a_fraction_of_zero() {
        let read = |s: &str| serde_json::from_str::<Body>(s).map_err(|e| e.to_string());
        assert_eq!(read(r#"{"percent": 5.0, "secs": -412.0}"#), Ok(Body { percent: 5, secs: Some(-412) }));
        assert_eq!(read(r#"{"percent": 100, "secs": null}"#), Ok(Body { percent: 100, secs: None }));
        assert_eq!(read(r#"{"percent": 1}"#), Ok(Body { percent: 1, secs: None }));
        for bad in
            [r#"{"percent": 5.5}"#, r#"{"percent": 256}"#, r#"{"percent": "5"}"#, r#"{"percent": 1, "secs": 1e300}"#]
        {
            assert!(read(bad).is_err(), "{bad}");
        }
    }
}

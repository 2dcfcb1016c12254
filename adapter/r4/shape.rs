//! The shape of a resource: everything of its JSON that fhirbolt's verdict depends on.
//!
//! fhirbolt 0.4 reads a resource by its element names, their order and nesting, the JSON
//! type of each value and the resource types named in it. It keeps strings as they are, except
//! that a string in a boolean or integer element is parsed (`"true"`, `"12"`), and an integer
//! must fit the element's type (i32 for integer, u32 for unsignedInt and positiveInt). The
//! shape holds exactly that: every name, the JSON type of every value, each number's class,
//! and verbatim the strings fhirbolt would parse and the values of `resourceType`. Two
//! resources of the same shape get the same verdict.

use serde_json::{Number, Value};

/// The shape of `resource`, as bytes that differ when shapes differ.
pub fn shape(resource: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    value(resource, false, &mut out);
    out
}

fn value(v: &Value, names_type: bool, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.push(b'n'),
        Value::Bool(_) => out.push(b'b'),
        Value::Number(n) => {
            out.push(b'0');
            out.push(number_class(n));
        }
        Value::String(s) if names_type || parsed_by_fhirbolt(s) => {
            out.push(b'S');
            bytes(s.as_bytes(), out);
        }
        Value::String(_) => out.push(b's'),
        Value::Array(items) => {
            out.push(b'[');
            for item in items {
                value(item, false, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (key, item) in map {
                bytes(key.as_bytes(), out);
                // fhirbolt reads `_resourceType` as `resourceType`, as it does every `_` name.
                value(item, key == "resourceType" || key == "_resourceType", out);
            }
            out.push(b'}');
        }
    }
}

/// Length-prefixed, so that no two sequences of names run together alike.
fn bytes(b: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    out.extend_from_slice(b);
}

/// A string fhirbolt parses when it stands in a boolean or integer element: one Rust's
/// `bool` or integer parsing could accept. Every other string fails those parses alike.
fn parsed_by_fhirbolt(s: &str) -> bool {
    if s == "true" || s == "false" {
        return true;
    }
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// How serde_json hands the number on (as `Number::deserialize_any` does with
/// `arbitrary_precision`: as u64, i64, u128 or i128, f64, or its text), and for an integer in
/// which of the ranges of i32 and u32 it lies, which fhirbolt checks.
fn number_class(n: &Number) -> u8 {
    const I32_MAX: i64 = i32::MAX as i64;
    const U32_MAX: i64 = u32::MAX as i64;
    const I32_MIN: i64 = i32::MIN as i64;
    if let Some(u) = n.as_u64() {
        match i64::try_from(u) {
            Ok(0..=I32_MAX) => b'a',
            Ok(0..=U32_MAX) => b'b',
            Ok(_) => b'c',
            Err(_) => b'C',
        }
    } else if let Some(i) = n.as_i64() {
        match i {
            0 => b'z', // `-0`
            I32_MIN..=-1 => b'e',
            _ => b'g',
        }
    } else if n.as_u128().is_some() || n.as_i128().is_some() {
        b'w'
    } else if n.as_f64().is_some_and(f64::is_finite) {
        b'f'
    } else {
        b'd'
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_order_nesting_and_json_types_make_the_shape() {
        let a = json!({"resourceType": "Patient", "gender": "male", "active": true});
        assert_eq!(
            shape(&a),
            shape(&json!({"resourceType": "Patient", "gender": "female", "active": false}))
        );
        for other in [
            json!({"resourceType": "Patient", "active": true, "gender": "male"}),
            json!({"resourceType": "Patient", "gender": ["male"], "active": true}),
            json!({"resourceType": "Patient", "gender": 1, "active": true}),
            json!({"resourceType": "Patient", "gender": null, "active": true}),
            json!({"resourceType": "Patient", "gendre": "male", "active": true}),
            json!({"resourceType": "Person", "gender": "male", "active": true}),
            json!({"resourceType": "Patient", "gender": "male", "active": "true"}),
        ] {
            assert_ne!(shape(&a), shape(&other), "{other}");
        }
    }

    #[test]
    fn arrays_keep_their_length() {
        let one = json!({"given": ["a"], "_given": [null]});
        let two = json!({"given": ["a", "b"], "_given": [null]});
        assert_ne!(shape(&one), shape(&two));
    }

    #[test]
    fn names_cannot_run_together() {
        assert_ne!(
            shape(&json!({"ab": {"c": 1}})),
            shape(&json!({"a": {"bc": 1}}))
        );
    }

    #[test]
    fn strings_fhirbolt_would_parse_are_kept() {
        for s in ["true", "false", "12", "+3", "-0", "0099"] {
            assert!(parsed_by_fhirbolt(s), "{s}");
        }
        for s in [
            "",
            "+",
            "-",
            "True",
            "1.5",
            "1e3",
            " 1",
            "twelve",
            "2026-12-01",
        ] {
            assert!(!parsed_by_fhirbolt(s), "{s}");
        }
        assert_ne!(
            shape(&json!({"x": "12"})),
            shape(&json!({"x": "13"})),
            "an integer in a string is kept verbatim"
        );
        assert_eq!(shape(&json!({"x": "a"})), shape(&json!({"x": "b"})));
    }

    #[test]
    fn numbers_fall_in_classes_by_how_fhirbolt_reads_them() {
        let class = |v: Value| number_class(v.as_number().unwrap());
        assert_eq!(class(json!(1)), class(json!(2_147_483_647u64)));
        assert_ne!(class(json!(1)), class(json!(2_147_483_648u64)));
        assert_eq!(
            class(json!(2_147_483_648u64)),
            class(json!(4_294_967_295u64))
        );
        assert_ne!(class(json!(1)), class(json!(4_294_967_296u64)));
        assert_ne!(class(json!(-1)), class(json!(1)));
        assert_ne!(class(json!(-1)), class(json!(-2_147_483_649i64)));
        let parsed = |s: &str| class(serde_json::from_str(s).unwrap());
        assert_ne!(parsed("-0"), parsed("-1"));
        assert_ne!(parsed("1.5"), parsed("1"));
        assert_eq!(parsed("1.5"), parsed("72.25"));
        assert_ne!(parsed("1"), parsed("100000000000000000000"));
    }
}

//! Raw postback parameters: query string, form body or JSON body, merged into one map.
//!
//! Rules (docs/design.md §3): a parameter given twice with different values is an error,
//! given twice with the same value is fine; unknown parameters are kept here and ignored by the
//! validation; an empty value counts as absent. Text must be valid UTF-8 after
//! percent-decoding; nothing is decoded lossily.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// A refused postback: which parameter is wrong and why. Answered as
/// `400 {"ok":false,"error":…,"field":…}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {error}")]
pub struct Invalid {
    pub field: String,
    pub error: String,
}

impl Invalid {
    pub fn new(field: &str, error: impl Into<String>) -> Self {
        Invalid {
            field: field.to_string(),
            error: error.into(),
        }
    }
}

/// Most parameters one postback may carry; real networks send a few dozen at most, so more is
/// abuse and is refused before any per-parameter work.
const MAX_PARAMS: usize = 256;

/// The decoded parameters of one request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    /// The value of `name`, `None` when absent or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Every parameter in byte order of its name, empty values included.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn insert(&mut self, name: String, value: String) -> Result<(), Invalid> {
        if let Some(old) = self.0.get(&name) {
            if *old != value {
                return Err(Invalid::new(
                    &name,
                    "was given more than once with different values",
                ));
            }
            return Ok(());
        }
        if self.0.len() >= MAX_PARAMS {
            return Err(Invalid::new("", "too many parameters"));
        }
        self.0.insert(name, value);
        Ok(())
    }
}

impl Params {
    /// Parameters from name/value pairs (the last of a repeated name wins); for callers that
    /// already hold decoded values, such as importers and tests.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        Params(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }
}

impl<const N: usize> From<[(&str, &str); N]> for Params {
    fn from(pairs: [(&str, &str); N]) -> Self {
        Params::from_pairs(&pairs)
    }
}

/// How a request body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Form,
}

impl BodyKind {
    /// JSON for `application/json` and `…+json`; form for everything else, because networks
    /// often post form bodies without the right content type.
    pub fn from_content_type(content_type: Option<&str>) -> Self {
        let essence = content_type
            .and_then(|ct| ct.split(';').next())
            .map(|s| s.trim().to_ascii_lowercase())
            .unwrap_or_default();
        if essence == "application/json" || essence.ends_with("+json") {
            BodyKind::Json
        } else {
            BodyKind::Form
        }
    }
}

/// Merges the query string and the body of a request into one parameter map.
pub fn parse(query: Option<&str>, body: &[u8], kind: BodyKind) -> Result<Params, Invalid> {
    let mut params = Params::default();
    if let Some(q) = query {
        parse_urlencoded(q.as_bytes(), &mut params)?;
    }
    let body_is_blank = body.iter().all(u8::is_ascii_whitespace);
    if !body_is_blank {
        match kind {
            BodyKind::Form => parse_urlencoded(body, &mut params)?,
            BodyKind::Json => parse_json(body, &mut params)?,
        }
    }
    Ok(params)
}

/// The value of `name` in URL-encoded `input`, skipping pairs that do not decode. For reading
/// a credential out of a request whose other parameters are malformed.
pub fn find(input: &[u8], name: &str) -> Option<String> {
    input.split(|&b| b == b'&').find_map(|pair| {
        let i = pair.iter().position(|&b| b == b'=')?;
        (percent_decode(&pair[..i])? == name).then(|| percent_decode(&pair[i + 1..]))?
    })
}

fn parse_urlencoded(input: &[u8], params: &mut Params) -> Result<(), Invalid> {
    for pair in input.split(|&b| b == b'&') {
        if pair.is_empty() {
            continue;
        }
        let (raw_name, raw_value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        let name = percent_decode(raw_name).ok_or_else(|| {
            Invalid::new("", "a parameter name is not valid percent-encoded UTF-8")
        })?;
        let value = percent_decode(raw_value)
            .ok_or_else(|| Invalid::new(&name, "is not valid percent-encoded UTF-8"))?;
        params.insert(name, value)?;
    }
    Ok(())
}

/// Decodes `+` and `%XX`; `None` for a malformed escape or bytes that are not UTF-8.
fn percent_decode(input: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = input.get(i + 1..i + 3)?;
                let hi = (hex[0] as char).to_digit(16)?;
                let lo = (hex[1] as char).to_digit(16)?;
                out.push((hi * 16 + lo) as u8);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn parse_json(body: &[u8], params: &mut Params) -> Result<(), Invalid> {
    let text =
        std::str::from_utf8(body).map_err(|_| Invalid::new("", "the JSON body is not UTF-8"))?;
    let entries: Entries = serde_json::from_str(text).map_err(|e| {
        Invalid::new(
            "",
            format!("the body is not a JSON object of parameters: {e}"),
        )
    })?;
    for (name, raw) in entries.0 {
        let raw = raw.get();
        let value = match raw.as_bytes().first() {
            Some(b'"') => serde_json::from_str::<String>(raw)
                .map_err(|_| Invalid::new(&name, "is not a valid JSON string"))?,
            Some(b'n') => continue, // null: absent
            Some(b'{' | b'[') => {
                return Err(Invalid::new(
                    &name,
                    "must be a string or a number, not an object or array",
                ));
            }
            // Numbers keep their exact text, so `49.99` is never routed through a float.
            _ => raw.to_string(),
        };
        params.insert(name, value)?;
    }
    Ok(())
}

/// A JSON object read as its entries in order, so a repeated key is seen rather than silently
/// overwritten.
struct Entries(Vec<(String, Box<RawValue>)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<String, Box<RawValue>>()? {
                    if out.len() >= MAX_PARAMS {
                        return Err(serde::de::Error::custom("too many parameters"));
                    }
                    out.push(entry);
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(q: Option<&str>, body: &str, kind: BodyKind) -> Params {
        parse(q, body.as_bytes(), kind).unwrap()
    }

    #[test]
    fn query_form_and_json_merge() {
        let p = ok(
            Some("cid=a&amount=1.5"),
            "txid=t%201&type=x+y",
            BodyKind::Form,
        );
        assert_eq!(p.get("cid"), Some("a"));
        assert_eq!(p.get("txid"), Some("t 1"));
        assert_eq!(p.get("type"), Some("x y"));
        let p = ok(
            Some("cid=a"),
            r#"{"amount": 49.99, "txid": "t", "ref": null, "x": true}"#,
            BodyKind::Json,
        );
        assert_eq!(p.get("amount"), Some("49.99"));
        assert_eq!(p.get("ref"), None);
        assert_eq!(p.get("x"), Some("true"));
    }

    #[test]
    fn numbers_keep_their_text() {
        let p = ok(None, r#"{"amount": 0.30000000000000004}"#, BodyKind::Json);
        assert_eq!(p.get("amount"), Some("0.30000000000000004"));
        let p = ok(None, r#"{"amount": 1e3}"#, BodyKind::Json);
        assert_eq!(p.get("amount"), Some("1e3"));
    }

    #[test]
    fn repeated_parameters() {
        assert!(parse(Some("cid=a&cid=a"), b"", BodyKind::Form).is_ok());
        let e = parse(Some("cid=a&cid=b"), b"", BodyKind::Form).unwrap_err();
        assert_eq!(e.field, "cid");
        let e = parse(Some("cid=a"), b"cid=b", BodyKind::Form).unwrap_err();
        assert_eq!(e.field, "cid");
        let e = parse(None, br#"{"cid":"a","cid":"b"}"#, BodyKind::Json).unwrap_err();
        assert_eq!(e.field, "cid");
    }

    #[test]
    fn malformed_input() {
        assert_eq!(
            parse(Some("cid=%ff"), b"", BodyKind::Form)
                .unwrap_err()
                .field,
            "cid"
        );
        assert_eq!(
            parse(Some("cid=%zz"), b"", BodyKind::Form)
                .unwrap_err()
                .field,
            "cid"
        );
        assert_eq!(
            parse(Some("cid=%4"), b"", BodyKind::Form)
                .unwrap_err()
                .field,
            "cid"
        );
        assert_eq!(parse(None, b"[1,2]", BodyKind::Json).unwrap_err().field, "");
        assert_eq!(
            parse(None, br#"{"cid":{"a":1}}"#, BodyKind::Json)
                .unwrap_err()
                .field,
            "cid"
        );
        assert_eq!(
            parse(None, b"cid=\xff", BodyKind::Form).unwrap_err().field,
            "cid"
        );
        assert!(parse(None, b"{\"cid\":\"\xff\"}", BodyKind::Json).is_err());
    }

    #[test]
    fn content_types() {
        assert_eq!(
            BodyKind::from_content_type(Some("application/json; charset=utf-8")),
            BodyKind::Json
        );
        assert_eq!(
            BodyKind::from_content_type(Some("application/vnd.api+json")),
            BodyKind::Json
        );
        assert_eq!(
            BodyKind::from_content_type(Some("application/x-www-form-urlencoded")),
            BodyKind::Form
        );
        assert_eq!(BodyKind::from_content_type(None), BodyKind::Form);
    }
}

//! The JSON object bodies of `POST`/`PATCH /api/links` and `PATCH /api/webhooks/{id}`, read
//! field by field: a field of another type than its route takes, or one the route does not
//! know, is a 400 naming it (a misspelt `enabled` must not be silently ignored). (`POST
//! /api/webhooks` came first and reads its body with serde, which ignores unknown fields.)

use serde_json::{Map, Value};

use super::ApiError;

/// A JSON object body whose fields are among `known`.
#[derive(Debug)]
pub(super) struct Fields(Map<String, Value>);

impl Fields {
    /// Reads `body` as a JSON object with only `known` fields; `example` shows what is expected.
    pub(super) fn read(body: &[u8], known: &[&str], example: &str) -> Result<Fields, ApiError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::invalid("body", format!("expected {example}: {e}")))?;
        let Value::Object(map) = value else {
            return Err(ApiError::invalid(
                "body",
                format!("expected a JSON object such as {example}"),
            ));
        };
        if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(ApiError::invalid(
                "body",
                format!(
                    "unknown field {unknown:?}; the fields are {}",
                    known.join(", ")
                ),
            ));
        }
        Ok(Fields(map))
    }

    /// A string field, when given (`null` is refused: the field cannot be cleared).
    pub(super) fn string(&self, name: &'static str) -> Result<Option<String>, ApiError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::invalid(name, "must be a string")),
        }
    }

    /// A string field that `null` clears: `None` when absent, `Some(None)` for `null`.
    pub(super) fn nullable_string(
        &self,
        name: &'static str,
    ) -> Result<Option<Option<String>>, ApiError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
            Some(_) => Err(ApiError::invalid(name, "must be a string or null")),
        }
    }

    /// A boolean field, when given.
    pub(super) fn bool(&self, name: &'static str) -> Result<Option<bool>, ApiError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ApiError::invalid(name, "must be true or false")),
        }
    }

    /// A field holding a list of strings, when given.
    pub(super) fn strings(&self, name: &'static str) -> Result<Option<Vec<String>>, ApiError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(ApiError::invalid(name, "must be a list of strings")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(ApiError::invalid(name, "must be a list of strings")),
        }
    }

    /// A money field that `null` clears, when given: a decimal string (`"0.25"`). A JSON
    /// number is refused: JSON readers make it a binary float, which is not exact.
    pub(super) fn money(&self, name: &'static str) -> Result<Option<Option<String>>, ApiError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
            Some(_) => Err(ApiError::invalid(
                name,
                "must be a decimal amount written as a string, such as \"0.25\"",
            )),
        }
    }
}

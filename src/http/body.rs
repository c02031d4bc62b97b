//! Request bodies: a JSON media type (415 otherwise), read whole under a size limit (413 as
//! soon as it grows past it, or at once when `Content-Length` already says so), then parsed as
//! JSON that names no key twice in one object (400: serde_json would silently keep the last
//! value, so a request could mean two things at once).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, web};
use futures_util::StreamExt;
use serde_json::Value;

use super::HttpError;

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body exceeds {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the body could not be read: {0}")]
    Unreadable(String),
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the request body must be JSON (Content-Type application/json or application/fhir+json), not {0}")]
    UnsupportedMediaType(String),
}

impl BodyError {
    pub fn audit_code(&self) -> &'static str {
        match self {
            BodyError::TooLarge { .. } => "payload-too-large",
            BodyError::Unreadable(_) | BodyError::MalformedJson(_) => "malformed-json",
            BodyError::UnsupportedMediaType(_) => "unsupported-media-type",
        }
    }
}

impl From<BodyError> for HttpError {
    fn from(e: BodyError) -> HttpError {
        match e {
            BodyError::TooLarge { .. } => HttpError::outcome(StatusCode::PAYLOAD_TOO_LARGE, "too-costly", e.to_string()),
            BodyError::UnsupportedMediaType(_) => HttpError::outcome(StatusCode::UNSUPPORTED_MEDIA_TYPE, "not-supported", e.to_string()),
            _ => HttpError::outcome(StatusCode::BAD_REQUEST, "structure", e.to_string()),
        }
    }
}

/// The `Content-Length` the client declared, if any.
pub fn declared_length(req: &HttpRequest) -> Option<usize> {
    req.headers().get("content-length")?.to_str().ok()?.parse().ok()
}

/// Refuses a declared media type that is not JSON. A request without `Content-Type` is read as
/// JSON (the body is still checked to be JSON).
fn check_media_type(req: &HttpRequest) -> Result<(), BodyError> {
    let Some(value) = req.headers().get("content-type") else { return Ok(()) };
    let text = value.to_str().unwrap_or_default();
    let essence = text.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/json" | "application/fhir+json" => Ok(()),
        // Only the media type is named back, bounded: never the rest of what the client sent.
        _ => Err(BodyError::UnsupportedMediaType(essence.chars().take(64).collect())),
    }
}

/// Reads the whole body, refusing it as soon as it grows past `limit`.
pub async fn read_body(req: &HttpRequest, mut payload: web::Payload, limit: usize) -> Result<Vec<u8>, BodyError> {
    check_media_type(req)?;
    if declared_length(req).is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge { limit });
    }
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| BodyError::Unreadable(e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Parses JSON, refusing an object that names a key twice.
pub fn parse_json(body: &[u8]) -> Result<Value, BodyError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde::de::DeserializeSeed::deserialize(UniqueKeys, &mut de).map_err(|e| BodyError::MalformedJson(e.to_string()))?;
    de.end().map_err(|e| BodyError::MalformedJson(e.to_string()))?;
    Ok(value)
}

/// Builds a `serde_json::Value` like its own `Deserialize`, but fails on a repeated key.
#[derive(Clone, Copy)]
struct UniqueKeys;

impl<'de> serde::de::DeserializeSeed<'de> for UniqueKeys {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for UniqueKeys {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(self)? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                // Name the key (bounded): it is the client's own field name, not patient data.
                let shown: String = key.chars().take(64).collect();
                return Err(serde::de::Error::custom(format!("the key \"{shown}\" appears twice in one object")));
            }
            let value = map.next_value_seed(self)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_with_a_repeated_key_is_refused_and_other_json_reads_as_serde_json_does() {
        for ok in [r#"{"a": 1, "b": [true, null, 2.5, "x"], "c": {"a": -3}}"#, "[]", "\"s\"", "12345678901234567890"] {
            assert_eq!(parse_json(ok.as_bytes()).unwrap(), serde_json::from_str::<Value>(ok).unwrap(), "{ok}");
        }
        let err = parse_json(br#"{"context": {"patientId": "a", "patientId": "b"}}"#).unwrap_err();
        assert!(err.to_string().contains("\"patientId\" appears twice"), "{err}");
        assert!(parse_json(b"{} trailing").is_err());
        assert!(parse_json(b"{\"a\": 1,}").is_err());
    }
}

//! `Idempotency-Key` parsing: the draft's structured-field string (`"abc"`) or a bare token
//! (`abc`), both meaning the key `abc`.

use std::fmt;

use http::{HeaderMap, HeaderValue};

use super::IDEMPOTENCY_KEY;
use crate::digest::short_digest;

/// The longest key accepted, in characters (the draft's recommendation for servers).
pub const MAX_KEY_LEN: usize = 255;

/// A valid idempotency key: 1 to 255 visible ASCII characters (`!` to `~`) without commas.
///
/// Parsed from the `Idempotency-Key` header, given either as an RFC 8941 string (`"abc"`, the
/// form the IETF draft specifies, where `\"` and `\\` are escapes) or as a bare value (`abc`, what
/// many clients send); both forms give the same key. The layer inserts it into the request
/// extensions before the inner service runs, so handlers can read it.
///
/// `Debug` shows a short hash, never the key: keys are credentials of a sort (whoever knows one can
/// read its stored response within the same scope) and are never logged.
///
/// ```
/// use bulwark::idempotency::IdempotencyKey;
///
/// let quoted = IdempotencyKey::parse(br#""8e03978e-40d5-43e8-bc93-6894a57f9324""#).unwrap();
/// let bare = IdempotencyKey::parse(b"8e03978e-40d5-43e8-bc93-6894a57f9324").unwrap();
/// assert_eq!(quoted, bare);
/// assert_eq!(bare.as_str(), "8e03978e-40d5-43e8-bc93-6894a57f9324");
///
/// assert!(IdempotencyKey::parse(b"").is_err());
/// assert!(IdempotencyKey::parse(b"a,b").is_err());
/// assert!(IdempotencyKey::parse("clé".as_bytes()).is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(Box<str>);

/// Why an `Idempotency-Key` value was refused (answered with
/// [`Rejection::IdempotencyKeyInvalid`](crate::Rejection::IdempotencyKeyInvalid)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidIdempotencyKey {
    /// The key is empty.
    Empty,
    /// The key is longer than 255 characters.
    TooLong,
    /// The key has a character other than visible ASCII, or a comma.
    BadCharacter,
    /// A quoted key is not a well-formed structured-field string (no closing quote, a bad
    /// escape, or something after the closing quote).
    BadQuoting,
    /// The request has more than one `Idempotency-Key` field.
    Repeated,
}

impl fmt::Display for InvalidIdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "idempotency key is empty",
            Self::TooLong => "idempotency key is longer than 255 characters",
            Self::BadCharacter => {
                "idempotency key has a character that is not visible ASCII, or a comma"
            }
            Self::BadQuoting => "idempotency key is not a well-formed structured-field string",
            Self::Repeated => "more than one Idempotency-Key field",
        })
    }
}

impl std::error::Error for InvalidIdempotencyKey {}

impl IdempotencyKey {
    /// Parses a header value: a quoted structured-field string or a bare value, with optional
    /// surrounding spaces or tabs.
    ///
    /// # Errors
    ///
    /// [`InvalidIdempotencyKey`] if the key is empty, longer than 255 characters, has a
    /// character outside `!`..=`~` or a comma, or is badly quoted. A bare value must not contain
    /// `"` (it would be ambiguous with the quoted form).
    pub fn parse(value: &[u8]) -> Result<Self, InvalidIdempotencyKey> {
        let value = trim_ows(value);
        let key = if let Some(quoted) = value.strip_prefix(b"\"") {
            unquote(quoted)?
        } else {
            if value.contains(&b'"') {
                return Err(InvalidIdempotencyKey::BadQuoting);
            }
            value.to_vec()
        };
        if key.is_empty() {
            return Err(InvalidIdempotencyKey::Empty);
        }
        if key.len() > MAX_KEY_LEN {
            return Err(InvalidIdempotencyKey::TooLong);
        }
        if !key.iter().all(|&c| c.is_ascii_graphic() && c != b',') {
            return Err(InvalidIdempotencyKey::BadCharacter);
        }
        // Visible ASCII only, checked just above.
        String::from_utf8(key)
            .map(|s| Self(s.into_boxed_str()))
            .map_err(|_| InvalidIdempotencyKey::BadCharacter)
    }

    /// Parses one header value. See [`parse`](Self::parse).
    ///
    /// # Errors
    ///
    /// As [`parse`](Self::parse).
    pub fn from_header(value: &HeaderValue) -> Result<Self, InvalidIdempotencyKey> {
        Self::parse(value.as_bytes())
    }

    /// The key of a request's headers: `Ok(None)` without an `Idempotency-Key` field.
    ///
    /// # Errors
    ///
    /// As [`parse`](Self::parse), and [`InvalidIdempotencyKey::Repeated`] when the field appears
    /// more than once.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, InvalidIdempotencyKey> {
        let mut values = headers.get_all(&IDEMPOTENCY_KEY).iter();
        let Some(first) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(InvalidIdempotencyKey::Repeated);
        }
        Self::from_header(first).map(Some)
    }

    /// The key itself. Avoid logging it; `Debug` prints a short hash instead.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IdempotencyKey(sha256:{})",
            short_digest(self.0.as_bytes())
        )
    }
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// The content of an RFC 8941 sf-string whose opening quote was already taken off.
fn unquote(v: &[u8]) -> Result<Vec<u8>, InvalidIdempotencyKey> {
    let mut out = Vec::with_capacity(v.len());
    let mut bytes = v.iter();
    while let Some(&c) = bytes.next() {
        match c {
            b'\\' => match bytes.next() {
                Some(&e @ (b'"' | b'\\')) => out.push(e),
                _ => return Err(InvalidIdempotencyKey::BadQuoting),
            },
            b'"' => {
                return if bytes.as_slice().is_empty() {
                    Ok(out)
                } else {
                    Err(InvalidIdempotencyKey::BadQuoting)
                };
            }
            b' '..=b'~' => out.push(c),
            _ => return Err(InvalidIdempotencyKey::BadCharacter),
        }
    }
    Err(InvalidIdempotencyKey::BadQuoting)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<String, InvalidIdempotencyKey> {
        IdempotencyKey::parse(s.as_bytes()).map(|k| k.as_str().to_owned())
    }

    #[test]
    fn quoted_and_bare_are_the_same_key() {
        assert_eq!(parse("\"abc\"").unwrap(), "abc");
        assert_eq!(parse("abc").unwrap(), "abc");
        assert_eq!(parse("  \"abc\"\t").unwrap(), "abc");
        assert_eq!(parse(" abc ").unwrap(), "abc");
        assert_eq!(
            IdempotencyKey::parse(b"\"abc\""),
            IdempotencyKey::parse(b"abc")
        );
    }

    #[test]
    fn escapes_in_quoted_keys() {
        assert_eq!(parse(r#""a\"b""#).unwrap(), "a\"b");
        assert_eq!(parse(r#""a\\b""#).unwrap(), "a\\b");
        assert_eq!(parse(r"a\b").unwrap(), "a\\b");
        assert_eq!(parse(r#""a\b""#), Err(InvalidIdempotencyKey::BadQuoting));
    }

    #[test]
    fn lengths() {
        assert_eq!(parse(""), Err(InvalidIdempotencyKey::Empty));
        assert_eq!(parse("\"\""), Err(InvalidIdempotencyKey::Empty));
        assert_eq!(parse("   "), Err(InvalidIdempotencyKey::Empty));
        let max = "k".repeat(255);
        assert_eq!(parse(&max).unwrap(), max);
        assert_eq!(parse(&format!("\"{max}\"")).unwrap(), max);
        assert_eq!(parse(&"k".repeat(256)), Err(InvalidIdempotencyKey::TooLong));
        assert_eq!(
            parse(&format!("\"{}\"", "k".repeat(256))),
            Err(InvalidIdempotencyKey::TooLong)
        );
    }

    #[test]
    fn characters() {
        assert_eq!(parse("a,b"), Err(InvalidIdempotencyKey::BadCharacter));
        assert_eq!(parse("\"a,b\""), Err(InvalidIdempotencyKey::BadCharacter));
        assert_eq!(parse("a b"), Err(InvalidIdempotencyKey::BadCharacter));
        assert_eq!(parse("\"a b\""), Err(InvalidIdempotencyKey::BadCharacter));
        assert_eq!(parse("clé"), Err(InvalidIdempotencyKey::BadCharacter));
        assert_eq!(parse("\"clé\""), Err(InvalidIdempotencyKey::BadCharacter));
        assert_eq!(parse("a\u{7f}"), Err(InvalidIdempotencyKey::BadCharacter));
        assert_eq!(parse("!~{}"), Ok("!~{}".to_owned()));
    }

    #[test]
    fn quoting() {
        assert_eq!(parse("\"abc"), Err(InvalidIdempotencyKey::BadQuoting));
        assert_eq!(parse("\"abc\";p=1"), Err(InvalidIdempotencyKey::BadQuoting));
        assert_eq!(parse("ab\"c"), Err(InvalidIdempotencyKey::BadQuoting));
        assert_eq!(parse("abc\""), Err(InvalidIdempotencyKey::BadQuoting));
    }

    #[test]
    fn repeated_fields_are_refused() {
        let mut headers = HeaderMap::new();
        assert_eq!(IdempotencyKey::from_headers(&headers), Ok(None));
        headers.append(&IDEMPOTENCY_KEY, HeaderValue::from_static("a"));
        assert!(IdempotencyKey::from_headers(&headers).unwrap().is_some());
        headers.append(&IDEMPOTENCY_KEY, HeaderValue::from_static("a"));
        assert_eq!(
            IdempotencyKey::from_headers(&headers),
            Err(InvalidIdempotencyKey::Repeated)
        );
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = IdempotencyKey::parse(b"secret-key-123").unwrap();
        let debug = format!("{key:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert!(debug.starts_with("IdempotencyKey(sha256:"));
    }
}

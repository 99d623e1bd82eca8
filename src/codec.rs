//! The length-prefixed binary codec under bulwark's byte formats (cache entries, idempotency
//! records): big-endian integers, byte strings behind a `u32` length, header maps as a `u32`
//! count of name/value byte strings. Each format adds its own magic and field order on top; the
//! reader only ever answers what it read or why it could not, never panics on any input.

use http::{HeaderMap, HeaderName, HeaderValue};

/// Why bytes could not be read back. Each format turns it into its
/// [`StoreError::Malformed`](crate::StoreError::Malformed) detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// The input ends before the field does.
    Truncated,
    /// A header name that is not a valid field name.
    HeaderName,
    /// A header value that is not a valid field value.
    HeaderValue,
    /// Text that is not UTF-8.
    Utf8,
}

impl DecodeError {
    /// A short description, for error details.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::HeaderName => "invalid header name",
            Self::HeaderValue => "invalid header value",
            Self::Utf8 => "invalid UTF-8",
        }
    }
}

/// Appends fields to a buffer.
pub(crate) trait Put {
    /// A `u16`, big-endian.
    fn put_u16(&mut self, n: u16);
    /// A `u32`, big-endian.
    fn put_u32(&mut self, n: u32);
    /// A `u64`, big-endian.
    fn put_u64(&mut self, n: u64);
    /// A byte string behind its `u32` length (longer strings are cut at `u32::MAX`).
    fn put_bytes(&mut self, b: &[u8]);
    /// A count, as a `u32`.
    fn put_len(&mut self, n: usize);
    /// Header names: their count, then each as a byte string.
    fn put_names(&mut self, names: &[HeaderName]);
    /// A header map: its count of values, then each name and value as byte strings, in the
    /// map's order (repeated names stay repeated).
    fn put_headers(&mut self, headers: &HeaderMap);
}

impl Put for Vec<u8> {
    fn put_u16(&mut self, n: u16) {
        self.extend_from_slice(&n.to_be_bytes());
    }

    fn put_u32(&mut self, n: u32) {
        self.extend_from_slice(&n.to_be_bytes());
    }

    fn put_u64(&mut self, n: u64) {
        self.extend_from_slice(&n.to_be_bytes());
    }

    fn put_bytes(&mut self, b: &[u8]) {
        let n = u32::try_from(b.len()).unwrap_or(u32::MAX);
        self.put_u32(n);
        self.extend_from_slice(&b[..n as usize]);
    }

    fn put_len(&mut self, n: usize) {
        self.put_u32(u32::try_from(n).unwrap_or(u32::MAX));
    }

    fn put_names(&mut self, names: &[HeaderName]) {
        self.put_len(names.len());
        for n in names {
            self.put_bytes(n.as_str().as_bytes());
        }
    }

    fn put_headers(&mut self, headers: &HeaderMap) {
        self.put_len(headers.len());
        for (n, v) in headers {
            self.put_bytes(n.as_str().as_bytes());
            self.put_bytes(v.as_bytes());
        }
    }
}

/// Reads fields from the front of a byte slice.
#[derive(Debug)]
pub(crate) struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self(bytes)
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    /// How many bytes are left.
    pub(crate) fn remaining(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// A byte string behind its `u32` length.
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// A UTF-8 string behind its `u32` length.
    pub(crate) fn str(&mut self) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| DecodeError::Utf8)
    }

    pub(crate) fn name(&mut self) -> Result<HeaderName, DecodeError> {
        HeaderName::from_bytes(self.bytes()?).map_err(|_| DecodeError::HeaderName)
    }

    /// What [`Put::put_names`] wrote.
    pub(crate) fn names(&mut self) -> Result<Vec<HeaderName>, DecodeError> {
        let n = self.u32()?;
        // Capacity from what the input can hold, not from what it claims.
        let mut v = Vec::with_capacity((n as usize).min(self.remaining() / 4).min(64));
        for _ in 0..n {
            v.push(self.name()?);
        }
        Ok(v)
    }

    /// What [`Put::put_headers`] wrote.
    pub(crate) fn headers(&mut self) -> Result<HeaderMap, DecodeError> {
        let n = self.u32()?;
        let mut h = HeaderMap::with_capacity((n as usize).min(self.remaining() / 8).min(128));
        for _ in 0..n {
            let name = self.name()?;
            let value =
                HeaderValue::from_bytes(self.bytes()?).map_err(|_| DecodeError::HeaderValue)?;
            h.append(name, value);
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_reads_back_as_written() {
        let mut headers = HeaderMap::new();
        headers.append("vary", HeaderValue::from_static("accept"));
        headers.append("set-cookie", HeaderValue::from_static("a=1"));
        headers.append("set-cookie", HeaderValue::from_static("b=2"));
        let names = vec![
            HeaderName::from_static("accept"),
            HeaderName::from_static("x-tenant"),
        ];
        let mut out = Vec::new();
        out.push(7);
        out.put_u16(304);
        out.put_u32(70_000);
        out.put_u64(u64::MAX - 1);
        out.put_bytes(b"bytes");
        out.put_bytes("é".as_bytes());
        out.put_names(&names);
        out.put_headers(&headers);
        out.extend_from_slice(b"tail");

        let mut r = Reader::new(&out);
        assert_eq!(r.u8(), Ok(7));
        assert_eq!(r.u16(), Ok(304));
        assert_eq!(r.u32(), Ok(70_000));
        assert_eq!(r.u64(), Ok(u64::MAX - 1));
        assert_eq!(r.bytes(), Ok(&b"bytes"[..]));
        assert_eq!(r.str(), Ok("é"));
        assert_eq!(r.names(), Ok(names));
        assert_eq!(r.headers(), Ok(headers));
        assert_eq!(r.remaining(), 4);
        assert_eq!(r.take(4), Ok(&b"tail"[..]));
        assert_eq!(r.u8(), Err(DecodeError::Truncated));
    }

    #[test]
    fn the_layout_is_big_endian_and_length_prefixed() {
        let mut headers = HeaderMap::new();
        headers.insert("a", HeaderValue::from_static("b"));
        let mut out = Vec::new();
        out.put_headers(&headers);
        assert_eq!(out, b"\0\0\0\x01\0\0\0\x01a\0\0\0\x01b");
    }

    #[test]
    fn short_or_invalid_input_is_an_error_never_a_panic() {
        // Every prefix of a valid encoding is truncated somewhere.
        let mut headers = HeaderMap::new();
        headers.insert("etag", HeaderValue::from_static("\"v1\""));
        let mut out = Vec::new();
        out.put_headers(&headers);
        for n in 0..out.len() {
            assert_eq!(
                Reader::new(&out[..n]).headers(),
                Err(DecodeError::Truncated)
            );
        }
        // A count far larger than the input does not allocate for it.
        assert_eq!(
            Reader::new(b"\xff\xff\xff\xff").headers(),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            Reader::new(b"\0\0\0\x01\0\0\0\x02a:\0\0\0\0").headers(),
            Err(DecodeError::HeaderName)
        );
        assert_eq!(
            Reader::new(b"\0\0\0\x01\0\0\0\x01a\0\0\0\x01\n").headers(),
            Err(DecodeError::HeaderValue)
        );
        assert_eq!(Reader::new(b"\0\0\0\x01\xff").str(), Err(DecodeError::Utf8));
    }
}

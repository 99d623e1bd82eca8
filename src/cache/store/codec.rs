//! The byte form of an [`Entry`], for stores outside the process. Versioned, length-prefixed,
//! no dependencies; a reader rejects anything it does not understand with
//! [`StoreError::Malformed`].

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};

use super::{Entry, EntryKind};
use crate::{
    StoreError,
    cache::{
        clock::Wall,
        directives::initial_age,
        entry::{Stored, StoredParts},
    },
};

const MAGIC: &[u8; 4] = b"BWC2";

pub(super) fn encode(entry: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(entry.weight());
    out.extend_from_slice(MAGIC);
    match &*entry.0 {
        EntryKind::Index { id, vary, keep_for } => {
            out.push(0);
            out.extend_from_slice(&id.to_be_bytes());
            millis(&mut out, *keep_for);
            names(&mut out, vary);
        }
        EntryKind::Response(s) => {
            out.push(1);
            out.extend_from_slice(&s.status.as_u16().to_be_bytes());
            out.push(u8::from(s.policy_mode) | (u8::from(s.allows_authorized) << 1));
            millis(&mut out, s.response_time.since_epoch());
            millis(&mut out, s.fresh_until.since_epoch());
            millis(&mut out, s.keep_for);
            millis(&mut out, s.stale_while_revalidate);
            millis(&mut out, s.stale_if_error);
            bytes(&mut out, s.req.method.as_str().as_bytes());
            bytes(&mut out, s.req.uri.to_string().as_bytes());
            headers(&mut out, &s.req.headers);
            names(&mut out, &s.vary);
            bytes(&mut out, s.vary_key.as_bytes());
            headers(&mut out, &s.headers);
            bytes(&mut out, &s.body);
        }
    }
    out
}

fn millis(out: &mut Vec<u8>, d: Duration) {
    out.extend_from_slice(
        &u64::try_from(d.as_millis())
            .unwrap_or(u64::MAX)
            .to_be_bytes(),
    );
}

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(b);
}

fn names(out: &mut Vec<u8>, names: &[HeaderName]) {
    out.extend_from_slice(&u32::try_from(names.len()).unwrap_or(u32::MAX).to_be_bytes());
    for n in names {
        bytes(out, n.as_str().as_bytes());
    }
}

fn headers(out: &mut Vec<u8>, h: &HeaderMap) {
    out.extend_from_slice(&u32::try_from(h.len()).unwrap_or(u32::MAX).to_be_bytes());
    for (n, v) in h {
        bytes(out, n.as_str().as_bytes());
        bytes(out, v.as_bytes());
    }
}

struct Reader<'a>(&'a [u8]);

fn bad(detail: &str) -> StoreError {
    StoreError::Malformed {
        operation: "get",
        detail: detail.to_owned(),
    }
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.0.len() < n {
            return Err(bad("truncated cache entry"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, StoreError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, StoreError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, StoreError> {
        let b = self.take(8)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn millis(&mut self) -> Result<Duration, StoreError> {
        Ok(Duration::from_millis(self.u64()?))
    }
    fn bytes(&mut self) -> Result<&'a [u8], StoreError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn str(&mut self) -> Result<&'a str, StoreError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| bad("invalid UTF-8"))
    }
    fn name(&mut self) -> Result<HeaderName, StoreError> {
        HeaderName::from_bytes(self.bytes()?).map_err(|_| bad("invalid header name"))
    }
    fn names(&mut self) -> Result<Vec<HeaderName>, StoreError> {
        let n = self.u32()?;
        let mut v = Vec::with_capacity(n.min(64) as usize);
        for _ in 0..n {
            v.push(self.name()?);
        }
        Ok(v)
    }
    fn headers(&mut self) -> Result<HeaderMap, StoreError> {
        let n = self.u32()?;
        let mut h = HeaderMap::with_capacity(n.min(128) as usize);
        for _ in 0..n {
            let name = self.name()?;
            let value =
                HeaderValue::from_bytes(self.bytes()?).map_err(|_| bad("invalid header value"))?;
            h.append(name, value);
        }
        Ok(h)
    }
}

pub(super) fn decode(input: &[u8]) -> Result<Entry, StoreError> {
    let mut r = Reader(input);
    if r.take(4)? != MAGIC {
        return Err(bad("unknown cache entry format"));
    }
    match r.u8()? {
        0 => {
            let id = r.u64()?;
            let keep_for = r.millis()?;
            let vary = r.names()?;
            Ok(Entry::index(id, vary, keep_for))
        }
        1 => {
            let status = StatusCode::from_u16(r.u16()?).map_err(|_| bad("invalid status code"))?;
            let flags = r.u8()?;
            let response_time = Wall::from_epoch(r.millis()?);
            let fresh_until = Wall::from_epoch(r.millis()?);
            let keep_for = r.millis()?;
            let swr = r.millis()?;
            let sie = r.millis()?;
            let method = Method::from_bytes(r.bytes()?).map_err(|_| bad("invalid method"))?;
            let uri: Uri = r.str()?.parse().map_err(|_| bad("invalid URI"))?;
            let req_headers = r.headers()?;
            let vary = r.names()?;
            let vary_key = r.str()?.to_owned();
            let headers = r.headers()?;
            let body = Bytes::copy_from_slice(r.bytes()?);
            Ok(Entry::response(Stored {
                status,
                initial_age: initial_age(&headers),
                headers,
                body,
                req: StoredParts {
                    method,
                    uri,
                    headers: req_headers,
                },
                policy: None,
                policy_mode: flags & 1 != 0,
                response_time,
                fresh_until,
                keep_for,
                stale_while_revalidate: swr,
                stale_if_error: sie,
                allows_authorized: flags & 2 != 0,
                vary,
                vary_key,
                hit_values: Default::default(),
            }))
        }
        _ => Err(bad("unknown cache entry kind")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let idx = Entry::index(
            7,
            vec![HeaderName::from_static("accept")],
            Duration::from_secs(9),
        );
        let back = decode(&encode(&idx)).unwrap();
        assert!(matches!(
            &*back.0,
            EntryKind::Index { id: 7, vary, keep_for } if vary.len() == 1 && keep_for.as_secs() == 9
        ));
        assert!(decode(b"nope").is_err());
        assert!(decode(&encode(&idx)[..10]).is_err());
    }
}

//! The byte form of an [`Entry`], for stores outside the process. Versioned, length-prefixed,
//! no dependencies; a reader rejects anything it does not understand with
//! [`StoreError::Malformed`].

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode, Uri};

use super::{Entry, EntryKind};
use crate::{
    StoreError,
    cache::{
        clock::Wall,
        directives::initial_age,
        entry::{Stored, StoredParts},
    },
    codec::{DecodeError, Put, Reader},
    stored::StoredResponse,
};

const MAGIC: &[u8; 4] = b"BWC2";

pub(super) fn encode(entry: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(entry.weight());
    out.extend_from_slice(MAGIC);
    match &*entry.0 {
        EntryKind::Index { id, vary, keep_for } => {
            out.push(0);
            out.put_u64(*id);
            millis(&mut out, *keep_for);
            out.put_names(vary);
        }
        EntryKind::Response(s) => {
            out.push(1);
            out.put_u16(s.response.status.as_u16());
            out.push(u8::from(s.policy_mode) | (u8::from(s.allows_authorized) << 1));
            millis(&mut out, s.response_time.since_epoch());
            millis(&mut out, s.fresh_until.since_epoch());
            millis(&mut out, s.keep_for);
            millis(&mut out, s.stale_while_revalidate);
            millis(&mut out, s.stale_if_error);
            out.put_bytes(s.req.method.as_str().as_bytes());
            out.put_bytes(s.req.uri.to_string().as_bytes());
            out.put_headers(&s.req.headers);
            out.put_names(&s.vary);
            out.put_bytes(s.vary_key.as_bytes());
            out.put_headers(&s.response.headers);
            out.put_bytes(&s.response.body);
        }
    }
    out
}

fn millis(out: &mut Vec<u8>, d: Duration) {
    out.put_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
}

fn bad(detail: &str) -> StoreError {
    StoreError::Malformed {
        operation: "get",
        detail: detail.to_owned(),
    }
}

fn malformed(e: DecodeError) -> StoreError {
    bad(match e {
        DecodeError::Truncated => "truncated cache entry",
        other => other.as_str(),
    })
}

pub(super) fn decode(input: &[u8]) -> Result<Entry, StoreError> {
    read(&mut Reader::new(input))
}

fn read(r: &mut Reader<'_>) -> Result<Entry, StoreError> {
    let millis = |r: &mut Reader<'_>| r.u64().map(Duration::from_millis).map_err(malformed);
    if r.take(4).map_err(malformed)? != MAGIC {
        return Err(bad("unknown cache entry format"));
    }
    match r.u8().map_err(malformed)? {
        0 => {
            let id = r.u64().map_err(malformed)?;
            let keep_for = millis(r)?;
            let vary = r.names().map_err(malformed)?;
            Ok(Entry::index(id, vary, keep_for))
        }
        1 => {
            let status = StatusCode::from_u16(r.u16().map_err(malformed)?)
                .map_err(|_| bad("invalid status code"))?;
            let flags = r.u8().map_err(malformed)?;
            let response_time = Wall::from_epoch(millis(r)?);
            let fresh_until = Wall::from_epoch(millis(r)?);
            let keep_for = millis(r)?;
            let swr = millis(r)?;
            let sie = millis(r)?;
            let method = Method::from_bytes(r.bytes().map_err(malformed)?)
                .map_err(|_| bad("invalid method"))?;
            let uri: Uri = r
                .str()
                .map_err(malformed)?
                .parse()
                .map_err(|_| bad("invalid URI"))?;
            let req_headers = r.headers().map_err(malformed)?;
            let vary = r.names().map_err(malformed)?;
            let vary_key = r.str().map_err(malformed)?.to_owned();
            let headers = r.headers().map_err(malformed)?;
            let body = Bytes::copy_from_slice(r.bytes().map_err(malformed)?);
            Ok(Entry::response(Stored {
                initial_age: initial_age(&headers),
                response: StoredResponse {
                    status,
                    headers,
                    body,
                },
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
    use http::HeaderName;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// A response entry written by bulwark before the byte codec was shared (commit 5d833a1),
    /// with these fields: instances of either side of that change read each other's entries.
    const WRITTEN_BY_5D833A1: &str = concat!(
        "425743320100c8010000018bcfe5687b0000018bcfe652db0000000000057e40000000000000753000000000",
        "000493e00000000347455400000018687474703a2f2f6578616d706c652e636f6d2f613f623d630000000100",
        "00000661636365707400000009746578742f68746d6c00000001000000066163636570740000000974657874",
        "2f68746d6c000000030000000c636f6e74656e742d747970650000000a746578742f706c61696e0000000a73",
        "65742d636f6f6b696500000003613d310000000a7365742d636f6f6b696500000003623d320000000568656c",
        "6c6f",
    );

    /// A `Vary` index written by bulwark at commit 5d833a1.
    const INDEX_BY_5D833A1: &str = concat!(
        "42574332000000123456789abc00000000000927c0000000020000000661636365707400000008782d74656e",
        "616e74",
    );

    #[test]
    fn entries_written_before_the_shared_codec_read_back_and_write_the_same_bytes() {
        let old = unhex(WRITTEN_BY_5D833A1);
        let entry = decode(&old).unwrap();
        let s = entry.as_response().unwrap();
        assert_eq!(s.response.status, StatusCode::OK);
        assert_eq!(s.response.body, "hello");
        assert_eq!(s.response.headers.get_all("set-cookie").iter().count(), 2);
        assert_eq!(s.response.headers["content-type"], "text/plain");
        assert_eq!(s.req.method, Method::GET);
        assert_eq!(s.req.uri, "http://example.com/a?b=c");
        assert_eq!(s.req.headers["accept"], "text/html");
        assert!(s.policy_mode && !s.allows_authorized);
        assert_eq!(s.response_time.since_epoch().as_millis(), 1_700_000_000_123);
        assert_eq!(s.fresh_until.since_epoch().as_millis(), 1_700_000_060_123);
        assert_eq!(s.keep_for, Duration::from_secs(360));
        assert_eq!(s.stale_while_revalidate, Duration::from_secs(30));
        assert_eq!(s.stale_if_error, Duration::from_secs(300));
        assert_eq!(s.vary, [HeaderName::from_static("accept")]);
        assert_eq!(s.vary_key, "text/html");
        assert_eq!(encode(&entry), old, "written back byte for byte");

        let old = unhex(INDEX_BY_5D833A1);
        let index = decode(&old).unwrap();
        assert!(matches!(
            &*index.0,
            EntryKind::Index { id: 0x1234_5678_9abc, vary, keep_for }
                if vary.len() == 2 && keep_for.as_secs() == 600
        ));
        assert_eq!(encode(&index), old);
    }

    #[test]
    fn every_truncation_of_an_entry_is_malformed() {
        let old = unhex(WRITTEN_BY_5D833A1);
        for n in 0..old.len() {
            assert!(
                matches!(decode(&old[..n]), Err(StoreError::Malformed { .. })),
                "cut at {n}"
            );
        }
    }

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

//! Entry points for the fuzz targets in `fuzz/`, compiled only with `--cfg fuzzing` (as
//! `cargo fuzz` builds): the Redis store's reading of its script's reply, which is
//! crate-private. Not part of the API.

use std::num::NonZeroU32;

use http::HeaderMap;

use super::{
    Quota,
    limiter::{Limiter, Verdict},
};

/// What the Redis rate-limit store makes of a script reply (any list of integers) for a
/// limiter of `quotas`: `Err` for a reply it refuses (a counted store error), else whether the
/// request is allowed and the headers its answer carries (`RateLimit`, `RateLimit-Policy`, and
/// `Retry-After` on a refusal).
///
/// # Errors
///
/// The store's error for a malformed reply, as text.
pub fn redis_reply(
    quotas: Vec<Quota>,
    reply: &[i64],
    cost: NonZeroU32,
) -> Result<(bool, HeaderMap), String> {
    let limiter = Limiter::new(quotas);
    let set = limiter.current.load();
    let verdict = super::store::redis::read_reply(&set, reply, cost.get(), true)
        .map_err(|e| e.to_string())?;
    let mut headers = HeaderMap::new();
    Ok(match verdict {
        Verdict::Allowed(info) => {
            if let Some(info) = info {
                info.write_headers(&mut headers);
            }
            (true, headers)
        }
        Verdict::Rejected(rejection) => {
            rejection.write_headers(&mut headers);
            (false, headers)
        }
    })
}

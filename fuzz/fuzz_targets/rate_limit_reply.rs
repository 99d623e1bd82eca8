//! The Redis rate-limit store's reading of its script's reply, for any list of integers a
//! server (or something posing as one) could send: a reply it cannot read is a store error;
//! one it reads becomes an answer with well-formed headers (`Retry-After` at least one second
//! on a refusal, `RateLimit`/`RateLimit-Policy` as the draft writes them), never a panic.
#![no_main]

use std::{num::NonZeroU32, time::Duration};

use arbitrary::Arbitrary;
use bulwark::rate_limit::{Quota, fuzzing::redis_reply};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    quotas: Vec<(u32, u32, u32)>,
    reply: Vec<i64>,
    cost: u32,
}

fuzz_target!(|input: Input| {
    let quotas: Vec<Quota> = input
        .quotas
        .iter()
        .take(4)
        .filter_map(|&(rate, period, burst)| {
            let q = Quota::new(
                NonZeroU32::new(rate.max(1))?,
                Duration::from_millis(u64::from(period.max(1))),
            )
            .ok()?;
            Some(q.burst(NonZeroU32::new(burst.max(1))?))
        })
        .collect();
    if quotas.is_empty() {
        return;
    }
    let cost = NonZeroU32::new(input.cost.max(1)).unwrap();
    let readable = matches!(input.reply.as_slice(), &[a, q, _, _] if (a == 0 || a == 1) && q >= 1);
    match redis_reply(quotas, &input.reply, cost) {
        Err(e) => assert!(!readable, "{:?} refused: {e}", input.reply),
        Ok((allowed, headers)) => {
            assert!(readable, "{:?} read", input.reply);
            assert_eq!(allowed, input.reply[0] == 1);
            if !allowed {
                let retry = headers
                    .get("retry-after")
                    .expect("a refusal says when to retry");
                let secs: u64 = retry.to_str().unwrap().parse().expect("whole seconds");
                assert!(secs >= 1);
            }
            for name in ["ratelimit", "ratelimit-policy"] {
                if let Some(v) = headers.get(name) {
                    let v = v.to_str().expect("visible ASCII");
                    assert!(v.starts_with('"'), "{name}: {v}");
                }
            }
        }
    }
});

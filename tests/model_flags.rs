//! Percentage roll-outs, as properties over generated users, groups and percentages: raising
//! the percentage never turns a user off, 0 % is nobody and 100 % everybody, a user's answer
//! is the same on every evaluation, and over 100,000 ids the share of users on is within one
//! percentage point of the percentage.

mod support;

use bulwark::flag::{EvaluationContext, FlagDefinition, Flags, bucket};
use proptest::prelude::*;

fn flags_at(group: &str, percentage: u8) -> Flags {
    let rollout = format!(r#"{{"percentage": {percentage}, "group": {group:?}}}"#);
    let def = FlagDefinition::from_json(&format!(
        r#"{{"enabled": true, "default": false, "rollout": {rollout}}}"#
    ))
    .unwrap();
    Flags::new().with("f", def)
}

fn user(id: &str) -> EvaluationContext {
    let mut ctx = EvaluationContext::new();
    ctx.insert("user_id", id);
    ctx
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(support::proptest_cases(256))
    })]

    /// For a fixed user and group, the users on at `p` are on at every `q >= p`; the bucket is
    /// 1 to 100 and the answer is "bucket <= percentage".
    #[test]
    fn raising_the_percentage_never_turns_a_user_off(
        id in "[a-zA-Z0-9_.@-]{0,40}",
        group in "[a-z0-9-]{1,20}",
        p in 0u8..=100,
        q in 0u8..=100,
    ) {
        let (lo, hi) = (p.min(q), p.max(q));
        let b = bucket(&group, &id);
        prop_assert!((1..=100).contains(&b));
        let ctx = user(&id);
        let on_lo = flags_at(&group, lo).is_enabled("f", &ctx);
        let on_hi = flags_at(&group, hi).is_enabled("f", &ctx);
        prop_assert_eq!(on_lo, b <= u32::from(lo));
        prop_assert_eq!(on_hi, b <= u32::from(hi));
        prop_assert!(!on_lo || on_hi, "on at {}% but off at {}%", lo, hi);
        prop_assert!(!flags_at(&group, 0).is_enabled("f", &ctx));
        prop_assert!(flags_at(&group, 100).is_enabled("f", &ctx));
        let flags = flags_at(&group, hi);
        prop_assert_eq!(flags.is_enabled("f", &ctx), flags.is_enabled("f", &ctx));
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(support::proptest_cases(6))
    })]

    /// Over 100,000 ids the share on is within one percentage point of the percentage (at
    /// 50 %, one point is more than six standard deviations of a fair split).
    #[test]
    fn the_share_of_users_on_follows_the_percentage(
        prefix in "[a-z]{0,8}",
        group in "[a-z0-9-]{1,12}",
        p in 1u8..100,
    ) {
        let flags = flags_at(&group, p);
        let n = 100_000u32;
        let on = (0..n)
            .filter(|i| flags.is_enabled("f", &user(&format!("{prefix}{i}"))))
            .count();
        let share = on as f64 / f64::from(n);
        let want = f64::from(p) / 100.0;
        prop_assert!((share - want).abs() <= 0.01, "{}% of users on at {}%", share * 100.0, p);
    }
}

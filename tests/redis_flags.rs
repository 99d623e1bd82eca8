//! Flags shared through a real Redis: a change made on one instance reaches another within a
//! second; while Redis is down the last flags keep serving; when it is back, changes flow again.

#![cfg(feature = "redis")]

mod support;

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use bulwark::flag::{EvaluationContext, FlagDefinition, Flags, RedisFlags, Rule, SourceError};

/// A key prefix of this test's own, so tests sharing one server do not see each other.
fn prefix() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("flags-test-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// One instance on deployment `d`.
fn instance_on(d: &support::Deployment, prefix: &str, poll: Duration) -> RedisFlags {
    RedisFlags::with_poll_interval(d.redis().prefix(prefix.to_owned()), Flags::new(), poll)
}

/// How long a test waits for a change to arrive by polling (the poll period is 250-500 ms).
const PROPAGATION_BOUND: Duration = Duration::from_secs(10);

fn premium() -> EvaluationContext {
    EvaluationContext::new().with("tier", "premium")
}

every_backend! {
async fn a_change_on_one_instance_reaches_another_by_polling(d) {
    let prefix = prefix();
    let a = instance_on(d, &prefix, Duration::from_millis(500));
    let b = instance_on(d, &prefix, Duration::from_millis(500));
    let mut changes = b.flags().subscribe();
    let task = b.clone().spawn();

    a.set(
        "ai-summary",
        FlagDefinition::on().with_rule(Rule::equals("tier", "premium")),
    )
    .await
    .unwrap();
    // Applied locally at once.
    assert!(a.flags().is_enabled("ai-summary", &premium()));
    // The other instance polls every 250 to 500 ms, so it has the change within a second. The
    // bound below is looser on purpose: this asserts that the change arrives by polling, not how
    // fast a loaded CI machine schedules the poller (timings belong in benchmarks).
    tokio::time::timeout(PROPAGATION_BOUND, changes.changed())
        .await
        .expect("the second instance did not see the change")
        .unwrap();
    assert!(b.flags().is_enabled("ai-summary", &premium()));

    // The kill switch travels the same way.
    changes.borrow_and_update();
    a.set("ai-summary", FlagDefinition::off()).await.unwrap();
    tokio::time::timeout(PROPAGATION_BOUND, changes.changed())
        .await
        .expect("the kill switch did not arrive")
        .unwrap();
    assert!(!b.flags().is_enabled("ai-summary", &premium()));

    // And so does a removal.
    changes.borrow_and_update();
    assert!(a.remove("ai-summary").await.unwrap());
    tokio::time::timeout(PROPAGATION_BOUND, changes.changed())
        .await
        .expect("the removal did not arrive")
        .unwrap();
    assert_eq!(b.flags().get("ai-summary"), None);
    task.abort();
}
}

every_backend! {
own async fn last_flags_keep_serving_while_redis_is_down_and_changes_flow_when_it_is_back(d) {
    let prefix = prefix();
    let a = instance_on(d, &prefix, Duration::from_millis(500));
    let b = instance_on(d, &prefix, Duration::from_millis(500));
    a.set(
        "ai-summary",
        FlagDefinition::on().with_rule(Rule::equals("tier", "premium")),
    )
    .await
    .unwrap();
    assert!(b.sync().await.unwrap());
    assert!(b.flags().is_enabled("ai-summary", &premium()));
    // Nothing new: nothing to do.
    assert!(!b.sync().await.unwrap());

    d.stop_all();
    assert!(matches!(b.sync().await, Err(SourceError::Store(_))));
    assert!(b.flags().is_enabled("ai-summary", &premium()));
    assert!(a.set("ai-summary", FlagDefinition::off()).await.is_err());
    // A failed write changes nothing locally either.
    assert!(a.flags().is_enabled("ai-summary", &premium()));

    // Back, empty (no persistence). The connection comes back on its own; the first calls
    // may still fail while it reconnects.
    d.restart_all();
    let mut written = false;
    for _ in 0..50 {
        if a.set("ai-summary", FlagDefinition::off()).await.is_ok() {
            written = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(written, "writes did not resume after Redis came back");
    let mut synced = false;
    for _ in 0..50 {
        if let Ok(changed) = b.sync().await {
            synced = changed;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        synced,
        "the second instance did not reload after Redis came back"
    );
    assert!(!b.flags().is_enabled("ai-summary", &premium()));
}
}

every_backend! {
async fn invalid_shared_definitions_keep_the_last_good_flags(d) {
    let prefix = prefix();
    let a = instance_on(d, &prefix, Duration::from_millis(500));
    let b = instance_on(d, &prefix, Duration::from_millis(500));
    a.set("f", FlagDefinition::on()).await.unwrap();
    b.sync().await.unwrap();
    // Someone writes a broken definition by hand.
    let cli = |args: &[&str]| {
        d.cli_on(0, args).unwrap();
    };
    cli(&[
        "HSET",
        &format!("{prefix}:{{flags}}:defs"),
        "f",
        r#"{"enabled": "nope"}"#,
    ]);
    cli(&["SET", &format!("{prefix}:{{flags}}:version"), "by-hand"]);
    assert!(matches!(b.sync().await, Err(SourceError::Invalid { .. })));
    assert_eq!(b.flags().get("f"), Some(FlagDefinition::on()));
    // Fixed: loaded.
    a.set("f", FlagDefinition::off()).await.unwrap();
    assert!(b.sync().await.unwrap());
    assert_eq!(b.flags().get("f"), Some(FlagDefinition::off()));
}
}

every_backend! {
async fn seeding_keeps_definitions_other_instances_set(d) {
    let prefix = prefix();
    let a = instance_on(d, &prefix, Duration::from_millis(500));
    let b = instance_on(d, &prefix, Duration::from_millis(500));
    let default = FlagDefinition::on().with_rule(Rule::equals("tier", "premium"));
    assert_eq!(a.seed([("ai-summary", default.clone())]).await.unwrap(), 1);
    a.set("ai-summary", FlagDefinition::off()).await.unwrap();
    // A second instance starting later seeds the same default: the kill switch stays.
    assert_eq!(
        b.seed([("ai-summary", default), ("new", FlagDefinition::on())])
            .await
            .unwrap(),
        1
    );
    assert_eq!(b.flags().get("ai-summary"), Some(FlagDefinition::off()));
    assert_eq!(b.flags().get("new"), Some(FlagDefinition::on()));
}
}

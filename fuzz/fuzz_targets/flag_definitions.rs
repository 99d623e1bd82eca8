//! Flag definitions as a flag file (`FileSource`, JSON or TOML), the admin API and the Redis
//! flag snapshot read them (`FlagDefinition::from_json` per flag): a definition that parses
//! is written back to the same definition, a whole file written back parses to the same set,
//! and every parsed flag evaluates for any context without a panic and with a consistent answer.
#![no_main]

use std::collections::BTreeMap;

use bulwark::flag::{EvaluationContext, FlagDefinition, Flags, Format};
use libfuzzer_sys::fuzz_target;

fn check_all(defs: &BTreeMap<String, FlagDefinition>, ctx: &EvaluationContext) {
    for def in defs.values() {
        let json = def.to_json();
        assert_eq!(FlagDefinition::from_json(&json).as_ref(), Ok(def), "{json}");
    }
    let file = serde_json::to_string(defs).expect("definitions serialize");
    assert_eq!(Format::Json.parse(&file).as_ref(), Ok(defs), "{file}");
    let flags = Flags::new();
    flags.replace(defs.clone());
    for name in defs.keys() {
        let e = flags.evaluate(name, ctx);
        assert_eq!(e.is_enabled(), flags.is_enabled(name, ctx));
        assert_eq!(
            e.is_enabled(),
            flags.evaluate(name, ctx).is_enabled(),
            "evaluation is a function"
        );
    }
    assert!(!flags.is_enabled("\u{0}no such flag", ctx));
}

/// Contexts every parsed flag is evaluated for: none, a user, a user with the attributes the
/// docs' rules use.
fn contexts() -> Vec<EvaluationContext> {
    let mut user = EvaluationContext::new();
    user.insert("user_id", "u-1");
    let mut rich = user.clone();
    rich.insert("tier", "beta");
    rich.insert("country", "xx");
    vec![EvaluationContext::new(), user, rich]
}

// The first byte picks the format (`T` for TOML, anything else JSON); the rest is the text.
fuzz_target!(|data: &[u8]| {
    let Some((&format, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let format = if format == b'T' {
        Format::Toml
    } else {
        Format::Json
    };
    let contexts = contexts();
    if let Ok(defs) = format.parse(text) {
        for ctx in &contexts {
            check_all(&defs, ctx);
        }
    }
    if let Ok(def) = FlagDefinition::from_json(text) {
        let mut one = BTreeMap::new();
        one.insert("flag".to_owned(), def);
        for ctx in &contexts {
            check_all(&one, ctx);
        }
    }
});

use std::{collections::HashSet, fmt, sync::Arc};

use serde::{Deserialize, Serialize};

use super::{
    EvaluationContext, Reason,
    evaluation::{Evaluation, Variant},
    rollout::bucket,
};
use crate::ConfigError;

/// One flag: its kill switch, targeting rules, percentage roll-out, default and variant names.
///
/// Evaluation order: the kill switch (`enabled: false` is off for everyone, whatever the rest
/// says), then the rules (the first rule that matches decides), then the roll-out (a request
/// carrying the roll-out's attribute is on when its [bucket](super::bucket) is inside the
/// percentage, off otherwise), then the default.
///
/// The default, when not given, is **on** for a flag with neither rules nor a roll-out
/// (`{"enabled": true}` turns a feature on for everyone) and **off** otherwise (a flag with
/// targeting is on only for whom the targeting picks).
///
/// In JSON (TOML has the same fields):
///
/// ```json
/// {
///   "enabled": true,
///   "description": "The new checkout flow",
///   "rules": [
///     { "attribute": "tier", "in": ["staff", "beta"] },
///     { "attribute": "country", "equals": "xx", "serve": false },
///     { "attribute": "tier", "not_in": ["free", "trial"], "serve": true }
///   ],
///   "rollout": { "percentage": 25, "attribute": "user_id", "group": "new-checkout" },
///   "default": false,
///   "variants": { "on": "checkout-v2", "off": "checkout-v1" }
/// }
/// ```
///
/// | field | default | meaning |
/// | --- | --- | --- |
/// | `enabled` | `true` | the kill switch: `false` is off for every request |
/// | `description` | none | for people; not evaluated |
/// | `rules` | `[]` | each has `attribute`, exactly one of `equals` (a string), `in` or `not_in` (lists of strings), and `serve` (`true` unless given). A rule only matches a request that has the attribute. |
/// | `rollout` | none | `percentage` (0 to 100), `attribute` (default `user_id`), `group` (default: the flag's name) |
/// | `default` | see above | what a request gets when no rule matched and the roll-out did not decide |
/// | `variants` | `on`/`off` | names reported as `feature_flag.result.variant` for on and off |
///
/// Unknown fields are refused, so a typo (`"rollot"`) is an error and not a silently ignored
/// roll-out.
///
/// ```
/// use bulwark::flag::{FlagDefinition, Rollout, Rule};
///
/// let from_code = FlagDefinition::on()
///     .with_rule(Rule::in_list("tier", ["staff", "beta"]))
///     .with_rollout(Rollout::percentage(25)?);
/// let from_json = FlagDefinition::from_json(
///     r#"{"rules": [{"attribute": "tier", "in": ["staff", "beta"]}],
///         "rollout": {"percentage": 25}}"#,
/// )?;
/// assert_eq!(from_code, from_json);
/// # Ok::<(), bulwark::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct FlagDefinition {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    rules: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rollout: Option<Rollout>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    default: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    variants: Option<Variants>,
}

fn yes() -> bool {
    true
}

/// Serde's derived `Deserialize` for a struct also accepts a sequence of its fields (so `[]`
/// would be a valid definition: every field defaulted). These types are objects only: the
/// derives are generated as inherent functions (`remote = "Self"`) and the trait impls below
/// accept maps and nothing else.
macro_rules! object_only {
    ($ty:ident, $what:literal) => {
        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                $ty::serialize(self, s)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Visit;
                impl<'de> serde::de::Visitor<'de> for Visit {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        map: A,
                    ) -> Result<$ty, A::Error> {
                        $ty::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    }
                }
                d.deserialize_map(Visit)
            }
        }
    };
}

object_only!(FlagDefinition, "a flag definition object");
object_only!(RawRule, "a rule object");
object_only!(RawRollout, "a rollout object");

impl Default for FlagDefinition {
    /// [`FlagDefinition::on`].
    fn default() -> Self {
        Self::on()
    }
}

impl FlagDefinition {
    /// Enabled, with no rules and no roll-out: on for every request.
    #[must_use]
    pub fn on() -> Self {
        Self {
            enabled: true,
            description: None,
            rules: Vec::new(),
            rollout: None,
            default: None,
            variants: None,
        }
    }

    /// Switched off (the kill switch): off for every request.
    #[must_use]
    pub fn off() -> Self {
        Self {
            enabled: false,
            ..Self::on()
        }
    }

    /// A definition from its JSON form (see the type docs).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming what is wrong.
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        serde_json::from_str(json)
            .map_err(|e| ConfigError::invalid("flag definition", e.to_string()))
    }

    /// This definition as JSON.
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Sets the kill switch: `false` turns the flag off for everyone.
    #[must_use]
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Sets the description.
    #[must_use]
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// Adds a targeting rule after the existing ones.
    #[must_use]
    pub fn with_rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Sets the percentage roll-out.
    #[must_use]
    pub fn with_rollout(mut self, rollout: Rollout) -> Self {
        self.rollout = Some(rollout);
        self
    }

    /// Sets what requests get when no rule matched and the roll-out did not decide.
    #[must_use]
    pub fn with_default(mut self, on: bool) -> Self {
        self.default = Some(on);
        self
    }

    /// Names the on and off variants (reported in `feature_flag.result.variant`).
    #[must_use]
    pub fn with_variants(mut self, on: impl Into<String>, off: impl Into<String>) -> Self {
        self.variants = Some(Variants {
            on: on.into(),
            off: off.into(),
        });
        self
    }

    /// The kill switch: `false` means off for everyone.
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The description.
    #[must_use]
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The targeting rules, in evaluation order.
    #[must_use]
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The percentage roll-out.
    #[must_use]
    pub fn rollout(&self) -> Option<&Rollout> {
        self.rollout.as_ref()
    }

    /// The effective default (see the type docs for what it is when not set).
    #[must_use]
    pub fn default_value(&self) -> bool {
        self.default
            .unwrap_or(self.rules.is_empty() && self.rollout.is_none())
    }

    /// The variant names, if set.
    #[must_use]
    pub fn variants(&self) -> Option<&Variants> {
        self.variants.as_ref()
    }
}

/// A targeting rule: a condition on one context attribute, and what to serve when it matches.
///
/// ```
/// use bulwark::flag::{Condition, Rule};
///
/// let premium = Rule::equals("tier", "premium");
/// assert!(premium.serves());
/// let not_in_eu = Rule::in_list("country", ["de", "fr", "it"]).serve(false);
/// assert!(matches!(not_in_eu.condition(), Condition::In(list) if list.len() == 3));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawRule", into = "RawRule")]
pub struct Rule {
    attribute: String,
    condition: Condition,
    serve: bool,
}

/// What a [`Rule`] checks about its attribute's value. A request without the attribute matches
/// no condition, not even `NotIn`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Condition {
    /// The value equals this string.
    Equals(String),
    /// The value is one of these.
    In(Vec<String>),
    /// The value is none of these.
    NotIn(Vec<String>),
}

impl Rule {
    /// Matches when `attribute` equals `value`; serves on.
    #[must_use]
    pub fn equals(attribute: impl Into<String>, value: impl Into<String>) -> Self {
        Self::new(attribute, Condition::Equals(value.into()))
    }

    /// Matches when `attribute` is one of `values`; serves on.
    #[must_use]
    pub fn in_list<I, S>(attribute: impl Into<String>, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new(
            attribute,
            Condition::In(values.into_iter().map(Into::into).collect()),
        )
    }

    /// Matches when `attribute` is set and is none of `values`; serves on.
    #[must_use]
    pub fn not_in<I, S>(attribute: impl Into<String>, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new(
            attribute,
            Condition::NotIn(values.into_iter().map(Into::into).collect()),
        )
    }

    /// A rule on `attribute` with `condition`; serves on.
    #[must_use]
    pub fn new(attribute: impl Into<String>, condition: Condition) -> Self {
        Self {
            attribute: attribute.into(),
            condition,
            serve: true,
        }
    }

    /// Serves `on` (true) or off (false) when the rule matches.
    #[must_use]
    pub fn serve(mut self, on: bool) -> Self {
        self.serve = on;
        self
    }

    /// The attribute the rule looks at.
    #[must_use]
    pub fn attribute(&self) -> &str {
        &self.attribute
    }

    /// The condition.
    #[must_use]
    pub fn condition(&self) -> &Condition {
        &self.condition
    }

    /// What the rule serves when it matches: on (`true`) or off.
    #[must_use]
    pub fn serves(&self) -> bool {
        self.serve
    }
}

/// The serialised form of [`Rule`]: one field per operator, exactly one of them set.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, remote = "Self")]
struct RawRule {
    attribute: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    equals: Option<String>,
    #[serde(rename = "in", default, skip_serializing_if = "Option::is_none")]
    in_list: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    not_in: Option<Vec<String>>,
    #[serde(default = "yes")]
    serve: bool,
}

impl TryFrom<RawRule> for Rule {
    type Error = String;

    fn try_from(raw: RawRule) -> Result<Self, String> {
        let condition = match (raw.equals, raw.in_list, raw.not_in) {
            (Some(v), None, None) => Condition::Equals(v),
            (None, Some(list), None) => Condition::In(list),
            (None, None, Some(list)) => Condition::NotIn(list),
            _ => {
                return Err(format!(
                    "rule on attribute {:?} needs exactly one of `equals`, `in`, `not_in`",
                    raw.attribute
                ));
            }
        };
        Ok(Self {
            attribute: raw.attribute,
            condition,
            serve: raw.serve,
        })
    }
}

impl From<Rule> for RawRule {
    fn from(rule: Rule) -> Self {
        let (equals, in_list, not_in) = match rule.condition {
            Condition::Equals(v) => (Some(v), None, None),
            Condition::In(list) => (None, Some(list), None),
            Condition::NotIn(list) => (None, None, Some(list)),
        };
        Self {
            attribute: rule.attribute,
            equals,
            in_list,
            not_in,
            serve: rule.serve,
        }
    }
}

/// A percentage roll-out: requests whose attribute (default `user_id`) falls in the first
/// `percentage` of 100 buckets are on, the others off. Requests without the attribute are
/// outside the roll-out and get the flag's default; they are never placed at random.
///
/// The bucket is [`bucket(group, value)`](super::bucket) (Unleash's normalisation), so a user
/// stays in the same bucket on every instance and every release, and raising the percentage
/// only adds users. The group defaults to the flag's name, so two flags at 10 % do not pick the
/// same 10 % of users; give two flags one group to roll them out to the same users.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawRollout", into = "RawRollout")]
pub struct Rollout {
    percentage: u8,
    attribute: String,
    group: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, remote = "Self")]
struct RawRollout {
    percentage: u8,
    #[serde(default = "user_id")]
    attribute: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group: Option<String>,
}

fn user_id() -> String {
    "user_id".to_owned()
}

impl TryFrom<RawRollout> for Rollout {
    type Error = ConfigError;

    fn try_from(raw: RawRollout) -> Result<Self, ConfigError> {
        Ok(Self::percentage(raw.percentage)?
            .by(raw.attribute)
            .with_group_opt(raw.group))
    }
}

impl From<Rollout> for RawRollout {
    fn from(r: Rollout) -> Self {
        Self {
            percentage: r.percentage,
            attribute: r.attribute,
            group: r.group,
        }
    }
}

impl Rollout {
    /// A roll-out to `percentage` % of users (by `user_id`, grouped by the flag's name).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] if `percentage` is over 100.
    pub fn percentage(percentage: u8) -> Result<Self, ConfigError> {
        if percentage > 100 {
            return Err(ConfigError::invalid(
                "rollout percentage",
                format!("must be 0 to 100, got {percentage}"),
            ));
        }
        Ok(Self {
            percentage,
            attribute: user_id(),
            group: None,
        })
    }

    /// Buckets by `attribute` instead of `user_id`.
    #[must_use]
    pub fn by(mut self, attribute: impl Into<String>) -> Self {
        self.attribute = attribute.into();
        self
    }

    /// Hashes with `group` instead of the flag's name.
    #[must_use]
    pub fn group(self, group: impl Into<String>) -> Self {
        self.with_group_opt(Some(group.into()))
    }

    fn with_group_opt(mut self, group: Option<String>) -> Self {
        self.group = group;
        self
    }

    /// The percentage, 0 to 100.
    #[must_use]
    pub fn percent(&self) -> u8 {
        self.percentage
    }

    /// The attribute hashed.
    #[must_use]
    pub fn attribute(&self) -> &str {
        &self.attribute
    }

    /// The group, if set (the flag's name otherwise).
    #[must_use]
    pub fn group_name(&self) -> Option<&str> {
        self.group.as_deref()
    }
}

/// Names for a flag's on and off results.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Variants {
    /// The name of the on variant.
    pub on: String,
    /// The name of the off variant.
    pub off: String,
}

impl Variants {
    /// Names the on and off variants.
    #[must_use]
    pub fn new(on: impl Into<String>, off: impl Into<String>) -> Self {
        Self {
            on: on.into(),
            off: off.into(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The evaluated form

/// A definition prepared for evaluation: lists turned into sets where that pays, the group
/// resolved, variant names shared.
pub(crate) struct CompiledFlag {
    pub(crate) definition: FlagDefinition,
    /// An environment override, which wins over everything else.
    pub(crate) forced: Option<bool>,
    /// The flag's label on metrics (its name, or `_other` past the label cap).
    pub(crate) label: Arc<str>,
    /// Its evaluation counters, keyed with that label.
    pub(crate) counters: super::metrics::FlagCounters,
    rules: Box<[CompiledRule]>,
    rollout: Option<CompiledRollout>,
    default: bool,
    on: Variant,
    off: Variant,
}

struct CompiledRule {
    attribute: Box<str>,
    matcher: Matcher,
    serve: bool,
}

enum Matcher {
    Equals(Box<str>),
    In(List),
    NotIn(List),
}

/// A list of strings; long lists become a hash set.
enum List {
    Short(Box<[Box<str>]>),
    Long(HashSet<Box<str>>),
}

const SHORT_LIST: usize = 8;

impl List {
    fn new(values: &[String]) -> Self {
        if values.len() <= SHORT_LIST {
            Self::Short(values.iter().map(|v| v.as_str().into()).collect())
        } else {
            Self::Long(values.iter().map(|v| v.as_str().into()).collect())
        }
    }

    #[inline]
    fn contains(&self, value: &str) -> bool {
        match self {
            Self::Short(list) => list.iter().any(|v| **v == *value),
            Self::Long(set) => set.contains(value),
        }
    }
}

struct CompiledRollout {
    percentage: u32,
    attribute: Box<str>,
    group: Box<str>,
}

impl CompiledFlag {
    pub(crate) fn new(
        name: &str,
        definition: FlagDefinition,
        forced: Option<bool>,
        label: Arc<str>,
    ) -> Self {
        let rules = definition
            .rules
            .iter()
            .map(|r| CompiledRule {
                attribute: r.attribute.as_str().into(),
                matcher: match &r.condition {
                    Condition::Equals(v) => Matcher::Equals(v.as_str().into()),
                    Condition::In(list) => Matcher::In(List::new(list)),
                    Condition::NotIn(list) => Matcher::NotIn(List::new(list)),
                },
                serve: r.serve,
            })
            .collect();
        let rollout = definition.rollout.as_ref().map(|r| CompiledRollout {
            percentage: u32::from(r.percentage),
            attribute: r.attribute.as_str().into(),
            group: r.group.as_deref().unwrap_or(name).into(),
        });
        let (on, off) = match &definition.variants {
            Some(v) => (
                Variant::Shared(v.on.as_str().into()),
                Variant::Shared(v.off.as_str().into()),
            ),
            None => (Variant::Static("on"), Variant::Static("off")),
        };
        Self {
            default: definition.default_value(),
            forced,
            counters: super::metrics::FlagCounters::new(&label),
            label,
            rules,
            rollout,
            on,
            off,
            definition,
        }
    }

    #[inline]
    fn result(&self, enabled: bool, reason: Reason) -> Evaluation {
        let variant = if enabled { &self.on } else { &self.off };
        Evaluation::new(enabled, variant.clone(), reason)
    }

    /// Override, kill switch, rules, roll-out, default.
    pub(crate) fn evaluate(&self, ctx: &EvaluationContext) -> Evaluation {
        if let Some(on) = self.forced {
            return self.result(on, if on { Reason::Static } else { Reason::Disabled });
        }
        if !self.definition.enabled {
            return self.result(false, Reason::Disabled);
        }
        for rule in &*self.rules {
            let Some(value) = ctx.get(&rule.attribute) else {
                continue;
            };
            let matched = match &rule.matcher {
                Matcher::Equals(v) => **v == *value,
                Matcher::In(list) => list.contains(value),
                Matcher::NotIn(list) => !list.contains(value),
            };
            if matched {
                return self.result(rule.serve, Reason::TargetingMatch);
            }
        }
        if let Some(r) = &self.rollout {
            if let Some(key) = ctx.get(&r.attribute) {
                let inside = r.percentage > 0 && bucket(&r.group, key) <= r.percentage;
                return self.result(inside, Reason::Split);
            }
        }
        self.result(self.default, Reason::Default)
    }
}

impl fmt::Debug for CompiledFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledFlag")
            .field("definition", &self.definition)
            .field("forced", &self.forced)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(def: FlagDefinition) -> CompiledFlag {
        CompiledFlag::new("f", def, None, Arc::from("f"))
    }

    #[test]
    fn json_round_trip() {
        let json = r#"{"enabled":true,"description":"d","rules":[{"attribute":"tier","equals":"premium","serve":true},{"attribute":"c","in":["a","b"],"serve":false},{"attribute":"c","not_in":["x"],"serve":true}],"rollout":{"percentage":25,"attribute":"user_id","group":"g"},"default":false,"variants":{"on":"v2","off":"v1"}}"#;
        let def = FlagDefinition::from_json(json).unwrap();
        assert_eq!(def.to_json(), json);
    }

    #[test]
    fn bad_definitions_are_refused_with_a_reason() {
        for (json, needle) in [
            (r#"{"rollot": {}}"#, "unknown field"),
            (r#"{"rollout": {"percentage": 101}}"#, "0 to 100"),
            (r#"{"rules": [{"attribute": "a"}]}"#, "exactly one"),
            (
                r#"{"rules": [{"attribute": "a", "equals": "x", "in": ["y"]}]}"#,
                "exactly one",
            ),
            (r#"{"enabled": "yes"}"#, "invalid type"),
        ] {
            let err = FlagDefinition::from_json(json).unwrap_err().to_string();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }

    #[test]
    fn implicit_default() {
        assert!(FlagDefinition::on().default_value());
        assert!(
            !FlagDefinition::on()
                .with_rule(Rule::equals("a", "b"))
                .default_value()
        );
        assert!(
            FlagDefinition::on()
                .with_rollout(Rollout::percentage(5).unwrap())
                .with_default(true)
                .default_value()
        );
    }

    #[test]
    fn long_lists_behave_like_short_ones() {
        let values: Vec<String> = (0..50).map(|i| format!("v{i}")).collect();
        let flag = compile(FlagDefinition::on().with_rule(Rule::in_list("a", values)));
        let short = compile(FlagDefinition::on().with_rule(Rule::in_list("a", ["v7"])));
        let ctx = EvaluationContext::new().with("a", "v7");
        assert!(flag.evaluate(&ctx).is_enabled());
        assert!(short.evaluate(&ctx).is_enabled());
        let ctx = EvaluationContext::new().with("a", "v70");
        assert!(!flag.evaluate(&ctx).is_enabled());
    }

    #[test]
    fn zero_and_hundred_percent() {
        let none = compile(FlagDefinition::on().with_rollout(Rollout::percentage(0).unwrap()));
        let all = compile(FlagDefinition::on().with_rollout(Rollout::percentage(100).unwrap()));
        for i in 0..500 {
            let ctx = EvaluationContext::new().with("user_id", format!("u{i}"));
            assert!(!none.evaluate(&ctx).is_enabled());
            assert!(all.evaluate(&ctx).is_enabled());
        }
    }
}

//! The SEHT regularizer forms written before the single `seht` kind, read
//! and converted, so that older configs and checkpoints (whose `state.json`
//! records the config) still load:
//!
//! | old form | new form |
//! | --- | --- |
//! | `seht-h { probes, lambda, every, rescale }` | `estimator = { kind = "hutchinson", probes, distribution = "rademacher" }`, `gradient = { kind = "exact-per-probe" }` |
//! | `seht-d { probes, p, lambda, reading, every, rescale }` | `estimator = { kind = "seht-d", probes, p1 = p, p2 = p, reading }`, `gradient = { kind = "exact-per-probe" }` |
//! | `seht-first-order { …, p = 0, … }` | as `seht-h`, `gradient = { kind = "first-order" }` |
//! | `seht-first-order { …, p > 0, …, relative_step }` | as `seht-d`, `gradient = { kind = "first-order", relative_step }` (none when 0) |
//!
//! The exact penalty was always taken one probe at a time in training, hence
//! `exact-per-probe`.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value, json};

use crate::Regularizer;

/// Reads a regularizer in the current form or one of the old SEHT forms.
pub(crate) fn regularizer<'de, D: Deserializer<'de>>(d: D) -> Result<Regularizer, D::Error> {
    let mut v = Value::deserialize(d)?;
    if let Value::Object(m) = &mut v {
        upgrade(m).map_err(D::Error::custom)?;
    }
    Regularizer::deserialize(v).map_err(D::Error::custom)
}

/// Rewrites an old SEHT form in place; leaves every other form as it is.
/// Fields the old form did not have stay behind, so that the new form's
/// reader names them as unknown.
fn upgrade(m: &mut Map<String, Value>) -> Result<(), String> {
    let kind = m.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
    if !matches!(kind.as_str(), "seht-h" | "seht-d" | "seht-first-order") {
        return Ok(());
    }
    let mut take = |f: &str| m.remove(f).ok_or_else(|| format!("regularizer `{kind}` (old form): missing field `{f}`"));
    let probes = take("probes")?;
    let p = if kind == "seht-h" { json!(0.0) } else { take("p")? };
    let reading = if kind == "seht-h" { Value::Null } else { take("reading")? };
    let relative_step = if kind == "seht-first-order" { take("relative_step")? } else { Value::Null };
    // p = 0 meant SEHT-H only in the first-order form; an old `seht-d` with
    // p = 0 was invalid and stays so (converted, it would silently become
    // SEHT-H).
    if kind == "seht-d" && p.as_f64() == Some(0.0) {
        return Err(format!(
            "regularizer `{kind}` (old form): p = 0 is not a SEHT-D probability (must lie in (0, 1/2])"
        ));
    }
    let estimator = if p.as_f64() == Some(0.0) {
        json!({ "kind": "hutchinson", "probes": probes, "distribution": "rademacher" })
    } else {
        json!({ "kind": "seht-d", "probes": probes, "p1": p, "p2": p, "reading": reading })
    };
    let gradient = match relative_step.as_f64() {
        None => json!({ "kind": "exact-per-probe" }),
        Some(0.0) => json!({ "kind": "first-order" }),
        Some(r) => json!({ "kind": "first-order", "relative_step": r }),
    };
    m.insert("kind".into(), json!("seht"));
    m.insert("estimator".into(), estimator);
    m.insert("gradient".into(), gradient);
    Ok(())
}

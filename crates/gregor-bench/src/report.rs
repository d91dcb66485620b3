//! Printing results: a readable line and the JSON line.

use serde_json::{Map, Value, json};

/// One result: `value` beside `baseline`, with any extra fields.
pub(crate) fn emit(scenario: &str, value: f64, unit: &str, baseline: f64, extra: &[(&str, Value)]) {
    let ratio = if baseline == 0.0 {
        0.0
    } else {
        value / baseline
    };
    println!("{scenario}: {value:.1} {unit} (baseline {baseline:.1} {unit}, ratio {ratio:.3})");
    let mut obj = Map::new();
    obj.insert("scenario".into(), json!(scenario));
    obj.insert("value".into(), json!(round(value)));
    obj.insert("unit".into(), json!(unit));
    obj.insert("baseline".into(), json!(round(baseline)));
    obj.insert("ratio".into(), json!(round(ratio)));
    for (k, v) in extra {
        obj.insert((*k).into(), v.clone());
    }
    println!("{}", Value::Object(obj));
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// The quantile `per_mille`/1000 of unsorted samples (nearest rank below).
pub(crate) fn quantile(samples: &mut [f64], per_mille: usize) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_by(f64::total_cmp);
    let last = samples.len() - 1;
    samples[(last * per_mille.min(1000)) / 1000]
}

//! A query's result as findings: one `sql:answer`, then one `sql:row` per row.

use assay_plugin::analyzer::Finding;
use assay_plugin::sql::{RowSet, Value};
use serde_json::{Map, Value as Json, json};

use crate::{MAX_ROWS, MAX_VALUE_CHARS, finding};

/// The findings for `result`, `about` (the question, SQL and model) in the first.
pub fn findings(mut about: Json, result: &RowSet) -> Vec<Finding> {
    let columns: Vec<&str> = result.columns.iter().map(|c| c.name.as_str()).collect();
    about["columns"] = json!(columns);
    about["rows"] = json!(result.rows.len());
    about["rows_shown"] = json!(result.rows.len().min(MAX_ROWS));
    let mut found = vec![finding("sql:answer", about)];
    for (index, row) in result.rows.iter().take(MAX_ROWS).enumerate() {
        let mut object = Map::new();
        for (column, value) in columns.iter().zip(row) {
            object.insert((*column).to_string(), to_json(value));
        }
        found.push(finding("sql:row", json!({"row": index, "values": object})));
    }
    found
}

fn cut(text: &str) -> Json {
    match text.char_indices().nth(MAX_VALUE_CHARS) {
        Some((end, _)) => Json::String(format!("{}…", &text[..end])),
        None => Json::String(text.to_string()),
    }
}

/// A value as JSON: numbers as numbers, times as ISO 8601 (UTC), bytes as
/// `\x`-hex, JSON as itself, long text cut.
pub fn to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Boolean(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::Float(f) => json!(f),
        Value::Numeric(n) => Json::String(n.clone()),
        Value::Text(t) | Value::Uuid(t) => cut(t),
        Value::Bytes(b) => {
            let hex: String = b.iter().map(|byte| format!("{byte:02x}")).collect();
            cut(&format!("\\x{hex}"))
        }
        Value::Json(text) => serde_json::from_str(text).unwrap_or_else(|_| cut(text)),
        Value::Timestamptz(us) => Json::String(format!("{}Z", timestamp(*us))),
        Value::Timestamp(us) => Json::String(timestamp(*us)),
        Value::Date(days) => Json::String(date(i64::from(*days))),
        Value::TextArray(items) => Json::Array(
            items
                .iter()
                .map(|t| t.as_deref().map_or(Json::Null, cut))
                .collect(),
        ),
        Value::IntArray(items) => json!(items),
    }
}

const MICROS_PER_DAY: i64 = 86_400_000_000;

fn timestamp(micros: i64) -> String {
    let days = micros.div_euclid(MICROS_PER_DAY);
    let of_day = micros.rem_euclid(MICROS_PER_DAY);
    let seconds = of_day / 1_000_000;
    format!(
        "{}T{:02}:{:02}:{:02}.{:06}",
        date(days),
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        of_day % 1_000_000
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (H. Hinnant's
/// `civil_from_days`).
fn date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_iso_8601() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(19_723), "2024-01-01");
        assert_eq!(date(-1), "1969-12-31");
        assert_eq!(date(11_016), "2000-02-29");
        assert_eq!(
            to_json(&Value::Timestamptz(1_704_067_200_000_000 + 3_723_000_042)),
            json!("2024-01-01T01:02:03.000042Z")
        );
        assert_eq!(
            to_json(&Value::Timestamp(-1)),
            json!("1969-12-31T23:59:59.999999")
        );
    }

    #[test]
    fn values_keep_their_shape_and_long_text_is_cut() {
        assert_eq!(to_json(&Value::Json(r#"{"a":1}"#.into())), json!({"a": 1}));
        assert_eq!(to_json(&Value::Bytes(vec![0, 255])), json!("\\x00ff"));
        assert_eq!(
            to_json(&Value::TextArray(vec![Some("a".into()), None])),
            json!(["a", null])
        );
        let long = "é".repeat(MAX_VALUE_CHARS + 5);
        let Json::String(cut) = to_json(&Value::Text(long)) else {
            panic!("text stays text")
        };
        assert_eq!(cut.chars().count(), MAX_VALUE_CHARS + 1);
    }
}

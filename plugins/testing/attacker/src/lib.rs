//! A malicious test plugin: it runs whatever SQL and state operations the
//! document's text tells it to, one directive per line, and reports what
//! happened to each as a finding. The attack tests script it.
//!
//! - `query <statement>`   run `sql.query`
//! - `params <json array> <statement>` run `sql.query` with typed parameters, each
//!   written `{"<variant>": value}` (e.g. `{"int": 5}`, `{"text-array": ["a", null]}`)
//! - `exec <statement>`    run `sql.execute`
//! - `repeat <n> <statement>` run `sql.execute` n times, stopping at the first error
//! - `state-set <scope> <key> <json>`, `state-get <scope> <key>`, `state-list <scope> <prefix>`
//! - `loop`                spin forever (after the steps before it; holding its connection)
//! - `fail`                return an error after all steps (so the transaction rolls back)
//!
//! Each step's finding has label `step` and data
//! `{"step": i, "ok": bool, "rows": [...], "affected": n, "error": {"kind", "code", "message"}}`.

pub mod bindings {
    // The generated SQL import glue takes many parameters; that is not ours to style.
    #![allow(clippy::too_many_arguments)]
    wit_bindgen::generate!({ world: "analyzer", path: "../../../wit/v0.1" });
}

use assay_text::json_string;
use bindings::assay::plugin::sql::{self, SqlError, Value};
use bindings::assay::plugin::state;
use bindings::assay::plugin::types::Stage;
use bindings::{Document, Finding, Guest, Manifest, PluginError};

/// The plugin.
pub struct Attacker;

impl Guest for Attacker {
    fn describe() -> Manifest {
        Manifest {
            name: "attacker".into(),
            version: "0.0.1".into(),
            description: "runs the SQL it is given (tests only)".into(),
            stage: Stage::Analysis,
            priority: 0,
            kinds: vec!["attack".into()],
            triggers: vec![],
            migrations: vec![],
        }
    }

    fn analyze(doc: Document) -> Result<Vec<Finding>, PluginError> {
        let mut findings = Vec::new();
        let mut fail = false;
        for (i, line) in doc
            .text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .enumerate()
        {
            let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
            let outcome = match verb {
                "query" => sql::query(rest, &[]).map(|rows| render_row_set(&rows)),
                "params" => match split_params(rest) {
                    Ok((params, statement)) => {
                        sql::query(statement, &params).map(|rows| render_row_set(&rows))
                    }
                    Err(message) => Ok(format!("\"unknown\":{}", json_string(&message))),
                },
                "exec" => sql::execute(rest, &[]).map(|n| format!("\"affected\":{n}")),
                "repeat" => {
                    let (n, statement) = rest.split_once(' ').unwrap_or((rest, ""));
                    let n: u64 = n.parse().unwrap_or(0);
                    let mut done = 0u64;
                    let mut error = None;
                    while done < n {
                        match sql::execute(statement, &[]) {
                            Ok(_) => done += 1,
                            Err(e) => {
                                error = Some(e);
                                break;
                            }
                        }
                    }
                    match error {
                        None => Ok(format!("\"affected\":{done}")),
                        Some(e) => Err((e, done)).map_err(|(e, _)| e),
                    }
                }
                "state-set" => {
                    let mut parts = rest.splitn(3, ' ');
                    let (scope, key, value) = (
                        parts.next().unwrap_or(""),
                        parts.next().unwrap_or(""),
                        parts.next().unwrap_or(""),
                    );
                    state::set(scope, key, value)
                        .map(|()| "\"affected\":1".to_string())
                        .map_err(state_error)
                }
                "state-get" => {
                    let (scope, key) = rest.split_once(' ').unwrap_or((rest, ""));
                    state::get(scope, key)
                        .map(|v| format!("\"rows\":[[{}]]", v.unwrap_or_else(|| "null".into())))
                        .map_err(state_error)
                }
                "state-list" => {
                    let (scope, prefix) = rest.split_once(' ').unwrap_or((rest, ""));
                    state::list_keys(scope, prefix)
                        .map(|keys| {
                            let keys: Vec<String> = keys.iter().map(|k| json_string(k)).collect();
                            format!("\"rows\":[[{}]]", keys.join(","))
                        })
                        .map_err(state_error)
                }
                "loop" => {
                    let mut n: u64 = 0;
                    loop {
                        n = std::hint::black_box(n.wrapping_add(1));
                    }
                }
                "fail" => {
                    fail = true;
                    Ok(String::new())
                }
                other => Ok(format!("\"unknown\":{}", json_string(other))),
            };
            let body = match outcome {
                Ok(fields) if fields.is_empty() => "\"ok\":true".to_string(),
                Ok(fields) => format!("\"ok\":true,{fields}"),
                Err(e) => format!("\"ok\":false,\"error\":{}", render_error(&e)),
            };
            findings.push(Finding {
                label: "step".into(),
                score: None,
                span: None,
                data: format!("{{\"step\":{i},{body}}}"),
            });
        }
        if fail {
            return Err(PluginError::Failed("asked to fail after its steps".into()));
        }
        Ok(findings)
    }
}

fn state_error(e: state::StateError) -> SqlError {
    let message = match e {
        state::StateError::Invalid(m) => format!("invalid: {m}"),
        state::StateError::Unavailable(m) => format!("unavailable: {m}"),
        state::StateError::Failed(m) => m,
    };
    SqlError::Db(sql::DbError {
        code: "state".into(),
        message,
        detail: None,
    })
}

fn render_error(e: &SqlError) -> String {
    let (kind, code, message) = match e {
        SqlError::Denied(m) => ("denied", String::new(), m.clone()),
        SqlError::Timeout => ("timeout", String::new(), String::new()),
        SqlError::TooLarge(m) => ("too-large", String::new(), m.clone()),
        SqlError::Db(db) => ("db", db.code.clone(), db.message.clone()),
        SqlError::Unavailable(m) => ("unavailable", String::new(), m.clone()),
    };
    format!(
        "{{\"kind\":{},\"code\":{},\"message\":{}}}",
        json_string(kind),
        json_string(&code),
        json_string(&message)
    )
}

/// `[...] statement`: a JSON array of typed values, then the statement.
fn split_params(rest: &str) -> Result<(Vec<Value>, &str), String> {
    let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<serde_json::Value>();
    let params = match stream.next() {
        Some(Ok(serde_json::Value::Array(items))) => items,
        _ => return Err("params must start with a JSON array".into()),
    };
    let statement = rest[stream.byte_offset()..].trim();
    let values = params.iter().map(to_value).collect::<Result<Vec<_>, _>>()?;
    Ok((values, statement))
}

fn to_value(item: &serde_json::Value) -> Result<Value, String> {
    use serde_json::Value as J;
    let (variant, v) = item
        .as_object()
        .and_then(|o| o.iter().next())
        .ok_or_else(|| format!("{item} is not {{\"variant\": value}}"))?;
    let text = |v: &J| {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("{variant} wants a string"))
    };
    let int = |v: &J| {
        v.as_i64()
            .ok_or_else(|| format!("{variant} wants an integer"))
    };
    Ok(match variant.as_str() {
        "null" => Value::Null,
        "boolean" => Value::Boolean(v.as_bool().ok_or("boolean wants true or false")?),
        "int" => Value::Int(int(v)?),
        "float" => Value::Float(v.as_f64().ok_or("float wants a number")?),
        "numeric" => Value::Numeric(text(v)?),
        "text" => Value::Text(text(v)?),
        "bytes" => Value::Bytes(
            v.as_array()
                .ok_or("bytes wants an array")?
                .iter()
                .map(|b| {
                    b.as_u64()
                        .and_then(|b| u8::try_from(b).ok())
                        .ok_or("bytes wants 0..=255")
                })
                .collect::<Result<_, _>>()?,
        ),
        "json" => Value::Json(text(v)?),
        "uuid" => Value::Uuid(text(v)?),
        "timestamptz" => Value::Timestamptz(int(v)?),
        "timestamp" => Value::Timestamp(int(v)?),
        "date" => Value::Date(i32::try_from(int(v)?).map_err(|e| e.to_string())?),
        "text-array" => Value::TextArray(
            v.as_array()
                .ok_or("text-array wants an array")?
                .iter()
                .map(|i| i.as_str().map(str::to_string))
                .collect(),
        ),
        "int-array" => Value::IntArray(
            v.as_array()
                .ok_or("int-array wants an array")?
                .iter()
                .map(J::as_i64)
                .collect(),
        ),
        other => return Err(format!("unknown variant {other}")),
    })
}

fn render_row_set(set: &sql::RowSet) -> String {
    let columns: Vec<String> = set
        .columns
        .iter()
        .map(|c| format!("[{},{}]", json_string(&c.name), json_string(&c.type_name)))
        .collect();
    format!(
        "\"columns\":[{}],\"rows\":{}",
        columns.join(","),
        render_rows(&set.rows)
    )
}

fn render_rows(rows: &[Vec<Value>]) -> String {
    let rows: Vec<String> = rows
        .iter()
        .map(|row| {
            format!(
                "[{}]",
                row.iter().map(render_value).collect::<Vec<_>>().join(",")
            )
        })
        .collect();
    format!("[{}]", rows.join(","))
}

fn render_value(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Boolean(b) => b.to_string(),
        Value::Int(i) | Value::Timestamptz(i) | Value::Timestamp(i) => i.to_string(),
        Value::Date(d) => d.to_string(),
        Value::Float(f) if f.is_finite() => f.to_string(),
        Value::Float(f) => json_string(&f.to_string()),
        Value::Numeric(s) => format!("{{\"numeric\":{}}}", json_string(s)),
        Value::Text(s) | Value::Uuid(s) => json_string(s),
        Value::Json(j) => format!("{{\"json\":{j}}}"),
        Value::Bytes(b) => format!("{{\"bytes\":{b:?}}}"),
        Value::TextArray(items) => format!(
            "[{}]",
            items
                .iter()
                .map(|i| i.as_deref().map_or("null".to_string(), json_string))
                .collect::<Vec<_>>()
                .join(",")
        ),
        Value::IntArray(items) => format!(
            "[{}]",
            items
                .iter()
                .map(|i| i.map_or("null".to_string(), |v| v.to_string()))
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

#[cfg(target_arch = "wasm32")]
bindings::export!(Attacker with_types_in bindings);

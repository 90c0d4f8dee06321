//! A malicious test plugin: it runs whatever SQL and state operations the
//! document's text tells it to, one directive per line, and reports what
//! happened to each as a finding. The attack tests script it.
//!
//! - `query <statement>`   run `sql.query`
//! - `query-nul <statement>` the same, with each `\0` in it made a NUL byte
//! - `params <json array> <statement>` run `sql.query` with typed parameters, each
//!   written `{"<variant>": value}` (e.g. `{"int": 5}`, `{"text-array": ["a", null]}`)
//! - `exec <statement>`    run `sql.execute`
//! - `repeat <n> <statement>` run `sql.execute` n times, stopping at the first error
//! - `state-set <scope> <key> <json>`, `state-get <scope> <key>`, `state-list <scope> <prefix>`
//! - `loop`                spin forever (after the steps before it; holding its connection)
//! - `fail`                return an error after all steps (so the transaction rolls back)
//! - `remember <text>`, `recall` keep `<name>:<text>` in the instance's own
//!   memory, and list what it keeps (something only instance reuse lets a later call see)
//! - `print <text>`        write a line to stdout
//! - `panic <text>`        panic (a trap), after the steps before it
//!
//! Its name and migrations can be set in the built component (see
//! `NAME_SLOT`), so one build serves as any number of differently named and
//! migrated hostile plugins.
//!
//! Each step's finding has label `step` and data
//! `{"step": i, "ok": bool, "rows": [...], "affected": n, "error": {"kind", "code", "message"}}`.

use assay_plugin::analyzer::{Document, Finding, Guest, Manifest, PluginError};
use assay_plugin::sql::{self, SqlError, Value};
use assay_plugin::state;
use assay_plugin::text::json_string;
use assay_plugin::types::Stage;

/// The plugin.
pub struct Attacker;

/// Marks the slot holding the plugin's name in the built component.
const NAME_MARKER: &[u8] = b"@@assay-attacker-name@@";
/// Marks the slot holding the plugin's migrations in the built component.
const MIGRATIONS_MARKER: &[u8] = b"@@assay-attacker-migrations@@";
/// Longest name a slot holds (the engine's own limit), plus its terminating NUL.
const NAME_ROOM: usize = 51;
/// Bytes of migration SQL a slot holds.
const MIGRATIONS_ROOM: usize = 8192;

/// `marker` followed by `value` and NULs, `N` bytes in all.
const fn slot<const N: usize>(marker: &[u8], value: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let mut i = 0;
    while i < marker.len() {
        out[i] = marker[i];
        i += 1;
    }
    let mut j = 0;
    while j < value.len() {
        out[marker.len() + j] = value[j];
        j += 1;
    }
    out
}

// The name and migrations sit in fixed-size slots of the component's data, so
// that tests can make plugins of any name (colliding ones, the longest one)
// and with any migrations (hostile ones) from this one build, by overwriting
// the bytes after a marker (`engine/tests/all/support.rs`, `attacker_as`).
/// What `remember` was given, in this instance's lifetime.
static MEMORY: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

static NAME_SLOT: [u8; NAME_MARKER.len() + NAME_ROOM] = slot(NAME_MARKER, b"attacker");
static MIGRATIONS_SLOT: [u8; MIGRATIONS_MARKER.len() + MIGRATIONS_ROOM] =
    slot(MIGRATIONS_MARKER, b"");

/// The text of a slot: what follows its marker, up to the first NUL. Read
/// through `black_box` so that the compiler cannot fold the build-time value in.
/// (Only the marker's length is used here, so that the marker's bytes appear
/// once in the component: in the slot.)
fn slot_text(slot: &'static [u8], marker_len: usize) -> String {
    let bytes = std::hint::black_box(slot);
    let value = &bytes[marker_len..];
    let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).into_owned()
}

/// Migrations of the slot: statements separated by a line holding only `;;`.
fn migrations() -> Vec<assay_plugin::types::Migration> {
    let text = slot_text(&MIGRATIONS_SLOT, MIGRATIONS_MARKER.len());
    text.split("\n;;\n")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .enumerate()
        .map(|(i, statement)| assay_plugin::types::Migration {
            version: i as u32 + 1,
            description: format!("migration {}", i + 1),
            statement: statement.to_string(),
        })
        .collect()
}

impl Guest for Attacker {
    fn describe() -> Manifest {
        Manifest {
            name: slot_text(&NAME_SLOT, NAME_MARKER.len()),
            version: "0.0.1".into(),
            description: "runs the SQL it is given (tests only)".into(),
            stage: Stage::Analysis,
            priority: 0,
            kinds: vec!["attack".into()],
            triggers: vec![],
            migrations: migrations(),
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
                // Documents cannot carry NUL bytes; this writes one where `\0` stands.
                "query-nul" => {
                    let statement = rest.replace("\\0", "\0");
                    sql::query(&statement, &[]).map(|rows| render_row_set(&rows))
                }
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
                // What an instance keeps in its own memory between calls
                // (only with instance reuse; a fresh instance has nothing).
                "remember" => {
                    let mut memory = MEMORY.lock().unwrap_or_else(|e| e.into_inner());
                    // Marked with whose memory it is, so a test can tell.
                    memory.push(format!(
                        "{}:{rest}",
                        slot_text(&NAME_SLOT, NAME_MARKER.len())
                    ));
                    Ok(format!("\"remembered\":{}", memory.len()))
                }
                "recall" => {
                    let memory = MEMORY.lock().unwrap_or_else(|e| e.into_inner());
                    let items: Vec<String> = memory.iter().map(|m| json_string(m)).collect();
                    Ok(format!("\"recall\":[{}]", items.join(",")))
                }
                "print" => {
                    println!("{rest}");
                    Ok(String::new())
                }
                "panic" => panic!("attacker panics: {rest}"),
                // What WASI gives a plugin: each use either `denied: why`
                // or `allowed: what came back`.
                "wasi" => Ok(format!("\"wasi\":{}", json_string(&wasi(rest)))),
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

assay_plugin::export_analyzer!(Attacker);

/// Tries one use of WASI the host must deny (see `runtime/wasi.rs`).
fn wasi(request: &str) -> String {
    use std::io::Read as _;
    let (what, arg) = request.split_once(' ').unwrap_or((request, ""));
    let said = |result: std::io::Result<String>| match result {
        Ok(detail) => format!("allowed: {detail}"),
        Err(e) => format!("denied: {e}"),
    };
    match what {
        "read" => said(std::fs::read(arg).map(|b| format!("{} bytes", b.len()))),
        "list" => said(std::fs::read_dir(arg).map(|d| format!("{} entries", d.count()))),
        "write" => said(std::fs::write(arg, b"x").map(|()| "written".into())),
        "cwd" => said(std::env::current_dir().map(|d| d.display().to_string())),
        "env" => {
            let vars = std::env::vars().count();
            let args = std::env::args().count();
            if vars == 0 && args == 0 {
                "denied: no variables and no arguments".into()
            } else {
                format!("allowed: {vars} variables, {args} arguments")
            }
        }
        "stdin" => {
            let mut text = String::new();
            match std::io::stdin().read_to_string(&mut text) {
                Ok(0) => "denied: empty".into(),
                Ok(n) => format!("allowed: {n} bytes"),
                Err(e) => format!("denied: {e}"),
            }
        }
        "tcp" => said(std::net::TcpStream::connect(arg).map(|_| "connected".into())),
        "listen" => said(std::net::TcpListener::bind(arg).map(|_| "listening".into())),
        "udp" => said(
            std::net::UdpSocket::bind("0.0.0.0:0")
                .and_then(|socket| socket.send_to(b"x", arg))
                .map(|n| format!("sent {n} bytes")),
        ),
        "dns" => said(
            std::net::ToSocketAddrs::to_socket_addrs(&(arg, 80))
                .map(|found| format!("{} addresses", found.count())),
        ),
        other => format!("unknown: {other}"),
    }
}

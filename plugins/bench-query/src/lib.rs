//! The plugin `assay bench query` drives: it runs parameterized statements
//! through the host's `sql` interface, in order, and reports how many rows
//! came back.
//!
//! The document says what to run: statements separated by a line holding
//! only `;`. Each one's first line is the statement; every further line is
//! one parameter: an integer if it parses as one, text otherwise. A statement
//! that starts with `SELECT` or `WITH` runs through `sql.query`, any other
//! through `sql.execute`. For example:
//!
//! ```text
//! SELECT payload FROM plugin_bench_query.bench_rows WHERE id = $1
//! 4711
//! ;
//! UPDATE plugin_bench_query.bench_rows SET hits = hits + 1 WHERE id = $1
//! 4711
//! ```
//!
//! It answers only documents of kind `bench-query`, so it never joins an
//! ordinary analysis even when loaded.

use assay_plugin::analyzer::{Document, Finding, Guest, Manifest, PluginError};
use assay_plugin::sql::{self, Value};
use assay_plugin::types::Stage;

/// The kind of document this plugin answers.
pub const KIND: &str = "bench-query";

/// The statement and parameters a document asks for.
pub fn parse(text: &str) -> Result<(&str, Vec<Value>), String> {
    let mut lines = text.lines();
    let statement = lines
        .next()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or("the first line must be the statement to run")?;
    let params = lines
        .map(|line| match line.trim().parse::<i64>() {
            Ok(n) => Value::Int(n),
            Err(_) => Value::Text(line.to_string()),
        })
        .collect();
    Ok((statement, params))
}

/// The document's statements, each with its parameters.
pub fn statements(text: &str) -> impl Iterator<Item = &str> {
    text.split("\n;\n")
}

/// Whether `statement` returns rows to read (`SELECT …`, `WITH …`).
fn reads(statement: &str) -> bool {
    let first = statement.split_whitespace().next().unwrap_or_default();
    first.eq_ignore_ascii_case("select") || first.eq_ignore_ascii_case("with")
}

/// The plugin.
pub struct BenchQuery;

impl Guest for BenchQuery {
    fn describe() -> Manifest {
        Manifest {
            name: "bench-query".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "runs one parameterized query per document (for assay bench query)".into(),
            stage: Stage::Analysis,
            priority: 0,
            kinds: vec![KIND.into()],
            triggers: vec![],
            migrations: vec![],
        }
    }

    fn analyze(doc: Document) -> Result<Vec<Finding>, PluginError> {
        let mut rows = 0;
        for block in statements(&doc.text) {
            let (statement, params) = parse(block).map_err(PluginError::InvalidInput)?;
            let failed = |e| PluginError::Failed(format!("the statement failed: {e:?}"));
            if reads(statement) {
                rows += sql::query(statement, &params).map_err(failed)?.rows.len();
            } else {
                sql::execute(statement, &params).map_err(failed)?;
            }
        }
        Ok(vec![Finding {
            label: "bench-query:rows".into(),
            score: None,
            span: None,
            data: format!("{{\"rows\":{rows}}}"),
        }])
    }
}

assay_plugin::export_analyzer!(BenchQuery);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_then_parameters() {
        let (statement, params) = parse("SELECT $1, $2\n42\nabc").expect("parses");
        assert_eq!(statement, "SELECT $1, $2");
        assert!(matches!(params[0], Value::Int(42)));
        assert!(matches!(&params[1], Value::Text(t) if t == "abc"));
        assert!(parse("\n1").is_err());
    }

    #[test]
    fn statements_are_separated_by_a_semicolon_line() {
        let text = "SELECT $1\n1\n;\nUPDATE t SET a = 1 WHERE id = $1\n1";
        let blocks: Vec<&str> = statements(text).collect();
        assert_eq!(
            blocks,
            ["SELECT $1\n1", "UPDATE t SET a = 1 WHERE id = $1\n1"]
        );
        assert!(reads("select 1") && reads("WITH x AS (SELECT 1) SELECT 1"));
        assert!(!reads("UPDATE t SET a = 1"));
    }
}

//! The plugin `assay bench query` drives: it runs one parameterized query
//! through the host's `sql` interface and reports how many rows came back.
//!
//! The document says what to run. Its first line is the statement; every
//! further line is one parameter: an integer if it parses as one, text
//! otherwise. For example:
//!
//! ```text
//! SELECT payload FROM plugin_bench_query.bench_rows WHERE id = $1
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
        let (statement, params) = parse(&doc.text).map_err(PluginError::InvalidInput)?;
        let rows = sql::query(statement, &params)
            .map_err(|e| PluginError::Failed(format!("the query failed: {e:?}")))?;
        Ok(vec![Finding {
            label: "bench-query:rows".into(),
            score: None,
            span: None,
            data: format!("{{\"rows\":{}}}", rows.rows.len()),
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
}

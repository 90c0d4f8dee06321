//! `ask-sql`: answers a question (a document of kind `question`) with SQL
//! that the model writes, run under this plugin's own database role.
//!
//! The model is told which tables and columns the role can read (what
//! `information_schema` shows it: the operator's `[plugins.grants.ask-sql]`),
//! and asked for one `SELECT`. The statement it writes is run with
//! `sql.query` in a transaction the plugin first makes read-only
//! (`SET TRANSACTION READ ONLY`), so nothing it can write takes effect:
//!
//! - the statement gate refuses what no plugin may run (`COPY`, a second
//!   statement, `SET`, …) before the server sees it;
//! - the server refuses a read of anything not granted (SQLSTATE 42501), and
//!   any write at all, even to the plugin's own schema (25006);
//! - with the gate off, the server itself refuses a second statement in one
//!   prepared statement (42601).
//!
//! Each of these is reported as an `sql:denied` finding naming the SQL and
//! the reason (so the refusal is stored with the run); the statement changed
//! nothing. A statement that runs gives an `sql:answer` finding (the SQL, the
//! columns, how many rows) and one `sql:row` finding per row, at most
//! [`MAX_ROWS`], long values cut at [`MAX_VALUE_CHARS`] characters.

mod rows;

use assay_plugin::Explain;
use assay_plugin::analyzer::{Document, Finding, Guest, Manifest, PluginError};
use assay_plugin::inference::{self, CompletionRequest, Message, ResponseFormat, Role};
use assay_plugin::sql::{self, SqlError};
use assay_plugin::types::Stage;
use serde_json::{Value, json};

/// Rows reported per question; the `sql:answer` finding says how many there were.
pub const MAX_ROWS: usize = 50;
/// Longest value of a row reported, in characters.
pub const MAX_VALUE_CHARS: usize = 1000;
/// Most columns described to the model.
pub const MAX_DESCRIBED_COLUMNS: usize = 400;

/// What the plugin's role can read, one row per column, outside its own
/// schema (whose tables are the host's bookkeeping for it).
const DESCRIBE_GRANTED: &str =
    "SELECT table_schema::text, table_name::text, column_name::text, data_type::text
     FROM information_schema.columns
     WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
       AND table_schema <> current_schema()
     ORDER BY table_schema, table_name, ordinal_position
     LIMIT 401";

/// Makes the rest of the call's transaction read-only (the one `SET` the
/// statement gate lets a plugin run).
const READ_ONLY: &str = "SET TRANSACTION READ ONLY";

/// SQLSTATEs that mean the server refused the statement for what it tried,
/// not for a mistake in it: a write in a read-only transaction, a privilege
/// the role lacks, and (with the gate off) more than one statement.
const REFUSED_BY_SERVER: [&str; 2] = ["25006", "42501"];
const MULTIPLE_STATEMENTS: (&str, &str) = ("42601", "multiple commands");

/// The plugin.
pub struct AskSql;

/// One table the role can read: `schema.table(column type, …)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// `schema.table`.
    pub name: String,
    /// `(column, type)` in column order.
    pub columns: Vec<(String, String)>,
}

/// The instructions the model gets: the tables, and what to answer.
pub fn system_prompt(tables: &[Table]) -> String {
    let mut prompt = String::from(
        "You write PostgreSQL for a reader who asks questions about stored data. \
         Answer with exactly one SELECT statement and nothing else: no explanation, \
         no comments, no code fence. Only these tables and columns exist:\n",
    );
    for table in tables {
        let columns: Vec<String> = table
            .columns
            .iter()
            .map(|(name, ty)| format!("{name} {ty}"))
            .collect();
        prompt.push_str(&format!("- {}({})\n", table.name, columns.join(", ")));
    }
    prompt.push_str("Qualify every table with its schema.");
    prompt
}

/// The SQL in a model's answer: the first fenced block's contents if there
/// is one (models add fences however they are asked), else the whole answer.
pub fn extract_sql(answer: &str) -> String {
    let trimmed = answer.trim();
    if let Some(start) = trimmed.find("```") {
        let after = &trimmed[start + 3..];
        // The fence's language tag, if any, runs to the end of its line.
        let body = after.split_once('\n').map_or("", |(_, rest)| rest);
        let body = body.split("```").next().unwrap_or_default();
        return body.trim().to_string();
    }
    trimmed.to_string()
}

/// Why the SQL was refused, if it was refused rather than wrong.
pub fn refusal(error: &SqlError) -> Option<String> {
    match error {
        SqlError::Denied(why) => Some(format!("the statement gate refused it: {why}")),
        SqlError::Db(db) if REFUSED_BY_SERVER.contains(&db.code.as_str()) => Some(format!(
            "the database refused it (SQLSTATE {}): {}",
            db.code, db.message
        )),
        SqlError::Db(db)
            if db.code == MULTIPLE_STATEMENTS.0 && db.message.contains(MULTIPLE_STATEMENTS.1) =>
        {
            Some(format!(
                "the database refused it (SQLSTATE {}): {}",
                db.code, db.message
            ))
        }
        _ => None,
    }
}

fn tables_granted() -> Result<Vec<Table>, String> {
    let rows = sql::query(DESCRIBE_GRANTED, &[])
        .map_err(|e| format!("reading which tables it may read: {}", e.explain()))?;
    let mut tables: Vec<Table> = Vec::new();
    for row in rows.rows.iter().take(MAX_DESCRIBED_COLUMNS) {
        let text = |i: usize| match row.get(i) {
            Some(sql::Value::Text(s)) => s.clone(),
            _ => String::new(),
        };
        let name = format!("{}.{}", text(0), text(1));
        let column = (text(2), text(3));
        match tables.last_mut() {
            Some(last) if last.name == name => last.columns.push(column),
            _ => tables.push(Table {
                name,
                columns: vec![column],
            }),
        }
    }
    Ok(tables)
}

fn finding(label: &str, data: Value) -> Finding {
    Finding {
        label: label.into(),
        score: None,
        span: None,
        data: data.to_string(),
    }
}

impl Guest for AskSql {
    fn describe() -> Manifest {
        Manifest {
            name: "ask-sql".into(),
            version: "0.1.0".into(),
            description: "answers a question with SQL the model writes, run read-only under the plugin's own role".into(),
            stage: Stage::Analysis,
            priority: 0,
            kinds: vec!["question".into()],
            triggers: vec![],
            migrations: vec![],
        }
    }

    fn analyze(doc: Document) -> Result<Vec<Finding>, PluginError> {
        let question = doc.text.trim();
        if question.is_empty() {
            return Err(PluginError::InvalidInput("the question is empty".into()));
        }
        sql::execute(READ_ONLY, &[]).map_err(|e| {
            PluginError::Failed(format!("making the transaction read-only: {}", e.explain()))
        })?;
        let tables = tables_granted().map_err(PluginError::Failed)?;
        if tables.is_empty() {
            return Err(PluginError::Failed(
                "ask-sql may read no table: grant it the tables questions are about in assay.toml, e.g. [plugins.grants.ask-sql] read = [\"assay.documents\", \"assay.findings\"]".into(),
            ));
        }
        let request = CompletionRequest {
            messages: vec![
                Message {
                    role: Role::System,
                    content: system_prompt(&tables),
                },
                Message {
                    role: Role::User,
                    content: question.to_string(),
                },
            ],
            model: None,
            max_tokens: None,
            temperature: Some(0.0),
            stop: vec![],
            format: ResponseFormat::Text,
            cache: true,
        };
        let answer = inference::complete(&request).map_err(|e| {
            PluginError::Failed(format!("asking the model for SQL: {}", e.explain()))
        })?;
        let statement = extract_sql(&answer.text);
        let about = json!({
            "question": question,
            "sql": statement,
            "model": answer.model,
            "from_cache": answer.from_cache,
        });
        if statement.is_empty() {
            return Err(PluginError::Failed("the model answered without SQL".into()));
        }
        match sql::query(&statement, &[]) {
            Ok(result) => Ok(rows::findings(about, &result)),
            Err(e) => match refusal(&e) {
                Some(reason) => {
                    assay_plugin::log::log(
                        assay_plugin::log::Level::Warn,
                        &format!("refused the model's SQL: {reason}"),
                    );
                    let mut data = about;
                    data["reason"] = Value::String(reason);
                    Ok(vec![finding("sql:denied", data)])
                }
                None => Err(PluginError::Failed(format!(
                    "the SQL the model wrote failed: {} (SQL: {statement})",
                    e.explain()
                ))),
            },
        }
    }
}

assay_plugin::export_analyzer!(AskSql);

#[cfg(test)]
mod tests {
    use super::*;
    use assay_plugin::sql::DbError;

    #[test]
    fn sql_is_taken_from_a_fence_or_the_whole_answer() {
        assert_eq!(extract_sql("  SELECT 1 \n"), "SELECT 1");
        assert_eq!(
            extract_sql("Here:\n```sql\nSELECT count(*)\nFROM assay.documents;\n```\nDone."),
            "SELECT count(*)\nFROM assay.documents;"
        );
        assert_eq!(extract_sql("```\nSELECT 2\n```"), "SELECT 2");
        assert_eq!(extract_sql("```"), "");
    }

    #[test]
    fn refusals_are_told_from_mistakes() {
        let db = |code: &str, message: &str| {
            SqlError::Db(DbError {
                code: code.into(),
                message: message.into(),
                detail: None,
            })
        };
        assert!(refusal(&SqlError::Denied("COPY".into())).is_some());
        assert!(
            refusal(&db(
                "25006",
                "cannot execute DROP TABLE in a read-only transaction"
            ))
            .is_some()
        );
        assert!(refusal(&db("42501", "permission denied for table plugin_roles")).is_some());
        assert!(
            refusal(&db(
                "42601",
                "cannot insert multiple commands into a prepared statement"
            ))
            .is_some()
        );
        assert!(refusal(&db("42601", "syntax error at or near \"SELEC\"")).is_none());
        assert!(refusal(&db("42P01", "relation \"x\" does not exist")).is_none());
        assert!(refusal(&SqlError::Timeout).is_none());
    }

    #[test]
    fn the_model_is_told_every_table_and_column() {
        let prompt = system_prompt(&[Table {
            name: "assay.documents".into(),
            columns: vec![("id".into(), "uuid".into()), ("kind".into(), "text".into())],
        }]);
        assert!(
            prompt.contains("- assay.documents(id uuid, kind text)\n"),
            "{prompt}"
        );
    }
}

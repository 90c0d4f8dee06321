//! The statement gate: an early, clear `denied` for SQL no plugin needs.
//!
//! It is defense in depth, not the wall. The wall is PostgreSQL's privilege
//! system (each plugin logs in as its own role, see `db::sandbox`); the gate
//! only gives plugin authors a precise message before the server is asked, and
//! narrows what reaches it. The attack tests run with the gate off as well.
//!
//! It works on tokens, not on a full parse: comments, string literals
//! (including `E''` and dollar quoting) and quoted identifiers are recognised, so
//! `SELECT 'SET ROLE x'` passes and `SELECT "set_config"('role', …)` does not.

/// Statements (by their leading keywords) no plugin may run, and why.
const DENIED_STATEMENTS: &[(&[&str], &str)] = &[
    (&["set"], "the host sets the transaction's settings"),
    (&["reset"], "the host sets the transaction's settings"),
    (
        &["begin"],
        "each call already runs in one transaction, managed by the host",
    ),
    (
        &["start"],
        "each call already runs in one transaction, managed by the host",
    ),
    (&["commit"], "the host commits when the call returns ok"),
    (&["end"], "the host commits when the call returns ok"),
    (
        &["rollback"],
        "the host rolls back when the call returns an error",
    ),
    (
        &["abort"],
        "the host rolls back when the call returns an error",
    ),
    (&["savepoint"], "transaction control belongs to the host"),
    (&["release"], "transaction control belongs to the host"),
    (
        &["prepare"],
        "prepared statements and two-phase commit are not available to plugins",
    ),
    (
        &["execute"],
        "prepared statements are not available to plugins",
    ),
    (
        &["deallocate"],
        "prepared statements are not available to plugins",
    ),
    (
        &["copy"],
        "COPY reads and writes files or streams outside the transaction's rows",
    ),
    (&["listen"], "notifications are not available to plugins"),
    (&["notify"], "notifications are not available to plugins"),
    (&["unlisten"], "notifications are not available to plugins"),
    (
        &["do"],
        "anonymous code blocks are not available to plugins",
    ),
    (
        &["declare"],
        "cursors are not available to plugins; query the rows you need",
    ),
    (&["fetch"], "cursors are not available to plugins"),
    (&["move"], "cursors are not available to plugins"),
    (&["close"], "cursors are not available to plugins"),
    (&["discard"], "session state belongs to the host"),
    (&["load"], "loading libraries is not available to plugins"),
    (
        &["grant"],
        "privileges are set by the operator in assay.toml",
    ),
    (
        &["revoke"],
        "privileges are set by the operator in assay.toml",
    ),
    (&["security"], "security labels are set by the operator"),
    (&["reassign"], "ownership belongs to the operator"),
    (
        &["checkpoint"],
        "server maintenance is not available to plugins",
    ),
    (
        &["vacuum"],
        "server maintenance is not available to plugins",
    ),
    (&["create", "function"], "plugins cannot create functions"),
    (&["create", "procedure"], "plugins cannot create procedures"),
    (
        &["create", "or", "replace"],
        "plugins cannot create functions, procedures, rules or triggers",
    ),
    (&["create", "trigger"], "plugins cannot create triggers"),
    (&["create", "constraint"], "plugins cannot create triggers"),
    (&["create", "event"], "plugins cannot create event triggers"),
    (&["create", "rule"], "plugins cannot create rules"),
    (&["create", "role"], "roles belong to the operator"),
    (&["create", "user"], "roles belong to the operator"),
    (&["create", "group"], "roles belong to the operator"),
    (&["create", "database"], "databases belong to the operator"),
    (
        &["create", "extension"],
        "extensions belong to the operator",
    ),
    (&["create", "language"], "languages belong to the operator"),
    (
        &["create", "temp"],
        "temporary objects would outlive the call on a pooled connection",
    ),
    (
        &["create", "temporary"],
        "temporary objects would outlive the call on a pooled connection",
    ),
    (
        &["create", "local"],
        "temporary objects would outlive the call on a pooled connection",
    ),
    (
        &["create", "global"],
        "temporary objects would outlive the call on a pooled connection",
    ),
    (
        &["create", "unlogged"],
        "unlogged tables lose data on a crash; use a normal table",
    ),
    (
        &["create", "server"],
        "foreign servers belong to the operator",
    ),
    (
        &["create", "foreign"],
        "foreign data belongs to the operator",
    ),
    (
        &["create", "subscription"],
        "replication belongs to the operator",
    ),
    (
        &["create", "publication"],
        "replication belongs to the operator",
    ),
    (
        &["create", "tablespace"],
        "tablespaces belong to the operator",
    ),
    (&["create", "aggregate"], "plugins cannot create functions"),
    (&["create", "operator"], "plugins cannot create operators"),
    (&["create", "cast"], "plugins cannot create casts"),
    (&["alter", "function"], "plugins cannot alter functions"),
    (&["alter", "procedure"], "plugins cannot alter procedures"),
    (&["alter", "role"], "roles belong to the operator"),
    (&["alter", "user"], "roles belong to the operator"),
    (&["alter", "group"], "roles belong to the operator"),
    (
        &["alter", "system"],
        "server settings belong to the operator",
    ),
    (&["alter", "database"], "databases belong to the operator"),
    (
        &["alter", "default"],
        "default privileges belong to the operator",
    ),
    (
        &["alter", "schema"],
        "the plugin's schema is managed by the host",
    ),
    (&["alter", "extension"], "extensions belong to the operator"),
    (&["drop", "role"], "roles belong to the operator"),
    (&["drop", "user"], "roles belong to the operator"),
    (&["drop", "group"], "roles belong to the operator"),
    (&["drop", "database"], "databases belong to the operator"),
    (
        &["drop", "schema"],
        "the plugin's schema is managed by the host",
    ),
    (&["drop", "owned"], "ownership belongs to the operator"),
];

/// Functions no plugin may call (matched on the unqualified, lowercased name;
/// a trailing `*` matches a prefix).
const DENIED_FUNCTIONS: &[(&str, &str)] = &[
    ("set_config", "settings belong to the host"),
    (
        "pg_sleep*",
        "a plugin call must not sleep on a shared connection",
    ),
    (
        "pg_advisory*",
        "advisory locks would outlive the call on a pooled connection",
    ),
    (
        "pg_try_advisory*",
        "advisory locks would outlive the call on a pooled connection",
    ),
    ("lo_*", "large objects are not available to plugins"),
    ("loread", "large objects are not available to plugins"),
    ("lowrite", "large objects are not available to plugins"),
    ("pg_read*", "server files are not available to plugins"),
    ("pg_ls_*", "server files are not available to plugins"),
    ("pg_stat_file", "server files are not available to plugins"),
    ("pg_file_*", "server files are not available to plugins"),
    (
        "dblink*",
        "connections to other databases are not available to plugins",
    ),
    ("pg_notify", "notifications are not available to plugins"),
    (
        "pg_terminate_backend",
        "other sessions are not the plugin's business",
    ),
    (
        "pg_cancel_backend",
        "other sessions are not the plugin's business",
    ),
    ("pg_reload_conf", "server settings belong to the operator"),
    (
        "pg_rotate_logfile",
        "server maintenance is not available to plugins",
    ),
    (
        "pg_switch_wal",
        "server maintenance is not available to plugins",
    ),
    (
        "pg_promote",
        "server maintenance is not available to plugins",
    ),
    // These run an SQL string given as an argument, past any inspection here.
    ("query_to_xml*", "it runs SQL from a string"),
    ("query_to_xmlschema", "it runs SQL from a string"),
    ("cursor_to_xml*", "cursors are not available to plugins"),
];

/// Why the gate refused a statement; the text is shown to the plugin as `denied`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A keyword or unquoted identifier, lowercased.
    Word(String),
    /// A quoted identifier, as written between the quotes.
    Quoted(String),
    /// A string, number or other literal (content irrelevant here).
    Literal,
    /// `;`
    Semicolon,
    /// `(`
    Open,
    /// `)`
    Close,
    /// `.`
    Dot,
    /// Any other operator or punctuation.
    Other,
}

/// Checks one plugin statement. `Ok` means it may be sent to the server, which
/// still decides by privileges.
pub fn check(statement: &str) -> Result<(), Denied> {
    let tokens = tokenize(statement)?;
    let mut statements = tokens
        .split(|t| *t == Token::Semicolon)
        .filter(|s| !s.is_empty());
    let Some(first) = statements.next() else {
        return Err(Denied("the statement is empty".into()));
    };
    if statements.next().is_some() {
        return Err(Denied(
            "only one statement per call to sql.query/sql.execute; split them into separate calls"
                .into(),
        ));
    }
    check_leading_keywords(first)?;
    check_function_calls(first)
}

fn words(tokens: &[Token]) -> impl Iterator<Item = &str> {
    tokens.iter().map_while(|t| match t {
        Token::Word(w) => Some(w.as_str()),
        _ => None,
    })
}

fn check_leading_keywords(tokens: &[Token]) -> Result<(), Denied> {
    // `EXPLAIN [ANALYZE] [VERBOSE] [(options)] statement` executes the statement
    // with ANALYZE: judge the statement it wraps.
    let mut rest = tokens;
    while let Some(Token::Word(w)) = rest.first() {
        match w.as_str() {
            "explain" | "analyze" | "analyse" | "verbose" => rest = &rest[1..],
            _ => break,
        }
        if rest.first() == Some(&Token::Open) {
            let close = rest
                .iter()
                .position(|t| *t == Token::Close)
                .unwrap_or(rest.len());
            rest = rest.get(close + 1..).unwrap_or(&[]);
        }
    }
    // Leading parentheses: `(SELECT …)`.
    while rest.first() == Some(&Token::Open) {
        rest = &rest[1..];
    }
    let leading: Vec<&str> = words(rest).take(3).collect();
    for (keywords, why) in DENIED_STATEMENTS {
        if leading.len() >= keywords.len() && leading[..keywords.len()] == **keywords {
            return Err(Denied(format!(
                "{} is not allowed for plugins: {why}",
                keywords.join(" ").to_uppercase()
            )));
        }
    }
    Ok(())
}

fn check_function_calls(tokens: &[Token]) -> Result<(), Denied> {
    for (i, token) in tokens.iter().enumerate() {
        let name = match token {
            Token::Word(w) => w.as_str(),
            Token::Quoted(q) => q.as_str(),
            _ => continue,
        };
        if tokens.get(i + 1) != Some(&Token::Open) {
            continue;
        }
        for (pattern, why) in DENIED_FUNCTIONS {
            let hit = match pattern.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == *pattern,
            };
            if hit {
                return Err(Denied(format!(
                    "calling {name}() is not allowed for plugins: {why}"
                )));
            }
        }
    }
    Ok(())
}

fn tokenize(sql: &str) -> Result<Vec<Token>, Denied> {
    let chars: Vec<char> = sql.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let unterminated = |what: &str| Denied(format!("the statement has an unterminated {what}"));
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            c if c.is_whitespace() => i += 1,
            '-' if next == Some('-') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if next == Some('*') => {
                // PostgreSQL block comments nest.
                let mut depth = 0usize;
                loop {
                    match (chars.get(i), chars.get(i + 1)) {
                        (Some('/'), Some('*')) => {
                            depth += 1;
                            i += 2;
                        }
                        (Some('*'), Some('/')) => {
                            depth -= 1;
                            i += 2;
                            if depth == 0 {
                                break;
                            }
                        }
                        (Some(_), _) => i += 1,
                        (None, _) => return Err(unterminated("comment")),
                    }
                }
            }
            '\'' => {
                i = skip_quoted(&chars, i + 1, '\'', false)
                    .ok_or_else(|| unterminated("string"))?;
                tokens.push(Token::Literal);
            }
            'e' | 'E' if next == Some('\'') => {
                i = skip_quoted(&chars, i + 2, '\'', true).ok_or_else(|| unterminated("string"))?;
                tokens.push(Token::Literal);
            }
            '"' => {
                let start = i + 1;
                i = skip_quoted(&chars, start, '"', false)
                    .ok_or_else(|| unterminated("quoted identifier"))?;
                let name: String = chars[start..i - 1]
                    .iter()
                    .collect::<String>()
                    .replace("\"\"", "\"");
                tokens.push(Token::Quoted(name));
            }
            '$' => match dollar_tag(&chars, i) {
                Some(tag) => {
                    let body = i + tag.len();
                    let end = find(&chars, body, &tag)
                        .ok_or_else(|| unterminated("dollar-quoted string"))?;
                    i = end + tag.len();
                    tokens.push(Token::Literal);
                }
                None => {
                    // A parameter such as $1.
                    i += 1;
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        i += 1;
                    }
                    tokens.push(Token::Literal);
                }
            },
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$')
                {
                    i += 1;
                }
                tokens.push(Token::Word(
                    chars[start..i].iter().collect::<String>().to_lowercase(),
                ));
            }
            c if c.is_ascii_digit() => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
                tokens.push(Token::Literal);
            }
            ';' => {
                tokens.push(Token::Semicolon);
                i += 1;
            }
            '(' => {
                tokens.push(Token::Open);
                i += 1;
            }
            ')' => {
                tokens.push(Token::Close);
                i += 1;
            }
            '.' => {
                tokens.push(Token::Dot);
                i += 1;
            }
            _ => {
                tokens.push(Token::Other);
                i += 1;
            }
        }
    }
    Ok(tokens)
}

/// Index just past the closing quote, where a doubled quote is an escaped one
/// (and, for `E''` strings, a backslash escapes the next character).
fn skip_quoted(chars: &[char], mut i: usize, quote: char, backslash: bool) -> Option<usize> {
    while i < chars.len() {
        let c = chars[i];
        if backslash && c == '\\' {
            i += 2;
        } else if c == quote {
            if chars.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return Some(i + 1);
            }
        } else {
            i += 1;
        }
    }
    None
}

/// `$tag$` starting at `i`, if one does (`$1` is a parameter, not a tag).
fn dollar_tag(chars: &[char], i: usize) -> Option<String> {
    let mut j = i + 1;
    while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
        if j == i + 1 && chars[j].is_ascii_digit() {
            return None;
        }
        j += 1;
    }
    (chars.get(j) == Some(&'$')).then(|| chars[i..=j].iter().collect())
}

fn find(chars: &[char], from: usize, needle: &str) -> Option<usize> {
    let needle: Vec<char> = needle.chars().collect();
    (from..=chars.len().checked_sub(needle.len())?)
        .find(|&i| chars[i..i + needle.len()] == needle[..])
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn ordinary_statements_pass() {
        for sql in [
            "SELECT 1",
            "select * from term_counts where grp = $1 and term = any($2);",
            "INSERT INTO t (a) VALUES ($1) ON CONFLICT (a) DO UPDATE SET a = EXCLUDED.a",
            "UPDATE t SET x = 1 WHERE y = 'SET ROLE x; COPY'",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "CREATE TABLE notes (id int primary key)",
            "SELECT $$ pg_sleep(1) $$, $tag$ ; DO $tag$",
            "SELECT E'it\\'s; fine'",
            "-- a comment; SET x\nSELECT 1 /* nested /* ; */ still comment */",
            "EXPLAIN SELECT 1",
            "SELECT count(*) FROM (SELECT 1) AS s",
            "SELECT now(), lower('X'), current_setting('search_path')",
        ] {
            assert_eq!(check(sql), Ok(()), "{sql}");
        }
    }

    #[test]
    fn denied_statements_say_why() {
        for (sql, words) in [
            ("SET ROLE other", "SET is not allowed"),
            ("  reset role", "RESET is not allowed"),
            ("set session authorization x", "SET is not allowed"),
            ("COMMIT", "COMMIT"),
            ("ROLLBACK", "ROLLBACK"),
            ("SAVEPOINT a", "SAVEPOINT"),
            ("PREPARE TRANSACTION 'x'", "PREPARE"),
            ("COPY t TO PROGRAM 'id'", "COPY"),
            ("copy t from '/etc/passwd'", "COPY"),
            ("LISTEN assay", "LISTEN"),
            ("NOTIFY assay, 'x'", "NOTIFY"),
            ("DO $$ BEGIN PERFORM 1; END $$", "DO"),
            (
                "CREATE FUNCTION f() RETURNS int AS 'select 1' LANGUAGE sql SECURITY DEFINER",
                "CREATE FUNCTION",
            ),
            (
                "create or replace function f() returns int as 'select 1' language sql",
                "CREATE OR REPLACE",
            ),
            ("CREATE TEMP TABLE x (a int)", "CREATE TEMP"),
            ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", "DECLARE"),
            ("ALTER ROLE assay_p_x SUPERUSER", "ALTER ROLE"),
            ("(COMMIT)", "COMMIT"),
            ("EXPLAIN ANALYZE DECLARE c CURSOR FOR SELECT 1", "DECLARE"),
        ] {
            let err = check(sql).expect_err(sql);
            assert!(err.0.contains(words), "{sql}: {err}");
        }
    }

    #[test]
    fn denied_functions_are_found_however_written() {
        for sql in [
            "SELECT set_config('role', 'x', false)",
            "SELECT pg_catalog.set_config('statement_timeout', '0', false)",
            "SELECT \"set_config\"('role', 'x', true)",
            "SELECT SET_CONFIG ('role', 'x', true)",
            "select pg_sleep(600)",
            "SELECT pg_sleep_for('1 minute')",
            "SELECT pg_advisory_lock(1)",
            "SELECT pg_try_advisory_lock(1)",
            "SELECT lo_import('/etc/passwd')",
            "SELECT pg_read_file('/etc/passwd')",
            "SELECT pg_ls_dir('.')",
            "SELECT dblink_connect('x')",
            "SELECT pg_notify('assay', 'x')",
            "SELECT pg_terminate_backend(1)",
            "SELECT query_to_xml('select set_config(''role'',''x'',false)', true, true, '')",
            "SELECT 1 FROM t WHERE pg_sleep(1) IS NULL",
        ] {
            assert!(check(sql).is_err(), "{sql}");
        }
        // A column or string that merely mentions a name is not a call.
        assert_eq!(
            check("SELECT 'pg_sleep(1)', set_config_note FROM t"),
            Ok(())
        );
    }

    #[test]
    fn one_statement_only() {
        assert!(
            check("SELECT 1; SELECT 2")
                .expect_err("two")
                .0
                .contains("one statement")
        );
        assert!(check("SELECT 1; RESET ROLE").is_err());
        assert_eq!(check("SELECT 1;  "), Ok(()));
        assert!(check("").is_err());
        assert!(
            check("SELECT 'unterminated")
                .expect_err("open string")
                .0
                .contains("unterminated")
        );
        assert!(check("SELECT 1 /* open").is_err());
    }
}

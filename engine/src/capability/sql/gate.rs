//! The statement gate: an early, clear `denied` for SQL no plugin needs.
//!
//! It is defense in depth, not the wall. The wall is PostgreSQL's privilege
//! system (each plugin logs in as its own role, see `capability::sql::sandbox`); the gate
//! only gives plugin authors a precise message before the server is asked, and
//! narrows what reaches it. The attack tests run with the gate off as well.
//!
//! It works on tokens rather than a full parse, and on the server's own
//! tokens: the `lexer` follows PostgreSQL's `scan.l` (14–17) rule by rule (whitespace,
//! `--` and nested `/* */` comments, identifiers folded and truncated as the
//! server does, quoted and `U&"…"` identifiers with `UESCAPE`, `''`, `E''`,
//! `U&''`, `B''`, `X''`, `N''` and dollar-quoted strings with the server's
//! continuation rule, numbers, parameters and operators). A name is judged
//! by what the server resolves it to, never by how it is spelled: `SET_CONFIG`,
//! `"set_config"`, `pg_catalog . /* */ set_config` and `U&"\0073et_config"` are
//! one function, and `SELECT 'SET ROLE x'` is a string.
//!
//! What it refuses, each in every spelling the server accepts:
//! - more than one statement per call;
//! - statements by their leading keywords (`DENIED_STATEMENTS`, after any
//!   `EXPLAIN` prefix and leading parentheses; `SET TRANSACTION READ ONLY`
//!   alone is let through), the same keywords as schema
//!   elements of `CREATE SCHEMA`, temporary and unlogged tables however made
//!   (`SELECT … INTO TEMP`, objects in `pg_temp`, `ALTER TABLE … SET UNLOGGED`);
//! - calls of `DENIED_FUNCTIONS` anywhere in the statement, whatever the
//!   qualifier, also in attribute notation (`(600).pg_sleep` calls `pg_sleep`);
//! - writes to system catalogs and views (`UPDATE pg_settings` is `SET` by
//!   another name), and views over `pg_settings` (updating one is too).
//!
//! Reading system views stays allowed.

mod lexer;

use lexer::{LexError, Token};

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
    (&["create", "trusted"], "languages belong to the operator"),
    (
        &["create", "procedural"],
        "languages belong to the operator",
    ),
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
    (
        &["alter", "routine"],
        "plugins cannot alter functions or procedures",
    ),
    (&["alter", "aggregate"], "plugins cannot alter functions"),
    (&["alter", "operator"], "plugins cannot alter operators"),
    (&["alter", "language"], "languages belong to the operator"),
    (
        &["alter", "server"],
        "foreign servers belong to the operator",
    ),
    (
        &["alter", "foreign"],
        "foreign data belongs to the operator",
    ),
    (
        &["alter", "subscription"],
        "replication belongs to the operator",
    ),
    (
        &["alter", "publication"],
        "replication belongs to the operator",
    ),
    (
        &["alter", "tablespace"],
        "tablespaces belong to the operator",
    ),
    (&["alter", "event"], "plugins cannot alter event triggers"),
    (
        &["alter", "large"],
        "large objects are not available to plugins",
    ),
    (&["create", "transform"], "plugins cannot create transforms"),
    (
        &["create", "access"],
        "access methods belong to the operator",
    ),
    (
        &["create", "conversion"],
        "plugins cannot create conversions",
    ),
    (&["create", "default"], "plugins cannot create conversions"),
    (
        &["drop", "function"],
        "plugins cannot create or drop functions",
    ),
    (
        &["drop", "procedure"],
        "plugins cannot create or drop procedures",
    ),
    (
        &["drop", "routine"],
        "plugins cannot create or drop functions or procedures",
    ),
    (
        &["drop", "aggregate"],
        "plugins cannot create or drop functions",
    ),
    (&["drop", "extension"], "extensions belong to the operator"),
    (&["drop", "language"], "languages belong to the operator"),
    (
        &["drop", "server"],
        "foreign servers belong to the operator",
    ),
    (&["drop", "foreign"], "foreign data belongs to the operator"),
    (
        &["drop", "subscription"],
        "replication belongs to the operator",
    ),
    (
        &["drop", "publication"],
        "replication belongs to the operator",
    ),
    (
        &["drop", "tablespace"],
        "tablespaces belong to the operator",
    ),
    (&["drop", "event"], "plugins cannot drop event triggers"),
    (&["drop", "access"], "access methods belong to the operator"),
    (&["drop", "transform"], "plugins cannot drop transforms"),
    (&["import"], "foreign data belongs to the operator"),
];

/// Functions no plugin may call, matched on the resolved name whatever its
/// qualifier; a trailing `*` matches a prefix. A call is `name(…)` or the
/// attribute notation `expr.name`, so no pattern may match the name of a
/// system view plugins read (hence the exact adminpack names below, which
/// `pg_file_settings` must not match).
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
    ("pg_file_write", "server files are not available to plugins"),
    (
        "pg_file_rename",
        "server files are not available to plugins",
    ),
    (
        "pg_file_unlink",
        "server files are not available to plugins",
    ),
    ("pg_file_sync", "server files are not available to plugins"),
    ("pg_file_read", "server files are not available to plugins"),
    (
        "pg_file_length",
        "server files are not available to plugins",
    ),
    ("pg_logdir_ls", "server files are not available to plugins"),
    (
        "dblink*",
        "connections to other databases are not available to plugins",
    ),
    ("pg_notify", "notifications are not available to plugins"),
    (
        "pg_logical_emit_message",
        "writing to the server's log of changes is not available to plugins",
    ),
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
    ("ts_stat", "it runs SQL from a string"),
    ("ts_rewrite", "it can run SQL from a string"),
    ("crosstab*", "it runs SQL from a string"),
    ("connectby", "it runs SQL built from its arguments"),
    ("cursor_to_xml*", "cursors are not available to plugins"),
];

/// Why the gate refused a statement; the text is shown to the plugin as `denied`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

const TEMPORARY: &str = "temporary objects would outlive the call on a pooled connection";
const UNLOGGED: &str = "unlogged tables lose data on a crash; use a normal table";
const SYSTEM: &str = "system catalogs and views belong to the server";

/// Checks one plugin statement. `Ok` means it may be sent to the server, which
/// still decides by privileges.
pub fn check(statement: &str) -> Result<(), Denied> {
    inspect(statement).map(|_| ())
}

/// What the gate learnt of a statement it let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inspected {
    /// It reads and writes nothing, by its words: a `SELECT`, `VALUES`,
    /// `TABLE` or `WITH` with no locking clause, no `INTO`, no data-modifying
    /// verb and no sequence call anywhere in it. A hint, not a proof: a
    /// function it calls may still try to write, which the server refuses in
    /// a read-only transaction (see `session`).
    pub plain_read: bool,
}

/// How many verdicts [`Verdicts`] keeps per plugin before it starts afresh.
pub const VERDICTS_KEPT: usize = 512;

/// The longest statement whose verdict [`Verdicts`] keeps: plugins repeat
/// short statements; a long one is rarely run twice.
pub const VERDICT_STATEMENT_BYTES: usize = 4 * 1024;

/// The gate's verdicts on the statements one plugin version was let run,
/// kept so that a statement run in every call is lexed once, not every time
/// (a few microseconds each). Safe because a verdict is a function of the
/// statement's text alone: the same bytes get the same verdict. Refusals
/// are not kept (they are rare and end in an error anyway). Bounded: at
/// [`VERDICTS_KEPT`] entries it is emptied, so a plugin that never repeats
/// a statement costs at most that many short strings.
#[derive(Debug, Default)]
pub struct Verdicts {
    admitted: std::sync::Mutex<std::collections::HashMap<Box<str>, Inspected>>,
}

impl Verdicts {
    /// [`inspect`], answered from the verdicts kept when the same statement
    /// was let through before.
    pub fn inspect(&self, statement: &str) -> Result<Inspected, Denied> {
        if let Some(kept) = crate::sync::lock(&self.admitted).get(statement) {
            return Ok(*kept);
        }
        let inspected = inspect(statement)?;
        if statement.len() <= VERDICT_STATEMENT_BYTES {
            let mut admitted = crate::sync::lock(&self.admitted);
            if admitted.len() >= VERDICTS_KEPT {
                admitted.clear();
            }
            admitted.insert(statement.into(), inspected);
        }
        Ok(inspected)
    }

    /// How many verdicts are kept.
    pub fn kept(&self) -> usize {
        crate::sync::lock(&self.admitted).len()
    }
}

/// [`check`], and what the statement is.
pub fn inspect(statement: &str) -> Result<Inspected, Denied> {
    if statement.contains('\0') {
        // The server reads SQL text as a C string: it would stop at the NUL
        // and run less than the gate read.
        return Err(Denied("the statement contains a NUL byte".into()));
    }
    let tokens = lexer::tokenize(statement).map_err(|e| match e {
        LexError::Unterminated(what) => Denied(format!("the statement has an unterminated {what}")),
        LexError::Unreadable(why) => Denied(format!("the statement cannot be read: {why}")),
    })?;
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
    check_schema_elements(first)?;
    check_temporary_and_unlogged(first)?;
    check_function_calls(first)?;
    check_system_writes(first)?;
    check_settings_views(first)?;
    Ok(Inspected {
        plain_read: is_plain_read(first),
    })
}

/// Words that make a statement more than a plain read when they appear
/// anywhere in it (unquoted): data-modifying verbs (also inside `WITH`),
/// `SELECT … INTO`, locking clauses (`FOR UPDATE`, `FOR SHARE`, … — and so,
/// conservatively, any `FOR`), and the sequence functions that write.
const NOT_PLAIN_READ: &[&str] = &[
    "insert", "update", "delete", "merge", "into", "for", "lock", "nextval", "setval",
];

fn is_plain_read(tokens: &[Token]) -> bool {
    let leading = tokens.iter().find(|t| **t != Token::Open);
    matches!(
        keyword(leading),
        Some("select" | "values" | "table" | "with")
    ) && !tokens
        .iter()
        .any(|t| matches!(keyword(Some(t)), Some(w) if NOT_PLAIN_READ.contains(&w)))
}

/// The first keyword of `statement`, ASCII-lowercased as the server folds it,
/// after whitespace, comments and leading `(`; `None` if the statement does not
/// start with a word or cannot be lexed.
pub fn leading_keyword(statement: &str) -> Option<String> {
    let tokens = lexer::tokenize(statement).ok()?;
    match tokens.iter().find(|t| **t != Token::Open)? {
        Token::Word(w) => Some(w.clone()),
        _ => None,
    }
}

/// A keyword can only be an unquoted word: `"set"` is an identifier.
fn keyword(token: Option<&Token>) -> Option<&str> {
    match token {
        Some(Token::Word(w)) => Some(w),
        _ => None,
    }
}

/// A name as the server resolves it: a folded word or a decoded identifier.
fn name(token: Option<&Token>) -> Option<&str> {
    match token {
        Some(Token::Word(w) | Token::Quoted(w)) => Some(w),
        _ => None,
    }
}

fn leading_words(tokens: &[Token]) -> Vec<&str> {
    tokens
        .iter()
        .map_while(|t| keyword(Some(t)))
        .take(3)
        .collect()
}

/// The tokens after a balanced `( … )` group that `tokens` starts with.
fn after_group(tokens: &[Token]) -> &[Token] {
    let mut depth = 0usize;
    for (i, t) in tokens.iter().enumerate() {
        match t {
            Token::Open => depth += 1,
            Token::Close => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return tokens.get(i + 1..).unwrap_or_default();
                }
            }
            _ => {}
        }
    }
    &[]
}

/// The statement an `EXPLAIN [ANALYZE] [VERBOSE] [(options)]` prefix and leading
/// parentheses wrap: with ANALYZE it is executed, so it is what is judged.
fn unwrapped(tokens: &[Token]) -> &[Token] {
    let mut rest = tokens;
    loop {
        match rest.split_first() {
            Some((Token::Word(w), tail))
                if matches!(w.as_str(), "explain" | "analyze" | "analyse" | "verbose") =>
            {
                rest = if tail.first() == Some(&Token::Open) {
                    after_group(tail)
                } else {
                    tail
                };
            }
            Some((Token::Open, tail)) => rest = tail,
            _ => return rest,
        }
    }
}

fn denied_statement(tokens: &[Token]) -> Option<Denied> {
    let leading = leading_words(tokens);
    DENIED_STATEMENTS
        .iter()
        .find(|(keywords, _)| leading.starts_with(keywords))
        .map(|(keywords, why)| {
            Denied(format!(
                "{} is not allowed for plugins: {why}",
                keywords.join(" ").to_uppercase()
            ))
        })
}

/// The one `SET` a plugin may run, word for word and nothing after it: it
/// makes the rest of the call's transaction read-only, which only takes
/// away (the server refuses to make a transaction read-write again once it
/// has read anything, and the setting ends with the transaction). A plugin
/// that runs SQL it did not write, such as the bundled `ask-sql`, runs it
/// after this.
const READ_ONLY_TRANSACTION: [&str; 4] = ["set", "transaction", "read", "only"];

fn is_read_only_request(tokens: &[Token]) -> bool {
    tokens.len() == READ_ONLY_TRANSACTION.len()
        && tokens
            .iter()
            .zip(READ_ONLY_TRANSACTION)
            .all(|(t, word)| keyword(Some(t)) == Some(word))
}

fn check_leading_keywords(tokens: &[Token]) -> Result<(), Denied> {
    if is_read_only_request(tokens) {
        return Ok(());
    }
    denied_statement(unwrapped(tokens)).map_or(Ok(()), Err)
}

/// `CREATE SCHEMA s CREATE … GRANT …` runs each element as a statement of its
/// own: judge each as one.
fn check_schema_elements(tokens: &[Token]) -> Result<(), Denied> {
    let tokens = unwrapped(tokens);
    if !leading_words(tokens).starts_with(&["create", "schema"]) {
        return Ok(());
    }
    for (i, t) in tokens.iter().enumerate().skip(2) {
        if matches!(keyword(Some(t)), Some("create" | "grant"))
            && let Some(denied) = tokens.get(i..).and_then(denied_statement)
        {
            return Err(denied);
        }
    }
    Ok(())
}

fn is_temporary_schema(name: &str) -> bool {
    name == "pg_temp" || name.starts_with("pg_temp_") || name.starts_with("pg_toast_temp_")
}

/// Temporary and unlogged tables by other spellings than `CREATE TEMP` and
/// `CREATE UNLOGGED`.
fn check_temporary_and_unlogged(tokens: &[Token]) -> Result<(), Denied> {
    let altering = leading_words(unwrapped(tokens)).first() == Some(&"alter");
    for i in 0..tokens.len() {
        let at = |k: usize| tokens.get(k);
        if let Some(n) = name(at(i))
            && at(i + 1) == Some(&Token::Dot)
            && is_temporary_schema(n)
        {
            return Err(Denied(format!(
                "objects in {n} are not allowed for plugins: {TEMPORARY}"
            )));
        }
        match keyword(at(i)) {
            // `SELECT … INTO [TEMP | TEMPORARY | LOCAL TEMP | UNLOGGED] t`;
            // after INSERT or MERGE, INTO names an existing table.
            Some("into")
                if !matches!(
                    i.checked_sub(1).and_then(|p| keyword(at(p))),
                    Some("insert" | "merge")
                ) =>
            {
                let next = keyword(at(i + 1));
                let temporary = matches!(next, Some("temp" | "temporary"))
                    || (matches!(next, Some("local" | "global"))
                        && matches!(keyword(at(i + 2)), Some("temp" | "temporary")));
                if temporary {
                    return Err(Denied(format!(
                        "SELECT INTO TEMP is not allowed for plugins: {TEMPORARY}"
                    )));
                }
                if next == Some("unlogged") {
                    return Err(Denied(format!(
                        "SELECT INTO UNLOGGED is not allowed for plugins: {UNLOGGED}"
                    )));
                }
            }
            Some("set") if altering && keyword(at(i + 1)) == Some("unlogged") => {
                return Err(Denied(format!(
                    "SET UNLOGGED is not allowed for plugins: {UNLOGGED}"
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

fn denied_function(name: &str) -> Option<&'static str> {
    DENIED_FUNCTIONS.iter().find_map(|(pattern, why)| {
        let hit = match pattern.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == *pattern,
        };
        hit.then_some(*why)
    })
}

fn check_function_calls(tokens: &[Token]) -> Result<(), Denied> {
    for (i, token) in tokens.iter().enumerate() {
        let Some(n) = name(Some(token)) else {
            continue;
        };
        // `f(…)`, qualified or not, and `expr.f`: PostgreSQL reads a field
        // selection it cannot resolve as a column as the call `f(expr)`.
        let called = tokens.get(i + 1) == Some(&Token::Open)
            || i.checked_sub(1).and_then(|p| tokens.get(p)) == Some(&Token::Dot);
        if called && let Some(why) = denied_function(n) {
            return Err(Denied(format!(
                "calling {n}() is not allowed for plugins: {why}"
            )));
        }
    }
    Ok(())
}

/// A relation name at `tokens[at..]` (after `ONLY` and parentheses, as in
/// `ONLY (t)`), its parts as resolved, and where the tokens after it start.
fn relation(tokens: &[Token], mut at: usize) -> Option<(Vec<&str>, usize)> {
    while keyword(tokens.get(at)) == Some("only") || tokens.get(at) == Some(&Token::Open) {
        at += 1;
    }
    let mut parts = vec![name(tokens.get(at))?];
    at += 1;
    while tokens.get(at) == Some(&Token::Dot) {
        let Some(part) = name(tokens.get(at + 1)) else {
            break;
        };
        parts.push(part);
        at += 2;
    }
    while tokens.get(at) == Some(&Token::Close) {
        at += 1;
    }
    Some((parts, at))
}

/// Whether the server resolves `parts` to a relation in a system schema. An
/// unqualified name is looked up in `pg_catalog` first, whose relations are
/// all named `pg_…`.
fn is_system(parts: &[&str]) -> bool {
    match parts.split_last() {
        Some((last, [])) => last.starts_with("pg_"),
        Some((_, schemas)) => schemas
            .iter()
            .any(|s| *s == "information_schema" || s.starts_with("pg_")),
        None => false,
    }
}

fn system_write(verb: &str, parts: &[&str]) -> Result<(), Denied> {
    if !is_system(parts) {
        return Ok(());
    }
    let shown = parts.join(".");
    let aside = if parts.last() == Some(&"pg_settings") {
        " (UPDATE pg_settings is SET by another name)"
    } else {
        ""
    };
    Err(Denied(format!(
        "{verb} {shown} is not allowed for plugins: {SYSTEM}{aside}"
    )))
}

/// `t [*] [, …]` from `tokens[at..]`, each judged.
fn system_list(tokens: &[Token], mut at: usize, verb: &str) -> Result<(), Denied> {
    while let Some((parts, next)) = relation(tokens, at) {
        system_write(verb, &parts)?;
        at = next;
        if matches!(tokens.get(at), Some(Token::Op(op)) if op == "*") {
            at += 1;
        }
        if tokens.get(at) != Some(&Token::Comma) {
            break;
        }
        at += 1;
    }
    Ok(())
}

/// The targets of UPDATE, INSERT, DELETE, MERGE, TRUNCATE, LOCK and of locking
/// clauses, wherever they appear (a CTE, EXPLAIN ANALYZE).
fn check_system_writes(tokens: &[Token]) -> Result<(), Denied> {
    for i in 0..tokens.len() {
        let at = |k: usize| keyword(tokens.get(k));
        let previous = i.checked_sub(1).and_then(at);
        let locking = matches!(previous, Some("for" | "key"));
        match at(i) {
            // `FOR [NO KEY] UPDATE | [KEY] SHARE [OF t, …]`
            Some("update" | "share") if locking && at(i + 1) == Some("of") => {
                system_list(tokens, i + 2, "locking")?;
            }
            // Every other UPDATE, without trusting what precedes it: `DO UPDATE
            // SET`, `ON UPDATE CASCADE`, `FOR UPDATE NOWAIT` are followed by a
            // word (`set`, `cascade`, `nowait`) that is never a system relation.
            Some("update") => {
                if let Some((parts, _)) = relation(tokens, i + 1) {
                    system_write("writing to", &parts)?;
                }
            }
            Some("insert" | "merge") if at(i + 1) == Some("into") => {
                if let Some((parts, _)) = relation(tokens, i + 2) {
                    system_write("writing to", &parts)?;
                }
            }
            Some("delete") if at(i + 1) == Some("from") => {
                if let Some((parts, _)) = relation(tokens, i + 2) {
                    system_write("writing to", &parts)?;
                }
            }
            Some(verb @ ("truncate" | "lock")) => {
                let start = if at(i + 1) == Some("table") {
                    i + 2
                } else {
                    i + 1
                };
                let verb = if verb == "lock" {
                    "locking"
                } else {
                    "writing to"
                };
                system_list(tokens, start, verb)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// A view over `pg_settings` is auto-updatable, and the rewriter applies
/// `pg_settings`' own UPDATE rule beneath it: updating the view calls
/// `set_config()`.
fn check_settings_views(tokens: &[Token]) -> Result<(), Denied> {
    let words: Vec<Option<&str>> = tokens.iter().map(|t| keyword(Some(t))).collect();
    let creates_view = words
        .windows(2)
        .any(|w| w == [Some("create"), Some("view")])
        || words
            .windows(3)
            .any(|w| w == [Some("create"), Some("recursive"), Some("view")]);
    if creates_view && tokens.iter().any(|t| name(Some(t)) == Some("pg_settings")) {
        return Err(Denied(
            "a view over pg_settings is not allowed for plugins: updating it would change settings (UPDATE through it is SET by another name)"
                .into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{
        VERDICT_STATEMENT_BYTES, VERDICTS_KEPT, Verdicts, check, inspect, leading_keyword,
    };

    /// A kept verdict is the verdict: a refused statement is refused every
    /// time it is asked, an admitted one keeps what the gate learnt of it,
    /// and what is kept stays bounded.
    #[test]
    fn kept_verdicts_are_the_gates_own_and_bounded() {
        let verdicts = Verdicts::default();
        for sql in [
            "SELECT payload FROM t WHERE id = $1",
            "UPDATE t SET hits = hits + 1 WHERE id = $1",
            "SET ROLE postgres",
            "SELECT set_config('role', 'postgres', false)",
            "SELECT 1; DROP TABLE t",
            "SELECT pg_catalog . /* */ set_config('a', 'b', true)",
        ] {
            for _ in 0..3 {
                assert_eq!(verdicts.inspect(sql), inspect(sql), "{sql}");
            }
        }
        assert_eq!(verdicts.kept(), 2, "only the two admitted statements");
        let long = format!("SELECT 1 -- {}", "x".repeat(VERDICT_STATEMENT_BYTES));
        assert!(verdicts.inspect(&long).is_ok());
        assert_eq!(verdicts.kept(), 2, "a long statement is not kept");
        for n in 0..VERDICTS_KEPT * 3 {
            let sql = format!("SELECT {n}");
            assert!(verdicts.inspect(&sql).is_ok());
            assert!(verdicts.kept() <= VERDICTS_KEPT);
        }
        assert!(verdicts.inspect("SET ROLE postgres").is_err());
    }

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

    /// What the bundled plugins send (`plugins/history`, `plugins/bench-query`,
    /// migrations included), and SQL of the kind plugins write.
    #[test]
    fn plugin_sql_passes() {
        for sql in [
            // plugins/history: migrations and calls.
            "CREATE TABLE term_counts (
                        grp text NOT NULL,
                        term text NOT NULL,
                        documents integer NOT NULL CHECK (documents > 0),
                        mentions bigint NOT NULL CHECK (mentions > 0),
                        PRIMARY KEY (grp, term))",
            "CREATE TABLE counted_documents (
                        grp text NOT NULL,
                        document uuid NOT NULL,
                        terms text[] NOT NULL,
                        counts bigint[] NOT NULL,
                        PRIMARY KEY (grp, document))",
            "INSERT INTO counted_documents (grp, document, terms, counts) VALUES ($1, $2::uuid, $3, $4)
         ON CONFLICT (grp, document) DO NOTHING",
            "SELECT terms, counts FROM counted_documents WHERE grp = $1 AND document = $2::uuid",
            "SELECT term, documents, mentions FROM term_counts WHERE grp = $1 AND term = ANY($2)",
            "INSERT INTO term_counts (grp, term, documents, mentions)
             SELECT $1, t, 1, c FROM unnest($2::text[], $3::int8[]) AS u(t, c) ORDER BY t
             ON CONFLICT (grp, term) DO UPDATE
             SET documents = term_counts.documents + 1, mentions = term_counts.mentions + EXCLUDED.mentions",
            "SELECT count(*) FROM counted_documents WHERE grp = $1 AND document <> $2::uuid",
            // plugins/bench-query.
            "SELECT payload FROM plugin_bench_query.bench_rows WHERE id = $1",
            "SELECT $1, $2",
            // Typical plugin SQL.
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 10) SELECT sum(n) FROM r",
            "SELECT a.x, b.y FROM a JOIN b ON a.id = b.a_id LEFT JOIN c USING (id) WHERE a.x > 0",
            "INSERT INTO t (a) VALUES ($1) ON CONFLICT (a) DO UPDATE SET a = EXCLUDED.a",
            "SELECT * FROM jobs WHERE state = 'new' ORDER BY id LIMIT 1 FOR UPDATE",
            "SELECT * FROM jobs FOR UPDATE NOWAIT",
            "SELECT * FROM jobs j FOR UPDATE OF j SKIP LOCKED",
            "SELECT * FROM mytable FOR UPDATE OF mytable",
            "SELECT * FROM jobs FOR NO KEY UPDATE OF jobs FOR KEY SHARE",
            "SELECT * FROM jobs FOR SHARE OF jobs",
            "CREATE TABLE child (id int REFERENCES parent (id) ON UPDATE CASCADE ON DELETE SET NULL)",
            "CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY, at timestamptz DEFAULT now())",
            "CREATE INDEX term_counts_term ON term_counts (term)",
            "CREATE UNIQUE INDEX ON t ((lower(name)))",
            "ALTER TABLE mine ADD COLUMN note text",
            "ALTER TABLE mine SET LOGGED",
            "DROP TABLE IF EXISTS mine",
            "DELETE FROM mine WHERE id = $1",
            "UPDATE ONLY mine SET x = x + 1",
            "TRUNCATE mine",
            "TRUNCATE TABLE ONLY mine, other RESTART IDENTITY",
            "LOCK TABLE mine IN SHARE MODE",
            "MERGE INTO mine m USING src s ON m.id = s.id
             WHEN MATCHED THEN UPDATE SET v = s.v
             WHEN NOT MATCHED THEN INSERT (id, v) VALUES (s.id, s.v)
             WHEN MATCHED AND s.gone THEN DELETE",
            "INSERT INTO temp (a) VALUES (1)",
            "SELECT * INTO archive FROM mine",
            "CREATE TABLE copy_of AS SELECT * FROM mine",
            "CREATE VIEW recent AS SELECT * FROM mine WHERE at > now() - interval '1 day'",
            "CREATE MATERIALIZED VIEW s AS SELECT name, setting FROM pg_settings",
            "ANALYZE mine",
            "EXPLAIN ANALYZE SELECT * FROM mine",
            "EXPLAIN (ANALYZE, FORMAT JSON) SELECT 1",
            "SELECT doc ->> 'name', doc -> 'tags', doc #>> '{a,b}' FROM docs WHERE doc @> '{\"a\": 1}'",
            "SELECT * FROM docs WHERE doc ?| array['a', 'b'] AND doc ? 'c' AND NOT doc ?& array['d']",
            "SELECT $1::int8[], $2::uuid, '{1,2}'::int[], x::text FROM t",
            "SELECT 'SET ROLE x; COPY t TO PROGRAM ''id''' AS s",
            "SELECT $body$ SELECT set_config('role', 'x', false); $body$",
            "SELECT E'it\\'s', E'a\\\\b', e'\\x41'",
            "SELECT 'café', 'naïve' || 'ü'",
            "SELECT größe, 名前 FROM produkte WHERE größe > 1",
            "CREATE TABLE notizen (größe int, \"Name\" text)",
            "SELECT 'a'\n'b', B'1010', X'ff', N'n', U&'d\\0061ta', U&'d!0061ta' UESCAPE '!'",
            "SELECT U&\"d\\0061ta\" FROM t",
            "SELECT 1.5e10, .5, 1e-3, 1::numeric(10, 2)",
            "SELECT x$y, \"set config\" FROM t",
            // Reading system views stays allowed.
            "SELECT current_setting('search_path')",
            "SELECT * FROM pg_settings",
            "SELECT name, setting FROM pg_catalog.pg_settings WHERE name = 'work_mem'",
            "SELECT count(*) FROM pg_stat_activity",
            "SELECT * FROM pg_catalog.pg_file_settings",
            "SELECT table_name FROM information_schema.tables",
            "SELECT * FROM pg_settings s FOR UPDATE OF s",
            // Names that merely resemble refused ones.
            "SELECT 'pg_sleep(1)', set_config_note, t.sleep_count FROM t",
            // Quoted names are not folded: the server looks for `sET_CONFIG`,
            // which does not exist.
            "SELECT u&\"\\0073ET_CONFIG\"('role', 'x', false)",
            "SELECT \"SET_CONFIG\" FROM t",
            "UPDATE myschema.pg_notes SET a = 1",
        ] {
            assert_eq!(check(sql), Ok(()), "{sql}");
        }
    }

    #[test]
    fn a_call_may_make_its_own_transaction_read_only_and_nothing_more() {
        for sql in [
            "SET TRANSACTION READ ONLY",
            "set transaction read only;",
            "  SeT /* c */ TRANSACTION\n READ ONLY ",
        ] {
            let inspected = inspect(sql).expect(sql);
            assert!(!inspected.plain_read, "{sql} opens the transaction");
        }
        for sql in [
            "SET TRANSACTION READ WRITE",
            "SET TRANSACTION READ ONLY, ISOLATION LEVEL SERIALIZABLE",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE READ ONLY",
            "SET LOCAL transaction_read_only = on",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            "SET \"transaction\" READ ONLY",
            "SET TRANSACTION READ ONLY DEFERRABLE",
            "SET TRANSACTION READ ONLY; SET ROLE x",
            "EXPLAIN SET TRANSACTION READ ONLY",
        ] {
            assert!(check(sql).is_err(), "{sql}");
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
            ("CREATE TRUSTED LANGUAGE x HANDLER h", "CREATE TRUSTED"),
            ("create procedural language x", "CREATE PROCEDURAL"),
            (
                "SELECT pg_logical_emit_message(false, 'p', 'x')",
                "pg_logical_emit_message",
            ),
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
            (
                "ALTER ROUTINE f() SET search_path = public",
                "ALTER ROUTINE",
            ),
            ("DROP ROUTINE f", "DROP ROUTINE"),
            ("IMPORT FOREIGN SCHEMA s FROM SERVER x INTO y", "IMPORT"),
            (
                "CREATE SCHEMA s CREATE TABLE t (a int) GRANT ALL ON t TO PUBLIC",
                "GRANT",
            ),
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

    /// Every spelling found of each refused thing, and the words its denial
    /// must contain.
    #[test]
    fn every_spelling_is_refused() {
        const SET_CONFIG: &str =
            "calling set_config() is not allowed for plugins: settings belong to the host";
        const SETTINGS: &str = "writing to";
        let cases: &[(&str, &str)] = &[
            // set_config, however the name is written.
            ("SELECT set_config('role', 'x', false)", SET_CONFIG),
            ("SELECT SET_CONFIG('role', 'x', false)", SET_CONFIG),
            ("SELECT Set_Config('role', 'x', false)", SET_CONFIG),
            ("SELECT \"set_config\"('role', 'x', false)", SET_CONFIG),
            (
                "SELECT pg_catalog.set_config('role', 'x', false)",
                SET_CONFIG,
            ),
            (
                "SELECT \"pg_catalog\".\"set_config\"('role', 'x', false)",
                SET_CONFIG,
            ),
            (
                "SELECT PG_CATALOG . /*x*/ SET_CONFIG ('role', 'x', false)",
                SET_CONFIG,
            ),
            (
                "SELECT pg_catalog\n.\n\"set_config\"\n('role', 'x', false)",
                SET_CONFIG,
            ),
            ("SELECT mine.set_config('role', 'x', false)", SET_CONFIG),
            (
                "SELECT U&\"\\0073et_config\"('role', 'x', false)",
                SET_CONFIG,
            ),
            (
                "SELECT u&\"\\0073et_config\"('role', 'x', false)",
                SET_CONFIG,
            ),
            (
                "SELECT U&\"\\+000073et\\005fconfig\"('role', 'x', false)",
                SET_CONFIG,
            ),
            (
                "SELECT U&\"!0073et_config\" UESCAPE '!' ('role', 'x', false)",
                SET_CONFIG,
            ),
            (
                "SELECT U&\"!0073et_config\" /* c */ uescape\n'!'('role', 'x', false)",
                SET_CONFIG,
            ),
            (
                "SELECT U&\"pg_sleep!!x\" UESCAPE '!'(1)",
                "calling pg_sleep!x()",
            ),
            ("SELECT set_config /* c */ ('role', 'x', false)", SET_CONFIG),
            (
                "SELECT set_config\n\t\r\x0b\x0c('role', 'x', false)",
                SET_CONFIG,
            ),
            ("SELECT set_config -- c\n('role', 'x', false)", SET_CONFIG),
            // `--` ends at \r for the server: what follows is code.
            (
                "SELECT 1 -- x\r, set_config('role', 'x', false)",
                SET_CONFIG,
            ),
            ("-- x\rSELECT set_config('role', 'x', false)", SET_CONFIG),
            // A number ends before a letter.
            ("SELECT 1set_config('role', 'x', false)", SET_CONFIG),
            ("SELECT 1.5set_config('role', 'x', false)", SET_CONFIG),
            ("SELECT $1set_config('role', 'x', false)", SET_CONFIG),
            // A continued E'' string stays one: `\'` is still an escaped quote.
            (
                "SELECT E'x'\n' \\' , ' , set_config('role', 'x', false) --'",
                SET_CONFIG,
            ),
            // In any position.
            ("SELECT * FROM set_config('role', 'x', false)", SET_CONFIG),
            (
                "SELECT * FROM ROWS FROM (set_config('role', 'x', false))",
                SET_CONFIG,
            ),
            (
                "SELECT * FROM t, LATERAL set_config('role', t.x, false) AS s",
                SET_CONFIG,
            ),
            (
                "WITH s AS (SELECT set_config('role', 'x', false)) SELECT * FROM s",
                SET_CONFIG,
            ),
            ("VALUES (set_config('role', 'x', false))", SET_CONFIG),
            (
                "EXPLAIN ANALYZE SELECT set_config('role', 'x', false)",
                SET_CONFIG,
            ),
            (
                "EXPLAIN (ANALYZE, VERBOSE) SELECT set_config('role', 'x', false)",
                SET_CONFIG,
            ),
            (
                "CREATE TABLE t (a text DEFAULT set_config('role', 'x', false))",
                SET_CONFIG,
            ),
            (
                "CREATE TABLE t (a text CHECK (set_config('role', a, false) IS NOT NULL))",
                SET_CONFIG,
            ),
            (
                "CREATE INDEX ON t ((set_config('role', a, false)))",
                SET_CONFIG,
            ),
            (
                "CREATE TABLE t AS SELECT set_config('role', 'x', false)",
                SET_CONFIG,
            ),
            (
                "CREATE VIEW v AS SELECT set_config('role', 'x', false)",
                SET_CONFIG,
            ),
            (
                "UPDATE t SET a = set_config('role', 'x', false)",
                SET_CONFIG,
            ),
            // SET and RESET.
            (
                "SET role x",
                "SET is not allowed for plugins: the host sets the transaction's settings",
            ),
            ("SeT statement_timeout = 0", "SET is not allowed"),
            ("set LOCAL statement_timeout = 0", "SET is not allowed"),
            ("  /* c */ SET x = 1", "SET is not allowed"),
            ("/* a /* nested */ b */SET x = 1", "SET is not allowed"),
            ("-- c\nSET x = 1", "SET is not allowed"),
            ("-- c\rSET x = 1", "SET is not allowed"),
            ("set/**/x = 1", "SET is not allowed"),
            ("(SET x = 1)", "SET is not allowed"),
            ("SET x = 1;", "SET is not allowed"),
            ("RESET ALL", "RESET is not allowed"),
            ("reSet/* */role", "RESET is not allowed"),
            ("-- c\r\nRESET role", "RESET is not allowed"),
            // UPDATE pg_settings and other writes to system relations.
            (
                "UPDATE pg_settings SET setting = '0' WHERE name = 'statement_timeout'",
                "writing to pg_settings is not allowed for plugins: system catalogs and views belong to the server (UPDATE pg_settings is SET by another name)",
            ),
            ("update PG_SETTINGS set setting = '0'", SETTINGS),
            ("UPDATE pg_catalog.pg_settings SET setting = '0'", SETTINGS),
            (
                "UPDATE \"pg_catalog\".\"pg_settings\" SET setting = '0'",
                SETTINGS,
            ),
            ("UPDATE \"pg_settings\" SET setting = '0'", SETTINGS),
            ("UPDATE U&\"pg\\005fsettings\" SET setting = '0'", SETTINGS),
            (
                "UPDATE U&\"pg!005fsettings\" UESCAPE '!' SET setting = '0'",
                SETTINGS,
            ),
            ("UPDATE ONLY pg_settings SET setting = '0'", SETTINGS),
            ("UPDATE ONLY (pg_settings) SET setting = '0'", SETTINGS),
            ("UPDATE pg_settings * SET setting = '0'", SETTINGS),
            ("UPDATE pg_settings AS s SET setting = '0'", SETTINGS),
            (
                "UPDATE /* x */ pg_catalog . pg_settings SET setting = '0'",
                SETTINGS,
            ),
            (
                "WITH u AS (UPDATE pg_settings SET setting = '0' WHERE name = 'statement_timeout' RETURNING 1) SELECT * FROM u",
                SETTINGS,
            ),
            (
                "EXPLAIN ANALYZE UPDATE pg_settings SET setting = '0'",
                SETTINGS,
            ),
            ("INSERT INTO pg_settings (name) VALUES ('x')", SETTINGS),
            (
                "DELETE FROM pg_catalog.pg_class",
                "writing to pg_catalog.pg_class",
            ),
            ("DELETE FROM ONLY pg_class", "writing to pg_class"),
            (
                "MERGE INTO pg_settings s USING x ON true WHEN MATCHED THEN UPDATE SET setting = '0'",
                SETTINGS,
            ),
            ("TRUNCATE pg_largeobject", "writing to pg_largeobject"),
            (
                "TRUNCATE TABLE mine, ONLY pg_catalog.pg_class",
                "writing to pg_catalog.pg_class",
            ),
            (
                "UPDATE information_schema.tables SET table_name = 'x'",
                SETTINGS,
            ),
            ("UPDATE pg_toast.pg_toast_1 SET chunk_seq = 0", SETTINGS),
            (
                "SELECT * FROM pg_class FOR UPDATE OF pg_class",
                "locking pg_class",
            ),
            (
                "SELECT * FROM t, pg_class FOR SHARE OF t, pg_class NOWAIT",
                "locking pg_class",
            ),
            ("LOCK pg_class", "locking pg_class"),
            (
                "LOCK TABLE mine, pg_catalog.pg_authid IN ACCESS SHARE MODE",
                "locking",
            ),
            // A view over pg_settings is updated through its rules.
            (
                "CREATE VIEW s AS SELECT * FROM pg_settings",
                "a view over pg_settings",
            ),
            (
                "CREATE RECURSIVE VIEW s (n) AS SELECT name FROM pg_catalog.pg_settings",
                "a view over pg_settings",
            ),
            (
                "CREATE VIEW s AS TABLE \"pg_settings\"",
                "a view over pg_settings",
            ),
            // pg_sleep and the advisory locks, in each spelling.
            (
                "SELECT pg_sleep(600)",
                "calling pg_sleep() is not allowed for plugins: a plugin call must not sleep",
            ),
            ("SELECT PG_SLEEP(600)", "calling pg_sleep()"),
            ("SELECT \"pg_sleep\"(600)", "calling pg_sleep()"),
            ("SELECT pg_catalog.pg_sleep(600)", "calling pg_sleep()"),
            (
                "SELECT \"pg_catalog\".\"pg_sleep\"(600)",
                "calling pg_sleep()",
            ),
            ("SELECT U&\"pg\\005fsleep\"(600)", "calling pg_sleep()"),
            ("SELECT U&\"\\0070g_sleep\"(600)", "calling pg_sleep()"),
            ("SELECT 1 -- \r+ pg_sleep(600)", "calling pg_sleep()"),
            ("SELECT 1pg_sleep(600)", "calling pg_sleep()"),
            ("SELECT (600).pg_sleep", "calling pg_sleep()"),
            (
                "SELECT x.pg_sleep FROM (SELECT 600::float8 AS x) s",
                "calling pg_sleep()",
            ),
            ("SELECT pg_sleep_for('1 minute')", "calling pg_sleep_for()"),
            (
                "SELECT PG_CATALOG.PG_SLEEP_FOR('1 minute')",
                "calling pg_sleep_for()",
            ),
            (
                "SELECT \"pg_sleep_for\"('1 minute')",
                "calling pg_sleep_for()",
            ),
            (
                "SELECT U&\"pg_sleep\\005ffor\"('1 minute')",
                "calling pg_sleep_for()",
            ),
            (
                "SELECT ('1 minute'::interval).pg_sleep_for",
                "calling pg_sleep_for()",
            ),
            (
                "SELECT pg_sleep_until(now() + '1 minute')",
                "calling pg_sleep_until()",
            ),
            (
                "SELECT pg_advisory_lock(1)",
                "calling pg_advisory_lock() is not allowed for plugins: advisory locks",
            ),
            ("SELECT PG_ADVISORY_LOCK(1)", "calling pg_advisory_lock()"),
            (
                "SELECT \"pg_advisory_lock\"(1)",
                "calling pg_advisory_lock()",
            ),
            (
                "SELECT pg_catalog . pg_advisory_lock (1)",
                "calling pg_advisory_lock()",
            ),
            (
                "SELECT U&\"pg_advisory\\005flock\"(1)",
                "calling pg_advisory_lock()",
            ),
            (
                "SELECT (1::int8).pg_advisory_lock",
                "calling pg_advisory_lock()",
            ),
            (
                "SELECT * FROM pg_advisory_lock(1)",
                "calling pg_advisory_lock()",
            ),
            (
                "SELECT pg_try_advisory_xact_lock(1)",
                "calling pg_try_advisory_xact_lock()",
            ),
            (
                "SELECT PG_TRY_ADVISORY_XACT_LOCK(1)",
                "calling pg_try_advisory_xact_lock()",
            ),
            (
                "SELECT \"pg_try_advisory_xact_lock\"(1)",
                "calling pg_try_advisory_xact_lock()",
            ),
            (
                "SELECT \"pg_catalog\".pg_try_advisory_xact_lock(1)",
                "calling pg_try_advisory_xact_lock()",
            ),
            (
                "SELECT U&\"pg_try_advisory_xact_loc!+00006B\" UESCAPE '!'(1)",
                "calling pg_try_advisory_xact_lock()",
            ),
            (
                "SELECT (1::int8).pg_try_advisory_xact_lock",
                "calling pg_try_advisory_xact_lock()",
            ),
            // Functions that run SQL given as a string.
            (
                "SELECT * FROM ts_stat('SELECT set_config(''role'', ''x'', false)')",
                "calling ts_stat() is not allowed for plugins: it runs SQL from a string",
            ),
            ("SELECT pg_catalog.TS_STAT('SELECT 1')", "calling ts_stat()"),
            ("SELECT ('SELECT 1'::text).ts_stat", "calling ts_stat()"),
            (
                "SELECT ts_rewrite('a & b'::tsquery, 'SELECT t, s FROM aliases')",
                "calling ts_rewrite()",
            ),
            (
                "SELECT \"ts_rewrite\"('a'::tsquery, 'SELECT 1')",
                "calling ts_rewrite()",
            ),
            (
                "SELECT query_to_xml('SELECT pg_sleep(1)', true, true, '')",
                "calling query_to_xml()",
            ),
            (
                "SELECT query_to_xmlschema('SELECT 1', true, true, '')",
                "calling query_to_xmlschema()",
            ),
            (
                "SELECT query_to_xml_and_xmlschema('SELECT 1', true, true, '')",
                "calling query_to_xml_and_xmlschema()",
            ),
            ("SELECT * FROM crosstab('SELECT 1')", "calling crosstab()"),
            // Temporary and unlogged tables by other spellings.
            ("SELECT 1 AS a INTO TEMP t", "SELECT INTO TEMP"),
            (
                "SELECT * INTO TEMPORARY TABLE x FROM mine",
                "SELECT INTO TEMP",
            ),
            ("SELECT 1 INTO LOCAL TEMP t", "SELECT INTO TEMP"),
            ("SELECT 1 INTO UNLOGGED t", "SELECT INTO UNLOGGED"),
            ("CREATE TABLE pg_temp.t (a int)", "objects in pg_temp"),
            ("CREATE TABLE \"pg_temp\".t (a int)", "objects in pg_temp"),
            ("CREATE VIEW pg_temp.v AS SELECT 1", "objects in pg_temp"),
            ("SELECT 1 INTO pg_temp.t", "objects in pg_temp"),
            ("CREATE SEQUENCE pg_temp_3.s", "objects in pg_temp_3"),
            ("ALTER TABLE mine SET UNLOGGED", "SET UNLOGGED"),
            ("CREATE UNLOGGED TABLE t (a int)", "CREATE UNLOGGED"),
            (
                "create /* x */ Temporary table t (a int)",
                "CREATE TEMPORARY",
            ),
        ];
        for (sql, words) in cases {
            let err = check(sql).expect_err(sql);
            assert!(err.0.contains(words), "{sql}: {err}");
        }
    }

    #[test]
    fn what_cannot_be_read_is_denied() {
        for (sql, words) in [
            ("SELECT U&\"\\00\"(1)", "cannot be read"),
            (
                "SELECT U&\"!0073et_config\" UESCAPE '+'('a', 'b', false)",
                "cannot be read",
            ),
            ("SELECT U&\"\\D800\"", "cannot be read"),
            ("SELECT \"\"", "cannot be read"),
            ("SELECT 'open", "unterminated string"),
            ("SELECT E'open\\'", "unterminated string"),
            ("SELECT 'a'\n'", "unterminated string"),
            ("SELECT B'1", "unterminated bit string"),
            ("SELECT \"open", "unterminated quoted identifier"),
            ("SELECT $x$ open", "unterminated dollar-quoted string"),
            ("SELECT 1 /* open /* */", "unterminated comment"),
            ("SELECT 1\0; SET x = 1", "NUL"),
        ] {
            let err = check(sql).expect_err(sql);
            assert!(err.0.contains(words), "{sql}: {err}");
        }
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
        assert!(check("SELECT 1 -- \r; RESET ROLE").is_err());
        assert!(check("SELECT 1 /* ; */ ; SELECT 2").is_err());
        assert_eq!(check("SELECT 1;  "), Ok(()));
        assert_eq!(check("SELECT 1; -- done"), Ok(()));
        assert!(check("").is_err());
        assert!(check(" ; -- nothing").is_err());
        assert!(
            check("SELECT 'unterminated")
                .expect_err("open string")
                .0
                .contains("unterminated")
        );
        assert!(check("SELECT 1 /* open").is_err());
    }

    #[test]
    fn leading_keyword_is_the_first_word_as_the_server_folds_it() {
        assert_eq!(
            leading_keyword("  /* c */ COPY t FROM STDIN").as_deref(),
            Some("copy")
        );
        assert_eq!(
            leading_keyword("((COPY t TO STDOUT))").as_deref(),
            Some("copy")
        );
        assert_eq!(
            leading_keyword("-- c\rCoPy t FROM STDIN").as_deref(),
            Some("copy")
        );
        assert_eq!(leading_keyword("select 1").as_deref(), Some("select"));
        assert_eq!(
            leading_keyword("WITH x AS (SELECT 1) SELECT 1").as_deref(),
            Some("with")
        );
        assert_eq!(leading_keyword(""), None);
        assert_eq!(leading_keyword("  -- only a comment"), None);
        assert_eq!(leading_keyword("\"copy\" t"), None);
        assert_eq!(leading_keyword("'copy'"), None);
        assert_eq!(leading_keyword("COPY t FROM 'open"), None);
        // U+00A0 is not whitespace: this is one word, not COPY.
        assert_eq!(
            leading_keyword("copy\u{a0}t").as_deref(),
            Some("copy\u{a0}t")
        );
    }

    #[test]
    fn plain_reads_are_told_from_everything_else() {
        let plain = |sql: &str| inspect(sql).expect(sql).plain_read;
        for sql in [
            "SELECT payload FROM t WHERE id = $1",
            "  (SELECT 1)",
            "select r.a, g.b from r join g on g.id = r.g where r.id = $1",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "VALUES (1), (2)",
            "TABLE t",
            "SELECT \"update\" FROM t",
        ] {
            assert!(plain(sql), "{sql}");
        }
        for sql in [
            "UPDATE t SET x = 1 WHERE id = $1",
            "INSERT INTO t VALUES (1)",
            "DELETE FROM t",
            "SELECT * FROM t FOR UPDATE",
            "SELECT * FROM t WHERE id = 1 FOR NO KEY UPDATE",
            "select * from t for share",
            "SELECT 1 INTO copy_of_one",
            "WITH gone AS (DELETE FROM t RETURNING *) SELECT * FROM gone",
            "SELECT nextval('s')",
            "SELECT pg_catalog . setval('s', 1)",
            "EXPLAIN ANALYZE UPDATE t SET x = 1",
            "CREATE TABLE notes (id int primary key)",
            "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
        ] {
            assert!(!plain(sql), "{sql}");
        }
    }
}

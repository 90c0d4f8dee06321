//! The gate's lexer: PostgreSQL's `src/backend/parser/scan.l` (14–17) rule by
//! rule, plus the `UESCAPE` look-ahead `base_yylex` does in `parser.c`, so that
//! the gate cuts a statement into the same tokens, and resolves names to the
//! same strings, as the server it guards.
//!
//! It assumes what the host fixes for every plugin session: UTF-8 text
//! (`client_encoding`) and `standard_conforming_strings = on`. It works on
//! bytes, as flex does: every byte from 0x80 up is a letter to PostgreSQL.
//!
//! The rules mirrored, by their `scan.l` names:
//! - `space` `[ \t\n\r\f\v]` is the only whitespace (U+00A0 and other Unicode
//!   spaces are letters; a server older than 16 that rejects `\v` instead
//!   runs nothing the gate did not see); `comment` `--` runs to `\n` or
//!   `\r`; `xc` block comments nest (`xcstart` inside `xc` opens another
//!   level).
//! - `identifier`: `ident_start` `[A-Za-z\200-\377_]`, `ident_cont` adds
//!   `[0-9$]`; folded by `downcase_truncate_identifier` (ASCII A–Z only) and
//!   cut to `NAMEDATALEN - 1` bytes at a character boundary.
//! - `xd` quoted identifiers (`""` is a quote, never folded, also truncated;
//!   empty is an error); `xui` `U&"…"` decoded by `str_udeescape` (`\XXXX`,
//!   `\+XXXXXX`, doubled escape, UTF-16 surrogate pairs) with the escape
//!   character an optional following `UESCAPE 'c'` sets (`check_uescapechar`).
//! - `xq` `'…'` (`xqdouble`, no backslash escapes), `xe` `E'…'` (`xeescape`,
//!   `xeoctesc`, `xehexesc`, `xeunicode`, and `''`), `xus` `U&'…'`, `xn`
//!   `N'…'`, `xb` `B'…'` and `xh` `X'…'` (no `''` inside those two), all with
//!   the `xqs` look-ahead: a quote, whitespace holding a newline, and a quote
//!   continue the same literal in the same state.
//! - `dolqdelim` `$tag$…$tag$` (tag: `dolq_start dolq_cont*`, no `$`), only at a
//!   token start; `dolqfailed` leaves a lone `$`; `param` `$digits`.
//! - numbers: `decinteger`, `numeric` (with `numericfail`: `1..` is `1` then
//!   `..`), `real` with its exponent; the number ends there and the next byte
//!   starts a new token (`1set_config` is `1` then `set_config`).
//! - `self` and `operator`: an operator run stops before `--` or `/*`.
//! - unterminated comments, literals and identifiers are errors, as on the
//!   server.

/// `NAMEDATALEN - 1`: the server keeps at most this many bytes of a name.
const MAX_NAME_BYTES: usize = 63;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Token {
    /// A keyword or unquoted identifier, folded and truncated as the server
    /// does.
    Word(String),
    /// A quoted or `U&` identifier, decoded and truncated as the server does.
    Quoted(String),
    /// A string constant. `value` is kept where it can matter (the character
    /// after `UESCAPE`) and is known exactly: plain, `E` and dollar strings.
    Str {
        kind: StrKind,
        value: Option<String>,
    },
    /// A numeric constant.
    Number,
    /// `$1`, `$2`, …
    Param,
    /// `;`
    Semicolon,
    /// `(`
    Open,
    /// `)`
    Close,
    /// `.`
    Dot,
    /// `,`
    Comma,
    /// Any other operator or punctuation, as written.
    Op(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StrKind {
    /// `'…'`
    Standard,
    /// `E'…'`
    Escape,
    /// `$tag$…$tag$`
    Dollar,
    /// `N'…'`: the server returns the keyword NCHAR, then the string.
    National,
    /// `U&'…'`
    Unicode,
    /// `B'…'`
    Bit,
    /// `X'…'`
    Hex,
}

/// Why a statement could not be lexed; either way the server would refuse it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum LexError {
    /// A comment, literal or quoted identifier runs to the end of the text.
    Unterminated(&'static str),
    /// Something the server rejects while reading (an invalid Unicode escape,
    /// an empty quoted identifier, a bad `UESCAPE`).
    Unreadable(String),
}

/// What the first pass yields: tokens, and `U&` literals whose meaning depends
/// on the tokens after them.
enum Lexeme {
    Token(Token),
    /// The raw text of a `U&"…"` identifier (`""` already undoubled).
    UnicodeIdent(Vec<u8>),
    /// A `U&'…'` string.
    UnicodeStr,
}

/// Cuts `sql` into the server's tokens; comments and whitespace are dropped.
pub(super) fn tokenize(sql: &str) -> Result<Vec<Token>, LexError> {
    resolve_unicode(scan(sql)?)
}

/// How a quoted string's body is read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `xq`/`xus`: `''` is a quote, a backslash is just a backslash.
    Standard,
    /// `xe`: a backslash escapes the next byte, `''` is a quote.
    Escape,
    /// `xb`/`xh`: nothing is escaped; `''` ends one literal and starts another.
    Bits,
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_ident_cont(c: u8) -> bool {
    is_ident_start(c) || c.is_ascii_digit() || c == b'$'
}

fn is_dolq_cont(c: u8) -> bool {
    is_ident_start(c) || c.is_ascii_digit()
}

fn is_op_char(c: u8) -> bool {
    matches!(
        c,
        b'~' | b'!'
            | b'@'
            | b'#'
            | b'^'
            | b'&'
            | b'|'
            | b'`'
            | b'?'
            | b'+'
            | b'-'
            | b'*'
            | b'/'
            | b'%'
            | b'<'
            | b'>'
            | b'='
    )
}

/// The text between two byte offsets. Tokens begin and end at ASCII bytes or
/// at the end of a run of bytes >= 0x80, so this is always a character
/// boundary; a miss would be a lexer bug, reported rather than panicking.
fn text(sql: &str, from: usize, to: usize) -> Result<&str, LexError> {
    sql.get(from..to)
        .ok_or_else(|| LexError::Unreadable("the lexer lost a character boundary".into()))
}

fn utf8(bytes: Vec<u8>) -> Result<String, LexError> {
    String::from_utf8(bytes)
        .map_err(|_| LexError::Unreadable("a name is not valid UTF-8 once decoded".into()))
}

/// `truncate_identifier`: at most 63 bytes, never half a character.
fn truncate(mut name: String) -> String {
    if name.len() > MAX_NAME_BYTES {
        let mut end = MAX_NAME_BYTES;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
    name
}

fn scan(sql: &str) -> Result<Vec<Lexeme>, LexError> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let token = |t: Token| Lexeme::Token(t);
    while let Some(&c) = b.get(i) {
        let next = b.get(i + 1).copied();
        match c {
            c if is_space(c) => i += 1,
            b'-' if next == Some(b'-') => i = skip_line_comment(b, i),
            b'/' if next == Some(b'*') => i = skip_block_comment(b, i)?,
            b'\'' => {
                let (end, value) = quoted_string(b, i + 1, Mode::Standard)?;
                out.push(token(Token::Str {
                    kind: StrKind::Standard,
                    value,
                }));
                i = end;
            }
            b'"' => {
                let (end, raw) = quoted_ident(b, i + 1)?;
                out.push(token(Token::Quoted(truncate(utf8(raw)?))));
                i = end;
            }
            b'$' => match next {
                Some(d) if d.is_ascii_digit() => {
                    i = skip_digits(b, i + 1);
                    out.push(token(Token::Param));
                }
                _ => match dollar_delimiter(b, i) {
                    Some(close) => {
                        let delimiter = &b[i..=close];
                        let body = close + 1;
                        let Some(len) = find(&b[body..], delimiter) else {
                            return Err(LexError::Unterminated("dollar-quoted string"));
                        };
                        out.push(token(Token::Str {
                            kind: StrKind::Dollar,
                            value: Some(text(sql, body, body + len)?.to_owned()),
                        }));
                        i = body + len + delimiter.len();
                    }
                    None => {
                        out.push(token(Token::Op("$".into())));
                        i += 1;
                    }
                },
            },
            b'0'..=b'9' => {
                i = number(b, i);
                out.push(token(Token::Number));
            }
            b'.' if next.is_some_and(|n| n.is_ascii_digit()) => {
                i = number(b, i);
                out.push(token(Token::Number));
            }
            b'.' if next == Some(b'.') => {
                out.push(token(Token::Op("..".into())));
                i += 2;
            }
            b'.' => {
                out.push(token(Token::Dot));
                i += 1;
            }
            b';' | b'(' | b')' | b',' => {
                out.push(token(match c {
                    b';' => Token::Semicolon,
                    b'(' => Token::Open,
                    b')' => Token::Close,
                    _ => Token::Comma,
                }));
                i += 1;
            }
            b':' if matches!(next, Some(b':' | b'=')) => {
                out.push(token(Token::Op(text(sql, i, i + 2)?.to_owned())));
                i += 2;
            }
            c if is_op_char(c) => {
                let mut j = i + 1;
                while let Some(&o) = b.get(j) {
                    let comment_starts =
                        matches!((o, b.get(j + 1)), (b'-', Some(b'-')) | (b'/', Some(b'*')));
                    if !is_op_char(o) || comment_starts {
                        break;
                    }
                    j += 1;
                }
                out.push(token(Token::Op(text(sql, i, j)?.to_owned())));
                i = j;
            }
            c if is_ident_start(c) => i = word_or_prefixed(sql, i, &mut out)?,
            _ => {
                // `self` characters not handled above and `other`: one byte,
                // always ASCII here (every byte >= 0x80 starts an identifier).
                out.push(token(Token::Op(char::from(c).to_string())));
                i += 1;
            }
        }
    }
    Ok(out)
}

/// At an `ident_start` byte: a prefixed literal (`B'`, `X'`, `E'`, `N'`, `U&'`,
/// `U&"`), which flex prefers as the longer match, or an identifier.
fn word_or_prefixed(sql: &str, i: usize, out: &mut Vec<Lexeme>) -> Result<usize, LexError> {
    let b = sql.as_bytes();
    let c = b.get(i).map_or(0, u8::to_ascii_lowercase);
    let next = b.get(i + 1).copied();
    let string = |kind, mode, start| -> Result<(usize, Lexeme), LexError> {
        let (end, value) = quoted_string(b, start, mode)?;
        let value = if matches!(kind, StrKind::Standard | StrKind::Escape) {
            value
        } else {
            None
        };
        Ok((end, Lexeme::Token(Token::Str { kind, value })))
    };
    let (end, lexeme) = match (c, next, b.get(i + 2).copied()) {
        (b'b', Some(b'\''), _) => string(StrKind::Bit, Mode::Bits, i + 2)?,
        (b'x', Some(b'\''), _) => string(StrKind::Hex, Mode::Bits, i + 2)?,
        (b'e', Some(b'\''), _) => string(StrKind::Escape, Mode::Escape, i + 2)?,
        (b'n', Some(b'\''), _) => string(StrKind::National, Mode::Standard, i + 2)?,
        (b'u', Some(b'&'), Some(b'\'')) => {
            let (end, _) = quoted_string(b, i + 3, Mode::Standard)?;
            (end, Lexeme::UnicodeStr)
        }
        (b'u', Some(b'&'), Some(b'"')) => {
            let (end, raw) = quoted_ident(b, i + 3)?;
            (end, Lexeme::UnicodeIdent(raw))
        }
        _ => {
            let mut j = i + 1;
            while b.get(j).is_some_and(|&c| is_ident_cont(c)) {
                j += 1;
            }
            let mut word = text(sql, i, j)?.to_owned();
            word.make_ascii_lowercase();
            (j, Lexeme::Token(Token::Word(truncate(word))))
        }
    };
    out.push(lexeme);
    Ok(end)
}

/// Past a `--` comment: it ends before `\n` or `\r`, or at the end of the text.
fn skip_line_comment(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(|&c| c != b'\n' && c != b'\r') {
        i += 1;
    }
    i
}

/// Past a `/* */` comment starting at `i`; inner `/*` open nested levels.
fn skip_block_comment(b: &[u8], mut i: usize) -> Result<usize, LexError> {
    let mut depth = 0usize;
    loop {
        match (b.get(i), b.get(i + 1)) {
            (Some(b'/'), Some(b'*')) => {
                depth += 1;
                i += 2;
            }
            (Some(b'*'), Some(b'/')) => {
                depth = depth.saturating_sub(1);
                i += 2;
                if depth == 0 {
                    return Ok(i);
                }
            }
            (Some(_), _) => i += 1,
            (None, _) => return Err(LexError::Unterminated("comment")),
        }
    }
}

fn skip_digits(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

/// Past a number starting at `i` (a digit, or `.` then a digit).
fn number(b: &[u8], i: usize) -> usize {
    let mut j = skip_digits(b, i);
    // `1..2` is `1` then `..` (numericfail), not `1.` then `.2`.
    if b.get(j) == Some(&b'.') && b.get(j + 1) != Some(&b'.') {
        j = skip_digits(b, j + 1);
    }
    if matches!(b.get(j), Some(b'e' | b'E')) {
        let digits_at = match b.get(j + 1) {
            Some(b'+' | b'-') => j + 2,
            _ => j + 1,
        };
        // Without digits the `e` is not part of the number (realfail): it
        // starts the next token, which may be an `E'…'` string.
        if b.get(digits_at).is_some_and(u8::is_ascii_digit) {
            j = skip_digits(b, digits_at);
        }
    }
    j
}

/// The offset of the closing `$` of a `$tag$` opening at `i`, if one does.
fn dollar_delimiter(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if b.get(j).is_some_and(|&c| is_ident_start(c)) {
        j += 1;
        while b.get(j).is_some_and(|&c| is_dolq_cont(c)) {
            j += 1;
        }
    }
    (b.get(j) == Some(&b'$')).then_some(j)
}

/// The offset of the first `needle` in `hay`. Every `$` inside a dollar quote
/// is where the server tries `dolqdelim` again, so the first occurrence of the
/// exact opening delimiter is where it ends.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `xqs`: with `j` just past a closing quote, the offset just past the quote
/// that continues the literal, if whitespace holding a newline (`--` comments
/// allowed, `/* */` not) and a quote follow.
fn continuation(b: &[u8], mut j: usize) -> Option<usize> {
    let mut newline = false;
    loop {
        match b.get(j)? {
            b'\n' | b'\r' => {
                newline = true;
                j += 1;
            }
            &c if is_space(c) => j += 1,
            b'-' if b.get(j + 1) == Some(&b'-') => j = skip_line_comment(b, j),
            b'\'' if newline => return Some(j + 1),
            _ => return None,
        }
    }
}

/// Reads a quoted string whose body starts at `start`; returns the offset past
/// it and its value when that is known exactly.
fn quoted_string(b: &[u8], start: usize, mode: Mode) -> Result<(usize, Option<String>), LexError> {
    let unterminated = LexError::Unterminated(match mode {
        Mode::Bits => "bit string",
        _ => "string",
    });
    let mut value = Vec::new();
    let mut exact = true;
    let mut j = start;
    loop {
        let Some(&c) = b.get(j) else {
            return Err(unterminated);
        };
        match c {
            b'\'' if mode != Mode::Bits && b.get(j + 1) == Some(&b'\'') => {
                value.push(b'\'');
                j += 2;
            }
            b'\'' => match continuation(b, j + 1) {
                Some(k) => j = k,
                None => {
                    let value = exact.then(|| String::from_utf8(value).ok()).flatten();
                    return Ok((j + 1, value));
                }
            },
            b'\\' if mode == Mode::Escape => {
                let Some(&e) = b.get(j + 1) else {
                    return Err(unterminated);
                };
                match e {
                    b'b' => value.push(0x08),
                    b'f' => value.push(0x0c),
                    b'n' => value.push(b'\n'),
                    b'r' => value.push(b'\r'),
                    b't' => value.push(b'\t'),
                    // Octal, hex and Unicode escapes: the digits after them are
                    // never quotes, so the end is found right; the value is not
                    // needed exactly anywhere they could appear legitimately.
                    b'0'..=b'7' | b'x' | b'u' | b'U' => exact = false,
                    other => value.push(other),
                }
                j += 2;
            }
            _ => {
                value.push(c);
                j += 1;
            }
        }
    }
}

/// Reads a quoted identifier whose body starts at `start`; returns the offset
/// past it and its bytes with `""` undoubled.
fn quoted_ident(b: &[u8], start: usize) -> Result<(usize, Vec<u8>), LexError> {
    let mut name = Vec::new();
    let mut j = start;
    loop {
        match b.get(j) {
            None => return Err(LexError::Unterminated("quoted identifier")),
            Some(b'"') if b.get(j + 1) == Some(&b'"') => {
                name.push(b'"');
                j += 2;
            }
            Some(b'"') => {
                if name.is_empty() {
                    return Err(LexError::Unreadable(
                        "a quoted identifier is empty (\"\")".into(),
                    ));
                }
                return Ok((j + 1, name));
            }
            Some(&c) => {
                name.push(c);
                j += 1;
            }
        }
    }
}

/// `base_yylex`: a `U&` literal followed by the keyword UESCAPE takes its
/// escape character from the string constant after that; `U&"…"` is then
/// decoded (and truncated) into the name the server uses.
fn resolve_unicode(lexemes: Vec<Lexeme>) -> Result<Vec<Token>, LexError> {
    let mut out = Vec::with_capacity(lexemes.len());
    let mut it = lexemes.into_iter().peekable();
    while let Some(lexeme) = it.next() {
        let raw = match lexeme {
            Lexeme::Token(t) => {
                out.push(t);
                continue;
            }
            Lexeme::UnicodeIdent(raw) => Some(raw),
            Lexeme::UnicodeStr => None,
        };
        let escape = match it.peek() {
            Some(Lexeme::Token(Token::Word(w))) if w == "uescape" => {
                it.next();
                uescape_char(it.next())?
            }
            _ => b'\\',
        };
        match raw {
            Some(raw) => out.push(Token::Quoted(truncate(decode_unicode(&raw, escape)?))),
            None => out.push(Token::Str {
                kind: StrKind::Unicode,
                value: None,
            }),
        }
    }
    Ok(out)
}

/// The escape character UESCAPE names: a simple string constant of one byte
/// that `check_uescapechar` accepts.
fn uescape_char(lexeme: Option<Lexeme>) -> Result<u8, LexError> {
    let bad =
        || LexError::Unreadable("UESCAPE must be followed by one valid escape character".into());
    let Some(Lexeme::Token(Token::Str {
        kind: StrKind::Standard | StrKind::Escape | StrKind::Dollar,
        value: Some(value),
    })) = lexeme
    else {
        return Err(bad());
    };
    let &[c] = value.as_bytes() else {
        return Err(bad());
    };
    if c.is_ascii_hexdigit() || matches!(c, b'+' | b'\'' | b'"') || is_space(c) {
        return Err(bad());
    }
    Ok(c)
}

fn hex_at(b: &[u8], at: usize, digits: usize) -> Option<u32> {
    let s = b.get(at..at + digits)?;
    if !s.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u32::from_str_radix(std::str::from_utf8(s).ok()?, 16).ok()
}

/// `str_udeescape`: `\XXXX`, `\+XXXXXX` and a doubled escape character, UTF-16
/// surrogate pairs combined; anything else after the escape character, a code
/// point out of range or a lone surrogate is an error, as on the server.
fn decode_unicode(raw: &[u8], escape: u8) -> Result<String, LexError> {
    let invalid =
        || LexError::Unreadable("a U&\"…\" identifier has an invalid Unicode escape".into());
    let mut out = Vec::with_capacity(raw.len());
    let mut pair_first: Option<u32> = None;
    let mut i = 0;
    while let Some(&c) = raw.get(i) {
        if c != escape {
            if pair_first.is_some() {
                return Err(invalid());
            }
            out.push(c);
            i += 1;
            continue;
        }
        let code = if raw.get(i + 1) == Some(&escape) {
            if pair_first.is_some() {
                return Err(invalid());
            }
            out.push(escape);
            i += 2;
            continue;
        } else if let Some(code) = hex_at(raw, i + 1, 4) {
            i += 5;
            code
        } else if raw.get(i + 1) == Some(&b'+')
            && let Some(code) = hex_at(raw, i + 2, 6)
        {
            i += 8;
            code
        } else {
            return Err(invalid());
        };
        if code == 0 || code > 0x10FFFF {
            return Err(invalid());
        }
        let is_first = (0xD800..=0xDBFF).contains(&code);
        let is_second = (0xDC00..=0xDFFF).contains(&code);
        let code = match pair_first.take() {
            Some(first) if is_second => 0x10000 + ((first - 0xD800) << 10) + (code - 0xDC00),
            Some(_) => return Err(invalid()),
            None if is_second => return Err(invalid()),
            None if is_first => {
                pair_first = Some(code);
                continue;
            }
            None => code,
        };
        let ch = char::from_u32(code).ok_or_else(invalid)?;
        let mut buf = [0u8; 4];
        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
    }
    if pair_first.is_some() {
        return Err(invalid());
    }
    utf8(out)
}

#[cfg(test)]
mod tests {
    use super::{LexError, StrKind, Token, tokenize};

    fn word(w: &str) -> Token {
        Token::Word(w.into())
    }

    fn quoted(q: &str) -> Token {
        Token::Quoted(q.into())
    }

    fn string(kind: StrKind) -> Token {
        Token::Str { kind, value: None }
    }

    fn sconst(kind: StrKind, v: &str) -> Token {
        Token::Str {
            kind,
            value: Some(v.into()),
        }
    }

    fn lex(sql: &str) -> Vec<Token> {
        tokenize(sql).unwrap_or_else(|e| panic!("{sql:?}: {e:?}"))
    }

    #[test]
    fn whitespace_is_only_the_six_ascii_spaces() {
        assert_eq!(lex(" \t\n\r\x0b\x0cselect"), vec![word("select")]);
        // U+00A0 is a letter to the server: one identifier, not two words.
        assert_eq!(
            lex("select\u{a0}set_config"),
            vec![word("select\u{a0}set_config")]
        );
        assert_eq!(lex("\u{2003}set"), vec![word("\u{2003}set")]);
    }

    #[test]
    fn comments_end_where_the_server_ends_them() {
        assert_eq!(lex("-- x\rset"), vec![word("set")]);
        assert_eq!(lex("-- x\nset"), vec![word("set")]);
        assert_eq!(lex("-- x set"), vec![]);
        assert_eq!(lex("/* a /* b */ c */set"), vec![word("set")]);
        assert_eq!(lex("/*/ x */set"), vec![word("set")]);
        assert_eq!(lex("/**/set"), vec![word("set")]);
        assert_eq!(
            tokenize("/* a /* b */ c"),
            Err(LexError::Unterminated("comment"))
        );
        // An operator run stops where a comment starts.
        assert_eq!(lex("1 +-- x\n2").len(), 3);
        assert_eq!(
            lex("a */* x */ b"),
            vec![word("a"), Token::Op("*".into()), word("b")]
        );
        assert_eq!(
            lex("a <@/* x */ b"),
            vec![word("a"), Token::Op("<@".into()), word("b")]
        );
    }

    #[test]
    fn identifiers_fold_ascii_only_and_truncate_at_63_bytes() {
        assert_eq!(lex("SeT_CoNfIg"), vec![word("set_config")]);
        assert_eq!(lex("ÉTÉ"), vec![word("ÉtÉ")]);
        assert_eq!(lex("abc$def$ x"), vec![word("abc$def$"), word("x")]);
        let long = "a".repeat(70);
        assert_eq!(lex(&long), vec![word(&"a".repeat(63))]);
        // 62 ASCII bytes then a two-byte letter: the letter would straddle
        // byte 63, so it goes whole.
        let straddle = format!("{}é", "a".repeat(62));
        assert_eq!(lex(&straddle), vec![word(&"a".repeat(62))]);
        assert_eq!(
            lex(&format!("\"{}\"", "B".repeat(64))),
            vec![quoted(&"B".repeat(63))]
        );
    }

    #[test]
    fn quoted_and_unicode_identifiers_resolve_to_their_names() {
        assert_eq!(lex("\"Set\"\"x\""), vec![quoted("Set\"x")]);
        assert_eq!(lex("U&\"\\0073et\""), vec![quoted("set")]);
        assert_eq!(lex("u&\"\\+000073et\""), vec![quoted("set")]);
        assert_eq!(lex("U&\"a\\\\b\""), vec![quoted("a\\b")]);
        assert_eq!(lex("U&\"!0073et\" UESCAPE '!'"), vec![quoted("set")]);
        assert_eq!(
            lex("U&\"!0073et\" /* c */ uescape -- d\n'!'"),
            vec![quoted("set")]
        );
        assert_eq!(lex("U&\"!0073et\" UESCAPE $$!$$"), vec![quoted("set")]);
        assert_eq!(lex("U&\"!!\" UESCAPE E'!'"), vec![quoted("!")]);
        assert_eq!(lex("U&\"\\D83D\\DE00\""), vec![quoted("😀")]);
        assert_eq!(lex("U&\"caf\\00e9\""), vec![quoted("café")]);
        // `U&` not before a quote is the identifier `u` and an operator.
        assert_eq!(
            lex("U& \"x\""),
            vec![word("u"), Token::Op("&".into()), quoted("x")]
        );
        for bad in [
            "U&\"\\00\"",
            "U&\"\\0000\"",
            "U&\"\\D800\"",
            "U&\"\\DC00\"",
            "U&\"\\D800x\"",
            "U&\"\\+110000\"",
            "U&\"\\x\"",
            "U&\"!0073\" UESCAPE '+'",
            "U&\"!0073\" UESCAPE 'a'",
            "U&\"!0073\" UESCAPE ' '",
            "U&\"!0073\" UESCAPE '!!'",
            "U&\"!0073\" UESCAPE N'!'",
            "U&\"!0073\" UESCAPE",
            "U&\"!0073\" UESCAPE x",
            "\"\"",
            "U&\"\"",
        ] {
            assert!(
                matches!(tokenize(bad), Err(LexError::Unreadable(_))),
                "{bad}: {:?}",
                tokenize(bad)
            );
        }
        assert_eq!(
            tokenize("\"open"),
            Err(LexError::Unterminated("quoted identifier"))
        );
    }

    #[test]
    fn strings_end_where_the_server_ends_them() {
        assert_eq!(lex("'a\\'"), vec![sconst(StrKind::Standard, "a\\")]);
        assert_eq!(lex("'it''s'"), vec![sconst(StrKind::Standard, "it's")]);
        assert_eq!(lex("E'it\\'s'"), vec![sconst(StrKind::Escape, "it's")]);
        assert_eq!(lex("e'it''s'"), vec![sconst(StrKind::Escape, "it's")]);
        assert_eq!(lex("'a'\n'b'"), vec![sconst(StrKind::Standard, "ab")]);
        assert_eq!(
            lex("'a' -- c\n  'b'"),
            vec![sconst(StrKind::Standard, "ab")]
        );
        // No newline, or a block comment: two literals.
        assert_eq!(lex("'a' 'b'").len(), 2);
        assert_eq!(lex("'a' /* */\n'b'").len(), 2);
        // A continued E string stays an E string: `\'` is still a quote.
        assert_eq!(
            lex("E'x'\n' \\' , ' , f"),
            vec![sconst(StrKind::Escape, "x ' , "), Token::Comma, word("f")]
        );
        // B'' and X'' have no doubled quote: `''` ends one, starts another.
        assert_eq!(
            lex("B'1''x'"),
            vec![string(StrKind::Bit), sconst(StrKind::Standard, "x")]
        );
        assert_eq!(lex("X'ff'"), vec![string(StrKind::Hex)]);
        assert_eq!(lex("N'x'"), vec![string(StrKind::National)]);
        assert_eq!(lex("U&'d\\0061ta'"), vec![string(StrKind::Unicode)]);
        assert_eq!(
            lex("U&'d!0061ta' UESCAPE '!'"),
            vec![string(StrKind::Unicode)]
        );
        // A prefix letter inside a word is part of the word.
        assert_eq!(
            lex("abe'x'"),
            vec![word("abe"), sconst(StrKind::Standard, "x")]
        );
        assert_eq!(tokenize("E'a\\"), Err(LexError::Unterminated("string")));
        assert_eq!(tokenize("'a'\n'"), Err(LexError::Unterminated("string")));
        assert_eq!(tokenize("B'1"), Err(LexError::Unterminated("bit string")));
    }

    #[test]
    fn dollar_quotes_parameters_and_lone_dollars() {
        assert_eq!(lex("$$a$b$$"), vec![sconst(StrKind::Dollar, "a$b")]);
        assert_eq!(
            lex("$a$ $b$ $a$x"),
            vec![sconst(StrKind::Dollar, " $b$ "), word("x")]
        );
        assert_eq!(lex("$_1é$x$_1é$"), vec![sconst(StrKind::Dollar, "x")]);
        assert_eq!(lex("$1"), vec![Token::Param]);
        assert_eq!(lex("$12set"), vec![Token::Param, word("set")]);
        assert_eq!(lex("$a"), vec![Token::Op("$".into()), word("a")]);
        // After a number a new token starts, so a dollar quote can.
        assert_eq!(
            lex("1$a$x$a$"),
            vec![Token::Number, sconst(StrKind::Dollar, "x")]
        );
        assert_eq!(
            tokenize("$a$ x $b$"),
            Err(LexError::Unterminated("dollar-quoted string"))
        );
    }

    #[test]
    fn numbers_stop_where_postgresql_15_stops_them() {
        assert_eq!(lex("1set_config"), vec![Token::Number, word("set_config")]);
        assert_eq!(lex("1.5e10"), vec![Token::Number]);
        assert_eq!(lex(".5E-3"), vec![Token::Number]);
        assert_eq!(lex("1e5x"), vec![Token::Number, word("x")]);
        assert_eq!(lex("1ex"), vec![Token::Number, word("ex")]);
        assert_eq!(
            lex("1e'x'"),
            vec![Token::Number, sconst(StrKind::Escape, "x")]
        );
        assert_eq!(
            lex("1..2"),
            vec![Token::Number, Token::Op("..".into()), Token::Number]
        );
        assert_eq!(lex("1."), vec![Token::Number]);
        assert_eq!(lex("0x1F"), vec![Token::Number, word("x1f")]);
        assert_eq!(lex("a.b"), vec![word("a"), Token::Dot, word("b")]);
    }
}

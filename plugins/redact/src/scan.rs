//! Hand-written scanners for e-mail addresses, payment card numbers and phone
//! numbers, and the redaction that replaces them with masks.
//!
//! Scanners run in a fixed order and a later one never claims text an earlier
//! one matched: e-mail addresses first (they may contain digits), then card
//! numbers (so a grouped card number is never mistaken for a phone number),
//! then phone numbers.
//!
//! **Cards**: 13–19 digits starting with 2–6 (the issuer ranges of the major
//! networks), either unseparated or in groups of 3–6 digits joined by single
//! spaces or single hyphens (one kind per number), passing the Luhn check.
//!
//! **Phones**: an optional `+` and country code, an optional parenthesised area
//! code, then groups of digits joined by single spaces, dots or hyphens, 7–15
//! digits in all. To keep dates, times, prices, versions, IP addresses, years and
//! identifiers out, a number is rejected when
//!
//! * it continues into a letter, or into a digit through `. , : / -` (times
//!   "10:30", "15/03/2024", prices "1,299.00"), or follows a currency sign or `#`;
//! * a group other than the first (or the one right after the country code) has
//!   a single digit ("1.2.3"); a single-digit first group needs two more groups
//!   and 10+ digits in all ("1 800 555 0199" but not "1 299 000" or "3.14159…");
//! * a group of a separated number has more than eight digits ("12.345678901");
//! * three consecutive groups are shaped like a date (4-2-2 or 2-2-4 digits);
//! * it is a dotted quad (an IP address), or only 4-digit years (1900–2099);
//! * it is one unseparated run of fewer than 10 digits without `+` (order
//!   numbers, "1234567"), or two groups of fewer than 10 digits other than
//!   3-4 or 4-4 ("555-0198", not the ZIP+4 "94103-1234").
//!
//! A run of digit groups longer than any phone number is never cut into one.

/// What kind of personal data a match is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PiiKind {
    Email,
    Phone,
    Card,
}

impl PiiKind {
    /// `email`, `phone` or `card`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Phone => "phone",
            Self::Card => "card",
        }
    }

    /// The text that replaces a match: `[EMAIL]`, `[PHONE]` or `[CARD]`.
    pub fn mask(&self) -> &'static str {
        match self {
            Self::Email => "[EMAIL]",
            Self::Phone => "[PHONE]",
            Self::Card => "[CARD]",
        }
    }
}

/// Personal data found at the byte range `[start, end)` of the scanned text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    pub kind: PiiKind,
    pub start: usize,
    pub end: usize,
}

/// A mask written into the redacted text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mask {
    pub kind: PiiKind,
    /// Byte range of the mask in the OUTPUT text.
    pub start: usize,
    pub end: usize,
    /// Length in bytes of the text the mask replaced.
    pub original_len: usize,
}

/// Text with every match replaced by its mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redacted {
    pub text: String,
    pub masks: Vec<Mask>,
}

/// All e-mail addresses, card numbers and phone numbers in `text`, sorted by
/// position and non-overlapping.
pub fn find(text: &str) -> Vec<Match> {
    let mut found = emails(text);
    let cards = numbers(text, &found, PiiKind::Card, card_at);
    found.extend(cards);
    found.sort_by_key(|m| m.start);
    let phones = numbers(text, &found, PiiKind::Phone, phone_at);
    found.extend(phones);
    found.sort_by_key(|m| m.start);
    found
}

/// `text` with every match of [`find`] replaced by its kind's mask.
pub fn redact(text: &str) -> Redacted {
    let mut out = String::with_capacity(text.len());
    let mut masks = Vec::new();
    let mut copied = 0;
    for m in find(text) {
        out.push_str(&text[copied..m.start]);
        let start = out.len();
        out.push_str(m.kind.mask());
        masks.push(Mask {
            kind: m.kind,
            start,
            end: out.len(),
            original_len: m.end - m.start,
        });
        copied = m.end;
    }
    out.push_str(&text[copied..]);
    Redacted { text: out, masks }
}

// ---------------------------------------------------------------------------
// E-mail

fn is_local_char(c: char) -> bool {
    // Unicode letters are allowed (RFC 6531) so a name like "josé" is masked
    // whole instead of leaking its first part.
    c.is_alphanumeric() || matches!(c, '.' | '_' | '%' | '+' | '-')
}

fn is_domain_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '.' | '-')
}

/// Longest local part and domain (RFC 5321); bounding the scans also keeps a
/// text full of `@` from taking quadratic time.
const MAX_LOCAL: usize = 64;
const MAX_DOMAIN: usize = 255;

fn emails(text: &str) -> Vec<Match> {
    let mut out = Vec::new();
    // Nothing before `floor` may become part of another address.
    let mut floor = 0;
    for (at, _) in text.match_indices('@') {
        if at < floor {
            continue;
        }
        let mut local_chars = text[floor..at]
            .char_indices()
            .rev()
            .take_while(|&(_, c)| is_local_char(c));
        let Some(start) = local_chars
            .by_ref()
            .take(MAX_LOCAL)
            .last()
            .map(|(i, _)| floor + i)
        else {
            continue;
        };
        if local_chars.next().is_some() {
            continue;
        }
        // Dots cannot start or end the local part; a leading one is punctuation.
        let start = start + text[start..at].len() - text[start..at].trim_start_matches('.').len();
        let local = &text[start..at];
        if local.is_empty() || local.ends_with('.') || local.contains("..") {
            continue;
        }
        let rest = &text[at + 1..];
        let mut domain_chars = rest.char_indices().take_while(|&(_, c)| is_domain_char(c));
        let domain_len = domain_chars
            .by_ref()
            .take(MAX_DOMAIN)
            .last()
            .map_or(0, |(i, c)| i + c.len_utf8());
        if domain_chars.next().is_some() {
            continue;
        }
        // Trailing dots and hyphens are sentence punctuation, not the domain.
        let domain = rest[..domain_len].trim_end_matches(['.', '-']);
        if !valid_domain(domain) {
            continue;
        }
        let end = at + 1 + domain.len();
        out.push(Match {
            kind: PiiKind::Email,
            start,
            end,
        });
        floor = end;
    }
    out
}

fn valid_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    let Some(tld) = labels.last() else {
        return false;
    };
    labels.len() >= 2
        && labels
            .iter()
            .all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-'))
        && tld.chars().count() >= 2
        && tld.chars().all(char::is_alphabetic)
}

// ---------------------------------------------------------------------------
// Numbers (cards and phones)

/// A run of digits, possibly inside parentheses.
#[derive(Debug, Clone, Copy)]
struct Group {
    start: usize,
    end: usize,
    /// Where the item ends: after `)` for a parenthesised group.
    item_end: usize,
    paren: bool,
    /// The separator before this group, if any.
    sep: Option<u8>,
}

impl Group {
    fn digits(&self) -> usize {
        self.end - self.start
    }
}

/// What a scanner found at a candidate start: maybe a match, and always where
/// the scanned chain of digit groups ends, so no candidate starts inside it.
struct Scan {
    found: Option<(usize, usize)>,
    chain_end: usize,
}

/// Runs `scan` at every candidate start outside `taken` (sorted, non-overlapping)
/// and collects its matches.
fn numbers(
    text: &str,
    taken: &[Match],
    kind: PiiKind,
    scan: fn(&str, usize) -> Option<Scan>,
) -> Vec<Match> {
    let bytes = text.as_bytes();
    let overlaps = |s: usize, e: usize| {
        let first_ending_after = taken.partition_point(|m| m.end <= s);
        taken.get(first_ending_after).is_some_and(|m| m.start < e)
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !(b.is_ascii_digit() || b == b'+' || b == b'(') || overlaps(i, i + 1) {
            i += 1;
            continue;
        }
        // Scanning stops where taken text starts, so a number next to an
        // address or a card is judged on its own digits.
        let limit = taken
            .get(taken.partition_point(|m| m.end <= i))
            .map_or(text.len(), |m| m.start);
        match scan(&text[..limit], i) {
            Some(Scan { found, chain_end }) => {
                if let Some((s, e)) = found.filter(|&(s, e)| !overlaps(s, e)) {
                    out.push(Match {
                        kind,
                        start: s,
                        end: e,
                    });
                    i = e;
                } else {
                    i = chain_end.max(i + 1);
                }
            }
            None => i += 1,
        }
    }
    out
}

fn is_sep(b: u8) -> bool {
    matches!(b, b' ' | b'.' | b'-')
}

fn is_connector(b: u8) -> bool {
    matches!(b, b'.' | b',' | b':' | b'/' | b'-')
}

/// Whether the number starting at `i` is really the tail of something else: a
/// word, a longer number ("1,299", "15/03"), an amount or a reference ("#123").
fn attached_before(text: &str, i: usize) -> bool {
    let mut before = text[..i].chars().rev();
    match before.next() {
        None => false,
        Some(c) if c.is_alphanumeric() => true,
        Some('$' | '€' | '£' | '¥' | '#' | '+') => true,
        Some(c) if c.is_ascii() && is_connector(c as u8) => {
            before.next().is_some_and(|d| d.is_ascii_digit())
        }
        Some(_) => false,
    }
}

/// Whether the number ending at `end` continues into a word or, through a
/// connector, into more digits ("10:30", "2024-03-15").
fn attached_after(text: &str, end: usize) -> bool {
    let bytes = text.as_bytes();
    match text[end..].chars().next() {
        None => false,
        Some(c) if c.is_alphanumeric() => true,
        Some(c) if c.is_ascii() && is_connector(c as u8) => {
            bytes.get(end + 1).is_some_and(u8::is_ascii_digit)
        }
        Some(_) => false,
    }
}

fn digit_run_end(bytes: &[u8], from: usize) -> usize {
    bytes[from..]
        .iter()
        .position(|b| !b.is_ascii_digit())
        .map_or(bytes.len(), |n| from + n)
}

// ---------------------------------------------------------------------------
// Cards

const CARD_DIGITS: std::ops::RangeInclusive<usize> = 13..=19;
const CARD_GROUP: std::ops::RangeInclusive<usize> = 3..=6;

fn card_at(text: &str, start: usize) -> Option<Scan> {
    let bytes = text.as_bytes();
    if !bytes[start].is_ascii_digit() || attached_before(text, start) {
        return None;
    }
    // Digit groups joined by one kind of separator, chosen by the first one.
    let mut groups = Vec::new();
    let mut sep: Option<u8> = None;
    let mut p = start;
    loop {
        let end = digit_run_end(bytes, p);
        groups.push(Group {
            start: p,
            end,
            item_end: end,
            paren: false,
            sep,
        });
        let next = bytes.get(end).copied();
        let joined = next.is_some_and(|b| {
            matches!(b, b' ' | b'-')
                && sep.is_none_or(|s| s == b)
                && bytes.get(end + 1).is_some_and(u8::is_ascii_digit)
        });
        if !joined {
            break;
        }
        sep = next;
        p = end + 1;
    }
    let chain_end = groups.last().map_or(start, |g| g.end);
    let all_digits = |gs: &[Group]| -> Vec<u8> {
        gs.iter()
            .flat_map(|g| bytes[g.start..g.end].iter().map(|b| b - b'0'))
            .collect()
    };
    // The longest leading groups that form a card: a card number may be
    // followed by an unrelated number ("4111 1111 1111 1111 2 times").
    // At most six groups of 3+ digits fit in 19 digits.
    let found = (1..=groups.len().min(6)).rev().find_map(|k| {
        let gs = &groups[..k];
        let digits = all_digits(gs);
        let shaped = k == 1 || gs.iter().all(|g| CARD_GROUP.contains(&g.digits()));
        let end = gs[k - 1].end;
        let ends_cleanly = k < groups.len() || !attached_after(text, end);
        (CARD_DIGITS.contains(&digits.len())
            && shaped
            && ends_cleanly
            && (2..=6).contains(&digits[0])
            && luhn(&digits))
        .then_some((start, end))
    });
    Some(Scan { found, chain_end })
}

/// The Luhn checksum over decimal digits (0–9 each).
fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

// ---------------------------------------------------------------------------
// Phones

const PHONE_DIGITS: std::ops::RangeInclusive<usize> = 7..=15;
const AREA_DIGITS: std::ops::RangeInclusive<usize> = 1..=4;
const MAX_GROUP: usize = 8;

fn phone_at(text: &str, start: usize) -> Option<Scan> {
    let bytes = text.as_bytes();
    if attached_before(text, start) {
        return None;
    }
    let plus = bytes[start] == b'+';
    let mut p = start + usize::from(plus);
    let mut groups: Vec<Group> = Vec::new();
    let mut sep = None;
    loop {
        let b = bytes.get(p).copied();
        let paren_allowed = groups.len() == usize::from(plus) && !groups.iter().any(|g| g.paren);
        if b == Some(b'(') && paren_allowed {
            let inner_end = digit_run_end(bytes, p + 1);
            if !AREA_DIGITS.contains(&(inner_end - p - 1)) || bytes.get(inner_end) != Some(&b')') {
                break;
            }
            groups.push(Group {
                start: p + 1,
                end: inner_end,
                item_end: inner_end + 1,
                paren: true,
                sep,
            });
            p = inner_end + 1;
            // The area code may be followed directly by the number: "(312)555-0198".
            sep = None;
            match bytes.get(p) {
                Some(d) if d.is_ascii_digit() => continue,
                Some(&s) if is_sep(s) && bytes.get(p + 1).is_some_and(u8::is_ascii_digit) => {
                    sep = Some(s);
                    p += 1;
                    continue;
                }
                _ => break,
            }
        }
        if !b.is_some_and(|b| b.is_ascii_digit()) {
            break;
        }
        let end = digit_run_end(bytes, p);
        groups.push(Group {
            start: p,
            end,
            item_end: end,
            paren: false,
            sep,
        });
        match bytes.get(end) {
            // "+1(415)…": a country code may run straight into the area code.
            Some(b'(') if plus && groups.len() == 1 => {
                sep = None;
                p = end;
            }
            Some(&s)
                if is_sep(s)
                    && bytes
                        .get(end + 1)
                        .is_some_and(|&n| n.is_ascii_digit() || n == b'(') =>
            {
                sep = Some(s);
                p = end + 1;
            }
            _ => break,
        }
    }
    let chain_end = groups.last().map_or(start + 1, |g| g.item_end);
    let total: usize = groups.iter().map(Group::digits).sum();
    if groups.is_empty() || total > *PHONE_DIGITS.end() {
        return Some(Scan {
            found: None,
            chain_end,
        });
    }
    // Trailing groups set off by a space may be a separate number ("call
    // 555 0198 2 times"), so shorter prefixes are tried too, cut only at spaces.
    let found = (1..=groups.len()).rev().find_map(|k| {
        if k < groups.len() && groups[k].sep != Some(b' ') {
            return None;
        }
        let gs = &groups[..k];
        let end = gs[k - 1].item_end;
        (valid_phone(bytes, gs, plus) && !attached_after(text, end)).then_some((start, end))
    });
    Some(Scan { found, chain_end })
}

fn valid_phone(bytes: &[u8], groups: &[Group], plus: bool) -> bool {
    let total: usize = groups.iter().map(Group::digits).sum();
    if !PHONE_DIGITS.contains(&total) {
        return false;
    }
    let plain = !plus && !groups.iter().any(|g| g.paren);
    let sizes: Vec<usize> = groups.iter().map(Group::digits).collect();
    // The group right after a country code may be short (France: +33 1 42 …).
    let short_ok = |i: usize| i == 0 || (plus && i == 1) || groups[i].paren;
    if sizes
        .iter()
        .enumerate()
        .any(|(i, &n)| n == 1 && !short_ok(i))
    {
        return false;
    }
    // No numbering plan groups more than eight digits ("06-12345678"); longer
    // runs after a separator are decimals or identifiers.
    if sizes.len() > 1 && sizes.iter().any(|&n| n > MAX_GROUP) {
        return false;
    }
    if plain {
        // A leading single digit is a trunk prefix ("1 800 555 0199"), which
        // needs a full number after it; otherwise it is a decimal or a count.
        if sizes[0] == 1 && (total < 10 || sizes.len() < 3) {
            return false;
        }
        match sizes.as_slice() {
            [_] if total < 10 => return false,
            [a, b] if total < 10 && !matches!((a, b), (3, 4) | (4, 4)) => return false,
            _ => {}
        }
        let date = sizes
            .windows(3)
            .zip(groups.windows(3))
            .any(|(n, g)| matches!(n, [4, 2, 2] | [2, 2, 4]) && g[1].sep == g[2].sep);
        let dotted_quad = groups.len() == 4
            && groups[1..].iter().all(|g| g.sep == Some(b'.'))
            && sizes.iter().all(|&n| n <= 3);
        let years = groups.len() >= 2
            && groups.iter().all(|g| {
                let digits = &bytes[g.start..g.end];
                g.digits() == 4 && (digits.starts_with(b"19") || digits.starts_with(b"20"))
            });
        if date || dotted_quad || years {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(text: &str) -> Vec<(PiiKind, &str)> {
        find(text)
            .into_iter()
            .map(|m| (m.kind, &text[m.start..m.end]))
            .collect()
    }

    #[track_caller]
    fn only(text: &str, kind: PiiKind, matched: &str) {
        assert_eq!(matches(text), [(kind, matched)], "in {text:?}");
    }

    #[track_caller]
    fn none(text: &str) {
        assert_eq!(matches(text), [], "in {text:?}");
    }

    #[test]
    fn labels_and_masks() {
        assert_eq!(PiiKind::Email.label(), "email");
        assert_eq!(PiiKind::Phone.label(), "phone");
        assert_eq!(PiiKind::Card.label(), "card");
        assert_eq!(PiiKind::Email.mask(), "[EMAIL]");
        assert_eq!(PiiKind::Phone.mask(), "[PHONE]");
        assert_eq!(PiiKind::Card.mask(), "[CARD]");
    }

    #[test]
    fn emails_in_several_forms() {
        use PiiKind::Email;
        only(
            "mail jane.doe+billing@example.co.uk now",
            Email,
            "jane.doe+billing@example.co.uk",
        );
        only(
            "j_smith-99@mail.example.com",
            Email,
            "j_smith-99@mail.example.com",
        );
        only("Write to bob@example.com.", Email, "bob@example.com");
        only("Write to bob@example.com...", Email, "bob@example.com");
        only("<alice@example.org>", Email, "alice@example.org");
        only(
            "(carol@sub-domain.example.io), thanks",
            Email,
            "carol@sub-domain.example.io",
        );
        only("“dave@example.com”", Email, "dave@example.com");
        only("mailto:erin@example.net?", Email, "erin@example.net");
        only(
            "…the address .frank@example.com",
            Email,
            "frank@example.com",
        );
        only("bob@example.com's inbox", Email, "bob@example.com");
    }

    #[test]
    fn emails_with_non_ascii() {
        use PiiKind::Email;
        only(
            "Café: josé.pérez@example.fr 😀",
            Email,
            "josé.pérez@example.fr",
        );
        only("naïve@exämple.com is odd", Email, "naïve@exämple.com");
    }

    #[test]
    fn not_emails() {
        none("user@localhost");
        none("a@b.c");
        none("@example.com");
        none("name@");
        none("meet @ 5pm");
        none("bob.@example.com");
        none("bob@example..com");
        none("bob@-example.com");
        none("bob@example.c0m");
        none("price: 3@4.50");
    }

    #[test]
    fn cards_in_several_forms() {
        use PiiKind::Card;
        only(
            "card 4111 1111 1111 1111 please",
            Card,
            "4111 1111 1111 1111",
        );
        only("5555-5555-5555-4444", Card, "5555-5555-5555-4444");
        only("4111111111111111.", Card, "4111111111111111");
        only("amex 378282246310005", Card, "378282246310005");
        only("amex 3782 822463 10005", Card, "3782 822463 10005");
        only(
            "card: 4111 1111 1111 1111 2 times",
            Card,
            "4111 1111 1111 1111",
        );
        only("(4111-1111-1111-1111)", Card, "4111-1111-1111-1111");
    }

    #[test]
    fn not_cards() {
        // Luhn failures.
        none("4111 1111 1111 1112");
        none("1234567812345670 is not a card either, it starts with 1");
        none("card 1234 5678 9012 3456");
        // Mixed separators make two numbers, neither of them a card.
        assert!(
            !matches("4111 1111-1111 1111")
                .iter()
                .any(|m| m.0 == PiiKind::Card)
        );
        // Too long.
        none("41111111111111111111111");
    }

    #[test]
    fn luhn_check() {
        let digits = |s: &str| s.bytes().map(|b| b - b'0').collect::<Vec<_>>();
        assert!(luhn(&digits("4111111111111111")));
        assert!(luhn(&digits("79927398713")));
        assert!(!luhn(&digits("79927398710")));
        assert!(!luhn(&digits("4111111111111112")));
    }

    #[test]
    fn phones_in_several_forms() {
        use PiiKind::Phone;
        for phone in [
            "+1 415 555 0132",
            "(312) 555-0198",
            "(312)555-0198",
            "312.555.0198",
            "312-555-0198",
            "020 7946 0958",
            "+44 20 7946 0321",
            "+44 (0)20 7946 0321",
            "+1 (415) 555-0132",
            "+1(415)555-0132",
            "+1-415-555-0132",
            "+14155550132",
            "4155550132",
            "555-0198",
            "1 800 555 0199",
            "+33 1 42 68 53 00",
        ] {
            only(&format!("Call {phone} today."), Phone, phone);
            only(phone, Phone, phone);
        }
    }

    #[test]
    fn not_phones() {
        for text in [
            "on 2024-03-15",
            "on 15/03/2024",
            "on 15.03.2024",
            "on 2024-03-15 10:30",
            "at 10:30",
            "from 9:00-17:30",
            "for $1,299.00",
            "for €1 299,00",
            "£1,299.00 and ¥129900",
            "order 123456",
            "order 1234567",
            "order #12345678",
            "in 2024",
            "between 2023 2024",
            "version 1.2.3",
            "v10.15.7",
            "room 101",
            "host 192.168.10.10",
            "zip 94103-1234",
            "pi is 3.14159265358",
            "ratio 12.345678901",
            "sent 1 299 000 units",
            "ref A1234567890",
            "1234 5678 9012 3456 7890",
        ] {
            none(text);
        }
    }

    #[test]
    fn trailing_small_number_is_not_part_of_the_phone() {
        only("call 555 0198 2 times", PiiKind::Phone, "555 0198");
        none("call 555-0198-2");
    }

    #[test]
    fn adjacency_with_punctuation() {
        use PiiKind::*;
        assert_eq!(
            matches("tel:312-555-0198,fax:(312) 555-0199;mail:bob@example.com!"),
            [
                (Phone, "312-555-0198"),
                (Phone, "(312) 555-0199"),
                (Email, "bob@example.com")
            ]
        );
        only("“+1 415 555 0132”", Phone, "+1 415 555 0132");
        none("x312-555-0198");
        none("312-555-0198x");
    }

    #[test]
    fn non_ascii_around_matches() {
        use PiiKind::*;
        let text =
            "Émilie’s numéro: 020 7946 0958 — café 😀 4111 1111 1111 1111, naïve@example.com";
        assert_eq!(
            matches(text),
            [
                (Phone, "020 7946 0958"),
                (Card, "4111 1111 1111 1111"),
                (Email, "naïve@example.com")
            ]
        );
        // A letter glued to the digits makes them part of a word.
        none("é0207946095");
    }

    #[test]
    fn digits_inside_an_email_are_not_a_phone() {
        only(
            "bob.4155550132@example.com",
            PiiKind::Email,
            "bob.4155550132@example.com",
        );
    }

    #[test]
    fn matches_are_sorted_and_disjoint() {
        let text = "a@example.com 312-555-0198 4111111111111111 b@example.com +44 20 7946 0321";
        let found = find(text);
        assert_eq!(found.len(), 5, "{:?}", matches(text));
        assert!(found.windows(2).all(|w| w[0].end <= w[1].start));
    }

    #[test]
    fn redact_replaces_and_records_masks() {
        let text =
            "Hi, I’m José (jose@example.com), card 4111 1111 1111 1111, call +1 415 555 0132 😀";
        let r = redact(text);
        assert_eq!(
            r.text,
            "Hi, I’m José ([EMAIL]), card [CARD], call [PHONE] 😀"
        );
        assert_eq!(r.masks.len(), 3);
        let expected = [
            (PiiKind::Email, "jose@example.com"),
            (PiiKind::Card, "4111 1111 1111 1111"),
            (PiiKind::Phone, "+1 415 555 0132"),
        ];
        for (mask, (kind, original)) in r.masks.iter().zip(expected) {
            assert_eq!(mask.kind, kind);
            assert_eq!(&r.text[mask.start..mask.end], kind.mask());
            assert_eq!(mask.original_len, original.len());
        }
        assert!(!r.text.contains("jose@") && !r.text.contains("0132") && !r.text.contains("1111"));
    }

    #[test]
    fn redact_without_matches_is_identity() {
        let r = redact("Nothing here: 2024-03-15, café, 10:30.");
        assert_eq!(r.text, "Nothing here: 2024-03-15, café, 10:30.");
        assert!(r.masks.is_empty());
        assert_eq!(redact("").text, "");
    }

    #[test]
    fn pathological_inputs_stay_fast() {
        let ats = "a".repeat(10_000) + &"@".repeat(10_000);
        assert!(find(&ats).is_empty());
        let digits = "1 ".repeat(20_000);
        assert!(find(&digits).is_empty());
        let long_local = format!("{}@example.com", "x".repeat(100));
        assert!(find(&long_local).is_empty());
    }
}

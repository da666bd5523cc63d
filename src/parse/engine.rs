//! Applies a compiled rule set to a message: ignore rules, then templates in order; the first
//! template whose required finders all match builds the transaction.

use std::borrow::Cow;
use std::cell::OnceCell;

use chrono::format::{Parsed, StrftimeItems};
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use chrono_tz::Tz;
use serde_json::Value;

use super::rules::{
    domain_of, is_normal_space, normalize_space, Action, AmountFormat, Finder, RuleSet, Segment,
    SignRule, Source, Template, Test, DEFAULT_DATE_FORMATS,
};
use super::{Outcome, Plugin};
use crate::message::{MessageTime, Webhook};
use crate::money::{currency_exponent, normalize_currency, Amount, Money};
use crate::parse::rules::Kind;
use crate::transaction::{derived_external_id, external_id, Transaction};

/// The parts of an email that rules can read, already resolved to the original message when the
/// email is a forward.
#[derive(Debug, Clone, Copy)]
pub struct EmailView<'a> {
    pub from: &'a str,
    pub subject: &'a str,
    pub body: &'a str,
    pub text: &'a str,
    pub html: &'a str,
    pub links: &'a [String],
    pub headers: &'a [(String, String)],
    pub sent: Option<MessageTime>,
}

/// What finders read from: an email view or a webhook.
enum Input<'a> {
    /// The view, and its links one per line, joined when a finder first reads them.
    Email(&'a EmailView<'a>, &'a OnceCell<String>),
    Webhook(&'a Webhook),
}

/// What finders captured, by name; a later capture of a name replaces the earlier one. A rule
/// set captures a handful of names, so a short list beats hashing each name. Names are borrowed
/// from the rule set's regexes and finders (`'r`), values from the message where they need no
/// change (`'h`).
#[derive(Debug, Default)]
struct Captures<'r, 'h>(Vec<(&'r str, Cow<'h, str>)>);

impl<'r, 'h> Captures<'r, 'h> {
    fn new() -> Self {
        Self::default()
    }

    fn clear(&mut self) {
        self.0.clear();
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_ref())
    }

    fn insert(&mut self, name: &'r str, value: Cow<'h, str>) {
        match self.0.iter_mut().find(|(k, _)| *k == name) {
            Some((_, old)) => *old = value,
            None => self.0.push((name, value)),
        }
    }

    /// Moves `other`'s captures in, keeping this list's value wherever both have a name.
    fn fill_unset_from(&mut self, other: &mut Captures<'r, 'h>) {
        for (name, value) in other.0.drain(..) {
            if self.get(name).is_none() {
                self.0.push((name, value));
            }
        }
    }

    fn values(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(_, v)| v.as_ref())
    }
}

impl Plugin for RuleSet {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> Kind {
        self.kind
    }

    fn claims(&self, sender: &str, subject: &str) -> bool {
        let domain = domain_of(sender);
        self.kind == Kind::Email
            && self.senders.iter().any(|s| s.matches_split(sender, domain))
            && (self.subjects.is_empty() || self.subjects.iter().any(|re| re.is_match(subject)))
    }

    fn parse_email(&self, view: &EmailView<'_>) -> Outcome {
        self.apply(&Input::Email(view, &OnceCell::new()), view.sent)
    }

    fn parse_webhook(&self, hook: &Webhook) -> Outcome {
        self.apply(&Input::Webhook(hook), None)
    }

    fn reads_text(&self) -> bool {
        self.kind == Kind::Email && self.reads(Source::Text)
    }

    fn headers_read(&self) -> Option<Vec<String>> {
        if self.kind != Kind::Email {
            return Some(Vec::new());
        }
        let names = self.finders().filter_map(|f| match &f.test {
            Test::Regex {
                source: Source::Header,
                header,
                ..
            } => header.clone(),
            _ => None,
        });
        Some(names.collect())
    }

    fn verify(&self) -> Option<&crate::settings::VerifyParams> {
        self.verify.as_ref()
    }

    fn fetches(&self) -> bool {
        self.fetch.is_some()
    }

    fn fetch_target(&self, hook: &Webhook) -> Option<(String, String)> {
        let fetch = self.fetch.as_ref()?;
        let input = Input::Webhook(hook);
        let mut captures = Captures::new();
        if !fetch
            .when
            .iter()
            .all(|f| find(f, &input, Some(&mut captures)))
        {
            return None;
        }
        // Ids go into a URL path: only what is safe there unescaped.
        let safe = |v: &str| {
            v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.~".contains(c))
        };
        if !captures.values().all(safe) {
            return None;
        }
        Some((fetch.base_url.clone(), fill(&fetch.path, &captures)?))
    }
}

impl RuleSet {
    /// Whether any finder (negated ones included) reads `source`.
    pub fn reads(&self, source: Source) -> bool {
        self.finders()
            .any(|f| matches!(&f.test, Test::Regex { source: s, .. } if *s == source))
    }

    /// Every finder of the rule set: ignore rules, shared and per-template ones, fetch ones.
    pub(crate) fn finders(&self) -> impl Iterator<Item = &Finder> {
        self.ignore
            .iter()
            .flat_map(|rule| &rule.when)
            .chain(&self.optional)
            .chain(
                self.templates
                    .iter()
                    .flat_map(|t| t.require.iter().chain(&t.optional)),
            )
            .chain(self.fetch.iter().flat_map(|f| &f.when))
    }

    fn apply(&self, input: &Input<'_>, sent: Option<MessageTime>) -> Outcome {
        let mut scratch = Captures::new();
        for rule in &self.ignore {
            scratch.clear();
            // Captures are read only to fill the reason; without slots a match is enough.
            let reads_captures = rule.reason.iter().any(|s| matches!(s, Segment::Slot(..)));
            if rule
                .when
                .iter()
                .all(|f| find(f, input, Some(&mut scratch).filter(|_| reads_captures)))
            {
                let reason = fill(&rule.reason, &scratch).unwrap_or_else(|| "ignored".to_owned());
                return Outcome::ignored(&self.id, &reason);
            }
        }
        for template in &self.templates {
            let mut captures = Captures::new();
            if !template
                .require
                .iter()
                .all(|f| find(f, input, Some(&mut captures)))
            {
                continue;
            }
            let finders = self.optional.iter().chain(&template.optional);
            let captures = with_optional(finders, input, captures);
            return match self.build(template, &captures, sent) {
                Ok(tx) => Outcome {
                    missing_fields: missing_fields(template, &captures),
                    ..Outcome::parsed(&self.id, vec![tx])
                },
                Err(why) => {
                    Outcome::error(Some(&self.id), format!("template {}: {why}", template.name))
                }
            };
        }
        Outcome::unmatched(
            Some(&self.id),
            format!("no {} template matched this message", self.id),
        )
    }

    fn build(
        &self,
        template: &Template,
        captures: &Captures,
        sent: Option<MessageTime>,
    ) -> Result<Transaction, String> {
        if template.action == Action::Void {
            return self.build_void(template, captures, sent);
        }
        let amount_text = fill(&template.fields.amount, captures).ok_or("no amount captured")?;
        let currency = match fill_opt(&template.fields.currency, captures) {
            Some(text) => normalize_currency(&text)
                .ok_or_else(|| format!("currency {text:?} is not an ISO 4217 code"))?,
            None => self.currency.clone(),
        };
        let read_amount = |text: &str| match template.amount_format {
            AmountFormat::Display => Amount::parse_display(text),
            AmountFormat::Decimal => Amount::parse_plain(text, None),
            AmountFormat::Minor => Amount::parse_plain(text, Some(currency_exponent(&currency))),
        };
        let amount = read_amount(&amount_text).map_err(|e| format!("amount: {e}"))?;
        // A balance is read like the amount but never re-signed: it is what the account holds.
        let balance = fill_opt(&template.fields.balance, captures)
            .map(|text| read_amount(&text).map(|b| Money::new(b, &currency)))
            .transpose()
            .map_err(|e| format!("balance: {e}"))?;
        let amount = self.signed(template, amount, captures)?;
        let date = self.date(template, captures, sent)?;
        let money = Money::new(amount, &currency);
        let payee = fill_opt(&template.fields.payee, captures);
        let notes = fill_opt(&template.fields.notes, captures);
        let account = fill_opt(&template.fields.account, captures);
        let external_id = match fill_opt(&template.fields.id, captures) {
            Some(id) => external_id(&self.id, &id),
            None => {
                // Documented in docs/rule-files.md: the derived id covers what the message says
                // and when it was sent (to the minute, so every forwarding route agrees).
                let sent_minute = sent.map(minute_key).unwrap_or_default();
                let date_text = date.to_string();
                derived_external_id(
                    &self.id,
                    &[
                        &date_text,
                        money.as_str(),
                        &currency,
                        payee.as_deref().unwrap_or(""),
                        notes.as_deref().unwrap_or(""),
                        &sent_minute,
                    ],
                )
            }
        };
        let mut tags = self.tags.clone();
        tags.extend(
            template
                .tags
                .iter()
                .filter(|t| !self.tags.contains(t))
                .cloned(),
        );
        Ok(Transaction {
            date,
            amount: money,
            currency,
            payee,
            notes,
            external_id,
            tags,
            account,
            balance,
            plugin: self.id.clone(),
            void: false,
        })
    }

    fn date(
        &self,
        template: &Template,
        captures: &Captures,
        sent: Option<MessageTime>,
    ) -> Result<NaiveDate, String> {
        match fill_opt(&template.fields.date, captures) {
            Some(text) => {
                let unread = |formats: &dyn std::fmt::Debug| {
                    format!("date {text:?} matches none of the formats {formats:?}")
                };
                match [&template.date_formats, &self.date_formats]
                    .into_iter()
                    .find(|f| !f.is_empty())
                {
                    Some(formats) => {
                        parse_date(&text, formats, self.timezone).ok_or_else(|| unread(formats))
                    }
                    None => parse_date(&text, DEFAULT_DATE_FORMATS, self.timezone)
                        .ok_or_else(|| unread(&DEFAULT_DATE_FORMATS)),
                }
            }
            None => sent
                .map(|t| local_date(t, self.timezone))
                .ok_or_else(|| "no date captured and the message has no Date".to_owned()),
        }
    }

    /// The record of an `action = "void"` template: the voided transaction's `external_id`, the
    /// date of the news, a zero amount in the plugin's currency, nothing else.
    fn build_void(
        &self,
        template: &Template,
        captures: &Captures,
        sent: Option<MessageTime>,
    ) -> Result<Transaction, String> {
        let id = fill_opt(&template.fields.id, captures).ok_or("no id captured to void")?;
        let date = self.date(template, captures, sent)?;
        let zero = Amount::parse_plain("0", Some(currency_exponent(&self.currency)))
            .map_err(|e| format!("amount: {e}"))?;
        Ok(Transaction {
            date,
            amount: Money::new(zero, &self.currency),
            currency: self.currency.clone(),
            payee: None,
            notes: None,
            external_id: external_id(&self.id, &id),
            tags: Vec::new(),
            account: None,
            balance: None,
            plugin: self.id.clone(),
            void: true,
        })
    }

    fn signed(
        &self,
        template: &Template,
        amount: Amount,
        captures: &Captures,
    ) -> Result<Amount, String> {
        if let Some(rule) = &template.sign_from {
            let word = captures
                .get(&rule.capture)
                .map(|w| w.to_lowercase())
                .ok_or_else(|| format!("no `{}` captured to decide the sign", rule.capture))?;
            return if rule.negative.contains(&word) {
                Ok(amount.abs().negate())
            } else if rule.positive.contains(&word) {
                Ok(amount.abs())
            } else {
                Err(format!(
                    "`{}` is {word:?}, listed neither as negative nor positive",
                    rule.capture
                ))
            };
        }
        Ok(match template.sign {
            SignRule::Keep => amount,
            SignRule::Invert => amount.negate(),
            SignRule::Positive => amount.abs(),
            SignRule::Negative => amount.abs().negate(),
        })
    }
}

/// Runs one finder; when it passes, adds its captures (trimmed, whitespace collapsed) and returns
/// true. A negated finder passes when its test fails and never captures. With no `captures` to
/// add to, only whether it passes is worked out.
fn find<'r, 'h>(
    finder: &'r Finder,
    input: &Input<'h>,
    captures: Option<&mut Captures<'r, 'h>>,
) -> bool {
    if finder.negate {
        return !test(&finder.test, input, None);
    }
    test(&finder.test, input, captures)
}

fn test<'r, 'h>(
    test: &'r Test,
    input: &Input<'h>,
    captures: Option<&mut Captures<'r, 'h>>,
) -> bool {
    match test {
        Test::Regex {
            source,
            header,
            regex,
            required,
        } => {
            let haystack: &'h str = match (input, source) {
                (Input::Email(v, _), Source::Subject) => v.subject,
                (Input::Email(v, _), Source::Body) => v.body,
                (Input::Email(v, _), Source::Text) => v.text,
                (Input::Email(v, _), Source::Html) => v.html,
                (Input::Email(v, _), Source::From) => v.from,
                (Input::Email(v, links), Source::Links) => links.get_or_init(|| v.links.join("\n")),
                (Input::Email(v, _), Source::Header) => header_value(v.headers, header.as_deref()),
                (Input::Webhook(h), Source::Header) => {
                    header.as_deref().and_then(|n| h.header(n)).unwrap_or("")
                }
                (Input::Webhook(_), _) => return false,
            };
            // Bodies are long; on subjects, senders and headers the literal search pays only
            // before a capture search, which (unlike `is_match`) costs more than it even when
            // the regex fails early: `regex` skips its own prefilter for anchored patterns.
            let long = matches!(source, Source::Body | Source::Text | Source::Html);
            if (long || captures.is_some()) && !required.may_match(haystack) {
                return false;
            }
            let Some(captures) = captures else {
                return regex.is_match(haystack);
            };
            let Some(found) = regex.captures(haystack) else {
                return false;
            };
            // By group index: looking a group up by name hashes the name.
            for (i, name) in regex.capture_names().enumerate() {
                if let (Some(name), Some(range)) = (name, found.get(i)) {
                    let value = normalized(&haystack[range]);
                    if !value.is_empty() {
                        captures.insert(name, value);
                    }
                }
            }
            true
        }
        Test::Pointer {
            pointer,
            capture,
            regex,
            equals,
            exists,
        } => {
            let Input::Webhook(hook) = input else {
                return false;
            };
            let value = hook.body.pointer(pointer).filter(|v| !v.is_null());
            let Some(value) = value else {
                return !exists;
            };
            if !exists {
                return false;
            }
            let text = value_text(value);
            if let Some(allowed) = equals {
                if !allowed.iter().any(|a| a == &text) {
                    return false;
                }
            }
            let Some(captures) = captures else {
                return regex.as_ref().is_none_or(|re| re.is_match(&text));
            };
            if let Some(re) = regex {
                let Some(found) = re.captures(&text) else {
                    return false;
                };
                for name in re.capture_names().flatten() {
                    if let Some(m) = found.name(name) {
                        captures.insert(name, Cow::Owned(normalize_space(m.as_str())));
                    }
                }
            }
            if let Some(name) = capture {
                let value = normalize_space(&text);
                if !value.is_empty() {
                    captures.insert(name, Cow::Owned(value));
                }
            }
            true
        }
    }
}

/// `normalize_space`, borrowing text that is already normal.
fn normalized(text: &str) -> Cow<'_, str> {
    if is_normal_space(text) {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(normalize_space(text))
    }
}

fn header_value<'a>(headers: &'a [(String, String)], name: Option<&str>) -> &'a str {
    name.and_then(|n| headers.iter().find(|(k, _)| k == n))
        .map_or("", |(_, v)| v.as_str())
}

/// A JSON value as text: strings unquoted, numbers in their exact source form.
fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn fill(segments: &[Segment], captures: &Captures) -> Option<String> {
    let mut out = String::new();
    for segment in segments {
        match segment {
            Segment::Literal(text) => out.push_str(text),
            Segment::Slot(names, default) => {
                let value = names
                    .iter()
                    .find_map(|n| captures.get(n))
                    .or(default.as_deref())?;
                out.push_str(value);
            }
        }
    }
    let out = if is_normal_space(&out) {
        out
    } else {
        normalize_space(&out)
    };
    (!out.is_empty()).then_some(out)
}

/// `required` with what the optional `finders` capture added, a later finder's capture replacing
/// an earlier one's (and any in `required`). So they run last first, each adding only the names
/// still unset; a finder whose names are all set already (or that captures nothing) cannot
/// change the result and is not run.
fn with_optional<'r, 'h>(
    finders: impl DoubleEndedIterator<Item = &'r Finder>,
    input: &Input<'h>,
    mut required: Captures<'r, 'h>,
) -> Captures<'r, 'h> {
    // Room for a rule set's usual handful of names, so the lists never grow.
    let mut captures = Captures(Vec::with_capacity(12));
    let mut scratch = Captures(Vec::with_capacity(4));
    for f in finders.rev() {
        if finder_names(f).all(|name| captures.get(name).is_some()) {
            continue;
        }
        find(f, input, Some(&mut scratch));
        captures.fill_unset_from(&mut scratch);
    }
    captures.fill_unset_from(&mut required);
    captures
}

/// The names a finder captures when it passes (none for a negated finder).
fn finder_names(finder: &Finder) -> impl Iterator<Item = &str> {
    let (search, regex, capture) = match &finder.test {
        _ if finder.negate => (None, None, None),
        Test::Regex { regex, .. } => (Some(regex), None, None),
        Test::Pointer { regex, capture, .. } => (None, regex.as_ref(), capture.as_deref()),
    };
    let search_names = search.into_iter().flat_map(|s| s.capture_names().flatten());
    let regex_names = regex.into_iter().flat_map(|r| r.capture_names().flatten());
    search_names.chain(regex_names).chain(capture)
}

/// The fields `template` declares with a slot none of whose captures was found (or found empty):
/// such a field fell back to its default or was left out.
fn missing_fields(template: &Template, captures: &Captures) -> Vec<String> {
    let f = &template.fields;
    let declared = [
        ("currency", &f.currency),
        ("date", &f.date),
        ("payee", &f.payee),
        ("notes", &f.notes),
        ("id", &f.id),
        ("account", &f.account),
        ("balance", &f.balance),
    ];
    let unfilled = |segments: &[Segment]| {
        segments.iter().any(|segment| match segment {
            Segment::Slot(names, _) => !names
                .iter()
                .any(|n| captures.get(n).is_some_and(|v| !v.is_empty())),
            Segment::Literal(_) => false,
        })
    };
    declared
        .into_iter()
        .filter(|(_, segments)| segments.as_deref().is_some_and(unfilled))
        .map(|(name, _)| name.to_owned())
        .collect()
}

fn fill_opt(segments: &Option<Vec<Segment>>, captures: &Captures) -> Option<String> {
    segments.as_deref().and_then(|s| fill(s, captures))
}

fn local_date(time: MessageTime, tz: Tz) -> NaiveDate {
    match time {
        MessageTime::Utc(t) => t.with_timezone(&tz).date_naive(),
        MessageTime::Local(t) => t.date(),
    }
}

fn minute_key(time: MessageTime) -> String {
    match time {
        MessageTime::Utc(t) => t.format("%Y-%m-%dT%H:%MZ").to_string(),
        MessageTime::Local(t) => t.format("%Y-%m-%dT%H:%M").to_string(),
    }
}

/// Reads a printed date. A trailing zone abbreviation (`PDT`, `EST`) is dropped: the printed day
/// is already the local day. Zoned timestamps are converted to the plugin's time zone.
pub fn parse_date<S: AsRef<str>>(text: &str, formats: &[S], tz: Tz) -> Option<NaiveDate> {
    let text = normalized(text);
    let text = text.as_ref();
    let bare = strip_zone_abbreviation(text);
    formats.iter().find_map(|format| match format.as_ref() {
        "rfc3339" => DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.with_timezone(&tz).date_naive()),
        "rfc2822" => DateTime::parse_from_rfc2822(text)
            .ok()
            .map(|t| t.with_timezone(&tz).date_naive()),
        format @ ("unix" | "unix_ms") => {
            let n: i64 = text.parse().ok()?;
            let t = if format == "unix" {
                DateTime::from_timestamp(n, 0)
            } else {
                DateTime::from_timestamp_millis(n)
            }?;
            Some(t.with_timezone(&tz).date_naive())
        }
        // `utc:PATTERN`: a time with no zone that the source documents as UTC (bunq).
        pattern if pattern.starts_with("utc:") => {
            NaiveDateTime::parse_from_str(text, &pattern[4..])
                .ok()
                .map(|t| t.and_utc().with_timezone(&tz).date_naive())
        }
        pattern => parse_with_pattern(text, bare, pattern, tz),
    })
}

/// A chrono pattern's reading of a date: `DateTime::parse_from_str` of `text`, else
/// `NaiveDate::parse_from_str` of `bare`, else `NaiveDateTime::parse_from_str` of `bare`, with
/// each text read once (`bare` is `text` without its zone abbreviation, often all of it).
fn parse_with_pattern(text: &str, bare: &str, pattern: &str, tz: Tz) -> Option<NaiveDate> {
    let read = |s: &str| {
        let mut parsed = Parsed::new();
        chrono::format::parse(&mut parsed, s, StrftimeItems::new(pattern))
            .ok()
            .map(|()| parsed)
    };
    let whole = read(text);
    // A pattern with an offset names an instant; convert it before naive readings, which
    // would silently drop the offset.
    if let Some(t) = whole.as_ref().and_then(|p| p.to_datetime().ok()) {
        return Some(t.with_timezone(&tz).date_naive());
    }
    let bare = if bare.len() == text.len() {
        whole?
    } else {
        read(bare)?
    };
    bare.to_naive_date()
        .ok()
        .or_else(|| bare.to_naive_datetime_with_offset(0).ok().map(|t| t.date()))
}

fn strip_zone_abbreviation(text: &str) -> &str {
    match text.rsplit_once(' ') {
        Some((head, zone))
            if (2..=5).contains(&zone.len())
                && zone.bytes().all(|b| b.is_ascii_uppercase())
                && zone != "AM"
                && zone != "PM" =>
        {
            head
        }
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn pacific() -> Tz {
        "America/Los_Angeles".parse().unwrap()
    }

    /// Every fixture email's rule inputs (as `parse_parsed_email` builds them for the mail
    /// itself), and variants of each body: cut short, a piece repeated (several matches, where
    /// the first must win), lines dropped, text added at either end.
    fn fixture_inputs() -> Vec<(String, crate::message::Email, Vec<String>)> {
        let mut state = 0x0b5e_55ed_cafe_f00d_u64;
        let mut out = Vec::new();
        for (path, raw) in crate::parse::tests::fixture_emails() {
            let Ok(email) = crate::message::Email::parse(&raw) else {
                continue;
            };
            let body = email.body_text().unwrap_or("").to_owned();
            let mut bodies = vec![body.clone()];
            let at = |state: u64, text: &str| {
                let mut i = (state % (text.len() as u64 + 1)) as usize;
                while !text.is_char_boundary(i) {
                    i -= 1;
                }
                i
            };
            for _ in 0..12 {
                state = crate::test_rng::xorshift64(state);
                let (i, j) = {
                    let a = at(state, &body);
                    let b = at(state >> 20, &body);
                    (a.min(b), a.max(b))
                };
                let lines: Vec<&str> = body.lines().collect();
                let variant = match state % 6 {
                    0 => body[..i].to_owned(),
                    1 => body[i..].to_owned(),
                    2 => format!("{}{}{}", &body[..j], &body[i..j], &body[j..]),
                    3 => lines
                        .iter()
                        .enumerate()
                        .filter(|(k, _)| (state >> (k % 60)) & 1 == 0)
                        .map(|(_, l)| *l)
                        .collect::<Vec<_>>()
                        .join("\n"),
                    4 => format!("x{body}\n"),
                    _ => format!("{}\n{}", &body[i..j], body),
                };
                bodies.push(variant);
            }
            out.push((path.display().to_string(), email, bodies));
        }
        assert!(out.len() >= 20, "{} fixtures", out.len());
        out
    }

    fn sorted(captures: &Captures<'_, '_>) -> Vec<(String, String)> {
        let mut all: Vec<_> = captures
            .0
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        all.sort();
        all
    }

    /// The optional finders run last first, skipping any whose names are set; this checks the
    /// result is what running them all in order, each overriding the earlier, gives, for every
    /// built-in plugin's templates over every fixture body and its variants. It also checks that
    /// a finder asked only whether it matches (`is_match`) answers as its capture search does.
    #[test]
    fn optional_finders_last_first_capture_what_all_in_order_would() {
        let rule_sets: Vec<RuleSet> = crate::parse::builtin::EMBEDDED
            .iter()
            .map(|(id, text)| crate::parse::rules::compile("t", id, text).unwrap())
            .filter(|r| r.kind == Kind::Email)
            .collect();
        assert!(rule_sets.len() >= 5, "{} email plugins", rule_sets.len());
        let mut compared = 0;
        let mut captured = 0;
        for (path, email, bodies) in fixture_inputs() {
            for body in &bodies {
                let view = EmailView {
                    from: email.envelope.from.as_deref().unwrap_or(""),
                    subject: &email.envelope.subject,
                    body,
                    text: body,
                    html: body,
                    links: &email.links,
                    headers: &email.headers,
                    sent: email.envelope.date,
                };
                let links = OnceCell::new();
                let input = Input::Email(&view, &links);
                for rules in &rule_sets {
                    let finders = rules
                        .ignore
                        .iter()
                        .flat_map(|r| &r.when)
                        .chain(&rules.optional)
                        .chain(rules.templates.iter().flat_map(|t| &t.require));
                    for f in finders {
                        let mut captures = Captures::new();
                        assert_eq!(
                            find(f, &input, None),
                            find(f, &input, Some(&mut captures)),
                            "{path}: {f:?}"
                        );
                    }
                    for template in &rules.templates {
                        let mut required = Captures::new();
                        required.insert("payee", Cow::Borrowed("from a required finder"));
                        let mut in_order = Captures::new();
                        in_order.insert("payee", Cow::Borrowed("from a required finder"));
                        let finders = rules.optional.iter().chain(&template.optional);
                        for f in finders.clone() {
                            find(f, &input, Some(&mut in_order));
                        }
                        let last_first = with_optional(finders, &input, required);
                        assert_eq!(sorted(&last_first), sorted(&in_order), "{path}");
                        compared += 1;
                        captured += in_order.0.len();
                    }
                }
            }
        }
        assert!(
            compared > 1000 && captured > compared,
            "{compared} {captured}"
        );
    }

    /// `parse_with_pattern` reads each text once; this checks it against the three chrono calls
    /// it replaces on dates, times, offsets and zone abbreviations, whole and damaged.
    #[test]
    fn a_pattern_reads_dates_as_the_three_chrono_calls_did() {
        let tz = pacific();
        let patterns = [
            "%b %d, %Y",
            "%B %d, %Y",
            "%Y-%m-%d",
            "%m/%d/%Y",
            "%m/%d/%Y %I:%M %p",
            "%Y-%m-%d %H:%M:%S %z",
            "%Y-%m-%dT%H:%M:%S%:z",
            "%d.%m.%Y %H:%M",
            "%s",
        ];
        let pieces = [
            "Mar",
            "March",
            " ",
            "01",
            "1",
            ",",
            "2024",
            "PDT",
            "EST",
            "-",
            "03",
            "/",
            ":",
            "4:05",
            "PM",
            "AM",
            "+0000",
            "-07:00",
            "T",
            "12:30:00",
            ".",
            "1709269200",
            "Z",
            "x",
        ];
        let reference = |text: &str, pattern: &str| {
            let bare = strip_zone_abbreviation(text);
            DateTime::parse_from_str(text, pattern)
                .ok()
                .map(|t| t.with_timezone(&tz).date_naive())
                .or_else(|| NaiveDate::parse_from_str(bare, pattern).ok())
                .or_else(|| {
                    NaiveDateTime::parse_from_str(bare, pattern)
                        .ok()
                        .map(|t| t.date())
                })
        };
        let mut texts: Vec<String> = [
            "Mar 01, 2024 PDT",
            "March 1, 2024",
            "2024-03-01",
            "03/01/2024 4:05 PM",
            "2024-03-02 01:00:00 +0000",
            "2024-03-02T01:00:00-07:00",
            "01.03.2024 12:30",
            "1709269200",
        ]
        .map(str::to_owned)
        .to_vec();
        let mut state = 0x0da7_e0ff_f00d_u64;
        for _ in 0..3_000 {
            texts.push(crate::test_rng::joined_pieces(&mut state, &pieces, 1..9));
        }
        let mut read = 0;
        for text in &texts {
            let bare = strip_zone_abbreviation(text);
            for pattern in patterns {
                let expected = reference(text, pattern);
                read += usize::from(expected.is_some());
                assert_eq!(
                    parse_with_pattern(text, bare, pattern, tz),
                    expected,
                    "{text:?} {pattern:?}"
                );
            }
        }
        assert!(read >= 8, "{read}");
    }

    #[test]
    fn dates_in_many_shapes() {
        let d = |t: &str, f: &[&str]| parse_date(t, f, pacific()).map(|d| d.to_string());
        assert_eq!(
            d("Mar 01, 2024 PDT", &["%b %d, %Y"]).as_deref(),
            Some("2024-03-01")
        );
        assert_eq!(
            d("Mar 1,  2024", &["%b %d, %Y"]).as_deref(),
            Some("2024-03-01")
        );
        assert_eq!(
            d("2024-03-02T05:00:00Z", &["rfc3339"]).as_deref(),
            Some("2024-03-01")
        );
        assert_eq!(d("1709269200", &["unix"]).as_deref(), Some("2024-02-29"));
        assert_eq!(
            d("03/01/2024 4:05 PM", &["%m/%d/%Y %I:%M %p"]).as_deref(),
            Some("2024-03-01")
        );
        assert_eq!(
            d("2024-03-02 01:00:00 +0000", &["%Y-%m-%d %H:%M:%S %z"]).as_deref(),
            Some("2024-03-01")
        );
        assert_eq!(d("yesterday", &["%b %d, %Y"]), None);
        assert_eq!(
            d("2024-03-02 07:30:00.123456", &["utc:%Y-%m-%d %H:%M:%S%.f"]).as_deref(),
            Some("2024-03-01"),
            "07:30 UTC is still the 1st in Los Angeles"
        );
    }

    #[test]
    fn slots_fall_back_to_a_constant_default() {
        let segments =
            crate::parse::rules::parse_segments("{merchant|'Card payment'} ({city|'?'})").unwrap();
        let mut captures = Captures::new();
        assert_eq!(
            fill(&segments, &captures).as_deref(),
            Some("Card payment (?)")
        );
        captures.insert("merchant", "Cafe".into());
        assert_eq!(fill(&segments, &captures).as_deref(), Some("Cafe (?)"));
        let no_default = crate::parse::rules::parse_segments("{merchant}").unwrap();
        assert_eq!(fill(&no_default, &Captures::new()), None);
    }

    #[test]
    fn header_dates_become_local_dates() {
        let t = DateTime::parse_from_rfc3339("2025-11-02T04:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            local_date(MessageTime::Utc(t), pacific()).to_string(),
            "2025-11-01"
        );
    }
}

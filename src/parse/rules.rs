//! Parser plugins written as data: the rule-file schema (TOML) and its compiled form.
//!
//! The format is documented in `docs/rule-files.md`. Compiling checks everything that can be
//! checked before a message arrives (regexes, JSON pointers, time zones, date formats, that each
//! field's captures exist) and reports each problem as `file: field: why`.

use std::collections::BTreeSet;

use chrono_tz::Tz;
use regex::Regex;
use serde::Deserialize;

use super::prefilter::{Required, Search};
use crate::money::normalize_currency;
use crate::settings::VerifyParams;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub file: String,
    /// Where in the file, as a path such as `template[1].require[0].regex`; empty for the file.
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for RuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.field, self.message)
        }
    }
}

impl std::error::Error for RuleError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Email,
    Webhook,
}

// ---- the file as written -------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    kind: Kind,
    #[serde(default)]
    description: String,
    #[serde(default = "default_currency")]
    currency: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default = "default_timezone")]
    timezone: String,
    #[serde(default)]
    date_formats: Vec<String>,
    #[serde(default)]
    claim: ClaimSpec,
    #[serde(default)]
    ignore: Vec<IgnoreSpec>,
    /// Finders tried for every template, before the template's own.
    #[serde(default)]
    optional: Vec<FinderSpec>,
    /// How this webhook source proves itself; secrets come from `hooks.<plugin>` settings.
    #[serde(default)]
    verify: Option<VerifyParams>,
    /// For webhooks that carry only ids: the resource to fetch before parsing.
    #[serde(default)]
    fetch: Option<FetchSpec>,
    #[serde(default)]
    template: Vec<TemplateSpec>,
}

fn default_currency() -> String {
    "usd".into()
}

fn default_timezone() -> String {
    "UTC".into()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimSpec {
    #[serde(default)]
    senders: Vec<String>,
    #[serde(default)]
    subjects: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IgnoreSpec {
    reason: String,
    when: Vec<FinderSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateSpec {
    name: String,
    #[serde(default)]
    require: Vec<FinderSpec>,
    #[serde(default)]
    optional: Vec<FinderSpec>,
    #[serde(default)]
    fields: FieldsSpec,
    #[serde(default)]
    amount_format: Option<AmountFormat>,
    #[serde(default)]
    sign: Option<SignRule>,
    #[serde(default)]
    sign_from: Option<SignFromSpec>,
    #[serde(default)]
    date_formats: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    action: Action,
}

/// What a matching template produces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// A transaction to insert (or to update, when its `external_id` was already seen).
    #[default]
    Insert,
    /// The transaction with this `id` is void (a reversed or expired authorisation): a record
    /// with only the `external_id` (and the date), which withdraws or deletes it.
    Void,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldsSpec {
    amount: Option<String>,
    currency: Option<String>,
    date: Option<String>,
    payee: Option<String>,
    notes: Option<String>,
    id: Option<String>,
    account: Option<String>,
    balance: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FinderSpec {
    #[serde(rename = "in")]
    source: Option<String>,
    regex: Option<String>,
    pointer: Option<String>,
    capture: Option<String>,
    equals: Option<Vec<String>>,
    exists: Option<bool>,
    #[serde(default)]
    negate: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FetchSpec {
    /// e.g. `https://api.up.com.au/api/v1`; `hooks.<plugin>.fetch_base_url` overrides it.
    base_url: String,
    /// Appended to the base URL, with `{capture}` slots from `when`.
    path: String,
    when: Vec<FinderSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignFromSpec {
    capture: String,
    #[serde(default)]
    negative: Vec<String>,
    #[serde(default)]
    positive: Vec<String>,
}

// ---- the compiled form ---------------------------------------------------------------------

/// How the amount text is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AmountFormat {
    /// As printed for people: symbols, thousands separators, `+`/`-` with spaces.
    Display,
    /// A machine decimal: `-12.50`.
    Decimal,
    /// An integer of the currency's minor units: `-1250` is -12.50 USD, `-1250` is -1250 JPY.
    Minor,
}

/// What to do with the sign of the amount as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SignRule {
    /// As read (default).
    #[serde(rename = "keep")]
    Keep,
    /// Flipped: for sources where positive means spending.
    #[serde(rename = "invert")]
    Invert,
    /// Always money arriving.
    #[serde(rename = "+")]
    Positive,
    /// Always money leaving.
    #[serde(rename = "-")]
    Negative,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Subject,
    Body,
    Text,
    Html,
    Links,
    From,
    Header,
}

/// A test on a message, and what it captures when it passes.
#[derive(Debug, Clone)]
pub struct Finder {
    pub test: Test,
    /// Passes when the test fails (and captures nothing).
    pub negate: bool,
}

#[derive(Debug, Clone)]
pub enum Test {
    /// A regex over part of an email (or a webhook header); named groups are captures.
    Regex {
        source: Source,
        header: Option<String>,
        regex: Search,
        /// Literals the regex cannot match without; checked first on long sources.
        required: Required,
    },
    /// A JSON pointer into a webhook body, with an optional test and capture.
    Pointer {
        pointer: String,
        capture: Option<String>,
        regex: Option<Regex>,
        equals: Option<Vec<String>>,
        exists: bool,
    },
}

/// A field written as a template: literal text and `{capture}` or `{first|fallback}` slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    /// Captures tried in order, then an optional constant default (`{merchant|'Card payment'}`).
    Slot(Vec<String>, Option<String>),
}

#[derive(Debug, Clone)]
pub struct Fields {
    pub amount: Vec<Segment>,
    pub currency: Option<Vec<Segment>>,
    pub date: Option<Vec<Segment>>,
    pub payee: Option<Vec<Segment>>,
    pub notes: Option<Vec<Segment>>,
    pub id: Option<Vec<Segment>>,
    /// The source's own account id (a bank account), for mapping to a Lunch Money account.
    pub account: Option<Vec<Segment>>,
    /// The account's balance after the transaction, written like the amount.
    pub balance: Option<Vec<Segment>>,
}

#[derive(Debug, Clone)]
pub struct SignFrom {
    pub capture: String,
    pub negative: Vec<String>,
    pub positive: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Template {
    pub name: String,
    pub require: Vec<Finder>,
    pub optional: Vec<Finder>,
    pub fields: Fields,
    pub amount_format: AmountFormat,
    pub sign: SignRule,
    pub sign_from: Option<SignFrom>,
    pub date_formats: Vec<String>,
    pub tags: Vec<String>,
    pub action: Action,
}

#[derive(Debug, Clone)]
pub struct IgnoreRule {
    /// The reason, with `{capture}` slots filled from what `when` captured.
    pub reason: Vec<Segment>,
    pub when: Vec<Finder>,
}

#[derive(Debug, Clone)]
pub struct SenderRule {
    /// Lowercase; an address when it holds `@`, else a domain that also covers its subdomains.
    pattern: String,
    is_address: bool,
}

impl SenderRule {
    pub fn new(pattern: String) -> Self {
        let is_address = pattern.contains('@');
        SenderRule {
            pattern,
            is_address,
        }
    }

    pub fn matches(&self, address: &str) -> bool {
        self.matches_split(address, domain_of(address))
    }

    /// `matches` for an address whose domain (`domain_of`) is already known: every plugin's
    /// senders are tried against every email, so the address is split once for all of them.
    pub fn matches_split(&self, address: &str, domain: Option<&str>) -> bool {
        if self.is_address {
            return address == self.pattern;
        }
        let Some(domain) = domain else {
            return false;
        };
        domain == self.pattern
            || domain
                .strip_suffix(self.pattern.as_str())
                .is_some_and(|sub| sub.ends_with('.'))
    }
}

/// What follows the last `@` of an address, if it has one.
pub fn domain_of(address: &str) -> Option<&str> {
    // A byte loop rather than a `str` search: the address is a few dozen bytes, where a
    // searcher's set-up dominated.
    let at = address.bytes().rposition(|b| b == b'@')?;
    Some(&address[at + 1..])
}

#[derive(Debug, Clone)]
pub struct RuleSet {
    pub id: String,
    pub kind: Kind,
    pub description: String,
    pub currency: String,
    pub tags: Vec<String>,
    pub timezone: Tz,
    pub date_formats: Vec<String>,
    pub senders: Vec<SenderRule>,
    pub subjects: Vec<Regex>,
    pub ignore: Vec<IgnoreRule>,
    pub optional: Vec<Finder>,
    pub templates: Vec<Template>,
    pub verify: Option<VerifyParams>,
    pub fetch: Option<Fetch>,
}

/// The resource a webhook points at, fetched (GET, bearer `hooks.<plugin>.api_token`) before
/// parsing; rules then read `{"event": <webhook>, "resource": <fetched document>}`.
#[derive(Debug, Clone)]
pub struct Fetch {
    pub base_url: String,
    pub path: Vec<Segment>,
    /// All must match for a fetch; events that match no `when` (a ping) are parsed as they are.
    pub when: Vec<Finder>,
}

/// Bounded so a hostile or careless rule cannot make compilation itself a memory hog.
const REGEX_SIZE_LIMIT: usize = 4 << 20;

/// Date formats tried when a rule file names none.
pub const DEFAULT_DATE_FORMATS: &[&str] = &[
    "%Y-%m-%d",
    "rfc3339",
    "%b %d, %Y",
    "%B %d, %Y",
    "%m/%d/%Y",
    "rfc2822",
];
/// Date formats with a meaning of their own rather than a chrono pattern.
pub const NAMED_DATE_FORMATS: &[&str] = &["rfc3339", "rfc2822", "unix", "unix_ms"];

/// Plugin ids are file names: short, lowercase, safe in `external_id` prefixes and URLs.
pub fn valid_plugin_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_')
}

/// Compiles one rule file. `file` names it in errors; `id` is the plugin id (its file stem).
pub fn compile(file: &str, id: &str, text: &str) -> Result<RuleSet, Vec<RuleError>> {
    let mut c = Compiler {
        file,
        errors: Vec::new(),
    };
    if !valid_plugin_id(id) {
        c.err(
            "",
            format!(
                "plugin id {id:?} (the file name) must be 1-32 characters of a-z, 0-9, - and _"
            ),
        );
    }
    let spec: RuleFile = match toml::from_str(text) {
        Ok(spec) => spec,
        Err(e) => {
            c.err("", toml_error(&e));
            return Err(c.errors);
        }
    };
    let rules = c.rule_set(id, spec);
    if c.errors.is_empty() {
        Ok(rules)
    } else {
        Err(c.errors)
    }
}

fn toml_error(e: &toml::de::Error) -> String {
    let message = e.message().trim().to_owned();
    match e.span() {
        Some(span) => format!("invalid TOML at byte {}: {message}", span.start),
        None => format!("invalid TOML: {message}"),
    }
}

struct Compiler<'a> {
    file: &'a str,
    errors: Vec<RuleError>,
}

impl Compiler<'_> {
    fn err(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(RuleError {
            file: self.file.to_owned(),
            field: field.to_owned(),
            message: message.into(),
        });
    }

    fn rule_set(&mut self, id: &str, spec: RuleFile) -> RuleSet {
        let currency = normalize_currency(&spec.currency).unwrap_or_else(|| {
            self.err("currency", "must be an ISO 4217 code such as \"usd\"");
            String::new()
        });
        let timezone = spec.timezone.parse::<Tz>().unwrap_or_else(|_| {
            self.err(
                "timezone",
                format!(
                    "unknown time zone {:?}; use an IANA name such as \"America/Los_Angeles\"",
                    spec.timezone
                ),
            );
            Tz::UTC
        });
        self.date_formats("date_formats", &spec.date_formats);
        self.tags("tags", &spec.tags);
        let senders = self.senders(spec.kind, &spec.claim.senders);
        let subjects = spec
            .claim
            .subjects
            .iter()
            .enumerate()
            .filter_map(|(i, s)| self.regex(&format!("claim.subjects[{i}]"), s))
            .collect();
        let ignore = spec
            .ignore
            .into_iter()
            .enumerate()
            .map(|(i, rule)| {
                let path = format!("ignore[{i}]");
                if rule.reason.trim().is_empty() {
                    self.err(
                        &format!("{path}.reason"),
                        "must say why the message is ignored",
                    );
                }
                if rule.when.is_empty() {
                    self.err(
                        &format!("{path}.when"),
                        "needs at least one finder, or it would ignore everything",
                    );
                }
                let when = self.finders(&format!("{path}.when"), spec.kind, rule.when);
                let captured: BTreeSet<String> = when.iter().flat_map(capture_names).collect();
                let reason = match parse_segments(&rule.reason) {
                    Ok(segments) => {
                        for slot in segments.iter().filter_map(|s| match s {
                            Segment::Slot(names, _) => Some(names),
                            Segment::Literal(_) => None,
                        }) {
                            for name in slot.iter().filter(|n| !captured.contains(*n)) {
                                self.err(
                                    &format!("{path}.reason"),
                                    format!("no finder in `when` captures `{name}`"),
                                );
                            }
                        }
                        segments
                    }
                    Err(why) => {
                        self.err(&format!("{path}.reason"), why);
                        Vec::new()
                    }
                };
                IgnoreRule { reason, when }
            })
            .collect();
        let fetch = spec.fetch.and_then(|f| self.fetch(spec.kind, f));
        if let Some(verify) = &spec.verify {
            if spec.kind == Kind::Email {
                self.err(
                    "verify",
                    "only webhook plugins verify requests; mail is checked by its route",
                );
            } else if verify.scheme.is_none() {
                self.err("verify.scheme", "name the scheme: bearer, header, query, hmac, standard-webhooks, starling, starling-rsa, bunq or none");
            }
        }
        let optional = self.finders("optional", spec.kind, spec.optional);
        let shared: BTreeSet<String> = optional.iter().flat_map(capture_names).collect();
        if spec.template.is_empty() {
            self.err("template", "a plugin needs at least one [[template]]");
        }
        let mut names = BTreeSet::new();
        let templates = spec
            .template
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                if !names.insert(t.name.clone()) {
                    self.err(
                        &format!("template[{i}].name"),
                        format!("{:?} is used twice", t.name),
                    );
                }
                self.template(&format!("template[{i}]"), spec.kind, &shared, t)
            })
            .collect();
        RuleSet {
            id: id.to_owned(),
            kind: spec.kind,
            description: spec.description,
            currency,
            tags: spec.tags,
            timezone,
            date_formats: spec.date_formats,
            senders,
            subjects,
            ignore,
            optional,
            templates,
            verify: spec.verify,
            fetch,
        }
    }

    fn fetch(&mut self, kind: Kind, f: FetchSpec) -> Option<Fetch> {
        if kind == Kind::Email {
            self.err("fetch", "only webhook plugins fetch resources");
            return None;
        }
        if !f.base_url.starts_with("https://") && !f.base_url.starts_with("http://") {
            self.err(
                "fetch.base_url",
                format!("{:?} is not an http(s) URL", f.base_url),
            );
        }
        if !f.path.starts_with('/') {
            self.err("fetch.path", format!("{:?} must start with '/'", f.path));
        }
        if f.when.is_empty() {
            self.err("fetch.when", "needs a finder that captures the id to fetch");
        }
        let when = self.finders("fetch.when", kind, f.when);
        let captured: BTreeSet<String> = when.iter().flat_map(capture_names).collect();
        let path = match parse_segments(&f.path) {
            Ok(segments) => segments,
            Err(why) => {
                self.err("fetch.path", why);
                return None;
            }
        };
        for segment in &path {
            if let Segment::Slot(names, _) = segment {
                for name in names.iter().filter(|n| !captured.contains(*n)) {
                    self.err(
                        "fetch.path",
                        format!("no finder in `when` captures `{name}`"),
                    );
                }
            }
        }
        Some(Fetch {
            base_url: f.base_url.trim_end_matches('/').to_owned(),
            path,
            when,
        })
    }

    fn senders(&mut self, kind: Kind, senders: &[String]) -> Vec<SenderRule> {
        if kind == Kind::Email && senders.is_empty() {
            self.err(
                "claim.senders",
                "an email plugin must name the addresses or domains it claims",
            );
        }
        if kind == Kind::Webhook && !senders.is_empty() {
            self.err(
                "claim.senders",
                "webhook plugins are chosen by URL, not by sender",
            );
        }
        senders
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let pattern = s.trim().to_ascii_lowercase();
                let domain = pattern.rsplit('@').next().unwrap_or_default();
                let ok = !domain.is_empty()
                    && domain.contains('.')
                    && pattern.matches('@').count() <= 1
                    && !pattern.starts_with('.')
                    && pattern
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "@.-_+".contains(c));
                if ok {
                    Some(SenderRule::new(pattern))
                } else {
                    self.err(
                        &format!("claim.senders[{i}]"),
                        format!("{s:?} is neither an address (name@example.com) nor a domain (example.com)"),
                    );
                    None
                }
            })
            .collect()
    }

    fn tags(&mut self, path: &str, tags: &[String]) {
        for (i, tag) in tags.iter().enumerate() {
            let len = tag.trim().chars().count();
            if len == 0 || len > 100 {
                self.err(&format!("{path}[{i}]"), "a tag must be 1 to 100 characters");
            }
        }
    }

    fn date_formats(&mut self, path: &str, formats: &[String]) {
        for (i, f) in formats.iter().enumerate() {
            if NAMED_DATE_FORMATS.contains(&f.as_str()) {
                continue;
            }
            let f = f.strip_prefix("utc:").unwrap_or(f);
            let items: Vec<_> = chrono::format::StrftimeItems::new(f).collect();
            if items
                .iter()
                .any(|item| matches!(item, chrono::format::Item::Error))
            {
                self.err(
                    &format!("{path}[{i}]"),
                    format!("{f:?} is not a valid chrono date format"),
                );
            } else if !f.contains("%d")
                && !f.contains("%e")
                && !f.contains("%F")
                && !f.contains("%j")
            {
                self.err(
                    &format!("{path}[{i}]"),
                    format!("{f:?} has no day (%d, %e, %F or %j)"),
                );
            }
        }
    }

    fn regex(&mut self, path: &str, pattern: &str) -> Option<Regex> {
        match regex::RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
        {
            Ok(re) => Some(re),
            Err(e) => {
                self.err(
                    path,
                    format!("invalid regex: {}", first_line_of_regex_error(&e)),
                );
                None
            }
        }
    }

    fn finders(&mut self, path: &str, kind: Kind, specs: Vec<FinderSpec>) -> Vec<Finder> {
        specs
            .into_iter()
            .enumerate()
            .filter_map(|(i, f)| self.finder(&format!("{path}[{i}]"), kind, f))
            .collect()
    }

    fn finder(&mut self, path: &str, kind: Kind, f: FinderSpec) -> Option<Finder> {
        let negate = f.negate;
        if negate && f.capture.is_some() {
            self.err(
                &format!("{path}.capture"),
                "a negated finder captures nothing",
            );
        }
        let test = self.test(path, kind, f)?;
        Some(Finder { test, negate })
    }

    fn test(&mut self, path: &str, kind: Kind, f: FinderSpec) -> Option<Test> {
        match (&f.source, &f.pointer) {
            (Some(_), Some(_)) => {
                self.err(
                    path,
                    "give either `in` (a regex over the message) or `pointer` (JSON), not both",
                );
                None
            }
            (None, None) => {
                self.err(path, "needs `in` and `regex`, or `pointer`");
                None
            }
            (Some(source), None) => {
                for (name, present) in [
                    ("capture", f.capture.is_some()),
                    ("equals", f.equals.is_some()),
                    ("exists", f.exists.is_some()),
                ] {
                    if present {
                        self.err(
                            &format!("{path}.{name}"),
                            "only applies to `pointer` finders; a regex captures with named groups",
                        );
                    }
                }
                let (source, header) = match parse_source(source) {
                    Some(s) => s,
                    None => {
                        self.err(&format!("{path}.in"), format!("unknown source {source:?}; use subject, body, text, html, links, from or header:NAME"));
                        return None;
                    }
                };
                if kind == Kind::Webhook && source != Source::Header {
                    self.err(&format!("{path}.in"), "webhook plugins read the body with `pointer`; only header:NAME is a regex source");
                }
                let Some(pattern) = &f.regex else {
                    self.err(&format!("{path}.regex"), "is required with `in`");
                    return None;
                };
                let regex = self.regex(&format!("{path}.regex"), pattern)?;
                Some(Test::Regex {
                    source,
                    header,
                    regex: Search::new(regex, REGEX_SIZE_LIMIT),
                    required: Required::of(pattern),
                })
            }
            (None, Some(pointer)) => {
                if kind == Kind::Email {
                    self.err(
                        &format!("{path}.pointer"),
                        "JSON pointers are for webhook plugins",
                    );
                }
                if !pointer.is_empty() && !pointer.starts_with('/') {
                    self.err(
                        &format!("{path}.pointer"),
                        format!(
                            "{pointer:?} is not a JSON pointer (RFC 6901): it must start with '/'"
                        ),
                    );
                }
                let regex = match &f.regex {
                    Some(p) => Some(self.regex(&format!("{path}.regex"), p)?),
                    None => None,
                };
                if let Some(name) = &f.capture {
                    if !valid_capture_name(name) {
                        self.err(
                            &format!("{path}.capture"),
                            format!("{name:?} must be letters, digits and _"),
                        );
                    }
                }
                let exists = f.exists.unwrap_or(true);
                if !exists && (f.capture.is_some() || f.equals.is_some() || regex.is_some()) {
                    self.err(
                        path,
                        "`exists = false` cannot be combined with capture, equals or regex",
                    );
                }
                Some(Test::Pointer {
                    pointer: pointer.clone(),
                    capture: f.capture,
                    regex,
                    equals: f.equals,
                    exists,
                })
            }
        }
    }

    fn template(
        &mut self,
        path: &str,
        kind: Kind,
        shared: &BTreeSet<String>,
        t: TemplateSpec,
    ) -> Template {
        if t.require.is_empty() {
            self.err(
                &format!("{path}.require"),
                "needs at least one finder that must match",
            );
        }
        let require = self.finders(&format!("{path}.require"), kind, t.require);
        let optional = self.finders(&format!("{path}.optional"), kind, t.optional);
        let captured: BTreeSet<String> = require
            .iter()
            .chain(&optional)
            .flat_map(capture_names)
            .chain(shared.iter().cloned())
            .collect();
        let voids = t.action == Action::Void;
        if voids {
            for (name, given) in [
                ("amount", t.fields.amount.is_some()),
                ("payee", t.fields.payee.is_some()),
                ("notes", t.fields.notes.is_some()),
                ("balance", t.fields.balance.is_some()),
            ] {
                if given {
                    self.err(
                        &format!("{path}.fields.{name}"),
                        "a void template names only the transaction it voids (id, date)",
                    );
                }
            }
        }
        let mut field = |name: &str,
                         written: Option<String>,
                         required: bool|
         -> Option<Vec<Segment>> {
            let field_path = format!("{path}.fields.{name}");
            let (text, explicit) = match written {
                Some(text) => (text, true),
                None if captured.contains(name) => (format!("{{{name}}}"), false),
                None => {
                    if required {
                        self.err(&field_path, format!("nothing captures `{name}`: add a finder with a `{name}` capture or set fields.{name}"));
                    }
                    return None;
                }
            };
            match parse_segments(&text) {
                Ok(segments) => {
                    for slot in segments.iter().filter_map(|s| match s {
                        Segment::Slot(names, _) => Some(names),
                        Segment::Literal(_) => None,
                    }) {
                        for capture in slot.iter().filter(|c| !captured.contains(*c)) {
                            self.err(&field_path, format!("no finder captures `{capture}`"));
                        }
                    }
                    Some(segments)
                }
                Err(why) => {
                    if explicit {
                        self.err(&field_path, why);
                    }
                    None
                }
            }
        };
        let fields = Fields {
            // A void carries no amount; its id is what it is about, so it must have one.
            amount: if voids {
                Vec::new()
            } else {
                field("amount", t.fields.amount, true).unwrap_or_default()
            },
            currency: field("currency", t.fields.currency, false),
            date: field("date", t.fields.date, false),
            payee: field("payee", t.fields.payee, false),
            notes: field("notes", t.fields.notes, false),
            account: field("account", t.fields.account, false),
            balance: field("balance", t.fields.balance, false),
            id: field("id", t.fields.id, voids),
        };
        let sign_from = t.sign_from.map(|s| {
            if !captured.contains(&s.capture) {
                self.err(
                    &format!("{path}.sign_from.capture"),
                    format!("no finder captures `{}`", s.capture),
                );
            }
            if s.negative.is_empty() && s.positive.is_empty() {
                self.err(
                    &format!("{path}.sign_from"),
                    "list the words that mean `negative` (money out) or `positive` (money in)",
                );
            }
            let lower = |v: Vec<String>| {
                v.into_iter()
                    .map(|w| normalize_space(&w).to_lowercase())
                    .collect()
            };
            SignFrom {
                capture: s.capture,
                negative: lower(s.negative),
                positive: lower(s.positive),
            }
        });
        if sign_from.is_some() && t.sign.is_some() {
            self.err(
                &format!("{path}.sign"),
                "give either `sign` or `sign_from`, not both",
            );
        }
        self.date_formats(&format!("{path}.date_formats"), &t.date_formats);
        self.tags(&format!("{path}.tags"), &t.tags);
        let default_format = match kind {
            Kind::Email => AmountFormat::Display,
            Kind::Webhook => AmountFormat::Decimal,
        };
        Template {
            name: t.name,
            require,
            optional,
            fields,
            amount_format: t.amount_format.unwrap_or(default_format),
            sign: t.sign.unwrap_or(SignRule::Keep),
            sign_from,
            date_formats: t.date_formats,
            tags: t.tags,
            action: t.action,
        }
    }
}

fn first_line_of_regex_error(e: &regex::Error) -> String {
    // The regex crate's errors draw the pattern with a caret; keep them but on fewer lines.
    e.to_string()
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

fn parse_source(text: &str) -> Option<(Source, Option<String>)> {
    if let Some(name) = text.strip_prefix("header:") {
        return (!name.trim().is_empty())
            .then(|| (Source::Header, Some(name.trim().to_ascii_lowercase())));
    }
    let source = match text {
        "subject" => Source::Subject,
        "body" => Source::Body,
        "text" => Source::Text,
        "html" => Source::Html,
        "links" => Source::Links,
        "from" => Source::From,
        _ => return None,
    };
    Some((source, None))
}

fn valid_capture_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn capture_names(f: &Finder) -> Vec<String> {
    if f.negate {
        return Vec::new();
    }
    match &f.test {
        Test::Regex { regex, .. } => regex.capture_names().flatten().map(str::to_owned).collect(),
        Test::Pointer { capture, regex, .. } => capture
            .iter()
            .cloned()
            .chain(
                regex
                    .iter()
                    .flat_map(|r| r.capture_names().flatten().map(str::to_owned)),
            )
            .collect(),
    }
}

/// Splits `"{payee} via {app|source}"` into literal and slot segments.
pub fn parse_segments(text: &str) -> Result<Vec<Segment>, String> {
    let mut segments = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            segments.push(Segment::Literal(rest[..open].to_owned()));
        }
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("unclosed `{{` in {text:?}"))?
            + open;
        let mut names: Vec<String> = rest[open + 1..close]
            .split('|')
            .map(|n| n.trim().to_owned())
            .collect();
        // A last alternative in single quotes is a constant default.
        let default = match names.last() {
            Some(last) if last.len() >= 2 && last.starts_with('\'') && last.ends_with('\'') => {
                let text = last[1..last.len() - 1].to_owned();
                names.pop();
                Some(text)
            }
            _ => None,
        };
        if names.iter().any(|n| !valid_capture_name(n)) || (names.is_empty() && default.is_none()) {
            return Err(format!(
                "bad slot {{{}}} in {text:?}: captures are letters, digits and _, then optionally a 'default'",
                &rest[open + 1..close]
            ));
        }
        segments.push(Segment::Slot(names, default));
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        segments.push(Segment::Literal(rest.to_owned()));
    }
    Ok(segments)
}

/// Trims and collapses runs of whitespace to one space.
pub fn normalize_space(text: &str) -> String {
    // Most captures are already normal: ASCII with single spaces between words. Copy those.
    if is_normal_space(text) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Whether `normalize_space` would return `text` unchanged (false for some text it would keep:
/// non-ASCII text is always normalized the slow way).
pub fn is_normal_space(text: &str) -> bool {
    // One pass: ASCII, no whitespace but single spaces between words.
    let b = text.as_bytes();
    let mut after_space = true;
    for &c in b {
        match c {
            b' ' if after_space => return false,
            b' ' => after_space = true,
            b'\t' | b'\n' | b'\x0B' | b'\x0C' | b'\r' | 0x80.. => return false,
            _ => after_space = false,
        }
    }
    // Not normal if it ends in a space; empty text is normal.
    !after_space || b.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
kind = "email"
[claim]
senders = ["pay@example.com"]
[[template]]
name = "t"
require = [{ in = "subject", regex = 'paid (?P<amount>\S+)' }]
"#;

    fn errors(text: &str) -> Vec<String> {
        compile("parsers/x.toml", "x", text)
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn normal_space_is_told_apart_as_split_and_join_would() {
        let pieces = [
            "a", "Z", " ", "  ", "\t", "\n", "\x0B", "\x0C", "\r", "\u{a0}", "\u{e9}", ".",
        ];
        let mut state = 0x05ee_d0f5_bace_u64;
        for _ in 0..20_000 {
            let text = crate::test_rng::joined_pieces(&mut state, &pieces, 0..7);
            let normal = text.split_whitespace().collect::<Vec<_>>().join(" ");
            if is_normal_space(&text) {
                assert_eq!(text, normal);
            } else {
                assert!(text != normal || !text.is_ascii(), "{text:?}");
            }
        }
    }

    #[test]
    fn space_normalizes_as_split_and_join_would() {
        for text in [
            "",
            " ",
            "a",
            " a",
            "a ",
            "a b",
            "a  b",
            "a\tb",
            "a\nb",
            "a\x0Bb",
            "a\x0Cb",
            "a\rb",
            "Jos\u{e9} Ram\u{ed}rez",
            "a\u{a0}b",
            "a\u{2003}b",
            "a \u{85}b",
            "\u{1F600} note",
        ] {
            assert_eq!(
                normalize_space(text),
                text.split_whitespace().collect::<Vec<_>>().join(" "),
                "{text:?}"
            );
        }
    }

    #[test]
    fn minimal_file_compiles_with_defaults() {
        let rules = compile("x.toml", "x", MINIMAL).unwrap();
        assert_eq!(rules.currency, "usd");
        assert_eq!(rules.timezone, Tz::UTC);
        assert_eq!(
            rules.templates[0].fields.amount,
            vec![Segment::Slot(vec!["amount".into()], None)]
        );
        assert!(rules.templates[0].fields.payee.is_none());
    }

    #[test]
    fn errors_name_file_field_and_reason() {
        let bad = MINIMAL.replace(r"paid (?P<amount>\S+)", "paid (?P<amount>");
        let errs = errors(&bad);
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs[0].starts_with("parsers/x.toml: template[0].require[0].regex: invalid regex"),
            "{errs:?}"
        );
        assert!(
            errs[1].contains("template[0].fields.amount: nothing captures `amount`"),
            "{errs:?}"
        );

        let errs = errors(&MINIMAL.replace(
            "kind = \"email\"",
            "kind = \"email\"\ntimezone = \"Mars/Base\"\ncurrency = \"dollars\"\ncolour = 1",
        ));
        assert_eq!(errs.len(), 1, "unknown keys fail the whole file: {errs:?}");
        assert!(errs[0].contains("unknown field `colour`"), "{errs:?}");

        let errs = errors(&MINIMAL.replace("kind = \"email\"", "kind = \"email\"\ntimezone = \"Mars/Base\"\ncurrency = \"dollars\"\ndate_formats = [\"%Y\", \"%Q\"]"));
        assert!(
            errs.iter()
                .any(|e| e.contains(": timezone: unknown time zone")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains(": currency: must be an ISO 4217")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("date_formats[0]: \"%Y\" has no day")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("date_formats[1]: \"%Q\" is not a valid")),
            "{errs:?}"
        );
    }

    #[test]
    fn field_templates_must_reference_real_captures() {
        let bad =
            MINIMAL.to_owned() + "[template.fields]\npayee = \"{who|name}\"\nnotes = \"{oops\"\n";
        let errs = errors(&bad);
        assert!(
            errs.iter()
                .any(|e| e.ends_with("template[0].fields.payee: no finder captures `who`")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("template[0].fields.notes: unclosed `{`")),
            "{errs:?}"
        );
    }

    #[test]
    fn kinds_and_finders_are_checked() {
        let errs = errors("kind = \"webhook\"\n[[template]]\nname = \"t\"\nrequire = [{ in = \"subject\", regex = \"x\" }, { pointer = \"data\", capture = \"amount\" }, { }]\n");
        assert!(
            errs.iter()
                .any(|e| e.contains("require[0].in: webhook plugins read the body")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("require[1].pointer: \"data\" is not a JSON pointer")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("require[2]: needs `in` and `regex`, or `pointer`")),
            "{errs:?}"
        );
        let errs = errors("kind = \"email\"\n[claim]\nsenders = [\"not an address\"]\n[[template]]\nname = \"t\"\nrequire = []\n");
        assert!(
            errs.iter().any(|e| e.contains("claim.senders[0]")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("template[0].require: needs at least one")),
            "{errs:?}"
        );
        assert!(compile("Bad Name.toml", "Bad Name", MINIMAL).is_err());
        assert!(errors("kind = ")
            .iter()
            .any(|e| e.contains("invalid TOML at byte")));
    }

    #[test]
    fn ignore_reasons_name_only_what_their_finders_capture() {
        let hook = "kind = \"webhook\"\n[[ignore]]\nreason = \"{event} event, {missing}\"\nwhen = [{ pointer = \"/type\", capture = \"event\" }]\n[[template]]\nname = \"t\"\nrequire = [{ pointer = \"/a\", capture = \"amount\" }]\n";
        let errs = errors(hook);
        assert_eq!(
            errs,
            vec!["parsers/x.toml: ignore[0].reason: no finder in `when` captures `missing`"]
        );
        let ok = hook.replace(", {missing}", "");
        let rules = compile("x.toml", "x", &ok).unwrap();
        let hook = crate::message::Webhook::parse(Vec::new(), br#"{"type": "ping"}"#).unwrap();
        let outcome = crate::parse::Plugin::parse_webhook(&rules, &hook);
        assert_eq!(outcome.reason.as_deref(), Some("ping event"));
    }

    #[test]
    fn sender_rules_match_addresses_domains_and_subdomains_only() {
        let domain = SenderRule::new("venmo.com".into());
        assert!(domain.matches("venmo@venmo.com"));
        assert!(domain.matches("x@email.venmo.com"));
        assert!(!domain.matches("venmo@notvenmo.com"));
        assert!(!domain.matches("venmo@venmo.com.evil.io"));
        assert!(!domain.matches("venmo.com"));
        let addr = SenderRule::new("venmo@venmo.com".into());
        assert!(addr.matches("venmo@venmo.com"));
        assert!(!addr.matches("xvenmo@venmo.com"));
    }

    #[test]
    fn segments_parse_literals_slots_and_fallbacks() {
        assert_eq!(
            parse_segments("{a|b} via x").unwrap(),
            vec![
                Segment::Slot(vec!["a".into(), "b".into()], None),
                Segment::Literal(" via x".into())
            ]
        );
        assert!(parse_segments("{a b}").is_err());
        assert_eq!(
            parse_segments("{merchant|'Card payment'}").unwrap(),
            vec![Segment::Slot(
                vec!["merchant".into()],
                Some("Card payment".into())
            )]
        );
        assert!(parse_segments("{'a'|b}").is_err(), "the default comes last");
    }

    #[test]
    fn a_void_template_needs_an_id_and_carries_no_amount() {
        let void = |extra: &str| {
            format!(
                "kind = \"webhook\"\n[[template]]\nname = \"v\"\naction = \"void\"\nrequire = [{{ pointer = \"/status\", equals = [\"REVERSED\"] }}{extra}]\n"
            )
        };
        let rules = compile(
            "x.toml",
            "x",
            &void(", { pointer = \"/uid\", capture = \"id\" }"),
        )
        .unwrap();
        assert_eq!(rules.templates[0].action, Action::Void);
        assert!(rules.templates[0].fields.amount.is_empty());
        let errs = errors(&void(""));
        assert!(
            errs.iter()
                .any(|e| e.contains("template[0].fields.id: nothing captures `id`")),
            "{errs:?}"
        );
        let errs = errors(&void(", { pointer = \"/uid\", capture = \"id\" }").replace(
            "action = \"void\"",
            "action = \"void\"\nfields = { amount = \"1\" }",
        ));
        assert!(
            errs.iter().any(|e| e.contains(
                "template[0].fields.amount: a void template names only the transaction it voids"
            )),
            "{errs:?}"
        );
    }
}

//! The parse engine: plugins turn a message into transactions.

pub mod builtin;
pub mod engine;
mod prefilter;
pub mod rules;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use engine::EmailView;
pub use rules::{Kind, RuleError, RuleSet};

use crate::message::{Email, EmailOptions, HeadersNeeded, Original, Webhook};
use crate::transaction::Transaction;

/// A parser plugin. Rule files implement it (`RuleSet`); a format that rules cannot express can
/// implement it in Rust and be registered beside them.
pub trait Plugin: Send + Sync {
    fn id(&self) -> &str;
    fn kind(&self) -> Kind;
    /// Whether this plugin takes mail from `sender` (a lowercase address) titled `subject`.
    fn claims(&self, sender: &str, subject: &str) -> bool;
    fn parse_email(&self, view: &EmailView<'_>) -> Outcome;
    fn parse_webhook(&self, hook: &Webhook) -> Outcome;
    /// Whether `parse_email` reads `EmailView::text` (the `text/plain` part). When no plugin does,
    /// the registry skips decoding that part in mail that has HTML. Assume it does unless sure.
    fn reads_text(&self) -> bool {
        true
    }
    /// The headers (lowercase names) `parse_email` reads from `EmailView::headers`, or `None`
    /// when it may read any. The registry decodes only the headers some plugin reads (and the
    /// envelope's). Assume any unless sure.
    fn headers_read(&self) -> Option<Vec<String>> {
        None
    }
    /// How a webhook plugin's requests prove their origin, as its rule file declares it.
    fn verify(&self) -> Option<&crate::settings::VerifyParams> {
        None
    }
    /// Whether this plugin ever fetches a resource for its webhooks (so the service need not
    /// read the body an extra time to ask for every other plugin).
    fn fetches(&self) -> bool {
        false
    }
    /// For webhooks that carry only ids: the default base URL and the path to GET for this
    /// event, or `None` when nothing is to be fetched.
    fn fetch_target(&self, _hook: &Webhook) -> Option<(String, String)> {
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Transactions were found.
    Parsed,
    /// A plugin recognised the message and it carries no transaction (statements, marketing).
    Ignored,
    /// No plugin claims it, or its plugin has no template for it: kept for re-parsing.
    Unmatched,
    /// The input is not a readable message, or a template matched but a field was unreadable.
    Error,
}

/// What parsing one message found; `lm-ingest parse` prints one per input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub status: Status,
    pub plugin: Option<String>,
    pub reason: Option<String>,
    pub transactions: Vec<Transaction>,
    /// Fields the matching template declares but found no capture for (they fell back to a
    /// default or were left out): how a change in a sender's template first shows. Counted per
    /// sender in the store (parser drift); not part of the printed outcome.
    #[serde(skip)]
    pub missing_fields: Vec<String>,
}

impl Outcome {
    pub fn parsed(plugin: &str, transactions: Vec<Transaction>) -> Self {
        Outcome {
            status: Status::Parsed,
            plugin: Some(plugin.to_owned()),
            reason: None,
            transactions,
            missing_fields: Vec::new(),
        }
    }

    pub fn ignored(plugin: &str, reason: &str) -> Self {
        Outcome {
            status: Status::Ignored,
            plugin: Some(plugin.to_owned()),
            reason: Some(reason.to_owned()),
            transactions: Vec::new(),
            missing_fields: Vec::new(),
        }
    }

    pub fn unmatched(plugin: Option<&str>, reason: impl Into<String>) -> Self {
        Outcome {
            status: Status::Unmatched,
            plugin: plugin.map(str::to_owned),
            reason: Some(reason.into()),
            transactions: Vec::new(),
            missing_fields: Vec::new(),
        }
    }

    pub fn error(plugin: Option<&str>, reason: impl Into<String>) -> Self {
        Outcome {
            status: Status::Error,
            plugin: plugin.map(str::to_owned),
            reason: Some(reason.into()),
            transactions: Vec::new(),
            missing_fields: Vec::new(),
        }
    }
}

pub const NO_PLUGIN_CLAIMS: &str = "no plugin claims this message";

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read plugin folder {path}: {source}")]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} invalid rule file entr{}:\n{}", .0.len(), if .0.len() == 1 { "y" } else { "ies" }, .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Rules(Vec<RuleError>),
}

/// All plugins, in the order they are tried: by id, built-in ones overridden by same-named files.
pub struct Registry {
    plugins: Vec<Box<dyn Plugin>>,
    /// Whether some plugin reads `EmailView::text` (`EmailOptions::text_needed`).
    text_needed: bool,
    /// Every header some plugin reads (lowercase, sorted, once each), or `None` when a plugin
    /// may read any (`EmailOptions::headers`).
    headers_read: Option<Vec<String>>,
}

impl Registry {
    /// The built-in plugins plus every `*.toml` in `folder`, which adds plugins or replaces a
    /// built-in one of the same id. Every invalid file is reported, not just the first.
    pub fn load(folder: Option<&Path>) -> Result<Registry, LoadError> {
        let mut sources: Vec<(String, String, String)> = builtin::EMBEDDED
            .iter()
            .map(|(id, text)| {
                (
                    format!("parsers/{id}.toml (built in)"),
                    (*id).to_owned(),
                    (*text).to_owned(),
                )
            })
            .collect();
        if let Some(folder) = folder {
            for (file, id, text) in read_folder(folder)? {
                sources.retain(|(_, existing, _)| existing != &id);
                sources.push((file, id, text));
            }
        }
        sources.sort_by(|a, b| a.1.cmp(&b.1));
        let mut plugins: Vec<Box<dyn Plugin>> = Vec::new();
        let mut errors = Vec::new();
        for (file, id, text) in sources {
            match rules::compile(&file, &id, &text) {
                Ok(rules) => plugins.push(Box::new(rules)),
                Err(mut e) => errors.append(&mut e),
            }
        }
        if errors.is_empty() {
            Ok(Registry {
                text_needed: plugins.iter().any(|p| p.reads_text()),
                headers_read: headers_read_by_any(&plugins),
                plugins,
            })
        } else {
            Err(LoadError::Rules(errors))
        }
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.plugins.iter().map(|p| p.id())
    }

    pub fn get(&self, id: &str) -> Option<&dyn Plugin> {
        self.plugins
            .iter()
            .find(|p| p.id() == id)
            .map(|p| p.as_ref())
    }

    /// How `parse_email` parses: only the parts some plugin reads.
    fn email_options(&self) -> EmailOptions<'_> {
        EmailOptions {
            text_needed: self.text_needed,
            // Looked for in `parse_email` only when no plugin claims the outer sender.
            quoted_original: false,
            headers: match &self.headers_read {
                Some(names) => HeadersNeeded::Named(names),
                None => HeadersNeeded::All,
            },
        }
    }

    /// Parses raw RFC 822 bytes. Never fails: unreadable input is an `error` outcome.
    pub fn parse_email(&self, raw: &[u8]) -> Outcome {
        match Email::parse_with(raw, self.email_options()) {
            Ok(mut email) => {
                // A quoted forward matters only when no plugin claims the outer sender, as in
                // `parse_parsed_email`; only then is the body searched for one.
                let from = email.envelope.from.as_deref().unwrap_or("");
                let claimant = self.claimant(from, &email.envelope.subject);
                if claimant.is_none() {
                    email.find_quoted_original();
                }
                self.parse_claimed_email(&email, claimant)
            }
            Err(e) => Outcome::error(None, e.to_string()),
        }
    }

    /// Mail is claimed by its own sender when a plugin takes it (delivered directly or
    /// auto-forwarded); otherwise by the sender of the original inside a forward. Checking the
    /// outer sender first means text inside a genuine notification (a payment note, say) can never
    /// pose as a forward from someone else.
    pub fn parse_parsed_email(&self, email: &Email) -> Outcome {
        let from = email.envelope.from.as_deref().unwrap_or("");
        self.parse_claimed_email(email, self.claimant(from, &email.envelope.subject))
    }

    /// `parse_parsed_email` with the plugin that claims the mail's own sender already looked up
    /// (`parse_email` needs it first, to decide whether to look for a quoted forward).
    fn parse_claimed_email(&self, email: &Email, claimant: Option<&dyn Plugin>) -> Outcome {
        let links: &[String] = &email.links;
        let direct = EmailView {
            from: email.envelope.from.as_deref().unwrap_or(""),
            subject: &email.envelope.subject,
            body: email.body_text().unwrap_or(""),
            text: email
                .text
                .as_deref()
                .or(email.html_text.as_deref())
                .unwrap_or(""),
            html: email.html_text.as_deref().unwrap_or(""),
            links,
            headers: &email.headers,
            sent: email.envelope.date,
        };
        if let Some(plugin) = claimant {
            return plugin.parse_email(&direct);
        }
        match &email.original {
            Some(Original::Attached(inner)) => {
                // The attachment is a whole message; parse it as if it had arrived itself.
                match self.parse_parsed_email(inner) {
                    outcome if outcome.status == Status::Unmatched && outcome.plugin.is_none() => {
                        Outcome::unmatched(None, NO_PLUGIN_CLAIMS)
                    }
                    outcome => outcome,
                }
            }
            Some(Original::Quoted(original)) => {
                let from = original.from.as_deref().unwrap_or("");
                let subject = original.subject.as_str();
                match self.claimant(from, subject) {
                    Some(plugin) => plugin.parse_email(&EmailView {
                        from,
                        subject,
                        sent: original.date.or(direct.sent),
                        ..direct
                    }),
                    None => Outcome::unmatched(None, NO_PLUGIN_CLAIMS),
                }
            }
            None => Outcome::unmatched(None, NO_PLUGIN_CLAIMS),
        }
    }

    /// Parses a webhook body for the named plugin.
    pub fn parse_webhook(
        &self,
        plugin: &str,
        headers: Vec<(String, String)>,
        raw: &[u8],
    ) -> Outcome {
        let Some(p) = self.get(plugin) else {
            return Outcome::error(None, format!("unknown plugin {plugin:?}"));
        };
        if p.kind() != Kind::Webhook {
            return Outcome::error(
                Some(plugin),
                format!("plugin {plugin:?} parses email, not webhooks"),
            );
        }
        match Webhook::parse(headers, raw) {
            Ok(hook) => p.parse_webhook(&hook),
            Err(e) => Outcome::error(Some(plugin), e.to_string()),
        }
    }

    fn claimant(&self, sender: &str, subject: &str) -> Option<&dyn Plugin> {
        if sender.is_empty() {
            return None;
        }
        self.plugins
            .iter()
            .find(|p| p.claims(sender, subject))
            .map(|p| p.as_ref())
    }
}

/// Every header one of `plugins` reads (sorted, once each), or `None` when one may read any.
fn headers_read_by_any(plugins: &[Box<dyn Plugin>]) -> Option<Vec<String>> {
    let mut all = Vec::new();
    for plugin in plugins {
        all.extend(plugin.headers_read()?);
    }
    all.sort_unstable();
    all.dedup();
    Some(all)
}

fn read_folder(folder: &Path) -> Result<Vec<(String, String, String)>, LoadError> {
    let folder_err = |source| LoadError::Folder {
        path: folder.to_owned(),
        source,
    };
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for entry in std::fs::read_dir(folder).map_err(folder_err)? {
        let path = entry.map_err(folder_err)?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let id = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        let file = path.display().to_string();
        match std::fs::read_to_string(&path) {
            Ok(text) => files.push((file, id, text)),
            Err(e) => errors.push(RuleError {
                file,
                field: String::new(),
                message: format!("cannot read: {e}"),
            }),
        }
    }
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(LoadError::Rules(errors))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Every `.eml` under `fixtures/`.
    /// Every fixture email (`fixtures/*/*.eml`) with its bytes, in path order.
    pub(crate) fn fixture_emails() -> Vec<(PathBuf, Vec<u8>)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        let mut out = Vec::new();
        for dir in std::fs::read_dir(&root).unwrap() {
            let dir = dir.unwrap().path();
            if !dir.is_dir() {
                continue;
            }
            for file in std::fs::read_dir(&dir).unwrap() {
                let path = file.unwrap().path();
                if path.extension().is_some_and(|e| e == "eml") {
                    let raw = std::fs::read(&path).unwrap();
                    out.push((path, raw));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn text_part_is_needed_only_when_a_loaded_plugin_reads_it() {
        let builtin = Registry::load(None).unwrap();
        assert!(!builtin.text_needed);
        assert!(!builtin.email_options().quoted_original);
        let reads_text = rules::compile(
            "t.toml",
            "t",
            r#"
kind = "email"
[claim]
senders = ["pay@example.com"]
[[template]]
name = "t"
require = [{ in = "text", regex = 'paid (?P<amount>\S+)' }]
"#,
        )
        .unwrap();
        assert!(reads_text.reads_text());
        let reads_body = rules::compile(
            "b.toml",
            "b",
            r#"
kind = "email"
[claim]
senders = ["pay@example.com"]
[[ignore]]
reason = "x"
when = [{ in = "body", regex = 'x' }]
[[template]]
name = "t"
require = [{ in = "subject", regex = 'paid (?P<amount>\S+)' }]
"#,
        )
        .unwrap();
        assert!(!reads_body.reads_text());
    }

    #[test]
    fn a_plugin_reading_text_still_sees_the_text_part() {
        let dir = std::env::temp_dir().join(format!("lm-ingest-text-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("plain.toml"),
            r#"
kind = "email"
[claim]
senders = ["pay@example.com"]
[[template]]
name = "t"
require = [{ in = "text", regex = 'plain paid (?P<amount>\S+)' }]
"#,
        )
        .unwrap();
        let registry = Registry::load(Some(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
        let registry = registry.unwrap();
        assert!(registry.text_needed);
        let raw = b"From: pay@example.com\r\nSubject: hi\r\nDate: Fri, 01 Mar 2024 23:30:00 +0000\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nplain paid $5.00\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>html paid $6.00</p>\r\n--b--\r\n";
        let outcome = registry.parse_email(raw);
        assert_eq!(outcome.status, Status::Parsed, "{outcome:?}");
        assert_eq!(outcome.transactions[0].amount.as_str(), "5.00");
    }

    /// The built-in plugins and one rule file `{id}.toml` holding `text`, loaded from a folder
    /// as the service loads them.
    fn registry_with(id: &str, text: &str) -> Registry {
        let dir = std::env::temp_dir().join(format!("lm-ingest-{id}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{id}.toml")), text).unwrap();
        let registry = Registry::load(Some(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
        registry.unwrap()
    }

    /// Reads `header:x-custom` in a template and `header:X-Reason` (any case) in an ignore rule.
    const READS_CUSTOM_HEADERS: &str = r#"
kind = "email"
[claim]
senders = ["pay@example.com"]
[[ignore]]
reason = "{why}"
when = [{ in = "header:X-Reason", regex = '(?P<why>.+)' }]
[[template]]
name = "t"
require = [{ in = "header:x-custom", regex = 'paid (?P<amount>\S+)' }]
"#;

    /// `email` with only the headers `needed` keeps, here and in an attached original: what a
    /// parse with `needed` must give.
    fn only_headers(mut email: Email, needed: HeadersNeeded<'_>) -> Email {
        email.headers.retain(|(name, _)| needed.includes(name));
        if let Some(Original::Attached(inner)) = email.original {
            email.original = Some(Original::Attached(Box::new(only_headers(*inner, needed))));
        }
        email
    }

    #[test]
    fn lean_parse_gives_the_outcomes_of_a_full_parse_on_every_fixture() {
        let builtin = Registry::load(None).unwrap();
        let custom = registry_with("custom", READS_CUSTOM_HEADERS);
        let emails = fixture_emails();
        assert!(emails.len() >= 20, "{} fixtures", emails.len());
        let mut headers_left_out = 0;
        for registry in [&builtin, &custom] {
            let needed = registry.email_options().headers;
            assert!(matches!(needed, HeadersNeeded::Named(_)), "{needed:?}");
            for (path, raw) in &emails {
                let parsed = Email::parse(raw);
                let full = match &parsed {
                    Ok(email) => registry.parse_parsed_email(email),
                    Err(e) => Outcome::error(None, e.to_string()),
                };
                assert_eq!(registry.parse_email(raw), full, "{}", path.display());
                // Leaving headers out changes nothing else, in the attached original too.
                let only_needed = EmailOptions {
                    headers: needed,
                    ..EmailOptions::default()
                };
                let lean = Email::parse_with(raw, only_needed);
                if let (Ok(full), Ok(lean)) = (&parsed, &lean) {
                    headers_left_out += full.headers.len() - lean.headers.len();
                }
                assert_eq!(
                    lean,
                    parsed.map(|full| only_headers(full, needed)),
                    "{}",
                    path.display()
                );
            }
        }
        assert!(headers_left_out > emails.len(), "{headers_left_out}");
    }

    #[test]
    fn headers_read_are_every_header_a_finder_names() {
        let builtin = Registry::load(None).unwrap();
        assert_eq!(
            builtin.headers_read.as_deref(),
            Some(&["list-unsubscribe".to_owned()][..])
        );
        let custom = registry_with("custom", READS_CUSTOM_HEADERS);
        assert_eq!(
            custom.headers_read.as_deref(),
            Some(&["list-unsubscribe", "x-custom", "x-reason"].map(str::to_owned)[..])
        );
        // Optional finders, shared and per template, negated ones, and webhook rules that read
        // request headers (which are not email headers).
        let optional = rules::compile(
            "o.toml",
            "o",
            r#"
kind = "email"
optional = [{ in = "header:X-Shared", regex = '(?P<notes>.+)' }]
[claim]
senders = ["pay@example.com"]
[[template]]
name = "t"
require = [{ in = "subject", regex = 'paid (?P<amount>\S+)' }, { in = "header:X-Not", regex = 'x', negate = true }]
optional = [{ in = "header:x-template", regex = '(?P<payee>.+)' }]
"#,
        )
        .unwrap();
        let mut read = optional.headers_read().unwrap();
        read.sort();
        assert_eq!(read, ["x-not", "x-shared", "x-template"]);
        let webhook = rules::compile(
            "w.toml",
            "w",
            r#"
kind = "webhook"
[[template]]
name = "t"
require = [{ pointer = "/amount", capture = "amount" }, { in = "header:x-event", regex = 'paid' }]
"#,
        )
        .unwrap();
        assert_eq!(webhook.headers_read(), Some(Vec::new()));
    }

    #[test]
    fn a_plugin_that_may_read_any_header_gets_them_all() {
        /// A plugin written in Rust that says nothing about the headers it reads.
        struct InRust;
        impl Plugin for InRust {
            fn id(&self) -> &str {
                "in-rust"
            }
            fn kind(&self) -> Kind {
                Kind::Email
            }
            fn claims(&self, _: &str, _: &str) -> bool {
                false
            }
            fn parse_email(&self, _: &EmailView<'_>) -> Outcome {
                Outcome::unmatched(Some("in-rust"), "")
            }
            fn parse_webhook(&self, _: &Webhook) -> Outcome {
                Outcome::unmatched(Some("in-rust"), "")
            }
        }
        let rules = rules::compile("c.toml", "c", READS_CUSTOM_HEADERS).unwrap();
        let rules_only: Vec<Box<dyn Plugin>> = vec![Box::new(rules.clone())];
        assert_eq!(
            headers_read_by_any(&rules_only),
            Some(vec!["x-custom".to_owned(), "x-reason".to_owned()])
        );
        let with_rust: Vec<Box<dyn Plugin>> = vec![Box::new(rules), Box::new(InRust)];
        assert_eq!(headers_read_by_any(&with_rust), None);
        let registry = Registry {
            headers_read: headers_read_by_any(&with_rust),
            text_needed: true,
            plugins: with_rust,
        };
        assert_eq!(registry.email_options().headers, HeadersNeeded::All);
    }

    #[test]
    fn a_plugin_reading_a_header_gets_it_from_a_lean_parse() {
        let registry = registry_with("custom", READS_CUSTOM_HEADERS);
        // Headers the plugin reads, in any case, among ones no plugin reads.
        let raw = b"Received: from mx.example.com\r\nDKIM-Signature: v=1; a=rsa-sha256; d=example.com\r\nFrom: pay@example.com\r\nX-CUSTOM: paid\r\n  $5.00\r\nSubject: hi\r\nDate: Fri, 01 Mar 2024 23:30:00 +0000\r\nContent-Type: text/plain\r\n\r\nbody\r\n";
        let outcome = registry.parse_email(raw);
        assert_eq!(outcome.status, Status::Parsed, "{outcome:?}");
        assert_eq!(outcome.transactions[0].amount.as_str(), "5.00");
        let lean = Email::parse_with(raw, registry.email_options()).unwrap();
        assert_eq!(
            lean.headers,
            [
                ("from", "pay@example.com"),
                ("x-custom", "paid $5.00"),
                ("subject", "hi"),
                ("date", "Fri, 01 Mar 2024 23:30:00 +0000"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        // In an attached original, and in an ignore rule's reason.
        let attached = b"From: me@example.com\r\nSubject: Fwd\r\nContent-Type: multipart/mixed; boundary=z\r\n\r\n--z\r\nContent-Type: message/rfc822\r\n\r\nFrom: pay@example.com\r\nX-Reason: a statement\r\nX-Custom: paid $5.00\r\nSubject: hi\r\n\r\nbody\r\n--z--\r\n";
        let outcome = registry.parse_email(attached);
        assert_eq!(outcome.status, Status::Ignored, "{outcome:?}");
        assert_eq!(outcome.reason.as_deref(), Some("a statement"));
    }
}

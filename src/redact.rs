//! Redacting a real email into a fixture (`lm-ingest fixture add --redact`): personal data out,
//! the template's structure (labels, amounts, dates, the sender) kept, the MIME still valid.
//!
//! What goes, and what it becomes:
//! - headers that trace delivery or identify the recipient: `Delivered-To`, `Received*`,
//!   `Return-Path`, `X-Forwarded-*`, `X-Original-To`, `Envelope-To`, DKIM and ARC signatures,
//!   `Authentication-Results`, provider headers (`X-Google-*`, `X-Gm-*`, `X-MS-Exchange-*`, …),
//!   `In-Reply-To`, `References`: dropped (`List-Unsubscribe` stays, redacted like text: rules
//!   tell marketing by it);
//! - `To`, `Cc`, `Bcc`, `Reply-To`, `Sender`, and `From` when it is not the sender's own (a
//!   forward's `From` is the forwarder): `Recipient <recipient@example.com>` /
//!   `Forwarder <forwarder@example.com>`; their display names are also redacted wherever they
//!   appear ("Hi Jane");
//! - `Message-ID`: a stable stand-in at the sender's domain;
//! - in every text part and kept header: email addresses not at the sender's domain →
//!   `someone@example.com`; the words given (`--redact-word`, whole words, any case) →
//!   `Redacted`; digit runs of 7 or more digits (also in groups of 3+ separated by a space or
//!   `-`, as card, account and phone numbers are written) → zeros but the last 4;
//! - attachments that are not text or a forwarded message: emptied.
//!
//! Text parts are decoded (quoted-printable, base64, any charset), redacted and re-encoded as
//! UTF-8 in their original transfer encoding; the multipart structure and boundaries stay.
//! Preambles and epilogues of multiparts (never read by rules) are dropped.

use std::collections::BTreeSet;

use base64::Engine as _;
use mailparse::{MailHeader, MailHeaderMap, ParsedMail};
use regex::Regex;
use sha2::{Digest, Sha256};

use crate::message::Email;
use crate::store::sender_domain;

/// Headers dropped whole (lowercase names, or prefixes ending in `-`).
const DROPPED: &[&str] = &[
    "delivered-to",
    "received",
    "received-spf",
    "return-path",
    "x-forwarded-",
    "x-original-to",
    "x-original-from",
    "envelope-to",
    "x-envelope-",
    "dkim-signature",
    "x-google-dkim-signature",
    "arc-",
    "authentication-results",
    "x-received",
    "x-google-",
    "x-gm-",
    "x-gmail-",
    "x-ms-",
    "x-microsoft-",
    "x-originating-ip",
    "x-apple-",
    "x-mailgun-",
    "in-reply-to",
    "references",
    "thread-index",
    "thread-topic",
];

/// Address headers whose people are replaced.
const RECIPIENT_HEADERS: &[&str] = &["to", "cc", "bcc", "reply-to", "sender"];

#[derive(Debug, thiserror::Error)]
pub enum RedactError {
    #[error("not a readable email: {0}")]
    Unreadable(String),
}

/// What to redact beyond the rules above.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Words to redact wherever they appear (names, a street, an employer).
    pub words: Vec<String>,
}

/// The redacted message and what was found to redact.
#[derive(Debug, Clone)]
pub struct Redacted {
    pub raw: Vec<u8>,
    /// The sender's domain, whose addresses were kept.
    pub sender_domain: String,
    /// Every word redacted: the ones given and the display names found in headers.
    pub words: Vec<String>,
}

struct Redactor {
    sender_domain: String,
    words: Option<Regex>,
    emails: Regex,
    digits: Regex,
}

pub fn redact_email(raw: &[u8], options: &Options) -> Result<Redacted, RedactError> {
    let email = Email::parse(raw).map_err(|e| RedactError::Unreadable(e.to_string()))?;
    let sender = email
        .original_envelope()
        .and_then(|e| e.from.as_deref())
        .or(email.envelope.from.as_deref());
    let domain = sender_domain(sender);
    let parsed = mailparse::parse_mail(raw).map_err(|e| RedactError::Unreadable(e.to_string()))?;
    let mut words: BTreeSet<String> = options
        .words
        .iter()
        .map(|w| w.trim().to_owned())
        .filter(|w| !w.is_empty())
        .collect();
    collect_names(&parsed, &domain, &mut words);
    let words: Vec<String> = words.into_iter().collect();
    let redactor = Redactor::new(domain.clone(), &words);
    let mut out = Vec::with_capacity(raw.len());
    redactor.write_part(&parsed, &mut out, true);
    Ok(Redacted {
        raw: out,
        sender_domain: domain,
        words,
    })
}

/// Display names of the people in address headers (recipients, a forwarder), word by word, to be
/// redacted from bodies too. Forwarded attachments are looked into as well.
fn collect_names(part: &ParsedMail<'_>, domain: &str, words: &mut BTreeSet<String>) {
    for header in &part.headers {
        let name = header.get_key().to_ascii_lowercase();
        let is_people = RECIPIENT_HEADERS.contains(&name.as_str())
            || name == "from"
            || name == "delivered-to"
            || name.starts_with("x-forwarded-");
        if !is_people {
            continue;
        }
        let Ok(list) = mailparse::addrparse_header(header) else {
            continue;
        };
        for addr in list.iter() {
            let singles: Vec<&mailparse::SingleInfo> = match addr {
                mailparse::MailAddr::Single(s) => vec![s],
                mailparse::MailAddr::Group(g) => g.addrs.iter().collect(),
            };
            for single in singles {
                if at_domain(&single.addr, domain) {
                    continue;
                }
                for word in single
                    .display_name
                    .iter()
                    .flat_map(|n| n.split_whitespace())
                {
                    let word = word.trim_matches(|c: char| !c.is_alphanumeric());
                    if word.chars().count() >= 3 && word.chars().all(char::is_alphabetic) {
                        words.insert(word.to_owned());
                    }
                }
            }
        }
    }
    for sub in &part.subparts {
        collect_names(sub, domain, words);
    }
}

fn at_domain(address: &str, domain: &str) -> bool {
    let Some((_, host)) = address.rsplit_once('@') else {
        return false;
    };
    let host = host.trim_end_matches('>').to_ascii_lowercase();
    domain != "unknown" && (host == domain || host.ends_with(&format!(".{domain}")))
}

impl Redactor {
    fn new(sender_domain: String, words: &[String]) -> Self {
        let words = (!words.is_empty()).then(|| {
            let alternatives: Vec<String> = words.iter().map(|w| regex::escape(w)).collect();
            Regex::new(&format!(r"(?i)\b(?:{})\b", alternatives.join("|")))
                .expect("escaped words form a valid pattern")
        });
        Redactor {
            sender_domain,
            words,
            emails: Regex::new(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+")
                .expect("valid pattern"),
            digits: Regex::new(r"\b\d{3,}(?:[ \-]\d{3,})*\b").expect("valid pattern"),
        }
    }

    /// Addresses, words and long numbers out of `text`.
    fn text(&self, text: &str) -> String {
        let text = self.emails.replace_all(text, |c: &regex::Captures<'_>| {
            if at_domain(&c[0], &self.sender_domain) {
                c[0].to_owned()
            } else {
                "someone@example.com".to_owned()
            }
        });
        let text = match &self.words {
            Some(words) => words.replace_all(&text, "Redacted").into_owned(),
            None => text.into_owned(),
        };
        self.digits
            .replace_all(&text, |c: &regex::Captures<'_>| keep_last_four(&c[0]))
            .into_owned()
    }

    fn write_part(&self, part: &ParsedMail<'_>, out: &mut Vec<u8>, top: bool) {
        let mimetype = part.ctype.mimetype.to_ascii_lowercase();
        let is_text = mimetype.starts_with("text/");
        let is_multipart = mimetype.starts_with("multipart/") && !part.subparts.is_empty();
        let encoding = part
            .headers
            .get_first_value("Content-Transfer-Encoding")
            .map(|e| e.trim().to_ascii_lowercase())
            .unwrap_or_default();
        for header in &part.headers {
            self.write_header(header, out, top, is_text);
        }
        if is_multipart {
            out.extend_from_slice(b"\r\n");
            let boundary = part
                .ctype
                .params
                .get("boundary")
                .cloned()
                .unwrap_or_default();
            for sub in &part.subparts {
                out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
                self.write_part(sub, out, false);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
            return;
        }
        let body: Vec<u8> = if is_text {
            let text = part.get_body().unwrap_or_default();
            self.text(&text).into_bytes()
        } else if mimetype == "message/rfc822" {
            let inner = part.get_body_raw().unwrap_or_default();
            match mailparse::parse_mail(&inner) {
                Ok(inner) => {
                    let mut redacted = Vec::new();
                    self.write_part(&inner, &mut redacted, true);
                    redacted
                }
                Err(_) => Vec::new(),
            }
        } else {
            // Images, PDFs, …: rules never read them, and they may carry anything.
            Vec::new()
        };
        out.extend_from_slice(b"\r\n");
        match encoding.as_str() {
            "base64" => out.extend_from_slice(&wrapped_base64(&body)),
            "quoted-printable" => out.extend_from_slice(quoted_printable(&body).as_bytes()),
            _ => out.extend_from_slice(&crlf(&body)),
        }
    }

    fn write_header(&self, header: &MailHeader<'_>, out: &mut Vec<u8>, top: bool, is_text: bool) {
        let key = header.get_key();
        let name = key.to_ascii_lowercase();
        if DROPPED
            .iter()
            .any(|d| name == *d || (d.ends_with('-') && name.starts_with(d)))
        {
            return;
        }
        let value = match name.as_str() {
            "content-type" if is_text => {
                // The body is re-encoded as UTF-8; other parameters (format, name) stay.
                let parsed = mailparse::parse_content_type(&header.get_value());
                let mut value = format!("{}; charset=\"utf-8\"", parsed.mimetype);
                for (k, v) in &parsed.params {
                    if k != "charset" {
                        value.push_str(&format!("; {k}=\"{}\"", self.text(v)));
                    }
                }
                value
            }
            // Structure headers as they were (the boundary must not change).
            "content-type" | "content-transfer-encoding" | "mime-version" => {
                String::from_utf8_lossy(header.get_value_raw()).into_owned()
            }
            "message-id" | "content-id" => {
                let digest = Sha256::digest(header.get_value().as_bytes());
                let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
                let host = if self.sender_domain == "unknown" {
                    "example.com"
                } else {
                    &self.sender_domain
                };
                format!("<fixture-{hex}@{host}>")
            }
            "from" if top && !self.all_at_sender(header) => {
                "Forwarder <forwarder@example.com>".to_owned()
            }
            n if RECIPIENT_HEADERS.contains(&n) && !self.all_at_sender(header) => {
                "Recipient <recipient@example.com>".to_owned()
            }
            _ => self.text(&header.get_value()),
        };
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(encode_header(&value).as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    /// Whether every address in the header is at the sender's domain (then it is no one's
    /// personal address and stays).
    fn all_at_sender(&self, header: &MailHeader<'_>) -> bool {
        match mailparse::addrparse_header(header) {
            Ok(list) => {
                !list.is_empty()
                    && list.iter().all(|a| match a {
                        mailparse::MailAddr::Single(s) => at_domain(&s.addr, &self.sender_domain),
                        mailparse::MailAddr::Group(g) => g
                            .addrs
                            .iter()
                            .all(|s| at_domain(&s.addr, &self.sender_domain)),
                    })
            }
            Err(_) => false,
        }
    }
}

/// `4111 1111 1111 1234` → `0000 0000 0000 1234`: separators and the last 4 digits stay, so
/// the text keeps its shape (an id regex such as `\d+` still matches). Runs of fewer than 7
/// digits (years, amounts, ZIP codes) are left alone.
fn keep_last_four(run: &str) -> String {
    let digits = run.chars().filter(char::is_ascii_digit).count();
    if digits < 7 {
        return run.to_owned();
    }
    let mut seen = 0;
    run.chars()
        .map(|c| {
            if c.is_ascii_digit() {
                seen += 1;
                if seen <= digits - 4 {
                    return '0';
                }
            }
            c
        })
        .collect()
}

/// Plain ASCII as it is; anything else as an RFC 2047 UTF-8 encoded word.
fn encode_header(value: &str) -> String {
    let value = value.replace(['\r', '\n'], " ");
    if value.is_ascii() {
        value
    } else {
        format!(
            "=?utf-8?b?{}?=",
            base64::engine::general_purpose::STANDARD.encode(value.as_bytes())
        )
    }
}

/// Line breaks as CRLF.
fn crlf(body: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(body);
    let mut out = text.replace("\r\n", "\n").replace('\n', "\r\n");
    if !out.ends_with("\r\n") {
        out.push_str("\r\n");
    }
    out.into_bytes()
}

fn wrapped_base64(body: &[u8]) -> Vec<u8> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(body);
    let mut out = Vec::with_capacity(encoded.len() + encoded.len() / 38 + 2);
    for line in encoded.as_bytes().chunks(76) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Quoted-printable (RFC 2045 §6.7): line breaks kept as CRLF, lines at most 76 characters
/// with soft breaks, `=`, non-ASCII, control characters and trailing whitespace encoded.
fn quoted_printable(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body).replace("\r\n", "\n");
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for line in text.split('\n') {
        let bytes = line.as_bytes();
        let mut width = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let last = i + 1 == bytes.len();
            let plain = (b == b'\t' || b == b' ' || (33..=126).contains(&b)) && b != b'=';
            let token = if plain && !((b == b' ' || b == b'\t') && last) {
                (b as char).to_string()
            } else {
                format!("={b:02X}")
            };
            if width + token.len() > 75 {
                out.push_str("=\r\n");
                width = 0;
            }
            out.push_str(&token);
            width += token.len();
        }
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_numbers_keep_their_last_four_and_their_shape() {
        assert_eq!(keep_last_four("4111 1111 1111 1234"), "0000 0000 0000 1234");
        assert_eq!(keep_last_four("555-867-5309"), "000-000-5309");
        assert_eq!(keep_last_four("3981736402915738461"), "0000000000000008461");
        assert_eq!(keep_last_four("94110"), "94110");
        let r = Redactor::new("venmo.com".into(), &["Jane".into()]);
        assert_eq!(
            r.text("Jane paid $1,234.56 on 2024-03-01 to card 4111111111111234; jane@gmail.com, venmo@venmo.com"),
            "Redacted paid $1,234.56 on 2024-03-01 to card 0000000000001234; someone@example.com, venmo@venmo.com"
        );
    }

    #[test]
    fn quoted_printable_round_trips_through_mailparse() {
        let text = format!("Olá = {} \nend\t\n", "x".repeat(200));
        let encoded = quoted_printable(text.as_bytes());
        assert!(encoded.lines().all(|l| l.len() <= 76), "{encoded}");
        let raw = format!("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n{encoded}");
        let parsed = mailparse::parse_mail(raw.as_bytes()).unwrap();
        assert_eq!(
            parsed.get_body().unwrap().replace("\r\n", "\n"),
            text + "\n"
        );
    }
}

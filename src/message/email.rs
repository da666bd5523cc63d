//! Emails as the parse engine sees them: decoded headers, text and rendered HTML bodies, and the
//! original message inside a forward.

use chrono::DateTime;
use mailparse::{MailHeaderMap, ParsedMail};

use super::forward::{self, ForwardedHeader};
use super::html;
use super::MessageTime;

/// How deep MIME nesting is followed. Real mail nests three or four levels; hostile mail nests
/// thousands to exhaust the stack.
const MAX_PART_DEPTH: usize = 32;
/// How many multipart boundaries a message may declare. mailparse recurses once per nested
/// multipart and overflows the stack at a few thousand levels, so hostile nesting is refused before
/// it gets there; real mail declares a handful.
const MAX_BOUNDARIES: usize = 100;
/// How many attached messages deep a forward is unwrapped.
const MAX_ATTACHED_DEPTH: usize = 3;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("empty message")]
    Empty,
    #[error("not an email: no header lines")]
    NoHeaders,
    #[error("malformed MIME: {0}")]
    Malformed(String),
}

/// Who sent a message, and when, and what it was called.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    /// Lowercase address of the first `From` mailbox.
    pub from: Option<String>,
    pub from_name: Option<String>,
    pub subject: String,
    pub date: Option<MessageTime>,
    pub message_id: Option<String>,
}

/// The message a forward carries, as far as the forward reveals it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Original {
    /// Attached whole (`message/rfc822`): every field is as the sender wrote it.
    Attached(Box<Email>),
    /// Quoted inline under a header block written by the forwarding mail client.
    Quoted(Envelope),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    pub envelope: Envelope,
    /// Header names lowercased, values RFC 2047-decoded, in order.
    pub headers: Vec<(String, String)>,
    /// The first `text/plain` body, if any.
    pub text: Option<String>,
    /// The first `text/html` body rendered to text, if any.
    pub html_text: Option<String>,
    /// Link targets in the HTML body.
    pub links: Vec<String>,
    pub original: Option<Original>,
}

impl Email {
    pub fn parse(raw: &[u8]) -> Result<Email, EmailError> {
        Self::parse_nested(raw, 0)
    }

    fn parse_nested(raw: &[u8], attached_depth: usize) -> Result<Email, EmailError> {
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Err(EmailError::Empty);
        }
        if boundary_count(raw) > MAX_BOUNDARIES {
            return Err(EmailError::Malformed(format!(
                "more than {MAX_BOUNDARIES} multipart boundaries"
            )));
        }
        let parsed =
            mailparse::parse_mail(raw).map_err(|e| EmailError::Malformed(e.to_string()))?;
        if !parsed
            .headers
            .iter()
            .any(|h| is_field_name(&h.get_key_ref()))
        {
            return Err(EmailError::NoHeaders);
        }
        let headers: Vec<(String, String)> = parsed
            .headers
            .iter()
            .map(|h| (h.get_key().to_ascii_lowercase(), h.get_value()))
            .collect();
        let envelope = envelope_of(&parsed);
        let mut bodies = Bodies::default();
        collect_bodies(&parsed, 0, &mut bodies);
        let rendered = bodies.html.as_deref().map(html::render);
        let mut email = Email {
            envelope,
            headers,
            text: bodies.text,
            html_text: None,
            links: Vec::new(),
            original: None,
        };
        if let Some(r) = rendered {
            email.html_text = Some(r.text);
            email.links = r.links;
        }
        if attached_depth < MAX_ATTACHED_DEPTH {
            if let Some(inner) = bodies.attached_message {
                if let Ok(original) = Email::parse_nested(&inner, attached_depth + 1) {
                    email.original = Some(Original::Attached(Box::new(original)));
                }
            }
        }
        if email.original.is_none() {
            email.original = email
                .body_text()
                .and_then(forward::find_forwarded_header)
                .map(|h: ForwardedHeader| Original::Quoted(h.into_envelope()));
        }
        Ok(email)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// What a reader sees: the rendered HTML when there is HTML, else the plain text.
    pub fn body_text(&self) -> Option<&str> {
        self.html_text.as_deref().or(self.text.as_deref())
    }

    /// The envelope of the message the sender of this mail wrote: the forwarded original when
    /// there is one, else this mail's own.
    pub fn original_envelope(&self) -> Option<&Envelope> {
        match &self.original {
            Some(Original::Attached(inner)) => Some(&inner.envelope),
            Some(Original::Quoted(envelope)) => Some(envelope),
            None => None,
        }
    }
}

#[derive(Default)]
struct Bodies {
    text: Option<String>,
    html: Option<String>,
    attached_message: Option<Vec<u8>>,
}

fn collect_bodies(part: &ParsedMail<'_>, depth: usize, out: &mut Bodies) {
    if depth > MAX_PART_DEPTH {
        return;
    }
    let mimetype = part.ctype.mimetype.to_ascii_lowercase();
    let is_attachment = part
        .headers
        .get_first_value("Content-Disposition")
        .is_some_and(|d| {
            d.trim_start()
                .to_ascii_lowercase()
                .starts_with("attachment")
        });
    match mimetype.as_str() {
        "message/rfc822" if out.attached_message.is_none() => {
            out.attached_message = part.get_body_raw().ok();
        }
        _ if mimetype.starts_with("multipart/") => {
            for sub in &part.subparts {
                collect_bodies(sub, depth + 1, out);
            }
        }
        "text/plain" if !is_attachment && out.text.is_none() => {
            out.text = part.get_body().ok().map(|t| normalize_newlines(&t));
        }
        "text/html" if !is_attachment && out.html.is_none() => {
            out.html = part.get_body().ok();
        }
        _ => {}
    }
}

fn boundary_count(raw: &[u8]) -> usize {
    static BOUNDARY: std::sync::LazyLock<regex::bytes::Regex> =
        std::sync::LazyLock::new(|| regex::bytes::Regex::new(r"(?i)boundary\s*=").unwrap());
    BOUNDARY.find_iter(raw).take(MAX_BOUNDARIES + 1).count()
}

/// RFC 5322 field names are printable ASCII without `:`; junk that mailparse reads as a header
/// line has control bytes or nothing at all.
fn is_field_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

fn normalize_newlines(text: &str) -> String {
    if text.contains('\r') {
        text.replace("\r\n", "\n").replace('\r', "\n")
    } else {
        text.to_owned()
    }
}

fn envelope_of(parsed: &ParsedMail<'_>) -> Envelope {
    let h = &parsed.headers;
    let (from, from_name) = h
        .get_first_header("From")
        .map(|from| parse_from(&from.get_value()))
        .unwrap_or((None, None));
    Envelope {
        from,
        from_name,
        subject: h.get_first_value("Subject").unwrap_or_default(),
        date: h
            .get_first_value("Date")
            .and_then(|d| mailparse::dateparse(&d).ok())
            .and_then(|ts| DateTime::from_timestamp(ts, 0))
            .map(MessageTime::Utc),
        message_id: h
            .get_first_value("Message-ID")
            .map(|id| {
                id.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned()
            })
            .filter(|id| !id.is_empty()),
    }
}

/// The address and display name of the first mailbox in a `From` value. Falls back to the first
/// thing shaped like an address, since forwards and broken mailers write `From` loosely.
pub(crate) fn parse_from(value: &str) -> (Option<String>, Option<String>) {
    if let Ok(list) = mailparse::addrparse(value) {
        for addr in list.iter() {
            match addr {
                mailparse::MailAddr::Single(info) if info.addr.contains('@') => {
                    return (
                        Some(info.addr.trim().to_ascii_lowercase()),
                        info.display_name.clone().filter(|n| !n.is_empty()),
                    );
                }
                mailparse::MailAddr::Group(group) => {
                    if let Some(info) = group.addrs.first() {
                        return (Some(info.addr.trim().to_ascii_lowercase()), None);
                    }
                }
                _ => {}
            }
        }
    }
    (forward::first_address(value), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_headers_bodies_and_html() {
        let raw = b"From: =?UTF-8?Q?Jos=C3=A9?= <Venmo@Venmo.com>\r\nSubject: =?UTF-8?B?Sm9zw6kgcGFpZCB5b3U=?=\r\nDate: Fri, 01 Mar 2024 23:30:00 +0000\r\nMessage-ID: <abc@x>\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nCaf=E9 =\r\nnote\r\n--b\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\nPHA+SGk8L3A+PGEgaHJlZj0iaHR0cHM6Ly92ZW5tby5jb20vc3RvcnkvMSI+czwvYT4=\r\n--b--\r\n";
        let email = Email::parse(raw).unwrap();
        assert_eq!(email.envelope.from.as_deref(), Some("venmo@venmo.com"));
        assert_eq!(email.envelope.from_name.as_deref(), Some("José"));
        assert_eq!(email.envelope.subject, "José paid you");
        assert_eq!(email.envelope.message_id.as_deref(), Some("abc@x"));
        assert_eq!(
            email.envelope.date.unwrap().utc().unwrap().to_rfc3339(),
            "2024-03-01T23:30:00+00:00"
        );
        assert_eq!(email.text.as_deref(), Some("Café note"));
        assert_eq!(email.html_text.as_deref(), Some("Hi\ns"));
        assert_eq!(email.links, vec!["https://venmo.com/story/1"]);
        assert!(email.original.is_none());
    }

    #[test]
    fn rejects_what_is_not_mail() {
        assert_eq!(Email::parse(b""), Err(EmailError::Empty));
        assert_eq!(Email::parse(b"  \r\n"), Err(EmailError::Empty));
        assert!(Email::parse(b"\x00\x01\x02\xff\xfe binary").is_err());
    }

    #[test]
    fn attached_original_is_unwrapped() {
        let raw = b"From: me@example.com\nSubject: Fwd\nContent-Type: multipart/mixed; boundary=z\n\n--z\nContent-Type: text/plain\n\nsee attached\n--z\nContent-Type: message/rfc822\nContent-Disposition: attachment\n\nFrom: Venmo <venmo@venmo.com>\nSubject: Jane paid you $5.00\n\nbody\n--z--\n";
        let email = Email::parse(raw).unwrap();
        let original = email.original_envelope().unwrap();
        assert_eq!(original.from.as_deref(), Some("venmo@venmo.com"));
        assert_eq!(original.subject, "Jane paid you $5.00");
    }

    #[test]
    fn hostile_multipart_nesting_parses_without_exhausting_the_stack() {
        let mut raw = String::from("From: a@b.c\n");
        for i in 0..20_000 {
            raw.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n"
            ));
        }
        raw.push_str("Content-Type: text/plain\n\ndeep\n");
        assert_eq!(
            Email::parse(raw.as_bytes()),
            Err(EmailError::Malformed(
                "more than 100 multipart boundaries".into()
            ))
        );
        // Right at the limit mailparse's recursion fits easily in a test thread's 2 MiB stack.
        let mut raw = String::from("From: a@b.c\n");
        for i in 0..MAX_BOUNDARIES {
            raw.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n"
            ));
        }
        raw.push_str("Content-Type: text/plain\n\ndeep\n");
        let email = Email::parse(raw.as_bytes()).unwrap();
        assert_eq!(email.envelope.from.as_deref(), Some("a@b.c"));
    }
}

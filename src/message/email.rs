//! Emails as the parse engine sees them: decoded headers, text and rendered HTML bodies, and the
//! original message inside a forward.

use std::borrow::Cow;

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

/// What a caller needs from a parse; anything else may be left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmailOptions<'a> {
    /// Whether `Email.text` is wanted when the email has an HTML body. When false and there is
    /// HTML, the `text/plain` part is not decoded and `text` is `None`; without HTML the text is
    /// always decoded, since it is then the body (`body_text`) that forwards are found in.
    pub text_needed: bool,
    /// Whether to look for a forwarded header block in the body (`Original::Quoted`) now. When
    /// false, `original` is set only for an attached message, and `find_quoted_original` does the
    /// rest if the caller turns out to need it. Attached messages are always searched.
    pub quoted_original: bool,
    /// Which headers go into `Email.headers` (the envelope is always read in full).
    pub headers: HeadersNeeded<'a>,
}

impl Default for EmailOptions<'_> {
    /// Every part, as `Email::parse` reads it.
    fn default() -> Self {
        EmailOptions {
            text_needed: true,
            quoted_original: true,
            headers: HeadersNeeded::All,
        }
    }
}

/// The headers `envelope_of` reads, lowercase: always decoded.
const ENVELOPE_HEADERS: [&str; 4] = ["from", "subject", "date", "message-id"];

/// Which headers a parse decodes into `Email.headers`. A notification carries two dozen headers
/// (`Received`, `DKIM-Signature`, `ARC-*`...), and decoding each into two strings was a few
/// percent of the registry's whole parse, which reads only a handful of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadersNeeded<'a> {
    /// Every header, in order.
    All,
    /// Only those named here (lowercase) and the envelope's (`From`, `Subject`, `Date`,
    /// `Message-ID`), in their order in the message; other headers are left undecoded.
    Named(&'a [String]),
}

impl HeadersNeeded<'_> {
    /// Whether a header called `name` (any case) is decoded. Compared in place, so a header
    /// left out costs no allocation.
    pub fn includes(&self, name: &str) -> bool {
        match self {
            HeadersNeeded::All => true,
            HeadersNeeded::Named(names) => {
                ENVELOPE_HEADERS
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(name))
                    || names.iter().any(|n| n.eq_ignore_ascii_case(name))
            }
        }
    }
}

impl Email {
    /// Parses every part (`EmailOptions::default()`).
    pub fn parse(raw: &[u8]) -> Result<Email, EmailError> {
        Self::parse_with(raw, EmailOptions::default())
    }

    /// Parses what `options` asks for: see `EmailOptions`.
    pub fn parse_with(raw: &[u8], options: EmailOptions<'_>) -> Result<Email, EmailError> {
        Self::parse_nested(raw, 0, false, options)
    }

    /// `within_checked`: `raw` is a slice of a message whose boundaries were already counted.
    /// Every declaration in a slice is one in the whole message, so the count cannot be over
    /// the limit and is not made again.
    fn parse_nested(
        raw: &[u8],
        attached_depth: usize,
        within_checked: bool,
        options: EmailOptions<'_>,
    ) -> Result<Email, EmailError> {
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Err(EmailError::Empty);
        }
        if !within_checked && too_many_boundaries(raw) {
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
            .filter_map(|h| {
                let key = h.get_key_ref();
                options
                    .headers
                    .includes(&key)
                    .then(|| (key.to_ascii_lowercase(), header_value(h)))
            })
            .collect();
        let mut bodies = Bodies {
            text_needed: options.text_needed,
            ..Bodies::default()
        };
        collect_bodies(&parsed, 0, &mut bodies);
        // Text parts put off are decoded only when there is no HTML to read instead, first
        // decodable one first, exactly as they would have been eagerly.
        if !options.text_needed && bodies.html.is_none() {
            bodies.text = bodies
                .deferred_text
                .iter()
                .find_map(|part| body_of(part))
                .map(|t| normalize_newlines(&t));
        }
        let attached = bodies
            .attached_message
            .filter(|_| attached_depth < MAX_ATTACHED_DEPTH)
            .and_then(|inner| {
                let options = EmailOptions {
                    quoted_original: true,
                    ..options
                };
                let within_checked = matches!(inner, Cow::Borrowed(_));
                Email::parse_nested(&inner, attached_depth + 1, within_checked, options).ok()
            });
        let mut email = Email::assemble(headers, bodies.text, bodies.html, attached);
        if options.quoted_original {
            email.find_quoted_original();
        }
        Ok(email)
    }

    /// An email from parts a provider already took apart (Postmark's JSON, SendGrid's parsed
    /// fields): header pairs (any case), the plain-text body and the HTML body. It is read
    /// exactly as a raw message with those parts would be.
    pub fn from_parts(
        headers: Vec<(String, String)>,
        text: Option<String>,
        html: Option<String>,
    ) -> Email {
        let headers = headers
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        let mut email = Email::assemble(headers, text.map(|t| normalize_newlines(&t)), html, None);
        email.find_quoted_original();
        email
    }

    fn assemble(
        headers: Vec<(String, String)>,
        text: Option<String>,
        html: Option<String>,
        attached: Option<Email>,
    ) -> Email {
        let rendered = html.as_deref().map(html::render);
        let mut email = Email {
            envelope: envelope_of(&headers),
            headers,
            text,
            html_text: None,
            links: Vec::new(),
            original: attached.map(|inner| Original::Attached(Box::new(inner))),
        };
        if let Some(r) = rendered {
            email.html_text = Some(r.text);
            email.links = r.links;
        }
        email
    }

    /// Sets `original` from a forwarded header block in the body, unless it is already set (an
    /// attached message, or an earlier call). `Email::parse` has already done this;
    /// `parse_with` does it when `EmailOptions::quoted_original` asks.
    pub fn find_quoted_original(&mut self) {
        if self.original.is_none() {
            self.original = self
                .body_text()
                .and_then(forward::find_forwarded_header)
                .map(|h: ForwardedHeader| Original::Quoted(h.into_envelope()));
        }
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
struct Bodies<'a> {
    /// Whether text parts are decoded as they are found, or put off in `deferred_text`.
    text_needed: bool,
    text: Option<String>,
    /// Inline `text/plain` parts, in order, when `text_needed` is false.
    deferred_text: Vec<&'a ParsedMail<'a>>,
    html: Option<String>,
    /// Borrowed from the message when its transfer encoding leaves it as it is.
    attached_message: Option<Cow<'a, [u8]>>,
}

fn collect_bodies<'a>(part: &'a ParsedMail<'a>, depth: usize, out: &mut Bodies<'a>) {
    if depth > MAX_PART_DEPTH {
        return;
    }
    // mailparse has lowercased it already.
    let mimetype = part.ctype.mimetype.as_str();
    // Only text parts need to know, so only they look.
    let is_attachment = || {
        part.headers
            .get_first_header("Content-Disposition")
            .is_some_and(|d| {
                let value = header_value(d);
                let value = value.trim_start().as_bytes();
                value.len() >= 10 && value[..10].eq_ignore_ascii_case(b"attachment")
            })
    };
    match mimetype {
        "message/rfc822" if out.attached_message.is_none() => {
            // `get_body_raw`, without its copy of a body that is not transfer-encoded.
            use mailparse::body::Body;
            out.attached_message = match part.get_body_encoded() {
                Body::SevenBit(body) | Body::EightBit(body) => Some(Cow::Borrowed(body.get_raw())),
                Body::Binary(body) => Some(Cow::Borrowed(body.get_raw())),
                Body::Base64(body) | Body::QuotedPrintable(body) => {
                    body.get_decoded().ok().map(Cow::Owned)
                }
            };
        }
        _ if mimetype.starts_with("multipart/") => {
            for sub in &part.subparts {
                collect_bodies(sub, depth + 1, out);
            }
        }
        "text/plain" if !out.text_needed && !is_attachment() => {
            out.deferred_text.push(part);
        }
        "text/plain" if out.text.is_none() && !is_attachment() => {
            out.text = body_of(part).map(|t| normalize_newlines(&t));
        }
        "text/html" if out.html.is_none() && !is_attachment() => {
            out.html = body_of(part);
        }
        _ => {}
    }
}

/// `MailHeader::get_value`, without its tokenizer for the common cases: a UTF-8 value with no
/// encoded words is unfolded, each line losing its leading whitespace and lines joined by one
/// space, which is all the tokenizer does to such a value; a value of UTF-8 quoted-printable
/// encoded words only is decoded by `utf8_q_words`.
fn header_value(header: &mailparse::MailHeader<'_>) -> String {
    let raw = header.get_value_raw();
    // Most values have no `=` at all, which one search tells; values with many (signatures,
    // URLs) are searched for `=?` with a searcher built once.
    static ENCODED_WORD_START: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new("=?"));
    let encoded_word =
        memchr::memchr(b'=', raw).is_some_and(|i| ENCODED_WORD_START.find(&raw[i..]).is_some());
    match std::str::from_utf8(raw) {
        Ok(value) if !encoded_word && memchr::memchr(b'\n', raw).is_none() => {
            // One line: only its leading whitespace goes.
            trim_start(value).to_owned()
        }
        Ok(value) if !encoded_word => {
            // `value.lines()`, each trimmed at its start and joined by one space, with one
            // `memchr` per line instead of the iterator's byte loop.
            let mut out = String::with_capacity(value.len());
            let mut rest = value;
            let mut first = true;
            while !rest.is_empty() {
                let line = match memchr::memchr(b'\n', rest.as_bytes()) {
                    Some(i) => {
                        let line = &rest[..i];
                        rest = &rest[i + 1..];
                        line.strip_suffix('\r').unwrap_or(line)
                    }
                    None => std::mem::take(&mut rest),
                };
                if !first {
                    out.push(' ');
                }
                first = false;
                out.push_str(trim_start(line));
            }
            out
        }
        Ok(value) => utf8_q_words(value).unwrap_or_else(|| header.get_value()),
        Err(_) => header.get_value(),
    }
}

/// `MailHeader::get_value` for a value made only of UTF-8 quoted-printable encoded words
/// (`=?UTF-8?Q?...?=`) apart from whitespace and folds, as mailers write a non-ASCII subject or
/// name: whitespace between adjacent encoded words goes (RFC 2047 6.2), so the value is the words
/// decoded and joined. mailparse's tokenizer took 8,000 instructions for such a subject. `None`
/// for anything else, and for what mailparse might read another way: a word with `?`, a space or
/// an `=` not followed by two hex digits in its text, a word that is not UTF-8 by itself, a
/// blank continuation line, anything but a space or tab between words on a line.
fn utf8_q_words(value: &str) -> Option<String> {
    fn blanks(bytes: &[u8]) -> usize {
        bytes
            .iter()
            .position(|b| !matches!(b, b' ' | b'\t'))
            .unwrap_or(bytes.len())
    }
    let mut decoded = Vec::with_capacity(value.len());
    let mut rest = value.as_bytes();
    rest = &rest[blanks(rest)..];
    loop {
        let word = rest.strip_prefix(b"=?")?;
        let label_end = word.iter().position(|&b| b == b'?')?;
        let label = &word[..label_end];
        if !(label.eq_ignore_ascii_case(b"utf-8") || label.eq_ignore_ascii_case(b"utf8")) {
            return None;
        }
        let word = &word[label_end + 1..];
        let word = word
            .strip_prefix(b"Q?")
            .or_else(|| word.strip_prefix(b"q?"))?;
        let text_end = word.iter().position(|&b| b == b'?')?;
        let after = word[text_end..].strip_prefix(b"?=")?;
        let start = decoded.len();
        let mut text = &word[..text_end];
        while let Some((&b, tail)) = text.split_first() {
            text = tail;
            match b {
                b'_' => decoded.push(b' '),
                b'=' => {
                    let [upper, lower, tail @ ..] = text else {
                        return None;
                    };
                    let (high, low) = (HEX_VALUE[*upper as usize], HEX_VALUE[*lower as usize]);
                    if high | low >= 16 {
                        return None;
                    }
                    decoded.push((high << 4) | low);
                    text = tail;
                }
                b'!'..=b'~' => decoded.push(b),
                _ => return None,
            }
        }
        std::str::from_utf8(&decoded[start..]).ok()?;
        // Blanks, then the end, the next word on this line, or a fold to a word on the next.
        let gap = blanks(after);
        rest = &after[gap..];
        if rest.is_empty() {
            break;
        }
        if let Some(next_line) = rest
            .strip_prefix(b"\r\n")
            .or_else(|| rest.strip_prefix(b"\n"))
        {
            // A continuation line starts with blanks, then a word (so it is not blank).
            let indent = blanks(next_line);
            if indent == 0 {
                return None;
            }
            rest = &next_line[indent..];
        } else if gap == 0 {
            return None;
        }
    }
    String::from_utf8(decoded).ok()
}

/// `str::trim_start`, with ASCII whitespace skipped byte by byte: the char-by-char Unicode test
/// runs only when the first byte left is not ASCII.
fn trim_start(text: &str) -> &str {
    let start = text
        .bytes()
        .position(|b| !matches!(b, b'\t'..=b'\r' | b' '))
        .unwrap_or(text.len());
    // Only ASCII was skipped, so `start` is a char boundary.
    let rest = &text[start..];
    if rest.as_bytes().first().is_some_and(|&b| !b.is_ascii()) {
        rest.trim_start()
    } else {
        rest
    }
}

/// The part's body as text, exactly as `ParsedMail::get_body` gives it. The common case,
/// quoted-printable UTF-8, is decoded here: mailparse's quoted-printable decoder builds a filtered
/// copy of the input and pushes byte by byte, and was a fifth of the whole parse. Anything else
/// (other encodings and charsets, a byte-order mark, invalid UTF-8) goes through mailparse.
fn body_of(part: &ParsedMail<'_>) -> Option<String> {
    let charset = part.ctype.charset.trim();
    if charset.eq_ignore_ascii_case("utf-8") || charset.eq_ignore_ascii_case("utf8") {
        let decoded = match part.get_body_encoded() {
            mailparse::body::Body::QuotedPrintable(body) => {
                Some(decode_quoted_printable(body.get_raw()))
            }
            mailparse::body::Body::Base64(body) => decode_canonical_base64(body.get_raw()),
            _ => None,
        };
        // `get_body` decodes with byte-order-mark sniffing and replaces invalid sequences;
        // without a BOM, valid UTF-8 decodes to itself.
        if let Some(decoded) = decoded.filter(|d| !d.starts_with(b"\xEF\xBB\xBF")) {
            if let Ok(text) = String::from_utf8(decoded) {
                return Some(text);
            }
        }
    }
    part.get_body().ok()
}

/// Base64 as mailparse decodes it (ASCII whitespace dropped, then decoded), for input in the
/// canonical form: padded, no stray bytes, zero trailing bits. Canonical base64 has one meaning,
/// so any decoder gives these bytes; anything else is `None` and left to mailparse, whose
/// permissive decoder has its own rules for it. mailparse's path copies the input twice and
/// goes through a charset decoder, and was most of the cost of a base64 mail.
fn decode_canonical_base64(input: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine as _;
    // Line by line: mail wraps base64 at 76 characters, and a line with no byte up to space (a
    // superset of ASCII whitespace, tested without an early exit so that it vectorises) but its
    // line break is copied whole.
    let mut cleaned = Vec::with_capacity(input.len());
    let mut start = 0;
    while start < input.len() {
        let end = memchr::memchr(b'\n', &input[start..]).map_or(input.len(), |i| start + i);
        let line = &input[start..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().fold(false, |any, &b| any | (b <= b' ')) {
            cleaned.extend(line.iter().filter(|b| !b.is_ascii_whitespace()));
        } else {
            cleaned.extend_from_slice(line);
        }
        start = end + 1;
    }
    base64::engine::general_purpose::STANDARD
        .decode(&cleaned)
        .ok()
}

/// Quoted-printable decoding with exactly the results of the `quoted_printable` crate in its
/// robust mode (what mailparse uses): bytes other than tab, CR, LF and printable ASCII are dropped;
/// each line loses trailing whitespace; a line ending in `=` joins the next; every other line
/// break becomes CRLF (the last one only if the input ends with LF); `=XX` with two hex digits
/// (either case) is a byte, and a malformed `=` sequence is kept as written.
fn decode_quoted_printable(input: &[u8]) -> Vec<u8> {
    fn allowed(b: u8) -> bool {
        matches!(b, b'\t' | b'\r' | b'\n' | b' '..=b'~')
    }
    // `fold` rather than `all`: no early exit, so the check vectorises.
    if input.iter().fold(true, |ok, &b| ok & allowed(b)) {
        decode_filtered_quoted_printable(input)
    } else {
        let filtered: Vec<u8> = input.iter().copied().filter(|&b| allowed(b)).collect();
        decode_filtered_quoted_printable(&filtered)
    }
}

/// The value of each hex digit (either case); `INVALID_HEX` for every other byte.
const HEX_VALUE: [u8; 256] = {
    let mut table = [INVALID_HEX; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};
const INVALID_HEX: u8 = 0xFF;

/// Finds the next `=` or LF. On x86-64 (where SSE2 is always there) with a searcher built once
/// per body: `memchr2` dispatches at every call, which on runs of about 20 bytes costs as much as
/// the search itself.
struct EqualsOrLineFeed {
    #[cfg(target_arch = "x86_64")]
    sse2: Option<memchr::arch::x86_64::sse2::memchr::Two>,
}

impl EqualsOrLineFeed {
    fn new() -> Self {
        EqualsOrLineFeed {
            #[cfg(target_arch = "x86_64")]
            sse2: memchr::arch::x86_64::sse2::memchr::Two::new(b'=', b'\n'),
        }
    }

    fn find(&self, haystack: &[u8]) -> Option<usize> {
        #[cfg(target_arch = "x86_64")]
        if let Some(two) = &self.sse2 {
            return two.find(haystack);
        }
        memchr::memchr2(b'=', b'\n', haystack)
    }
}

/// `decode_quoted_printable` on input with only allowed bytes. One search for the next `=` or LF
/// over the whole input (rather than per line, then per `=`), and one copy per run between them.
/// Trailing whitespace is trimmed where a line ends; an `=` that is not followed by two hex
/// digits or a plain soft break reads its whole line to see where the trimmed line ends.
fn decode_filtered_quoted_printable(input: &[u8]) -> Vec<u8> {
    fn trim_end(input: &[u8], from: usize, mut end: usize) -> usize {
        while end > from && matches!(input[end - 1], b' ' | b'\t' | b'\r') {
            end -= 1;
        }
        end
    }
    let mut decoded = Vec::with_capacity(input.len() + input.len() / 8);
    // `input[copied..]` is not yet in `decoded`; it starts a line or follows a byte that is not
    // trailing whitespace of its line.
    let mut copied = 0;
    let events = EqualsOrLineFeed::new();
    while let Some(found) = events.find(&input[copied..]) {
        let at = copied + found;
        if input[at] == b'\n' {
            let end = trim_end(input, copied, at);
            append_run(&mut decoded, input, copied, end);
            decoded.extend_from_slice(b"\r\n");
            copied = at + 1;
            continue;
        }
        if let (Some(&upper), Some(&lower)) = (input.get(at + 1), input.get(at + 2)) {
            let (high, low) = (HEX_VALUE[upper as usize], HEX_VALUE[lower as usize]);
            if high | low < 16 {
                append_run(&mut decoded, input, copied, at);
                decoded.push((high << 4) | low);
                copied = at + 3;
                continue;
            }
            if upper == b'\n' || (upper == b'\r' && lower == b'\n') {
                append_run(&mut decoded, input, copied, at);
                copied = at + if upper == b'\n' { 2 } else { 3 };
                continue;
            }
        }
        // Anything else depends on where the line ends once trimmed.
        append_run(&mut decoded, input, copied, at);
        let line_end = memchr::memchr(b'\n', &input[at..]).map_or(input.len(), |i| at + i);
        let end = trim_end(input, at + 1, line_end);
        match end - at {
            // A soft line break: the next line joins this one.
            1 => copied = (line_end + 1).min(input.len()),
            // `=` and one byte end the line, kept as written.
            2 => {
                append_run(&mut decoded, input, at, end);
                if line_end < input.len() {
                    decoded.extend_from_slice(b"\r\n");
                }
                copied = (line_end + 1).min(input.len());
            }
            // Not two hex digits: kept as written.
            _ => {
                append_run(&mut decoded, input, at, at + 3);
                copied = at + 3;
            }
        }
    }
    // The last line, with no line break after it.
    let end = trim_end(input, copied, input.len());
    append_run(&mut decoded, input, copied, end);
    decoded
}

/// Appends `input[start..end]` to `out`. A run of up to 16 bytes (most runs between `=XX`
/// escapes) is appended as a fixed 16-byte copy, an inline vector move, and the extra bytes cut
/// off again: a `memcpy` call per short run cost more than the copying.
#[inline]
fn append_run(out: &mut Vec<u8>, input: &[u8], start: usize, end: usize) {
    const PIECE: usize = 16;
    match input.get(start..start + PIECE) {
        Some(piece) if end - start <= PIECE => {
            let len = out.len();
            out.extend_from_slice(piece);
            out.truncate(len + (end - start));
        }
        _ => out.extend_from_slice(&input[start..end]),
    }
}

/// Whether the message declares more than `MAX_BOUNDARIES` multipart boundaries
/// (`boundary\s*=`, any case).
fn too_many_boundaries(raw: &[u8]) -> bool {
    // Every declaration contains `ary` in some case, and no two share one; none of these letters
    // has a non-ASCII case variant. Counting them is a pass that vectorises, and real mail has
    // far fewer than the limit, so the regex runs only on mail that might exceed it.
    fn is_ary(a: u8, r: u8, y: u8) -> bool {
        (a | 0x20 == b'a') & (r | 0x20 == b'r') & (y | 0x20 == b'y')
    }
    const BLOCK: usize = 64;
    let mut ary = 0;
    let mut start = 0;
    // Fixed-size blocks, so that the three shifted views are arrays and the loop is straight
    // vector code; the byte-wide count cannot overflow in a block.
    while let Some(window) = raw.get(start..start + BLOCK + 2) {
        let a: &[u8; BLOCK] = window[..BLOCK].try_into().unwrap();
        let r: &[u8; BLOCK] = window[1..BLOCK + 1].try_into().unwrap();
        let y: &[u8; BLOCK] = window[2..].try_into().unwrap();
        let mut block = 0u8;
        for i in 0..BLOCK {
            block += u8::from(is_ary(a[i], r[i], y[i]));
        }
        ary += usize::from(block);
        start += BLOCK;
    }
    ary += raw[start..]
        .windows(3)
        .filter(|w| is_ary(w[0], w[1], w[2]))
        .count();
    ary > MAX_BOUNDARIES && boundary_count(raw) > MAX_BOUNDARIES
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

/// CRLF and lone CR become LF, in one pass.
fn normalize_newlines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(cr) = rest.find('\r') {
        out.push_str(&rest[..cr]);
        out.push('\n');
        rest = &rest[cr + 1..];
        rest = rest.strip_prefix('\n').unwrap_or(rest);
    }
    out.push_str(rest);
    out
}

fn envelope_of(headers: &[(String, String)]) -> Envelope {
    // Named by `ENVELOPE_HEADERS`, which every parse keeps whatever else it leaves out.
    let [from, subject, date, message_id] = ENVELOPE_HEADERS.map(|name| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    });
    let (from, from_name) = from.map(parse_from).unwrap_or((None, None));
    Envelope {
        from,
        from_name,
        subject: subject.unwrap_or_default().to_owned(),
        date: date
            .and_then(dateparse)
            .and_then(|ts| DateTime::from_timestamp(ts, 0))
            .map(MessageTime::Utc),
        message_id: message_id
            .map(|id| {
                id.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_owned()
            })
            .filter(|id| !id.is_empty()),
    }
}

/// `mailparse::dateparse`: seconds since the epoch. The shape nearly every mailer writes
/// (`Fri, 01 Mar 2024 23:30:00 +0000`: the weekday optional, anything after the zone ignored) is
/// read here with mailparse's arithmetic, which otherwise counts the days year by year from 1970
/// and was most of reading a `Date`; every other shape goes to mailparse (tested to agree).
pub(crate) fn dateparse(text: &str) -> Option<i64> {
    canonical_date(text).or_else(|| mailparse::dateparse(text).ok())
}

/// `[Ddd, ]D[D] Mon YYYY HH:MM:SS ±HHMM[ ...]` with a year from 1970 to 2099 (where mailparse's
/// calendar is the Gregorian one), a day from 1 to 31 and a zone within ±2400, as mailparse
/// reads it; `None` for anything else. Like mailparse, the hour, minute, second and zone minutes
/// are added as written, unchecked.
fn canonical_date(text: &str) -> Option<i64> {
    fn number(digits: &[u8]) -> Option<i64> {
        digits.iter().try_fold(0, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    }
    let mut rest = text.as_bytes();
    // A weekday is a word mailparse skips as not a day number.
    if let [w1, w2, w3, b',', b' ', after @ ..] = rest {
        if [w1, w2, w3].iter().all(|c| c.is_ascii_alphabetic()) {
            rest = after;
        }
    }
    let day_len = match rest {
        [_, b' ', ..] => 1,
        _ => 2,
    };
    let day = number(rest.get(..day_len)?)?;
    let [b' ', m1, m2, m3, b' ', y1, y2, y3, y4, b' ', h1, h2, b':', n1, n2, b':', s1, s2, b' ', sign, z1, z2, z3, z4, tail @ ..] =
        rest.get(day_len..)?
    else {
        return None;
    };
    if !(tail.is_empty() || tail[0] == b' ') {
        return None;
    }
    let month = match [m1, m2, m3].map(u8::to_ascii_uppercase) {
        [b'J', b'A', b'N'] => 0,
        [b'F', b'E', b'B'] => 1,
        [b'M', b'A', b'R'] => 2,
        [b'A', b'P', b'R'] => 3,
        [b'M', b'A', b'Y'] => 4,
        [b'J', b'U', b'N'] => 5,
        [b'J', b'U', b'L'] => 6,
        [b'A', b'U', b'G'] => 7,
        [b'S', b'E', b'P'] => 8,
        [b'O', b'C', b'T'] => 9,
        [b'N', b'O', b'V'] => 10,
        [b'D', b'E', b'C'] => 11,
        _ => return None,
    };
    let year = number(&[*y1, *y2, *y3, *y4])?;
    let zone = number(&[*z1, *z2, *z3, *z4])?;
    let zone_sign = match sign {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    if !(1..=31).contains(&day) || !(1970..=2099).contains(&year) || zone > 2400 {
        return None;
    }
    // Every fourth year is a leap year from 1970 to 2099.
    let leap = year % 4 == 0;
    const DAYS_BEFORE_MONTH: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let days = (year - 1970) * 365
        + ((year - 1) / 4 - 1969 / 4)
        + DAYS_BEFORE_MONTH[month]
        + i64::from(leap && month > 1)
        + day
        - 1;
    let seconds = days * 86400
        + number(&[*h1, *h2])? * 3600
        + number(&[*n1, *n2])? * 60
        + number(&[*s1, *s2])?;
    Some(seconds - zone_sign * (zone / 100 * 3600 + zone % 100 * 60))
}

/// The address and display name of the first mailbox in a `From` value. Falls back to the first
/// thing shaped like an address, since forwards and broken mailers write `From` loosely.
pub(crate) fn parse_from(value: &str) -> (Option<String>, Option<String>) {
    if let Some(simple) = parse_simple_from(value) {
        return simple;
    }
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

/// `parse_from` for the two shapes notification mail uses, without `addrparse`'s tokenizer:
/// `Name Words <local@domain>` and a bare `local@domain`, made only of ASCII letters and digits,
/// single spaces between name words, and `.`, `_`, `+`, `-` in the address. Anything else is
/// `None` and goes through `addrparse`, which reads these shapes the same way (tested).
fn parse_simple_from(value: &str) -> Option<(Option<String>, Option<String>)> {
    fn is_address(addr: &str) -> bool {
        let Some((local, domain)) = addr.split_once('@') else {
            return false;
        };
        let part = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
        };
        part(local) && part(domain)
    }
    let (name, addr) = match value.strip_suffix('>') {
        Some(rest) => {
            let (name, addr) = rest.split_once(" <")?;
            let words_ok = !name.is_empty()
                && name
                    .split(' ')
                    .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_alphanumeric()));
            (words_ok.then_some(name)?.into(), addr)
        }
        None => (None, value),
    };
    is_address(addr).then(|| (Some(addr.to_ascii_lowercase()), name.map(str::to_owned)))
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
    fn parts_read_like_the_raw_message() {
        let raw = b"From: Venmo <venmo@venmo.com>\r\nSubject: Jane paid you $5.00\r\nDate: Fri, 01 Mar 2024 23:30:00 +0000\r\nContent-Type: text/html\r\n\r\n<p>Jane paid you</p>";
        let from_raw = Email::parse(raw).unwrap();
        let from_parts = Email::from_parts(
            vec![
                ("From".into(), "Venmo <venmo@venmo.com>".into()),
                ("Subject".into(), "Jane paid you $5.00".into()),
                ("Date".into(), "Fri, 01 Mar 2024 23:30:00 +0000".into()),
                ("Content-Type".into(), "text/html".into()),
            ],
            None,
            Some("<p>Jane paid you</p>".into()),
        );
        assert_eq!(from_parts, from_raw);
    }

    #[test]
    fn header_values_read_exactly_as_mailparse_reads_them() {
        for value in [
            "",
            "plain",
            "  leading and trailing  ",
            "folded\r\n continued\r\n\tand again",
            "folded\n  \n   blank line",
            "trailing space \r\n next",
            "ends folded\r\n ",
            "lone\rcr",
            "caf\u{e9} utf-8",
            "=?UTF-8?Q?Jos=C3=A9?= <a@b.c>",
            "a=?b",
            "x\r\n =?utf-8?B?w6k=?= y",
            " \t one line ",
            "ends in cr\r",
            "\r",
            "\u{a0}nbsp first",
        ] {
            let raw = format!("Subject: {value}\r\n\r\n");
            let (header, _) = mailparse::parse_header(raw.as_bytes()).unwrap();
            assert_eq!(header_value(&header), header.get_value(), "{value:?}");
        }
        let (latin1, _) = mailparse::parse_header(b"Subject: caf\xe9\r\n\r\n").unwrap();
        assert_eq!(header_value(&latin1), latin1.get_value());
        // Random folded values: continuation lines of spaces and tabs, CR alone or before LF,
        // blank continuation lines, encoded words, non-ASCII (UTF-8 and not), any key case.
        let pieces: [&[u8]; 17] = [
            b"\x0c",
            b"\xc2\x85",
            b"\xe2\x80\x83",
            b"a",
            b" ",
            b"\t",
            b"\r\n ",
            b"\n\t",
            b"\r",
            b"\r\n \r\n ",
            b"=?utf-8?q?x=C3=A9?=",
            b"=?",
            b"\xc3\xa9",
            b"\xe9",
            b"\xc2\xa0",
            b"=",
            b"\x0b",
        ];
        let keys = ["Subject", "SUBJECT", "x-MiXeD-Case"];
        check_random_values(&pieces, &keys, 0x005e_ed0f_fa17_u64);
        // Random runs of encoded words, read directly or not: labels, encodings, text that
        // decodes to UTF-8 or not (a character split between words), malformed escapes, and
        // every kind of gap between words.
        let words: [&[u8]; 25] = [
            b"=?UTF-8?Q?Jos=C3=A9?=",
            b"=?utf-8?q?caf=c3=a9_bar?=",
            b"=?utf8?Q?a_b__?=",
            b"=?UTF-8?Q?=C3?=",
            b"=?UTF-8?Q?=A9x?=",
            b"=?UTF-8?Q?=3D=3F?=",
            b"=?UTF-8?Q?x=?=",
            b"=?UTF-8?Q?x=G1?=",
            b"=?UTF-8?Q?what?_x?=",
            b"=?UTF-8?Q??=",
            b"=?UTF-8?Q?(a,b)<c>?=",
            b"=?UTF-8?B?w6k=?=",
            b"=?ISO-8859-1?Q?caf=E9?=",
            b"=?UTF-7?Q?a?=",
            b"=?utf-8?x?a?=",
            b"=?UTF-8?Q?=FF?=",
            b"=?UTF-8?Q?a b?=",
            b"plain",
            b"\xc3\xa9",
            b" ",
            b"  \t",
            b"\r\n ",
            b"\n\t",
            b"\r\n \r\n ",
            b",",
        ];
        let direct = check_random_values(&words, &keys, 0x0e9c_0ded_3041_u64);
        assert!(direct > 500, "{direct}");
    }

    /// Compares `header_value` with `get_value` on 20,000 values of up to eleven `pieces`;
    /// returns how many `utf8_q_words` read.
    fn check_random_values(pieces: &[&[u8]], keys: &[&str], mut state: u64) -> usize {
        let mut direct = 0;
        for _ in 0..20_000 {
            state = crate::test_rng::xorshift64(state);
            let mut raw = format!("{}: ", keys[(state % 3) as usize]).into_bytes();
            for k in 0..(state % 12) {
                let pick = (state >> (k % 16 * 4)) % pieces.len() as u64;
                raw.extend_from_slice(pieces[pick as usize]);
            }
            raw.extend_from_slice(b"\r\n\r\n");
            let Ok((header, _)) = mailparse::parse_header(&raw) else {
                continue;
            };
            assert_eq!(header_value(&header), header.get_value(), "{raw:?}");
            let value = std::str::from_utf8(header.get_value_raw());
            direct += usize::from(value.is_ok_and(|v| utf8_q_words(v).is_some()));
        }
        direct
    }

    #[test]
    fn encoded_word_values_read_directly_as_mailparse_reads_them() {
        for value in [
            "=?UTF-8?Q?Jos=C3=A9?=",
            "=?UTF-8?Q?Jordan_Lee_sent_you_=E2=82=AC25?=\r\n =?UTF-8?Q?_for_dinner?=",
            "=?utf-8?q?a?= \t =?UTF8?Q?b__?=  ",
            "\t=?UTF-8?Q?=3D=3d?=\n\t=?UTF-8?Q?x?=",
        ] {
            let raw = format!("Subject: {value}\r\n\r\n");
            let (header, _) = mailparse::parse_header(raw.as_bytes()).unwrap();
            let value = std::str::from_utf8(header.get_value_raw()).unwrap();
            assert_eq!(utf8_q_words(value), Some(header.get_value()), "{value:?}");
        }
    }

    #[test]
    fn leading_whitespace_is_trimmed_as_str_trim_start_does() {
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            for text in [format!("{c}"), format!(" \t{c}x"), format!("{c}\u{a0} y")] {
                assert_eq!(trim_start(&text), text.trim_start(), "{c:?}");
            }
        }
        assert_eq!(trim_start(""), "");
        assert_eq!(trim_start(" \x0b\x0c\r\n\t"), "");
    }

    #[test]
    fn newlines_normalize_in_one_pass_as_two_replaces_would() {
        for text in [
            "",
            "a",
            "a\r\nb",
            "\r\r\n",
            "\n\r",
            "a\rb\r",
            "\r\n\r\n\r",
            "é\r\n😀\r",
        ] {
            assert_eq!(
                normalize_newlines(text),
                text.replace("\r\n", "\n").replace('\r', "\n")
            );
        }
    }

    #[test]
    fn quoted_printable_bodies_decode_exactly_as_mailparse_does() {
        let mail = |charset: &str, body: &[u8]| {
            let mut raw = format!(
                "From: a@b.c\r\nContent-Type: text/plain; charset={charset}\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
            )
            .into_bytes();
            raw.extend_from_slice(body);
            raw
        };
        let check = |charset: &str, body: &[u8]| {
            let raw = mail(charset, body);
            let part = mailparse::parse_mail(&raw).unwrap();
            // The bytes themselves, invalid UTF-8 included, and then the text.
            let mailparse::body::Body::QuotedPrintable(encoded) = part.get_body_encoded() else {
                panic!("not quoted-printable");
            };
            assert_eq!(
                decode_quoted_printable(encoded.get_raw()),
                part.get_body_raw().unwrap(),
                "{body:?}"
            );
            assert_eq!(body_of(&part), part.get_body().ok(), "{charset} {body:?}");
        };
        for body in [
            &b""[..],
            b"=",
            b"=\n",
            b"=\r",
            b"=\r\r\n",
            b"= \t\r\n",
            b"=\t",
            b"=4 \n",
            b"=4 5\n",
            b"=4\t\r\n",
            b"=\rb\n",
            b"a=\n  \n",
            b"=3d=3D=e2=82=ac=Ff",
            b"lone\rcr\rends\r",
            b"tab\t\t\n\ttab\t",
            b"==41 =\n\n",
            b"\x80\xff=41\x00\n\x7f=\x80\n",
            b"=\r\n",
            b"a=\r\nb",
            b"a =\nb \t \r\nc\n",
            b"=3D=3d=E2=82=AC =C3\n",
            b"=4",
            b"=4\n",
            b"=G1=1G==41\r\n\r\n",
            b"caf\xc3\xa9 \x00\x7f\r\nx\r\r\n",
            b"=EF=BB=BFbom",
            b"=FF=FE invalid utf-8",
            b"trailing CR\r",
            b"\n\n\n",
        ] {
            check("utf-8", body);
            check("UTF8", body);
            check("iso-8859-1", body);
        }
        // Pseudo-random bodies from the bytes that matter: hex digits of both cases and bytes
        // that are not, soft breaks, CR and LF alone or together, trailing spaces and tabs,
        // bytes outside printable ASCII, and runs long enough to cross the decoder's searches.
        // Every third body is mostly letters, for runs long and short around the decoder's
        // 16-byte copies, ending anywhere near the end of the input.
        let alphabet = b"=Af3 \t\r\nx\xc3\xa9\x00=a9Gz\x7f\xff\n==";
        let long_runs = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789=\n \t";
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for round in 0..10_000 {
            let mut body = Vec::new();
            state = crate::test_rng::xorshift64(state);
            let len = if round % 10 == 0 {
                state % 300
            } else {
                state % 64
            };
            let alphabet: &[u8] = if round % 3 == 0 { long_runs } else { alphabet };
            for k in 0..len {
                body.push(alphabet[((state >> (k % 16 * 4)) % alphabet.len() as u64) as usize]);
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            check("utf-8", &body);
        }
    }

    #[test]
    fn base64_bodies_decode_exactly_as_mailparse_does() {
        let check = |charset: &str, body: &[u8]| {
            let mut raw = format!(
                "From: a@b.c\r\nContent-Type: text/plain; charset={charset}\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            )
            .into_bytes();
            raw.extend_from_slice(body);
            let part = mailparse::parse_mail(&raw).unwrap();
            let mailparse::body::Body::Base64(encoded) = part.get_body_encoded() else {
                panic!("not base64");
            };
            if let Some(decoded) = decode_canonical_base64(encoded.get_raw()) {
                assert_eq!(decoded, part.get_body_raw().unwrap(), "{body:?}");
            }
            assert_eq!(body_of(&part), part.get_body().ok(), "{charset} {body:?}");
        };
        for body in [
            &b""[..],
            b"Q2Fmw6k=",
            b"Q2Fm\r\nw6k=\r\n",
            b" Q 2 F m w 6 k = ",
            b"Q2Fmw6k",
            b"Q2Fmw6l=",
            b"Q2Fmw6k==",
            b"QQ==QQ==",
            b"Q2Fm!w6k=",
            b"77u/Y2Fmw6k=",
            b"/w==",
            b"Y2Fm6Q==",
            b"QUJD\x0cREVG",
            b"w6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOpw6nD\r\nqcOp\r\n",
            b"w6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOpw6nDqcOpw6nD\nqcOp",
            b"\r\n\r\nQ2Fm\r\r\nw6k=\t\r\n",
        ] {
            check("utf-8", body);
            check("UTF8", body);
            check("iso-8859-1", body);
        }
        // Pseudo-random bodies from the bytes that matter: every ASCII whitespace byte (line
        // breaks alone or as CRLF, spaces and tabs inside lines), padding anywhere, stray bytes,
        // and bodies long enough for several lines.
        let alphabet = b"QUJDw6k=/+ \r\n!QUJD\t\x0cY2Fm\r\n\x00";
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..10_000 {
            let mut body = Vec::new();
            state = crate::test_rng::xorshift64(state);
            let len = if round % 10 == 0 {
                state % 200
            } else {
                state % 24
            };
            for k in 0..len {
                body.push(alphabet[((state >> (k % 16 * 4)) % alphabet.len() as u64) as usize]);
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            check("utf-8", &body);
        }
    }

    #[test]
    fn text_part_is_skipped_only_when_allowed_and_there_is_html() {
        let lean = EmailOptions {
            text_needed: false,
            ..EmailOptions::default()
        };
        // Text and HTML: the text is left out only when it is not needed.
        let both = b"From: a@b.c\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nplain =C3=A9\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>rich</p>\r\n--b--\r\n";
        let full = Email::parse(both).unwrap();
        assert_eq!(full.text.as_deref(), Some("plain \u{e9}"));
        let skipped = Email::parse_with(both, lean).unwrap();
        assert_eq!(skipped.text, None);
        assert_eq!(
            Email {
                text: None,
                ..full.clone()
            },
            skipped
        );
        assert_eq!(skipped.body_text(), full.body_text());
        // No HTML: the text is the body and is always decoded, the first decodable part first.
        let text_only = b"From: a@b.c\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\nContent-Disposition: attachment\r\n\r\nattached\r\n--b\r\nContent-Type: text/plain\r\n\r\nfirst\r\n--b\r\nContent-Type: text/plain\r\n\r\nsecond\r\n--b--\r\n";
        assert_eq!(
            Email::parse_with(text_only, lean).unwrap(),
            Email::parse(text_only).unwrap()
        );
        assert_eq!(
            Email::parse(text_only).unwrap().text.as_deref(),
            Some("first")
        );
    }

    #[test]
    fn part_types_and_dispositions_are_read_in_any_case() {
        let raw = b"From: a@b.c\r\nContent-Type: MULTIPART/Mixed; boundary=b\r\n\r\n--b\r\nContent-Type: Text/HTML\r\nContent-Disposition:  ATTACHMENT; filename=x.html\r\n\r\n<p>attached</p>\r\n--b\r\nContent-Type: TEXT/html\r\ncontent-disposition: inline\r\n\r\n<p>inline</p>\r\n--b\r\nContent-Type: text/PLAIN\r\nContent-Disposition: Attachment\r\n\r\nattached\r\n--b\r\nContent-Type: Text/Plain\r\n\r\nplain\r\n--b--\r\n";
        let email = Email::parse(raw).unwrap();
        assert_eq!(email.html_text.as_deref(), Some("inline"));
        assert_eq!(email.text.as_deref(), Some("plain"));
    }

    #[test]
    fn quoted_original_can_be_found_later_with_the_same_result() {
        let raw = b"From: me@example.com\nSubject: Fwd: paid\nContent-Type: text/plain\n\n---------- Forwarded message ---------\nFrom: Venmo <venmo@venmo.com>\nDate: Fri, Mar 1, 2024 at 3:30 PM\nSubject: Jane paid you $5.00\n\nbody\n";
        let full = Email::parse(raw).unwrap();
        assert!(matches!(full.original, Some(Original::Quoted(_))));
        let options = EmailOptions {
            quoted_original: false,
            ..EmailOptions::default()
        };
        let mut later = Email::parse_with(raw, options).unwrap();
        assert_eq!(later.original, None);
        later.find_quoted_original();
        assert_eq!(later, full);
    }

    #[test]
    fn full_parse_keeps_every_header_and_a_lean_one_only_those_named() {
        let raw = b"Received: from a\r\nReceived: from b\r\nDKIM-Signature: v=1;\r\n d=example.com\r\nFROM: Venmo <venmo@venmo.com>\r\nList-Unsubscribe: <https://u.example>\r\nSubject: =?UTF-8?Q?caf=C3=A9?=\r\nX-Custom: 1\r\nDate: Fri, 01 Mar 2024 23:30:00 +0000\r\nMessage-ID: <a@b>\r\nx-custom: 2\r\nContent-Type: text/plain\r\n\r\nbody\r\n";
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let full = Email::parse(raw).unwrap();
        assert_eq!(
            full.headers,
            pairs(&[
                ("received", "from a"),
                ("received", "from b"),
                ("dkim-signature", "v=1; d=example.com"),
                ("from", "Venmo <venmo@venmo.com>"),
                ("list-unsubscribe", "<https://u.example>"),
                ("subject", "caf\u{e9}"),
                ("x-custom", "1"),
                ("date", "Fri, 01 Mar 2024 23:30:00 +0000"),
                ("message-id", "<a@b>"),
                ("x-custom", "2"),
                ("content-type", "text/plain"),
            ])
        );
        let named = ["x-custom".to_owned()];
        let lean_options = EmailOptions {
            headers: HeadersNeeded::Named(&named),
            ..EmailOptions::default()
        };
        let lean = Email::parse_with(raw, lean_options).unwrap();
        assert_eq!(
            lean.headers,
            pairs(&[
                ("from", "Venmo <venmo@venmo.com>"),
                ("subject", "caf\u{e9}"),
                ("x-custom", "1"),
                ("date", "Fri, 01 Mar 2024 23:30:00 +0000"),
                ("message-id", "<a@b>"),
                ("x-custom", "2"),
            ])
        );
        assert_eq!(lean.envelope, full.envelope);
        assert_eq!(lean.envelope.message_id.as_deref(), Some("a@b"));
        // An attached original is read with the same options.
        let mut forward = b"From: me@example.com\r\nSubject: Fwd\r\nContent-Type: multipart/mixed; boundary=z\r\n\r\n--z\r\nContent-Type: message/rfc822\r\n\r\n".to_vec();
        forward.extend_from_slice(raw);
        forward.extend_from_slice(b"--z--\r\n");
        let inner = |email: Email| match email.original {
            Some(Original::Attached(inner)) => inner.headers,
            other => panic!("{other:?}"),
        };
        assert_eq!(inner(Email::parse(&forward).unwrap()), full.headers);
        assert_eq!(
            inner(Email::parse_with(&forward, lean_options).unwrap()),
            lean.headers
        );
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
    fn attached_message_reads_as_its_decoded_body_in_every_transfer_encoding() {
        use base64::Engine as _;
        let inner = "From: Venmo <venmo@venmo.com>\r\nSubject: Jane paid you $5.00\r\nContent-Type: text/plain\r\n\r\nbody =E9 caf\u{e9}\r\n";
        let encoded = [
            ("", inner.to_owned()),
            ("7bit", inner.to_owned()),
            ("8bit", inner.to_owned()),
            ("binary", inner.to_owned()),
            (
                "base64",
                base64::engine::general_purpose::STANDARD.encode(inner),
            ),
            ("quoted-printable", inner.replace('=', "=3D")),
        ];
        for (encoding, body) in encoded {
            let raw = format!("From: me@example.com\r\nSubject: Fwd\r\nContent-Type: multipart/mixed; boundary=z\r\n\r\n--z\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--z\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n{body}\r\n--z--\r\n");
            let parsed = mailparse::parse_mail(raw.as_bytes()).unwrap();
            let part = &parsed.subparts[1];
            let expected = Email::parse(&part.get_body_raw().unwrap()).unwrap();
            let email = Email::parse(raw.as_bytes()).unwrap();
            let Some(Original::Attached(attached)) = &email.original else {
                panic!("{encoding}: no attached message");
            };
            assert_eq!(**attached, expected, "{encoding}");
            assert_eq!(attached.envelope.subject, "Jane paid you $5.00");
        }
        // An encoded attachment is counted on its own: boundaries hidden in base64 are not
        // counted in the outer message, so a hostile one is left unread.
        let mut hostile = String::from("From: a@b.c\n");
        for i in 0..=MAX_BOUNDARIES {
            hostile.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n"
            ));
        }
        let raw = format!("From: me@example.com\r\nContent-Type: multipart/mixed; boundary=z\r\n\r\n--z\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--z--\r\n", base64::engine::general_purpose::STANDARD.encode(&hostile));
        let email = Email::parse(raw.as_bytes()).unwrap();
        assert_eq!(email.original, None);
    }

    #[test]
    fn simple_from_values_read_as_addrparse_reads_them() {
        fn full(value: &str) -> (Option<String>, Option<String>) {
            match mailparse::addrparse(value).ok().as_ref().map(|l| &l[..]) {
                Some([mailparse::MailAddr::Single(info), ..]) if info.addr.contains('@') => (
                    Some(info.addr.trim().to_ascii_lowercase()),
                    info.display_name.clone().filter(|n| !n.is_empty()),
                ),
                _ => (None, Some("not simple".into())),
            }
        }
        for value in [
            "Venmo <venmo@venmo.com>",
            "venmo@venmo.com",
            "Venmo@Venmo.COM",
            "Jordan Patel <Jordan.Patel+x_y-z@mail.example.co>",
            "A B C <a@b>",
            "Venmo  <venmo@venmo.com>",
            " Venmo <venmo@venmo.com>",
            "Venmo <venmo@venmo.com> ",
            "<venmo@venmo.com>",
            "Venmo <venmo@@venmo.com>",
            "Venmo <@venmo.com>",
            "\"Venmo\" <venmo@venmo.com>",
            "Venmo, Inc <venmo@venmo.com>",
            "a@b, c@d",
            "José <jose@example.com>",
        ] {
            if let Some(simple) = parse_simple_from(value) {
                assert_eq!(simple, full(value), "{value:?}");
            }
        }
        assert!(parse_simple_from("Venmo <venmo@venmo.com>").is_some());
        assert!(parse_simple_from("venmo@venmo.com").is_some());
        // Random values from the bytes that matter.
        let alphabet = b"aZ9 <>@.@_+-, \"()\\:;\t\r\nx";
        let mut state = 0x0bad_5eed_1234_5678u64;
        let mut simple = 0;
        for _ in 0..50_000 {
            state = crate::test_rng::xorshift64(state);
            let mut value = String::new();
            for k in 0..(state % 20) {
                let pick = (state >> (k % 16 * 4)) % alphabet.len() as u64;
                value.push(alphabet[pick as usize] as char);
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            // Make the simple shapes common enough to matter.
            if state % 3 == 0 {
                value = format!("Na me <{}@x.y>", value.replace(['<', '>', ' '], ""));
            }
            if let Some(result) = parse_simple_from(&value) {
                simple += 1;
                assert_eq!(result, full(&value), "{value:?}");
            }
        }
        assert!(simple > 300, "{simple}");
    }

    #[test]
    fn dates_read_as_mailparse_reads_them() {
        for text in [
            "Fri, 01 Mar 2024 23:30:00 +0000",
            "Sun, 02 Oct 2016 07:06:22 -0700 (PDT)",
            "1 Jan 1970 00:00:00 +0000",
            "Thu, 29 Feb 2024 12:00:00 +0530",
            "Tue, 31 Dec 2099 23:59:59 -2400",
            "Wed, 31 Feb 2001 99:99:99 +2399",
        ] {
            assert!(canonical_date(text).is_some(), "{text}");
            assert_eq!(dateparse(text), mailparse::dateparse(text).ok(), "{text}");
        }
        // Random dates from pieces in and out of the shape read directly: weekdays or not, days,
        // months and years at and past their limits, names in any case, other zones, and what
        // may follow the zone.
        let weekdays = ["", "Fri, ", "fri, ", "Fri ", "123, ", "Fri,", "Mon,  "];
        let days = ["1", "01", "9", "31", "32", "0", "00", "7x", "255", "+5"];
        let months = ["Mar", "mAR", "Feb", "Dec", "Jan", "March", "Mzr", "Sep"];
        let years = [
            "1970", "1969", "2000", "2024", "2099", "2100", "2400", "24", "0099",
        ];
        let times = [
            "23:30:00", "00:00:00", "99:59:61", "3:04:05", "12:00", "1a:00:00",
        ];
        let zones = [
            "+0000", "-0700", "+0530", "+2400", "-2400", "+2401", "GMT", "PDT", "0000", "+000",
            "-0000", "+0099",
        ];
        let tails = ["", " (PDT)", " ", "\t(PDT)", ":00", "x", "  +0100"];
        let mut state = 0x5eed_da7e_0000_0001u64;
        let mut direct = 0;
        for _ in 0..50_000 {
            let mut pick = |options: &[&'static str]| {
                state = crate::test_rng::xorshift64(state);
                options[(state % options.len() as u64) as usize]
            };
            let text = format!(
                "{}{} {} {} {} {}{}",
                pick(&weekdays),
                pick(&days),
                pick(&months),
                pick(&years),
                pick(&times),
                pick(&zones),
                pick(&tails)
            );
            assert_eq!(
                dateparse(&text),
                mailparse::dateparse(&text).ok(),
                "{text:?}"
            );
            direct += usize::from(canonical_date(&text).is_some());
        }
        // About one in a hundred has every piece in the shape.
        assert!(direct > 300, "{direct}");
        // Every day of the years read directly.
        for year in 1970..=2099 {
            for (month, name) in [
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
            ]
            .iter()
            .enumerate()
            {
                for day in [1, 28, 29, 30, 31] {
                    let text = format!("{day} {name} {year} 12:34:56 -0130");
                    assert_eq!(
                        canonical_date(&text),
                        mailparse::dateparse(&text).ok(),
                        "{text} ({month})"
                    );
                }
            }
        }
    }

    #[test]
    fn boundary_guard_counts_exactly_as_the_regex_does() {
        // The prefilter counts `ary` in ASCII case only; the regex's case folding must agree.
        let letters = regex::Regex::new("(?i)^[ary]$").unwrap();
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            let folds = letters.is_match(c.encode_utf8(&mut [0; 4]));
            assert_eq!(folds, "aryARY".contains(c), "{c:?}");
        }
        let pieces: [&[u8]; 8] = [
            b"boundary=",
            b"BoUnDaRy \t\r\n =",
            b"boundary\xc2\xa0=",
            b"ary",
            b"bound ary=",
            b"x",
            b"boundary",
            b"=",
        ];
        let mut state = 0x1234_5678_9abc_def1u64;
        let mut over = 0;
        for round in 0..400 {
            let mut raw = Vec::new();
            // About three pieces in eight declare a boundary: both sides of the limit.
            let count = 200 + round % 160;
            for _ in 0..count {
                state = crate::test_rng::xorshift64(state);
                raw.extend_from_slice(pieces[(state % pieces.len() as u64) as usize]);
            }
            let exact = boundary_count(&raw) > MAX_BOUNDARIES;
            assert_eq!(
                too_many_boundaries(&raw),
                exact,
                "{}",
                String::from_utf8_lossy(&raw)
            );
            over += usize::from(exact);
        }
        assert!((50..350).contains(&over), "{over} of 400 over the limit");
        for short in [&b""[..], b"a", b"ar", b"ary"] {
            assert!(!too_many_boundaries(short));
        }
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

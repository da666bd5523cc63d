//! A generated corpus of Venmo payment emails for the parse benchmark.
//!
//! The shapes are the `parsed` golden fixtures in `fixtures/venmo/`: every layout (2019-2025, its
//! late-2025 story-link variant, the 2024+ split-amount layout) and every forward style (Gmail,
//! Outlook, Apple Mail, server-side auto-forward, `message/rfc822` attachment). Each fixture is
//! taken apart once into its MIME tree with every body transfer-decoded; the values that identify
//! a payment (payee, amount, note, id, @handle, story id) become placeholders, found from the
//! fixture's `.expected.json`. An email is then made by filling the placeholders with fresh values
//! and re-encoding each body with its original transfer encoding (quoted-printable or base64) and
//! line endings, so the MIME stays valid whatever is substituted. `Subject`/`Thread-Topic` are
//! rewritten (RFC 2047-encoded when the fixture's was, or when the new text is not ASCII; folded
//! when long) and `Message-ID` is regenerated in the shape of the fixture's.

use std::path::Path;

use mailparse::{MailHeaderMap, ParsedMail};
use regex::Regex;

const PAYEE: &str = "\u{1}PAYEE\u{1}";
const AMOUNT: &str = "\u{1}AMOUNT\u{1}";
const DOLLARS: &str = "\u{1}DOLLARS\u{1}";
const CENTS: &str = "\u{1}CENTS\u{1}";
const NOTE: &str = "\u{1}NOTE\u{1}";
const ID: &str = "\u{1}ID\u{1}";
const HANDLE: &str = "\u{1}HANDLE\u{1}";
const STORY: &str = "\u{1}STORY\u{1}";

/// What a correct parse of a generated email must produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub date: String,
    /// Signed, two decimals, no separators: `-1234.50`.
    pub amount: String,
    pub payee: String,
    pub notes: Option<String>,
    pub external_id: String,
}

pub struct Generated {
    pub fixture: &'static str,
    pub bytes: Vec<u8>,
    pub expected: Expected,
}

/// The fixtures, ready to generate from.
pub struct Corpus {
    shapes: Vec<Shape>,
}

struct Shape {
    name: &'static str,
    root: Node,
    date: String,
    negative: bool,
    has_note: bool,
    /// Transaction ids of this shape are 17-character PayPal-style ids rather than 19 digits.
    paypal_id: bool,
}

enum Node {
    Leaf {
        head: Vec<Field>,
        encoding: Encoding,
        html: bool,
        /// The decoded body with placeholders.
        body: String,
        eol: &'static str,
        /// Whether the encoded body ended with a line break before the next boundary.
        trailing_eol: bool,
    },
    Multipart {
        head: Vec<Field>,
        /// The bytes between parts (preamble + boundary lines, ..., closing boundary + epilogue).
        gaps: Vec<Vec<u8>>,
        parts: Vec<Node>,
    },
    Message {
        head: Vec<Field>,
        inner: Box<Node>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    QuotedPrintable,
    Base64,
    Identity,
}

enum Field {
    Verbatim(Vec<u8>),
    /// An unstructured text field (`Subject`, `Thread-Topic`) with placeholders.
    Text {
        key: String,
        template: String,
        rfc2047: bool,
        eol: &'static str,
    },
    MessageId {
        key: String,
        /// The original id without `<>`, used as a shape for new ones.
        shape: String,
        eol: &'static str,
    },
}

/// Values for one generated email.
struct Values {
    payee: String,
    dollars: String,
    cents: String,
    note: String,
    id: String,
    handle: String,
    story: String,
}

impl Corpus {
    /// Reads every fixture in `dir` whose expected status is `parsed`.
    pub fn load(dir: &Path) -> Corpus {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .expect("fixture folder")
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        names.sort();
        let mut shapes = Vec::new();
        for path in names {
            let expected_path = path.with_extension("expected.json");
            let expected: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&expected_path).unwrap()).unwrap();
            if expected["status"] != "parsed" {
                continue;
            }
            let name: &'static str = Box::leak(
                path.file_stem()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
                    .into_boxed_str(),
            );
            let raw = std::fs::read(&path).unwrap();
            shapes.push(Shape::new(name, &raw, &expected["transactions"][0]));
        }
        assert!(
            !shapes.is_empty(),
            "no parsed fixtures in {}",
            dir.display()
        );
        Corpus { shapes }
    }

    pub fn shapes(&self) -> usize {
        self.shapes.len()
    }

    /// Email number `i`: the same `i` always gives the same bytes, different `i` different ones.
    pub fn email(&self, i: u64) -> Generated {
        let shape = &self.shapes[(i % self.shapes.len() as u64) as usize];
        let mut rng = Rng::new(i ^ 0x5eed_1e55_ca5e_f00d);
        let values = Values::random(i, &mut rng, shape.paypal_id);
        let mut bytes = Vec::with_capacity(12 * 1024);
        shape.root.emit(&values, &mut rng, &mut bytes);
        let cents_total = format!("{}.{}", values.dollars.replace(',', ""), values.cents);
        Generated {
            fixture: shape.name,
            bytes,
            expected: Expected {
                date: shape.date.clone(),
                amount: if shape.negative {
                    format!("-{cents_total}")
                } else {
                    cents_total
                },
                payee: values.payee.clone(),
                notes: shape.has_note.then(|| values.note.clone()),
                external_id: format!("venmo:{}", values.id),
            },
        }
    }
}

impl Shape {
    fn new(name: &'static str, raw: &[u8], tx: &serde_json::Value) -> Shape {
        let text = |k: &str| tx[k].as_str().map(str::to_owned);
        let amount = text("amount").unwrap();
        let negative = amount.starts_with('-');
        let (dollars, cents) = amount.trim_start_matches('-').split_once('.').unwrap();
        let known = Known {
            payee: text("payee").unwrap(),
            amount: format!("{}.{cents}", thousands(dollars.parse().unwrap())),
            dollars: thousands(dollars.parse().unwrap()),
            cents: cents.to_owned(),
            note: text("notes"),
            id: text("external_id")
                .unwrap()
                .split_once(':')
                .unwrap()
                .1
                .to_owned(),
        };
        let parsed = mailparse::parse_mail(raw).unwrap();
        let mut found = Found::default();
        let root = Node::build(&parsed, &known, &mut found);
        let check = |what: &str, ok: bool| {
            assert!(ok, "fixture {name}: cannot find the {what} to vary");
        };
        check("payee", found.payee > 0);
        check("amount", found.amount > 0);
        check("id", found.id > 0);
        check("note", known.note.is_none() || found.note > 0);
        Shape {
            name,
            root,
            date: text("date").unwrap(),
            negative,
            has_note: known.note.is_some(),
            paypal_id: !known.id.bytes().all(|b| b.is_ascii_digit()),
        }
    }
}

/// The fixture's own values, to be replaced by placeholders.
struct Known {
    payee: String,
    amount: String,
    dollars: String,
    cents: String,
    note: Option<String>,
    id: String,
}

#[derive(Default)]
struct Found {
    payee: usize,
    amount: usize,
    id: usize,
    note: usize,
}

impl Node {
    fn build(part: &ParsedMail<'_>, known: &Known, found: &mut Found) -> Node {
        let raw = part.raw_bytes;
        let (_, body_at) = mailparse::parse_headers(raw).unwrap();
        let head = parse_head(&raw[..body_at], known, found);
        let mimetype = part.ctype.mimetype.to_ascii_lowercase();
        if mimetype.starts_with("multipart/") && !part.subparts.is_empty() {
            let base = raw.as_ptr() as usize;
            let mut gaps = Vec::new();
            let mut parts = Vec::new();
            let mut cursor = body_at;
            for sub in &part.subparts {
                let start = sub.raw_bytes.as_ptr() as usize - base;
                gaps.push(raw[cursor..start].to_vec());
                cursor = start + sub.raw_bytes.len();
                parts.push(Node::build(sub, known, found));
            }
            gaps.push(raw[cursor..].to_vec());
            return Node::Multipart { head, gaps, parts };
        }
        if mimetype == "message/rfc822" {
            let inner = mailparse::parse_mail(&raw[body_at..]).unwrap();
            return Node::Message {
                head,
                inner: Box::new(Node::build(&inner, known, found)),
            };
        }
        let encoding = match part
            .headers
            .get_first_value("Content-Transfer-Encoding")
            .map(|e| e.trim().to_ascii_lowercase())
            .as_deref()
        {
            Some("quoted-printable") => Encoding::QuotedPrintable,
            Some("base64") => Encoding::Base64,
            _ => Encoding::Identity,
        };
        let raw_body = &raw[body_at..];
        let decoded = match encoding {
            Encoding::Identity => raw_body.to_vec(),
            _ => part.get_body_raw().unwrap(),
        };
        let html = mimetype == "text/html";
        let body = templatize_body(String::from_utf8(decoded).unwrap(), html, known, found);
        Node::Leaf {
            head,
            encoding,
            html,
            body,
            eol: eol_of(raw_body),
            trailing_eol: raw_body.ends_with(b"\n"),
        }
    }

    fn emit(&self, values: &Values, rng: &mut Rng, out: &mut Vec<u8>) {
        match self {
            Node::Leaf {
                head,
                encoding,
                html,
                body,
                eol,
                trailing_eol,
            } => {
                emit_head(head, values, rng, out);
                let text = fill(body, values, *html);
                let start = out.len();
                match encoding {
                    Encoding::QuotedPrintable => encode_qp(text.as_bytes(), eol, out),
                    Encoding::Base64 => encode_base64(text.as_bytes(), eol, out),
                    Encoding::Identity => out.extend_from_slice(text.as_bytes()),
                }
                if *trailing_eol && !out[start..].ends_with(b"\n") {
                    out.extend_from_slice(eol.as_bytes());
                } else if !*trailing_eol {
                    while out.len() > start && matches!(out.last(), Some(b'\n' | b'\r')) {
                        out.pop();
                    }
                }
            }
            Node::Multipart { head, gaps, parts } => {
                emit_head(head, values, rng, out);
                for (gap, part) in gaps.iter().zip(parts) {
                    out.extend_from_slice(gap);
                    part.emit(values, rng, out);
                }
                out.extend_from_slice(gaps.last().unwrap());
            }
            Node::Message { head, inner } => {
                emit_head(head, values, rng, out);
                inner.emit(values, rng, out);
            }
        }
    }
}

fn eol_of(bytes: &[u8]) -> &'static str {
    if bytes.windows(2).any(|w| w == b"\r\n") {
        "\r\n"
    } else {
        "\n"
    }
}

/// Splits a raw header block (ending with its blank line) into fields; the subject-like ones and
/// `Message-ID` become templates, everything else stays byte for byte.
fn parse_head(raw: &[u8], known: &Known, found: &mut Found) -> Vec<Field> {
    let eol = eol_of(raw);
    let mut fields: Vec<Vec<u8>> = Vec::new();
    for line in raw.split_inclusive(|&b| b == b'\n') {
        match line.first() {
            Some(b' ' | b'\t') if !fields.is_empty() => {
                fields.last_mut().unwrap().extend_from_slice(line)
            }
            _ => fields.push(line.to_vec()),
        }
    }
    fields
        .into_iter()
        .map(|raw_field| {
            let Ok((header, _)) = mailparse::parse_header(&raw_field) else {
                return Field::Verbatim(raw_field);
            };
            let key = header.get_key();
            match key.to_ascii_lowercase().as_str() {
                "subject" | "thread-topic" => {
                    let value = header.get_value();
                    let rfc2047 = String::from_utf8_lossy(header.get_value_raw()).contains("=?");
                    Field::Text {
                        key,
                        template: templatize_text(value, false, known, found),
                        rfc2047,
                        eol,
                    }
                }
                "message-id" => Field::MessageId {
                    key,
                    shape: header
                        .get_value()
                        .trim()
                        .trim_start_matches('<')
                        .trim_end_matches('>')
                        .to_owned(),
                    eol,
                },
                _ => Field::Verbatim(raw_field),
            }
        })
        .collect()
}

fn emit_head(head: &[Field], values: &Values, rng: &mut Rng, out: &mut Vec<u8>) {
    for field in head {
        match field {
            Field::Verbatim(bytes) => out.extend_from_slice(bytes),
            Field::Text {
                key,
                template,
                rfc2047,
                eol,
            } => {
                let text = fill(template, values, false);
                if *rfc2047 || !text.is_ascii() {
                    write_encoded_words(key, &text, eol, out);
                } else {
                    write_folded(key, &text, eol, out);
                }
            }
            Field::MessageId { key, shape, eol } => {
                out.extend_from_slice(format!("{key}: <{}>{eol}", rng.like(shape)).as_bytes());
            }
        }
    }
}

/// `Key: value`, folded before a space so that no line passes 78 characters where possible.
fn write_folded(key: &str, text: &str, eol: &str, out: &mut Vec<u8>) {
    let mut line = format!("{key}: ");
    let mut first = true;
    for word in text.split(' ') {
        if !first && line.len() + 1 + word.len() > 78 {
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(eol.as_bytes());
            line.clear();
        }
        if !first {
            line.push(' ');
        }
        line.push_str(word);
        first = false;
    }
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(eol.as_bytes());
}

/// `Key: =?UTF-8?Q?...?=` in encoded words of at most 75 characters, one per line, never
/// splitting a character between words.
fn write_encoded_words(key: &str, text: &str, eol: &str, out: &mut Vec<u8>) {
    let mut words = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        let mut piece = String::new();
        let mut buf = [0; 4];
        for &b in c.encode_utf8(&mut buf).as_bytes() {
            match b {
                b' ' => piece.push('_'),
                b'=' | b'?' | b'_' => piece.push_str(&format!("={b:02X}")),
                33..=126 => piece.push(b as char),
                _ => piece.push_str(&format!("={b:02X}")),
            }
        }
        if word.len() + piece.len() > 63 {
            words.push(std::mem::take(&mut word));
        }
        word.push_str(&piece);
    }
    words.push(word);
    let lines: Vec<String> = words.iter().map(|w| format!("=?UTF-8?Q?{w}?=")).collect();
    let sep = format!("{eol} ");
    out.extend_from_slice(format!("{key}: {}{eol}", lines.join(&sep)).as_bytes());
}

/// Quoted-printable (RFC 2045): lines of at most 76 characters, `=` soft breaks, trailing
/// whitespace and every non-printable byte escaped; hard line breaks written as `eol`.
fn encode_qp(bytes: &[u8], eol: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut lines = bytes.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut width = 0;
        for (i, &b) in line.iter().enumerate() {
            let last = i + 1 == line.len();
            let literal =
                ((b == b' ' || b == b'\t') && !last) || ((33..=126).contains(&b) && b != b'=');
            let len = if literal { 1 } else { 3 };
            // Room for the token and, unless it ends the line, a soft break after it.
            if width + len > if last { 76 } else { 75 } {
                out.extend_from_slice(b"=");
                out.extend_from_slice(eol.as_bytes());
                width = 0;
            }
            if literal {
                out.push(b);
            } else {
                out.extend_from_slice(&[b'=', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
            }
            width += len;
        }
        if lines.peek().is_some() {
            out.extend_from_slice(eol.as_bytes());
        }
    }
}

/// Base64 in lines of 76 characters.
fn encode_base64(bytes: &[u8], eol: &str, out: &mut Vec<u8>) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (n, chunk) in bytes.chunks(57).enumerate() {
        if n > 0 {
            out.extend_from_slice(eol.as_bytes());
        }
        for group in chunk.chunks(3) {
            let b = [
                group[0],
                group.get(1).copied().unwrap_or(0),
                group.get(2).copied().unwrap_or(0),
            ];
            let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for k in 0..4 {
                if k <= group.len() {
                    out.push(ALPHABET[((v >> (18 - 6 * k)) & 63) as usize]);
                } else {
                    out.push(b'=');
                }
            }
        }
    }
    out.extend_from_slice(eol.as_bytes());
}

/// Every way `text` may be written in an HTML body.
fn html_forms(text: &str) -> Vec<String> {
    let amp = text.replace('&', "&amp;");
    let mut forms = vec![text.to_owned(), amp.clone()];
    for apostrophe in ["&#39;", "&#x27;", "&apos;"] {
        forms.push(amp.replace('\'', apostrophe));
    }
    forms.dedup();
    forms
}

fn replace_counting(text: &mut String, from: &str, to: &str) -> usize {
    let n = text.matches(from).count();
    if n > 0 {
        *text = text.replace(from, to);
    }
    n
}

fn templatize_text(mut text: String, html: bool, known: &Known, found: &mut Found) -> String {
    let forms = |t: &str| {
        if html {
            html_forms(t)
        } else {
            vec![t.to_owned()]
        }
    };
    found.id += replace_counting(&mut text, &known.id, ID);
    found.amount += replace_counting(
        &mut text,
        &format!("${}", known.amount),
        &format!("${AMOUNT}"),
    );
    for form in forms(&known.payee) {
        found.payee += replace_counting(&mut text, &form, PAYEE);
    }
    if let Some(note) = &known.note {
        for form in forms(note) {
            found.note += replace_counting(&mut text, &form, NOTE);
        }
    }
    text
}

fn templatize_body(text: String, html: bool, known: &Known, found: &mut Found) -> String {
    let mut text = templatize_text(text, html, known, found);
    if html {
        // The 2024+ layout splits the amount into elements: `$` `386` `.` `70`.
        let dollars = format!(">{}<", known.dollars);
        if let Some(at) = text.find(&dollars) {
            let cents = format!(">{}<", known.cents);
            let after = at + dollars.len();
            if let Some(c) = text[after..].find(&cents).map(|c| after + c) {
                text.replace_range(c..c + cents.len(), &format!(">{CENTS}<"));
                text.replace_range(at..after, &format!(">{DOLLARS}<"));
                found.amount += 1;
            }
        }
    }
    static HANDLE_RE: std::sync::LazyLock<Regex> =
        std::sync::LazyLock::new(|| Regex::new(r"(?m)(^|>)@[A-Za-z0-9][A-Za-z0-9_-]*").unwrap());
    static STORY_RE: std::sync::LazyLock<Regex> =
        std::sync::LazyLock::new(|| Regex::new(r"\b[0-9a-f]{24}\b").unwrap());
    let text = HANDLE_RE.replace_all(&text, format!("${{1}}{HANDLE}"));
    STORY_RE.replace_all(&text, STORY).into_owned()
}

fn fill(template: &str, v: &Values, html: bool) -> String {
    let esc = |t: &str| {
        if html {
            t.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
                .replace('\'', "&#39;")
        } else {
            t.to_owned()
        }
    };
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(at) = rest.find('\u{1}') {
        out.push_str(&rest[..at]);
        let end = at + 1 + rest[at + 1..].find('\u{1}').unwrap() + 1;
        match &rest[at..end] {
            PAYEE => out.push_str(&esc(&v.payee)),
            AMOUNT => {
                out.push_str(&v.dollars);
                out.push('.');
                out.push_str(&v.cents);
            }
            DOLLARS => out.push_str(&v.dollars),
            CENTS => out.push_str(&v.cents),
            NOTE => out.push_str(&esc(&v.note)),
            ID => out.push_str(&v.id),
            HANDLE => out.push_str(&v.handle),
            STORY => out.push_str(&v.story),
            other => unreachable!("placeholder {other:?}"),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

const FIRST: &[&str] = &[
    "Taylor", "Morgan", "Riley", "Dana", "Jordan", "Mia", "Sam", "Lena", "Chris", "José", "Avery",
    "Harper", "Noah", "Ellie", "Kai", "Priya", "Zoë", "Mateo", "Aisha", "Wei", "Olivia", "Liam",
    "Sofía", "Ethan", "Hannah", "Diego", "Grace", "Omar", "Chloë", "Ravi", "Isabel", "Jamal",
    "Nora", "Hiroshi", "Camille", "Lucas", "Fatima", "Björn", "Ana", "Declan",
];
const LAST: &[&str] = &[
    "Brooks",
    "Ellis",
    "Nguyen",
    "Kim",
    "Patel",
    "Chen",
    "O'Brien",
    "Fischer",
    "Walker",
    "Núñez",
    "Johnson",
    "Lewis",
    "Garcia",
    "Martin",
    "Robinson",
    "Shah",
    "Okafor",
    "Rossi",
    "Müller",
    "Kowalski",
    "Haddad",
    "Larsen",
    "Tanaka",
    "Dubois",
    "O'Connor",
    "Silva",
    "Schmidt",
    "Reyes",
    "Andersson",
    "Murphy",
    "Lopez",
    "Nakamura",
    "Cohen",
    "Ibrahim",
    "Bauer",
    "Costa",
    "Moreau",
    "Yilmaz",
    "Park",
    "Wright",
];
const NOTES: &[&str] = &[
    "Pizza & drinks 🍕",
    "Rent for March 🏠🔑 — ¡gracias!",
    "Utilities - June",
    "Concert tickets",
    "Security deposit",
    "Flights to Denver ✈️",
    "Coffee ☕",
    "Parking for the game",
    "Groceries 🥦",
    "Uber home 🚕",
    "Ski rental",
    "Cabin weekend 🏕️",
    "Tahoe house share",
    "Birthday gift 🎂",
    "Halloween party supplies 🎃",
    "Dinner at Luigi's",
    "Electric bill (Oct)",
    "Book club snacks 📚",
    "Half of the \"good\" wine 🍷",
    "Gas money ⛽",
    "Movie night 🍿",
    "Tacos <3",
    "Internet — Nov",
    "Soccer league fees ⚽",
    "Brunch 🥞🥂",
    "Concert merch 🎸",
    "Dog sitting 🐶",
    "Lift tickets ❄️",
    "Wedding gift fund 💍",
    "Sushi 🍣",
    "Car wash",
    "Furniture from Craigslist",
    "Thanks for covering me!",
    "Camping gear 🏕",
    "Spotify family plan",
    "Cleaning supplies 🧽",
    "Costco run",
    "Climbing gym day pass 🧗",
    "Bike repair 🚲",
    "Café au lait ☕ & croissant 🥐",
];

impl Values {
    fn random(i: u64, rng: &mut Rng, paypal_id: bool) -> Values {
        let first = rng.pick(FIRST);
        let last = rng.pick(LAST);
        let payee = format!("{first} {last}");
        let dollars = match rng.below(100) {
            0..=69 => 1 + rng.below(99),
            70..=94 => 100 + rng.below(900),
            _ => 1000 + rng.below(4000),
        };
        let cents = if rng.below(10) < 4 { 0 } else { rng.below(100) };
        // 19 digits, unique per `i`: i -> (i * M + C) mod 10^18 permutes the residues, as M is
        // odd and not a multiple of 5.
        const M: u128 = 0x2545_f491_4f6c_dd1d;
        let unique = (u128::from(i) * M + 271_828_182_845_904_523) % 1_000_000_000_000_000_000;
        let id = if paypal_id {
            const CHARS: &[u8] = b"0123456789ABCDEFGHJKLMNPQRSTUVWXYZ";
            let mut id: String = (0..9)
                .map(|_| CHARS[rng.below(CHARS.len() as u64) as usize] as char)
                .collect();
            id.push_str(&format!("{:08}", i % 100_000_000));
            id
        } else {
            format!("{}{unique:018}", 3 + rng.below(2))
        };
        let ascii: String = payee
            .chars()
            .filter_map(|c| match c {
                'é' => Some('e'),
                'ú' => Some('u'),
                'ñ' => Some('n'),
                'ë' => Some('e'),
                'í' => Some('i'),
                'ö' | 'ü' => Some('o'),
                ' ' => Some('-'),
                '\'' => None,
                c => Some(c),
            })
            .collect();
        Values {
            payee,
            dollars: thousands(dollars),
            cents: format!("{cents:02}"),
            note: rng.pick(NOTES).to_owned(),
            id,
            handle: format!("@{ascii}-{}", rng.below(100)),
            story: (0..24).map(|_| hex_digit(rng.below(16))).collect(),
        }
    }
}

fn hex_digit(n: u64) -> char {
    char::from_digit(n as u32, 16).unwrap()
}

/// SplitMix64: small, fast and reproducible.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    /// A string shaped like `shape` (a Message-ID without `<>`): in every run of letters and
    /// digits that holds a digit, each character is replaced by a random one of the same kind.
    fn like(&mut self, shape: &str) -> String {
        let domain_at = shape.rfind('@').unwrap_or(shape.len());
        let (local, domain) = shape.split_at(domain_at);
        let mut out = String::with_capacity(shape.len());
        for run in local.split_inclusive(|c: char| !c.is_ascii_alphanumeric()) {
            if !run.bytes().any(|b| b.is_ascii_digit()) {
                out.push_str(run);
                continue;
            }
            let hex = run
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || !b.is_ascii_alphanumeric());
            for c in run.chars() {
                out.push(match c {
                    '0'..='9' => char::from(b'0' + self.below(10) as u8),
                    'a'..='f' if hex => hex_digit(10 + self.below(6)),
                    'A'..='F' if hex => hex_digit(10 + self.below(6)).to_ascii_uppercase(),
                    'a'..='z' => char::from(b'a' + self.below(26) as u8),
                    'A'..='Z' => char::from(b'A' + self.below(26) as u8),
                    c => c,
                });
            }
        }
        out.push_str(domain);
        out
    }
}

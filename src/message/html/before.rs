//! The renderer as it was before the memchr-based rewrite (commit 1f13ead), kept only as the
//! oracle for the differential tests below: the current renderer must give byte-identical text
//! and links for every input. It is a self-contained copy (its own scanners, entity decoder and
//! line builder), so that a change to any helper of the current renderer is checked too.

use std::borrow::Cow;

use super::Rendered;

/// What the renderer needs to know about an element, from its lowercase name in one lookup.
#[derive(Clone, Copy, Default)]
struct ElementKind {
    /// Its content is never shown (`head`, `style`, `script`, ...).
    invisible: bool,
    /// It starts a new line.
    block: bool,
    /// It has no closing tag.
    void: bool,
}

impl ElementKind {
    fn of(name: &str) -> ElementKind {
        const INVISIBLE: ElementKind = ElementKind {
            invisible: true,
            block: false,
            void: false,
        };
        const BLOCK: ElementKind = ElementKind {
            invisible: false,
            block: true,
            void: false,
        };
        const VOID: ElementKind = ElementKind {
            invisible: false,
            block: false,
            void: true,
        };
        const BLOCK_VOID: ElementKind = ElementKind {
            invisible: false,
            block: true,
            void: true,
        };
        match name {
            "head" | "style" | "script" | "title" | "template" | "noscript" => INVISIBLE,
            "address" | "article" | "aside" | "blockquote" | "center" | "dd" | "div" | "dl"
            | "dt" | "footer" | "form" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "header"
            | "li" | "ol" | "p" | "pre" | "section" | "table" | "tbody" | "td" | "tfoot" | "th"
            | "thead" | "tr" | "ul" => BLOCK,
            "br" | "hr" => BLOCK_VOID,
            "area" | "base" | "col" | "embed" | "img" | "input" | "link" | "meta" | "source"
            | "track" | "wbr" => VOID,
            _ => ElementKind::default(),
        }
    }
}

/// How deep we track open elements; deeper nesting is treated as flat rather than refused.
const MAX_STACK: usize = 512;

pub(super) fn render(html: &str) -> Rendered {
    let mut out = Rendered {
        text: String::with_capacity(html.len() / 4),
        links: Vec::new(),
    };
    let mut line = LineBuilder::default();
    // Open elements (lowercase names, borrowed from `html` when it already wrote them in
    // lowercase), and the stack depth at which hiding started (if hidden).
    let mut stack: Vec<Cow<'_, str>> = Vec::new();
    let mut hidden_from: Option<usize> = None;
    // Scratch space for reading `style` attributes.
    let mut style = String::new();
    let bytes = html.as_bytes();
    let mut pos = 0;
    while pos < bytes.len() {
        let Some(lt) = find_byte(&bytes[pos..], b'<').map(|i| pos + i) else {
            if hidden_from.is_none() {
                line.push_text(&html[pos..]);
            }
            break;
        };
        if lt > pos && hidden_from.is_none() {
            line.push_text(&html[pos..lt]);
        }
        let rest = &html[lt..];
        if rest.starts_with("<!--") {
            pos = find_from(html, lt + 4, "-->").map_or(bytes.len(), |i| i + 3);
            continue;
        }
        if rest.starts_with("<!") || rest.starts_with("<?") {
            pos = find_from(html, lt, ">").map_or(bytes.len(), |i| i + 1);
            continue;
        }
        let Some(tag) = Tag::parse(&html[lt..]) else {
            // A lone `<` in text, as careless HTML has.
            if hidden_from.is_none() {
                line.push_text("<");
            }
            pos = lt + 1;
            continue;
        };
        pos = lt + tag.len;
        let name: &str = &tag.name;
        let kind = ElementKind::of(name);
        if tag.closing {
            if let Some(depth) = stack.iter().rposition(|open| open == name) {
                stack.truncate(depth);
                if hidden_from.is_some_and(|h| depth < h) {
                    hidden_from = None;
                }
            }
            if kind.block && hidden_from.is_none() {
                line.break_line(&mut out.text);
            }
            continue;
        }
        if kind.invisible && !tag.self_closing {
            // Skip straight to the matching close tag: these hold no visible markup.
            pos = find_close_tag(html, pos, name)
                .and_then(|i| find_from(html, i, ">").map(|j| j + 1))
                .unwrap_or(bytes.len());
            continue;
        }
        let opens = !kind.void && !tag.self_closing && stack.len() < MAX_STACK;
        let mut hides = false;
        if hidden_from.is_none() {
            let is_link = name == "a";
            // One pass over the attributes for everything this tag needs: its link target and
            // whether it hides its content (only asked of elements that stay open).
            if is_link || opens {
                let seen = tag.read_attrs(&html[lt..lt + tag.len]);
                if is_link {
                    if let Some(href) = seen.href {
                        out.links.push(decode_entities(href.trim()).into_owned());
                    }
                }
                hides = opens && seen.hides(&mut style);
            }
            if kind.block {
                line.break_line(&mut out.text);
            }
        }
        if opens {
            stack.push(tag.name);
            if hides {
                hidden_from = Some(stack.len());
            }
        }
    }
    line.break_line(&mut out.text);
    if out.text.ends_with('\n') {
        out.text.pop();
    }
    out
}

/// A start or end tag: its lowercase name and where its attributes are.
struct Tag<'a> {
    name: Cow<'a, str>,
    closing: bool,
    self_closing: bool,
    /// Bytes from `<` to just past `>`.
    len: usize,
}

impl<'a> Tag<'a> {
    fn parse(s: &'a str) -> Option<Tag<'a>> {
        let b = s.as_bytes();
        let mut i = 1;
        let closing = b.get(i) == Some(&b'/');
        if closing {
            i += 1;
        }
        let name_start = i;
        while i < b.len() && has_class(b[i], TAG_NAME) {
            i += 1;
        }
        if i == name_start || !b[name_start].is_ascii_alphabetic() {
            return None;
        }
        let raw_name = &s[name_start..i];
        let name = if raw_name.bytes().any(|c| c.is_ascii_uppercase()) {
            Cow::Owned(raw_name.to_ascii_lowercase())
        } else {
            Cow::Borrowed(raw_name)
        };
        // Find the end of the tag, skipping over quoted attribute values (which may hold `>`).
        // `i` ends at the `>`, or at the end of the input when there is none.
        loop {
            let Some(at) = find_any3(&b[i..], b'>', b'"', b'\'') else {
                i = b.len();
                break;
            };
            i += at;
            if b[i] == b'>' {
                break;
            }
            match find_byte(&b[i + 1..], b[i]) {
                Some(close) => i += 1 + close + 1,
                None => {
                    i = b.len();
                    break;
                }
            }
        }
        let len = (i + 1).min(b.len());
        let self_closing = i > 0 && b.get(i - 1) == Some(&b'/');
        Some(Tag {
            name,
            closing,
            self_closing,
            len,
        })
    }

    /// The attributes the renderer reads, in one pass over the tag's source text: the first
    /// `href`, whether there is a `hidden` attribute, and the first `style`.
    fn read_attrs<'s>(&self, source: &'s str) -> SeenAttrs<'s> {
        let mut seen = SeenAttrs::default();
        for (name, value) in self.attrs(source) {
            if seen.href.is_none() && name.eq_ignore_ascii_case("href") {
                seen.href = Some(value);
            } else if name.eq_ignore_ascii_case("hidden") {
                seen.hidden = true;
            } else if seen.style.is_none() && name.eq_ignore_ascii_case("style") {
                seen.style = Some(value);
            }
        }
        seen
    }

    /// The tag's attributes in source order: raw names and raw values.
    fn attrs<'s>(&self, source: &'s str) -> Attrs<'s> {
        // Everything before the closing `>`. A tag cut off by the end of the input has no `>`;
        // its last character is dropped all the same, but whole, so a multi-byte character
        // there cannot split (slicing inside it used to panic).
        let mut end = source.len().saturating_sub(1);
        while !source.is_char_boundary(end) {
            end -= 1;
        }
        Attrs {
            source,
            // Skip `<`, an optional `/`, and the tag name.
            i: 1 + usize::from(self.closing) + self.name.len(),
            end,
        }
    }
}

/// The attributes of one tag that the renderer reads: raw values, not yet entity-decoded.
#[derive(Default)]
struct SeenAttrs<'s> {
    href: Option<&'s str>,
    hidden: bool,
    style: Option<&'s str>,
}

impl SeenAttrs<'_> {
    /// Whether the element is hidden: a `hidden` attribute, or a first `style` attribute that
    /// (ignoring whitespace and ASCII case) says `display:none`, `visibility:hidden`, or
    /// `max-height:0` with `overflow:hidden`. `scratch` is reused between calls.
    fn hides(&self, scratch: &mut String) -> bool {
        if self.hidden {
            return true;
        }
        match self.style {
            None => false,
            Some(style) if style.is_ascii() => style_hides(style),
            Some(style) => {
                scratch.clear();
                scratch.extend(
                    style
                        .chars()
                        .filter(|c| !c.is_whitespace())
                        .map(|c| c.to_ascii_lowercase()),
                );
                compact_style_hides(scratch)
            }
        }
    }
}

/// Whether a style, with all whitespace removed and lowercased, hides its element.
fn compact_style_hides(style: &str) -> bool {
    let max_height_zero = style.contains("max-height:0;")
        || style.ends_with("max-height:0")
        || style.contains("max-height:0px");
    style.contains("display:none")
        || style.contains("visibility:hidden")
        || (max_height_zero && style.contains("overflow:hidden"))
}

/// `compact_style_hides` for an ASCII style, read in place: every pattern has one `:`, so each
/// `:` is matched backwards against the property and forwards against the value, skipping
/// whitespace and ignoring case exactly as the compacted form would.
fn style_hides(style: &str) -> bool {
    let b = style.as_bytes();
    let mut display_none = false;
    let mut visibility_hidden = false;
    let mut max_height_zero = false;
    let mut overflow_hidden = false;
    let mut from = 0;
    while let Some(colon) = find_byte(&b[from..], b':').map(|i| from + i) {
        from = colon + 1;
        // Every property here ends in `y`, `t` or `w`: most colons are out at one byte.
        let before = trim_end_spaces(&b[..colon]);
        if !matches!(
            before.last().map(u8::to_ascii_lowercase),
            Some(b'y' | b't' | b'w')
        ) {
            continue;
        }
        let after = &b[colon + 1..];
        if ends_with_compact(before, b"display") && starts_with_compact(after, b"none").is_some() {
            display_none = true;
        }
        if ends_with_compact(before, b"visibility")
            && starts_with_compact(after, b"hidden").is_some()
        {
            visibility_hidden = true;
        }
        if ends_with_compact(before, b"max-height") {
            if let Some(rest) = starts_with_compact(after, b"0") {
                if starts_with_compact(rest, b";").is_some()
                    || starts_with_compact(rest, b"px").is_some()
                    || rest.iter().all(|&c| is_ascii_space(c))
                {
                    max_height_zero = true;
                }
            }
        }
        if ends_with_compact(before, b"overflow") && starts_with_compact(after, b"hidden").is_some()
        {
            overflow_hidden = true;
        }
    }
    display_none || visibility_hidden || (max_height_zero && overflow_hidden)
}

fn trim_end_spaces(text: &[u8]) -> &[u8] {
    let mut end = text.len();
    while end > 0 && is_ascii_space(text[end - 1]) {
        end -= 1;
    }
    &text[..end]
}

/// Whether every byte is `is_ascii_space`. Indentation between tags is long runs of spaces, so
/// eight of them are taken at once.
fn all_ascii_space(text: &[u8]) -> bool {
    let mut chunks = text.chunks_exact(8);
    for chunk in &mut chunks {
        if u64::from_le_bytes(chunk.try_into().unwrap()) != LO * u64::from(b' ')
            && !chunk.iter().all(|&c| is_ascii_space(c))
        {
            return false;
        }
    }
    chunks.remainder().iter().all(|&c| is_ascii_space(c))
}

/// `char::is_whitespace` for ASCII.
fn is_ascii_space(c: u8) -> bool {
    matches!(c, b'\t'..=b'\r' | b' ')
}

/// Whether `text` with whitespace removed and lowercased starts with `word` (lowercase); the
/// text after the match if so.
fn starts_with_compact<'t>(text: &'t [u8], word: &[u8]) -> Option<&'t [u8]> {
    let mut i = 0;
    for &w in word {
        while i < text.len() && is_ascii_space(text[i]) {
            i += 1;
        }
        if text.get(i).map(u8::to_ascii_lowercase) != Some(w) {
            return None;
        }
        i += 1;
    }
    Some(&text[i..])
}

/// Whether `text` with whitespace removed and lowercased ends with `word` (lowercase).
fn ends_with_compact(text: &[u8], word: &[u8]) -> bool {
    let mut i = text.len();
    for &w in word.iter().rev() {
        while i > 0 && is_ascii_space(text[i - 1]) {
            i -= 1;
        }
        if i == 0 || text[i - 1].to_ascii_lowercase() != w {
            return false;
        }
        i -= 1;
    }
    true
}

/// Byte classes for the tag and attribute scanners: one table load per byte instead of a chain
/// of comparisons. `SPACE` is `u8::is_ascii_whitespace` (which, unlike `is_ascii_space`, leaves
/// out vertical tab), `TAG_NAME` is ASCII alphanumerics, `-` and `:`.
const SPACE: u8 = 1;
const SLASH: u8 = 2;
const EQUALS: u8 = 4;
const GT: u8 = 8;
const TAG_NAME: u8 = 16;

const BYTE_CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = if c.is_ascii_whitespace() {
            SPACE
        } else if c == b'/' {
            SLASH
        } else if c == b'=' {
            EQUALS
        } else if c == b'>' {
            GT
        } else if c.is_ascii_alphanumeric() || c == b'-' || c == b':' {
            TAG_NAME
        } else {
            0
        };
        b += 1;
    }
    table
};

fn has_class(byte: u8, class: u8) -> bool {
    BYTE_CLASS[usize::from(byte)] & class != 0
}

/// The attributes of a tag's source text, as `(name, value)`; `value` is `""` for a bare
/// attribute.
struct Attrs<'s> {
    source: &'s str,
    i: usize,
    end: usize,
}

impl<'s> Iterator for Attrs<'s> {
    type Item = (&'s str, &'s str);

    fn next(&mut self) -> Option<Self::Item> {
        let (source, end) = (self.source, self.end);
        let b = source.as_bytes();
        let mut i = self.i;
        if i >= end {
            return None;
        }
        while i < end && has_class(b[i], SPACE | SLASH) {
            i += 1;
        }
        let name_start = i;
        while i < end && !has_class(b[i], SPACE | EQUALS | GT | SLASH) {
            i += 1;
        }
        if i == name_start {
            self.i = end;
            return None;
        }
        let attr_name = &source[name_start..i];
        while i < end && has_class(b[i], SPACE) {
            i += 1;
        }
        let mut value = "";
        if i < end && b[i] == b'=' {
            i += 1;
            while i < end && has_class(b[i], SPACE) {
                i += 1;
            }
            if i < end && (b[i] == b'"' || b[i] == b'\'') {
                let quote = b[i];
                let value_start = i + 1;
                i = find_byte(&b[value_start..end], quote).map_or(end, |q| value_start + q);
                value = &source[value_start..i];
                i += 1;
            } else {
                let value_start = i;
                while i < end && !has_class(b[i], SPACE | GT) {
                    i += 1;
                }
                value = &source[value_start..i];
            }
        }
        self.i = i;
        Some((attr_name, value))
    }
}

/// Accumulates one output line, collapsing whitespace and dropping invisible characters.
#[derive(Default)]
struct LineBuilder {
    line: String,
    pending_space: bool,
}

impl LineBuilder {
    fn push_text(&mut self, raw: &str) {
        // Most text between tags is a line break and indentation.
        if all_ascii_space(raw.as_bytes()) {
            if !raw.is_empty() {
                self.pending_space = !self.line.is_empty();
            }
            return;
        }
        let decoded = decode_entities(raw);
        if decoded.is_ascii() {
            // The same as the loop below, a run at a time: words joined by single spaces are
            // already collapsed, so they go in whole.
            let bytes = decoded.as_bytes();
            let mut i = 0;
            while i < bytes.len() {
                if is_ascii_space(bytes[i]) {
                    self.pending_space = !self.line.is_empty();
                    i += 1;
                    continue;
                }
                let start = i;
                loop {
                    while i < bytes.len() && !is_ascii_space(bytes[i]) {
                        i += 1;
                    }
                    if bytes.get(i) == Some(&b' ')
                        && bytes.get(i + 1).is_some_and(|&c| !is_ascii_space(c))
                    {
                        i += 1;
                        continue;
                    }
                    break;
                }
                if self.pending_space {
                    self.line.push(' ');
                    self.pending_space = false;
                }
                self.line.push_str(&decoded[start..i]);
            }
            return;
        }
        for c in decoded.chars() {
            if c.is_whitespace() {
                self.pending_space = !self.line.is_empty();
            } else if !is_invisible(c) {
                if self.pending_space {
                    self.line.push(' ');
                    self.pending_space = false;
                }
                self.line.push(c);
            }
        }
    }

    fn break_line(&mut self, out: &mut String) {
        if !self.line.is_empty() {
            out.push_str(&self.line);
            out.push('\n');
            self.line.clear();
        }
        self.pending_space = false;
    }
}

/// Zero-width characters that preheader padding and trackers sprinkle into text.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200b}' | '\u{200c}' | '\u{200d}' | '\u{2060}' | '\u{feff}' | '\u{034f}' | '\u{00ad}'
    )
}

fn decode_entities(s: &str) -> Cow<'_, str> {
    if s.contains('&') {
        decode_common_entities(s).map_or_else(|| html_escape::decode_html_entities(s), Cow::Owned)
    } else {
        Cow::Borrowed(s)
    }
}

/// `html_escape::decode_html_entities` for text whose every `&` starts an entity mail commonly
/// writes in full (`&nbsp;`, `&amp;`, `&zwnj;`, `&#847;`, ...); `None` for anything else, which
/// is left to `html_escape`. Its general decoder looks each name up among all of HTML's entities
/// and was a tenth of the renderer's cost.
fn decode_common_entities(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = find_byte(rest.as_bytes(), b'&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let semi = after.bytes().take(8).position(|b| b == b';')?;
        let decoded = match &after[..semi] {
            "nbsp" => '\u{a0}',
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "zwnj" => '\u{200c}',
            "middot" => '\u{b7}',
            "copy" => '\u{a9}',
            name => {
                let digits = name.strip_prefix('#')?;
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                // Printable ASCII, or from Latin-1's letters to just below the surrogates:
                // the ranges every decoder maps to themselves.
                let code: u32 = digits.parse().ok()?;
                if !(32..=126).contains(&code) && !(160..0xD800).contains(&code) {
                    return None;
                }
                char::from_u32(code)?
            }
        };
        out.push(decoded);
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Some(out)
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Nonzero exactly when some byte of `x` is zero. Only bytes above a zero byte can be flagged
/// wrongly (borrows propagate upwards), so the lowest set bit always marks a zero byte.
fn zero_bytes(x: u64) -> u64 {
    x.wrapping_sub(LO) & !x & HI
}

/// The index of the first `needle` in `hay`, eight bytes at a time.
fn find_byte(hay: &[u8], needle: u8) -> Option<usize> {
    let pattern = LO * u64::from(needle);
    let mut chunks = hay.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().unwrap());
        let found = zero_bytes(word ^ pattern);
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == needle)
        .map(|i| at + i)
}

/// The index of the first of `a`, `b` or `c` in `hay`, eight bytes at a time.
fn find_any3(hay: &[u8], a: u8, b: u8, c: u8) -> Option<usize> {
    let (pa, pb, pc) = (LO * u64::from(a), LO * u64::from(b), LO * u64::from(c));
    let mut chunks = hay.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().unwrap());
        let found = zero_bytes(word ^ pa) | zero_bytes(word ^ pb) | zero_bytes(word ^ pc);
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&x| x == a || x == b || x == c)
        .map(|i| at + i)
}

/// Where `needle` (ASCII) next starts at or after `from`.
fn find_from(s: &str, from: usize, needle: &str) -> Option<usize> {
    let (first, tail) = needle.as_bytes().split_first()?;
    let hay = s.get(from..)?.as_bytes();
    let mut at = 0;
    loop {
        let i = at + find_byte(&hay[at..], *first)?;
        if hay[i + 1..].starts_with(tail) {
            return Some(from + i);
        }
        at = i + 1;
    }
}

/// Where `</name` (any ASCII case; `name` given in lowercase) next starts at or after `from`.
fn find_close_tag(s: &str, from: usize, name: &str) -> Option<usize> {
    let hay = s.as_bytes();
    let name = name.as_bytes();
    let mut at = from;
    loop {
        let lt = find_from(s, at, "</")?;
        let candidate = hay.get(lt + 2..lt + 2 + name.len())?;
        if candidate.eq_ignore_ascii_case(name) {
            return Some(lt);
        }
        at = lt + 2;
    }
}

#[allow(dead_code)] // the test uses only the generator
#[path = "../../../benches/support/corpus.rs"]
mod corpus;

/// The decoded `text/html` bodies of a raw email, attached messages included.
fn html_bodies(raw: &[u8], out: &mut Vec<String>) {
    fn walk(part: &mailparse::ParsedMail<'_>, out: &mut Vec<String>) {
        let mime = part.ctype.mimetype.to_ascii_lowercase();
        if mime == "text/html" {
            if let Ok(body) = part.get_body() {
                out.push(body);
            }
        } else if mime == "message/rfc822" {
            if let Ok(inner) = part.get_body_raw() {
                html_bodies(&inner, out);
            }
        }
        for sub in &part.subparts {
            walk(sub, out);
        }
    }
    if let Ok(mail) = mailparse::parse_mail(raw) {
        walk(&mail, out);
    }
}

fn eml_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            eml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "eml") {
            out.push(path);
        }
    }
}

fn assert_same(html: &str, what: &str) {
    assert_eq!(super::render(html), render(html), "{what}: {html:?}");
}

#[test]
fn renderer_matches_the_oracle_on_every_fixture_and_the_bench_corpus() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    eml_files(&root.join("fixtures"), &mut files);
    let mut bodies = Vec::new();
    for file in &files {
        html_bodies(&std::fs::read(file).unwrap(), &mut bodies);
    }
    assert!(
        bodies.len() > 50,
        "only {} fixture HTML bodies",
        bodies.len()
    );
    for body in &bodies {
        assert_same(body, "fixture");
    }
    // Every prefix of a real body: tags, quotes, comments and entities cut off at every point.
    let body = &bodies[0];
    for end in (0..=body.len()).filter(|&end| body.is_char_boundary(end)) {
        assert_same(&body[..end], "fixture prefix");
    }
    let generator = corpus::Corpus::load(&root.join("fixtures/venmo"));
    let mut corpus_bodies = Vec::new();
    for i in 0..800 {
        html_bodies(&generator.email(i).bytes, &mut corpus_bodies);
    }
    assert!(corpus_bodies.len() > 700);
    for body in &corpus_bodies {
        assert_same(body, "corpus");
    }
}

#[test]
fn renderer_matches_the_oracle_on_random_and_malformed_html() {
    let pieces = [
        "<",
        ">",
        "</",
        "/>",
        "<a",
        "<A HREF=",
        "href",
        "HREF",
        "=",
        "\"",
        "'",
        " ",
        "\n",
        "x",
        "é",
        "\u{200c}",
        "&amp;",
        "&nbsp;",
        "<div",
        "</div>",
        "<p>",
        "</p",
        "<br>",
        "<span",
        "</span>",
        "hidden",
        "style=",
        "display:none",
        "visibility: hidden",
        "max-height:0;overflow:hidden",
        "<style>",
        "</style>",
        "<script",
        "</SCRIPT>",
        "<!--",
        "-->",
        "<!doctype",
        "<?xml",
        "<td",
        "<tr>",
        "<img src=x",
        "<br/>",
        "<hr",
        "<head>",
        "</head>",
        "<title>t</title>",
        "<Div Style='",
        "<a hidden href=",
        "<a href=1 href=2>",
        "<b style=x style=\"display:none\">",
        "<i hidden>",
        "</a>",
        "<table>",
        "$5.00",
        "<noscript/>",
        "<meta",
        "<x:y",
        "<-",
        "<1",
        "\t",
        "\x0b",
        "\x0c",
        "\r",
        "/",
        "=",
        // What the memchr-based tag scanner special-cases: quotes inside unquoted values and
        // names, unterminated quotes and comments, `=` where a name should be, uppercase names,
        // entities cut at run edges, multi-byte characters next to `<`, `&` and quotes.
        "<a href=x'y>",
        "<a href=x\"y href=z>",
        "<div a\"b=c style=display:none>",
        "<p title=\"unterminated",
        "<p title='a>b' x>",
        "<!-- unterminated",
        "<!---->",
        "<a =x href=y>",
        "<a href = \" q \" >",
        "<a href=\"x\"hidden>",
        "<DIV",
        "</TD>",
        "<BR/>",
        "<Span Hidden>",
        "<TABLE",
        "</Div >",
        "&",
        "&#",
        "&#3",
        "&amp",
        ";",
        "&zwnj;",
        "&rsaquo;",
        "é<",
        "<é",
        "&é",
        "'é",
        "\"é",
        "💸",
        "\u{a0}",
        "\u{3000}",
        "\u{85}",
        " style=\"DISPLAY : NONE\"",
        " style='Visibility:\tHidden'",
        " style=\"max-height: 0px ; overflow : HIDDEN\"",
        " style=\"display:\u{a0}none\"",
        " style=\"MAX-HEIGHT:0\"",
        " style=\"overflow:hidden;max-height:0\"",
        " style=\"color:red;font-family:x\"",
        "<title",
        "</title>",
        "<TEMPLATE>",
        "</template",
        // Eight-byte fast paths: long words and attribute names, names near known element names.
        "averyveryverylongword_with-punctuation!",
        "<td cellpadding=\"0\" data-x-y-long-name9='z'",
        "<blockquote>",
        "</BLOCKQUOTE",
        "<blockquotes>",
        "<tbodyx>",
        "<h7>",
        "<Templates>",
        "<noscripT",
        "<table-",
        "<div:x",
        // Open elements are matched by key up to eight bytes and by name beyond.
        "<blockquote hidden>",
        "</BlockQuote>",
        "<abcdefghi hidden>",
        "</ABCDEFGHI>",
        "<abcdefgh hidden>",
        "</abcdefgH>",
        "</abcdefghx>",
    ];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..40_000 {
        let mut html = String::new();
        state = crate::test_rng::xorshift64(state);
        let count = state % 24;
        let mut draw = state;
        for _ in 0..count {
            draw ^= draw << 13;
            draw ^= draw >> 7;
            draw ^= draw << 17;
            html.push_str(pieces[(draw % pieces.len() as u64) as usize]);
        }
        assert_same(&html, "random");
    }
    // Whole tags built from parts, so that separators, attribute names and values meet in
    // every combination (a piece soup rarely lines them up).
    let names = [
        "div",
        "A",
        "span",
        "td",
        "br",
        "p",
        "style",
        "img",
        "x:y",
        "DIV",
        "a",
        "Td",
        "é",
        "Head",
        "blockquote",
        "BlockQuote",
        "template",
        "TEMPLATES",
        "tbody1",
        "h6",
        "h7",
        "noscript",
    ];
    let separators = [
        " ", "\t", "\n", "\x0b", "\x0c", "\r", "/", "", "  ", "\"", "'",
    ];
    let attributes = [
        "hidden",
        "Hidden",
        "style",
        "STYLE",
        "href",
        "HREF",
        "x",
        "a\"b",
        "=",
        "é",
        "a'",
        "Style",
        "cellpadding",
        "data-hidden-x9",
        "hiddenx",
        "stylestyle",
        "HREF:x",
        "x-style",
    ];
    let values = [
        "",
        "=\"display:none\"",
        "='visibility : hidden'",
        "=x",
        "= \"a>b\"",
        "=max-height:0;overflow:hidden",
        "=\"https://x/?a=1&amp;b\"",
        "='",
        "=\"",
        "=x'y",
        "=x\"y\"",
        "= 'display : NONE'",
        "=\"max-height:0px;overflow:Hidden\"",
        "=\"a'b\"",
        "='a\"b'",
        "=é",
        "=\"é>\"",
        "=&amp;",
        "=\"visibility:\u{a0}hidden\"",
    ];
    for _ in 0..40_000 {
        let mut html = String::new();
        let mut pick = |len: usize| {
            state = crate::test_rng::xorshift64(state);
            (state % len as u64) as usize
        };
        for _ in 0..pick(4) + 1 {
            if pick(4) == 0 {
                html.push_str("</");
            } else {
                html.push('<');
            }
            html.push_str(names[pick(names.len())]);
            for _ in 0..pick(4) {
                html.push_str(separators[pick(separators.len())]);
                html.push_str(attributes[pick(attributes.len())]);
                html.push_str(values[pick(values.len())]);
            }
            html.push_str(separators[pick(separators.len())]);
            html.push_str(["", ">", "/>"][pick(3)]);
            html.push_str(["t", " u ", "", "\n  ", "&amp;x", "é", "a&nbsp;b"][pick(7)]);
        }
        assert_same(&html, "tags");
    }
    let deep = "<div>".repeat(600) + "<span hidden>x</span>deep" + &"</div>".repeat(600);
    assert_same(&deep, "deep");
    let deep =
        "<DIV><p style='display:none'>".repeat(300) + "x</P>y</div>z" + &"</Div>".repeat(300);
    assert_same(&deep, "deep, mixed case");
    let deep = "<td>".repeat(MAX_STACK) + "<a href=1>in</a><span hidden>h</span>s</td>t";
    assert_same(&deep, "deep, at the limit");
}

//! HTML mail rendered to plain text for rule matching.
//!
//! A single forward pass, no DOM: mail HTML is table soup, often invalid, and can be large, so the
//! renderer only needs to be linear and tolerant. It keeps what a reader sees: block elements become
//! line breaks, whitespace collapses, entities decode. It drops what a reader does not see: `head`,
//! `style`, `script`, comments, and elements hidden with `display:none`, `visibility:hidden`,
//! `max-height:0` + `overflow:hidden` or the `hidden` attribute (preheaders, which may say
//! something the visible body contradicts). Link targets are collected separately.

use std::borrow::Cow;

use memchr::{memchr, memchr3, memmem};

#[cfg(test)]
mod before;

/// The visible text and the link targets of an HTML document.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// One line per block, whitespace collapsed, no empty lines.
    pub text: String,
    /// `href` values of `<a>` elements, entity-decoded, in document order.
    pub links: Vec<String>,
}

/// What the renderer needs to know about an element, from its name in one lookup.
#[derive(Clone, Copy, Default)]
struct ElementKind {
    /// Its content is never shown (`head`, `style`, `script`, ...).
    invisible: bool,
    /// It starts a new line.
    block: bool,
    /// It has no closing tag.
    void: bool,
}

/// A tag name of at most eight bytes as one number: its bytes in order (little-endian), each with
/// bit 5 set, zeros after. Tag names are ASCII letters, digits, `-` and `:`; setting bit 5
/// lowercases the letters and leaves the rest as they are, and no such byte becomes zero.
const fn name_key(name: &[u8]) -> u64 {
    let mut key = 0;
    let mut i = 0;
    while i < name.len() {
        key |= ((name[i] | 0x20) as u64) << (8 * i);
        i += 1;
    }
    key
}

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

/// The known elements of up to eight bytes (`blockquote` is looked up apart).
const KNOWN_ELEMENTS: [(&[u8], ElementKind); 50] = [
    (b"head", INVISIBLE),
    (b"style", INVISIBLE),
    (b"script", INVISIBLE),
    (b"title", INVISIBLE),
    (b"template", INVISIBLE),
    (b"noscript", INVISIBLE),
    (b"address", BLOCK),
    (b"article", BLOCK),
    (b"aside", BLOCK),
    (b"center", BLOCK),
    (b"dd", BLOCK),
    (b"div", BLOCK),
    (b"dl", BLOCK),
    (b"dt", BLOCK),
    (b"footer", BLOCK),
    (b"form", BLOCK),
    (b"h1", BLOCK),
    (b"h2", BLOCK),
    (b"h3", BLOCK),
    (b"h4", BLOCK),
    (b"h5", BLOCK),
    (b"h6", BLOCK),
    (b"header", BLOCK),
    (b"li", BLOCK),
    (b"ol", BLOCK),
    (b"p", BLOCK),
    (b"pre", BLOCK),
    (b"section", BLOCK),
    (b"table", BLOCK),
    (b"tbody", BLOCK),
    (b"td", BLOCK),
    (b"tfoot", BLOCK),
    (b"th", BLOCK),
    (b"thead", BLOCK),
    (b"tr", BLOCK),
    (b"ul", BLOCK),
    (b"br", BLOCK_VOID),
    (b"hr", BLOCK_VOID),
    (b"area", VOID),
    (b"base", VOID),
    (b"col", VOID),
    (b"embed", VOID),
    (b"img", VOID),
    (b"input", VOID),
    (b"link", VOID),
    (b"meta", VOID),
    (b"source", VOID),
    (b"track", VOID),
    (b"wbr", VOID),
    (b"blockquote", BLOCK),
];

/// A multiplier under which the top seven bits of the known names' keys all differ (found by
/// trying random odd numbers): the slot of a name in `ELEMENT_SLOTS`.
const ELEMENT_HASH: u64 = 0xbb59_ea56_a8ab_2477;

fn element_slot(key: u64) -> usize {
    (key.wrapping_mul(ELEMENT_HASH) >> 57) as usize
}

/// The known names' keys and kinds by slot; empty slots hold key 0, which no name has. Building
/// it fails the compilation if two names share a slot.
const ELEMENT_SLOTS: [(u64, ElementKind); 128] = {
    let mut slots = [(
        0u64,
        ElementKind {
            invisible: false,
            block: false,
            void: false,
        },
    ); 128];
    let mut i = 0;
    while i < KNOWN_ELEMENTS.len() {
        let (name, kind) = KNOWN_ELEMENTS[i];
        if name.len() <= 8 {
            let key = name_key(name);
            let slot = (key.wrapping_mul(ELEMENT_HASH) >> 57) as usize;
            assert!(slots[slot].0 == 0, "two element names share a slot");
            slots[slot] = (key, kind);
        }
        i += 1;
    }
    slots
};

/// The `name_key` of the tag name `html[start..end]` (ASCII letters, digits, `-` and `:`, any
/// case), read straight from the input; 0 for a name longer than eight bytes. Two names of up to
/// eight bytes are equal ignoring ASCII case exactly when their keys are.
#[inline(always)]
fn name_key_at(html: &[u8], start: usize, end: usize) -> u64 {
    let len = end - start;
    if len > 8 {
        return 0;
    }
    let word = match html.get(start..).and_then(|rest| rest.first_chunk::<8>()) {
        Some(chunk) => u64::from_le_bytes(*chunk),
        None => {
            let mut buffer = [0u8; 8];
            buffer[..len].copy_from_slice(&html[start..end]);
            u64::from_le_bytes(buffer)
        }
    };
    // `len` is 1 to 8: the name's bytes, without what follows it.
    (word | (LO * 0x20)) & (u64::MAX >> (64 - 8 * len))
}

impl ElementKind {
    /// The element with tag name `name` (as written) and key `key` (`name_key_at`). Names of
    /// up to eight bytes are looked up by key in a collision-free hash table; the only longer
    /// known name is `blockquote`.
    #[inline(always)]
    fn of(key: u64, name: &[u8]) -> ElementKind {
        if key == 0 {
            return if name.eq_ignore_ascii_case(b"blockquote") {
                BLOCK
            } else {
                ElementKind::default()
            };
        }
        let (known, kind) = ELEMENT_SLOTS[element_slot(key)];
        if known == key {
            kind
        } else {
            ElementKind::default()
        }
    }
}

/// How deep we track open elements; deeper nesting is treated as flat rather than refused.
const MAX_STACK: usize = 512;

pub fn render(html: &str) -> Rendered {
    let bytes = html.as_bytes();
    let mut out = Rendered {
        text: String::with_capacity(html.len() / 4),
        links: Vec::new(),
    };
    let mut line = LineBuilder::default();
    // Open elements, by `name_key_at` and name as written (tag names are ASCII; matched ignoring
    // case: by key up to eight bytes, by name beyond), and the
    // stack depth at which hiding started (if hidden).
    let mut stack: Vec<(u64, &str)> = Vec::with_capacity(32);
    let mut hidden_from: Option<usize> = None;
    // Scratch space for reading `style` attributes.
    let mut style = String::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let Some(lt) = find_near(b'<', &bytes[pos..]).map(|i| pos + i) else {
            if hidden_from.is_none() {
                line.push_text(&mut out.text, &html[pos..]);
            }
            break;
        };
        if lt > pos && hidden_from.is_none() {
            line.push_text(&mut out.text, &html[pos..lt]);
        }
        let closing = match bytes.get(lt + 1) {
            Some(b'!') if bytes[lt + 2..].starts_with(b"--") => {
                pos =
                    memmem::find(&bytes[lt + 4..], b"-->").map_or(bytes.len(), |i| lt + 4 + i + 3);
                continue;
            }
            Some(b'!' | b'?') => {
                pos = memchr(b'>', &bytes[lt..]).map_or(bytes.len(), |i| lt + i + 1);
                continue;
            }
            Some(b'/') => true,
            _ => false,
        };
        let name_start = lt + 1 + usize::from(closing);
        let (name_end, key) = read_tag_name(bytes, name_start);
        if name_end == name_start || !bytes[name_start].is_ascii_alphabetic() {
            // A lone `<` in text, as careless HTML has.
            if hidden_from.is_none() {
                line.push_text(&mut out.text, "<");
            }
            pos = lt + 1;
            continue;
        }
        let name = &html[name_start..name_end];
        let kind = ElementKind::of(key, name.as_bytes());
        if closing {
            pos = (tag_end(bytes, name_end) + 1).min(bytes.len());
            if let Some(depth) = stack.iter().rposition(|&(open_key, open)| {
                open_key == key && (key != 0 || open.eq_ignore_ascii_case(name))
            }) {
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
        let is_link = key == name_key(b"a");
        // Attributes are read only for what needs them: a link's target, and whether an element
        // that stays open hides its content; the same pass finds the tag's end.
        let may_open = !kind.void && !kind.invisible && stack.len() < MAX_STACK;
        let (end, seen) = if hidden_from.is_none() && (is_link || may_open) {
            scan_tag(html, name_end)
        } else {
            (tag_end(bytes, name_end), SeenAttrs::default())
        };
        // `end` is the `>` (or the end of the input, for a tag cut off there).
        let self_closing = bytes[end - 1] == b'/';
        pos = (end + 1).min(bytes.len());
        if kind.invisible && !self_closing {
            // Skip straight to the matching close tag: these hold no visible markup.
            pos = find_close_tag(bytes, pos, name.as_bytes())
                .and_then(|i| memchr(b'>', &bytes[i..]).map(|j| i + j + 1))
                .unwrap_or(bytes.len());
            continue;
        }
        let opens = !kind.void && !self_closing && stack.len() < MAX_STACK;
        let mut hides = false;
        if hidden_from.is_none() {
            if is_link {
                if let Some(href) = seen.href {
                    out.links.push(decode_entities(href.trim()).into_owned());
                }
            }
            hides = opens && seen.hides(&mut style);
            if kind.block {
                line.break_line(&mut out.text);
            }
        }
        if opens {
            stack.push((key, name));
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

/// Where a tag whose name ends at `from` ends: the index of its `>`, skipping quoted stretches
/// (which may hold `>`), or the input's length when there is none. Any quote opens a stretch,
/// wherever it stands.
#[inline]
fn tag_end(b: &[u8], from: usize) -> usize {
    // Most end tags end right after their name.
    if b.get(from) == Some(&b'>') {
        return from;
    }
    tag_end_after_attrs(b, from)
}

/// `tag_end` past the first byte.
fn tag_end_after_attrs(b: &[u8], from: usize) -> usize {
    let mut i = from;
    loop {
        let Some(at) = find_near3(b'>', b'"', b'\'', &b[i..]) else {
            return b.len();
        };
        i += at;
        if b[i] == b'>' {
            return i;
        }
        match find_near(b[i], &b[i + 1..]) {
            Some(close) => i += 1 + close + 1,
            None => return b.len(),
        }
    }
}

/// The end of the tag whose name ends at `name_end` (as `tag_end`), and the attributes
/// the renderer reads.
fn scan_tag(html: &str, name_end: usize) -> (usize, SeenAttrs<'_>) {
    scan_well_formed_tag(html, name_end).unwrap_or_else(|| {
        let end = tag_end(html.as_bytes(), name_end);
        // The attributes stop before the `>`. A tag cut off by the end of the input has no `>`;
        // its last character is left out all the same, but whole, so a multi-byte character
        // there cannot split.
        let mut attrs_end = if end < html.len() {
            end
        } else {
            html.len() - 1
        };
        while !html.is_char_boundary(attrs_end) {
            attrs_end -= 1;
        }
        let mut seen = SeenAttrs::default();
        let attrs = Attrs {
            source: html,
            i: name_end,
            end: attrs_end,
        };
        for (name, value) in attrs {
            seen.note(name, value);
        }
        (end, seen)
    })
}

/// `scan_tag` in one pass, for a tag whose quotes all open (and close) attribute values and that
/// has a `>`: then the attributes end exactly where `tag_end` would find the `>`. `None` for
/// anything else (a quote inside a name or an unquoted value, `=` where a name should be, a tag
/// or value cut off by the end of the input), which `scan_tag` reads in two passes.
fn scan_well_formed_tag(html: &str, mut i: usize) -> Option<(usize, SeenAttrs<'_>)> {
    let b = html.as_bytes();
    let mut seen = SeenAttrs::default();
    loop {
        while i < b.len() && has_class(b[i], SPACE | SLASH) {
            i += 1;
        }
        if *b.get(i)? == b'>' {
            return Some((i, seen));
        }
        let name_start = i;
        i = skip_attr_name(b, i);
        if i == name_start || b.get(i).is_some_and(|&c| has_class(c, QUOTE)) {
            return None;
        }
        let name = &html[name_start..i];
        while i < b.len() && has_class(b[i], SPACE) {
            i += 1;
        }
        let mut value = "";
        if b.get(i) == Some(&b'=') {
            i += 1;
            while i < b.len() && has_class(b[i], SPACE) {
                i += 1;
            }
            match b.get(i) {
                Some(&quote @ (b'"' | b'\'')) => {
                    let close = i + 1 + find_near(quote, &b[i + 1..])?;
                    value = &html[i + 1..close];
                    i = close + 1;
                }
                _ => {
                    let value_start = i;
                    while i < b.len() && !has_class(b[i], SPACE | GT | QUOTE) {
                        i += 1;
                    }
                    if b.get(i).is_some_and(|&c| has_class(c, QUOTE)) {
                        return None;
                    }
                    value = &html[value_start..i];
                }
            }
        }
        seen.note(name, value);
    }
}

/// The index of the first byte at or after `i` that ends an attribute name in a well-formed tag:
/// whitespace, `=`, `>`, `/` or a quote. All of those are below `A`, so eight bytes from `A` up
/// are passed at once; only bytes below it (digits, `-`, `:` and the stops) are tested one by one.
#[inline(always)]
fn skip_attr_name(b: &[u8], mut i: usize) -> usize {
    loop {
        if let Some(chunk) = b.get(i..).and_then(|rest| rest.first_chunk::<8>()) {
            let low = below(u64::from_le_bytes(*chunk), b'A');
            if low == 0 {
                i += 8;
                continue;
            }
            i += (low.trailing_zeros() / 8) as usize;
        }
        if i < b.len() && !has_class(b[i], SPACE | EQUALS | GT | SLASH | QUOTE) {
            i += 1;
            continue;
        }
        return i;
    }
}

/// The end of the tag name starting at `start` (the first byte that is not `TAG_NAME`: ASCII
/// letters, digits, `-`, `:`) and its `name_key_at`. The first eight bytes are classed at once,
/// without a branch per byte (tag names are one to ten bytes, and a loop's exit at a varying
/// length is a mispredicted branch per tag), and the key is cut from the same word.
#[inline(always)]
fn read_tag_name(b: &[u8], start: usize) -> (usize, u64) {
    if let Some(chunk) = b.get(start..).and_then(|rest| rest.first_chunk::<8>()) {
        let word = u64::from_le_bytes(*chunk);
        let stops = not_tag_name_bytes(word);
        if stops != 0 {
            let len = (stops.trailing_zeros() / 8) as usize;
            // The lowest stop's bit 7, moved to bit 0 of that byte, less one: the name's bytes.
            let name_bytes = ((stops & stops.wrapping_neg()) >> 7) - 1;
            return (start + len, (word | (LO * 0x20)) & name_bytes);
        }
    }
    let end = skip_tag_name(b, start);
    let key = if end > start {
        name_key_at(b, start, end)
    } else {
        0
    };
    (end, key)
}

/// The index of the first byte at or after `i` that is not `TAG_NAME`, eight bytes at a time.
fn skip_tag_name(b: &[u8], mut i: usize) -> usize {
    while let Some(chunk) = b.get(i..).and_then(|rest| rest.first_chunk::<8>()) {
        let stops = not_tag_name_bytes(u64::from_le_bytes(*chunk));
        if stops != 0 {
            return i + (stops.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < b.len() && has_class(b[i], TAG_NAME) {
        i += 1;
    }
    i
}

/// The high bit of each byte of `word` that is not `TAG_NAME`, exactly. Bytes are first taken
/// without their high bit: adding at most 0x80 to a byte of at most 0x7f cannot carry into the
/// next byte, so each range test below is exact per byte.
#[inline(always)]
fn not_tag_name_bytes(word: u64) -> u64 {
    let low = word & !HI;
    // Bit 7 set where `x >= n`, and where `x <= n`, for a byte `x` of at most 0x7f.
    let at_least = |x: u64, n: u8| x.wrapping_add(LO * u64::from(0x80 - n)) & HI;
    let at_most = |x: u64, n: u8| !x.wrapping_add(LO * u64::from(0x7f - n)) & HI;
    let digit_or_colon = at_least(low, b'0') & at_most(low, b':');
    let dash = at_most(low ^ (LO * u64::from(b'-')), 0);
    // Setting bit 5 maps `A`-`Z` onto `a`-`z` and nothing else into that range.
    let folded = low | (LO * 0x20);
    let letter = at_least(folded, b'a') & at_most(folded, b'z');
    (!(digit_or_colon | dash | letter) & HI) | (word & HI)
}

/// The attributes of one tag that the renderer reads: raw values, not yet entity-decoded.
#[derive(Default)]
struct SeenAttrs<'s> {
    /// The first `href`.
    href: Option<&'s str>,
    /// Whether there is a `hidden` attribute.
    hidden: bool,
    /// The first `style`.
    style: Option<&'s str>,
}

impl<'s> SeenAttrs<'s> {
    fn note(&mut self, name: &str, value: &'s str) {
        match name.len() {
            4 if self.href.is_none() && name.eq_ignore_ascii_case("href") => {
                self.href = Some(value);
            }
            6 if name.eq_ignore_ascii_case("hidden") => self.hidden = true,
            5 if self.style.is_none() && name.eq_ignore_ascii_case("style") => {
                self.style = Some(value);
            }
            _ => {}
        }
    }

    /// Whether the element is hidden: a `hidden` attribute, or a first `style` attribute that
    /// (ignoring whitespace and ASCII case) says `display:none`, `visibility:hidden`, or
    /// `max-height:0` with `overflow:hidden`. `scratch` is reused between calls.
    fn hides(&self, scratch: &mut String) -> bool {
        if self.hidden {
            return true;
        }
        let Some(style) = self.style else {
            return false;
        };
        match style_hides(style) {
            Some(hides) => hides,
            None => {
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
/// whitespace and ignoring case exactly as the compacted form would. `None` for a style with a
/// non-ASCII byte (whose whitespace and case are Unicode's): the one search for the next `:`
/// also looks for bytes from 0x80 up, so the style is not read twice.
fn style_hides(style: &str) -> Option<bool> {
    let b = style.as_bytes();
    let mut display_none = false;
    let mut visibility_hidden = false;
    let mut max_height_zero = false;
    let mut overflow_hidden = false;
    let mut from = 0;
    while let Some(found) = find_colon_or_non_ascii(b, from) {
        if b[found] >= 0x80 {
            return None;
        }
        let colon = found;
        from = colon + 1;
        // Every value here starts with `n`, `h` or `0`, and every property ends in `y`, `t` or
        // `w`: most colons are out at a byte or two, and the value's first letter says which
        // property to compare.
        let after = &b[colon + 1..];
        let Some(&first) = after.iter().find(|&&c| !is_ascii_space(c)) else {
            continue;
        };
        let first = first.to_ascii_lowercase();
        if !matches!(first, b'n' | b'h' | b'0') {
            continue;
        }
        let before = trim_end_spaces(&b[..colon]);
        if !matches!(
            before.last().map(u8::to_ascii_lowercase),
            Some(b'y' | b't' | b'w')
        ) {
            continue;
        }
        match first {
            b'n' => {
                if ends_with_compact(before, b"display")
                    && starts_with_compact(after, b"none").is_some()
                {
                    display_none = true;
                }
            }
            b'h' => {
                if starts_with_compact(after, b"hidden").is_some() {
                    if ends_with_compact(before, b"visibility") {
                        visibility_hidden = true;
                    }
                    if ends_with_compact(before, b"overflow") {
                        overflow_hidden = true;
                    }
                }
            }
            _ => {
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
            }
        }
    }
    Some(display_none || visibility_hidden || (max_height_zero && overflow_hidden))
}

/// The index of the first `:` or byte from 0x80 up in `b` at or after `from`, eight bytes at a
/// time (styles are tens of bytes, with a colon every ten or so).
#[inline(always)]
fn find_colon_or_non_ascii(b: &[u8], mut from: usize) -> Option<usize> {
    while let Some(chunk) = b.get(from..).and_then(|rest| rest.first_chunk::<8>()) {
        let word = u64::from_le_bytes(*chunk);
        // `zero_bytes` flags wrongly only above a real `:`, so the lowest flag of either kind
        // is the first such byte.
        let found = zero_bytes(word ^ (LO * u64::from(b':'))) | (word & HI);
        if found != 0 {
            return Some(from + (found.trailing_zeros() / 8) as usize);
        }
        from += 8;
    }
    b.get(from..)?
        .iter()
        .position(|&c| c == b':' || c >= 0x80)
        .map(|i| from + i)
}

fn trim_end_spaces(text: &[u8]) -> &[u8] {
    let mut end = text.len();
    while end > 0 && is_ascii_space(text[end - 1]) {
        end -= 1;
    }
    &text[..end]
}

/// Whether every byte is `is_ascii_space`. Most text between tags is a line break and maybe
/// some indentation: a few bytes.
fn all_ascii_space(text: &[u8]) -> bool {
    text.iter().all(|&c| is_ascii_space(c))
}

/// `char::is_whitespace` for ASCII.
fn is_ascii_space(c: u8) -> bool {
    has_class(c, TEXT_SPACE)
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
/// out vertical tab), `TAG_NAME` is ASCII alphanumerics, `-` and `:`, `QUOTE` is `"` and `'`.
/// For text, `TEXT_SPACE` is `char::is_whitespace` for ASCII (vertical tab included) and
/// `ASCII_WORD` every other ASCII byte.
const SPACE: u8 = 1;
const SLASH: u8 = 2;
const EQUALS: u8 = 4;
const GT: u8 = 8;
const TAG_NAME: u8 = 16;
const QUOTE: u8 = 32;
const TEXT_SPACE: u8 = 64;
const ASCII_WORD: u8 = 128;

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
        } else if c == b'"' || c == b'\'' {
            QUOTE
        } else if c.is_ascii_alphanumeric() || c == b'-' || c == b':' {
            TAG_NAME
        } else {
            0
        } | if matches!(c, b'\t'..=b'\r' | b' ') {
            TEXT_SPACE
        } else if c.is_ascii() {
            ASCII_WORD
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

/// The attributes of a tag in `source` from `i` (just past its name) to `end` (its `>`), as
/// `(name, value)`; `value` is `""` for a bare attribute.
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
                i = find_near(quote, &b[value_start..end]).map_or(end, |q| value_start + q);
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

/// Writes text into the output a line at a time, collapsing whitespace and dropping invisible
/// characters. The current line is the output's tail from `line_start`.
#[derive(Default)]
struct LineBuilder {
    line_start: usize,
    pending_space: bool,
    /// Scratch space for entity-decoded text.
    decoded: String,
}

impl LineBuilder {
    #[inline]
    fn push_text(&mut self, out: &mut String, raw: &str) {
        // Most text between tags is a line break and indentation.
        if all_ascii_space(raw.as_bytes()) {
            if !raw.is_empty() {
                self.pending_space = out.len() != self.line_start;
            }
            return;
        }
        self.push_words(out, raw);
    }

    /// `push_text` for text that is not all whitespace.
    fn push_words(&mut self, out: &mut String, raw: &str) {
        if find_near(b'&', raw.as_bytes()).is_none() {
            self.push_decoded(out, raw);
            return;
        }
        let mut decoded = std::mem::take(&mut self.decoded);
        decoded.clear();
        if decode_common_entities(raw, &mut decoded) {
            self.push_decoded(out, &decoded);
        } else {
            self.push_decoded(out, &html_escape::decode_html_entities(raw));
        }
        self.decoded = decoded;
    }

    /// `push_text` for decoded text: the same as a loop over its characters that sets
    /// `pending_space` on whitespace (if the line has begun) and otherwise pushes the character
    /// after a pending space, but ASCII goes in a run at a time: words joined by single spaces
    /// are already collapsed, so they go in whole.
    fn push_decoded(&mut self, out: &mut String, text: &str) {
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let c = bytes[i];
            if is_ascii_space(c) {
                self.pending_space = out.len() != self.line_start;
                i += 1;
                continue;
            }
            let start = i;
            if c.is_ascii() {
                i = skip_collapsed_words(bytes, i);
            } else {
                let ch = text[i..].chars().next().unwrap_or_default();
                i += ch.len_utf8();
                if ch.is_whitespace() {
                    self.pending_space = out.len() != self.line_start;
                    continue;
                }
                if is_invisible(ch) {
                    continue;
                }
            }
            if self.pending_space {
                out.push(' ');
                self.pending_space = false;
            }
            out.push_str(&text[start..i]);
        }
    }

    fn break_line(&mut self, out: &mut String) {
        if out.len() != self.line_start {
            out.push('\n');
            self.line_start = out.len();
        }
        self.pending_space = false;
    }
}

/// An ASCII byte that is not whitespace.
fn is_ascii_word(c: u8) -> bool {
    has_class(c, ASCII_WORD)
}

/// The end of the already-collapsed run from `i`: `is_ascii_word` bytes, and single spaces
/// each followed by one. Bytes from `!` to DEL, and a space before such a byte, are recognized
/// eight at a time, so a sentence goes by without a branch per word; anything else flagged (a
/// control byte, a space that ends a word's eight bytes) is decided byte by byte.
#[inline(always)]
fn skip_collapsed_words(bytes: &[u8], mut i: usize) -> usize {
    loop {
        if let Some(chunk) = bytes.get(i..).and_then(|rest| rest.first_chunk::<8>()) {
            let stops = maybe_not_collapsed(u64::from_le_bytes(*chunk));
            if stops == 0 {
                i += 8;
                continue;
            }
            i += (stops.trailing_zeros() / 8) as usize;
        }
        match bytes.get(i) {
            Some(&c) if is_ascii_word(c) => i += 1,
            Some(b' ') if bytes.get(i + 1).is_some_and(|&c| is_ascii_word(c)) => i += 2,
            _ => return i,
        }
    }
}

/// The high bit of each byte of `word` that may end a collapsed run: every byte outside `!` to
/// DEL, except a space followed (within the word) by a byte from `!` to DEL. Flags are exact per
/// byte (see `not_tag_name_bytes`) but err towards flagging, never the other way.
#[inline(always)]
fn maybe_not_collapsed(word: u64) -> u64 {
    let low = word & !HI;
    let printable = low.wrapping_add(LO * u64::from(0x80 - b'!')) & HI;
    let outside = (!printable & HI) | (word & HI);
    let space = !(low ^ (LO * u64::from(b' '))).wrapping_add(LO * 0x7f) & !word & HI;
    // The byte after the last one is unknown: take it as outside.
    let next_outside = (outside >> 8) | (0x80 << 56);
    outside & !(space & !next_outside)
}

/// Zero-width characters that preheader padding and trackers sprinkle into text.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200b}' | '\u{200c}' | '\u{200d}' | '\u{2060}' | '\u{feff}' | '\u{034f}' | '\u{00ad}'
    )
}

fn decode_entities(s: &str) -> Cow<'_, str> {
    if memchr(b'&', s.as_bytes()).is_none() {
        return Cow::Borrowed(s);
    }
    let mut decoded = String::with_capacity(s.len());
    if decode_common_entities(s, &mut decoded) {
        Cow::Owned(decoded)
    } else {
        html_escape::decode_html_entities(s)
    }
}

/// `html_escape::decode_html_entities` for text whose every `&` starts an entity mail commonly
/// writes in full (`&nbsp;`, `&amp;`, `&zwnj;`, `&#847;`, ...), appended to `out`; `false` for
/// anything else (with `out` part-written), which is left to `html_escape`. Its general decoder
/// looks each name up among all of HTML's entities and was a tenth of the renderer's cost.
fn decode_common_entities(s: &str, out: &mut String) -> bool {
    let mut rest = s;
    while let Some(amp) = memchr(b'&', rest.as_bytes()) {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let Some(semi) = after.bytes().take(8).position(|b| b == b';') else {
            return false;
        };
        let decoded = match &after[..semi] {
            "nbsp" => '\u{a0}',
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "zwnj" => '\u{200c}',
            "middot" => '\u{b7}',
            "copy" => '\u{a9}',
            name => match numeric_entity(name) {
                Some(c) => c,
                None => return false,
            },
        };
        out.push(decoded);
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    true
}

/// `#` and decimal digits naming printable ASCII, or a character from Latin-1's letters to just
/// below the surrogates: the ranges every decoder maps to themselves.
fn numeric_entity(name: &str) -> Option<char> {
    let digits = name.strip_prefix('#')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let code: u32 = digits.parse().ok()?;
    if !(32..=126).contains(&code) && !(160..0xD800).contains(&code) {
        return None;
    }
    char::from_u32(code)
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Nonzero exactly when some byte of `x` is zero. Only bytes above a zero byte can be flagged
/// wrongly (borrows propagate upwards), so the lowest set bit always marks a zero byte.
fn zero_bytes(x: u64) -> u64 {
    x.wrapping_sub(LO) & !x & HI
}

/// Nonzero when some byte of `x` is below `n` (at most 0x80). Only bytes above such a byte can
/// be flagged wrongly, and bytes from 0x80 up never are, so the lowest set bit marks the first
/// byte below `n`, unless a byte from 0x80 up comes first.
fn below(x: u64, n: u8) -> u64 {
    x.wrapping_sub(LO * u64::from(n)) & !x & HI
}

/// The index of the first `needle` in `hay`. Most distances in mail HTML are a few bytes (the
/// line break between tags, short attribute values): the first eight bytes are tested as one
/// word, which is cheaper than `memchr`'s setup; farther ones go to `memchr`.
#[inline(always)]
fn find_near(needle: u8, hay: &[u8]) -> Option<usize> {
    let Some(first) = hay.first_chunk::<8>() else {
        return hay.iter().position(|&c| c == needle);
    };
    let found = zero_bytes(u64::from_le_bytes(*first) ^ (LO * u64::from(needle)));
    if found != 0 {
        return Some((found.trailing_zeros() / 8) as usize);
    }
    memchr(needle, &hay[8..]).map(|i| 8 + i)
}

/// `find_near` for the first of three bytes.
#[inline(always)]
fn find_near3(a: u8, b: u8, c: u8, hay: &[u8]) -> Option<usize> {
    let Some(first) = hay.first_chunk::<8>() else {
        return hay.iter().position(|&x| x == a || x == b || x == c);
    };
    let word = u64::from_le_bytes(*first);
    let found = zero_bytes(word ^ (LO * u64::from(a)))
        | zero_bytes(word ^ (LO * u64::from(b)))
        | zero_bytes(word ^ (LO * u64::from(c)));
    if found != 0 {
        return Some((found.trailing_zeros() / 8) as usize);
    }
    memchr3(a, b, c, &hay[8..]).map(|i| 8 + i)
}

/// Where `</name` (any ASCII case) next starts at or after `from`.
fn find_close_tag(hay: &[u8], from: usize, name: &[u8]) -> Option<usize> {
    let mut at = from;
    loop {
        let lt = at + memchr(b'<', &hay[at..])?;
        at = lt + 1;
        if hay.get(lt + 1) != Some(&b'/') {
            continue;
        }
        let candidate = hay.get(lt + 2..lt + 2 + name.len())?;
        if candidate.eq_ignore_ascii_case(name) {
            return Some(lt);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_become_lines_and_whitespace_collapses() {
        let r = render("<html><head><title>T</title><style>p{color:red}</style></head><body><table><tr><td>Jane   Doe</td><td>paid\n You</td></tr></table><p>Dinner&nbsp;&amp; drinks</p>x<br>y</body></html>");
        assert_eq!(r.text, "Jane Doe\npaid You\nDinner & drinks\nx\ny");
    }

    #[test]
    fn text_collapses_as_a_char_by_char_loop_would() {
        fn char_by_char(parts: &[String]) -> String {
            let (mut line, mut pending_space) = (String::new(), false);
            for c in parts.iter().flat_map(|p| p.chars()) {
                if c.is_whitespace() {
                    pending_space = !line.is_empty();
                } else if !is_invisible(c) {
                    if pending_space {
                        line.push(' ');
                        pending_space = false;
                    }
                    line.push(c);
                }
            }
            line
        }
        let alphabet = [
            "a", "bc", " ", "  ", "\t", "\n", "\r\n", ".", "é", "\u{a0}", "\u{200b}", "&amp;",
        ];
        let mut state = 0x51_7cc1_b727_220au64;
        for _ in 0..5_000 {
            let mut parts = Vec::new();
            for _ in 0..(state % 4 + 1) {
                parts.push(crate::test_rng::joined_pieces(&mut state, &alphabet, 0..12));
            }
            let (mut builder, mut line) = (LineBuilder::default(), String::new());
            for part in &parts {
                builder.push_decoded(&mut line, part);
            }
            assert_eq!(line, char_by_char(&parts), "{parts:?}");
        }
    }

    #[test]
    fn inline_elements_do_not_split_text() {
        let r = render("<span>$</span><span>386</span><span>.</span><span>70</span>");
        assert_eq!(r.text, "$386.70");
    }

    #[test]
    fn hidden_elements_are_dropped_with_their_children() {
        let html = r#"<div style="display: none; max-height:0">You paid <b>Jane</b> $5<div>nested</div></div><div>Jane paid you</div>
            <span hidden>secret</span><p style="max-height:0px;overflow:hidden">pre</p><p>ok</p>"#;
        assert_eq!(render(html).text, "Jane paid you\nok");
    }

    #[test]
    fn links_are_collected_and_comments_skipped() {
        let r = render(
            r#"<!-- <a href="x">no</a> --><a class=x href="https://venmo.com/story/123?a=1&amp;b=2">see</a><A HREF=/rel>r</A>"#,
        );
        assert_eq!(r.links, vec!["https://venmo.com/story/123?a=1&b=2", "/rel"]);
        assert_eq!(r.text, "seer");
    }

    #[test]
    fn quoted_gt_in_attributes_and_broken_markup_are_tolerated() {
        let r =
            render(r#"<div title="a>b" style='overflow: hidden visible'>text</div> 1 < 2 <<<> <p"#);
        assert_eq!(r.text, "text\n1 < 2 <<<>");
        assert_eq!(render("").text, "");
        assert_eq!(
            render("<script>var a='<p>';</script>visible").text,
            "visible"
        );
        assert_eq!(render("<style>unclosed").text, "");
    }

    #[test]
    fn a_tag_cut_off_inside_a_multibyte_character_does_not_panic() {
        assert_eq!(render("<div\n\u{85}").text, "");
        assert_eq!(render("x <a href=caf\u{e9}").links, vec!["caf"]);
    }

    #[test]
    fn unclosed_hidden_element_hides_to_the_end_and_stray_closers_are_ignored() {
        assert_eq!(render("a</div><div style='display:none'>b").text, "a");
    }

    #[test]
    fn invisible_characters_are_removed() {
        assert_eq!(render("a\u{200c}\u{034f} b").text, "a b");
    }

    #[test]
    fn byte_searches_agree_with_a_plain_scan() {
        let hay: Vec<u8> = (0..200u32)
            .map(|i| b"ab>\"'=:\n\xff"[(i * i % 9) as usize])
            .collect();
        for start in 0..hay.len() {
            for len in [0, 1, 7, 8, 9, 15, 16, 17, 40] {
                let h = &hay[start..(start + len).min(hay.len())];
                for n in [b'>', b'"', b'=', b':', b'\n', 0xff, b'z'] {
                    assert_eq!(find_near(n, h), h.iter().position(|&x| x == n));
                }
                // Padded so that matches also lie past the first word, where `memchr` takes over.
                let padded: Vec<u8> = std::iter::repeat_n(b'a', start % 20)
                    .chain(h.iter().copied())
                    .collect();
                for n in [b'>', b'"', b'=', b':', b'\n', 0xff, b'z'] {
                    assert_eq!(find_near(n, &padded), padded.iter().position(|&x| x == n));
                }
                assert_eq!(
                    find_near3(b'>', b'"', b'\'', &padded),
                    padded
                        .iter()
                        .position(|&x| matches!(x, b'>' | b'"' | b'\''))
                );
                for from in 0..=padded.len() {
                    assert_eq!(
                        find_colon_or_non_ascii(&padded, from),
                        padded[from..]
                            .iter()
                            .position(|&x| x == b':' || x >= 0x80)
                            .map(|i| from + i)
                    );
                }
            }
        }
    }

    #[test]
    fn style_checks_read_in_place_agree_with_the_compacted_style() {
        let compact = |s: &str| -> String {
            s.chars()
                .filter(|c| !c.is_whitespace())
                .map(|c| c.to_ascii_lowercase())
                .collect()
        };
        let pieces = [
            "display",
            "DISPLAY",
            "dis play",
            "none",
            "n one",
            "visibility",
            "hidden",
            "hid den",
            "max-height",
            "max-he ight",
            "0",
            "0px",
            "0 px",
            "overflow",
            ":",
            " : ",
            ";",
            " ",
            "\t",
            "x",
            "px",
            "1",
            "OVERFLOW",
            "Hidden",
            "NONE",
            "n",
            "h",
            "0",
            "text-decoration",
            "height",
            "\x0b",
            "\u{a0}",
            "é",
            "\u{3000}",
        ];
        let mut state = 7u64;
        for _ in 0..20_000 {
            let style = crate::test_rng::joined_pieces(&mut state, &pieces, 0..9);
            match style_hides(&style) {
                Some(hides) => {
                    assert_eq!(hides, compact_style_hides(&compact(&style)), "{style:?}")
                }
                None => assert!(!style.is_ascii(), "{style:?}"),
            }
            assert_eq!(style_hides(&style).is_some(), style.is_ascii(), "{style:?}");
        }
        for style in [
            "display:none",
            "max-height:0;overflow:hidden",
            "overflow:hidden;max-height:0",
            "overflow: hidden; max-height: 0 ",
            "max-height:0px;overflow:hidden",
            "max-height:00;overflow:hidden",
            "Visibility : Hidden",
        ] {
            assert_eq!(
                style_hides(style),
                Some(compact_style_hides(&compact(style))),
                "{style:?}"
            );
        }
    }

    #[test]
    fn common_entities_decode_exactly_as_html_escape_does() {
        let pieces = [
            "&nbsp;",
            "&amp;",
            "&lt;",
            "&gt;",
            "&quot;",
            "&zwnj;",
            "&middot;",
            "&copy;",
            "&#39;",
            "&#847;",
            "&#36;",
            "&#039;",
            "&#0000036;",
            "&#0;",
            "&#31;",
            "&#127;",
            "&#128;",
            "&#150;",
            "&#160;",
            "&#55295;",
            "&#55296;",
            "&#65533;",
            "&#1114112;",
            "&#99999999999;",
            "&#;",
            "&#x27;",
            "&nbsp",
            "&amp",
            "&zw",
            "&rsaquo;",
            "&utm",
            "&",
            ";",
            "a",
            " ",
            "é",
            "&&",
            "&#3",
            "6;",
            "nbsp;",
        ];
        let mut state = 0x1234_5678_9abc_def1u64;
        for _ in 0..20_000 {
            let text = crate::test_rng::joined_pieces(&mut state, &pieces, 0..7);
            assert_eq!(
                decode_entities(&text),
                html_escape::decode_html_entities(&text),
                "{text:?}"
            );
        }
        for piece in pieces {
            assert_eq!(
                decode_entities(piece),
                html_escape::decode_html_entities(piece),
                "{piece:?}"
            );
        }
    }

    #[test]
    fn element_kinds_read_as_numbers_agree_with_a_lowercase_name_match() {
        fn plain(name: &str) -> (bool, bool, bool) {
            match name.to_ascii_lowercase().as_str() {
                "head" | "style" | "script" | "title" | "template" | "noscript" => {
                    (true, false, false)
                }
                "address" | "article" | "aside" | "blockquote" | "center" | "dd" | "div" | "dl"
                | "dt" | "footer" | "form" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "header"
                | "li" | "ol" | "p" | "pre" | "section" | "table" | "tbody" | "td" | "tfoot"
                | "th" | "thead" | "tr" | "ul" => (false, true, false),
                "br" | "hr" => (false, true, true),
                "area" | "base" | "col" | "embed" | "img" | "input" | "link" | "meta"
                | "source" | "track" | "wbr" => (false, false, true),
                _ => (false, false, false),
            }
        }
        let known = [
            "head",
            "style",
            "script",
            "title",
            "template",
            "noscript",
            "address",
            "article",
            "aside",
            "blockquote",
            "center",
            "dd",
            "div",
            "dl",
            "dt",
            "footer",
            "form",
            "h1",
            "h2",
            "h3",
            "h4",
            "h5",
            "h6",
            "header",
            "li",
            "ol",
            "p",
            "pre",
            "section",
            "table",
            "tbody",
            "td",
            "tfoot",
            "th",
            "thead",
            "tr",
            "ul",
            "br",
            "hr",
            "area",
            "base",
            "col",
            "embed",
            "img",
            "input",
            "link",
            "meta",
            "source",
            "track",
            "wbr",
            "a",
            "span",
        ];
        let mut names: Vec<String> = Vec::new();
        for name in known {
            names.push(name.to_string());
            names.push(name.to_ascii_uppercase());
            // Near misses: one byte more or less, a digit, `-` or `:` instead of a letter.
            names.push(format!("{name}x"));
            names.push(format!("{name}1"));
            names.push(format!("x{name}"));
            names.push(name[..name.len() - 1].to_string());
            names.push(format!("{}-", &name[..name.len() - 1]));
            names.push(format!("{name}:"));
        }
        let mut state = 0x0bad_cafe_f00d_1234u64;
        for name in names.clone() {
            let mut mixed = String::new();
            for c in name.chars() {
                state = crate::test_rng::xorshift64(state);
                mixed.push(if state % 2 == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c
                });
            }
            names.push(mixed);
        }
        // Keys tell names apart exactly as a comparison ignoring case does.
        for a in names
            .iter()
            .filter(|name| !name.is_empty() && name.len() <= 8)
        {
            for b in names
                .iter()
                .filter(|name| !name.is_empty() && name.len() <= 8)
            {
                assert_eq!(
                    name_key_at(a.as_bytes(), 0, a.len()) == name_key_at(b.as_bytes(), 0, b.len()),
                    a.eq_ignore_ascii_case(b),
                    "{a:?} {b:?}"
                );
            }
        }
        for name in names.iter().filter(|name| !name.is_empty()) {
            let expected = plain(name);
            // The name at the very end of the input (fewer than eight bytes to read), and with
            // letters and a `>` after it.
            for html in [
                format!("<{name}"),
                format!("<{name} hidden>"),
                format!("<{name}>"),
            ] {
                let key = name_key_at(html.as_bytes(), 1, 1 + name.len());
                let kind = ElementKind::of(key, name.as_bytes());
                assert_eq!(
                    (kind.invisible, kind.block, kind.void),
                    expected,
                    "{html:?}"
                );
            }
        }
    }

    #[test]
    fn word_and_attribute_name_skips_agree_with_a_byte_by_byte_scan() {
        let mut state = 0x5eed_0123_4567_89abu64;
        for _ in 0..20_000 {
            state = crate::test_rng::xorshift64(state);
            let len = (state % 40) as usize;
            let mut bytes = Vec::with_capacity(len);
            for _ in 0..len {
                state = crate::test_rng::xorshift64(state);
                // Mostly letters, with every other byte value now and then.
                bytes.push(match state % 4 {
                    0 => (state >> 8) as u8,
                    1 => b"  =>/\"'-:09\t\n"[((state >> 8) % 13) as usize],
                    _ => b'a' + ((state >> 8) % 26) as u8,
                });
            }
            for start in 0..=bytes.len() {
                // The loop `skip_collapsed_words` replaced: words, then a single space and on.
                let mut words = start;
                loop {
                    while words < bytes.len() && is_ascii_word(bytes[words]) {
                        words += 1;
                    }
                    if bytes.get(words) == Some(&b' ')
                        && bytes.get(words + 1).is_some_and(|&c| is_ascii_word(c))
                    {
                        words += 1;
                        continue;
                    }
                    break;
                }
                assert_eq!(
                    skip_collapsed_words(&bytes, start),
                    words,
                    "{bytes:?} {start}"
                );
                let name = (start..bytes.len())
                    .find(|&i| has_class(bytes[i], SPACE | EQUALS | GT | SLASH | QUOTE))
                    .unwrap_or(bytes.len());
                assert_eq!(skip_attr_name(&bytes, start), name, "{bytes:?} {start}");
                let tag_name = (start..bytes.len())
                    .find(|&i| !has_class(bytes[i], TAG_NAME))
                    .unwrap_or(bytes.len());
                assert_eq!(skip_tag_name(&bytes, start), tag_name, "{bytes:?} {start}");
                let key = if tag_name > start {
                    name_key_at(&bytes, start, tag_name)
                } else {
                    0
                };
                assert_eq!(
                    read_tag_name(&bytes, start),
                    (tag_name, key),
                    "{bytes:?} {start}"
                );
            }
        }
    }

    #[test]
    fn byte_classes_are_the_scanners_predicates_for_every_byte() {
        for b in 0..=u8::MAX {
            let space = b.is_ascii_whitespace();
            assert_eq!(
                has_class(b, TAG_NAME),
                b.is_ascii_alphanumeric() || b == b'-' || b == b':'
            );
            if has_class(b, TAG_NAME) {
                assert_eq!(b | 0x20, b.to_ascii_lowercase(), "{b}");
            }
            assert_eq!(has_class(b, SPACE), space);
            assert_eq!(
                has_class(b, TEXT_SPACE),
                b.is_ascii() && char::from(b).is_whitespace()
            );
            assert_eq!(
                has_class(b, ASCII_WORD),
                b.is_ascii() && !char::from(b).is_whitespace()
            );
            assert_eq!(has_class(b, SPACE | SLASH), space || b == b'/');
            assert_eq!(has_class(b, SPACE | GT), space || b == b'>');
            assert_eq!(has_class(b, QUOTE), b == b'"' || b == b'\'');
            assert_eq!(
                has_class(b, SPACE | GT | QUOTE),
                space || matches!(b, b'>' | b'"' | b'\'')
            );
            assert_eq!(
                has_class(b, SPACE | EQUALS | GT | SLASH),
                space || matches!(b, b'=' | b'>' | b'/')
            );
            assert_eq!(
                has_class(b, SPACE | EQUALS | GT | SLASH | QUOTE),
                space || matches!(b, b'=' | b'>' | b'/' | b'"' | b'\'')
            );
        }
    }

    #[test]
    fn tag_name_bytes_are_classed_exactly_in_every_position() {
        for byte in 0..=255u8 {
            for at in 0..8 {
                let mut word = [b'a'; 8];
                word[at] = byte;
                // The other bytes cycle through stops and name bytes, so flags cannot leak.
                for (k, other) in word.iter_mut().enumerate() {
                    if k != at && k % 3 == 0 {
                        *other = [b'>', 0xff, b'Z', b' ', b'-', b'0', b':', b'@'][(k + at) % 8];
                    }
                }
                let flags = not_tag_name_bytes(u64::from_le_bytes(word));
                for (k, &c) in word.iter().enumerate() {
                    assert_eq!(
                        flags >> (8 * k + 7) & 1 == 1,
                        !has_class(c, TAG_NAME),
                        "{word:?} {k}"
                    );
                }
                assert_eq!(flags & !HI, 0);
            }
        }
    }

    #[test]
    fn all_ascii_space_agrees_with_a_plain_scan() {
        let alphabet = b"        \t\n\r\x0bx\x0c";
        let mut state = 99u64;
        for _ in 0..20_000 {
            state = crate::test_rng::xorshift64(state);
            let text: Vec<u8> = (0..(state % 40))
                .map(|k| alphabet[((state >> (k % 16 * 4)) % alphabet.len() as u64) as usize])
                .collect();
            assert_eq!(
                all_ascii_space(&text),
                text.iter().all(|&c| is_ascii_space(c)),
                "{text:?}"
            );
        }
    }

    #[test]
    fn deep_nesting_does_not_grow_without_bound() {
        let html = "<div>".repeat(100_000) + "deep" + &"</div>".repeat(100_000);
        assert_eq!(render(&html).text, "deep");
    }
}

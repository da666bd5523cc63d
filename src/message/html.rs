//! HTML mail rendered to plain text for rule matching.
//!
//! A single forward pass, no DOM: mail HTML is table soup, often invalid, and can be large, so the
//! renderer only needs to be linear and tolerant. It keeps what a reader sees: block elements become
//! line breaks, whitespace collapses, entities decode. It drops what a reader does not see: `head`,
//! `style`, `script`, comments, and elements hidden with `display:none`, `visibility:hidden`,
//! `max-height:0` + `overflow:hidden` or the `hidden` attribute (preheaders, which may say
//! something the visible body contradicts). Link targets are collected separately.

/// The visible text and the link targets of an HTML document.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// One line per block, whitespace collapsed, no empty lines.
    pub text: String,
    /// `href` values of `<a>` elements, entity-decoded, in document order.
    pub links: Vec<String>,
}

/// Elements whose content is never shown.
const INVISIBLE: &[&str] = &["head", "style", "script", "title", "template", "noscript"];
/// Elements that start a new line.
const BLOCK: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "br",
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
    "hr",
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
];
/// Elements with no closing tag.
const VOID: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
    "wbr",
];

/// How deep we track open elements; deeper nesting is treated as flat rather than refused.
const MAX_STACK: usize = 512;

pub fn render(html: &str) -> Rendered {
    let mut out = Rendered::default();
    let mut line = LineBuilder::default();
    // Open elements, and the stack depth at which hiding started (if hidden).
    let mut stack: Vec<String> = Vec::new();
    let mut hidden_from: Option<usize> = None;
    let bytes = html.as_bytes();
    let mut pos = 0;
    while pos < bytes.len() {
        let Some(lt) = memchr(b'<', &bytes[pos..]).map(|i| pos + i) else {
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
        let name = tag.name.as_str();
        if tag.closing {
            if let Some(depth) = stack.iter().rposition(|open| open == name) {
                stack.truncate(depth);
                if hidden_from.is_some_and(|h| depth < h) {
                    hidden_from = None;
                }
            }
            if BLOCK.contains(&name) && hidden_from.is_none() {
                line.break_line(&mut out.text);
            }
            continue;
        }
        if INVISIBLE.contains(&name) && !tag.self_closing {
            // Skip straight to the matching close tag: these hold no visible markup.
            let close = format!("</{name}");
            pos = find_ci(html, pos, &close)
                .and_then(|i| find_from(html, i, ">").map(|j| j + 1))
                .unwrap_or(bytes.len());
            continue;
        }
        if hidden_from.is_none() {
            if name == "a" {
                if let Some(href) = tag.attr(&html[lt..lt + tag.len], "href") {
                    out.links.push(decode_entities(href.trim()));
                }
            }
            if BLOCK.contains(&name) {
                line.break_line(&mut out.text);
            }
        }
        if VOID.contains(&name) || tag.self_closing {
            continue;
        }
        if stack.len() < MAX_STACK {
            stack.push(tag.name.clone());
            if hidden_from.is_none() && tag.hides(&html[lt..lt + tag.len]) {
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
struct Tag {
    name: String,
    closing: bool,
    self_closing: bool,
    /// Bytes from `<` to just past `>`.
    len: usize,
}

impl Tag {
    fn parse(s: &str) -> Option<Tag> {
        let b = s.as_bytes();
        let mut i = 1;
        let closing = b.get(i) == Some(&b'/');
        if closing {
            i += 1;
        }
        let name_start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'-' || b[i] == b':') {
            i += 1;
        }
        if i == name_start || !b[name_start].is_ascii_alphabetic() {
            return None;
        }
        let name = s[name_start..i].to_ascii_lowercase();
        // Find the end of the tag, skipping over quoted attribute values (which may hold `>`).
        let mut quote: Option<u8> = None;
        while i < b.len() {
            match (quote, b[i]) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, b'"') | (None, b'\'') => quote = Some(b[i]),
                (None, b'>') => break,
                _ => {}
            }
            i += 1;
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

    /// The raw value of attribute `name` (lowercase) in the tag's source text; `Some("")` for a
    /// bare attribute such as `hidden`.
    fn attr<'a>(&self, source: &'a str, name: &str) -> Option<&'a str> {
        let b = source.as_bytes();
        // Skip `<`, an optional `/`, and the tag name.
        let mut i = 1 + usize::from(self.closing) + self.name.len();
        let end = source.len().saturating_sub(1);
        while i < end {
            while i < end && (b[i].is_ascii_whitespace() || b[i] == b'/') {
                i += 1;
            }
            let name_start = i;
            while i < end && !b[i].is_ascii_whitespace() && !matches!(b[i], b'=' | b'>' | b'/') {
                i += 1;
            }
            if i == name_start {
                break;
            }
            let attr_name = &source[name_start..i];
            while i < end && b[i].is_ascii_whitespace() {
                i += 1;
            }
            let mut value = "";
            if i < end && b[i] == b'=' {
                i += 1;
                while i < end && b[i].is_ascii_whitespace() {
                    i += 1;
                }
                if i < end && (b[i] == b'"' || b[i] == b'\'') {
                    let quote = b[i];
                    let value_start = i + 1;
                    i = value_start;
                    while i < end && b[i] != quote {
                        i += 1;
                    }
                    value = &source[value_start..i];
                    i += 1;
                } else {
                    let value_start = i;
                    while i < end && !b[i].is_ascii_whitespace() && b[i] != b'>' {
                        i += 1;
                    }
                    value = &source[value_start..i];
                }
            }
            if attr_name.eq_ignore_ascii_case(name) {
                return Some(value);
            }
        }
        None
    }

    fn hides(&self, source: &str) -> bool {
        if self.attr(source, "hidden").is_some() {
            return true;
        }
        let Some(style) = self.attr(source, "style") else {
            return false;
        };
        let style: String = style
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_lowercase();
        let max_height_zero = style.contains("max-height:0;")
            || style.ends_with("max-height:0")
            || style.contains("max-height:0px");
        style.contains("display:none")
            || style.contains("visibility:hidden")
            || (max_height_zero && style.contains("overflow:hidden"))
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
        let decoded = decode_entities(raw);
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

fn decode_entities(s: &str) -> String {
    if s.contains('&') {
        html_escape::decode_html_entities(s).into_owned()
    } else {
        s.to_owned()
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

fn find_from(s: &str, from: usize, needle: &str) -> Option<usize> {
    s.get(from..)?.find(needle).map(|i| from + i)
}

/// Case-insensitive ASCII search for `needle` (given in lowercase).
fn find_ci(s: &str, from: usize, needle: &str) -> Option<usize> {
    let hay = s.as_bytes().get(from..)?;
    let n = needle.as_bytes();
    hay.windows(n.len())
        .position(|w| w.eq_ignore_ascii_case(n))
        .map(|i| from + i)
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
    fn unclosed_hidden_element_hides_to_the_end_and_stray_closers_are_ignored() {
        assert_eq!(render("a</div><div style='display:none'>b").text, "a");
    }

    #[test]
    fn invisible_characters_are_removed() {
        assert_eq!(render("a\u{200c}\u{034f} b").text, "a b");
    }

    #[test]
    fn deep_nesting_does_not_grow_without_bound() {
        let html = "<div>".repeat(100_000) + "deep" + &"</div>".repeat(100_000);
        assert_eq!(render(&html).text, "deep");
    }
}

//! The renderer as it was before it read each tag's name and attributes once, kept only for
//! the differential test in `html::tests` that proves the one-pass renderer gives the same output.

use std::borrow::Cow;

use super::{
    compact_style_hides, decode_entities, find_byte, find_close_tag, find_from, style_hides,
    LineBuilder, Rendered, Tag, MAX_STACK,
};

/// Elements whose content is never shown.
fn is_invisible_element(name: &str) -> bool {
    matches!(
        name,
        "head" | "style" | "script" | "title" | "template" | "noscript"
    )
}

/// Elements that start a new line.
fn is_block(name: &str) -> bool {
    matches!(
        name,
        "address"
            | "article"
            | "aside"
            | "blockquote"
            | "br"
            | "center"
            | "dd"
            | "div"
            | "dl"
            | "dt"
            | "footer"
            | "form"
            | "h1"
            | "h2"
            | "h3"
            | "h4"
            | "h5"
            | "h6"
            | "header"
            | "hr"
            | "li"
            | "ol"
            | "p"
            | "pre"
            | "section"
            | "table"
            | "tbody"
            | "td"
            | "tfoot"
            | "th"
            | "thead"
            | "tr"
            | "ul"
    )
}

/// Elements with no closing tag.
fn is_void(name: &str) -> bool {
    matches!(
        name,
        "area"
            | "base"
            | "br"
            | "col"
            | "embed"
            | "hr"
            | "img"
            | "input"
            | "link"
            | "meta"
            | "source"
            | "track"
            | "wbr"
    )
}

/// The raw value of attribute `name` (lowercase) in the tag's source text; `Some("")` for a
/// bare attribute such as `hidden`.
fn attr<'s>(tag: &Tag<'_>, source: &'s str, name: &str) -> Option<&'s str> {
    tag.attrs(source)
        .find(|(attr_name, _)| attr_name.eq_ignore_ascii_case(name))
        .map(|(_, value)| value)
}

/// Whether the element is hidden: a `hidden` attribute, or a first `style` attribute that
/// (ignoring whitespace and ASCII case) says `display:none`, `visibility:hidden`, or
/// `max-height:0` with `overflow:hidden`. `scratch` is reused between calls.
fn hides(tag: &Tag<'_>, source: &str, scratch: &mut String) -> bool {
    // Every attribute is looked at: mail puts `style` last, so reading past it costs less
    // than first searching the whole tag for the letters of `hidden`.
    let mut style = None;
    for (name, value) in tag.attrs(source) {
        if name.eq_ignore_ascii_case("hidden") {
            return true;
        }
        if style.is_none() && name.eq_ignore_ascii_case("style") {
            style = Some(value);
        }
    }
    match style {
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
        if tag.closing {
            if let Some(depth) = stack.iter().rposition(|open| open == name) {
                stack.truncate(depth);
                if hidden_from.is_some_and(|h| depth < h) {
                    hidden_from = None;
                }
            }
            if is_block(name) && hidden_from.is_none() {
                line.break_line(&mut out.text);
            }
            continue;
        }
        if is_invisible_element(name) && !tag.self_closing {
            // Skip straight to the matching close tag: these hold no visible markup.
            pos = find_close_tag(html, pos, name)
                .and_then(|i| find_from(html, i, ">").map(|j| j + 1))
                .unwrap_or(bytes.len());
            continue;
        }
        let source = &html[lt..lt + tag.len];
        if hidden_from.is_none() {
            if name == "a" {
                if let Some(href) = attr(&tag, source, "href") {
                    out.links.push(decode_entities(href.trim()).into_owned());
                }
            }
            if is_block(name) {
                line.break_line(&mut out.text);
            }
        }
        if is_void(name) || tag.self_closing {
            continue;
        }
        if stack.len() < MAX_STACK {
            let hides = hidden_from.is_none() && hides(&tag, source, &mut style);
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
fn one_pass_renderer_matches_the_previous_one_on_every_fixture_and_the_bench_corpus() {
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
fn one_pass_renderer_matches_the_previous_one_on_random_and_malformed_html() {
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
    let names = ["div", "A", "span", "td", "br", "p", "style", "img", "x:y"];
    let separators = [" ", "\t", "\n", "\x0b", "\x0c", "\r", "/", "", "  "];
    let attributes = [
        "hidden", "Hidden", "style", "STYLE", "href", "HREF", "x", "a\"b", "=",
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
            html.push_str(["t", " u ", ""][pick(3)]);
        }
        assert_same(&html, "tags");
    }
    let deep = "<div>".repeat(600) + "<span hidden>x</span>deep" + &"</div>".repeat(600);
    assert_same(&deep, "deep");
}

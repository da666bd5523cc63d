//! Literals a rule's regex cannot match without, worked out when the rules are compiled. A
//! finder over a long body first looks for them with `memchr`'s SIMD search, and skips the regex
//! when they are absent. `regex` prefilters on a pattern's leading literals itself, but not on
//! literals that come later (`...\s*·\s*...`), nor on alternatives spread over a pattern, and a
//! body finder that cannot match was scanned in full by its DFA on every email.
//!
//! Also worked out then: the places where a regex's matches can start (`Starts`), so that it is
//! run anchored at those places only, not over the whole text.

use memchr::memmem;
use regex::Regex;
use regex_automata::util::captures::Captures;
use regex_automata::{meta, Anchored, Input};
use regex_syntax::hir::literal::{ExtractKind, Extractor};
use regex_syntax::hir::{Class, ClassUnicode, Hir, HirKind, Look};

/// At most this many groups are checked; the heaviest first.
const MAX_GROUPS: usize = 3;
/// A group of more alternatives than this is not worth searching for.
const MAX_ALTERNATIVES: usize = 4;
/// Literals lighter than this (one ASCII byte, such as `\n` or `$`) are everywhere.
const MIN_WEIGHT: usize = 2;

/// Groups of literals: every match of the regex contains at least one literal of every group.
#[derive(Debug, Clone, Default)]
pub struct Required {
    groups: Vec<Vec<memmem::Finder<'static>>>,
}

impl Required {
    /// What `pattern` requires; nothing (every haystack may match) when that cannot be told.
    pub fn of(pattern: &str) -> Required {
        let Ok(hir) = regex_syntax::parse(pattern) else {
            return Required::default();
        };
        let mut groups: Vec<Vec<Vec<u8>>> = required(&hir)
            .into_iter()
            .filter(|group| group_weight(group) >= MIN_WEIGHT)
            .collect();
        groups.sort_by_key(|group| std::cmp::Reverse(group_weight(group)));
        groups.truncate(MAX_GROUPS);
        Required {
            groups: groups
                .iter()
                .map(|group| {
                    group
                        .iter()
                        .map(|lit| memmem::Finder::new(lit).into_owned())
                        .collect()
                })
                .collect(),
        }
    }

    /// False only when the regex cannot match `haystack`.
    pub fn may_match(&self, haystack: &str) -> bool {
        self.groups.iter().all(|group| {
            group
                .iter()
                .any(|lit| lit.find(haystack.as_bytes()).is_some())
        })
    }
}

/// At most this many start literals are searched for; more is not worth it.
const MAX_START_LITERALS: usize = 4;
/// Outside line starts, shorter literals are too common for an anchored search at each.
const MIN_START_LITERAL: usize = 3;

/// A finder's regex: searched plainly, or, when its literals tell where matches can start,
/// anchored at those places (then the `regex::Regex` is not kept: one compiled copy is enough).
#[derive(Debug, Clone)]
pub struct Search {
    engine: Engine,
    /// Every group's name by index (`None` for the whole match and unnamed groups), read once
    /// here rather than through either engine's iterator on every match.
    names: Box<[Option<Box<str>>]>,
}

#[derive(Debug, Clone)]
enum Engine {
    Plain(Regex),
    Anchored(Starts),
    LazyLead(Box<LazyLead>),
}

/// Where a search found its match's groups.
pub enum Found<'h> {
    Plain(regex::Captures<'h>),
    Anchored(Captures),
    /// The lazy group of a `LazyLead` pattern, and the groups of what follows its literal
    /// (by the whole pattern's group indices; its group 0 is where that part matched).
    LazyLead {
        group: usize,
        lazy: std::ops::Range<usize>,
        rest: Captures,
    },
}

impl Found<'_> {
    /// Where group `i` matched, if it did.
    pub fn get(&self, i: usize) -> Option<std::ops::Range<usize>> {
        match self {
            Found::Plain(captures) => captures.get(i).map(|m| m.range()),
            Found::Anchored(captures) => captures.get_group(i).map(|span| span.range()),
            Found::LazyLead { rest, .. } if i == 0 => rest.get_group(0).map(|span| 0..span.end),
            Found::LazyLead { group, lazy, .. } if i == *group => Some(lazy.clone()),
            Found::LazyLead { rest, .. } => rest.get_group(i).map(|span| span.range()),
        }
    }
}

impl Search {
    /// `regex` as it is, or anchored at its start places when it has some.
    pub fn new(regex: Regex, size_limit: usize) -> Search {
        let names = regex.capture_names().map(|n| n.map(Box::from)).collect();
        let engine = match Starts::of(regex.as_str(), size_limit) {
            Some(starts) => Engine::Anchored(starts),
            None => match LazyLead::of(&regex, size_limit) {
                Some(lead) => Engine::LazyLead(Box::new(lead)),
                None => Engine::Plain(regex),
            },
        };
        Search { engine, names }
    }

    pub fn as_str(&self) -> &str {
        match &self.engine {
            Engine::Plain(regex) => regex.as_str(),
            Engine::LazyLead(lead) => &lead.pattern,
            Engine::Anchored(starts) => &starts.pattern,
        }
    }

    /// Every group's name (`None` for unnamed groups), by index, the whole match first.
    pub fn capture_names(&self) -> impl Iterator<Item = Option<&str>> {
        self.names.iter().map(|name| name.as_deref())
    }

    pub fn is_match(&self, haystack: &str) -> bool {
        match &self.engine {
            Engine::Plain(regex) => regex.is_match(haystack),
            Engine::LazyLead(lead) => lead.captures(haystack).is_some(),
            Engine::Anchored(starts) => starts.is_match(haystack),
        }
    }

    /// The leftmost-first match's groups, as `Regex::captures` finds them.
    pub fn captures<'h>(&self, haystack: &'h str) -> Option<Found<'h>> {
        match &self.engine {
            Engine::Plain(regex) => regex.captures(haystack).map(Found::Plain),
            Engine::Anchored(starts) => starts.captures(haystack).map(Found::Anchored),
            Engine::LazyLead(lead) => lead.captures(haystack),
        }
    }
}

/// A pattern that is, at the top level, `^`, maybe a literal, a group of one lazy repetition of
/// a class (`(?P<payee>.+?)`), a literal, and the rest (the subject templates:
/// `^(?P<payee>.+?) paid you \$(?P<subject_amount>[\d,]+\.\d{2})$`).
///
/// `regex` resolves such a pattern's groups with its bounded backtracker (it is not one-pass),
/// at a few thousand instructions a subject. Leftmost-first, a lazy repetition takes the
/// fewest characters after which the rest of the pattern matches: so the match is found at the
/// first occurrence of the literal (after at least one character) before which every character
/// is in the class and after which the rest matches anchored, and the rest's own groups are
/// those of its leftmost-first anchored match there. The rest is usually one-pass. `is_match`
/// is the same search (these patterns are searched for their groups almost always).
#[derive(Debug, Clone)]
pub struct LazyLead {
    /// The whole pattern, as written (not compiled: with the rest compiled, a second copy
    /// would only cost memory, about 100 kB with Unicode classes).
    pattern: String,
    /// The literal before the lazy group (often empty).
    lead: Vec<u8>,
    /// The lazy group's index and the class it repeats.
    group: usize,
    class: ClassUnicode,
    /// The literal after the lazy group.
    literal: memmem::Finder<'static>,
    /// What follows the literal, with the whole pattern's group indices.
    rest: meta::Regex,
}

impl LazyLead {
    fn of(regex: &Regex, size_limit: usize) -> Option<LazyLead> {
        let hir = regex_syntax::parse(regex.as_str()).ok()?;
        let HirKind::Concat(parts) = hir.kind() else {
            return None;
        };
        let (parts, lead) = match parts.as_slice() {
            [start, rest @ ..] if *start.kind() == HirKind::Look(Look::Start) => match rest {
                [first, rest @ ..] => match first.kind() {
                    HirKind::Literal(lit) => (rest, lit.0.to_vec()),
                    _ => (&parts[1..], Vec::new()),
                },
                [] => return None,
            },
            _ => return None,
        };
        let [group, literal, rest @ ..] = parts else {
            return None;
        };
        let HirKind::Capture(capture) = group.kind() else {
            return None;
        };
        let HirKind::Repetition(repetition) = capture.sub.kind() else {
            return None;
        };
        let HirKind::Class(Class::Unicode(class)) = repetition.sub.kind() else {
            return None;
        };
        let HirKind::Literal(literal) = literal.kind() else {
            return None;
        };
        let lazy_one_or_more =
            repetition.min == 1 && repetition.max.is_none() && !repetition.greedy;
        // A literal starting with a UTF-8 continuation byte could occur inside a character.
        let starts_a_char = literal.0.first().is_some_and(|&b| b & 0xC0 != 0x80);
        if !lazy_one_or_more || !starts_a_char {
            return None;
        }
        let rest = meta::Regex::builder()
            .configure(
                meta::Regex::config()
                    .nfa_size_limit(Some(size_limit))
                    .utf8_empty(true),
            )
            .build_from_hir(&Hir::concat(rest.to_vec()))
            .ok()?;
        // The rest keeps the whole pattern's group indices (the ones before it left unnamed).
        let names_agree = regex.capture_names().enumerate().skip(1).all(|(i, name)| {
            let rest_name = rest
                .group_info()
                .to_name(regex_automata::PatternID::ZERO, i);
            i == capture.index as usize || rest_name == name
        });
        // Every group after the lazy one is in the rest; a last lazy group is not padded in.
        let rest_len = rest.group_info().group_len(regex_automata::PatternID::ZERO);
        let lazy_is_last = capture.index as usize + 1 == regex.captures_len();
        if !names_agree || !(rest_len == regex.captures_len() || lazy_is_last && rest_len == 1) {
            return None;
        }
        Some(LazyLead {
            pattern: regex.as_str().to_owned(),
            lead,
            group: capture.index as usize,
            class: class.clone(),
            literal: memmem::Finder::new(&literal.0).into_owned(),
            rest,
        })
    }

    /// The leftmost-first match's groups, as `Regex::captures` finds them.
    fn captures<'h>(&self, haystack: &'h str) -> Option<Found<'h>> {
        let bytes = haystack.as_bytes();
        if !bytes.starts_with(&self.lead) {
            return None;
        }
        let start = self.lead.len();
        let mut captures = self.rest.create_captures();
        // `haystack[start..checked]` is known to be all in the class.
        let mut checked = start;
        // An occurrence of the literal starts a character, so the first is one after `start`.
        let mut from = start + 1;
        while let Some(found) = bytes.get(from..).and_then(|rest| self.literal.find(rest)) {
            let at = from + found;
            if !haystack[checked..at]
                .chars()
                .all(|c| in_class(&self.class, c))
            {
                return None;
            }
            checked = at;
            let after = at + self.literal.needle().len();
            let input = Input::new(haystack).range(after..).anchored(Anchored::Yes);
            self.rest.search_captures(&input, &mut captures);
            if captures.is_match() {
                return Some(Found::LazyLead {
                    group: self.group,
                    lazy: start..at,
                    rest: captures,
                });
            }
            from = at + 1;
        }
        None
    }
}

fn in_class(class: &ClassUnicode, c: char) -> bool {
    class
        .ranges()
        .iter()
        .any(|range| range.start() <= c && c <= range.end())
}

/// Where a match of a regex can start, when its literals narrow that down:
/// - every match begins with one of a few literals (`Payment ID:?\s*...`): each place one
///   occurs;
/// - a multi-line `^`, then one of a few literals (`(?m)^Date`, `(?m)^(?:- |\+ )\$`): each
///   line that starts with one;
/// - a multi-line `^`, and every match's first line contains one of a few literals
///   (`(?m)^(?:You paid .+|.+ paid You)\n...`): each line that contains one.
///
/// `regex` does not use a line-start literal or a literal inside the first line to skip ahead
/// (its DFA scans the whole body from the start), and even where it skips to a leading
/// literal, its search costs several times an anchored search there. So those places are
/// found with `memmem`, and the regex is run anchored at each in turn. The first that matches
/// gives the leftmost-first match: no match starts at a place in between, and an anchored
/// search reads the text before it for `^` and `\b`.
#[derive(Debug, Clone)]
pub struct Starts {
    places: Places,
    pattern: String,
    /// The same pattern, compiled as `regex::Regex` compiles it, for anchored searches.
    regex: meta::Regex,
    /// Where the pattern's one group can be read off its match, when it can.
    line_group: Option<LineGroup>,
}

/// A pattern whose only group is one line of its match, `...\n(?P<notes>.+)\n...` (the note
/// finders): a group that cannot match `\n`, right after a literal ending in `\n`, followed by
/// a part that begins with `\n` and contains the same number of them in every match. Then the
/// group ends at that many `\n` from the match's end and starts after the `\n` before that: the
/// match splits no other way, so these are the groups the bounded backtracker would find, and
/// only the match itself has to be searched for (by the DFA, several times cheaper).
#[derive(Debug, Clone, Copy)]
struct LineGroup {
    group: usize,
    newlines_after: usize,
}

impl LineGroup {
    fn of(hir: &Hir) -> Option<LineGroup> {
        let HirKind::Concat(parts) = hir.kind() else {
            return None;
        };
        let mut captures = parts
            .iter()
            .enumerate()
            .filter(|(_, part)| hir_has_capture(part));
        let (at, group) = captures.next()?;
        if captures.next().is_some() {
            return None;
        }
        let HirKind::Capture(capture) = group.kind() else {
            return None;
        };
        let before_is_line_break = match parts.get(at.checked_sub(1)?)?.kind() {
            HirKind::Literal(lit) => lit.0.ends_with(b"\n"),
            _ => false,
        };
        let after_starts_a_line = match parts.get(at + 1)?.kind() {
            HirKind::Literal(lit) => lit.0.starts_with(b"\n"),
            _ => false,
        };
        if !before_is_line_break
            || !after_starts_a_line
            || hir_has_capture(&capture.sub)
            || may_match_newline(&capture.sub)
        {
            return None;
        }
        let newlines_after = parts[at + 1..]
            .iter()
            .map(exact_newlines)
            .sum::<Option<usize>>()?;
        Some(LineGroup {
            group: capture.index as usize,
            newlines_after,
        })
    }

    /// The groups of the match `span` of `haystack`.
    fn fill(self, haystack: &[u8], span: regex_automata::Span, captures: &mut Captures) {
        use regex_automata::util::primitives::NonMaxUsize;
        let matched = &haystack[span.range()];
        let mut end = matched.len();
        for _ in 0..self.newlines_after {
            end = memchr::memrchr(b'\n', &matched[..end]).expect("the match has them");
        }
        let start = memchr::memrchr(b'\n', &matched[..end]).expect("a line break before") + 1;
        captures.set_pattern(Some(regex_automata::PatternID::ZERO));
        let slots = captures.slots_mut();
        slots.fill(None);
        let mut set = |slot: usize, at: usize| slots[slot] = NonMaxUsize::new(at);
        set(0, span.start);
        set(1, span.end);
        set(self.group * 2, span.start + start);
        set(self.group * 2 + 1, span.start + end);
    }
}

fn hir_has_capture(hir: &Hir) -> bool {
    hir.properties().explicit_captures_len() > 0
}

/// How many `\n` every match of `hir` contains, when that is one number.
fn exact_newlines(hir: &Hir) -> Option<usize> {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => Some(0),
        HirKind::Literal(lit) => Some(lit.0.iter().filter(|&&b| b == b'\n').count()),
        HirKind::Class(_) => (!may_match_newline(hir)).then_some(0),
        HirKind::Repetition(repetition) => match exact_newlines(&repetition.sub)? {
            0 => Some(0),
            n if repetition.max == Some(repetition.min) => Some(n * repetition.min as usize),
            _ => None,
        },
        HirKind::Capture(capture) => exact_newlines(&capture.sub),
        HirKind::Concat(parts) => parts.iter().map(exact_newlines).sum(),
        HirKind::Alternation(branches) => {
            let first = exact_newlines(branches.first()?)?;
            branches
                .iter()
                .all(|b| exact_newlines(b) == Some(first))
                .then_some(first)
        }
    }
}

#[derive(Debug, Clone)]
enum Places {
    /// Each place one of the literals occurs.
    Literals(Vec<memmem::Finder<'static>>),
    /// Each line start followed by one of the literals: each literal, and `\n` + literal.
    LineStarts(Vec<(Vec<u8>, memmem::Finder<'static>)>),
    /// The start of each line that contains one of the literals (none contains `\n`).
    LinesWith(Vec<memmem::Finder<'static>>),
}

impl Starts {
    /// Where `pattern`'s matches can start; `None` when its literals do not tell (see above).
    pub fn of(pattern: &str, size_limit: usize) -> Option<Starts> {
        let hir = regex_syntax::parse(pattern).ok()?;
        let places = match after_line_start(&hir) {
            Some(rest) => match start_literals(&rest, 1) {
                Some(literals) => Places::LineStarts(
                    literals
                        .into_iter()
                        .map(|lit| {
                            let needle = [b"\n".as_slice(), &lit].concat();
                            (lit, memmem::Finder::new(&needle).into_owned())
                        })
                        .collect(),
                ),
                None => Places::LinesWith(finders(first_line_literals(&rest)?)),
            },
            // An anchored pattern is searched at 0 only; `regex` does that already.
            None if hir.properties().look_set_prefix().contains(Look::Start) => return None,
            None => Places::Literals(finders(start_literals(&hir, MIN_START_LITERAL)?)),
        };
        // `regex::RegexBuilder`'s defaults: leftmost-first, empty matches on char boundaries.
        let regex = meta::Regex::builder()
            .configure(
                meta::Regex::config()
                    .nfa_size_limit(Some(size_limit))
                    .utf8_empty(true),
            )
            .build(pattern)
            .ok()?;
        Some(Starts {
            places,
            pattern: pattern.to_owned(),
            regex,
            line_group: LineGroup::of(&hir),
        })
    }

    /// The first place at or after `from` where a match can start.
    fn next(&self, haystack: &[u8], from: usize) -> Option<usize> {
        match &self.places {
            Places::Literals(finders) => earliest(finders, haystack, from, 0),
            Places::LineStarts(literals) => {
                if from == 0 && literals.iter().any(|(lit, _)| haystack.starts_with(lit)) {
                    return Some(0);
                }
                // The needle begins with the `\n` before the place.
                let from = from.max(1);
                let finders = literals.iter().map(|(_, finder)| finder);
                earliest(finders, haystack, from - 1, 1)
            }
            Places::LinesWith(finders) => {
                // The first line start at or after `from`, then the first literal from there.
                let line = match from {
                    0 => 0,
                    _ => from + memchr::memchr(b'\n', &haystack[from - 1..])?,
                };
                let found = earliest(finders, haystack, line, 0)?;
                Some(memchr::memrchr(b'\n', &haystack[line..found]).map_or(line, |i| line + i + 1))
            }
        }
    }

    /// Whether the regex matches `haystack` (as `Regex::is_match`).
    pub fn is_match(&self, haystack: &str) -> bool {
        let mut from = 0;
        while let Some(at) = self.next(haystack.as_bytes(), from) {
            let input = Input::new(haystack).range(at..).anchored(Anchored::Yes);
            if self.regex.is_match(input) {
                return true;
            }
            from = at + 1;
        }
        false
    }

    /// The leftmost-first match's groups (as `Regex::captures`), by group index.
    pub fn captures(&self, haystack: &str) -> Option<Captures> {
        let mut captures = self.regex.create_captures();
        let mut from = 0;
        while let Some(at) = self.next(haystack.as_bytes(), from) {
            let input = Input::new(haystack).range(at..).anchored(Anchored::Yes);
            if let Some(line_group) = self.line_group {
                if let Some(found) = self.regex.search(&input) {
                    line_group.fill(haystack.as_bytes(), found.span(), &mut captures);
                    return Some(captures);
                }
            } else {
                self.regex.search_captures(&input, &mut captures);
                if captures.is_match() {
                    return Some(captures);
                }
            }
            from = at + 1;
        }
        None
    }
}

/// Where the first of the needles occurs in `haystack` at or after `from`, plus `skip` of the
/// needle that occurs there. Later needles are looked for only up to the earliest so far.
fn earliest<'a>(
    finders: impl IntoIterator<Item = &'a memmem::Finder<'static>>,
    haystack: &[u8],
    from: usize,
    skip: usize,
) -> Option<usize> {
    let mut first: Option<usize> = None;
    for finder in finders {
        let end = first.map_or(haystack.len(), |p| {
            (p + finder.needle().len()).min(haystack.len())
        });
        if from >= end {
            continue;
        }
        if let Some(i) = finder.find(&haystack[from..end]) {
            first = Some(first.map_or(from + i, |p| p.min(from + i)));
        }
    }
    first.map(|p| p + skip)
}

fn finders(literals: Vec<Vec<u8>>) -> Vec<memmem::Finder<'static>> {
    literals
        .iter()
        .map(|lit| memmem::Finder::new(lit).into_owned())
        .collect()
}

/// A few literals, each at least `shortest` bytes long, one of which every match of `hir`
/// begins with.
fn start_literals(hir: &Hir, shortest: usize) -> Option<Vec<Vec<u8>>> {
    let mut extractor = Extractor::new();
    extractor.kind(ExtractKind::Prefix);
    let seq = extractor.extract(hir);
    let mut literals: Vec<Vec<u8>> = seq
        .literals()?
        .iter()
        .map(|l| l.as_bytes().to_vec())
        .collect();
    // A literal that starts with another one adds no place to start from.
    literals.sort();
    literals.dedup_by(|longer, shorter| longer.starts_with(shorter));
    let usable = !literals.is_empty()
        && literals.len() <= MAX_START_LITERALS
        && literals.iter().all(|lit| lit.len() >= shortest);
    usable.then_some(literals)
}

/// A few literals, one of which the first line of every match of `hir` contains: the required
/// literals of the longest leading part of `hir` that cannot match a `\n`.
fn first_line_literals(hir: &Hir) -> Option<Vec<Vec<u8>>> {
    let parts = match hir.kind() {
        HirKind::Concat(parts) => parts.as_slice(),
        _ => std::slice::from_ref(hir),
    };
    let line: Vec<Hir> = parts
        .iter()
        .take_while(|part| !may_match_newline(part))
        .cloned()
        .collect();
    let best = required(&Hir::concat(line))
        .into_iter()
        .filter(|group| group_weight(group) >= MIN_START_LITERAL)
        .max_by_key(|group| group_weight(group))?;
    (best.len() <= MAX_START_LITERALS).then_some(best)
}

/// Whether some match of `hir` may contain a `\n`.
fn may_match_newline(hir: &Hir) -> bool {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => false,
        HirKind::Literal(lit) => lit.0.contains(&b'\n'),
        HirKind::Class(Class::Unicode(class)) => class
            .ranges()
            .iter()
            .any(|r| r.start() <= '\n' && '\n' <= r.end()),
        HirKind::Class(Class::Bytes(class)) => class
            .ranges()
            .iter()
            .any(|r| r.start() <= b'\n' && b'\n' <= r.end()),
        HirKind::Repetition(repetition) => may_match_newline(&repetition.sub),
        HirKind::Capture(capture) => may_match_newline(&capture.sub),
        HirKind::Concat(parts) | HirKind::Alternation(parts) => parts.iter().any(may_match_newline),
    }
}

/// What follows a leading multi-line `^` (through captures and concatenations); `None` when
/// the pattern does not start with one.
fn after_line_start(hir: &Hir) -> Option<Hir> {
    match hir.kind() {
        HirKind::Look(Look::StartLF) => Some(Hir::empty()),
        HirKind::Capture(capture) => after_line_start(&capture.sub),
        HirKind::Concat(parts) => {
            let (head, tail) = parts.split_first()?;
            let mut rest = vec![after_line_start(head)?];
            rest.extend(tail.iter().cloned());
            Some(Hir::concat(rest))
        }
        _ => None,
    }
}

/// How rare a literal is likely to be: its length, with non-ASCII bytes counted twice.
fn weight(lit: &[u8]) -> usize {
    lit.len() + lit.iter().filter(|b| !b.is_ascii()).count()
}

fn group_weight(group: &[Vec<u8>]) -> usize {
    group.iter().map(|lit| weight(lit)).min().unwrap_or(0)
}

/// The groups every match of `hir` contains (never an empty group). Anything that may match
/// without a literal (classes, optional parts, look-arounds) contributes nothing.
fn required(hir: &Hir) -> Vec<Vec<Vec<u8>>> {
    match hir.kind() {
        HirKind::Literal(lit) => vec![vec![lit.0.to_vec()]],
        HirKind::Capture(capture) => required(&capture.sub),
        HirKind::Repetition(repetition) if repetition.min >= 1 => required(&repetition.sub),
        HirKind::Concat(parts) => parts.iter().flat_map(required).collect(),
        HirKind::Alternation(branches) => {
            // Some branch matches, so one of the branches' own literals is there.
            let mut any = Vec::new();
            for branch in branches {
                let best = required(branch).into_iter().max_by_key(|g| group_weight(g));
                match best {
                    Some(group) => any.extend(group),
                    None => return Vec::new(),
                }
            }
            if any.len() > MAX_ALTERNATIVES {
                return Vec::new();
            }
            vec![any]
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex_automata::PatternID;

    fn literals(pattern: &str) -> Vec<Vec<String>> {
        let hir = regex_syntax::parse(pattern).unwrap();
        required(&hir)
            .into_iter()
            .map(|g| {
                g.into_iter()
                    .map(|l| String::from_utf8(l).unwrap())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn literals_come_from_required_parts_only() {
        assert_eq!(literals("ab(?:cd)?e+[xy]"), vec![vec!["ab"], vec!["e"]]);
        assert_eq!(literals("(?i)abc"), Vec::<Vec<String>>::new());
        assert_eq!(
            literals("x(?:You paid|.+ paid You)\\n"),
            vec![vec!["x"], vec!["You paid", " paid You"], vec!["\n"]]
        );
        assert_eq!(literals("a|[bc]"), Vec::<Vec<String>>::new());
        assert_eq!(literals("(?P<n>\\d+) ·"), vec![vec![" ·"]]);
    }

    #[test]
    fn a_regex_never_matches_where_its_prefilter_says_it_cannot() {
        let patterns = [
            r"(?P<date>[A-Z][a-z]{2,8} \d{1,2}, \d{4})(?: [A-Z]{2,4})?\s*·\s*(?P<signed>[-+]\s*\$\s*[\d,]+\.\d{2})",
            r"(?m)^(?:You (?:paid|charged) .+|.+ (?:paid|charged) You)\n(?P<notes>.+)\n(?:Transfer Date and Amount:?|[-+] \$[\d,]+\.\d{2})$",
            r"(?m)^\$\s*\d[\d,]*\s*\.\s*\d{2}\s*\n(?P<notes>.+)\nView in Venmo$",
            r"Payment ID:?\s*(?P<id>\d{6,25})",
            r"^You paid (?P<payee>.+?) \$(?P<subject_amount>[\d,]+\.\d{2})$",
            r"^(?P<payee>.+?) paid you \$(?P<subject_amount>[\d,]+\.\d{2})$",
            r"ab|cd|ef",
            r"(?:ab)+c?d{2}",
        ];
        let pieces = [
            "You paid",
            "You paid ",
            " paid you $",
            "12.50",
            " paid You",
            "You charged",
            "Jane",
            "\n",
            "Transfer Date and Amount",
            "+ $1.00",
            "- $12.50",
            "$ 5 . 00",
            "View in Venmo",
            "Mar 1, 2024",
            " · ",
            "·",
            "Payment ID: 1234567",
            "ab",
            "cd",
            "ef",
            "d",
            "c",
            " ",
        ];
        let compiled: Vec<_> = patterns
            .iter()
            .map(|p| (p, regex::Regex::new(p).unwrap(), Required::of(p)))
            .collect();
        let mut state = 0x0ddb_1a5e_5bad_5eed_u64;
        for _ in 0..20_000 {
            let haystack = crate::test_rng::joined_pieces(&mut state, &pieces, 0..9);
            for (pattern, regex, required) in &compiled {
                if regex.is_match(&haystack) {
                    assert!(required.may_match(&haystack), "{pattern:?} {haystack:?}");
                }
            }
        }
    }

    impl Starts {
        /// What kind of places, and the literals that find them.
        fn literals(&self) -> (&'static str, Vec<&[u8]>) {
            match &self.places {
                Places::Literals(f) => ("anywhere", f.iter().map(|f| f.needle()).collect()),
                Places::LineStarts(l) => ("at lines", l.iter().map(|(l, _)| &l[..]).collect()),
                Places::LinesWith(f) => ("in lines", f.iter().map(|f| f.needle()).collect()),
            }
        }
    }

    #[test]
    fn start_literals_come_only_from_the_start_of_every_match() {
        let starts = |pattern: &str| {
            Starts::of(pattern, 4 << 20).map(|s| {
                let (kind, literals) = s.literals();
                let mut all: Vec<String> = literals
                    .into_iter()
                    .map(|l| String::from_utf8(l.to_vec()).unwrap())
                    .collect();
                all.sort();
                (kind, all)
            })
        };
        let with = |kind, lits: &[&str]| Some((kind, lits.iter().map(|l| l.to_string()).collect()));
        let at_lines = |lits: &[&str]| with("at lines", lits);
        let anywhere = |lits: &[&str]| with("anywhere", lits);
        let in_lines = |lits: &[&str]| with("in lines", lits);
        assert_eq!(starts(r"(?m)^Date:?\s*(?P<d>\d+)$"), at_lines(&["Date"]));
        assert_eq!(
            starts(r"(?m)^(?P<signed>[-+] \$[\d,]+\.\d{2})$"),
            at_lines(&["+ $", "- $"])
        );
        assert_eq!(starts(r"(?m)^\$\s*\d"), at_lines(&["$"]));
        assert_eq!(starts(r"(?m)(?:)^ab"), at_lines(&["ab"]));
        assert_eq!(starts(r"(?m)^(?:Date)?x"), at_lines(&["Datex", "x"]));
        assert_eq!(
            starts(r"Payment ID:?\s*(?P<id>\d+)"),
            anywhere(&["Payment ID"])
        );
        assert_eq!(starts(r"(?P<x>abc|abcd|xyz)\d"), anywhere(&["abc", "xyz"]));
        // In CRLF mode `^` is not only after `\n`: the literal is searched for anywhere.
        assert_eq!(starts(r"(?Rm)^Date"), anywhere(&["Date"]));
        assert_eq!(
            starts(r"(?m)^(?:You (?:paid|charged) .+|.+ (?:paid|charged) You)\n(?P<n>.+)\nX$"),
            in_lines(&[" You", "charged", "paid"])
        );
        assert_eq!(
            starts(r"(?m)^\s*[a-z]+ Date: (?P<d>\d+)"),
            None,
            "`\\s` matches `\\n`"
        );
        assert_eq!(
            starts(r"(?m)^[a-z]+ Date: (?P<d>\d+)"),
            in_lines(&[" Date: "])
        );
        // A `^` for the whole text, a start that may be empty, a branch without a
        // literal, too many alternatives, a literal too short to search
        // for outside line starts.
        for pattern in [
            r"^Date",
            r"(?m)^\s*Date",
            r"(?m)^(?:You paid|.+)\n",
            r"(?m)^(?:a|b|c|d|e)x",
            r"(?m)^(?:Date)?\s",
            r"\$\d",
        ] {
            assert_eq!(starts(pattern), None, "{pattern}");
        }
    }

    /// Every group of a match, by position.
    /// What finders read in every fixture: the body as rules see it, the text part, the subject.
    fn fixture_texts() -> Vec<String> {
        let mut texts = Vec::new();
        for (_, raw) in crate::parse::tests::fixture_emails() {
            if let Ok(email) = crate::message::Email::parse(&raw) {
                texts.extend(email.body_text().map(str::to_owned));
                texts.extend(email.text.clone());
                texts.push(email.envelope.subject.clone());
            }
        }
        texts
    }

    fn spans(captures: Option<regex::Captures<'_>>) -> Option<Vec<Option<(usize, usize)>>> {
        captures.map(|c| c.iter().map(|m| m.map(|m| (m.start(), m.end()))).collect())
    }

    /// Anchored searches at the places `Starts` finds give what a plain search gives (the same
    /// groups at the same places, the same answer to `is_match`), for every regex with start
    /// literals of every built-in rule file and synthetic ones, over every fixture body,
    /// subject and text part, and random text built from those texts' lines and the patterns'
    /// literals.
    #[test]
    fn anchored_searches_at_the_start_literals_find_the_same_match() {
        let mut patterns: Vec<String> = [
            r"(?m)^ab",
            r"(?m)^(?:ab|a)c?",
            r"(?m)^(?P<x>ab|cd)\b",
            r"(?m)^a(?:b|\n)*$",
            r"(?m)^\$\s*(?P<n>\d+)\s*$",
            r"(?m)^(?:- |\+ )\$",
            r"(?m)^Date\n\n",
            r"(?m)^é(?P<x>.*)",
            r"(?m)^ab\b",
            r"(?m)^a\w*c$",
            r"(?m)^\$\d+\.\d{2}\n(?P<line>.+)\nab",
            r"(?m)^(?:Date|ab|b)(?P<rest>\s*.{0,4})$",
            r"abc\b",
            r"(?P<x>abc|1,234)(?P<y>\.\d+)?",
            r"Mar (?P<day>\d+)\b",
            r"(?m)^(?:abc.*|.*bca|Date)\n(?P<x>.+)\n\$",
            r"(?m)^[a-z ]*(?:abc|éé)\b(?P<x>.*)$",
            r"(?m)^ab+\n(?P<x>.+)\nb$",
            r"(?m)^ab\n(?P<x>[^\n]*)\n(?:c|\nd\n)",
            r"(?m)^ab\n(?P<x>.*)\n(?:c\n|d\n)(?:x|\$\d{2})",
            r"(?m)^(?:ab|b)\s*\n(?P<x>.+?)\n.*$",
            r"(?m)^\$\s*\d\s*\n(?P<x>.+)\n(?:\n\n){2}",
        ]
        .map(str::to_owned)
        .to_vec();
        for (id, text) in crate::parse::builtin::EMBEDDED {
            let rules = crate::parse::rules::compile("t", id, text).unwrap();
            patterns.extend(rules.finders().filter_map(|f| match &f.test {
                crate::parse::rules::Test::Regex { regex, .. } => Some(regex.as_str().to_owned()),
                crate::parse::rules::Test::Pointer { .. } => None,
            }));
        }
        let compiled: Vec<_> = patterns
            .iter()
            .filter_map(|p| Some((p, regex::Regex::new(p).unwrap(), Starts::of(p, 4 << 20)?)))
            .collect();
        for (pattern, regex, _) in &compiled {
            let search = Search::new(regex.clone(), 4 << 20);
            assert!(matches!(search.engine, Engine::Anchored(_)), "{pattern}");
            assert_eq!(search.as_str(), regex.as_str());
            let starts = Starts::of(pattern, 4 << 20).unwrap();
            let anchored_names = starts.regex.group_info().pattern_names(PatternID::ZERO);
            assert!(
                search.capture_names().eq(regex.capture_names())
                    && anchored_names.eq(regex.capture_names()),
                "{pattern}: group names by index"
            );
        }
        assert!(compiled.len() >= 50, "{} patterns", compiled.len());
        let line_groups = compiled
            .iter()
            .filter(|(_, _, s)| s.line_group.is_some())
            .count();
        assert!(line_groups >= 6, "{line_groups} patterns with a line group");

        let texts = fixture_texts();
        let mut pieces: Vec<String> = texts
            .iter()
            .flat_map(|t| t.lines().take(40).map(str::to_owned))
            .collect();
        for (_, _, starts) in &compiled {
            for lit in starts.literals().1 {
                pieces.push(String::from_utf8_lossy(lit).into_owned());
            }
        }
        pieces.extend(
            [
                "\n",
                "\n",
                "\n",
                " ",
                "$",
                "12.50",
                "1,234",
                ".",
                "Mar 1, 2024",
                "a",
                "b",
                "c",
                "é",
                "ab",
                "abc",
                "$1.00",
            ]
            .map(str::to_owned),
        );
        let mut haystacks = texts.clone();
        let mut state = 0x11e5_7a27_0f11_e5ed_u64;
        for _ in 0..40_000 {
            state = crate::test_rng::xorshift64(state);
            let mut haystack = String::new();
            for _ in 0..(state % 10) {
                state = crate::test_rng::xorshift64(state);
                haystack.push_str(&pieces[(state % pieces.len() as u64) as usize]);
                if (state >> 40) % 3 == 0 {
                    haystack.push('\n');
                }
            }
            haystacks.push(haystack);
        }

        let mut matched = 0;
        for haystack in &haystacks {
            for (pattern, regex, starts) in &compiled {
                let expected = spans(regex.captures(haystack));
                assert_eq!(
                    starts.is_match(haystack),
                    expected.is_some(),
                    "{pattern:?} {haystack:?}"
                );
                let found = starts.captures(haystack).map(|c| {
                    (0..c.group_len())
                        .map(|i| c.get_group(i).map(|s| (s.start, s.end)))
                        .collect::<Vec<_>>()
                });
                assert_eq!(found, expected, "{pattern:?} {haystack:?}");
                matched += usize::from(expected.is_some());
            }
        }
        assert!(matched > 10_000, "{matched} matches");
    }

    /// A `LazyLead` pattern's groups, as its own search finds them, are the groups
    /// `regex::Regex::captures` finds, for every qualifying finder of every built-in rule file
    /// and synthetic patterns, over every fixture subject and body and random text built from
    /// their pieces and the patterns' literals.
    #[test]
    fn a_lazy_lead_search_finds_the_groups_regex_finds() {
        let mut patterns: Vec<String> = [
            r"^(?P<a>.+?) paid you \$(?P<b>[\d,]+\.\d{2})$",
            r"^You paid (?P<a>.+?) \$(?P<b>[\d,]+\.\d{2})$",
            r"^(?P<a>.+?)ab(?P<b>b*)(?P<c>c)?",
            r"^(?P<a>[a-zé ]+?)é",
            r"^x(?P<a>.+?)aa\b",
            r"^(?P<a>.+?) (?:paid|charged)(?P<b>.*)$",
            r"^(?P<a>\w+?)b",
            r"^(?P<a>.+?)é\d",
            r"^(?P<a>(?s:.)+?)\n(?P<b>.+)",
        ]
        .map(str::to_owned)
        .to_vec();
        let synthetic = patterns.len();
        for (id, text) in crate::parse::builtin::EMBEDDED {
            let rules = crate::parse::rules::compile("t", id, text).unwrap();
            patterns.extend(rules.finders().filter_map(|f| match &f.test {
                crate::parse::rules::Test::Regex { regex, .. } => Some(regex.as_str().to_owned()),
                crate::parse::rules::Test::Pointer { .. } => None,
            }));
        }
        let compiled: Vec<_> = patterns
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let regex = regex::Regex::new(p).unwrap();
                let lead = LazyLead::of(&regex, 4 << 20);
                assert!(i >= synthetic || lead.is_some(), "{p} qualifies");
                Some((p, regex, lead?))
            })
            .collect();
        assert!(
            compiled.len() >= synthetic + 5,
            "{} patterns",
            compiled.len()
        );
        for other in [
            r"^(?P<a>.+) paid",
            r"(?P<a>.+?) paid",
            r"^(?P<z>\d)?(?P<a>.+?)\$",
            r"^(?P<a>.*?)b",
        ] {
            let regex = regex::Regex::new(other).unwrap();
            assert!(LazyLead::of(&regex, 4 << 20).is_none(), "{other}");
        }

        let texts = fixture_texts();
        let mut pieces: Vec<String> = texts
            .iter()
            .flat_map(|t| {
                t.lines()
                    .take(40)
                    .flat_map(|l| l.split(' '))
                    .map(str::to_owned)
            })
            .collect();
        pieces.extend(
            [
                " paid you $",
                " paid your $",
                "You paid ",
                " paid ",
                "You ",
                "paid",
                " $",
                "$",
                "12.50",
                "1,234.00",
                "1,2",
                ".",
                "ab",
                "b",
                "c",
                "aa",
                "é",
                "x",
                "\n",
                " ",
                "'s ",
                " charge request",
                " request",
                " to your Venmo account",
                "charged",
                "7",
            ]
            .map(str::to_owned),
        );
        let mut haystacks = texts.clone();
        let mut state = 0x1a2e_1ead_5eed_0001_u64;
        for _ in 0..60_000 {
            haystacks.push(crate::test_rng::joined_pieces(&mut state, &pieces, 0..9));
        }
        let mut matched = 0;
        for haystack in &haystacks {
            for (pattern, regex, lead) in &compiled {
                let expected = spans(regex.captures(haystack));
                let found = lead.captures(haystack).map(|f| {
                    (0..regex.captures_len())
                        .map(|i| f.get(i).map(|r| (r.start, r.end)))
                        .collect::<Vec<_>>()
                });
                assert_eq!(found, expected, "{pattern:?} {haystack:?}");
                matched += usize::from(expected.is_some());
            }
        }
        assert!(matched > 2_000, "{matched} matches");
    }
}

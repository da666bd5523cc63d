//! Literals a rule's regex cannot match without, worked out when the rules are compiled. A
//! finder over a long body first looks for them with `memchr`'s SIMD search, and skips the regex
//! when they are absent. `regex` prefilters on a pattern's leading literals itself, but not on
//! literals that come later (`...\s*·\s*...`), nor on alternatives spread over a pattern, and a
//! body finder that cannot match was scanned in full by its DFA on every email.

use memchr::memmem;
use regex_syntax::hir::{Hir, HirKind};

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
            state = crate::test_rng::xorshift64(state);
            let mut haystack = String::new();
            for k in 0..(state % 9) {
                haystack.push_str(pieces[((state >> (k * 6)) % pieces.len() as u64) as usize]);
            }
            for (pattern, regex, required) in &compiled {
                if regex.is_match(&haystack) {
                    assert!(required.may_match(&haystack), "{pattern:?} {haystack:?}");
                }
            }
        }
    }
}

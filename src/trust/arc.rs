//! ARC (RFC 8617): reading the sets and the first hop's ARC-Authentication-Results. The
//! signatures themselves are checked by `dkim` (ARC-Message-Signature is a DKIM signature,
//! ARC-Seal signs the sets), with keys looked up like any DKIM key.

use super::dkim::{self, field_value, Message};

/// The most ARC sets a chain may have (RFC 8617 4.2.1).
const MAX_SETS: usize = 50;

/// The structure of a message's ARC headers.
pub enum Chain {
    /// No ARC headers.
    None,
    /// Malformed, or a sealer already found it failed: its reason.
    Fail(String),
    /// Structurally sound: for instance 1..=N, the header indexes of [AAR, AMS, AS].
    Sets(Vec<[usize; 3]>),
}

pub fn chain(message: &Message) -> Chain {
    let mut found: Vec<[Option<usize>; 3]> = Vec::new();
    let names = [
        "arc-authentication-results",
        "arc-message-signature",
        "arc-seal",
    ];
    for (index, (name, raw)) in message.headers.iter().enumerate() {
        let Some(kind) = names.iter().position(|n| name.eq_ignore_ascii_case(n)) else {
            continue;
        };
        let Some(instance) = instance(&field_value(raw)) else {
            return Chain::Fail(format!("{name} without a valid i="));
        };
        if instance == 0 || instance > MAX_SETS {
            return Chain::Fail(format!("{name} with i={instance}"));
        }
        if found.len() < instance {
            found.resize(instance, [None; 3]);
        }
        if found[instance - 1][kind].replace(index).is_some() {
            return Chain::Fail(format!("two {name} headers with i={instance}"));
        }
    }
    if found.is_empty() {
        return Chain::None;
    }
    let mut sets = Vec::with_capacity(found.len());
    for (n, set) in found.iter().enumerate() {
        match set {
            [Some(aar), Some(ams), Some(seal)] => sets.push([*aar, *ams, *seal]),
            _ => return Chain::Fail(format!("ARC set i={} is incomplete", n + 1)),
        }
    }
    for (n, set) in sets.iter().enumerate() {
        let seal = dkim::tags(&field_value(&message.headers[set[2]].1));
        let cv = seal
            .iter()
            .find(|(k, _)| k == "cv")
            .map(|(_, v)| v.to_ascii_lowercase());
        let expected = if n == 0 { "none" } else { "pass" };
        if cv.as_deref() != Some(expected) {
            return Chain::Fail(format!(
                "ARC-Seal i={} has cv={} (expected {expected})",
                n + 1,
                cv.as_deref().unwrap_or("missing")
            ));
        }
    }
    Chain::Sets(sets)
}

/// The `i=` of an ARC header: in ARC-Authentication-Results it comes first, before the
/// authserv-id; in the signatures it is a tag.
fn instance(value: &str) -> Option<usize> {
    value.split(';').find_map(|part| {
        let (name, v) = part.split_once('=')?;
        (name.trim() == "i")
            .then(|| v.trim().parse().ok())
            .flatten()
    })
}

/// What an Authentication-Results (or ARC-Authentication-Results) header says passed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Results {
    pub authserv_id: String,
    /// Domains of `dkim=pass` results (`header.d`, or the domain of `header.i`).
    pub dkim_pass: Vec<String>,
    /// `header.from` of `dmarc=pass` results.
    pub dmarc_pass: Vec<String>,
}

pub fn results(value: &str) -> Results {
    let uncommented = strip_comments(value);
    let mut parts = uncommented.split(';').map(str::trim);
    let mut first = parts.next().unwrap_or_default();
    if first.starts_with("i=") {
        first = parts.next().unwrap_or_default();
    }
    let mut out = Results {
        authserv_id: first
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned(),
        ..Results::default()
    };
    for resinfo in parts {
        let mut words = resinfo.split_whitespace();
        let Some((method, result)) = words.next().and_then(|w| w.split_once('=')) else {
            continue;
        };
        if !result.eq_ignore_ascii_case("pass") {
            continue;
        }
        let props: Vec<(String, String)> = words
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| {
                (
                    k.to_ascii_lowercase(),
                    v.trim_matches('"').to_ascii_lowercase(),
                )
            })
            .collect();
        let prop = |name: &str| {
            props
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        match method.to_ascii_lowercase().as_str() {
            "dkim" => {
                let domain = prop("header.d").or_else(|| {
                    prop("header.i").map(|i| i.rsplit('@').next().unwrap_or_default().to_owned())
                });
                out.dkim_pass.extend(domain.filter(|d| !d.is_empty()));
            }
            "dmarc" => out.dmarc_pass.extend(prop("header.from")),
            _ => {}
        }
    }
    out
}

fn strip_comments(value: &str) -> String {
    let mut depth = 0usize;
    value
        .chars()
        .filter(|&c| match c {
            '(' => {
                depth += 1;
                false
            }
            ')' => {
                depth = depth.saturating_sub(1);
                false
            }
            _ => depth == 0,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gmail_shaped_results_are_read() {
        let r = results(
            " i=1; mx.google.com;\r\n       dkim=pass header.i=@venmo.com header.s=yzlavq3ml4jl4lt6dltbgmnoftxftkly header.b=Hc1T3cqv;\r\n       spf=pass (google.com: domain of venmo@venmo.com designates 1.2.3.4 as permitted sender; ok) smtp.mailfrom=venmo@venmo.com;\r\n       dmarc=pass (p=REJECT sp=REJECT dis=NONE) header.from=venmo.com",
        );
        assert_eq!(r.authserv_id, "mx.google.com");
        assert_eq!(r.dkim_pass, vec!["venmo.com"]);
        assert_eq!(r.dmarc_pass, vec!["venmo.com"]);
        let failed = results("i=1; mx.google.com; dkim=fail header.d=venmo.com; dmarc=none");
        assert!(failed.dkim_pass.is_empty() && failed.dmarc_pass.is_empty());
    }
}

//! DKIM (RFC 6376, RFC 8301, RFC 8463) and the signature half of ARC (RFC 8617), verified in two
//! steps so no thread waits on DNS while holding the message: [`prepare`] does the hashing
//! (canonicalization, body hash, header hash) synchronously, then the key is looked up and the
//! signature checked against the prepared hash ([`Prepared::verify`]).
//!
//! Accepted: `rsa-sha256` (keys of at least 1024 bits) and `ed25519-sha256`; `simple` and
//! `relaxed` canonicalization. `rsa-sha1` is refused (RFC 8301). A signature whose `l=` leaves
//! part of the body unsigned fails: text appended after the signed part could carry an amount.

use base64::Engine as _;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use serde::Serialize;
use sha2::{Digest, Sha256};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A message split into header fields (raw, with folding, without the final CRLF) and body.
/// Line ends are CRLF: bare LFs (common once mail has passed through HTTP) are made CRLF first.
pub struct Message {
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Message {
    pub fn split(raw: &[u8]) -> Message {
        let raw = crlf(raw);
        let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
        let mut at = 0;
        let body_start;
        loop {
            let Some(line_end) = find_crlf(&raw[at..]).map(|i| at + i) else {
                // No blank line: all header, no body.
                if at < raw.len() {
                    push_line(&mut headers, &raw[at..]);
                }
                body_start = raw.len();
                break;
            };
            let line = &raw[at..line_end];
            if line.is_empty() {
                body_start = line_end + 2;
                break;
            }
            push_line(&mut headers, line);
            at = line_end + 2;
        }
        Message {
            headers,
            body: raw[body_start..].to_vec(),
        }
    }

    /// Header fields named `name` (any case), top to bottom.
    pub fn fields<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, raw)| raw.as_slice())
    }
}

fn push_line(headers: &mut Vec<(String, Vec<u8>)>, line: &[u8]) {
    match (line.first(), headers.last_mut()) {
        (Some(b' ' | b'\t'), Some((_, raw))) => {
            raw.extend_from_slice(b"\r\n");
            raw.extend_from_slice(line);
        }
        _ => {
            let name = line
                .iter()
                .position(|&b| b == b':')
                .map(|i| String::from_utf8_lossy(&line[..i]).trim().to_owned())
                .unwrap_or_default();
            headers.push((name, line.to_vec()));
        }
    }
}

fn find_crlf(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\r\n")
}

fn crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 40);
    let mut prev = 0u8;
    for &b in raw {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

/// The value of a raw header field: what follows the first colon.
pub fn field_value(raw: &[u8]) -> String {
    let colon = raw.iter().position(|&b| b == b':').map_or(0, |i| i + 1);
    String::from_utf8_lossy(&raw[colon..]).into_owned()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Canon {
    Simple,
    Relaxed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    RsaSha256,
    Ed25519Sha256,
}

/// `tag=value; ...` as RFC 6376 3.2 writes it, whitespace removed around names and values.
pub fn tags(value: &str) -> Vec<(String, String)> {
    value
        .split(';')
        .filter_map(|part| {
            let (name, value) = part.split_once('=')?;
            Some((name.trim().to_owned(), value.trim().to_owned()))
        })
        .collect()
}

fn tag<'a>(tags: &'a [(String, String)], name: &str) -> Option<&'a str> {
    tags.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn without_whitespace(value: &str) -> String {
    value.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Which kind of signature a header field is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `DKIM-Signature`.
    Dkim,
    /// `ARC-Message-Signature`: a DKIM signature with `i=` the ARC instance and no `v=`.
    ArcMessage,
}

/// A signature with its hashes computed, waiting for its key.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub domain: String,
    pub selector: String,
    /// The `i=` tag: an identity for DKIM, the instance number for ARC.
    pub identity: Option<String>,
    algorithm: Algorithm,
    signature: Vec<u8>,
    /// SHA-256 of the canonicalized header fields that are signed.
    pub(crate) header_hash: Vec<u8>,
    /// Whether the body hash (`bh=`) matched the body.
    body_ok: Result<(), String>,
}

/// A signature we could not even check: its reason, and the domain it names if readable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unusable {
    pub domain: Option<String>,
    pub reason: String,
}

impl Prepared {
    /// The DNS name of the key.
    pub fn key_name(&self) -> String {
        format!("{}._domainkey.{}", self.selector, self.domain)
    }

    /// Checks the signature with the key record found at [`Prepared::key_name`].
    pub fn verify(&self, records: &[String]) -> Result<(), String> {
        self.body_ok.clone()?;
        let record = records
            .iter()
            .find(|r| r.contains("p="))
            .ok_or("the key record has no p= tag")?;
        let key_tags = tags(record);
        if tag(&key_tags, "v").is_some_and(|v| v != "DKIM1") {
            return Err("the key record is not v=DKIM1".into());
        }
        let key_type = tag(&key_tags, "k").unwrap_or("rsa");
        let key = B64
            .decode(without_whitespace(tag(&key_tags, "p").unwrap_or_default()))
            .map_err(|_| "the key record's p= is not base64")?;
        if key.is_empty() {
            return Err("the key has been revoked (empty p=)".into());
        }
        if let Some(hashes) = tag(&key_tags, "h") {
            if !hashes.split(':').any(|h| h.trim() == "sha256") {
                return Err("the key record does not allow sha256".into());
            }
        }
        match (self.algorithm, key_type) {
            (Algorithm::RsaSha256, "rsa") => {
                let key = rsa::RsaPublicKey::from_public_key_der(&key)
                    .or_else(|_| rsa::RsaPublicKey::from_pkcs1_der(&key))
                    .map_err(|_| "the key record's RSA key is unreadable")?;
                if rsa::traits::PublicKeyParts::size(&key) * 8 < 1024 {
                    return Err("the RSA key is shorter than 1024 bits".into());
                }
                key.verify(
                    rsa::Pkcs1v15Sign::new::<Sha256>(),
                    &self.header_hash,
                    &self.signature,
                )
                .map_err(|_| "signature does not verify (headers changed?)".into())
            }
            (Algorithm::Ed25519Sha256, "ed25519") => {
                let key: [u8; 32] = key
                    .as_slice()
                    .try_into()
                    .map_err(|_| "the ed25519 key is not 32 bytes")?;
                let key = ed25519_dalek::VerifyingKey::from_bytes(&key)
                    .map_err(|_| "the ed25519 key is invalid")?;
                let signature = ed25519_dalek::Signature::from_slice(&self.signature)
                    .map_err(|_| "the ed25519 signature is not 64 bytes")?;
                key.verify_strict(&self.header_hash, &signature)
                    .map_err(|_| "signature does not verify (headers changed?)".into())
            }
            (_, other) => Err(format!(
                "key type {other} does not match the signature's a="
            )),
        }
    }
}

/// Hashes the signature in header field `index` of `message` (a `DKIM-Signature` or an
/// `ARC-Message-Signature`).
pub fn prepare(message: &Message, index: usize, kind: Kind) -> Result<Prepared, Unusable> {
    let raw = &message.headers[index].1;
    let value = field_value(raw);
    let t = tags(&value);
    let domain = tag(&t, "d").map(|d| d.trim_end_matches('.').to_ascii_lowercase());
    let unusable = |reason: &str| Unusable {
        domain: domain.clone(),
        reason: reason.to_owned(),
    };
    if kind == Kind::Dkim && tag(&t, "v") != Some("1") {
        return Err(unusable("not v=1"));
    }
    let algorithm = match tag(&t, "a") {
        Some("rsa-sha256") => Algorithm::RsaSha256,
        Some("ed25519-sha256") => Algorithm::Ed25519Sha256,
        Some("rsa-sha1") => return Err(unusable("rsa-sha1 is not accepted (RFC 8301)")),
        _ => return Err(unusable("unknown or missing a=")),
    };
    let Some(domain_name) = domain.clone().filter(|d| d.contains('.')) else {
        return Err(unusable("missing or invalid d="));
    };
    let selector = tag(&t, "s")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| unusable("missing s="))?
        .to_ascii_lowercase();
    let signed: Vec<String> = tag(&t, "h")
        .ok_or_else(|| unusable("missing h="))?
        .split(':')
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    if !signed.iter().any(|h| h == "from") {
        return Err(unusable("h= does not sign From"));
    }
    let identity = tag(&t, "i").map(str::to_owned);
    if kind == Kind::Dkim {
        if let Some(i) = &identity {
            let i_domain = i
                .rsplit('@')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            if !super::within(&i_domain, &domain_name) {
                return Err(unusable("i= is not within d="));
            }
        }
        if let Some(expires) = tag(&t, "x").and_then(|x| x.parse::<i64>().ok()) {
            if expires < chrono::Utc::now().timestamp() {
                return Err(unusable("the signature has expired (x=)"));
            }
        }
    }
    let (header_canon, body_canon) = match tag(&t, "c").unwrap_or("simple/simple") {
        "simple" | "simple/simple" => (Canon::Simple, Canon::Simple),
        "simple/relaxed" => (Canon::Simple, Canon::Relaxed),
        "relaxed" | "relaxed/simple" => (Canon::Relaxed, Canon::Simple),
        "relaxed/relaxed" => (Canon::Relaxed, Canon::Relaxed),
        _ => return Err(unusable("unknown c=")),
    };
    let signature = B64
        .decode(without_whitespace(
            tag(&t, "b").ok_or_else(|| unusable("missing b="))?,
        ))
        .map_err(|_| unusable("b= is not base64"))?;
    let body_hash = B64
        .decode(without_whitespace(
            tag(&t, "bh").ok_or_else(|| unusable("missing bh="))?,
        ))
        .map_err(|_| unusable("bh= is not base64"))?;

    let body = canonical_body(&message.body, body_canon);
    let body_ok = match tag(&t, "l").map(str::parse::<usize>) {
        None => Ok(&body[..]),
        Some(Ok(l)) if l == body.len() => Ok(&body[..]),
        Some(Ok(l)) if l < body.len() => Err(format!(
            "l={l} signs only part of the body ({} bytes)",
            body.len()
        )),
        Some(Ok(l)) => Err(format!("l={l} is longer than the body")),
        Some(Err(_)) => Err("l= is not a number".to_owned()),
    }
    .and_then(|signed_body| {
        if Sha256::digest(signed_body).as_slice() == body_hash.as_slice() {
            Ok(())
        } else {
            Err("body hash does not match (body changed?)".to_owned())
        }
    });

    let mut hasher = Sha256::new();
    // Each name takes the next instance from the bottom; a missing one signs nothing.
    let mut used = vec![false; message.headers.len()];
    for name in &signed {
        let found = message
            .headers
            .iter()
            .enumerate()
            .rev()
            .find(|(i, (n, _))| !used[*i] && *i != index && n.eq_ignore_ascii_case(name));
        if let Some((i, (_, field))) = found {
            used[i] = true;
            hasher.update(canonical_header(field, header_canon));
            hasher.update(b"\r\n");
        }
    }
    hasher.update(canonical_header(&without_b(raw), header_canon));
    Ok(Prepared {
        domain: domain_name,
        selector,
        identity,
        algorithm,
        signature,
        header_hash: hasher.finalize().to_vec(),
        body_ok,
    })
}

/// The hash an `ARC-Seal` signs (RFC 8617 5.1.1): every ARC set up to its own, oldest first, each
/// as ARC-Authentication-Results, ARC-Message-Signature, ARC-Seal, relaxed; the seal's own `b=`
/// emptied.
pub fn prepare_seal(
    message: &Message,
    sets: &[[usize; 3]],
    instance_index: usize,
) -> Result<Prepared, Unusable> {
    let seal = &message.headers[sets[instance_index][2]].1;
    let t = tags(&field_value(seal));
    let domain = tag(&t, "d").map(|d| d.trim_end_matches('.').to_ascii_lowercase());
    let unusable = |reason: &str| Unusable {
        domain: domain.clone(),
        reason: reason.to_owned(),
    };
    let algorithm = match tag(&t, "a") {
        Some("rsa-sha256") => Algorithm::RsaSha256,
        Some("ed25519-sha256") => Algorithm::Ed25519Sha256,
        _ => return Err(unusable("unknown or missing a=")),
    };
    let domain_name = domain
        .clone()
        .filter(|d| d.contains('.'))
        .ok_or_else(|| unusable("missing or invalid d="))?;
    let selector = tag(&t, "s")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| unusable("missing s="))?
        .to_ascii_lowercase();
    let signature = B64
        .decode(without_whitespace(
            tag(&t, "b").ok_or_else(|| unusable("missing b="))?,
        ))
        .map_err(|_| unusable("b= is not base64"))?;
    let mut hasher = Sha256::new();
    for (n, set) in sets.iter().enumerate().take(instance_index + 1) {
        for (position, &field) in set.iter().enumerate() {
            let raw = &message.headers[field].1;
            if n == instance_index && position == 2 {
                hasher.update(canonical_header(&without_b(raw), Canon::Relaxed));
            } else {
                hasher.update(canonical_header(raw, Canon::Relaxed));
                hasher.update(b"\r\n");
            }
        }
    }
    Ok(Prepared {
        domain: domain_name,
        selector,
        identity: tag(&t, "i").map(str::to_owned),
        algorithm,
        signature,
        header_hash: hasher.finalize().to_vec(),
        body_ok: Ok(()),
    })
}

/// The header field with its `b=` tag's value removed (whitespace and all), everything else
/// exactly as it was.
fn without_b(raw: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(raw);
    let colon = text.find(':').map_or(0, |i| i + 1);
    let (name, value) = text.split_at(colon);
    let parts: Vec<String> = value
        .split(';')
        .map(|part| match part.split_once('=') {
            Some((tag_name, _)) if tag_name.trim() == "b" => format!("{tag_name}="),
            _ => part.to_owned(),
        })
        .collect();
    format!("{name}{}", parts.join(";")).into_bytes()
}

/// A header field canonicalized, without its line end.
fn canonical_header(raw: &[u8], canon: Canon) -> Vec<u8> {
    match canon {
        Canon::Simple => raw.to_vec(),
        Canon::Relaxed => {
            let colon = raw.iter().position(|&b| b == b':').unwrap_or(raw.len());
            let name = String::from_utf8_lossy(&raw[..colon])
                .trim()
                .to_ascii_lowercase();
            let mut out = name.into_bytes();
            out.push(b':');
            let value = raw.get(colon + 1..).unwrap_or_default();
            let mut pending_space = false;
            for &b in value {
                match b {
                    b'\r' | b'\n' => {}
                    b' ' | b'\t' => pending_space = true,
                    _ => {
                        if pending_space && out.last() != Some(&b':') {
                            out.push(b' ');
                        }
                        pending_space = false;
                        out.push(b);
                    }
                }
            }
            out
        }
    }
}

pub(crate) fn canonical_body(body: &[u8], canon: Canon) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = body
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line).to_vec())
        .collect();
    // A body ending in CRLF splits into a last, empty piece that is not a line.
    if body.ends_with(b"\n") {
        lines.pop();
    }
    if canon == Canon::Relaxed {
        for line in &mut lines {
            let mut out = Vec::with_capacity(line.len());
            let mut pending_space = false;
            for &b in line.iter() {
                if b == b' ' || b == b'\t' {
                    pending_space = true;
                } else {
                    if pending_space {
                        out.push(b' ');
                    }
                    pending_space = false;
                    out.push(b);
                }
            }
            *line = out;
        }
    }
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    if lines.is_empty() {
        return match canon {
            Canon::Simple => b"\r\n".to_vec(),
            Canon::Relaxed => Vec::new(),
        };
    }
    let mut out = Vec::with_capacity(body.len());
    for line in lines {
        out.extend_from_slice(&line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_canonicalization_follows_rfc_6376_examples() {
        // RFC 6376 3.4.5.
        let body = b" C \r\nD \t E\r\n\r\n\r\n";
        assert_eq!(canonical_body(body, Canon::Relaxed), b" C\r\nD E\r\n");
        assert_eq!(canonical_body(body, Canon::Simple), b" C \r\nD \t E\r\n");
        assert_eq!(canonical_body(b"", Canon::Simple), b"\r\n");
        assert_eq!(canonical_body(b"\r\n\r\n", Canon::Relaxed), b"");
        assert_eq!(canonical_body(b"no end", Canon::Simple), b"no end\r\n");
    }

    #[test]
    fn header_canonicalization_follows_rfc_6376_examples() {
        assert_eq!(canonical_header(b"A: X", Canon::Relaxed), b"a:X".to_vec());
        assert_eq!(
            canonical_header(b"B : Y\t\r\n\tZ  ", Canon::Relaxed),
            b"b:Y Z".to_vec()
        );
        assert_eq!(
            canonical_header(b"B : Y\t\r\n\tZ  ", Canon::Simple),
            b"B : Y\t\r\n\tZ  ".to_vec()
        );
    }

    #[test]
    fn b_tag_value_is_emptied_but_bh_is_kept() {
        assert_eq!(
            without_b(b"DKIM-Signature: v=1; bh=abc=; b=sig\r\n nature; d=x.com"),
            b"DKIM-Signature: v=1; bh=abc=; b=; d=x.com".to_vec()
        );
    }

    #[test]
    fn messages_split_with_folded_headers_and_bare_lf() {
        let m = Message::split(b"A: 1\n  more\nB: 2\n\nbody\n");
        assert_eq!(m.headers.len(), 2);
        assert_eq!(m.headers[0].1, b"A: 1\r\n  more".to_vec());
        assert_eq!(m.body, b"body\r\n".to_vec());
    }
}

//! Verifying who sent a request, before anything else looks at it.
//!
//! Each scheme is a `Verifier`; configuration picks one per route or webhook plugin. Secrets are
//! compared in constant time (over SHA-256 digests, so lengths do not leak either) and never
//! appear in errors or logs.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::settings::{HookAuth, Secret, SignatureEncoding};

/// What a verifier may look at: request headers (names lowercased), the query string, the body.
pub struct Request<'a> {
    pub headers: &'a [(String, String)],
    pub query: &'a str,
    pub body: &'a [u8],
    /// Seconds since the Unix epoch, for timestamp tolerance.
    pub now: i64,
}

impl Request<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn query_param(&self, name: &str) -> Option<String> {
        serde_urlencoded::from_str::<Vec<(String, String)>>(self.query)
            .ok()?
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing credentials: {0}")]
    Missing(String),
    #[error("invalid credentials")]
    Invalid,
    #[error("invalid signature")]
    BadSignature,
    #[error("timestamp outside the allowed window of {0} seconds")]
    Stale(i64),
    #[error("this signed request was already received (replay)")]
    Replayed,
    #[error("not configured: {0}")]
    NotConfigured(String),
}

pub trait Verifier: Send + Sync {
    fn verify(&self, request: &Request<'_>) -> Result<(), AuthError>;
}

/// Compares two secrets in constant time, whatever their lengths.
pub fn secrets_match(given: &[u8], expected: &[u8]) -> bool {
    let a = Sha256::digest(given);
    let b = Sha256::digest(expected);
    bool::from(a.ct_eq(&b)) && !expected.is_empty()
}

/// `Authorization: Bearer <token>`, or basic auth whose password is the token (for providers that
/// can only put credentials in the URL).
pub struct BearerToken(pub Secret);

impl Verifier for BearerToken {
    fn verify(&self, request: &Request<'_>) -> Result<(), AuthError> {
        let given = match authorization(request)? {
            Authorization::Bearer(token) => token,
            Authorization::Basic { password, .. } => password,
        };
        if secrets_match(given.as_bytes(), self.0.expose().as_bytes()) {
            Ok(())
        } else {
            Err(AuthError::Invalid)
        }
    }
}

/// HTTP basic auth with a fixed user name and password.
pub struct BasicAuth {
    pub username: String,
    pub password: Secret,
}

impl Verifier for BasicAuth {
    fn verify(&self, request: &Request<'_>) -> Result<(), AuthError> {
        match authorization(request)? {
            Authorization::Basic { username, password } => {
                // Both compared, always, so timing says nothing about which one was wrong.
                let user_ok = secrets_match(username.as_bytes(), self.username.as_bytes());
                let pass_ok = secrets_match(password.as_bytes(), self.password.expose().as_bytes());
                if user_ok & pass_ok {
                    Ok(())
                } else {
                    Err(AuthError::Invalid)
                }
            }
            Authorization::Bearer(_) => Err(AuthError::Missing("basic auth credentials".into())),
        }
    }
}

enum Authorization {
    Bearer(String),
    Basic { username: String, password: String },
}

fn authorization(request: &Request<'_>) -> Result<Authorization, AuthError> {
    let value = request
        .header("authorization")
        .ok_or_else(|| AuthError::Missing("Authorization header".into()))?
        .trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        return Ok(Authorization::Bearer(rest.to_owned()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| AuthError::Invalid)?;
        let decoded = String::from_utf8(decoded).map_err(|_| AuthError::Invalid)?;
        let (username, password) = decoded.split_once(':').ok_or(AuthError::Invalid)?;
        return Ok(Authorization::Basic {
            username: username.to_owned(),
            password: password.to_owned(),
        });
    }
    Err(AuthError::Missing("Bearer or Basic credentials".into()))
}

/// A shared secret in a named header.
pub struct HeaderSecret {
    pub header: String,
    pub secret: Secret,
}

impl Verifier for HeaderSecret {
    fn verify(&self, request: &Request<'_>) -> Result<(), AuthError> {
        let given = request
            .header(&self.header)
            .ok_or_else(|| AuthError::Missing(format!("{} header", self.header)))?;
        if secrets_match(given.trim().as_bytes(), self.secret.expose().as_bytes()) {
            Ok(())
        } else {
            Err(AuthError::Invalid)
        }
    }
}

/// A shared secret in the URL's `secret` query parameter.
pub struct QuerySecret(pub Secret);

impl Verifier for QuerySecret {
    fn verify(&self, request: &Request<'_>) -> Result<(), AuthError> {
        let given = request
            .query_param("secret")
            .ok_or_else(|| AuthError::Missing("secret query parameter".into()))?;
        if secrets_match(given.as_bytes(), self.0.expose().as_bytes()) {
            Ok(())
        } else {
            Err(AuthError::Invalid)
        }
    }
}

/// HMAC-SHA256 over the body, or over `id.timestamp.body` / `timestamp.body` when the sender
/// signs a timestamp.
pub struct HmacSignature {
    pub header: String,
    pub secret: Secret,
    pub encoding: SignatureEncoding,
    pub prefix: String,
    pub timestamp_header: Option<String>,
    pub id_header: Option<String>,
    pub tolerance_secs: i64,
}

impl Verifier for HmacSignature {
    fn verify(&self, request: &Request<'_>) -> Result<(), AuthError> {
        let given = request
            .header(&self.header)
            .ok_or_else(|| AuthError::Missing(format!("{} header", self.header)))?
            .trim();
        let given = given
            .strip_prefix(self.prefix.as_str())
            .ok_or(AuthError::BadSignature)?;
        let given = decode_signature(given, self.encoding).ok_or(AuthError::BadSignature)?;
        let mut mac = hmac_sha256(self.secret.expose().as_bytes());
        if let Some(ts_header) = &self.timestamp_header {
            let timestamp = request
                .header(ts_header)
                .ok_or_else(|| AuthError::Missing(format!("{ts_header} header")))?
                .trim();
            check_timestamp(timestamp, request.now, self.tolerance_secs)?;
            if let Some(id_header) = &self.id_header {
                let id = request
                    .header(id_header)
                    .ok_or_else(|| AuthError::Missing(format!("{id_header} header")))?;
                mac.update(id.trim().as_bytes());
                mac.update(b".");
            }
            mac.update(timestamp.as_bytes());
            mac.update(b".");
        }
        mac.update(request.body);
        mac.verify_slice(&given)
            .map_err(|_| AuthError::BadSignature)
    }
}

/// The Standard Webhooks scheme (Svix and others).
pub struct StandardWebhooks {
    key: Vec<u8>,
    tolerance_secs: i64,
}

impl StandardWebhooks {
    /// `secret` is `whsec_<base64 key>` (the prefix is optional).
    pub fn new(secret: &Secret, tolerance_secs: i64) -> Result<Self, AuthError> {
        let encoded = secret
            .expose()
            .strip_prefix("whsec_")
            .unwrap_or(secret.expose());
        let key = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| AuthError::NotConfigured("the secret is not whsec_<base64>".into()))?;
        Ok(StandardWebhooks {
            key,
            tolerance_secs,
        })
    }
}

impl Verifier for StandardWebhooks {
    fn verify(&self, request: &Request<'_>) -> Result<(), AuthError> {
        let get = |name: &str| {
            request
                .header(name)
                .map(str::trim)
                .ok_or_else(|| AuthError::Missing(format!("{name} header")))
        };
        let id = get("webhook-id")?;
        let timestamp = get("webhook-timestamp")?;
        let signatures = get("webhook-signature")?;
        check_timestamp(timestamp, request.now, self.tolerance_secs)?;
        let mut mac = hmac_sha256(&self.key);
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(request.body);
        let expected = mac.finalize().into_bytes();
        // Several signatures, space-separated, during key rotation; any v1 match will do.
        let matched = signatures
            .split_whitespace()
            .filter_map(|s| s.strip_prefix("v1,"))
            .filter_map(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .any(|sig| bool::from(sig.ct_eq(expected.as_slice())));
        if matched {
            Ok(())
        } else {
            Err(AuthError::BadSignature)
        }
    }
}

/// Always passes: for sources configured with `scheme = "none"`.
pub struct NoAuth;

impl Verifier for NoAuth {
    fn verify(&self, _: &Request<'_>) -> Result<(), AuthError> {
        Ok(())
    }
}

/// Builds the verifier a webhook plugin's configuration asks for.
pub fn hook_verifier(
    auth: &HookAuth,
    ingest_token: &Secret,
) -> Result<Box<dyn Verifier>, AuthError> {
    Ok(match auth {
        HookAuth::Bearer => Box::new(BearerToken(ingest_token.clone())),
        HookAuth::Header { header, secret } => Box::new(HeaderSecret {
            header: header.clone(),
            secret: secret.clone(),
        }),
        HookAuth::Query { secret } => Box::new(QuerySecret(secret.clone())),
        HookAuth::Hmac {
            header,
            secret,
            encoding,
            prefix,
            timestamp_header,
            id_header,
            tolerance_secs,
        } => Box::new(HmacSignature {
            header: header.clone(),
            secret: secret.clone(),
            encoding: *encoding,
            prefix: prefix.clone(),
            timestamp_header: timestamp_header.clone(),
            id_header: id_header.clone(),
            tolerance_secs: *tolerance_secs,
        }),
        HookAuth::StandardWebhooks {
            secret,
            tolerance_secs,
        } => Box::new(StandardWebhooks::new(secret, *tolerance_secs)?),
        HookAuth::None => Box::new(NoAuth),
    })
}

/// Mailgun's scheme: hex HMAC-SHA256 of `timestamp + token` with the signing key. The body is not
/// covered, so the caller must also refuse replayed tokens.
pub fn verify_mailgun(
    signing_key: &Secret,
    timestamp: &str,
    token: &str,
    signature: &str,
    now: i64,
    max_age_secs: i64,
) -> Result<(), AuthError> {
    if signing_key.is_empty() {
        return Err(AuthError::NotConfigured("set mailgun.signing_key".into()));
    }
    check_timestamp(timestamp, now, max_age_secs)?;
    let given = hex_decode(signature.trim()).ok_or(AuthError::BadSignature)?;
    let mut mac = hmac_sha256(signing_key.expose().as_bytes());
    mac.update(timestamp.as_bytes());
    mac.update(token.as_bytes());
    mac.verify_slice(&given)
        .map_err(|_| AuthError::BadSignature)
}

fn hmac_sha256(key: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; this cannot fail.
    <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length")
}

fn check_timestamp(timestamp: &str, now: i64, tolerance: i64) -> Result<(), AuthError> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| AuthError::BadSignature)?;
    if (now - ts).abs() > tolerance {
        return Err(AuthError::Stale(tolerance));
    }
    Ok(())
}

fn decode_signature(text: &str, encoding: SignatureEncoding) -> Option<Vec<u8>> {
    match encoding {
        SignatureEncoding::Hex => hex_decode(text),
        SignatureEncoding::Base64 => base64::engine::general_purpose::STANDARD.decode(text).ok(),
    }
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Hex HMAC-SHA256, as senders compute it; used by tests and the load generator to sign requests.
pub fn hmac_sha256_hex(key: &[u8], parts: &[&[u8]]) -> String {
    let mut mac = hmac_sha256(key);
    for part in parts {
        mac.update(part);
    }
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(headers: &'a [(String, String)], query: &'a str, body: &'a [u8]) -> Request<'a> {
        Request {
            headers,
            query,
            body,
            now: 1_700_000_000,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn bearer_and_basic_with_the_ingest_token() {
        let v = BearerToken(Secret::new("0123456789abcdef"));
        let ok = headers(&[("authorization", "Bearer 0123456789abcdef")]);
        assert_eq!(v.verify(&request(&ok, "", b"")), Ok(()));
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("postmark:0123456789abcdef")
        );
        assert_eq!(
            v.verify(&request(&headers(&[("Authorization", &basic)]), "", b"")),
            Ok(())
        );
        let wrong = headers(&[("authorization", "Bearer 0123456789abcdeF")]);
        assert_eq!(v.verify(&request(&wrong, "", b"")), Err(AuthError::Invalid));
        assert!(matches!(
            v.verify(&request(&[], "", b"")),
            Err(AuthError::Missing(_))
        ));
        let garbage = headers(&[("authorization", "Basic !!!")]);
        assert_eq!(
            v.verify(&request(&garbage, "", b"")),
            Err(AuthError::Invalid)
        );
        // An unset token never matches an empty credential.
        let unset = BearerToken(Secret::default());
        let empty = headers(&[("authorization", "Basic Og==")]);
        assert_eq!(
            unset.verify(&request(&empty, "", b"")),
            Err(AuthError::Invalid)
        );
    }

    #[test]
    fn basic_auth_needs_both_parts() {
        let v = BasicAuth {
            username: "pm".into(),
            password: Secret::new("pw"),
        };
        let enc = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        assert_eq!(
            v.verify(&request(
                &headers(&[("authorization", &enc("pm:pw"))]),
                "",
                b""
            )),
            Ok(())
        );
        assert_eq!(
            v.verify(&request(
                &headers(&[("authorization", &enc("pm:px"))]),
                "",
                b""
            )),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            v.verify(&request(
                &headers(&[("authorization", &enc("px:pw"))]),
                "",
                b""
            )),
            Err(AuthError::Invalid)
        );
    }

    #[test]
    fn header_and_query_secrets() {
        let h = HeaderSecret {
            header: "X-Secret".into(),
            secret: Secret::new("s3cret"),
        };
        assert_eq!(
            h.verify(&request(&headers(&[("x-secret", "s3cret")]), "", b"")),
            Ok(())
        );
        assert_eq!(
            h.verify(&request(&headers(&[("x-secret", "nope")]), "", b"")),
            Err(AuthError::Invalid)
        );
        let q = QuerySecret(Secret::new("a b&c"));
        assert_eq!(q.verify(&request(&[], "x=1&secret=a+b%26c", b"")), Ok(()));
        assert_eq!(
            q.verify(&request(&[], "secret=a", b"")),
            Err(AuthError::Invalid)
        );
        assert!(matches!(
            q.verify(&request(&[], "", b"")),
            Err(AuthError::Missing(_))
        ));
    }

    #[test]
    fn hmac_over_body_and_over_id_timestamp_body() {
        let body = br#"{"a":1}"#;
        let sig = hmac_sha256_hex(b"key", &[body]);
        let v = HmacSignature {
            header: "x-up-authenticity-signature".into(),
            secret: Secret::new("key"),
            encoding: SignatureEncoding::Hex,
            prefix: String::new(),
            timestamp_header: None,
            id_header: None,
            tolerance_secs: 300,
        };
        assert_eq!(
            v.verify(&request(
                &headers(&[("X-Up-Authenticity-Signature", &sig)]),
                "",
                body
            )),
            Ok(())
        );
        assert_eq!(
            v.verify(&request(
                &headers(&[("X-Up-Authenticity-Signature", &sig)]),
                "",
                b"{}"
            )),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            v.verify(&request(
                &headers(&[("X-Up-Authenticity-Signature", "zz")]),
                "",
                body
            )),
            Err(AuthError::BadSignature)
        );

        let signed = hmac_sha256_hex(b"key", &[b"evt_1.1700000000.", body]);
        let raw = (0..signed.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&signed[i..i + 2], 16).unwrap())
            .collect::<Vec<u8>>();
        let v = HmacSignature {
            header: "x-sig".into(),
            secret: Secret::new("key"),
            encoding: SignatureEncoding::Base64,
            prefix: "sha256=".into(),
            timestamp_header: Some("x-ts".into()),
            id_header: Some("x-id".into()),
            tolerance_secs: 300,
        };
        let b64 = format!(
            "sha256={}",
            base64::engine::general_purpose::STANDARD.encode(&raw)
        );
        let good = headers(&[("x-sig", &b64), ("x-ts", "1700000000"), ("x-id", "evt_1")]);
        assert_eq!(v.verify(&request(&good, "", body)), Ok(()));
        let stale = headers(&[("x-sig", &b64), ("x-ts", "1699999000"), ("x-id", "evt_1")]);
        assert_eq!(
            v.verify(&request(&stale, "", body)),
            Err(AuthError::Stale(300))
        );
        let other_id = headers(&[("x-sig", &b64), ("x-ts", "1700000000"), ("x-id", "evt_2")]);
        assert_eq!(
            v.verify(&request(&other_id, "", body)),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn standard_webhooks_known_vector() {
        // The example from the Standard Webhooks specification.
        let secret = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let body = br#"{"test": 2432232314}"#;
        let v = StandardWebhooks::new(&secret, 300).unwrap();
        let mut req = request(&[], "", body);
        let h = headers(&[
            ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            ("webhook-timestamp", "1614265330"),
            (
                "webhook-signature",
                "v1,bad v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            ),
        ]);
        req.headers = &h;
        req.now = 1_614_265_330;
        assert_eq!(v.verify(&req), Ok(()));
        req.now += 301;
        assert_eq!(v.verify(&req), Err(AuthError::Stale(300)));
        assert!(StandardWebhooks::new(&Secret::new("whsec_***"), 300).is_err());
    }

    #[test]
    fn mailgun_signatures() {
        let key = Secret::new("key-123");
        let sig = hmac_sha256_hex(b"key-123", &[b"1700000000", b"tok"]);
        assert_eq!(
            verify_mailgun(&key, "1700000000", "tok", &sig, 1_700_000_100, 300),
            Ok(())
        );
        assert_eq!(
            verify_mailgun(&key, "1700000000", "tok2", &sig, 1_700_000_100, 300),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify_mailgun(&key, "1700000000", "tok", &sig, 1_700_001_000, 300),
            Err(AuthError::Stale(300))
        );
        assert!(matches!(
            verify_mailgun(&Secret::default(), "1", "t", "00", 1, 300),
            Err(AuthError::NotConfigured(_))
        ));
    }
}

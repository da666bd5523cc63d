//! Verifying who sent a request, before anything else looks at it.
//!
//! Each scheme is a `Verifier`; configuration picks one per route or webhook plugin. Secrets are
//! compared in constant time (over SHA-256 digests, so lengths do not leak either) and never
//! appear in errors or logs.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use rsa::signature::Verifier as _;
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

use crate::settings::{HookSettings, Secret, SignatureEncoding, VerifyParams, VerifyScheme};

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

/// Starling Bank's shared-secret webhook signature (its original "v1" webhooks):
/// `X-Hook-Signature` = base64(SHA-512(shared secret ‖ raw body)). Starling's own samples
/// (`starlingbank/api-samples`, `webhook-verification/v1-webhooks`) compute exactly this. Starling
/// has since moved to public-key signatures ([`StarlingPublicKeySignature`]); this remains for
/// webhooks still registered with a shared secret.
pub struct StarlingSignature {
    pub secret: Secret,
}

impl Verifier for StarlingSignature {
    fn verify(&self, request: &Request<'_>) -> Result<(), AuthError> {
        if self.secret.is_empty() {
            // SHA-512 of an empty secret and the body is something anyone can compute.
            return Err(AuthError::NotConfigured(
                "the Starling webhook shared secret is not set".into(),
            ));
        }
        let given = starling_signature_header(request)?;
        let mut hash = Sha512::new();
        hash.update(self.secret.expose().as_bytes());
        hash.update(request.body);
        let expected = hash.finalize();
        // Lengths are public (a SHA-512 digest); the bytes are compared in constant time.
        if bool::from(given.as_slice().ct_eq(expected.as_slice())) {
            Ok(())
        } else {
            Err(AuthError::BadSignature)
        }
    }
}

/// Starling Bank's public-key webhook signature ("v2" webhooks): `X-Hook-Signature` = base64 of an
/// RSA PKCS#1 v1.5 signature with SHA-512 (Java's `SHA512withRSA`) over the raw body, checked with
/// the public key the Starling developer portal shows for the application. Starling's samples
/// (`starlingbank/api-samples`, `webhook-verification/v2-webhooks`) verify exactly this.
pub struct StarlingPublicKeySignature {
    key: rsa::pkcs1v15::VerifyingKey<Sha512>,
}

impl StarlingPublicKeySignature {
    /// The key as the portal shows it (one base64 line of an X.509 SubjectPublicKeyInfo), or as a
    /// PEM `BEGIN PUBLIC KEY` / `BEGIN RSA PUBLIC KEY` block.
    pub fn from_public_key(key: &str) -> Result<Self, AuthError> {
        let key = rsa_public_key(key, "Starling webhook public key")?;
        Ok(StarlingPublicKeySignature {
            key: rsa::pkcs1v15::VerifyingKey::new(key),
        })
    }
}

impl Verifier for StarlingPublicKeySignature {
    fn verify(&self, request: &Request<'_>) -> Result<(), AuthError> {
        let given = starling_signature_header(request)?;
        let signature = rsa::pkcs1v15::Signature::try_from(given.as_slice())
            .map_err(|_| AuthError::BadSignature)?;
        self.key
            .verify(request.body, &signature)
            .map_err(|_| AuthError::BadSignature)
    }
}

fn starling_signature_header(request: &Request<'_>) -> Result<Vec<u8>, AuthError> {
    let value = request
        .header("x-hook-signature")
        .ok_or_else(|| AuthError::Missing("X-Hook-Signature header".into()))?;
    base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|_| AuthError::BadSignature)
}

/// bunq's callback signature: `X-Bunq-Server-Signature` = base64 of an RSA PKCS#1 v1.5 signature
/// with SHA-256 over the raw body, checked with the bunq server public key of the API installation
/// (`server_public_key` in the answer to `POST /installation`, a PEM `BEGIN PUBLIC KEY` block).
/// This is the body-only check of bunq's SDKs (`bunq/sdk_python`, `security.is_valid_response_body`).
pub struct BunqSignature {
    key: rsa::pkcs1v15::VerifyingKey<Sha256>,
}

impl BunqSignature {
    pub fn from_pem(pem: &str) -> Result<Self, AuthError> {
        let key = rsa_public_key(pem, "bunq server public key")?;
        Ok(BunqSignature {
            key: rsa::pkcs1v15::VerifyingKey::new(key),
        })
    }
}

impl Verifier for BunqSignature {
    fn verify(&self, request: &Request<'_>) -> Result<(), AuthError> {
        let value = request
            .header("x-bunq-server-signature")
            .ok_or_else(|| AuthError::Missing("X-Bunq-Server-Signature header".into()))?;
        let given = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .map_err(|_| AuthError::BadSignature)?;
        let signature = rsa::pkcs1v15::Signature::try_from(given.as_slice())
            .map_err(|_| AuthError::BadSignature)?;
        self.key
            .verify(request.body, &signature)
            .map_err(|_| AuthError::BadSignature)
    }
}

/// An RSA public key from a PEM block (SubjectPublicKeyInfo or PKCS#1) or bare base64 DER
/// (SubjectPublicKeyInfo). `what` names the key in the error; the key itself is public, but the
/// error still does not echo it.
fn rsa_public_key(text: &str, what: &str) -> Result<rsa::RsaPublicKey, AuthError> {
    use rsa::pkcs1::DecodeRsaPublicKey;
    use rsa::pkcs8::DecodePublicKey;

    let text = text.trim();
    let key = if text.contains("-----BEGIN RSA PUBLIC KEY-----") {
        rsa::RsaPublicKey::from_pkcs1_pem(text).ok()
    } else if text.contains("-----BEGIN") {
        rsa::RsaPublicKey::from_public_key_pem(text).ok()
    } else {
        let compact: String = text.split_whitespace().collect();
        base64::engine::general_purpose::STANDARD
            .decode(compact)
            .ok()
            .and_then(|der| rsa::RsaPublicKey::from_public_key_der(&der).ok())
    };
    key.ok_or_else(|| {
        AuthError::NotConfigured(format!("the {what} is not a readable RSA public key"))
    })
}

/// Always passes: for sources configured with `scheme = "none"`.
pub struct NoAuth;

impl Verifier for NoAuth {
    fn verify(&self, _: &Request<'_>) -> Result<(), AuthError> {
        Ok(())
    }
}

/// A source whose verification is missing a secret or key: refuses every request, saying what to
/// set, rather than stopping start-up (built-in plugins a user never configures stay harmless).
pub struct Unconfigured(pub String);

impl Verifier for Unconfigured {
    fn verify(&self, _: &Request<'_>) -> Result<(), AuthError> {
        Err(AuthError::NotConfigured(self.0.clone()))
    }
}

/// The verifier for webhook plugin `plugin`: what its rule file declares, overlaid by its
/// `[hooks.<plugin>]` settings (which alone hold secrets), bearer token when neither says.
/// Also returns the header carrying a shared secret, which must never be stored.
pub fn hook_verifier(
    plugin: &str,
    declared: Option<&VerifyParams>,
    configured: Option<&HookSettings>,
    ingest_token: &Secret,
) -> (Box<dyn Verifier>, Option<String>) {
    let default = HookSettings::default();
    let settings = configured.unwrap_or(&default);
    let params = settings.over(declared.unwrap_or(&VerifyParams::default()));
    let secret = settings.secret.clone();
    let key = |what: &str| {
        format!(
            "hooks.{plugin}.{what} (LM_INGEST__HOOKS__{}__{})",
            plugin.to_ascii_uppercase().replace('-', "_"),
            what.to_ascii_uppercase()
        )
    };
    let need_secret = || -> Result<Secret, Box<dyn Verifier>> {
        if secret.is_empty() {
            Err(Box::new(Unconfigured(format!("set {}", key("secret")))))
        } else {
            Ok(secret.clone())
        }
    };
    let header = params.header.clone();
    let need_header = |scheme: &str| {
        header.clone().ok_or_else(|| -> Box<dyn Verifier> {
            Box::new(Unconfigured(format!(
                "the {scheme} scheme needs a header: set {}",
                key("header")
            )))
        })
    };
    let public_key = || {
        settings
            .public_key
            .clone()
            .ok_or_else(|| -> Box<dyn Verifier> {
                Box::new(Unconfigured(format!("set {}", key("public_key"))))
            })
    };
    let tolerance = params.tolerance_secs.unwrap_or(300);
    let built: Result<Box<dyn Verifier>, Box<dyn Verifier>> = (|| {
        Ok(match params.scheme.unwrap_or(VerifyScheme::Bearer) {
            VerifyScheme::Bearer => {
                Box::new(BearerToken(ingest_token.clone())) as Box<dyn Verifier>
            }
            VerifyScheme::Header => Box::new(HeaderSecret {
                header: need_header("header")?,
                secret: need_secret()?,
            }),
            VerifyScheme::Query => Box::new(QuerySecret(need_secret()?)),
            VerifyScheme::Hmac => Box::new(HmacSignature {
                header: need_header("hmac")?,
                secret: need_secret()?,
                encoding: params.encoding.unwrap_or_default(),
                prefix: params.prefix.clone().unwrap_or_default(),
                timestamp_header: params.timestamp_header.clone(),
                id_header: params.id_header.clone(),
                tolerance_secs: tolerance,
            }),
            VerifyScheme::StandardWebhooks => {
                match StandardWebhooks::new(&need_secret()?, tolerance) {
                    Ok(v) => Box::new(v) as Box<dyn Verifier>,
                    Err(e) => Box::new(Unconfigured(format!("{}: {e}", key("secret")))),
                }
            }
            VerifyScheme::Starling => Box::new(StarlingSignature {
                secret: need_secret()?,
            }),
            VerifyScheme::StarlingRsa => {
                match StarlingPublicKeySignature::from_public_key(&public_key()?) {
                    Ok(v) => Box::new(v) as Box<dyn Verifier>,
                    Err(e) => Box::new(Unconfigured(format!("{}: {e}", key("public_key")))),
                }
            }
            VerifyScheme::Bunq => match BunqSignature::from_pem(&public_key()?) {
                Ok(v) => Box::new(v) as Box<dyn Verifier>,
                Err(e) => Box::new(Unconfigured(format!("{}: {e}", key("public_key")))),
            },
            VerifyScheme::None => Box::new(NoAuth),
        })
    })();
    let secret_header = match params.scheme {
        Some(VerifyScheme::Header) => params.header.map(|h| h.to_ascii_lowercase()),
        _ => None,
    };
    (
        built.unwrap_or_else(|unconfigured| unconfigured),
        secret_header,
    )
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
    // abs_diff: `now - ts` overflows for timestamps near i64::MIN (a panic in debug builds).
    if u64::try_from(tolerance).map_or(true, |t| now.abs_diff(ts) > t) {
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
    fn extreme_timestamps_are_stale_not_an_overflow() {
        // Regression (hostile-input test): `now - i64::MIN` overflowed and panicked.
        for ts in [i64::MIN, i64::MIN + 1, i64::MAX, -1] {
            assert!(matches!(
                check_timestamp(&ts.to_string(), 1_700_000_000, 300),
                Err(AuthError::Stale(300))
            ));
        }
        assert!(check_timestamp("1700000100", 1_700_000_000, 300).is_ok());
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

    // Starling's published v1 sample: the shared secret of its samples, body `{"key":"value"}`,
    // and the X-Hook-Signature its README sends (starlingbank/api-samples,
    // public-api-examples/webhook-verification).
    const STARLING_V1_SECRET: &str = "aaaaaaaa-aaaa-4aaa-aaaa-aaaaaaaaaaaa";
    const STARLING_V1_BODY: &[u8] = br#"{"key":"value"}"#;
    const STARLING_V1_SIGNATURE: &str =
        "HJszr9xjvi9+i/wG3PLbxev1aWnCCgNqDYtRgIR+dxs+c+CJvw+8s6vm/dVmQGxpLVM9Cwkr7wDjUfoFYtCNHQ==";

    #[test]
    fn starling_shared_secret_known_vector() {
        let v = StarlingSignature {
            secret: Secret::new(STARLING_V1_SECRET),
        };
        let good = headers(&[("X-Hook-Signature", STARLING_V1_SIGNATURE)]);
        assert_eq!(v.verify(&request(&good, "", STARLING_V1_BODY)), Ok(()));
        // The algorithm as documented, recomputed: base64(SHA-512(secret ‖ body)).
        let mut hash = Sha512::new();
        hash.update(STARLING_V1_SECRET.as_bytes());
        hash.update(STARLING_V1_BODY);
        assert_eq!(
            base64::engine::general_purpose::STANDARD.encode(hash.finalize()),
            STARLING_V1_SIGNATURE
        );
        // Surrounding whitespace in the header is tolerated.
        let padded = headers(&[("x-hook-signature", &format!(" {STARLING_V1_SIGNATURE} "))]);
        assert_eq!(v.verify(&request(&padded, "", STARLING_V1_BODY)), Ok(()));
    }

    #[test]
    fn starling_shared_secret_refuses_tampering_and_missing_parts() {
        let v = StarlingSignature {
            secret: Secret::new(STARLING_V1_SECRET),
        };
        let good = headers(&[("X-Hook-Signature", STARLING_V1_SIGNATURE)]);
        assert_eq!(
            v.verify(&request(&good, "", br#"{"key":"value2"}"#)),
            Err(AuthError::BadSignature),
            "a changed body"
        );
        let other = StarlingSignature {
            secret: Secret::new("bbbbbbbb-bbbb-4bbb-bbbb-bbbbbbbbbbbb"),
        };
        assert_eq!(
            other.verify(&request(&good, "", STARLING_V1_BODY)),
            Err(AuthError::BadSignature),
            "another secret"
        );
        assert!(matches!(
            v.verify(&request(&[], "", STARLING_V1_BODY)),
            Err(AuthError::Missing(_))
        ));
        for bad in ["not base64!", "", "AAAA"] {
            let h = headers(&[("X-Hook-Signature", bad)]);
            assert_eq!(
                v.verify(&request(&h, "", STARLING_V1_BODY)),
                Err(AuthError::BadSignature),
                "{bad:?}"
            );
        }
        // With no secret configured nothing passes, not even SHA-512 of the body alone.
        let unset = StarlingSignature {
            secret: Secret::default(),
        };
        let body_only =
            base64::engine::general_purpose::STANDARD.encode(Sha512::digest(STARLING_V1_BODY));
        let h = headers(&[("X-Hook-Signature", &body_only)]);
        assert!(matches!(
            unset.verify(&request(&h, "", STARLING_V1_BODY)),
            Err(AuthError::NotConfigured(_))
        ));
    }

    // Starling's published v2 sample (starlingbank/api-samples,
    // public-api-examples/webhook-verification/v2-webhooks/java/validator/README.md): the public
    // key as the developer portal shows it, a SHA512withRSA signature and its payload.
    const STARLING_V2_PUBLIC_KEY: &str = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAgIdCVYnz6JOFT7GGtjrMg4uaPRGGs5VlglSSd9i2i73zRp7AwZm8O/3LM5kPuPONOysJpdVSz9x6VGsRcaKkvMaOfYWYa6fe4l5IFiM8Z+WaL0WjIebdJOOjWxH3q/kW6KclwKBW0+2iNZPcZocllCOjPn/swp2MdhKLJOQkdB/1Q8Emxr6tsOlJkc2lWpXdtPHWUbBp31eF5/eDmuVCCBhTL76UyogQNgRV5qH2g/a2bNcNgTThR0PntXJLy2HLi9cEfXepevpoJM8HXNdaFwZV4pQUEzm3/jG7zI3isXnvtffG4uTIR8Q35yDrYeN8pX+zOAcnJYNbr9xdFEv7JQIDAQAB";
    const STARLING_V2_SIGNATURE: &str = "KDGgtd7VDeyvNdyafyXNVZM8l/0zohWze5UCt1N0mbzCZ1f23nYEgnLrFvTRYADnToat/axKOGeXjiOBWJh/FcPvcWParx8x5d35j2u76/UmRPKjo8jxtMspmN27WlPdtTRr9kqHdDHUg80/9z1qKuEcUfm4EQX52NOvozDMb4qyYorgxaFCwUwMdZNskArIBTeJBtULAOtJqnEGipKRtRjeU6j2xD2uNzc3Vcy3+tdImRfqbX6SkS44zgkcFua6xEc09qRnRvLd+bxjSIufQ/wU695Uej9AtFg7MlrRCUaEZ2SVkNcmOUdRP2q882Y9mWGDIXdk66QHCVfCVu7pog==";
    const STARLING_V2_BODY: &[u8] = br#"{"one":"Value","two":"Other"}"#;

    fn pem_wrap(base64_der: &str) -> String {
        let lines: Vec<&str> = base64_der
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            lines.join("\n")
        )
    }

    #[test]
    fn starling_public_key_known_vector() {
        let good = headers(&[("X-Hook-Signature", STARLING_V2_SIGNATURE)]);
        for key in [
            STARLING_V2_PUBLIC_KEY.to_owned(),
            pem_wrap(STARLING_V2_PUBLIC_KEY),
        ] {
            let v = StarlingPublicKeySignature::from_public_key(&key).unwrap();
            assert_eq!(v.verify(&request(&good, "", STARLING_V2_BODY)), Ok(()));
            assert_eq!(
                v.verify(&request(&good, "", br#"{"one":"Value","two":"other"}"#)),
                Err(AuthError::BadSignature),
                "a changed body"
            );
            assert!(matches!(
                v.verify(&request(&[], "", STARLING_V2_BODY)),
                Err(AuthError::Missing(_))
            ));
            for bad in ["%%%", "", "AAAA"] {
                let h = headers(&[("X-Hook-Signature", bad)]);
                assert_eq!(
                    v.verify(&request(&h, "", STARLING_V2_BODY)),
                    Err(AuthError::BadSignature),
                    "{bad:?}"
                );
            }
        }
        // A v1 (shared-secret) signature is no v2 signature.
        let v = StarlingPublicKeySignature::from_public_key(STARLING_V2_PUBLIC_KEY).unwrap();
        let v1 = headers(&[("X-Hook-Signature", STARLING_V1_SIGNATURE)]);
        assert_eq!(
            v.verify(&request(&v1, "", STARLING_V1_BODY)),
            Err(AuthError::BadSignature)
        );
        // A SHA-256 signature by the right key is not accepted for SHA-512.
        let sha256_verifier = BunqSignature::from_pem(&pem_wrap(STARLING_V2_PUBLIC_KEY)).unwrap();
        let h = headers(&[("X-Bunq-Server-Signature", STARLING_V2_SIGNATURE)]);
        assert_eq!(
            sha256_verifier.verify(&request(&h, "", STARLING_V2_BODY)),
            Err(AuthError::BadSignature)
        );
        assert!(matches!(
            StarlingPublicKeySignature::from_public_key("not a key"),
            Err(AuthError::NotConfigured(_))
        ));
    }

    // A throwaway key pair for tests only (`openssl genpkey -algorithm RSA -pkeyopt
    // rsa_keygen_bits:2048`, `openssl pkey -pubout`), standing in for bunq's server key.
    const TEST_RSA_PRIVATE_KEY: &str = include_str!("../tests/data/throwaway-rsa-2048.pem");
    const TEST_RSA_PUBLIC_KEY: &str = include_str!("../tests/data/throwaway-rsa-2048.pub.pem");
    const BUNQ_BODY: &[u8] = br#"{"NotificationUrl":{"category":"MUTATION"}}"#;
    // `openssl dgst -sha256 -sign` of BUNQ_BODY with the key above: a signature made by an
    // independent implementation of the documented algorithm.
    const BUNQ_OPENSSL_SIGNATURE: &str = "BdoldNI6hZR/TWgedb+Ja/itAaiwnA7HOHx0Wi1WgEtswBzs+yrKNnyHlaNCmI8EYST2zQIdpNulnNxyzYTuQ1ng0eDj+4gjCmiqEWDBsxSDwDUK7ehfRDA+aN417GRDV69VPAKUzoPi495SIpBBJfLI/xcnDD2MCriz/Id93EyjsFKb43wgc0iLXsKGGLdnrE95ZwgUWNlZHxPF27bJp/hbNK2tl7lkyULun2i+JgOFmif26sXrwxDvEY1PadsOzuFDjB0J5qlzRN7sM7bGyD7to35wAFrmPniZ7k6bFE94IpEkdViNtntBDRRJvFxmXzZFDmorujHGkoWXedtjaw==";

    fn bunq_sign(body: &[u8]) -> String {
        use rsa::pkcs8::DecodePrivateKey;
        use rsa::signature::{SignatureEncoding, Signer};
        let private = rsa::RsaPrivateKey::from_pkcs8_pem(TEST_RSA_PRIVATE_KEY).unwrap();
        let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(private);
        base64::engine::general_purpose::STANDARD.encode(signer.sign(body).to_bytes())
    }

    #[test]
    fn bunq_signature_over_the_body() {
        let v = BunqSignature::from_pem(TEST_RSA_PUBLIC_KEY).unwrap();
        let signed = bunq_sign(BUNQ_BODY);
        // PKCS#1 v1.5 is deterministic: the same as OpenSSL's.
        assert_eq!(signed, BUNQ_OPENSSL_SIGNATURE);
        let good = headers(&[("X-Bunq-Server-Signature", &signed)]);
        assert_eq!(v.verify(&request(&good, "", BUNQ_BODY)), Ok(()));
        let lower = headers(&[("x-bunq-server-signature", BUNQ_OPENSSL_SIGNATURE)]);
        assert_eq!(v.verify(&request(&lower, "", BUNQ_BODY)), Ok(()));

        let tampered = br#"{"NotificationUrl":{"category":"MUTATION "}}"#;
        assert_eq!(
            v.verify(&request(&good, "", tampered)),
            Err(AuthError::BadSignature)
        );
        let for_other_body = bunq_sign(tampered);
        let h = headers(&[("X-Bunq-Server-Signature", &for_other_body)]);
        assert_eq!(
            v.verify(&request(&h, "", BUNQ_BODY)),
            Err(AuthError::BadSignature)
        );
        assert!(matches!(
            v.verify(&request(&[], "", BUNQ_BODY)),
            Err(AuthError::Missing(_))
        ));
        for bad in ["***", "", "AAAA"] {
            let h = headers(&[("X-Bunq-Server-Signature", bad)]);
            assert_eq!(
                v.verify(&request(&h, "", BUNQ_BODY)),
                Err(AuthError::BadSignature),
                "{bad:?}"
            );
        }
        // Another key (Starling's sample key) does not verify bunq's signature.
        let other = BunqSignature::from_pem(&pem_wrap(STARLING_V2_PUBLIC_KEY)).unwrap();
        assert_eq!(
            other.verify(&request(&good, "", BUNQ_BODY)),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn bunq_key_must_be_a_public_key() {
        assert!(BunqSignature::from_pem(TEST_RSA_PUBLIC_KEY).is_ok());
        for bad in [
            "",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            TEST_RSA_PRIVATE_KEY,
        ] {
            assert!(
                matches!(
                    BunqSignature::from_pem(bad),
                    Err(AuthError::NotConfigured(_))
                ),
                "{bad:.30}"
            );
        }
    }
}

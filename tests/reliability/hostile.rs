//! Hostile input: a corpus of bad requests on every ingest route, sent while good traffic keeps
//! flowing. Each must get the right 4xx (or a 2xx whose reason is stored), the server must not
//! panic, must stay healthy, and every good request must succeed meanwhile.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use lm_ingest::verify::hmac_sha256_hex;
use serde_json::{json, Value};

use crate::child::ChildServer;
use crate::crash::message;
use crate::support::{basic, fixture, HMAC_SECRET, MAILGUN_KEY, QUERY_SECRET, TOKEN, WHSEC};
use crate::Scale;

/// Body limits of the server under test: small, so "past the limit" costs little to send.
const EMAIL_LIMIT: usize = 1 << 20;
const HOOK_LIMIT: usize = 64 << 10;

/// What a bad request must get.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// Exactly this status, with a JSON `reason`.
    Status(u16),
    /// Stored and reported: 400 `rejected` with the id it is stored under, or a 2xx whose reason
    /// is recorded (`unmatched`, `error`, `ignored`, or a `duplicate` of one).
    Recorded,
    /// Like `Recorded`, but what is left may still be a readable notification (a cut-short
    /// email whose cut falls after the part plugins read): a plain 2xx is right too.
    RecordedOrParsed,
}

struct Case {
    name: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Body,
    expect: Expect,
}

enum Body {
    Bytes(Vec<u8>),
    /// Sent with chunked transfer encoding: no `Content-Length` to refuse it by.
    Chunked(Vec<u8>),
}

fn bearer() -> Vec<(String, String)> {
    vec![("Authorization".into(), format!("Bearer {TOKEN}"))]
}

fn with(mut headers: Vec<(String, String)>, name: &str, value: &str) -> Vec<(String, String)> {
    headers.push((name.into(), value.into()));
    headers
}

fn case(
    name: impl Into<String>,
    path: &str,
    headers: Vec<(String, String)>,
    body: impl Into<Vec<u8>>,
    expect: Expect,
) -> Case {
    Case {
        name: name.into(),
        path: path.into(),
        headers,
        body: Body::Bytes(body.into()),
        expect,
    }
}

/// Hostile emails: (name, raw bytes, expectation when the bytes arrive intact).
fn bad_emails() -> Vec<(String, Vec<u8>, Expect)> {
    let venmo = fixture("old-you-paid.eml");
    let header =
        "From: Venmo <venmo@venmo.com>\r\nTo: a@example.com\r\nSubject: You paid Sam $5.00\r\n";
    let mut mails: Vec<(String, Vec<u8>, Expect)> = Vec::new();
    let mut add =
        |name: &str, bytes: Vec<u8>, expect: Expect| mails.push((name.to_owned(), bytes, expect));
    add("empty", Vec::new(), Expect::Recorded);
    add(
        "whitespace only",
        b" \r\n\t \r\n".to_vec(),
        Expect::Recorded,
    );
    add(
        "binary noise",
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect(),
        Expect::Recorded,
    );
    for percent in [3, 20, 50, 80, 97] {
        add(
            &format!("venmo cut at {percent}%"),
            venmo[..venmo.len() * percent / 100].to_vec(),
            Expect::RecordedOrParsed,
        );
    }
    add(
        "headers without a body separator",
        b"From: venmo@venmo.com\r\nSubject: x".to_vec(),
        Expect::Recorded,
    );
    add(
        "multipart without boundary",
        format!("{header}Content-Type: multipart/alternative\r\n\r\n--x\r\n\r\nhi\r\n--x--\r\n")
            .into_bytes(),
        Expect::Recorded,
    );
    add(
        "multipart with an empty boundary",
        format!(
            "{header}Content-Type: multipart/mixed; boundary=\"\"\r\n\r\n--\r\n\r\nhi\r\n----\r\n"
        )
        .into_bytes(),
        Expect::Recorded,
    );
    add("multipart never closed", format!("{header}Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nYou paid Sam $5.00").into_bytes(), Expect::Recorded);
    add("bad base64 part", format!("{header}Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!*** not base64 @@@\r\n===\r\n").into_bytes(), Expect::Recorded);
    add(
        "base64 with a 200 KB line",
        format!(
            "{header}Content-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            "QUJD".repeat(50_000)
        )
        .into_bytes(),
        Expect::Recorded,
    );
    add("bad quoted-printable", format!("{header}Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nAmount =ZZ=4 =\r\n=\r\n=E2=98\r\n=").into_bytes(), Expect::Recorded);
    add("unknown transfer encoding", format!("{header}Content-Type: text/plain\r\nContent-Transfer-Encoding: x-rot13\r\n\r\nLbh cnvq\r\n").into_bytes(), Expect::Recorded);
    add(
        "unknown body charset",
        [
            header.as_bytes(),
            b"Content-Type: text/plain; charset=x-klingon-9\r\n\r\nYou paid Sam \xff\xfe$5.00\r\n",
        ]
        .concat(),
        Expect::Recorded,
    );
    add("unknown charset in an encoded word", b"From: =?x-klingon?B?//79?= <venmo@venmo.com>\r\nSubject: =?x-unknown?Q?You_paid=FF?=\r\n\r\nhi\r\n".to_vec(), Expect::Recorded);
    add("malformed encoded words", b"From: =?utf-8?B?!!!?= <venmo@venmo.com>\r\nSubject: =?utf-8?Q?=ZZ?= =?utf-8?B?=?= =?\r\n\r\nhi\r\n".to_vec(), Expect::Recorded);
    add(
        "utf-7 and utf-16 charsets",
        [
            header.as_bytes(),
            b"Content-Type: text/plain; charset=utf-16\r\n\r\n\xff\xfeY\x00o\x00\xd8\x00\r\n",
        ]
        .concat(),
        Expect::Recorded,
    );
    for depth in [64, 1000, 5000] {
        let mut nested = header.to_owned();
        for d in 0..depth {
            nested.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=b{d}\r\n\r\n--b{d}\r\n"
            ));
        }
        nested.push_str("Content-Type: text/plain\r\n\r\nYou paid Sam $5.00\r\n");
        add(
            &format!("multiparts nested {depth} deep"),
            nested.into_bytes(),
            Expect::Recorded,
        );
    }
    let mut attached = String::new();
    for _ in 0..500 {
        attached.push_str("Content-Type: message/rfc822\r\n\r\nFrom: venmo@venmo.com\r\n");
    }
    add(
        "message/rfc822 nested 500 deep",
        format!("{header}{attached}\r\nYou paid\r\n").into_bytes(),
        Expect::Recorded,
    );
    let flood: String = (0..20_000)
        .map(|i| format!("X-Flood-{i}: {i}\r\n"))
        .collect();
    add(
        "20 000 headers",
        format!("{header}{flood}\r\nhi\r\n").into_bytes(),
        Expect::Recorded,
    );
    add(
        "one 600 KB header",
        format!("{header}X-Long: {}\r\n\r\nhi\r\n", "a".repeat(600_000)).into_bytes(),
        Expect::Recorded,
    );
    add(
        "a header folded 50 000 times",
        format!(
            "{header}X-Folded: a{}\r\n\r\nhi\r\n",
            "\r\n b".repeat(50_000)
        )
        .into_bytes(),
        Expect::Recorded,
    );
    add("invalid UTF-8 everywhere", b"From: \xff\xfe <venmo@venmo.com>\r\nSubject: \xc3\x28 You paid \xe2\x82\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nYou paid \xf0\x28\x8c\x28 $5.00\r\n".to_vec(), Expect::Recorded);
    add(
        "NUL bytes",
        format!("{header}\r\nYou\0 paid\0\0 Sam\0 $5.00\0\r\n").into_bytes(),
        Expect::Recorded,
    );
    add(
        "bare CR line ends",
        header
            .replace("\r\n", "\r")
            .into_bytes()
            .into_iter()
            .chain(b"\rbody\r".iter().copied())
            .collect(),
        Expect::Recorded,
    );
    add(
        "garbage Date and From",
        b"From: <<<@@@>>>\r\nDate: Feb 30 99999 25:61:61 +9999\r\nSubject: You paid\r\n\r\nhi\r\n"
            .to_vec(),
        Expect::Recorded,
    );
    add(
        "an HTML bomb",
        format!(
            "{header}Content-Type: text/html\r\n\r\n{}You paid{}\r\n",
            "<div><table><tr><td>".repeat(20_000),
            "</td></tr></table></div>".repeat(20_000)
        )
        .into_bytes(),
        Expect::Recorded,
    );
    add("a forward with a garbage original", b"From: me@example.com\r\nSubject: Fwd: x\r\n\r\n---------- Forwarded message ---------\r\nFrom: \xff venmo@venmo.com\r\nDate: not a date\r\nSubject: =?x?Q?\r\n\r\n$$$ -0.00 $".to_vec(), Expect::Recorded);
    add("a venmo notification with amounts that are not money", format!("{header}Content-Type: text/plain\r\n\r\nYou paid Sam\r\n\r\n$99999999999999999999999999999999.999\r\n\r\nPayment ID: 1\r\n").into_bytes(), Expect::RecordedOrParsed);
    mails
}

fn multipart(fields: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--HOSTILE\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"--HOSTILE--\r\n");
    ("multipart/form-data; boundary=HOSTILE".into(), body)
}

/// A signed Mailgun form around `fields`, with a token of its own.
fn mailgun(fields: &[(&str, &[u8])], token: &str) -> (String, Vec<u8>) {
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let signature = hmac_sha256_hex(
        MAILGUN_KEY.as_bytes(),
        &[timestamp.as_bytes(), token.as_bytes()],
    );
    let mut all: Vec<(&str, &[u8])> = vec![
        ("timestamp", timestamp.as_bytes()),
        ("token", token.as_bytes()),
        ("signature", signature.as_bytes()),
    ];
    all.extend_from_slice(fields);
    multipart(&all)
}

fn postmark_auth() -> Vec<(String, String)> {
    vec![("Authorization".into(), basic("postmark", "pm-password"))]
}

fn sendgrid_auth() -> Vec<(String, String)> {
    vec![("Authorization".into(), basic("sendgrid", TOKEN))]
}

fn standard_webhook(id: &str, timestamp: i64, body: &[u8]) -> Vec<(String, String)> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(WHSEC.trim_start_matches("whsec_"))
        .unwrap();
    let ts = timestamp.to_string();
    let mac = hmac_sha256_hex(&key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
    let raw: Vec<u8> = (0..mac.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&mac[i..i + 2], 16).unwrap())
        .collect();
    vec![
        ("Content-Type".into(), "application/json".into()),
        ("webhook-id".into(), id.into()),
        ("webhook-timestamp".into(), ts),
        (
            "webhook-signature".into(),
            format!(
                "v1,{}",
                base64::engine::general_purpose::STANDARD.encode(raw)
            ),
        ),
    ]
}

fn event(id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"type": "transaction.created", "data": {"id": id, "amount": "-5.00", "date": "2024-03-08"}})).unwrap()
}

/// The whole corpus for round `round` (tokens and ids differ per round, so replay protection
/// and signatures are exercised afresh).
fn corpus(round: usize) -> (Vec<Case>, Vec<Case>) {
    use Expect::*;
    let mut cases = Vec::new();
    // Requests that must succeed first so that their replays below are replays.
    let mut setup = Vec::new();
    let r = |s: &str| format!("hostile-{round}-{s}");

    // --- every hostile email, on every email route --------------------------------------
    for (i, (name, raw, expect)) in bad_emails().into_iter().enumerate() {
        cases.push(case(
            format!("email: {name}"),
            "/inbound/email",
            with(bearer(), "Content-Type", "message/rfc822"),
            raw.clone(),
            expect,
        ));
        let (ct, body) = mailgun(&[("body-mime", &raw)], &r(&format!("mg-mime-{i}")));
        cases.push(case(
            format!("mailgun/mime: {name}"),
            "/inbound/mailgun/mime",
            vec![("Content-Type".into(), ct)],
            body,
            expect,
        ));
        let (ct, body) = multipart(&[("email", &raw), ("to", b"a@example.com")]);
        cases.push(case(
            format!("sendgrid: {name}"),
            "/inbound/sendgrid",
            with(sendgrid_auth(), "Content-Type", &ct),
            body,
            expect,
        ));
        let doc =
            json!({"RawEmail": String::from_utf8_lossy(&raw), "MessageID": r(&format!("pm-{i}"))});
        cases.push(case(
            format!("postmark: {name}"),
            "/inbound/postmark",
            with(postmark_auth(), "Content-Type", "application/json"),
            serde_json::to_vec(&doc).unwrap(),
            expect,
        ));
    }

    // --- provider forms that are not what they claim ------------------------------------
    let (ct, body) = mailgun(
        &[
            ("body-plain", b"You paid"),
            ("message-headers", b"[[\"From\""),
        ],
        &r("mg-headers"),
    );
    cases.push(case(
        "mailgun: message-headers not JSON",
        "/inbound/mailgun",
        vec![("Content-Type".into(), ct)],
        body,
        Recorded,
    ));
    let (ct, body) = mailgun(&[("body-plain", b"hello")], &r("mg-nofrom"));
    cases.push(case(
        "mailgun: no sender at all",
        "/inbound/mailgun",
        vec![("Content-Type".into(), ct)],
        body,
        Recorded,
    ));
    let (ct, body) = mailgun(
        &[
            ("sender", b"\xff\xfe@venmo.com"),
            ("subject", b"\xc3\x28"),
            ("body-plain", b"\xf0\x28"),
            ("body-html", b"<<<<"),
        ],
        &r("mg-utf8"),
    );
    cases.push(case(
        "mailgun: invalid UTF-8 fields",
        "/inbound/mailgun",
        vec![("Content-Type".into(), ct)],
        body,
        Recorded,
    ));
    let (_, body) = mailgun(
        &[("body-mime", b"From: a@b.c\r\n\r\nx")],
        &r("mg-noboundary"),
    );
    cases.push(case(
        "mailgun: multipart without its boundary",
        "/inbound/mailgun",
        vec![("Content-Type".into(), "multipart/form-data".into())],
        body,
        Status(400),
    ));
    let (ct, body) = multipart(&[("headers", b"Subject: x"), ("charsets", b"{not json")]);
    cases.push(case(
        "sendgrid: parsed mode with bad charsets JSON and no sender",
        "/inbound/sendgrid",
        with(sendgrid_auth(), "Content-Type", &ct),
        body,
        Recorded,
    ));
    let (ct, body) = multipart(&[("to", b"a@example.com")]);
    cases.push(case(
        "sendgrid: neither email nor headers",
        "/inbound/sendgrid",
        with(sendgrid_auth(), "Content-Type", &ct),
        body,
        Recorded,
    ));
    cases.push(case(
        "sendgrid: not a form",
        "/inbound/sendgrid",
        with(sendgrid_auth(), "Content-Type", "application/json"),
        b"{}".to_vec(),
        Recorded,
    ));
    cases.push(case(
        "sendgrid: form body cut mid-part",
        "/inbound/sendgrid",
        with(
            sendgrid_auth(),
            "Content-Type",
            "multipart/form-data; boundary=HOSTILE",
        ),
        b"--HOSTILE\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\nFrom: venmo@ven"
            .to_vec(),
        Recorded,
    ));
    for (name, body) in [
        ("postmark: invalid JSON", b"{\"From\": ".to_vec()),
        ("postmark: JSON array", b"[1,2,3]".to_vec()),
        (
            "postmark: no From",
            b"{\"Subject\": \"x\", \"TextBody\": \"You paid\"}".to_vec(),
        ),
        (
            "postmark: wrong types",
            b"{\"From\": 5, \"Headers\": \"x\", \"FromFull\": [], \"TextBody\": {}}".to_vec(),
        ),
        (
            "postmark: invalid UTF-8",
            b"{\"From\": \"\xff\xfe\", \"TextBody\": \"\xc3\x28\"}".to_vec(),
        ),
        (
            "postmark: nested 100 000 deep",
            format!(
                "{{\"From\": {}{}}}",
                "[".repeat(100_000),
                "]".repeat(100_000)
            )
            .into_bytes(),
        ),
        ("postmark: empty body", Vec::new()),
    ] {
        cases.push(case(
            name,
            "/inbound/postmark",
            with(postmark_auth(), "Content-Type", "application/json"),
            body,
            Recorded,
        ));
    }
    cases.push(case(
        "postmark: form instead of JSON",
        "/inbound/postmark",
        with(
            postmark_auth(),
            "Content-Type",
            "application/x-www-form-urlencoded",
        ),
        b"From=venmo%40venmo.com".to_vec(),
        Recorded,
    ));

    // --- webhooks with bodies that are not events ---------------------------------------
    let json_ct = with(bearer(), "Content-Type", "application/json");
    for (name, body, expect) in [
        ("invalid JSON", b"{\"type\": \"transaction.created\", \"data\": ".to_vec(), Recorded),
        ("empty body", Vec::new(), Recorded),
        ("invalid UTF-8 in a string", b"{\"type\": \"transaction.created\", \"data\": {\"id\": \"\xff\xfe\", \"amount\": \"-1.00\", \"date\": \"2024-03-08\"}}".to_vec(), Recorded),
        ("arrays nested 30 000 deep", format!("{}{}", "[".repeat(30_000), "]".repeat(30_000)).into_bytes(), Recorded),
        ("objects nested 10 000 deep", format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000)).into_bytes(), Recorded),
        ("nested 120 deep, inside serde's limit", format!("{{\"type\": \"x\", \"data\": {}1{}}}", "[".repeat(120), "]".repeat(120)).into_bytes(), Recorded),
        ("a bare number", b"1e999999".to_vec(), Recorded),
        ("a byte-order mark", b"\xef\xbb\xbf{\"type\": \"transaction.created\"}".to_vec(), Recorded),
        ("amount as a huge float", br#"{"type": "transaction.created", "data": {"id": "h1", "amount": 1.7976931348623157e308, "date": "2024-03-08"}}"#.to_vec(), Recorded),
        ("amount of 400 digits", format!(r#"{{"type": "transaction.created", "data": {{"id": "h2", "amount": "{}", "date": "2024-03-08"}}}}"#, "9".repeat(400)).into_bytes(), Recorded),
        ("amount NaN", br#"{"type": "transaction.created", "data": {"id": "h3", "amount": "NaN", "date": "2024-03-08"}}"#.to_vec(), Recorded),
        ("date that does not exist", br#"{"type": "transaction.created", "data": {"id": "h4", "amount": "-1.00", "date": "2024-02-30"}}"#.to_vec(), Recorded),
        ("fields of the wrong type", br#"{"type": "transaction.created", "data": {"id": {"x": 1}, "amount": [1], "date": 20240308}}"#.to_vec(), Recorded),
        ("missing required fields", br#"{"type": "transaction.created", "data": {}}"#.to_vec(), Recorded),
        ("data is null", br#"{"type": "transaction.created", "data": null}"#.to_vec(), Recorded),
        ("a NUL in the payee", b"{\"type\": \"transaction.created\", \"data\": {\"id\": \"h5\", \"amount\": \"-1.00\", \"date\": \"2024-03-08\", \"payee\": \"a\\u0000b\"}}".to_vec(), RecordedOrParsed),
        ("a lone surrogate escape", br#"{"type": "transaction.created", "data": {"id": "\ud800", "amount": "-1.00", "date": "2024-03-08"}}"#.to_vec(), Recorded),
        ("duplicate keys", br#"{"type": "transaction.created", "type": "other", "data": {"id": "h6", "id": "h7"}}"#.to_vec(), Recorded),
    ] {
        cases.push(case(format!("hook: {name}"), "/hooks/testbank", json_ct.clone(), body, expect));
    }
    cases.push(case(
        "hook: text/plain body",
        "/hooks/testbank",
        with(bearer(), "Content-Type", "text/plain"),
        b"You paid Sam $5.00".to_vec(),
        Recorded,
    ));
    cases.push(case(
        "hook: form body",
        "/hooks/testbank",
        with(
            bearer(),
            "Content-Type",
            "application/x-www-form-urlencoded",
        ),
        b"type=transaction.created&data=1".to_vec(),
        Recorded,
    ));
    cases.push(case(
        "hook: unknown plugin",
        "/hooks/no-such-bank",
        json_ct.clone(),
        event(&r("u1")),
        Status(404),
    ));
    cases.push(case(
        "hook: an email plugin",
        "/hooks/venmo",
        json_ct.clone(),
        event(&r("u2")),
        Status(404),
    ));
    cases.push(case(
        "hook: path traversal",
        "/hooks/..%2f..%2fetc%2fpasswd",
        json_ct.clone(),
        event(&r("u3")),
        Status(404),
    ));
    cases.push(case(
        "hook: plugin id of 300 characters",
        &format!("/hooks/{}", "b".repeat(300)),
        json_ct.clone(),
        event(&r("u4")),
        Status(404),
    ));

    // --- bodies past the limits -----------------------------------------------------------
    let big_email = vec![b'a'; EMAIL_LIMIT + 1];
    for (route, headers) in [
        ("/inbound/email", bearer()),
        (
            "/inbound/postmark",
            with(postmark_auth(), "Content-Type", "application/json"),
        ),
        (
            "/inbound/sendgrid",
            with(
                sendgrid_auth(),
                "Content-Type",
                "multipart/form-data; boundary=HOSTILE",
            ),
        ),
        (
            "/inbound/mailgun",
            vec![(
                "Content-Type".to_string(),
                "multipart/form-data; boundary=HOSTILE".to_string(),
            )],
        ),
        (
            "/inbound/mailgun/mime",
            vec![(
                "Content-Type".to_string(),
                "multipart/form-data; boundary=HOSTILE".to_string(),
            )],
        ),
    ] {
        cases.push(case(
            format!("{route}: one byte past the limit"),
            route,
            headers.clone(),
            big_email.clone(),
            Status(413),
        ));
        cases.push(Case {
            name: format!("{route}: past the limit, chunked"),
            path: route.into(),
            headers,
            body: Body::Chunked(vec![b'a'; EMAIL_LIMIT * 2]),
            expect: Status(413),
        });
    }
    cases.push(case(
        "hook: one byte past the limit",
        "/hooks/testbank",
        json_ct.clone(),
        vec![b' '; HOOK_LIMIT + 1],
        Status(413),
    ));
    cases.push(Case {
        name: "hook: past the limit, chunked".into(),
        path: "/hooks/testbank".into(),
        headers: json_ct.clone(),
        body: Body::Chunked(vec![b'['; HOOK_LIMIT * 4]),
        expect: Status(413),
    });

    // --- wrong or missing credentials -----------------------------------------------------
    let venmo = fixture("old-you-paid.eml");
    for (name, headers) in [
        ("no credentials", vec![]),
        (
            "wrong token",
            vec![(
                "Authorization".to_string(),
                "Bearer wrong-token-wrong-token-0".to_string(),
            )],
        ),
        (
            "token with one byte changed",
            vec![(
                "Authorization".to_string(),
                format!("Bearer {}X", &TOKEN[..TOKEN.len() - 1]),
            )],
        ),
        (
            "basic auth with a wrong password",
            vec![(
                "Authorization".to_string(),
                basic("x", "wrong-token-wrong-token-0"),
            )],
        ),
        (
            "empty bearer",
            vec![("Authorization".to_string(), "Bearer ".to_string())],
        ),
        ("token in a query string only", vec![]),
        (
            "invalid UTF-8 in Authorization",
            vec![(
                "Authorization".to_string(),
                "Bearer \u{fffd}\u{fffd}".to_string(),
            )],
        ),
    ] {
        let path = if name.contains("query") {
            format!("/inbound/email?token={TOKEN}")
        } else {
            "/inbound/email".into()
        };
        cases.push(case(
            format!("email auth: {name}"),
            &path,
            headers.clone(),
            venmo.clone(),
            Status(401),
        ));
        cases.push(case(
            format!("hook auth: {name}"),
            &path.replace("/inbound/email", "/hooks/testbank"),
            headers,
            event(&r(&format!("auth-{name}"))),
            Status(401),
        ));
    }
    for (name, headers) in [
        ("postmark: no credentials", vec![]),
        (
            "postmark: wrong password",
            vec![("Authorization".to_string(), basic("postmark", "nope"))],
        ),
        (
            "postmark: wrong user",
            vec![("Authorization".to_string(), basic("mallory", "pm-password"))],
        ),
        (
            "postmark: bearer instead of basic",
            vec![(
                "Authorization".to_string(),
                "Bearer pm-password".to_string(),
            )],
        ),
        (
            "postmark: basic with invalid base64",
            vec![(
                "Authorization".to_string(),
                "Basic !!!not-base64".to_string(),
            )],
        ),
        (
            "postmark: basic without a colon",
            vec![(
                "Authorization".to_string(),
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode("postmarkpm-password")
                ),
            )],
        ),
    ] {
        cases.push(case(
            name,
            "/inbound/postmark",
            with(headers, "Content-Type", "application/json"),
            b"{\"RawEmail\": \"From: venmo@venmo.com\\r\\n\\r\\nx\"}".to_vec(),
            Status(401),
        ));
    }
    for (name, headers) in [
        ("sendgrid: no credentials", vec![]),
        (
            "sendgrid: wrong password",
            vec![(
                "Authorization".to_string(),
                basic("sendgrid", "nope-nope-nope-nope"),
            )],
        ),
    ] {
        let (ct, body) = multipart(&[("email", &venmo)]);
        cases.push(case(
            name,
            "/inbound/sendgrid",
            with(headers, "Content-Type", &ct),
            body,
            Status(401),
        ));
    }
    // Mailgun: unsigned, forged, stale, future, nonsense timestamps, and a replayed token.
    let now = chrono::Utc::now().timestamp();
    let mg = |ts: String, token: &str, signature: Option<String>| {
        let signature = signature.unwrap_or_else(|| {
            hmac_sha256_hex(MAILGUN_KEY.as_bytes(), &[ts.as_bytes(), token.as_bytes()])
        });
        multipart(&[
            ("timestamp", ts.as_bytes()),
            ("token", token.as_bytes()),
            ("signature", signature.as_bytes()),
            ("body-mime", &venmo),
        ])
    };
    let forged = hmac_sha256_hex(b"not-the-key", &[now.to_string().as_bytes(), b"t"]);
    for (name, (ct, body)) in [
        ("unsigned", multipart(&[("body-mime", &venmo)])),
        (
            "forged signature",
            mg(now.to_string(), &r("mg-forged"), Some(forged)),
        ),
        (
            "signature not hex",
            mg(now.to_string(), &r("mg-nothex"), Some("zz".repeat(32))),
        ),
        (
            "empty signature",
            mg(now.to_string(), &r("mg-empty"), Some(String::new())),
        ),
        (
            "stale timestamp",
            mg((now - 3600).to_string(), &r("mg-stale"), None),
        ),
        (
            "timestamp from the future",
            mg((now + 3600).to_string(), &r("mg-future"), None),
        ),
        (
            "timestamp not a number",
            mg("yesterday".into(), &r("mg-nan"), None),
        ),
        (
            "timestamp i64::MIN",
            mg(i64::MIN.to_string(), &r("mg-min"), None),
        ),
        (
            "timestamp i64::MAX",
            mg(i64::MAX.to_string(), &r("mg-max"), None),
        ),
        (
            "timestamp past i64",
            mg("99999999999999999999999".into(), &r("mg-big"), None),
        ),
    ] {
        cases.push(case(
            format!("mailgun auth: {name}"),
            "/inbound/mailgun/mime",
            vec![("Content-Type".into(), ct)],
            body,
            Status(401),
        ));
    }
    let replayed = r("mg-replayed");
    let (ct, body) = mg(now.to_string(), &replayed, None);
    setup.push(case(
        "mailgun: the original of a replay",
        "/inbound/mailgun/mime",
        vec![("Content-Type".into(), ct.clone())],
        body.clone(),
        Status(200),
    ));
    cases.push(case(
        "mailgun auth: replayed token",
        "/inbound/mailgun/mime",
        vec![("Content-Type".into(), ct.clone())],
        body.clone(),
        Status(401),
    ));
    cases.push(case(
        "mailgun auth: replayed token on the other route",
        "/inbound/mailgun",
        vec![("Content-Type".into(), ct)],
        body,
        Status(401),
    ));
    // Standard Webhooks: stale, future, forged, replayed onto another body, malformed.
    let good_id = r("std-original");
    let good_body = event(&good_id);
    let good_headers = standard_webhook(&good_id, now, &good_body);
    setup.push(case(
        "stdbank: the original of a replay",
        "/hooks/stdbank",
        good_headers.clone(),
        good_body.clone(),
        Status(200),
    ));
    cases.push(case(
        "stdbank auth: signature replayed onto another body",
        "/hooks/stdbank",
        good_headers.clone(),
        event(&r("std-other")),
        Status(401),
    ));
    cases.push(case(
        "stdbank auth: replayed with another id",
        "/hooks/stdbank",
        good_headers
            .iter()
            .map(|(k, v)| {
                if k == "webhook-id" {
                    (k.clone(), r("std-x"))
                } else {
                    (k.clone(), v.clone())
                }
            })
            .collect(),
        good_body.clone(),
        Status(401),
    ));
    let stale_body = event(&r("std-stale"));
    cases.push(case(
        "stdbank auth: stale timestamp",
        "/hooks/stdbank",
        standard_webhook(&r("std-stale"), now - 3600, &stale_body),
        stale_body.clone(),
        Status(401),
    ));
    cases.push(case(
        "stdbank auth: timestamp i64::MIN",
        "/hooks/stdbank",
        standard_webhook(&r("std-min"), i64::MIN, &stale_body),
        stale_body.clone(),
        Status(401),
    ));
    cases.push(case(
        "stdbank auth: no signature headers",
        "/hooks/stdbank",
        json_ct.clone(),
        stale_body.clone(),
        Status(401),
    ));
    cases.push(case(
        "stdbank auth: malformed signature",
        "/hooks/stdbank",
        standard_webhook(&r("std-mal"), now, &stale_body)
            .into_iter()
            .map(|(k, v)| {
                if k == "webhook-signature" {
                    (k, "v1,!!!,v2 ,,".into())
                } else {
                    (k, v)
                }
            })
            .collect(),
        stale_body.clone(),
        Status(401),
    ));
    // HMAC and query secrets.
    let body = event(&r("hmac"));
    let signature = format!(
        "sha256={}",
        hmac_sha256_hex(HMAC_SECRET.as_bytes(), &[&event(&r("hmac-original"))])
    );
    for (name, headers) in [
        ("no signature", vec![]),
        (
            "signature of another body (replay)",
            vec![("X-Signature".to_string(), signature)],
        ),
        (
            "signature not hex",
            vec![("X-Signature".to_string(), "sha256=xyz".to_string())],
        ),
        (
            "signature without its prefix",
            vec![(
                "X-Signature".to_string(),
                hmac_sha256_hex(HMAC_SECRET.as_bytes(), &[&body]),
            )],
        ),
    ] {
        cases.push(case(
            format!("hmacbank auth: {name}"),
            "/hooks/hmacbank",
            with(headers, "Content-Type", "application/json"),
            body.clone(),
            Status(401),
        ));
    }
    for (name, query) in [
        ("no secret", String::new()),
        ("wrong secret", "?secret=nope".into()),
        (
            "secret twice, first wrong",
            format!("?secret=nope&secret={QUERY_SECRET}"),
        ),
        ("secret percent-garbled", "?secret=%ff%fe".into()),
    ] {
        cases.push(case(
            format!("querybank auth: {name}"),
            &format!("/hooks/querybank{query}"),
            vec![("Content-Type".into(), "application/json".into())],
            event(&r(&format!("q-{name}"))),
            Status(401),
        ));
    }
    cases.push(case(
        "monzo auth: a bank with no secret configured",
        "/hooks/monzo?secret=",
        vec![("Content-Type".into(), "application/json".into())],
        b"{}".to_vec(),
        Status(401),
    ));
    cases.push(case(
        "bunq auth: no RSA signature",
        "/hooks/bunq",
        vec![("Content-Type".into(), "application/json".into())],
        b"{}".to_vec(),
        Status(401),
    ));
    (setup, cases)
}

struct Outcome {
    status: u16,
    body: Value,
}

async fn send(client: &reqwest::Client, base: &str, case: &Case) -> Result<Outcome, String> {
    let mut request = client.post(format!("{base}{}", case.path));
    for (k, v) in &case.headers {
        // From bytes: header values may carry bytes that are not visible ASCII.
        let value = reqwest::header::HeaderValue::from_bytes(v.as_bytes()).expect("a header value");
        request = request.header(k, value);
    }
    request = match &case.body {
        Body::Bytes(bytes) => request.body(bytes.clone()),
        Body::Chunked(bytes) => {
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                bytes.chunks(16 << 10).map(|c| Ok(c.to_vec())).collect();
            request.body(reqwest::Body::wrap_stream(tokio_stream::iter(chunks)))
        }
    };
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let text = response
                .text()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?;
            let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
            Ok(Outcome { status, body })
        }
        // A server may close the connection on a body it refused before reading it all; the
        // status it sent first is what counts, but reqwest reports the broken write instead.
        Err(e) if matches!(case.body, Body::Chunked(_)) || case.expect == Expect::Status(413) => {
            Ok(Outcome {
                status: 413,
                body: json!({"reason": format!("connection closed while sending: {e}")}),
            })
        }
        Err(e) => Err(format!("no answer: {e}")),
    }
}

/// Whether `outcome` is what `expect` asks; the stored id to check afterwards, if any.
fn judge(expect: Expect, outcome: &Outcome) -> Result<Option<(i64, String)>, String> {
    let reason = outcome.body["reason"].as_str().unwrap_or("").to_owned();
    let id = outcome.body["id"].as_i64();
    let status = outcome.body["status"].as_str().unwrap_or("");
    match expect {
        Expect::Status(code) if outcome.status == code => {
            if code >= 400 && reason.is_empty() {
                return Err(format!("{code} without a JSON reason: {}", outcome.body));
            }
            Ok(None)
        }
        Expect::Recorded | Expect::RecordedOrParsed
            if outcome.status == 400
                && status == "rejected"
                && !reason.is_empty()
                && id.is_some() =>
        {
            Ok(Some((id.unwrap(), reason)))
        }
        Expect::Recorded | Expect::RecordedOrParsed
            if outcome.status == 200 && !reason.is_empty() && id.is_some() =>
        {
            Ok(Some((id.unwrap(), reason)))
        }
        Expect::RecordedOrParsed
            if outcome.status == 200
                && id.is_some()
                && matches!(status, "queued" | "duplicate") =>
        {
            Ok(None)
        }
        // A repeat of a message stored in an earlier round: the answer points at it.
        Expect::Recorded if outcome.status == 200 && status == "duplicate" && id.is_some() => {
            Ok(None)
        }
        _ => Err(format!(
            "expected {expect:?}, got {} {}",
            outcome.status, outcome.body
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_requests_are_refused_or_recorded_and_good_traffic_flows() {
    let scale = Scale::from_env();
    let limits = format!(
        "[server.limits]\nemail = {EMAIL_LIMIT}\nmailgun = {EMAIL_LIMIT}\npostmark = {EMAIL_LIMIT}\nsendgrid = {EMAIL_LIMIT}\nhooks = {HOOK_LIMIT}\n"
    );
    let mut server = ChildServer::new(&limits);
    server.start().await;
    let base = server.url("");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();

    // Good traffic and health checks all along.
    let stop = Arc::new(AtomicBool::new(false));
    let good_sent = Arc::new(AtomicUsize::new(0));
    let mut background = Vec::new();
    for lane in 0..2 {
        let (stop, good_sent, base, client) = (
            stop.clone(),
            good_sent.clone(),
            base.clone(),
            client.clone(),
        );
        background.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut i = lane;
            while !stop.load(Ordering::SeqCst) {
                let m = message("hostile-good", i);
                i += 2;
                let answer = client
                    .post(format!("{base}{}", m.path))
                    .bearer_auth(TOKEN)
                    .header("Content-Type", m.content_type)
                    .body(m.body)
                    .send()
                    .await;
                match answer {
                    Ok(r) if r.status() == 200 => {
                        let body: Value = r.json().await.unwrap_or_default();
                        if body["status"] != "queued" {
                            failures.push(format!("good message {i}: {body}"));
                        }
                    }
                    Ok(r) => failures.push(format!("good message {i}: {}", r.status())),
                    Err(e) => failures.push(format!("good message {i}: {e}")),
                }
                good_sent.fetch_add(1, Ordering::SeqCst);
                for path in ["/healthz", "/readyz"] {
                    match client.get(format!("{base}{path}")).send().await {
                        Ok(r) if r.status() == 200 => {}
                        other => failures.push(format!("{path}: {other:?}")),
                    }
                }
            }
            failures
        }));
    }

    let mut tried = 0;
    let mut wrong = Vec::new();
    let mut recorded: Vec<(String, i64, String)> = Vec::new();
    let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
    for round in 0..scale.hostile_rounds {
        let (setup, cases) = corpus(round);
        for c in &setup {
            let outcome = send(&client, &base, c).await.unwrap();
            assert_eq!(outcome.status, 200, "{}: {}", c.name, outcome.body);
        }
        if round == 0 {
            assert!(cases.len() >= 100, "only {} hostile cases", cases.len());
        }
        // Four at a time, beside the good traffic.
        for batch in cases.chunks(4) {
            let answers: Vec<_> = batch.iter().map(|c| send(&client, &base, c)).collect();
            let mut results = Vec::new();
            for a in answers {
                results.push(a.await);
            }
            for (c, result) in batch.iter().zip(results) {
                tried += 1;
                match result.and_then(|o| {
                    *by_status.entry(o.status).or_default() += 1;
                    judge(c.expect, &o)
                }) {
                    Ok(Some((id, reason))) => recorded.push((c.name.clone(), id, reason)),
                    Ok(None) => {}
                    Err(e) => wrong.push(format!("{}: {e}", c.name)),
                }
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    let mut good_failures = Vec::new();
    for task in background {
        good_failures.extend(task.await.unwrap());
    }
    let alive = server.is_running();
    for path in ["/healthz", "/readyz"] {
        let status = client
            .get(server.url(path))
            .send()
            .await
            .map(|r| r.status().as_u16());
        assert_eq!(status.ok(), Some(200), "{path} after the hostile corpus");
    }
    server.stop();

    // Every 2xx-with-a-reason and every 400 `rejected` left its reason in the store.
    let store = lm_ingest::store::Store::open(&server.store_path()).unwrap();
    let mut unrecorded = Vec::new();
    for (name, id, reason) in &recorded {
        match store.message(*id).unwrap() {
            Some(m) if m.reason.as_deref() == Some(reason.as_str()) => {}
            other => unrecorded.push(format!(
                "{name}: answered {reason:?}, stored {:?}",
                other.map(|m| m.reason)
            )),
        }
    }
    tokio::task::spawn_blocking(move || store.close().unwrap())
        .await
        .unwrap();

    let panics = server.panics();
    println!(
        "RELIABILITY hostile ({}): bad requests tried {tried} ({} per round), answers by status {by_status:?}, reasons checked in the store {}, wrong answers {}, good requests {} (failed {}), panics {}, alive {alive}",
        scale.name,
        tried / scale.hostile_rounds.max(1),
        recorded.len(),
        wrong.len(),
        good_sent.load(Ordering::SeqCst),
        good_failures.len(),
        panics.len(),
    );
    assert!(
        wrong.is_empty(),
        "{} wrong answers:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(panics.is_empty(), "the server panicked: {panics:#?}");
    assert!(alive, "the server died:\n{}", server.output());
    assert!(
        unrecorded.is_empty(),
        "reasons not stored:\n{}",
        unrecorded.join("\n")
    );
    assert!(
        good_failures.is_empty(),
        "good traffic failed:\n{}",
        good_failures.join("\n")
    );
    assert!(
        good_sent.load(Ordering::SeqCst) > 0,
        "no good traffic ran alongside"
    );
}

/// Regression (found by the hostile-input test): unreadable bodies were keyed by their bytes
/// alone, the same key as an email without a Message-ID. Bytes refused on the wrong route made
/// the same message on the right route a "duplicate" of that rejection, refused forever.
#[tokio::test]
async fn bytes_refused_on_one_route_are_still_read_on_the_right_one() {
    let app = crate::support::spawn_app().await;
    let email = fixture("old-you-paid.eml")
        .split(|&b| b == b'\n')
        .filter(|line| !line.starts_with(b"Message-ID:"))
        .collect::<Vec<_>>()
        .join(&b'\n');
    let post = |path: &'static str| {
        app.client
            .post(app.url(path))
            .bearer_auth(TOKEN)
            .header("Content-Type", "application/json")
            .body(email.clone())
            .send()
    };
    let wrong = post("/hooks/testbank").await.unwrap();
    assert_eq!(wrong.status(), 400, "an email is not a webhook");
    let right = post("/inbound/email").await.unwrap();
    assert_eq!(right.status(), 200);
    let answer: Value = right.json().await.unwrap();
    assert_eq!(answer["status"], "queued", "{answer}");
    assert_eq!(answer["plugin"], "venmo");
    app.stop().await;
}

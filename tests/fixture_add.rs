//! `lm-ingest fixture add FILE --redact`: a real email becomes a fixture with no personal data
//! left, valid MIME, and the structure its plugin reads intact.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use lm_ingest::parse::{Registry, Status};

fn lm_ingest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lm-ingest"))
        .args(args)
        .env_remove("LM_INGEST_CONFIG")
        .output()
        .unwrap()
}

fn add(input: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "fixture",
        "add",
        input.to_str().unwrap(),
        "--redact",
        "--dir",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    lm_ingest(&args)
}

/// Personal data in headers, a quoted-printable HTML part and a base64 text part.
fn personal_mail() -> String {
    let text = "Hi Jane Doe,\r\nYour card ending 4111 1111 1111 1234 was charged $42.50 on Mar 1, 2024 at Corner Bakery.\r\nQuestions? Call 555-867-5309 or write to jane.doe@gmail.com. Account 0012345678.\r\nMaple Street branch\r\n";
    let text_b64 = base64::engine::general_purpose::STANDARD.encode(text);
    let html = "<html><body><p>Hi Jane Doe,</p><p>Your card ending <b>4111 1111 1111 1234</b> was charged <b>$42.50</b> on Mar 1, 2024 at Corner Bakery.</p><p>Questions? <a href=3D\"mailto:jane.doe@gmail.com\">jane.doe@gmail.com</a> or 555-867-5309. Acc=\r\nount 0012345678. Maple Street branch. Caf=C3=A9 =E2=82=AC</p></body></html>\r\n";
    format!(
        "Delivered-To: jane.doe@gmail.com\r\n\
Received: from mail.newbank.example (mail.newbank.example [203.0.113.7])\r\n        by mx.google.com with ESMTPS id x1 for <jane.doe@gmail.com>;\r\n        Fri, 01 Mar 2024 12:00:00 -0800\r\n\
Return-Path: <bounce-jane.doe=gmail.com@newbank.example>\r\n\
X-Forwarded-To: import@ledger-inbox.example.net\r\n\
X-Forwarded-For: jane.doe@gmail.com import@ledger-inbox.example.net\r\n\
DKIM-Signature: v=1; a=rsa-sha256; d=newbank.example; s=s1; b=AbCdEf0123456789\r\n\
ARC-Seal: i=1; a=rsa-sha256; d=google.com; s=arc; cv=none; b=XyZ\r\n\
Authentication-Results: mx.google.com; dkim=pass header.i=@newbank.example\r\n\
From: NewBank Alerts <alerts@newbank.example>\r\n\
To: Jane Doe <jane.doe@gmail.com>\r\n\
Cc: John Roe <john.roe@outlook.example>\r\n\
Subject: Card charged $42.50 for Jane\r\n\
Date: Fri, 01 Mar 2024 12:00:00 -0800\r\n\
Message-ID: <CAJane.4711.private@mail.newbank.example>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/alternative; boundary=\"b1\"\r\n\
\r\n\
--b1\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: base64\r\n\
\r\n\
{text_b64}\r\n\
--b1\r\n\
Content-Type: text/html; charset=utf-8\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
{html}\
--b1--\r\n"
    )
}

#[test]
fn personal_data_is_gone_and_the_mime_and_structure_remain() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("real.eml");
    std::fs::write(&input, personal_mail()).unwrap();
    let out = dir.path().join("fixtures");
    let run = add(
        &input,
        &out,
        &[
            "--plugin",
            "newbank",
            "--name",
            "card-charged",
            "--redact-word",
            "Maple",
        ],
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let said = String::from_utf8_lossy(&run.stdout);
    assert!(said.contains("status unmatched"), "{said}");
    assert!(said.contains("next:"), "{said}");

    let eml = out.join("newbank/card-charged.eml");
    let raw = std::fs::read(&eml).unwrap();
    let expected = std::fs::read_to_string(out.join("newbank/card-charged.expected.json")).unwrap();
    assert!(expected.contains("\"status\": \"unmatched\""), "{expected}");

    // Valid MIME: both parts decode, and everything personal is gone from headers and bodies.
    let parsed = mailparse::parse_mail(&raw).unwrap();
    assert_eq!(parsed.subparts.len(), 2);
    let text = parsed.subparts[0].get_body().unwrap();
    let html = parsed.subparts[1].get_body().unwrap();
    let headers =
        String::from_utf8_lossy(&raw[..raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap()])
            .into_owned();
    for (what, content) in [("headers", &headers), ("text", &text), ("html", &html)] {
        for personal in [
            "jane.doe",
            "Jane",
            "Doe",
            "john.roe",
            "John",
            "gmail.com",
            "import@ledger-inbox",
            "4111 1111 1111",
            "867-5309",
            "12345678",
            "203.0.113.7",
            "CAJane",
            "Maple",
            "AbCdEf0123456789",
        ] {
            assert!(
                !content.contains(personal),
                "{personal:?} left in the {what}:\n{content}"
            );
        }
    }
    for gone in [
        "Delivered-To",
        "Received",
        "Return-Path",
        "X-Forwarded",
        "DKIM-Signature",
        "ARC-Seal",
        "Authentication-Results",
    ] {
        assert!(!headers.contains(gone), "{gone} kept:\n{headers}");
    }
    // The template's structure stays: sender, labels, amounts, dates, the card's last 4.
    assert!(
        headers.contains("From: NewBank Alerts <alerts@newbank.example>"),
        "{headers}"
    );
    assert!(
        headers.contains("Subject: Card charged $42.50 for Redacted"),
        "{headers}"
    );
    assert!(
        headers.contains("Date: Fri, 01 Mar 2024 12:00:00 -0800"),
        "{headers}"
    );
    for content in [&text, &html] {
        for kept in [
            "Your card ending",
            "1234 was charged",
            "$42.50",
            "Mar 1, 2024",
            "Corner Bakery",
            "Redacted",
        ] {
            assert!(
                content.contains(kept) || content.contains(&kept.replace(" was", "</b> was")),
                "{kept:?} lost:\n{content}"
            );
        }
    }
    assert!(
        html.contains("Café €"),
        "non-ASCII survives re-encoding: {html}"
    );
    assert!(text.contains("0000 0000 0000 1234"), "{text}");

    // Never over an existing fixture.
    let again = add(
        &input,
        &out,
        &["--plugin", "newbank", "--name", "card-charged"],
    );
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
    assert_eq!(std::fs::read(&eml).unwrap(), raw);

    // And never unredacted.
    let plain = lm_ingest(&[
        "fixture",
        "add",
        input.to_str().unwrap(),
        "--dir",
        out.to_str().unwrap(),
    ]);
    assert_eq!(plain.status.code(), Some(2));
}

/// Every email fixture, redacted, still parses the same way with the same plugin: the
/// redaction keeps what rules read (base64, quoted-printable, forwards, attachments).
#[test]
fn redacted_fixtures_parse_as_their_originals_did() {
    let registry = Registry::load(None).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut emails: Vec<PathBuf> = Vec::new();
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path();
        if dir.is_dir() {
            for file in std::fs::read_dir(&dir).unwrap() {
                let path = file.unwrap().path();
                if path.extension().is_some_and(|e| e == "eml") {
                    emails.push(path);
                }
            }
        }
    }
    emails.sort();
    assert!(emails.len() >= 20);
    for path in emails {
        let raw = std::fs::read(&path).unwrap();
        let before = registry.parse_email(&raw);
        let redacted = lm_ingest::redact::redact_email(&raw, &Default::default()).unwrap();
        let after = registry.parse_email(&redacted.raw);
        assert_eq!(
            (after.status, &after.plugin),
            (before.status, &before.plugin),
            "{}: {after:?}",
            path.display()
        );
        if before.status == Status::Parsed {
            let (b, a) = (&before.transactions[0], &after.transactions[0]);
            assert_eq!(
                (a.date, a.amount.as_str(), &a.currency),
                (b.date, b.amount.as_str(), &b.currency),
                "{}",
                path.display()
            );
        }
    }
}

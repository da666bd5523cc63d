//! Forwarded mail: the header block a mail client writes above the quoted original.
//!
//! Gmail ("---------- Forwarded message ---------"), Outlook ("From: … Sent: … To: … Subject: …"
//! under a rule) and Apple Mail ("Begin forwarded message:") all write `Key: value` lines; we look
//! for a block with `From`, `Subject` and `Date`/`Sent` within a few lines of each other. In a chain
//! of forwards the innermost block names the original sender, so the last block wins.
//!
//! Outlook and Apple Mail write the keys in the user's language ("Von:", "Gesendet:", "Betreff:";
//! French puts a space before the colon: "De :"), so each key has its common translations. A
//! localized date ("Freitag, 1. März 2024 15:04") is not read: the block still names the original
//! sender and subject, and the message is dated as if the forward printed no date.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};

use super::email::{parse_from, Envelope};
use super::MessageTime;

/// How many lines after `From:` the rest of a header block may sit.
const BLOCK_SPAN: usize = 8;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardedHeader {
    pub from: String,
    pub subject: String,
    pub date: String,
}

impl ForwardedHeader {
    pub fn into_envelope(self) -> Envelope {
        let (from, from_name) = parse_from(&self.from);
        Envelope {
            from,
            from_name,
            subject: self.subject,
            date: parse_loose_date(&self.date),
            message_id: None,
        }
    }
}

pub fn find_forwarded_header(body: &str) -> Option<ForwardedHeader> {
    // Each line is read once, and only those naming a block's field are kept, with their line
    // number: a block's span is counted in lines of any kind.
    let fields: Vec<(usize, Field, &str)> = body
        .lines()
        .enumerate()
        .filter_map(|(number, line)| {
            let (key, value) = key_and_value(strip_quoting(line))?;
            Some((number, field_of(key)?, value))
        })
        .collect();
    let mut found = None;
    for (i, &(number, field, from)) in fields.iter().enumerate() {
        if field != Field::From {
            continue;
        }
        let (mut subject, mut date) = ("", "");
        let block = fields[i + 1..]
            .iter()
            .take_while(|(next, ..)| next - number <= BLOCK_SPAN);
        for &(_, field, value) in block {
            match field {
                Field::Subject => subject = value,
                Field::Date => date = value,
                Field::From => break,
            }
        }
        if !subject.is_empty() && !date.is_empty() {
            found = Some((from, subject, date));
        }
    }
    found.map(|(from, subject, date)| ForwardedHeader {
        from: from.to_owned(),
        subject: subject.to_owned(),
        date: date.to_owned(),
    })
}

/// The fields of a forwarded header block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    From,
    Subject,
    Date,
}

fn field_of(key: &str) -> Option<Field> {
    [
        (Field::From, FROM_KEYS),
        (Field::Subject, SUBJECT_KEYS),
        (Field::Date, DATE_KEYS),
    ]
    .into_iter()
    .find(|(_, keys)| keys.iter().any(|k| key_matches(key, k)))
    .map(|(field, _)| field)
}

/// The sender key as Gmail, Outlook and Apple Mail write it in English, German, French, Spanish,
/// Portuguese, Italian, Dutch and the Scandinavian languages.
const FROM_KEYS: &[&str] = &["from", "von", "de", "da", "van", "från", "fra"];
const SUBJECT_KEYS: &[&str] = &[
    "subject",
    "betreff",
    "objet",
    "asunto",
    "assunto",
    "oggetto",
    "onderwerp",
    "ämne",
    "emne",
];
/// Gmail and Apple Mail write the date; Outlook writes when it was sent.
const DATE_KEYS: &[&str] = &[
    "date",
    "sent",
    "datum",
    "gesendet",
    "envoyé",
    "enviado el",
    "enviado",
    "fecha",
    "enviada",
    "data",
    "inviato",
    "verzonden",
    "skickat",
    "sendt",
];

/// Drops `>` quoting and the whitespace around a line.
fn strip_quoting(line: &str) -> &str {
    line.trim_start_matches(|c: char| c == '>' || c.is_whitespace())
        .trim_end()
}

/// The key and value of a `Key: value` line, without the `*bold*` marks plain-text Outlook puts
/// around keys and the space French typography puts before the colon ("De :", often
/// non-breaking). This runs for every line of a body, so a line without a colon near its start is
/// turned away first.
fn key_and_value(line: &str) -> Option<(&str, &str)> {
    const LONGEST_KEY: usize = 16;
    let line = line.strip_prefix('*').unwrap_or(line);
    let colon = line.bytes().take(LONGEST_KEY).position(|b| b == b':')?;
    let key = line[..colon].trim_end_matches(['*', ' ', '\u{a0}', '\u{202f}']);
    let rest = &line[colon + 1..];
    Some((key, rest.strip_prefix('*').unwrap_or(rest).trim()))
}

/// Whether `key` lowercases (`char::to_lowercase`) to `lowercase`. An ASCII key lowercases to
/// ASCII, so it is compared byte by byte; only a key with other characters (which may lowercase
/// to ASCII too, like the Kelvin sign to `k`) takes the char-by-char path.
fn key_matches(key: &str, lowercase: &str) -> bool {
    if key.is_ascii() {
        key.len() == lowercase.len() && key.eq_ignore_ascii_case(lowercase)
    } else {
        key.chars()
            .flat_map(char::to_lowercase)
            .eq(lowercase.chars())
    }
}

/// The first thing in `text` shaped like an email address, lowercased.
pub fn first_address(text: &str) -> Option<String> {
    let at = text.find('@')?;
    let is_addr_char = |c: char| c.is_alphanumeric() || "._%+-'".contains(c);
    let start = text[..at]
        .char_indices()
        .rev()
        .take_while(|(_, c)| is_addr_char(*c))
        .last()
        .map_or(at, |(i, _)| i);
    let end = text[at + 1..]
        .char_indices()
        .take_while(|(_, c)| c.is_alphanumeric() || *c == '.' || *c == '-')
        .last()
        .map_or(at + 1, |(i, c)| at + 1 + i + c.len_utf8());
    let addr = text[start..end].trim_end_matches('.');
    (start < at && end > at + 1).then(|| addr.to_ascii_lowercase())
}

/// Dates as forwarding clients print them: RFC 2822, `Fri, Mar 1, 2024 at 3:04 PM` (Gmail),
/// `Friday, March 1, 2024 3:04 PM` (Outlook), `March 1, 2024 at 3:04:05 PM PST` (Apple Mail),
/// `14 June 2024 at 12:20:30 BST` (Apple Mail, British English).
/// Without a zone the time is the forwarder's local time and stays naive.
pub fn parse_loose_date(text: &str) -> Option<MessageTime> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Some(ts) = super::email::dateparse(text) {
        if looks_zoned_rfc2822(text) {
            return DateTime::from_timestamp(ts, 0).map(MessageTime::Utc);
        }
    }
    let mut words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty() && !w.eq_ignore_ascii_case("at"))
        .collect();
    if words.first().is_some_and(|w| is_weekday(w)) {
        words.remove(0);
    }
    let offset_hours = words.last().and_then(|w| zone_offset(w));
    if offset_hours.is_some() {
        words.pop();
    }
    let joined = words.join(" ");
    const FORMATS: &[&str] = &[
        "%b %d %Y %I:%M:%S %p",
        "%b %d %Y %I:%M %p",
        "%B %d %Y %I:%M:%S %p",
        "%B %d %Y %I:%M %p",
        "%d %b %Y %H:%M:%S",
        "%d %b %Y %H:%M",
        "%d %B %Y %H:%M:%S",
        "%d %B %Y %H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ];
    let naive = FORMATS
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(&joined, f).ok())?;
    Some(match offset_hours {
        Some(hours) => {
            let offset = chrono::FixedOffset::east_opt(hours * 3600)?;
            MessageTime::Utc(
                offset
                    .from_local_datetime(&naive)
                    .single()?
                    .with_timezone(&Utc),
            )
        }
        None => MessageTime::Local(naive),
    })
}

fn looks_zoned_rfc2822(text: &str) -> bool {
    text.rsplit(' ')
        .next()
        .is_some_and(|z| z.starts_with(['+', '-']) || matches!(z, "GMT" | "UT" | "UTC" | "Z"))
}

fn is_weekday(word: &str) -> bool {
    const DAYS: &[&str] = &["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let w = word.to_ascii_lowercase();
    DAYS.iter().any(|d| w.starts_with(d)) && w.len() <= 9 && w.chars().all(|c| c.is_alphabetic())
}

/// US zones, and the European ones Apple Mail prints in British English ("12:20:30 BST").
fn zone_offset(word: &str) -> Option<i32> {
    Some(match word.to_ascii_uppercase().as_str() {
        "UTC" | "GMT" => 0,
        "BST" | "CET" => 1,
        "CEST" => 2,
        "EST" => -5,
        "EDT" | "AST" => -4,
        "CST" => -6,
        "CDT" => -5,
        "MST" => -7,
        "MDT" => -6,
        "PST" => -8,
        "PDT" => -7,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_exactly_as_lowercasing_every_char_does() {
        let slow = |key: &str, k: &str| key.chars().flat_map(char::to_lowercase).eq(k.chars());
        let all_keys = FROM_KEYS.iter().chain(SUBJECT_KEYS).chain(DATE_KEYS);
        let pieces = [
            "a", "D", "e", "\u{212a}", "\u{130}", "\u{c4}", "\u{e4}", "mne", "ENVOY", "\u{c9}",
            "\u{e9}", " ", "el", "S", "ubject", "rom", "F", "\u{17f}", "",
        ];
        let mut state = 0x6b65_795f_6d61_7463u64;
        let mut matched = 0;
        for _ in 0..50_000 {
            let key = crate::test_rng::joined_pieces(&mut state, &pieces, 0..5);
            for k in all_keys.clone() {
                let expected = slow(&key, k);
                assert_eq!(key_matches(&key, k), expected, "{key:?} {k:?}");
                matched += usize::from(expected);
            }
        }
        for k in all_keys {
            assert!(key_matches(&k.to_uppercase(), k), "{k}");
        }
        assert!(key_matches("\u{212a}", "k") && !key_matches("K\u{212a}", "k"));
        assert!(matched > 50, "{matched}");
    }

    /// `find_forwarded_header` as it was before it read each line once: every line is matched
    /// against the sender keys, and the lines after each sender are matched again.
    fn find_forwarded_header_line_by_line(body: &str) -> Option<ForwardedHeader> {
        fn header_value_any<'a>(line: &'a str, keys: &[&str]) -> Option<&'a str> {
            let line = line.strip_prefix('*').unwrap_or(line);
            let colon = line.bytes().take(16).position(|b| b == b':')?;
            let key = line[..colon].trim_end_matches(['*', ' ', '\u{a0}', '\u{202f}']);
            if !keys.iter().any(|k| key_matches(key, k)) {
                return None;
            }
            let rest = &line[colon + 1..];
            Some(rest.strip_prefix('*').unwrap_or(rest).trim())
        }
        let lines: Vec<&str> = body.lines().map(strip_quoting).collect();
        let mut found = None;
        for (i, line) in lines.iter().enumerate() {
            let Some(from) = header_value_any(line, FROM_KEYS) else {
                continue;
            };
            let mut block = ForwardedHeader {
                from: from.to_owned(),
                ..Default::default()
            };
            for next in lines.iter().skip(i + 1).take(BLOCK_SPAN) {
                if let Some(v) = header_value_any(next, SUBJECT_KEYS) {
                    block.subject = v.to_owned();
                } else if let Some(v) = header_value_any(next, DATE_KEYS) {
                    block.date = v.to_owned();
                } else if header_value_any(next, FROM_KEYS).is_some() {
                    break;
                }
            }
            if !block.subject.is_empty() && !block.date.is_empty() {
                found = Some(block);
            }
        }
        found
    }

    #[test]
    fn blocks_are_found_as_reading_line_by_line_finds_them() {
        let mut bodies = Vec::new();
        for (_, raw) in crate::parse::tests::fixture_emails() {
            if let Ok(email) = crate::message::Email::parse(&raw) {
                bodies.extend(email.text.clone());
                bodies.extend(email.html_text.clone());
                if let Some(super::super::Original::Attached(inner)) = email.original {
                    bodies.extend(inner.body_text().map(str::to_owned));
                }
            }
        }
        let fixture_bodies = bodies.len();
        // Random bodies of block lines in every language and form, lines that only look like
        // them, and filler, so that blocks fall inside, at and past their span.
        let lines = [
            "From: Venmo <venmo@venmo.com>",
            "> *From:* a@b.c",
            "Von: PayPal <service@paypal.de>",
            "De\u{a0}: Cash App <cash@square.com>",
            "Subject: Jane paid you $5.00",
            "*Betreff:* Zahlung",
            "Objet : x",
            "Subject:",
            "Date: Fri, Mar 1, 2024 at 3:04 PM",
            "Sent: Friday, March 1, 2024 3:04 PM",
            "Enviado el: viernes",
            "DATUM: 12. September",
            "To: me@x.com",
            "Amount: $5.00",
            "Description: a@b.c",
            "A very long key indeed: From",
            "",
            "> ",
            "plain words",
            "\u{212a}ey: x",
        ];
        let mut state = 0x666f_7277_6172_6421u64;
        for _ in 0..20_000 {
            state = crate::test_rng::xorshift64(state);
            let count = state % 24;
            let mut body = String::new();
            for k in 0..count {
                state = crate::test_rng::xorshift64(state);
                body.push_str(lines[(state % lines.len() as u64) as usize]);
                body.push_str(if k % 5 == 4 { "\r\n" } else { "\n" });
            }
            bodies.push(body);
        }
        let mut found = 0;
        for body in &bodies {
            let expected = find_forwarded_header_line_by_line(body);
            found += usize::from(expected.is_some());
            assert_eq!(find_forwarded_header(body), expected, "{body:?}");
        }
        assert!(fixture_bodies > 100, "{fixture_bodies}");
        assert!(found > 2_000, "{found}");
    }

    #[test]
    fn finds_gmail_outlook_and_apple_blocks() {
        let gmail = "hi\n---------- Forwarded message ---------\nFrom: Venmo <venmo@venmo.com>\nDate: Fri, Mar 1, 2024 at 3:04 PM\nSubject: Jane paid you $5.00\nTo: <me@x.com>\n\nbody";
        let h = find_forwarded_header(gmail).unwrap();
        assert_eq!(h.subject, "Jane paid you $5.00");
        let env = h.into_envelope();
        assert_eq!(env.from.as_deref(), Some("venmo@venmo.com"));
        assert_eq!(
            env.date,
            Some(MessageTime::Local(
                NaiveDateTime::parse_from_str("2024-03-01 15:04", "%Y-%m-%d %H:%M").unwrap()
            ))
        );

        let outlook = "________________________________\n*From:* Venmo [mailto:venmo@venmo.com]\n*Sent:* Friday, March 1, 2024 3:04 PM\n*To:* Me\n*Subject:* You paid Jane $5.00\n";
        let env = find_forwarded_header(outlook).unwrap().into_envelope();
        assert_eq!(env.from.as_deref(), Some("venmo@venmo.com"));
        assert_eq!(env.subject, "You paid Jane $5.00");

        let apple = "Begin forwarded message:\n\n> From: Venmo <venmo@venmo.com>\n> Subject: Jane paid you $5.00\n> Date: March 1, 2024 at 3:04:05 PM PST\n> To: me@x.com\n";
        let env = find_forwarded_header(apple).unwrap().into_envelope();
        assert_eq!(
            env.date.unwrap().utc().unwrap().to_rfc3339(),
            "2024-03-01T23:04:05+00:00"
        );
    }

    #[test]
    fn innermost_block_wins_and_incomplete_blocks_do_not_count() {
        let chain = "From: Bob <bob@x.com>\nDate: Mon, 4 Mar 2024 10:00:00 +0000\nSubject: Fwd: Fwd: paid\n\nFrom: Venmo <venmo@venmo.com>\nSent: Friday, March 1, 2024 3:04 PM\nSubject: paid\n";
        let env = find_forwarded_header(chain).unwrap().into_envelope();
        assert_eq!(env.from.as_deref(), Some("venmo@venmo.com"));
        assert!(find_forwarded_header("From: a@b.c\nnothing else").is_none());
    }

    #[test]
    fn localized_outlook_and_apple_blocks_are_found() {
        let german = "________________________________\nVon: PayPal <service@paypal.de>\nGesendet: Freitag, 13. September 2024 03:05\nAn: Alex\nBetreff: Sie haben eine Zahlung gesendet\n";
        let h = find_forwarded_header(german).unwrap();
        assert_eq!(h.subject, "Sie haben eine Zahlung gesendet");
        let env = h.into_envelope();
        assert_eq!(env.from.as_deref(), Some("service@paypal.de"));
        // A date in German is not read; the message is dated as if none were printed.
        assert_eq!(env.date, None);

        // French puts a space, often non-breaking, before the colon.
        let french = "De\u{a0}: Cash App <cash@square.com>\nEnvoyé : vendredi 1 mars 2024 15:04\nÀ : Alex\nObjet : Jordan Lee sent you $25\n";
        let env = find_forwarded_header(french).unwrap().into_envelope();
        assert_eq!(env.from.as_deref(), Some("cash@square.com"));
        assert_eq!(env.subject, "Jordan Lee sent you $25");

        let spanish = "De: Splitwise <hello@splitwise.com>\nEnviado el: viernes, 1 de marzo de 2024 15:04\nPara: Alex\nAsunto: Jordan L. paid you $30.00\n";
        let env = find_forwarded_header(spanish).unwrap().into_envelope();
        assert_eq!(env.from.as_deref(), Some("hello@splitwise.com"));
        assert_eq!(env.subject, "Jordan L. paid you $30.00");

        let apple_german = "Anfang der weitergeleiteten Nachricht:\n\nVon: Apple <no_reply@email.apple.com>\nBetreff: You sent $40.00 to Morgan Ellis\nDatum: 12. September 2024 um 18:05:44 MESZ\nAn: alex@example.com\n";
        let env = find_forwarded_header(apple_german).unwrap().into_envelope();
        assert_eq!(env.from.as_deref(), Some("no_reply@email.apple.com"));

        // Outlook in British English: day first, 24-hour clock, no zone.
        let outlook_uk = "From: PayPal <service@paypal.co.uk>\nSent: Friday, 14 June 2024 12:20\nSubject: Receipt\n";
        let env = find_forwarded_header(outlook_uk).unwrap().into_envelope();
        assert_eq!(
            env.date,
            Some(MessageTime::Local(
                NaiveDateTime::parse_from_str("2024-06-14 12:20", "%Y-%m-%d %H:%M").unwrap()
            ))
        );

        let british = "From: PayPal <service@paypal.co.uk>\nSubject: Receipt\nDate: 14 June 2024 at 12:20:30 BST\n";
        let env = find_forwarded_header(british).unwrap().into_envelope();
        assert_eq!(
            env.date.unwrap().utc().unwrap().to_rfc3339(),
            "2024-06-14T11:20:30+00:00"
        );
    }

    #[test]
    fn outlook_and_gmail_sender_variants() {
        // Outlook with no display name, and Outlook's plain text with the mailto it appends.
        for from in [
            "cash@square.com",
            "Cash App <cash@square.com<mailto:cash@square.com>>",
            "\"cash@square.com\" <cash@square.com>",
            // Gmail's plain text marks the bold sender name with asterisks.
            "*Cash App* <cash@square.com>",
        ] {
            let block = format!(
                "From: {from}\nSent: Friday, March 1, 2024 3:04 PM\nTo: Alex\nSubject: x\n"
            );
            let env = find_forwarded_header(&block).unwrap().into_envelope();
            assert_eq!(env.from.as_deref(), Some("cash@square.com"), "{from}");
        }
        // Keys that merely start like a sender key are not one.
        assert!(
            find_forwarded_header("Description: a@b.c\nSubject: x\nDate: Mar 1, 2024").is_none()
        );
    }

    /// Each client's HTML-only forward, as rendered for rules, names the original.
    #[test]
    fn html_only_forwards_of_each_client() {
        let html_message = |html: &str| {
            format!("From: Alex <alex@example.com>\r\nSubject: Fwd: x\r\nDate: Sat, 02 Mar 2024 10:00:00 +0000\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}")
        };
        let gmail = r##"<div dir="ltr"><div class="gmail_quote"><div dir="ltr" class="gmail_attr">---------- Forwarded message ---------<br>From: <strong class="gmail_sendername" dir="auto">Cash App</strong> <span dir="auto">&lt;<a href="mailto:cash@square.com">cash@square.com</a>&gt;</span><br>Date: Fri, Mar 1, 2024 at 3:04 PM<br>Subject: Jordan Lee sent you $25<br>To:  &lt;<a href="mailto:alex@example.com">alex@example.com</a>&gt;<br></div><br><p>$25.00</p></div></div>"##;
        let outlook_web = r##"<hr style="display:inline-block;width:98%"><div id="divRplyFwdMsg" dir="ltr"><font face="Calibri, sans-serif" style="font-size:11pt" color="#000000"><b>From:</b> cash@square.com<br><b>Sent:</b> Friday, March 1, 2024 3:04 PM<br><b>To:</b> Alex Rivera &lt;alex@example.com&gt;<br><b>Subject:</b> Jordan Lee sent you $25</font><div>&nbsp;</div></div><p>$25.00</p>"##;
        let outlook_desktop = r##"<div style="border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0in 0in 0in"><p class="MsoNormal"><b>From:</b> Cash App &lt;cash@square.com&gt; <br><b>Sent:</b> Friday, March 1, 2024 3:04 PM<br><b>To:</b> Alex Rivera &lt;alex@example.com&gt;<br><b>Subject:</b> Jordan Lee sent you $25<o:p></o:p></p></div>"##;
        let apple = r##"<blockquote type="cite"><div>Begin forwarded message:</div><br class="Apple-interchange-newline"><div style="margin: 0px;"><span style="color:rgba(0, 0, 0, 1.0);"><b>From: </b></span><span>Cash App &lt;<a href="mailto:cash@square.com">cash@square.com</a>&gt;<br></span></div><div style="margin: 0px;"><span><b>Subject: </b></span><span><b>Jordan Lee sent you $25</b><br></span></div><div style="margin: 0px;"><span><b>Date: </b></span><span>March 1, 2024 at 3:04:05 PM PST<br></span></div><br><div><p>$25.00</p></div></blockquote>"##;
        for (client, html) in [
            ("gmail", gmail),
            ("outlook web", outlook_web),
            ("outlook desktop", outlook_desktop),
            ("apple mail", apple),
        ] {
            let email = crate::message::Email::parse(html_message(html).as_bytes()).unwrap();
            let original = email.original_envelope().expect(client);
            assert_eq!(
                original.from.as_deref(),
                Some("cash@square.com"),
                "{client}"
            );
            assert_eq!(original.subject, "Jordan Lee sent you $25", "{client}");
            assert!(original.date.is_some(), "{client}");
        }
    }

    #[test]
    fn addresses_are_found_in_loose_text() {
        assert_eq!(
            first_address("Venmo [mailto:Venmo@Venmo.com]").as_deref(),
            Some("venmo@venmo.com")
        );
        assert_eq!(
            first_address("x <a.b+c@d-e.f.>").as_deref(),
            Some("a.b+c@d-e.f")
        );
        assert_eq!(first_address("no at sign"), None);
        assert_eq!(first_address("@"), None);
    }
}

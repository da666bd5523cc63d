//! Forwarded mail: the header block a mail client writes above the quoted original.
//!
//! Gmail ("---------- Forwarded message ---------"), Outlook ("From: … Sent: … To: … Subject: …"
//! under a rule) and Apple Mail ("Begin forwarded message:") all write `Key: value` lines; we look
//! for a block with `From`, `Subject` and `Date`/`Sent` within a few lines of each other. In a chain
//! of forwards the innermost block names the original sender, so the last block wins.

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
    let lines: Vec<&str> = body.lines().map(strip_quoting).collect();
    let mut found = None;
    for (i, line) in lines.iter().enumerate() {
        let Some(from) = header_value(line, "from") else {
            continue;
        };
        let mut block = ForwardedHeader {
            from: from.to_owned(),
            ..Default::default()
        };
        for next in lines.iter().skip(i + 1).take(BLOCK_SPAN) {
            if let Some(v) = header_value(next, "subject") {
                block.subject = v.to_owned();
            } else if let Some(v) =
                header_value(next, "date").or_else(|| header_value(next, "sent"))
            {
                block.date = v.to_owned();
            } else if header_value(next, "from").is_some() {
                break;
            }
        }
        if !block.subject.is_empty() && !block.date.is_empty() {
            found = Some(block);
        }
    }
    found
}

/// Drops `>` quoting and the `*bold*` marks plain-text Outlook puts around keys.
fn strip_quoting(line: &str) -> &str {
    line.trim_start_matches(|c: char| c == '>' || c.is_whitespace())
        .trim_end()
}

fn header_value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let line = line.strip_prefix('*').unwrap_or(line);
    let head = line.get(..key.len())?;
    if !head.eq_ignore_ascii_case(key) {
        return None;
    }
    let rest = &line[key.len()..];
    let rest = rest.strip_prefix('*').unwrap_or(rest);
    let rest = rest.strip_prefix(':')?;
    let rest = rest.strip_prefix('*').unwrap_or(rest);
    Some(rest.trim())
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
/// `Friday, March 1, 2024 3:04 PM` (Outlook), `March 1, 2024 at 3:04:05 PM PST` (Apple Mail).
/// Without a zone the time is the forwarder's local time and stays naive.
pub fn parse_loose_date(text: &str) -> Option<MessageTime> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(ts) = mailparse::dateparse(text) {
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
    let offset_hours = words.last().and_then(|w| us_zone_offset(w));
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

fn us_zone_offset(word: &str) -> Option<i32> {
    Some(match word.to_ascii_uppercase().as_str() {
        "UTC" | "GMT" => 0,
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

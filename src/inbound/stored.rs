//! Stored input read back: a stored request goes through the same extraction it went through
//! when it arrived, so re-parsing and listing see exactly what the routes saw.

use super::{email, hooks, mailgun, postmark, sendgrid, Extracted, Malformed};
use crate::store::StoredMessage;

pub fn reextract(message: &StoredMessage) -> Result<Extracted, Malformed> {
    let raw = message.raw.as_slice();
    match message.route.as_str() {
        "email" => email::extract(raw),
        "mailgun" => mailgun::extract(&message.content_type, raw),
        "postmark" => postmark::extract(raw),
        "sendgrid" => sendgrid::extract(&message.content_type, raw),
        "hook" => {
            let plugin = message
                .source
                .as_deref()
                .ok_or_else(|| Malformed("stored webhook without its plugin".into()))?;
            let headers = message.meta["headers"]
                .as_array()
                .map(|pairs| {
                    pairs
                        .iter()
                        .filter_map(|p| {
                            Some((
                                p.get(0)?.as_str()?.to_owned(),
                                p.get(1)?.as_str()?.to_owned(),
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let fetched = message.meta.get("fetched").cloned();
            hooks::extract(plugin, headers, raw, fetched)
        }
        other => Err(Malformed(format!("unknown route {other:?}"))),
    }
}

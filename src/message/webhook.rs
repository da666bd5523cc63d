//! JSON webhooks: the body and the request headers that came with it.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("empty body")]
    Empty,
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
}

#[derive(Debug, Clone)]
pub struct Webhook {
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Webhook {
    /// Parses a JSON body. Nesting deeper than serde_json's recursion limit (128) is an error,
    /// not a stack overflow.
    pub fn parse(headers: Vec<(String, String)>, raw: &[u8]) -> Result<Webhook, WebhookError> {
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Err(WebhookError::Empty);
        }
        let body =
            serde_json::from_slice(raw).map_err(|e| WebhookError::InvalidJson(e.to_string()))?;
        let headers = headers
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        Ok(Webhook { headers, body })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_json_and_refuses_junk() {
        let hook = Webhook::parse(vec![("X-Sig".into(), "1".into())], br#"{"a": 1.10}"#).unwrap();
        assert_eq!(hook.header("x-sig"), Some("1"));
        assert_eq!(
            hook.body["a"].to_string(),
            "1.10",
            "numbers keep their exact text"
        );
        assert_eq!(
            Webhook::parse(vec![], b" ").unwrap_err(),
            WebhookError::Empty
        );
        assert!(matches!(
            Webhook::parse(vec![], b"{").unwrap_err(),
            WebhookError::InvalidJson(_)
        ));
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        assert!(Webhook::parse(vec![], deep.as_bytes()).is_err());
    }
}

//! HTML form bodies as providers post them: `application/x-www-form-urlencoded` and
//! `multipart/form-data` (which is MIME, so mailparse reads it).

use super::Malformed;

/// Field name and raw value, in order; repeated names are kept.
pub type Fields = Vec<(String, Vec<u8>)>;

pub fn parse(content_type: &str, body: &[u8]) -> Result<Fields, Malformed> {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/x-www-form-urlencoded" => {
            let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
                .map_err(|e| Malformed(format!("invalid form body: {e}")))?;
            Ok(pairs.into_iter().map(|(k, v)| (k, v.into_bytes())).collect())
        }
        "multipart/form-data" => multipart(content_type, body),
        "" => Err(Malformed("missing Content-Type: expected a form".into())),
        other => Err(Malformed(format!(
            "Content-Type {other} is not a form (application/x-www-form-urlencoded or multipart/form-data)"
        ))),
    }
}

fn multipart(content_type: &str, body: &[u8]) -> Result<Fields, Malformed> {
    let parsed_type = mailparse::parse_content_type(content_type);
    if !parsed_type.params.contains_key("boundary") {
        return Err(Malformed("multipart/form-data without a boundary".into()));
    }
    let mut framed = format!("Content-Type: {content_type}\r\n\r\n").into_bytes();
    framed.extend_from_slice(body);
    let parsed = mailparse::parse_mail(&framed)
        .map_err(|e| Malformed(format!("invalid multipart body: {e}")))?;
    let mut fields = Vec::new();
    for part in &parsed.subparts {
        let disposition = part.get_content_disposition();
        let Some(name) = disposition.params.get("name") else {
            continue;
        };
        let value = part
            .get_body_raw()
            .map_err(|e| Malformed(format!("field {name}: {e}")))?;
        fields.push((name.clone(), value));
    }
    if fields.is_empty() {
        return Err(Malformed("multipart/form-data with no named fields".into()));
    }
    Ok(fields)
}

/// The first value of `name` as text (invalid UTF-8 replaced).
pub fn text(fields: &Fields, name: &str) -> Option<String> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

pub fn bytes<'a>(fields: &'a Fields, name: &str) -> Option<&'a [u8]> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urlencoded_and_multipart() {
        let fields = parse("application/x-www-form-urlencoded", b"a=1&b=x+y%26z&a=2").unwrap();
        assert_eq!(text(&fields, "b").as_deref(), Some("x y&z"));
        assert_eq!(fields.iter().filter(|(k, _)| k == "a").count(), 2);
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"subject\"\r\n\r\nHi there\r\n--XyZ\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\nFrom: a@b.c\r\n\r\nbody\xff\r\n--XyZ--\r\n";
        let fields = parse("multipart/form-data; boundary=XyZ", body).unwrap();
        assert_eq!(text(&fields, "subject").as_deref(), Some("Hi there"));
        assert_eq!(
            bytes(&fields, "email"),
            Some(&b"From: a@b.c\r\n\r\nbody\xff"[..])
        );
    }

    #[test]
    fn refuses_what_is_not_a_form() {
        assert!(parse("application/json", b"{}")
            .unwrap_err()
            .0
            .contains("is not a form"));
        assert!(parse("", b"a=1").is_err());
        assert!(parse("multipart/form-data", b"x")
            .unwrap_err()
            .0
            .contains("boundary"));
        assert!(parse("multipart/form-data; boundary=q", b"no parts here").is_err());
    }
}

//! Exact money. Amounts are kept as an integer count of `10^-scale` units and rendered as decimal
//! strings; no float ever touches a value.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Lunch Money accepts at most four decimal places (`^-?\d+(\.\d{1,4})?$`).
pub const MAX_SCALE: u32 = 4;
/// Enough for any real amount while staying far from `i128` overflow.
const MAX_DIGITS: usize = 24;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("no digits in amount {0:?}")]
    NoDigits(String),
    #[error("amount {0:?} has too many digits")]
    TooLong(String),
    #[error("amount {0:?} has more than {MAX_SCALE} decimal places")]
    TooPrecise(String),
    #[error("amount {0:?} has unexpected characters")]
    Garbage(String),
}

/// A signed decimal amount: `units / 10^scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amount {
    units: i128,
    scale: u32,
}

impl Amount {
    pub fn from_minor(units: i128, scale: u32) -> Self {
        Amount { units, scale }
    }

    pub fn is_negative(&self) -> bool {
        self.units < 0
    }

    pub fn negate(self) -> Self {
        Amount {
            units: -self.units,
            scale: self.scale,
        }
    }

    pub fn abs(self) -> Self {
        Amount {
            units: self.units.abs(),
            scale: self.scale,
        }
    }

    /// Reads an amount as people and emails print it: `$1,234.56`, `- $25.00`, `+ $ 386 . 70`,
    /// `€15.50 EUR`, `1.234,56`, `(12.00)`, `12.00-`.
    ///
    /// Separators: when both `,` and `.` appear, the last one is the decimal point. When only one
    /// kind appears, it is a thousands separator if it occurs more than once or is followed by
    /// exactly three digits, and the decimal point otherwise. Anything but digits, separators, signs,
    /// whitespace, currency symbols and letters (currency codes) is rejected.
    pub fn parse_display(text: &str) -> Result<Self, AmountError> {
        let err_text = || text.chars().take(64).collect::<String>();
        let mut negative = false;
        // The digits and separators, one byte each (so never more bytes than `text`), kept on
        // the stack for amounts as printed: this runs once per transaction.
        let mut on_stack = [0u8; 64];
        let mut on_heap = Vec::new();
        let buffer: &mut [u8] = if text.len() <= on_stack.len() {
            &mut on_stack
        } else {
            on_heap.resize(text.len(), 0);
            &mut on_heap
        };
        let mut len = 0;
        for c in text.chars() {
            match c {
                '0'..='9' | ',' | '.' => {
                    buffer[len] = c as u8;
                    len += 1;
                }
                '-' | '\u{2212}' | '\u{2013}' | '(' => negative = true,
                '+' | ')' | '\'' | '\u{2019}' => {}
                c if c.is_whitespace() || c.is_alphabetic() || is_currency_symbol(c) => {}
                _ => return Err(AmountError::Garbage(err_text())),
            }
        }
        let cleaned = std::str::from_utf8(&buffer[..len]).expect("ASCII digits and separators");
        // Swiss style `1'234.50`: apostrophes were dropped above as grouping marks.
        if !cleaned.bytes().any(|b| b.is_ascii_digit()) {
            return Err(AmountError::NoDigits(err_text()));
        }
        let decimal_sep = decimal_separator(cleaned);
        let mut units: i128 = 0;
        let mut scale = 0u32;
        let mut seen_point = false;
        let mut digits = 0usize;
        for c in cleaned.chars() {
            if c.is_ascii_digit() {
                digits += 1;
                if digits > MAX_DIGITS {
                    return Err(AmountError::TooLong(err_text()));
                }
                units = units * 10 + i128::from(c as u8 - b'0');
                if seen_point {
                    scale += 1;
                }
            } else if Some(c) == decimal_sep {
                if seen_point {
                    return Err(AmountError::Garbage(err_text()));
                }
                seen_point = true;
            }
        }
        let amount = Amount { units, scale }.trimmed();
        if amount.scale > MAX_SCALE {
            return Err(AmountError::TooPrecise(err_text()));
        }
        Ok(if negative { amount.negate() } else { amount })
    }

    /// Reads a plain machine decimal (`-12.5`, `1200`) or an integer of minor units when
    /// `minor_scale` is given (`1250` with scale 2 is `12.50`).
    pub fn parse_plain(text: &str, minor_scale: Option<u32>) -> Result<Self, AmountError> {
        let t = text.trim();
        let (negative, digits) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t.strip_prefix('+').unwrap_or(t)),
        };
        let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
        let valid = !int_part.is_empty()
            && int_part.bytes().all(|b| b.is_ascii_digit())
            && frac_part.bytes().all(|b| b.is_ascii_digit());
        if !valid {
            return Err(AmountError::Garbage(t.chars().take(64).collect()));
        }
        if int_part.len() + frac_part.len() > MAX_DIGITS {
            return Err(AmountError::TooLong(t.chars().take(64).collect()));
        }
        let mut units: i128 = 0;
        for b in int_part.bytes().chain(frac_part.bytes()) {
            units = units * 10 + i128::from(b - b'0');
        }
        let mut scale = frac_part.len() as u32;
        if let Some(minor) = minor_scale {
            scale += minor;
        }
        let amount = Amount { units, scale }.trimmed();
        if amount.scale > MAX_SCALE {
            return Err(AmountError::TooPrecise(t.chars().take(64).collect()));
        }
        Ok(if negative { amount.negate() } else { amount })
    }

    /// Drops trailing zero decimals: `12.50` becomes `12.5`; `render` pads them back.
    fn trimmed(mut self) -> Self {
        while self.scale > 0 && self.units % 10 == 0 {
            self.units /= 10;
            self.scale -= 1;
        }
        self
    }

    /// The decimal string with at least `min_decimals` decimals (the currency's exponent).
    pub fn render(&self, min_decimals: u32) -> String {
        let scale = self.scale.max(min_decimals);
        let units = self.units * 10i128.pow(scale - self.scale);
        let scale = scale as usize;
        // The magnitude's digits, last first, with zeros up to one before the point ("0.05").
        // Written out by hand: `i128` formatting divides in 128 bits for every digit.
        let mut digits = [0u8; 40];
        let mut count = 0;
        let mut wide = units.unsigned_abs();
        while wide > u128::from(u64::MAX) {
            digits[count] = b'0' + (wide % 10) as u8;
            wide /= 10;
            count += 1;
        }
        let mut magnitude = wide as u64;
        while magnitude > 0 || count <= scale {
            digits[count] = b'0' + (magnitude % 10) as u8;
            magnitude /= 10;
            count += 1;
        }
        let mut out = String::with_capacity(count + 2);
        if units < 0 {
            out.push('-');
        }
        out.extend(digits[scale..count].iter().rev().map(|&d| char::from(d)));
        if scale > 0 {
            out.push('.');
            out.extend(digits[..scale].iter().rev().map(|&d| char::from(d)));
        }
        out
    }
}

fn is_currency_symbol(c: char) -> bool {
    matches!(
        c,
        '$' | '€'
            | '£'
            | '¥'
            | '₹'
            | '₩'
            | '₽'
            | '₺'
            | '₪'
            | '₫'
            | '₱'
            | '฿'
            | '₦'
            | '¢'
            | '₴'
            | '₡'
    )
}

fn decimal_separator(cleaned: &str) -> Option<char> {
    let last_comma = cleaned.rfind(',');
    let last_dot = cleaned.rfind('.');
    match (last_comma, last_dot) {
        (Some(c), Some(d)) => Some(if c > d { ',' } else { '.' }),
        (None, None) => None,
        (Some(pos), None) | (None, Some(pos)) => {
            let sep = cleaned[pos..].chars().next()?;
            let occurrences = cleaned.matches(sep).count();
            let digits_after = cleaned[pos + 1..]
                .chars()
                .take_while(char::is_ascii_digit)
                .count();
            if occurrences > 1 || digits_after == 3 {
                None
            } else {
                Some(sep)
            }
        }
    }
}

/// How many decimals a currency's minor unit has (ISO 4217 exponent).
pub fn currency_exponent(code: &str) -> u32 {
    match code {
        "bif" | "clp" | "djf" | "gnf" | "isk" | "jpy" | "kmf" | "krw" | "pyg" | "rwf" | "ugx"
        | "uyi" | "vnd" | "vuv" | "xaf" | "xof" | "xpf" => 0,
        "bhd" | "iqd" | "jod" | "kwd" | "lyd" | "omr" | "tnd" => 3,
        _ => 2,
    }
}

/// Normalises a currency as printed (`USD`, `usd`, `€`) to lowercase ISO 4217.
pub fn normalize_currency(text: &str) -> Option<String> {
    let t = text.trim();
    let code = match t {
        "$" | "US$" => "usd",
        "€" => "eur",
        "£" => "gbp",
        "¥" => "jpy",
        "₹" => "inr",
        "₩" => "krw",
        "C$" | "CA$" => "cad",
        "A$" | "AU$" => "aud",
        _ if t.len() == 3 && t.bytes().all(|b| b.is_ascii_alphabetic()) => {
            return Some(t.to_ascii_lowercase())
        }
        _ => return None,
    };
    Some(code.to_string())
}

/// An amount already rendered for its currency, as carried in a transaction: an exact decimal
/// string, negative when money leaves the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Money(String);

impl Money {
    pub fn new(amount: Amount, currency: &str) -> Self {
        Money(amount.render(currency_exponent(currency)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn display(text: &str) -> String {
        Amount::parse_display(text).unwrap().render(2)
    }

    #[test]
    fn reads_printed_amounts() {
        assert_eq!(display("$25.00"), "25.00");
        assert_eq!(display("- $25.00"), "-25.00");
        assert_eq!(display("+ $1,234.56"), "1234.56");
        assert_eq!(display("$ 386 . 70"), "386.70");
        assert_eq!(display("€15.50 EUR"), "15.50");
        assert_eq!(display("1.234,56 €"), "1234.56");
        assert_eq!(display("1,234"), "1234.00");
        assert_eq!(display("12,5"), "12.50");
        assert_eq!(display("(12.00)"), "-12.00");
        assert_eq!(display("1,234,567.8"), "1234567.80");
        assert_eq!(display("1'234.50"), "1234.50");
        assert_eq!(display("0.0001"), "0.0001");
        // Longer than the stack buffer: read the same way.
        let padded = format!("{}$1,234.56 USD{}", " ".repeat(40), " ".repeat(40));
        assert_eq!(display(&padded), "1234.56");
        let long = format!("-{}{}", "1".repeat(20), " ".repeat(50));
        assert_eq!(display(&long), format!("-{}.00", "1".repeat(20)));
    }

    #[test]
    fn rejects_what_is_not_an_amount() {
        assert!(matches!(
            Amount::parse_display("$"),
            Err(AmountError::NoDigits(_))
        ));
        assert!(matches!(
            Amount::parse_display("1.2.3,4,5"),
            Err(AmountError::Garbage(_))
        ));
        assert!(matches!(
            Amount::parse_display("0.00001"),
            Err(AmountError::TooPrecise(_))
        ));
        assert!(matches!(
            Amount::parse_display(&"9".repeat(40)),
            Err(AmountError::TooLong(_))
        ));
        assert!(Amount::parse_display("12#00").is_err());
    }

    #[test]
    fn reads_machine_amounts_and_minor_units() {
        assert_eq!(
            Amount::parse_plain("-1250", Some(2)).unwrap().render(2),
            "-12.50"
        );
        assert_eq!(
            Amount::parse_plain("500", Some(0)).unwrap().render(0),
            "500"
        );
        assert_eq!(
            Amount::parse_plain("12.5", None).unwrap().render(2),
            "12.50"
        );
        assert_eq!(Amount::parse_plain("+7", None).unwrap().render(3), "7.000");
        assert!(Amount::parse_plain("1e5", None).is_err());
        assert!(Amount::parse_plain("", None).is_err());
        assert!(Amount::parse_plain(".5", None).is_err());
    }

    /// `render` as it was written with `format!`, to check the hand-written digits against.
    fn render_by_format(amount: &Amount, min_decimals: u32) -> String {
        let scale = amount.scale.max(min_decimals);
        let units = amount.units * 10i128.pow(scale - amount.scale);
        let magnitude = units.unsigned_abs().to_string();
        let sign = if units < 0 { "-" } else { "" };
        if scale == 0 {
            return format!("{sign}{magnitude}");
        }
        let scale = scale as usize;
        let padded = format!("{magnitude:0>width$}", width = scale + 1);
        let (int_part, frac_part) = padded.split_at(padded.len() - scale);
        format!("{sign}{int_part}.{frac_part}")
    }

    #[test]
    fn renders_as_format_did() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut units = vec![
            0i128,
            1,
            -1,
            9,
            10,
            -10,
            i128::from(u64::MAX),
            -i128::from(u64::MAX),
        ];
        units.extend([
            i128::from(u64::MAX) + 1,
            10i128.pow(30),
            -(10i128.pow(30)) - 7,
        ]);
        for _ in 0..3000 {
            state = crate::test_rng::xorshift64(state);
            let digits = state % 20;
            units.push(
                (state >> 8) as i128 % 10i128.pow(digits as u32 + 1)
                    * if state & 1 == 0 { 1 } else { -1 },
            );
        }
        for &u in &units {
            for scale in 0..=6 {
                let amount = Amount { units: u, scale };
                for min in 0..=4 {
                    assert_eq!(
                        amount.render(min),
                        render_by_format(&amount, min),
                        "{u} {scale} {min}"
                    );
                }
            }
        }
    }

    #[test]
    fn renders_per_currency_exponent() {
        let yen = Amount::parse_plain("1500", Some(0)).unwrap();
        assert_eq!(Money::new(yen, "jpy").as_str(), "1500");
        let dinar = Amount::parse_plain("1.5", None).unwrap();
        assert_eq!(Money::new(dinar, "kwd").as_str(), "1.500");
        assert_eq!(Money::new(dinar.negate(), "usd").as_str(), "-1.50");
        let tiny = Amount::parse_plain("-0.05", None).unwrap();
        assert_eq!(tiny.render(2), "-0.05");
    }

    #[test]
    fn normalizes_currencies() {
        assert_eq!(normalize_currency("USD").as_deref(), Some("usd"));
        assert_eq!(normalize_currency("€").as_deref(), Some("eur"));
        assert_eq!(normalize_currency("dollars"), None);
    }
}

//! Exact parsing of money amounts into `Decimal128(18,4)`.
//!
//! Networks send amounts as text. We accept only plain decimal notation (`49.99`, `-12`,
//! `0.5000`): no exponent, no `NaN`/`inf`, no thousands or decimal commas, no `+`, no leading or
//! trailing dot, at most [`MAX_INTEGER_DIGITS`] significant integer digits and at most
//! [`SCALE`] fraction digits unless the extra digits are zeros. The result is exact: no float is
//! ever involved.

use rust_decimal::Decimal;

/// Fraction digits stored for money (`Decimal128(18,4)`): enough for sub-cent payouts and
/// currencies with three minor digits, and the precision the contract fixes.
pub const SCALE: u32 = 4;
/// Integer digits that fit beside [`SCALE`] in 18 digits of precision.
pub const MAX_INTEGER_DIGITS: usize = 14;
/// Arrow/Parquet precision of money columns.
pub const PRECISION: u8 = 18;
/// Longest amount text we look at at all; anything longer is refused before any work. Generous
/// enough for leading zeros and trailing zero fraction digits some systems pad with.
const MAX_TEXT_LEN: usize = 64;

/// Why an amount was refused; the message is shown to the caller who sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("is empty")]
    Empty,
    #[error(
        "must be a plain decimal number such as 49.99 (digits, one optional '.', no exponent, comma or spaces)"
    )]
    Syntax,
    #[error("has more than 14 integer digits")]
    TooLarge,
    #[error("has more than 4 fraction digits")]
    TooPrecise,
}

/// Parses `text` as an exact decimal with at most 4 fraction digits. A leading `-` is accepted;
/// sign rules (≥ 0, ≠ 0) belong to the caller.
pub fn parse(text: &str) -> Result<Decimal, AmountError> {
    if text.is_empty() {
        return Err(AmountError::Empty);
    }
    if text.len() > MAX_TEXT_LEN {
        return Err(AmountError::TooLarge);
    }
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int_part, frac_part) = match unsigned.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (unsigned, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int_part) || frac_part.is_some_and(|f| !all_digits(f)) {
        return Err(AmountError::Syntax);
    }
    let significant = int_part.trim_start_matches('0');
    if significant.len() > MAX_INTEGER_DIGITS {
        return Err(AmountError::TooLarge);
    }
    let frac = frac_part.unwrap_or("");
    let (kept, extra) = frac.split_at(frac.len().min(SCALE as usize));
    if extra.bytes().any(|b| b != b'0') {
        return Err(AmountError::TooPrecise);
    }
    // At most 14 + 4 digits: fits an i64 easily, so this arithmetic cannot overflow.
    let mut units: i64 = 0;
    for b in significant.bytes().chain(kept.bytes()) {
        units = units * 10 + i64::from(b - b'0');
    }
    for _ in kept.len()..SCALE as usize {
        units *= 10;
    }
    if negative {
        units = -units;
    }
    Ok(Decimal::new(units, SCALE))
}

/// The `Decimal128(18,4)` mantissa of `value`, or `None` when it does not fit.
pub fn to_units(value: Decimal) -> Option<i128> {
    let mut v = value;
    v.rescale(SCALE);
    if v.scale() != SCALE || v != value {
        return None;
    }
    let m = v.mantissa();
    (m.abs() < 10_i128.pow(u32::from(PRECISION))).then_some(m)
}

/// The exact decimal of a `Decimal128(_, 4)` mantissa.
pub fn from_units(units: i128) -> Decimal {
    Decimal::from_i128_with_scale(units, SCALE)
}

/// Money for people and JSON: every digit it has, and at least cents (`"49.99"`, `"50.00"`,
/// `"0.0125"`).
pub fn display(value: Decimal) -> String {
    let mut n = value.normalize();
    if n.scale() < 2 {
        n.rescale(2);
    }
    n.to_string()
}

/// Formats money with exactly `places` fraction digits, rounding half-even, e.g. `"49.99"`.
pub fn format(value: Decimal, places: u32) -> String {
    let mut v =
        value.round_dp_with_strategy(places, rust_decimal::RoundingStrategy::MidpointNearestEven);
    v.rescale(places);
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn accepts_plain_decimals() {
        for (text, want) in [
            ("49.99", "49.99"),
            ("0", "0"),
            ("-12", "-12"),
            ("0.5000", "0.5"),
            ("007.10", "7.1"),
            ("12.345600", "12.3456"),
            ("99999999999999.9999", "99999999999999.9999"),
            ("00000000000000000001", "1"),
        ] {
            assert_eq!(parse(text).unwrap(), d(want), "{text}");
            assert_eq!(parse(text).unwrap().scale(), SCALE, "{text}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        for text in [
            "",
            "abc",
            "1e3",
            "NaN",
            "nan",
            "inf",
            "12,50",
            "1,000.00",
            "+5",
            ".5",
            "5.",
            "1.2.3",
            " 5",
            "5 ",
            "--5",
            "-",
            "0x10",
            "12.34567",
            "123456789012345",
            "12345678901234567890",
            "1_000",
            "٣",
            "1.00001",
        ] {
            assert!(parse(text).is_err(), "{text:?} was accepted");
        }
    }

    #[test]
    fn units_round_trip() {
        for s in ["0", "49.99", "-0.0001", "99999999999999.9999"] {
            let v = d(s);
            assert_eq!(from_units(to_units(v).unwrap()), v);
        }
        assert_eq!(to_units(d("0.00001")), None, "rounding would lose money");
        assert_eq!(to_units(d("100000000000000")), None);
    }

    #[test]
    fn formats_with_fixed_places() {
        assert_eq!(format(d("49.9"), 2), "49.90");
        assert_eq!(format(d("0.125"), 2), "0.12");
        assert_eq!(format(d("0.135"), 2), "0.14");
        assert_eq!(format(d("-3"), 4), "-3.0000");
    }

    proptest::proptest! {
        #[test]
        fn parse_is_exact(units in -999_999_999_999_999_999_i64..=999_999_999_999_999_999_i64) {
            let value = Decimal::new(units, SCALE);
            let text = value.to_string();
            proptest::prop_assert_eq!(parse(&text).unwrap(), value);
        }
    }
}

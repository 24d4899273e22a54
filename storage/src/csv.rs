//! The one rule every CSV netrev writes follows for text cells: CSV (formula) injection.
//!
//! Sources, campaigns and other dimensions arrive in postbacks from anyone who can reach the
//! click URL. A spreadsheet that opens an export runs a cell such as `=HYPERLINK("http://x")`
//! or `@SUM(…)` as a formula. Following OWASP ("CSV Injection"), a text cell whose first
//! character starts a formula gets a leading `'`, which spreadsheets show as text; the caller
//! then quotes the cell as CSV needs. Only text cells take this path: numbers and money (such as
//! a negative `-5.00`) are written unchanged, so they stay numbers for whoever reads the file.

use std::borrow::Cow;

/// First characters that make a spreadsheet read a cell as a formula (OWASP): `=`, `+`, `-`,
/// `@`, tab and carriage return, and the full-width `＝＋－＠` some spreadsheets take for them.
const FORMULA_STARTS: [char; 10] = [
    '=', '+', '-', '@', '\t', '\r', '\u{ff1d}', '\u{ff0b}', '\u{ff0d}', '\u{ff20}',
];

/// `s` as a safe CSV text cell: with a leading `'` when it starts like a formula, after any
/// white space or byte-order mark a spreadsheet may skip, otherwise unchanged (and not copied).
/// Apply only to text, never to numbers or money.
pub fn neutralise_csv_formula(s: &str) -> Cow<'_, str> {
    let start = s.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    if s.starts_with(FORMULA_STARTS) || start.starts_with(FORMULA_STARTS) {
        Cow::Owned(format!("'{s}"))
    } else {
        Cow::Borrowed(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_starts_get_a_leading_quote() {
        for (cell, safe) in [
            (r#"=HYPERLINK("http://x")"#, r#"'=HYPERLINK("http://x")"#),
            ("@SUM(1)", "'@SUM(1)"),
            ("+1+2", "'+1+2"),
            ("-2+3", "'-2+3"),
            ("\tcmd", "'\tcmd"),
            ("\r=1", "'\r=1"),
            ("=", "'="),
            (" =1+1", "' =1+1"),
            ("\u{a0}=1", "'\u{a0}=1"),
            ("\u{feff}=1", "'\u{feff}=1"),
            ("\n=1", "'\n=1"),
            ("\u{ff1d}1+1", "'\u{ff1d}1+1"),
        ] {
            let out = neutralise_csv_formula(cell);
            assert!(matches!(out, Cow::Owned(_)), "{cell:?}");
            assert_eq!(out, safe, "{cell:?}");
        }
    }

    #[test]
    fn safe_text_is_borrowed_unchanged() {
        for cell in [
            "fb",
            "",
            "summer=sale",
            "a-b",
            " 1",
            "'=already",
            "2026-03-08",
        ] {
            let out = neutralise_csv_formula(cell);
            assert!(matches!(out, Cow::Borrowed(_)), "{cell:?}");
            assert_eq!(out, cell);
        }
    }
}

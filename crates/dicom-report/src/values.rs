//! Checks input strings and numbers against the DICOM value representation they are written as
//! (PS3.5 §6.2), and formats numbers as Decimal Strings.
//!
//! dicom-rs writes whatever it is given, so an over-long Code Meaning or a backslash in an LO
//! would produce an object a PACS may refuse; these checks turn that into a `CheckInput` error
//! naming the field instead.

use crate::error::{ObjectKind, WriteError};
use crate::model::Code;
use crate::uid::Uid;

/// The text value representations this crate writes from input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TextVr {
    /// Short String, 16 characters.
    Sh,
    /// Long String, 64 characters.
    Lo,
    /// Unlimited Text (Text Value of a TEXT content item), may hold line breaks.
    Ut,
    /// Person Name: each of up to three component groups at most 64 characters.
    Pn,
}

/// Checks values for one object; errors say which object and field.
pub(crate) struct Check {
    pub object: ObjectKind,
}

impl Check {
    pub fn fail(&self, field: impl Into<String>, problem: impl Into<String>) -> WriteError {
        WriteError::CheckInput { object: self.object, field: field.into(), problem: problem.into() }
    }

    pub fn text(&self, field: &str, value: &str, vr: TextVr) -> Result<(), WriteError> {
        let multi_line = vr == TextVr::Ut;
        for c in value.chars() {
            // ST and UT may hold CR, LF and FF; no VR here may hold other control characters.
            let allowed_control = multi_line && matches!(c, '\r' | '\n' | '\u{0c}');
            if c.is_control() && !allowed_control {
                return Err(self.fail(field, "holds a control character its value representation does not allow"));
            }
            // The backslash separates values in SH, LO and PN.
            if c == '\\' && !multi_line {
                return Err(self.fail(field, "holds a backslash, which separates values in its value representation"));
            }
        }
        let max = match vr {
            TextVr::Sh => Some(16),
            TextVr::Lo => Some(64),
            TextVr::Ut => None,
            TextVr::Pn => {
                for group in value.split('=') {
                    if group.chars().count() > 64 {
                        return Err(self.fail(field, "has a person name component group longer than 64 characters"));
                    }
                }
                if value.split('=').count() > 3 {
                    return Err(self.fail(field, "has more than three person name component groups"));
                }
                None
            }
        };
        if let Some(max) = max
            && value.chars().count() > max
        {
            return Err(self.fail(field, format!("is longer than {max} characters")));
        }
        Ok(())
    }

    pub fn non_empty_text(&self, field: &str, value: &str, vr: TextVr) -> Result<(), WriteError> {
        if value.trim().is_empty() {
            return Err(self.fail(field, "is empty"));
        }
        self.text(field, value, vr)
    }

    pub fn uid(&self, field: &str, value: &str) -> Result<Uid, WriteError> {
        Uid::parse(value).map_err(|e| self.fail(field, e.to_string()))
    }

    /// A coded concept: Code Value (SH, or UC as Long Code Value when longer than 16), Coding
    /// Scheme Designator (SH) and Code Meaning (LO), all required (PS3.3 Table 8.8-1).
    pub fn code(&self, field: &str, code: &Code) -> Result<(), WriteError> {
        self.non_empty_text(&format!("{field}.value"), &code.value, TextVr::Ut)?;
        if code.value.contains(['\\', '\r', '\n']) {
            return Err(self.fail(format!("{field}.value"), "holds a backslash or a line break"));
        }
        self.non_empty_text(&format!("{field}.scheme"), &code.scheme, TextVr::Sh)?;
        self.non_empty_text(&format!("{field}.meaning"), &code.meaning, TextVr::Lo)
    }

    pub fn unit_interval(&self, field: &str, value: f64) -> Result<(), WriteError> {
        if !(0.0..=1.0).contains(&value) {
            return Err(self.fail(field, "is not a number in [0, 1]"));
        }
        Ok(())
    }

    pub fn finite(&self, field: &str, value: f64) -> Result<(), WriteError> {
        if !value.is_finite() {
            return Err(self.fail(field, "is not a finite number"));
        }
        Ok(())
    }
}

/// A finite number as a Decimal String of at most 16 characters (PS3.5 §6.2 DS).
///
/// The shortest round-trip form (plain, else exponent) when it fits; otherwise the most significant digits that fit, in
/// exponent form. Where this loses precision, the writer adds the exact value as Floating Point
/// Value (0040,A161) too.
pub(crate) fn format_ds(value: f64) -> String {
    debug_assert!(value.is_finite());
    // Rust's `{}` and `{:e}` both print the shortest string that reads back as the same f64.
    for shortest in [format!("{value}"), format!("{value:e}")] {
        if shortest.len() <= 16 {
            return shortest;
        }
    }
    (0..=15).rev().map(|digits| format!("{value:.digits$e}")).find(|s| s.len() <= 16).expect("a 1-digit exponent form fits 16 characters")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_ds(value: f64, expected: &str) {
        let s = format_ds(value);
        assert_eq!(s, expected, "{value}");
        assert!(s.len() <= 16);
        let back: f64 = s.parse().unwrap();
        // 16 characters keep at least 10 significant digits; the FD carries the rest.
        assert!((back - value).abs() <= value.abs() * 1e-9, "{value} -> {s}");
    }

    #[test]
    fn decimal_strings_fit_sixteen_characters() {
        check_ds(0.5, "0.5");
        check_ds(1.0, "1");
        check_ds(0.0, "0");
        check_ds(0.1 + 0.2, "3.00000000000e-1");
        check_ds(-0.123456789012345, "-1.2345678901e-1");
        check_ds(1e-300, "1e-300");
        check_ds(123456789012345678.0, "1.23456789012e17");
    }

    #[test]
    fn text_checks_name_the_field_and_not_the_value() {
        let check = Check { object: ObjectKind::MeasurementReport };
        let err = check.text("study.patient_id", "JANE\\DOE", TextVr::Lo).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("study.patient_id"), "{message}");
        assert!(!message.contains("JANE"), "{message}");
        assert!(check.text("x", &"a".repeat(64), TextVr::Lo).is_ok());
        assert!(check.text("x", &"a".repeat(65), TextVr::Lo).is_err());
        assert!(check.text("x", "line one\nline two", TextVr::Ut).is_ok());
        assert!(check.text("x", "line one\nline two", TextVr::Lo).is_err());
        assert!(check.text("x", "tab\there", TextVr::Ut).is_err());
        assert!(check.text("x", "Doe^Jane=ドウ^ジェーン", TextVr::Pn).is_ok());
    }
}

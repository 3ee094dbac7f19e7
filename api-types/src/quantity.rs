//! Resource quantities (`resource.Quantity`): upstream's grammar, canonical form and ordering.
//!
//! ```text
//! <quantity>        ::= <signedNumber><suffix>
//! <signedNumber>    ::= <number> | <sign><number>
//! <number>          ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
//! <suffix>          ::= <binarySI> | <decimalExponent> | <decimalSI>
//! <binarySI>        ::= Ki | Mi | Gi | Ti | Pi | Ei
//! <decimalSI>       ::= n | u | m | "" | k | M | G | T | P | E
//! <decimalExponent> ::= "e" <signedNumber> | "E" <signedNumber>
//! ```
//!
//! Values are held exactly in nano units (upstream rounds anything finer up to 1n), which
//! covers every quantity up to about 10^29; larger ones are rejected as out of range.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// The regular expression upstream quotes when a quantity does not parse.
pub const QUANTITY_REGEX: &str = "^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$";

const NANOS_PER_UNIT: i128 = 1_000_000_000;

/// Why a string is not a quantity; messages are upstream's.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QuantityError {
    #[error("quantities must match the regular expression '{QUANTITY_REGEX}'")]
    Format,
    #[error("unable to parse numeric part of quantity")]
    Numeric,
    #[error("unable to parse quantity's suffix")]
    Suffix,
    #[error("quantity is out of the supported range")]
    OutOfRange,
}

/// How a quantity is written back out, taken from the suffix it was parsed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `12e6`
    DecimalExponent,
    /// `5Gi`
    BinarySI,
    /// `5G`, `500m`
    DecimalSI,
}

/// A parsed quantity. Equality and ordering compare values, not formats.
#[derive(Debug, Clone, Copy)]
pub struct Quantity {
    nanos: i128,
    format: Format,
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quantity::parse(s)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_canonical_string())
    }
}

/// The pieces of a quantity string, before interpretation.
struct Parts<'a> {
    positive: bool,
    num: &'a str,
    denom: &'a str,
    suffix: &'a str,
}

/// Splits a quantity the way upstream's `parseQuantityString` does, quirks included (a lone
/// sign or `.` reads as zero).
fn split(s: &str) -> Result<Parts<'_>, QuantityError> {
    let b = s.as_bytes();
    let end = b.len();
    let mut pos = 0;
    let mut positive = true;
    if pos < end {
        match b[0] {
            b'-' => {
                positive = false;
                pos += 1;
            }
            b'+' => pos += 1,
            _ => {}
        }
    }
    while pos < end && b[pos] == b'0' {
        pos += 1;
    }
    if pos >= end {
        return Ok(Parts {
            positive,
            num: "0",
            denom: "",
            suffix: "",
        });
    }
    let num_start = pos;
    while pos < end && b[pos].is_ascii_digit() {
        pos += 1;
    }
    let mut num = &s[num_start..pos];
    if num.is_empty() {
        num = "0";
    }
    let mut denom = "";
    if pos < end && b[pos] == b'.' {
        pos += 1;
        let denom_start = pos;
        while pos < end && b[pos].is_ascii_digit() {
            pos += 1;
        }
        denom = &s[denom_start..pos];
    }
    let suffix_start = pos;
    while pos < end && b"eEinumkKMGTP".contains(&b[pos]) {
        pos += 1;
    }
    if pos < end && (b[pos] == b'-' || b[pos] == b'+') {
        pos += 1;
    }
    while pos < end && b[pos].is_ascii_digit() {
        pos += 1;
    }
    if pos < end {
        return Err(QuantityError::Format);
    }
    Ok(Parts {
        positive,
        num,
        denom,
        suffix: &s[suffix_start..],
    })
}

/// Base (10 or 2), exponent and format of a suffix.
fn interpret_suffix(suffix: &str) -> Option<(u32, i32, Format)> {
    let decimal = |e| Some((10, e, Format::DecimalSI));
    let binary = |e| Some((2, e, Format::BinarySI));
    match suffix {
        "" => decimal(0),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        _ if suffix.len() > 1 && (suffix.starts_with('e') || suffix.starts_with('E')) => {
            let exponent: i32 = suffix[1..].parse().ok()?;
            Some((10, exponent, Format::DecimalExponent))
        }
        _ => None,
    }
}

fn pow10(exp: u32) -> Option<i128> {
    10i128.checked_pow(exp)
}

/// Parses a decimal digit string, dropping the last `drop` digits and rounding up when any
/// dropped digit is non-zero.
fn digits_rounded_up(digits: &str, drop: usize) -> Result<i128, QuantityError> {
    let digits = digits.trim_start_matches('0');
    let keep = digits.len().saturating_sub(drop);
    let (kept, dropped) = digits.split_at(keep);
    let mut value: i128 = 0;
    for d in kept.bytes() {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(i128::from(d - b'0')))
            .ok_or(QuantityError::OutOfRange)?;
    }
    if dropped.bytes().any(|d| d != b'0') {
        value = value.checked_add(1).ok_or(QuantityError::OutOfRange)?;
    }
    Ok(value)
}

/// Divides rounding away from zero.
fn div_away_from_zero(value: i128, divisor: i128) -> i128 {
    let q = value / divisor;
    if value % divisor == 0 {
        q
    } else if value > 0 {
        q + 1
    } else {
        q - 1
    }
}

const DECIMAL_SUFFIXES: &[(i32, &str)] = &[
    (-9, "n"),
    (-6, "u"),
    (-3, "m"),
    (0, ""),
    (3, "k"),
    (6, "M"),
    (9, "G"),
    (12, "T"),
    (15, "P"),
    (18, "E"),
];
const BINARY_SUFFIXES: &[&str] = &["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];

impl Quantity {
    /// Parses a quantity with upstream's grammar; values finer than 1n round up to 1n.
    pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
        if s.is_empty() {
            return Err(QuantityError::Format);
        }
        let parts = split(s)?;
        let (base, exponent, mut format) =
            interpret_suffix(parts.suffix).ok_or(QuantityError::Suffix)?;
        let denom = parts.denom.trim_end_matches('0');
        let digits = format!("{}{}", parts.num, denom);
        let denom_len = i32::try_from(denom.len()).map_err(|_| QuantityError::OutOfRange)?;
        let magnitude = if base == 10 {
            // value = digits * 10^(exponent - denom_len), in nanos: * 10^9
            let shift = exponent - denom_len + 9;
            if shift >= 0 {
                let factor = pow10(shift.unsigned_abs()).ok_or(QuantityError::OutOfRange)?;
                digits_rounded_up(&digits, 0)?
                    .checked_mul(factor)
                    .ok_or(QuantityError::OutOfRange)?
            } else {
                digits_rounded_up(&digits, shift.unsigned_abs() as usize)?
            }
        } else {
            let scaled = digits_rounded_up(&digits, 0)?
                .checked_mul(1i128 << exponent)
                .ok_or(QuantityError::OutOfRange)?;
            let shift = 9 - denom_len;
            if shift >= 0 {
                let factor = pow10(shift.unsigned_abs()).ok_or(QuantityError::OutOfRange)?;
                scaled
                    .checked_mul(factor)
                    .ok_or(QuantityError::OutOfRange)?
            } else {
                let divisor = pow10(shift.unsigned_abs()).ok_or(QuantityError::OutOfRange)?;
                div_away_from_zero(scaled, divisor)
            }
        };
        if format == Format::BinarySI && magnitude > 0 && magnitude < NANOS_PER_UNIT {
            format = Format::DecimalSI;
        }
        let nanos = if parts.positive {
            magnitude
        } else {
            -magnitude
        };
        Ok(Quantity { nanos, format })
    }

    /// A quantity of `value` whole units in the given format.
    pub fn from_units(value: i64, format: Format) -> Quantity {
        Quantity {
            nanos: i128::from(value) * NANOS_PER_UNIT,
            format,
        }
    }

    /// A quantity of `value` thousandths, in DecimalSI.
    pub fn from_milli(value: i64) -> Quantity {
        Quantity {
            nanos: i128::from(value) * 1_000_000,
            format: Format::DecimalSI,
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    /// The value in nano units.
    pub fn as_nanos(&self) -> i128 {
        self.nanos
    }

    /// The value in whole units, rounded away from zero (upstream `Value()`).
    pub fn value(&self) -> i128 {
        div_away_from_zero(self.nanos, NANOS_PER_UNIT)
    }

    /// The value in thousandths, rounded away from zero (upstream `MilliValue()`).
    pub fn milli_value(&self) -> i128 {
        div_away_from_zero(self.nanos, 1_000_000)
    }

    /// True when the value is a whole number of units.
    pub fn is_integer(&self) -> bool {
        self.nanos % NANOS_PER_UNIT == 0
    }

    /// Rounds away from zero to a multiple of `10^scale` (scale in -9..=0), as upstream's
    /// `RoundUp`. Returns whether the value was already exact.
    pub fn round_up(&mut self, scale: i32) -> bool {
        let step = pow10((scale + 9).clamp(0, 9).unsigned_abs()).unwrap_or(1);
        let rounded = div_away_from_zero(self.nanos, step) * step;
        let exact = rounded == self.nanos;
        self.nanos = rounded;
        exact
    }

    /// Sum of two quantities, keeping this one's format.
    pub fn checked_add(&self, other: &Quantity) -> Option<Quantity> {
        Some(Quantity {
            nanos: self.nanos.checked_add(other.nanos)?,
            format: self.format,
        })
    }

    /// The canonical string upstream serializes: `500m`, `1Gi`, `1536Mi`, `12e6`, `0`.
    pub fn to_canonical_string(&self) -> String {
        if self.nanos == 0 {
            return "0".to_string();
        }
        let mut format = self.format;
        if format == Format::BinarySI
            && (self.nanos.abs() < 1024 * NANOS_PER_UNIT || self.nanos % NANOS_PER_UNIT != 0)
        {
            format = Format::DecimalSI;
        }
        match format {
            Format::BinarySI => {
                let mut units = self.nanos / NANOS_PER_UNIT;
                let mut power = 0;
                while units % 1024 == 0 && power + 1 < BINARY_SUFFIXES.len() {
                    units /= 1024;
                    power += 1;
                }
                format!("{units}{}", BINARY_SUFFIXES[power])
            }
            Format::DecimalSI | Format::DecimalExponent => {
                let mut mantissa = self.nanos;
                let mut exponent: i32 = -9;
                while mantissa % 10 == 0 {
                    mantissa /= 10;
                    exponent += 1;
                }
                while exponent.rem_euclid(3) != 0 {
                    mantissa *= 10;
                    exponent -= 1;
                }
                if format == Format::DecimalExponent {
                    return if exponent == 0 {
                        mantissa.to_string()
                    } else {
                        format!("{mantissa}e{exponent}")
                    };
                }
                if exponent > 18 {
                    let widened =
                        pow10((exponent - 18).unsigned_abs()).and_then(|f| mantissa.checked_mul(f));
                    match widened {
                        Some(m) => {
                            mantissa = m;
                            exponent = 18;
                        }
                        None => return format!("{mantissa}e{exponent}"),
                    }
                }
                let suffix = DECIMAL_SUFFIXES
                    .iter()
                    .find(|(e, _)| *e == exponent)
                    .map(|(_, s)| *s)
                    .unwrap_or_default();
                format!("{mantissa}{suffix}")
            }
        }
    }
}

/// Parses `s` and returns its canonical form rounded up to milli precision, as upstream's
/// `SetDefaults_ResourceList` leaves resource lists.
pub fn canonicalize_resource_value(s: &str) -> Result<String, QuantityError> {
    let mut q = Quantity::parse(s)?;
    q.round_up(-3);
    Ok(q.to_canonical_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        Quantity::parse(s).unwrap().to_canonical_string()
    }

    #[test]
    fn canonical_forms_match_upstream() {
        for (input, want) in [
            ("0", "0"),
            ("100m", "100m"),
            ("0.5", "500m"),
            ("1.5", "1500m"),
            ("1000m", "1"),
            ("2000", "2k"),
            ("1500", "1500"),
            ("1Gi", "1Gi"),
            ("1024Mi", "1Gi"),
            ("1536Mi", "1536Mi"),
            ("0.5Gi", "512Mi"),
            ("512", "512"),
            ("1Ki", "1Ki"),
            ("1.5Ki", "1536"),
            ("128974848", "128974848"),
            ("129e6", "129e6"),
            ("1e3", "1e3"),
            ("1.5e3", "1500"),
            ("12E", "12E"),
            ("-1", "-1"),
            ("-100m", "-100m"),
            ("+5", "5"),
            ("1n", "1n"),
            ("0.1n", "1n"),
            ("1u", "1u"),
            ("5.", "5"),
            (".5", "500m"),
            ("007", "7"),
            ("1M", "1M"),
            ("100Mi", "100Mi"),
        ] {
            assert_eq!(canon(input), want, "{input}");
        }
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(Quantity::parse(""), Err(QuantityError::Format));
        assert_eq!(Quantity::parse("abc"), Err(QuantityError::Format));
        assert_eq!(Quantity::parse("1x"), Err(QuantityError::Format));
        assert_eq!(Quantity::parse("1Gb"), Err(QuantityError::Format));
        assert_eq!(Quantity::parse("1 Gi"), Err(QuantityError::Format));
        assert_eq!(Quantity::parse("1Ki2"), Err(QuantityError::Suffix));
        assert_eq!(Quantity::parse("1e"), Err(QuantityError::Suffix));
        assert_eq!(Quantity::parse("1mm"), Err(QuantityError::Suffix));
        assert!(Quantity::parse("1e100").is_err());
        assert_eq!(
            QuantityError::Format.to_string(),
            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
        );
    }

    #[test]
    fn compares_by_value() {
        let q = |s| Quantity::parse(s).unwrap();
        assert_eq!(q("1"), q("1000m"));
        assert!(q("500m") < q("1"));
        assert!(q("1Gi") > q("1G"));
        assert!(q("-1") < q("0"));
        assert_eq!(q("1Ki").value(), 1024);
        assert_eq!(q("1500m").value(), 2);
        assert_eq!(q("1500m").milli_value(), 1500);
    }

    #[test]
    fn rounds_up_to_milli() {
        assert_eq!(canonicalize_resource_value("1n").unwrap(), "1m");
        assert_eq!(canonicalize_resource_value("1.0001").unwrap(), "1001m");
        assert_eq!(canonicalize_resource_value("-1n").unwrap(), "-1m");
        assert_eq!(canonicalize_resource_value("64Mi").unwrap(), "64Mi");
    }
}

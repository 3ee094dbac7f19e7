//! Resource quantities in canonical form, as apimachinery's `Quantity.String()` prints them
//! ("1Gi" for "1024Mi", "1k" for "1000", "500m" for "0.5").

use serde_json::Value;

use super::fields;

/// The notation a quantity was written in, which its canonical form keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// Powers of 1000: m, k, M, G, ... (and no suffix).
    DecimalSi,
    /// Powers of 1024: Ki, Mi, Gi, ...
    BinarySi,
    /// Scientific: 1e3, 5E-2.
    DecimalExponent,
}

/// Base-10 SI suffixes by exponent.
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

/// Base-1024 suffixes by power of 1024.
const BINARY_SUFFIXES: &[&str] = &["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];

/// The quantity at `path` in canonical form; "0" when missing, as Go's zero Quantity prints.
pub(super) fn quantity_at(v: &Value, path: &[&str]) -> String {
    match fields::get(v, path) {
        Some(Value::String(s)) => canonical(s),
        Some(Value::Number(n)) => canonical(&n.to_string()),
        _ => "0".to_string(),
    }
}

/// A quantity string in canonical form. Strings that are not quantities are returned as they
/// are; stored objects were validated, so this only guards against surprises.
pub(super) fn canonical(s: &str) -> String {
    parse(s)
        .and_then(|q| q.canonical())
        .unwrap_or_else(|| s.to_string())
}

/// An exact decimal value `mantissa × 10^exponent` and the notation it was written in.
#[derive(Debug, Clone, Copy)]
struct Quantity {
    mantissa: i128,
    exponent: i32,
    format: Format,
}

/// What a suffix means: (base, exponent, format).
fn interpret_suffix(suffix: &str) -> Option<(u32, i32, Format)> {
    if let Some((exp, _)) = DECIMAL_SUFFIXES.iter().find(|(_, s)| *s == suffix) {
        return Some((10, *exp, Format::DecimalSi));
    }
    if let Some(i) = BINARY_SUFFIXES[1..].iter().position(|s| *s == suffix) {
        let power = i32::try_from(i + 1).ok()?;
        return Some((2, 10 * power, Format::BinarySi));
    }
    let rest = suffix
        .strip_prefix('e')
        .or_else(|| suffix.strip_prefix('E'))?;
    Some((10, rest.parse().ok()?, Format::DecimalExponent))
}

/// Parses `[+-]digits[.digits]suffix`, rounding up to nano precision like upstream.
fn parse(s: &str) -> Option<Quantity> {
    let (negative, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let number_len = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, suffix) = body.split_at(number_len);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return None;
    }
    let (base, suffix_exponent, format) = interpret_suffix(suffix)?;
    let digits = format!("{whole}{fraction}");
    let mut mantissa: i128 = digits.parse().ok()?;
    let mut exponent = -i32::try_from(fraction.len()).ok()?;
    if base == 10 {
        exponent = exponent.checked_add(suffix_exponent)?;
    } else {
        mantissa =
            mantissa.checked_mul(1i128.checked_shl(u32::try_from(suffix_exponent).ok()?)?)?;
    }
    // Upstream keeps nano precision at most and rounds anything finer up.
    if exponent < -9 {
        let shift = u32::try_from(-9 - exponent).ok()?;
        mantissa = match 10i128.checked_pow(shift) {
            Some(divisor) => {
                let q = mantissa / divisor;
                if mantissa % divisor == 0 {
                    q
                } else {
                    q + 1
                }
            }
            None => i128::from(mantissa != 0),
        };
        exponent = -9;
    }
    Some(Quantity {
        mantissa: if negative { -mantissa } else { mantissa },
        exponent,
        format,
    })
}

impl Quantity {
    /// The value as an integer, if it is one and fits.
    fn as_integer(&self) -> Option<i128> {
        if self.exponent >= 0 {
            self.mantissa
                .checked_mul(10i128.checked_pow(self.exponent.unsigned_abs())?)
        } else {
            let divisor = 10i128.checked_pow(self.exponent.unsigned_abs())?;
            (self.mantissa % divisor == 0).then(|| self.mantissa / divisor)
        }
    }

    /// Upstream's `CanonicalizeBytes`: binary quantities stay binary when they are whole
    /// numbers of at least 1024; everything else is written in powers of 1000.
    fn canonical(self) -> Option<String> {
        if self.mantissa == 0 {
            return Some("0".to_string());
        }
        let mut format = self.format;
        if format == Format::BinarySi {
            match self.as_integer() {
                Some(v) if v.abs() >= 1024 => {
                    let (mut amount, mut power) = (v, 0usize);
                    while amount % 1024 == 0 && power + 1 < BINARY_SUFFIXES.len() {
                        amount /= 1024;
                        power += 1;
                    }
                    return Some(format!("{amount}{}", BINARY_SUFFIXES[power]));
                }
                _ => format = Format::DecimalSi,
            }
        }
        let (mut mantissa, mut exponent) = (self.mantissa, self.exponent);
        while mantissa % 10 == 0 {
            mantissa /= 10;
            exponent += 1;
        }
        let adjust = exponent.rem_euclid(3);
        mantissa = mantissa.checked_mul(10i128.pow(adjust.unsigned_abs()))?;
        exponent -= adjust;
        let suffix = match format {
            Format::DecimalExponent if exponent == 0 => String::new(),
            Format::DecimalExponent => format!("e{exponent}"),
            // Upstream prints no suffix when the exponent has no SI name.
            _ => DECIMAL_SUFFIXES
                .iter()
                .find(|(e, _)| *e == exponent)
                .map_or("", |(_, s)| s)
                .to_string(),
        };
        Some(format!("{mantissa}{suffix}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_forms_match_upstream() {
        for (input, want) in [
            ("0", "0"),
            ("0Gi", "0"),
            ("1Gi", "1Gi"),
            ("1024Mi", "1Gi"),
            ("100Mi", "100Mi"),
            ("1.5Gi", "1536Mi"),
            ("0.5Ki", "512"),
            ("1000", "1k"),
            ("1500", "1500"),
            ("10G", "10G"),
            ("1.5G", "1500M"),
            ("0.5", "500m"),
            ("100m", "100m"),
            ("250m", "250m"),
            ("1e3", "1e3"),
            ("12e2", "1200"),
            ("1.5e-10", "1e-9"),
            ("0.00000000015", "1n"),
            ("-1Gi", "-1Gi"),
            ("2", "2"),
            ("+3", "3"),
        ] {
            assert_eq!(canonical(input), want, "{input}");
        }
    }

    #[test]
    fn non_quantities_pass_through() {
        assert_eq!(canonical("lots"), "lots");
        assert_eq!(canonical("1.2.3"), "1.2.3");
        assert_eq!(canonical(""), "");
    }

    #[test]
    fn missing_quantities_print_zero() {
        let pv = json!({"spec": {"capacity": {"storage": "5Gi"}}});
        assert_eq!(quantity_at(&pv, &["spec", "capacity", "storage"]), "5Gi");
        assert_eq!(quantity_at(&pv, &["spec", "capacity", "cpu"]), "0");
    }
}

//! Sizes as users write them: `8G`, `512M`, `1.5g`, `2GiB`, `1024` (bytes).

/// Parses a size into bytes. Units are binary (K = 1024), as memory limits are.
pub fn parse(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let bad = || format!("invalid size {s:?}: use a number with an optional unit, like 512M, 8G or 1.5T");
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() || num.matches('.').count() > 1 {
        return Err(bad());
    }
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad()),
    };
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let mut bytes = whole
        .checked_shl(shift)
        .filter(|v| v >> shift == whole)
        .ok_or_else(bad)?;
    if !frac.is_empty() {
        // Fractions are exact up to 9 digits, then truncated to whole bytes.
        let digits = &frac[..frac.len().min(9)];
        let f: u128 = digits.parse().map_err(|_| bad())?;
        let scale = 10u128.pow(u32::try_from(digits.len()).map_err(|_| bad())?);
        let add = u64::try_from((f << shift) / scale).map_err(|_| bad())?;
        bytes = bytes.checked_add(add).ok_or_else(bad)?;
    }
    if bytes == 0 {
        return Err(format!("invalid size {s:?}: must be more than zero"));
    }
    Ok(bytes)
}

/// A size as people read it: `100 GiB`, `1.5 GiB`, `512 MiB`, `4 KiB`, `123 bytes` (binary units,
/// one decimal where it is not whole).
pub fn human(bytes: u64) -> String {
    const UNITS: [(u32, &str); 4] = [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")];
    for (shift, unit) in UNITS {
        if bytes >= 1 << shift {
            let tenths = (u128::from(bytes) * 10 + (1 << (shift - 1))) >> shift;
            return if tenths % 10 == 0 {
                format!("{} {unit}", tenths / 10)
            } else {
                format!("{}.{} {unit}", tenths / 10, tenths % 10)
            };
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::{human, parse};

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human(100 << 30), "100 GiB");
        assert_eq!(human(3 << 29), "1.5 GiB");
        assert_eq!(human(512 << 20), "512 MiB");
        assert_eq!(human(4096), "4 KiB");
        assert_eq!(human(123), "123 bytes");
        assert_eq!(human(2_138_112), "2 MiB");
        assert_eq!(parse(&human(8 << 30).replace(' ', "")), Ok(8 << 30));
    }

    #[test]
    fn units_and_fractions() {
        assert_eq!(parse("1024"), Ok(1024));
        assert_eq!(parse("8G"), Ok(8 << 30));
        assert_eq!(parse("512m"), Ok(512 << 20));
        assert_eq!(parse("2GiB"), Ok(2 << 30));
        assert_eq!(parse("1.5G"), Ok(3 << 29));
        assert_eq!(parse(" 4 k "), Ok(4096));
    }

    #[test]
    fn malformed_sizes_say_how_to_write_one() {
        for bad in ["", "G", "8X", "1.2.3G", "-1G", "0", "0.0M", "99999999999T"] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains("size"), "{bad:?}: {e}");
        }
    }
}

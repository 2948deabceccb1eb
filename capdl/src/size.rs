//! Byte sizes as written in system.toml: "128M", "16M", "4K", "1G", or a plain number
//! of bytes ("4096"). K, M and G are powers of 1024 (an optional "iB" is accepted).

/// Parses a size, or `None` when `text` is not one (or overflows 64 bits).
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(digits_end);
    if digits.is_empty() {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let shift = match unit.trim_start() {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

/// Formats a size the way people write it ("128M", "4K", "5000").
pub fn format_size(bytes: u64) -> String {
    for (shift, unit) in [(30, "G"), (20, "M"), (10, "K")] {
        if bytes != 0 && bytes % (1u64 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("128M"), Some(128 << 20));
        assert_eq!(parse_size("4K"), Some(4096));
        assert_eq!(parse_size("2GiB"), Some(2 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size(" 16 M "), Some(16 << 20));
    }

    #[test]
    fn non_sizes_are_rejected() {
        for bad in [
            "12X",
            "",
            "M",
            "-1M",
            "1.5M",
            "99999999999999999999",
            "17179869184G",
        ] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn sizes_format_in_the_largest_exact_unit() {
        assert_eq!(format_size(128 << 20), "128M");
        assert_eq!(format_size(1 << 30), "1G");
        assert_eq!(format_size(5000), "5000");
        assert_eq!(format_size(0), "0");
    }
}

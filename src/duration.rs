//! Gateway API duration strings (GEP-2257): `1h`, `30m`, `1h30m`, `90s`, `500ms`.

/// Parses a GEP-2257 duration into whole seconds (milliseconds are rounded down).
/// Units are `h`, `m`, `s` and `ms`, each at most once and in that order (`1h30m`, not
/// `30m1h` or `30m30m`), up to 5 digits each. Returns a reason on error; callers add the
/// field name.
pub fn parse_seconds(text: &str) -> Result<u64, String> {
    if text.is_empty() {
        return Err("empty duration".into());
    }
    let mut total_ms: u64 = 0;
    let mut rest = text;
    let mut parts = 0;
    // Rank of the last unit seen (h = 0, m = 1, s = 2, ms = 3): each must be larger.
    let mut last_rank: Option<u8> = None;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return Err(format!("`{text}` is not a duration like 1h, 30m, 1h30m, 90s"));
        }
        let (number, tail) = rest.split_at(digits);
        let value: u64 = number.parse().map_err(|_| format!("bad number in `{text}`"))?;
        let (unit_ms, unit_len, rank) = if tail.starts_with("ms") {
            (1, 2, 3)
        } else if tail.starts_with('h') {
            (3_600_000, 1, 0)
        } else if tail.starts_with('m') {
            (60_000, 1, 1)
        } else if tail.starts_with('s') {
            (1_000, 1, 2)
        } else {
            return Err(format!("`{text}` needs a unit (h, m, s or ms) after each number"));
        };
        if last_rank.is_some_and(|last| rank <= last) {
            return Err(format!("`{text}` repeats a unit or has units out of order (write them as h, m, s, ms, each at most once)"));
        }
        last_rank = Some(rank);
        total_ms = total_ms.saturating_add(value.saturating_mul(unit_ms));
        rest = tail.get(unit_len..).unwrap_or("");
        parts += 1;
        if parts > 4 {
            return Err(format!("`{text}` has more than 4 parts"));
        }
    }
    Ok(total_ms / 1000)
}

#[cfg(test)]
mod tests {
    use super::parse_seconds;

    #[test]
    fn accepts_gateway_api_durations() {
        for (text, secs) in [
            ("1h", 3600),
            ("30m", 1800),
            ("1h30m", 5400),
            ("90s", 90),
            ("1500ms", 1),
            ("24h", 86_400),
            ("0s", 0),
            ("1h1m1s1ms", 3661),
        ] {
            assert_eq!(parse_seconds(text), Ok(secs), "{text}");
        }
    }

    #[test]
    fn refuses_other_shapes() {
        for text in ["", "1", "h", "1d", "1.5h", "-1h", "1h ", " 1h", "123456s", "1s1s1s1s1s", "1H"] {
            assert!(parse_seconds(text).is_err(), "{text}");
        }
    }

    #[test]
    fn refuses_repeated_or_out_of_order_units() {
        for text in ["1s1h", "30m30m", "1m1h", "1ms1s", "1h1h", "1s1m", "1ms1ms", "1h1s1m", "5s5ms5s"] {
            assert!(parse_seconds(text).is_err(), "{text}");
        }
    }
}

//! The `Range` request header on blob GETs (registry and agent mirror alike)
//! and `Content-Range` on chunked uploads.

/// What a blob GET's `Range` header asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// No usable range: send everything with `200`.
    Full,
    /// Inclusive byte positions to send with `206`.
    Partial(u64, u64),
    /// Starts past the end: `416` with `Content-Range: bytes */<size>`.
    Unsatisfiable,
}

/// Interprets a `Range` header against a blob of `size` bytes. Only a single
/// `bytes=` range is honoured; anything else is served whole, as RFC 9110 allows.
pub fn parse_range(header: Option<&str>, size: u64) -> ByteRange {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return ByteRange::Full;
    };
    if spec.contains(',') {
        return ByteRange::Full;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return ByteRange::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // Suffix: the last N bytes.
        let Ok(n) = last.parse::<u64>() else {
            return ByteRange::Full;
        };
        if n == 0 || size == 0 {
            return ByteRange::Unsatisfiable;
        }
        return ByteRange::Partial(size.saturating_sub(n), size - 1);
    }
    let Ok(start) = first.parse::<u64>() else {
        return ByteRange::Full;
    };
    let end = if last.is_empty() {
        size.saturating_sub(1)
    } else {
        match last.parse::<u64>() {
            Ok(e) if e >= start => e.min(size.saturating_sub(1)),
            _ => return ByteRange::Full,
        }
    };
    if start >= size {
        return ByteRange::Unsatisfiable;
    }
    ByteRange::Partial(start, end)
}

/// Parses a chunk's `Content-Range: <start>-<end>` (inclusive; a `bytes `
/// prefix is tolerated). `None` if malformed.
pub fn parse_content_range(header: &str) -> Option<(u64, u64)> {
    let spec = header.trim();
    let spec = spec.strip_prefix("bytes ").unwrap_or(spec);
    let spec = spec.split('/').next()?;
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (b >= a).then_some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), ByteRange::Full);
        assert_eq!(parse_range(Some("bytes=0-3"), 10), ByteRange::Partial(0, 3));
        assert_eq!(parse_range(Some("bytes=4-"), 10), ByteRange::Partial(4, 9));
        assert_eq!(parse_range(Some("bytes=-3"), 10), ByteRange::Partial(7, 9));
        assert_eq!(parse_range(Some("bytes=5-100"), 10), ByteRange::Partial(5, 9));
        assert_eq!(parse_range(Some("bytes=10-"), 10), ByteRange::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), ByteRange::Full);
        assert_eq!(parse_range(Some("items=0-1"), 10), ByteRange::Full);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), ByteRange::Full);
    }

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("0-99"), Some((0, 99)));
        assert_eq!(parse_content_range("bytes 100-199/*"), Some((100, 199)));
        assert_eq!(parse_content_range("9-1"), None);
        assert_eq!(parse_content_range("x"), None);
    }
}

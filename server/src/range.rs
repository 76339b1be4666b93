//! The single-range subset of HTTP `Range` that Nix uses to resume a NAR download
//! (`Range: bytes=N-`), plus the other single-range forms for curl and browsers.

use axum::http::HeaderValue;

use crate::error::AppError;

/// A half-open byte range `[start, end)` within a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte served.
    pub start: u64,
    /// One past the last byte served.
    pub end: u64,
}

/// Parses a `Range` header for a resource of `size` bytes.
///
/// `Ok(None)` means serve the whole resource: no header, a syntax we ignore (RFC 9110 lets a
/// server ignore a `Range` it does not understand), or several ranges. A range starting at or
/// past the end is `416`.
pub fn parse(header: Option<&HeaderValue>, size: u64) -> Result<Option<ByteRange>, AppError> {
    let Some(spec) = header.and_then(|h| h.to_str().ok()).and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return Ok(None) };
    let parse = |s: &str| s.trim().parse::<u64>().ok();
    let range = match (first.trim().is_empty(), parse(first), parse(last)) {
        // bytes=-N: the last N bytes.
        (true, _, Some(n)) => {
            if n == 0 {
                return Err(AppError::RangeNotSatisfiable { size });
            }
            ByteRange { start: size.saturating_sub(n), end: size }
        }
        (false, Some(start), None) if last.trim().is_empty() => ByteRange { start, end: size },
        (false, Some(start), Some(last)) if last >= start => ByteRange { start, end: last.saturating_add(1).min(size) },
        _ => return Ok(None),
    };
    if range.start >= size {
        return Err(AppError::RangeNotSatisfiable { size });
    }
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(h: &str, size: u64) -> Result<Option<(u64, u64)>, u64> {
        match parse(Some(&HeaderValue::from_str(h).unwrap()), size) {
            Ok(r) => Ok(r.map(|r| (r.start, r.end))),
            Err(AppError::RangeNotSatisfiable { size }) => Err(size),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn table() {
        assert_eq!(parse(None, 10).unwrap(), None);
        assert_eq!(p("bytes=0-", 10), Ok(Some((0, 10))));
        assert_eq!(p("bytes=4-", 10), Ok(Some((4, 10))));
        assert_eq!(p("bytes=2-5", 10), Ok(Some((2, 6))));
        assert_eq!(p("bytes=2-500", 10), Ok(Some((2, 10))));
        assert_eq!(p("bytes=-3", 10), Ok(Some((7, 10))));
        assert_eq!(p("bytes=-30", 10), Ok(Some((0, 10))));
        assert_eq!(p("bytes=10-", 10), Err(10));
        assert_eq!(p("bytes=-0", 10), Err(10));
        assert_eq!(p("bytes=5-2", 10), Ok(None));
        assert_eq!(p("bytes=0-1,4-5", 10), Ok(None));
        assert_eq!(p("items=0-1", 10), Ok(None));
        assert_eq!(p("bytes=x-", 10), Ok(None));
        assert_eq!(p("bytes=18446744073709551615-18446744073709551615", 10), Err(10));
    }
}

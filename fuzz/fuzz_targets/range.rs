//! The HTTP `Range` parser of NAR and file responses.
//!
//! Input: the resource size in decimal, a newline, then the header value. Nothing may panic,
//! a range is always inside the resource and non-empty, and a refusal is only a 416 naming
//! the size.
#![no_main]

use axum::http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use subserve::range::{parse, ByteRange};
use subserve::AppError;

fuzz_target!(|data: &[u8]| {
    let Some(newline) = data.iter().position(|&b| b == b'\n') else { return };
    let Some(size) = std::str::from_utf8(&data[..newline]).ok().and_then(|s| s.parse::<u64>().ok()) else { return };
    let Ok(header) = HeaderValue::from_bytes(&data[newline + 1..]) else { return };
    match parse(Some(&header), size) {
        Ok(None) => {}
        Ok(Some(ByteRange { start, end })) => assert!(start < end && end <= size, "{start}..{end} of {size}"),
        Err(AppError::RangeNotSatisfiable { size: s }) => assert_eq!(s, size),
        Err(other) => panic!("unexpected refusal {other:?}"),
    }
});

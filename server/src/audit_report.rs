//! `subserve audit who-fetched` and `subserve audit node`: the audit trail's answers as an
//! aligned table for people or JSON for scripts, and the dates they take.
//!
//! Times are UTC, printed as RFC 3339 (`2024-05-01T12:00:00Z`); `--since` takes a day
//! (`2024-05-01`, from its midnight UTC) or any RFC 3339 time. The conversions are the civil
//! calendar's (proleptic Gregorian) day arithmetic, kept here rather than pulling a date
//! library in for two functions.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use audit::Query;

use crate::cli::AuditQuery;

/// Answers `query` from the audit database at `db`: a table, or JSON with `json`.
pub fn report(query: &AuditQuery, db: &Path, since: Option<SystemTime>, json: bool) -> Result<String, audit::Error> {
    let audit = Query::open(db)?;
    let (header, rows, what): (&str, Vec<Row>, String) = match query {
        AuditQuery::WhoFetched { pattern } => {
            let rows = audit
                .who_fetched(pattern, since)?
                .into_iter()
                .map(|n| Row {
                    key: n.client,
                    first: n.first,
                    last: n.last,
                    count: n.count,
                    bytes: n.bytes,
                    paths: Some(n.paths),
                })
                .collect();
            ("node", rows, format!("paths matching {pattern:?}"))
        }
        AuditQuery::Node { addr } => {
            let rows = audit
                .node(*addr, since)?
                .into_iter()
                .map(|p| Row { key: p.path, first: p.first, last: p.last, count: p.count, bytes: p.bytes, paths: None })
                .collect();
            ("path", rows, format!("paths by {addr}"))
        }
    };
    if json {
        return Ok(to_json(header, &rows));
    }
    if rows.is_empty() {
        let since = since.map(|s| format!(" since {}", rfc3339(s))).unwrap_or_default();
        return Ok(format!("no NAR downloads of {what}{since}\n"));
    }
    Ok(table(header, &rows))
}

/// One line of an answer: a node (with the paths it fetched) or a path.
struct Row {
    key: String,
    first: SystemTime,
    last: SystemTime,
    count: u64,
    bytes: u64,
    paths: Option<Vec<String>>,
}

fn to_json(key: &str, rows: &[Row]) -> String {
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let mut object = serde_json::json!({
                key: r.key,
                "first": rfc3339(r.first),
                "last": rfc3339(r.last),
                "count": r.count,
                "bytes": r.bytes,
            });
            if let Some(paths) = &r.paths {
                object["paths"] = serde_json::json!(paths);
            }
            object
        })
        .collect();
    let mut text = serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".into());
    text.push('\n');
    text
}

/// The rows as an aligned table: text columns to the left, numbers to the right; a node's
/// paths last, unaligned.
fn table(key: &str, rows: &[Row]) -> String {
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| [r.key.clone(), rfc3339(r.first), rfc3339(r.last), r.count.to_string(), r.bytes.to_string()])
        .collect();
    let header = [key, "first", "last", "count", "bytes"];
    let width = |i: usize| cells.iter().map(|c| c[i].len()).chain([header[i].len()]).max().unwrap_or(0);
    let widths: Vec<usize> = (0..5).map(width).collect();
    let with_paths = rows.iter().any(|r| r.paths.is_some());
    let mut out = String::new();
    let mut line = |cells: [&str; 5], paths: Option<&str>| {
        let _ = write!(
            out,
            "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {:>w4$}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4]
        );
        if let Some(paths) = paths {
            let _ = write!(out, "  {paths}");
        }
        out.push('\n');
    };
    line(header, with_paths.then_some("paths"));
    for (row, c) in rows.iter().zip(&cells) {
        let paths = row.paths.as_ref().map(|p| p.join(" "));
        line([&c[0], &c[1], &c[2], &c[3], &c[4]], paths.as_deref());
    }
    out
}

/// Parses `--since`: `YYYY-MM-DD` (midnight UTC) or an RFC 3339 time.
pub fn parse_since(text: &str) -> Result<SystemTime, String> {
    parse_time(text.trim()).ok_or_else(|| {
        format!(
            "{text:?} is not a date (YYYY-MM-DD) or an RFC 3339 time (2024-05-01T12:00:00Z, 2024-05-01T14:00:00+02:00)"
        )
    })
}

fn parse_time(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.bytes().all(|c| c.is_ascii_digit()).then(|| part.parse().ok())?
    };
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let days = days_from_civil(year, month, day)?;
    if b.len() == 10 {
        return at(days * 86_400, 0);
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) || b.get(13) != Some(&b':') || b.get(16) != Some(&b':') {
        return None;
    }
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    // 60: a leap second, which Unix time folds into the next.
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut nanos = 0u32;
    if let Some(fraction) = rest.strip_prefix('.') {
        let n = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        let padded = format!("{:0<9}", &fraction[..n.min(9)]);
        nanos = padded.parse().ok()?;
        rest = &fraction[n..];
    }
    let offset = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let number = |a: &u8, b: &u8| -> Option<i64> {
                (a.is_ascii_digit() && b.is_ascii_digit()).then(|| i64::from((a - b'0') * 10 + (b - b'0')))
            };
            let (h, m) = (number(h1, h2)?, number(m1, m2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let seconds = h * 3600 + m * 60;
            if *sign == b'+' {
                seconds
            } else {
                -seconds
            }
        }
        _ => return None,
    };
    at(days * 86_400 + hour * 3600 + minute * 60 + second - offset, nanos)
}

/// The time `seconds` after the epoch (the epoch itself for anything before it).
fn at(seconds: i64, nanos: u32) -> Option<SystemTime> {
    let seconds = u64::try_from(seconds).unwrap_or(0);
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(seconds, nanos))
}

/// Days from 1970-01-01 to a valid civil date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> Option<i64> {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&month) || day < 1 || day > month_days[(month - 1) as usize] {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// The civil date of a day counted from 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// `time` in UTC as RFC 3339, to the second: `2024-05-01T12:00:00Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let seconds = time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let s = seconds.rem_euclid(86_400);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", s / 3600, s % 3600 / 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(text: &str) -> u64 {
        parse_since(text).unwrap().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn dates_and_rfc3339_times_parse() {
        assert_eq!(unix("1970-01-01"), 0);
        assert_eq!(unix("2024-05-01"), 1_714_521_600);
        assert_eq!(unix("2024-02-29"), 1_709_164_800);
        assert_eq!(unix("2024-05-01T12:00:00Z"), 1_714_564_800);
        assert_eq!(unix("2024-05-01t12:00:00z"), 1_714_564_800);
        assert_eq!(unix("2024-05-01 14:00:00+02:00"), 1_714_564_800);
        assert_eq!(unix("2024-05-01T11:30:00.123456789-00:30"), 1_714_564_800);
        assert_eq!(unix(" 2000-03-01 "), 951_868_800);
        let nanos = parse_since("2024-05-01T12:00:00.25Z").unwrap().duration_since(SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(nanos.subsec_millis(), 250);
        // Before the epoch: the epoch (nothing was recorded before it).
        assert_eq!(unix("1960-01-01"), 0);
    }

    #[test]
    fn bad_dates_are_named() {
        for bad in [
            "",
            "yesterday",
            "2024-13-01",
            "2023-02-29",
            "2024-04-31",
            "2024-5-1",
            "2024-05-01T12:00",
            "2024-05-01T12:00:00",
            "2024-05-01T25:00:00Z",
            "2024-05-01T12:00:00+2:00",
            "2024-05-01T12:00:00.Z",
            "2024-05-01T12:00:00Zjunk",
            "２０２４-05-01",
        ] {
            let e = parse_since(bad).unwrap_err();
            assert!(e.contains("is not a date (YYYY-MM-DD) or an RFC 3339 time"), "{bad}: {e}");
        }
    }

    #[test]
    fn times_print_as_rfc3339_and_round_trip() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        for text in ["2024-02-29T23:59:59Z", "2000-01-01T00:00:00Z", "2100-12-31T12:34:56Z", "1999-03-01T00:00:01Z"] {
            assert_eq!(rfc3339(parse_since(text).unwrap()), text);
        }
    }

    #[test]
    fn tables_are_aligned() {
        let t = |s: &str| parse_since(s).unwrap();
        let rows = [
            Row {
                key: "10.0.0.10".into(),
                first: t("2024-05-01T12:00:00Z"),
                last: t("2024-05-01T13:00:00Z"),
                count: 12,
                bytes: 3_000_000,
                paths: Some(vec!["a-glibc".into(), "b-glibc-bin".into()]),
            },
            Row {
                key: "::1".into(),
                first: t("2024-05-01T12:00:00Z"),
                last: t("2024-05-01T12:00:00Z"),
                count: 1,
                bytes: 7,
                paths: Some(vec!["a-glibc".into()]),
            },
        ];
        let text = table("node", &rows);
        let want = "\
node       first                 last                  count    bytes  paths
10.0.0.10  2024-05-01T12:00:00Z  2024-05-01T13:00:00Z     12  3000000  a-glibc b-glibc-bin
::1        2024-05-01T12:00:00Z  2024-05-01T12:00:00Z      1        7  a-glibc
";
        assert_eq!(text, want);
        let json: serde_json::Value = serde_json::from_str(&to_json("node", &rows)).unwrap();
        assert_eq!(json[1]["node"], "::1");
        assert_eq!(json[0]["bytes"], 3_000_000);
        assert_eq!(json[0]["paths"][1], "b-glibc-bin");
        assert_eq!(json[0]["first"], "2024-05-01T12:00:00Z");
    }
}

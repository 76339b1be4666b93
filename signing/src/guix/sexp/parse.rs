//! The S-expression reader: libgcrypt's `gcry_sexp_sscan` grammar, without recursion and bounded.
//!
//! The accepted syntax is listed on [`Sexp::parse`]. The reader keeps its own stack of open
//! lists rather than recursing, and checks [`MAX_SEXP_LEN`] and [`MAX_SEXP_DEPTH`], so deep or
//! long hostile input is an error, never a stack overflow.

use data_encoding::BASE64;

use super::{is_token_byte, Sexp, MAX_SEXP_DEPTH, MAX_SEXP_LEN};
use crate::{Error, SexpProblem};

pub(super) fn parse(input: &[u8]) -> Result<Sexp, Error> {
    if input.len() > MAX_SEXP_LEN {
        return Err(problem(0, SexpProblem::TooLong));
    }
    let start = skip_whitespace(input, 0);
    if input.get(start) == Some(&b'{') {
        return parse_transport(input, start);
    }
    Reader { input, pos: start }.read()
}

/// `{base64}`: the canonical (or any) form, base64-encoded, as the only thing in the input.
fn parse_transport(input: &[u8], start: usize) -> Result<Sexp, Error> {
    let end = input[start..].iter().position(|&b| b == b'}').map(|i| start + i);
    let end = end.ok_or_else(|| problem(input.len(), SexpProblem::Unterminated))?;
    let after = skip_whitespace(input, end + 1);
    if after != input.len() {
        return Err(problem(after, SexpProblem::TrailingData));
    }
    let compact: Vec<u8> = input[start + 1..end].iter().copied().filter(|b| !is_whitespace(*b)).collect();
    let decoded = BASE64.decode(&compact).map_err(|_| problem(start, SexpProblem::BadBase64))?;
    if decoded.get(skip_whitespace(&decoded, 0)) == Some(&b'{') {
        return Err(problem(start, SexpProblem::NestedTransport));
    }
    // Offsets inside the decoded text would mean nothing to the reader of the original, so an
    // inner error is reported at the '{'.
    Reader { input: &decoded, pos: 0 }.read().map_err(|error| match error {
        Error::Sexp { problem: inner, .. } => problem(start, inner),
        other => other,
    })
}

struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn read(mut self) -> Result<Sexp, Error> {
        // The lists still open, innermost last; the reader's only stack.
        let mut open: Vec<Vec<Sexp>> = Vec::new();
        loop {
            self.pos = skip_whitespace(self.input, self.pos);
            let Some(&byte) = self.input.get(self.pos) else {
                let what = if open.is_empty() { SexpProblem::Empty } else { SexpProblem::Unterminated };
                return Err(problem(self.pos, what));
            };
            let start = self.pos;
            match byte {
                b'(' => {
                    if open.len() == MAX_SEXP_DEPTH {
                        return Err(problem(start, SexpProblem::TooDeep));
                    }
                    open.push(Vec::new());
                    self.pos += 1;
                }
                b')' => {
                    let items = open.pop().ok_or_else(|| problem(start, SexpProblem::UnmatchedClose))?;
                    self.pos += 1;
                    match open.last_mut() {
                        Some(parent) => parent.push(Sexp::List(items)),
                        None => return self.finish(Sexp::List(items)),
                    }
                }
                b'[' => return Err(problem(start, SexpProblem::DisplayHint)),
                b'{' => return Err(problem(start, SexpProblem::NestedTransport)),
                _ => {
                    let atom = self.atom()?;
                    match open.last_mut() {
                        Some(parent) => parent.push(Sexp::Atom(atom)),
                        None => return Err(problem(start, SexpProblem::NotAList)),
                    }
                }
            }
        }
    }

    /// Accepts the finished top-level list if only whitespace follows it.
    fn finish(&self, sexp: Sexp) -> Result<Sexp, Error> {
        let end = skip_whitespace(self.input, self.pos);
        if end != self.input.len() {
            return Err(problem(end, SexpProblem::TrailingData));
        }
        Ok(sexp)
    }

    /// Reads one atom starting at `self.pos`, in whichever syntax its first byte announces.
    fn atom(&mut self) -> Result<Vec<u8>, Error> {
        let byte = self.input[self.pos];
        match byte {
            b'"' => self.quoted(),
            b'#' => self.hex(),
            b'|' => self.base64(),
            b'0'..=b'9' => self.with_length(),
            _ if is_token_byte(byte) => {
                let len = self.input[self.pos..].iter().take_while(|&&b| is_token_byte(b)).count();
                let token = self.input[self.pos..self.pos + len].to_vec();
                self.pos += len;
                Ok(token)
            }
            _ => Err(problem(self.pos, SexpProblem::BadCharacter)),
        }
    }

    /// `len:bytes`, or a length libgcrypt ignores before a string, hex or base64 atom.
    fn with_length(&mut self) -> Result<Vec<u8>, Error> {
        let start = self.pos;
        let digits = self.input[start..].iter().take_while(|b| b.is_ascii_digit()).count();
        self.pos += digits;
        let bad_length = || problem(start, SexpProblem::BadLength);
        match self.input.get(self.pos) {
            Some(b':') => {
                let digits = &self.input[start..self.pos];
                if digits.len() > 1 && digits[0] == b'0' {
                    return Err(bad_length());
                }
                // Digits are ASCII, so the conversion cannot fail; overflow is the real check.
                let len: usize =
                    std::str::from_utf8(digits).ok().and_then(|d| d.parse().ok()).ok_or_else(bad_length)?;
                let data_start = self.pos + 1;
                let data_end = data_start
                    .checked_add(len)
                    .filter(|&end| end <= self.input.len())
                    .ok_or_else(|| problem(start, SexpProblem::LengthPastEnd))?;
                self.pos = data_end;
                Ok(self.input[data_start..data_end].to_vec())
            }
            Some(b'"' | b'#' | b'|') if self.input[start] != b'0' => self.atom(),
            _ => Err(bad_length()),
        }
    }

    fn quoted(&mut self) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        let mut i = self.pos + 1;
        loop {
            let Some(&b) = self.input.get(i) else {
                return Err(problem(self.pos, SexpProblem::Unterminated));
            };
            match b {
                b'"' => break,
                b'\\' => i = self.escape(i, &mut out)?,
                _ => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        self.pos = i + 1;
        Ok(out)
    }

    /// Decodes the escape whose backslash is at `at` into `out`; returns the index after it.
    fn escape(&self, at: usize, out: &mut Vec<u8>) -> Result<usize, Error> {
        let rest = &self.input[at + 1..];
        let bad = || problem(at, SexpProblem::BadEscape);
        let Some(&kind) = rest.first() else {
            return Err(problem(self.pos, SexpProblem::Unterminated));
        };
        let simple = match kind {
            b'b' => Some(0x08),
            b't' => Some(b'\t'),
            b'v' => Some(0x0b),
            b'n' => Some(b'\n'),
            b'f' => Some(0x0c),
            b'r' => Some(b'\r'),
            b'"' | b'\'' | b'\\' => Some(kind),
            _ => None,
        };
        if let Some(byte) = simple {
            out.push(byte);
            return Ok(at + 2);
        }
        match kind {
            b'0'..=b'7' => {
                let digits = rest.get(..3).filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b))).ok_or_else(bad)?;
                let value = digits.iter().fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                out.push(u8::try_from(value).map_err(|_| bad())?);
                Ok(at + 4)
            }
            b'x' => {
                let digits = rest.get(1..3).ok_or_else(bad)?;
                let (hi, lo) = (hex_value(digits[0]), hex_value(digits[1]));
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(bad());
                };
                out.push(hi << 4 | lo);
                Ok(at + 4)
            }
            // A backslash before a line break (CR, LF, CRLF or LFCR) continues the string.
            b'\r' | b'\n' => {
                let pair = matches!(rest.get(..2), Some(b"\r\n" | b"\n\r"));
                Ok(at + if pair { 3 } else { 2 })
            }
            _ => Err(bad()),
        }
    }

    fn hex(&mut self) -> Result<Vec<u8>, Error> {
        let body_start = self.pos + 1;
        let len = self.input[body_start..]
            .iter()
            .position(|&b| b == b'#')
            .ok_or_else(|| problem(self.pos, SexpProblem::Unterminated))?;
        let body = &self.input[body_start..body_start + len];
        let mut nibbles = Vec::with_capacity(len);
        for (i, &b) in body.iter().enumerate() {
            if is_whitespace(b) {
                continue;
            }
            nibbles.push(hex_value(b).ok_or_else(|| problem(body_start + i, SexpProblem::BadHex))?);
        }
        if nibbles.len() % 2 != 0 {
            return Err(problem(body_start + len, SexpProblem::OddHex));
        }
        self.pos = body_start + len + 1;
        Ok(nibbles.chunks(2).map(|pair| pair[0] << 4 | pair[1]).collect())
    }

    fn base64(&mut self) -> Result<Vec<u8>, Error> {
        let body_start = self.pos + 1;
        let len = self.input[body_start..]
            .iter()
            .position(|&b| b == b'|')
            .ok_or_else(|| problem(self.pos, SexpProblem::Unterminated))?;
        let decoded = BASE64
            .decode(&self.input[body_start..body_start + len])
            .map_err(|_| problem(body_start, SexpProblem::BadBase64))?;
        self.pos = body_start + len + 1;
        Ok(decoded)
    }
}

fn problem(offset: usize, problem: SexpProblem) -> Error {
    Error::Sexp { offset, problem }
}

/// libgcrypt's `whitespacep`.
fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn skip_whitespace(input: &[u8], from: usize) -> usize {
    from + input.get(from..).unwrap_or_default().iter().take_while(|&&b| is_whitespace(b)).count()
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parse_ok(text: &str) -> Sexp {
        parse(text.as_bytes()).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn problem_of(input: &[u8]) -> (usize, SexpProblem) {
        match parse(input) {
            Err(Error::Sexp { offset, problem }) => (offset, problem),
            other => panic!("{:?}: expected a sexp error, got {other:?}", String::from_utf8_lossy(input)),
        }
    }

    #[test]
    fn every_atom_syntax_gives_the_same_bytes() {
        let expected = Sexp::List(vec![Sexp::atom("abc"); 7]);
        assert_eq!(parse_ok("(abc \"abc\" #616263# #61 62\n63# |YWJj| 3:abc 3\"abc\")"), expected);
        assert_eq!(parse_ok(" \t\n( abc abc abc abc abc abc abc )\r\n"), expected);
    }

    #[test]
    fn tokens_end_at_any_other_character() {
        assert_eq!(
            parse_ok("(a(b)c\"d\")"),
            Sexp::List(vec![Sexp::atom("a"), Sexp::List(vec![Sexp::atom("b")]), Sexp::atom("c"), Sexp::atom("d"),])
        );
        assert_eq!(parse_ok("(x-1.2/3_4:5*6+7=8)"), Sexp::List(vec![Sexp::atom("x-1.2/3_4:5*6+7=8")]));
    }

    #[test]
    fn quoted_string_escapes() {
        let sexp = parse_ok(
            r#"("\b\t\v\n\f\r\"\'\\" "\101\x42\x6a" "a\
b" "c\
d")"#,
        );
        let atoms: Vec<&[u8]> = sexp.as_list().unwrap().iter().map(|a| a.as_atom().unwrap()).collect();
        assert_eq!(atoms, [&b"\x08\t\x0b\n\x0c\r\"'\\"[..], b"ABj", b"ab", b"cd"]);
        assert_eq!(parse_ok("(\"a\\\r\nb\")"), Sexp::List(vec![Sexp::atom("ab")]));
    }

    #[test]
    fn canonical_atoms_hold_raw_bytes() {
        let sexp = parse(b"(3:\x00)(4:)()\xff0:)").unwrap();
        assert_eq!(sexp, Sexp::List(vec![Sexp::atom(*b"\x00)("), Sexp::atom(*b")()\xff"), Sexp::atom("")]));
    }

    #[test]
    fn transport_wraps_any_form() {
        let inner = "(public-key (ecc (curve Ed25519)))";
        let wrapped = format!("  {{{}}}\n", BASE64.encode(inner.as_bytes()));
        assert_eq!(parse_ok(&wrapped), parse_ok(inner));
        let (offset, what) = problem_of(format!("{{{}}}", BASE64.encode(b"(a")).as_bytes());
        assert_eq!((offset, what), (0, SexpProblem::Unterminated));
        let nested = format!("{{{}}}", BASE64.encode(format!("{{{}}}", BASE64.encode(b"(a)")).as_bytes()));
        assert_eq!(problem_of(nested.as_bytes()).1, SexpProblem::NestedTransport);
    }

    #[test]
    fn malformed_input_is_refused_with_an_offset() {
        let cases: &[(&[u8], usize, SexpProblem)] = &[
            (b"", 0, SexpProblem::Empty),
            (b"  \n", 3, SexpProblem::Empty),
            (b"abc", 0, SexpProblem::NotAList),
            (b"(a", 2, SexpProblem::Unterminated),
            (b"(a))", 3, SexpProblem::TrailingData),
            (b")", 0, SexpProblem::UnmatchedClose),
            (b"(a) (b)", 4, SexpProblem::TrailingData),
            (b"(a) x", 4, SexpProblem::TrailingData),
            (b"(a @)", 3, SexpProblem::BadCharacter),
            (b"(a \\)", 3, SexpProblem::BadCharacter),
            (b"(\"abc)", 1, SexpProblem::Unterminated),
            (b"(\"a\\qb\")", 3, SexpProblem::BadEscape),
            (b"(\"a\\8\")", 3, SexpProblem::BadEscape),
            (b"(\"a\\777\")", 3, SexpProblem::BadEscape),
            (b"(\"a\\x4\")", 3, SexpProblem::BadEscape),
            (b"(#12G4#)", 4, SexpProblem::BadHex),
            (b"(#123#)", 5, SexpProblem::OddHex),
            (b"(#1234)", 1, SexpProblem::Unterminated),
            (b"(|YWJj*|)", 2, SexpProblem::BadBase64),
            (b"(|YWJj)", 1, SexpProblem::Unterminated),
            (b"(01:a)", 1, SexpProblem::BadLength),
            (b"(3x)", 1, SexpProblem::BadLength),
            (b"(99999999999999999999999:a)", 1, SexpProblem::BadLength),
            (b"(5:ab)", 1, SexpProblem::LengthPastEnd),
            (b"([text/plain]abc)", 1, SexpProblem::DisplayHint),
            (b"(a {YWJj})", 3, SexpProblem::NestedTransport),
            (b"{KGEp", 5, SexpProblem::Unterminated),
            (b"{KGEp} x", 7, SexpProblem::TrailingData),
            (b"{!!}", 0, SexpProblem::BadBase64),
        ];
        for &(input, offset, what) in cases {
            assert_eq!(problem_of(input), (offset, what), "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn depth_is_bounded() {
        let ok = format!("{}{}", "(".repeat(MAX_SEXP_DEPTH), ")".repeat(MAX_SEXP_DEPTH));
        assert!(parse(ok.as_bytes()).is_ok());
        let deep = format!("{}{}", "(".repeat(MAX_SEXP_DEPTH + 1), ")".repeat(MAX_SEXP_DEPTH + 1));
        assert_eq!(problem_of(deep.as_bytes()), (MAX_SEXP_DEPTH, SexpProblem::TooDeep));
        // Far deeper than any stack would survive if the reader recursed: still just an error.
        let hostile = "(".repeat(MAX_SEXP_LEN);
        assert_eq!(problem_of(hostile.as_bytes()).1, SexpProblem::TooDeep);
    }

    #[test]
    fn size_is_bounded() {
        let long = format!("(#{}#)", "00".repeat(MAX_SEXP_LEN / 2));
        assert_eq!(problem_of(long.as_bytes()), (0, SexpProblem::TooLong));
        let fits = format!("(#{}#)", "00".repeat(MAX_SEXP_LEN / 2 - 2));
        assert_eq!(parse_ok(&fits).as_list().unwrap()[0].as_atom().unwrap().len(), MAX_SEXP_LEN / 2 - 2);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&input);
        }

        #[test]
        fn sexp_like_text_never_panics(input in r#"[()#|"\\{}\[\]0-9a-fA-F:x \n=+/-]{0,200}"#) {
            let _ = parse(input.as_bytes());
        }
    }
}

//! libgcrypt S-expressions, the one syntax Guix uses for keys, ACLs and narinfo signatures.
//!
//! A [`Sexp`] is what libgcrypt's `gcry_sexp_t` holds once parsed: nested lists of byte-string
//! atoms. The syntax an atom was written in (a token `abc`, a string `"abc"`, hex `#616263#`,
//! base64 `|YWJj|` or canonical `3:abc`) is not kept, exactly as in libgcrypt, so two sexps
//! are equal when Guile's `canonical-sexp->sexp` would make them `equal?`: that is the rule
//! `guix substitute` applies when it compares a signature's key with its ACL.
//!
//! [`Sexp::parse`] reads all of libgcrypt's input syntaxes within fixed bounds, because the
//! proxy parses signatures that come from the network.
//! [`Sexp::to_advanced`] prints libgcrypt's "advanced" format (`gcry_sexp_sprint` with
//! `GCRYSEXP_FMT_ADVANCED`) byte for byte, which is the form Guix writes key files in and
//! base64-encodes into `Signature:` lines.

mod parse;

use std::fmt;

use data_encoding::BASE64;

/// The longest input [`Sexp::parse`] accepts, in bytes. A Guix signature is about 700 bytes
/// and a key file under 300; an ACL with a few hundred keys still fits.
pub const MAX_SEXP_LEN: usize = 64 * 1024;

/// The deepest list nesting [`Sexp::parse`] accepts. Guix's deepest sexp, a signature, nests 4 deep.
pub const MAX_SEXP_DEPTH: usize = 32;

/// A parsed libgcrypt S-expression: a byte-string atom or a list.
///
/// `Debug` prints the sexp on one line in the advanced syntax; `Display` prints libgcrypt's
/// multi-line advanced format, as [`Sexp::to_advanced`] does.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Sexp {
    /// A string of bytes, however it was written.
    Atom(Vec<u8>),
    /// A list of elements; by convention the first is an atom naming the list.
    List(Vec<Sexp>),
}

impl Sexp {
    /// Parses one S-expression in any syntax `gcry_sexp_new` accepts in autodetect mode, plus
    /// Rivest's `{base64}` transport wrapping.
    ///
    /// As in libgcrypt (`src/sexp.c`, `do_vsexp_sscan`), the input may mix:
    /// - lists `( … )` and whitespace (space, `\t`, `\n`, `\v`, `\f`, `\r`) between elements;
    /// - tokens: a letter or one of `-./_:*+=`, then letters, digits and those;
    /// - quoted strings `"…"` with the escapes `\b \t \v \n \f \r \" \' \\`, `\ooo` (three
    ///   octal digits), `\xHH`, and a backslash before a line break to continue the line;
    /// - hex `#…#` (either case, whitespace inside ignored, an even number of digits);
    /// - base64 `|…|`;
    /// - canonical atoms `len:bytes` holding any bytes, and a length before `"`, `#` or `|`,
    ///   which libgcrypt ignores and so does this reader.
    ///
    /// Beyond libgcrypt, `0:` is read as the empty atom (libgcrypt refuses the leading zero
    /// but prints it), and the whole input may be `{base64}` of a sexp (libgcrypt refuses the
    /// `{`). Display hints `[…]` are refused; no Guix data uses them.
    ///
    /// The input must hold exactly one list, optionally surrounded by whitespace. It may be
    /// at most [`MAX_SEXP_LEN`] bytes and nest at most [`MAX_SEXP_DEPTH`] lists deep, so
    /// hostile input costs bounded time and stack. Errors carry an offset, never the text.
    pub fn parse(input: &[u8]) -> Result<Sexp, crate::Error> {
        parse::parse(input)
    }

    /// An atom holding `bytes`.
    pub fn atom(bytes: impl Into<Vec<u8>>) -> Sexp {
        Sexp::Atom(bytes.into())
    }

    /// A list `(name items…)` whose first element is the atom `name`.
    pub fn named(name: &str, items: impl IntoIterator<Item = Sexp>) -> Sexp {
        Sexp::List(std::iter::once(Sexp::atom(name)).chain(items).collect())
    }

    /// The atom's bytes, or `None` for a list.
    pub fn as_atom(&self) -> Option<&[u8]> {
        match self {
            Sexp::Atom(bytes) => Some(bytes),
            Sexp::List(_) => None,
        }
    }

    /// The list's elements, or `None` for an atom.
    pub fn as_list(&self) -> Option<&[Sexp]> {
        match self {
            Sexp::List(items) => Some(items),
            Sexp::Atom(_) => None,
        }
    }

    /// The name of a list, i.e. its first element if that is an atom.
    pub fn name(&self) -> Option<&[u8]> {
        self.as_list()?.first()?.as_atom()
    }

    /// The first list named `token`, searching this sexp and everything inside it in
    /// document order, as libgcrypt's `gcry_sexp_find_token` (Guile's `find-sexp-token`) does.
    pub fn find_token(&self, token: &str) -> Option<&Sexp> {
        if self.name() == Some(token.as_bytes()) {
            return Some(self);
        }
        self.as_list()?.iter().skip(1).find_map(|item| item.find_token(token))
    }

    /// The atom after the name in the first list named `token` (`(token value)`), as libgcrypt's
    /// `gcry_sexp_nth_data(find_token(token), 1)` gives it.
    pub fn token_value(&self, token: &str) -> Option<&[u8]> {
        self.find_token(token)?.as_list()?.get(1)?.as_atom()
    }

    /// libgcrypt's advanced text format, byte for byte as `gcry_sexp_sprint` prints it, with
    /// one deliberate difference: an atom containing a byte of 0x80 or more is printed as
    /// `#hex#`, so the result is always ASCII (libgcrypt would copy bytes 0xA1–0xFF raw into
    /// a quoted string, which does not survive Guix's UTF-8 decoding).
    ///
    /// Each list opens as `(` after a newline and one space per level of nesting; an atom is
    /// followed by a space unless it ends its list; a `)` that is not followed by a `(` (or
    /// the end) is followed by a newline and the indentation; the text ends with `\n`.
    pub fn to_advanced(&self) -> String {
        let mut events = Vec::new();
        flatten(self, &mut events);
        let mut out = String::new();
        let mut indent = 0usize;
        for (i, event) in events.iter().enumerate() {
            let next = events.get(i + 1);
            match event {
                Event::Open => {
                    if indent > 0 {
                        out.push('\n');
                        push_spaces(&mut out, indent);
                    }
                    out.push('(');
                    indent += 1;
                }
                Event::Close => {
                    out.push(')');
                    indent -= 1;
                    if !matches!(next, Some(Event::Open) | None) {
                        out.push('\n');
                        push_spaces(&mut out, indent);
                    }
                }
                Event::Atom(bytes) => {
                    push_atom(&mut out, bytes);
                    if !matches!(next, Some(Event::Close)) {
                        out.push(' ');
                    }
                }
            }
        }
        out.push('\n');
        out
    }

    /// The canonical form, `(`, `len:bytes` atoms and `)` with no whitespace: the unique
    /// binary encoding (the one Guix hashes nothing with, but libgcrypt reads).
    pub fn to_canonical(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut events = Vec::new();
        flatten(self, &mut events);
        for event in events {
            match event {
                Event::Open => out.push(b'('),
                Event::Close => out.push(b')'),
                Event::Atom(bytes) => {
                    out.extend_from_slice(format!("{}:", bytes.len()).as_bytes());
                    out.extend_from_slice(bytes);
                }
            }
        }
        out
    }

    /// Rivest's transport form, `{base64 of the canonical form}`, which [`Sexp::parse`] reads
    /// back (libgcrypt itself does not).
    pub fn to_transport(&self) -> String {
        format!("{{{}}}", BASE64.encode(&self.to_canonical()))
    }
}

impl fmt::Display for Sexp {
    /// Writes [`Sexp::to_advanced`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_advanced())
    }
}

/// Wipes every atom, so that a parsed secret key can be held in a `Zeroizing<Sexp>`.
impl zeroize::Zeroize for Sexp {
    fn zeroize(&mut self) {
        match self {
            Sexp::Atom(bytes) => bytes.zeroize(),
            Sexp::List(items) => items.iter_mut().for_each(zeroize::Zeroize::zeroize),
        }
    }
}

impl fmt::Debug for Sexp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::new();
        write_compact(self, &mut text);
        write!(f, "Sexp({text})")
    }
}

/// One step of a depth-first walk, the shape libgcrypt's printer works on.
enum Event<'a> {
    Open,
    Close,
    Atom(&'a [u8]),
}

fn flatten<'a>(sexp: &'a Sexp, events: &mut Vec<Event<'a>>) {
    match sexp {
        Sexp::Atom(bytes) => events.push(Event::Atom(bytes)),
        Sexp::List(items) => {
            events.push(Event::Open);
            for item in items {
                flatten(item, events);
            }
            events.push(Event::Close);
        }
    }
}

fn write_compact(sexp: &Sexp, out: &mut String) {
    match sexp {
        Sexp::Atom(bytes) => push_atom(out, bytes),
        Sexp::List(items) => {
            out.push('(');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                write_compact(item, out);
            }
            out.push(')');
        }
    }
}

fn push_spaces(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

/// How libgcrypt's `suitable_encoding` would print an atom (with our ASCII-only deviation).
#[derive(Debug, PartialEq, Eq)]
enum Encoding {
    Token,
    Quoted,
    Hex,
}

/// The bytes a quoted string may hold, escaped or not: libgcrypt's rule, minus bytes ≥ 0x80.
fn stringish(b: u8) -> bool {
    (0x20..0x7f).contains(&b) || b"\x08\t\x0b\n\x0c\r".contains(&b)
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-./_:*+=".contains(&b)
}

fn encoding(bytes: &[u8]) -> Encoding {
    let Some(&first) = bytes.first() else {
        return Encoding::Quoted;
    };
    // libgcrypt: a leading zero or high bit means a binary number; any other unprintable byte
    // means binary data.
    if first == 0 || first >= 0x80 || !bytes.iter().all(|&b| stringish(b)) {
        return Encoding::Hex;
    }
    if !first.is_ascii_digit() && bytes.iter().all(|&b| is_token_byte(b)) {
        Encoding::Token
    } else {
        Encoding::Quoted
    }
}

fn push_atom(out: &mut String, bytes: &[u8]) {
    match encoding(bytes) {
        Encoding::Token => out.extend(bytes.iter().map(|&b| char::from(b))),
        Encoding::Hex => {
            out.push('#');
            for b in bytes {
                out.push_str(&format!("{b:02X}"));
            }
            out.push('#');
        }
        Encoding::Quoted => {
            out.push('"');
            for &b in bytes {
                match b {
                    0x08 => out.push_str("\\b"),
                    b'\t' => out.push_str("\\t"),
                    0x0b => out.push_str("\\v"),
                    b'\n' => out.push_str("\\n"),
                    0x0c => out.push_str("\\f"),
                    b'\r' => out.push_str("\\r"),
                    b'"' => out.push_str("\\\""),
                    b'\'' => out.push_str("\\'"),
                    b'\\' => out.push_str("\\\\"),
                    _ => out.push(char::from(b)),
                }
            }
            out.push('"');
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn hex(text: &str) -> Sexp {
        Sexp::atom(data_encoding::HEXUPPER.decode(text.as_bytes()).unwrap())
    }

    #[test]
    fn advanced_format_matches_libgcrypt_layout() {
        let data = Sexp::named(
            "data",
            [Sexp::named("flags", [Sexp::atom("rfc6979")]), Sexp::named("hash", [Sexp::atom("sha256"), hex("99FF")])],
        );
        let sexp = Sexp::named("signature", [data, Sexp::named("x", [])]);
        assert_eq!(
            sexp.to_advanced(),
            "(signature \n (data \n  (flags rfc6979)\n  (hash sha256 #99FF#)\n  )\n (x)\n )\n"
        );
    }

    #[test]
    fn atoms_after_lists_are_indented_like_libgcrypt() {
        let sexp = Sexp::named("a", [Sexp::named("b", []), Sexp::atom("c")]);
        assert_eq!(sexp.to_advanced(), "(a \n (b)\n c)\n");
        assert_eq!(Sexp::List(vec![]).to_advanced(), "()\n");
    }

    #[test]
    fn atoms_choose_token_string_or_hex_as_libgcrypt_does() {
        let cases: &[(&[u8], &str)] = &[
            (b"Ed25519", "Ed25519"),
            (b"a-b.c/d_e:f*g+h=i", "a-b.c/d_e:f*g+h=i"),
            (b"1abc", "\"1abc\""),
            (b"guix import", "\"guix import\""),
            (b"", "\"\""),
            (b"tab\there \"q\" 'x' \\", "\"tab\\there \\\"q\\\" \\'x\\' \\\\\""),
            (b"\x00abc", "#00616263#"),
            (b"\x80", "#80#"),
            (b"ab\x01", "#616201#"),
            (b"ab\xe9", "#6162E9#"),
        ];
        for (bytes, printed) in cases {
            assert_eq!(Sexp::List(vec![Sexp::atom(*bytes)]).to_advanced(), format!("({printed})\n"), "{bytes:?}");
        }
    }

    #[test]
    fn find_token_searches_depth_first_in_document_order() {
        let sexp = Sexp::parse(b"(a (b (q #01#)) (q #02#) (c (q #03#)))").unwrap();
        assert_eq!(sexp.token_value("q"), Some(&[1u8][..]));
        assert_eq!(sexp.find_token("a"), Some(&sexp));
        assert_eq!(sexp.find_token("c").unwrap().token_value("q"), Some(&[3u8][..]));
        assert!(sexp.find_token("z").is_none());
        // An atom equal to a token inside a list is not a list named by it.
        assert!(Sexp::parse(b"(a b)").unwrap().find_token("b").is_none());
    }

    #[test]
    fn debug_is_one_line() {
        let sexp = Sexp::parse(b"(public-key (ecc (curve Ed25519) (q #00FF#)))").unwrap();
        assert_eq!(format!("{sexp:?}"), "Sexp((public-key (ecc (curve Ed25519) (q #00FF#))))");
    }

    /// Sexps of bounded depth and size with atoms drawn to hit every printing rule.
    pub(crate) fn arb_sexp() -> impl Strategy<Value = Sexp> {
        let atom = prop_oneof![
            "[a-zA-Z][a-zA-Z0-9./_:*+=-]{0,12}".prop_map(Sexp::atom),
            "[ -~]{0,12}".prop_map(Sexp::atom),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Sexp::Atom),
        ];
        let tree = atom.prop_recursive(6, 64, 6, |inner| proptest::collection::vec(inner, 0..6).prop_map(Sexp::List));
        proptest::collection::vec(tree, 0..6).prop_map(Sexp::List)
    }

    proptest! {
        #[test]
        fn advanced_print_parse_round_trips(sexp in arb_sexp()) {
            let text = sexp.to_advanced();
            prop_assert!(text.is_ascii());
            prop_assert_eq!(Sexp::parse(text.as_bytes()).unwrap(), sexp);
        }

        #[test]
        fn canonical_and_transport_round_trip(sexp in arb_sexp()) {
            prop_assert_eq!(&Sexp::parse(&sexp.to_canonical()).unwrap(), &sexp);
            prop_assert_eq!(&Sexp::parse(sexp.to_transport().as_bytes()).unwrap(), &sexp);
        }
    }
}

//! A small HTTP/1.1 client over a blocking socket, for tests that need what a full client
//! hides: any bytes as the request target (hostile URLs), raw headers, and whether a body
//! ended as HTTP says a whole body ends (a server that aborts a stream must not look complete).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

/// A parsed response: status, headers (lower-cased names), body.
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Header lines as (lower-case name, value).
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// Whether the body ended as HTTP says a whole body ends: `Content-Length` bytes, or the
    /// last chunk. A server that aborts a stream leaves this false.
    pub complete: bool,
}

impl Reply {
    /// The first header called `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Sends `target` (raw bytes, so it can be any garbage) with `extra` header lines and reads
/// the whole response on a `Connection: close` socket.
pub fn request(addr: SocketAddr, method: &str, target: &[u8], extra: &str) -> Reply {
    exchange(TcpStream::connect(addr).unwrap(), method, target, extra)
}

/// [`request`] from the local address `from` (another loopback address, `127.0.0.2`, plays a
/// client on another host).
pub fn request_from(from: IpAddr, addr: SocketAddr, method: &str, target: &[u8], extra: &str) -> Reply {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(from, 0).into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    exchange(socket.into(), method, target, extra)
}

fn exchange(mut s: TcpStream, method: &str, target: &[u8], extra: &str) -> Reply {
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut req = Vec::new();
    req.extend_from_slice(method.as_bytes());
    req.push(b' ');
    req.extend_from_slice(target);
    req.extend_from_slice(format!(" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}\r\n").as_bytes());
    s.write_all(&req).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    parse(&raw, method == "HEAD")
}

/// GET `path` (a plain ASCII path).
pub fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path.as_bytes(), "")
}

fn parse(raw: &[u8], head: bool) -> Reply {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("complete response head");
    let head_text = std::str::from_utf8(&raw[..end]).unwrap();
    let mut lines = head_text.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let length = headers.iter().find(|(n, _)| n == "content-length").map(|(_, v)| v.parse::<usize>().unwrap());
    let (body, complete) = if head {
        (Vec::new(), true)
    } else if chunked {
        dechunk(rest)
    } else {
        (rest.to_vec(), length.is_none_or(|l| l == rest.len()))
    };
    Reply { status, headers, body, complete }
}

/// Decodes a chunked body; the flag says whether the terminating zero-size chunk arrived.
fn dechunk(mut data: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") else { return (out, false) };
        let size = usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16).unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return (out, true);
        }
        if data.len() < size + 2 {
            out.extend_from_slice(&data[..size.min(data.len())]);
            return (out, false);
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// A response whose body the test reads (or stops reading) itself.
pub struct Opened {
    /// Status code.
    pub status: u16,
    /// Header lines as (lower-case name, value).
    pub headers: Vec<(String, String)>,
    /// The socket, at the first byte of the body.
    pub body: std::io::BufReader<TcpStream>,
}

impl Opened {
    /// The first header called `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Sends an HTTP/1.0 GET of `path` (so the body runs to EOF, unchunked) and reads the
/// response head only.
pub fn open(addr: SocketAddr, path: &str) -> Opened {
    use std::io::BufRead as _;
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut body = std::io::BufReader::new(s);
    let mut line = String::new();
    body.read_line(&mut line).unwrap();
    let status = line.split(' ').nth(1).expect("a status line").parse().expect("a status code");
    let mut headers = Vec::new();
    loop {
        line.clear();
        body.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        let (n, v) = line.split_once(':').expect("a header line");
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    Opened { status, headers, body }
}

/// Sends `requests` (method, target) over one keep-alive connection and reads every response:
/// one after the other, or all requests at once before the first response (`pipelined`).
/// Every response must have a `Content-Length` or be chunked; a body cut short fails the test.
pub fn keep_alive(addr: SocketAddr, requests: &[(&str, &str)], pipelined: bool) -> Vec<Reply> {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut writer = s.try_clone().unwrap();
    let mut reader = std::io::BufReader::new(s);
    let head = |method: &str, target: &str| format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    if pipelined {
        let all: String = requests.iter().map(|(m, t)| head(m, t)).collect();
        writer.write_all(all.as_bytes()).unwrap();
    }
    let mut replies = Vec::new();
    for (method, target) in requests {
        if !pipelined {
            writer.write_all(head(method, target).as_bytes()).unwrap();
        }
        replies.push(read_reply(&mut reader, *method == "HEAD"));
    }
    replies
}

/// Reads one response from a keep-alive connection.
fn read_reply(reader: &mut impl std::io::BufRead, head: bool) -> Reply {
    let mut raw = Vec::new();
    while !raw.ends_with(b"\r\n\r\n") {
        let n = reader.read_until(b'\n', &mut raw).unwrap();
        assert!(n > 0, "the connection closed before a whole response head");
    }
    let mut reply = parse(&raw, true);
    if head {
        return reply;
    }
    let length = reply.header("content-length").map(|l| l.parse::<usize>().unwrap());
    if let Some(length) = length {
        let mut body = vec![0; length];
        reader.read_exact(&mut body).expect("the whole body");
        reply.body = body;
    } else {
        assert_eq!(reply.header("transfer-encoding"), Some("chunked"), "a body of unknown length");
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let size = usize::from_str_radix(line.trim(), 16).expect("a chunk size");
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).expect("a whole chunk");
            reply.body.extend_from_slice(&chunk[..size]);
            if size == 0 {
                break;
            }
        }
    }
    reply
}

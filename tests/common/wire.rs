//! Raw HTTP/1.1 over a TCP socket, for tests that must send what no HTTP client would send and
//! read exactly what came back (several answers on one connection, whether it was closed).
//!
//! `common::wire`, for the tests that need it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One response as read off the wire.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// Names in lower case, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts this is one of the sidecar's own answers: status, JSON body with the code, and
    /// the `x-sigv4-sidecar-error` header.
    pub fn assert_sidecar(&self, status: u16, code: &str, what: &str) {
        assert_eq!(self.status, status, "{what}: {self:?}");
        assert_eq!(
            self.header("x-sigv4-sidecar-error"),
            Some(code),
            "{what}: {self:?}"
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{what}"
        );
        let v: serde_json::Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {:?}", self.text()));
        assert_eq!(v["error"], code, "{what}: {v}");
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {v}"
        );
    }
}

/// A client connection that writes raw bytes and parses answers as they come.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Conn {
        let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| panic!("connect to {addr} timed out"))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        Conn {
            stream,
            buf: Vec::new(),
            eof: false,
        }
    }

    /// Writes `bytes`; a peer that already closed is not an error here (the answer, if any,
    /// is still readable).
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Reads more bytes into the buffer; false once the peer closed (or reset) the connection
    /// or `deadline` passed.
    async fn fill(&mut self, deadline: Instant) -> bool {
        if self.eof {
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(left, self.stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                self.eof = true;
                false
            }
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(_) => false,
        }
    }

    /// The next complete response (1xx answers skipped), or `None` when the connection closed
    /// or `timeout` passed before one arrived.
    pub async fn answer(&mut self, timeout: Duration) -> Option<Answer> {
        let deadline = Instant::now() + timeout;
        loop {
            match parse(&self.buf, self.eof) {
                Parsed::Complete(answer, used) => {
                    self.buf.drain(..used);
                    if (100..200).contains(&answer.status) {
                        continue;
                    }
                    return Some(answer);
                }
                Parsed::Invalid(why) => panic!(
                    "unparseable answer ({why}): {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                Parsed::Partial => {
                    if !self.fill(deadline).await {
                        // One last look: a body delimited by the close is complete now.
                        if let Parsed::Complete(answer, used) = parse(&self.buf, self.eof) {
                            self.buf.drain(..used);
                            return Some(answer);
                        }
                        return None;
                    }
                }
            }
        }
    }

    /// Whether the peer closes the connection within `timeout` (anything it still sends is
    /// kept for [`Conn::answer`]).
    pub async fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.eof {
            if Instant::now() >= deadline {
                return false;
            }
            self.fill(deadline).await;
        }
        true
    }

    pub fn into_split(
        self,
    ) -> (
        tokio::net::tcp::OwnedReadHalf,
        tokio::net::tcp::OwnedWriteHalf,
    ) {
        self.stream.into_split()
    }
}

/// Sends `request` on a fresh connection; returns the first answer and whether the
/// connection was closed after it (within 3 s).
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> (Option<Answer>, bool) {
    let mut c = Conn::open(addr).await;
    let _ = c.send(request).await;
    let answer = c.answer(Duration::from_secs(5)).await;
    let closed = c.closed_within(Duration::from_secs(3)).await;
    (answer, closed)
}

/// Sends `request` on a fresh connection and asserts the first answer is the sidecar's own
/// `status` and `code` (see [`Answer::assert_sidecar`]); returns whether the connection was
/// closed after it.
pub async fn expect_sidecar_answer(
    addr: SocketAddr,
    request: &[u8],
    status: u16,
    code: &str,
    what: &str,
) -> bool {
    let (answer, closed) = exchange(addr, request).await;
    answer
        .unwrap_or_else(|| panic!("{what}: no answer"))
        .assert_sidecar(status, code, what);
    closed
}

enum Parsed {
    Complete(Answer, usize),
    Partial,
    Invalid(String),
}

fn parse(buf: &[u8], eof: bool) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut res = httparse::Response::new(&mut headers);
    let head_len = match res.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(e) => return Parsed::Invalid(e.to_string()),
    };
    let status = res.code.unwrap_or(0);
    let headers: Vec<(String, String)> = res
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let find = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let rest = &buf[head_len..];
    let no_body = (100..200).contains(&status) || status == 204 || status == 304;
    let (body, used) = if no_body {
        (Vec::new(), 0)
    } else if find("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"))
    {
        match dechunk(rest) {
            Some(v) => v,
            None => return Parsed::Partial,
        }
    } else if let Some(len) = find("content-length") {
        let Ok(len) = len.trim().parse::<usize>() else {
            return Parsed::Invalid(format!("content-length {len:?}"));
        };
        if rest.len() < len {
            return Parsed::Partial;
        }
        (rest[..len].to_vec(), len)
    } else if eof {
        (rest.to_vec(), rest.len())
    } else {
        return Parsed::Partial;
    };
    Parsed::Complete(
        Answer {
            status,
            headers,
            body,
        },
        head_len + used,
    )
}

/// Decodes a complete chunked body at the start of `buf`: `(body, bytes used)`.
fn dechunk(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let (body, used) = dechunk_prefix(buf);
    Some((body, used?))
}

/// Decodes the chunked body at the start of `buf` as far as it goes: the data of every chunk
/// (of a cut-off last one too) and, if the terminating chunk arrived, the bytes used.
pub fn dechunk_prefix(buf: &[u8]) -> (Vec<u8>, Option<usize>) {
    let line_end = |from: usize| Some(from + buf[from..].windows(2).position(|w| w == b"\r\n")?);
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(end) = line_end(at) else {
            return (body, None);
        };
        let size = std::str::from_utf8(&buf[at..end])
            .ok()
            .and_then(|t| usize::from_str_radix(t.split(';').next()?.trim(), 16).ok());
        let Some(size) = size else {
            return (body, None);
        };
        at = end + 2;
        if size == 0 {
            // Trailers (none expected) end with an empty line.
            return (body, line_end(at).map(|end| end + 2));
        }
        body.extend_from_slice(&buf[at..buf.len().min(at + size)]);
        if buf.len() < at + size + 2 {
            return (body, None);
        }
        at += size + 2;
    }
}

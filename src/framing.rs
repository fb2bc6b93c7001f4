//! Request framing of HTTP/1 connections, watched from the side to refuse ambiguous heads.
//!
//! A request carrying both `Content-Length` and `Transfer-Encoding` has no legitimate use and is
//! the classic request-smuggling shape (two parsers on a path disagree on where it ends). RFC
//! 9112 §6.3 lets a server either refuse it or frame it by `Transfer-Encoding` and close the
//! connection afterwards. hyper does the latter, and drops the `Content-Length` (or never records
//! it) before a service sees the request, so the sidecar cannot tell it from a plain chunked one.
//! We want the clear answer: a 400 before anything is read or forwarded.
//!
//! [`Watched`] wraps the accepted socket and follows the bytes hyper reads through it with
//! [`Framing`]: heads with httparse (the parser hyper itself uses, same defaults), bodies by
//! `Content-Length` or by chunk sizes, byte for byte as hyper's chunked decoder frames them. It
//! records the index of the first head that carries both headers. The server counts the requests
//! hyper hands it on the connection and marks that one with [`AmbiguousFraming`]; the proxy
//! refuses marked requests.
//!
//! The watch never changes a byte. It stops watching at the first input it does not follow
//! exactly as hyper does, which only ever happens where hyper refuses the input and closes the
//! connection anyway; a connection it stopped watching is left to hyper's own (safe) handling.
//! That holds only while both parse with the same rules: the server gives hyper's HTTP/1 builder
//! default parser settings and `max_header_size` equal to the watch's `max_head`, so a head too
//! long for the watch is one hyper answers 431. Change one, change the other.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Marks a request whose head carried both `Content-Length` and `Transfer-Encoding`
/// (a request extension, set by the server, read by the proxy).
#[derive(Debug, Clone, Copy)]
pub struct AmbiguousFraming;

/// Header lines parsed on the stack; a head with more is parsed again with room for as many as
/// hyper accepts ([`crate::config::Limits::max_header_lines`]).
const MAX_HEADERS: usize = 100;

/// Follows the framing of one HTTP/1 request stream, fed the bytes in order. Two watches fed the
/// same bytes compare equal however the bytes were cut into reads (the fuzz target checks it).
#[derive(Debug, PartialEq, Eq)]
pub struct Framing {
    state: State,
    /// The beginning of a head that has not fully arrived yet.
    partial: Vec<u8>,
    /// Complete heads seen so far: the index the next head will have.
    heads: u64,
    /// A head longer than this is one hyper refuses (431): stop watching.
    max_head: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    /// A body of known length: this many bytes still to come.
    Length(u64),
    Chunked(Chunk),
    /// Not watching any more: an ambiguous head was found (the connection is answered 400 and
    /// closed) or the input is one hyper refuses. (HTTP/2 connections are not wrapped at all.)
    Off,
}

/// The chunked decoder's position, the same steps as hyper's `ChunkedState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Start,
    Size(u64),
    SizeLws(u64),
    Extension(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    Trailer,
    TrailerLf,
    EndCr,
    EndLf,
    /// The body is over; the next byte starts a head.
    End,
}

/// How the head just parsed frames what follows it.
enum Next {
    Body(State),
    Ambiguous,
    Refused,
}

impl Framing {
    /// Watches an HTTP/1 connection whose heads hyper accepts up to `max_head` bytes.
    pub fn http1(max_head: usize) -> Self {
        Framing {
            state: State::Head,
            partial: Vec::new(),
            heads: 0,
            max_head,
        }
    }

    /// Complete request heads seen so far.
    pub fn heads(&self) -> u64 {
        self.heads
    }

    /// Follows `bytes`, the next bytes read from the connection. Returns the index (0-based, in
    /// order of arrival on this connection) of a request head carrying both `Content-Length` and
    /// `Transfer-Encoding`, the first time one is found.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Option<u64> {
        while !bytes.is_empty() {
            match self.state {
                State::Off => return None,
                State::Head => {
                    let (used, next) = self.head(bytes);
                    bytes = &bytes[used..];
                    match next {
                        None => {}
                        Some(Next::Body(state)) => self.state = state,
                        Some(Next::Refused) => self.state = State::Off,
                        Some(Next::Ambiguous) => {
                            self.state = State::Off;
                            return Some(self.heads - 1);
                        }
                    }
                }
                State::Length(rest) => {
                    self.state = match skip(rest, &mut bytes) {
                        0 => State::Head,
                        rest => State::Length(rest),
                    };
                }
                State::Chunked(Chunk::Data(rest)) => {
                    self.state = State::Chunked(match skip(rest, &mut bytes) {
                        0 => Chunk::DataCr,
                        rest => Chunk::Data(rest),
                    });
                }
                State::Chunked(step) => {
                    self.state = match chunk_step(step, bytes[0]) {
                        Some(Chunk::End) => State::Head,
                        Some(next) => State::Chunked(next),
                        None => State::Off,
                    };
                    bytes = &bytes[1..];
                }
            }
        }
        None
    }

    /// Reads (the rest of) a head from the front of `bytes`. Returns how many bytes of `bytes`
    /// it took, and what follows the head once it is complete. A head longer than `max_head` is
    /// refused, as hyper refuses it (`max_header_size`, set to the same limit by the server).
    fn head(&mut self, bytes: &[u8]) -> (usize, Option<Next>) {
        if self.partial.is_empty() {
            // Empty lines before a request line (RFC 9112 §2.2, skipped by httparse too): not
            // buffered, so a trickle of them costs nothing.
            let blank = bytes
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
            if blank > 0 {
                return (blank, None);
            }
            return match parse_head(bytes, self.max_head) {
                Parsed::Complete(len, _) if len > self.max_head => {
                    (bytes.len(), Some(Next::Refused))
                }
                Parsed::Complete(len, next) => {
                    self.heads += 1;
                    (len, Some(next))
                }
                Parsed::Partial if bytes.len() < self.max_head => {
                    self.partial.extend_from_slice(bytes);
                    (bytes.len(), None)
                }
                Parsed::Partial | Parsed::Invalid => (bytes.len(), Some(Next::Refused)),
            };
        }
        let carried = self.partial.len();
        let take = bytes.len().min(self.max_head.saturating_sub(carried));
        self.partial.extend_from_slice(&bytes[..take]);
        // A head ends with an empty line (`\n\n` or `\n\r\n`). Until the new bytes bring one,
        // parsing the buffered head again would be wasted work, quadratic for a head trickled
        // in byte by byte.
        let fresh = &self.partial[carried.saturating_sub(2)..];
        let ended =
            fresh.windows(2).any(|w| w == b"\n\n") || fresh.windows(3).any(|w| w == b"\n\r\n");
        let parsed = if ended {
            parse_head(&self.partial, self.max_head)
        } else {
            Parsed::Partial
        };
        match parsed {
            Parsed::Complete(len, next) => {
                self.partial = Vec::new();
                self.heads += 1;
                (len - carried, Some(next))
            }
            Parsed::Partial if self.partial.len() < self.max_head => (take, None),
            Parsed::Partial | Parsed::Invalid => {
                self.partial = Vec::new();
                (bytes.len(), Some(Next::Refused))
            }
        }
    }
}

/// Skips up to `rest` body bytes from the front of `bytes`; returns how many are still to come.
fn skip(rest: u64, bytes: &mut &[u8]) -> u64 {
    let used = rest.min(bytes.len() as u64);
    *bytes = &bytes[used as usize..];
    rest - used
}

enum Parsed {
    Complete(usize, Next),
    Partial,
    Invalid,
}

/// Parses a request head as hyper does and decides the framing of its body as hyper's
/// `Server::parse` does (RFC 9112 §6): `Transfer-Encoding` ending in `chunked` wins, then
/// `Content-Length` (digits only, repeated lines must agree), else no body.
fn parse_head(buf: &[u8], max_head: usize) -> Parsed {
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    match parse_head_in(buf, &mut headers) {
        Some(parsed) => parsed,
        None => {
            let lines = crate::config::Limits::max_header_lines(max_head);
            let mut many = vec![MaybeUninit::<httparse::Header<'_>>::uninit(); lines];
            parse_head_in(buf, &mut many).unwrap_or(Parsed::Invalid)
        }
    }
}

/// [`parse_head`] with room for `headers.len()` lines; `None` when the head has more.
fn parse_head_in<'b>(
    buf: &'b [u8],
    headers: &mut [MaybeUninit<httparse::Header<'b>>],
) -> Option<Parsed> {
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, buf, headers)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Some(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => return None,
        Err(_) => return Some(Parsed::Invalid),
    };
    let (mut te, mut chunked, mut cl, mut length) = (false, false, false, None);
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te = true;
            // Only the last coding of the last line counts, as in hyper.
            chunked = h
                .value
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            cl = true;
            match (digits(h.value), length) {
                (None, _) => length = Some(None),
                (Some(n), None) => length = Some(Some(n)),
                (Some(n), Some(Some(m))) if n == m => {}
                (Some(_), Some(_)) => length = Some(None),
            }
        }
    }
    let next = if te && cl {
        Next::Ambiguous
    } else if te && chunked && req.version == Some(1) {
        Next::Body(State::Chunked(Chunk::Start))
    } else if te {
        Next::Refused
    } else {
        match length {
            None | Some(Some(0)) => Next::Body(State::Head),
            Some(Some(n)) => Next::Body(State::Length(n)),
            Some(None) => Next::Refused,
        }
    };
    Some(Parsed::Complete(len, next))
}

/// A `Content-Length` value as hyper reads it: ASCII digits only, no overflow.
fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// One byte of chunked framing outside chunk data. `None`: hyper refuses this byte.
fn chunk_step(step: Chunk, b: u8) -> Option<Chunk> {
    let hex = |size: u64| -> Option<u64> {
        let d = (b as char).to_digit(16)?;
        size.checked_mul(16)?.checked_add(u64::from(d))
    };
    Some(match (step, b) {
        (Chunk::Start, _) => Chunk::Size(hex(0)?),
        (Chunk::Size(n), b'\t' | b' ') | (Chunk::SizeLws(n), b'\t' | b' ') => Chunk::SizeLws(n),
        (Chunk::Size(n), b';') | (Chunk::SizeLws(n), b';') => Chunk::Extension(n),
        (Chunk::Size(n), b'\r') | (Chunk::SizeLws(n), b'\r') => Chunk::SizeLf(n),
        (Chunk::Size(n), _) => Chunk::Size(hex(n)?),
        (Chunk::SizeLws(_), _) => return None,
        (Chunk::Extension(n), b'\r') => Chunk::SizeLf(n),
        (Chunk::Extension(_), b'\n') => return None,
        (Chunk::Extension(n), _) => Chunk::Extension(n),
        (Chunk::SizeLf(0), b'\n') => Chunk::EndCr,
        (Chunk::SizeLf(n), b'\n') => Chunk::Data(n),
        (Chunk::DataCr, b'\r') => Chunk::DataLf,
        (Chunk::DataLf, b'\n') => Chunk::Start,
        (Chunk::Trailer, b'\r') => Chunk::TrailerLf,
        (Chunk::Trailer, _) => Chunk::Trailer,
        (Chunk::TrailerLf, b'\n') => Chunk::EndCr,
        (Chunk::EndCr, b'\r') => Chunk::EndLf,
        (Chunk::EndCr, _) => Chunk::Trailer,
        (Chunk::EndLf, b'\n') => Chunk::End,
        (Chunk::SizeLf(_) | Chunk::DataCr | Chunk::DataLf | Chunk::TrailerLf | Chunk::EndLf, _) => {
            return None
        }
        // Data is skipped in bulk by the caller, and nothing follows the end.
        (Chunk::Data(_) | Chunk::End, _) => return None,
    })
}

/// What the server and the watch share for one connection.
#[derive(Debug)]
pub struct Verdict {
    first_ambiguous: AtomicU64,
    served: AtomicU64,
}

impl Verdict {
    pub fn new() -> Arc<Self> {
        Arc::new(Verdict {
            first_ambiguous: AtomicU64::new(u64::MAX),
            served: AtomicU64::new(0),
        })
    }

    /// Called once per request hyper hands to the service, in order: is this the ambiguous one
    /// (or, defensively, any after it)? hyper parses a head before it dispatches it, and it
    /// reads the head through [`Watched`], so the verdict on it is in by now.
    pub fn next_is_ambiguous(&self) -> bool {
        let n = self.served.fetch_add(1, Ordering::Relaxed);
        n >= self.first_ambiguous.load(Ordering::Relaxed)
    }
}

/// The accepted socket, with its incoming bytes followed by a [`Framing`].
pub struct Watched<T> {
    io: T,
    framing: Framing,
    verdict: Arc<Verdict>,
}

impl<T> Watched<T> {
    pub fn new(io: T, framing: Framing, verdict: Arc<Verdict>) -> Self {
        Watched {
            io,
            framing,
            verdict,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        if let Some(index) = this.framing.feed(&buf.filled()[before..]) {
            this.verdict.first_ambiguous.store(index, Ordering::Relaxed);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `stream` cut at every `step` bytes; returns (heads seen, ambiguous index, state).
    fn follow(stream: &[u8], step: usize) -> (u64, Option<u64>, State) {
        let mut f = Framing::http1(64 * 1024);
        let mut found = None;
        for piece in stream.chunks(step) {
            if let Some(i) = f.feed(piece) {
                assert!(found.is_none(), "reported twice");
                found = Some(i);
            }
        }
        (f.heads, found, f.state)
    }

    /// Every way of cutting the stream into reads gives the same answer.
    fn follow_all_cuts(stream: &[u8]) -> (u64, Option<u64>, State) {
        let whole = follow(stream, stream.len().max(1));
        for step in 1..stream.len().min(64) {
            assert_eq!(follow(stream, step), whole, "cut every {step} bytes");
        }
        whole
    }

    const GET: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";

    /// Each message, fed alone (whole, then byte by byte) after the ones before it, ends exactly
    /// at its last byte: the watch is back at a head boundary with nothing carried over.
    fn assert_exact_boundaries(messages: &[&[u8]]) {
        for step in [usize::MAX, 1] {
            let mut f = Framing::http1(64 * 1024);
            for (i, m) in messages.iter().enumerate() {
                for piece in m.chunks(step.min(m.len())) {
                    assert_eq!(f.feed(piece), None);
                }
                let what = String::from_utf8_lossy(m);
                assert_eq!(f.state, State::Head, "after {what:?}");
                assert!(f.partial.is_empty(), "after {what:?}");
                assert_eq!(f.heads, i as u64 + 1, "after {what:?}");
            }
        }
        let stream = messages.concat();
        assert_eq!(
            follow_all_cuts(&stream),
            (messages.len() as u64, None, State::Head)
        );
    }

    #[test]
    fn follows_pipelined_requests_of_every_framing_to_the_byte() {
        // A body that looks like an ambiguous request stays a body.
        let inner = "POST /c HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let with_inner = format!(
            "POST /c HTTP/1.1\r\ncontent-length: {}\r\n\r\n{inner}",
            inner.len()
        );
        assert_exact_boundaries(&[
            b"\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\n", // a stray CRLF before a request line
            GET,
            b"POST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            with_inner.as_bytes(),
            b"POST /d HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n\
              5 ;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\nMore: y\r\n\r\n",
            b"POST /e HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"POST /f HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\t\r\n\n\r\n00;a=\"b\"\r\n\r\n",
            b"PUT /g HTTP/1.0\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
            b"DELETE /h HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            GET,
        ]);
    }

    #[test]
    fn finds_the_ambiguous_head_after_good_ones() {
        for ambiguous in [
            &b"POST /x HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"[..],
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 60\r\n\r\n0\r\n\r\n",
            b"POST /x HTTP/1.1\r\ncontent-LENGTH: 0\r\nTRANSFER-encoding: identity\r\n\r\n",
            b"POST /x HTTP/1.0\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            let mut s = GET.to_vec();
            s.extend_from_slice(b"POST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
            s.extend_from_slice(ambiguous);
            s.extend_from_slice(GET);
            let (heads, found, state) = follow_all_cuts(&s);
            assert_eq!((heads, found, state), (3, Some(2), State::Off));
        }
    }

    #[test]
    fn stops_watching_where_hyper_refuses() {
        for refused in [
            &b"POST /x HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"[..],
            b"POST /x HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX",
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;a\nb\r\n",
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1 1\r\n",
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
            b"GET /a b HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            let mut s = GET.to_vec();
            s.extend_from_slice(refused);
            s.extend_from_slice(
                b"POST /y HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            );
            let (_, found, state) = follow_all_cuts(&s);
            assert_eq!(
                (found, state),
                (None, State::Off),
                "{:?}",
                String::from_utf8_lossy(refused)
            );
        }
    }

    #[test]
    fn a_head_over_the_limit_stops_the_watch() {
        let mut f = Framing::http1(100);
        let head = format!("GET /x HTTP/1.1\r\nX-A: {}\r\n", "a".repeat(200));
        assert_eq!(f.feed(&head.as_bytes()[..50]), None);
        assert_eq!(f.state, State::Head);
        assert_eq!(f.feed(&head.as_bytes()[50..]), None);
        assert_eq!(f.state, State::Off);
        assert!(f.partial.capacity() == 0, "the partial head is released");
        // The same head complete in one read is refused just the same.
        let mut f = Framing::http1(100);
        assert_eq!(f.feed(format!("{head}\r\n").as_bytes()), None);
        assert_eq!((f.state, f.heads), (State::Off, 0));
    }

    #[test]
    fn verdict_marks_the_ambiguous_request_and_any_after_it() {
        let v = Verdict::new();
        v.first_ambiguous.store(1, Ordering::Relaxed);
        assert!(!v.next_is_ambiguous());
        assert!(v.next_is_ambiguous());
        assert!(v.next_is_ambiguous());
    }
}

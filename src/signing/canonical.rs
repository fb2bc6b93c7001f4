//! The SigV4 canonical request, written straight into a [`Sink`]: the SHA-256 hasher on the
//! hot path (the canonical request is never held in memory), a `String` for diagnostics.
//!
//! Every rule here reproduces what `aws-sigv4` 1.x computes with the settings
//! [`Scope`](super::Scope) uses, byte for byte; `tests/signing_differential.rs` and the fuzz
//! target check that against `aws-sigv4`'s own `sign()` on generated requests:
//!
//! - path: dot segments removed and empty segments dropped (RFC 3986 5.2.4 as aws-sigv4 applies
//!   it), then percent-encoded again with smithy's "greedy label" set (`%` becomes `%25`), unless
//!   the scope is S3's (path as sent);
//! - query: `application/x-www-form-urlencoded` decoding (`+` is a space, invalid UTF-8 becomes
//!   U+FFFD), each key and value encoded with smithy's query set, pairs sorted by encoded key
//!   then encoded value;
//! - headers: names sorted (values of one name in the order sent, joined by `,`), values with
//!   leading/trailing spaces trimmed and runs of spaces collapsed (spaces only, not tabs).

use std::ops::Range;

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use smallvec::SmallVec;

/// Where the canonical request goes.
pub(super) trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

/// SHA-256 fed in blocks: the canonical request arrives in many small pieces, and one
/// `update` per piece costs more than copying them into a stack buffer first.
pub(super) struct HashSink {
    hasher: sha2::Sha256,
    buf: [u8; 512],
    len: usize,
}

impl HashSink {
    pub fn new() -> Self {
        HashSink {
            hasher: sha2::Sha256::default(),
            buf: [0; 512],
            len: 0,
        }
    }

    pub fn finish(mut self) -> [u8; 32] {
        sha2::Digest::update(&mut self.hasher, &self.buf[..self.len]);
        sha2::Digest::finalize(self.hasher).into()
    }
}

impl Sink for HashSink {
    fn put(&mut self, bytes: &[u8]) {
        if self.len + bytes.len() > self.buf.len() {
            sha2::Digest::update(&mut self.hasher, &self.buf[..self.len]);
            self.len = 0;
            if bytes.len() >= self.buf.len() {
                sha2::Digest::update(&mut self.hasher, bytes);
                return;
            }
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Sink for String {
    fn put(&mut self, bytes: &[u8]) {
        // Everything written is ASCII or was a `&str`, so this never replaces anything.
        self.push_str(&String::from_utf8_lossy(bytes));
    }
}

/// smithy's `BASE_SET` (aws-smithy-http `urlencode.rs`): what query keys and values encode.
const QUERY: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'/')
    .add(b':')
    .add(b',')
    .add(b'?')
    .add(b'#')
    .add(b'[')
    .add(b']')
    .add(b'{')
    .add(b'}')
    .add(b'|')
    .add(b'@')
    .add(b'!')
    .add(b'$')
    .add(b'&')
    .add(b'\'')
    .add(b'(')
    .add(b')')
    .add(b'*')
    .add(b'+')
    .add(b';')
    .add(b'=')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'"')
    .add(b'^')
    .add(b'`')
    .add(b'\\');

/// smithy's greedy label set: the query set without `/`, for the path.
const PATH: &AsciiSet = &QUERY.remove(b'/');

fn put_encoded(sink: &mut impl Sink, s: &str, set: &'static AsciiSet) {
    for chunk in utf8_percent_encode(s, set) {
        sink.put(chunk.as_bytes());
    }
}

/// The canonical URI of `path` (the part of the request target before `?`).
pub(super) fn write_path(sink: &mut impl Sink, path: &str, normalize: bool, double_encode: bool) {
    let path = if path.is_empty() { "/" } else { path };
    let mut emit = |s: &str| {
        if double_encode {
            put_encoded(sink, s, PATH);
        } else {
            sink.put(s.as_bytes());
        }
    };
    if !normalize {
        return emit(path);
    }
    if !path.starts_with('/') {
        emit("/");
    }
    if !(path.contains('.') || path.contains("//")) {
        return emit(path);
    }
    // RFC 3986 5.2.4 as aws-sigv4 does it: "" and "." segments go, ".." drops the one before.
    let mut kept: SmallVec<[&str; 16]> = SmallVec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                kept.pop();
            }
            s => kept.push(s),
        }
    }
    emit("/");
    for (i, s) in kept.iter().enumerate() {
        if i > 0 {
            emit("/");
        }
        emit(s);
    }
    let ends_with_slash = ["/", "/.", "/./", "/..", "/../"]
        .iter()
        .any(|e| path.ends_with(e));
    if ends_with_slash && !kept.is_empty() {
        emit("/");
    }
}

/// The canonical query string of `query` (the part after `?`, if any).
pub(super) fn write_query(sink: &mut impl Sink, query: Option<&str>) {
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return;
    };
    // Encoded keys and values go into one buffer; pairs are sorted as ranges into it, so a
    // query of a few parameters costs no allocation.
    let mut buf: SmallVec<[u8; 512]> = SmallVec::new();
    let mut pairs: SmallVec<[(Range<usize>, Range<usize>); 16]> = SmallVec::new();
    let encode = |buf: &mut SmallVec<[u8; 512]>, s: &str| {
        let start = buf.len();
        for chunk in utf8_percent_encode(s, QUERY) {
            buf.extend_from_slice(chunk.as_bytes());
        }
        start..buf.len()
    };
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let k = encode(&mut buf, &k);
        let v = encode(&mut buf, &v);
        pairs.push((k, v));
    }
    pairs.sort_unstable_by(|a, b| {
        buf[a.0.clone()]
            .cmp(&buf[b.0.clone()])
            .then_with(|| buf[a.1.clone()].cmp(&buf[b.1.clone()]))
    });
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            sink.put(b"&");
        }
        sink.put(&buf[k.clone()]);
        sink.put(b"=");
        sink.put(&buf[v.clone()]);
    }
}

/// One header line's worth of input: name, value, and whether the value is trimmed
/// (client headers are; the signature headers the signer adds are used as they are).
#[derive(Clone, Copy)]
pub(super) struct Entry<'a> {
    pub name: &'a str,
    pub value: &'a str,
    pub trim: bool,
    /// Position in the input, so values of one name keep their order through an unstable sort.
    pub order: u16,
}

/// Sorts `entries` into canonical order: by name, values of one name as sent.
pub(super) fn sort(entries: &mut [Entry<'_>]) {
    entries.sort_unstable_by(|a, b| a.name.cmp(b.name).then(a.order.cmp(&b.order)));
}

/// Values of one header name, trimmed as SigV4 wants (spaces only): leading and trailing
/// spaces dropped, runs of spaces collapsed to one.
fn put_trimmed(sink: &mut impl Sink, value: &str) {
    let v = value.trim_matches(' ').as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < v.len() {
        if v[i] == b' ' && v.get(i + 1) == Some(&b' ') {
            sink.put(&v[start..=i]);
            while v.get(i + 1) == Some(&b' ') {
                i += 1;
            }
            start = i + 1;
        }
        i += 1;
    }
    sink.put(&v[start..]);
}

/// How a header value shows in diagnostics.
pub(super) enum Values {
    /// As signed.
    Plain,
    /// Secrets (aws-sigv4's list of sensitive headers) replaced by their length.
    Redacted,
}

/// aws-sigv4's sensitive headers: never shown in diagnostics.
const SENSITIVE: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-amz-security-token",
    "cookie",
    "set-cookie",
    "x-amz-server-side-encryption-customer-key",
    "x-amz-server-side-encryption-customer-key-md5",
    "x-amz-copy-source-server-side-encryption-customer-key",
    "x-amz-copy-source-server-side-encryption-customer-key-md5",
];

/// The canonical header lines, the empty line, and the signed-headers line of sorted `entries`.
pub(super) fn write_headers(sink: &mut impl Sink, entries: &[Entry<'_>], values: Values) {
    let mut i = 0;
    while i < entries.len() {
        let name = entries[i].name;
        sink.put(name.as_bytes());
        sink.put(b":");
        let group = entries[i..].iter().take_while(|e| e.name == name).count();
        if matches!(values, Values::Redacted) && SENSITIVE.contains(&name) {
            let len: usize = entries[i..i + group].iter().map(|e| e.value.len()).sum();
            sink.put(format!("** redacted (length={len}) **").as_bytes());
        } else {
            for (n, e) in entries[i..i + group].iter().enumerate() {
                if n > 0 {
                    sink.put(b",");
                }
                if e.trim {
                    put_trimmed(sink, e.value);
                } else {
                    sink.put(e.value.as_bytes());
                }
            }
        }
        sink.put(b"\n");
        i += group;
    }
    sink.put(b"\n");
    write_signed_headers(sink, entries);
}

/// `name1;name2;...` of sorted `entries`, each name once.
pub(super) fn write_signed_headers(sink: &mut impl Sink, entries: &[Entry<'_>]) {
    let mut last: Option<&str> = None;
    for e in entries {
        if last == Some(e.name) {
            continue;
        }
        if last.is_some() {
            sink.put(b";");
        }
        sink.put(e.name.as_bytes());
        last = Some(e.name);
    }
}

/// `YYYYMMDD'T'HHMMSS'Z'` of a Unix time in seconds (UTC), as `X-Amz-Date` carries it.
pub(super) fn amz_date(unix_secs: u64) -> [u8; 16] {
    let days = unix_secs / 86_400;
    let secs = unix_secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    let mut out = *b"00000000T000000Z";
    let mut put = |at: usize, width: usize, mut n: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, 4, y as u64);
    put(4, 2, u64::from(m));
    put(6, 2, u64::from(d));
    put(9, 2, secs / 3600);
    put(11, 2, secs / 60 % 60);
    put(13, 2, secs % 60);
    out
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str, normalize: bool, double: bool) -> String {
        let mut s = String::new();
        write_path(&mut s, p, normalize, double);
        s
    }

    #[test]
    fn paths_normalize_like_rfc3986_and_double_encode() {
        assert_eq!(path("/a/./b/../c//d/", true, true), "/a/c/d/");
        assert_eq!(path("/..", true, true), "/");
        assert_eq!(path("/a%20b:c", true, true), "/a%2520b%3Ac");
        assert_eq!(path("//a/.", true, true), "/a/");
        assert_eq!(path("/a%20b//c", false, false), "/a%20b//c");
    }

    #[test]
    fn query_is_decoded_encoded_and_sorted() {
        let mut s = String::new();
        write_query(&mut s, Some("b=2&a=%2F&a=1&c&+=x%FF"));
        assert_eq!(s, "%20=x%EF%BF%BD&a=%2F&a=1&b=2&c=");
    }

    #[test]
    fn values_trim_spaces_only() {
        let mut s = String::new();
        put_trimmed(&mut s, "  a   b \t c  ");
        assert_eq!(s, "a b \t c");
    }

    #[test]
    fn dates_are_utc_civil_dates() {
        assert_eq!(&amz_date(0), b"19700101T000000Z");
        assert_eq!(&amz_date(951_782_400), b"20000229T000000Z");
        assert_eq!(&amz_date(1_750_000_000), b"20250615T150640Z");
        assert_eq!(&amz_date(4_102_444_799), b"20991231T235959Z");
    }
}

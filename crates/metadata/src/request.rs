//! Reading a VM's HTTP/1.1 request from the bytes received so far (`httparse` for the head),
//! with the limits a metadata service needs: a head of at most 8 KiB and 64 header lines, a
//! body (only a POST of Nova's `password` has one) of at most 16 KiB, and no chunked bodies.

/// Largest request head accepted (request line and headers).
pub const MAX_HEAD: usize = 8 * 1024;
/// Most header lines accepted.
pub const MAX_HEADERS: usize = 64;
/// Largest body accepted.
pub const MAX_BODY: usize = 16 * 1024;

/// The methods the metadata service knows; others are answered 405.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Reading a path.
    Get,
    /// Reading a path's headers only.
    Head,
    /// Nova's `password` upload, forwarded in proxy mode.
    Post,
    /// Anything else.
    Other,
}

impl Method {
    /// The method's name on the wire (`OTHER` for those not served).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Other => "OTHER",
        }
    }
}

/// One complete request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Its method.
    pub method: Method,
    /// The path, as sent (starts with `/`).
    pub path: String,
    /// The query without `?`, if any.
    pub query: Option<String>,
    /// Whether the connection stays open after the answer (HTTP/1.1 unless `Connection:
    /// close`; HTTP/1.0 only with `Connection: keep-alive`).
    pub keep_alive: bool,
    /// HTTP/1.0 (answered in kind).
    pub http10: bool,
    /// The body (`Content-Length` bytes).
    pub body: Vec<u8>,
}

impl Request {
    /// Path and query as they go upstream.
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }
}

/// Why a request is refused before it is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    /// The head is over [`MAX_HEAD`] bytes.
    HeadTooLarge,
    /// Over [`MAX_HEADERS`] header lines.
    TooManyHeaders,
    /// Not an HTTP/1.x request head.
    Malformed,
    /// The target is not an absolute path.
    BadTarget,
    /// A `Content-Length` that is not one number.
    BadLength,
    /// A body over [`MAX_BODY`].
    BodyTooLarge,
    /// `Transfer-Encoding` (chunked bodies are not taken).
    Chunked,
}

impl Bad {
    /// The status it is answered with.
    pub fn status(self) -> u16 {
        match self {
            Bad::HeadTooLarge | Bad::TooManyHeaders => 431,
            Bad::BodyTooLarge => 413,
            Bad::Chunked => 411,
            Bad::Malformed | Bad::BadTarget | Bad::BadLength => 400,
        }
    }

    /// Its name in logs and counters.
    pub fn reason(self) -> &'static str {
        match self {
            Bad::HeadTooLarge => "head_too_large",
            Bad::TooManyHeaders => "too_many_headers",
            Bad::Malformed => "malformed",
            Bad::BadTarget => "bad_target",
            Bad::BadLength => "bad_length",
            Bad::BodyTooLarge => "body_too_large",
            Bad::Chunked => "chunked",
        }
    }
}

/// What the bytes so far hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole request yet.
    Partial,
    /// A request, and how many bytes of the buffer it took.
    Done(Request, usize),
    /// Refused: answer with [`Bad::status`] and close.
    Bad(Bad),
}

/// Reads the first request in `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > MAX_HEAD {
                Parsed::Bad(Bad::HeadTooLarge)
            } else {
                Parsed::Partial
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Parsed::Bad(Bad::TooManyHeaders),
        Err(_) => return Parsed::Bad(Bad::Malformed),
    };
    if head_len > MAX_HEAD {
        return Parsed::Bad(Bad::HeadTooLarge);
    }
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        Some("POST") => Method::Post,
        Some(_) => Method::Other,
        None => return Parsed::Bad(Bad::Malformed),
    };
    let Some(target) = req.path else {
        return Parsed::Bad(Bad::Malformed);
    };
    if !target.starts_with('/') || target.contains('#') {
        return Parsed::Bad(Bad::BadTarget);
    }
    let http10 = req.version == Some(0);
    let mut keep_alive = !http10;
    let mut length: Option<usize> = None;
    for h in req.headers.iter() {
        let value = String::from_utf8_lossy(h.value);
        let value = value.trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            let Ok(n) = value.parse::<usize>() else {
                return Parsed::Bad(Bad::BadLength);
            };
            if length.is_some_and(|l| l != n) {
                return Parsed::Bad(Bad::BadLength);
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Bad(Bad::Chunked);
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        }
    }
    let body_len = length.unwrap_or(0);
    if body_len > MAX_BODY {
        return Parsed::Bad(Bad::BodyTooLarge);
    }
    if buf.len() < head_len + body_len {
        return Parsed::Partial;
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target.to_string(), None),
    };
    Parsed::Done(
        Request {
            method,
            path,
            query,
            keep_alive,
            http10,
            body: buf[head_len..head_len + body_len].to_vec(),
        },
        head_len + body_len,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_get_is_read_with_its_query_and_what_it_took() {
        let raw = b"GET /openstack/latest/meta_data.json?x=1 HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\nGET /";
        let Parsed::Done(r, n) = parse(raw) else {
            panic!("not parsed")
        };
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.path, "/openstack/latest/meta_data.json");
        assert_eq!(r.query.as_deref(), Some("x=1"));
        assert!(r.keep_alive && !r.http10);
        assert_eq!(&raw[n..], b"GET /");
        assert_eq!(r.path_and_query(), "/openstack/latest/meta_data.json?x=1");
    }

    #[test]
    fn keep_alive_follows_the_version_and_the_connection_header() {
        let close = parse(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(matches!(close, Parsed::Done(r, _) if !r.keep_alive));
        let old = parse(b"GET / HTTP/1.0\r\n\r\n");
        assert!(matches!(old, Parsed::Done(r, _) if !r.keep_alive && r.http10));
        let old_kept = parse(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(matches!(old_kept, Parsed::Done(r, _) if r.keep_alive));
    }

    #[test]
    fn a_body_is_waited_for_and_taken_whole() {
        let head = b"POST /openstack/latest/password HTTP/1.1\r\nContent-Length: 5\r\n\r\nab";
        assert_eq!(parse(head), Parsed::Partial);
        let whole = b"POST /openstack/latest/password HTTP/1.1\r\nContent-Length: 5\r\n\r\nabcde";
        let Parsed::Done(r, n) = parse(whole) else {
            panic!("not parsed")
        };
        assert_eq!(
            (r.method, r.body.as_slice(), n),
            (Method::Post, &b"abcde"[..], whole.len())
        );
    }

    #[test]
    fn what_is_refused_and_with_which_status() {
        let cases: Vec<(Vec<u8>, Bad)> = vec![
            (b"GARBAGE\r\n\r\n".to_vec(), Bad::Malformed),
            (b"GET http://x/ HTTP/1.1\r\n\r\n".to_vec(), Bad::BadTarget),
            (
                b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n".to_vec(),
                Bad::BadLength,
            ),
            (
                b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".to_vec(),
                Bad::BadLength,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 99999\r\n\r\n".to_vec(),
                Bad::BodyTooLarge,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
                Bad::Chunked,
            ),
        ];
        for (raw, bad) in cases {
            assert_eq!(
                parse(&raw),
                Parsed::Bad(bad),
                "{}",
                String::from_utf8_lossy(&raw)
            );
        }
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: y\r\n"))
            .collect();
        let raw = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse(raw.as_bytes()), Parsed::Bad(Bad::TooManyHeaders));
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(parse(long.as_bytes()), Parsed::Bad(Bad::HeadTooLarge));
        assert_eq!(parse(b"GET /a HTTP/1.1\r\nHost: x\r\n"), Parsed::Partial);
    }

    #[test]
    fn other_methods_are_read_and_left_to_the_answer() {
        let r = parse(b"DELETE / HTTP/1.1\r\n\r\n");
        assert!(matches!(r, Parsed::Done(r, _) if r.method == Method::Other));
    }
}

//! An answer to a VM as a typed value, written as HTTP/1.1 bytes only when it leaves.

/// A status, its content type and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: String,
    /// The body (left out on the wire for HEAD).
    pub body: Vec<u8>,
    /// `Allow`, for 405.
    pub allow: Option<&'static str>,
}

impl Response {
    /// A text answer (listings, single values).
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=UTF-8".into(),
            body: body.into().into_bytes(),
            allow: None,
        }
    }

    /// A JSON document.
    pub fn json(value: &serde_json::Value) -> Response {
        Response {
            status: 200,
            content_type: "application/json".into(),
            body: value.to_string().into_bytes(),
            allow: None,
        }
    }

    /// An error answer with the reason phrase as its body, as Nova and Neutron's agent send.
    pub fn error(status: u16) -> Response {
        Response::text(status, format!("{status} {}\n", reason(status)))
    }

    /// The head and (unless `head_only`) the body, ready to send.
    pub fn encode(&self, keep_alive: bool, http10: bool, head_only: bool) -> Vec<u8> {
        let version = if http10 { "HTTP/1.0" } else { "HTTP/1.1" };
        let mut out = format!(
            "{version} {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        if let Some(a) = self.allow {
            out.push_str(&format!("Allow: {a}\r\n"));
        }
        out.push_str(match (keep_alive, http10) {
            (false, _) => "Connection: close\r\n",
            (true, true) => "Connection: keep-alive\r\n",
            (true, false) => "",
        });
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if !head_only {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }
}

/// The reason phrase of the statuses the service sends (or relays).
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_says_length_and_closing_and_head_leaves_out_the_body() {
        let r = Response::text(200, "abc");
        let wire = String::from_utf8(r.encode(false, false, false)).unwrap();
        assert_eq!(
            wire,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
        );
        let head = String::from_utf8(r.encode(true, true, true)).unwrap();
        assert!(head.starts_with("HTTP/1.0 200 OK\r\n"));
        assert!(head.ends_with("Content-Length: 3\r\nConnection: keep-alive\r\n\r\n"));
        let mut e = Response::error(405);
        e.allow = Some("GET, HEAD");
        let wire = String::from_utf8(e.encode(true, false, false)).unwrap();
        assert!(wire.contains("Allow: GET, HEAD\r\n"));
        assert!(wire.ends_with("\r\n\r\n405 Method Not Allowed\n"));
    }
}

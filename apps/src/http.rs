//! `http`: an HTTP/1.1 server (keep-alive, pipelining, HEAD) for a fixed body and a
//! static directory preloaded into memory, parsed with `httparse`.
//!
//! Routes: every regular file under `--dir` at its relative path (`/a/b.css`), a
//! directory's `index.html` also at `/a/`, and `/` is `index.html` if the directory has
//! one, else the fixed body (`--body`). Anything else is 404; methods other than GET and
//! HEAD are 405 (with `Allow`).
//!
//! Bounds (no input makes the state grow without limit, and none panics):
//! - A request head is parsed straight from the bytes the engine offers; only a
//!   *partial* head is copied into the connection's state, at most [`MAX_HEAD`] bytes
//!   (the socket's receive buffer may be smaller than that, so leaving partial heads in
//!   the socket could deadlock). A head that reaches the limit is answered 431 and the
//!   connection closed; more than [`MAX_HEADERS`] header fields too.
//! - Request bodies (`Content-Length`) up to [`MAX_BODY`] are read and discarded; a
//!   larger one is answered 413 and the connection closed; `Transfer-Encoding` bodies
//!   cannot be skipped safely here, so such a request is answered and the connection
//!   closed.
//! - Malformed requests get 400 (505 for an unknown HTTP version) and a close.
//! - A head still incomplete after [`HEAD_TIMEOUT`] gets 408 and a close; a connection
//!   we closed is reset if the peer has not finished [`LINGER`] later.
//!
//! Responses go out in order: a response that does not fit the send buffer (a large
//! file) keeps its position in the connection's state and continues in `on_writable`;
//! meanwhile further pipelined requests stay unconsumed in the socket (their bytes come
//! back with the next event, e.g. the ACK of what was just sent). Bodies are shared
//! (`Arc`), never copied per connection; the fast path allocates nothing per request.
//!
//! The `Date` header is formatted at most once per wall-clock second: the engine's loop
//! time (`Conn::now`, monotonic) says when the cached second is over, and only then is
//! the wall clock (`SystemTime`) read again.

use c10m_stack::smoltcp::time::{Duration, Instant};
use c10m_stack::{App, Conn};
use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Largest request head (request line and header fields), bytes.
pub const MAX_HEAD: usize = 8 * 1024;
/// Most header fields in a request.
pub const MAX_HEADERS: usize = 64;
/// Largest request body read (and discarded), bytes.
pub const MAX_BODY: u64 = 1 << 20;
/// Default fixed body.
pub const DEFAULT_BODY: &str = "hello from c10m\n";
/// A started request head must be complete within this time.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// After we close, the peer has this long to finish before the connection is reset.
pub const LINGER: Duration = Duration::from_secs(10);

/// A body served from memory with its content type.
#[derive(Clone)]
pub struct Resource {
    pub body: Arc<[u8]>,
    pub content_type: &'static str,
}

/// Response statuses this server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    PayloadTooLarge,
    HeaderTooLarge,
    VersionNotSupported,
}

impl Status {
    fn line(self) -> &'static [u8] {
        match self {
            Status::Ok => b"HTTP/1.1 200 OK\r\n",
            Status::BadRequest => b"HTTP/1.1 400 Bad Request\r\n",
            Status::NotFound => b"HTTP/1.1 404 Not Found\r\n",
            Status::MethodNotAllowed => b"HTTP/1.1 405 Method Not Allowed\r\n",
            Status::RequestTimeout => b"HTTP/1.1 408 Request Timeout\r\n",
            Status::PayloadTooLarge => b"HTTP/1.1 413 Content Too Large\r\n",
            Status::HeaderTooLarge => b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
            Status::VersionNotSupported => b"HTTP/1.1 505 HTTP Version Not Supported\r\n",
        }
    }
    /// The body of an error response.
    fn text(self) -> &'static [u8] {
        match self {
            Status::Ok => b"",
            Status::BadRequest => b"400 bad request\n",
            Status::NotFound => b"404 not found\n",
            Status::MethodNotAllowed => b"405 method not allowed (GET, HEAD)\n",
            Status::RequestTimeout => b"408 request timeout\n",
            Status::PayloadTooLarge => b"413 request body too large\n",
            Status::HeaderTooLarge => b"431 request header too large\n",
            Status::VersionNotSupported => b"505 HTTP version not supported\n",
        }
    }
}

/// The server's counters.
#[derive(Debug, Default, Clone)]
pub struct HttpStats {
    /// Complete request heads parsed (any outcome).
    pub requests: u64,
    pub status_200: u64,
    pub status_400: u64,
    pub status_404: u64,
    pub status_405: u64,
    pub status_408: u64,
    pub status_413: u64,
    /// Heads cut off at [`MAX_HEAD`] (or with too many fields).
    pub status_431: u64,
    pub status_505: u64,
    pub head_requests: u64,
    /// Response bytes queued (heads and bodies).
    pub bytes_out: u64,
    /// Request body bytes read and discarded.
    pub body_bytes_discarded: u64,
    /// Responses that did not fit the send buffer at once and continued in on_writable.
    pub streamed: u64,
    /// Requests that arrived on a connection that had already served one.
    pub keepalive_reuse: u64,
    /// Connections we closed after a response (Connection: close, HTTP/1.0, errors).
    pub closes: u64,
    /// Connections reset because the peer did not finish within [`LINGER`] of our close.
    pub linger_resets: u64,
    /// Partial request heads copied into connection state (a head split across segments).
    pub partial_heads: u64,
    /// Times the Date header was formatted (at most once per second).
    pub date_formats: u64,
}

/// The HTTP application (one per engine).
pub struct Http {
    routes: HashMap<String, Resource>,
    /// Response head scratch, reused for every response.
    head: Vec<u8>,
    /// "Date: ...\r\n" for the current second.
    date_line: Vec<u8>,
    /// Loop time at which `date_line` is stale.
    date_until: Option<Instant>,
    /// The wall-clock second (since the epoch) `date_line` shows.
    date_second: Option<u64>,
    pub stats: HttpStats,
}

/// A response that did not fit the send buffer: what is left of it.
struct Pending {
    head: Vec<u8>,
    head_off: usize,
    body: Option<Arc<[u8]>>,
    body_off: usize,
    /// Close the connection when it is all queued.
    close: bool,
}

/// Per-connection state.
#[derive(Default)]
pub struct HttpConn {
    /// A partial request head (≤ MAX_HEAD bytes); empty when heads arrive whole.
    buf: Vec<u8>,
    /// Request body bytes still to skip.
    discard: u64,
    /// A response still being sent; further requests wait.
    out: Option<Box<Pending>>,
    /// We closed (or decided to): further input is dropped.
    closing: bool,
    /// Requests served on this connection.
    served: u32,
}

/// What to do with one request.
#[derive(Debug)]
struct Req {
    /// Bytes of the head.
    head_len: usize,
    status: Status,
    head_only: bool,
    keep_alive: bool,
    /// HTTP/1.0 with keep-alive: the response says so.
    announce_keep_alive: bool,
    body: Option<Arc<[u8]>>,
    content_type: &'static str,
    /// Body bytes that follow the head.
    body_len: u64,
}

enum Parsed {
    Partial,
    /// Answer this error and close.
    Fail(Status),
    Req(Req),
}

impl Http {
    /// The fixed body at `/`, and with `dir` every regular file under it (read now).
    pub fn new(body: &str, dir: Option<&Path>) -> Result<Http, String> {
        let mut routes = HashMap::new();
        routes.insert(
            "/".to_string(),
            Resource {
                body: Arc::from(body.as_bytes()),
                content_type: "text/plain; charset=utf-8",
            },
        );
        if let Some(dir) = dir {
            let meta =
                std::fs::metadata(dir).map_err(|e| format!("--dir {}: {e}", dir.display()))?;
            if !meta.is_dir() {
                return Err(format!("--dir {}: not a directory", dir.display()));
            }
            load_dir(dir, "", &mut routes)?;
        }
        Ok(Http {
            routes,
            head: Vec::with_capacity(256),
            date_line: Vec::with_capacity(40),
            date_until: None,
            date_second: None,
            stats: HttpStats::default(),
        })
    }

    /// Routes and the bytes held in memory (a body behind two routes counted once), for
    /// the start-up line.
    pub fn summary(&self) -> (usize, usize) {
        let mut seen = std::collections::HashSet::new();
        let bytes = self
            .routes
            .values()
            .filter(|r| seen.insert(Arc::as_ptr(&r.body) as *const u8))
            .map(|r| r.body.len())
            .sum();
        (self.routes.len(), bytes)
    }

    /// Refresh the cached Date line if the wall-clock second it shows is over.
    fn refresh_date(&mut self, now: Instant) {
        if self.date_until.is_some_and(|t| now < t) {
            return;
        }
        let wall = SystemTime::now();
        let since = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
        let into_second = u64::from(since.subsec_millis());
        // Wake again when this wall-clock second is over (by the loop's clock).
        self.date_until = Some(now + Duration::from_millis(1000 - into_second.min(999)));
        if self.date_second == Some(since.as_secs()) {
            return; // the clocks drifted apart a little: same second, same text
        }
        self.date_second = Some(since.as_secs());
        self.date_line.clear();
        self.date_line.extend_from_slice(b"Date: ");
        self.date_line
            .extend_from_slice(httpdate::fmt_http_date(wall).as_bytes());
        self.date_line.extend_from_slice(b"\r\n");
        self.stats.date_formats += 1;
    }

    /// Parse one request head at the start of `bytes`.
    fn parse(&self, bytes: &[u8]) -> Parsed {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let head_len = match req.parse(bytes) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                return if bytes.len() >= MAX_HEAD {
                    Parsed::Fail(Status::HeaderTooLarge)
                } else {
                    Parsed::Partial
                };
            }
            Err(httparse::Error::TooManyHeaders) => return Parsed::Fail(Status::HeaderTooLarge),
            Err(httparse::Error::Version) => return Parsed::Fail(Status::VersionNotSupported),
            Err(_) => return Parsed::Fail(Status::BadRequest),
        };
        if head_len > MAX_HEAD {
            return Parsed::Fail(Status::HeaderTooLarge);
        }
        let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version)
        else {
            return Parsed::Fail(Status::BadRequest);
        };
        let mut content_length: Option<u64> = None;
        let mut chunked = false;
        let mut conn_close = false;
        let mut conn_keep = false;
        let mut host = false;
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let Some(n) = parse_decimal(h.value) else {
                    return Parsed::Fail(Status::BadRequest);
                };
                if content_length.is_some_and(|c| c != n) {
                    return Parsed::Fail(Status::BadRequest);
                }
                content_length = Some(n);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = true;
            } else if h.name.eq_ignore_ascii_case("connection") {
                for tok in h.value.split(|&b| b == b',') {
                    let tok = tok.trim_ascii();
                    if tok.eq_ignore_ascii_case(b"close") {
                        conn_close = true;
                    } else if tok.eq_ignore_ascii_case(b"keep-alive") {
                        conn_keep = true;
                    }
                }
            } else if h.name.eq_ignore_ascii_case("host") {
                host = true;
            }
        }
        if version == 1 && !host {
            return Parsed::Fail(Status::BadRequest); // RFC 9112 3.2
        }
        let body_len = content_length.unwrap_or(0);
        if body_len > MAX_BODY {
            return Parsed::Fail(Status::PayloadTooLarge);
        }
        let keep_alive = !chunked
            && !conn_close
            && match version {
                1 => true,
                _ => conn_keep,
            };
        let head_only = method == "HEAD";
        let mut r = Req {
            head_len,
            status: Status::Ok,
            head_only,
            keep_alive,
            announce_keep_alive: keep_alive && version == 0,
            body: None,
            content_type: "text/plain; charset=utf-8",
            body_len: if chunked { 0 } else { body_len },
        };
        if method != "GET" && !head_only {
            r.status = Status::MethodNotAllowed;
            return Parsed::Req(r);
        }
        match self.route(target) {
            Some(res) => {
                r.body = Some(res.body.clone());
                r.content_type = res.content_type;
            }
            None => r.status = Status::NotFound,
        }
        Parsed::Req(r)
    }

    /// The resource for a request target (origin or absolute form; query ignored).
    fn route(&self, target: &str) -> Option<&Resource> {
        let mut path = target;
        for scheme in ["http://", "https://"] {
            if path.len() > scheme.len() && path[..scheme.len()].eq_ignore_ascii_case(scheme) {
                let rest = &path[scheme.len()..];
                path = rest.find('/').map_or("/", |i| &rest[i..]);
                break;
            }
        }
        let path = path.split(['?', '#']).next().unwrap_or(path);
        if path.contains('%') {
            let decoded = percent_decode(path)?;
            return self.routes.get(decoded.as_str());
        }
        self.routes.get(path)
    }

    /// Build the response head into `self.head`.
    fn build_head(
        &mut self,
        now: Instant,
        status: Status,
        content_type: &str,
        len: usize,
        conn: Option<&str>,
    ) {
        self.refresh_date(now);
        let h = &mut self.head;
        h.clear();
        h.extend_from_slice(status.line());
        h.extend_from_slice(b"Server: c10m\r\n");
        h.extend_from_slice(&self.date_line);
        h.extend_from_slice(b"Content-Type: ");
        h.extend_from_slice(content_type.as_bytes());
        // Writing to a Vec cannot fail.
        let _ = write!(h, "\r\nContent-Length: {len}\r\n");
        if status == Status::MethodNotAllowed {
            h.extend_from_slice(b"Allow: GET, HEAD\r\n");
        }
        if let Some(v) = conn {
            let _ = write!(h, "Connection: {v}\r\n");
        }
        h.extend_from_slice(b"\r\n");
    }

    /// Answer `req` (queue what fits; the rest continues in on_writable).
    fn respond(&mut self, c: &mut Conn<'_, Self>, req: Req) {
        let close = !req.keep_alive;
        let conn_hdr = if close {
            Some("close")
        } else if req.announce_keep_alive {
            Some("keep-alive")
        } else {
            None
        };
        let (body, ctype): (Option<Arc<[u8]>>, &str) = match req.status {
            Status::Ok => (req.body, req.content_type),
            _ => (None, "text/plain; charset=utf-8"),
        };
        let static_body = if body.is_none() {
            req.status.text()
        } else {
            b""
        };
        let len = body.as_ref().map_or(static_body.len(), |b| b.len());
        self.build_head(c.now(), req.status, ctype, len, conn_hdr);
        self.count(req.status);
        if req.head_only {
            self.stats.head_requests += 1;
        }
        let h = c.send(&self.head);
        self.stats.bytes_out += h as u64;
        let mut sent_body = 0;
        let body_slice: &[u8] = match (&body, req.head_only) {
            (_, true) => b"",
            (Some(b), false) => b,
            (None, false) => static_body,
        };
        if h == self.head.len() && !body_slice.is_empty() {
            sent_body = c.send(body_slice);
            self.stats.bytes_out += sent_body as u64;
        }
        if h < self.head.len() || sent_body < body_slice.len() {
            self.stats.streamed += 1;
            let body = if body_slice.is_empty() {
                None
            } else {
                Some(body.unwrap_or_else(|| Arc::from(static_body)))
            };
            c.state().out = Some(Box::new(Pending {
                head: self.head[h..].to_vec(),
                head_off: 0,
                body,
                body_off: sent_body,
                close,
            }));
        } else if close {
            self.close(c);
        }
    }

    /// Answer an error and close (the request cannot be framed or is refused).
    fn fail(&mut self, c: &mut Conn<'_, Self>, status: Status) {
        let req = Req {
            head_len: 0,
            status,
            head_only: false,
            keep_alive: false,
            announce_keep_alive: false,
            body: None,
            content_type: "",
            body_len: 0,
        };
        let st = c.state();
        st.closing = true;
        st.buf = Vec::new();
        self.respond(c, req);
    }

    /// Close after the queued data; input from now on is dropped; reset after LINGER.
    fn close(&mut self, c: &mut Conn<'_, Self>) {
        let st = c.state();
        st.closing = true;
        st.buf = Vec::new();
        self.stats.closes += 1;
        c.close();
        c.set_timer(LINGER);
    }

    fn count(&mut self, s: Status) {
        let n = match s {
            Status::Ok => &mut self.stats.status_200,
            Status::BadRequest => &mut self.stats.status_400,
            Status::NotFound => &mut self.stats.status_404,
            Status::MethodNotAllowed => &mut self.stats.status_405,
            Status::RequestTimeout => &mut self.stats.status_408,
            Status::PayloadTooLarge => &mut self.stats.status_413,
            Status::HeaderTooLarge => &mut self.stats.status_431,
            Status::VersionNotSupported => &mut self.stats.status_505,
        };
        *n += 1;
    }

    /// A complete request: count it, answer it, remember its body to skip.
    fn handle(&mut self, c: &mut Conn<'_, Self>, req: Req) {
        self.stats.requests += 1;
        let st = c.state();
        if st.served > 0 {
            self.stats.keepalive_reuse += 1;
        }
        st.served = st.served.saturating_add(1);
        st.discard = req.body_len;
        self.respond(c, req);
    }

    /// Queue more of the pending response; true when it is all queued.
    fn push_pending(&mut self, c: &mut Conn<'_, Self>) -> bool {
        let Some(mut p) = c.state().out.take() else {
            return true;
        };
        while p.head_off < p.head.len() {
            let n = c.send(&p.head[p.head_off..]);
            if n == 0 {
                c.state().out = Some(p);
                return false;
            }
            p.head_off += n;
            self.stats.bytes_out += n as u64;
        }
        if let Some(b) = &p.body {
            while p.body_off < b.len() {
                let n = c.send(&b[p.body_off..]);
                if n == 0 {
                    c.state().out = Some(p);
                    return false;
                }
                p.body_off += n;
                self.stats.bytes_out += n as u64;
            }
        }
        if p.close {
            self.close(c);
        }
        true
    }
}

impl App for Http {
    type ConnState = HttpConn;
    type Done = ();

    fn name(&self) -> &'static str {
        "http"
    }

    fn on_data(&mut self, c: &mut Conn<'_, Self>, data: &[u8]) -> usize {
        let mut used = 0;
        loop {
            let st = c.state();
            if st.closing {
                return data.len(); // after our close: drop what still arrives
            }
            if st.out.is_some() {
                return used; // responses stay in order: wait for on_writable
            }
            if st.discard > 0 {
                let k = (st.discard.min((data.len() - used) as u64)) as usize;
                st.discard -= k as u64;
                used += k;
                self.stats.body_bytes_discarded += k as u64;
                if st.discard > 0 {
                    return used;
                }
                continue;
            }
            if used == data.len() {
                return used;
            }
            let rest = &data[used..];
            if st.buf.is_empty() {
                // Fast path: the head is parsed where it lies.
                match self.parse(rest) {
                    Parsed::Req(req) => {
                        used += req.head_len;
                        self.handle(c, req);
                    }
                    Parsed::Partial => {
                        // rest.len() < MAX_HEAD here (parse checked).
                        let st = c.state();
                        st.buf.reserve_exact(rest.len().max(512));
                        st.buf.extend_from_slice(rest);
                        self.stats.partial_heads += 1;
                        c.set_timer(HEAD_TIMEOUT);
                        return data.len();
                    }
                    Parsed::Fail(s) => {
                        self.fail(c, s);
                        return data.len();
                    }
                }
            } else {
                // A head split across segments: append up to the limit and parse again.
                let old = st.buf.len();
                let k = (MAX_HEAD - old).min(rest.len());
                st.buf.extend_from_slice(&rest[..k]);
                match self.parse(&c.state().buf) {
                    Parsed::Req(req) => {
                        // Bytes after the head were not part of it: give them back.
                        used += req.head_len.saturating_sub(old);
                        c.state().buf = Vec::new();
                        c.cancel_timer();
                        self.handle(c, req);
                    }
                    Parsed::Partial => return used + k,
                    Parsed::Fail(s) => {
                        self.fail(c, s);
                        return data.len();
                    }
                }
            }
        }
    }

    fn on_writable(&mut self, c: &mut Conn<'_, Self>) {
        self.push_pending(c);
    }

    fn on_peer_fin(&mut self, c: &mut Conn<'_, Self>) {
        let st = c.state();
        if let Some(p) = st.out.as_mut() {
            p.close = true; // finish the response, then close
            return;
        }
        if !st.closing {
            self.close(c);
        }
    }

    fn on_timer(&mut self, c: &mut Conn<'_, Self>) {
        let st = c.state();
        if st.closing {
            if st.out.is_none() {
                self.stats.linger_resets += 1;
                c.abort();
            }
        } else if !st.buf.is_empty() && st.out.is_none() {
            self.fail(c, Status::RequestTimeout);
        }
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let s = &self.stats;
        vec![
            ("app_http_requests", s.requests),
            ("app_http_200", s.status_200),
            ("app_http_400", s.status_400),
            ("app_http_404", s.status_404),
            ("app_http_405", s.status_405),
            ("app_http_408", s.status_408),
            ("app_http_413", s.status_413),
            ("app_http_431_header_too_large", s.status_431),
            ("app_http_505", s.status_505),
            ("app_http_head", s.head_requests),
            ("app_http_bytes_out", s.bytes_out),
            ("app_http_body_bytes_discarded", s.body_bytes_discarded),
            ("app_http_streamed", s.streamed),
            ("app_http_keepalive_reuse", s.keepalive_reuse),
            ("app_http_closes", s.closes),
            ("app_http_linger_resets", s.linger_resets),
            ("app_http_partial_heads", s.partial_heads),
            ("app_http_date_formats", s.date_formats),
        ]
    }
}

/// A Content-Length value: ASCII digits only, no overflow.
fn parse_decimal(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 19 {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0'))
    })
}

/// %XX-decoding of a path; None if it is malformed or not UTF-8.
fn percent_decode(p: &str) -> Option<String> {
    let b = p.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let s = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(s, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Content type by file extension (the common ones; else application/octet-stream).
pub fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "txt" | "md" => "text/plain; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        _ => "application/octet-stream",
    }
}

/// Read every regular file under `dir` (symlinks and other kinds skipped) into `routes`
/// at "/" + its path relative to the root; `index.html` also at its directory's path.
fn load_dir(
    dir: &Path,
    prefix: &str,
    routes: &mut HashMap<String, Resource>,
) -> Result<(), String> {
    let rd =
        std::fs::read_dir(dir).map_err(|e| format!("--dir: reading {}: {e}", dir.display()))?;
    for entry in rd {
        let entry = entry.map_err(|e| format!("--dir: reading {}: {e}", dir.display()))?;
        let Ok(name) = entry.file_name().into_string() else {
            log::warn!("http: skipping non-UTF-8 name in {}", dir.display());
            continue;
        };
        let ft = entry
            .file_type()
            .map_err(|e| format!("--dir: {}: {e}", entry.path().display()))?;
        let rel = format!("{prefix}/{name}");
        if ft.is_dir() {
            load_dir(&entry.path(), &rel, routes)?;
        } else if ft.is_file() {
            let body = std::fs::read(entry.path())
                .map_err(|e| format!("--dir: reading {}: {e}", entry.path().display()))?;
            let res = Resource {
                body: Arc::from(body),
                content_type: content_type(&name),
            };
            if name == "index.html" {
                routes.insert(format!("{prefix}/"), res.clone());
            }
            routes.insert(rel, res);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use c10m_stack::smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Address};
    use c10m_stack::testkit::run_pair;
    use c10m_stack::{CloseReason, Engine, EngineConfig, MemLink};

    fn cfg(last: u8, buf: usize) -> EngineConfig {
        EngineConfig {
            mac: [0x02, 0, 0, 0, 0, last],
            ipv4: Some((Ipv4Address::new(198, 18, 0, last), 24)),
            tcp_rx_buf: buf,
            tcp_tx_buf: buf,
            seed: last as u64,
            ..Default::default()
        }
    }

    /// Client: sends `req` (in pieces of `piece` bytes, one piece per poll round),
    /// optionally half-closes, collects everything until the server closes.
    struct Client {
        req: Vec<u8>,
        sent: usize,
        piece: usize,
        half_close: bool,
        reply: Vec<u8>,
        closed: Option<CloseReason>,
        fin: bool,
    }

    impl Client {
        fn push(&mut self, c: &mut Conn<'_, Self>) {
            if self.sent < self.req.len() {
                let end = (self.sent + self.piece).min(self.req.len());
                self.sent += c.send(&self.req[self.sent..end]);
            }
            if self.sent == self.req.len() && self.half_close {
                self.half_close = false;
                c.close();
            }
        }
    }

    impl App for Client {
        type ConnState = ();
        type Done = ();
        fn on_connected(&mut self, c: &mut Conn<'_, Self>) {
            self.push(c);
            c.set_timer(Duration::from_millis(1));
        }
        fn on_timer(&mut self, c: &mut Conn<'_, Self>) {
            self.push(c);
            if self.sent < self.req.len() {
                c.set_timer(Duration::from_millis(1));
            }
        }
        fn on_writable(&mut self, c: &mut Conn<'_, Self>) {
            self.push(c);
        }
        fn on_data(&mut self, _c: &mut Conn<'_, Self>, data: &[u8]) -> usize {
            self.reply.extend_from_slice(data);
            data.len()
        }
        fn on_peer_fin(&mut self, c: &mut Conn<'_, Self>) {
            self.fin = true;
            c.close();
        }
        fn on_closed(&mut self, _c: &mut Conn<'_, Self>, r: CloseReason) {
            self.closed = Some(r);
        }
    }

    struct Run {
        reply: Vec<u8>,
        fin: bool,
        stats: HttpStats,
    }

    /// One connection: send `req`, run until the server closed (or 20 s of loop time).
    fn exchange(app: Http, req: &[u8], piece: usize, half_close: bool, buf: usize) -> Run {
        let (la, lb) = MemLink::pair();
        let mut s = Engine::new(lb, cfg(2, buf), app, Instant::from_millis(0));
        s.listen(80, 8).unwrap();
        let client = Client {
            req: req.to_vec(),
            sent: 0,
            piece,
            half_close,
            reply: vec![],
            closed: None,
            fin: false,
        };
        let mut c = Engine::new(la, cfg(1, 64 * 1024), client, Instant::from_millis(0));
        c.connect(
            IpEndpoint::new(IpAddress::v4(198, 18, 0, 2), 80),
            Instant::from_millis(0),
        )
        .unwrap();
        let mut t = 0;
        run_pair(&mut c, &mut s, &mut t, 20_000, |c, _| {
            c.app().fin || c.app().closed.is_some()
        });
        Run {
            reply: c.app().reply.clone(),
            fin: c.app().fin,
            stats: s.app().stats.clone(),
        }
    }

    fn app() -> Http {
        Http::new(DEFAULT_BODY, None).unwrap()
    }

    /// Split a byte stream of responses into (status code, head, body) triples.
    fn responses(mut b: &[u8], head_only: &[bool]) -> Vec<(u16, String, Vec<u8>)> {
        let mut out = vec![];
        let mut i = 0;
        while !b.is_empty() {
            let mut hs = [httparse::EMPTY_HEADER; 32];
            let mut r = httparse::Response::new(&mut hs);
            let n = match r.parse(b).expect("valid response") {
                httparse::Status::Complete(n) => n,
                httparse::Status::Partial => panic!("truncated response"),
            };
            let len: usize = r
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                .unwrap();
            let code = r.code.unwrap();
            let head = String::from_utf8_lossy(&b[..n]).into_owned();
            let blen = if head_only.get(i).copied().unwrap_or(false) {
                0
            } else {
                len
            };
            out.push((code, head, b[n..n + blen].to_vec()));
            b = &b[n + blen..];
            i += 1;
        }
        out
    }

    #[test]
    fn pipelined_keep_alive_in_order() {
        let mut req = Vec::new();
        for p in ["/", "/nope", "/", "/"] {
            req.extend_from_slice(format!("GET {p} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        }
        req.extend_from_slice(b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let r = exchange(app(), &req, 10_000, false, 64 * 1024);
        let rs = responses(&r.reply, &[false, false, false, false, true]);
        let codes: Vec<u16> = rs.iter().map(|x| x.0).collect();
        assert_eq!(codes, [200, 404, 200, 200, 200]);
        assert_eq!(rs[0].2, DEFAULT_BODY.as_bytes());
        assert!(rs[4].1.contains("Content-Length: 16\r\n"));
        assert!(rs[4].1.contains("Connection: close\r\n"));
        assert!(rs[0].1.contains("Date: "));
        assert!(r.fin, "Connection: close honoured");
        assert_eq!(r.stats.requests, 5);
        assert_eq!(r.stats.keepalive_reuse, 4);
        assert_eq!(r.stats.head_requests, 1);
    }

    #[test]
    fn heads_split_in_tiny_pieces_and_small_socket_buffers() {
        // 4 KiB socket buffers, smaller than MAX_HEAD; a 6 KiB head sent 7 bytes at a time.
        let pad = "a".repeat(6000);
        let mut req = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Pad: {pad}\r\n\r\n").into_bytes();
        req.extend_from_slice(b"GET / HTTP/1.0\r\n\r\n");
        let r = exchange(app(), &req, 7, false, 4096);
        let rs = responses(&r.reply, &[]);
        assert_eq!(rs.len(), 2);
        assert!(rs
            .iter()
            .all(|x| x.0 == 200 && x.2 == DEFAULT_BODY.as_bytes()));
        assert!(rs[1].1.contains("Connection: close"), "HTTP/1.0 closes");
        assert!(r.fin);
        assert!(r.stats.partial_heads >= 1);
    }

    #[test]
    fn large_file_streams_and_pipelined_requests_wait() {
        let dir = std::env::temp_dir().join(format!("c10m-http-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let big: Vec<u8> = (0..(1u32 << 20))
            .map(|i| (i * 31 + i / 257) as u8)
            .collect();
        std::fs::write(dir.join("sub/big.bin"), &big).unwrap();
        std::fs::write(dir.join("index.html"), b"<p>hi</p>").unwrap();
        let app = Http::new("x", Some(&dir)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let req = b"GET /sub/big.bin HTTP/1.1\r\nHost: x\r\n\r\nGET /%69ndex.html?q=1 HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let r = exchange(app, req, 10_000, false, 16 * 1024);
        let rs = responses(&r.reply, &[]);
        assert_eq!(rs.len(), 3);
        assert_eq!(rs[0].0, 200);
        assert!(rs[0].2 == big, "1 MiB body intact");
        assert!(rs[0].1.contains("application/octet-stream"));
        assert_eq!(rs[1].2, b"<p>hi</p>");
        assert!(rs[1].1.contains("text/html"));
        assert_eq!(rs[2].2, b"<p>hi</p>");
        assert_eq!(r.stats.streamed, 1);
    }

    #[test]
    fn errors() {
        let cases: &[(&[u8], u16, bool)] = &[
            (b"\x00\x01garbage\r\n\r\n", 400, true),
            (b"GET /\r\n\r\n", 400, true),
            (b"GET / HTTP/1.1\r\n\r\n", 400, true), // no Host
            (
                b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n",
                413,
                true,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 12x\r\n\r\n",
                400,
                true,
            ),
            (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505, true),
        ];
        for (req, code, fin) in cases {
            let r = exchange(app(), req, 10_000, false, 64 * 1024);
            let rs = responses(&r.reply, &[]);
            assert_eq!(rs.len(), 1, "{}", String::from_utf8_lossy(req));
            assert_eq!(rs[0].0, *code, "{}", String::from_utf8_lossy(req));
            assert_eq!(r.fin, *fin);
        }
        // 405 keeps the connection: its body is skipped, the next request answered.
        let req = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let r = exchange(app(), req, 10_000, false, 64 * 1024);
        let rs = responses(&r.reply, &[]);
        assert_eq!(rs.iter().map(|x| x.0).collect::<Vec<_>>(), [405, 200]);
        assert!(rs[0].1.contains("Allow: GET, HEAD\r\n"));
        assert_eq!(r.stats.body_bytes_discarded, 5);
        assert!(r.fin);
    }

    #[test]
    fn body_is_skipped_and_the_next_request_served() {
        let req = b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3000\r\n\r\n";
        let mut all = req.to_vec();
        all.extend(std::iter::repeat_n(b'z', 3000));
        all.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let r = exchange(app(), &all, 100, false, 4096);
        let rs = responses(&r.reply, &[]);
        assert_eq!(rs.iter().map(|x| x.0).collect::<Vec<_>>(), [200, 200]);
        assert_eq!(r.stats.body_bytes_discarded, 3000);
    }

    #[test]
    fn never_ending_header_is_cut_at_the_limit() {
        let mut req = b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: ".to_vec();
        req.extend(std::iter::repeat_n(b'a', 100_000));
        let r = exchange(app(), &req, 1000, false, 4096);
        let rs = responses(&r.reply, &[]);
        assert_eq!(rs.len(), 1);
        assert_eq!(rs[0].0, 431);
        assert!(r.fin);
        assert_eq!(r.stats.status_431, 1);
    }

    #[test]
    fn truncated_request_then_half_close() {
        let r = exchange(app(), b"GET / HTTP/1.1\r\nHo", 10_000, true, 64 * 1024);
        assert!(r.reply.is_empty());
        assert!(r.fin);
        assert_eq!(r.stats.requests, 0);
        // A full request then FIN still gets its (large) answer before the close.
        let r = exchange(
            app(),
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            10_000,
            true,
            64 * 1024,
        );
        assert_eq!(responses(&r.reply, &[])[0].0, 200);
        assert!(r.fin);
    }

    /// Mutated and random requests, in random pieces: never a panic, always an answer
    /// that parses or a close, and the state stays within its bounds.
    #[test]
    fn mutated_input_never_panics() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let base = b"GET /a%20b?x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: keep-alive, close\r\n\r\nabc";
        for i in 0..60 {
            let mut req = base.to_vec();
            if i % 3 == 0 {
                req = (0..(rnd() % 3000)).map(|_| rnd() as u8).collect();
            } else {
                for _ in 0..(1 + rnd() % 4) {
                    let at = (rnd() as usize) % req.len();
                    match rnd() % 3 {
                        0 => req[at] = rnd() as u8,
                        1 => {
                            req.remove(at);
                        }
                        _ => req.insert(at, b"\r\n:% \x00"[(rnd() % 6) as usize]),
                    }
                }
            }
            let piece = 1 + (rnd() as usize) % 64;
            let r = exchange(app(), &req, piece, true, 4096);
            assert!(r.fin, "server closed after the client's FIN ({i})");
            assert!(r.reply.is_empty() || r.reply.starts_with(b"HTTP/1.1 "));
        }
    }

    #[test]
    fn helpers() {
        assert_eq!(parse_decimal(b" 42 "), Some(42));
        assert_eq!(parse_decimal(b"-1"), None);
        assert_eq!(parse_decimal(b"99999999999999999999"), None);
        assert_eq!(parse_decimal(b""), None);
        assert_eq!(percent_decode("/a%20b"), Some("/a b".into()));
        assert_eq!(percent_decode("/a%2"), None);
        assert_eq!(percent_decode("/a%zz"), None);
        assert_eq!(content_type("x.HTML"), "text/html; charset=utf-8");
        assert_eq!(content_type("noext"), "application/octet-stream");
        let a = app();
        assert!(a.route("http://host/").is_some());
        assert!(a.route("HTTP://host").is_some());
        assert!(a.route("/?x").is_some());
        assert!(a.route("*").is_none());
    }

    #[test]
    fn date_is_formatted_once_per_second() {
        let mut a = app();
        let start = std::time::Instant::now();
        for ms in 0..3000 {
            a.refresh_date(Instant::from_millis(ms));
        }
        // Loop time ran 3 s ahead of the wall clock: formats = wall seconds seen.
        let wall = start.elapsed().as_secs();
        assert!(a.stats.date_formats <= wall + 2, "{}", a.stats.date_formats);
        assert!(a.date_line.starts_with(b"Date: ") && a.date_line.ends_with(b" GMT\r\n"));
    }
}

//! `hash`: a client uploads a body prefixed by its length (8 bytes, big-endian, at most
//! 64 MiB); the server answers its SHA-256 (32 bytes). Requests may follow one another
//! on a connection.
//!
//! Hashing is the kind of CPU-heavy work that must not run on the loop: 16 MiB takes tens
//! of milliseconds, during which every other connection of the core would wait. So by
//! default each chunk (up to `CHUNK` bytes) is hashed on the processor pool, one job in
//! flight per connection (the hasher state travels with the job), while the loop keeps
//! serving. Bytes beyond the next chunk stay in the socket buffer: the window closes and
//! the uploader slows down, which bounds memory. `inline` hashes on the loop instead, to
//! show what the pool is for. Optionally the same app echoes on a second port, so one
//! engine serves both kinds of clients.

use c10m_stack::{App, Conn};
use sha2::{Digest, Sha256};

/// Largest accepted body.
pub const MAX_BODY: u64 = 64 << 20;
/// Bytes handed to one pool job.
pub const CHUNK: usize = 256 << 10;

/// The hash service (and optional echo).
pub struct Hash {
    pub inline: bool,
    pub echo_port: Option<u16>,
    pub requests: u64,
    pub bytes_hashed: u64,
    pub too_large: u64,
    pub offload_refused: u64,
}

impl Hash {
    pub fn new(inline: bool, echo_port: Option<u16>) -> Hash {
        Hash {
            inline,
            echo_port,
            requests: 0,
            bytes_hashed: 0,
            too_large: 0,
            offload_refused: 0,
        }
    }
}

/// A connection: a hash client (and where it is in its current request) or an echo one.
pub enum HashConn {
    Body(Body),
    /// An echo connection (the `echo_port`).
    Echo,
}

impl Default for HashConn {
    fn default() -> Self {
        HashConn::Body(Body::new())
    }
}

/// Progress through one request: the length prefix, then the body.
pub struct Body {
    header: [u8; 8],
    have_header: usize,
    remaining: u64,
    /// None while a pool job holds it.
    hasher: Option<Sha256>,
    /// Bytes taken from the socket and not yet handed to a job.
    chunk: Vec<u8>,
}

impl Body {
    fn new() -> Body {
        Body {
            header: [0; 8],
            have_header: 0,
            remaining: 0,
            hasher: None,
            chunk: Vec::new(),
        }
    }
}

/// A finished pool job: the hasher with the chunk folded in, and the emptied chunk
/// buffer (reused, so a long upload allocates it once).
pub struct Hashed {
    hasher: Sha256,
    buf: Vec<u8>,
}

impl App for Hash {
    type ConnState = HashConn;
    type Done = Hashed;

    fn name(&self) -> &'static str {
        if self.inline {
            "hash(inline)"
        } else {
            "hash"
        }
    }

    fn on_accept(&mut self, c: &mut Conn<'_, Self>) -> bool {
        let port = c.local().map(|e| e.port);
        *c.state() = if port.is_some() && port == self.echo_port {
            HashConn::Echo
        } else {
            HashConn::Body(Body::new())
        };
        true
    }

    fn on_data(&mut self, c: &mut Conn<'_, Self>, data: &[u8]) -> usize {
        if matches!(c.state(), HashConn::Echo) {
            return c.send(data);
        }
        let mut used = 0;
        while used < data.len() {
            let HashConn::Body(b) = c.state() else {
                return used;
            };
            if b.have_header < 8 {
                let k = (8 - b.have_header).min(data.len() - used);
                b.header[b.have_header..b.have_header + k].copy_from_slice(&data[used..used + k]);
                b.have_header += k;
                used += k;
                if b.have_header < 8 {
                    return used;
                }
                let len = u64::from_be_bytes(b.header);
                if len > MAX_BODY {
                    self.too_large += 1;
                    c.abort();
                    return used;
                }
                b.remaining = len;
                b.hasher = Some(Sha256::new());
                if len == 0 {
                    self.finish(c);
                }
                continue;
            }
            // Body bytes.
            let want = (b.remaining as usize).min(data.len() - used);
            if self.inline {
                b.hasher
                    .as_mut()
                    .expect("inline keeps the hasher")
                    .update(&data[used..used + want]);
                b.remaining -= want as u64;
                used += want;
                self.bytes_hashed += want as u64;
                if b.remaining == 0 {
                    self.finish(c);
                }
                continue;
            }
            let room = CHUNK.saturating_sub(b.chunk.len());
            let k = want.min(room);
            if k == 0 {
                return used; // a full chunk waits for the job in flight: backpressure
            }
            b.chunk.extend_from_slice(&data[used..used + k]);
            b.remaining -= k as u64;
            used += k;
            self.submit_if_ready(c);
            let HashConn::Body(b) = c.state() else {
                return used;
            };
            if b.hasher.is_none() && b.chunk.len() >= CHUNK {
                return used;
            }
        }
        used
    }

    fn on_done(&mut self, c: &mut Conn<'_, Self>, done: Hashed) {
        let HashConn::Body(b) = c.state() else {
            return;
        };
        b.hasher = Some(done.hasher);
        if b.chunk.is_empty() {
            b.chunk = done.buf; // reuse the allocation
        }
        self.submit_if_ready(c);
        if let HashConn::Body(b) = c.state() {
            if b.remaining == 0 && b.chunk.is_empty() && b.hasher.is_some() && b.have_header == 8 {
                self.finish(c);
            }
        }
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("app_hash_requests", self.requests),
            ("app_hash_bytes", self.bytes_hashed),
            ("app_hash_too_large", self.too_large),
            ("app_hash_offload_refused", self.offload_refused),
        ]
    }
}

impl Hash {
    /// Hand the pending chunk to the pool when the hasher is free and the chunk is full
    /// or the body is complete.
    fn submit_if_ready(&mut self, c: &mut Conn<'_, Self>) {
        let HashConn::Body(b) = c.state() else {
            return;
        };
        if b.hasher.is_none() || b.chunk.is_empty() || (b.chunk.len() < CHUNK && b.remaining > 0) {
            return;
        }
        let mut hasher = b.hasher.take().expect("checked");
        let mut buf = std::mem::take(&mut b.chunk);
        let n = buf.len() as u64;
        let job = move || {
            hasher.update(&buf);
            buf.clear();
            Hashed { hasher, buf }
        };
        match c.offload(job) {
            Ok(()) => self.bytes_hashed += n,
            Err(e) => {
                // The pool is saturated: refuse the request rather than queue without
                // bound (the client sees a reset).
                self.offload_refused += 1;
                log::warn!("hash: offload refused on {}: {e}", c.id());
                c.abort();
            }
        }
    }

    /// Answer the digest and get ready for the next request.
    fn finish(&mut self, c: &mut Conn<'_, Self>) {
        let HashConn::Body(b) = c.state() else {
            return;
        };
        let digest = b.hasher.take().expect("hasher present").finalize();
        let buf = std::mem::take(&mut b.chunk);
        *b = Body::new();
        b.chunk = buf;
        self.requests += 1;
        if c.send(&digest) < digest.len() {
            // 32 bytes always fit a fresh request's buffer unless the client never reads.
            c.abort();
        }
    }
}

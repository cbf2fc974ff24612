//! Socket set-up shared by the kernel baseline servers.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{SocketAddr, TcpListener};

/// A non-blocking kernel TCP listener on `bind` with `backlog`, SO_REUSEADDR, and
/// SO_REUSEPORT when `reuseport` (several processes sharing one port).
pub fn tcp_listener(bind: SocketAddr, backlog: i32, reuseport: bool) -> io::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(bind), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if reuseport {
        s.set_reuse_port(true)?;
    }
    s.bind(&bind.into())?;
    s.listen(backlog)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

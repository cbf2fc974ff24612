//! Socket set-up shared by the kernel baseline servers.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};

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

/// Client source addresses: `src` plus the inclusive range `range` ("A-B", e.g.
/// 198.19.0.1-198.19.0.40, at most 2^20 addresses); the unspecified address (the kernel
/// picks) when both are empty.
pub fn source_addrs(src: &[Ipv4Addr], range: Option<&str>) -> Result<Vec<Ipv4Addr>, String> {
    let mut v = src.to_vec();
    if let Some(r) = range {
        let (a, b) = r
            .split_once('-')
            .ok_or_else(|| format!("--src-range '{r}': write it like 198.19.0.1-198.19.0.40"))?;
        let a: Ipv4Addr = a.trim().parse().map_err(|e| format!("'{a}': {e}"))?;
        let b: Ipv4Addr = b.trim().parse().map_err(|e| format!("'{b}': {e}"))?;
        let (a, b) = (u32::from(a), u32::from(b));
        if b < a || b - a >= 1 << 20 {
            return Err(format!("--src-range '{r}': empty or too large"));
        }
        v.extend((a..=b).map(Ipv4Addr::from));
    }
    if v.is_empty() {
        v.push(Ipv4Addr::UNSPECIFIED);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_from_list_and_range() {
        let one = Ipv4Addr::new(198, 19, 0, 9);
        let v = source_addrs(&[one], Some("198.19.0.1-198.19.0.3")).unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(v[0], one);
        assert_eq!(v[3], Ipv4Addr::new(198, 19, 0, 3));
        assert_eq!(
            source_addrs(&[], None).unwrap(),
            vec![Ipv4Addr::UNSPECIFIED]
        );
        assert!(source_addrs(&[], Some("198.19.0.3-198.19.0.1")).is_err());
        assert!(source_addrs(&[], Some("198.19.0.1")).is_err());
        assert!(source_addrs(&[], Some("198.19.0.1-x")).is_err());
    }
}

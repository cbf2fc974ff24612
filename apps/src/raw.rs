//! Raw AF_XDP modes for measuring the testbed's frame-rate ceiling, below any TCP/IP:
//! `rxdrop` takes every frame of a queue (the XDP program redirects all of them when no
//! address is steered) and drops it; `txgen` transmits 64-byte UDP frames as fast as the
//! ring and the kernel take them. The pair gives the physical limit the stack works under.

use c10m_driver::Port;
use std::time::{Duration, Instant};

/// What a raw run counted.
#[derive(Debug, Clone, Copy)]
pub struct RawReport {
    pub frames: u64,
    pub bytes: u64,
    pub secs: f64,
    pub kernel_rx_dropped: u64,
    pub wakeups: u64,
}

impl RawReport {
    pub fn mpps(&self) -> f64 {
        if self.secs > 0.0 {
            self.frames as f64 / self.secs / 1e6
        } else {
            0.0
        }
    }
}

/// Receive and drop every frame for `duration`. Counting starts at the first frame, so a
/// generator started later is not diluted by the wait.
pub fn rxdrop(port: &mut Port, duration: Duration, idle_timeout: Duration) -> RawReport {
    let mut frames = 0u64;
    let mut bytes = 0u64;
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    let deadline_wait = Instant::now() + duration + idle_timeout;
    loop {
        let n = port.recv_batch(64, |fs, _tx| {
            for f in fs {
                bytes += f.len() as u64;
            }
        });
        let now = Instant::now();
        if n > 0 {
            frames += n as u64;
            first.get_or_insert(now);
            last = now;
        }
        match first {
            Some(t0) if now.duration_since(t0) >= duration => break,
            Some(_) if now.duration_since(last) >= idle_timeout => break, // generator stopped
            None if now >= deadline_wait => break,
            _ => {}
        }
    }
    let st = port.stats();
    RawReport {
        frames,
        bytes,
        secs: first.map_or(0.0, |t0| last.duration_since(t0).as_secs_f64()),
        kernel_rx_dropped: st.k_rx_dropped + st.k_rx_ring_full + st.k_rx_fill_ring_empty,
        wakeups: st.fill_wakeups,
    }
}

/// A minimal Ethernet + IPv4 + UDP frame of `len` bytes (at least 60) from `src_mac` to
/// `dst_mac`, 198.18.0.1:9 -> 198.18.0.2:9 (discard), IPv4 checksum filled, UDP checksum 0.
pub fn udp_frame(len: usize, src_mac: [u8; 6], dst_mac: [u8; 6]) -> Vec<u8> {
    let len = len.max(60);
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip_len = (len - 14) as u16;
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[198, 18, 0, 1]);
    ip[16..20].copy_from_slice(&[198, 18, 0, 2]);
    let mut sum = 0u32;
    for w in ip.chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    let udp = &mut f[34..42];
    udp[0..2].copy_from_slice(&9u16.to_be_bytes());
    udp[2..4].copy_from_slice(&9u16.to_be_bytes());
    udp[4..6].copy_from_slice(&(ip_len - 20).to_be_bytes());
    f
}

/// Transmit copies of `frame` for `duration`, in batches of up to 64, one flush (and at
/// most one kick) per batch.
pub fn txgen(port: &mut Port, frame: &[u8], duration: Duration) -> RawReport {
    let t0 = Instant::now();
    let mut frames = 0u64;
    while t0.elapsed() < duration {
        for _ in 0..64 {
            let mut sent = 0;
            {
                let mut tx = port.tx();
                while sent < 64 {
                    match tx.frame(frame.len()) {
                        Some(b) => {
                            b.copy_from_slice(frame);
                            sent += 1;
                        }
                        None => break,
                    }
                }
            }
            port.flush();
            frames += sent;
        }
    }
    // Let the last batches complete.
    for _ in 0..100 {
        port.flush();
    }
    let st = port.stats();
    RawReport {
        frames,
        bytes: frames * frame.len() as u64,
        secs: t0.elapsed().as_secs_f64(),
        kernel_rx_dropped: 0,
        wakeups: st.wakeups,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_frame_has_valid_ipv4_checksum_and_lengths() {
        let f = udp_frame(64, [2, 0, 0, 0, 0, 1], [0xff; 6]);
        assert_eq!(f.len(), 64);
        let mut sum = 0u32;
        for w in f[14..34].chunks(2) {
            sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff, "IPv4 header checksum verifies");
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 50);
        assert_eq!(u16::from_be_bytes([f[38], f[39]]), 30);
        assert_eq!(udp_frame(10, [2; 6], [3; 6]).len(), 60);
    }
}

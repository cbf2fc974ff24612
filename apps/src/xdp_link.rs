//! The thin newtype that makes the driver's AF_XDP [`Port`] the stack's [`Link`].

use c10m_driver::{Port, Tx, Waker};
use c10m_stack::{Link, LinkCaps, TxSink};
use std::sync::Arc;
use std::time::Duration;

/// An AF_XDP port seen as a stack link.
pub struct XdpLink {
    pub port: Port,
    waker: Option<Arc<Waker>>,
}

impl XdpLink {
    /// Wrap a port; an eventfd lets pool workers wake the engine when it sleeps (if the
    /// eventfd cannot be made, pool results wait for the next frame or timer instead).
    pub fn new(mut port: Port) -> XdpLink {
        let waker = match Waker::new() {
            Ok(w) => {
                let w = Arc::new(w);
                port.set_waker(w.clone());
                Some(w)
            }
            Err(e) => {
                log::warn!("no eventfd for pool wake-ups ({e}); results wait for the next poll");
                None
            }
        };
        XdpLink { port, waker }
    }
}

/// The port's transmit side, borrowed.
pub struct XdpSink<'a>(Tx<'a>);

impl TxSink for XdpSink<'_> {
    fn frame(&mut self, len: usize) -> Option<&mut [u8]> {
        self.0.frame(len)
    }
    fn has_room(&mut self) -> bool {
        self.0.has_room()
    }
}

struct TxRef<'a, 'b>(&'a mut Tx<'b>);

impl TxSink for TxRef<'_, '_> {
    fn frame(&mut self, len: usize) -> Option<&mut [u8]> {
        self.0.frame(len)
    }
    fn has_room(&mut self) -> bool {
        self.0.has_room()
    }
}

impl Link for XdpLink {
    type Sink<'a> = XdpSink<'a>;

    fn receive<F: FnOnce(&[&[u8]], &mut dyn TxSink)>(&mut self, max: usize, f: F) -> usize {
        self.port
            .recv_batch(max, |frames, tx| f(frames, &mut TxRef(tx)))
    }

    fn sink(&mut self) -> XdpSink<'_> {
        XdpSink(self.port.tx())
    }

    fn flush(&mut self) {
        self.port.flush();
    }

    fn caps(&self) -> LinkCaps {
        LinkCaps {
            max_frame: (self.port.mtu() + 14).min(self.port.frame_size()),
            rx_batch: c10m_driver::RX_BATCH_MAX,
        }
    }

    fn wait(&mut self, timeout: Option<Duration>) {
        let _ = self.port.wait(timeout);
    }

    fn notifier(&self) -> Option<Box<dyn Fn() + Send + Sync>> {
        let w = self.waker.clone()?;
        Some(Box::new(move || w.wake()))
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let s = self.port.stats();
        vec![
            ("port_rx_packets", s.rx_packets),
            ("port_rx_bytes", s.rx_bytes),
            ("port_tx_packets", s.tx_packets),
            ("port_tx_bytes", s.tx_bytes),
            ("port_fill_starved", s.fill_starved),
            ("port_tx_ring_full", s.tx_ring_full),
            ("port_tx_no_frame", s.tx_no_frame),
            ("port_tx_batches", s.tx_batches),
            ("port_wakeups", s.wakeups),
            ("port_wakeup_transient", s.wakeup_transient),
            ("port_wakeup_errors", s.wakeup_errors),
            ("port_fill_wakeups", s.fill_wakeups),
            ("port_tx_oversize", s.tx_oversize),
            ("port_bad_descs", s.bad_descs),
            ("port_idle_polls", s.idle_polls),
            ("port_idle_wakes", s.idle_wakes),
            ("kernel_rx_dropped", s.k_rx_dropped),
            ("kernel_rx_invalid_descs", s.k_rx_invalid_descs),
            ("kernel_tx_invalid_descs", s.k_tx_invalid_descs),
            ("kernel_rx_ring_full", s.k_rx_ring_full),
            ("kernel_rx_fill_ring_empty", s.k_rx_fill_ring_empty),
            ("kernel_tx_ring_empty", s.k_tx_ring_empty),
        ]
    }
}

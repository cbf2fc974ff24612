//! An in-memory link pair: two engines (or an engine and a test) exchange Ethernet
//! frames through shared queues. No privileges, no kernel; used by tests and benches.

use crate::link::{Link, LinkCaps, TxSink};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

type Queue = Arc<Mutex<VecDeque<Vec<u8>>>>;

/// Most frames one `receive` lends.
const MAX_BATCH: usize = 64;

/// Transmit side of a [`MemLink`]: frames built here are delivered at `flush`.
pub struct MemSink {
    pending: Vec<Vec<u8>>,
    free: Vec<Vec<u8>>,
    max_pending: usize,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// ARP requests and NDP neighbour solicitations sent (for neighbour-upkeep tests).
    pub tx_neighbor_requests: u64,
}

impl TxSink for &mut MemSink {
    fn has_room(&mut self) -> bool {
        self.pending.len() < self.max_pending
    }

    fn frame(&mut self, len: usize) -> Option<&mut [u8]> {
        if self.pending.len() >= self.max_pending {
            return None;
        }
        let mut buf = self.free.pop().unwrap_or_default();
        buf.clear();
        buf.resize(len, 0);
        self.tx_frames += 1;
        self.tx_bytes += len as u64;
        self.pending.push(buf);
        self.pending.last_mut().map(|b| b.as_mut_slice())
    }
}

/// One end of an in-memory Ethernet link.
pub struct MemLink {
    rx: Queue,
    tx: Queue,
    sink: MemSink,
    batch: Vec<Vec<u8>>,
    pub rx_frames: u64,
}

impl MemLink {
    /// Two connected ends: what one flushes, the other receives.
    pub fn pair() -> (MemLink, MemLink) {
        let a: Queue = Default::default();
        let b: Queue = Default::default();
        (MemLink::new(a.clone(), b.clone()), MemLink::new(b, a))
    }

    fn new(rx: Queue, tx: Queue) -> MemLink {
        MemLink {
            rx,
            tx,
            sink: MemSink {
                pending: Vec::new(),
                free: Vec::new(),
                max_pending: 4096,
                tx_frames: 0,
                tx_bytes: 0,
                tx_neighbor_requests: 0,
            },
            batch: Vec::new(),
            rx_frames: 0,
        }
    }

    /// Put a raw frame on the wire towards this end (as if the peer had sent it).
    pub fn inject(&self, frame: Vec<u8>) {
        self.rx.lock().unwrap().push_back(frame);
    }

    /// Put a raw frame on the wire from this end (the peer receives it).
    pub fn send_raw(&self, frame: Vec<u8>) {
        self.tx.lock().unwrap().push_back(frame);
    }

    /// Take every frame this end has flushed towards its peer (for tests that play the peer).
    pub fn drain_sent(&self) -> Vec<Vec<u8>> {
        self.tx.lock().unwrap().drain(..).collect()
    }

    /// ARP requests and NDP solicitations this end has sent.
    pub fn neighbor_requests_sent(&self) -> u64 {
        self.sink.tx_neighbor_requests
    }

    /// Most frames one flush may carry (a small value simulates a full transmit ring).
    pub fn set_tx_capacity(&mut self, frames: usize) {
        self.sink.max_pending = frames;
    }

    /// Frames waiting to be received by this end.
    pub fn rx_pending(&self) -> usize {
        self.rx.lock().unwrap().len()
    }
}

impl Link for MemLink {
    type Sink<'a> = &'a mut MemSink;

    fn receive<F: FnOnce(&[&[u8]], &mut dyn TxSink)>(&mut self, max: usize, f: F) -> usize {
        {
            let mut q = self.rx.lock().unwrap();
            let n = max.min(q.len()).min(MAX_BATCH);
            self.batch.extend(q.drain(..n));
        }
        let n = self.batch.len();
        if n == 0 {
            return 0;
        }
        let mut frames: [&[u8]; MAX_BATCH] = [&[]; MAX_BATCH];
        for (slot, frame) in frames.iter_mut().zip(self.batch.iter()) {
            *slot = frame;
        }
        f(&frames[..n], &mut &mut self.sink);
        self.sink.free.append(&mut self.batch);
        self.rx_frames += n as u64;
        n
    }

    fn sink(&mut self) -> &mut MemSink {
        &mut self.sink
    }

    fn flush(&mut self) {
        if self.sink.pending.is_empty() {
            return;
        }
        for f in &self.sink.pending {
            let arp_request = f.len() >= 22 && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 1];
            let ndp_solicit =
                f.len() > 54 && f[12..14] == [0x86, 0xdd] && f[20] == 58 && f[54] == 135;
            if arp_request || ndp_solicit {
                self.sink.tx_neighbor_requests += 1;
            }
        }
        let mut q = self.tx.lock().unwrap();
        q.extend(self.sink.pending.drain(..));
    }

    fn caps(&self) -> LinkCaps {
        LinkCaps {
            max_frame: 1514,
            rx_batch: 64,
        }
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("link_rx_frames", self.rx_frames),
            ("link_tx_frames", self.sink.tx_frames),
        ]
    }
}

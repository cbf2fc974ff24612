//! Reaching the engine's other connections from a callback: open one (`Conn::connect`)
//! and act on one (`Conn::peer`). This is what a proxy or a client fan-out needs, with no
//! queue and no copy in between: a relay moves bytes from one connection's receive buffer
//! straight into the other's send buffer.
//!
//! A callback's handle borrows its own flow; the engine lends it the rest of the slab as
//! the two slices around that flow, so no flow is ever borrowed twice. A connection
//! opened from a callback gets its slot (and so its `ConnId`) at once and its socket when
//! the callback returns.

use crate::app::{App, Conn, ConnId};
use crate::engine::{ConnectError, Listener, Phase, Slot};
use crate::table::FlowTable;
use crate::wire::FourTuple;
use rustc_hash::FxHashMap;
use smoltcp::iface::Interface;
use smoltcp::wire::{IpAddress, IpEndpoint};

/// Ephemeral port range (RFC 6335 dynamic ports).
pub(crate) const EPHEMERAL: std::ops::RangeInclusive<u16> = 49152..=65535;

/// A connection a callback opened, waiting for the callback to return.
pub(crate) struct PendingConnect<S> {
    pub idx: u32,
    pub gen: u32,
    pub key: FourTuple,
    pub state: S,
}

/// What a callback's handle may reach beyond its own flow.
pub(crate) struct Net<'a, S> {
    /// Slots below and above the flow at hand.
    pub before: &'a mut [Slot<S>],
    pub after: &'a mut [Slot<S>],
    pub dirty: &'a mut Vec<(u32, u32)>,
    pub iface: &'a Interface,
    pub table: &'a FlowTable,
    pub listeners: &'a FxHashMap<u16, Listener>,
    pub next_port: &'a mut u16,
    pub free_slots: &'a mut Vec<u32>,
    pub max_flows: usize,
    pub pending: &'a mut Vec<PendingConnect<S>>,
}

impl<S> Net<'_, S> {
    fn slot(&mut self, idx: u32) -> Option<&mut Slot<S>> {
        slot_in(self.before, self.after, idx)
    }

    /// Slots in the slab (the flow at hand included).
    fn slots_len(&self) -> usize {
        self.before.len() + 1 + self.after.len()
    }
}

/// Slot `idx` of a slab split around the flow at hand (None for that flow itself).
fn slot_in<'s, S>(
    before: &'s mut [Slot<S>],
    after: &'s mut [Slot<S>],
    idx: u32,
) -> Option<&'s mut Slot<S>> {
    let i = idx as usize;
    let b = before.len();
    if i < b {
        before.get_mut(i)
    } else if i > b {
        after.get_mut(i - b - 1)
    } else {
        None
    }
}

/// The 4-tuple for a new connection to `remote`: a local address of its family and the
/// next ephemeral port whose 4-tuple is in neither the table (TIME-WAIT flows included)
/// nor the connections still pending.
pub(crate) fn plan_connect<S>(
    iface: &Interface,
    table: &FlowTable,
    listeners: &FxHashMap<u16, Listener>,
    next_port: &mut u16,
    pending: &[PendingConnect<S>],
    max_flows: usize,
    remote: IpEndpoint,
) -> Result<FourTuple, ConnectError> {
    if remote.port == 0 || remote.addr.is_unspecified() || !remote.addr.is_unicast() {
        return Err(ConnectError::Unaddressable);
    }
    let local = iface
        .ip_addrs()
        .iter()
        .map(|a| a.address())
        .find(|a| same_family(a, &remote.addr))
        .ok_or(ConnectError::NoSourceAddress)?;
    if table.len() + pending.len() >= max_flows {
        return Err(ConnectError::FlowTableFull);
    }
    let span = (*EPHEMERAL.end() - *EPHEMERAL.start()) as u32 + 1;
    for _ in 0..span {
        let p = *next_port;
        *next_port = if p == *EPHEMERAL.end() {
            *EPHEMERAL.start()
        } else {
            p + 1
        };
        let key = FourTuple {
            local: IpEndpoint::new(local, p),
            remote,
        };
        if !table.contains(&key)
            && !listeners.contains_key(&p)
            && !pending.iter().any(|q| q.key == key)
        {
            return Ok(key);
        }
    }
    Err(ConnectError::PortsExhausted)
}

fn same_family(a: &IpAddress, b: &IpAddress) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

impl<A: App> Conn<'_, A> {
    /// Open a connection to `remote` from this callback, with `state` as its
    /// `ConnState`. Its id is valid at once (store it, e.g. in this connection's state);
    /// the handshake starts when this callback returns, then `on_connected` (or
    /// `on_closed` if it fails) runs for it. [`Conn::peer`] reaches it from the next
    /// callback on (after `on_accept`, the engine defers this connection's other
    /// callbacks to make that so). Errors are those of `Engine::connect`.
    /// Not available on a handle from [`Conn::peer`] (`Unaddressable`).
    pub fn connect(
        &mut self,
        remote: IpEndpoint,
        state: A::ConnState,
    ) -> Result<ConnId, ConnectError> {
        let Some(net) = self.net.as_mut() else {
            return Err(ConnectError::Unaddressable);
        };
        let key = plan_connect(
            net.iface,
            net.table,
            net.listeners,
            net.next_port,
            net.pending,
            net.max_flows,
            remote,
        )?;
        // Reserve the slot now so the id can be handed out: a free one (its generation
        // is already the next id's), else the next past the slab's end not yet reserved.
        let (idx, gen) = match net.free_slots.pop() {
            Some(i) => (i, net.slot(i).map_or(0, |s| s.gen)),
            None => {
                let len = net.slots_len() as u32;
                let next = net
                    .pending
                    .iter()
                    .map(|p| p.idx + 1)
                    .filter(|&i| i > len)
                    .max()
                    .unwrap_or(len);
                (next, 0)
            }
        };
        net.pending.push(PendingConnect {
            idx,
            gen,
            key,
            state,
        });
        Ok(ConnId { idx, gen })
    }

    /// Another live connection of this engine (established or still connecting), to
    /// send on, close, abort or read its state; None if it is gone, closing, or this
    /// connection itself. Its egress and callbacks (e.g. data left waiting for send space
    /// that was just freed) run in this loop. The handle it returns cannot reach further
    /// peers or connect.
    pub fn peer(&mut self, id: ConnId) -> Option<Conn<'_, A>> {
        let net = self.net.as_mut()?;
        let slot = slot_in(net.before, net.after, id.idx)?;
        if slot.gen != id.gen {
            return None;
        }
        let f = slot.flow.as_mut()?;
        if !matches!(f.phase, Phase::Open | Phase::Connecting) || f.flags.aborted {
            return None;
        }
        if !f.dirty {
            f.dirty = true;
            net.dirty.push((id.idx, id.gen));
        }
        Some(f.conn(
            id,
            self.now,
            self.offload.as_deref_mut(),
            &mut *self.offloads,
            None,
        ))
    }
}

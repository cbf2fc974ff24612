//! Echo (RFC 862) over TCP and UDP: every byte goes back where it came from.

use c10m_stack::{App, CloseReason, Conn, Datagram};

/// Echo server. Backpressure is TCP's own: bytes that do not fit the send buffer stay
/// unconsumed in the receive buffer, which shrinks the window the peer sees.
#[derive(Debug, Default)]
pub struct Echo {
    pub conns_closed: u64,
    pub resets: u64,
}

impl App for Echo {
    type ConnState = ();
    type Done = ();

    fn on_data(&mut self, c: &mut Conn<'_, Self>, data: &[u8]) -> usize {
        c.send(data)
    }

    fn on_closed(&mut self, _c: &mut Conn<'_, Self>, reason: CloseReason) {
        self.conns_closed += 1;
        if reason == CloseReason::Reset {
            self.resets += 1;
        }
    }

    fn on_datagram(&mut self, d: &mut Datagram<'_>, data: &[u8]) {
        d.reply(data);
    }
}

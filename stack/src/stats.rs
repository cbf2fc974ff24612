//! Engine counters. Plain integers owned by one engine: no atomics on the data path.

use crate::app::CloseReason;
use crate::wire::Malformed;

macro_rules! counters {
    ($($(#[$m:meta])* $name:ident),* $(,)?) => {
        /// Counters of one engine.
        #[derive(Debug, Default, Clone)]
        pub struct Stats { $($(#[$m])* pub $name: u64,)* }
        impl Stats {
            /// (name, value) for every counter, in declaration order.
            pub fn counters(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name),)*]
            }
        }
    };
}

counters! {
    /// Loop iterations, and those that found work.
    loops, busy_loops,
    /// Times the adaptive idle policy blocked in the link.
    idle_sleeps,
    rx_frames, rx_bytes,
    tcp_segments_in,
    /// Dropped before smoltcp: could not be parsed.
    drop_malformed_ethernet, drop_malformed_ipv4, drop_malformed_ipv6, drop_malformed_tcp,
    drop_unknown_ethertype,
    /// A SYN for an address that is not ours.
    drop_not_our_addr,
    drop_syn_backlog_full, drop_syn_flow_table_full,
    /// A SYN smoltcp refused (bad checksum...): no flow was kept.
    drop_syn_rejected,
    /// TCP segments for no flow (answered by RST where RFC 9293 says so).
    tcp_no_flow,
    /// SYNs that reopened a 4-tuple still in TIME-WAIT.
    time_wait_reused,
    syn_accepted, handshakes_failed, accepted, refused_by_app, connects, connects_failed,
    flows_closed, closed_normal, closed_reset, closed_timeout, closed_aborted,
    timers_fired,
    /// Flows run early because a neighbour (ARP/NDP) was learned.
    neighbor_wakeups,
    /// ARP requests / neighbour solicitations sent to keep the gateways resolved.
    gateway_refreshes,
    /// ARP requests for our address from off-subnet senders, answered by the engine.
    arp_off_subnet_replies,
    app_bytes_in,
    udp_in, udp_tx_full,
    /// Pool results handed to `on_done`, and those dropped because the flow was gone.
    offload_results, offload_results_dropped,
    /// Callbacks that exceeded the engine's callback budget.
    slow_callbacks,
    /// Polls that exceeded it (each turns callback timing on for the next polls).
    slow_polls,
    internal_errors,
}

impl Stats {
    pub(crate) fn count_malformed(&mut self, why: Malformed) {
        match why {
            Malformed::Ethernet => self.drop_malformed_ethernet += 1,
            Malformed::EtherType => self.drop_unknown_ethertype += 1,
            Malformed::Ipv4 => self.drop_malformed_ipv4 += 1,
            Malformed::Ipv6 => self.drop_malformed_ipv6 += 1,
            Malformed::Tcp => self.drop_malformed_tcp += 1,
        }
    }

    pub(crate) fn count_close(&mut self, r: CloseReason) {
        match r {
            CloseReason::Normal => self.closed_normal += 1,
            CloseReason::Reset => self.closed_reset += 1,
            CloseReason::TimedOut => self.closed_timeout += 1,
            CloseReason::Aborted => self.closed_aborted += 1,
        }
    }
}

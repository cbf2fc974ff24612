//! Kernel-facing tests: a real AF_XDP port on a veth pair in network namespaces.
//!
//! ```text
//!   netns c10m-drv-<pid>-<n>-s                 netns c10m-drv-<pid>-<n>-p
//!  +-------------------------------+          +---------------------------+
//!  | cds<id>: 198.18.X.3 (kernel)  |  veth    | cdp<id>: 198.18.X.1       |
//!  |   + c10m Port, queue 0,       |<-------->|   ping, arp (kernel)      |
//!  |     steer 198.18.X.2          |          |   ethtool -K tx/tso/gso off|
//!  +-------------------------------+          +---------------------------+
//! ```
//!
//! Needs root (namespaces, AF_XDP, bpf). Fails with a clear message otherwise; set
//! `C10M_SKIP_ROOT_TESTS=1` to skip explicitly. Everything created is removed by a Drop
//! guard, also when a test panics.

use c10m_driver::{testing, AttachMode, DriverError, ForeignAttach, Port, PortConfig, XdpMode};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// True if the test should run; panics with instructions if it cannot.
fn require_root() -> bool {
    if std::env::var("C10M_SKIP_ROOT_TESTS").as_deref() == Ok("1") {
        eprintln!("C10M_SKIP_ROOT_TESTS=1: skipping a root-only AF_XDP test");
        return false;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        panic!(
            "this test needs root (network namespaces, AF_XDP, bpf): run it as root, e.g. \
             `sudo -E cargo test -p c10m-driver`, or set C10M_SKIP_ROOT_TESTS=1 to skip it"
        );
    }
    true
}

fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"))
}

fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Two namespaces joined by a veth pair; deleted on drop.
struct Testbed {
    ns_s: String,
    ns_p: String,
    if_s: String,
    if_p: String,
    net: u8,
}

impl Testbed {
    fn new() -> Testbed {
        let pid = std::process::id();
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}{n}", pid % 100_000);
        let tb = Testbed {
            ns_s: format!("c10m-drv-{pid}-{n}-s"),
            ns_p: format!("c10m-drv-{pid}-{n}-p"),
            if_s: format!("cds{id}"),
            if_p: format!("cdp{id}"),
            net: ((pid + n * 37) % 250 + 1) as u8,
        };
        // The guard exists before anything is created, so a failure below cleans up.
        ok(&["ip", "netns", "add", &tb.ns_s]);
        ok(&["ip", "netns", "add", &tb.ns_p]);
        ok(&[
            "ip",
            "link",
            "add",
            &tb.if_s,
            "netns",
            &tb.ns_s,
            "numrxqueues",
            "1",
            "numtxqueues",
            "1",
            "type",
            "veth",
            "peer",
            "name",
            &tb.if_p,
            "netns",
            &tb.ns_p,
            "numrxqueues",
            "1",
            "numtxqueues",
            "1",
        ]);
        let (s3, p1) = (tb.addr(3), tb.addr(1));
        ok(&[
            "ip",
            "-n",
            &tb.ns_s,
            "addr",
            "add",
            &format!("{s3}/24"),
            "dev",
            &tb.if_s,
        ]);
        ok(&[
            "ip",
            "-n",
            &tb.ns_p,
            "addr",
            "add",
            &format!("{p1}/24"),
            "dev",
            &tb.if_p,
        ]);
        for (ns, dev) in [(&tb.ns_s, &tb.if_s), (&tb.ns_p, &tb.if_p)] {
            ok(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            ok(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        ok(&[
            "ip", "netns", "exec", &tb.ns_p, "ethtool", "-K", &tb.if_p, "tx", "off", "tso", "off",
            "gso", "off",
        ]);
        tb
    }

    fn addr(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.net, host)
    }

    fn cfg(&self) -> PortConfig {
        PortConfig {
            ifname: self.if_s.clone(),
            queue: 0,
            steer: vec![self.addr(2).into()],
            xdp_mode: XdpMode::Auto,
            ..PortConfig::default()
        }
    }

    /// `ip -n S link show dev IF`.
    fn link_show(&self) -> String {
        ok(&["ip", "-n", &self.ns_s, "link", "show", "dev", &self.if_s])
    }

    /// Run `f` on a thread that has entered the stack-side namespace.
    fn in_ns<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.ns_s);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // SAFETY: setns on a valid namespace fd; CLONE_NEWNET only changes this
            // thread's network namespace, which is why the test runs on its own thread.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end in it (and so the pair).
        for ns in [&self.ns_s, &self.ns_p] {
            let _ = run(&["ip", "netns", "del", ns]);
        }
    }
}

/// ARP reply to a request for `me_ip`, or None if `f` is something else.
fn arp_reply(f: &[u8], me_mac: [u8; 6], me_ip: Ipv4Addr) -> Option<Vec<u8>> {
    if f.len() < 42
        || f[12..14] != [0x08, 0x06]
        || f[20..22] != [0, 1]
        || f[38..42] != me_ip.octets()
    {
        return None;
    }
    let mut r = Vec::with_capacity(42);
    r.extend_from_slice(&f[6..12]); // to the requester
    r.extend_from_slice(&me_mac);
    r.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]);
    r.extend_from_slice(&me_mac);
    r.extend_from_slice(&me_ip.octets());
    r.extend_from_slice(&f[22..28]); // requester's MAC
    r.extend_from_slice(&f[28..32]); // requester's IP
    Some(r)
}

fn csum(b: &[u8]) -> u16 {
    let mut s: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// ICMP echo reply to an echo request for `me_ip`, or None.
fn echo_reply(f: &[u8], me_mac: [u8; 6], me_ip: Ipv4Addr) -> Option<Vec<u8>> {
    if f.len() < 34 || f[12..14] != [0x08, 0x00] || f[23] != 1 || f[30..34] != me_ip.octets() {
        return None;
    }
    let ihl = usize::from(f[14] & 0xf) * 4;
    let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
    if f.len() < 14 + total || total < ihl + 8 || f[14 + ihl] != 8 {
        return None;
    }
    let mut r = f[..14 + total].to_vec();
    r[0..6].copy_from_slice(&f[6..12]);
    r[6..12].copy_from_slice(&me_mac);
    r[26..30].copy_from_slice(&f[30..34]); // swap IPs: header checksum unchanged
    r[30..34].copy_from_slice(&f[26..30]);
    let icmp = 14 + ihl;
    r[icmp] = 0;
    r[icmp + 2..icmp + 4].copy_from_slice(&[0, 0]);
    let c = csum(&r[icmp..]);
    r[icmp + 2..icmp + 4].copy_from_slice(&c.to_be_bytes());
    Some(r)
}

fn targets(f: &[u8], ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    (f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[38..42] == o)
        || (f.len() >= 34 && f[12..14] == [0x08, 0x00] && f[30..34] == o)
}

#[test]
fn port_answers_arp_and_ping_while_kernel_keeps_its_address() {
    if !require_root() {
        return;
    }
    let tb = Testbed::new();
    let (me, kernel_ip) = (tb.addr(2), tb.addr(3));
    let cfg = tb.cfg();
    let ns_p = tb.ns_p.clone();
    let if_p = tb.if_p.clone();
    let (mac, counts, stats, mode, ping_me, ping_kernel, seen_kernel_frames, prog_id) =
        tb.in_ns(move || {
            let mut port = Port::open(&cfg).unwrap_or_else(|e| panic!("Port::open: {e}"));
            let mac = port.mac();
            assert_ne!(mac, [0; 6]);
            assert!(port.mtu() >= 1500);
            assert!(!port.zero_copy(), "veth has no zero-copy");
            assert!(port.fd() >= 0);
            let prog_id = port.prog_id().expect("attached");
            // Ping our address (ARP first, then 3 echo requests), and the kernel's, at the
            // same time; answer ours from the port.
            let spawn_ping = |ip: Ipv4Addr| {
                Command::new("ip")
                    .args(["netns", "exec", &ns_p, "ping", "-n", "-c3", "-i0.2", "-W2"])
                    .arg(ip.to_string())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("spawn ping")
            };
            let mut p_me = spawn_ping(me);
            let mut p_kernel = spawn_ping(kernel_ip);
            let mut seen_kernel = 0u32;
            let (mut st_me, mut st_kernel) = (None, None);
            let deadline = Instant::now() + Duration::from_secs(15);
            while (st_me.is_none() || st_kernel.is_none()) && Instant::now() < deadline {
                port.recv(64, |f, tx| {
                    if targets(f, kernel_ip) {
                        seen_kernel += 1;
                    }
                    if let Some(r) = arp_reply(f, mac, me).or_else(|| echo_reply(f, mac, me)) {
                        if let Some(out) = tx.frame(r.len()) {
                            out.copy_from_slice(&r);
                        }
                    }
                });
                port.flush();
                let c = port.frame_counts();
                assert_eq!(c.sum(), c.total, "{c:?}");
                if st_me.is_none() {
                    st_me = p_me.try_wait().unwrap();
                }
                if st_kernel.is_none() {
                    st_kernel = p_kernel.try_wait().unwrap();
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            let out_me = p_me.wait_with_output().unwrap();
            let out_kernel = p_kernel.wait_with_output().unwrap();
            let show = |o: &Output| {
                format!(
                    "{:?} {}{}",
                    o.status,
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            };
            (
                mac,
                port.frame_counts(),
                port.stats(),
                port.attach_mode(),
                (out_me.status.success(), show(&out_me)),
                (out_kernel.status.success(), show(&out_kernel)),
                seen_kernel,
                prog_id,
            )
            // port dropped here: link closed, socket closed, memory unmapped
        });
    eprintln!("attach mode {mode:?}, prog id {prog_id}, stats {stats:?}, counts {counts:?}");
    assert_eq!(mode, AttachMode::Native, "veth supports native XDP");
    assert!(
        ping_me.0,
        "ping to the port's address failed: {}",
        ping_me.1
    );
    assert!(
        ping_kernel.0,
        "ping to the kernel's address failed: {}",
        ping_kernel.1
    );
    assert_eq!(
        seen_kernel_frames, 0,
        "frames for the kernel's address reached the port"
    );
    assert!(
        stats.rx_packets >= 4,
        "1 ARP + 3 echo requests expected: {stats:?}"
    );
    assert!(
        stats.tx_packets >= 4,
        "1 ARP reply + 3 echo replies expected: {stats:?}"
    );
    assert_eq!(stats.wakeup_errors, 0);
    assert_eq!(counts.sum(), counts.total);
    assert_eq!(
        counts.rx_held + counts.alloc_held + counts.tx_pending,
        0,
        "{counts:?}"
    );
    // The peer learnt our MAC from the ARP reply the port sent.
    let neigh = ok(&[
        "ip",
        "-n",
        &tb.ns_p,
        "neigh",
        "show",
        &me.to_string(),
        "dev",
        &if_p,
    ]);
    let mac_s = mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    assert!(
        neigh.contains(&mac_s),
        "peer neighbour entry {neigh:?} lacks {mac_s}"
    );
    // Dropping the port removed the program (bpf link closed).
    let link = tb.link_show();
    assert!(!link.contains("xdp"), "XDP program left behind: {link}");
}

#[test]
fn foreign_programs_are_reported_and_netlink_ones_forced_out() {
    if !require_root() {
        return;
    }
    let tb = Testbed::new();
    let cfg = tb.cfg();
    let ifname = tb.if_s.clone();
    tb.in_ns(move || {
        // A netlink-attached program, as `ip link set dev X xdpgeneric ...` leaves.
        let foreign = testing::attach_pass_program_netlink(&ifname, true).expect("attach foreign");
        assert_eq!(testing::attached_prog_id(&ifname).unwrap(), Some(foreign));
        let e = Port::open(&cfg).unwrap_err();
        assert_eq!(
            e,
            DriverError::ForeignProgram {
                ifname: ifname.clone(),
                prog_id: foreign,
                by: ForeignAttach::Netlink
            }
        );
        let msg = e.to_string();
        eprintln!("{msg}");
        assert!(msg.contains(&format!(
            "already has XDP program id {foreign} attached (by netlink)"
        )));
        assert!(
            msg.contains(&format!("`ip link set dev {ifname} xdp off`")) && msg.contains("--force")
        );

        // --force replaces it.
        let port = Port::open(&PortConfig {
            force: true,
            ..cfg.clone()
        })
        .expect("open with force");
        let ours = port.prog_id().unwrap();
        assert_ne!(ours, foreign);
        assert_eq!(testing::attached_prog_id(&ifname).unwrap(), Some(ours));

        // A second port on the same interface finds our bpf link: it cannot be replaced.
        let e = Port::open(&PortConfig {
            force: true,
            ..cfg.clone()
        })
        .unwrap_err();
        let msg = e.to_string();
        eprintln!("{msg}");
        match e {
            DriverError::ForeignProgram {
                prog_id,
                by: ForeignAttach::Link(l),
                ..
            } => {
                assert_eq!(prog_id, ours);
                assert!(msg.contains(&format!("`bpftool link detach id {l}`")));
            }
            other => panic!("expected a link-held foreign program, got {other:?}"),
        }
        drop(port);
        assert_eq!(
            testing::attached_prog_id(&ifname).unwrap(),
            None,
            "link not released"
        );
    });
    assert!(!tb.link_show().contains("xdp"));
}

#[test]
fn setup_errors_name_the_fix() {
    if !require_root() {
        return;
    }
    let tb = Testbed::new();
    let cfg = tb.cfg();
    let ifname = tb.if_s.clone();
    tb.in_ns(move || {
        let e = Port::open(&PortConfig {
            queue: 5,
            ..cfg.clone()
        })
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            format!(
                "interface {ifname} has 1 rx queues; queue 5 does not exist (use --queue 0..0)"
            )
        );
        // Skb mode explicitly, then the port works and reports it.
        let port = Port::open(&PortConfig {
            xdp_mode: XdpMode::Skb,
            ..cfg.clone()
        })
        .expect("skb open");
        assert_eq!(port.attach_mode(), AttachMode::Skb);
        // The queue is taken while the port lives.
        drop(port);
        let port = Port::open(&cfg).expect("reopen after close");
        assert_eq!(port.attach_mode(), AttachMode::Native);
    });
    // Not visible outside the namespace.
    let e = Port::open(&tb.cfg()).unwrap_err();
    assert!(matches!(e, DriverError::NoSuchInterface { .. }), "{e}");
}

/// True for an ICMPv6 neighbour solicitation whose target is `target`.
fn is_ns_for(f: &[u8], target: std::net::Ipv6Addr) -> bool {
    f.len() >= 14 + 40 + 24
        && f[12..14] == [0x86, 0xdd]
        && f[20] == 58
        && f[54] == 135
        && f[62..78] == target.octets()
}

#[test]
fn ipv6_neighbour_solicitations_for_the_stack_reach_the_port() {
    if !require_root() {
        return;
    }
    let tb = Testbed::new();
    let v6 = |h: u16| std::net::Ipv6Addr::new(0x2001, 2, 0, u16::from(tb.net), 0, 0, 0, h);
    let (me, kernel, peer) = (v6(2), v6(3), v6(1));
    ok(&[
        "ip",
        "-n",
        &tb.ns_s,
        "addr",
        "add",
        &format!("{kernel}/64"),
        "dev",
        &tb.if_s,
        "nodad",
    ]);
    ok(&[
        "ip",
        "-n",
        &tb.ns_p,
        "addr",
        "add",
        &format!("{peer}/64"),
        "dev",
        &tb.if_p,
        "nodad",
    ]);
    let mut cfg = tb.cfg();
    cfg.steer.push(me.into());
    let ns_p = tb.ns_p.clone();
    let (ns_seen, kernel_seen, ping_kernel_ok) = tb.in_ns(move || {
        let mut port = Port::open(&cfg).unwrap_or_else(|e| panic!("Port::open: {e}"));
        // Nobody answers for `me`: the peer keeps soliciting while ping waits.
        let mut p_me = Command::new("ip")
            .args(["netns", "exec", &ns_p, "ping", "-6", "-n", "-c2", "-W1"])
            .arg(me.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut p_kernel = Command::new("ip")
            .args([
                "netns", "exec", &ns_p, "ping", "-6", "-n", "-c2", "-i0.2", "-W2",
            ])
            .arg(kernel.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let (mut ns_seen, mut kernel_seen) = (0u32, 0u32);
        let (mut d_me, mut d_kernel) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(10);
        while (d_me.is_none() || d_kernel.is_none()) && Instant::now() < deadline {
            port.recv(64, |f, _| {
                if is_ns_for(f, me) {
                    ns_seen += 1;
                }
                if is_ns_for(f, kernel) || (f.len() >= 54 && f[38..54] == kernel.octets()) {
                    kernel_seen += 1;
                }
            });
            port.flush();
            d_me = d_me.or(p_me.try_wait().unwrap());
            d_kernel = d_kernel.or(p_kernel.try_wait().unwrap());
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = p_me.kill();
        let _ = p_me.wait();
        let _ = p_kernel.kill();
        let st = p_kernel.wait().unwrap();
        let c = port.frame_counts();
        assert_eq!(c.sum(), c.total);
        (ns_seen, kernel_seen, st.success())
    });
    assert!(
        ns_seen >= 1,
        "no neighbour solicitation for {me} reached the port"
    );
    assert_eq!(
        kernel_seen, 0,
        "frames for the kernel's {kernel} reached the port"
    );
    assert!(ping_kernel_ok, "ping -6 to the kernel's address failed");
}

/// Helper process for `xdp_program_goes_away_when_the_process_is_sigkilled`: opens a port
/// in the namespace named by the environment, says READY, and waits to be killed.
#[test]
#[ignore = "helper process, started by xdp_program_goes_away_when_the_process_is_sigkilled"]
fn helper_hold_port_until_killed() {
    let (Ok(ns), Ok(ifname), Ok(ip)) = (
        std::env::var("C10M_HELPER_NS"),
        std::env::var("C10M_HELPER_IF"),
        std::env::var("C10M_HELPER_IP"),
    ) else {
        eprintln!("helper_hold_port_until_killed: not started by its parent test, nothing to do");
        return;
    };
    let f = std::fs::File::open(format!("/run/netns/{ns}")).expect("netns");
    // SAFETY: setns on a valid namespace fd; affects only this thread, which opens the port.
    assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
    let cfg = PortConfig {
        ifname,
        steer: vec![ip.parse().unwrap()],
        ..PortConfig::default()
    };
    let _port = Port::open(&cfg).expect("helper: Port::open");
    println!("READY");
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn xdp_program_goes_away_when_the_process_is_sigkilled() {
    use std::io::BufRead;
    if !require_root() {
        return;
    }
    let tb = Testbed::new();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "helper_hold_port_until_killed",
            "--nocapture",
        ])
        .env("C10M_HELPER_NS", &tb.ns_s)
        .env("C10M_HELPER_IF", &tb.if_s)
        .env("C10M_HELPER_IP", tb.addr(2).to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let ready = std::io::BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("READY"));
    if !ready {
        let _ = child.kill();
        panic!("helper process did not open its port: {:?}", child.wait());
    }
    let before = tb.link_show();
    assert!(
        before.contains("xdp"),
        "helper's program not attached: {before}"
    );
    child.kill().unwrap(); // SIGKILL: no destructor runs
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = tb.link_show();
        if !now.contains("xdp") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "XDP program survived SIGKILL: {now}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

//! c10m's XDP program, generated as eBPF instructions at run time with the stack's
//! addresses as immediates (no clang, no ELF).
//!
//! The program redirects to the XSKMAP entry of the receiving queue
//! (`bpf_redirect_map(xskmap, ctx->rx_queue_index, XDP_PASS)`) only the frames meant for
//! the stack, and passes everything else to the kernel:
//! - ARP whose target protocol address is one of the stack's IPv4 addresses;
//! - IPv4 whose destination is one of the stack's IPv4 addresses;
//! - IPv6 whose destination is one of the stack's IPv6 addresses or their solicited-node
//!   multicast groups (ff02::1:ffXX:XXXX, RFC 4291 section 2.7.1).
//!
//! With no addresses at all, every frame is redirected (raw mode). Every packet access is
//! preceded by a `data + N > data_end` check, as the verifier requires.

use std::net::{IpAddr, Ipv6Addr};

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u8,
    /// dst_reg (low nibble) | src_reg (high nibble).
    pub regs: u8,
    /// Signed offset (jumps: relative to the next instruction).
    pub off: i16,
    /// Immediate.
    pub imm: i32,
}

impl Insn {
    /// Destination register.
    pub fn dst(&self) -> u8 {
        self.regs & 0xf
    }
    /// Source register.
    pub fn src(&self) -> u8 {
        self.regs >> 4
    }
}

// Opcode pieces (include/uapi/linux/bpf_common.h, bpf.h).
pub(crate) const BPF_LDX_MEM_W: u8 = 0x61;
pub(crate) const BPF_LDX_MEM_H: u8 = 0x69;
pub(crate) const BPF_MOV64_REG: u8 = 0xbf;
pub(crate) const BPF_MOV64_IMM: u8 = 0xb7;
pub(crate) const BPF_ADD64_IMM: u8 = 0x07;
pub(crate) const BPF_JGT_REG: u8 = 0x2d;
pub(crate) const BPF_JA: u8 = 0x05;
pub(crate) const BPF_JMP32_JEQ_IMM: u8 = 0x16;
pub(crate) const BPF_JMP32_JNE_IMM: u8 = 0x56;
pub(crate) const BPF_CALL: u8 = 0x85;
pub(crate) const BPF_EXIT: u8 = 0x95;
pub(crate) const BPF_LD_IMM64: u8 = 0x18;
pub(crate) const BPF_PSEUDO_MAP_FD: u8 = 1;

/// `BPF_FUNC_redirect_map`.
pub(crate) const HELPER_REDIRECT_MAP: i32 = 51;
/// `XDP_PASS`.
pub(crate) const XDP_PASS: i32 = 2;
/// `XDP_REDIRECT`.
#[cfg(test)]
pub(crate) const XDP_REDIRECT: i32 = 4;

/// `struct xdp_md` field offsets.
const MD_DATA: i16 = 0;
const MD_DATA_END: i16 = 4;
const MD_RX_QUEUE_INDEX: i16 = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Label(usize);

/// A minimal assembler: emits instructions, resolves forward jumps to labels.
#[derive(Default)]
struct Asm {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
    fixups: Vec<(usize, Label)>,
}

impl Asm {
    fn emit(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.insns.push(Insn {
            code,
            regs: (src << 4) | dst,
            off,
            imm,
        });
    }
    fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }
    fn bind(&mut self, l: Label) {
        assert!(self.labels[l.0].is_none(), "label bound twice");
        self.labels[l.0] = Some(self.insns.len());
    }
    fn jump(&mut self, code: u8, dst: u8, src: u8, imm: i32, to: Label) {
        self.fixups.push((self.insns.len(), to));
        self.emit(code, dst, src, 0, imm);
    }
    fn mov_reg(&mut self, dst: u8, src: u8) {
        self.emit(BPF_MOV64_REG, dst, src, 0, 0);
    }
    fn mov_imm(&mut self, dst: u8, imm: i32) {
        self.emit(BPF_MOV64_IMM, dst, 0, 0, imm);
    }
    fn add_imm(&mut self, dst: u8, imm: i32) {
        self.emit(BPF_ADD64_IMM, dst, 0, 0, imm);
    }
    fn ldx_w(&mut self, dst: u8, src: u8, off: i16) {
        self.emit(BPF_LDX_MEM_W, dst, src, off, 0);
    }
    fn ldx_h(&mut self, dst: u8, src: u8, off: i16) {
        self.emit(BPF_LDX_MEM_H, dst, src, off, 0);
    }
    fn ja(&mut self, to: Label) {
        self.jump(BPF_JA, 0, 0, 0, to);
    }
    fn finish(mut self) -> Result<Vec<Insn>, String> {
        for (at, l) in std::mem::take(&mut self.fixups) {
            let target = self.labels[l.0].ok_or("unbound label")?;
            let off = target as i64 - at as i64 - 1;
            if target >= self.insns.len() || off < 0 {
                return Err(format!("jump at {at} to {target} out of range"));
            }
            self.insns[at].off = i16::try_from(off).map_err(|_| "jump too far".to_string())?;
        }
        Ok(self.insns)
    }
}

/// An address as the u32 a `BPF_LDX_MEM_W` of its network-order bytes yields on this
/// (little-endian) host, as a JMP32 immediate.
fn word(b: [u8; 4]) -> i32 {
    i32::from_ne_bytes(b)
}

/// The solicited-node multicast group of `a` (RFC 4291 section 2.7.1).
pub fn solicited_node(a: &Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// Generate the program. `map_fd` is the XSKMAP's fd (a `BPF_PSEUDO_MAP_FD` immediate).
pub fn generate(steer: &[IpAddr], map_fd: i32) -> Result<Vec<Insn>, String> {
    let mut v4: Vec<[u8; 4]> = Vec::new();
    let mut v6: Vec<[u8; 16]> = Vec::new();
    for a in steer {
        match a {
            IpAddr::V4(a) => v4.push(a.octets()),
            IpAddr::V6(a) => {
                v6.push(a.octets());
                v6.push(solicited_node(a).octets());
            }
        }
    }
    v4.sort_unstable();
    v4.dedup();
    v6.sort_unstable();
    v6.dedup();

    let mut a = Asm::default();
    let (pass, redirect) = (a.label(), a.label());
    // r6 = ctx; r2 = data; r3 = data_end
    a.mov_reg(6, 1);
    a.ldx_w(2, 1, MD_DATA);
    a.ldx_w(3, 1, MD_DATA_END);
    if steer.is_empty() {
        a.ja(redirect);
    } else {
        let (arp, ipv4, ipv6) = (a.label(), a.label(), a.label());
        // Ethernet header present? Then r5 = ethertype (network order, as loaded).
        need(&mut a, 14, pass);
        a.ldx_h(5, 2, 12);
        a.jump(
            BPF_JMP32_JEQ_IMM,
            5,
            0,
            i32::from(u16::from_ne_bytes([0x08, 0x06])),
            arp,
        );
        a.jump(
            BPF_JMP32_JEQ_IMM,
            5,
            0,
            i32::from(u16::from_ne_bytes([0x08, 0x00])),
            ipv4,
        );
        a.jump(
            BPF_JMP32_JEQ_IMM,
            5,
            0,
            i32::from(u16::from_ne_bytes([0x86, 0xdd])),
            ipv6,
        );
        a.ja(pass);

        // ARP (RFC 826) for Ethernet/IPv4: target protocol address at 14 + 24.
        a.bind(arp);
        if !v4.is_empty() {
            need(&mut a, 14 + 28, pass);
            a.ldx_w(5, 2, 14 + 24);
            for w in &v4 {
                a.jump(BPF_JMP32_JEQ_IMM, 5, 0, word(*w), redirect);
            }
        }
        a.ja(pass);

        // IPv4: destination at 14 + 16.
        a.bind(ipv4);
        if !v4.is_empty() {
            need(&mut a, 14 + 20, pass);
            a.ldx_w(5, 2, 14 + 16);
            for w in &v4 {
                a.jump(BPF_JMP32_JEQ_IMM, 5, 0, word(*w), redirect);
            }
        }
        a.ja(pass);

        // IPv6: destination at 14 + 24, four words in r4, r5, r7, r8.
        a.bind(ipv6);
        if !v6.is_empty() {
            need(&mut a, 14 + 40, pass);
            let regs = [4u8, 5, 7, 8];
            for (i, r) in regs.iter().enumerate() {
                a.ldx_w(*r, 2, 14 + 24 + 4 * i as i16);
            }
            for addr in &v6 {
                let next = a.label();
                for (i, r) in regs.iter().enumerate() {
                    let w = word(addr[4 * i..4 * i + 4].try_into().expect("4 bytes"));
                    if i < 3 {
                        a.jump(BPF_JMP32_JNE_IMM, *r, 0, w, next);
                    } else {
                        a.jump(BPF_JMP32_JEQ_IMM, *r, 0, w, redirect);
                    }
                }
                a.bind(next);
            }
        }
        a.ja(pass);
    }

    // return bpf_redirect_map(&xskmap, ctx->rx_queue_index, XDP_PASS)
    a.bind(redirect);
    a.ldx_w(2, 6, MD_RX_QUEUE_INDEX);
    a.emit(BPF_LD_IMM64, 1, BPF_PSEUDO_MAP_FD, 0, map_fd);
    a.emit(0, 0, 0, 0, 0);
    a.mov_imm(3, XDP_PASS);
    a.emit(BPF_CALL, 0, 0, 0, HELPER_REDIRECT_MAP);
    a.emit(BPF_EXIT, 0, 0, 0, 0);

    // Raw mode redirects everything: no path passes, and the verifier refuses code that
    // cannot be reached ("unreachable insn"), so the pass block exists only with steering.
    if !steer.is_empty() {
        a.bind(pass);
        a.mov_imm(0, XDP_PASS);
        a.emit(BPF_EXIT, 0, 0, 0, 0);
    }
    a.finish()
}

/// `r4 = data + n; if r4 > data_end goto fail` (the verifier's packet bounds proof).
fn need(a: &mut Asm, n: i32, fail: Label) {
    a.mov_reg(4, 2);
    a.add_imm(4, n);
    a.jump(BPF_JGT_REG, 4, 3, 0, fail);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Interpreter for the subset `generate` emits. Returns XDP_PASS or XDP_REDIRECT and
    /// fails on any out-of-bounds packet access (what the verifier would reject at load).
    fn run(prog: &[Insn], pkt: &[u8], queue: u32) -> i32 {
        const DATA: u64 = 0x1000;
        let end = DATA + pkt.len() as u64;
        let mut r = [0u64; 11];
        r[1] = 0xC7C; // ctx marker
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            let (d, s) = (i.dst() as usize, i.src() as usize);
            pc += 1;
            let target = (pc as i64 + i64::from(i.off)) as usize;
            match i.code {
                BPF_MOV64_REG => r[d] = r[s],
                BPF_MOV64_IMM => r[d] = i.imm as i64 as u64,
                BPF_ADD64_IMM => r[d] = r[d].wrapping_add(i.imm as i64 as u64),
                BPF_LDX_MEM_W | BPF_LDX_MEM_H => {
                    let size = if i.code == BPF_LDX_MEM_W { 4 } else { 2 };
                    let addr = r[s].wrapping_add(i.off as i64 as u64);
                    r[d] = if r[s] == 0xC7C {
                        match i.off {
                            MD_DATA => DATA,
                            MD_DATA_END => end,
                            MD_RX_QUEUE_INDEX => u64::from(queue),
                            o => panic!("ctx offset {o}"),
                        }
                    } else {
                        assert!(
                            addr >= DATA && addr + size <= end,
                            "packet read out of bounds"
                        );
                        let o = (addr - DATA) as usize;
                        let mut b = [0u8; 4];
                        b[..size as usize].copy_from_slice(&pkt[o..o + size as usize]);
                        u64::from(u32::from_le_bytes(b))
                    };
                }
                BPF_JA => pc = target,
                BPF_JGT_REG => {
                    if r[d] > r[s] {
                        pc = target
                    }
                }
                BPF_JMP32_JEQ_IMM => {
                    if r[d] as u32 == i.imm as u32 {
                        pc = target
                    }
                }
                BPF_JMP32_JNE_IMM => {
                    if r[d] as u32 != i.imm as u32 {
                        pc = target
                    }
                }
                BPF_LD_IMM64 => {
                    r[d] = i.imm as u32 as u64;
                    pc += 1;
                }
                BPF_CALL => {
                    assert_eq!(i.imm, HELPER_REDIRECT_MAP);
                    assert_eq!((r[1], r[2], r[3]), (77, u64::from(queue), XDP_PASS as u64));
                    r[0] = XDP_REDIRECT as u64;
                }
                BPF_EXIT => return r[0] as i32,
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    fn eth(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 9]);
        f.extend_from_slice(&ty.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn arp(target: [u8; 4]) -> Vec<u8> {
        let mut p = vec![
            0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 9, 198, 18, 0, 1, 0, 0, 0, 0, 0, 0,
        ];
        p.extend_from_slice(&target);
        eth(0x0806, &p)
    }

    fn ipv4(dst: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 20, 0, 0, 0, 0, 64, 1, 0, 0, 198, 18, 0, 1];
        p.extend_from_slice(&dst);
        eth(0x0800, &p)
    }

    fn ipv6(dst: Ipv6Addr) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 0, 58, 255];
        p.extend_from_slice(&"2001:2::1".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&dst.octets());
        eth(0x86dd, &p)
    }

    const P: i32 = XDP_PASS;
    const R: i32 = XDP_REDIRECT;

    fn steer() -> Vec<IpAddr> {
        vec![
            "198.18.7.2".parse().unwrap(),
            "198.18.7.200".parse().unwrap(), // high byte >= 128: checks JMP32 immediates
            "2001:2:0:7::2".parse().unwrap(),
        ]
    }

    #[test]
    fn structure_is_sound() {
        let p = generate(&steer(), 77).unwrap();
        // 3 prologue + (3+1+3+1) eth + (3+1+2+1) arp + (3+1+2+1) ipv4
        // + (3+4+2*4+1) ipv6 (address + solicited-node) + 6 redirect + 2 pass
        assert_eq!(p.len(), 3 + 8 + 7 + 7 + 16 + 6 + 2);
        for (i, insn) in p.iter().enumerate() {
            if matches!(insn.code & 0x07, 0x05 | 0x06) && !matches!(insn.code, BPF_CALL | BPF_EXIT)
            {
                let t = i as i64 + 1 + i64::from(insn.off);
                assert!(t > i as i64 && (t as usize) < p.len(), "jump {i} -> {t}");
            }
        }
        assert_eq!(p.last().unwrap().code, BPF_EXIT);
        let ld = p.iter().position(|i| i.code == BPF_LD_IMM64).unwrap();
        assert_eq!(
            (p[ld].src(), p[ld].imm, p[ld + 1]),
            (BPF_PSEUDO_MAP_FD, 77, Insn::default())
        );
        // Raw mode: 3 + ja + 6, and no pass block.
        let raw = generate(&[], 77).unwrap();
        assert_eq!(raw.len(), 10);
        // The verifier rejects unreachable instructions: every one must be reachable.
        for prog in [&p, &raw] {
            let mut seen = vec![false; prog.len()];
            let mut todo = vec![0usize];
            while let Some(i) = todo.pop() {
                if i >= prog.len() || seen[i] {
                    continue;
                }
                seen[i] = true;
                let insn = prog[i];
                let jump = matches!(insn.code & 0x07, 0x05 | 0x06)
                    && !matches!(insn.code, BPF_CALL | BPF_EXIT);
                if insn.code == BPF_EXIT {
                    continue;
                } else if insn.code == BPF_LD_IMM64 {
                    seen[i + 1] = true;
                    todo.push(i + 2);
                } else if jump {
                    todo.push((i as i64 + 1 + i64::from(insn.off)) as usize);
                    if insn.code != BPF_JA {
                        todo.push(i + 1); // conditional: falls through too
                    }
                } else {
                    todo.push(i + 1);
                }
            }
            let dead: Vec<usize> = (0..prog.len()).filter(|i| !seen[*i]).collect();
            assert!(dead.is_empty(), "unreachable instructions {dead:?}");
        }
        // Many addresses still fit the i16 jump range.
        let many: Vec<IpAddr> = (0..64u8)
            .flat_map(|i| {
                [
                    IpAddr::from([198, 18, 1, i]),
                    IpAddr::from([0x2001, 2, 0, 0, 0, 0, 0, u16::from(i)]),
                ]
            })
            .collect();
        assert!(generate(&many, 3).unwrap().len() < 1000);
    }

    #[test]
    fn steers_only_the_stacks_frames() {
        let p = generate(&steer(), 77).unwrap();
        let me6: Ipv6Addr = "2001:2:0:7::2".parse().unwrap();
        let cases: Vec<(&str, Vec<u8>, i32)> = vec![
            ("arp for .2", arp([198, 18, 7, 2]), R),
            ("arp for .200", arp([198, 18, 7, 200]), R),
            ("arp for the kernel's .3", arp([198, 18, 7, 3]), P),
            ("ipv4 to .2", ipv4([198, 18, 7, 2]), R),
            ("ipv4 to .200", ipv4([198, 18, 7, 200]), R),
            ("ipv4 to .3", ipv4([198, 18, 7, 3]), P),
            ("ipv6 to me", ipv6(me6), R),
            (
                "ipv6 solicited node",
                ipv6("ff02::1:ff00:2".parse().unwrap()),
                R,
            ),
            (
                "ipv6 other solicited",
                ipv6("ff02::1:ff00:3".parse().unwrap()),
                P,
            ),
            ("ipv6 other", ipv6("2001:2:0:7::3".parse().unwrap()), P),
            ("ipv6 all nodes", ipv6("ff02::1".parse().unwrap()), P),
            ("other ethertype", eth(0x88cc, &[0; 40]), P),
            ("runt", vec![0; 10], P),
            ("empty", vec![], P),
        ];
        for (what, pkt, want) in &cases {
            assert_eq!(run(&p, pkt, 0), *want, "{what}");
            // Truncated versions never read out of bounds and never redirect.
            for cut in 0..pkt.len().min(54) {
                let r = run(&p, &pkt[..cut], 0);
                if r == R {
                    assert!(cut >= 34, "{what} cut to {cut} redirected");
                }
            }
        }
        assert_eq!(
            run(&p, &arp([198, 18, 7, 2]), 3),
            R,
            "queue index is passed"
        );
        let raw = generate(&[], 77).unwrap();
        assert_eq!(run(&raw, &[], 0), R);
        let v4only = generate(&["198.18.7.2".parse().unwrap()], 77).unwrap();
        assert_eq!(run(&v4only, &ipv6(me6), 0), P);
        assert_eq!(run(&v4only, &arp([198, 18, 7, 2]), 0), R);
    }

    #[test]
    fn solicited_node_group() {
        let a: Ipv6Addr = "2001:2::abcd:1234:5678".parse().unwrap();
        assert_eq!(
            solicited_node(&a),
            "ff02::1:ff34:5678".parse::<Ipv6Addr>().unwrap()
        );
    }
}

//! RESP2 request parsing (multibulk and inline, resumable across segments, bounded) and
//! reply encoding. The parser follows redis 7.0's `processMultibulkBuffer` and
//! `processInlineBuffer`, including their error texts, so clients see the same replies.

/// Longest line (inline request, `*N` or `$N` header) before it is a protocol error, as
/// redis's `PROTO_INLINE_MAX_SIZE`.
pub const INLINE_MAX: usize = 64 * 1024;

/// Input bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest bulk string (`$N`) accepted; redis's `proto-max-bulk-len` is 512 MiB.
    pub max_bulk: usize,
    /// Most arguments in one command (`*N`); redis allows up to INT_MAX.
    pub max_args: usize,
    /// Most bytes one command may occupy while it is buffered (redis's
    /// `client-query-buffer-limit`, 1 GiB there).
    pub max_query: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk: 16 << 20,
            max_args: 1 << 20,
            max_query: 32 << 20,
        }
    }
}

/// Where the parser stopped inside the command at the start of the buffer; kept across
/// `on_data` calls so a large command is never scanned twice. Offsets are relative to the
/// command's first byte.
#[derive(Debug, Default)]
pub struct Partial {
    /// Multibulk: arguments still expected (`None`: the `*N` line is not read yet).
    remaining: Option<usize>,
    /// Length of the bulk whose `$N` line was read and whose body is not complete.
    bulk: Option<usize>,
    /// Next byte to look at.
    pos: usize,
    /// Argument ranges of a multibulk command.
    pub args: Vec<(usize, usize)>,
}

impl Partial {
    /// Ready for the next command (keeps the argument vector's allocation, up to a point).
    pub fn reset(&mut self) {
        self.remaining = None;
        self.bulk = None;
        self.pos = 0;
        self.args.clear();
        if self.args.capacity() > 1024 {
            self.args.shrink_to(64);
        }
    }
    /// True while nothing of a command has been parsed.
    pub fn is_fresh(&self) -> bool {
        self.remaining.is_none() && self.pos == 0
    }
}

/// What the parser found at the start of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A multibulk command of this many bytes; its arguments are in `Partial::args`.
    Multi(usize),
    /// An inline command of this many bytes (line end included), already split.
    Inline(usize, Vec<Vec<u8>>),
    /// This many bytes hold nothing to run (`*0`, `*-1`, a blank line).
    Skip(usize),
    /// The command is not complete; `Partial` remembers the progress.
    Incomplete,
    /// A protocol error (the text after `-ERR `); the connection must close after it.
    Error(String),
}

/// Parse one command at the start of `buf` (which starts at the command's first byte,
/// `p` holding the progress of earlier calls on the same command).
pub fn parse(buf: &[u8], p: &mut Partial, lim: &Limits) -> Parsed {
    if buf.is_empty() {
        return Parsed::Incomplete;
    }
    if buf[0] != b'*' {
        return parse_inline(buf, p);
    }
    loop {
        let Some(remaining) = p.remaining else {
            // The `*N` line: redis looks for '\r' and needs one byte after it.
            let Some(cr) = find(buf, p.pos, b'\r') else {
                if buf.len() > INLINE_MAX {
                    return Parsed::Error("Protocol error: too big mbulk count string".into());
                }
                p.pos = buf.len();
                return Parsed::Incomplete;
            };
            if cr + 2 > buf.len() {
                p.pos = cr;
                return Parsed::Incomplete;
            }
            let n = match string2ll(&buf[1..cr]) {
                Some(n) if n <= i32::MAX as i64 && n <= lim.max_args as i64 => n,
                _ => return Parsed::Error("Protocol error: invalid multibulk length".into()),
            };
            p.pos = cr + 2;
            if n <= 0 {
                return Parsed::Skip(p.pos);
            }
            p.remaining = Some(n as usize);
            // Do not trust the count for the allocation.
            p.args.reserve((n as usize).min(64));
            continue;
        };
        if remaining == 0 {
            return Parsed::Multi(p.pos);
        }
        let len = match p.bulk {
            Some(len) => len,
            None => {
                let Some(cr) = find(buf, p.pos, b'\r') else {
                    if buf.len() - p.pos > INLINE_MAX {
                        return Parsed::Error("Protocol error: too big bulk count string".into());
                    }
                    return Parsed::Incomplete;
                };
                if cr + 2 > buf.len() {
                    return Parsed::Incomplete;
                }
                if buf[p.pos] != b'$' {
                    let got = match buf[p.pos] {
                        b'\r' | b'\n' => ' ',
                        b => b as char,
                    };
                    return Parsed::Error(format!("Protocol error: expected '$', got '{got}'"));
                }
                let len = match string2ll(&buf[p.pos + 1..cr]) {
                    Some(n) if n >= 0 && n as u64 <= lim.max_bulk as u64 => n as usize,
                    _ => return Parsed::Error("Protocol error: invalid bulk length".into()),
                };
                p.pos = cr + 2;
                p.bulk = Some(len);
                len
            }
        };
        // Like redis, the two bytes after the body are skipped, not checked.
        if buf.len() - p.pos < len + 2 {
            return Parsed::Incomplete;
        }
        p.args.push((p.pos, p.pos + len));
        p.pos += len + 2;
        p.bulk = None;
        p.remaining = Some(remaining - 1);
    }
}

fn find(buf: &[u8], from: usize, b: u8) -> Option<usize> {
    buf.get(from..)?
        .iter()
        .position(|&x| x == b)
        .map(|i| i + from)
}

/// An inline command: one line, split like redis's `sdssplitargs`.
fn parse_inline(buf: &[u8], p: &mut Partial) -> Parsed {
    let Some(nl) = find(buf, p.pos, b'\n') else {
        if buf.len() > INLINE_MAX {
            return Parsed::Error("Protocol error: too big inline request".into());
        }
        p.pos = buf.len();
        return Parsed::Incomplete;
    };
    let line_end = if nl > 0 && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    match split_args(&buf[..line_end]) {
        None => Parsed::Error("Protocol error: unbalanced quotes in request".into()),
        Some(args) if args.is_empty() => Parsed::Skip(nl + 1),
        Some(args) => Parsed::Inline(nl + 1, args),
    }
}

fn is_hex(b: u8) -> bool {
    b.is_ascii_hexdigit()
}

fn hex_val(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

/// redis's `sdssplitargs`: blanks separate arguments; "double quotes" take \n \r \t \b \a
/// \xHH and \<c> escapes, 'single quotes' only \'; a closing quote must be followed by a
/// blank. None: unbalanced quotes.
pub fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut args = Vec::new();
    let mut i = 0;
    let n = line.len();
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    loop {
        while i < n && is_space(line[i]) {
            i += 1;
        }
        if i >= n {
            return Some(args);
        }
        let mut cur = Vec::new();
        let (mut inq, mut insq) = (false, false);
        loop {
            if inq {
                if i >= n {
                    return None;
                }
                if line[i] == b'\\'
                    && i + 3 < n
                    && line[i + 1] == b'x'
                    && is_hex(line[i + 2])
                    && is_hex(line[i + 3])
                {
                    cur.push(hex_val(line[i + 2]) * 16 + hex_val(line[i + 3]));
                    i += 3;
                } else if line[i] == b'\\' && i + 1 < n {
                    i += 1;
                    cur.push(match line[i] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        c => c,
                    });
                } else if line[i] == b'"' {
                    if i + 1 < n && !is_space(line[i + 1]) {
                        return None;
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(line[i]);
                }
            } else if insq {
                if i >= n {
                    return None;
                }
                if line[i] == b'\\' && i + 1 < n && line[i + 1] == b'\'' {
                    i += 1;
                    cur.push(b'\'');
                } else if line[i] == b'\'' {
                    if i + 1 < n && !is_space(line[i + 1]) {
                        return None;
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(line[i]);
                }
            } else {
                if i >= n {
                    break;
                }
                match line[i] {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => break,
                    b'"' => inq = true,
                    b'\'' => insq = true,
                    c => cur.push(c),
                }
            }
            i += 1;
        }
        args.push(cur);
    }
}

/// redis's `string2ll`: an optional '-', no '+', no leading zeros, no blanks, no overflow.
pub fn string2ll(s: &[u8]) -> Option<i64> {
    if s == b"0" {
        return Some(0);
    }
    let (neg, d) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(_) => (false, s),
        None => return None,
    };
    if !matches!(d.first(), Some(b'1'..=b'9')) {
        return None;
    }
    let mut v: u64 = 0;
    for &b in d {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    if neg {
        if v > i64::MAX as u64 + 1 {
            None
        } else {
            Some((v as i64).wrapping_neg())
        }
    } else {
        i64::try_from(v).ok()
    }
}

// ---------------------------------------------------------------- replies

pub fn ok(out: &mut Vec<u8>) {
    out.extend_from_slice(b"+OK\r\n");
}

pub fn simple(out: &mut Vec<u8>, s: &str) {
    out.push(b'+');
    out.extend_from_slice(s.as_bytes());
    out.extend_from_slice(b"\r\n");
}

pub fn nil(out: &mut Vec<u8>) {
    out.extend_from_slice(b"$-1\r\n");
}

pub fn int(out: &mut Vec<u8>, v: i64) {
    out.push(b':');
    push_num(out, v);
    out.extend_from_slice(b"\r\n");
}

pub fn bulk(out: &mut Vec<u8>, v: &[u8]) {
    out.push(b'$');
    push_num(out, v.len() as i64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(v);
    out.extend_from_slice(b"\r\n");
}

pub fn array(out: &mut Vec<u8>, n: usize) {
    out.push(b'*');
    push_num(out, n as i64);
    out.extend_from_slice(b"\r\n");
}

/// `-ERR msg`, with CR and LF in `msg` turned into spaces (as redis does: arguments
/// quoted in errors come from the client).
pub fn err(out: &mut Vec<u8>, msg: &[u8]) {
    out.extend_from_slice(b"-ERR ");
    out.extend(
        msg.iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

fn push_num(out: &mut Vec<u8>, v: i64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut u = v.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (u % 10) as u8;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    if v < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(buf: &[u8]) -> (Parsed, Vec<Vec<u8>>) {
        let mut p = Partial::default();
        let r = parse(buf, &mut p, &Limits::default());
        let args = p.args.iter().map(|&(s, e)| buf[s..e].to_vec()).collect();
        (r, args)
    }

    #[test]
    fn multibulk_whole_and_split_anywhere() {
        let cmd = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n";
        let (r, args) = one(cmd);
        assert_eq!(r, Parsed::Multi(cmd.len()));
        assert_eq!(
            args,
            vec![b"SET".to_vec(), b"k".to_vec(), b"hello".to_vec()]
        );
        // Fed one byte more at a time, with the same Partial: completes exactly at the end.
        let mut p = Partial::default();
        for n in 0..cmd.len() {
            assert_eq!(
                parse(&cmd[..n], &mut p, &Limits::default()),
                Parsed::Incomplete
            );
        }
        assert_eq!(
            parse(cmd, &mut p, &Limits::default()),
            Parsed::Multi(cmd.len())
        );
        assert_eq!(p.args.len(), 3);
    }

    #[test]
    fn empty_and_inline() {
        assert_eq!(one(b"*0\r\n").0, Parsed::Skip(4));
        assert_eq!(one(b"*-1\r\n").0, Parsed::Skip(5));
        assert_eq!(one(b"\r\n").0, Parsed::Skip(2));
        assert_eq!(
            one(b"set a \"b c\\x41\\n\"\r\n").0,
            Parsed::Inline(19, vec![b"set".to_vec(), b"a".to_vec(), b"b cA\n".to_vec()])
        );
        assert_eq!(one(b"ping\n").0, Parsed::Inline(5, vec![b"ping".to_vec()]));
        assert_eq!(one(b"ping").0, Parsed::Incomplete);
        assert!(matches!(one(b"set \"a\r\n").0, Parsed::Error(_)));
        assert!(matches!(one(b"set 'a'b\r\n").0, Parsed::Error(_)));
    }

    #[test]
    fn errors() {
        let e = |s: &str| Parsed::Error(s.to_string());
        assert_eq!(
            one(b"*abc\r\n").0,
            e("Protocol error: invalid multibulk length")
        );
        assert_eq!(
            one(b"*2000000\r\n").0,
            e("Protocol error: invalid multibulk length")
        );
        assert_eq!(
            one(b"*1\r\nfoo\r\n").0,
            e("Protocol error: expected '$', got 'f'")
        );
        assert_eq!(
            one(b"*1\r\n$-1\r\n").0,
            e("Protocol error: invalid bulk length")
        );
        assert_eq!(
            one(b"*1\r\n$99999999999\r\n").0,
            e("Protocol error: invalid bulk length")
        );
        let long = vec![b'1'; INLINE_MAX + 10];
        let mut b = b"*".to_vec();
        b.extend_from_slice(&long);
        assert_eq!(one(&b).0, e("Protocol error: too big mbulk count string"));
        let mut b = b"*1\r\n$".to_vec();
        b.extend_from_slice(&long);
        assert_eq!(one(&b).0, e("Protocol error: too big bulk count string"));
        assert_eq!(
            one(&vec![b'a'; INLINE_MAX + 1]).0,
            e("Protocol error: too big inline request")
        );
    }

    #[test]
    fn numbers() {
        for (s, v) in [
            ("0", Some(0)),
            ("-1", Some(-1)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("01", None),
            ("+1", None),
            ("-0", None),
            ("", None),
            ("-", None),
            (" 1", None),
            ("1a", None),
        ] {
            assert_eq!(string2ll(s.as_bytes()), v, "{s}");
        }
        let mut o = Vec::new();
        int(&mut o, i64::MIN);
        assert_eq!(o, b":-9223372036854775808\r\n");
        o.clear();
        err(&mut o, b"a\r\nb");
        assert_eq!(o, b"-ERR a  b\r\n");
    }
}

//! Command execution: one complete command in, its reply appended to the connection's
//! output. Semantics and error texts follow redis 7.0 (strings only).

use super::resp::{self, string2ll};
use super::Kv;

/// What the connection does after a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Go,
    /// Reply, then close (QUIT).
    Close,
}

const NOT_INT: &[u8] = b"value is not an integer or out of range";
const SYNTAX: &[u8] = b"syntax error";

/// redis's `shared.oomerr`, whole (its code is OOM, not ERR).
pub const OOM: &[u8] = b"-OOM command not allowed when used memory > 'maxmemory'.\r\n";

/// (name, arity as in redis's command table: n exact, -n at least n; whether redis marks
/// it `denyoom`: refused while the memory used is over `maxmemory`, whether or not this
/// call would grow it).
const COMMANDS: &[(&str, i32, bool)] = &[
    ("get", 2, false),
    ("set", -3, true),
    ("ping", -1, false),
    ("echo", 2, false),
    ("del", -2, false),
    ("unlink", -2, false),
    ("exists", -2, false),
    ("incr", 2, true),
    ("decr", 2, true),
    ("incrby", 3, true),
    ("decrby", 3, true),
    ("mget", -2, false),
    ("mset", -3, true),
    ("setnx", 3, true),
    ("strlen", 2, false),
    ("append", 3, true),
    ("expire", -3, false),
    ("pexpire", -3, false),
    ("ttl", 2, false),
    ("pttl", 2, false),
    ("persist", 2, false),
    ("flushall", -1, false),
    ("flushdb", -1, false),
    ("dbsize", 1, false),
    ("info", -1, false),
    ("command", -1, false),
    ("config", -2, false),
    ("select", 2, false),
    ("quit", -1, false),
];

/// CONFIG GET answers (redis-benchmark asks for `save` and `appendonly`); `maxmemory` is
/// added from the setting.
const CONFIG: &[(&str, &str)] = &[
    ("appendonly", "no"),
    ("save", ""),
    ("databases", "1"),
    ("maxmemory-policy", "noeviction"),
];

/// Bytes up to the first NUL, as C's `%s` prints them in redis's error texts.
fn cstr(b: &[u8]) -> &[u8] {
    match b.iter().position(|&x| x == 0) {
        Some(i) => &b[..i],
        None => b,
    }
}

/// Glob match (`*`, `?`, `[...]` not supported) for CONFIG GET, case-insensitive.
fn glob(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&p[1..], s) || (!s.is_empty() && glob(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) => glob(&p[1..], &s[1..]),
        _ => false,
    }
}

impl Kv {
    fn error(&mut self, out: &mut Vec<u8>, msg: &[u8]) {
        self.stats.errors += 1;
        resp::err(out, msg);
    }

    fn arity_error(&mut self, out: &mut Vec<u8>, name: &str) {
        let msg = format!("wrong number of arguments for '{name}' command");
        self.error(out, msg.as_bytes());
    }

    /// Run one command (`argv` non-empty).
    pub(super) fn exec(&mut self, argv: &[&[u8]], out: &mut Vec<u8>, now: i64) -> Flow {
        self.stats.commands += 1;
        let Some(&(name, arity, denyoom)) = COMMANDS
            .iter()
            .find(|(n, _, _)| n.as_bytes().eq_ignore_ascii_case(argv[0]))
        else {
            // redis: "unknown command '%.128s', with args beginning with: " then
            // "'%.*s' " per argument while the list is under 128 bytes.
            self.stats.unknown += 1;
            let mut msg = b"unknown command '".to_vec();
            let n = cstr(argv[0]);
            msg.extend_from_slice(&n[..n.len().min(128)]);
            msg.extend_from_slice(b"', with args beginning with: ");
            let mut list: Vec<u8> = Vec::new();
            for a in &argv[1..] {
                if list.len() >= 128 {
                    break;
                }
                let a = cstr(a);
                let room = 128 - list.len();
                list.push(b'\'');
                list.extend_from_slice(&a[..a.len().min(room)]);
                list.extend_from_slice(b"' ");
            }
            msg.extend_from_slice(&list);
            self.error(out, &msg);
            return Flow::Go;
        };
        let argc = argv.len() as i32;
        if (arity > 0 && argc != arity) || (arity < 0 && argc < -arity) {
            self.arity_error(out, name);
            return Flow::Go;
        }
        // As redis's processCommand: after the name and arity checks, before the command
        // parses its options; `used > maxmemory` (strictly), noeviction policy.
        if denyoom && self.maxmemory > 0 && self.store.used() > self.maxmemory {
            self.stats.errors += 1;
            self.stats.oom_refused += 1;
            out.extend_from_slice(OOM);
            return Flow::Go;
        }
        let st = &mut self.store;
        match name {
            "ping" => match argv.len() {
                1 => resp::simple(out, "PONG"),
                2 => resp::bulk(out, argv[1]),
                _ => self.arity_error(out, name),
            },
            "echo" => resp::bulk(out, argv[1]),
            "get" => match st.get(argv[1], now) {
                Some(v) => {
                    resp::bulk(out, v);
                    self.stats.hits += 1;
                }
                None => {
                    resp::nil(out);
                    self.stats.misses += 1;
                }
            },
            "set" => self.set(argv, out, now),
            "setnx" => {
                if st.contains(argv[1], now) {
                    resp::int(out, 0);
                } else {
                    st.set(argv[1], argv[2].to_vec(), None, false);
                    resp::int(out, 1);
                }
            }
            "del" | "unlink" => {
                let n = argv[1..].iter().filter(|k| st.del(k, now)).count();
                resp::int(out, n as i64);
            }
            "exists" => {
                let n = argv[1..].iter().filter(|k| st.contains(k, now)).count();
                resp::int(out, n as i64);
            }
            "incr" => self.incr_by(argv[1], 1, out, now),
            "decr" => self.incr_by(argv[1], -1, out, now),
            "incrby" | "decrby" => match string2ll(argv[2]) {
                None => self.error(out, NOT_INT),
                Some(i64::MIN) if name == "decrby" => self.error(out, b"decrement would overflow"),
                Some(by) => {
                    let by = if name == "decrby" { -by } else { by };
                    self.incr_by(argv[1], by, out, now)
                }
            },
            "mget" => {
                resp::array(out, argv.len() - 1);
                for k in &argv[1..] {
                    match st.get(k, now) {
                        Some(v) => resp::bulk(out, v),
                        None => resp::nil(out),
                    }
                }
            }
            "mset" => {
                if argv.len().is_multiple_of(2) {
                    self.arity_error(out, name);
                } else {
                    for kv in argv[1..].chunks_exact(2) {
                        st.set(kv[0], kv[1].to_vec(), None, false);
                    }
                    resp::ok(out);
                }
            }
            "strlen" => {
                let n = st.get(argv[1], now).map_or(0, |v| v.len());
                resp::int(out, n as i64);
            }
            "append" => {
                let total = st.append(argv[1], argv[2], now);
                resp::int(out, total as i64);
            }
            "expire" | "pexpire" => self.expire(argv, name, out, now),
            "ttl" | "pttl" => match st.deadline(argv[1], now) {
                Err(()) => resp::int(out, -2),
                Ok(None) => resp::int(out, -1),
                Ok(Some(at)) => {
                    let ms = (at - now).max(0);
                    resp::int(out, if name == "ttl" { (ms + 500) / 1000 } else { ms });
                }
            },
            "persist" => {
                let had = matches!(st.deadline(argv[1], now), Ok(Some(_)));
                if had {
                    st.set_deadline(argv[1], None, now);
                }
                resp::int(out, had as i64);
            }
            "flushall" | "flushdb" => {
                if argv.len() > 2
                    || (argv.len() == 2
                        && !argv[1].eq_ignore_ascii_case(b"sync")
                        && !argv[1].eq_ignore_ascii_case(b"async"))
                {
                    self.error(out, SYNTAX);
                } else {
                    st.clear();
                    resp::ok(out);
                }
            }
            "dbsize" => resp::int(out, st.len() as i64),
            "select" => match string2ll(argv[1]) {
                None => self.error(out, NOT_INT),
                Some(0) => resp::ok(out),
                Some(_) => self.error(out, b"DB index is out of range"),
            },
            "info" => {
                let s = self.info();
                resp::bulk(out, s.as_bytes());
            }
            "command" => self.command(argv, out),
            "config" => self.config(argv, out),
            "quit" => {
                resp::ok(out);
                return Flow::Close;
            }
            _ => unreachable!("every name in COMMANDS has an arm"),
        }
        Flow::Go
    }

    fn set(&mut self, argv: &[&[u8]], out: &mut Vec<u8>, now: i64) {
        const NX: u8 = 1;
        const XX: u8 = 2;
        const GET: u8 = 4;
        const KEEPTTL: u8 = 8;
        const EX: u8 = 16;
        const PX: u8 = 32;
        let mut flags = 0u8;
        let mut expire: Option<&[u8]> = None;
        // redis's parseExtendedStringArgumentsOrReply (EXAT/PXAT are not supported here:
        // the store's clock is the engine's, not the wall clock).
        let mut j = 3;
        while j < argv.len() {
            let opt = argv[j];
            let has_next = j + 1 < argv.len();
            let is = |s: &[u8]| opt.eq_ignore_ascii_case(s);
            if is(b"nx") && flags & XX == 0 {
                flags |= NX;
            } else if is(b"xx") && flags & NX == 0 {
                flags |= XX;
            } else if is(b"get") {
                flags |= GET;
            } else if is(b"keepttl") && flags & (EX | PX) == 0 {
                flags |= KEEPTTL;
            } else if is(b"ex") && flags & (KEEPTTL | PX) == 0 && has_next {
                flags |= EX;
                expire = Some(argv[j + 1]);
                j += 1;
            } else if is(b"px") && flags & (KEEPTTL | EX) == 0 && has_next {
                flags |= PX;
                expire = Some(argv[j + 1]);
                j += 1;
            } else {
                self.error(out, SYNTAX);
                return;
            }
            j += 1;
        }
        let mut deadline = None;
        if let Some(e) = expire {
            let Some(v) = string2ll(e) else {
                self.error(out, NOT_INT);
                return;
            };
            let ms = if flags & EX != 0 {
                v.checked_mul(1000)
            } else {
                Some(v)
            };
            match ms
                .filter(|&ms| v > 0 && ms > 0)
                .and_then(|ms| ms.checked_add(now))
            {
                Some(at) => deadline = Some(at),
                None => {
                    self.error(out, b"invalid expire time in 'set' command");
                    return;
                }
            }
        }
        let found = if flags & GET != 0 {
            match self.store.get(argv[1], now) {
                Some(v) => {
                    resp::bulk(out, v);
                    true
                }
                None => {
                    resp::nil(out);
                    false
                }
            }
        } else {
            self.store.contains(argv[1], now)
        };
        if (flags & NX != 0 && found) || (flags & XX != 0 && !found) {
            if flags & GET == 0 {
                resp::nil(out);
            }
            return;
        }
        self.store
            .set(argv[1], argv[2].to_vec(), deadline, flags & KEEPTTL != 0);
        if flags & GET == 0 {
            resp::ok(out);
        }
    }

    fn incr_by(&mut self, key: &[u8], by: i64, out: &mut Vec<u8>, now: i64) {
        let (cur, exists) = match self.store.get(key, now) {
            None => (0, false),
            Some(v) => match string2ll(v) {
                Some(n) => (n, true),
                None => return self.error(out, NOT_INT),
            },
        };
        let Some(n) = cur.checked_add(by) else {
            return self.error(out, b"increment or decrement would overflow");
        };
        let mut digits = Vec::with_capacity(20);
        resp::int(&mut digits, n);
        let digits = digits[1..digits.len() - 2].to_vec();
        // An existing key keeps its time to live; a new one has none.
        self.store.set(key, digits, None, exists);
        resp::int(out, n);
    }

    fn expire(&mut self, argv: &[&[u8]], name: &str, out: &mut Vec<u8>, now: i64) {
        const NX: u8 = 1;
        const XX: u8 = 2;
        const GT: u8 = 4;
        const LT: u8 = 8;
        let mut flags = 0u8;
        for opt in &argv[3..] {
            let f = [(&b"nx"[..], NX), (b"xx", XX), (b"gt", GT), (b"lt", LT)]
                .iter()
                .find(|(s, _)| opt.eq_ignore_ascii_case(s))
                .map(|&(_, f)| f);
            match f {
                Some(f) => flags |= f,
                None => {
                    let mut msg = b"Unsupported option ".to_vec();
                    msg.extend_from_slice(cstr(opt));
                    return self.error(out, &msg);
                }
            }
        }
        if flags & NX != 0 && flags & (XX | GT | LT) != 0 {
            return self.error(
                out,
                b"NX and XX, GT or LT options at the same time are not compatible",
            );
        }
        if flags & GT != 0 && flags & LT != 0 {
            return self.error(
                out,
                b"GT and LT options at the same time are not compatible",
            );
        }
        let Some(v) = string2ll(argv[2]) else {
            return self.error(out, NOT_INT);
        };
        let at = if name == "expire" {
            v.checked_mul(1000)
        } else {
            Some(v)
        }
        .and_then(|ms| ms.checked_add(now));
        let Some(at) = at else {
            let msg = format!("invalid expire time in '{name}' command");
            return self.error(out, msg.as_bytes());
        };
        let cur = match self.store.deadline(argv[1], now) {
            Err(()) => return resp::int(out, 0),
            Ok(d) => d,
        };
        let refuse = (flags & NX != 0 && cur.is_some())
            || (flags & XX != 0 && cur.is_none())
            || (flags & GT != 0 && cur.is_none_or(|c| at <= c))
            || (flags & LT != 0 && cur.is_some_and(|c| at >= c));
        if refuse {
            return resp::int(out, 0);
        }
        if at <= now {
            self.store.del(argv[1], now);
        } else {
            self.store.set_deadline(argv[1], Some(at), now);
        }
        resp::int(out, 1);
    }

    fn command(&mut self, argv: &[&[u8]], out: &mut Vec<u8>) {
        // Enough for redis-cli and redis-benchmark: no command docs, no key specs.
        let Some(sub) = argv.get(1) else {
            return resp::array(out, 0);
        };
        if sub.eq_ignore_ascii_case(b"count") {
            resp::int(out, COMMANDS.len() as i64);
        } else if sub.eq_ignore_ascii_case(b"docs") || sub.eq_ignore_ascii_case(b"list") {
            resp::array(out, 0);
        } else if sub.eq_ignore_ascii_case(b"info") {
            resp::array(out, argv.len() - 2);
            for _ in 2..argv.len() {
                resp::nil(out);
            }
        } else {
            let mut msg = b"unknown subcommand '".to_vec();
            let s = cstr(sub);
            msg.extend_from_slice(&s[..s.len().min(128)]);
            msg.extend_from_slice(b"'. Try COMMAND HELP.");
            self.error(out, &msg);
        }
    }

    fn config(&mut self, argv: &[&[u8]], out: &mut Vec<u8>) {
        let sub = argv[1];
        if sub.eq_ignore_ascii_case(b"get") {
            if argv.len() < 3 {
                return self.arity_error(out, "config|get");
            }
            let maxmemory = self.maxmemory.to_string();
            let hits: Vec<(&str, &str)> = (CONFIG.iter().copied())
                .chain([("maxmemory", maxmemory.as_str())])
                .filter(|(k, _)| argv[2..].iter().any(|p| glob(p, k.as_bytes())))
                .collect();
            resp::array(out, hits.len() * 2);
            for (k, v) in hits {
                resp::bulk(out, k.as_bytes());
                resp::bulk(out, v.as_bytes());
            }
        } else if sub.eq_ignore_ascii_case(b"resetstat") {
            resp::ok(out);
        } else if sub.eq_ignore_ascii_case(b"set") {
            self.error(out, b"CONFIG SET is not supported by c10m kv");
        } else {
            let mut msg = b"unknown subcommand '".to_vec();
            let s = cstr(sub);
            msg.extend_from_slice(&s[..s.len().min(128)]);
            msg.extend_from_slice(b"'. Try CONFIG HELP.");
            self.error(out, &msg);
        }
    }

    fn info(&self) -> String {
        format!(
            "# Server\r\nredis_version:7.0.0\r\nredis_mode:standalone\r\nserver_name:c10m-kv\r\n\
             multiplexing_api:c10m (AF_XDP + smoltcp)\r\n\r\n\
             # Clients\r\nconnected_clients:{}\r\n\r\n\
             # Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
             keyspace_hits:{}\r\nkeyspace_misses:{}\r\nexpired_keys:{}\r\n\r\n\
             # Memory\r\nused_memory:{}\r\nmaxmemory:{}\r\nmaxmemory_policy:noeviction\r\n\r\n\
             # Keyspace\r\ndb0:keys={},expires={},avg_ttl=0\r\n",
            self.stats.conns_open,
            self.stats.conns,
            self.stats.commands,
            self.stats.hits,
            self.stats.misses,
            self.store.expired,
            self.store.used(),
            self.maxmemory,
            self.store.len(),
            self.store.volatile(),
        )
    }
}

//! The GDB remote serial protocol as a raw client speaks it, and the gdb packet fuzzer's
//! generator. Shared by the integration tests (`tests/gdb_fuzz.rs` against a real
//! vmm-host) and the library's unit tests (`gdb::tests`, against a fake VM), which include
//! this file by path.
#![allow(dead_code)]

use proptest::prelude::Rng;
use proptest::test_runner::{RngAlgorithm, TestRng};
use std::io::Read;

/// A packet framed as `$body#checksum`.
pub fn packet_bytes(body: &[u8]) -> Vec<u8> {
    let sum = body.iter().fold(0u8, |s, &b| s.wrapping_add(b));
    let mut framed = Vec::with_capacity(body.len() + 4);
    framed.push(b'$');
    framed.extend_from_slice(body);
    framed.extend(format!("#{sum:02x}").bytes());
    framed
}

/// Values where address and length arithmetic goes wrong: zero, page and RAM edges (the
/// host runs with 256 MiB), the canonical hole, the top of the address space.
pub const BOUNDARIES: &[u64] = &[
    0,
    1,
    7,
    8,
    0xfff,
    0x1000,
    0x10_0000,
    0x20_0000,
    0xfff_fff0,
    0x1000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff,
    0x8000_0000_0000,
    0xffff_8000_0000_0000,
    0xffff_ffff_8000_0000,
    0x8000_0000_0000_0000,
    0xffff_ffff_ffff_fff8,
    u64::MAX,
];

pub const MONITOR_WORDS: &[&str] = &[
    "walk", "audit", "maps", "idt", "gdt", "regs", "phys", "explain", "history", "catch", "diff",
    "help", "rip", "cr2", "rsp", "all", "none", "gp,pf", "99", "-1", "0x", "",
];

pub struct Fuzzer {
    rng: TestRng,
    seeds: Vec<Vec<u8>>,
    /// Guest RAM that probes write and read back by physical address.
    probe_ram: std::ops::Range<u64>,
    /// Packets to send as they are, in order, instead of fuzzing (GDB_FUZZ_REPLAY).
    pub replay: Option<std::collections::VecDeque<Vec<u8>>>,
}

impl Fuzzer {
    /// A fuzzer whose probes write guest RAM in `probe_ram` (physical addresses).
    pub fn new(seed: u64, seeds: Vec<Vec<u8>>, probe_ram: std::ops::Range<u64>) -> Self {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        Self {
            rng: TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
            seeds,
            probe_ram,
            replay: None,
        }
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n.max(1)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// A number as the protocol writes it: hex, sometimes empty or longer than 64 bits.
    pub fn number(&mut self) -> String {
        match self.below(8) {
            0..=2 => format!("{:x}", self.pick(BOUNDARIES)),
            3 => format!("{:x}", self.rng.next_u64()),
            4 | 5 => format!("{:x}", self.below(0x2000)),
            6 => format!("1{}", "0".repeat(16 + self.below(8) as usize)),
            _ => String::new(),
        }
    }

    pub fn hex_bytes(&mut self, count: usize) -> String {
        (0..count)
            .map(|_| format!("{:02x}", self.below(256)))
            .collect()
    }

    pub fn thread(&mut self) -> String {
        match self.below(5) {
            0 => "p1.1".into(),
            1 => "-1".into(),
            2 => "0".into(),
            3 => format!("p{}.{}", self.number(), self.number()),
            _ => self.number(),
        }
    }

    pub fn monitor_line(&mut self) -> String {
        let mut words = vec![self.pick(MONITOR_WORDS).to_string()];
        for _ in 0..self.below(3) {
            words.push(if self.below(2) == 0 {
                format!("0x{}", self.number())
            } else {
                self.pick(MONITOR_WORDS).to_string()
            });
        }
        words.join(" ")
    }

    /// A packet built from the grammar of one request, with arbitrary arguments.
    pub fn generate(&mut self) -> Vec<u8> {
        let text = match self.below(13) {
            0 => format!("m{},{}", self.number(), self.number()),
            1 => {
                let data = self.below(40) as usize;
                let hex = self.hex_bytes(data);
                format!("M{},{}:{hex}", self.number(), self.number())
            }
            2 => return self.binary_write(),
            3 => format!("p{:x}", self.below(0x80)),
            4 => {
                let len = self.below(20) as usize;
                let hex = self.hex_bytes(len);
                format!("P{:x}={hex}", self.below(0x80))
            }
            5 => {
                let len = self.below(700) as usize;
                format!("G{}", self.hex_bytes(len))
            }
            6 => format!(
                "{}{},{},{}",
                if self.below(2) == 0 { 'Z' } else { 'z' },
                self.below(7),
                self.number(),
                self.number()
            ),
            7 => {
                let line = self.monitor_line();
                let hex: String = line.bytes().map(|b| format!("{b:02x}")).collect();
                format!("qRcmd,{hex}")
            }
            8 => format!(
                "H{}{}",
                if self.below(2) == 0 { 'g' } else { 'c' },
                self.thread()
            ),
            9 => format!("T{}", self.thread()),
            10 => {
                if self.below(2) == 0 {
                    "s".into()
                } else {
                    format!("vCont;s:{}", self.thread())
                }
            }
            11 => format!("Qqemu.PhyMemMode:{}", self.number()),
            _ => format!(
                "qXfer:features:read:target.xml:{},{}",
                self.number(),
                self.number()
            ),
        };
        text.into_bytes()
    }

    /// `X` with binary data, escaped as gdb escapes it.
    pub fn binary_write(&mut self) -> Vec<u8> {
        let mut body = format!("X{},{}:", self.number(), self.number()).into_bytes();
        for _ in 0..self.below(64) {
            let byte = self.below(256) as u8;
            if matches!(byte, b'#' | b'$' | b'}' | b'*') {
                body.extend([b'}', byte ^ 0x20]);
            } else {
                body.push(byte);
            }
        }
        body
    }

    /// A seed with one to three mutations: a number replaced, a cut, bytes inserted or
    /// deleted. Framing bytes are never inserted, so every body stays one packet.
    pub fn mutate(&mut self) -> Vec<u8> {
        let seed = self.below(self.seeds.len() as u64) as usize;
        let mut body = self.seeds[seed].clone();
        for _ in 0..=self.below(3) {
            match self.below(4) {
                0 => {
                    let runs = hex_runs(&body);
                    if !runs.is_empty() {
                        let (start, end) = *self.pick(&runs);
                        let number = self.number();
                        body.splice(start..end, number.into_bytes());
                    }
                }
                1 => body.truncate(self.below(body.len() as u64 + 1) as usize),
                2 => {
                    let at = self.below(body.len() as u64 + 1) as usize;
                    let byte = loop {
                        let b = 0x20 + self.below(0x5f) as u8;
                        if !matches!(b, b'#' | b'$' | b'}' | b'*') {
                            break b;
                        }
                    };
                    body.insert(at, byte);
                }
                _ => {
                    let at = self.below(body.len() as u64 + 1) as usize;
                    let end = (at + self.below(4) as usize).min(body.len());
                    body.drain(at..end);
                }
            }
        }
        // A trailing escape byte would swallow the '#' that ends the packet.
        while body.last() == Some(&b'}') {
            body.pop();
        }
        body
    }

    /// A probe: requests with the replies the protocol prescribes for them.
    pub fn probe(&mut self) -> Vec<(Vec<u8>, Expect)> {
        let select = (b"Hgp1.1".to_vec(), Expect::Ok);
        if self.below(2) == 0 {
            // rax..r15 and rip: 8-byte registers gdb writes with P and reads with p.
            let register = self.pick(&[0u64, 1, 2, 3, 5, 6, 8, 9, 12, 15]);
            let value = self.hex_bytes(8);
            vec![
                select,
                (format!("P{register:x}={value}").into_bytes(), Expect::Ok),
                (format!("p{register:x}").into_bytes(), Expect::Data(value)),
            ]
        } else {
            let len = 1 + self.below(32) as usize;
            let room = self.probe_ram.end - self.probe_ram.start - len as u64;
            let address = self.probe_ram.start + self.below(room);
            let data = self.hex_bytes(len);
            vec![
                select,
                (b"Qqemu.PhyMemMode:1".to_vec(), Expect::Ok),
                (
                    format!("M{address:x},{len:x}:{data}").into_bytes(),
                    Expect::Ok,
                ),
                (
                    format!("m{address:x},{len:x}").into_bytes(),
                    Expect::Data(data),
                ),
                (b"Qqemu.PhyMemMode:0".to_vec(), Expect::Ok),
            ]
        }
    }

    /// The next request, and what its reply must be (anything well-formed, for most).
    pub fn request(&mut self) -> Vec<(Vec<u8>, Expect)> {
        if self.replay.is_none() && self.below(16) == 0 {
            return self.probe();
        }
        vec![(self.packet(), Expect::Any)]
    }

    pub fn packet(&mut self) -> Vec<u8> {
        if let Some(replay) = &mut self.replay {
            return replay.pop_front().unwrap_or_else(|| b"?".to_vec());
        }
        if self.below(2) == 0 {
            self.mutate()
        } else {
            self.generate()
        }
    }
}

/// Start and end of each run of hex digits after a separator or a one-letter command (not
/// `q`, `Q` or `v`, whose names go on): the numbers of a packet, not the letters of its name.
pub fn hex_runs(body: &[u8]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < body.len() {
        let after_separator =
            (i == 1 && !b"qQv".contains(&body[0])) || (i > 0 && b",:;=.".contains(&body[i - 1]));
        if after_separator && body[i].is_ascii_hexdigit() {
            let start = i;
            while i < body.len() && body[i].is_ascii_hexdigit() {
                i += 1;
            }
            runs.push((start, i));
        } else {
            i += 1;
        }
    }
    runs
}

pub fn seeds() -> Vec<Vec<u8>> {
    corpus(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/corpus/gdb-packets.txt"
    ))
}

/// A corpus file: one body per line, `#` comments, `\xNN` for raw bytes.
pub fn corpus(path: &str) -> Vec<Vec<u8>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let mut body = Vec::new();
            let mut rest = line.as_bytes();
            while let Some((&b, tail)) = rest.split_first() {
                if b == b'\\' && tail.first() == Some(&b'x') && tail.len() >= 3 {
                    let hex = std::str::from_utf8(&tail[1..3]).expect("hex escape");
                    body.push(u8::from_str_radix(hex, 16).expect("hex escape"));
                    rest = &tail[3..];
                } else {
                    body.push(b);
                    rest = tail;
                }
            }
            body
        })
        .collect()
}

/// Read one packet (acks skipped) and check its checksum; the body, or what went wrong.
pub fn read_packet(stream: &mut impl Read) -> Result<Vec<u8>, String> {
    let mut byte = [0u8];
    loop {
        stream
            .read_exact(&mut byte)
            .map_err(|e| format!("no reply: {e}"))?;
        match byte[0] {
            b'+' => continue,
            b'$' => break,
            b'-' => return Err("the stub refused a well-formed packet (-)".into()),
            other => return Err(format!("reply starts with {other:#04x}")),
        }
    }
    let mut body = Vec::new();
    loop {
        stream
            .read_exact(&mut byte)
            .map_err(|e| format!("reply cut short: {e}"))?;
        if byte[0] == b'#' {
            break;
        }
        body.push(byte[0]);
    }
    let mut sum = [0u8; 2];
    stream
        .read_exact(&mut sum)
        .map_err(|e| format!("checksum cut short: {e}"))?;
    let expected = body.iter().fold(0u8, |s, &b| s.wrapping_add(b));
    let got = std::str::from_utf8(&sum)
        .ok()
        .and_then(|s| u8::from_str_radix(s, 16).ok());
    if got != Some(expected) {
        return Err(format!(
            "bad checksum {sum:?} on {:?}",
            String::from_utf8_lossy(&body)
        ));
    }
    Ok(body)
}

/// Requests after which the stub may rightly hang up: detach and kill.
pub fn ends_session(body: &[u8]) -> bool {
    matches!(body.first(), Some(b'D' | b'k')) || body.starts_with(b"vKill")
}

/// The final reply to a request: monitor output (`O…` packets) comes before it.
pub fn reply(stream: &mut impl Read) -> Result<Vec<u8>, String> {
    loop {
        let body = read_packet(stream)?;
        if body.first() != Some(&b'O') || body == b"OK" {
            return Ok(body);
        }
    }
}

/// What a reply must say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Any well-formed reply.
    Any,
    /// `OK`: the request was valid and done.
    Ok,
    /// Exactly this data: what was written before.
    Data(String),
}

impl Expect {
    /// Why `reply` breaks this expectation, if it does.
    pub fn broken_by(&self, reply: &[u8]) -> Option<String> {
        let text = String::from_utf8_lossy(&run_length_decoded(reply)).into_owned();
        match self {
            Expect::Any => None,
            Expect::Ok if reply == b"OK" => None,
            Expect::Data(data) if text.eq_ignore_ascii_case(data) => None,
            Expect::Ok => Some(format!("a valid request was answered {text:?}, not OK")),
            Expect::Data(data) => Some(format!(
                "read back {text:?} where {data:?} was just written"
            )),
        }
    }
}

/// A reply with the protocol's run-length encoding undone: `X*c` is X and then
/// `c - 29` more copies of it.
pub fn run_length_decoded(reply: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(reply.len());
    let mut bytes = reply.iter();
    while let Some(&b) = bytes.next() {
        match (b, out.last().copied()) {
            (b'*', Some(repeated)) => {
                let count = bytes
                    .next()
                    .map_or(0, |&c| usize::from(c).saturating_sub(29));
                out.extend(std::iter::repeat_n(repeated, count));
            }
            _ => out.push(b),
        }
    }
    out
}

#[derive(Debug, Default)]
pub struct Tally {
    pub ok: u64,
    pub errors: u64,
    pub empty: u64,
    pub data: u64,
    pub stops: u64,
    /// Detaches and kills the mutator made, which ended a session.
    pub session_ends: u64,
    /// Probes whose replies were checked for meaning.
    pub probes: u64,
}

impl Tally {
    pub fn count(&mut self, body: &[u8]) {
        match body.first() {
            None => self.empty += 1,
            Some(b'E') if body.len() == 3 => self.errors += 1,
            _ if body == b"OK" => self.ok += 1,
            Some(b'T' | b'S' | b'W' | b'X') => self.stops += 1,
            _ => self.data += 1,
        }
    }
}

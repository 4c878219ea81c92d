//! A fuzzer for the gdb stub's target: memory, register, breakpoint, thread and monitor
//! requests with arbitrary arguments, sent by a raw client to a real vmm-host over TCP.
//!
//! Half the packets are seeds from `tests/corpus/gdb-packets.txt` (captured from real gdb
//! sessions) with their numbers replaced, cut, or bytes inserted; the other half are built
//! from the protocol's grammar with boundary values (non-canonical addresses, lengths past
//! RAM, 20-digit numbers, unknown registers and threads, odd-length hex). Every packet must
//! get a well-formed reply with a correct checksum, in time. Between them, about one request
//! in sixteen is a probe whose meaning the protocol defines, checked as gdb relies on it: a
//! register written then read gives the value written, guest RAM written then read (in
//! QEMU's physical mode, which no scribbled CR3 can unmap) gives the bytes written, and
//! neither valid request is answered with an error. At the end the guest, whose
//! registers and memory the fuzzer scribbled over, is continued and the host must end with
//! a report and a documented status, never a panic.
//!
//! `GDB_FUZZ_PACKETS=N` (default 1500) and `GDB_FUZZ_SEED=S` (default 1) set the run. A
//! failure writes the failing session's packets to `target/gdb-fuzz-failure.txt`;
//! `GDB_FUZZ_REPLAY=FILE` sends such a file's packets, in order, instead of fuzzing.

mod common;
use common::kvm_or_skip;
use common::remote::{Host, packet_bytes};
use proptest::prelude::Rng;
use proptest::test_runner::{RngAlgorithm, TestRng};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Values where address and length arithmetic goes wrong: zero, page and RAM edges (the
/// host runs with 256 MiB), the canonical hole, the top of the address space.
const BOUNDARIES: &[u64] = &[
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

const MONITOR_WORDS: &[&str] = &[
    "walk", "audit", "maps", "idt", "gdt", "regs", "phys", "explain", "history", "catch", "diff",
    "help", "rip", "cr2", "rsp", "all", "none", "gp,pf", "99", "-1", "0x", "",
];

struct Fuzzer {
    rng: TestRng,
    seeds: Vec<Vec<u8>>,
    /// Packets to send as they are, in order, instead of fuzzing (GDB_FUZZ_REPLAY).
    replay: Option<std::collections::VecDeque<Vec<u8>>>,
}

impl Fuzzer {
    fn new(seed: u64, seeds: Vec<Vec<u8>>) -> Self {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        Self {
            rng: TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
            seeds,
            replay: None,
        }
    }

    fn below(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n.max(1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// A number as the protocol writes it: hex, sometimes empty or longer than 64 bits.
    fn number(&mut self) -> String {
        match self.below(8) {
            0..=2 => format!("{:x}", self.pick(BOUNDARIES)),
            3 => format!("{:x}", self.rng.next_u64()),
            4 | 5 => format!("{:x}", self.below(0x2000)),
            6 => format!("1{}", "0".repeat(16 + self.below(8) as usize)),
            _ => String::new(),
        }
    }

    fn hex_bytes(&mut self, count: usize) -> String {
        (0..count)
            .map(|_| format!("{:02x}", self.below(256)))
            .collect()
    }

    fn thread(&mut self) -> String {
        match self.below(5) {
            0 => "p1.1".into(),
            1 => "-1".into(),
            2 => "0".into(),
            3 => format!("p{}.{}", self.number(), self.number()),
            _ => self.number(),
        }
    }

    fn monitor_line(&mut self) -> String {
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
    fn generate(&mut self) -> Vec<u8> {
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
    fn binary_write(&mut self) -> Vec<u8> {
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
    fn mutate(&mut self) -> Vec<u8> {
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
    fn probe(&mut self) -> Vec<(Vec<u8>, Expect)> {
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
            // Guest RAM above the kernel image and below 256 MiB, by physical address.
            let address = 0x20_0000 + self.below(0x0f00_0000);
            let len = 1 + self.below(32) as usize;
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
    fn request(&mut self) -> Vec<(Vec<u8>, Expect)> {
        if self.replay.is_none() && self.below(16) == 0 {
            return self.probe();
        }
        vec![(self.packet(), Expect::Any)]
    }

    fn packet(&mut self) -> Vec<u8> {
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
fn hex_runs(body: &[u8]) -> Vec<(usize, usize)> {
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

fn seeds() -> Vec<Vec<u8>> {
    corpus(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/corpus/gdb-packets.txt"
    ))
}

/// A corpus file: one body per line, `#` comments, `\xNN` for raw bytes.
fn corpus(path: &str) -> Vec<Vec<u8>> {
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
fn read_packet(stream: &mut TcpStream) -> Result<Vec<u8>, String> {
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
fn ends_session(body: &[u8]) -> bool {
    matches!(body.first(), Some(b'D' | b'k')) || body.starts_with(b"vKill")
}

/// Keep a failing session's packets in the corpus format, to replay them one by one.
fn write_replay(packets: &[Vec<u8>]) -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/gdb-fuzz-failure.txt"
    );
    let mut text = String::from("# packets of a failing gdb fuzz session, oldest first\n");
    for body in packets {
        for &b in body {
            if (0x20..0x7f).contains(&b) && b != b'\\' {
                text.push(b as char);
            } else {
                text.push_str(&format!("\\x{b:02x}"));
            }
        }
        text.push('\n');
    }
    let _ = std::fs::write(path, text);
    path.to_string()
}

/// The final reply to a request: monitor output (`O…` packets) comes before it.
fn reply(stream: &mut TcpStream) -> Result<Vec<u8>, String> {
    loop {
        let body = read_packet(stream)?;
        if body.first() != Some(&b'O') || body == b"OK" {
            return Ok(body);
        }
    }
}

/// What a reply must say.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    /// Any well-formed reply.
    Any,
    /// `OK`: the request was valid and done.
    Ok,
    /// Exactly this data: what was written before.
    Data(String),
}

impl Expect {
    /// Why `reply` breaks this expectation, if it does.
    fn broken_by(&self, reply: &[u8]) -> Option<String> {
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
fn run_length_decoded(reply: &[u8]) -> Vec<u8> {
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
struct Tally {
    ok: u64,
    errors: u64,
    empty: u64,
    data: u64,
    stops: u64,
    /// Detaches and kills the mutator made, which ended a session.
    session_ends: u64,
    /// Probes whose replies were checked for meaning.
    probes: u64,
}

impl Tally {
    fn count(&mut self, body: &[u8]) {
        match body.first() {
            None => self.empty += 1,
            Some(b'E') if body.len() == 3 => self.errors += 1,
            _ if body == b"OK" => self.ok += 1,
            Some(b'T' | b'S' | b'W' | b'X') => self.stops += 1,
            _ => self.data += 1,
        }
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// How one host's session ended.
struct Session {
    sent: u64,
    ended_early: bool,
    status: i32,
}

/// The reply to one request, counted; `None` when a detach or kill the mutator made closed
/// the connection, as it may (any other request must be answered).
fn exchange_one(
    gdb: &mut TcpStream,
    body: &[u8],
    tally: &mut Tally,
) -> Result<Option<Vec<u8>>, String> {
    match reply(gdb) {
        Ok(answer) => {
            tally.count(&answer);
            Ok(Some(answer))
        }
        Err(_) if ends_session(body) => {
            tally.session_ends += 1;
            Ok(None)
        }
        Err(why) => Err(why),
    }
}

/// Send up to `count` packets to a new host, then continue and kill it; check its end.
fn session(fuzzer: &mut Fuzzer, count: u64, seed: u64, tally: &mut Tally) -> Session {
    let host = Host::start("test=hello", &["--gdb-wait", "--timeout", "3"]);
    let mut gdb = TcpStream::connect(&host.addr).expect("connect");
    gdb.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut all: Vec<Vec<u8>> = Vec::new();
    let fail = |all: &[Vec<u8>], why: String| -> ! {
        let replay = write_replay(all);
        let last: Vec<String> = all[all.len().saturating_sub(8)..]
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        panic!(
            "GDB_FUZZ_SEED={seed}: {why}; the session's packets are in {replay} (replay with GDB_FUZZ_REPLAY={replay}); the last ones: {last:#?}"
        );
    };
    let mut sent = 0;
    let mut ended_early = false;
    'session: while sent < count {
        let requests = fuzzer.request();
        if requests.len() > 1 {
            tally.probes += 1;
        }
        for (body, expect) in requests {
            all.push(body.clone());
            sent += 1;
            if let Err(e) = gdb.write_all(&packet_bytes(&body)) {
                fail(&all, format!("the stub closed the connection: {e}"));
            }
            let answer = match exchange_one(&mut gdb, &body, tally) {
                Ok(Some(answer)) => answer,
                Ok(None) => {
                    ended_early = true;
                    break 'session;
                }
                Err(why) => fail(&all, why),
            };
            if let Some(why) = expect.broken_by(&answer) {
                fail(&all, format!("{}: {why}", String::from_utf8_lossy(&body)));
            }
            if matches!(answer.first(), Some(b'W' | b'X'))
                || (ends_session(&body) && answer == b"OK")
            {
                // A step on another thread id resumes everything, scribbled registers can
                // end the run, and a detach lets it run on: this session is over.
                ended_early = true;
                break 'session;
            }
        }
    }
    if !ended_early {
        // Let the scribbled-over guest run: it stops, crashes or times out, and gdb hears.
        gdb.write_all(&packet_bytes(b"c")).expect("continue");
        let stop = reply(&mut gdb).unwrap_or_else(|why| fail(&all, why));
        assert!(
            matches!(stop.first(), Some(b'T' | b'S' | b'W' | b'X')),
            "{:?}",
            String::from_utf8_lossy(&stop)
        );
        let _ = gdb.write_all(&packet_bytes(b"k"));
    }
    drop(gdb);
    let (status, stdout, stderr) = host.finish();
    assert!(
        !stderr.contains("panicked"),
        "GDB_FUZZ_SEED={seed}: {stderr}"
    );
    assert!(
        (0..=255).contains(&status) && status != 101,
        "GDB_FUZZ_SEED={seed}: status {status}\n{stdout}{stderr}"
    );
    assert!(stdout.contains("== run ended: "), "a report: {stdout}");
    Session {
        sent,
        ended_early,
        status,
    }
}

#[test]
fn arbitrary_requests_get_well_formed_replies_and_the_host_ends_cleanly() {
    if kvm_or_skip("gdb_fuzz").is_none() {
        return;
    }
    let mut count = env_number("GDB_FUZZ_PACKETS", 1500);
    let seed = env_number("GDB_FUZZ_SEED", 1);
    let mut fuzzer = Fuzzer::new(seed, seeds());
    if let Ok(path) = std::env::var("GDB_FUZZ_REPLAY") {
        let packets = corpus(&path);
        count = packets.len() as u64;
        fuzzer.replay = Some(packets.into());
    }
    let mut tally = Tally::default();
    let started = std::time::Instant::now();
    let mut sent = 0;
    let mut statuses = Vec::new();
    while sent < count {
        let s = session(&mut fuzzer, count - sent, seed, &mut tally);
        sent += s.sent;
        statuses.push((s.status, s.ended_early));
    }
    println!(
        "gdb fuzz: seed {seed}, {sent} packets in {:.1} s over {} hosts, replies {tally:?}, (status, ended by a resume): {statuses:?}",
        started.elapsed().as_secs_f64(),
        statuses.len()
    );
}

/// Every session the fuzzer once broke, minimised, replayed as it was.
#[test]
fn sessions_that_once_failed_replay_cleanly() {
    if kvm_or_skip("gdb_fuzz_regressions").is_none() {
        return;
    }
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/gdb-regressions");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("the regression corpus")
        .map(|e| e.expect("a corpus entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for file in files {
        let packets = corpus(file.to_str().expect("a UTF-8 path"));
        let count = packets.len() as u64;
        let mut fuzzer = Fuzzer::new(0, Vec::new());
        fuzzer.replay = Some(packets.into());
        let mut tally = Tally::default();
        let s = session(&mut fuzzer, count, 0, &mut tally);
        assert_eq!(s.sent, count, "{}: every packet answered", file.display());
    }
}

#[test]
fn mutations_keep_packets_whole() {
    let mut fuzzer = Fuzzer::new(7, seeds());
    for _ in 0..20_000 {
        let body = fuzzer.packet();
        assert_ne!(body.last(), Some(&b'}'), "{body:?}");
        let mut escaped = false;
        for &b in &body {
            assert!(escaped || !matches!(b, b'#' | b'$'), "{body:?}");
            escaped = !escaped && b == b'}';
        }
    }
    assert_eq!(
        run_length_decoded(b"19d4* 01"),
        b"19d4444".iter().chain(b"01").copied().collect::<Vec<u8>>()
    );
    assert_eq!(hex_runs(b"m100000,40"), [(1, 7), (8, 10)]);
    assert_eq!(hex_runs(b"qAttached:1"), [(10, 11)]);
}

/// The kernel symbol's address, from the ELF.
fn symbol(name: &str) -> u64 {
    use object::{Object, ObjectSymbol};
    let bytes = std::fs::read(vmm_host::GUEST_KERNEL_ELF).expect("kernel ELF");
    let elf = object::File::parse(&*bytes).expect("parse ELF");
    elf.symbols()
        .find(|s| s.name() == Ok(name))
        .unwrap_or_else(|| panic!("no symbol {name}"))
        .address()
}

/// The meaning of breakpoint packets, as gdb relies on it: set, then hit at its address;
/// removed, then not hit again; refused only where no byte can be planted.
#[test]
fn a_breakpoint_set_by_packet_stops_at_its_address() {
    if kvm_or_skip("breakpoint_packets").is_none() {
        return;
    }
    let host = Host::start("test=hello", &["--gdb-wait"]);
    let mut gdb = TcpStream::connect(&host.addr).expect("connect");
    gdb.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut ask = |body: &str| -> String {
        gdb.write_all(&packet_bytes(body.as_bytes())).expect("send");
        String::from_utf8_lossy(&run_length_decoded(&reply(&mut gdb).expect("a reply")))
            .into_owned()
    };
    let kmain = symbol("kmain");
    assert_eq!(ask(&format!("Z0,{kmain:x},1")), "OK");
    // Nothing is mapped at 0x7fff00000000 under the boot tables: no byte to plant.
    assert!(ask("Z0,7fff00000000,1").starts_with('E'));
    let stop = ask("c");
    assert!(stop.starts_with("T05"), "{stop}");
    let rip = u64::from_str_radix(&ask("p10"), 16).map(u64::swap_bytes);
    assert_eq!(rip, Ok(kmain), "stopped at the breakpoint");
    assert_eq!(ask(&format!("z0,{kmain:x},1")), "OK");
    let end = ask("c");
    assert_eq!(end, "W00", "removed, it stops nothing: the guest exits 0");
    drop(gdb);
    let (status, _, _) = host.finish();
    assert_eq!(status, 0);
}

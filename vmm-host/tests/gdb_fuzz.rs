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
//! The generator lives in `tests/common/rsp.rs`, which the library's unit tests also run
//! against a fake VM (`gdb::tests`), fast and with no `/dev/kvm`.
//!
//! `GDB_FUZZ_PACKETS=N` (default 1500) and `GDB_FUZZ_SEED=S` (default 1) set the run. A
//! failure writes the failing session's packets to `target/gdb-fuzz-failure.txt`;
//! `GDB_FUZZ_REPLAY=FILE` sends such a file's packets, in order, instead of fuzzing.

mod common;
use common::kvm_or_skip;
use common::remote::Host;
use common::rsp::{
    Fuzzer, Tally, corpus, ends_session, hex_runs, packet_bytes, reply, run_length_decoded, seeds,
};
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

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

/// Guest RAM above the kernel image and below the host's 256 MiB, for the probes.
const PROBE_RAM: std::ops::Range<u64> = 0x20_0000..0x0f20_0000;

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
    let mut fuzzer = Fuzzer::new(seed, seeds(), PROBE_RAM);
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
        let mut fuzzer = Fuzzer::new(0, Vec::new(), PROBE_RAM);
        fuzzer.replay = Some(packets.into());
        let mut tally = Tally::default();
        let s = session(&mut fuzzer, count, 0, &mut tally);
        assert_eq!(s.sent, count, "{}: every packet answered", file.display());
    }
}

#[test]
fn mutations_keep_packets_whole() {
    let mut fuzzer = Fuzzer::new(7, seeds(), PROBE_RAM);
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

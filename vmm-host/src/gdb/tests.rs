//! The gdb stub against a fake VM over loopback TCP: what gdb is told about registers,
//! memory, breakpoints, steps, stops and monitor commands, and how sessions end. No KVM.

use super::fake::{ENTRY, FakeVm, RAM};
use super::target::{TargetFault, answer};
use super::*;
use crate::addr::Gpa;
use crate::vm::DebugError;
use rsp::{Expect, Fuzzer, Tally, packet_bytes, read_packet, reply, run_length_decoded, seeds};
use std::io::Write;
use std::time::Duration;

#[path = "../../tests/common/rsp.rs"]
mod rsp;

/// A raw gdb client.
struct Client(TcpStream);

impl Client {
    /// The reply to `body`, run-length decoding undone.
    fn ask(&mut self, body: &str) -> String {
        self.0
            .write_all(&packet_bytes(body.as_bytes()))
            .expect("send");
        let answer = reply(&mut self.0).unwrap_or_else(|e| panic!("{body}: {e}"));
        String::from_utf8_lossy(&run_length_decoded(&answer)).into_owned()
    }

    /// A monitor command's output (its `O` packets, decoded), and the final reply.
    fn monitor(&mut self, line: &str) -> (String, String) {
        let hex: String = line.bytes().map(|b| format!("{b:02x}")).collect();
        self.0
            .write_all(&packet_bytes(format!("qRcmd,{hex}").as_bytes()))
            .expect("send");
        let mut output = Vec::new();
        loop {
            let body = run_length_decoded(&read_packet(&mut self.0).expect("a monitor reply"));
            match body.strip_prefix(b"O") {
                Some(hex) if body != b"OK" => output.extend(
                    hex.chunks(2)
                        .filter_map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok()),
                ),
                _ => {
                    let end = String::from_utf8_lossy(&body).into_owned();
                    return (String::from_utf8_lossy(&output).into_owned(), end);
                }
            }
        }
    }

    /// RIP, read with `p10` (little-endian hex).
    fn rip(&mut self) -> u64 {
        let hex = self.ask("p10");
        u64::from_str_radix(&hex, 16)
            .map(u64::swap_bytes)
            .unwrap_or_else(|_| panic!("RIP as hex: {hex}"))
    }
}

/// Serve one session for `vm` while `client` talks to it; what the client returned and how
/// the session ended.
fn with_session<T: Send>(
    vm: &mut FakeVm,
    client: impl FnOnce(&mut Client) -> T + Send,
) -> (T, SessionEnd) {
    let server = GdbServer::bind("127.0.0.1:0".parse().expect("an address")).expect("a port");
    let addr = server.local_addr();
    std::thread::scope(|scope| {
        let layout = vm
            .registers()
            .map(|cpu| Layout::of(&cpu))
            .unwrap_or_default();
        let served = scope.spawn(move || server.serve(vm, true, layout).expect("a session"));
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("a timeout");
        let mut gdb = Client(stream);
        let result = client(&mut gdb);
        drop(gdb);
        (result, served.join().expect("the session thread"))
    })
}

#[test]
fn a_bare_port_listens_on_loopback() {
    let listen: ListenAddr = "1234".parse().unwrap();
    assert_eq!(listen.addr, "127.0.0.1:1234".parse().unwrap());
    assert!(!listen.explicit);
    let listen: ListenAddr = "0.0.0.0:99".parse().unwrap();
    assert!(listen.explicit);
    let listen: ListenAddr = "[::1]:99".parse().unwrap();
    assert!(listen.addr.ip().is_loopback());
}

#[test]
fn garbage_is_an_error() {
    for bad in ["", "host", "1234567", "1.2.3.4", "localhost:x"] {
        let err = bad.parse::<ListenAddr>().unwrap_err();
        assert!(err.to_string().contains("is not [ADDR:]PORT"), "{err}");
    }
}

#[test]
fn a_session_that_starts_in_32_bit_code_gets_the_i386_layout() {
    let mut vm = FakeVm::new(0x1100).protected_mode();
    let ((), _) = with_session(&mut vm, |gdb| {
        let xml = gdb.ask("qXfer:features:read:target.xml:0,ffff");
        assert!(xml.contains("<architecture>i386</architecture>"), "{xml}");
        // 340 bytes: eax … gs, the x87 registers, xmm0–7, mxcsr, the system registers.
        assert_eq!(gdb.ask("g").len(), 2 * 340);
        // Register 8 is eip, 4 bytes, little-endian; 0 is eax.
        assert_eq!(
            gdb.ask("p8"),
            format!("{:08x}", (ENTRY as u32).swap_bytes())
        );
        assert_eq!(gdb.ask("P0=01020304"), "OK");
        assert_eq!(gdb.ask("p0"), "01020304");
        assert!(gdb.ask("p30").starts_with('E'), "no register 48 in i386");
    });
}

#[test]
fn a_register_written_is_read_back() {
    let mut vm = FakeVm::new(0x1100);
    let ((), end) = with_session(&mut vm, |gdb| {
        assert_eq!(gdb.rip(), ENTRY);
        assert_eq!(gdb.ask("P0=1122334455667788"), "OK");
        assert_eq!(gdb.ask("p0"), "1122334455667788");
        let all = gdb.ask("g");
        assert!(all.starts_with("1122334455667788"), "RAX first: {all}");
        // gdbstub calls a register the architecture lacks unsupported; short values are
        // zero-extended, as QEMU's stub does.
        assert_eq!(gdb.ask("P999=00"), "");
        assert_eq!(gdb.ask("P1=ff"), "OK");
        assert_eq!(gdb.ask("p1"), "ff00000000000000");
        assert_eq!(gdb.ask("D"), "OK");
    });
    assert_eq!(end, SessionEnd::Detached);
    assert_eq!(vm.registers().unwrap().regs.rax, 0x8877_6655_4433_2211);
}

#[test]
fn memory_written_is_read_back_by_virtual_and_physical_address() {
    let mut vm = FakeVm::new(0x1100);
    with_session(&mut vm, |gdb| {
        assert_eq!(gdb.ask("M2000,4:deadbeef"), "OK");
        assert_eq!(gdb.ask("m2000,4"), "deadbeef");
        assert_eq!(gdb.ask("Qqemu.PhyMemMode:1"), "OK");
        assert_eq!(gdb.ask("m2001,2"), "adbe");
        assert_eq!(gdb.ask("Qqemu.PhyMemMode:0"), "OK");
        // The end of RAM cuts a read short; past it, nothing can be read: EFAULT.
        let tail = gdb.ask(&format!("m{:x},20", RAM - 4));
        assert_eq!(tail.len(), 8, "4 bytes: {tail}");
        assert_eq!(gdb.ask(&format!("m{RAM:x},4")), "E0e");
        assert_eq!(gdb.ask(&format!("M{RAM:x},1:00")), "E0e");
        gdb.ask("D");
    });
    assert_eq!(vm.byte(0x2000), Some(0xde));
}

#[test]
fn a_breakpoint_stops_at_its_address_until_removed() {
    let mut vm = FakeVm::new(0x1100);
    let ((), end) = with_session(&mut vm, |gdb| {
        assert_eq!(gdb.ask("Z0,1010,1"), "OK");
        assert!(gdb.ask(&format!("Z0,{RAM:x},1")).starts_with('E'), "no RAM");
        let stop = gdb.ask("c");
        assert!(
            stop.starts_with("T05") && stop.contains("swbreak"),
            "{stop}"
        );
        assert_eq!(gdb.rip(), 0x1010);
        // Continuing from the breakpoint leaves it; removed, it stops nothing again.
        assert_eq!(gdb.ask("z0,1010,1"), "OK");
        let halted = gdb.ask("c");
        assert!(
            halted.starts_with("T06"),
            "a halt is shown as SIGABRT: {halted}"
        );
        assert_eq!(gdb.rip(), 0x1100);
        assert!(gdb.ask("c").starts_with("X06"), "then the run is over");
    });
    assert_eq!(end, SessionEnd::RunEnded);
}

#[test]
fn a_step_runs_one_instruction() {
    let mut vm = FakeVm::new(0x1100);
    with_session(&mut vm, |gdb| {
        for n in 1..=3 {
            let stop = gdb.ask("vCont;s:p1.1");
            assert!(stop.starts_with("T05"), "{stop}");
            assert_eq!(gdb.rip(), ENTRY + n);
        }
        gdb.ask("D");
    });
}

#[test]
fn hardware_breakpoints_and_watchpoints_take_the_four_debug_registers() {
    let mut vm = FakeVm::new(0x1100);
    with_session(&mut vm, |gdb| {
        assert_eq!(gdb.ask("Z1,1020,1"), "OK");
        assert_eq!(gdb.ask("Z2,3000,4"), "OK");
        assert_eq!(gdb.ask("Z4,3008,8"), "OK");
        assert!(gdb.ask("Z2,3003,4").starts_with('E'), "unaligned");
        assert_eq!(gdb.ask("Z2,3010,2"), "OK");
        assert!(gdb.ask("Z2,3020,2").starts_with('E'), "a fifth slot");
        let stop = gdb.ask("c");
        assert!(
            stop.starts_with("T05") && stop.contains("hwbreak"),
            "{stop}"
        );
        assert_eq!(gdb.rip(), 0x1020);
        gdb.ask("D");
    });
    assert!(vm.cleared);
    assert_eq!(vm.breakpoints(), 0, "detaching frees the debug registers");
}

#[test]
fn a_caught_exception_stops_before_its_handler() {
    let mut vm = FakeVm::new(0x1100);
    vm.write_physical(Gpa::new(0x1008), &[0x0f, 0x0b]).unwrap();
    with_session(&mut vm, |gdb| {
        let (said, end) = gdb.monitor("catch ud");
        assert_eq!(end, "OK");
        assert_eq!(said.trim_end(), "vectors that stop the guest: ud");
        let stop = gdb.ask("c");
        assert!(stop.starts_with("T04"), "#UD is SIGILL: {stop}");
        assert_eq!(gdb.rip(), 0x1008, "at the faulting instruction");
        gdb.ask("D");
    });
}

#[test]
fn monitor_commands_answer_in_words() {
    let mut vm = FakeVm::new(0x1100);
    with_session(&mut vm, |gdb| {
        let (walk, _) = gdb.monitor("walk rip");
        assert_eq!(
            walk.trim_end(),
            "error: paging is off (CR0.PG = 0): virtual addresses are physical"
        );
        let (dump, _) = gdb.monitor("phys 0x1000 16");
        assert_eq!(
            dump.trim_end(),
            format!(
                "0000000000001000  {}  {}",
                ["90"; 16].join(" "),
                ".".repeat(16)
            )
        );
        let (past, _) = gdb.monitor("phys 0xbfff8 16");
        assert!(
            past.contains("(stopped at physical 0xc0000: not guest RAM)"),
            "{past}"
        );
        assert_eq!(
            gdb.monitor("explain").0.trim_end(),
            "no exception captured yet"
        );
        assert_eq!(
            gdb.monitor("history").0.trim_end(),
            "0 exceptions captured; the last 0:"
        );
        assert_eq!(
            gdb.monitor("frobnicate").0.trim_end(),
            "error: unknown monitor command `frobnicate`; `monitor help` lists them"
        );
        let (regs, _) = gdb.monitor("regs");
        assert!(regs.contains("CR0"), "{regs}");
        gdb.ask("D");
    });
}

#[test]
fn kill_ends_the_run() {
    let mut vm = FakeVm::new(0x1100);
    let ((), end) = with_session(&mut vm, |gdb| {
        gdb.0.write_all(&packet_bytes(b"vKill;1")).expect("send");
        let _ = reply(&mut gdb.0);
    });
    assert_eq!(end, SessionEnd::Killed);
    assert_eq!(vm.ended(), Some(&crate::ending::Ending::Killed));
}

#[test]
fn registers_that_cannot_be_read_end_the_session_with_the_reason() {
    let mut vm = FakeVm::new(0x1100);
    vm.registers_broken = true;
    let ((), end) = with_session(&mut vm, |gdb| {
        gdb.0.write_all(&packet_bytes(b"g")).expect("send");
        let _ = reply(&mut gdb.0);
    });
    let SessionEnd::Lost(why) = end else {
        panic!("{end:?}");
    };
    assert!(why.contains("cannot read the vCPU's registers"), "{why}");
}

#[test]
fn only_a_failed_register_read_ends_a_session() {
    use gdbstub::target::TargetError;
    let io = || DebugError::NotRam(Gpa::new(0));
    assert!(matches!(
        answer(TargetFault::ReadRegisters(io())),
        TargetError::Fatal(_)
    ));
    assert!(matches!(
        answer(TargetFault::Memory {
            addr: 0,
            error: io()
        }),
        TargetError::Errno(14)
    ));
    for fault in [
        TargetFault::WriteRegisters(io()),
        TargetFault::NoSuchRegister(99),
        TargetFault::NoSuchThread(2),
    ] {
        assert!(matches!(answer(fault), TargetError::NonFatal));
    }
}

/// The packet fuzzer of `tests/gdb_fuzz.rs`, against the fake: every request gets a
/// well-formed reply, probes read back what they wrote, and sessions end only when asked.
#[test]
fn fuzzed_packets_get_well_formed_and_meaningful_replies() {
    let mut fuzzer = Fuzzer::new(11, seeds(), 0x1000..RAM);
    let mut tally = Tally::default();
    let mut sent = 0;
    while sent < 10_000 {
        let mut vm = FakeVm::new(0x8000);
        let (count, _) = with_session(&mut vm, |gdb| fuzz_session(gdb, &mut fuzzer, &mut tally));
        sent += count;
    }
    assert!(
        tally.probes > 50 && tally.ok > 0 && tally.data > 0,
        "{tally:?}"
    );
}

/// Packets until the session ends (a detach, kill or the run's end) or 500 are sent.
fn fuzz_session(gdb: &mut Client, fuzzer: &mut Fuzzer, tally: &mut Tally) -> u64 {
    let mut sent = 0;
    while sent < 500 {
        let requests = fuzzer.request();
        tally.probes += u64::from(requests.len() > 1);
        for (body, expect) in requests {
            sent += 1;
            let text = String::from_utf8_lossy(&body).into_owned();
            gdb.0.write_all(&packet_bytes(&body)).expect("send");
            let answer = match reply(&mut gdb.0) {
                Ok(answer) => answer,
                Err(_) if rsp::ends_session(&body) => return sent,
                Err(why) => panic!("{text}: {why}"),
            };
            tally.count(&answer);
            if let Some(why) = expect.broken_by(&answer) {
                panic!("{text}: {why}");
            }
            if expect == Expect::Any && matches!(answer.first(), Some(b'W' | b'X'))
                || rsp::ends_session(&body) && answer == b"OK"
            {
                return sent;
            }
        }
    }
    sent
}

#[test]
fn monitor_screen_shows_the_text_buffer_where_the_crtc_points() {
    let mut vm = FakeVm::new(0x1100);
    let ((), _) = with_session(&mut vm, |gdb| {
        assert_eq!(
            gdb.monitor("screen").0.trim_end(),
            "the VGA text screen is blank (80×25 at 0xb8000, cursor row 1, column 1)"
        );
        gdb.ask("D");
    });
    // "OK" on row 2 in white on blue, the cursor after it, as a kernel's putc leaves them.
    vm.write_physical(Gpa::new(0xb8000 + 160), b"O\x1fK\x1f")
        .unwrap();
    for (port, value) in [(0x3d4, 0x0f), (0x3d5, 82), (0x3d4, 0x0e), (0x3d5, 0)] {
        vm.devices.port_write(port, &[value]);
    }
    with_session(&mut vm, |gdb| {
        let screen = gdb.monitor("screen").0;
        let rows: Vec<&str> = screen.lines().collect();
        assert_eq!(
            rows[0],
            "VGA text screen, 80×25 at 0xb8000, cursor row 2, column 3:"
        );
        assert_eq!(rows[3], format!("  |OK{}|", " ".repeat(78)), "{screen}");
        assert!(rows[4].starts_with("  | (rows 3–25 blank)"), "{screen}");
        gdb.ask("D");
    });
}

#[test]
fn monitor_pic_and_pit_show_how_the_guest_programmed_them() {
    let mut vm = FakeVm::new(0x1100);
    let ((), _) = with_session(&mut vm, |gdb| {
        assert_eq!(
            gdb.monitor("pic").0.trim_end(),
            "master (0x20): not initialised (no ICW1-ICW4 yet): delivers nothing\n\
             slave  (0xa0): not initialised (no ICW1-ICW4 yet): delivers nothing\n\
             no IRQ can reach the CPU"
        );
        assert_eq!(
            gdb.monitor("pit").0.trim_end(),
            "channel 0: no count loaded\nchannel 1: no count loaded\nchannel 2: no count loaded; gate off"
        );
        gdb.ask("D");
    });
    for (port, value) in [
        (0x20, 0x11),
        (0x21, 0x20),
        (0x21, 0x04),
        (0x21, 0x01),
        (0x21, 0xfc),
    ] {
        vm.devices.port_write(port, &[value]);
    }
    for (port, value) in [(0x43, 0x34), (0x40, 0xa9), (0x40, 0x04)] {
        vm.devices.port_write(port, &[value]);
    }
    with_session(&mut vm, |gdb| {
        let pic = gdb.monitor("pic").0;
        assert!(
            pic.starts_with("master (0x20): vectors 0x20-0x27  IMR 0xfc  IRR 0x00  ISR 0x00"),
            "{pic}"
        );
        assert!(pic.trim_end().ends_with("unmasked IRQs: 0 1"), "{pic}");
        let pit = gdb.monitor("pit").0;
        assert!(
            pit.starts_with(
                "channel 0: mode 2 (rate generator), count 1193 (1000.15 Hz), now 1193"
            ),
            "{pit}"
        );
        gdb.ask("D");
    });
}

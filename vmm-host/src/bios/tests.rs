use super::*;
use crate::console::{ConsoleSink, DEFAULT_LIMIT};
use crate::devices::Clock;
use crate::layout::RamLayout;
use kvm_bindings::kvm_regs;
use std::time::Duration;
use vm_memory::GuestAddress;

/// 2026-12-02 06:52:01 UTC.
const EPOCH: u64 = 1_796_194_321;

struct Pc {
    mem: GuestMemoryMmap,
    devices: Devices,
    bios: Bios,
}

/// 4 MiB of RAM, the devices on a fixed clock, a BIOS powered on with a disk of `sectors`
/// sectors (sector n filled with byte n) in a machine that says it has 128 MiB.
fn pc(sectors: u8) -> Pc {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
    let mut devices = Devices::new(ConsoleSink::new(false, None, DEFAULT_LIMIT).unwrap()).unwrap();
    devices.cmos.set_epoch(EPOCH);
    devices.set_clock(Clock::Fixed(Duration::ZERO));
    let image: Vec<u8> = (0..sectors).flat_map(|n| [n; 512]).collect();
    let map = RamLayout::new(128 << 20, None).unwrap().memory_map();
    let bios = Bios::new(Disk::new(image), map);
    rom::install(&mem).unwrap();
    bios.power_on(&mem, &mut devices);
    Pc { mem, devices, bios }
}

fn call(ax: u16) -> Call {
    Call::new(
        kvm_regs {
            rax: u64::from(ax),
            ..Default::default()
        },
        0,
        0,
    )
}

impl Pc {
    fn int(&mut self, vector: u8, call: &mut Call) -> Served {
        self.bios.serve(vector, call, &self.mem, &mut self.devices)
    }
    fn bytes(&self, at: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        self.mem.read_slice(&mut out, GuestAddress(at)).unwrap();
        out
    }
    fn put(&self, at: u64, bytes: &[u8]) {
        self.mem.write_slice(bytes, GuestAddress(at)).unwrap();
    }
    fn teletype(&mut self, text: &[u8]) {
        for &b in text {
            let mut c = call(0x0e00 | u16::from(b));
            assert_eq!(self.int(0x10, &mut c), Served::Done);
        }
    }
    /// Row `row` of the text screen, as characters.
    fn row(&self, row: u64) -> String {
        let cells = self.bytes(0xb8000 + row * 160, 160);
        cells.chunks(2).map(|c| c[0] as char).collect::<String>()
    }
}

#[test]
fn power_on_leaves_the_pc_as_a_bios_does() {
    let pc = pc(1);
    let ivt = pc.bytes(0x13 * 4, 4);
    assert_eq!(ivt, [0x4c, 0x00, 0x00, 0xf0], "int 13h → F000:004C");
    assert_eq!(pc.bytes(rom::STUBS + 0x4c, 2), [0xf4, 0xcf], "hlt; iret");
    assert_eq!(pc.bytes(0x413, 2), 640u16.to_le_bytes(), "640 KiB");
    assert_eq!(pc.bytes(0x475, 1), [1], "one hard disk");
    assert_eq!(pc.bytes(0xb8000, 4), [b' ', 7, b' ', 7], "a blank screen");
    assert_eq!(pc.devices.pic.master.vector_base, 0x08);
    assert_eq!(pc.devices.pic.slave.vector_base, 0x70);
    assert!(pc.devices.pic.irq_reaches_cpu(0), "IRQ 0 unmasked");
    assert!(
        !pc.devices.pic.irq_reaches_cpu(1),
        "the keyboard's IRQ masked"
    );
    let period = pc.devices.pit.irq0_period().unwrap();
    assert_eq!(period.as_micros(), 54_925, "18.2 Hz");
    // 06:52:01 is 24,721 s after midnight: 450,083 ticks at 18.2065 Hz.
    assert_eq!(pc.bytes(0x46c, 4), 450_083u32.to_le_bytes());
}

#[test]
fn teletype_writes_the_screen_moves_the_cursor_and_echoes_to_the_console() {
    let mut pc = pc(1);
    pc.teletype(b"hi\r\nthere");
    assert!(pc.row(0).starts_with("hi "));
    assert!(pc.row(1).starts_with("there "));
    assert_eq!(pc.bytes(0x450, 2), [5, 1], "column 5, row 1");
    assert_eq!(
        pc.devices.vga.text_mode().cursor,
        Some(80 + 5),
        "the CRTC cursor"
    );
    assert_eq!(
        pc.devices.com1.sink().captured(),
        b"hi\nthere",
        "CR dropped as the console does"
    );
    let mut c = call(0x0300);
    pc.int(0x10, &mut c);
    assert_eq!(c.dx(), 0x0105, "AH=03h: DH row 1, DL column 5");
    assert_eq!(c.cx(), 0x0d0e, "the underline cursor");
}

#[test]
fn teletype_scrolls_at_the_bottom() {
    let mut pc = pc(1);
    for n in 0..25 {
        pc.teletype(format!("line {n}\r\n").as_bytes());
    }
    assert!(pc.row(0).starts_with("line 1 "), "line 0 scrolled off");
    assert!(pc.row(23).starts_with("line 24 "));
    assert_eq!(pc.row(24).trim(), "");
    assert_eq!(pc.bytes(0x450, 2), [0, 24]);
}

#[test]
fn scroll_and_write_character_services() {
    let mut pc = pc(1);
    pc.teletype(b"a\r\nb\r\nc");
    let mut c = call(0x0601); // scroll up one line, the whole screen
    c.set_cx(0x0000);
    c.set_dx(0x184f);
    c.set_bx(0x1f00);
    pc.int(0x10, &mut c);
    assert!(pc.row(0).starts_with('b') && pc.row(1).starts_with('c'));
    assert_eq!(
        pc.bytes(0xb8000 + 24 * 160, 2),
        [b' ', 0x1f],
        "new line in BH's colour"
    );
    let mut c = call(0x0200); // cursor to row 3, column 2
    c.set_dx(0x0302);
    pc.int(0x10, &mut c);
    let mut c = call(0x0900 | u16::from(b'x'));
    c.set_bx(0x004e);
    c.set_cx(3);
    pc.int(0x10, &mut c);
    assert_eq!(&pc.row(3)[..6], "  xxx ");
    assert_eq!(pc.bytes(0xb8000 + 3 * 160 + 4, 2), [b'x', 0x4e]);
    let mut c = call(0x0800);
    pc.int(0x10, &mut c);
    assert_eq!(c.ax(), 0x4e78, "AH attribute, AL character");
    let mut c = call(0x0f00);
    pc.int(0x10, &mut c);
    assert_eq!(c.ax(), 0x5003, "80 columns, mode 3");
}

#[test]
fn a_graphics_mode_is_unsupported_and_counted() {
    let mut pc = pc(1);
    let mut c = call(0x0013);
    assert_eq!(pc.int(0x10, &mut c), Served::Unsupported);
    assert_eq!(pc.bios.unsupported.count, 1);
    assert_eq!(
        pc.bios.unsupported.first.as_deref(),
        Some("int 10h AH=00h AL=13h")
    );
}

/// A disk address packet at 0x600 for `count` sectors from `lba` into 0000:`buffer`.
fn packet(pc: &Pc, count: u16, buffer: u16, lba: u64) -> Call {
    let mut dap = vec![16, 0];
    dap.extend(count.to_le_bytes());
    dap.extend(buffer.to_le_bytes());
    dap.extend(0u16.to_le_bytes());
    dap.extend(lba.to_le_bytes());
    pc.put(0x600, &dap);
    let mut c = call(0x4200);
    c.set_dx(0x0080);
    c.regs.rsi = 0x600;
    c
}

#[test]
fn extended_reads_copy_sectors_and_fail_past_the_end() {
    let mut pc = pc(4);
    let mut c = call(0x4100);
    c.set_bx(0x55aa);
    c.set_dx(0x0080);
    pc.int(0x13, &mut c);
    assert!(!c.carry);
    assert_eq!((c.bx(), c.cx() & 1), (0xaa55, 1), "EDD with packet calls");
    let mut c = packet(&pc, 2, 0x8000, 1);
    pc.int(0x13, &mut c);
    assert!(!c.carry);
    assert_eq!(pc.bytes(0x8000, 1), [1]);
    assert_eq!(
        pc.bytes(0x81ff + 0x200, 1),
        [2],
        "the second sector follows"
    );
    let mut c = packet(&pc, 2, 0x9000, 3);
    pc.int(0x13, &mut c);
    assert!(c.carry, "sector 4 is past the image");
    assert_eq!(c.ah(), 0x04);
    assert_eq!(pc.bytes(0x602, 2), [0, 0], "the packet says nothing moved");
    assert_eq!(pc.bytes(0x9000, 1), [0], "nothing was written");
    let mut c = call(0x0100);
    c.set_dx(0x0080);
    pc.int(0x13, &mut c);
    assert_eq!(c.ah(), 0x04, "AH=01h: the last status");
}

#[test]
fn chs_reads_use_the_made_up_geometry() {
    // 16 heads × 63 sectors: sector 1 of head 1 is LBA 63.
    let mut pc = pc(70);
    let mut c = call(0x0201);
    c.set_cx(0x0001); // cylinder 0, sector 1
    c.set_dx(0x0180); // head 1, drive 80h
    c.set_bx(0x7000);
    pc.int(0x13, &mut c);
    assert!(!c.carry);
    assert_eq!(c.al(), 1);
    assert_eq!(pc.bytes(0x7000, 1), [63]);
    let mut c = call(0x0800);
    c.set_dx(0x0080);
    pc.int(0x13, &mut c);
    assert_eq!(c.cx(), 0x003f, "last cylinder 0, 63 sectors a track");
    assert_eq!(c.dx(), 0x0f01, "last head 15, one disk");
    let mut c = call(0x0201);
    c.set_cx(0x0040); // sector 0 does not exist
    c.set_dx(0x0080);
    pc.int(0x13, &mut c);
    assert!(c.carry);
}

#[test]
fn writes_change_the_copy_and_other_drives_fail() {
    let mut pc = pc(2);
    pc.put(0x5000, &[0xab; 512]);
    let mut c = packet(&pc, 1, 0x5000, 1);
    c.set_ah(0x43);
    pc.int(0x13, &mut c);
    assert!(!c.carry);
    let mut c = packet(&pc, 1, 0x6000, 1);
    pc.int(0x13, &mut c);
    assert_eq!(
        pc.bytes(0x6000, 2),
        [0xab, 0xab],
        "read back what was written"
    );
    let mut c = call(0x0201);
    c.set_dx(0x0081);
    pc.int(0x13, &mut c);
    assert!(c.carry, "drive 81h does not exist");
    let mut c = call(0x1500);
    c.set_dx(0x0081);
    pc.int(0x13, &mut c);
    assert_eq!((c.carry, c.ah()), (false, 0), "AH=15h: no such drive");
}

#[test]
fn drive_parameters_describe_the_image() {
    let mut pc = pc(3);
    pc.put(0x700, &0x1eu16.to_le_bytes());
    let mut c = call(0x4800);
    c.set_dx(0x0080);
    c.regs.rsi = 0x700;
    pc.int(0x13, &mut c);
    assert!(!c.carry);
    let table = pc.bytes(0x700, 0x1a);
    assert_eq!(&table[0x10..0x18], &3u64.to_le_bytes(), "3 sectors");
    assert_eq!(&table[0x18..0x1a], &512u16.to_le_bytes());
}

#[test]
fn e820_walks_the_memory_map() {
    let mut pc = pc(1);
    let mut entries = Vec::new();
    let mut next = 0u32;
    loop {
        let mut c = call(0);
        c.set_eax(0xe820);
        c.set_ebx(next);
        c.set_ecx(24);
        c.regs.rdx = 0x534d_4150;
        c.regs.rdi = 0x500;
        pc.int(0x15, &mut c);
        assert!(!c.carry);
        assert_eq!(c.eax(), 0x534d_4150);
        let e = pc.bytes(0x500, 24);
        entries.push((
            u64::from_le_bytes(e[0..8].try_into().unwrap()),
            u64::from_le_bytes(e[8..16].try_into().unwrap()),
            e[16],
        ));
        next = crate::narrow::low_u32(c.regs.rbx);
        if next == 0 {
            break;
        }
    }
    assert_eq!(
        entries,
        [
            (0, 0xa0000, 1),
            (0xa0000, 0x60000, 2),
            (0x10_0000, (128 << 20) - 0x10_0000, 1)
        ]
    );
    let mut c = call(0);
    c.set_eax(0xe820);
    c.set_ecx(16);
    c.regs.rdx = 0x534d_4150;
    pc.int(0x15, &mut c);
    assert!(c.carry, "a buffer under 20 bytes is refused");
}

#[test]
fn memory_sizes_and_a20() {
    let mut pc = pc(1);
    let mut c = call(0xe801);
    pc.int(0x15, &mut c);
    assert_eq!((c.ax(), c.bx()), (15 * 1024, 112 * 16));
    let mut c = call(0x8800);
    pc.int(0x15, &mut c);
    assert_eq!(c.ax(), 0xfc00, "capped at 63 MiB");
    let mut c = call(0x2401);
    c.carry = true;
    pc.int(0x15, &mut c);
    assert_eq!((c.carry, c.ah()), (false, 0), "A20 on");
    let mut c = call(0x2402);
    pc.int(0x15, &mut c);
    assert_eq!(c.al(), 1, "A20 is on");
    let mut c = call(0x2400);
    assert_eq!(
        pc.int(0x15, &mut c),
        Served::Unsupported,
        "A20 cannot be turned off"
    );
    assert!(c.carry);
    let mut c = call(0);
    pc.int(0x12, &mut c);
    assert_eq!(c.ax(), 640);
}

#[test]
fn move_block_copies_above_1_mib() {
    let mut pc = pc(1);
    pc.put(0x2000, b"kernel bytes");
    let mut gdt = vec![0u8; 0x30];
    let descriptor = |base: u32| {
        let b = base.to_le_bytes();
        [0xff, 0xff, b[0], b[1], b[2], 0x93, 0, b[3]]
    };
    gdt[0x10..0x18].copy_from_slice(&descriptor(0x2000));
    gdt[0x18..0x20].copy_from_slice(&descriptor(0x10_0000));
    pc.put(0x3000, &gdt);
    let mut c = call(0x8700);
    c.set_cx(6);
    c.regs.rsi = 0x3000;
    pc.int(0x15, &mut c);
    assert!(!c.carry);
    assert_eq!(pc.bytes(0x10_0000, 12), b"kernel bytes");
    gdt[0x18..0x20].copy_from_slice(&descriptor(0x0800_0000));
    pc.put(0x3000, &gdt);
    let mut c = call(0x8700);
    c.set_cx(6);
    c.regs.rsi = 0x3000;
    pc.int(0x15, &mut c);
    assert!(c.carry, "128 MiB is past this RAM");
}

#[test]
fn the_clock_reads_the_rtc() {
    let mut pc = pc(1);
    let mut c = call(0x0200);
    pc.int(0x1a, &mut c);
    assert_eq!((c.cx(), c.dx()), (0x0652, 0x0100), "06:52:01 in BCD");
    let mut c = call(0x0400);
    pc.int(0x1a, &mut c);
    assert_eq!((c.cx(), c.dx()), (0x2026, 0x1202), "2026-12-02");
    let mut c = call(0x0000);
    pc.int(0x1a, &mut c);
    assert_eq!(u32::from(c.cx()) << 16 | u32::from(c.dx()), 450_083);
}

#[test]
fn irq0_ticks_and_is_acknowledged() {
    let mut pc = pc(1);
    pc.devices.pic.set_irq(0, true);
    assert_eq!(pc.devices.pic.acknowledge(), Some(0x08));
    let mut c = call(0);
    assert_eq!(pc.int(0x08, &mut c), Served::Done);
    assert_eq!(pc.bytes(0x46c, 4), 450_084u32.to_le_bytes());
    assert_eq!(pc.devices.pic.master.isr, 0, "EOI sent");
    assert!(pc.bios.calls.is_empty(), "an IRQ is not a call");
    // Vector 8 with no IRQ in service is the CPU's: a double fault.
    let mut c = call(0);
    assert_eq!(pc.int(0x08, &mut c), Served::Exception);
}

#[test]
fn exception_vectors_are_the_cpus_and_the_rest_are_calls() {
    let mut pc = pc(1);
    for vector in [0x00, 0x01, 0x03, 0x04, 0x06, 0x07, 0x0c, 0x0d] {
        let mut c = call(0);
        assert_eq!(
            pc.int(vector, &mut c),
            Served::Exception,
            "int {vector:02x}h"
        );
    }
    // NMI and int 05h (print screen) are the BIOS's to serve; nothing here serves them.
    for vector in [0x02, 0x05] {
        let mut c = call(0);
        assert_eq!(pc.int(vector, &mut c), Served::Done, "int {vector:02x}h");
    }
    assert_eq!(pc.bios.unexpected.count, 2);
}

#[test]
fn the_keyboard_has_no_keys() {
    let mut pc = pc(1);
    let mut c = call(0x0100);
    pc.int(0x16, &mut c);
    assert_eq!(c.zero, Some(true), "no key waiting");
    let mut c = call(0x0000);
    assert_eq!(pc.int(0x16, &mut c), Served::WaitsForKey);
}

#[test]
fn the_report_counts_calls_by_function() {
    let mut pc = pc(1);
    pc.teletype(b"ab");
    let mut c = call(0xc000);
    pc.int(0x15, &mut c);
    let mut c = call(0);
    pc.int(0x05, &mut c);
    let text = pc.bios.report().to_string();
    assert_eq!(
        text,
        "  BIOS   3 calls served: int 10h ×2 (AH 0eh ×2); int 15h ×1 (AH c0h ×1)\n\
         \x20 note   1 BIOS calls are not supported here (first: int 15h AH=c0h AL=00h); each returned CF set\n\
         \x20 note   1 interrupts reached a BIOS vector with no service (first: int 05h): a CPU exception in real mode, or an int no BIOS answers; each returned at once\n"
    );
}

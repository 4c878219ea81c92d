use super::*;
use crate::console::DEFAULT_LIMIT;

fn devices() -> Devices {
    Devices::new(ConsoleSink::new(false, None, DEFAULT_LIMIT).unwrap()).unwrap()
}

#[test]
fn a_byte_to_thr_is_transmitted() {
    let mut d = devices();
    assert_eq!(d.port_write(0x3f8, b"A"), PortWrite::Done);
    assert_eq!(d.com1.sink().captured(), b"A");
    assert_eq!(d.stray, StrayAccesses::default());
}

#[test]
fn a_wide_out_writes_consecutive_registers() {
    let mut d = devices();
    // `out dx, ax` with AX = 0x0103 at 0x3fb: LCR (0x3fb) gets 0x03, MCR (0x3fc) 0x01.
    d.port_write(0x3fb, &[0x03, 0x01]);
    let mut both = [0; 2];
    d.port_read(0x3fb, &mut both);
    assert_eq!(both, [0x03, 0x01]);
    assert_eq!(d.com1.sink().captured(), b"", "nothing reached THR");
    assert_eq!(d.stray.count, 0);
}

#[test]
fn bytes_past_com1_are_stray() {
    let mut d = devices();
    d.port_write(0x3ff, &[0x11, 0x22]);
    assert_eq!(d.stray.count, 1);
    assert_eq!(d.stray.first.as_deref(), Some("out 0x22 to port 0x400"));
}

#[test]
fn the_debug_exit_port_ends_the_run_with_the_low_byte() {
    let mut d = devices();
    assert_eq!(d.port_write(0xf4, &[7]), PortWrite::Exit { code: 7 });
    assert_eq!(d.stray.count, 0);
    assert_eq!(
        d.port_write(0xf4, &[1, 1, 0, 0]),
        PortWrite::Exit { code: 1 }
    );
    assert_eq!(d.stray.count, 1, "the ignored upper bytes are reported");
}

#[test]
fn unknown_ports_are_stray_and_read_as_all_ones() {
    let mut d = devices();
    assert_eq!(d.port_write(0x82, &[0x34, 0x12]), PortWrite::Done);
    let mut data = [0; 4];
    d.port_read(0x378, &mut data);
    assert_eq!(data, [0xff; 4]);
    assert_eq!(d.stray.count, 2);
    assert_eq!(d.stray.first.as_deref(), Some("out 0x1234 to port 0x82"));
    let mut exit_port = [0];
    d.port_read(0xf4, &mut exit_port);
    assert_eq!(exit_port, [0xff], "the debug-exit port is write-only");
}

#[test]
fn a_read_from_com1_sees_its_registers() {
    let mut d = devices();
    let mut lsr = [0];
    d.port_read(0x3fd, &mut lsr);
    assert_eq!(lsr, [0x60], "transmitter empty and idle");
    assert_eq!(d.stray.count, 0);
}

#[test]
fn accesses_at_the_top_of_the_port_space_wrap_without_panicking() {
    let mut d = devices();
    d.port_write(0xffff, &[1, 2, 3, 4]);
    let mut data = [0; 4];
    d.port_read(0xffff, &mut data);
    assert_eq!(data, [0xff; 4]);
}

#[test]
fn mmio_reaches_no_device_yet() {
    let mut d = devices();
    let mut data = [0; 4];
    d.mmio_read(Gpa::new(0xfee0_0030), &mut data);
    assert_eq!(data, [0xff; 4]);
    d.mmio_write(Gpa::new(0xb8000), &[0x41]);
    assert_eq!(d.stray.count, 2);
    assert_eq!(
        d.stray.first.as_deref(),
        Some("read of 4 bytes at physical 0xfee00030")
    );
}

#[test]
fn the_debug_console_prints_like_com1_and_answers_0xe9() {
    let mut d = devices();
    for &b in b"dbg\r\n" {
        d.port_write(0xe9, &[b]);
    }
    assert_eq!(d.com1.sink().captured(), b"dbg\n");
    let mut probe = [0];
    d.port_read(0xe9, &mut probe);
    assert_eq!(probe, [0xe9]);
    assert_eq!(d.stray.count, 0);
}

#[test]
fn post_codes_keep_the_last_eight() {
    let mut d = devices();
    for code in 1..=10u8 {
        d.port_write(0x80, &[code]);
    }
    assert_eq!(d.post_codes, [3, 4, 5, 6, 7, 8, 9, 10]);
    assert_eq!(d.stray.count, 0, "Linux's I/O delay writes here: not stray");
}

#[test]
fn the_pic_and_pit_answer_on_their_ports() {
    let mut d = devices();
    d.set_clock(Clock::Fixed(Duration::ZERO));
    // Remap, unmask IRQ 0 only, then the PIT at 1 kHz.
    for (port, value) in [(0x20, 0x11), (0x21, 0x20), (0x21, 0x04), (0x21, 0x01)] {
        d.port_write(port, &[value]);
    }
    d.port_write(0x21, &[0xfe]);
    d.port_write(0x43, &[0x34]);
    d.port_write(0x40, &[0xa9]);
    d.port_write(0x40, &[0x04]);
    let mut mask = [0];
    d.port_read(0x21, &mut mask);
    assert_eq!(mask, [0xfe]);
    assert_eq!(d.pit.irq0_period(), Some(Duration::from_nanos(999_847)));
    d.set_clock(Clock::Fixed(Duration::from_millis(3)));
    let mut port_b = [0];
    d.port_read(0x61, &mut port_b);
    assert_eq!(d.stray.count, 0);
}

#[test]
fn the_cmos_answers_on_0x70_and_0x71_with_the_vms_memory() {
    let mut d = devices();
    d.set_ram(128 << 20, 0);
    d.port_write(0x70, &[0x0d]);
    let mut valid = [0];
    d.port_read(0x71, &mut valid);
    assert_eq!(valid, [0x80]);
    d.port_write(0x70, &[0x30]);
    let mut extended = [0];
    d.port_read(0x71, &mut extended);
    assert_eq!(
        extended,
        [0xff],
        "127 MiB above 1 MiB: capped at 0xffff KiB"
    );
    d.port_write(0x70, &[0x35]);
    let mut above_16m = [0];
    d.port_read(0x71, &mut above_16m);
    assert_eq!(
        above_16m,
        [0x07],
        "112 MiB above 16 MiB: 0x700 blocks of 64 KiB"
    );
    assert_eq!(d.stray.count, 0);
}

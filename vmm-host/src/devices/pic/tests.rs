use super::*;

/// The remap every protected-mode kernel does: IRQ 0–7 at 0x20, 8–15 at 0x28, cascade on 2.
fn remapped() -> Pic {
    let mut pic = Pic::default();
    for (port, value) in [
        (0x20, 0x11),
        (0xa0, 0x11),
        (0x21, 0x20),
        (0xa1, 0x28),
        (0x21, 0x04),
        (0xa1, 0x02),
        (0x21, 0x01),
        (0xa1, 0x01),
        (0x21, 0x00),
        (0xa1, 0x00),
    ] {
        pic.write(port, value);
    }
    pic
}

#[test]
fn the_remap_moves_irq0_to_its_new_vector_and_eoi_lets_the_next_one_in() {
    let mut pic = remapped();
    assert!(pic.master.initialised && pic.slave.initialised);
    assert!(!pic.has_pending());
    pic.set_irq(0, true);
    assert_eq!(pic.acknowledge(), Some(0x20));
    assert_eq!(pic.master.isr, 1, "in service until EOI");
    // Another tick while in service: requested, but not delivered before EOI.
    pic.set_irq(0, false);
    pic.set_irq(0, true);
    assert!(!pic.has_pending());
    pic.write(0x20, 0x20);
    assert_eq!(pic.acknowledge(), Some(0x20));
}

#[test]
fn a_held_edge_line_requests_once() {
    let mut pic = remapped();
    pic.set_irq(1, true);
    assert_eq!(pic.acknowledge(), Some(0x21));
    pic.write(0x20, 0x20);
    pic.set_irq(1, true);
    assert_eq!(pic.acknowledge(), None, "no new edge");
}

#[test]
fn masked_lines_wait_and_priority_goes_to_the_lowest_line() {
    let mut pic = remapped();
    pic.write(0x21, 0x01);
    pic.set_irq(0, true);
    pic.set_irq(3, true);
    assert_eq!(pic.acknowledge(), Some(0x23), "IRQ 0 is masked");
    pic.write(0x21, 0x00);
    // IRQ 0 outranks IRQ 3, which is in service.
    assert_eq!(pic.acknowledge(), Some(0x20));
    assert_eq!(pic.master.isr, 0b1001);
    // Non-specific EOI ends the highest-priority one in service: IRQ 0.
    pic.write(0x20, 0x20);
    assert_eq!(pic.master.isr, 0b1000);
    // Specific EOI for line 3.
    pic.write(0x20, 0x63);
    assert_eq!(pic.master.isr, 0);
}

#[test]
fn slave_irqs_come_through_the_cascade_and_need_both_eois() {
    let mut pic = remapped();
    pic.set_irq(12, true);
    assert!(pic.has_pending());
    assert_eq!(pic.acknowledge(), Some(0x2c));
    assert_eq!((pic.master.isr, pic.slave.isr), (0b100, 0b1_0000));
    pic.write(0xa0, 0x20);
    pic.write(0x20, 0x20);
    assert_eq!((pic.master.isr, pic.slave.isr), (0, 0));
}

#[test]
fn ocw3_chooses_irr_or_isr_and_the_data_port_reads_the_mask() {
    let mut pic = remapped();
    pic.write(0x21, 0xfe);
    pic.set_irq(0, true);
    pic.set_irq(5, true);
    assert_eq!(pic.read(0x20), 0b10_0001, "IRR by default");
    pic.acknowledge();
    pic.write(0x20, 0x0b);
    assert_eq!(pic.read(0x20), 0b1, "ISR after OCW3 with RIS");
    pic.write(0x20, 0x0a);
    assert_eq!(pic.read(0x20), 0b10_0000);
    assert_eq!(pic.read(0x21), 0xfe);
}

#[test]
fn auto_eoi_leaves_nothing_in_service() {
    let mut pic = Pic::default();
    for (port, value) in [(0x20, 0x11), (0x21, 0x08), (0x21, 0x04), (0x21, 0x03)] {
        pic.write(port, value);
    }
    pic.set_irq(0, true);
    assert_eq!(pic.acknowledge(), Some(0x08), "the BIOS's vector base");
    assert_eq!(pic.master.isr, 0);
}

#[test]
fn a_level_triggered_line_requests_while_high() {
    let mut pic = remapped();
    pic.write(0x4d1, 0x08);
    assert_eq!(pic.read(0x4d1), 0x08);
    pic.set_irq(11, true);
    assert_eq!(pic.acknowledge(), Some(0x2b));
    pic.write(0xa0, 0x20);
    pic.write(0x20, 0x20);
    assert_eq!(pic.acknowledge(), Some(0x2b), "still high: requested again");
    pic.set_irq(11, false);
    pic.write(0xa0, 0x20);
    pic.write(0x20, 0x20);
    assert_eq!(pic.acknowledge(), None);
}

#[test]
fn a_slave_request_gone_before_inta_is_the_spurious_irq_15() {
    let mut pic = remapped();
    pic.write(0x4d1, 0x08);
    pic.set_irq(11, true);
    // The master saw the cascade line rise; the slave's level line drops before INTA.
    pic.slave.irr = 0;
    assert_eq!(pic.acknowledge(), Some(0x2f));
    assert_eq!(pic.slave.isr, 0, "a spurious IRQ is not in service");
}

#[test]
fn both_chips_at_one_base_is_reported_once_both_are_initialised() {
    let mut pic = Pic::default();
    let program = |pic: &mut Pic, port: u16, base: u8| {
        for (offset, value) in [(0, 0x11), (1, base), (1, 0x04), (1, 0x01)] {
            pic.write(port + offset, value);
        }
    };
    program(&mut pic, 0x20, 0x20);
    assert_eq!(
        pic.shared_vector_base(),
        None,
        "the slave is not initialised yet"
    );
    program(&mut pic, 0xa0, 0x28);
    assert_eq!(pic.shared_vector_base(), None);
    program(&mut pic, 0xa0, 0x20);
    assert_eq!(pic.shared_vector_base(), Some(0x20));
}

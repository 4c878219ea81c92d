use super::*;

const MS: Duration = Duration::from_millis(1);

/// Channel 0 in mode `mode` with `count`, written at time `at`.
fn programmed(mode: u8, count: u16, at: Duration) -> Pit {
    let mut pit = Pit::default();
    pit.write(0x43, 0x30 | mode << 1, at);
    let [low, high] = count.to_le_bytes();
    pit.write(0x40, low, at);
    pit.write(0x40, high, at);
    pit
}

#[test]
fn a_rate_generator_at_100_hz_ticks_every_10_ms() {
    // 1193182 / 11932 = 100 Hz, the rate many hobby kernels choose.
    let mut pit = programmed(2, 11932, Duration::ZERO);
    assert_eq!(pit.irq0_period(), Some(Duration::from_nanos(10_000_150)));
    assert_eq!(pit.take_irq0_edges(9 * MS), 0);
    assert_eq!(pit.take_irq0_edges(10 * MS + Duration::from_micros(1)), 1);
    assert_eq!(pit.take_irq0_edges(10 * MS + Duration::from_micros(2)), 0);
    assert_eq!(
        pit.take_irq0_edges(55 * MS),
        4,
        "missed ticks are counted, not lost"
    );
    let next = pit.next_irq0().unwrap();
    assert!(next > 55 * MS && next <= 60 * MS + MS, "{next:?}");
}

#[test]
fn mode_0_fires_once_at_terminal_count() {
    let mut pit = programmed(0, 1193, Duration::ZERO);
    assert_eq!(pit.take_irq0_edges(Duration::from_micros(900)), 0);
    assert_eq!(pit.take_irq0_edges(2 * MS), 1);
    assert_eq!(pit.take_irq0_edges(100 * MS), 0);
    assert_eq!(pit.next_irq0(), None);
}

#[test]
fn the_count_runs_down_and_a_latch_freezes_it_for_both_bytes() {
    let mut pit = programmed(2, 0x1000, Duration::ZERO);
    // 0x100 input ticks after loading: 0x1000 - 0x100 left.
    let at = Duration::from_nanos(0x100 * 1_000_000_000 / HZ + 1);
    pit.write(0x43, 0x00, at);
    let later = at + 3 * MS;
    let low = pit.read(0x40, later);
    let high = pit.read(0x40, later);
    assert_eq!(u16::from_le_bytes([low, high]), 0x0f00);
    // Unlatched, the next read sees the counter move.
    let low = pit.read(0x40, later);
    let high = pit.read(0x40, later);
    assert_ne!(u16::from_le_bytes([low, high]), 0x0f00);
}

#[test]
fn a_zero_count_means_65536() {
    let mut pit = programmed(2, 0, Duration::ZERO);
    assert_eq!(pit.irq0_period(), Some(Duration::from_nanos(54_925_401)));
    assert_eq!(pit.take_irq0_edges(110 * MS), 2);
}

#[test]
fn read_back_latches_status_then_count() {
    let mut pit = programmed(3, 100, Duration::ZERO);
    // Read-back: status and count of channel 0.
    pit.write(0x43, 0b1100_0010, MS);
    let status = pit.read(0x40, MS);
    assert_eq!(
        status & 0x3f,
        0b11_0110,
        "lobyte/hibyte access, mode 3, binary"
    );
    let low = pit.read(0x40, MS);
    let high = pit.read(0x40, MS);
    assert!(u16::from_le_bytes([low, high]) <= 100);
}

#[test]
fn port_b_gates_channel_2_and_shows_its_out_pin() {
    let mut pit = Pit::default();
    pit.write(0x61, 0x01, Duration::ZERO);
    pit.write(0x43, 0b1011_0000, Duration::ZERO);
    pit.write(0x42, 0x9b, Duration::ZERO);
    pit.write(0x42, 0x2e, Duration::ZERO);
    assert_eq!(pit.read(0x61, MS) & 0x21, 0x01, "gate on, OUT still low");
    assert_eq!(
        pit.read(0x61, 20 * MS) & 0x21,
        0x21,
        "terminal count after 10 ms"
    );
    assert_eq!(pit.take_irq0_edges(20 * MS), 0, "channel 2 raises no IRQ");
}

#[test]
fn an_unprogrammed_pit_raises_nothing() {
    let mut pit = Pit::default();
    assert_eq!(pit.take_irq0_edges(Duration::from_secs(10)), 0);
    assert_eq!(pit.next_irq0(), None);
    assert_eq!(pit.irq0_period(), None);
    assert_eq!(pit.read(0x43, MS), 0xff);
}

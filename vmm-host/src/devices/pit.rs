//! The 8254 programmable interval timer (ports 0x40–0x43) and the timer bits of system
//! control port B (0x61): channel 0 drives IRQ 0, channel 2 the speaker and the gate/OUT pair
//! kernels poll to calibrate their TSC.
//!
//! Time is passed in (time since the VM started), so the model is deterministic under test
//! and the run loop decides what "now" is. Modes 0 and 4 count once; 2 and 3 repeat (3 as a
//! square wave); 1 and 5 are treated as 0 (their hardware gate trigger is not modelled).
//! BCD counting is accepted and counted in binary.

use std::time::Duration;

/// Channel 0–2 data ports start here; the mode/command register is `BASE + 3`.
pub const BASE: u16 = 0x40;
/// System control port B.
pub const PORT_B: u16 = 0x61;
/// The PIT's input clock.
pub const HZ: u64 = 1_193_182;

/// Which bytes of the count a channel's data port reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Access {
    Low,
    High,
    #[default]
    LowHigh,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Channel {
    mode: u8,
    access: Access,
    /// The count loaded, 1 to 65536 (a written 0 means 65536).
    reload: u32,
    /// When counting started; `None` until a full count is written.
    loaded_at: Option<Duration>,
    /// The low byte of a two-byte write, waiting for the high byte.
    low_written: Option<u8>,
    /// The next read of a two-byte value returns the high byte.
    high_next: bool,
    latched_count: Option<u16>,
    latched_status: Option<u8>,
    /// Periods (or the single terminal count) already reported as IRQ 0 edges.
    edges_reported: u64,
}

impl Channel {
    /// Input clock ticks since counting started.
    fn elapsed(&self, now: Duration) -> Option<u64> {
        let since = now.checked_sub(self.loaded_at?)?;
        let ticks = since.as_nanos() * u128::from(HZ) / 1_000_000_000;
        Some(u64::try_from(ticks).unwrap_or(u64::MAX))
    }

    fn periodic(&self) -> bool {
        matches!(self.mode, 2 | 3 | 6 | 7)
    }

    /// The counting element's value now.
    fn count(&self, now: Duration) -> u16 {
        let Some(elapsed) = self.elapsed(now) else {
            return 0;
        };
        let reload = u64::from(self.reload.max(1));
        let left = if self.periodic() {
            reload - elapsed % reload
        } else {
            // After terminal count the counter wraps and keeps counting down from 0xFFFF.
            reload.wrapping_sub(elapsed) & 0xffff
        };
        u16::try_from(left & 0xffff).unwrap_or(0)
    }

    /// The OUT pin now.
    fn out(&self, now: Duration) -> bool {
        let Some(elapsed) = self.elapsed(now) else {
            // Mode 0 holds OUT low from the control word until the count completes.
            return self.mode != 0;
        };
        let reload = u64::from(self.reload.max(1));
        match self.mode {
            2 | 6 => elapsed % reload != reload - 1,
            3 | 7 => elapsed % reload < reload.div_ceil(2),
            _ => elapsed >= reload,
        }
    }

    /// Rising IRQ edges from channel 0 up to `now`: one per period, or one at terminal count.
    fn edges_until(&self, now: Duration) -> u64 {
        let Some(elapsed) = self.elapsed(now) else {
            return 0;
        };
        let reload = u64::from(self.reload.max(1));
        if self.periodic() {
            elapsed / reload
        } else {
            u64::from(elapsed >= reload)
        }
    }

    /// When the next edge after those reported comes, as time since the VM started.
    fn next_edge(&self) -> Option<Duration> {
        let start = self.loaded_at?;
        if !self.periodic() && self.edges_reported > 0 {
            return None;
        }
        let ticks = u128::from(self.reload.max(1)) * u128::from(self.edges_reported + 1);
        let nanos = ticks * 1_000_000_000 / u128::from(HZ);
        Some(start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)))
    }

    fn write_count(&mut self, value: u8, now: Duration) {
        let full = match (self.access, self.low_written.take()) {
            (Access::Low, _) => u32::from(value),
            (Access::High, _) => u32::from(value) << 8,
            (Access::LowHigh, None) => {
                self.low_written = Some(value);
                return;
            }
            (Access::LowHigh, Some(low)) => u32::from(low) | u32::from(value) << 8,
        };
        self.reload = if full == 0 { 0x1_0000 } else { full };
        self.loaded_at = Some(now);
        self.edges_reported = 0;
    }

    fn read(&mut self, now: Duration) -> u8 {
        if let Some(status) = self.latched_status.take() {
            return status;
        }
        let value = self.latched_count.unwrap_or_else(|| self.count(now));
        let [low, high] = value.to_le_bytes();
        let byte = match self.access {
            Access::Low => low,
            Access::High => high,
            Access::LowHigh if self.high_next => high,
            Access::LowHigh => low,
        };
        let done = self.access != Access::LowHigh || self.high_next;
        if self.access == Access::LowHigh {
            self.high_next = !self.high_next;
        }
        if done {
            self.latched_count = None;
        }
        byte
    }

    fn status(&self, now: Duration) -> u8 {
        let access = match self.access {
            Access::Low => 1,
            Access::High => 2,
            Access::LowHigh => 3,
        };
        let null_count = self.loaded_at.is_none();
        u8::from(self.out(now)) << 7 | u8::from(null_count) << 6 | access << 4 | self.mode << 1
    }
}

/// The three channels and port B's gate and speaker bits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pit {
    channels: [Channel; 3],
    /// Port B bits 0 (channel 2 gate) and 1 (speaker data), as written.
    port_b: u8,
}

impl Pit {
    /// A write to 0x40–0x43 or 0x61 at time `now`.
    pub fn write(&mut self, port: u16, value: u8, now: Duration) {
        match port {
            0x40..=0x42 => self.channels[usize::from(port - BASE)].write_count(value, now),
            0x43 => self.control(value, now),
            PORT_B => self.port_b = value & 0x03,
            _ => {}
        }
    }

    /// A read of 0x40–0x42 or 0x61 at time `now` (the control register reads as all ones).
    pub fn read(&mut self, port: u16, now: Duration) -> u8 {
        match port {
            0x40..=0x42 => self.channels[usize::from(port - BASE)].read(now),
            PORT_B => {
                // Bit 4 toggles with the DRAM refresh every 15.085 µs; bit 5 is channel 2's OUT.
                let refresh = (now.as_nanos() / 15_085) % 2 == 1;
                let out2 = self.port_b & 1 != 0 && self.channels[2].out(now);
                self.port_b | u8::from(refresh) << 4 | u8::from(out2) << 5
            }
            _ => 0xff,
        }
    }

    fn control(&mut self, value: u8, now: Duration) {
        let select = usize::from(value >> 6);
        if select == 3 {
            self.read_back(value, now);
            return;
        }
        let channel = &mut self.channels[select];
        let access = (value >> 4) & 3;
        if access == 0 {
            channel.latched_count.get_or_insert(channel.count(now));
            return;
        }
        *channel = Channel {
            mode: (value >> 1) & 7,
            access: match access {
                1 => Access::Low,
                2 => Access::High,
                _ => Access::LowHigh,
            },
            ..Channel::default()
        };
    }

    /// The read-back command: latch the count and/or status of the channels it names.
    fn read_back(&mut self, value: u8, now: Duration) {
        for (i, channel) in self.channels.iter_mut().enumerate() {
            if value & (2 << i) == 0 {
                continue;
            }
            if value & 0x20 == 0 {
                channel.latched_count.get_or_insert(channel.count(now));
            }
            if value & 0x10 == 0 {
                channel.latched_status.get_or_insert(channel.status(now));
            }
        }
    }

    /// IRQ 0 edges (channel 0's OUT rising) since the last call, up to `now`.
    pub fn take_irq0_edges(&mut self, now: Duration) -> u64 {
        let channel = &mut self.channels[0];
        let edges = channel.edges_until(now);
        let new = edges.saturating_sub(channel.edges_reported);
        channel.edges_reported = edges.max(channel.edges_reported);
        new
    }

    /// When channel 0 next raises IRQ 0, if it is counting.
    pub fn next_irq0(&self) -> Option<Duration> {
        self.channels[0].next_edge()
    }

    /// Each channel in a line, for `monitor pit`.
    pub fn describe(&self, now: Duration) -> String {
        let mut lines = Vec::new();
        for (i, channel) in self.channels.iter().enumerate() {
            let mode = match channel.mode {
                0 => "0 (interrupt on terminal count)",
                1 => "1 (one-shot)",
                2 | 6 => "2 (rate generator)",
                3 | 7 => "3 (square wave)",
                4 => "4 (software strobe)",
                _ => "5 (hardware strobe)",
            };
            let mut line = format!("channel {i}: ");
            if channel.loaded_at.is_none() {
                line.push_str("no count loaded");
            } else {
                let hz = HZ as f64 / f64::from(channel.reload.max(1));
                line.push_str(&format!(
                    "mode {mode}, count {} ({hz:.2} Hz), now {}",
                    channel.reload,
                    channel.count(now)
                ));
            }
            if i == 2 {
                let gate = if self.port_b & 1 != 0 { "on" } else { "off" };
                line.push_str(&format!("; gate {gate}"));
            }
            lines.push(line);
        }
        lines.join("\n")
    }

    /// Channel 0's period, when it repeats: what the report calls the timer's rate.
    pub fn irq0_period(&self) -> Option<Duration> {
        let channel = &self.channels[0];
        (channel.loaded_at.is_some() && channel.periodic()).then(|| {
            let nanos = u64::from(channel.reload) * 1_000_000_000 / HZ;
            Duration::from_nanos(nanos)
        })
    }
}

#[cfg(test)]
mod tests;

use super::*;
use crate::addr::Gpa;
use crate::console::{ConsoleSink, DEFAULT_LIMIT};
use std::collections::VecDeque;

/// A vCPU that returns scripted exits, each with the bytes of its data area.
#[derive(Default)]
struct ScriptedVcpu {
    exits: VecDeque<(Exit, Vec<u8>)>,
    data: Vec<u8>,
}

impl ScriptedVcpu {
    fn then(mut self, exit: Exit, data: &[u8]) -> Self {
        self.exits.push_back((exit, data.to_vec()));
        self
    }
}

impl Vcpu for ScriptedVcpu {
    fn run(&mut self) -> Exit {
        let (exit, data) = self.exits.pop_front().expect("the script ran out of exits");
        self.data = data;
        exit
    }

    fn exit_data(&mut self) -> &mut [u8] {
        &mut self.data
    }
}

fn devices() -> Devices {
    Devices::new(ConsoleSink::new(false, None, DEFAULT_LIMIT).unwrap()).unwrap()
}

fn out(port: u16, size: u8, count: u32) -> Exit {
    Exit::PortOut { port, size, count }
}

#[test]
fn rep_outsb_sends_every_byte_to_thr() {
    let mut vcpu = ScriptedVcpu::default().then(out(0x3f8, 1, 3), b"abc");
    let mut devices = devices();
    assert_eq!(next_event(&mut vcpu, &mut devices), Event::Served);
    assert_eq!(devices.com1.sink().captured(), b"abc");
}

#[test]
fn rep_outsw_repeats_each_pair_of_ports() {
    // Two words to 0x3fe: MSR, scratch, MSR, scratch. The scratch register keeps the last.
    let mut vcpu = ScriptedVcpu::default()
        .then(out(0x3fe, 2, 2), &[1, 2, 3, 4])
        .then(
            Exit::PortIn {
                port: 0x3ff,
                size: 1,
                count: 1,
            },
            &[0],
        );
    let mut devices = devices();
    next_event(&mut vcpu, &mut devices);
    assert_eq!(next_event(&mut vcpu, &mut devices), Event::Served);
    assert_eq!(vcpu.data, [4]);
}

#[test]
fn a_port_read_is_answered_in_the_exit_data() {
    let mut vcpu = ScriptedVcpu::default().then(
        Exit::PortIn {
            port: 0x3fd,
            size: 1,
            count: 1,
        },
        &[0],
    );
    assert_eq!(next_event(&mut vcpu, &mut devices()), Event::Served);
    assert_eq!(vcpu.data, [0x60], "COM1's line status: ready to send");
}

#[test]
fn the_debug_exit_port_ends_the_run_before_later_elements() {
    let mut vcpu = ScriptedVcpu::default().then(out(0xf4, 1, 2), &[5, 9]);
    assert_eq!(
        next_event(&mut vcpu, &mut devices()),
        Event::Ended(Ending::GuestExit { code: 5 })
    );
}

#[test]
fn mmio_reads_of_nothing_are_all_ones_and_counted() {
    let mut vcpu = ScriptedVcpu::default()
        .then(
            Exit::MmioRead {
                gpa: Gpa::new(0xfec0_0000),
                len: 4,
            },
            &[0; 4],
        )
        .then(
            Exit::MmioWrite {
                gpa: Gpa::new(0xfec0_0010),
                len: 1,
            },
            &[1],
        );
    let mut devices = devices();
    assert_eq!(next_event(&mut vcpu, &mut devices), Event::Served);
    assert_eq!(vcpu.data, [0xff; 4]);
    assert_eq!(next_event(&mut vcpu, &mut devices), Event::Served);
    assert_eq!(devices.stray.count, 2);
}

#[test]
fn exits_that_end_the_run_say_how() {
    let cases = [
        (Exit::Shutdown, Ending::TripleFault),
        (
            Exit::FailEntry { reason: 7, cpu: 0 },
            Ending::EntryFailure { reason: 7, cpu: 0 },
        ),
        (
            Exit::InternalError {
                suberror: 1,
                data: vec![2],
            },
            Ending::InternalError {
                suberror: 1,
                data: vec![2],
            },
        ),
        (
            Exit::Unexpected("Hypercall".into()),
            Ending::HostError {
                what: "unexpected VM exit Hypercall".into(),
            },
        ),
        (
            Exit::Failed("Bad address (os error 14)".into()),
            Ending::HostError {
                what: "KVM_RUN failed: Bad address (os error 14)".into(),
            },
        ),
    ];
    for (exit, ending) in cases {
        let mut vcpu = ScriptedVcpu::default().then(exit, &[]);
        assert_eq!(next_event(&mut vcpu, &mut devices()), Event::Ended(ending));
    }
}

#[test]
fn exits_the_loop_acts_on_pass_through() {
    let debug = DebugExit {
        exception: 1,
        pc: 0x1000,
        dr6: 0x4000,
    };
    let mut vcpu = ScriptedVcpu::default()
        .then(Exit::Hlt, &[])
        .then(Exit::Debug(debug), &[])
        .then(Exit::Kicked, &[]);
    let mut devices = devices();
    assert_eq!(next_event(&mut vcpu, &mut devices), Event::Halted);
    assert_eq!(next_event(&mut vcpu, &mut devices), Event::Debug(debug));
    let kicked = next_event(&mut vcpu, &mut devices);
    assert_eq!(kicked, Event::Kicked);
    assert!(kicked.idt_may_have_changed());
    assert!(Event::Served.idt_may_have_changed());
    assert!(!Event::Halted.idt_may_have_changed());
}

#[test]
fn a_reset_through_the_keyboard_controller_or_port_a_ends_the_run() {
    for (port, value, how) in [
        (
            0x64,
            0xfe,
            "the keyboard controller's reset command (0xfe to port 0x64)",
        ),
        (0x92, 0x01, "the fast-reset bit of port 0x92"),
    ] {
        let mut vcpu = ScriptedVcpu::default().then(out(port, 1, 1), &[value]);
        assert_eq!(
            next_event(&mut vcpu, &mut devices()),
            Event::Ended(Ending::Reset { how })
        );
    }
    // Other i8042 commands and A20 through port A go on.
    let mut vcpu = ScriptedVcpu::default()
        .then(out(0x64, 1, 1), &[0xd1])
        .then(out(0x92, 1, 1), &[0x02]);
    let mut devices = devices();
    assert_eq!(next_event(&mut vcpu, &mut devices), Event::Served);
    assert_eq!(next_event(&mut vcpu, &mut devices), Event::Served);
}

//! QEMU TCG as the oracle for what this project's nested KVM cannot run (../shared/notes):
//! 32-bit and PAE paging, and task gates.
//! - Paging: the 32-bit test kernel turns paging on under QEMU and takes its page fault; then
//!   QEMU's monitor lists every mapping (`info tlb`), its registers and its RAM, and vmm-host's
//!   walker and audit, reading that RAM with those registers, must map every page as QEMU does
//!   and explain the fault QEMU's `-d int` logged.
//! - Task gates: the kernel takes #DF in a task of its own; the tap's reading of the gate, the
//!   TSS and its link, on QEMU's RAM, must lead where QEMU went.

mod common;
use common::tcg::{Logged, exceptions_in, qemu_tcg};
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_host::addr::{Gpa, Gva};
use vmm_host::paging::{Access, CpuPaging, Cr3, Denial, Format, PagingMode, WalkEnd, audit, walk};

const RAM: usize = 16 << 20;
/// QEMU's default CPU (qemu64): 40 physical-address bits, PSE-36, NX.
const QEMU64: CpuPaging = CpuPaging {
    max_phys_addr: 40,
    gib_pages: false,
    pse36: true,
};

/// What the monitor said once the kernel had taken its fault.
struct Stopped {
    /// The kernel's serial output.
    serial: String,
    /// Exceptions (vectors 0–31) in QEMU's `-d int` log.
    exceptions: Vec<Logged>,
    cr0: u64,
    cr3: u64,
    cr4: u64,
    efer: u64,
    /// `info tlb`: (linear, physical, flags like "--PDA---W").
    tlb: Vec<(u64, u64, String)>,
    ram: GuestMemoryMmap,
    /// The monitor's `info registers` and `info tlb` output.
    monitor: String,
    fault: Logged,
}

impl Stopped {
    /// The `n`th hex word after the word `name` in `info registers`: `("GDT=", 1)` is the
    /// GDT's base in "GDT=     00200538 00000027", `("TR", 1)` TR's selector in "TR =0020 …".
    fn monitor_word(&self, name: &str, n: usize) -> u64 {
        let word = (self.monitor.split_whitespace())
            .skip_while(|w| *w != name)
            .nth(n)
            .unwrap_or_else(|| panic!("no {name} in the monitor's output:\n{}", self.monitor));
        u64::from_str_radix(word.trim_start_matches('='), 16).expect("hex word")
    }
}

/// Boot kernel32 with `cmdline` under QEMU TCG until its serial output says `until` (its
/// handler has reported), then read registers, mappings and RAM through the monitor.
fn run_under_qemu(cmdline: &str, until: &str, dir: &Path) -> Stopped {
    let (serial, dump, log) = (dir.join("serial"), dir.join("ram"), dir.join("int.log"));
    let mut qemu = qemu_tcg("16M")
        .args(["-monitor", "stdio"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .args(["-d", "int", "-D"])
        .arg(&log)
        .args(["-kernel", vmm_host::GUEST_KERNEL32, "-append", cmdline])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn qemu");
    // Without isa-debug-exit the handler's exit port does nothing: the kernel halts.
    let deadline = Instant::now() + Duration::from_secs(90);
    while !std::fs::read_to_string(&serial).is_ok_and(|s| s.contains(until)) {
        assert!(
            Instant::now() < deadline,
            "kernel32 {cmdline} never said {until:?} under QEMU"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let commands = format!(
        "info registers\ninfo tlb\npmemsave 0 {RAM:#x} \"{}\"\nquit\n",
        dump.display()
    );
    let mut stdin = qemu.stdin.take().expect("stdin");
    stdin
        .write_all(commands.as_bytes())
        .expect("monitor commands");
    drop(stdin);
    let output = qemu.wait_with_output().expect("qemu output");
    let monitor = String::from_utf8_lossy(&output.stdout);
    let register = |name: &str| -> u64 {
        let value = monitor
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in the monitor's output:\n{monitor}"));
        u64::from_str_radix(value, 16).expect("hex register")
    };
    let bytes = std::fs::read(&dump).expect("QEMU's RAM dump");
    let ram = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM)]).expect("ram");
    ram.write_slice(&bytes, GuestAddress(0))
        .expect("copy the dump");
    let log = std::fs::read_to_string(&log).expect("-d int log");
    let exceptions: Vec<Logged> = (exceptions_in(&log).into_iter())
        .filter(|e| e.vector < 32)
        .collect();
    let faults: Vec<Logged> = (exceptions.iter().copied())
        .filter(|e| e.vector == 14)
        .collect();
    Stopped {
        serial: std::fs::read_to_string(&serial).expect("serial"),
        exceptions,
        cr0: register("CR0="),
        cr3: register("CR3="),
        cr4: register("CR4="),
        efer: register("EFER="),
        tlb: tlb_lines(&monitor),
        ram,
        monitor: monitor.into_owned(),
        fault: faults.first().copied().unwrap_or(Logged {
            vector: 0,
            error: 0,
            cr2: 0,
            rip: 0,
            delivered: false,
        }),
    }
}

/// `info tlb` lines: "00000000c0001000: 0000000000005000 ----A---W".
fn tlb_lines(monitor: &str) -> Vec<(u64, u64, String)> {
    monitor
        .lines()
        .filter_map(|line| {
            let (linear, rest) = line.split_once(": ")?;
            let (physical, flags) = rest.split_once(' ')?;
            let linear = u64::from_str_radix(linear, 16).ok()?;
            let physical = u64::from_str_radix(physical, 16).ok()?;
            (flags.len() == 9).then(|| (linear, physical, flags.to_string()))
        })
        .collect()
}

/// Every page QEMU lists, walked by vmm-host on QEMU's RAM: the same frame, the same page
/// size, and the leaf's own U, W and NX bits. Returns vmm-host's paging mode.
fn walks_agree_with_info_tlb(stopped: &Stopped, format: Format) -> PagingMode {
    let mut mode = PagingMode::of_vcpu(QEMU64, stopped.cr0, stopped.cr4, stopped.efer);
    assert_eq!(mode.format, format);
    if format == Format::Pae {
        mode.loaded_pdptes = Some(loaded_pdptes(stopped));
    }
    assert!(
        stopped.tlb.len() > 500,
        "QEMU listed {} pages",
        stopped.tlb.len()
    );
    for (linear, physical, flags) in &stopped.tlb {
        let w = walk(&stopped.ram, mode, Cr3::new(stopped.cr3), Gva::new(*linear));
        let WalkEnd::Mapped(m) = w.end else {
            panic!("QEMU maps {linear:#x} ({flags}), vmm-host does not:\n{w}");
        };
        let frame = physical & 0x000f_ffff_ffff_f000 & !(m.page_size - 1);
        assert_eq!(
            m.gpa.raw() & !(m.page_size - 1),
            frame,
            "frame of {linear:#x}:\n{w}"
        );
        assert_eq!(
            flags.as_bytes()[2] == b'P',
            m.page_size > 4096,
            "page size of {linear:#x}:\n{w}"
        );
        let leaf = w.steps.last().expect("a mapped walk read entries").entry;
        let bits = (leaf.user(), leaf.writable(), leaf.no_execute());
        // QEMU's columns: X G P D A C T U W.
        let column = |i: usize| flags.as_bytes()[i] != b'-';
        let qemu = (column(7), column(8), column(0));
        assert_eq!(bits, qemu, "U, W, NX of {linear:#x} ({flags}):\n{w}");
    }
    mode
}

/// The PDPTEs the CPU loaded at the `mov cr0`. QEMU TCG sets the accessed bit (5) in the
/// PDPTEs in memory as it walks (measured: the kernel writes 0x…001, QEMU's dump holds
/// 0x…021), where the SDM reserves bit 5 and a CPU never writes a PDPTE: it reads the four
/// into registers when paging is turned on. The registers held what the kernel wrote.
fn loaded_pdptes(stopped: &Stopped) -> [u64; 4] {
    let pdpt = stopped.cr3 & 0xffff_ffe0;
    std::array::from_fn(|i| {
        let at = GuestAddress(pdpt + i as u64 * 8);
        stopped.ram.read_obj::<u64>(at).expect("PDPT in RAM") & !0x20
    })
}

/// What the audit maps, in bytes, against QEMU's pages below `walked_below` (the audit does
/// not walk a recursive slot again).
fn audit_maps_what_qemu_lists(stopped: &Stopped, mode: PagingMode, walked_below: u64) {
    let audit = audit(
        &stopped.ram,
        mode,
        Cr3::new(stopped.cr3),
        &[(Gpa::new(0), RAM as u64)],
    );
    let qemu_bytes: u64 = (stopped.tlb.iter())
        .filter(|(linear, ..)| *linear < walked_below)
        .map(
            |(_, _, flags)| match (flags.as_bytes()[2] == b'P', mode.format) {
                (false, _) => 4096,
                (true, Format::Pae) => 2 << 20,
                (true, _) => 4 << 20,
            },
        )
        .sum();
    assert_eq!(audit.mapped_bytes, qemu_bytes, "{audit}");
}

/// The scenario `name` (which this KVM skips) says what QEMU did: its serial lines, its
/// exceptions in order (vector, error code, CR2, RIP or function) and their number.
fn scenario_agrees_with_qemu(name: &str, stopped: &Stopped) {
    let scenario = common::scenario(name);
    assert!(
        stopped.serial.contains("kernel32: "),
        "{name} boots kernel32"
    );
    for line in &scenario.expect.serial {
        assert!(
            stopped.serial.contains(&line.value),
            "{name}: serial {:?} not in QEMU's:\n{}",
            line.value,
            stopped.serial
        );
    }
    let symbols = vmm_host::symbols::Symbolizer::open(Path::new(vmm_host::GUEST_KERNEL32))
        .expect("kernel32's symbols");
    let function_at = |address: u64| symbols.locate(address).map(|l| l.function);
    // The tap sees the exceptions whose handlers were reached.
    let seen: Vec<_> = (stopped.exceptions.iter())
        .filter(|e| e.delivered)
        .map(|e| (e.vector, Some(e.error), e.cr2, e.rip))
        .collect();
    let mut from = 0;
    for expect in &scenario.expect.exceptions {
        let at = seen[from..]
            .iter()
            .position(|&s| expect.value.matches(s, &function_at));
        let at = at.unwrap_or_else(|| panic!("{name}: {} not in QEMU's {seen:x?}", expect.value));
        from += at + 1;
    }
    if let Some(count) = &scenario.expect.exception_count {
        assert_eq!(
            count.value,
            seen.len() as u64,
            "{name}: QEMU took {seen:x?}"
        );
    }
}

fn page_faults(stopped: &Stopped) -> usize {
    (stopped.exceptions.iter())
        .filter(|e| e.vector == 14)
        .count()
}

fn qemu_or_skip(test: &str) -> Option<()> {
    common::program_or_skip(test, "qemu-system-x86_64", "qemu-system-x86")
}

/// The fault QEMU logged, walked on QEMU's RAM.
fn fault_walk(stopped: &Stopped, mode: PagingMode) -> vmm_host::paging::Walk {
    walk(
        &stopped.ram,
        mode,
        Cr3::new(stopped.cr3),
        Gva::new(stopped.fault.cr2),
    )
}

#[test]
fn the_32_bit_walker_agrees_with_qemu_on_a_4_mib_page_and_the_recursive_directory() {
    let name = "the_32_bit_walker_agrees_with_qemu";
    if qemu_or_skip(name).is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let stopped = run_under_qemu("paging=pse", "#PF at", dir.path());
    assert_eq!(page_faults(&stopped), 1, "one #PF in QEMU's log");
    scenario_agrees_with_qemu("kernel32-pse", &stopped);
    let mode = walks_agree_with_info_tlb(&stopped, Format::TwoLevel { pse: true });
    audit_maps_what_qemu_lists(&stopped, mode, 0xffc0_0000);
    let audit = audit(
        &stopped.ram,
        mode,
        Cr3::new(stopped.cr3),
        &[(Gpa::new(0), RAM as u64)],
    );
    assert_eq!(audit.recursive_slot, Some(1023));
    // QEMU: a write (error 2) at 8 MiB; vmm-host: the directory entry is not present.
    assert_eq!((stopped.fault.error, stopped.fault.cr2), (0x2, 0x80_0000));
    let w = fault_walk(&stopped, mode);
    let text = w.to_string();
    assert!(
        text.starts_with("walk of 0x800000 (PGD 2, PTE 0, offset 0x0)"),
        "{text}"
    );
    assert!(text.contains("  PD   [   2]  table 0x"), "{text}");
    assert!(
        text.ends_with("-> stops at the PD level: PGD[2] is not present"),
        "{text}"
    );
}

#[test]
fn a_write_to_a_read_only_page_faults_in_qemu_because_of_cr0_wp_as_the_walk_says() {
    let name = "a_write_to_a_read_only_page_faults_in_qemu";
    if qemu_or_skip(name).is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let stopped = run_under_qemu("paging=wp", "#PF at", dir.path());
    assert_eq!(page_faults(&stopped), 1, "one #PF in QEMU's log");
    scenario_agrees_with_qemu("kernel32-wp", &stopped);
    let mode = walks_agree_with_info_tlb(&stopped, Format::TwoLevel { pse: false });
    audit_maps_what_qemu_lists(&stopped, mode, u64::MAX);
    assert_eq!((stopped.fault.error, stopped.fault.cr2), (0x3, 0x3f_f000));
    let WalkEnd::Mapped(m) = fault_walk(&stopped, mode).end else {
        panic!("the read-only page is mapped");
    };
    let write = Access {
        write: true,
        ..Access::default()
    };
    assert_eq!(m.denials(write, mode.protection), [Denial::ReadOnlyWithWp]);
}

#[test]
fn a_pae_fetch_from_a_no_execute_page_faults_in_qemu_as_the_walk_says() {
    let name = "a_pae_fetch_from_a_no_execute_page_faults_in_qemu";
    if qemu_or_skip(name).is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let stopped = run_under_qemu("paging=pae", "#PF at", dir.path());
    assert_eq!(page_faults(&stopped), 1, "one #PF in QEMU's log");
    scenario_agrees_with_qemu("kernel32-pae", &stopped);
    let mode = walks_agree_with_info_tlb(&stopped, Format::Pae);
    audit_maps_what_qemu_lists(&stopped, mode, u64::MAX);
    assert_eq!((stopped.fault.error, stopped.fault.cr2), (0x11, 0x1f_f000));
    let w = fault_walk(&stopped, mode);
    assert_eq!(w.steps.len(), 3, "{w}");
    // The walk used the loaded PDPTE, and says that memory holds QEMU's accessed bit.
    assert_eq!(w.pdpte_in_memory.map(|p| p.raw() & 0x20), Some(0x20), "{w}");
    assert!(
        w.to_string().contains("the CPU used the PDPTE it loaded"),
        "{w}"
    );
    let WalkEnd::Mapped(m) = w.end else {
        panic!("the no-execute page is mapped:\n{w}");
    };
    let fetch = Access {
        fetch: true,
        ..Access::default()
    };
    assert_eq!(m.denials(fetch, mode.protection), [Denial::NoExecute]);
}

/// kernel32 `df=task` under QEMU: a #DE whose gate is not present becomes a #DF, delivered
/// through a task gate. On QEMU's RAM and registers, as the #DF task runs, the tap must find
/// what QEMU did: IDT[8] leads through the GDT to the task's entry, the running TSS links back
/// to the interrupted task, and that TSS holds the EIP QEMU logged for the #DF.
#[test]
fn a_double_fault_through_a_task_gate_is_followed_to_the_task_qemu_ran() {
    use vmm_host::tap::task::{self, Gdtr};
    use vmm_host::tap::{Frame, Gate, GateFormat, GateKind};
    let name = "a_double_fault_through_a_task_gate";
    if qemu_or_skip(name).is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let stopped = run_under_qemu("df=task", "#DF in its own task", dir.path());
    scenario_agrees_with_qemu("kernel32-df-task", &stopped);
    let double_fault = (stopped.exceptions.iter())
        .find(|e| e.vector == 8)
        .expect("a #DF in QEMU's log");
    let space = vmm_host::virt::AddressSpace {
        view: vmm_host::virt::GuestView::new(&stopped.ram, None),
        mode: PagingMode::of_vcpu(QEMU64, stopped.cr0, stopped.cr4, stopped.efer),
        cr3: Cr3::new(stopped.cr3),
    };
    let gdtr = Gdtr {
        base: Gva::new(stopped.monitor_word("GDT=", 1)),
        limit: u16::try_from(stopped.monitor_word("GDT=", 2)).expect("GDT limit"),
    };
    let mut raw = [0u8; 16];
    space
        .read(
            Gva::new(stopped.monitor_word("IDT=", 1) + 8 * 8),
            &mut raw[..8],
        )
        .expect("IDT[8]");
    let gate = Gate::parse(8, &raw, GateFormat::Protected);
    assert_eq!(gate.kind, GateKind::Task, "{gate}");
    let target = task::follow(&space, gdtr, gate.selector).expect("the gate's task");
    let symbols = vmm_host::symbols::Symbolizer::open(Path::new(vmm_host::GUEST_KERNEL32))
        .expect("kernel32's symbols");
    let function = |at: Gva| symbols.locate(at.raw()).map(|l| l.function);
    assert_eq!(
        function(target.entry()).as_deref(),
        Some("k32_double_fault_task")
    );
    let running = u16::try_from(stopped.monitor_word("TR", 1)).expect("TR");
    assert_eq!(running, gate.selector, "QEMU runs the gate's task");
    assert!(target.busy, "a running task's TSS is busy");
    let interrupted = task::follow(&space, gdtr, target.tss.link).expect("the linked task");
    let frame = Frame::from_task(Gva::new(0), Some(0), &interrupted.tss);
    assert_eq!(
        frame.rip.raw(),
        double_fault.rip,
        "the #DF's EIP, as QEMU logged it"
    );
    assert_eq!(
        function(frame.rip).as_deref(),
        Some("k32_divide_without_gate")
    );
}

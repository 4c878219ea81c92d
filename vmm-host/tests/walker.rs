//! The host's page-table walker against KVM's own (KVM_TRANSLATE) on the real guest kernel's
//! tables: 4 KiB pages, 2 MiB pages (the direct map), the recursive slot, holes.

mod common;
use std::time::Duration;
use vmm_host::addr::Gva;
use vmm_host::paging::{Level, WalkEnd};
use vmm_host::vm::{Vm, VmConfig};

fn finished_vm(cmdline: &str) -> Vm {
    let (vm, report) = run_to_the_end(vmm_host::GUEST_KERNEL_ELF, cmdline, 256 << 20);
    let serial = String::from_utf8_lossy(vm.serial_output()).into_owned();
    assert!(
        report.contains("the guest exited with code 0"),
        "{report}\n{serial}"
    );
    vm
}

/// Boot `kernel` and run it to its end; the VM and its report.
fn run_to_the_end(kernel: &str, cmdline: &str, mem: u64) -> (Vm, String) {
    let mut vm = Vm::new(VmConfig {
        kernel: kernel.into(),
        symbols: None,
        boot: None,
        files: Default::default(),
        cpuid: Default::default(),
        clock: None,
        mem,
        cmdline: cmdline.into(),
        timeout: Duration::from_secs(30),
        serial_log: None,
        serial_limit: vmm_host::console::DEFAULT_LIMIT,
        echo_serial: false,
        kvm_device: "/dev/kvm".into(),
        tap: false,
        audit: vmm_host::vm::AuditMode::Off,
        report: None,
    })
    .expect("create VM");
    let report = vm.run().to_string();
    (vm, report)
}

fn agree(vm: &Vm, addresses: &[u64]) {
    for &raw in addresses {
        let gva = Gva::new(raw);
        let walk = vm.walk(gva).expect("KVM_GET_SREGS");
        let kvm = vm.kvm_translate(gva).expect("KVM_TRANSLATE");
        assert_eq!(walk.translation(), kvm, "{walk}");
    }
}

const HHDM: u64 = 0xffff_8800_0000_0000;
const HEAP: u64 = 0xffff_8000_0000_0000;

#[test]
fn walks_agree_with_kvm_translate_on_the_hhdm_kernel() {
    if common::kvm_or_skip("walker_hhdm").is_none() {
        return;
    }
    let vm = finished_vm("test=dump vmm=hhdm");
    agree(
        &vm,
        &[
            0x10_0000,
            0x3ff_ffff,
            0x400_0000,
            HEAP,
            HEAP + 0x1fff,
            HEAP + 0x2000,
            HHDM + 0x123_4567,
            HHDM + 0xfff_ffff,
            HHDM + 0x1000_0000,
            0x716b_326c_8100,
            0xffff_ffff_ffff_f000,
        ],
    );
    let direct = vm.walk(Gva::new(HHDM + 0x123_4567)).expect("walk");
    assert!(matches!(direct.end, WalkEnd::Mapped(m) if m.page_size == 2 << 20 && !m.executable));
    let hole = vm.walk(Gva::new(0x716b_326c_8100)).expect("walk");
    assert_eq!(hole.stopped_at(), Some(Level::Pml4), "{hole}");
    let heap = vm.walk(Gva::new(HEAP + 0x10)).expect("walk");
    assert_eq!(heap.steps.len(), 4, "{heap}");
}

#[test]
fn walks_agree_with_kvm_translate_through_the_recursive_slot() {
    if common::kvm_or_skip("walker_recursive").is_none() {
        return;
    }
    let vm = finished_vm("test=dump vmm=recursive");
    // Slot 510 four times over is the PML4 itself; three times, a PDPT; and so on.
    let pml4_alias = 0xffff_ff7f_bfdf_e000;
    // Slots 510, 510, 510, 256: the heap's PDPT.
    let heap_pdpt_alias = 0xffff_ff7f_bfd0_0000;
    agree(
        &vm,
        &[0x10_0000, HEAP, pml4_alias, heap_pdpt_alias, HEAP + 0x2000],
    );
    let walk = vm.walk(Gva::new(pml4_alias)).expect("walk");
    assert_eq!(walk.translation(), Some(walk.cr3.pml4()), "{walk}");
    let heap = vm.walk(Gva::new(HEAP)).expect("walk");
    let alias = vm.walk(Gva::new(heap_pdpt_alias)).expect("walk");
    assert_eq!(
        alias.translation(),
        Some(heap.steps[1].table),
        "{alias}\n{heap}"
    );
}

/// Random page tables written into a live VM's RAM, CR3 pointed at them: the host's walker
/// and KVM_TRANSLATE agree on every address along the paths and on random ones. Bounded:
/// 40 trees, a few hundred addresses.
#[test]
fn walks_agree_with_kvm_translate_on_random_tables_in_a_live_vm() {
    use proptest::prelude::Rng;
    use proptest::test_runner::{RngAlgorithm, TestRng};
    if common::kvm_or_skip("walker_random_tables").is_none() {
        return;
    }
    let mut vm = finished_vm("test=hello");
    // Eight table frames at 16 MiB, in RAM the finished guest no longer uses.
    const BASE: u64 = 16 << 20;
    let mut rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
    let mut checked = 0;
    let mut mapped = 0;
    for _tree in 0..40 {
        vm.write_physical(vmm_host::addr::Gpa::new(BASE), &[0u8; 8 * 4096])
            .expect("clear the tables");
        let mut addresses: Vec<u64> = (0..4).map(|_| rng.next_u64()).collect();
        for _path in 0..6 {
            let mut table = 0u64;
            let mut linear = rng.next_u64() & 0x3fff_ffff;
            for depth in 0..4 {
                let index = rng.next_u64() % 512;
                let shift = 39 - 9 * depth;
                linear = linear & !(511 << shift) | index << shift;
                let rights = rng.next_u64() & 0x8000_0000_0000_0006;
                let leaf = depth == 3 || (depth > 0 && rng.next_u64().is_multiple_of(4));
                let value = if leaf {
                    let size_mask = !((1u64 << shift) - 1);
                    // RAM frames (KVM maps them), some large, some with garbage bits.
                    let frame = (rng.next_u64() % (200 << 20)) & size_mask & !0xfff;
                    frame | rights | 1 | if depth < 3 { 0x80 } else { 0 }
                } else {
                    let next = 1 + rng.next_u64() % 7;
                    (BASE + next * 4096) | rights | 1
                };
                let value = if rng.next_u64().is_multiple_of(16) {
                    value ^ (1 << (rng.next_u64() % 64))
                } else {
                    value
                };
                let at = BASE + table * 4096 + index * 8;
                vm.write_physical(vmm_host::addr::Gpa::new(at), &value.to_le_bytes())
                    .expect("write an entry");
                if leaf || value & 1 == 0 {
                    break;
                }
                table = ((value & 0x000f_ffff_ffff_f000) - BASE) / 4096;
                if table >= 8 {
                    break;
                }
            }
            if linear & (1 << 47) != 0 {
                linear |= 0xffff_0000_0000_0000;
            }
            addresses.push(linear);
        }
        let mut registers = vm.registers().expect("registers");
        registers.sregs.cr3 = BASE;
        vm.set_registers(&registers).expect("set CR3");
        for &raw in &addresses {
            let gva = Gva::new(raw);
            let walk = vm.walk(gva).expect("KVM_GET_SREGS");
            let kvm = vm.kvm_translate(gva).expect("KVM_TRANSLATE");
            assert_eq!(walk.translation(), kvm, "{walk}");
            checked += 1;
            mapped += usize::from(kvm.is_some());
        }
    }
    println!("{checked} addresses on 40 random trees, {mapped} mapped: the walker agrees with KVM");
    assert!(
        mapped > 40,
        "the trees map something: {mapped} of {checked}"
    );
}

/// A 32-bit kernel with paging off (the one paging mode of a 32-bit kernel this project's KVM
/// runs; 32-bit and PAE paging are checked against QEMU TCG in qemu_paging.rs): linear is
/// physical, for the host's walker and for KVM alike, up to the top of the 4 GiB space.
#[test]
fn walks_agree_with_kvm_translate_with_paging_off() {
    if common::kvm_or_skip("walker_paging_off").is_none() {
        return;
    }
    let (vm, report) = run_to_the_end(vmm_host::GUEST_KERNEL32, "", 64 << 20);
    assert!(report.contains("the guest exited with code 4"), "{report}");
    let walk = vm.walk(Gva::new(0x20_0000)).expect("KVM_GET_SREGS");
    assert!(
        walk.to_string().contains("paging is off"),
        "kernel32 ran with paging off: {walk}"
    );
    agree(
        &vm,
        &[0, 0x7c00, 0xb_8000, 0x20_0000, 0x3ff_ffff, 0xffff_f000],
    );
}

//! The vCPU state the boot protocols promise at a kernel's entry: at a 32-bit entry protected
//! mode, paging off, flat 4 GiB segments; at Linux's 64-bit entry long mode on identity page
//! tables; interrupts off, and the boot data's address and the protocol's magic in the
//! registers the protocol names. A20 is always on here: guest RAM has no A20 gate.

use crate::loader::{BootEntry, EntryGdt, EntryMode};
use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use x86_64::registers::control::{Cr0Flags, Cr4Flags};
use x86_64::registers::model_specific::EferFlags;

/// CR0.PE | CR0.ET.
const CR0_PROTECTED: Cr0Flags = Cr0Flags::PROTECTED_MODE_ENABLE.union(Cr0Flags::EXTENSION_TYPE);
/// Bit 1 of RFLAGS is reserved and always set.
const RFLAGS_RESERVED: u64 = 0x2;

/// A present, flat 4 GiB code or data segment: 64-bit code if `long`, else 32-bit.
pub fn flat_segment(selector: u16, type_: u8, dpl: u8, long: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl,
        db: u8::from(!long),
        s: 1,
        l: u8::from(long),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// CR0 of a long-mode entry: protected mode, paging, write protection honoured in ring 0.
const CR0_LONG: Cr0Flags = CR0_PROTECTED
    .union(Cr0Flags::PAGING)
    .union(Cr0Flags::WRITE_PROTECT)
    .union(Cr0Flags::NUMERIC_ERROR);

/// Special registers at `entry`'s entry; `sregs` is the vCPU's reset state.
pub fn entry_sregs(sregs: kvm_sregs, entry: &BootEntry) -> kvm_sregs {
    if let EntryMode::Real { .. } = entry.mode {
        return real_mode_sregs(sregs);
    }
    let mut sregs = protected_mode_sregs(sregs, entry.gdt);
    if let EntryMode::Long { page_tables } = entry.mode {
        sregs.cs.l = 1;
        sregs.cs.db = 0;
        sregs.cr0 = CR0_LONG.bits();
        sregs.cr3 = page_tables.raw();
        sregs.cr4 = Cr4Flags::PHYSICAL_ADDRESS_EXTENSION.bits();
        sregs.efer = (EferFlags::LONG_MODE_ENABLE | EferFlags::LONG_MODE_ACTIVE).bits();
    }
    sregs
}

/// Special registers for a 32-bit protected-mode entry; `sregs` is the vCPU's reset state.
/// Without a `gdt` the selectors are 0x08 and 0x10 and GDTR is left as it is: Multiboot and
/// PVH kernels load their own GDT before they reload a segment register.
fn protected_mode_sregs(mut sregs: kvm_sregs, gdt: Option<EntryGdt>) -> kvm_sregs {
    let (code, data) = gdt.map_or((0x08, 0x10), |gdt| (gdt.code, gdt.data));
    if let Some(gdt) = gdt {
        sregs.gdt.base = gdt.base.raw();
        sregs.gdt.limit = gdt.limit;
    }
    sregs.cs = flat_segment(code, 0xb, 0, false); // execute/read, accessed
    let data = flat_segment(data, 0x3, 0, false); // read/write, accessed
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    // VMX requires a usable busy TSS in protected mode even though the guest never uses it.
    sregs.tr = kvm_segment {
        base: 0,
        limit: 0x67,
        selector: 0x18,
        type_: 0xb,
        present: 1,
        ..Default::default()
    };
    sregs.cr0 = CR0_PROTECTED.bits();
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
    sregs
}

/// Special registers for a boot sector: real mode, every segment 0000 with a 64 KiB limit;
/// `sregs` is the vCPU's reset state (its CR0 already has PE and PG clear).
fn real_mode_sregs(mut sregs: kvm_sregs) -> kvm_sregs {
    let segment = |type_| kvm_segment {
        base: 0,
        limit: 0xffff,
        selector: 0,
        type_,
        present: 1,
        dpl: 0,
        db: 0,
        s: 1,
        l: 0,
        g: 0,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    sregs.cs = segment(0xb);
    for data in [
        &mut sregs.ds,
        &mut sregs.es,
        &mut sregs.fs,
        &mut sregs.gs,
        &mut sregs.ss,
    ] {
        *data = segment(0x3);
    }
    // Real-mode interrupts go through IDTR too: the IVT's 256 vectors at 0.
    sregs.idt.base = 0;
    sregs.idt.limit = 0x3ff;
    sregs.cr0 &= !(Cr0Flags::PROTECTED_MODE_ENABLE | Cr0Flags::PAGING).bits();
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
    sregs
}

/// The stack a boot sector starts on, just below it (0000:7C00), as BIOSes leave it.
const BOOT_SECTOR_STACK: u64 = 0x7c00;

/// General registers at the entry `boot` names: RFLAGS.IF clear, except for a boot
/// sector, which a BIOS enters with interrupts on, DL the boot drive.
pub fn entry_regs(boot: BootEntry) -> kvm_regs {
    let mut regs = kvm_regs {
        rip: boot.rip.raw(),
        rax: u64::from(boot.eax),
        rbx: boot.ebx.raw(),
        rsi: u64::from(boot.esi),
        rflags: RFLAGS_RESERVED,
        ..Default::default()
    };
    if let EntryMode::Real { drive } = boot.mode {
        regs.rdx = u64::from(drive);
        regs.rsp = BOOT_SECTOR_STACK;
        regs.rflags |= x86_64::registers::rflags::RFlags::INTERRUPT_FLAG.bits();
    }
    regs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Gpa;

    #[test]
    fn entry_state_follows_the_protocols() {
        let regs = entry_regs(BootEntry {
            rip: Gpa::new(0x10_0000),
            eax: 0x2bad_b002,
            ebx: Gpa::new(0x6000),
            esi: 0,
            gdt: None,
            mode: EntryMode::Protected,
        });
        assert_eq!(
            (regs.rip, regs.rax, regs.rbx, regs.rsi, regs.rflags),
            (0x10_0000, 0x2bad_b002, 0x6000, 0, 2)
        );
        let reset = kvm_sregs {
            cr0: 0x6000_0010,
            efer: 0x500,
            ..Default::default()
        };
        let sregs = protected_mode_sregs(reset, None);
        assert_eq!((sregs.cs.selector, sregs.ss.selector), (0x08, 0x10));
        assert_eq!(sregs.cr0 & 0x8000_0001, 1, "protected mode, paging off");
        assert_eq!(
            (sregs.cs.db, sregs.cs.l, sregs.cs.limit),
            (1, 0, 0xffff_ffff),
            "32-bit flat code"
        );
        assert_eq!(sregs.efer, 0);
    }

    #[test]
    fn a_boot_sector_starts_in_real_mode_at_7c00_with_dl_and_interrupts_on() {
        let entry = BootEntry {
            rip: Gpa::new(0x7c00),
            eax: 0,
            ebx: Gpa::new(0),
            esi: 0,
            gdt: None,
            mode: EntryMode::Real { drive: 0x80 },
        };
        let regs = entry_regs(entry);
        assert_eq!((regs.rip, regs.rdx, regs.rsp), (0x7c00, 0x80, 0x7c00));
        assert_eq!(regs.rflags, 0x202, "IF set");
        let probe_state = kvm_sregs {
            cr0: 0x8001_0033,
            cr4: 0x20,
            efer: 0xd01,
            idt: kvm_bindings::kvm_dtable {
                base: 0x5000,
                limit: 0xfff,
                ..Default::default()
            },
            ..Default::default()
        };
        let sregs = entry_sregs(probe_state, &entry);
        assert_eq!(sregs.cr0 & 0x8000_0001, 0, "paging and protection off");
        assert_eq!((sregs.cr4, sregs.efer), (0, 0));
        assert_eq!((sregs.idt.base, sregs.idt.limit), (0, 0x3ff), "the IVT");
        for segment in [sregs.cs, sregs.ds, sregs.ss] {
            assert_eq!(
                (segment.selector, segment.base, segment.limit, segment.db),
                (0, 0, 0xffff, 0)
            );
        }
    }

    #[test]
    fn linux_enters_with_its_gdt_selectors_and_esi() {
        let gdt = EntryGdt {
            base: Gpa::new(0x7000),
            limit: 31,
            code: 0x10,
            data: 0x18,
        };
        let entry = BootEntry {
            rip: Gpa::new(0x10_0000),
            eax: 0,
            ebx: Gpa::new(0),
            esi: 0x6000,
            gdt: Some(gdt),
            mode: EntryMode::Protected,
        };
        let regs = entry_regs(entry);
        assert_eq!((regs.rsi, regs.rbx), (0x6000, 0));
        let long = BootEntry {
            mode: EntryMode::Long {
                page_tables: Gpa::new(0x1000),
            },
            ..entry
        };
        let sregs = entry_sregs(kvm_sregs::default(), &long);
        assert_eq!((sregs.cs.l, sregs.cs.db, sregs.cs.selector), (1, 0, 0x10));
        assert_eq!(sregs.cr3, 0x1000);
        assert_eq!(
            sregs.cr0 & 0x8000_0001,
            0x8000_0001,
            "paging and protection on"
        );
        assert_eq!(sregs.cr4 & 0x20, 0x20, "PAE");
        assert_eq!(sregs.efer & 0x500, 0x500, "LME and LMA");
        assert_eq!(sregs.ss.selector, 0x18);
        let sregs = protected_mode_sregs(kvm_sregs::default(), Some(gdt));
        assert_eq!((sregs.gdt.base, sregs.gdt.limit), (0x7000, 31));
        assert_eq!(sregs.cs.selector, 0x10);
        for data in [sregs.ds, sregs.es, sregs.ss, sregs.fs, sregs.gs] {
            assert_eq!((data.selector, data.type_), (0x18, 0x3));
        }
    }
}

//! Task gates: a 32-bit kernel may handle an exception (#DF, typically) in a task of its own.
//! The gate names a TSS in the GDT. Delivery saves the interrupted state in the current task's
//! TSS, loads CR3, CS:EIP, the stack and every register from the gate's TSS, and links the new
//! TSS back to the old one. So the handler is at the TSS's CS:EIP under the TSS's CR3, and the
//! interrupted RIP is in the TSS the link names, not on a stack.

use crate::addr::Gva;
use crate::descriptor::Descriptor;
use crate::paging::Cr3;
use crate::virt::AddressSpace;

/// Bytes of a 32-bit TSS the CPU reads on a task switch (its minimum limit is 0x67).
pub const TSS32_BYTES: usize = 104;
/// The smallest limit of a 32-bit TSS descriptor.
const TSS32_MIN_LIMIT: u32 = 0x67;

/// The fields of a 32-bit TSS a task switch loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tss32 {
    /// The previous task's TSS selector (written by a switch through a gate or a call).
    pub link: u16,
    pub cr3: u32,
    pub eip: u32,
    pub eflags: u32,
    /// EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI, in the TSS's order.
    pub gprs: [u32; 8],
    pub cs: u16,
    pub ss: u16,
}

impl Tss32 {
    pub fn parse(raw: &[u8; TSS32_BYTES]) -> Self {
        let dword =
            |at: usize| u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]);
        let word = |at: usize| u16::from_le_bytes([raw[at], raw[at + 1]]);
        let mut gprs = [0u32; 8];
        for (i, gpr) in gprs.iter_mut().enumerate() {
            *gpr = dword(0x28 + 4 * i);
        }
        Self {
            link: word(0),
            cr3: dword(0x1c),
            eip: dword(0x20),
            eflags: dword(0x24),
            gprs,
            cs: word(0x4c),
            ss: word(0x50),
        }
    }

    pub fn esp(&self) -> u32 {
        self.gprs[4]
    }
}

/// A task a gate leads to, found through the GDT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Task {
    pub selector: u16,
    /// Where the TSS is (linear).
    pub base: Gva,
    pub busy: bool,
    pub tss: Tss32,
    /// The base of the TSS's code segment.
    pub code_base: u64,
}

impl Task {
    /// Where the task starts running: CS base + EIP, in 32 bits.
    pub fn entry(&self) -> Gva {
        Gva::new(self.code_base.wrapping_add(u64::from(self.tss.eip)) & 0xffff_ffff)
    }

    /// The address space the task runs in: CR3 from its TSS when paging is on. A PAE task
    /// loads its PDPTEs from memory at the switch.
    pub fn space<'a>(&self, current: &AddressSpace<'a>) -> AddressSpace<'a> {
        let mut space = *current;
        if space.mode.enabled() {
            space.cr3 = Cr3::new(u64::from(self.tss.cr3));
            space.mode.loaded_pdptes = None;
        }
        space
    }
}

/// Why a task gate leads nowhere the CPU can switch to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    #[error("TSS selector {selector:#06x} points into the LDT; a task gate must name the GDT")]
    InLdt { selector: u16 },
    #[error("TSS selector {selector:#06x} is past the GDT limit {limit:#x}")]
    PastLimit { selector: u16, limit: u16 },
    #[error("GDT entry {selector:#06x} ({raw:#018x}) is not a 32-bit TSS descriptor")]
    NotTss { selector: u16, raw: u64 },
    #[error("the TSS descriptor {selector:#06x} is not present")]
    NotPresent { selector: u16 },
    #[error("the TSS {selector:#06x} has limit {limit:#x}, below the 0x67 a 32-bit TSS needs")]
    TooSmall { selector: u16, limit: u32 },
    #[error("the {what} at {at} cannot be read: {why}")]
    Unreadable {
        what: &'static str,
        at: Gva,
        why: String,
    },
    #[error("the TSS {selector:#06x}'s CS {cs:#06x} is not a present code segment of the GDT")]
    BadCode { selector: u16, cs: u16 },
}

/// The GDT as GDTR gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gdtr {
    pub base: Gva,
    pub limit: u16,
}

impl Gdtr {
    /// The descriptor `selector` names, if inside the limit.
    fn descriptor(self, space: &AddressSpace, selector: u16) -> Result<Descriptor, TaskError> {
        let index = u32::from(selector & !7);
        if index + 7 > u32::from(self.limit) {
            return Err(TaskError::PastLimit {
                selector,
                limit: self.limit,
            });
        }
        let at = Gva::new(self.base.raw().wrapping_add(u64::from(index)) & 0xffff_ffff);
        space
            .read_u64(at)
            .map(Descriptor)
            .map_err(|e| TaskError::Unreadable {
                what: "GDT entry",
                at,
                why: e.to_string(),
            })
    }
}

/// Follow a task gate's selector to the task it starts.
pub fn follow(space: &AddressSpace, gdtr: Gdtr, selector: u16) -> Result<Task, TaskError> {
    if selector & 4 != 0 {
        return Err(TaskError::InLdt { selector });
    }
    let descriptor = gdtr.descriptor(space, selector)?;
    if !descriptor.is_tss() {
        return Err(TaskError::NotTss {
            selector,
            raw: descriptor.0,
        });
    }
    if !descriptor.present() {
        return Err(TaskError::NotPresent { selector });
    }
    let limit = descriptor.limit();
    if limit < TSS32_MIN_LIMIT {
        return Err(TaskError::TooSmall { selector, limit });
    }
    let base = Gva::new(descriptor.base());
    let mut raw = [0u8; TSS32_BYTES];
    space
        .read(base, &mut raw)
        .map_err(|e| TaskError::Unreadable {
            what: "TSS",
            at: base,
            why: e.to_string(),
        })?;
    let tss = Tss32::parse(&raw);
    let code = gdtr.descriptor(space, tss.cs)?;
    if !code.present() || !code.is_code() || tss.cs < 8 {
        return Err(TaskError::BadCode {
            selector,
            cs: tss.cs,
        });
    }
    Ok(Task {
        selector,
        base,
        busy: descriptor.kind() == crate::descriptor::system::TSS_BUSY,
        tss,
        code_base: code.base(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paging::{CpuPaging, Format, PagingMode};
    use crate::virt::GuestView;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    const GDT: u64 = 0x1000;
    const TSS_MAIN: u64 = 0x2000;
    const TSS_DF: u64 = 0x3000;

    /// A GDT with flat code at 0x08 (base `code_base`), the main task's TSS at 0x18 (busy)
    /// and a #DF task's at 0x20 whose EIP is 0x4000, stack 0x9000, linked back to 0x18.
    fn machine(code_base: u32) -> GuestMemoryMmap {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let code = 0x00cf_9a00_0000_ffffu64 | u64::from(code_base & 0xff_ffff) << 16;
        let tss = |base: u64, kind: u64| 0x67 | (base & 0xff_ffff) << 16 | (0x80 | kind) << 40;
        for (slot, descriptor) in [(1, code), (3, tss(TSS_MAIN, 0xb)), (4, tss(TSS_DF, 0x9))] {
            mem.write_obj(descriptor, GuestAddress(GDT + slot * 8))
                .unwrap();
        }
        let dword = |at: u64, value: u32| mem.write_obj(value, GuestAddress(at)).unwrap();
        dword(TSS_DF, 0x18);
        dword(TSS_DF + 0x1c, 0x5000);
        dword(TSS_DF + 0x20, 0x4000);
        dword(TSS_DF + 0x38, 0x9000);
        dword(TSS_DF + 0x4c, 0x08);
        dword(TSS_MAIN + 0x20, 0x2002e6);
        dword(TSS_MAIN + 0x24, 0x46);
        dword(TSS_MAIN + 0x28, 1);
        dword(TSS_MAIN + 0x38, 0x6270);
        dword(TSS_MAIN + 0x4c, 0x08);
        dword(TSS_MAIN + 0x50, 0x10);
        mem
    }

    fn space(mem: &GuestMemoryMmap, format: Format) -> AddressSpace<'_> {
        AddressSpace {
            view: GuestView::new(mem, None),
            mode: PagingMode::new(CpuPaging::with_phys_bits(40), 0).with_format(format),
            cr3: Cr3::new(0),
        }
    }

    const GDTR: Gdtr = Gdtr {
        base: Gva::new(GDT),
        limit: 5 * 8 - 1,
    };

    #[test]
    fn a_task_gate_leads_to_the_tss_entry_and_back_through_the_link() {
        let mem = machine(0x10_0000);
        let space = space(&mem, Format::Off);
        let task = follow(&space, GDTR, 0x20).unwrap();
        assert_eq!((task.base, task.busy), (Gva::new(TSS_DF), false));
        assert_eq!(task.entry(), Gva::new(0x10_4000), "CS base + EIP");
        assert_eq!(
            (task.tss.cr3, task.tss.esp(), task.tss.link),
            (0x5000, 0x9000, 0x18)
        );
        assert_eq!(
            task.space(&space).cr3,
            Cr3::new(0),
            "paging off: CR3 unused"
        );
        let main = follow(&space, GDTR, task.tss.link).unwrap();
        assert!(main.busy);
        assert_eq!(
            (main.tss.eip, main.tss.eflags, main.tss.gprs[0]),
            (0x2002e6, 0x46, 1)
        );
        let frame = crate::tap::Frame::from_task(Gva::new(0x8ffc), Some(0), &main.tss);
        assert_eq!(
            (frame.rip, frame.rsp),
            (Gva::new(0x2002e6), Gva::new(0x6270))
        );
        assert_eq!((frame.cs, frame.ss, frame.error), (0x08, 0x10, Some(0)));
    }

    #[test]
    fn a_paged_task_runs_under_its_own_cr3() {
        let mem = machine(0);
        let paged = space(&mem, Format::TwoLevel { pse: true });
        // Paging on over empty tables: the GDT itself is unreadable, and the error says where.
        let err = follow(&paged, GDTR, 0x20).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the GDT entry at 0x1020 cannot be read: 0x1020 is not mapped"),
            "{err}"
        );
        let task = follow(&space(&mem, Format::Off), GDTR, 0x20).unwrap();
        assert_eq!(task.space(&paged).cr3, Cr3::new(0x5000));
    }

    #[test]
    fn gates_to_nowhere_say_why() {
        let mem = machine(0);
        let space = space(&mem, Format::Off);
        let error = |selector| follow(&space, GDTR, selector).unwrap_err().to_string();
        assert_eq!(
            error(0x28),
            "TSS selector 0x0028 is past the GDT limit 0x27"
        );
        assert_eq!(
            error(0x24),
            "TSS selector 0x0024 points into the LDT; a task gate must name the GDT"
        );
        assert_eq!(
            error(0x08),
            "GDT entry 0x0008 (0x00cf9a000000ffff) is not a 32-bit TSS descriptor"
        );
        let descriptor = GuestAddress(GDT + 0x20);
        let raw: u64 = mem.read_obj(descriptor).unwrap();
        mem.write_obj(raw & !(1 << 47), descriptor).unwrap();
        assert_eq!(error(0x20), "the TSS descriptor 0x0020 is not present");
        mem.write_obj((raw & !0xffff) | 0x20, descriptor).unwrap();
        assert_eq!(
            error(0x20),
            "the TSS 0x0020 has limit 0x20, below the 0x67 a 32-bit TSS needs"
        );
        mem.write_obj(raw, descriptor).unwrap();
        mem.write_obj(0x10u16, GuestAddress(TSS_DF + 0x4c)).unwrap();
        assert_eq!(
            error(0x20),
            "the TSS 0x0020's CS 0x0010 is not a present code segment of the GDT"
        );
    }
}

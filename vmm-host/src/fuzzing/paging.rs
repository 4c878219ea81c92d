//! The walker and the audit on page tables the fuzzer writes, in every format the CPU
//! translates with, held to the plain reference walkers of `walk_model` and `walk_model32`.

use super::Input;
use crate::addr::{Gpa, Gva};
use crate::paging::{AuditOptions, CpuPaging, Cr3, Finding, Format, PagingMode, audit_with};
use crate::virt::GuestView;
use crate::walk_model::{ModelWalk, as_model, audit_agrees, model_walk};
use crate::walk_model32::{Cpu, model_walk_32, model_walk_pae};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Guest RAM: the tables live in its first 16 frames, and leaves may point anywhere.
const RAM: u64 = 1 << 20;
const TABLE_FRAMES: u64 = 16;

/// A tree, a CPU and the addresses to translate, read from the fuzzer's bytes.
struct Case {
    ram: GuestMemoryMmap,
    format: Format,
    cpu: Cpu,
    gib_pages: bool,
    cr3: u64,
    addresses: Vec<u64>,
}

impl Case {
    /// Byte 0 picks the format, byte 1 the CPU, byte 2 the CR3 frame; then each record is a
    /// table write (frame, index, entry) or, with bit 7 of its first byte, an address.
    fn read(data: &[u8]) -> Self {
        let mut input = Input::new(data);
        let format = input.pick(&[
            Format::FourLevel,
            Format::FiveLevel,
            Format::Pae,
            Format::TwoLevel { pse: false },
            Format::TwoLevel { pse: true },
        ]);
        let features = input.u8();
        let long = matches!(format, Format::FourLevel | Format::FiveLevel);
        let cpu = Cpu {
            // The 4- and 5-level model's CPU has a MAXPHYADDR of 46.
            max_phys: if long {
                46
            } else {
                [36, 40, 46][usize::from(features & 3) % 3]
            },
            pse36: features & 4 != 0,
            nxe: features & 8 != 0,
        };
        let cr3 = input.below(TABLE_FRAMES) << 12;
        let ram = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), crate::narrow::to_usize(RAM))])
            .expect("1 MiB of anonymous memory");
        let entry_size = if matches!(format, Format::TwoLevel { .. }) {
            4
        } else {
            8
        };
        let mut addresses = Vec::new();
        while !input.is_empty() && addresses.len() < 64 {
            let tag = input.u8();
            if tag & 0x80 != 0 {
                addresses.push(input.u64());
                continue;
            }
            let frame = u64::from(tag) % TABLE_FRAMES;
            let at = (frame << 12) + u64::from(input.u16()) % (4096 / entry_size) * entry_size;
            let entry = input.u64();
            let written = if entry_size == 4 {
                ram.write_obj(crate::narrow::low_u32(entry), GuestAddress(at))
            } else {
                ram.write_obj(entry, GuestAddress(at))
            };
            written.expect("a table write inside the first 16 frames");
        }
        Self {
            ram,
            format,
            cpu,
            gib_pages: features & 16 != 0,
            cr3,
            addresses,
        }
    }

    fn mode(&self) -> PagingMode {
        let features = CpuPaging {
            max_phys_addr: u8::try_from(self.cpu.max_phys).expect("36, 40 or 46 bits"),
            gib_pages: self.gib_pages,
            pse36: self.cpu.pse36,
        };
        // EFER.NXE, with LME and LMA in long mode.
        let long = if self.format.is_32_bit() { 0 } else { 0x500 };
        let efer = long | if self.cpu.nxe { 0x800 } else { 0 };
        PagingMode::new(features, efer).with_format(self.format)
    }

    /// What the reference model's CPU does with `linear`.
    fn model(&self, linear: u64) -> ModelWalk {
        let ram = &self.ram;
        match self.format {
            Format::FourLevel => {
                model_walk(ram, self.cr3, (self.cpu.nxe, self.gib_pages), 4, linear)
            }
            Format::FiveLevel => {
                model_walk(ram, self.cr3, (self.cpu.nxe, self.gib_pages), 5, linear)
            }
            Format::Pae => model_walk_pae(ram, self.cr3, self.cpu, linear),
            Format::TwoLevel { pse } => model_walk_32(ram, self.cr3, pse, self.cpu, linear),
            Format::Off => unreachable!("paging off is not a tree"),
        }
    }
}

/// Every walk reads the entries the model reads and ends as the model ends: not present,
/// reserved bits, a table outside RAM, or the same frame, page size and rights.
pub fn walk(data: &[u8]) {
    let case = Case::read(data);
    let view = GuestView::new(&case.ram, None);
    let mode = case.mode();
    for &linear in &case.addresses {
        let real = crate::paging::walk(&view, mode, Cr3::new(case.cr3), Gva::new(linear));
        assert!(real.steps.len() <= case.format.levels().len());
        assert!(!real.to_string().is_empty(), "a walk prints as nothing");
        let model = case.model(linear);
        assert_eq!(
            as_model(&real),
            model,
            "{:?} walk of {linear:#x}",
            case.format
        );
    }
}

/// The audit stays inside its entry budget, keeps its ranges in order without overlap, says
/// every finding in one line, and (when it was not cut short) maps exactly what the model
/// maps at every address the fuzzer names.
pub fn audit(data: &[u8]) {
    let case = Case::read(data);
    let view = GuestView::new(&case.ram, None);
    let budget = [1 << 16, 1 << 10, 64][usize::from(data.get(2).copied().unwrap_or(0) >> 6) % 3];
    let options = AuditOptions {
        max_entries: budget,
        max_ranges: 1 << 12,
        ..AuditOptions::default()
    };
    let regions = [(Gpa::new(0), RAM)];
    let audit = audit_with(&view, case.mode(), Cr3::new(case.cr3), &regions, &options);
    assert!(
        audit.entries_visited <= options.max_entries,
        "{} entries",
        audit.entries_visited
    );
    for pair in audit.ranges.windows(2) {
        let end = pair[0].start.raw().checked_add(pair[0].size);
        assert!(
            end.is_some_and(|end| end <= pair[1].start.raw()),
            "ranges out of order or overlapping: {:?}",
            pair
        );
    }
    for finding in &audit.findings {
        super::assert_one_line("a finding", &finding.to_string());
    }
    let truncated = audit
        .findings
        .iter()
        .any(|f| matches!(f, Finding::Truncated { .. }));
    if !truncated
        && let Err(why) = audit_agrees(&audit, &case.addresses, |linear| case.model(linear))
    {
        panic!("{:?} audit: {why}", case.format);
    }
}

//! Cores of the VM as it stands: at the run's end (`--core`) or at the first exception of a
//! set (`--core-on`), before its handler runs.

use super::Vm;
use super::error::{RunError, kvm};
use crate::catch::VectorSet;
use crate::coredump::{self, Contents, CoreError, RecordNote, VmmNote};
use crate::paging::{Cr3, PagingMode};
use crate::tap::ExceptionRecord;
use kvm_bindings::kvm_regs;
use std::path::{Path, PathBuf};

/// `--core-on`: where to write, for which vectors, and what came of it.
#[derive(Debug, Clone)]
pub struct CoreOn {
    pub path: PathBuf,
    pub vectors: VectorSet,
    /// The core's size, or why it could not be written; `None` until an exception came.
    pub written: Option<Result<u64, String>>,
}

/// The signal a core reports to gdb for the exception being handled: what Linux sends a
/// process for the same fault.
fn signal(vector: Option<u8>) -> u16 {
    const SIGILL: u16 = 4;
    const SIGTRAP: u16 = 5;
    const SIGFPE: u16 = 8;
    const SIGSEGV: u16 = 11;
    match vector {
        None => 0,
        Some(0 | 16 | 19) => SIGFPE,
        Some(6) => SIGILL,
        Some(1 | 3) => SIGTRAP,
        Some(_) => SIGSEGV,
    }
}

impl Vm {
    /// Write a core of the guest as it stands to `path`; `taken` says when, in words.
    /// Returns the core's size in bytes.
    pub fn write_core(&self, path: &Path, taken: &str) -> Result<u64, CoreError> {
        self.write_core_during(path, taken, None)
    }

    /// [`Vm::write_core`], at the entry of the handler of `pending`, an exception recorded
    /// but not logged yet: it is the innermost of the exceptions being handled.
    fn write_core_during(
        &self,
        path: &Path,
        taken: &str,
        pending: Option<&ExceptionRecord>,
    ) -> Result<u64, CoreError> {
        let cpu = |e: kvm_ioctls::Error| CoreError::Layout(format!("cannot read the vCPU: {e}"));
        let regs = self.vcpu.get_regs().map_err(cpu)?;
        let sregs = self.vcpu.get_sregs().map_err(cpu)?;
        let view = self.guest_view();
        let mode = PagingMode::of_vcpu(self.cpu_paging, sregs.cr0, sregs.cr4, sregs.efer);
        let mappings = coredump::mappings(&view, mode, Cr3::new(sregs.cr3), &self.ram);
        let mut active: Vec<&ExceptionRecord> =
            self.exceptions.active.iter().map(|c| &c.record).collect();
        if let Some(record) = pending {
            // As the log will have it: the exceptions this one interrupted, then it.
            active.retain(|a| record.outer.contains(&a.seq));
            active.push(record);
        }
        let note = VmmNote {
            version: VmmNote::VERSION,
            taken: taken.to_string(),
            ending: self.ended().map(|e| e.headline()),
            ending_kind: self.ended().map(|e| e.kind().to_string()),
            kernel: self.config.kernel.display().to_string(),
            symbols: self
                .symbols
                .as_ref()
                .map(|s| s.path().display().to_string()),
            efer: sregs.efer,
            cr8: sregs.cr8,
            apic_base: sregs.apic_base,
            paging: self.cpu_paging,
            ram: self.ram.iter().map(|&(s, n)| (s.raw(), n)).collect(),
            exceptions: self.exceptions.total,
            summary: self.exceptions.summary(),
            active: active.iter().map(|r| RecordNote::from(*r)).collect(),
        };
        let contents = Contents {
            regs: &regs,
            sregs: &sregs,
            ram: &self.ram,
            mappings: &mappings,
            note: &note,
            signal: signal(active.last().map(|r| r.vector)),
        };
        coredump::write_file(path, &contents, &view)
    }

    /// When the tap has just recorded `record` and the vCPU stands at its handler's entry
    /// (`regs`): write the `--core-on` core if it is the first of its vectors.
    pub(super) fn core_on_exception(
        &mut self,
        record: &ExceptionRecord,
        regs: &kvm_regs,
    ) -> Result<(), RunError> {
        let Some(mut core) = self.core_on.take() else {
            return Ok(());
        };
        if core.written.is_none() && core.vectors.contains(record.vector) {
            // The trap left RIP past its byte: the core shows the handler's first instruction.
            self.vcpu.set_regs(regs).map_err(kvm("KVM_SET_REGS"))?;
            let taken = format!(
                "at exception [{}] {}, before its handler ran (--core-on)",
                record.seq,
                abi::exception::name(record.vector)
            );
            let written = self.write_core_during(&core.path, &taken, Some(record));
            core.written = Some(written.map_err(|e| e.to_string()));
        }
        self.core_on = Some(core);
        Ok(())
    }
}

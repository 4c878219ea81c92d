//! The vCPU as the run loop needs it: run until the next exit, told in the host's own words,
//! and the bytes of a port or MMIO exit. [`VcpuFd`] is the real one; tests script their own.

use crate::addr::Gpa;
use kvm_bindings::{KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_IO, KVM_EXIT_MMIO};
use kvm_ioctls::{VcpuExit, VcpuFd};

/// A debug exit: which exception, where, and DR6 (which debug register fired).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DebugExit {
    pub exception: u32,
    pub pc: u64,
    pub dr6: u64,
}

/// Why `KVM_RUN` returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// `in` or `rep ins`: `count` accesses of `size` bytes at `port`.
    PortIn {
        port: u16,
        size: u8,
        count: u32,
    },
    /// `out` or `rep outs`.
    PortOut {
        port: u16,
        size: u8,
        count: u32,
    },
    MmioRead {
        gpa: Gpa,
        len: usize,
    },
    MmioWrite {
        gpa: Gpa,
        len: usize,
    },
    Hlt,
    Debug(DebugExit),
    /// A triple fault.
    Shutdown,
    FailEntry {
        reason: u64,
        cpu: u32,
    },
    InternalError {
        suberror: u32,
        data: Vec<u64>,
    },
    /// A signal kicked the vCPU out of `KVM_RUN` (the watchdog, the timer or gdb).
    Kicked,
    /// The guest can take the interrupt the host asked to be told about.
    InterruptWindow,
    /// An exit this host does not handle, described.
    Unexpected(String),
    /// `KVM_RUN` itself failed.
    Failed(String),
}

/// What the run loop needs of a vCPU to serve its exits.
pub trait Vcpu {
    fn run(&mut self) -> Exit;
    /// The data of the port or MMIO exit `run` just returned: what the guest wrote, or the
    /// buffer its read is answered in. Empty after any other exit.
    fn exit_data(&mut self) -> &mut [u8];
}

impl Vcpu for VcpuFd {
    fn run(&mut self) -> Exit {
        let exit = match VcpuFd::run(self) {
            Ok(VcpuExit::IoIn(..) | VcpuExit::IoOut(..)) => None,
            Ok(VcpuExit::MmioRead(address, data)) => Some(Exit::MmioRead {
                gpa: Gpa::new(address),
                len: data.len(),
            }),
            Ok(VcpuExit::MmioWrite(address, data)) => Some(Exit::MmioWrite {
                gpa: Gpa::new(address),
                len: data.len(),
            }),
            Ok(VcpuExit::Hlt) => Some(Exit::Hlt),
            Ok(VcpuExit::IrqWindowOpen) => Some(Exit::InterruptWindow),
            Ok(VcpuExit::Debug(arch)) => Some(Exit::Debug(DebugExit {
                exception: arch.exception,
                pc: arch.pc,
                dr6: arch.dr6,
            })),
            Ok(VcpuExit::Shutdown) => Some(Exit::Shutdown),
            Ok(VcpuExit::FailEntry(reason, cpu)) => Some(Exit::FailEntry { reason, cpu }),
            Ok(VcpuExit::InternalError) => None,
            Ok(other) => Some(Exit::Unexpected(format!("{other:?}"))),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Some(Exit::Kicked),
            Err(e) => Some(Exit::Failed(e.to_string())),
        };
        // Port I/O needs the access size and the internal error its data, both read from
        // `kvm_run` once the exit no longer borrows it.
        exit.unwrap_or_else(|| exit_from_kvm_run(self))
    }

    fn exit_data(&mut self) -> &mut [u8] {
        let run = self.get_kvm_run();
        match run.exit_reason {
            KVM_EXIT_IO => {
                // SAFETY: the exit reason is KVM_EXIT_IO, so the kernel filled the `io` member
                // of the exit union; it is plain data.
                let io = unsafe { run.__bindgen_anon_1.io };
                let len = usize::from(io.size) * io.count as usize;
                let start = (run as *mut kvm_bindings::kvm_run).cast::<u8>();
                // SAFETY: for KVM_EXIT_IO the kernel places `size * count` bytes at
                // `data_offset` inside the kvm_run mapping, which kvm-ioctls keeps mapped
                // whole (KVM_GET_VCPU_MMAP_SIZE bytes) for the life of the VcpuFd; kvm-ioctls
                // builds its own IoIn/IoOut slices the same way. The slice borrows `self`
                // mutably, so nothing else reads or writes the mapping meanwhile.
                unsafe {
                    std::slice::from_raw_parts_mut(
                        start.add(crate::narrow::to_usize(io.data_offset)),
                        len,
                    )
                }
            }
            KVM_EXIT_MMIO => {
                // SAFETY: the exit reason is KVM_EXIT_MMIO, so the `mmio` member is the one
                // the kernel filled; it is plain data.
                let mmio = unsafe { &mut run.__bindgen_anon_1.mmio };
                let len = (mmio.len as usize).min(mmio.data.len());
                &mut mmio.data[..len]
            }
            _ => &mut [],
        }
    }
}

/// A port-I/O or internal-error exit, read from `kvm_run`.
fn exit_from_kvm_run(vcpu: &mut VcpuFd) -> Exit {
    let run = vcpu.get_kvm_run();
    match run.exit_reason {
        KVM_EXIT_IO => {
            // SAFETY: the exit reason is KVM_EXIT_IO, so the `io` member of the exit union is
            // the one the kernel filled; it is plain data.
            let io = unsafe { run.__bindgen_anon_1.io };
            let (port, size, count) = (io.port, io.size, io.count);
            if u32::from(io.direction) == kvm_bindings::KVM_EXIT_IO_IN {
                Exit::PortIn { port, size, count }
            } else {
                Exit::PortOut { port, size, count }
            }
        }
        KVM_EXIT_INTERNAL_ERROR => {
            // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the member
            // the kernel filled; it is plain data.
            let internal = unsafe { run.__bindgen_anon_1.internal };
            let count = (internal.ndata as usize).min(internal.data.len());
            Exit::InternalError {
                suberror: internal.suberror,
                data: internal.data[..count].to_vec(),
            }
        }
        other => Exit::Unexpected(format!("exit reason {other}")),
    }
}

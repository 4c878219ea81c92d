//! A kernel that checks CPUID before it uses an instruction, as Linux does with CX16: with the
//! feature, a 16-byte `lock cmpxchg16b`; without it, the same swap done another way. On this
//! project's nested KVM ring-0 `cmpxchg16b` cannot be emulated, and `--cpuid -cx16` gets the
//! kernel past it; on a KVM that runs it natively both paths finish.

use crate::kprintln;

/// CPUID.1:ECX.CX16.
const CX16: u32 = 1 << 13;

#[repr(C, align(16))]
struct Pair([u64; 2]);

/// Swap `pair` from (1, 2) to (3, 4), with `lock cmpxchg16b` when CPUID offers it.
pub fn swap_pair() -> [u64; 2] {
    let ecx = core::arch::x86_64::__cpuid(1).ecx;
    let mut pair = Pair([1, 2]);
    if ecx & CX16 != 0 {
        kprintln!("[cx16] CPUID has CX16: swapping a 16-byte pair with lock cmpxchg16b");
        let target = core::ptr::addr_of_mut!(pair);
        // SAFETY: `target` is a 16-byte aligned pair on this stack; RBX (which LLVM keeps for
        // itself) is swapped in from a temporary and back around the instruction.
        unsafe {
            core::arch::asm!(
                "xchg {new_low}, rbx",
                "lock cmpxchg16b [{target}]",
                "xchg {new_low}, rbx",
                target = in(reg) target,
                new_low = inout(reg) 3u64 => _,
                inout("rax") 1u64 => _,
                inout("rdx") 2u64 => _,
                in("rcx") 4u64,
            );
        }
    } else {
        kprintln!("[cx16] CPUID lacks CX16: swapping the pair one word at a time");
        pair.0 = [3, 4];
    }
    pair.0
}

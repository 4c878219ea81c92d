//! Ring 3: the user program of seed 004 (as machine code the kernel copies into a process),
//! and the jump into user mode and back.

use core::arch::{global_asm, naked_asm};

/// What the program does, passed in RDI at its entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Program {
    /// mmap one anonymous rw page, write "offset world" at +0x100, read it back, exit 0.
    Journey = 0,
    /// mmap the same page, then write one page past its end: outside every VMA.
    Segv = 1,
    /// Read the kernel's first page (0x100000): mapped, but for the supervisor only.
    Peek = 2,
}

impl Program {
    pub fn name(self) -> &'static str {
        match self {
            Program::Journey => "journey",
            Program::Segv => "segv",
            Program::Peek => "peek",
        }
    }
}

// Position-independent, so it runs wherever the kernel maps it. System calls go through
// `int 0x80` with the x86-64 Linux numbers and registers (rax; rdi, rsi, rdx, r10, r8, r9).
global_asm!(
    ".pushsection .rodata.user_program, \"a\"",
    ".global user_program_start",
    ".global user_program_end",
    "user_program_start:",
    "    mov r12, rdi",
    "    cmp r12, 2",
    "    je 6f",
    // mmap(NULL, 4096, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0)
    "    mov eax, 9",
    "    xor edi, edi",
    "    mov esi, 4096",
    "    mov edx, 3",
    "    mov r10d, 0x22",
    "    mov r8, -1",
    "    xor r9d, r9d",
    "    int 0x80",
    "    test rax, rax",
    "    js 8f",
    "    mov rbx, rax",
    "    test r12, r12",
    "    jnz 5f",
    // strcpy(addr + 0x100, \"offset world\"): the first byte written takes the page fault.
    "    lea rdi, [rbx + 0x100]",
    "    lea rsi, [rip + 9f]",
    "    mov ecx, 13",
    "    rep movsb",
    // Read it back and compare.
    "    lea rdi, [rbx + 0x100]",
    "    lea rsi, [rip + 9f]",
    "    mov ecx, 13",
    "    repe cmpsb",
    "    jne 8f",
    // write(1, addr + 0x100, 12); exit(0)
    "    mov eax, 1",
    "    mov edi, 1",
    "    lea rsi, [rbx + 0x100]",
    "    mov edx, 12",
    "    int 0x80",
    "    mov eax, 60",
    "    xor edi, edi",
    "    int 0x80",
    "    ud2",
    // One page past the end of the mapping.
    "5:",
    "    mov byte ptr [rbx + 0x1100], 1",
    "    mov eax, 60",
    "    mov edi, 2",
    "    int 0x80",
    "    ud2",
    // A user read of the kernel image.
    "6:",
    "    mov rax, qword ptr [0x100000]",
    "    mov eax, 60",
    "    mov edi, 3",
    "    int 0x80",
    "    ud2",
    "8:",
    "    mov eax, 60",
    "    mov edi, 1",
    "    int 0x80",
    "    ud2",
    "9:",
    "    .asciz \"offset world\"",
    "user_program_end:",
    ".popsection",
);

unsafe extern "C" {
    static user_program_start: u8;
    static user_program_end: u8;
}

/// The program's machine code.
pub fn program_bytes() -> &'static [u8] {
    let start = &raw const user_program_start;
    let end = &raw const user_program_end;
    let len = (end as usize).saturating_sub(start as usize);
    // SAFETY: both symbols delimit the program in the kernel's read-only data.
    unsafe { core::slice::from_raw_parts(start, len) }
}

/// Callee-saved registers and stack pointer of the kernel code that started a process.
#[repr(C)]
#[derive(Debug, Default)]
pub struct KernelResume {
    rbx: u64,
    rbp: u64,
    r12: u64,
    r13: u64,
    r14: u64,
    r15: u64,
    rsp: u64,
}

impl KernelResume {
    pub const fn new() -> Self {
        Self {
            rbx: 0,
            rbp: 0,
            r12: 0,
            r13: 0,
            r14: 0,
            r15: 0,
            rsp: 0,
        }
    }
}

/// Save the kernel's state in `resume` and `iretq` to ring 3 at `entry` with `user_rsp`
/// and `arg` in RDI. Returns the status [`resume_kernel`] passes when the process ends.
///
/// # Safety
/// `entry` and `user_rsp` must be mapped for ring 3 in the active address space, `cs`/`ss`
/// must be the user code and data selectors, and `resume` must stay valid until the process
/// ends.
#[unsafe(naked)]
pub unsafe extern "C" fn enter_user(
    resume: *mut KernelResume,
    entry: u64,
    user_rsp: u64,
    arg: u64,
    cs: u64,
    ss: u64,
) -> u64 {
    naked_asm!(
        "mov [rdi], rbx",
        "mov [rdi + 8], rbp",
        "mov [rdi + 16], r12",
        "mov [rdi + 24], r13",
        "mov [rdi + 32], r14",
        "mov [rdi + 40], r15",
        "mov [rdi + 48], rsp",
        "push r9",
        "push rdx",
        // RFLAGS: IF off (this kernel takes no interrupts), IOPL 0.
        "push 0x2",
        "push r8",
        "push rsi",
        "mov rdi, rcx",
        "xor eax, eax",
        "xor ebx, ebx",
        "xor ecx, ecx",
        "xor edx, edx",
        "xor esi, esi",
        "xor ebp, ebp",
        "xor r8d, r8d",
        "xor r9d, r9d",
        "xor r10d, r10d",
        "xor r11d, r11d",
        "xor r12d, r12d",
        "xor r13d, r13d",
        "xor r14d, r14d",
        "xor r15d, r15d",
        "iretq",
    )
}

/// Return from [`enter_user`] with `status`, abandoning the trap stack the process was on.
///
/// # Safety
/// `resume` must have been filled by an [`enter_user`] whose caller is still running.
#[unsafe(naked)]
pub unsafe extern "C" fn resume_kernel(resume: *const KernelResume, status: u64) -> ! {
    naked_asm!(
        "mov rbx, [rdi]",
        "mov rbp, [rdi + 8]",
        "mov r12, [rdi + 16]",
        "mov r13, [rdi + 24]",
        "mov r14, [rdi + 32]",
        "mov r15, [rdi + 40]",
        "mov rsp, [rdi + 48]",
        "mov rax, rsi",
        "ret",
    )
}

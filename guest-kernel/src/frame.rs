//! The registers an exception stub saves, as the dispatcher and the handlers see them.

/// Registers as the stubs leave them on the stack, lowest address first.
#[repr(C)]
#[derive(Debug, Clone)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    /// The CPU's error code, or 0 for vectors that push none.
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

impl TrapFrame {
    /// The privilege level the exception came from.
    pub fn cpl(&self) -> u8 {
        (self.cs & 3) as u8
    }

    pub fn came_from_user(&self) -> bool {
        self.cpl() == 3
    }
}

//! kernel32: the kernel an OSDev tutorial builds, for testing hosts on it — a 32-bit
//! Multiboot 1 kernel in protected mode with paging off. It loads its own GDT and an IDT of
//! 32-bit interrupt gates, clears the VGA text screen and writes on it (and on COM1), remaps
//! the PICs to 0x20/0x28, runs the PIT at 100 Hz and waits in `sti; hlt` for 10 ticks (each
//! IRQ 0 handler returns with `iret`), then divides by zero. Its #DE handler reports the
//! faulting EIP and exits with code 4 through port 0xf4; any other exception exits with 3.
//!
//! Its Multiboot header has the address fields (flag 16), so loaders that refuse an ELF64
//! (QEMU's `-kernel`) load it too; the linker script keeps file and memory in step.
//!
//! On a nested KVM that cannot emulate a 32-bit `iret` (../shared/notes), each IRQ handler's
//! `iret` is an emulation failure the host carries out itself.
#![no_std]
#![no_main]

use abi::multiboot::header_flags;
use core::panic::PanicInfo;

/// Memory information and the address fields.
const FLAGS: u32 = header_flags::MEMORY_INFO | header_flags::ADDRESS;
/// The timer's rate, and the ticks the kernel waits for.
const HZ: u32 = 100;
const TICKS: u32 = 10;
/// The PIT's count for HZ.
const PIT_COUNT: u32 = 1_193_182 / HZ;

core::arch::global_asm!(
    ".pushsection .multiboot32, \"awx\"",
    ".balign 4",
    "k32_header:",
    "    .long {magic}",
    "    .long {flags}",
    "    .long {checksum}",
    "    .long k32_header",
    "    .long __k32_start",
    "    .long __k32_load_end",
    "    .long __k32_bss_end",
    "    .long kernel32_start",
    ".popsection",

    ".pushsection .text32, \"awx\"",
    ".code32",
    ".global kernel32_start",
    "kernel32_start:",
    "    cli",
    "    cld",
    "    mov esp, offset k32_stack_top",
    "    lgdt [k32_gdt_ptr]",
    // Reload CS with a far return, then the data segments.
    "    push 0x08",
    // Through EAX: LLVM assembles `push offset label` as a 16-bit push.
    "    mov eax, offset k32_reload",
    "    push eax",
    "    retf",
    "k32_reload:",
    "    mov ax, 0x10",
    "    mov ds, ax",
    "    mov es, ax",
    "    mov fs, ax",
    "    mov gs, ax",
    "    mov ss, ax",
    // 48 interrupt gates (present, DPL 0, 32-bit interrupt gate: 0x8E) from the stub table.
    "    xor ecx, ecx",
    "3:  mov eax, [k32_stubs + ecx * 4]",
    "    mov word ptr [k32_idt + ecx * 8], ax",
    "    mov word ptr [k32_idt + ecx * 8 + 2], 0x08",
    "    mov word ptr [k32_idt + ecx * 8 + 4], 0x8e00",
    "    shr eax, 16",
    "    mov word ptr [k32_idt + ecx * 8 + 6], ax",
    "    inc ecx",
    "    cmp ecx, 48",
    "    jb 3b",
    "    lidt [k32_idt_ptr]",
    // The screen: 80x25 blanks in light grey, cursor home.
    "    mov edi, 0xb8000",
    "    mov eax, 0x07200720",
    "    mov ecx, 1000",
    "    rep stosd",
    "    mov esi, offset k32_msg_banner",
    "    call k32_puts",
    // The PICs: ICW1-4 with vector bases 0x20 and 0x28, then only IRQ 0 unmasked.
    "    mov esi, offset k32_pic_init",
    "4:  movzx edx, word ptr [esi]",
    "    test edx, edx",
    "    jz 5f",
    "    mov al, [esi + 2]",
    "    out dx, al",
    "    add esi, 3",
    "    jmp 4b",
    // The PIT: channel 0, low then high byte, rate generator.
    "5:  mov al, 0x34",
    "    out 0x43, al",
    "    mov eax, {pit_count}",
    "    out 0x40, al",
    "    mov al, ah",
    "    out 0x40, al",
    "    mov esi, offset k32_msg_timer",
    "    call k32_puts",
    "6:  sti",
    "    hlt",
    "    cmp dword ptr [k32_ticks], {ticks}",
    "    jb 6b",
    "    cli",
    // Every line masked again, then the fault.
    "    mov al, 0xff",
    "    out 0x21, al",
    "    out 0xa1, al",
    "    mov esi, offset k32_msg_ticks",
    "    call k32_puts",
    "    mov esi, offset k32_msg_divide",
    "    call k32_puts",
    "    xor edx, edx",
    "    mov eax, 1",
    "    xor ecx, ecx",
    ".global k32_divide",
    "k32_divide:",
    "    div ecx",
    "    jmp k32_halt",

    // IRQ 0: count, EOI, return.
    "k32_irq0:",
    "    push eax",
    "    inc dword ptr [k32_ticks]",
    "    mov al, 0x20",
    "    out 0x20, al",
    "    pop eax",
    "    iretd",
    // Any other IRQ: EOI to both chips, return.
    "k32_irq_other:",
    "    push eax",
    "    mov al, 0x20",
    "    out 0xa0, al",
    "    out 0x20, al",
    "    pop eax",
    "    iretd",
    // #DE: report the faulting EIP (the frame's first word) and exit 4.
    "k32_divide_error:",
    "    mov esi, offset k32_msg_de",
    "    call k32_puts",
    "    mov eax, [esp]",
    "    call k32_put_hex",
    "    mov esi, offset k32_msg_newline",
    "    call k32_puts",
    "    mov al, {unhandled}",
    "    out 0xf4, al",
    "    jmp k32_halt",
    // Any other exception: say which and exit 3.
    "k32_exception:",
    "    mov esi, offset k32_msg_exception",
    "    call k32_puts",
    "    mov al, {panic}",
    "    out 0xf4, al",
    "k32_halt:",
    "    cli",
    "    hlt",
    "    jmp k32_halt",

    // k32_puts: the NUL-terminated string at ESI to COM1 and the screen.
    "k32_puts:",
    "    lodsb",
    "    test al, al",
    "    jz 9f",
    "    call k32_putc",
    "    jmp k32_puts",
    "9:  ret",
    // k32_putc: AL to COM1 and to the screen at the cursor (a newline moves to the next row).
    "k32_putc:",
    "    push edx",
    "    push edi",
    "    mov dx, 0x3f8",
    "    out dx, al",
    "    mov edi, [k32_cursor]",
    "    cmp al, 10",
    "    jne 1f",
    // Next row: round the cell index up to a multiple of 80.
    "    push eax",
    "    mov eax, edi",
    "    xor edx, edx",
    "    push ecx",
    "    mov ecx, 80",
    "    div ecx",
    "    pop ecx",
    "    inc eax",
    "    imul edi, eax, 80",
    "    pop eax",
    "    jmp 2f",
    "1:  mov byte ptr [0xb8000 + edi * 2], al",
    "    inc edi",
    "2:  mov [k32_cursor], edi",
    "    pop edi",
    "    pop edx",
    "    ret",
    // k32_put_hex: EAX as 0x and eight hex digits.
    "k32_put_hex:",
    "    push ecx",
    "    push eax",
    "    mov al, '0'",
    "    call k32_putc",
    "    mov al, 'x'",
    "    call k32_putc",
    "    pop eax",
    "    mov ecx, 8",
    "1:  rol eax, 4",
    "    push eax",
    "    and al, 0xf",
    "    add al, '0'",
    "    cmp al, '9'",
    "    jbe 2f",
    "    add al, 'a' - '9' - 1",
    "2:  call k32_putc",
    "    pop eax",
    "    loop 1b",
    "    pop ecx",
    "    ret",

    ".pushsection .data32, \"aw\"",
    ".balign 8",
    "k32_gdt:",
    "    .quad 0",
    "    .quad 0x00cf9a000000ffff", // 0x08: flat 32-bit code
    "    .quad 0x00cf92000000ffff", // 0x10: flat data
    "k32_gdt_ptr:",
    "    .word k32_gdt_ptr - k32_gdt - 1",
    "    .long k32_gdt",
    ".balign 4",
    "k32_idt_ptr:",
    "    .word 48 * 8 - 1",
    "    .long k32_idt",
    // Vector 0 is #DE; 1-31 the other exceptions; 32 IRQ 0; 33-47 the other IRQs.
    "k32_stubs:",
    "    .long k32_divide_error",
    "    .rept 31",
    "    .long k32_exception",
    "    .endr",
    "    .long k32_irq0",
    "    .rept 15",
    "    .long k32_irq_other",
    "    .endr",
    // (port, value) triples ending with port 0: ICW1-4 for both chips, then the masks.
    "k32_pic_init:",
    "    .word 0x20", "    .byte 0x11",
    "    .word 0xa0", "    .byte 0x11",
    "    .word 0x21", "    .byte 0x20",
    "    .word 0xa1", "    .byte 0x28",
    "    .word 0x21", "    .byte 0x04",
    "    .word 0xa1", "    .byte 0x02",
    "    .word 0x21", "    .byte 0x01",
    "    .word 0xa1", "    .byte 0x01",
    "    .word 0x21", "    .byte 0xfe",
    "    .word 0xa1", "    .byte 0xff",
    "    .word 0",
    "k32_cursor: .long 0",
    "k32_ticks: .long 0",
    "k32_msg_banner: .asciz \"kernel32: 32-bit protected mode, paging off, Multiboot 1\\n\"",
    "k32_msg_timer: .asciz \"kernel32: PICs at 0x20/0x28, PIT at 100 Hz, sti; hlt\\n\"",
    "k32_msg_ticks: .asciz \"kernel32: 10 timer ticks\\n\"",
    "k32_msg_divide: .asciz \"kernel32: dividing by zero\\n\"",
    "k32_msg_de: .asciz \"kernel32: #DE divide error at eip \"",
    "k32_msg_exception: .asciz \"kernel32: unexpected exception\\n\"",
    "k32_msg_newline: .asciz \"\\n\"",
    ".popsection",

    ".pushsection .bss32, \"aw\", @nobits",
    ".balign 8",
    "k32_idt: .skip 48 * 8",
    ".balign 16",
    "    .skip 4096",
    "k32_stack_top:",
    ".popsection",
    ".popsection",

    magic = const abi::multiboot::HEADER_MAGIC,
    flags = const FLAGS,
    checksum = const 0u32.wrapping_sub(abi::multiboot::HEADER_MAGIC).wrapping_sub(FLAGS),
    pit_count = const PIT_COUNT,
    ticks = const TICKS,
    unhandled = const abi::exit::UNHANDLED_EXCEPTION,
    panic = const abi::exit::PANIC,
);

/// Nothing calls Rust code here; a panic cannot happen, but a `no_std` binary needs a handler.
#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    loop {
        core::hint::spin_loop();
    }
}

//! The entries: BoxKernel's stage2 in 32-bit assembly, reached through PVH or Multiboot 1.
//!
//! The host (or QEMU, or GRUB) enters in 32-bit protected mode with paging off:
//! - `pvh_start32` (the PVH note) with EBX = physical address of `hvm_start_info`;
//! - `multiboot_start32` (both Multiboot headers' entry address) with EAX = 0x2BADB002 and
//!   EBX = the Multiboot information, or EAX = 0x36D76289 and EBX = the Multiboot 2 boot
//!   information;
//! - `linux_start32`, the image's first byte, with ESI = `boot_params`, when the host's build
//!   has wrapped the image in a bzImage (`GUEST_KERNEL_BZIMAGE`);
//! - `linux_start64`, the ELF's entry point, in long mode with RSI = `boot_params`, when a
//!   loader boots the ELF as a vmlinux (`vmm-host --boot linux` with the ELF).
//!
//! Like BoxKernel's `stage2.asm`, the shared stub builds boot page tables at 0x500000 that
//! identity-map the first 32 MiB with 2 MiB pages, switches to long mode and calls
//! [`crate::kmain`] with the boot data's address and the protocol's magic on the boot stack at
//! 0x510000.
//!
//! Both Multiboot headers use address fields (Multiboot 1's flag 16, Multiboot 2's address tag): loaders that refuse ELF64 (QEMU's
//! `-kernel`) load the file's bytes from `__kernel_start` to `__load_end` by them, which works
//! because the linker script keeps file offsets and addresses in step.

use abi::boot::{BOOT_IDENTITY_MAP, BOOT_PAGE_TABLES, BOOT_PAGE_TABLES_SIZE, BOOT_STACK_TOP};
use abi::multiboot::header_flags;

/// Page-aligned modules, memory information, and load by the address fields.
const MULTIBOOT_FLAGS: u32 =
    header_flags::PAGE_ALIGN | header_flags::MEMORY_INFO | header_flags::ADDRESS;

/// Flags of a boot page-table entry that points at the next table: present + writable.
const TABLE_FLAGS: u64 = 0x3;
/// Flags of a boot 2 MiB leaf: present + writable + page size.
const LARGE_PAGE_FLAGS: u64 = 0x83;

core::arch::global_asm!(
    // XEN_ELFNOTE_PHYS32_ENTRY (18): the 32-bit physical entry point, found by linux-loader
    // and by QEMU in a PT_NOTE segment.
    ".pushsection .note.Xen, \"a\", @note",
    ".balign 4",
    ".long 4",
    ".long 8",
    ".long 18",
    ".asciz \"Xen\"",
    ".balign 4",
    // 8 bytes, as Linux writes it: QEMU reads a pointer-sized value, linux-loader the low 32 bits.
    ".quad pvh_start32",
    ".balign 4",
    ".popsection",

    // The Linux boot protocol's 32-bit entry: the first byte of the image (code32_start) when
    // the host's build wraps it in a bzImage, with ESI = boot_params.
    ".pushsection .text.linux, \"ax\"",
    ".code32",
    ".global linux_start32",
    "linux_start32:",
    "    mov ebx, esi",
    "    mov ebp, {linux_magic}",
    "    jmp boot32",
    ".popsection",

    // The Multiboot header: next in the image, inside the first 8 KiB of the file.
    ".pushsection .text.multiboot, \"ax\"",
    ".balign 4",
    "multiboot_header:",
    "    .long {mb_magic}",
    "    .long {mb_flags}",
    "    .long {mb_checksum}",
    "    .long multiboot_header",
    "    .long __kernel_start",
    "    .long __load_end",
    "    .long __bss_end",
    "    .long multiboot_start32",
    // The Multiboot 2 header: address and entry address tags, then the end tag.
    ".balign 8",
    "multiboot2_header:",
    "    .long {mb2_magic}",
    "    .long 0",
    "    .long multiboot2_header_end - multiboot2_header",
    "    .long 0x100000000 - {mb2_magic} - (multiboot2_header_end - multiboot2_header)",
    "    .short 2",
    "    .short 0",
    "    .long 24",
    "    .long multiboot2_header",
    "    .long __kernel_start",
    "    .long __load_end",
    "    .long __bss_end",
    "    .short 3",
    "    .short 0",
    "    .long 12",
    "    .long multiboot_start32",
    "    .balign 8",
    "    .short 0",
    "    .short 0",
    "    .long 8",
    "multiboot2_header_end:",
    ".popsection",

    ".pushsection .text.boot, \"ax\"",
    ".code32",
    ".global multiboot_start32",
    "multiboot_start32:",
    "    mov ebp, eax",
    "    jmp boot32",
    ".global pvh_start32",
    "pvh_start32:",
    "    mov ebp, {pvh_magic}",
    // EBX = the boot data, EBP = the protocol's magic: both survive to long mode.
    "boot32:",
    "    cli",
    "    cld",
    "    mov esp, {stack_top}",
    // ESI carries the start_info pointer into long mode; nothing below touches it.
    "    mov esi, ebx",
    "    mov edi, {tables}",
    "    xor eax, eax",
    "    mov ecx, {tables_dwords}",
    "    rep stosd",
    "    mov dword ptr [{tables}], {tables} + 0x1000 + {table_flags}",
    "    mov dword ptr [{tables} + 0x1000], {tables} + 0x2000 + {table_flags}",
    "    xor ecx, ecx",
    "2:",
    "    mov eax, ecx",
    "    shl eax, 21",
    "    or eax, {large_flags}",
    "    mov dword ptr [{tables} + 0x2000 + ecx * 8], eax",
    "    inc ecx",
    "    cmp ecx, {large_pages}",
    "    jb 2b",
    // CR4.PAE, CR3, EFER.LME|NXE, then CR0.PG|WP enters long mode (compatibility mode).
    "    mov eax, cr4",
    "    or eax, 0x20",
    "    mov cr4, eax",
    "    mov eax, {tables}",
    "    mov cr3, eax",
    "    mov ecx, 0xC0000080",
    "    rdmsr",
    "    or eax, 0x900",
    "    wrmsr",
    "    mov eax, cr0",
    "    or eax, 0x80010001",
    "    mov cr0, eax",
    "    lgdt [boot_gdt_ptr]",
    "    lea eax, [boot64]",
    "    push 0x08",
    "    push eax",
    "    retf",

    // Linux's 64-bit entry for a vmlinux: long mode on the loader's identity tables, RSI =
    // boot_params. Build the boot tables as boot32 does, switch to them and to the kernel's
    // GDT, and join boot64 with the same registers.
    ".code64",
    ".global linux_start64",
    "linux_start64:",
    "    cli",
    "    cld",
    "    mov rsp, {stack_top}",
    "    mov ebp, {linux_magic}",
    "    mov rbx, rsi",
    "    mov edi, {tables}",
    "    xor eax, eax",
    "    mov ecx, {tables_dwords}",
    "    rep stosd",
    "    mov dword ptr [{tables}], {tables} + 0x1000 + {table_flags}",
    "    mov dword ptr [{tables} + 0x1000], {tables} + 0x2000 + {table_flags}",
    "    xor ecx, ecx",
    "4:",
    "    mov eax, ecx",
    "    shl eax, 21",
    "    or eax, {large_flags}",
    "    mov dword ptr [{tables} + 0x2000 + rcx * 8], eax",
    "    inc ecx",
    "    cmp ecx, {large_pages}",
    "    jb 4b",
    "    mov eax, {tables}",
    "    mov cr3, rax",
    // EFER.NXE (the loader set LME only) and CR0.WP, as boot32 has them.
    "    mov ecx, 0xC0000080",
    "    rdmsr",
    "    or eax, 0x800",
    "    wrmsr",
    "    mov rax, cr0",
    "    or eax, 0x10000",
    "    mov cr0, rax",
    "    lgdt [rip + boot_gdt_ptr64]",
    "    mov esi, ebx",
    "    push 0x08",
    "    lea rax, [rip + boot64]",
    "    push rax",
    "    retfq",

    "boot64:",
    "    mov ax, 0x10",
    "    mov ds, ax",
    "    mov es, ax",
    "    mov ss, ax",
    "    mov fs, ax",
    "    mov gs, ax",
    "    mov rsp, {stack_top}",
    "    mov edi, esi",
    "    mov esi, ebp",
    "    call kmain",
    "3:",
    "    cli",
    "    hlt",
    "    jmp 3b",
    ".popsection",

    ".pushsection .rodata.boot, \"a\"",
    ".balign 16",
    "boot_gdt:",
    "    .quad 0",
    "    .quad 0x00af9a000000ffff", // 0x08: 64-bit code, DPL 0
    "    .quad 0x00cf92000000ffff", // 0x10: data, DPL 0
    "boot_gdt_ptr:",
    "    .word boot_gdt_ptr - boot_gdt - 1",
    "    .long boot_gdt",
    // lgdt in 64-bit mode reads an 8-byte base.
    "boot_gdt_ptr64:",
    "    .word boot_gdt_ptr - boot_gdt - 1",
    "    .quad boot_gdt",
    ".popsection",

    mb_magic = const abi::multiboot::HEADER_MAGIC,
    mb2_magic = const abi::multiboot2::HEADER_MAGIC,
    mb_flags = const MULTIBOOT_FLAGS,
    mb_checksum = const 0u32.wrapping_sub(abi::multiboot::HEADER_MAGIC).wrapping_sub(MULTIBOOT_FLAGS),
    pvh_magic = const abi::start_info::MAGIC,
    linux_magic = const abi::linux::ENTRY_MAGIC,
    stack_top = const BOOT_STACK_TOP,
    tables = const BOOT_PAGE_TABLES,
    tables_dwords = const BOOT_PAGE_TABLES_SIZE / 4,
    table_flags = const TABLE_FLAGS,
    large_flags = const LARGE_PAGE_FLAGS,
    large_pages = const BOOT_IDENTITY_MAP >> 21,
);

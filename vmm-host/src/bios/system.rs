//! int 15h, the system services boot loaders use to size memory, open the A20 gate and
//! reach memory above 1 MiB from real mode: E820 (the map the VM's RAM layout gives every
//! protocol), E801h and 88h, the A20 calls 2400h–2403h, and 87h (copy a block between any
//! two physical addresses). Also int 11h (equipment) and int 12h (conventional memory).

use super::rom::{CONVENTIONAL_KIB, EQUIPMENT};
use super::{Call, Firmware, Served};
use crate::addr::Gpa;

/// 'SMAP', the signature E820 callers pass in EDX and get back in EAX.
const SMAP: u32 = 0x534d_4150;
/// "Function not supported", int 15h's status for every call it does not know.
pub const UNSUPPORTED: u8 = 0x86;
const MIB: u64 = 1 << 20;

pub(super) fn equipment(call: &mut Call) -> Served {
    call.set_ax(EQUIPMENT);
    Served::Done
}

pub(super) fn conventional_memory(call: &mut Call) -> Served {
    call.set_ax(CONVENTIONAL_KIB);
    Served::Done
}

pub(super) fn serve(call: &mut Call, fw: &mut Firmware) -> Served {
    match (call.ah(), call.al()) {
        (0xe8, 0x20) => e820(call, fw),
        (0xe8, 0x01) => {
            let (below_16m, above_16m) = extended_sizes(fw);
            call.set_ax(below_16m);
            call.set_cx(below_16m);
            call.set_bx(above_16m);
            call.set_dx(above_16m);
            call.succeed();
            Served::Done
        }
        (0x88, _) => {
            let kib = (fw.ram_below_4g().saturating_sub(MIB) >> 10).min(0xfc00);
            call.set_ax(crate::narrow::low_u16(kib));
            call.succeed();
            Served::Done
        }
        (0x87, _) => move_block(call, fw),
        (0x24, 0x01) | (0x24, 0x03) => {
            // A20 is always on in this VM; 03h: both the i8042 and port 92h can gate it.
            if call.al() == 0x03 {
                call.set_bx(0x0003);
            }
            call.set_ah(0);
            call.succeed();
            Served::Done
        }
        (0x24, 0x02) => {
            call.set_ax(0x0001);
            call.succeed();
            Served::Done
        }
        _ => {
            call.fail(UNSUPPORTED);
            Served::Unsupported
        }
    }
}

/// E801h: KiB between 1 and 16 MiB (at most 15 MiB), and 64 KiB blocks from 16 MiB to the
/// hole below 4 GiB.
fn extended_sizes(fw: &Firmware) -> (u16, u16) {
    let below_4g = fw.ram_below_4g();
    let low = (below_4g.min(16 * MIB).saturating_sub(MIB)) >> 10;
    let high = below_4g.saturating_sub(16 * MIB) >> 16;
    (
        crate::narrow::low_u16(low),
        crate::narrow::low_u16(high.min(0xffff)),
    )
}

/// E820: entry EBX of the memory map into ES:DI (20 bytes, or 24 with the ACPI 3.0
/// attributes when ECX asks for them); EBX the next entry, 0 after the last.
fn e820(call: &mut Call, fw: &mut Firmware) -> Served {
    let index = crate::narrow::low_u32(call.regs.rbx);
    let wanted = crate::narrow::low_u32(call.regs.rcx);
    let edx = crate::narrow::low_u32(call.regs.rdx);
    let map = fw.memory_map;
    let Some(entry) = map
        .get(index as usize)
        .filter(|_| edx == SMAP && wanted >= 20)
    else {
        call.fail(UNSUPPORTED);
        return Served::Done;
    };
    let size: u32 = if wanted >= 24 { 24 } else { 20 };
    let mut bytes = Vec::with_capacity(24);
    bytes.extend_from_slice(&entry.addr.to_le_bytes());
    bytes.extend_from_slice(&entry.size.to_le_bytes());
    bytes.extend_from_slice(&entry.kind.to_le_bytes());
    bytes.extend_from_slice(&1u32.to_le_bytes()); // enabled
    bytes.truncate(size as usize);
    if !fw.write(call.es_di(), &bytes) {
        call.fail(UNSUPPORTED);
        return Served::Done;
    }
    let next = index + 1;
    call.set_ebx(if (next as usize) < map.len() { next } else { 0 });
    call.set_eax(SMAP);
    call.set_ecx(size);
    call.succeed();
    Served::Done
}

/// AH=87h: copy CX words between the source and destination descriptors of the GDT at
/// ES:SI (offsets 10h and 18h: 24-bit base in bytes 2–4, base bits 24–31 in byte 7).
fn move_block(call: &mut Call, fw: &mut Firmware) -> Served {
    let table = call.es_si();
    let Some(gdt) = fw.read(table, 0x20) else {
        call.fail(0x03);
        return Served::Done;
    };
    let base = |d: &[u8]| u64::from_le_bytes([d[2], d[3], d[4], d[7], 0, 0, 0, 0]);
    let source = Gpa::new(base(&gdt[0x10..0x18]));
    let destination = Gpa::new(base(&gdt[0x18..0x20]));
    let words = call.cx();
    if words > 0x8000 {
        call.fail(0x03);
        return Served::Done;
    }
    let len = usize::from(words) * 2;
    let copied = fw
        .read(source, len)
        .is_some_and(|data| fw.write(destination, &data));
    if copied {
        call.set_ah(0);
        call.zero = Some(true);
        call.succeed();
    } else {
        // "Address line 20 gating failed": how BIOSes report a move they could not make.
        call.fail(0x03);
    }
    Served::Done
}

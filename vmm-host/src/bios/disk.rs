//! int 13h for the one hard disk, drive 80h: the boot image. CHS reads and writes with the
//! geometry a BIOS makes up for a disk of this size (16 heads, 63 sectors a track), the
//! Enhanced Disk Drive extensions (41h, 42h, 43h, 48h), parameters and status. Writes change
//! the host's copy of the image, never the file. A sector past the image's end fails as a
//! BIOS fails it: CF set, AH the status.

use super::{Call, Firmware, Served};
use crate::addr::Gpa;

pub const SECTOR: usize = 512;
/// The drive number the BIOS boots from and passes in DL.
pub const BOOT_DRIVE: u8 = 0x80;
const HEADS: u64 = 16;
const SECTORS_PER_TRACK: u64 = 63;
const MAX_CYLINDERS: u64 = 1024;

/// int 13h status codes (AH).
mod status {
    pub const OK: u8 = 0x00;
    pub const INVALID: u8 = 0x01;
    pub const NOT_FOUND: u8 = 0x04;
    /// "DMA boundary error": the buffer runs past the end of RAM.
    pub const BAD_BUFFER: u8 = 0x09;
}

/// The boot disk: the image's bytes, and the status of the last call (AH=01h).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    bytes: Vec<u8>,
    last_status: u8,
}

/// A transfer between the disk and guest RAM.
#[derive(Debug, Clone, Copy)]
struct Transfer {
    lba: u64,
    count: u64,
    buffer: Gpa,
    write: bool,
}

impl Disk {
    /// A disk holding `bytes` (a whole number of sectors: the loader checked).
    pub fn new(bytes: Vec<u8>) -> Self {
        Self {
            bytes,
            last_status: status::OK,
        }
    }

    pub fn sectors(&self) -> u64 {
        (self.bytes.len() / SECTOR) as u64
    }

    /// Cylinders of the made-up geometry, at least one, at most 1024 (CHS's limit).
    fn cylinders(&self) -> u64 {
        self.sectors()
            .div_ceil(HEADS * SECTORS_PER_TRACK)
            .clamp(1, MAX_CYLINDERS)
    }

    pub(super) fn serve(&mut self, call: &mut Call, fw: &mut Firmware) -> Served {
        if call.dl() != BOOT_DRIVE {
            // AH=15h answers "no such drive" without an error; everything else fails.
            if call.ah() == 0x15 {
                call.set_ah(0);
                call.succeed();
                return Served::Done;
            }
            call.fail(status::INVALID);
            self.last_status = status::INVALID;
            return Served::Done;
        }
        let served = self.serve_boot_drive(call, fw);
        self.last_status = if call.carry { call.ah() } else { status::OK };
        served
    }

    fn serve_boot_drive(&mut self, call: &mut Call, fw: &mut Firmware) -> Served {
        match call.ah() {
            0x00 | 0x0d | 0x10 | 0x11 => ok(call),
            0x01 => {
                call.set_ah(self.last_status);
                call.succeed();
                Served::Done
            }
            0x02 | 0x03 => self.chs_transfer(call, fw),
            0x04 | 0x0c => ok(call),
            0x08 => self.parameters(call),
            0x15 => {
                // A hard disk, and its size in sectors in CX:DX.
                let sectors = crate::narrow::low_u32(self.sectors());
                call.set_cx(crate::narrow::low_u16(u64::from(sectors >> 16)));
                call.set_dx(crate::narrow::low_u16(u64::from(sectors)));
                call.set_ah(0x03);
                call.succeed();
                Served::Done
            }
            0x41 if call.bx() == 0x55aa => {
                call.set_bx(0xaa55);
                call.set_ah(0x30); // EDD 3.0
                call.set_cx(0x0001); // the extended disk access functions (42h–44h, 47h, 48h)
                call.succeed();
                Served::Done
            }
            0x42 | 0x43 => self.extended_transfer(call, fw),
            0x44 | 0x47 => self.extended_check(call, fw),
            0x48 => self.extended_parameters(call, fw),
            _ => {
                call.fail(status::INVALID);
                Served::Unsupported
            }
        }
    }

    /// AH=02h/03h: AL sectors from cylinder CH (and CL bits 6–7), sector CL bits 0–5 (from
    /// 1), head DH, to or from ES:BX. AL returns the number transferred.
    fn chs_transfer(&mut self, call: &mut Call, fw: &mut Firmware) -> Served {
        let cylinder = u64::from(call.ch()) | (u64::from(call.cl() & 0xc0) << 2);
        let sector = u64::from(call.cl() & 0x3f);
        let head = u64::from(call.dh());
        let count = u64::from(call.al());
        if count == 0 || sector == 0 || sector > SECTORS_PER_TRACK || head >= HEADS {
            call.fail(if count == 0 {
                status::INVALID
            } else {
                status::NOT_FOUND
            });
            call.set_al(0);
            return Served::Done;
        }
        let lba = (cylinder * HEADS + head) * SECTORS_PER_TRACK + sector - 1;
        let transfer = Transfer {
            lba,
            count,
            buffer: call.es_bx(),
            write: call.ah() == 0x03,
        };
        match self.transfer(transfer, fw) {
            Ok(()) => {
                call.set_ah(status::OK);
                call.succeed();
            }
            Err(code) => {
                call.fail(code);
                call.set_al(0);
            }
        }
        Served::Done
    }

    /// AH=08h: the geometry, as maxima: CH/CL the last cylinder (CL bits 6–7 its high bits)
    /// and last sector, DH the last head, DL the number of hard disks.
    fn parameters(&self, call: &mut Call) -> Served {
        let last_cylinder = self.cylinders() - 1;
        // At most 1023: ten bits, CH the low eight, CL's top two the rest.
        let cx = (last_cylinder & 0xff) << 8 | (last_cylinder >> 8) << 6 | SECTORS_PER_TRACK;
        call.set_cx(crate::narrow::low_u16(cx));
        call.set_dx(crate::narrow::low_u16((HEADS - 1) << 8 | 1));
        call.set_ax(0);
        call.set_bx(0);
        call.succeed();
        Served::Done
    }

    /// The disk address packet at DS:SI: its size, sector count, buffer and first sector.
    /// A buffer of FFFF:FFFF means the 64-bit flat address at offset 10h (EDD 3.0).
    fn packet(call: &Call, fw: &Firmware) -> Option<(Transfer, Gpa)> {
        let at = call.ds_si();
        let head = fw.read(at, 16)?;
        if head[0] < 16 {
            return None;
        }
        let word = |i: usize| u16::from_le_bytes([head[i], head[i + 1]]);
        let (offset, segment) = (word(4), word(6));
        let buffer = if (offset, segment) == (0xffff, 0xffff) && head[0] >= 0x18 {
            let flat = fw.read(Gpa::new(at.raw() + 16), 8)?;
            Gpa::new(u64::from_le_bytes(flat.try_into().ok()?))
        } else {
            Call::at(segment, offset)
        };
        let lba = u64::from_le_bytes(head[8..16].try_into().ok()?);
        let transfer = Transfer {
            lba,
            count: u64::from(word(2)),
            buffer,
            write: call.ah() == 0x43,
        };
        Some((transfer, at))
    }

    /// AH=42h/43h: the transfer a disk address packet describes; on failure its count
    /// says how many sectors moved (none).
    fn extended_transfer(&mut self, call: &mut Call, fw: &mut Firmware) -> Served {
        let Some((transfer, packet)) = Self::packet(call, fw) else {
            call.fail(status::INVALID);
            return Served::Done;
        };
        match self.transfer(transfer, fw) {
            Ok(()) => {
                call.set_ah(status::OK);
                call.succeed();
            }
            Err(code) => {
                fw.write(Gpa::new(packet.raw() + 2), &[0, 0]);
                call.fail(code);
            }
        }
        Served::Done
    }

    /// AH=44h (verify) and 47h (seek): the sectors must exist.
    fn extended_check(&mut self, call: &mut Call, fw: &mut Firmware) -> Served {
        match Self::packet(call, fw) {
            Some((t, _)) if self.in_range(t.lba, t.count.max(1)) => ok(call),
            Some(_) => {
                call.fail(status::NOT_FOUND);
                Served::Done
            }
            None => {
                call.fail(status::INVALID);
                Served::Done
            }
        }
    }

    /// AH=48h: the drive parameters table at DS:SI (its first word is the caller's size).
    fn extended_parameters(&self, call: &mut Call, fw: &mut Firmware) -> Served {
        let at = call.ds_si();
        let size = fw.read_u16(at.raw());
        if size < 0x1a {
            call.fail(status::INVALID);
            return Served::Done;
        }
        let mut table = Vec::with_capacity(0x1a);
        table.extend_from_slice(&0x1au16.to_le_bytes());
        table.extend_from_slice(&0x0002u16.to_le_bytes()); // CHS geometry valid
        table.extend_from_slice(&crate::narrow::low_u32(self.cylinders()).to_le_bytes());
        table.extend_from_slice(&crate::narrow::low_u32(HEADS).to_le_bytes());
        table.extend_from_slice(&crate::narrow::low_u32(SECTORS_PER_TRACK).to_le_bytes());
        table.extend_from_slice(&self.sectors().to_le_bytes());
        table.extend_from_slice(&crate::narrow::low_u16(SECTOR as u64).to_le_bytes());
        fw.write(at, &table);
        ok(call)
    }

    fn in_range(&self, lba: u64, count: u64) -> bool {
        lba.checked_add(count)
            .is_some_and(|end| end <= self.sectors())
    }

    /// Move `t.count` sectors between the image and guest RAM, or say why not.
    fn transfer(&mut self, t: Transfer, fw: &mut Firmware) -> Result<(), u8> {
        if t.count == 0 || t.count > 127 {
            return Err(status::INVALID);
        }
        if !self.in_range(t.lba, t.count) {
            return Err(status::NOT_FOUND);
        }
        let start = crate::narrow::to_usize(t.lba) * SECTOR;
        let len = crate::narrow::to_usize(t.count) * SECTOR;
        if t.write {
            let data = fw.read(t.buffer, len).ok_or(status::BAD_BUFFER)?;
            self.bytes[start..start + len].copy_from_slice(&data);
            return Ok(());
        }
        if fw.write(t.buffer, &self.bytes[start..start + len]) {
            Ok(())
        } else {
            Err(status::BAD_BUFFER)
        }
    }
}

fn ok(call: &mut Call) -> Served {
    call.set_ah(status::OK);
    call.succeed();
    Served::Done
}

//! The bytes the tap patched into guest code, and the view of guest RAM that hides them.
//!
//! A patched byte belongs to exception handlers (the tap's own traps), to a gdb software
//! breakpoint, or to both; it goes back to the guest only when no owner is left.
//!
//! Every host read of guest memory (walks, instruction decoding, reports, gdb) goes through
//! `virt::GuestView`, which shows the guest's original bytes where a trap byte sits.

use crate::addr::Gpa;
use crate::virt::HostBytes;
use std::collections::BTreeMap;
use vm_memory::{Bytes, GuestMemoryMmap};

#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("cannot patch the handler byte at physical {0}: it is not guest RAM")]
    NotRam(Gpa),
}

/// One patched handler entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Patch {
    /// The byte the guest wrote there.
    pub original: u8,
    /// Vectors whose gate points here (bit n = vector n); several when handlers are shared.
    pub vectors: u32,
    /// A gdb software breakpoint sits here.
    pub breakpoint: bool,
    /// True while the original byte is back in place for a single-step.
    pub lifted: bool,
}

impl Patch {
    /// The lowest vector using this handler: the one the tap reports.
    pub fn vector(&self) -> u8 {
        self.vectors.trailing_zeros().min(31) as u8
    }

    pub fn shared(&self) -> bool {
        self.vectors.count_ones() > 1
    }

    /// Whether this byte traps exceptions (as opposed to only a breakpoint).
    pub fn is_handler(&self) -> bool {
        self.vectors != 0
    }
}

#[derive(Debug)]
pub struct Patches {
    trap_byte: u8,
    by_gpa: BTreeMap<Gpa, Patch>,
}

impl Patches {
    pub fn new(trap_byte: u8) -> Self {
        Self {
            trap_byte,
            by_gpa: BTreeMap::new(),
        }
    }

    pub fn trap_byte(&self) -> u8 {
        self.trap_byte
    }

    pub fn get(&self, gpa: Gpa) -> Option<&Patch> {
        self.by_gpa.get(&gpa)
    }

    /// Handler entries armed (breakpoints not counted).
    pub fn handlers(&self) -> usize {
        self.by_gpa.values().filter(|p| p.is_handler()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.by_gpa.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (Gpa, &Patch)> {
        self.by_gpa.iter().map(|(&gpa, patch)| (gpa, patch))
    }

    /// Put the trap byte at `gpa` for `vector`, remembering what was there.
    pub fn arm(&mut self, ram: &GuestMemoryMmap, gpa: Gpa, vector: u8) -> Result<(), PatchError> {
        self.plant(ram, gpa)?.vectors |= 1 << vector;
        Ok(())
    }

    /// Put the trap byte at `gpa` for a gdb breakpoint.
    pub fn add_breakpoint(&mut self, ram: &GuestMemoryMmap, gpa: Gpa) -> Result<(), PatchError> {
        self.plant(ram, gpa)?.breakpoint = true;
        Ok(())
    }

    fn plant(&mut self, ram: &GuestMemoryMmap, gpa: Gpa) -> Result<&mut Patch, PatchError> {
        if !self.by_gpa.contains_key(&gpa) {
            let original: u8 = ram
                .read_obj(gpa.guest_address())
                .map_err(|_| PatchError::NotRam(gpa))?;
            ram.write_obj(self.trap_byte, gpa.guest_address())
                .map_err(|_| PatchError::NotRam(gpa))?;
            self.by_gpa.insert(
                gpa,
                Patch {
                    original,
                    vectors: 0,
                    breakpoint: false,
                    lifted: false,
                },
            );
        }
        self.by_gpa.get_mut(&gpa).ok_or(PatchError::NotRam(gpa))
    }

    /// The handlers no longer point here; a breakpoint keeps the byte planted.
    pub fn release_handler(&mut self, ram: &GuestMemoryMmap, gpa: Gpa) {
        match self.by_gpa.get_mut(&gpa) {
            Some(patch) if patch.breakpoint => patch.vectors = 0,
            Some(_) => self.disarm(ram, gpa),
            None => {}
        }
    }

    /// The breakpoint is gone; handlers keep the byte planted.
    pub fn remove_breakpoint(&mut self, ram: &GuestMemoryMmap, gpa: Gpa) -> bool {
        match self.by_gpa.get_mut(&gpa) {
            Some(patch) if patch.breakpoint && patch.is_handler() => {
                patch.breakpoint = false;
                true
            }
            Some(patch) if patch.breakpoint => {
                self.disarm(ram, gpa);
                true
            }
            _ => false,
        }
    }

    /// A write to guest RAM on the host's behalf (gdb): where a trap byte sits, the new
    /// value becomes the original the guest will see, and the trap stays.
    pub fn write_through(&mut self, ram: &GuestMemoryMmap, gpa: Gpa, data: &[u8]) -> bool {
        if ram.write_slice(data, gpa.guest_address()).is_err() {
            return false;
        }
        let Some(end) = gpa.checked_add(data.len() as u64) else {
            return true;
        };
        for (&at, patch) in self.by_gpa.range_mut(gpa..end) {
            if !patch.lifted {
                patch.original = data[crate::narrow::to_usize(at.raw() - gpa.raw())];
                let _ = ram.write_obj(self.trap_byte, at.guest_address());
            }
        }
        true
    }

    /// Give the guest its byte back for good.
    pub fn disarm(&mut self, ram: &GuestMemoryMmap, gpa: Gpa) {
        if let Some(patch) = self.by_gpa.remove(&gpa)
            && !patch.lifted
            && self.holds_trap(ram, gpa)
        {
            let _ = ram.write_obj(patch.original, gpa.guest_address());
        }
    }

    pub fn disarm_all(&mut self, ram: &GuestMemoryMmap) {
        let all: Vec<Gpa> = self.by_gpa.keys().copied().collect();
        for gpa in all {
            self.disarm(ram, gpa);
        }
    }

    /// Put the original byte back while its instruction is single-stepped.
    pub fn lift(&mut self, ram: &GuestMemoryMmap, gpa: Gpa) {
        if let Some(patch) = self.by_gpa.get_mut(&gpa)
            && !patch.lifted
        {
            let _ = ram.write_obj(patch.original, gpa.guest_address());
            patch.lifted = true;
        }
    }

    /// Re-arm after a single-step. If the guest rewrote the byte meanwhile, its new byte is
    /// the original from now on.
    pub fn relower(&mut self, ram: &GuestMemoryMmap, gpa: Gpa) {
        if let Some(patch) = self.by_gpa.get_mut(&gpa)
            && patch.lifted
        {
            if let Ok(now) = ram.read_obj::<u8>(gpa.guest_address()) {
                patch.original = now;
            }
            let _ = ram.write_obj(self.trap_byte, gpa.guest_address());
            patch.lifted = false;
        }
    }

    /// Whether the trap byte is still in guest RAM at `gpa` (the guest may overwrite it).
    pub fn holds_trap(&self, ram: &GuestMemoryMmap, gpa: Gpa) -> bool {
        ram.read_obj::<u8>(gpa.guest_address()).ok() == Some(self.trap_byte)
    }

    /// Forget a patch the guest overwrote: its byte is the guest's now.
    pub fn forget(&mut self, gpa: Gpa) {
        self.by_gpa.remove(&gpa);
    }
}

impl HostBytes for Patches {
    /// Replace trap bytes inside `[start, start + buf.len())` with the guest's originals.
    fn hide(&self, start: Gpa, buf: &mut [u8]) {
        let Some(end) = start.checked_add(buf.len() as u64) else {
            return;
        };
        for (&gpa, patch) in self.by_gpa.range(start..end) {
            if !patch.lifted {
                buf[crate::narrow::to_usize(gpa.raw() - start.raw())] = patch.original;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paging::PhysMemory;
    use crate::virt::GuestView;
    use vm_memory::GuestAddress;

    fn ram() -> GuestMemoryMmap {
        let ram = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x2000)]).unwrap();
        ram.write_slice(&[0x6a, 0x00, 0x6a, 0x0e], GuestAddress(0x100))
            .unwrap();
        ram
    }

    #[test]
    fn reads_see_the_original_bytes_while_the_guest_sees_the_trap() {
        let ram = ram();
        let mut patches = Patches::new(0xf4);
        patches.arm(&ram, Gpa::new(0x100), 14).unwrap();
        patches.arm(&ram, Gpa::new(0x100), 13).unwrap();
        assert_eq!(ram.read_obj::<u8>(GuestAddress(0x100)).unwrap(), 0xf4);
        let view = GuestView::new(&ram, Some(&patches));
        let mut buf = [0u8; 4];
        assert!(view.read(Gpa::new(0xfe), &mut buf));
        assert_eq!(buf, [0, 0, 0x6a, 0x00]);
        assert_eq!(view.read_u64(Gpa::new(0x100)), Some(0x0e6a_006a));
        let patch = patches.get(Gpa::new(0x100)).unwrap();
        assert_eq!((patch.vector(), patch.shared()), (13, true));
    }

    #[test]
    fn lift_and_relower_round_trip_and_disarm_restores() {
        let ram = ram();
        let mut patches = Patches::new(0xf4);
        patches.arm(&ram, Gpa::new(0x102), 14).unwrap();
        patches.lift(&ram, Gpa::new(0x102));
        assert_eq!(ram.read_obj::<u8>(GuestAddress(0x102)).unwrap(), 0x6a);
        patches.relower(&ram, Gpa::new(0x102));
        assert!(patches.holds_trap(&ram, Gpa::new(0x102)));
        patches.disarm_all(&ram);
        assert_eq!(ram.read_obj::<u8>(GuestAddress(0x102)).unwrap(), 0x6a);
        assert!(patches.is_empty());
    }

    #[test]
    fn a_breakpoint_and_a_handler_share_a_byte_until_both_let_go() {
        let ram = ram();
        let mut patches = Patches::new(0xf4);
        let at = Gpa::new(0x100);
        patches.arm(&ram, at, 14).unwrap();
        patches.add_breakpoint(&ram, at).unwrap();
        patches.release_handler(&ram, at);
        assert!(
            patches.holds_trap(&ram, at),
            "the breakpoint keeps the trap"
        );
        assert_eq!(patches.handlers(), 0);
        assert!(patches.remove_breakpoint(&ram, at));
        assert_eq!(ram.read_obj::<u8>(GuestAddress(0x100)).unwrap(), 0x6a);
        assert!(patches.is_empty());
        assert!(
            !patches.remove_breakpoint(&ram, at),
            "nothing left to remove"
        );
    }

    #[test]
    fn a_host_write_over_a_trap_changes_what_the_guest_will_see_not_the_trap() {
        let ram = ram();
        let mut patches = Patches::new(0xf4);
        patches.add_breakpoint(&ram, Gpa::new(0x101)).unwrap();
        assert!(patches.write_through(&ram, Gpa::new(0x100), &[0x90, 0x91, 0x92]));
        assert!(patches.holds_trap(&ram, Gpa::new(0x101)));
        let mut buf = [0u8; 3];
        assert!(GuestView::new(&ram, Some(&patches)).read(Gpa::new(0x100), &mut buf));
        assert_eq!(buf, [0x90, 0x91, 0x92]);
        patches.disarm_all(&ram);
        assert_eq!(ram.read_obj::<u8>(GuestAddress(0x101)).unwrap(), 0x91);
    }

    #[test]
    fn a_byte_outside_ram_is_an_error_not_a_panic() {
        let ram = ram();
        let mut patches = Patches::new(0xf4);
        assert!(patches.arm(&ram, Gpa::new(0x10_0000), 3).is_err());
        let view = GuestView::new(&ram, Some(&patches));
        assert_eq!(view.read_u64(Gpa::new(0x1ffc)), None);
    }
}

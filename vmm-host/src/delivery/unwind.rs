//! The loop before a shutdown. When a handler cannot be fetched (not mapped, not canonical),
//! every delivery to it succeeds and the fetch at its first byte faults again: the CPU
//! delivers fault after fault, each frame pushed below the last, until a push meets a page it
//! cannot write and the chain ends in a shutdown. The final RIP is the handler and the final
//! RSP the newest frame; each frame's saved RSP leads to the one before. Walking them back
//! counts the deliveries and finds the exception that started the loop.

use super::Machine;
use crate::addr::Gva;

/// Frames walked back at most: a loop fills at most the address space's stack, and each
/// frame is 40 bytes or more.
const MAX_FRAMES: u64 = 4_000_000;
/// Bytes between two frames of the loop: RSP is 16-byte aligned before each push, so a frame
/// of five or six qwords takes 48.
const STRIDE: u64 = 48;
/// Unreadable frames skipped in a row at most before the walk gives up: 3 MiB of stack.
const MAX_UNREADABLE: u64 = 65_536;

/// What the walk found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loop {
    /// The handler that could not be fetched (the final RIP).
    pub handler: Gva,
    /// Deliveries to it whose frames are on the stack.
    pub deliveries: u64,
    /// The newest frame (the final RSP) and the oldest one.
    pub newest: Gva,
    pub oldest: Gva,
    /// Where the exception that started the loop was raised: its RIP and RSP, read from the
    /// oldest frame; `None` when the walk stopped first.
    pub origin: Option<(Gva, Gva)>,
    /// Why the walk stopped short of the origin.
    pub stopped: Option<String>,
    /// Frames counted 48 bytes apart where the page tables no longer map the stack (the loop's
    /// own pushes can overwrite the entries that mapped it).
    pub unreadable: u64,
    /// Counted as the deliveries happened (a breakpoint on the handler), not walked back.
    pub live: bool,
}

/// Six qwords at `at`: error code, RIP, CS, RFLAGS, RSP, SS of a frame with an error code.
fn frame(m: &Machine, at: Gva) -> Result<[u64; 6], String> {
    m.space.read_u64s(at).map_err(|e| e.to_string())
}

/// RIP and RSP saved in the 64-bit exception frame `words` (with or without an error code
/// before RIP), recognised by the code segment `cs` after RIP.
pub fn origin_of(words: &[u64; 6], cs: u64) -> Option<(Gva, Gva)> {
    [(1, 4), (0, 3)]
        .into_iter()
        .find(|&(rip, _)| words[rip + 1] == cs)
        .map(|(rip, rsp)| (Gva::new(words[rip]), Gva::new(words[rsp])))
}

/// Walk the frames of deliveries to the final RIP, the handler of the exception its fetch
/// raises, back from the final RSP; `None` when the first readable frame is not one.
pub fn unwind(m: &Machine) -> Option<Loop> {
    let handler = m.regs.rip;
    let cs = u64::from(m.sregs.cs.selector);
    let is_loop_frame = |w: &[u64; 6]| w[1] == handler && w[2] == cs;
    let newest = Gva::new(m.regs.rsp);
    // Frames 48 bytes apart the tables no longer map count once a readable frame above
    // them shows the walk is still on the loop's grid.
    let (mut at, mut deliveries, mut unreadable, mut pending) = (newest, 0u64, 0u64, 0u64);
    let (origin, stopped) = loop {
        if deliveries + pending >= MAX_FRAMES {
            break (None, Some(format!("more than {MAX_FRAMES} frames")));
        }
        let words = match frame(m, at) {
            Ok(words) => words,
            Err(_) if pending + 1 < MAX_UNREADABLE => {
                pending += 1;
                at = Gva::new(at.raw() + STRIDE);
                continue;
            }
            Err(e) => {
                let from = Gva::new(at.raw() - pending * STRIDE);
                break (
                    None,
                    Some(format!(
                        "from {from} up the tables map no stack ({e}): the loop's pushes may have overwritten the page tables that mapped it"
                    )),
                );
            }
        };
        (deliveries, unreadable, pending) = (deliveries + pending, unreadable + pending, 0);
        if !is_loop_frame(&words) {
            if deliveries == 0 {
                return None;
            }
            // The oldest frame: the exception that started the loop, with or without an
            // error code before its RIP.
            let origin = origin_of(&words, cs);
            let why = origin
                .is_none()
                .then(|| format!("the frame at {at} is no exception frame"));
            break (origin, why);
        }
        deliveries += 1;
        let older = words[4];
        if older <= at.raw() {
            break (
                None,
                Some(format!(
                    "the frame at {at} saved RSP {older:#x}, not above it"
                )),
            );
        }
        at = Gva::new(older);
    };
    let oldest = Gva::new(at.raw() - pending * STRIDE);
    Some(Loop {
        handler: Gva::new(handler),
        deliveries,
        newest,
        oldest,
        origin,
        stopped,
        unreadable,
        live: false,
    })
}

//! `monitor` commands: what the host sees that gdb cannot ask for by itself (page-table walks
//! and audits, IDT and GDT, decoded control registers, the exception history and the
//! host's explanation of the last exception).

use super::debuggable::Inspect;
use super::tables;
use crate::addr::{Gpa, Gva};
use crate::catch::VectorSet;
use crate::cpu_state::{cr0_bits, cr4_bits, efer_bits, rflags_bits};
use crate::devices::vga::{TEXT_BUFFER, TEXT_BUFFER_SIZE};
use crate::exceptions::Detailed;
use crate::paging;
use crate::screen::{Screen, cursor_words};
use std::fmt::Write as _;

/// Bytes `phys` shows at most per command.
const PHYS_LIMIT: u64 = 4096;

const HELP: &str = "\
vmm-host monitor commands:
  walk ADDR|cr2|rip|rsp  walk a virtual address through the current page tables
  audit                  audit the whole page-table tree under CR3: summary and findings
  maps                   mapped virtual ranges with their rights (like QEMU's info mem)
  idt                    the IDT's 32 exception gates, with handler symbols
  gdt                    the GDT's descriptors, decoded
  regs                   control registers with CR0, CR4, EFER and RFLAGS bits decoded
  phys ADDR [LEN]        hex dump of guest-physical memory (LEN up to 4096, default 64)
  explain                the host's explanation of the last exception
  history [N]            the last N exceptions (default 20)
  catch [VECTORS|all|none]  show or set the vectors that stop the guest (gp,pf,df; 0x20 an IRQ)
  diff                   page-table entries changed since the last exception
  chain                  at a triple fault: each delivery the CPU tried, replayed, and why it failed
  pic                    the 8259A pair: vectors, IMR, IRR, ISR, unmasked IRQs
  pit                    the 8254's channels: mode, count, rate
  screen                 the VGA text screen (80×25 at 0xb8000) and the cursor
  help                   this list";

/// Run one monitor command line; the answer is text for gdb's console.
pub fn run(vm: &mut dyn Inspect, line: &str) -> String {
    let mut words = line.split_whitespace();
    let command = words.next().unwrap_or("help");
    let args: Vec<&str> = words.collect();
    let result = match command {
        "help" => Ok(HELP.to_string()),
        "walk" => walk(vm, &args),
        "audit" => audit(vm, false),
        "maps" => audit(vm, true),
        "idt" => tables::idt(vm),
        "gdt" => tables::gdt(vm),
        "regs" => regs(vm),
        "phys" => phys(vm, &args),
        "explain" => Ok(explain(vm)),
        "history" => history(vm, &args),
        "catch" => catch(vm, &args),
        "diff" => Ok(diff(vm)),
        "chain" => chain(vm),
        "pic" => Ok(vm.devices().pic.to_string()),
        "pit" => {
            let devices = vm.devices();
            Ok(devices.pit.describe(devices.now()))
        }
        "screen" => screen(vm),
        other => Err(format!(
            "unknown monitor command `{other}`; `monitor help` lists them"
        )),
    };
    match result {
        Ok(text) => text,
        Err(e) => format!("error: {e}"),
    }
}

/// The text screen, read through the same physical reads as `phys`.
fn screen(vm: &mut dyn Inspect) -> Result<String, String> {
    let mut buffer = vec![0u8; crate::narrow::to_usize(TEXT_BUFFER_SIZE)];
    let read = vm
        .read_physical(Gpa::new(TEXT_BUFFER), &mut buffer)
        .map_err(|e| e.to_string())?;
    if read < buffer.len() {
        return Err(format!(
            "the VGA text buffer at {TEXT_BUFFER:#x} is not all guest RAM ({read} bytes readable)"
        ));
    }
    let screen = Screen::from_buffer(&buffer, vm.devices().vga.text_mode());
    let cursor = cursor_words(screen.cursor);
    Ok(if screen.is_blank() {
        format!("the VGA text screen is blank (80×25 at {TEXT_BUFFER:#x}, cursor {cursor})")
    } else {
        format!("VGA text screen, 80×25 at {TEXT_BUFFER:#x}, cursor {cursor}:\n{screen}")
    })
}

/// A number in hex (0x…) or decimal.
pub fn parse_number(text: &str) -> Result<u64, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
        None => text.replace('_', "").parse(),
    };
    parsed.map_err(|_| format!("`{text}` is not a number (use 0x… for hex)"))
}

fn walk(vm: &mut dyn Inspect, args: &[&str]) -> Result<String, String> {
    let [what] = args else {
        return Err("usage: walk ADDR (or cr2, rip, rsp)".into());
    };
    let regs = vm.registers().map_err(|e| e.to_string())?;
    let gva = match *what {
        "cr2" => regs.sregs.cr2,
        "rip" => regs.regs.rip,
        "rsp" => regs.regs.rsp,
        other => parse_number(other)?,
    };
    let space = vm
        .current_space()
        .map_err(|e| e.to_string())?
        .ok_or("paging is off (CR0.PG = 0): virtual addresses are physical")?;
    let walk = space.walk(Gva::new(gva));
    let mut text = walk.to_string();
    if let Some(symbol) = vm.symbol(Gva::new(gva)) {
        let _ = write!(text, "\n  {gva:#x} is in {symbol}");
    }
    Ok(text)
}

fn audit(vm: &mut dyn Inspect, maps: bool) -> Result<String, String> {
    let space = vm
        .current_space()
        .map_err(|e| e.to_string())?
        .ok_or("paging is off (CR0.PG = 0): there are no page tables to audit")?;
    let audit = paging::audit(&space.view, space.mode, space.cr3, vm.ram_regions());
    if maps {
        return Ok(audit.maps());
    }
    let mut text = audit.summary();
    for finding in &audit.findings {
        let _ = write!(text, "\n  {finding}");
    }
    Ok(text)
}

fn regs(vm: &mut dyn Inspect) -> Result<String, String> {
    let cpu = vm.registers().map_err(|e| e.to_string())?;
    let s = &cpu.sregs;
    let mut text = String::new();
    if let Some(seq) = vm.held_exception() {
        let _ = writeln!(
            text,
            "(shown before exception [{seq}]'s handler: RIP, RSP, RFLAGS, CS and SS are the interrupted code's)"
        );
    }
    let _ = writeln!(
        text,
        "RIP    {:#018x}  CPL {}",
        cpu.regs.rip,
        s.cs.selector & 3
    );
    let _ = writeln!(
        text,
        "RFLAGS {:#018x}  {}",
        cpu.regs.rflags,
        rflags_bits(cpu.regs.rflags)
    );
    let _ = writeln!(text, "CR0    {:#018x}  {}", s.cr0, cr0_bits(s.cr0));
    let _ = writeln!(text, "CR2    {:#018x}", s.cr2);
    let _ = writeln!(
        text,
        "CR3    {:#018x}  tables at {:#x}",
        s.cr3,
        s.cr3 & mm::paging::ADDR_MASK
    );
    let _ = writeln!(text, "CR4    {:#018x}  {}", s.cr4, cr4_bits(s.cr4));
    let _ = writeln!(text, "CR8    {:#018x}", s.cr8);
    let _ = writeln!(text, "EFER   {:#018x}  {}", s.efer, efer_bits(s.efer));
    let _ = writeln!(
        text,
        "GDTR   base {:#x} limit {:#x}   IDTR base {:#x} limit {:#x}",
        s.gdt.base, s.gdt.limit, s.idt.base, s.idt.limit
    );
    let _ = writeln!(
        text,
        "TR     {:#06x} base {:#x}   FS.base {:#x}  GS.base {:#x}  KERNEL_GS_BASE {:#x}",
        s.tr.selector, s.tr.base, s.fs.base, s.gs.base, cpu.kernel_gs_base
    );
    Ok(text)
}

fn phys(vm: &mut dyn Inspect, args: &[&str]) -> Result<String, String> {
    let (start, len) = match args {
        [start] => (parse_number(start)?, 64),
        [start, len] => (parse_number(start)?, parse_number(len)?),
        _ => return Err("usage: phys ADDR [LEN]".into()),
    };
    if len == 0 || len > PHYS_LIMIT {
        return Err(format!("LEN must be 1 to {PHYS_LIMIT} bytes, not {len}"));
    }
    let mut buf = vec![0u8; crate::narrow::to_usize(len)];
    let got = vm
        .read_physical(Gpa::new(start), &mut buf)
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    for (i, row) in buf[..got].chunks(16).enumerate() {
        let hex: Vec<String> = row.iter().map(|b| format!("{b:02x}")).collect();
        let ascii: String = row
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        let _ = writeln!(
            text,
            "{:016x}  {:<47}  {ascii}",
            start + 16 * i as u64,
            hex.join(" ")
        );
    }
    if got < buf.len() {
        let _ = writeln!(
            text,
            "(stopped at physical {:#x}: not guest RAM)",
            start + got as u64
        );
    }
    Ok(text)
}

fn explain(vm: &mut dyn Inspect) -> String {
    match vm.exceptions().active.last() {
        Some(captured) => Detailed(captured).to_string(),
        None if vm.tap_enabled() => "no exception captured yet".into(),
        None => "the tap is off (--no-tap): no exceptions are captured".into(),
    }
}

fn history(vm: &mut dyn Inspect, args: &[&str]) -> Result<String, String> {
    let n = match args {
        [] => 20,
        [n] => usize::try_from(parse_number(n)?).unwrap_or(usize::MAX),
        _ => return Err("usage: history [N]".into()),
    };
    let log = vm.exceptions();
    let shown = log.sequence.len().min(n);
    let mut text = format!("{} exceptions captured; the last {shown}:\n", log.total);
    if let Some(gap) = log.sequence.gap() {
        let _ = writeln!(text, "({gap})");
    }
    for brief in log.sequence.iter().skip(log.sequence.len() - shown) {
        let error = brief
            .error
            .map(|e| format!("{e:#x}"))
            .unwrap_or_else(|| "-".into());
        let cr2 = if brief.vector == 14 {
            format!("{:#x}", brief.cr2)
        } else {
            "-".into()
        };
        let symbol = vm.symbol(brief.rip).unwrap_or_default();
        let _ = writeln!(
            text,
            "[{:>6}] {:<4} err {:<6} cr2 {:<18} rip {:<18} cpl {} depth {} {}",
            brief.seq,
            abi::exception::mnemonic(brief.vector),
            error,
            cr2,
            brief.rip,
            brief.cpl.map_or("?".into(), |c| c.to_string()),
            brief.depth,
            symbol
        );
    }
    Ok(text)
}

fn catch(vm: &mut dyn Inspect, args: &[&str]) -> Result<String, String> {
    if !args.is_empty() {
        let set = VectorSet::parse(&args.join(",")).map_err(|e| e.to_string())?;
        vm.stop_on().catch = set;
    }
    Ok(format!(
        "vectors that stop the guest: {}",
        vm.stop_on().catch
    ))
}

fn diff(vm: &mut dyn Inspect) -> String {
    match vm.diff_since_last_exception() {
        Some((seq, diff)) => format!("since exception [{seq}]:\n{diff}"),
        None => "no exception with a walk to compare against yet".into(),
    }
}

/// The deliveries that led to a triple fault, replayed from the registers gdb sees (the final
/// state, where the CPU shut down) or kept from the end of the run.
fn chain(vm: &dyn Inspect) -> Result<String, String> {
    if let Some(kept) = &vm.exceptions().chain_at_end {
        return kept.as_ref().map(ToString::to_string).map_err(Clone::clone);
    }
    let cpu = vm.registers().map_err(|e| e.to_string())?;
    let space = vm
        .current_space()
        .map_err(|e| e.to_string())?
        .ok_or("paging is off: the replay covers 64-bit mode")?;
    let machine = crate::delivery::Machine {
        space,
        regs: &cpu.regs,
        sregs: &cpu.sregs,
    };
    let chain = crate::delivery::replay_shutdown(&machine)?;
    Ok(format!(
        "replayed from the current registers (what the CPU did if it shut down here):\n{chain}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_hex_and_decimal() {
        assert_eq!(parse_number("0x10"), Ok(16));
        assert_eq!(parse_number("4096"), Ok(4096));
        assert_eq!(
            parse_number("0xffff_8000_0000_0000"),
            Ok(0xffff_8000_0000_0000)
        );
        assert!(parse_number("zz").unwrap_err().contains("not a number"));
    }

    #[test]
    fn help_lists_every_command_the_dispatcher_knows() {
        for command in [
            "walk", "audit", "maps", "idt", "gdt", "regs", "phys", "explain", "history", "catch",
            "diff", "chain", "help",
        ] {
            assert!(
                HELP.lines().any(|l| l.trim_start().starts_with(command)),
                "{command} missing from help"
            );
        }
    }
}

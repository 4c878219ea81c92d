//! Kernel addresses in words: the function from the ELF symbol table, file and line from the
//! DWARF line tables.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SymbolError {
    #[error("cannot read symbols from `{path}`: {error}; --symbols takes the kernel's ELF (a vmlinux)", path = .path.display())]
    Open { path: PathBuf, error: String },
}

/// Where an address is in the kernel's source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub function: String,
    pub offset: u64,
    pub file: Option<String>,
    pub line: Option<u32>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}+{:#x}", self.function, self.offset)?;
        if let (Some(file), Some(line)) = (&self.file, self.line) {
            write!(f, " ({file}:{line})")?;
        }
        Ok(())
    }
}

pub struct Symbolizer {
    path: PathBuf,
    loader: addr2line::Loader,
    /// The executable sections' address ranges: only code in them is the kernel's.
    code: Vec<std::ops::Range<u64>>,
    /// Faulting RIPs repeat (a demand-paging loop faults at one instruction thousands of
    /// times): each address is looked up once.
    cache: RefCell<HashMap<u64, Option<Location>>>,
}

impl fmt::Debug for Symbolizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Symbolizer({})", self.path.display())
    }
}

/// `/long/path/to/repo/guest-kernel/src/pmm.rs` → `guest-kernel/src/pmm.rs`; the registry or
/// toolchain sources keep their last three components.
fn short_file(file: &str) -> String {
    let parts: Vec<&str> = file.split('/').filter(|p| !p.is_empty()).collect();
    if let Some(i) = parts.iter().rposition(|p| *p == "src")
        && i >= 1
    {
        return parts[i - 1..].join("/");
    }
    let keep = parts.len().saturating_sub(3);
    parts[keep..].join("/")
}

impl Symbolizer {
    /// The file the symbols come from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn open(path: &Path) -> Result<Self, SymbolError> {
        let loader = addr2line::Loader::new(path).map_err(|e| SymbolError::Open {
            path: path.into(),
            error: e.to_string(),
        })?;
        let code = code_ranges(path).map_err(|error| SymbolError::Open {
            path: path.into(),
            error,
        })?;
        Ok(Self {
            path: path.into(),
            loader,
            code,
            cache: RefCell::new(HashMap::new()),
        })
    }

    /// The function containing `address`, with the line in that function's own source
    /// (the call site, when the address is in code inlined into it).
    pub fn locate(&self, address: u64) -> Option<Location> {
        if let Some(known) = self.cache.borrow().get(&address) {
            return known.clone();
        }
        let location = self.look_up(address);
        self.cache.borrow_mut().insert(address, location.clone());
        location
    }

    /// A return address: the line is the call's, one byte back.
    pub fn locate_return(&self, address: u64) -> Option<Location> {
        let mut location = self.locate(address.wrapping_sub(1))?;
        location.offset += 1;
        Some(location)
    }

    fn look_up(&self, address: u64) -> Option<Location> {
        if !self.code.iter().any(|range| range.contains(&address)) {
            return None;
        }
        let symbol = self.loader.find_symbol_info(address)?;
        let function = addr2line::demangle_auto(Cow::from(symbol.name()), None);
        let function = strip_hash(&function).to_string();
        let mut outermost = None;
        if let Ok(mut frames) = self.loader.find_frames(address) {
            while let Ok(Some(frame)) = frames.next() {
                if let Some(location) = frame.location {
                    outermost = Some((location.file.map(short_file), location.line));
                }
            }
        }
        let (file, line) = outermost.unwrap_or((None, None));
        Some(Location {
            function,
            offset: address.wrapping_sub(symbol.address()),
            file,
            line,
        })
    }
}

fn code_ranges(path: &Path) -> Result<Vec<std::ops::Range<u64>>, String> {
    use object::{Object, ObjectSection, SectionKind};
    let data = std::fs::read(path).map_err(|e| e.to_string())?;
    let file = object::File::parse(&*data).map_err(|e| e.to_string())?;
    Ok(file
        .sections()
        .filter(|s| s.kind() == SectionKind::Text)
        .map(|s| s.address()..s.address() + s.size())
        .collect())
}

/// Rust's legacy mangling leaves a `::h0123456789abcdef` hash: noise in a report.
fn strip_hash(name: &str) -> &str {
    match name.rsplit_once("::h") {
        Some((head, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            head
        }
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_shortened_to_the_crate() {
        assert_eq!(
            short_file("/work/main/guest-kernel/src/vmm/mod.rs"),
            "guest-kernel/src/vmm/mod.rs"
        );
        assert_eq!(
            short_file("/rustc/abc/library/core/src/ptr/mod.rs"),
            "core/src/ptr/mod.rs"
        );
        assert_eq!(short_file("a/b/c/d.rs"), "b/c/d.rs");
        assert_eq!(
            strip_hash("pmm::pmm_alloc_zero::h0123456789abcdef"),
            "pmm::pmm_alloc_zero"
        );
        assert_eq!(strip_hash("memset"), "memset");
    }

    #[test]
    fn a_missing_elf_is_an_error_naming_the_file() {
        let e = Symbolizer::open(Path::new("/nonexistent/kernel.elf")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot read symbols from `/nonexistent/kernel.elf`")
        );
    }

    #[test]
    fn the_bundled_kernel_symbolises_its_entry_points() {
        let symbols = Symbolizer::open(Path::new(crate::GUEST_KERNEL_ELF)).unwrap();
        let elf = std::fs::read(crate::GUEST_KERNEL_ELF).unwrap();
        let file = object::File::parse(&*elf).unwrap();
        use object::{Object, ObjectSymbol};
        let dispatch = file
            .symbols()
            .find(|s| s.name().is_ok_and(|n| n.contains("trap_dispatch")))
            .expect("trap_dispatch is in the symbol table");
        let location = symbols.locate(dispatch.address() + 1).unwrap();
        assert!(
            location.function.ends_with("traps::trap_dispatch"),
            "{location}"
        );
        assert_eq!(location.offset, 1);
        assert_eq!(location.file.as_deref(), Some("guest-kernel/src/traps.rs"));
        assert!(location.line.is_some());
    }
}

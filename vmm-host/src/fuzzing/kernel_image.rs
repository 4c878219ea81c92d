//! Kernel-image detection and every loader: PVH ELF, Multiboot 1 and 2, bzImage and vmlinux,
//! raw disk images, on bytes the fuzzer chooses.

use super::{Input, assert_one_line};
use crate::layout::RamLayout;
use crate::loader::{BootFiles, BootProtocol, KernelImage};
use std::path::Path;
use vm_memory::{GuestAddress, GuestMemoryMmap};

/// An image is refused in one line, or everything it loads lies in RAM and it boots into
/// fresh RAM (or is refused there in one line).
pub fn kernel_image(data: &[u8]) {
    let mut input = Input::new(data);
    let forced = input.pick(&[
        None,
        None,
        None,
        Some(BootProtocol::Pvh),
        Some(BootProtocol::Multiboot),
        Some(BootProtocol::Multiboot2),
        Some(BootProtocol::Linux),
        Some(BootProtocol::Disk),
    ]);
    let image = input.rest().to_vec();
    let ram = RamLayout::new(32 << 20, None).expect("32 MiB is a valid RAM size");
    let kernel = match KernelImage::inspect_bytes(Path::new("fuzz.img"), image, &ram, forced) {
        Err(e) => return assert_one_line("a refused kernel", &e.to_string()),
        Ok(kernel) => kernel,
    };
    for &(start, end) in &kernel.segments {
        assert!(start <= end, "segment {start}..{end}");
        assert!(
            ram.contains(start, end.raw() - start.raw()),
            "segment {start}..{end} outside RAM"
        );
    }
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 32 << 20)])
        .expect("32 MiB of anonymous memory");
    if let Err(e) = kernel.boot(&mem, &ram, "console=ttyS0", &BootFiles::default()) {
        assert_one_line("a kernel that cannot boot", &e.to_string());
    }
}

//! Opening KVM, with errors that say what to do.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VmFd};
use std::path::{Path, PathBuf};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Where KVM lives unless `--kvm-device` says otherwise.
pub const DEFAULT_DEVICE: &str = "/dev/kvm";

#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    #[error("`{path}` does not exist: this machine has no KVM (enable hardware or nested virtualisation and load kvm_intel or kvm_amd)", path = .0.display())]
    NoDevice(PathBuf),
    #[error("permission denied opening `{path}`: add your user to the `kvm` group (and log in again) or run as root", path = .0.display())]
    PermissionDenied(PathBuf),
    #[error("`{path}` is not a KVM device ({error})", path = .0.display(), error = .1)]
    NotKvm(PathBuf, String),
    #[error("cannot open `{path}`: {error}", path = .0.display(), error = .1)]
    Open(PathBuf, String),
    #[error("KVM API version {0} is not the stable version 12 this host speaks")]
    ApiVersion(i32),
}

/// Open KVM at `path` and check it speaks the stable API.
pub fn open(path: &Path) -> Result<Kvm, KvmError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => KvmError::NoDevice(path.into()),
            std::io::ErrorKind::PermissionDenied => KvmError::PermissionDenied(path.into()),
            _ => KvmError::Open(path.into(), e.to_string()),
        })?;
    // Opening it ourselves first gives the error kinds above; kvm-ioctls then opens its own fd.
    drop(file);
    let kvm = Kvm::new_with_path(path_cstr(path)?.as_c_str())
        .map_err(|e| KvmError::Open(path.into(), e.to_string()))?;
    match kvm.get_api_version() {
        12 => Ok(kvm),
        v if v < 0 => Err(KvmError::NotKvm(
            path.into(),
            std::io::Error::last_os_error().to_string(),
        )),
        v => Err(KvmError::ApiVersion(v)),
    }
}

/// Give the VM every region of `mem`, one memory slot each.
///
/// `mem` must outlive the VM: callers keep both in one struct with the VM fd dropped first.
pub fn register_memory(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), kvm_ioctls::Error> {
    for (slot, region) in (0u32..).zip(mem.iter()) {
        let region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
        };
        // SAFETY: the region is a live mapping owned by `mem`, which outlives the VM (see
        // above), and slots are numbered so that none overlaps another.
        unsafe { vm.set_user_memory_region(region) }?;
    }
    Ok(())
}

fn path_cstr(path: &Path) -> Result<std::ffi::CString, KvmError> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| KvmError::Open(path.into(), "the path contains a NUL byte".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_device() {
        let err = open(Path::new("/nonexistent/kvm")).unwrap_err();
        assert!(matches!(err, KvmError::NoDevice(_)));
        assert!(
            err.to_string()
                .starts_with("`/nonexistent/kvm` does not exist: this machine has no KVM")
        );
    }

    #[test]
    fn a_file_that_is_not_kvm() {
        let err = open(Path::new("/dev/null")).unwrap_err();
        assert!(matches!(err, KvmError::NotKvm(..)), "{err}");
    }
}

//! What can go wrong in the host while the guest runs. The run ends with it as a host error.

use super::stopped::ReadError;
use crate::tap::TapError;

/// What went wrong in the host while the guest ran; the run ends with it as a host error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{ioctl}: {error}")]
    Kvm {
        ioctl: &'static str,
        error: kvm_ioctls::Error,
    },
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Tap(#[from] TapError),
    #[error("an exception is held without the tap")]
    HeldWithoutTap,
    #[error("unexpected debug exit (exception {exception} at {pc:#x})")]
    UnexpectedDebug { exception: u32, pc: u64 },
    #[error("re-injecting the guest's own #BP: {0}")]
    ReinjectBreakpoint(kvm_ioctls::Error),
}

pub(super) fn kvm(ioctl: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> RunError {
    move |error| RunError::Kvm { ioctl, error }
}

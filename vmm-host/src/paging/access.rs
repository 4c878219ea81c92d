//! Whether a mapping allows an access: the rights every level grants together, and the
//! control bits (CR0.WP, CR4.SMEP, CR4.SMAP) that decide what the kernel itself may do.

use super::{Mapping, Protection};
use std::fmt;

/// One access, as a page fault's error code describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Access {
    pub write: bool,
    /// Made at CPL 3.
    pub user: bool,
    pub fetch: bool,
    /// EFLAGS.AC at the access: a kernel that sets it (`stac`) may touch user pages under SMAP.
    pub alignment_check: bool,
}

/// Why a mapping refuses an access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    ReadOnly,
    /// A kernel write to a read-only page: faults only because CR0.WP is set.
    ReadOnlyWithWp,
    Supervisor,
    NoExecute,
    /// A kernel fetch from a user page under CR4.SMEP.
    Smep,
    /// A kernel data access to a user page under CR4.SMAP with EFLAGS.AC clear.
    Smap,
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Denial::ReadOnly => "a write to a read-only page",
            Denial::ReadOnlyWithWp => {
                "a write to a read-only page, which faults in the kernel because CR0.WP is set"
            }
            Denial::Supervisor => "a user access to a supervisor page",
            Denial::NoExecute => "an instruction fetch from a no-execute page",
            Denial::Smep => "a kernel instruction fetch from a user page (CR4.SMEP forbids it)",
            Denial::Smap => {
                "a kernel data access to a user page (CR4.SMAP forbids it while EFLAGS.AC is clear)"
            }
        })
    }
}

impl Mapping {
    /// Every reason this mapping refuses `access` under `protection`; empty when it allows it.
    pub fn denials(&self, access: Access, protection: Protection) -> Vec<Denial> {
        let mut denials = Vec::new();
        if access.write && !self.writable {
            if access.user {
                denials.push(Denial::ReadOnly);
            } else if protection.write_protect {
                denials.push(Denial::ReadOnlyWithWp);
            }
        }
        if access.user && !self.user {
            denials.push(Denial::Supervisor);
        }
        if access.fetch && !self.executable {
            denials.push(Denial::NoExecute);
        }
        if !access.user && self.user {
            if access.fetch && protection.smep {
                denials.push(Denial::Smep);
            }
            if !access.fetch && protection.smap && !access.alignment_check {
                denials.push(Denial::Smap);
            }
        }
        denials
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Gpa;

    const READ_ONLY_USER: Mapping = Mapping {
        gpa: Gpa::new(0x5000),
        page_size: 4096,
        writable: false,
        user: true,
        executable: true,
    };

    fn kernel(write: bool, fetch: bool) -> Access {
        Access {
            write,
            fetch,
            ..Access::default()
        }
    }

    #[test]
    fn a_kernel_write_to_a_read_only_page_faults_only_with_cr0_wp() {
        let off = Protection::default();
        assert_eq!(READ_ONLY_USER.denials(kernel(true, false), off), []);
        let wp = Protection {
            write_protect: true,
            ..off
        };
        assert_eq!(
            READ_ONLY_USER.denials(kernel(true, false), wp),
            [Denial::ReadOnlyWithWp]
        );
        let user_write = Access {
            write: true,
            user: true,
            ..Access::default()
        };
        assert_eq!(READ_ONLY_USER.denials(user_write, off), [Denial::ReadOnly]);
    }

    #[test]
    fn smep_stops_kernel_fetches_and_smap_kernel_data_accesses_to_user_pages() {
        let both = Protection {
            smep: true,
            smap: true,
            ..Protection::default()
        };
        assert_eq!(
            READ_ONLY_USER.denials(kernel(false, true), both),
            [Denial::Smep]
        );
        assert_eq!(
            READ_ONLY_USER.denials(kernel(false, false), both),
            [Denial::Smap]
        );
        let stac = Access {
            alignment_check: true,
            ..kernel(false, false)
        };
        assert_eq!(READ_ONLY_USER.denials(stac, both), []);
        // Without the bits the kernel may do both.
        let none = Protection::default();
        assert_eq!(READ_ONLY_USER.denials(kernel(false, true), none), []);
        // They are about the kernel: user code reads and runs its own pages.
        for fetch in [false, true] {
            let user = Access {
                user: true,
                fetch,
                ..Access::default()
            };
            assert_eq!(READ_ONLY_USER.denials(user, both), []);
        }
    }

    #[test]
    fn user_accesses_meet_the_page_rights_alone() {
        let kernel_page = Mapping {
            user: false,
            executable: false,
            ..READ_ONLY_USER
        };
        let user_fetch = Access {
            user: true,
            fetch: true,
            ..Access::default()
        };
        assert_eq!(
            kernel_page.denials(user_fetch, Protection::default()),
            [Denial::Supervisor, Denial::NoExecute]
        );
        assert_eq!(
            Denial::Smep.to_string(),
            "a kernel instruction fetch from a user page (CR4.SMEP forbids it)"
        );
    }
}

//! The GDB stub: `--gdb [ADDR:]PORT` serves the GDB remote protocol (gdbstub) for the VM.
//!
//! gdb stops on the exceptions in `--break-on` at the faulting instruction, before the
//! handler runs; software breakpoints use the tap's trap byte (so they work where int3 does
//! not), hardware breakpoints and watchpoints DR0–DR3; `monitor` commands show what the
//! host sees. See docs/gdb.md.

mod arch;
mod arch32;
mod connection;
mod core_target;
mod debuggable;
mod driver;
mod interrupt;
mod monitor;
mod tables;
mod target;
mod target_xml;

pub use arch::{GdbRegisters, Layout, X86_64Kvm};
pub use connection::{GdbConnection, GdbLink, PACKET_SIZE};
pub use core_target::CoreTarget;
pub use debuggable::{Debuggable, Inspect};
pub use monitor::parse_number;
pub use target::signal_for;

use crate::ending::Ending;
use crate::vm::{Resume, Stop, StopOn};
use gdbstub::stub::{DisconnectReason, GdbStub};
use interrupt::Interrupter;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use target::GdbTarget;

#[derive(Debug, thiserror::Error)]
pub enum GdbError {
    #[error("`{0}` is not [ADDR:]PORT (e.g. 1234 or 0.0.0.0:1234)")]
    BadAddress(String),
    #[error("cannot listen for gdb on {addr}: {error} (is another debugger using the port?)")]
    Listen { addr: SocketAddr, error: String },
    #[error("waiting for a gdb connection on {addr} failed: {error}")]
    Accept { addr: SocketAddr, error: String },
    #[error("--gdb needs the tap for breakpoints and exception stops: drop --no-tap")]
    NoTap,
    #[error("cannot set up the devices a core is served with: {0}")]
    CoreDevices(#[from] crate::devices::DeviceError),
    #[error("cannot set up the console a core is served with: {0}")]
    CoreConsole(#[from] crate::console::ConsoleError),
}

/// Where to listen: loopback unless an address is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr {
    pub addr: SocketAddr,
    /// An address was given explicitly (the user is warned if it is not loopback).
    pub explicit: bool,
}

impl std::str::FromStr for ListenAddr {
    type Err = GdbError;

    fn from_str(text: &str) -> Result<Self, GdbError> {
        let bad = || GdbError::BadAddress(text.into());
        let text = text.trim();
        if let Ok(port) = text.trim_start_matches(':').parse::<u16>() {
            return Ok(Self {
                addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
                explicit: false,
            });
        }
        let text = text.strip_prefix("tcp:").unwrap_or(text);
        let addr = text.parse::<SocketAddr>().map_err(|_| bad())?;
        Ok(Self {
            addr,
            explicit: true,
        })
    }
}

/// How the gdb session went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// The run ended before any gdb connected.
    NoClient,
    /// gdb detached: the guest runs on to its end.
    Detached,
    /// gdb saw the run end.
    RunEnded,
    /// gdb killed the guest.
    Killed,
    /// The connection broke: the guest runs on to its end.
    Lost(String),
}

/// A listening gdb stub.
#[derive(Debug)]
pub struct GdbServer {
    listener: TcpListener,
    addr: SocketAddr,
}

impl GdbServer {
    pub fn bind(listen: ListenAddr) -> Result<Self, GdbError> {
        if listen.explicit && !listen.addr.ip().is_loopback() {
            eprintln!(
                "gdb: warning: listening on {}: anyone who can reach it controls the guest and reads its memory",
                listen.addr
            );
        }
        let listener = TcpListener::bind(listen.addr).map_err(|e| GdbError::Listen {
            addr: listen.addr,
            error: e.to_string(),
        })?;
        let addr = listener.local_addr().unwrap_or(listen.addr);
        Ok(Self { listener, addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    fn accept(&self) -> Result<TcpStream, GdbError> {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => return Ok(stream),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(GdbError::Accept {
                        addr: self.addr,
                        error: e.to_string(),
                    });
                }
            }
        }
    }

    /// Serve one gdb session for `vm`. With `wait`, the guest stays at its first
    /// instruction until gdb lets it go; without, it runs until gdb connects, an exception
    /// in `vm.stop_on.catch` stops it (the host then waits for gdb), or it ends. Afterwards
    /// `vm.run()` takes the guest to its end (at once if it already ended).
    pub fn serve(
        self,
        vm: &mut dyn Inspect,
        wait: bool,
        layout: Layout,
    ) -> Result<SessionEnd, GdbError> {
        if !vm.tap_enabled() {
            return Err(GdbError::NoTap);
        }
        let addr = self.addr;
        let stream = if wait {
            eprintln!("gdb: {}; connect with `target remote {addr}`", vm.waiting());
            self.accept()?
        } else {
            eprintln!(
                "gdb: listening on {addr}; the guest runs (connect with `target remote {addr}`)"
            );
            let watcher = Interrupter::new(self.listener.as_raw_fd());
            vm.stop_on().interrupt = Some(watcher.flag());
            loop {
                watcher.arm();
                let stop = vm.resume(Resume::Continue);
                watcher.disarm();
                match stop {
                    Stop::Interrupted => break,
                    Stop::Exception { seq, vector } => {
                        eprintln!(
                            "gdb: exception [{seq}] {} stopped the guest before its handler; waiting for gdb on {addr}",
                            abi::exception::name(vector)
                        );
                        break;
                    }
                    Stop::Irq { vector } => {
                        eprintln!(
                            "gdb: an interrupt at vector {vector:#x} stopped the guest before its delivery; waiting for gdb on {addr}"
                        );
                        break;
                    }
                    Stop::Ended(Ending::TripleFault) => {
                        eprintln!(
                            "gdb: the guest triple-faulted; its final state waits for gdb on {addr}"
                        );
                        break;
                    }
                    Stop::Ended(_) => {
                        *vm.stop_on() = StopOn::default();
                        return Ok(SessionEnd::NoClient);
                    }
                    _ => {}
                }
            }
            drop(watcher);
            self.accept()?
        };
        // One client at a time: later connections are refused once the listener is gone.
        drop(self.listener);
        let end = session(vm, stream, layout);
        *vm.stop_on() = StopOn::default();
        if matches!(end, SessionEnd::Detached | SessionEnd::Lost(_)) {
            vm.clear_debug_state();
        }
        if end == SessionEnd::Killed {
            vm.kill();
        }
        Ok(end)
    }
}

/// Packets gdbstub cannot parse that a session survives before it gives up on the client.
const MAX_REFUSED_PACKETS: u32 = 1000;

fn session(vm: &mut dyn Inspect, stream: TcpStream, layout: Layout) -> SessionEnd {
    let physical = Arc::new(AtomicBool::new(false));
    let mut conn = match GdbConnection::new(stream, physical.clone()) {
        Ok(conn) => conn,
        Err(e) => return SessionEnd::Lost(e.to_string()),
    };
    let interrupter = Interrupter::new(conn.raw_fd());
    let mut target = GdbTarget::new(vm, physical, interrupter, layout);
    let mut refused = 0;
    let mut packet_buffer = vec![0u8; PACKET_SIZE];
    loop {
        // gdbstub 0.7 finds a packet's checksum by splitting the whole buffer at '#', so
        // each packet scans the stale bytes after it up to the next '#': 128 KiB of zeros
        // cost 25 µs a packet, a sixth of a `stepi`. Filled with '#', the scan stops at
        // once, until a large `m` leaves memory there (a session rebuild refills it).
        packet_buffer.fill(b'#');
        let stub = match GdbStub::<GdbTarget<'_>, GdbLink<'_>>::builder(GdbLink(&mut conn))
            .with_packet_buffer(&mut packet_buffer)
            .build()
        {
            Ok(stub) => stub,
            Err(e) => return SessionEnd::Lost(e.to_string()),
        };
        match driver::drive(stub, &mut target) {
            Ok(DisconnectReason::Disconnect) => return SessionEnd::Detached,
            Ok(DisconnectReason::Kill) => return SessionEnd::Killed,
            Ok(DisconnectReason::TargetExited(_) | DisconnectReason::TargetTerminated(_)) => {
                return SessionEnd::RunEnded;
            }
            Err(driver::DriveError::Connection(e)) => return SessionEnd::Lost(e.to_string()),
            Err(driver::DriveError::Stub(e)) if e.is_connection_error() || e.is_target_error() => {
                return SessionEnd::Lost(e.to_string());
            }
            // A packet gdbstub could not parse: refuse it and serve the client on.
            Err(driver::DriveError::Stub(e)) => {
                refused += 1;
                eprintln!("gdb: refused a packet: {e}");
                if refused > MAX_REFUSED_PACKETS {
                    return SessionEnd::Lost(format!("{refused} malformed packets"));
                }
                if let Err(e) = conn.refuse_unparsed() {
                    return SessionEnd::Lost(e.to_string());
                }
            }
        }
    }
}

// The fuzzing feature uses the fake's machine, not every helper the unit tests use; its
// casts are a test's, free like the unit tests' (lib.rs).
#[cfg(any(test, feature = "fuzzing"))]
#[cfg_attr(not(test), allow(dead_code, clippy::cast_possible_truncation))]
pub(crate) mod fake;
#[cfg(test)]
mod tests;

//! Stops a running guest when gdb has something to say (Ctrl-C) or a gdb client connects:
//! a thread polls the socket while the guest runs and kicks the vCPU out of KVM_RUN.

use crate::watchdog;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long one poll waits before checking whether it is still wanted.
const POLL_INTERVAL_MS: i32 = 20;
/// How often a kick is repeated: one that lands outside KVM_RUN is lost.
const KICK_INTERVAL: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Watching,
    Quit,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

/// Watches one file descriptor while armed; sets `flag` and kicks the vCPU thread when it
/// becomes readable (data, a new connection, or the peer hanging up).
#[derive(Debug)]
pub struct Interrupter {
    shared: Arc<Shared>,
    flag: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Interrupter {
    /// Start watching `fd` on behalf of the calling thread (the vCPU thread).
    pub fn new(fd: RawFd) -> Self {
        watchdog::kick_signal();
        // SAFETY: pthread_self has no preconditions.
        let vcpu_thread = unsafe { libc::pthread_self() };
        let shared = Arc::new(Shared {
            state: Mutex::new(State::Idle),
            changed: Condvar::new(),
        });
        let flag = Arc::new(AtomicBool::new(false));
        let thread = {
            let shared = shared.clone();
            let flag = flag.clone();
            std::thread::Builder::new()
                .name("gdb-interrupt".into())
                .spawn(move || watch(fd, vcpu_thread, &shared, &flag))
                .ok()
        };
        Self {
            shared,
            flag,
            thread,
        }
    }

    /// The flag the run loop checks at every exit.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }

    fn set(&self, state: State) {
        let mut guard = self
            .shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *guard = state;
        self.shared.changed.notify_all();
    }

    /// Watch while the guest runs.
    pub fn arm(&self) {
        self.flag.store(false, Ordering::SeqCst);
        self.set(State::Watching);
    }

    /// Stop watching; no kick is sent after this returns.
    pub fn disarm(&self) {
        self.set(State::Idle);
        self.flag.store(false, Ordering::SeqCst);
    }
}

impl Drop for Interrupter {
    fn drop(&mut self) {
        self.set(State::Quit);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn watch(fd: RawFd, vcpu_thread: libc::pthread_t, shared: &Shared, flag: &AtomicBool) {
    loop {
        {
            let mut state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
            while *state == State::Idle {
                state = shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if *state == State::Quit {
                return;
            }
        }
        let mut poll = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, count 1; the fd stays open while the owner lives, and
        // the owner joins this thread before closing it.
        let ready = unsafe { libc::poll(&mut poll, 1, POLL_INTERVAL_MS) };
        if ready <= 0 {
            continue;
        }
        // Kick until the vCPU thread notices and disarms. The flag and each kick are set
        // under the lock, so neither outlives disarm(): data that arrives once the guest
        // stands is a request for the stub, not an interrupt.
        loop {
            {
                let state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
                if *state != State::Watching {
                    break;
                }
                flag.store(true, Ordering::SeqCst);
                watchdog::kick(vcpu_thread);
            }
            std::thread::sleep(KICK_INTERVAL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::time::Instant;

    #[test]
    fn data_on_the_socket_interrupts_a_blocking_call() {
        let (mut gdb, ours) = UnixStream::pair().unwrap();
        let interrupter = Interrupter::new(ours.as_raw_fd());
        interrupter.arm();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            gdb.write_all(&[0x03]).unwrap();
            gdb
        });
        let started = Instant::now();
        watchdog::sleep_until_kicked(|| interrupter.flag().load(Ordering::SeqCst));
        assert!(interrupter.flag().load(Ordering::SeqCst));
        assert!(started.elapsed() < Duration::from_secs(4));
        interrupter.disarm();
        assert!(!interrupter.flag().load(Ordering::SeqCst));
        drop(writer.join());
    }
}

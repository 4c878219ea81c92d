//! The run's time limit: a thread that, once the limit passes, interrupts KVM_RUN on the vCPU
//! thread with a signal until the vCPU loop notices.

use std::sync::Arc;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;
use vmm_sys_util::signal::{SIGRTMIN, register_signal_handler};

/// How often the signal is repeated: one sent while the vCPU thread is outside KVM_RUN is
/// lost, so the watchdog keeps kicking until it is disarmed.
const KICK_INTERVAL: Duration = Duration::from_millis(10);

/// Offset from SIGRTMIN of the signal that kicks a vCPU out of KVM_RUN.
const KICK_SIGNAL_OFFSET: i32 = 0;

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Nothing to do: the point is that KVM_RUN returns EINTR.
}

/// The signal that interrupts KVM_RUN; its handler is installed once per process.
pub fn kick_signal() -> libc::c_int {
    static INSTALL: Once = Once::new();
    let signal = SIGRTMIN() + KICK_SIGNAL_OFFSET;
    INSTALL.call_once(|| {
        // Registration only fails for an invalid signal number, and SIGRTMIN is valid.
        let _ = register_signal_handler(signal, on_kick);
    });
    signal
}

/// Sends the kick signal to `thread`.
pub fn kick(thread: libc::pthread_t) {
    // SAFETY: pthread_kill with a signal whose handler is installed (kick_signal) only
    // interrupts the target's blocking system call; `thread` is alive while its watchdog is.
    unsafe { libc::pthread_kill(thread, kick_signal()) };
}

/// A thread that kicks the vCPU thread until it is dropped (which disarms it and waits).
#[derive(Debug)]
struct KickThread {
    disarm: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl KickThread {
    /// Run `body` on a thread named `name`; it returns when its receiver says disarmed.
    fn spawn(name: &str, body: impl FnOnce(Receiver<()>) + Send + 'static) -> Self {
        let (disarm, disarmed) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(disarmed))
            .ok();
        Self {
            disarm: Some(disarm),
            thread,
        }
    }
}

impl Drop for KickThread {
    fn drop(&mut self) {
        drop(self.disarm.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[derive(Debug)]
pub struct Watchdog {
    fired: Arc<AtomicBool>,
    _kicker: KickThread,
}

impl Watchdog {
    /// Arms a watchdog for the calling thread.
    pub fn arm(limit: Duration) -> Self {
        kick_signal();
        // SAFETY: pthread_self has no preconditions.
        let target = unsafe { libc::pthread_self() };
        let fired = Arc::new(AtomicBool::new(false));
        let flag = fired.clone();
        let kicker = KickThread::spawn("watchdog", move |disarmed| {
            if disarmed.recv_timeout(limit) != Err(RecvTimeoutError::Timeout) {
                return;
            }
            flag.store(true, Ordering::SeqCst);
            while disarmed.recv_timeout(KICK_INTERVAL) == Err(RecvTimeoutError::Timeout) {
                kick(target);
            }
        });
        Self {
            fired,
            _kicker: kicker,
        }
    }

    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
}

/// Sleep up to 5 s in a blocking call that a kick interrupts with EINTR, as it does KVM_RUN,
/// until `kicked` says the kick came.
/// Kicks the vCPU thread out of KVM_RUN every `period` while armed, so a guest that waits
/// for timer ticks without ever exiting (a `while ticks < n {}` loop) still gets them: the
/// run loop injects due interrupts at every exit.
#[derive(Debug)]
pub struct Ticker {
    period: Duration,
    _kicker: KickThread,
}

impl Ticker {
    /// The fastest a ticker kicks: faster timers get their ticks coalesced, as a busy CPU
    /// would see them.
    pub const MIN_PERIOD: Duration = Duration::from_millis(1);

    pub fn arm(period: Duration) -> Self {
        kick_signal();
        let period = period.max(Self::MIN_PERIOD);
        // SAFETY: pthread_self has no preconditions.
        let target = unsafe { libc::pthread_self() };
        let kicker = KickThread::spawn("ticker", move |disarmed| {
            while disarmed.recv_timeout(period) == Err(RecvTimeoutError::Timeout) {
                kick(target);
            }
        });
        Self {
            period,
            _kicker: kicker,
        }
    }

    pub fn period(&self) -> Duration {
        self.period
    }
}

#[cfg(test)]
pub(crate) fn sleep_until_kicked(kicked: impl Fn() -> bool) {
    let mut remaining = libc::timespec {
        tv_sec: 5,
        tv_nsec: 0,
    };
    loop {
        let request = remaining;
        // SAFETY: nanosleep with valid pointers to two timespecs.
        let rc = unsafe { libc::nanosleep(&request, &mut remaining) };
        if rc == 0 || kicked() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn interrupts_a_blocking_call_after_the_limit() {
        let dog = Watchdog::arm(Duration::from_millis(50));
        let start = Instant::now();
        sleep_until_kicked(|| dog.fired());
        assert!(dog.fired());
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "the kick ended the sleep early"
        );
    }

    #[test]
    fn disarmed_watchdog_never_fires() {
        let dog = Watchdog::arm(Duration::from_secs(30));
        assert!(!dog.fired());
        drop(dog);
    }
}

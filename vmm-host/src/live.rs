//! The live status line: while a run goes on for more than a second, one line on the terminal
//! says how far it is (time in the guest, VM exits per second, exceptions captured, the last
//! vector), redrawn a few times a second and erased when the run ends, as cargo's progress bar
//! is. The run loop only bumps atomic counters; a thread of its own draws them, so the loop
//! never waits on the terminal.
//!
//! The line shares the terminal with the guest's serial echo. Whoever writes to stdout while
//! the line may be shown goes through [`output`], which erases the line first and notes
//! whether stdout was left mid-line (the line is then not redrawn until the guest ends it, so
//! that it never lands in the middle of the guest's text).

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A run shorter than this never shows the line.
pub const FIRST_DRAW_AFTER: Duration = Duration::from_secs(1);
/// How often the line is redrawn.
pub const REDRAW_EVERY: Duration = Duration::from_millis(250);
/// `last_vector` before the first exception.
const NO_VECTOR: u8 = u8::MAX;

/// What the run loop reports as it goes; read by the drawing thread.
#[derive(Debug)]
pub struct Counters {
    /// The moment the other times count from.
    base: Instant,
    exits: AtomicU64,
    exceptions: AtomicU64,
    last_vector: AtomicU8,
    /// Nanoseconds the guest ran in the run loops that ended.
    ran_before: AtomicU64,
    /// Nanoseconds after `base` the current run loop started, plus one; 0 outside a loop.
    /// A guest that spins without exits still shows its time going by.
    loop_started: AtomicU64,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            base: Instant::now(),
            exits: AtomicU64::new(0),
            exceptions: AtomicU64::new(0),
            last_vector: AtomicU8::new(NO_VECTOR),
            ran_before: AtomicU64::new(0),
            loop_started: AtomicU64::new(0),
        }
    }
}

fn nanos(time: Duration) -> u64 {
    u64::try_from(time.as_nanos()).unwrap_or(u64::MAX)
}

impl Counters {
    /// A run loop starts, after the guest ran `ran_before` in the earlier ones.
    pub fn loop_started(&self, ran_before: Duration) {
        self.ran_before.store(nanos(ran_before), Ordering::Relaxed);
        let since_base = nanos(self.base.elapsed()).saturating_add(1);
        self.loop_started.store(since_base, Ordering::Relaxed);
    }

    /// The run loop ended, the guest having run `ran` in all loops so far.
    pub fn loop_ended(&self, ran: Duration) {
        self.loop_started.store(0, Ordering::Relaxed);
        self.ran_before.store(nanos(ran), Ordering::Relaxed);
    }

    /// One VM exit.
    pub fn exit(&self) {
        self.exits.fetch_add(1, Ordering::Relaxed);
    }

    /// One exception captured.
    pub fn exception(&self, vector: u8) {
        self.exceptions.fetch_add(1, Ordering::Relaxed);
        self.last_vector.store(vector, Ordering::Relaxed);
    }

    /// The counters as they stand.
    pub fn snapshot(&self) -> Snapshot {
        let vector = self.last_vector.load(Ordering::Relaxed);
        let started = self.loop_started.load(Ordering::Relaxed);
        let this_loop = match started {
            0 => 0,
            _ => nanos(self.base.elapsed()).saturating_sub(started - 1),
        };
        let ran_before = self.ran_before.load(Ordering::Relaxed);
        Snapshot {
            exits: self.exits.load(Ordering::Relaxed),
            exceptions: self.exceptions.load(Ordering::Relaxed),
            last_vector: (vector != NO_VECTOR).then_some(vector),
            guest_time: Duration::from_nanos(ran_before.saturating_add(this_loop)),
        }
    }
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub exits: u64,
    pub exceptions: u64,
    pub last_vector: Option<u8>,
    pub guest_time: Duration,
}

/// The status text for `now`, with the exit rate since `before` (the previous draw).
/// `running 3.2 s in the guest · 41.2k exits/s · 15746 exceptions, last #PF`
pub fn render(now: &Snapshot, before: &Snapshot, between: Duration) -> String {
    let seconds = between.as_secs_f64();
    let rate = if seconds > 0.0 {
        (now.exits.saturating_sub(before.exits)) as f64 / seconds
    } else {
        0.0
    };
    let exceptions = match (now.exceptions, now.last_vector) {
        (0, _) | (_, None) => "no exceptions yet".to_string(),
        (1, Some(v)) => format!("1 exception ({})", abi::exception::mnemonic(v)),
        (n, Some(v)) => format!("{n} exceptions, last {}", abi::exception::mnemonic(v)),
    };
    format!(
        "running {:.1} s in the guest · {} exits/s · {exceptions}",
        now.guest_time.as_secs_f64(),
        per_second(rate)
    )
}

/// `812`, `41.2k`, `1.3M`.
fn per_second(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{:.1}M", rate / 1e6)
    } else if rate >= 1e3 {
        format!("{:.1}k", rate / 1e3)
    } else {
        format!("{rate:.0}")
    }
}

/// True while a status line may be on the terminal: [`output`] then takes the slow path.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Shared between the drawing thread and [`output`]: what the terminal shows now.
static TERMINAL: Mutex<Terminal> = Mutex::new(Terminal {
    shown: false,
    mid_line: false,
});

#[derive(Debug)]
struct Terminal {
    /// The status line is on the screen (the cursor at its end, on stderr's side).
    shown: bool,
    /// stdout's last byte was not a newline: a line drawn now would join the guest's text.
    mid_line: bool,
}

/// The erase sequence: back to the line's start, clear it.
const ERASE: &str = "\r\x1b[2K";

/// Write `text` to stdout, erasing the status line first if it is shown. Every write to stdout
/// during a run goes through here.
pub fn output(text: &[u8]) -> io::Result<()> {
    if !ACTIVE.load(Ordering::Acquire) {
        return io::stdout().write_all(text);
    }
    let mut terminal = TERMINAL.lock().unwrap_or_else(PoisonError::into_inner);
    if terminal.shown {
        let _ = io::stderr().write_all(ERASE.as_bytes());
        terminal.shown = false;
    }
    if let Some(&last) = text.last() {
        terminal.mid_line = last != b'\n';
    }
    let mut stdout = io::stdout();
    stdout.write_all(text)?;
    // Out before the line is drawn again on stderr, which is not buffered.
    stdout.flush()
}

/// The drawing thread; dropping it (or [`StatusLine::finish`]) erases the line.
#[derive(Debug)]
pub struct StatusLine {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StatusLine {
    /// Draw `counters` on stderr, if it is a terminal that understands the erase sequence;
    /// otherwise nothing is ever written.
    pub fn on_terminal(counters: Arc<Counters>) -> Option<Self> {
        let stderr = io::stderr();
        let dumb = std::env::var_os("TERM").is_none_or(|t| t == "dumb" || t.is_empty());
        if !stderr.is_terminal() || dumb {
            return None;
        }
        Some(Self::start(counters))
    }

    fn start(counters: Arc<Counters>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        ACTIVE.store(true, Ordering::Release);
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("status-line".into())
            .spawn(move || draw_until(&counters, &flag))
            .ok();
        Self { stop, thread }
    }

    /// Stop drawing and erase the line.
    pub fn finish(mut self) {
        self.stop_drawing();
    }

    fn stop_drawing(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
        let mut terminal = TERMINAL.lock().unwrap_or_else(PoisonError::into_inner);
        if terminal.shown {
            let _ = io::stderr().write_all(ERASE.as_bytes());
            terminal.shown = false;
        }
        ACTIVE.store(false, Ordering::Release);
    }
}

impl Drop for StatusLine {
    fn drop(&mut self) {
        self.stop_drawing();
    }
}

/// The thread's body: wait a second, then redraw every [`REDRAW_EVERY`] until told to stop.
fn draw_until(counters: &Counters, stop: &AtomicBool) {
    let started = Instant::now();
    let mut before = (counters.snapshot(), started);
    while !stop.load(Ordering::Acquire) {
        let wait = if started.elapsed() < FIRST_DRAW_AFTER {
            FIRST_DRAW_AFTER.saturating_sub(started.elapsed())
        } else {
            REDRAW_EVERY
        };
        std::thread::park_timeout(wait);
        if stop.load(Ordering::Acquire) || started.elapsed() < FIRST_DRAW_AFTER {
            continue;
        }
        let now = (counters.snapshot(), Instant::now());
        draw(&render(&now.0, &before.0, now.1 - before.1));
        before = now;
    }
}

fn draw(text: &str) {
    let mut terminal = TERMINAL.lock().unwrap_or_else(PoisonError::into_inner);
    if terminal.mid_line {
        return;
    }
    let _ = write!(io::stderr(), "{ERASE}{text}");
    terminal.shown = true;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_time_rate_count_and_last_vector() {
        let before = Snapshot::default();
        let now = Snapshot {
            exits: 82_400,
            exceptions: 15_746,
            last_vector: Some(14),
            guest_time: Duration::from_millis(3_240),
        };
        assert_eq!(
            render(&now, &before, Duration::from_secs(2)),
            "running 3.2 s in the guest · 41.2k exits/s · 15746 exceptions, last #PF"
        );
    }

    #[test]
    fn renders_one_and_no_exceptions() {
        let mut now = Snapshot {
            exits: 1_500_000,
            exceptions: 1,
            last_vector: Some(13),
            guest_time: Duration::from_secs(1),
        };
        let line = render(&now, &Snapshot::default(), Duration::from_secs(1));
        assert_eq!(
            line,
            "running 1.0 s in the guest · 1.5M exits/s · 1 exception (#GP)"
        );
        now.exceptions = 0;
        now.last_vector = None;
        now.exits = 700;
        let line = render(&now, &Snapshot::default(), Duration::from_secs(1));
        assert_eq!(
            line,
            "running 1.0 s in the guest · 700 exits/s · no exceptions yet"
        );
    }

    #[test]
    fn counters_count_exits_and_exceptions() {
        let counters = Counters::default();
        assert_eq!(counters.snapshot(), Snapshot::default());
        counters.exit();
        counters.exit();
        counters.exception(14);
        counters.exception(8);
        counters.loop_ended(Duration::from_millis(9));
        assert_eq!(
            counters.snapshot(),
            Snapshot {
                exits: 2,
                exceptions: 2,
                last_vector: Some(8),
                guest_time: Duration::from_millis(9),
            }
        );
    }

    #[test]
    fn time_goes_by_inside_a_loop_without_exits() {
        let counters = Counters::default();
        counters.loop_started(Duration::from_secs(3));
        std::thread::sleep(Duration::from_millis(20));
        let during = counters.snapshot().guest_time;
        assert!(during >= Duration::from_millis(3_020), "{during:?}");
        assert!(during < Duration::from_secs(60), "{during:?}");
        counters.loop_ended(Duration::from_secs(4));
        assert_eq!(counters.snapshot().guest_time, Duration::from_secs(4));
    }

    #[test]
    fn the_rate_is_over_the_time_between_draws() {
        let before = Snapshot {
            exits: 1_000,
            ..Snapshot::default()
        };
        let now = Snapshot {
            exits: 1_500,
            ..Snapshot::default()
        };
        let line = render(&now, &before, Duration::from_millis(250));
        assert!(line.contains(" 2.0k exits/s "), "{line}");
        assert!(render(&now, &before, Duration::ZERO).contains(" 0 exits/s "));
    }
}

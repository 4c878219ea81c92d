//! `vmm-host`: boot a kernel under KVM and report how it ended.
#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use vmm_host::catch::VectorSet;
use vmm_host::cpuid::Hidden;
use vmm_host::ending::{RunReport, status};
use vmm_host::gdb::{GdbServer, ListenAddr, SessionEnd};
use vmm_host::loader::{BootFiles, BootProtocol, ModuleArg};
use vmm_host::scenario::{self, Scenario};
use vmm_host::suite::{self, RunFailed, SuiteOptions};
use vmm_host::vm::{AuditMode, Vm, VmConfig, VmError};
use vmm_host::{hypervisor, layout};

/// `print!` that ignores a closed stdout (`vmm-host … | head`): the run's status still
/// matters to the caller, and the host must not panic on a broken pipe.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let text = format!($($arg)*);
        let _ = write!(anstream::stdout(), "{}", vmm_host::colour::paint(&text));
    }};
}

/// `println!` that ignores a closed stdout, like [`out!`].
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let text = format!($($arg)*);
        let _ = writeln!(anstream::stdout(), "{}", vmm_host::colour::paint(&text));
    }};
}

/// Boot a kernel under KVM, see every exception it takes, explain how it ended.
#[derive(Debug, Parser)]
#[command(name = "vmm-host", version, about, long_about = None)]
#[command(
    after_help = "Exit statuses: 0 or the guest's exit code; 1 scenario mismatch; 2 bad input; \
77 scenario skipped (this KVM lacks what it needs); 80 triple fault; 81 KVM entry failure; 82 KVM internal error; 83 halted with interrupts off; \
84 watchdog timeout; 85 host error; 86 halted with no interrupt source; 87 killed from gdb; \
88 the guest reset the machine; 89 a boot sector waits for a key; 90 a real-mode exception \
with no handler (docs/exit-status.md)."
)]
struct Cli {
    /// KVM device to use.
    #[arg(long, global = true, value_name = "PATH", default_value = hypervisor::DEFAULT_DEVICE)]
    kvm_device: PathBuf,
    /// Colour the report: `auto` on a terminal (not with NO_COLOR), `always`, or `never`.
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "WHEN",
        default_value = "auto"
    )]
    color: ColorWhen,
    #[command(subcommand)]
    command: Command,
}

/// `--color`, as cargo takes it.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ColorWhen {
    Auto,
    Always,
    Never,
}

impl ColorWhen {
    fn choice(self) -> anstream::ColorChoice {
        match self {
            Self::Auto => anstream::ColorChoice::Auto,
            Self::Always => anstream::ColorChoice::Always,
            Self::Never => anstream::ColorChoice::Never,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Boot a kernel (the bundled guest-kernel unless --kernel is given) and run it to its end.
    Run(RunArgs),
    /// Run a scenario from scenarios/ (or a scenario file, or all of them with --all) and check
    /// what it expects.
    Scenario(ScenarioArgs),
    /// Measure what this host's KVM can do (breakpoints, ring 3, exit cost) with tiny VMs.
    Doctor,
    /// Turn a --report FILE.jsonl into one self-contained HTML page (timeline, walks, diffs,
    /// address-space map).
    Report(ReportArgs),
    /// Analyse a core written by --core, with no KVM: the CPU state, the exceptions being
    /// handled explained again from its memory, the page tables (docs/cores.md).
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
struct InspectArgs {
    /// The core file written by --core or --core-on.
    #[arg(value_name = "CORE")]
    core: PathBuf,
    /// Read function names and source lines from this ELF [default: the file the run read
    /// them from, as the core names it].
    #[arg(long, value_name = "ELF")]
    symbols: Option<PathBuf>,
    /// After the report, serve the core to gdb on [ADDR:]PORT: registers, memory and the
    /// monitor commands on the guest as it stood (it cannot run on).
    #[arg(long, value_name = "[ADDR:]PORT")]
    gdb: Option<ListenAddr>,
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// The JSON-lines report written by --report.
    #[arg(value_name = "FILE.jsonl")]
    input: PathBuf,
    /// The HTML file to write.
    #[arg(short, long, value_name = "FILE.html")]
    output: PathBuf,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Kernel: an ELF with a PVH entry note, a Multiboot kernel or a Linux bzImage [default:
    /// the bundled guest-kernel].
    #[arg(long, value_name = "FILE", conflicts_with = "disk")]
    kernel: Option<PathBuf>,
    /// A raw disk image to boot as a PC boots a hard disk: its boot sector at 0x7C00 in real
    /// mode on the host's BIOS (the same as --kernel FILE --boot disk).
    #[arg(long, value_name = "IMG")]
    disk: Option<PathBuf>,
    /// Boot protocol, when the file's contents should not decide (a PVH note wins over a
    /// bzImage's setup header, which wins over a Multiboot header).
    #[arg(long, value_name = "PROTOCOL")]
    boot: Option<BootProtocol>,
    /// The ELF to read function names and source lines from, when the kernel file has none
    /// (the vmlinux of a bzImage) [default: the kernel file].
    #[arg(long, value_name = "ELF")]
    symbols: Option<PathBuf>,
    /// A file loaded next to a Multiboot or PVH kernel, listed in its boot information with
    /// CMDLINE; repeat for more.
    #[arg(long = "module", value_name = "FILE[,CMDLINE]")]
    modules: Vec<ModuleArg>,
    /// A Linux kernel's initial RAM disk: a bzImage's ramdisk, or PVH's first module.
    #[arg(long, value_name = "FILE")]
    initrd: Option<PathBuf>,
    /// CPUID features to hide, by /proc/cpuinfo's names (`-cx16,-xsave`; `-kvm` hides KVM's
    /// paravirtual leaves): a kernel takes its other path past an instruction this KVM
    /// cannot emulate.
    #[arg(
        long,
        value_name = "-FLAG,…",
        allow_hyphen_values = true,
        default_value = ""
    )]
    cpuid: Hidden,
    /// Start the CMOS clock at TIME (2026-12-02T01:30:00, UTC, or @SECONDS) instead of the
    /// host's time, for repeatable runs; it runs on from there.
    #[arg(long, value_name = "TIME", value_parser = vmm_host::devices::cmos::parse_time)]
    clock: Option<u64>,
    /// Guest RAM, e.g. 256M or 4G; a bare number is MiB.
    #[arg(long, value_name = "SIZE", default_value = "128M", value_parser = parse_size)]
    mem: u64,
    /// Kernel command line.
    #[arg(long, value_name = "STR", default_value = "")]
    cmdline: String,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Args)]
struct ScenarioArgs {
    /// Scenario name (scenarios/NAME.toml) or path to a scenario file.
    #[arg(value_name = "NAME|PATH", required_unless_present_any = ["list", "all"])]
    scenario: Option<String>,
    /// List the available scenarios with their descriptions.
    #[arg(long, conflicts_with_all = ["scenario", "all"])]
    list: bool,
    /// Run every scenario (or those --filter picks) and print a table; status 1 if any fails.
    #[arg(long, conflicts_with = "scenario")]
    all: bool,
    /// With --all: only scenarios whose names match this glob (`boxkernel-*`).
    #[arg(long, value_name = "GLOB")]
    filter: Option<String>,
    /// With --all: scenarios run at once, each in a VM of its own [default: 1].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: Option<u16>,
    /// With --all: write a JUnit XML report (one testcase per scenario) to FILE.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// With --all: write the outcomes as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// With --all: a failing scenario leaves its core (NAME.core), its report (NAME.jsonl)
    /// and its HTML page (NAME.html) in DIR.
    #[arg(long, value_name = "DIR")]
    artifacts: Option<PathBuf>,
    /// Directory holding scenario files [default: ./scenarios, else the source tree's].
    #[arg(long, value_name = "DIR")]
    scenarios: Option<PathBuf>,
    /// Watchdog limit in seconds, overriding the scenario's.
    #[arg(long, value_name = "S", value_parser = parse_seconds)]
    timeout: Option<Duration>,
    /// Serial output kept, overriding the scenario's `serial_limit` (itself 16M unless set).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    serial_limit: Option<u64>,
    #[command(flatten)]
    serial: SerialArgs,
    #[command(flatten)]
    tap: TapArgs,
    #[command(flatten)]
    gdb: GdbArgs,
}

/// Where the guest's serial output goes.
#[derive(Debug, Args)]
struct SerialArgs {
    /// Also write the guest's serial output to FILE.
    #[arg(long, value_name = "FILE")]
    serial_log: Option<PathBuf>,
    /// Do not copy the guest's serial output to the terminal.
    #[arg(long)]
    quiet: bool,
}

/// What the host does at each exception the guest takes.
#[derive(Debug, Args)]
struct TapArgs {
    /// Work per captured exception: `off` records it only; `faults` also decodes, walks,
    /// explains and diffs it; `full` also audits the whole page-table tree each time.
    #[arg(long, value_enum, value_name = "MODE", default_value = "faults")]
    audit: AuditMode,
    /// Do not capture exceptions at all (no traps in guest code).
    #[arg(long)]
    no_tap: bool,
    /// Write every exception, diff and audit as JSON lines to FILE (docs/report-schema.md).
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Also draw the run as one self-contained HTML page (docs/html-report.md).
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Print only how the run ended, the diagnosis and the exception counts (--report and
    /// --html still get everything).
    #[arg(long)]
    brief: bool,
    /// Write an ELF core of the guest to FILE when the run ends: `gdb KERNEL FILE` opens it,
    /// `vmm-host inspect FILE` analyses it (docs/cores.md).
    #[arg(long, value_name = "FILE")]
    core: Option<PathBuf>,
    /// Write the core at the first exception in VECTORS (pf, gp,df, 14, `all`), before its
    /// handler runs, instead of at the end.
    #[arg(long, value_name = "VECTORS", requires = "core", value_parser = parse_vectors)]
    core_on: Option<VectorSet>,
}

/// Arm `--core-on` before the guest runs.
fn arm_core(vm: &mut Vm, tap: &TapArgs) {
    if let (Some(path), Some(vectors)) = (&tap.core, tap.core_on) {
        vm.core_on = Some(vmm_host::vm::CoreOn {
            path: path.clone(),
            vectors,
            written: None,
        });
    }
}

/// After the report: write the `--core` of the run's end, or say what came of `--core-on`.
fn finish_core(vm: &Vm, tap: &TapArgs) -> Result<(), Failure> {
    let Some(path) = &tap.core else {
        return Ok(());
    };
    let written = match (&vm.core_on, tap.core_on) {
        (Some(core), _) => match &core.written {
            Some(result) => result.clone(),
            None => {
                outln!(
                    "== core: no exception in --core-on came; no core written to {}",
                    path.display()
                );
                return Ok(());
            }
        },
        (None, _) => vm
            .write_core(path, "at the run's end (--core)")
            .map_err(|e| e.to_string()),
    };
    match written {
        Ok(size) => {
            outln!(
                "== core: {} ({}); open it with `gdb KERNEL {}` or `vmm-host inspect {}`",
                path.display(),
                vmm_host::layout::human(size),
                path.display(),
                path.display()
            );
            Ok(())
        }
        Err(why) => Err(Failure {
            error: anyhow::anyhow!(why),
            status: status::HOST_ERROR,
        }),
    }
}

/// Where the JSON lines go: the --report file, or a temporary one when only --html asks.
fn report_path(tap: &TapArgs) -> Option<PathBuf> {
    tap.report.clone().or_else(|| {
        tap.html
            .as_ref()
            .map(|_| std::env::temp_dir().join(format!("vmm-host-{}.jsonl", std::process::id())))
    })
}

/// Removes the JSON lines written only for --html, however the command ends.
struct TemporaryReport(Option<PathBuf>);

impl TemporaryReport {
    fn for_args(tap: &TapArgs) -> Self {
        Self(report_path(tap).filter(|_| tap.report.is_none()))
    }
}

impl Drop for TemporaryReport {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// After the run: draw the page for --html from the JSON lines.
fn write_html(tap: &TapArgs, title: &str) -> Result<(), Failure> {
    let (Some(html), Some(jsonl)) = (&tap.html, report_path(tap)) else {
        return Ok(());
    };
    let drawn = std::fs::read_to_string(&jsonl)
        .map_err(|e| vmm_host::html::HtmlError::Read(jsonl.clone(), e))
        .and_then(|text| {
            let report = vmm_host::html::model::Report::parse(&jsonl.display().to_string(), &text)?;
            vmm_host::html::write_page(&report, title, html)
        });
    drawn.map_err(bad_input)?;
    outln!("HTML report: {}", html.display());
    Ok(())
}

/// Debugging the guest with gdb.
#[derive(Debug, Args)]
struct GdbArgs {
    /// Serve gdb on [ADDR:]PORT (loopback unless ADDR is given). The guest runs until gdb
    /// connects or an exception in --break-on stops it, then waits for gdb.
    #[arg(long, value_name = "[ADDR:]PORT")]
    gdb: Option<ListenAddr>,
    /// Hold the guest at its first instruction until gdb continues it (like QEMU's -S).
    #[arg(long, requires = "gdb")]
    gdb_wait: bool,
    /// Exceptions that stop the guest for gdb before their handler runs (gp,pf,df or 13,14,
    /// `all`, `none`), and interrupt vectors (32–255, e.g. 0x20) that stop it before the
    /// host delivers them.
    #[arg(long, value_name = "VECTORS", requires = "gdb", default_value = "de,ud,df,ts,np,ss,gp,ac", value_parser = parse_vectors)]
    break_on: VectorSet,
    /// Also stop for gdb at the Nth exception the tap captures (the [N] of the report and of
    /// its diagnosis), before its handler runs: runs repeat, so a rerun reaches the same one.
    #[arg(long, value_name = "N", requires = "gdb")]
    break_at: Option<u64>,
    /// The register layout gdb gets: `i386` for 32-bit code, `x86-64`. Default: i386 for an
    /// ELF32 kernel or a disk image, x86-64 otherwise (gdb cannot switch within a session).
    #[arg(long, value_name = "ARCH", requires = "gdb")]
    gdb_arch: Option<vmm_host::gdb::Layout>,
}

#[derive(Debug, Args)]
struct CommonArgs {
    /// Watchdog: end the run after this many seconds.
    #[arg(long, value_name = "S", default_value = "10", value_parser = parse_seconds)]
    timeout: Duration,
    /// Serial output kept in the terminal, the log and the capture; past it, bytes are
    /// counted and the run report says how many (e.g. 64K, 16M; a bare number is MiB).
    #[arg(long, value_name = "SIZE", default_value = "16M", value_parser = parse_size)]
    serial_limit: u64,
    #[command(flatten)]
    serial: SerialArgs,
    #[command(flatten)]
    tap: TapArgs,
    #[command(flatten)]
    gdb: GdbArgs,
}

fn parse_vectors(text: &str) -> Result<VectorSet, String> {
    VectorSet::parse(text).map_err(|e| e.to_string())
}

fn parse_size(text: &str) -> Result<u64, String> {
    layout::parse_size(text).map_err(|e| e.to_string())
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!(
            "`{text}` is not a number of seconds above 0 and at most 86400"
        )),
    }
}

/// A failure and the exit status it maps to.
struct Failure {
    status: i32,
    error: anyhow::Error,
}

impl From<VmError> for Failure {
    fn from(error: VmError) -> Self {
        let status = if error.is_bad_input() {
            status::BAD_INPUT
        } else {
            status::HOST_ERROR
        };
        Self {
            status,
            error: error.into(),
        }
    }
}

impl Failure {
    fn context(self, what: String) -> Self {
        Self {
            status: self.status,
            error: self.error.context(what),
        }
    }
}

fn bad_input(error: impl Into<anyhow::Error>) -> Failure {
    Failure {
        status: status::BAD_INPUT,
        error: error.into(),
    }
}

/// Parse the command line; usage errors become one line, like every other error.
fn parse_cli() -> Result<Cli, ExitCode> {
    Cli::try_parse().map_err(|error| {
        use clap::error::ErrorKind;
        match error.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                let _ = error.print();
                return ExitCode::SUCCESS;
            }
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                let _ = error.print();
                return exit_code(status::BAD_INPUT);
            }
            _ => {}
        }
        eprintln!(
            "error: {} (see --help)",
            usage_error_line(&error.to_string())
        );
        exit_code(status::BAD_INPUT)
    })
}

/// clap's error as one line: its first paragraph, where the names of missing or conflicting
/// arguments sit on indented lines of their own, joined; the usage and the hints are dropped.
fn usage_error_line(text: &str) -> String {
    let words: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|line| !line.is_empty())
        .collect();
    let line = words.join(" ");
    let line = line.trim_start_matches("error: ");
    if line.is_empty() {
        "invalid arguments".to_string()
    } else {
        line.to_string()
    }
}

fn main() -> ExitCode {
    let cli = match parse_cli() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    cli.color.choice().write_global();
    let result = match cli.command {
        Command::Run(args) => run(args, &cli.kvm_device),
        Command::Scenario(args) => run_scenario(args, &cli.kvm_device),
        Command::Doctor => Ok(doctor(&cli.kvm_device)),
        Command::Inspect(args) => inspect(&args),
        Command::Report(args) => vmm_host::html::convert(&args.input, &args.output)
            .map(|()| {
                outln!("HTML report: {}", args.output.display());
                0
            })
            .map_err(bad_input),
    };
    match result {
        Ok(code) => exit_code(code),
        Err(failure) => {
            eprintln!("error: {:#}", failure.error);
            exit_code(failure.status)
        }
    }
}

/// `inspect CORE`: the post-mortem report, from the core alone.
fn inspect(args: &InspectArgs) -> Result<i32, Failure> {
    let core = vmm_host::coredump::read_file(&args.core).map_err(bad_input)?;
    let recorded = core.note.symbols.as_ref().map(PathBuf::from);
    let symbols = match (&args.symbols, recorded) {
        (Some(path), _) => Some(vmm_host::symbols::Symbolizer::open(path).map_err(bad_input)?),
        // The file the run read its symbols from, if it is still there.
        (None, Some(path)) => vmm_host::symbols::Symbolizer::open(&path).ok(),
        (None, None) => None,
    };
    out!(
        "{}",
        vmm_host::coredump::inspect::report(&core, symbols.as_ref())
    );
    let Some(listen) = args.gdb else {
        return Ok(0);
    };
    let server = GdbServer::bind(listen).map_err(bad_input)?;
    let layout = vmm_host::gdb::Layout::of(&vmm_host::vm::Registers {
        regs: core.regs,
        sregs: core.sregs,
        fpu: Default::default(),
        kernel_gs_base: 0,
    });
    let mut target = vmm_host::gdb::CoreTarget::new(core, symbols).map_err(bad_input)?;
    match server.serve(&mut target, true, layout).map_err(bad_input)? {
        SessionEnd::Lost(why) => eprintln!("gdb: connection lost ({why})"),
        SessionEnd::Detached => eprintln!("gdb: detached"),
        _ => {}
    }
    Ok(0)
}

/// Status 0 when KVM could be examined, 2 (bad environment) when it could not be opened.
fn doctor(kvm_device: &Path) -> i32 {
    let report = vmm_host::doctor::examine(kvm_device);
    out!("{report}");
    if report.capabilities.kvm {
        0
    } else {
        status::BAD_INPUT
    }
}

fn run(args: RunArgs, kvm_device: &Path) -> Result<i32, Failure> {
    // `--disk IMG` is `--kernel IMG --boot disk`.
    let boot = if args.disk.is_some() {
        Some(BootProtocol::Disk)
    } else {
        args.boot
    };
    let kernel = args.kernel.or(args.disk);
    let config = VmConfig {
        symbols: args
            .symbols
            .or_else(|| kernel.is_none().then(|| vmm_host::GUEST_KERNEL_ELF.into())),
        kernel: kernel.unwrap_or_else(|| vmm_host::bundled_kernel(boot)),
        boot,
        files: BootFiles {
            modules: args.modules,
            initrd: args.initrd,
        },
        cpuid: args.cpuid,
        clock: args.clock,
        mem: args.mem,
        cmdline: args.cmdline,
        timeout: args.common.timeout,
        serial_log: args.common.serial.serial_log,
        serial_limit: args.common.serial_limit,
        echo_serial: !args.common.serial.quiet,
        kvm_device: kvm_device.to_path_buf(),
        tap: !args.common.tap.no_tap,
        audit: args.common.tap.audit,
        report: report_path(&args.common.tap),
    };
    let _temporary = TemporaryReport::for_args(&args.common.tap);
    let mut vm = Vm::new(config)?;
    arm_core(&mut vm, &args.common.tap);
    let report = execute(&mut vm, &args.common.gdb)?;
    print_report(&vm, &report, args.common.tap.brief);
    finish_core(&vm, &args.common.tap)?;
    vm.finish_report()
        .map_err(|e| Failure::from(VmError::from(e)))?;
    write_html(&args.common.tap, "vmm-host run")?;
    Ok(report.exit_status())
}

/// Run the guest to its end, with a gdb session first when --gdb asks for one.
fn execute(vm: &mut Vm, gdb: &GdbArgs) -> Result<RunReport, Failure> {
    if let Some(listen) = gdb.gdb {
        let server = GdbServer::bind(listen).map_err(bad_input)?;
        vm.stop_on.catch = gdb.break_on;
        vm.stop_on.at_seq = gdb.break_at;
        let layout = gdb
            .gdb_arch
            .unwrap_or_else(|| vmm_host::gdb::Layout::for_kernel(vm.kernel_file()));
        match server.serve(vm, gdb.gdb_wait, layout).map_err(bad_input)? {
            SessionEnd::Detached => eprintln!("gdb: detached; the guest runs on to its end"),
            SessionEnd::Lost(why) => {
                eprintln!("gdb: connection lost ({why}); the guest runs on to its end")
            }
            SessionEnd::NoClient | SessionEnd::RunEnded | SessionEnd::Killed => {}
        }
    }
    let status_line = vmm_host::live::StatusLine::on_terminal(vm.live_counters());
    let mut report = vm.run();
    if let Some(line) = status_line {
        line.finish();
    }
    let argv: Vec<String> = std::env::args().collect();
    let location_at = |rip| vm.location_at(vmm_host::addr::Gva::new(rip));
    let ended = (report.ending).diagnosed_as(report.state.as_ref(), &location_at);
    report.diagnosis = vm
        .exception_report()
        .and_then(|_| vmm_host::diagnosis::diagnose(vm.exceptions(), ended, &argv));
    if let Some(diagnosis) = &report.diagnosis {
        vm.record_diagnosis(diagnosis);
    }
    Ok(report)
}

/// The run's report and its exception block, or with `brief` the ending, the diagnosis and
/// the counts only.
fn print_report(vm: &Vm, report: &RunReport, brief: bool) {
    if brief {
        out!("{}", report.brief());
        if vm.exception_report().is_some() {
            let log = vm.exceptions();
            let summary = log.summary();
            let seen = if summary.is_empty() { "none" } else { &summary };
            outln!("== exceptions: {} captured: {seen}", log.total);
        }
        return;
    }
    out!("{report}");
    if let Some(exceptions) = vm.exception_report() {
        out!("{exceptions}");
    }
}

/// ./scenarios when run from the repository, else the scenarios/ of the source tree this
/// binary was built from.
fn scenarios_dir(explicit: Option<PathBuf>) -> PathBuf {
    explicit.unwrap_or_else(|| {
        let here = PathBuf::from("scenarios");
        if here.is_dir() {
            here
        } else {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
        }
    })
}

fn run_scenario(args: ScenarioArgs, kvm_device: &Path) -> Result<i32, Failure> {
    let dir = scenarios_dir(args.scenarios.clone());
    if args.list {
        for name in scenario::list(&dir).map_err(bad_input)? {
            let path = dir.join(format!("{name}.toml"));
            let description = Scenario::load(&path)
                .map(|s| s.description)
                .unwrap_or_else(|e| format!("(invalid: {e})"));
            outln!("{name:<20} {description}");
        }
        return Ok(0);
    }
    if args.all {
        return run_suite(&args, &dir, kvm_device);
    }
    // clap's `requires` counts --all's default as given, so the check is made here.
    if args.filter.is_some()
        || args.jobs.is_some()
        || args.junit.is_some()
        || args.json.is_some()
        || args.artifacts.is_some()
    {
        return Err(bad_input(anyhow::anyhow!(
            "--filter, --jobs, --junit, --json and --artifacts go with --all, not with one scenario"
        )));
    }
    let name = args.scenario.clone().unwrap_or_default();
    let path = scenario::resolve(&name, &dir).map_err(bad_input)?;
    let scenario = Scenario::load(&path).map_err(bad_input)?;
    outln!("== scenario {}: {}", scenario.name, scenario.description);
    if let Some(reason) = scenario.unmet_need(kvm_device) {
        outln!("== scenario {}: SKIPPED: {reason}", scenario.name);
        return Ok(status::SCENARIO_SKIPPED);
    }
    let quiet_config = suite::vm_config(&scenario, &suite_options(&args, kvm_device));
    let config = VmConfig {
        serial_log: args.serial.serial_log.clone(),
        echo_serial: !args.serial.quiet,
        report: report_path(&args.tap),
        ..quiet_config
    };
    let _temporary = TemporaryReport::for_args(&args.tap);
    let drive = |vm: &mut Vm| {
        arm_core(vm, &args.tap);
        execute(vm, &args.gdb)
    };
    let mut run = suite::run_scenario(&scenario, config, drive).map_err(|e| match e {
        RunFailed::Vm(e) => Failure::from(e).context(format!("scenario {}", scenario.name)),
        RunFailed::Drive(failure) => failure,
    })?;
    let report = &run.report;
    print_report(&run.vm, report, args.tap.brief);
    finish_core(&run.vm, &args.tap)?;
    run.vm
        .finish_report()
        .map_err(|e| Failure::from(VmError::from(e)))?;
    write_html(
        &args.tap,
        &format!("scenario {}: {}", scenario.name, scenario.description),
    )?;
    let failures = &run.failures;
    let budget = scenario
        .expect
        .budget
        .as_ref()
        .map(|b| format!(" of a {} budget", vmm_host::ending::seconds(b.value)))
        .unwrap_or_default();
    if failures.is_empty() {
        outln!(
            "== scenario {}: PASS ({}, {}{budget})",
            scenario.name,
            report.ending.kind(),
            vmm_host::ending::seconds(report.elapsed)
        );
        Ok(0)
    } else {
        outln!("== scenario {}: FAIL", scenario.name);
        for failure in failures {
            outln!("  {failure}");
        }
        Ok(status::SCENARIO_FAILED)
    }
}

/// How scenarios run, from the command line.
fn suite_options(args: &ScenarioArgs, kvm_device: &Path) -> SuiteOptions {
    SuiteOptions {
        kvm_device: kvm_device.to_path_buf(),
        timeout: args.timeout,
        serial_limit: args.serial_limit,
        tap: !args.tap.no_tap,
        audit: args.tap.audit,
        artifacts: args.artifacts.clone(),
    }
}

/// `scenario --all`: every scenario, a progress line each, then the table.
fn run_suite(args: &ScenarioArgs, dir: &Path, kvm_device: &Path) -> Result<i32, Failure> {
    if args.gdb.gdb.is_some()
        || args.tap.report.is_some()
        || args.tap.html.is_some()
        || args.serial.serial_log.is_some()
        || args.tap.core.is_some()
    {
        return Err(bad_input(anyhow::anyhow!(
            "--gdb, --report, --html, --serial-log and --core follow one scenario: give its name instead of --all"
        )));
    }
    let paths = suite::select(dir, args.filter.as_deref()).map_err(bad_input)?;
    if let Some(artifacts) = &args.artifacts {
        std::fs::create_dir_all(artifacts).map_err(|e| {
            bad_input(anyhow::anyhow!(
                "cannot create the artifacts folder `{}`: {e}: choose a writable path for --artifacts",
                artifacts.display()
            ))
        })?;
    }
    let options = suite_options(args, kvm_device);
    let jobs = args.jobs.unwrap_or(1);
    outln!(
        "== {} scenarios from {}, {jobs} at a time",
        paths.len(),
        dir.display(),
    );
    let progress = |position: usize, total: usize, outcome: &suite::Outcome| {
        outln!("{}", suite::progress_line(position, total, outcome));
    };
    let outcomes = suite::run_all(&paths, usize::from(jobs), &options, &progress);
    out!("\n{}", suite::table(&outcomes));
    if let Some(path) = &args.junit {
        suite::write(path, &suite::junit(&outcomes)).map_err(bad_input)?;
        outln!("JUnit report: {}", path.display());
    }
    if let Some(path) = &args.json {
        suite::write(path, &suite::json(&outcomes)).map_err(bad_input)?;
        outln!("JSON report: {}", path.display());
    }
    Ok(if outcomes.iter().any(suite::Outcome::failed) {
        status::SCENARIO_FAILED
    } else {
        0
    })
}

/// A status as the process's exit code; anything outside 0–255 is clamped into it.
fn exit_code(status: i32) -> ExitCode {
    ExitCode::from(u8::try_from(status.clamp(0, 255)).unwrap_or(u8::MAX))
}

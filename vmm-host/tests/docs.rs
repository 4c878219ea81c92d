//! The docs cannot go stale: every command example in README.md and docs/*.md is run here,
//! and prints what the docs say it prints.
//!
//! A command example lives in a ```` ```console ```` block: `$ command` lines, each followed by
//! an excerpt of what it prints (stdout and stderr together). The excerpt's lines must appear
//! in the output in that order and next to each other; a line holding only `…` skips any
//! number of lines, and `…` inside a line stands for any text (times, the rest of a long
//! line). `$ gdb -x gdb/connect.gdb` connects to the vmm-host started with `--gdb PORT` by an
//! earlier `$` line of the same block, and runs the block's `(gdb) command` lines in batch
//! mode, each followed by an excerpt of what gdb printed for it.
//!
//! Numbers that move when the kernel is rebuilt (addresses, frames, counts) are regenerated
//! by one command, to be reviewed in the diff:
//!
//!     VMM_DOCS_UPDATE=1 cargo test -p vmm-host --test docs
//!
//! The usage synopsis (a ```` ```usage ```` block) is checked against `--help` instead.

mod common;
use regex::Regex;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// One `$` line and the excerpt of output the docs give for it.
#[derive(Debug)]
struct Step {
    line: usize,
    command: String,
    /// For a gdb step: the `(gdb)` commands, in order.
    gdb: Vec<String>,
    /// (line in the file, text); `…` alone on a line skips any lines.
    expected: Vec<(usize, String)>,
}

#[derive(Debug)]
struct Block {
    file: PathBuf,
    /// The output shown is this project's machines' (a nested `kvm_pvm` KVM): checked only
    /// on such a host.
    nested_only: bool,
    steps: Vec<Step>,
}

/// The info string of a console block whose output is the nested KVM's.
const NESTED: &str = "console nested-kvm";

fn nested_kvm() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}

fn doc_files() -> Vec<PathBuf> {
    let root = common::repo_root();
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.expect("docs entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// The fenced blocks of a Markdown file: (info string, first line number, lines).
fn fences(text: &str) -> Vec<(String, usize, Vec<String>)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, usize, Vec<String>)> = None;
    for (n, line) in text.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => open = Some((info.trim().to_string(), n + 2, Vec::new())),
            (Some(_), Some("")) => blocks.extend(open.take()),
            (Some((_, _, lines)), _) => lines.push(line.to_string()),
            (None, None) => {}
        }
    }
    blocks
}

/// The console blocks of a file. A block that starts with `$ gdb` continues the block before
/// it (prose may stand between the server's command and the gdb session).
fn console_blocks(file: &Path) -> Vec<Block> {
    let text = std::fs::read_to_string(file).expect("read doc");
    let mut blocks: Vec<Block> = Vec::new();
    for (info, first, lines) in fences(&text) {
        if info != "console" && info != NESTED {
            continue;
        }
        let steps = steps(first, &lines);
        let continues = steps
            .first()
            .is_some_and(|s| s.command.starts_with("gdb ") && !s.command.contains(" -batch"));
        match blocks.last_mut() {
            Some(previous) if continues => previous.steps.extend(steps),
            _ => blocks.push(Block {
                file: file.to_path_buf(),
                nested_only: info == NESTED,
                steps,
            }),
        }
    }
    blocks
}

fn steps(first: usize, lines: &[String]) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let number = first + i;
        if let Some(command) = line.strip_prefix("$ ") {
            steps.push(Step {
                line: number,
                command: command.to_string(),
                gdb: Vec::new(),
                expected: Vec::new(),
            });
        } else if let Some(step) = steps.last_mut() {
            if let Some(command) = line.strip_prefix("(gdb) ") {
                step.gdb.push(command.to_string());
                // What gdb printed before this command is not the next command's output.
                step.expected.push((number, "…".to_string()));
            } else {
                step.expected.push((number, line.to_string()));
            }
        } else {
            panic!("line {number}: a console block starts with a `$ ` command line");
        }
    }
    steps
}

// ---------------------------------------------------------------------------------------------
// Matching an excerpt against real output.

/// A number as the docs print them: hex with 0x, or decimal with an optional fraction.
const NUMBER: &str = r"0x[0-9a-fA-F]+|[0-9]+(?:\.[0-9]+)?";

/// The expected line as a regex: literal text, `…` as any text. With `numbers_free`, every
/// number is a capture group that matches any number (the line's shape).
fn line_regex(template: &str, numbers_free: bool) -> Regex {
    let number = Regex::new(NUMBER).unwrap();
    let mut pattern = String::from("^");
    for (i, part) in template.split('…').enumerate() {
        if i > 0 {
            pattern.push_str(".*?");
        }
        if numbers_free {
            let mut last = 0;
            for m in number.find_iter(part) {
                pattern.push_str(&regex::escape(&part[last..m.start()]));
                pattern.push_str(&format!("({NUMBER})"));
                last = m.end();
            }
            pattern.push_str(&regex::escape(&part[last..]));
        } else {
            pattern.push_str(&regex::escape(part));
        }
    }
    pattern.push('$');
    Regex::new(&pattern).expect("pattern")
}

/// The runs of an excerpt: consecutive expected lines between `…` lines.
fn runs(expected: &[(usize, String)]) -> Vec<Vec<(usize, String)>> {
    let mut runs = vec![Vec::new()];
    for (n, text) in expected {
        if text.trim() == "…" {
            runs.push(Vec::new());
        } else {
            runs.last_mut().unwrap().push((*n, text.clone()));
        }
    }
    runs.into_iter().filter(|r| !r.is_empty()).collect()
}

/// How many of the run's lines match the output's lines from `at` on, one for one.
fn run_matches_at(run: &[Regex], actual: &[&str], at: usize) -> usize {
    run.iter()
        .zip(&actual[at.min(actual.len())..])
        .filter(|(want, got)| want.is_match(got.trim_end()))
        .count()
}

/// A line of the docs that differs from the output, with the line it should be (when its
/// shape matched and only numbers moved).
#[derive(Debug)]
struct Mismatch {
    line: usize,
    expected: String,
    replacement: Option<String>,
}

/// Checks the excerpt in order; returns the lines that do not match.
fn compare(expected: &[(usize, String)], actual: &str) -> Vec<Mismatch> {
    let lines: Vec<&str> = actual.lines().collect();
    let mut from = 0;
    let mut mismatches = Vec::new();
    for run in runs(expected) {
        let exact: Vec<Regex> = run.iter().map(|(_, t)| line_regex(t, false)).collect();
        let shape: Vec<Regex> = run.iter().map(|(_, t)| line_regex(t, true)).collect();
        let found = (from..lines.len()).find(|&at| {
            at + run.len() <= lines.len() && run_matches_at(&exact, &lines, at) == run.len()
        });
        if let Some(at) = found {
            from = at + run.len();
            continue;
        }
        // Where the run would be if only numbers moved: the most lines of the same shape.
        let best = (from..lines.len())
            .map(|at| (run_matches_at(&shape, &lines, at), at))
            .filter(|&(count, _)| count > 0)
            .max_by_key(|&(count, at)| (count, std::cmp::Reverse(at)));
        for (i, (n, want)) in run.iter().enumerate() {
            let got = best.and_then(|(_, at)| lines.get(at + i).copied());
            if got.is_some_and(|g| exact[i].is_match(g.trim_end())) {
                continue;
            }
            let replacement = got.and_then(|g| renumber(want, g.trim_end()));
            mismatches.push(Mismatch {
                line: *n,
                expected: want.clone(),
                replacement,
            });
        }
        if let Some((_, at)) = best {
            from = at + run.len();
        }
    }
    mismatches
}

/// The expected line with its numbers taken from `actual`, when the two have the same shape.
fn renumber(template: &str, actual: &str) -> Option<String> {
    let captures = line_regex(template, true).captures(actual)?;
    let number = Regex::new(NUMBER).unwrap();
    let mut values = captures.iter().skip(1).flatten().map(|m| m.as_str());
    let mut out = String::new();
    for (i, part) in template.split('…').enumerate() {
        if i > 0 {
            out.push('…');
        }
        let mut last = 0;
        for m in number.find_iter(part) {
            out.push_str(&part[last..m.start()]);
            out.push_str(values.next()?);
            last = m.end();
        }
        out.push_str(&part[last..]);
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// Running the commands.

/// A directory to run examples in: `scenarios` and `gdb` of the repository, an empty
/// `target`, and `vmm-host` on PATH.
struct Workdir {
    dir: tempfile::TempDir,
}

impl Workdir {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = common::repo_root();
        for linked in ["scenarios", "gdb", "vmm-host"] {
            std::os::unix::fs::symlink(root.join(linked), dir.path().join(linked)).unwrap();
        }
        std::fs::create_dir(dir.path().join("target")).unwrap();
        // connect.gdb finds the bundled kernel under target/guest-kernel.
        std::os::unix::fs::symlink(
            root.join("target/guest-kernel"),
            dir.path().join("target/guest-kernel"),
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        std::os::unix::fs::symlink(
            env!("CARGO_BIN_EXE_vmm-host"),
            dir.path().join("bin/vmm-host"),
        )
        .unwrap();
        Self { dir }
    }

    /// `bash -c` on the example, with `cargo run -p vmm-host --` meaning the built binary;
    /// `limit` bounds a broken example (a server runs unbounded, killed when dropped).
    fn shell(&self, command: &str, limit: Option<u32>) -> Command {
        let command = command
            .replace("cargo run -p vmm-host -- ", "vmm-host ")
            .replace(" ELF ", &format!(" {} ", common::guest_kernel()));
        let path = format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new("bash");
        let bound = limit.map_or(String::new(), |seconds| format!("timeout {seconds} "));
        cmd.args(["-c", &format!("exec {bound}{command}")])
            .current_dir(self.dir.path())
            .env("PATH", path)
            .stdin(Stdio::null());
        cmd
    }
}

/// A vmm-host serving gdb in the background, started by a `--gdb PORT` example.
struct Server {
    child: Child,
    port: u16,
    doc_port: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        // After gdb detaches the guest runs to its end; do not wait for it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn gdb_port(command: &str) -> Option<String> {
    let mut words = command.split_whitespace();
    words.find(|w| *w == "--gdb")?;
    words.next().map(String::from)
}

fn start_server(work: &Workdir, command: &str, doc_port: &str) -> (Server, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let command = command.replace(&format!("--gdb {doc_port}"), &format!("--gdb {port}"));
    let mut child = work
        .shell(&command, None)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vmm-host");
    let (send, stderr) = mpsc::channel();
    let reader = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            let _ = send.send(line);
        }
    });
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("target remote")) {
        match stderr.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("`{command}` never said where gdb connects: {seen:?}"),
        }
    }
    let server = Server {
        child,
        port,
        doc_port: doc_port.to_string(),
    };
    // The reader thread keeps draining vmm-host's stderr after this receiver is gone.
    let said = seen.join("\n");
    let said = said.replace(&port.to_string(), doc_port);
    (server, said)
}

/// The example's own gdb command line (its `-ex` and `-x` arguments, without a trailing
/// `# comment`), in batch mode against the server's real port, then the `(gdb)` commands.
fn run_gdb(work: &Workdir, step: &Step, server: &Server) -> String {
    let quote = |text: &str| format!("'{}'", text.replace('\'', "'\\''"));
    let example = step.command.split(" #").next().unwrap_or_default();
    let arguments = example.strip_prefix("gdb").unwrap_or_default();
    let mut line = format!(
        "timeout 120 gdb -batch -nx -ex {}{arguments}",
        quote(&format!("set $vmm_port = {}", server.port))
    );
    for command in &step.gdb {
        line.push_str(&format!(" -ex {}", quote(command)));
    }
    let out = Command::new("bash")
        .args(["-c", &line])
        .current_dir(work.dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run gdb");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    text.replace(&server.port.to_string(), &server.doc_port)
}

/// What running the step printed.
fn output_of(work: &Workdir, step: &Step, server: &mut Option<Server>) -> String {
    // `gdb -batch KERNEL CORE` opens a core: no server to connect to.
    if step.command.starts_with("gdb ") && !step.command.contains(" -batch") {
        let server = server
            .as_ref()
            .unwrap_or_else(|| panic!("`{}`: no `--gdb PORT` example before it", step.command));
        return run_gdb(work, step, server);
    }
    if let Some(port) = gdb_port(&step.command) {
        let (started, said) = start_server(work, &step.command, &port);
        *server = Some(started);
        return said;
    }
    let out = work
        .shell(&step.command, Some(300))
        .output()
        .expect("run the example");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// `bash ci/test.sh` is what CI runs: `.ci/run` ends by running it. Running it from a test
/// would run this test again.
fn is_the_test_command(command: &str) -> bool {
    command == "bash ci/test.sh"
}

fn check_block(block: &Block) -> Vec<(PathBuf, Mismatch, String)> {
    if block.nested_only && !nested_kvm() {
        println!(
            "{}:{}: output shown is the nested kvm_pvm host's; not compared on this host",
            relative(&block.file),
            block.steps.first().map_or(0, |s| s.line)
        );
        return Vec::new();
    }
    let work = Workdir::new();
    let mut server = None;
    let mut problems = Vec::new();
    for step in &block.steps {
        if is_the_test_command(&step.command) {
            let ci = std::fs::read_to_string(common::repo_root().join(".ci/run")).unwrap();
            assert!(
                ci.lines().any(|l| l.trim() == "exec bash ci/test.sh"),
                "{}:{}: .ci/run no longer runs `bash ci/test.sh`",
                block.file.display(),
                step.line
            );
            continue;
        }
        let actual = output_of(&work, step, &mut server);
        for mismatch in compare(&step.expected, &actual) {
            problems.push((block.file.clone(), mismatch, actual.clone()));
        }
    }
    problems
}

fn relative(file: &Path) -> String {
    file.strip_prefix(common::repo_root())
        .unwrap_or(file)
        .display()
        .to_string()
}

/// Writes the renumbered lines back into the docs.
fn update(problems: &[(PathBuf, Mismatch, String)]) {
    let files: BTreeSet<&PathBuf> = problems.iter().map(|(f, _, _)| f).collect();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap();
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        for (_, mismatch, _) in problems.iter().filter(|(f, _, _)| f == file) {
            if let Some(new) = &mismatch.replacement {
                lines[mismatch.line - 1] = new.clone();
            }
        }
        std::fs::write(file, lines.join("\n") + "\n").unwrap();
    }
}

#[test]
fn every_console_example_prints_what_the_docs_say() {
    let blocks: Vec<Block> = doc_files().iter().flat_map(|f| console_blocks(f)).collect();
    assert!(
        blocks.len() >= 8,
        "found only {} console blocks",
        blocks.len()
    );
    let needs_kvm = blocks.iter().any(|b| {
        b.steps
            .iter()
            .any(|s| s.command.contains("vmm-host") && !s.command.contains("--list"))
    });
    if needs_kvm
        && (common::kvm_or_skip("docs_examples").is_none()
            || common::program_or_skip("docs_examples", "gdb", "gdb").is_none()
            || common::program_or_skip("docs_examples", "qemu-system-x86_64", "qemu-system-x86")
                .is_none())
    {
        return;
    }
    // Two blocks at a time: most examples boot a VM, and the machine has two cores.
    let problems: Vec<(PathBuf, Mismatch, String)> = std::thread::scope(|scope| {
        let chunks: Vec<Vec<&Block>> = (0..2)
            .map(|k| blocks.iter().skip(k).step_by(2).collect())
            .collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                scope.spawn(move || chunk.into_iter().flat_map(check_block).collect::<Vec<_>>())
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a docs checker panicked"))
            .collect::<Vec<_>>()
    });
    if problems.is_empty() {
        return;
    }
    if std::env::var("VMM_DOCS_UPDATE").is_ok_and(|v| v == "1") {
        update(&problems);
    }
    let mut report = String::new();
    for (file, m, actual) in &problems {
        report.push_str(&format!(
            "{}:{}: the docs say\n    {}\n  {}\n",
            relative(file),
            m.line,
            m.expected,
            match &m.replacement {
                Some(new) => format!("only numbers moved; now:\n    {new}"),
                None => format!(
                    "no line of that shape in the output:\n{}",
                    actual
                        .lines()
                        .map(|l| format!("    | {l}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            }
        ));
    }
    let renumbered = problems
        .iter()
        .filter(|(_, m, _)| m.replacement.is_some())
        .count();
    panic!(
        "{} doc lines differ from what the commands print ({renumbered} only in numbers: \
         `VMM_DOCS_UPDATE=1 cargo test -p vmm-host --test docs` rewrites those; review the diff):\n{report}",
        problems.len()
    );
}

/// Any line of a fenced or indented code block that looks like a command must be in a
/// console block (run above) or the usage block (checked against --help below).
#[test]
fn every_command_example_is_a_tested_console_block() {
    let commands = ["cargo run", "vmm-host ", "gdb ", "qemu-system", "bash "];
    let mut untested = Vec::new();
    for file in doc_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut fenced: Option<String> = None;
        for (n, line) in text.lines().enumerate() {
            if let Some(info) = line.strip_prefix("```") {
                fenced = match fenced {
                    None => Some(info.trim().to_string()),
                    Some(_) => None,
                };
                continue;
            }
            let code = match &fenced {
                Some(info) if info == "console" || info == NESTED || info == "usage" => continue,
                Some(_) => Some(line),
                None => line.strip_prefix("    ").filter(|l| !l.starts_with(' ')),
            };
            let Some(code) = code else { continue };
            let code = code.trim_start_matches("$ ");
            if commands.iter().any(|c| code.starts_with(c)) {
                untested.push(format!("{}:{}: {code}", relative(&file), n + 1));
            }
        }
    }
    assert!(
        untested.is_empty(),
        "command examples outside ```console blocks, so no test runs them:\n{}",
        untested.join("\n")
    );
}

/// The flags of one synopsis or `--help` text.
fn flags(text: &str) -> BTreeSet<String> {
    flags_in_order(text).collect()
}

fn flags_in_order(text: &str) -> impl Iterator<Item = String> {
    Regex::new(r"(?:^|[\s\[|])(--[a-z][a-z0-9-]*|-[a-zA-Z])\b")
        .unwrap()
        .captures_iter(text)
        .map(|c| c[1].to_string())
        .filter(|f| !["--help", "--version", "-h", "-V"].contains(&f.as_str()))
        .collect::<Vec<_>>()
        .into_iter()
}

/// The flags a `--help` text defines: the first flag of each option line (the short form
/// where there is one), not the ones its descriptions mention.
fn defined_flags(help: &str) -> BTreeSet<String> {
    help.lines()
        .filter(|l| l.trim_start().starts_with('-'))
        .filter_map(|l| flags_in_order(l).next())
        .collect()
}

#[test]
fn the_usage_synopsis_lists_exactly_the_flags_of_each_command() {
    let readme = std::fs::read_to_string(common::repo_root().join("README.md")).unwrap();
    let usage = fences(&readme)
        .into_iter()
        .find(|(info, _, _)| info == "usage")
        .expect("README.md has a ```usage block")
        .2;
    let global = defined_flags(&common::vmm(&["--help"]).stdout);
    for command in ["run", "scenario", "report", "doctor"] {
        let prefix = format!("vmm-host {command}");
        // The synopsis lines of this command: its own lines and their continuations.
        let mut mine = String::new();
        let mut inside = false;
        for line in &usage {
            if line.starts_with("vmm-host ") {
                inside = line.starts_with(&prefix);
            }
            if inside {
                mine.push_str(line);
                mine.push('\n');
            }
        }
        let help = common::vmm(&[command, "--help"]);
        assert_eq!(help.status, 0, "{}", help.stderr);
        let documented = flags(&mine);
        let real: BTreeSet<String> = defined_flags(&help.stdout)
            .difference(&global)
            .cloned()
            .collect();
        assert_eq!(
            documented, real,
            "README's synopsis of `{prefix}` against its --help"
        );
    }
}

#[test]
fn the_matcher_reports_moved_numbers_and_renumbers_them() {
    let expected = vec![
        (1, "header".to_string()),
        (2, "…".to_string()),
        (
            3,
            "PT   [200]  table 0x000035b000  entry 0x0  not present".to_string(),
        ),
        (4, "time … s".to_string()),
    ];
    let actual =
        "header\nnoise\nPT   [200]  table 0x000035c000  entry 0x0  not present\ntime 8.2 s\n";
    let mismatches = compare(&expected, actual);
    assert_eq!(mismatches.len(), 1, "{mismatches:?}");
    assert_eq!(mismatches[0].line, 3);
    assert_eq!(
        mismatches[0].replacement.as_deref(),
        Some("PT   [200]  table 0x000035c000  entry 0x0  not present")
    );
    assert!(compare(&expected[..2], actual).is_empty());
    // Runs keep their order, and a run's lines are consecutive.
    let swapped = vec![(1, "noise".to_string()), (2, "header".to_string())];
    let mismatches = compare(&swapped, actual);
    assert_eq!(mismatches.len(), 1, "{mismatches:?}");
    assert_eq!(mismatches[0].line, 2);
    let apart = vec![(1, "header".to_string()), (2, "time … s".to_string())];
    assert_eq!(compare(&apart, actual).len(), 1);
}

/// README's catalogue names every scenario, by name or as `prefix-*` (N) with the right N.
#[test]
fn the_readme_catalogue_counts_every_scenario() {
    let root = common::repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let names: Vec<String> = std::fs::read_dir(root.join("scenarios"))
        .unwrap()
        .filter_map(|e| {
            let path = e.ok()?.path();
            (path.extension()? == "toml").then(|| path.file_stem()?.to_str().map(String::from))?
        })
        .collect();
    let rows: Vec<&str> = readme.lines().filter(|l| l.starts_with("| `")).collect();
    let counted = Regex::new(r"^\| `([a-z0-9-]+)-\*` \((\d+)\)").unwrap();
    for row in &rows {
        if let Some(c) = counted.captures(row) {
            let prefix = format!("{}-", &c[1]);
            let real = names.iter().filter(|n| n.starts_with(&prefix)).count();
            assert_eq!(c[2].parse::<usize>().unwrap(), real, "README says: {row}");
        }
    }
    for name in &names {
        let named = rows.iter().any(|row| {
            row.contains(&format!("`{name}`"))
                || counted
                    .captures(row)
                    .is_some_and(|c| name.starts_with(&format!("{}-", &c[1])))
        });
        assert!(named, "README's scenario catalogue lacks `{name}`");
    }
}

/// The run statuses from 80 up: the code's, `--help`'s, README's and docs/exit-status.md's.
#[test]
fn exit_statuses_agree_everywhere() {
    use vmm_host::ending::status;
    let code: BTreeSet<i32> = [
        status::TRIPLE_FAULT,
        status::ENTRY_FAILURE,
        status::INTERNAL_ERROR,
        status::HALTED,
        status::TIMEOUT,
        status::HOST_ERROR,
        status::IDLE,
        status::KILLED,
        status::RESET,
        status::KEY_WAIT,
        status::REAL_MODE_EXCEPTION,
    ]
    .into_iter()
    .collect();
    let numbers = |text: &str, pattern: &str| -> BTreeSet<i32> {
        Regex::new(pattern)
            .unwrap()
            .captures_iter(text)
            .map(|c| c[1].parse().unwrap())
            .filter(|n| *n >= 80)
            .collect()
    };
    let root = common::repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let paragraph = readme
        .split("\n\n")
        .find(|p| p.starts_with("Exit statuses:"))
        .expect("README's exit statuses");
    let table = std::fs::read_to_string(root.join("docs/exit-status.md")).unwrap();
    let help = common::vmm(&["--help"]).stdout;
    assert_eq!(
        numbers(paragraph, r"\b(\d\d)\s"),
        code,
        "README: {paragraph}"
    );
    assert_eq!(
        numbers(&table, r"(?m)^\| (\d+) \|"),
        code,
        "docs/exit-status.md"
    );
    assert_eq!(
        numbers(&help, r"\b(\d\d)\s+[a-zA-Z]"),
        code,
        "--help: {help}"
    );
}

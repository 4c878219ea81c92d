//! A vmm-host serving gdb, and a raw remote-protocol client for packets gdb would never send.

pub use super::rsp::packet_bytes;
use super::vmm_host;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A vmm-host serving gdb on a free loopback port.
pub struct Host {
    child: Child,
    pub addr: String,
    stderr: mpsc::Receiver<String>,
}

impl Host {
    pub fn start(cmdline: &str, extra: &[&str]) -> Self {
        let mut child = vmm_host()
            .args(["run", "--mem", "256M", "--quiet", "--cmdline", cmdline])
            .args(["--gdb", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vmm-host");
        let (lines, stderr) = mpsc::channel();
        let reader = BufReader::new(child.stderr.take().expect("stderr"));
        std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let mut seen = Vec::new();
        let addr = loop {
            let line = stderr
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("vmm-host never said where gdb connects: {seen:?}"));
            if let Some((_, rest)) = line.split_once("target remote ") {
                break rest.trim_end_matches(['`', ')']).to_string();
            }
            seen.push(line);
        };
        Self {
            child,
            addr,
            stderr,
        }
    }

    /// Run gdb in batch mode against this host with the kernel's symbols.
    pub fn gdb(&self, commands: &[&str]) -> String {
        gdb_at(&self.addr, commands)
    }

    /// Wait for the host to end; its exit status, stdout and the rest of stderr.
    pub fn finish(mut self) -> (i32, String, String) {
        let mut stdout = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            let _ = out.read_to_string(&mut stdout);
        }
        let status = self.child.wait().expect("wait").code().unwrap_or(-1);
        let stderr: Vec<String> = self.stderr.try_iter().collect();
        (status, stdout, stderr.join("\n"))
    }
}

/// One packet with its checksum.
pub fn packet(body: &str) -> String {
    String::from_utf8_lossy(&packet_bytes(body.as_bytes())).into_owned()
}

pub fn exchange(stream: &mut TcpStream, raw: &str) -> String {
    stream.write_all(raw.as_bytes()).expect("send");
    let mut reply = Vec::new();
    let mut byte = [0u8];
    // Read up to the end of one reply packet (or a lone nack).
    loop {
        stream.read_exact(&mut byte).expect("a reply");
        reply.push(byte[0]);
        if byte[0] == b'-' && reply.len() == 1 {
            break;
        }
        let n = reply.len();
        if n >= 3 && reply[n - 3] == b'#' {
            break;
        }
    }
    String::from_utf8_lossy(&reply).into_owned()
}

/// QEMU (TCG) holding the same kernel at its first instruction, its gdbstub on a free port:
/// the oracle for what gdb sees. Killed when dropped.
pub struct Qemu {
    child: Child,
    pub addr: String,
}

impl Qemu {
    pub fn start(cmdline: &str, mem: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("qemu-system-x86_64")
            .args(["-accel", "tcg", "-display", "none", "-no-reboot"])
            .args([
                "-net", "none", "-m", mem, "-serial", "null", "-monitor", "none",
            ])
            .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
            .args(["-kernel", crate::common::guest_kernel(), "-append", cmdline])
            .args(["-S", "-gdb", &format!("tcp:127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn qemu-system-x86_64");
        let addr = format!("127.0.0.1:{port}");
        // QEMU listens once its machine is built: wait for the port, at most 30 s.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(&addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "QEMU's gdbstub never listened on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, addr }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// gdb in batch mode against any stub at `addr`, with the kernel's symbols.
pub fn gdb_at(addr: &str, commands: &[&str]) -> String {
    gdb_with(
        addr,
        &[&format!("file {}", crate::common::guest_kernel())],
        commands,
    )
}

/// gdb in batch mode: `setup` before it connects to `addr` (the symbol file, the
/// architecture), then `commands`.
pub fn gdb_with(addr: &str, setup: &[&str], commands: &[&str]) -> String {
    let mut cmd = Command::new("timeout");
    cmd.args(["120", "gdb", "-batch", "-nx"]).args([
        "-ex",
        "set confirm off",
        "-ex",
        "set pagination off",
    ]);
    for s in setup {
        cmd.args(["-ex", s]);
    }
    cmd.args(["-ex", &format!("target remote {addr}")]);
    for c in commands {
        cmd.args(["-ex", c]);
    }
    let out = cmd.output().expect("run gdb");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

//! The gdb connection: frames packets before gdbstub sees them, so a hostile or broken client
//! cannot end the session. Bad checksums get `-`, over-long packets an error reply, a `-`
//! from gdb a retransmission; QEMU's `Qqemu.PhyMemMode` packet is answered here because
//! gdbstub has no hook for unknown packets.

use gdbstub::conn::{Connection, ConnectionExt};
use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Largest packet accepted, and the size gdbstub advertises (`PacketSize`).
pub const PACKET_SIZE: usize = 0x2_0000;

#[derive(Debug)]
pub struct GdbConnection {
    reader: BufReader<TcpStream>,
    /// gdbstub writes a packet byte by byte and flushes at its end: one segment per packet.
    writer: BufWriter<TcpStream>,
    /// Bytes framed and ready for gdbstub.
    ready: VecDeque<u8>,
    /// The last packet sent, for a retransmission when gdb answers `-`.
    last_sent: Vec<u8>,
    sending: Vec<u8>,
    no_ack: bool,
    /// gdbstub acknowledged the packet it was given last.
    acked: bool,
    /// QEMU's physical-memory mode, shared with the target.
    physical: Arc<AtomicBool>,
    pub stats: ConnectionStats,
    /// How long a read busy-waits for gdb's next packet before it sleeps.
    spin_window: Duration,
}

/// gdb's next request usually follows a reply within a tenth of a millisecond while it
/// steps or reads memory. A thread that sleeps for it pays a wake-up, which on a nested
/// KVM is an IPI through the outer hypervisor: sleeping cost a third of every `stepi`
/// (4,100 against 6,800 steps/s here). So a read first polls the socket for this long.
/// A person typing costs one window per command.
const SPIN_WINDOW: Duration = Duration::from_micros(200);

/// No busy-wait on one CPU: it would hold the CPU gdb needs to answer.
fn spin_window() -> Duration {
    match std::thread::available_parallelism() {
        Ok(cpus) if cpus.get() > 1 => SPIN_WINDOW,
        _ => Duration::ZERO,
    }
}

/// Poll `fd` without sleeping until it has data (or a hang-up) or `window` has passed.
fn spin_until_readable(fd: RawFd, window: Duration) {
    let started = Instant::now();
    let mut byte = 0u8;
    while started.elapsed() < window {
        // SAFETY: a one-byte peek into a local; MSG_DONTWAIT never blocks, and the fd is
        // the connection's own socket, open for as long as `self`.
        let seen = unsafe {
            libc::recv(
                fd,
                (&raw mut byte).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if seen >= 0 {
            return;
        }
        std::hint::spin_loop();
    }
}

/// What the framing threw away.
#[derive(Debug, Default, Clone, Copy)]
pub struct ConnectionStats {
    pub bad_checksums: u64,
    pub oversized: u64,
    pub retransmits: u64,
}

impl GdbConnection {
    pub fn new(stream: TcpStream, physical: Arc<AtomicBool>) -> io::Result<Self> {
        stream.set_nodelay(true)?;
        Ok(Self {
            reader: BufReader::with_capacity(PACKET_SIZE, stream.try_clone()?),
            writer: BufWriter::with_capacity(2 * PACKET_SIZE, stream),
            ready: VecDeque::new(),
            last_sent: Vec::new(),
            sending: Vec::new(),
            no_ack: false,
            acked: false,
            physical,
            stats: ConnectionStats::default(),
            spin_window: spin_window(),
        })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.reader.get_ref().as_raw_fd()
    }

    /// Whether bytes from gdb are already buffered (polling the socket would not see them).
    pub fn has_pending(&self) -> bool {
        !self.ready.is_empty() || !self.reader.buffer().is_empty()
    }

    fn next_byte(&mut self) -> io::Result<u8> {
        if self.spin_window > Duration::ZERO && self.reader.buffer().is_empty() {
            spin_until_readable(self.raw_fd(), self.spin_window);
        }
        loop {
            let buf = match self.reader.fill_buf() {
                Ok(buf) => buf,
                // A kick meant for KVM_RUN can land here: it is not an error.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let Some(&byte) = buf.first() else {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "gdb closed the connection",
                ));
            };
            self.reader.consume(1);
            return Ok(byte);
        }
    }

    /// Send whatever gdbstub wrote and did not flush (an ack before a long resume).
    pub fn flush_pending(&mut self) -> io::Result<()> {
        Write::flush(&mut self.writer)
    }

    /// Read until one unit for gdbstub is ready (a packet, an interrupt) or handled here.
    fn frame(&mut self) -> io::Result<()> {
        if self.ready.is_empty() {
            self.flush_pending()?;
        }
        while self.ready.is_empty() {
            match self.next_byte()? {
                b'$' => self.packet()?,
                0x03 => self.ready.push_back(0x03),
                b'-' => {
                    self.stats.retransmits += 1;
                    let again = self.last_sent.clone();
                    self.send_raw(&again)?;
                }
                // Acks carry nothing gdbstub needs; anything else between packets is noise.
                _ => {}
            }
        }
        Ok(())
    }

    fn packet(&mut self) -> io::Result<()> {
        let mut body = Vec::new();
        let mut oversized = false;
        loop {
            match self.next_byte()? {
                b'#' => break,
                byte if body.len() < PACKET_SIZE - 4 => body.push(byte),
                _ => oversized = true,
            }
        }
        let checksum = [self.next_byte()?, self.next_byte()?];
        let expected = std::str::from_utf8(&checksum)
            .ok()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        let sum = body.iter().fold(0u8, |s, &b| s.wrapping_add(b));
        if oversized {
            self.stats.oversized += 1;
            self.ack()?;
            return self.reply(b"E16");
        }
        if expected != Some(sum) {
            self.stats.bad_checksums += 1;
            if !self.no_ack {
                self.send_raw(b"-")?;
            }
            return Ok(());
        }
        if let Some(rest) = body.strip_prefix(b"Qqemu.PhyMemMode:") {
            self.ack()?;
            return match rest {
                b"0" | b"1" => {
                    self.physical.store(rest == b"1", Ordering::SeqCst);
                    self.reply(b"OK")
                }
                _ => self.reply(b"E22"),
            };
        }
        if body == b"qqemu.PhyMemMode" {
            self.ack()?;
            let mode = if self.physical.load(Ordering::SeqCst) {
                b"1"
            } else {
                b"0"
            };
            return self.reply(mode);
        }
        if too_long_read(&body) {
            // gdbstub would loop over the whole length; QEMU refuses such reads the same way.
            self.stats.oversized += 1;
            self.ack()?;
            return self.reply(b"E22");
        }
        if body == b"QStartNoAckMode" {
            // gdb acks gdbstub's OK to this, then neither side acks again.
            self.no_ack = true;
        }
        self.acked = false;
        self.ready.push_back(b'$');
        self.ready.extend(body);
        self.ready.push_back(b'#');
        self.ready.extend(checksum);
        Ok(())
    }

    /// Answer a packet gdbstub could not parse: acknowledged, and refused with an error.
    pub fn refuse_unparsed(&mut self) -> io::Result<()> {
        if !self.acked {
            self.ack()?;
        }
        self.reply(b"E01")
    }

    fn ack(&mut self) -> io::Result<()> {
        if self.no_ack {
            Ok(())
        } else {
            self.send_raw(b"+")
        }
    }

    fn reply(&mut self, body: &[u8]) -> io::Result<()> {
        let sum = body.iter().fold(0u8, |s, &b| s.wrapping_add(b));
        let mut packet = Vec::with_capacity(body.len() + 4);
        packet.push(b'$');
        packet.extend_from_slice(body);
        packet.extend_from_slice(format!("#{sum:02x}").as_bytes());
        self.last_sent.clone_from(&packet);
        self.send_raw(&packet)
    }

    fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        Write::write_all(&mut self.writer, bytes)?;
        Write::flush(&mut self.writer)
    }

    /// Remember what gdbstub sends, packet by packet, for retransmission.
    fn track_sent(&mut self, bytes: &[u8]) {
        if bytes == b"+" {
            self.acked = true;
            return;
        }
        for &byte in bytes {
            if byte == b'$' {
                self.sending.clear();
            }
            self.sending.push(byte);
        }
        let n = self.sending.len();
        if n >= 3 && self.sending[0] == b'$' && self.sending[n - 3] == b'#' {
            self.last_sent = std::mem::take(&mut self.sending);
        }
    }
}

/// An `m ADDR,LEN` asking for more than a packet holds: gdb never does (it reads at most
/// PacketSize bytes at a time), and gdbstub would loop over any length it is given.
fn too_long_read(body: &[u8]) -> bool {
    let Some(args) = body.strip_prefix(b"m") else {
        return false;
    };
    let Some(len) = args.split(|&b| b == b',').nth(1) else {
        return false;
    };
    let len = std::str::from_utf8(len)
        .ok()
        .and_then(|hex| u64::from_str_radix(hex, 16).ok());
    len.is_none_or(|len| len > PACKET_SIZE as u64)
}

/// A borrowed connection, so the session can outlive one gdbstub instance: a packet gdbstub
/// cannot parse ends that instance, not the session.
#[derive(Debug)]
pub struct GdbLink<'c>(pub &'c mut GdbConnection);

impl Connection for GdbLink<'_> {
    type Error = io::Error;

    fn write(&mut self, byte: u8) -> io::Result<()> {
        Connection::write(self.0, byte)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        Connection::write_all(self.0, buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Connection::flush(self.0)
    }
}

impl ConnectionExt for GdbLink<'_> {
    fn read(&mut self) -> io::Result<u8> {
        ConnectionExt::read(self.0)
    }

    fn peek(&mut self) -> io::Result<Option<u8>> {
        ConnectionExt::peek(self.0)
    }
}

impl Connection for GdbConnection {
    type Error = io::Error;

    fn write(&mut self, byte: u8) -> io::Result<()> {
        self.track_sent(&[byte]);
        Write::write_all(&mut self.writer, &[byte])
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.track_sent(buf);
        Write::write_all(&mut self.writer, buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Write::flush(&mut self.writer)
    }
}

impl ConnectionExt for GdbConnection {
    fn read(&mut self) -> io::Result<u8> {
        self.frame()?;
        self.ready
            .pop_front()
            .ok_or_else(|| io::Error::other("framing produced nothing"))
    }

    fn peek(&mut self) -> io::Result<Option<u8>> {
        if let Some(&byte) = self.ready.front() {
            return Ok(Some(byte));
        }
        let mut one = [0u8];
        let stream = self.reader.get_ref();
        stream.set_nonblocking(true)?;
        let peeked = stream.peek(&mut one);
        stream.set_nonblocking(false)?;
        match peeked {
            Ok(0) => Ok(None),
            Ok(_) => Ok(Some(one[0])),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    /// What the server sent, once it has closed its end.
    fn drain(stream: &mut TcpStream) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
        let _ = stream.read_to_end(&mut out);
        out
    }

    fn pair() -> (GdbConnection, TcpStream, Arc<AtomicBool>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let physical = Arc::new(AtomicBool::new(false));
        (
            GdbConnection::new(server, physical.clone()).unwrap(),
            client,
            physical,
        )
    }

    fn packet(body: &str) -> String {
        let sum = body.bytes().fold(0u8, |s, b| s.wrapping_add(b));
        format!("${body}#{sum:02x}")
    }

    #[test]
    fn good_packets_pass_through_and_bad_checksums_get_a_nack() {
        let (mut conn, mut client, _) = pair();
        Write::write_all(&mut client, b"+$g#00").unwrap();
        Write::write_all(&mut client, packet("g").as_bytes()).unwrap();
        let got: Vec<u8> = (0..5).map(|_| conn.read().unwrap()).collect();
        assert_eq!(got, b"$g#67");
        assert_eq!(conn.stats.bad_checksums, 1);
        drop(conn);
        assert_eq!(drain(&mut client), b"-");
    }

    #[test]
    fn qemus_physical_memory_mode_is_answered_here() {
        let (mut conn, mut client, physical) = pair();
        Write::write_all(&mut client, packet("Qqemu.PhyMemMode:1").as_bytes()).unwrap();
        Write::write_all(&mut client, packet("qqemu.PhyMemMode").as_bytes()).unwrap();
        Write::write_all(&mut client, packet("?").as_bytes()).unwrap();
        assert_eq!(conn.read().unwrap(), b'$');
        assert!(physical.load(Ordering::SeqCst));
        drop(conn);
        let answer = String::from_utf8(drain(&mut client)).unwrap();
        assert_eq!(answer, format!("+{}+{}", packet("OK"), packet("1")));
    }

    #[test]
    fn an_oversized_packet_is_refused_and_the_session_goes_on() {
        let (mut conn, mut client, _) = pair();
        let huge = "X".repeat(PACKET_SIZE * 2);
        Write::write_all(&mut client, packet(&huge).as_bytes()).unwrap();
        Write::write_all(&mut client, &[0x03]).unwrap();
        assert_eq!(conn.read().unwrap(), 0x03);
        assert_eq!(conn.stats.oversized, 1);
        drop(conn);
        assert_eq!(
            String::from_utf8(drain(&mut client)).unwrap(),
            format!("+{}", packet("E16"))
        );
    }

    #[test]
    fn a_read_longer_than_a_packet_is_refused_before_gdbstub_sees_it() {
        assert!(too_long_read(b"m0,ffffffffffffffff"));
        assert!(too_long_read(b"m0,zz"));
        assert!(!too_long_read(b"m100000,1000"));
        assert!(!too_long_read(b"M0,ffff:00"), "only reads");
    }

    #[test]
    fn a_nack_from_gdb_retransmits_the_last_packet() {
        let (mut conn, mut client, _) = pair();
        Connection::write_all(&mut conn, packet("S05").as_bytes()).unwrap();
        Write::write_all(&mut client, b"-").unwrap();
        Write::write_all(&mut client, &[0x03]).unwrap();
        assert_eq!(conn.read().unwrap(), 0x03);
        drop(conn);
        assert_eq!(
            String::from_utf8(drain(&mut client)).unwrap(),
            format!("{0}{0}", packet("S05"))
        );
    }

    #[test]
    fn a_closed_connection_is_an_error_not_a_hang() {
        let (mut conn, client, _) = pair();
        drop(client);
        assert!(conn.read().is_err());
    }
}

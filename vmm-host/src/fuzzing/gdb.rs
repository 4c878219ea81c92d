//! The gdb stub, over loopback TCP, against the fake VM of the stub's unit tests (no KVM): one
//! session kept across inputs, a new one when a packet ends it. Each input is packets, one
//! per line; after one input in four a probe writes a register and guest memory and reads both back.

use crate::gdb::fake::FakeVm;
use crate::gdb::{GdbServer, Layout, SessionEnd};
use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A stub that does not answer within this time is hung.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Packets taken from one input.
const MAX_PACKETS: usize = 32;

struct Session {
    client: TcpStream,
    /// The same socket, read through a buffer: a register dump is a thousand bytes.
    replies: BufReader<TcpStream>,
    served: JoinHandle<SessionEnd>,
}

static SESSION: Mutex<Option<Session>> = Mutex::new(None);

impl Session {
    fn start() -> Self {
        let server =
            GdbServer::bind("127.0.0.1:0".parse().expect("an address")).expect("a loopback port");
        let addr = server.local_addr();
        let served = std::thread::spawn(move || {
            let mut vm = FakeVm::new(0x8000);
            server
                .serve(&mut vm, true, Layout::default())
                .expect("a session")
        });
        let client = TcpStream::connect(addr).expect("connect to the stub");
        // Replies are polled for, as the stub polls for requests: a thread woken from a
        // blocking read costs about 50 us on this nested KVM, more than the stub's answer.
        client.set_nonblocking(true).expect("a non-blocking socket");
        let _ = client.set_nodelay(true);
        let replies = BufReader::new(client.try_clone().expect("a second handle on the socket"));
        Self {
            client,
            replies,
            served,
        }
    }

    /// Close the connection and wait for the stub: a panic in it is the fuzzer's finding.
    fn end(self) {
        drop(self.client);
        drop(self.replies);
        if let Err(panic) = self.served.join() {
            std::panic::resume_unwind(panic);
        }
    }

    /// The final reply to `body` (monitor output, `O…` packets, comes before it), or `None`
    /// when the stub closed the connection.
    fn ask(&mut self, body: &[u8]) -> Option<Vec<u8>> {
        let text = String::from_utf8_lossy(body);
        self.client.write_all(&framed(body)).ok()?;
        loop {
            match read_packet(&mut self.replies) {
                Ok(Some(reply)) if reply.first() == Some(&b'O') && reply != b"OK" => {}
                Ok(reply) => return reply,
                Err(why) => panic!("{text}: {why}"),
            }
        }
    }
}

/// `$body#checksum`.
fn framed(body: &[u8]) -> Vec<u8> {
    let sum = body.iter().fold(0u8, |s, &b| s.wrapping_add(b));
    let mut out = Vec::with_capacity(body.len() + 4);
    out.push(b'$');
    out.extend_from_slice(body);
    out.extend(format!("#{sum:02x}").bytes());
    out
}

fn byte(stream: &mut impl Read) -> Result<Option<u8>, String> {
    let mut b = [0u8];
    let started = Instant::now();
    loop {
        match stream.read(&mut b) {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(Some(b[0])),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(None),
            Err(e) if e.kind() == ErrorKind::WouldBlock && started.elapsed() < REPLY_TIMEOUT => {
                std::hint::spin_loop();
            }
            Err(e) => return Err(format!("no reply within {REPLY_TIMEOUT:?}: {e}")),
        }
    }
}

/// One packet from the stub, its checksum checked; acknowledgements skipped. `None` at the
/// connection's end.
fn read_packet(stream: &mut impl Read) -> Result<Option<Vec<u8>>, String> {
    loop {
        match byte(stream)? {
            None => return Ok(None),
            Some(b'$') => break,
            Some(b'+' | b'-') => {}
            Some(other) => return Err(format!("{other:#04x} outside a packet")),
        }
    }
    let mut body = Vec::new();
    loop {
        match byte(stream)? {
            None => return Err("the connection closed inside a packet".into()),
            Some(b'#') => break,
            Some(b) => body.push(b),
        }
    }
    let mut sum = [0u8; 2];
    for digit in &mut sum {
        *digit = byte(stream)?.ok_or("the connection closed inside a checksum")?;
    }
    let expected = body.iter().fold(0u8, |s, &b| s.wrapping_add(b));
    let given = std::str::from_utf8(&sum)
        .ok()
        .and_then(|s| u8::from_str_radix(s, 16).ok());
    if given != Some(expected) {
        return Err(format!(
            "bad checksum {:?} on {:?}",
            String::from_utf8_lossy(&sum),
            String::from_utf8_lossy(&body)
        ));
    }
    Ok(Some(body))
}

/// A packet that ends a session when the stub obeys it.
fn ends_session(body: &[u8]) -> bool {
    matches!(body.first(), Some(b'D' | b'k')) || body.starts_with(b"vKill")
}

/// Every packet gets a well-formed reply; the session ends only when a packet asks for it
/// or the guest's run ends; and (after one input in four) a register and guest RAM read back
/// what was just written to them, with no error reply to those valid requests.
pub fn gdb(data: &[u8]) {
    let mut slot = SESSION
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut session = slot.take().unwrap_or_else(Session::start);
    let packets = data
        .split(|&b| b == b'\n')
        .map(|p| {
            p.iter()
                .copied()
                .filter(|b| !b"$#}".contains(b))
                .collect::<Vec<u8>>()
        })
        .filter(|p| !p.is_empty())
        .take(MAX_PACKETS);
    let mut alive = true;
    for body in packets {
        let reply = session.ask(&body);
        let ended = match &reply {
            None => true,
            Some(reply) => matches!(reply.first(), Some(b'W' | b'X')),
        };
        if reply.is_none() {
            let text = String::from_utf8_lossy(&body);
            assert!(ends_session(&body), "the session ended on {text:?}");
        }
        if ended || ends_session(&body) && reply.as_deref() == Some(b"OK") {
            alive = false;
            break;
        }
    }
    // A probe is seven round trips, as many as a typical input's packets: one input in four
    // (by a hash of its bytes, so a crash replays the same) ends with one.
    if alive && hash(data).is_multiple_of(4) {
        probe(&mut session, data);
        *slot = Some(session);
    } else {
        session.end();
    }
}

fn hash(data: &[u8]) -> u32 {
    data.iter()
        .fold(0u32, |s, &b| s.wrapping_mul(31).wrapping_add(u32::from(b)))
}

/// Write RBX (gdb's register 1) and four bytes of physical RAM, and read both back.
fn probe(session: &mut Session, data: &[u8]) {
    let sum = hash(data) >> 2;
    let value = format!("{:016x}", u64::from(sum) * 0x9e37_79b9);
    let address = 0x1_0000 + u64::from(sum % 0x1_0000);
    let data_hex = format!("{:08x}", sum);
    let requests = [
        (b"Hgp1.1".to_vec(), None),
        (format!("P1={value}").into_bytes(), None),
        (b"p1".to_vec(), Some(value)),
        (b"Qqemu.PhyMemMode:1".to_vec(), None),
        (format!("M{address:x},4:{data_hex}").into_bytes(), None),
        (format!("m{address:x},4").into_bytes(), Some(data_hex)),
        (b"Qqemu.PhyMemMode:0".to_vec(), None),
    ];
    for (body, expected) in requests {
        let text = String::from_utf8_lossy(&body).into_owned();
        let Some(reply) = session.ask(&body) else {
            panic!("the session ended on the probe's {text:?}");
        };
        let reply = String::from_utf8_lossy(&run_length_decoded(&reply)).into_owned();
        match expected {
            None => assert_eq!(reply, "OK", "{text}"),
            Some(data) => assert!(
                reply.eq_ignore_ascii_case(&data),
                "{text}: read {reply:?} after writing {data:?}"
            ),
        }
    }
}

/// A reply with the protocol's run-length encoding undone: `X*c` is X and then `c - 29`
/// more copies of it.
fn run_length_decoded(reply: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(reply.len());
    let mut bytes = reply.iter();
    while let Some(&b) = bytes.next() {
        match (b, out.last().copied(), bytes.clone().next()) {
            (b'*', Some(last), Some(&count)) if count >= 29 => {
                bytes.next();
                out.extend(std::iter::repeat_n(last, usize::from(count - 29)));
            }
            _ => out.push(b),
        }
    }
    out
}

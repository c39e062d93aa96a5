//! Health checks of load balancer members, run by the agent of the host
//! where each member's port is (so a check never crosses an AZ).
//!
//! A check is a handful of frames written straight onto the member's tap
//! from its subnet's gateway address (the one address every VM reaches
//! on-link), with a source port in [`PROBE_PORTS`] (outside Linux's
//! ephemeral range, so replies are told apart by a socket filter): the
//! VM's answer is read by an AF_PACKET socket on the tap (`ETH_P_ALL`,
//! bound to the device: it sees the VM's frames before the port's TC
//! program, which drops what is addressed to the gateway, and only that
//! device's frames run its filter).
//! - `TCP`: SYN; a SYN-ACK is up (answered with a reset), a reset or
//!   silence is down.
//! - `HTTP`: the handshake, then `<method> <path> HTTP/1.0`; up when the
//!   status is one of `expected_codes`.
//! - `PING`: an ICMP echo; the reply is up.
//! - `UDP-CONNECT`: a datagram; an ICMP port unreachable is down, silence
//!   up (Octavia's meaning).
//!
//! A member goes up after `max_retries` successes in a row and down after
//! `max_retries_down` failures in a row (its first result counts at once
//! when it is a success). Changes are handed to a callback, which reports
//! them to the controller.

use std::{
    collections::BTreeMap,
    io,
    mem::size_of,
    os::fd::{AsRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use strato_lb::health::RiseFall;

use crate::sys::{bind_link, link_addr, packet_socket};

/// Source ports of checks (and so destination ports of the answers).
pub const PROBE_PORTS: std::ops::RangeInclusive<u16> =
    dataplane_common::maps::PROBE_PORT_MIN..=dataplane_common::maps::PROBE_PORT_MAX;
/// ICMP echo identifier of checks.
const PING_ID: u16 = 0x5354;

/// What a check sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Ping,
    Tcp,
    UdpConnect,
    Http {
        method: String,
        path: String,
        /// Inclusive ranges of healthy statuses.
        expected: Vec<(u16, u16)>,
    },
    /// The handshake, then a TLS ClientHello; up when the member answers
    /// with a ServerHello (TLS 1.2, or TLS 1.3's, a HelloRetryRequest
    /// included), down on an alert, a reset or silence. `HTTPS` monitors
    /// are this check: the prober has no TLS stack to send the HTTP
    /// request inside the session.
    TlsHello,
}

/// Octavia's `expected_codes` (`200`, `200,202`, `200-204`) as ranges;
/// `None` when malformed.
pub fn parse_expected(s: &str) -> Option<Vec<(u16, u16)>> {
    s.split(',')
        .map(|p| {
            let p = p.trim();
            match p.split_once('-') {
                Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
                None => {
                    let c = p.parse().ok()?;
                    Some((c, c))
                }
            }
        })
        .collect()
}

/// One member to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub member_id: String,
    /// The member port's tap (0: gone; every check fails).
    pub ifindex: u32,
    /// Its subnet's gateway: the check's source.
    pub src_ip: [u8; 4],
    pub src_mac: [u8; 6],
    pub dst_ip: [u8; 4],
    pub dst_mac: [u8; 6],
    pub port: u16,
    pub kind: Kind,
    pub delay: Duration,
    pub timeout: Duration,
    pub max_retries: u8,
    pub max_retries_down: u8,
}

/// Where a check is.
#[derive(Debug)]
enum Flight {
    /// SYN sent (TCP, HTTP) with this sequence number.
    Syn { seq: u32 },
    /// HTTP request sent; the response's first segment is awaited.
    Request,
    /// Echo request sent with this sequence number.
    Echo { seq: u16 },
    /// Datagram sent; an unreachable within the timeout is a failure.
    Datagram,
}

#[derive(Debug)]
struct Check {
    target: Target,
    sport: u16,
    next: Instant,
    flight: Option<(Flight, Instant)>,
    /// Results in a row, and the state they decided.
    health: RiseFall,
}

/// Where results go: every checked member's state (id, up).
pub type Report = Box<dyn Fn(Vec<(String, bool)>) + Send>;

/// The checker thread's handle: give it targets, stop it on drop.
pub struct Prober {
    targets: Arc<Mutex<Vec<Target>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Prober {
    /// Opens the socket and starts the thread; `report` gets every
    /// member's state whenever one changes (and every 10 s).
    pub fn spawn(report: Report) -> io::Result<Prober> {
        let targets: Arc<Mutex<Vec<Target>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (t, s) = (targets.clone(), stop.clone());
        std::thread::Builder::new()
            .name("lb-health".into())
            .spawn(move || run(t, s, report))?;
        Ok(Prober { targets, stop })
    }

    /// The members to check from now on.
    pub fn set(&self, targets: Vec<Target>) {
        *self.targets.lock().expect("targets lock poisoned") = targets;
    }
}

fn run(targets: Arc<Mutex<Vec<Target>>>, stop: Arc<AtomicBool>, report: Report) {
    let mut checks: BTreeMap<String, Check> = BTreeMap::new();
    let mut socks: BTreeMap<u32, Socket> = BTreeMap::new();
    let mut buf = vec![0u8; 4096];
    let mut last_report = Instant::now();
    let mut next_port = *PROBE_PORTS.start();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        // Targets: new ones start after a spread of their delay, changed
        // ones start over.
        {
            let want = targets.lock().expect("targets lock poisoned").clone();
            checks.retain(|k, c| want.iter().any(|t| &t.member_id == k && *t == c.target));
            for (i, t) in want.into_iter().enumerate() {
                if checks.contains_key(&t.member_id) {
                    continue;
                }
                let sport = next_port;
                next_port = if next_port >= *PROBE_PORTS.end() {
                    *PROBE_PORTS.start()
                } else {
                    next_port + 1
                };
                let next = now + Duration::from_millis(50 * (i as u64 % 20));
                checks.insert(t.member_id.clone(), Check::new(t, sport, next));
            }
        }
        // A socket per member tap (a vanished tap's goes).
        socks.retain(|i, _| checks.values().any(|c| c.target.ifindex == *i));
        for c in checks.values() {
            let i = c.target.ifindex;
            if i == 0 {
                continue;
            }
            if let std::collections::btree_map::Entry::Vacant(v) = socks.entry(i) {
                match Socket::open(i) {
                    Ok(sk) => {
                        v.insert(sk);
                    }
                    Err(e) => tracing::debug!(ifindex = i, error = %e, "no health check socket"),
                }
            }
        }
        let mut changed = false;
        for c in checks.values_mut() {
            if let Some((_, deadline)) = &c.flight {
                if now >= *deadline {
                    // Silence: a datagram not refused is up.
                    let ok = matches!(c.flight, Some((Flight::Datagram, _)));
                    c.flight = None;
                    changed |= c.result(ok);
                }
            }
            if c.flight.is_none() && now >= c.next {
                c.next = now + c.target.delay;
                let sent = match socks.get(&c.target.ifindex) {
                    Some(sock) => c.send_first(sock),
                    None => Err(io::Error::other("the member's tap is gone")),
                };
                match sent {
                    Ok(f) => c.flight = Some((f, now + c.target.timeout)),
                    Err(e) => {
                        tracing::debug!(member = %c.target.member_id, error = %e, "health check not sent");
                        changed |= c.result(false);
                    }
                }
            }
        }
        // Answers, for about 20 ms.
        let until = Instant::now() + Duration::from_millis(20);
        while Instant::now() < until {
            let mut got = false;
            for (&ifindex, sock) in &socks {
                while let Some(len) = sock.recv(&mut buf) {
                    got = true;
                    let frame = &buf[..len.min(buf.len())];
                    for c in checks.values_mut() {
                        if c.target.ifindex != ifindex || c.flight.is_none() {
                            continue;
                        }
                        if let Some(ok) = c.answer(sock, frame) {
                            c.flight = None;
                            changed |= c.result(ok);
                        }
                    }
                }
            }
            if !got {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        if changed || last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            let states: Vec<(String, bool)> = checks
                .iter()
                .filter_map(|(k, c)| c.health.up().map(|u| (k.clone(), u)))
                .collect();
            if !states.is_empty() || changed {
                report(states);
            }
        }
    }
}

impl Check {
    /// A target's check, first sent at `next`: unknown until its first
    /// result, then up or down by the target's rise and fall thresholds.
    fn new(target: Target, sport: u16, next: Instant) -> Check {
        Check {
            health: RiseFall::new(target.max_retries, target.max_retries_down),
            target,
            sport,
            next,
            flight: None,
        }
    }

    /// Counts a result; true when the member's state changed.
    fn result(&mut self, ok: bool) -> bool {
        let changed = self.health.record(ok);
        if changed {
            tracing::info!(
                member = %self.target.member_id,
                up = self.health.up().unwrap_or(false),
                "member health changed"
            );
        }
        changed
    }

    fn builder(&self) -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
        let t = &self.target;
        PacketBuilder::ethernet2(t.src_mac, t.dst_mac).ipv4(t.src_ip, t.dst_ip, 64)
    }

    fn send_first(&mut self, sock: &Socket) -> io::Result<Flight> {
        let t = self.target.clone();
        let mut frame = Vec::new();
        let flight = match &t.kind {
            Kind::Tcp | Kind::Http { .. } | Kind::TlsHello => {
                let seq: u32 = rand_u32();
                self.builder()
                    .tcp(self.sport, t.port, seq, 64240)
                    .syn()
                    .write(&mut frame, &[])
                    .map_err(io::Error::other)?;
                Flight::Syn { seq }
            }
            Kind::Ping => {
                let seq = (rand_u32() & 0xffff) as u16;
                self.builder()
                    .icmpv4_echo_request(PING_ID, seq)
                    .write(&mut frame, b"strato health check")
                    .map_err(io::Error::other)?;
                Flight::Echo { seq }
            }
            Kind::UdpConnect => {
                self.builder()
                    .udp(self.sport, t.port)
                    .write(&mut frame, b"strato health check")
                    .map_err(io::Error::other)?;
                Flight::Datagram
            }
        };
        sock.send(t.ifindex, &frame)?;
        Ok(flight)
    }

    /// The frame's verdict on the check in flight, if it is its answer.
    fn answer(&mut self, sock: &Socket, frame: &[u8]) -> Option<bool> {
        let p = SlicedPacket::from_ethernet(frame).ok()?;
        let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
            return None;
        };
        let h = ip.header();
        if h.destination() != self.target.src_ip {
            return None;
        }
        let from_member = h.source() == self.target.dst_ip;
        let (flight, _) = self.flight.as_ref()?;
        match (&p.transport, flight) {
            (Some(TransportSlice::Tcp(tcp)), Flight::Syn { seq }) if from_member => {
                if tcp.source_port() != self.target.port || tcp.destination_port() != self.sport {
                    return None;
                }
                if tcp.rst() {
                    return Some(false);
                }
                if !(tcp.syn() && tcp.ack() && tcp.acknowledgment_number() == seq.wrapping_add(1)) {
                    return None;
                }
                let (ours, theirs) = (seq.wrapping_add(1), tcp.sequence_number().wrapping_add(1));
                let req = match self.target.kind.clone() {
                    Kind::Http { method, path, .. } => Some(
                        format!(
                            "{method} {path} HTTP/1.0\r\nHost: {}\r\nUser-Agent: strato-health-check\r\n\r\n",
                            std::net::Ipv4Addr::from(self.target.dst_ip)
                        )
                        .into_bytes(),
                    ),
                    Kind::TlsHello => Some(client_hello(rand_u32())),
                    _ => None,
                };
                match req {
                    Some(req) => {
                        let mut f = Vec::new();
                        let ok = self
                            .builder()
                            .tcp(self.sport, self.target.port, ours, 64240)
                            .ack(theirs)
                            .psh()
                            .write(&mut f, &req)
                            .is_ok()
                            && sock.send(self.target.ifindex, &f).is_ok();
                        if !ok {
                            return Some(false);
                        }
                        if let Some((fl, _)) = self.flight.as_mut() {
                            *fl = Flight::Request;
                        }
                        None
                    }
                    None => {
                        self.reset(sock, ours);
                        Some(true)
                    }
                }
            }
            (Some(TransportSlice::Tcp(tcp)), Flight::Request) if from_member => {
                if tcp.source_port() != self.target.port || tcp.destination_port() != self.sport {
                    return None;
                }
                if tcp.rst() {
                    return Some(false);
                }
                let body = tcp.payload();
                if body.is_empty() {
                    return None;
                }
                self.reset(sock, tcp.acknowledgment_number());
                match &self.target.kind {
                    Kind::Http { expected, .. } => Some(
                        http_status(body)
                            .is_some_and(|c| expected.iter().any(|(a, b)| (*a..=*b).contains(&c))),
                    ),
                    Kind::TlsHello => Some(is_server_hello(body)),
                    _ => Some(false),
                }
            }
            (Some(TransportSlice::Icmpv4(icmp)), Flight::Echo { seq }) if from_member => {
                match icmp.icmp_type() {
                    etherparse::Icmpv4Type::EchoReply(e) if e.id == PING_ID && e.seq == *seq => {
                        Some(true)
                    }
                    _ => None,
                }
            }
            (Some(TransportSlice::Icmpv4(icmp)), Flight::Datagram) => {
                // An unreachable quoting our datagram (IPv4 header, then
                // the UDP source port).
                let etherparse::Icmpv4Type::DestinationUnreachable(_) = icmp.icmp_type() else {
                    return None;
                };
                let q = icmp.payload();
                let ihl = (*q.first()? as usize & 0x0f) * 4;
                let sport = u16::from_be_bytes([*q.get(ihl)?, *q.get(ihl + 1)?]);
                let dst: [u8; 4] = q.get(16..20)?.try_into().ok()?;
                (sport == self.sport && dst == self.target.dst_ip).then_some(false)
            }
            _ => None,
        }
    }

    /// Ends a check connection (the member must not keep it open).
    fn reset(&self, sock: &Socket, seq: u32) {
        let mut f = Vec::new();
        if self
            .builder()
            .tcp(self.sport, self.target.port, seq, 0)
            .rst()
            .write(&mut f, &[])
            .is_ok()
        {
            let _ = sock.send(self.target.ifindex, &f);
        }
    }
}

/// A TLS ClientHello record (offering TLS 1.3 and 1.2, AES-GCM and
/// ChaCha20 suites, P-256 and X25519, ECDSA and RSA signatures; no key
/// share, so a TLS 1.3 server answers with a HelloRetryRequest, which is a
/// ServerHello too). `seed` fills its random.
fn client_hello(seed: u32) -> Vec<u8> {
    let mut random = [0u8; 32];
    for (i, b) in random.iter_mut().enumerate() {
        *b = (seed.rotate_left(i as u32 * 5) >> (i % 4 * 8)) as u8;
    }
    let suites: [u16; 7] = [0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030];
    let mut ext = Vec::new();
    let mut put_ext = |ty: u16, body: &[u8]| {
        ext.extend(ty.to_be_bytes());
        ext.extend((body.len() as u16).to_be_bytes());
        ext.extend(body);
    };
    // supported_versions: TLS 1.3, 1.2.
    put_ext(0x002b, &[4, 0x03, 0x04, 0x03, 0x03]);
    // supported_groups: x25519, secp256r1.
    put_ext(0x000a, &[0, 4, 0x00, 0x1d, 0x00, 0x17]);
    // signature_algorithms: ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256,
    // rsa_pkcs1_sha256.
    put_ext(0x000d, &[0, 6, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01]);
    // ec_point_formats: uncompressed (TLS 1.2 ECDHE).
    put_ext(0x000b, &[1, 0]);
    // key_share: none offered (RFC 8446 4.2.8: the server asks for one
    // with a HelloRetryRequest).
    put_ext(0x0033, &[0, 0]);
    let mut hello = vec![0x03, 0x03];
    hello.extend(random);
    hello.push(0); // no session id
    hello.extend(((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        hello.extend(s.to_be_bytes());
    }
    hello.extend([1, 0]); // compression: null
    hello.extend((ext.len() as u16).to_be_bytes());
    hello.extend(ext);
    let mut hs = vec![1u8]; // ClientHello
    hs.extend(&(hello.len() as u32).to_be_bytes()[1..]);
    hs.extend(hello);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend((hs.len() as u16).to_be_bytes());
    rec.extend(hs);
    rec
}

/// Whether a member's first bytes are a TLS handshake record holding a
/// ServerHello.
fn is_server_hello(b: &[u8]) -> bool {
    b.len() >= 6 && b[0] == 0x16 && b[1] == 0x03 && b[5] == 2
}

/// The status code of an HTTP response's first line.
fn http_status(body: &[u8]) -> Option<u16> {
    let line = body.split(|&b| b == b'\r' || b == b'\n').next()?;
    let s = std::str::from_utf8(line).ok()?;
    let mut parts = s.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        return t ^ 0x9e37_79b9;
    }
    u32::from_ne_bytes(b)
}

/// An AF_PACKET socket on one tap, seeing only what may answer a check:
/// TCP or UDP to a [`PROBE_PORTS`] port, and ICMP.
struct Socket {
    fd: OwnedFd,
    ifindex: u32,
}

fn sock_filter() -> [libc::sock_filter; 14] {
    let op = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    let (lo, hi) = (*PROBE_PORTS.start() as u32, *PROBE_PORTS.end() as u32);
    [
        op(0x28, 0, 0, 12),          // ldh [12]           ethertype
        op(0x15, 0, 10, 0x0800),     // jeq #IPv4          else drop
        op(0x30, 0, 0, 23),          // ldb [23]           protocol
        op(0x15, 9, 0, 1),           // jeq #ICMP          accept
        op(0x15, 1, 0, 6),           // jeq #TCP           -> ports
        op(0x15, 0, 6, 17),          // jeq #UDP           else drop
        op(0x28, 0, 0, 20),          // ldh [20]           flags+fragment
        op(0x45, 4, 0, 0x1fff),      // jset #0x1fff       later fragment: drop
        op(0xb1, 0, 0, 14),          // ldxb 4*([14]&0xf)  IP header length
        op(0x48, 0, 0, 16),          // ldh [x + 16]       destination port
        op(0x35, 0, 1, lo),          // jge #lo            else drop
        op(0x25, 0, 1, hi),          // jgt #hi            drop, else accept
        op(0x06, 0, 0, 0),           // ret #0             drop
        op(0x06, 0, 0, 0x0004_0000), // ret #262144      accept
    ]
}

impl Socket {
    fn open(ifindex: u32) -> io::Result<Socket> {
        let fd = packet_socket(&mut sock_filter())?;
        let mut addr = link_addr(ifindex as i32, None);
        addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        bind_link(&fd, &addr)?;
        Ok(Socket { fd, ifindex })
    }

    fn send(&self, ifindex: u32, frame: &[u8]) -> io::Result<()> {
        debug_assert_eq!(ifindex, self.ifindex);
        let addr = link_addr(self.ifindex as i32, Some(frame_dst(frame)));
        // SAFETY: `frame` is readable for its length; `addr` a valid sockaddr_ll.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// One incoming frame's length, without waiting; `None` when there is
    /// none (our own outgoing frames are skipped).
    fn recv(&self, buf: &mut [u8]) -> Option<usize> {
        let mut addr = link_addr(0, None);
        let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `buf` writable for its length; `addr`/`len` a writable sockaddr_ll.
        let n = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC | libc::MSG_DONTWAIT,
                (&mut addr as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        if n < 0 {
            return None;
        }
        if addr.sll_pkttype == libc::PACKET_OUTGOING {
            return Some(0);
        }
        Some(n as usize)
    }
}

fn frame_dst(frame: &[u8]) -> [u8; 6] {
    let mut m = [0u8; 6];
    if frame.len() >= 6 {
        m.copy_from_slice(&frame[..6]);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_codes_as_octavia_writes_them() {
        assert_eq!(parse_expected("200"), Some(vec![(200, 200)]));
        assert_eq!(
            parse_expected("200,202"),
            Some(vec![(200, 200), (202, 202)])
        );
        assert_eq!(parse_expected("200-204"), Some(vec![(200, 204)]));
        assert_eq!(parse_expected("20x"), None);
        assert_eq!(parse_expected(""), None);
    }

    /// The ClientHello is one a real TLS server answers (openssl s_server
    /// on loopback), with a ServerHello; an alert or plain text is not one.
    #[test]
    fn tls_hello_is_answered_by_a_real_server() {
        assert!(!is_server_hello(b"HTTP/1.1 400 Bad Request"));
        assert!(
            !is_server_hello(&[0x15, 0x03, 0x03, 0, 2, 2, 40]),
            "an alert"
        );
        assert!(!is_server_hello(&[0x16, 0x03]), "truncated");
        let dir = std::env::temp_dir().join(format!("strato-probe-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let ok = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
            ])
            .args([
                "-keyout",
                "k.pem",
                "-out",
                "c.pem",
                "-days",
                "1",
                "-subj",
                "/CN=probe.test",
            ])
            .current_dir(&dir)
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("openssl missing: the live half of this test is skipped");
            return;
        }
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let mut server = std::process::Command::new("openssl")
            .args([
                "s_server", "-quiet", "-cert", "c.pem", "-key", "k.pem", "-accept",
            ])
            .arg(format!("127.0.0.1:{port}"))
            .current_dir(&dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl s_server");
        let mut answer = Vec::new();
        for _ in 0..50 {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                use std::io::{Read, Write};
                s.set_read_timeout(Some(Duration::from_secs(3)))
                    .expect("timeout");
                s.write_all(&client_hello(0x1234_5678)).expect("hello");
                let mut buf = [0u8; 64];
                let n = s.read(&mut buf).unwrap_or(0);
                answer = buf[..n].to_vec();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = server.kill();
        let _ = server.wait();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(is_server_hello(&answer), "answered with {answer:02x?}");
    }

    #[test]
    fn status_lines() {
        assert_eq!(http_status(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(http_status(b"HTTP/1.0 500 x"), Some(500));
        assert_eq!(http_status(b"SSH-2.0-OpenSSH"), None);
        assert_eq!(http_status(b""), None);
    }

    fn check(retries: u8, down: u8) -> Check {
        let target = Target {
            member_id: "m".into(),
            ifindex: 1,
            src_ip: [10, 0, 0, 1],
            src_mac: [2; 6],
            dst_ip: [10, 0, 0, 5],
            dst_mac: [4; 6],
            port: 80,
            kind: Kind::Tcp,
            delay: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            max_retries: retries,
            max_retries_down: down,
        };
        Check::new(target, 61_000, Instant::now())
    }

    /// The target's `max_retries` and `max_retries_down` decide (the
    /// counting itself is `strato_lb::health`'s, tested there).
    #[test]
    fn the_target_s_retries_decide_up_and_down() {
        let mut c = check(2, 3);
        assert!(c.result(true), "a first success counts at once");
        assert_eq!(c.health.up(), Some(true));
        assert!(!c.result(false));
        assert!(!c.result(false));
        assert!(c.result(false), "down after three failures in a row");
        assert_eq!(c.health.up(), Some(false));
        assert!(!c.result(true), "one success is not enough to come back");
        assert!(!c.result(false));
        assert!(!c.result(true));
        assert!(c.result(true), "two in a row are");
        assert_eq!(c.health.up(), Some(true));
    }
}

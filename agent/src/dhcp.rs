//! DHCPv4 server for VM ports, run by the per-host agent.
//!
//! Every VM port has exactly one static lease: its fixed address. The port's XDP program passes
//! DHCP requests (UDP to port 67) up to the host stack; [`Server`] receives them on one AF_PACKET
//! socket for all interfaces, finds the port's [`Lease`] by ingress interface index, and answers
//! with a whole Ethernet frame sent out of that same interface. [`respond`] is the protocol
//! (RFC 2131) as a pure function, frame in, frame out, so it is tested without root. This module
//! never allocates addresses, keeps no lease state and never answers for a MAC other than the
//! port's own.

use std::io;
use std::mem::size_of;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    DhcpMessageType, DhcpOpCode, DhcpOption, DhcpPacket, DhcpRepr, EthernetAddress, EthernetFrame,
    EthernetProtocol, EthernetRepr, IpProtocol, Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr,
    DHCP_CLIENT_PORT, DHCP_MAX_DNS_SERVER_COUNT, DHCP_SERVER_PORT, ETHERNET_HEADER_LEN,
    IPV4_HEADER_LEN, UDP_HEADER_LEN,
};

use crate::sys::{bind_link, link_addr, packet_socket, setsockopt};

/// The one address a port may have, and everything its DHCP replies carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The port's MAC; requests with another chaddr are ignored (anti-spoofing).
    pub client_mac: [u8; 6],
    /// The port's fixed address (yiaddr).
    pub ip: Ipv4Addr,
    /// Subnet mask option (1); values above 32 are treated as 32.
    pub prefix_len: u8,
    /// Router option (3); `None` sends no router option.
    pub gateway: Option<Ipv4Addr>,
    /// Server identifier (54) and IP source of replies: the subnet's gateway address.
    pub server_ip: Ipv4Addr,
    /// Ethernet source of replies: the router interface's MAC.
    pub server_mac: [u8; 6],
    /// Domain name servers (6); only the first three are sent.
    pub dns: Vec<Ipv4Addr>,
    /// Routes sent as classless static routes (121, RFC 3442), followed by the default route
    /// via `gateway`, because clients that take option 121 ignore option 3.
    pub routes: Vec<(ipnetwork::Ipv4Network, Ipv4Addr)>,
    /// Interface MTU option (26).
    pub mtu: u16,
    /// Lease time (51); T1 (58) is half of it, T2 (59) seven eighths.
    pub lease_secs: u32,
    /// Domain name option (15).
    pub domain_name: Option<String>,
}

/// What [`respond`] decided for one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The whole Ethernet frame to send out of the interface the request came in on.
    Reply(Vec<u8>),
    /// Nothing to send; the reason is a fixed string, fit for a counter label or a log field.
    Ignored(&'static str),
}

/// A frame that claims to be a DHCP request but is malformed, or a reply that cannot be built.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum DhcpError {
    #[error("frame of {len} bytes is shorter than an Ethernet header")]
    TruncatedEthernet { len: usize },
    #[error("malformed IPv4 header or total length ({len} bytes after the Ethernet header)")]
    MalformedIpv4 { len: usize },
    #[error("IPv4 header checksum does not verify")]
    Ipv4Checksum,
    #[error("malformed UDP header or length ({len} bytes after the IPv4 header)")]
    MalformedUdp { len: usize },
    #[error("UDP payload of {len} bytes to port 67 is shorter than a BOOTP message (240)")]
    TruncatedBootp { len: usize },
    #[error("reply would be {len} bytes of IPv4, more than 65535")]
    ReplyTooLarge { len: usize },
    #[error("could not emit the DHCP reply: options overflow the buffer")]
    Emit,
}

const MAGIC_COOKIE: u32 = 0x6382_5363;
/// RFC 1542: some BOOTP relays and clients drop messages shorter than 300 bytes.
const MIN_BOOTP_LEN: usize = 300;
const TTL: u8 = 64;
const BROADCAST_MAC: [u8; 6] = [0xff; 6];
const OPT_DOMAIN_NAME: u8 = 15;
const OPT_MTU: u8 = 26;
const OPT_REQUESTED_IP: u8 = 50;
const OPT_MESSAGE_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const OPT_MESSAGE: u8 = 56;
const OPT_T1: u8 = 58;
const OPT_T2: u8 = 59;
const OPT_CLIENT_ID: u8 = 61;
const OPT_CLASSLESS_ROUTES: u8 = 121;

/// The fields of a client message this server looks at.
struct Request {
    kind: DhcpMessageType,
    xid: u32,
    broadcast: bool,
    ciaddr: Ipv4Addr,
    giaddr: Ipv4Addr,
    chaddr: [u8; 6],
    requested_ip: Option<Ipv4Addr>,
    server_id: Option<Ipv4Addr>,
    client_id: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Offer,
    Ack,
    Nak,
    /// DHCPACK to a DHCPINFORM: configuration only, no address, no lease time.
    InformAck,
}

/// Why a frame gets no reply: not ours to answer, or broken.
enum Reject {
    Ignore(&'static str),
    Malformed(DhcpError),
}

impl From<DhcpError> for Reject {
    fn from(err: DhcpError) -> Self {
        Reject::Malformed(err)
    }
}

/// Answers one received Ethernet frame for the port that owns `lease`: at most one reply.
pub fn respond(frame: &[u8], lease: &Lease) -> Result<Outcome, DhcpError> {
    let answer = parse_request(frame, lease).and_then(|req| {
        let answer = decide(&req, lease)?;
        Ok(build_reply(&req, answer, lease)?)
    });
    match answer {
        Ok(reply) => Ok(Outcome::Reply(reply)),
        Err(Reject::Ignore(reason)) => Ok(Outcome::Ignored(reason)),
        Err(Reject::Malformed(err)) => Err(err),
    }
}

fn parse_request(frame: &[u8], lease: &Lease) -> Result<Request, Reject> {
    let eth = EthernetFrame::new_checked(frame)
        .map_err(|_| DhcpError::TruncatedEthernet { len: frame.len() })?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return Err(Reject::Ignore("not IPv4"));
    }
    let l3 = eth.payload();
    let ip = Ipv4Packet::new_checked(l3).map_err(|_| DhcpError::MalformedIpv4 { len: l3.len() })?;
    if ip.version() != 4 || usize::from(ip.header_len()) < IPV4_HEADER_LEN {
        return Err(DhcpError::MalformedIpv4 { len: l3.len() }.into());
    }
    if !ip.verify_checksum() {
        return Err(DhcpError::Ipv4Checksum.into());
    }
    if ip.more_frags() || ip.frag_offset() != 0 {
        return Err(Reject::Ignore("IPv4 fragment"));
    }
    if ip.next_header() != IpProtocol::Udp {
        return Err(Reject::Ignore("not UDP"));
    }
    // The UDP checksum is deliberately not verified: frames from a tap may still carry a partial
    // (offloaded) checksum, and every real DHCP client fills it in anyway.
    let l4 = ip.payload();
    let udp = UdpPacket::new_checked(l4).map_err(|_| DhcpError::MalformedUdp { len: l4.len() })?;
    if udp.dst_port() != DHCP_SERVER_PORT {
        return Err(Reject::Ignore("not UDP port 67"));
    }
    let bootp = udp.payload();
    let dhcp = DhcpPacket::new_checked(bootp)
        .map_err(|_| DhcpError::TruncatedBootp { len: bootp.len() })?;
    if dhcp.opcode() != DhcpOpCode::Request {
        return Err(Reject::Ignore("not a BOOTREQUEST"));
    }
    // htype is not exposed as a raw byte by smoltcp; new_checked guaranteed 240 bytes.
    if bootp[1] != 1 || dhcp.hardware_len() != 6 {
        return Err(Reject::Ignore("hardware type is not Ethernet"));
    }
    if dhcp.magic_number() != MAGIC_COOKIE {
        return Err(Reject::Ignore("no DHCP magic cookie"));
    }
    let chaddr = dhcp.client_hardware_address().0;
    if chaddr != lease.client_mac {
        return Err(Reject::Ignore("chaddr is not the port's MAC"));
    }
    let (mut kind, mut requested_ip, mut server_id, mut client_id) = (None, None, None, None);
    for opt in dhcp.options() {
        match (opt.kind, opt.data) {
            (OPT_MESSAGE_TYPE, &[t]) => kind = kind.or(Some(DhcpMessageType::from(t))),
            (OPT_REQUESTED_IP, &[a, b, c, d]) => requested_ip = Some(Ipv4Addr::new(a, b, c, d)),
            (OPT_SERVER_ID, &[a, b, c, d]) => server_id = Some(Ipv4Addr::new(a, b, c, d)),
            (OPT_CLIENT_ID, data) if !data.is_empty() => client_id = Some(data.to_vec()),
            _ => {}
        }
    }
    Ok(Request {
        kind: kind.ok_or(Reject::Ignore("no DHCP message type"))?,
        xid: dhcp.transaction_id(),
        broadcast: dhcp.flags().contains(smoltcp::wire::DhcpFlags::BROADCAST),
        ciaddr: dhcp.client_ip(),
        giaddr: dhcp.relay_agent_ip(),
        chaddr,
        requested_ip,
        server_id,
        client_id,
    })
}

/// RFC 2131 4.3: the server's side of the client state machine, for a single static lease.
fn decide(req: &Request, lease: &Lease) -> Result<Answer, Reject> {
    let ack_if = |ip: Option<Ipv4Addr>| {
        if ip == Some(lease.ip) {
            Answer::Ack
        } else {
            Answer::Nak
        }
    };
    let ciaddr = Some(req.ciaddr).filter(|ip| !ip.is_unspecified());
    match req.kind {
        DhcpMessageType::Discover => Ok(Answer::Offer),
        DhcpMessageType::Request => match (req.server_id, req.requested_ip) {
            (Some(id), _) if id != lease.server_ip => {
                Err(Reject::Ignore("request for another server"))
            }
            // SELECTING: the client chose our offer.
            (Some(_), requested) => Ok(ack_if(requested.or(ciaddr))),
            // INIT-REBOOT: the client verifies a remembered address.
            (None, Some(requested)) => Ok(ack_if(Some(requested))),
            // RENEWING or REBINDING: the client extends the address it holds.
            (None, None) if ciaddr.is_some() => Ok(ack_if(ciaddr)),
            (None, None) => Err(Reject::Ignore(
                "request without server id, address or ciaddr",
            )),
        },
        DhcpMessageType::Inform => Ok(Answer::InformAck),
        DhcpMessageType::Release => Err(Reject::Ignore("release")),
        DhcpMessageType::Decline => Err(Reject::Ignore("decline")),
        _ => Err(Reject::Ignore("not a client message type")),
    }
}

fn build_reply(req: &Request, answer: Answer, lease: &Lease) -> Result<Vec<u8>, DhcpError> {
    let grants = matches!(answer, Answer::Offer | Answer::Ack);
    let configures = answer != Answer::Nak;
    let mut extra: Vec<(u8, Vec<u8>)> = Vec::new();
    if let Some(id) = &req.client_id {
        extra.push((OPT_CLIENT_ID, id.clone())); // RFC 6842
    }
    if answer == Answer::Nak {
        extra.push((
            OPT_MESSAGE,
            b"requested address is not this port's address".to_vec(),
        ));
    } else {
        extra.push((OPT_MTU, lease.mtu.to_be_bytes().to_vec()));
    }
    if grants {
        let part = |num: u64, den: u64| (u64::from(lease.lease_secs) * num / den) as u32;
        extra.push((OPT_T1, part(1, 2).to_be_bytes().to_vec()));
        extra.push((OPT_T2, part(7, 8).to_be_bytes().to_vec()));
    }
    if configures && !lease.routes.is_empty() {
        push_long(&mut extra, OPT_CLASSLESS_ROUTES, &classless_routes(lease));
    }
    if let (true, Some(name)) = (configures, &lease.domain_name) {
        push_long(&mut extra, OPT_DOMAIN_NAME, name.as_bytes());
    }
    let additional: Vec<DhcpOption> = extra
        .iter()
        .map(|(kind, data)| DhcpOption { kind: *kind, data })
        .collect();

    let prefix = u32::from(lease.prefix_len.min(32));
    let mask = Ipv4Addr::from(u32::MAX.checked_shl(32 - prefix).unwrap_or(0));
    let message_type = match answer {
        Answer::Offer => DhcpMessageType::Offer,
        Answer::Ack | Answer::InformAck => DhcpMessageType::Ack,
        Answer::Nak => DhcpMessageType::Nak,
    };
    let yiaddr = if grants {
        lease.ip
    } else {
        Ipv4Addr::UNSPECIFIED
    };
    let ciaddr = match answer {
        Answer::Ack | Answer::InformAck => req.ciaddr,
        Answer::Offer | Answer::Nak => Ipv4Addr::UNSPECIFIED,
    };
    let mut repr = DhcpRepr {
        message_type,
        transaction_id: req.xid,
        secs: 0,
        client_hardware_address: EthernetAddress(req.chaddr),
        client_ip: ciaddr,
        your_ip: yiaddr,
        server_ip: Ipv4Addr::UNSPECIFIED,
        router: lease.gateway.filter(|_| configures),
        subnet_mask: Some(mask).filter(|_| configures),
        relay_agent_ip: req.giaddr,
        broadcast: req.broadcast,
        requested_ip: None,
        client_identifier: None,
        server_identifier: Some(lease.server_ip),
        parameter_request_list: None,
        dns_servers: None,
        max_size: None,
        lease_duration: Some(lease.lease_secs).filter(|_| grants),
        renew_duration: None, // smoltcp's emit ignores T1/T2; they travel in `additional`
        rebind_duration: None,
        additional_options: &additional,
    };
    if configures && !lease.dns.is_empty() {
        repr.dns_servers = Some(
            lease
                .dns
                .iter()
                .copied()
                .take(DHCP_MAX_DNS_SERVER_COUNT)
                .collect(),
        );
    }

    // RFC 2131 4.1: NAKs are broadcast; otherwise unicast to ciaddr if the client has one, else
    // to yiaddr at chaddr, unless the client asked for broadcast (it cannot receive unicast yet).
    let unicast = if req.ciaddr.is_unspecified() {
        yiaddr
    } else {
        req.ciaddr
    };
    let broadcast = answer == Answer::Nak || req.broadcast || unicast.is_unspecified();
    let (eth_dst, ip_dst) = if broadcast {
        (BROADCAST_MAC, Ipv4Addr::BROADCAST)
    } else {
        (req.chaddr, unicast)
    };
    let addressing = Addressing {
        eth_src: lease.server_mac,
        eth_dst,
        ip_src: lease.server_ip,
        ip_dst,
        src_port: DHCP_SERVER_PORT,
        dst_port: DHCP_CLIENT_PORT,
    };
    build_frame(&addressing, &repr)
}

/// RFC 3442 option 121: width, the significant octets of the destination, the router; the
/// default route via the gateway last, unless the lease already routes 0.0.0.0/0.
fn classless_routes(lease: &Lease) -> Vec<u8> {
    let has_default = lease.routes.iter().any(|(net, _)| net.prefix() == 0);
    let default = lease
        .gateway
        .filter(|_| !has_default)
        .map(|gw| (0, Ipv4Addr::UNSPECIFIED, gw));
    let routes = lease
        .routes
        .iter()
        .map(|(net, via)| (net.prefix().min(32), net.network(), *via));
    let mut out = Vec::new();
    for (width, dest, via) in routes.chain(default) {
        out.push(width);
        out.extend_from_slice(&dest.octets()[..usize::from(width.div_ceil(8))]);
        out.extend_from_slice(&via.octets());
    }
    out
}

/// RFC 3396: an option longer than 255 bytes is split into consecutive instances.
fn push_long(options: &mut Vec<(u8, Vec<u8>)>, kind: u8, data: &[u8]) {
    options.extend(data.chunks(255).map(|chunk| (kind, chunk.to_vec())));
}

struct Addressing {
    eth_src: [u8; 6],
    eth_dst: [u8; 6],
    ip_src: Ipv4Addr,
    ip_dst: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
}

/// Ethernet + IPv4 (TTL 64, no options) + UDP around a DHCP message, with both checksums.
fn build_frame(a: &Addressing, dhcp: &DhcpRepr) -> Result<Vec<u8>, DhcpError> {
    let dhcp_len = dhcp.buffer_len().max(MIN_BOOTP_LEN);
    let udp_len = UDP_HEADER_LEN + dhcp_len;
    let ip_len = IPV4_HEADER_LEN + udp_len;
    if ip_len > usize::from(u16::MAX) {
        return Err(DhcpError::ReplyTooLarge { len: ip_len });
    }
    let mut buf = vec![0u8; ETHERNET_HEADER_LEN + ip_len];
    let eth = EthernetRepr {
        src_addr: EthernetAddress(a.eth_src),
        dst_addr: EthernetAddress(a.eth_dst),
        ethertype: EthernetProtocol::Ipv4,
    };
    eth.emit(&mut EthernetFrame::new_unchecked(&mut buf[..]));
    let ip = Ipv4Repr {
        src_addr: a.ip_src,
        dst_addr: a.ip_dst,
        next_header: IpProtocol::Udp,
        payload_len: udp_len,
        hop_limit: TTL,
    };
    let caps = ChecksumCapabilities::default();
    ip.emit(
        &mut Ipv4Packet::new_unchecked(&mut buf[ETHERNET_HEADER_LEN..]),
        &caps,
    );
    let udp = UdpRepr {
        src_port: a.src_port,
        dst_port: a.dst_port,
    };
    let mut emitted = Ok(());
    udp.emit(
        &mut UdpPacket::new_unchecked(&mut buf[ETHERNET_HEADER_LEN + IPV4_HEADER_LEN..]),
        &a.ip_src.into(),
        &a.ip_dst.into(),
        dhcp_len,
        |payload| emitted = dhcp.emit(&mut DhcpPacket::new_unchecked(payload)),
        &caps,
    );
    emitted.map_err(|_| DhcpError::Emit)?;
    Ok(buf)
}

/// Counters of [`Server::serve`], readable while it runs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Frames received (our own outgoing replies excluded).
    pub received: u64,
    /// Replies sent.
    pub replied: u64,
    /// Frames not answered on purpose: no lease for the interface, or [`Outcome::Ignored`].
    pub ignored: u64,
    /// Malformed frames, truncated reads, failed sends and transient socket errors.
    pub errors: u64,
}

/// One AF_PACKET socket that serves DHCP on every interface of the current network namespace.
#[derive(Debug)]
pub struct Server {
    fd: OwnedFd,
    received: AtomicU64,
    replied: AtomicU64,
    ignored: AtomicU64,
    errors: AtomicU64,
}

const ETH_P_IP: u16 = libc::ETH_P_IP as u16;
const RECV_TIMEOUT_USEC: libc::suseconds_t = 200_000;

/// tcpdump -dd 'ip and udp dst port 67': IPv4, protocol UDP, not a non-first fragment,
/// destination port (behind a header of 4*IHL bytes) 67; accept the whole frame.
fn udp_dst_port_67_filter() -> [libc::sock_filter; 11] {
    let op = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    [
        op(0x28, 0, 0, 12),                          // ldh [12]            ethertype
        op(0x15, 0, 8, u32::from(ETH_P_IP)),         // jeq #0x800          else drop
        op(0x30, 0, 0, 23),                          // ldb [23]            IP protocol
        op(0x15, 0, 6, libc::IPPROTO_UDP as u32),    // jeq #17             else drop
        op(0x28, 0, 0, 20),                          // ldh [20]            flags+fragment
        op(0x45, 4, 0, 0x1fff),                      // jset #0x1fff        fragment: drop
        op(0xb1, 0, 0, 14),                          // ldxb 4*([14]&0xf)   IP header length
        op(0x48, 0, 0, 16),                          // ldh [x + 16]        UDP dst port
        op(0x15, 0, 1, u32::from(DHCP_SERVER_PORT)), // jeq #67             else drop
        op(0x06, 0, 0, 0x0004_0000),                 // ret #262144         accept
        op(0x06, 0, 0, 0),                           // ret #0              drop
    ]
}

impl Server {
    /// Opens an AF_PACKET socket on all interfaces of the current network namespace that sees
    /// only IPv4 UDP to port 67. Call it in the namespace the agent serves.
    pub fn open() -> io::Result<Server> {
        let fd = packet_socket(&mut udp_dst_port_67_filter())?;
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: RECV_TIMEOUT_USEC,
        };
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &timeout)?;
        let addr = link_addr(0, None);
        bind_link(&fd, &addr)?;
        Ok(Server {
            fd,
            received: AtomicU64::new(0),
            replied: AtomicU64::new(0),
            ignored: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        })
    }

    /// Serves until `stop` is true, checked at least every 200 ms. `lookup` maps an ingress
    /// interface index to the lease of the port behind it. Returns only on a socket error that
    /// is not transient.
    pub fn serve(
        &self,
        lookup: impl Fn(u32) -> Option<Lease>,
        stop: &AtomicBool,
    ) -> io::Result<()> {
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::Relaxed) {
            let Some((len, ifindex)) = self.recv(&mut buf)? else {
                continue;
            };
            self.received.fetch_add(1, Ordering::Relaxed);
            if len > buf.len() {
                self.errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(ifindex, len, "dhcp: oversized frame truncated, dropped");
                continue;
            }
            let Some(lease) = lookup(ifindex) else {
                self.ignored.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(ifindex, "dhcp: no lease for interface");
                continue;
            };
            match respond(&buf[..len], &lease) {
                Ok(Outcome::Reply(frame)) => match self.send(ifindex, &frame) {
                    Ok(()) => {
                        self.replied.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(ifindex, ip = %lease.ip, "dhcp: replied");
                    }
                    Err(err) => {
                        self.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(ifindex, error = %err, "dhcp: send failed");
                    }
                },
                Ok(Outcome::Ignored(reason)) => {
                    self.ignored.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(ifindex, reason, "dhcp: ignored");
                }
                Err(err) => {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(ifindex, error = %err, "dhcp: malformed request");
                }
            }
        }
        Ok(())
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        Stats {
            received: self.received.load(Ordering::Relaxed),
            replied: self.replied.load(Ordering::Relaxed),
            ignored: self.ignored.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }

    /// One incoming frame: its full length (may exceed `buf`) and ingress interface; `None` on
    /// timeout, interruption, our own outgoing frames and transient errors.
    fn recv(&self, buf: &mut [u8]) -> io::Result<Option<(usize, u32)>> {
        let mut addr = link_addr(0, None);
        let mut addr_len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `buf` is writable for its length; `addr`/`addr_len` describe a writable
        // sockaddr_ll. MSG_TRUNC makes the return value the frame's real length.
        let n = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC,
                (&mut addr as *mut libc::sockaddr_ll).cast(),
                &mut addr_len,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => Ok(None),
                Some(libc::ENETDOWN | libc::ENOBUFS | libc::ENOMEM) => {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %err, "dhcp: transient receive error");
                    Ok(None)
                }
                _ => Err(err),
            };
        }
        if addr.sll_pkttype == libc::PACKET_OUTGOING {
            return Ok(None);
        }
        Ok(Some((
            n as usize,
            u32::try_from(addr.sll_ifindex).unwrap_or(0),
        )))
    }

    fn send(&self, ifindex: u32, frame: &[u8]) -> io::Result<()> {
        let ifindex = i32::try_from(ifindex).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "interface index too large")
        })?;
        let mut dst = [0u8; 6];
        dst.copy_from_slice(&frame[..6]);
        let addr = link_addr(ifindex, Some(dst));
        // SAFETY: `frame` is readable for its length; `addr` is a valid sockaddr_ll of the
        // length passed.
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
        match n {
            n if n < 0 => Err(io::Error::last_os_error()),
            n if n as usize != frame.len() => Err(io::Error::other("short send")),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnetwork::Ipv4Network;
    use smoltcp::wire::IpAddress;

    const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
    const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
    const XID: u32 = 0x1234_5678;
    const IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
    const GW: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    fn net(s: &str) -> Ipv4Network {
        s.parse().expect("test network")
    }

    fn lease() -> Lease {
        Lease {
            client_mac: CLIENT_MAC,
            ip: IP,
            prefix_len: 24,
            gateway: Some(GW),
            server_ip: GW,
            server_mac: SERVER_MAC,
            dns: vec![Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(8, 8, 8, 8)],
            routes: vec![(net("10.1.0.0/16"), Ipv4Addr::new(10, 0, 0, 254))],
            mtu: 1450,
            lease_secs: 3600,
            domain_name: Some("vpc.internal".into()),
        }
    }

    /// A client message as a whole frame; `edit` adjusts the DHCP fields.
    fn client<'a>(kind: DhcpMessageType, edit: impl FnOnce(&mut DhcpRepr<'a>)) -> Vec<u8> {
        let mut repr = DhcpRepr {
            message_type: kind,
            transaction_id: XID,
            secs: 3,
            client_hardware_address: EthernetAddress(CLIENT_MAC),
            client_ip: Ipv4Addr::UNSPECIFIED,
            your_ip: Ipv4Addr::UNSPECIFIED,
            server_ip: Ipv4Addr::UNSPECIFIED,
            router: None,
            subnet_mask: None,
            relay_agent_ip: Ipv4Addr::UNSPECIFIED,
            broadcast: false,
            requested_ip: None,
            client_identifier: None,
            server_identifier: None,
            parameter_request_list: Some(&[1, 3, 6, 15, 26, 121]),
            dns_servers: None,
            max_size: Some(1500),
            lease_duration: None,
            renew_duration: None,
            rebind_duration: None,
            additional_options: &[],
        };
        edit(&mut repr);
        let addressing = Addressing {
            eth_src: CLIENT_MAC,
            eth_dst: BROADCAST_MAC,
            ip_src: repr.client_ip,
            ip_dst: Ipv4Addr::BROADCAST,
            src_port: DHCP_CLIENT_PORT,
            dst_port: DHCP_SERVER_PORT,
        };
        build_frame(&addressing, &repr).expect("client frame")
    }

    fn reply(frame: &[u8], lease: &Lease) -> Reply {
        match respond(frame, lease) {
            Ok(Outcome::Reply(bytes)) => Reply::parse(&bytes),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn ignored(frame: &[u8], lease: &Lease) -> &'static str {
        match respond(frame, lease) {
            Ok(Outcome::Ignored(reason)) => reason,
            other => panic!("expected Ignored, got {other:?}"),
        }
    }

    /// A reply taken apart; parsing asserts both checksums, TTL and ports.
    struct Reply {
        eth_dst: [u8; 6],
        eth_src: [u8; 6],
        ip_src: Ipv4Addr,
        ip_dst: Ipv4Addr,
        dhcp: Vec<u8>,
    }

    impl Reply {
        fn parse(frame: &[u8]) -> Reply {
            let eth = EthernetFrame::new_checked(frame).expect("ethernet");
            assert_eq!(eth.ethertype(), EthernetProtocol::Ipv4);
            let ip = Ipv4Packet::new_checked(eth.payload()).expect("ipv4");
            assert!(ip.verify_checksum(), "IPv4 header checksum");
            assert_eq!(ip.hop_limit(), 64);
            assert_eq!(ip.total_len() as usize, frame.len() - ETHERNET_HEADER_LEN);
            let udp = UdpPacket::new_checked(ip.payload()).expect("udp");
            let (src, dst) = (
                IpAddress::from(ip.src_addr()),
                IpAddress::from(ip.dst_addr()),
            );
            assert_ne!(udp.checksum(), 0, "UDP checksum present");
            assert!(udp.verify_checksum(&src, &dst), "UDP checksum");
            assert_eq!((udp.src_port(), udp.dst_port()), (67, 68));
            assert!(udp.payload().len() >= MIN_BOOTP_LEN);
            Reply {
                eth_dst: eth.dst_addr().0,
                eth_src: eth.src_addr().0,
                ip_src: ip.src_addr(),
                ip_dst: ip.dst_addr(),
                dhcp: udp.payload().to_vec(),
            }
        }

        fn with<R>(&self, check: impl FnOnce(&DhcpRepr) -> R) -> R {
            let packet = DhcpPacket::new_checked(&self.dhcp[..]).expect("dhcp");
            assert_eq!(packet.opcode(), DhcpOpCode::Reply);
            check(&DhcpRepr::parse(&packet).expect("smoltcp parses the reply"))
        }

        fn kind(&self) -> DhcpMessageType {
            self.with(|r| r.message_type)
        }

        /// All instances of an option, concatenated (RFC 3396).
        fn option(&self, kind: u8) -> Option<Vec<u8>> {
            let packet = DhcpPacket::new_checked(&self.dhcp[..]).expect("dhcp");
            let data: Vec<u8> = packet
                .options()
                .filter(|o| o.kind == kind)
                .flat_map(|o| o.data.to_vec())
                .collect();
            let found = packet.options().any(|o| o.kind == kind);
            found.then_some(data)
        }
    }

    fn selecting(requested: Ipv4Addr, server: Ipv4Addr) -> Vec<u8> {
        client(DhcpMessageType::Request, |r| {
            r.requested_ip = Some(requested);
            r.server_identifier = Some(server);
        })
    }

    #[test]
    fn discover_gets_an_offer_with_every_option() {
        let offer = reply(&client(DhcpMessageType::Discover, |_| {}), &lease());
        assert_eq!(offer.kind(), DhcpMessageType::Offer);
        assert_eq!((offer.eth_src, offer.eth_dst), (SERVER_MAC, CLIENT_MAC));
        assert_eq!((offer.ip_src, offer.ip_dst), (GW, IP));
        offer.with(|r| {
            assert_eq!(r.transaction_id, XID);
            assert_eq!(r.client_hardware_address.0, CLIENT_MAC);
            assert_eq!(r.your_ip, IP);
            assert_eq!(r.client_ip, Ipv4Addr::UNSPECIFIED);
            assert!(!r.broadcast);
            assert_eq!(r.subnet_mask, Some(Ipv4Addr::new(255, 255, 255, 0)));
            assert_eq!(r.router, Some(GW));
            assert_eq!(r.server_identifier, Some(GW));
            let dns: Vec<Ipv4Addr> = r
                .dns_servers
                .as_ref()
                .expect("dns")
                .iter()
                .copied()
                .collect();
            assert_eq!(dns, lease().dns);
            assert_eq!(r.lease_duration, Some(3600));
            assert_eq!(r.renew_duration, Some(1800));
            assert_eq!(r.rebind_duration, Some(3150));
        });
        assert_eq!(offer.option(OPT_MTU), Some(1450u16.to_be_bytes().to_vec()));
        assert_eq!(
            offer.option(OPT_DOMAIN_NAME),
            Some(b"vpc.internal".to_vec())
        );
        let routes = vec![16, 10, 1, 10, 0, 0, 254, 0, 10, 0, 0, 1];
        assert_eq!(offer.option(OPT_CLASSLESS_ROUTES), Some(routes));
        assert_eq!(offer.option(OPT_MESSAGE), None);
    }

    #[test]
    fn classless_routes_follow_rfc_3442() {
        let mut l = lease();
        l.routes = vec![
            (net("10.1.2.3/16"), Ipv4Addr::new(10, 0, 0, 254)), // host bits dropped
            (net("172.16.5.4/32"), Ipv4Addr::new(10, 0, 0, 253)),
            (net("10.128.0.0/9"), Ipv4Addr::new(10, 0, 0, 252)),
        ];
        #[rustfmt::skip]
        let want = vec![
            16, 10, 1, 10, 0, 0, 254,
            32, 172, 16, 5, 4, 10, 0, 0, 253,
            9, 10, 128, 10, 0, 0, 252,
            0, 10, 0, 0, 1,
        ];
        assert_eq!(classless_routes(&l), want);
        l.routes
            .push((net("0.0.0.0/0"), Ipv4Addr::new(10, 0, 0, 9)));
        assert_eq!(
            classless_routes(&l)[23..],
            [0, 10, 0, 0, 9],
            "no second default route"
        );
        l.gateway = None;
        l.routes.truncate(1);
        assert_eq!(classless_routes(&l), [16, 10, 1, 10, 0, 0, 254]);
        l.routes.clear();
        let offer = reply(&client(DhcpMessageType::Discover, |_| {}), &l);
        assert_eq!(offer.option(OPT_CLASSLESS_ROUTES), None);
        offer.with(|r| assert_eq!(r.router, None));
    }

    #[test]
    fn long_options_are_split() {
        let mut l = lease();
        l.routes = (0..60)
            .map(|i| (net(&format!("10.{i}.0.0/16")), GW))
            .collect();
        let offer = reply(&client(DhcpMessageType::Discover, |_| {}), &l);
        assert_eq!(
            offer.option(OPT_CLASSLESS_ROUTES),
            Some(classless_routes(&l))
        );
        assert_eq!(classless_routes(&l).len(), 60 * 7 + 5);
    }

    #[test]
    fn request_selecting_our_offer_is_acked() {
        let ack = reply(&selecting(IP, GW), &lease());
        assert_eq!(ack.kind(), DhcpMessageType::Ack);
        assert_eq!((ack.eth_dst, ack.ip_dst), (CLIENT_MAC, IP));
        ack.with(|r| {
            assert_eq!(r.your_ip, IP);
            assert_eq!(r.lease_duration, Some(3600));
            assert_eq!(r.subnet_mask, Some(Ipv4Addr::new(255, 255, 255, 0)));
        });
    }

    #[test]
    fn request_for_another_address_is_naked_by_broadcast() {
        let nak = reply(&selecting(Ipv4Addr::new(10, 0, 0, 6), GW), &lease());
        assert_eq!(nak.kind(), DhcpMessageType::Nak);
        assert_eq!(
            (nak.eth_dst, nak.ip_dst),
            (BROADCAST_MAC, Ipv4Addr::BROADCAST)
        );
        nak.with(|r| {
            assert_eq!(r.your_ip, Ipv4Addr::UNSPECIFIED);
            assert_eq!(r.server_identifier, Some(GW));
            assert_eq!(
                (r.lease_duration, r.subnet_mask, r.router),
                (None, None, None)
            );
            assert!(r.dns_servers.is_none());
        });
        assert!(nak.option(OPT_MESSAGE).is_some());
        assert_eq!(nak.option(OPT_MTU), None);
    }

    #[test]
    fn request_for_another_server_is_ignored() {
        let frame = selecting(IP, Ipv4Addr::new(10, 0, 0, 99));
        assert_eq!(ignored(&frame, &lease()), "request for another server");
    }

    #[test]
    fn init_reboot_is_checked_against_the_lease() {
        let ok = client(DhcpMessageType::Request, |r| r.requested_ip = Some(IP));
        assert_eq!(reply(&ok, &lease()).kind(), DhcpMessageType::Ack);
        let moved = client(DhcpMessageType::Request, |r| r.requested_ip = Some(GW));
        assert_eq!(reply(&moved, &lease()).kind(), DhcpMessageType::Nak);
        let empty = client(DhcpMessageType::Request, |_| {});
        assert!(ignored(&empty, &lease()).starts_with("request without"));
    }

    #[test]
    fn renewal_is_acked_by_unicast_to_ciaddr() {
        let ack = reply(
            &client(DhcpMessageType::Request, |r| r.client_ip = IP),
            &lease(),
        );
        assert_eq!(ack.kind(), DhcpMessageType::Ack);
        assert_eq!((ack.eth_dst, ack.ip_dst), (CLIENT_MAC, IP));
        ack.with(|r| {
            assert_eq!(
                (r.client_ip, r.your_ip, r.lease_duration),
                (IP, IP, Some(3600))
            )
        });
        let other = Ipv4Addr::new(10, 0, 0, 7);
        let nak = reply(
            &client(DhcpMessageType::Request, |r| r.client_ip = other),
            &lease(),
        );
        assert_eq!(nak.kind(), DhcpMessageType::Nak);
        assert_eq!(nak.ip_dst, Ipv4Addr::BROADCAST);
    }

    #[test]
    fn broadcast_flag_makes_replies_broadcast() {
        for frame in [
            client(DhcpMessageType::Discover, |r| r.broadcast = true),
            client(DhcpMessageType::Request, |r| {
                r.broadcast = true;
                r.requested_ip = Some(IP);
                r.server_identifier = Some(GW);
            }),
        ] {
            let answer = reply(&frame, &lease());
            assert_eq!(
                (answer.eth_dst, answer.ip_dst),
                (BROADCAST_MAC, Ipv4Addr::BROADCAST)
            );
            answer.with(|r| assert!(r.broadcast && r.your_ip == IP));
        }
    }

    #[test]
    fn wrong_chaddr_is_ignored() {
        let frame = client(DhcpMessageType::Discover, |r| {
            r.client_hardware_address = EthernetAddress([0x02, 0, 0, 0, 0, 0x66]);
        });
        assert_eq!(ignored(&frame, &lease()), "chaddr is not the port's MAC");
    }

    #[test]
    fn inform_gets_configuration_without_an_address() {
        let ack = reply(
            &client(DhcpMessageType::Inform, |r| r.client_ip = IP),
            &lease(),
        );
        assert_eq!(ack.kind(), DhcpMessageType::Ack);
        assert_eq!(ack.ip_dst, IP);
        ack.with(|r| {
            assert_eq!((r.your_ip, r.client_ip), (Ipv4Addr::UNSPECIFIED, IP));
            assert_eq!(
                (r.lease_duration, r.renew_duration, r.rebind_duration),
                (None, None, None)
            );
            assert_eq!(r.router, Some(GW));
        });
        assert!(ack.option(OPT_MTU).is_some() && ack.option(OPT_CLASSLESS_ROUTES).is_some());
    }

    #[test]
    fn release_and_decline_are_ignored() {
        let release = client(DhcpMessageType::Release, |r| r.client_ip = IP);
        assert_eq!(ignored(&release, &lease()), "release");
        let decline = client(DhcpMessageType::Decline, |r| r.requested_ip = Some(IP));
        assert_eq!(ignored(&decline, &lease()), "decline");
    }

    #[test]
    fn client_identifier_is_echoed() {
        let id = DhcpOption {
            kind: OPT_CLIENT_ID,
            data: &[0xff, 1, 2, 3, 4, 5, 6, 7, 8],
        };
        let extra = [id];
        let frame = client(DhcpMessageType::Discover, |r| r.additional_options = &extra);
        assert_eq!(
            reply(&frame, &lease()).option(OPT_CLIENT_ID),
            Some(id.data.to_vec())
        );
    }

    #[test]
    fn non_dhcp_frames_are_ignored_or_rejected() {
        let discover = client(DhcpMessageType::Discover, |_| {});
        let mut arp = discover.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(ignored(&arp, &lease()), "not IPv4");
        let mut port = discover.clone();
        port[36..38].copy_from_slice(&68u16.to_be_bytes()); // UDP checksum is not verified
        assert_eq!(ignored(&port, &lease()), "not UDP port 67");
        let mut cookie = discover.clone();
        cookie[42 + 236] ^= 1;
        assert_eq!(ignored(&cookie, &lease()), "no DHCP magic cookie");
        let mut hlen = discover.clone();
        hlen[42 + 2] = 16;
        assert_eq!(ignored(&hlen, &lease()), "hardware type is not Ethernet");
        let mut op = discover.clone();
        op[42] = 2;
        assert_eq!(ignored(&op, &lease()), "not a BOOTREQUEST");
        let mut no_type = discover.clone();
        no_type[42 + 240] = 0xfe; // message type option becomes an unknown option
        assert_eq!(ignored(&no_type, &lease()), "no DHCP message type");
        let mut checksum = discover.clone();
        checksum[14 + 8] = 1; // TTL
        assert_eq!(respond(&checksum, &lease()), Err(DhcpError::Ipv4Checksum));
        let mut udp_len = discover.clone();
        udp_len[38..40].copy_from_slice(&4u16.to_be_bytes());
        assert!(matches!(
            respond(&udp_len, &lease()),
            Err(DhcpError::MalformedUdp { .. })
        ));
    }

    #[test]
    fn every_truncation_of_a_discover_is_an_error() {
        let discover = client(DhcpMessageType::Discover, |_| {});
        for len in 0..discover.len() {
            assert!(
                respond(&discover[..len], &lease()).is_err(),
                "truncated to {len}"
            );
        }
        assert!(matches!(
            respond(&discover, &lease()),
            Ok(Outcome::Reply(_))
        ));
    }

    #[test]
    fn server_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Server>();
    }

    #[test]
    fn random_and_mutated_frames_never_panic() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let discover = client(DhcpMessageType::Discover, |_| {});
        let (mut replies, mut l) = (0, lease());
        for i in 0..10_000 {
            let frame: Vec<u8> = if i % 2 == 0 {
                (0..next() % 700).map(|_| next() as u8).collect()
            } else {
                let mut f = discover.clone();
                for _ in 0..1 + next() % 4 {
                    let at = (next() as usize) % f.len();
                    f[at] = next() as u8;
                }
                f.truncate(next() as usize % (f.len() + 64));
                f
            };
            l.prefix_len = (next() % 40) as u8;
            if let Ok(Outcome::Reply(bytes)) = respond(&frame, &l) {
                Reply::parse(&bytes);
                replies += 1;
            }
        }
        assert!(
            replies > 100,
            "mutations should often still be answered: {replies}"
        );
    }
}

//! The agent's only contact with the host kernel outside the dataplane:
//! interface ioctls, /proc and sysfs knobs, and the raw-socket helpers the
//! host services (DHCP, health probes) share.
//!
//! Every function here does one system call (or one file read/write) and
//! interprets its answer; the parsing of /proc text is split into pure
//! functions that are tested without root. This module never decides
//! anything: callers choose what to ask and what to do with the answer.
//! Every `unsafe` block of the agent's reconcile path is here, each with a
//! `SAFETY` comment.

use std::{
    io,
    mem::size_of,
    net::Ipv4Addr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
};

use anyhow::Context as _;

/// Interfaces of this process's network namespace: (ifindex, name).
pub fn interfaces() -> anyhow::Result<Vec<(u32, String)>> {
    let list = nix::net::if_::if_nameindex().context("listing interfaces (if_nameindex)")?;
    Ok(list
        .iter()
        .map(|i| (i.index(), i.name().to_string_lossy().into_owned()))
        .collect())
}

/// The ifindex of `name`, if it exists (one ioctl).
pub(crate) fn ifindex_of(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok()
}

/// One SIOCGIF* ioctl for `iface` on a throwaway socket: the filled
/// `ifreq` (a netlink dump would list every interface; sysfs shows the mount
/// namespace's interfaces, and an agent only enters a network namespace).
fn ifreq(iface: &str, request: libc::c_ulong) -> Option<libc::ifreq> {
    let name = iface.as_bytes();
    if name.len() >= libc::IFNAMSIZ {
        return None;
    }
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ok()?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: the SIOCGIF* requests read ifr_name and write ifr_ifru of the
    // ifreq we own, on a socket we own; the name is NUL-terminated (zeroed,
    // shorter than IFNAMSIZ).
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), request, &mut req) };
    (rc == 0).then_some(req)
}

/// The first IPv4 address of `iface` (SIOCGIFADDR).
pub(crate) fn ipv4_of(iface: &str) -> Option<Ipv4Addr> {
    let req = ifreq(iface, libc::SIOCGIFADDR)?;
    // SAFETY: on success the kernel stored an AF_INET sockaddr in ifru_addr.
    let sin: libc::sockaddr_in = unsafe { std::mem::transmute_copy(&req.ifr_ifru.ifru_addr) };
    Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
}

/// The MAC address of `iface` (SIOCGIFHWADDR).
pub(crate) fn mac_of(iface: &str) -> Option<[u8; 6]> {
    let req = ifreq(iface, libc::SIOCGIFHWADDR)?;
    // SAFETY: on success the kernel stored the hardware address in ifru_hwaddr.
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (m, b) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *m = *b as u8;
    }
    Some(mac)
}

/// The host's own stack must not talk to VMs through their taps: no IPv6
/// (router solicitations, MLD reports) on a port's host end.
pub(crate) fn quiet_tap(tap: &str) {
    let path = format!("/proc/sys/net/ipv6/conf/{tap}/disable_ipv6");
    if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() != "1") {
        let _ = std::fs::write(&path, "1");
    }
}

/// Taps created from now on start without IPv6 (turning it off on a live
/// interface waits for an RCU grace period, ~10 ms, on the path from
/// binding to ACTIVE); [`quiet_tap`] covers older ones.
pub(crate) fn disable_ipv6_by_default() {
    let default = "/proc/sys/net/ipv6/conf/default/disable_ipv6";
    if std::fs::read_to_string(default).is_ok_and(|v| v.trim() != "1") {
        if let Err(e) = std::fs::write(default, "1") {
            tracing::warn!(error = %e, "cannot make new interfaces start without IPv6");
        }
    }
}

/// The gateways of `iface`'s routes (the default route's first), from
/// /proc/net/route.
pub(crate) fn gateways_of(iface: &str) -> Vec<Ipv4Addr> {
    let Ok(text) = std::fs::read_to_string("/proc/net/route") else {
        return Vec::new();
    };
    route_gateways(&text, iface)
}

/// [`gateways_of`] on the text of /proc/net/route.
fn route_gateways(text: &str, iface: &str) -> Vec<Ipv4Addr> {
    let mut out: Vec<(bool, Ipv4Addr)> = text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 3 || f[0] != iface {
                return None;
            }
            let gw = u32::from_str_radix(f[2], 16).ok()?;
            // The file prints the raw (network order) word as a host integer.
            (gw != 0).then(|| (f[1] != "00000000", Ipv4Addr::from(gw.to_ne_bytes())))
        })
        .collect();
    out.sort();
    out.dedup();
    out.into_iter().map(|(_, g)| g).collect()
}

/// bpf_fib_lookup answers only for interfaces with IPv4 forwarding on (even
/// for an output lookup): the uplink (encapsulation) and a gateway's
/// external interface need it.
pub(crate) fn enable_forwarding(iface: &str) {
    let fwd = format!("/proc/sys/net/ipv4/conf/{iface}/forwarding");
    if std::fs::read_to_string(&fwd)
        .map(|v| v.trim() != "1")
        .unwrap_or(false)
    {
        match std::fs::write(&fwd, "1") {
            Ok(()) => {
                tracing::info!(iface, "IPv4 forwarding enabled (for bpf_fib_lookup)")
            }
            Err(e) => {
                tracing::warn!(iface, error = %e, "cannot enable forwarding; lookups from XDP will fail")
            }
        }
    }
}

/// Whether the kernel holds a usable MAC for `ip` on `iface` (/proc/net/arp).
pub(crate) fn neighbour_resolved(iface: &str, ip: Ipv4Addr) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/net/arp") else {
        return false;
    };
    arp_resolved(&text, iface, ip)
}

/// [`neighbour_resolved`] on the text of /proc/net/arp.
fn arp_resolved(text: &str, iface: &str, ip: Ipv4Addr) -> bool {
    let ip = ip.to_string();
    text.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 6 && f[0] == ip && f[5] == iface && f[2] != "0x0"
    })
}

/// Fails unless /sys/fs/bpf is a mounted bpf filesystem (warns if the pin
/// root lies elsewhere).
pub(crate) fn check_bpffs(root: &Path) -> anyhow::Result<()> {
    let bpffs = Path::new("/sys/fs/bpf");
    let st = nix::sys::statfs::statfs(bpffs).with_context(|| {
        format!(
            "{} is not accessible: mount bpffs there (mount -t bpf bpf /sys/fs/bpf)",
            bpffs.display()
        )
    })?;
    if st.filesystem_type() != nix::sys::statfs::BPF_FS_MAGIC {
        anyhow::bail!(
            "{} is not a bpf filesystem: mount -t bpf bpf /sys/fs/bpf",
            bpffs.display()
        );
    }
    if !root.starts_with(bpffs) {
        tracing::warn!(pin_root = %root.display(), "pin root is outside /sys/fs/bpf");
    }
    Ok(())
}

/// `setsockopt(fd, level, name, value)` for an option whose value is a `T`.
pub(crate) fn setsockopt<T>(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` points to a live, initialised T and the length passed is exactly its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// An AF_PACKET address for IPv4 frames on `ifindex` (0: any interface),
/// towards `mac` if given.
pub(crate) fn link_addr(ifindex: i32, mac: Option<[u8; 6]>) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = (libc::ETH_P_IP as u16).to_be();
    addr.sll_ifindex = ifindex;
    if let Some(mac) = mac {
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&mac);
    }
    addr
}

/// An `AF_PACKET` raw socket that receives only what `filter` (classic
/// BPF) accepts. It is opened with protocol 0, which receives nothing until
/// the caller binds it, so no frame slips in before the filter is on.
pub(crate) fn packet_socket(filter: &mut [libc::sock_filter]) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall without pointers.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a freshly opened descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog)?;
    Ok(fd)
}

/// Binds a packet socket to `addr` (an interface, or 0 for all, and a
/// protocol).
pub(crate) fn bind_link(fd: &OwnedFd, addr: &libc::sockaddr_ll) -> std::io::Result<()> {
    // SAFETY: `addr` is a valid sockaddr_ll and the length passed is its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (addr as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` with this thread in network namespace `netns` (by name, as
/// `ip netns` keeps them), then returns the thread to its own namespace.
/// Sockets made by `f` stay in `netns`.
pub(crate) fn in_netns<T>(netns: &str, f: impl FnOnce() -> T) -> std::io::Result<T> {
    use nix::sched::{setns, CloneFlags};
    let own = std::fs::File::open("/proc/thread-self/ns/net")?;
    let target = std::fs::File::open(std::path::Path::new("/run/netns").join(netns))?;
    setns(&target, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
    let r = f();
    if let Err(e) = setns(&own, CloneFlags::CLONE_NEWNET) {
        // A thread stuck in another namespace would make everything after
        // it wrong: nothing sensible can go on.
        panic!("cannot return to the agent's network namespace: {e}");
    }
    Ok(r)
}

/// A TCP socket listening on every address at `port` (close-on-exec;
/// `SO_REUSEADDR` and `SO_REUSEPORT`, so a replacement can bind beside it).
pub(crate) fn tcp_listener(port: u16, backlog: i32) -> std::io::Result<std::os::fd::OwnedFd> {
    use nix::sys::socket::{
        bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
        SockaddrIn,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    setsockopt(&fd, sockopt::ReusePort, &true)?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::new(0, 0, 0, 0, port),
    )?;
    listen(&fd, Backlog::new(backlog).map_err(std::io::Error::from)?)?;
    Ok(fd)
}

/// A duplicate of descriptor `fd` of process `pid` (`pidfd_getfd`: the
/// same open socket, close-on-exec here).
pub(crate) fn fd_of_process(pid: i32, fd: i32) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain syscalls with integer arguments; a returned descriptor
    // is owned by the OwnedFd made from it.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid, 0);
        if pidfd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let pidfd = std::os::fd::OwnedFd::from_raw_fd(pidfd as i32);
        let dup = libc::syscall(
            libc::SYS_pidfd_getfd,
            std::os::fd::AsRawFd::as_raw_fd(&pidfd),
            fd,
            0,
        );
        if dup < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(std::os::fd::OwnedFd::from_raw_fd(dup as i32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t0000000A\t0100000A\t0003\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
eth0\t00000000\t FE00000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
eth0\t00000000\tFE00000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
eth1\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";

    #[test]
    fn the_default_route_gateway_comes_first() {
        let gws = route_gateways(ROUTE, "eth0");
        assert_eq!(
            gws,
            vec![Ipv4Addr::new(10, 0, 0, 254), Ipv4Addr::new(10, 0, 0, 1)],
            "default route first, direct routes (gateway 0) skipped, duplicates once"
        );
        assert_eq!(
            route_gateways(ROUTE, "eth1"),
            vec![Ipv4Addr::new(192, 168, 1, 1)]
        );
        assert!(route_gateways(ROUTE, "eth2").is_empty());
        assert!(route_gateways("", "eth0").is_empty());
    }

    #[test]
    fn a_neighbour_is_resolved_only_with_a_complete_entry_on_its_interface() {
        let arp =
            "IP address       HW type     Flags       HW address            Mask     Device\n\
10.0.0.254       0x1         0x2         52:54:00:12:34:56     *        eth0\n\
10.0.0.9         0x1         0x0         00:00:00:00:00:00     *        eth0\n";
        assert!(arp_resolved(arp, "eth0", Ipv4Addr::new(10, 0, 0, 254)));
        assert!(
            !arp_resolved(arp, "eth1", Ipv4Addr::new(10, 0, 0, 254)),
            "other interface"
        );
        assert!(
            !arp_resolved(arp, "eth0", Ipv4Addr::new(10, 0, 0, 9)),
            "incomplete entry"
        );
        assert!(
            !arp_resolved(arp, "eth0", Ipv4Addr::new(10, 0, 0, 25)),
            "prefix of an address"
        );
    }

    #[test]
    fn link_addr_is_an_ipv4_packet_address() {
        let a = link_addr(7, Some([1, 2, 3, 4, 5, 6]));
        assert_eq!(a.sll_family, libc::AF_PACKET as u16);
        assert_eq!(u16::from_be(a.sll_protocol), libc::ETH_P_IP as u16);
        assert_eq!(a.sll_ifindex, 7);
        assert_eq!(a.sll_halen, 6);
        assert_eq!(&a.sll_addr[..6], &[1, 2, 3, 4, 5, 6]);
        assert_eq!(link_addr(0, None).sll_halen, 0);
    }
}

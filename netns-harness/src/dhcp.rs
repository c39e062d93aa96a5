//! DHCP in VMs: the `busybox udhcpc` command line, its event script and the
//! lease file the script writes.
//!
//! A DHCP VM runs `udhcpc -f` (foreground, never exits on its own, renews its
//! lease) in its namespace, started by the harness like any other process of
//! the run (pid file `pids/vm-<name>-udhcpc.pid`, log
//! `logs/vm-<name>-udhcpc.log`). udhcpc runs the event script
//! `/run/strato/<prefix>/udhcpc.script` (written by the harness, mode 0755)
//! with the event as `$1` and the lease in the environment; on `bound` and
//! `renew` the script configures `eth0` (address, MTU, default route, option
//! 121 routes) and *then* records the lease in
//! `/run/strato/<prefix>/vm-<name>.lease` (`key=value` lines, replaced
//! atomically), so a lease file that exists describes a configured VM.

use std::fmt;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

use crate::error::HarnessError;

/// Discover packets per round (`-t`).
pub const DISCOVER_TRIES: u32 = 3;
/// Seconds between discover packets (`-T`).
pub const DISCOVER_INTERVAL_SECS: u32 = 1;
/// Seconds to wait after a round without a lease before the next (`-A`).
pub const RETRY_PAUSE_SECS: u32 = 1;

/// File name of the event script in the run's state directory.
pub(crate) const SCRIPT_NAME: &str = "udhcpc.script";

/// The event script. POSIX sh (runs under dash and busybox ash). Its
/// output goes to udhcpc's stderr, i.e. the VM's udhcpc log.
pub(crate) const SCRIPT: &str = r#"#!/bin/sh
# udhcpc event script of the Strato netns harness (written by strato-harness;
# do not edit, it is rewritten). udhcpc runs it as `SCRIPT EVENT` with the
# lease in the environment: interface ip mask (a prefix length) router dns mtu
# staticroutes ("net/len gw net/len gw ...", option 121) lease serverid.
# STRATO_LEASE_FILE (set by the harness) is where the lease is recorded.
PATH="$PATH:/usr/sbin:/usr/bin:/sbin:/bin"
lease_file="${STRATO_LEASE_FILE:?STRATO_LEASE_FILE is not set}"
dev="${interface:-eth0}"

log() { echo "udhcpc-script: $*" >&2; }

# route_set NET GW: NET via GW (GW 0.0.0.0: on-link), onlink if GW is not
# inside the leased subnet.
route_set() {
    if [ "$2" = 0.0.0.0 ]; then
        ip route replace "$1" dev "$dev" scope link
    else
        ip route replace "$1" via "$2" dev "$dev" 2>/dev/null ||
            ip route replace "$1" via "$2" dev "$dev" onlink
    fi || log "cannot set route $1 via $2"
}

# Routes of the previous lease that the new one no longer has.
drop_stale_routes() {
    old_routes=
    old_router=
    if [ -f "$lease_file" ]; then
        while IFS='=' read -r k v; do
            case "$k" in
                staticroutes) old_routes=$v ;;
                router) old_router=$v ;;
            esac
        done <"$lease_file"
    fi
    set -- $old_routes
    while [ $# -ge 2 ]; do
        case " $staticroutes " in
            *" $1 $2 "*) ;;
            *) ip route del "$1" dev "$dev" 2>/dev/null ;;
        esac
        shift 2
    done
    case " $staticroutes " in
        *" 0.0.0.0/0 "*) ;;
        *) if [ -n "$old_router" ] && [ -z "$router" ]; then
               ip route del default dev "$dev" 2>/dev/null
           fi ;;
    esac
}

bound() {
    mask="${mask:-32}"
    # Other IPv4 addresses first (deleting a primary drops its secondaries).
    ip -4 -o addr show dev "$dev" | while read -r _n _if _fam a _rest; do
        [ "$a" = "$ip/$mask" ] || ip addr del "$a" dev "$dev"
    done
    if ! ip addr replace "$ip/$mask" dev "$dev"; then
        log "$1: cannot set address $ip/$mask on $dev"
        exit 1
    fi
    if [ -n "$mtu" ]; then
        ip link set dev "$dev" mtu "$mtu" || log "cannot set mtu $mtu"
    fi
    drop_stale_routes
    if [ -n "$router" ]; then
        set -- $router
        route_set default "$1"
    fi
    set -- $staticroutes
    while [ $# -ge 2 ]; do
        route_set "$1" "$2"
        shift 2
    done
    tmp="$lease_file.tmp.$$"
    if {
        printf 'ip=%s\n' "$ip"
        printf 'mask=%s\n' "$mask"
        printf 'router=%s\n' "$router"
        printf 'dns=%s\n' "$dns"
        printf 'mtu=%s\n' "$mtu"
        printf 'staticroutes=%s\n' "$staticroutes"
        printf 'lease=%s\n' "$lease"
        printf 'serverid=%s\n' "$serverid"
    } >"$tmp" && mv -f "$tmp" "$lease_file"; then
        log "lease $ip/$mask router ${router:--} mtu ${mtu:--} routes ${staticroutes:--} for ${lease:-?}s from ${serverid:-?}"
    else
        rm -f "$tmp"
        log "cannot write $lease_file"
        exit 1
    fi
}

case "$1" in
    deconfig)
        ip link set dev "$dev" up
        ip -4 addr flush dev "$dev"
        rm -f "$lease_file"
        ;;
    bound | renew)
        bound "$1"
        ;;
    leasefail | nak)
        log "$1${message:+: $message}"
        ;;
esac
exit 0
"#;

/// Writes the event script into `dir` (mode 0755) unless it is there
/// already with this content. Returns its path.
pub(crate) fn write_script(dir: &Path) -> Result<PathBuf, HarnessError> {
    let path = dir.join(SCRIPT_NAME);
    if std::fs::read_to_string(&path).is_ok_and(|t| t == SCRIPT) {
        return Ok(path);
    }
    let tmp = dir.join(format!("{SCRIPT_NAME}.tmp"));
    std::fs::write(&tmp, SCRIPT)
        .map_err(|e| HarnessError::io("cannot write udhcpc script", &tmp, e))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| HarnessError::io("cannot chmod udhcpc script", &tmp, e))?;
    std::fs::rename(&tmp, &path)
        .map_err(|e| HarnessError::io("cannot replace udhcpc script", &path, e))?;
    Ok(path)
}

/// The busybox binary (`/usr/bin/busybox` on Debian).
pub(crate) fn busybox() -> &'static str {
    ["/usr/bin/busybox", "/bin/busybox", "/usr/sbin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("busybox")
}

/// Arguments after `busybox`: a foreground client on `eth0` that retries
/// fast, asks for the MTU and classless static routes on top of udhcpc's
/// default list (subnet mask, router, DNS, ...), and sends the
/// VM name as hostname (option 12); the client id (option 61) is udhcpc's
/// default, `01` + the MAC.
pub(crate) fn udhcpc_args(script: &Path, hostname: &str) -> Vec<String> {
    let mut v: Vec<String> = ["udhcpc", "-f", "-i", "eth0", "-s"]
        .into_iter()
        .map(String::from)
        .collect();
    v.push(script.display().to_string());
    for (flag, value) in [
        ("-t", DISCOVER_TRIES.to_string()),
        ("-T", DISCOVER_INTERVAL_SECS.to_string()),
        ("-A", RETRY_PAUSE_SECS.to_string()),
        ("-O", "mtu".to_string()),
        ("-O", "staticroutes".to_string()),
        ("-x", format!("hostname:{hostname}")),
    ] {
        v.push(flag.to_string());
        v.push(value);
    }
    v
}

/// A VM's DHCP lease, as its udhcpc script recorded it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Address with the subnet's prefix length (/32 if the server sent no
    /// subnet mask).
    pub ip: Ipv4Network,
    /// The first router (option 3).
    pub router: Option<Ipv4Addr>,
    /// DNS servers (option 6). The harness does not write them anywhere:
    /// VMs share the machine's /etc.
    pub dns: Vec<Ipv4Addr>,
    /// Interface MTU (option 26).
    pub mtu: Option<u32>,
    /// Classless static routes (option 121): destination, gateway
    /// (0.0.0.0 = on-link).
    pub routes: Vec<(Ipv4Network, Ipv4Addr)>,
    /// Lease time in seconds (option 51).
    pub lease_secs: Option<u32>,
    /// The server identifier (option 54).
    pub server_id: Option<Ipv4Addr>,
}

impl Lease {
    /// Parses a lease file (`key=value` lines; empty values mean absent;
    /// unknown keys and blank lines are ignored). The reason names the line.
    pub fn parse(text: &str) -> Result<Lease, String> {
        let mut ip: Option<Ipv4Addr> = None;
        let mut mask: Option<u8> = None;
        let mut lease = Lease {
            ip: Ipv4Network::new(Ipv4Addr::UNSPECIFIED, 32).expect("/32"),
            router: None,
            dns: Vec::new(),
            mtu: None,
            routes: Vec::new(),
            lease_secs: None,
            server_id: None,
        };
        let mut seen: Vec<&str> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            if line.trim().is_empty() {
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| format!("line {n}: {line:?} is not key=value"))?;
            let (key, value) = (key.trim(), value.trim());
            if seen.contains(&key) {
                return Err(format!("line {n}: {key} appears twice"));
            }
            seen.push(key);
            let bad = |what: &str| format!("line {n}: {key}={value:?} is not {what}");
            let addr = |s: &str| s.parse::<Ipv4Addr>().map_err(|_| bad("an IPv4 address"));
            let opt_addr = |s: &str| {
                if s.is_empty() {
                    Ok(None)
                } else {
                    s.split_whitespace().next().map(addr).transpose()
                }
            };
            let opt_u32 = |s: &str| {
                if s.is_empty() {
                    Ok(None)
                } else {
                    s.parse::<u32>().map(Some).map_err(|_| bad("a number"))
                }
            };
            match key {
                "ip" => ip = Some(addr(value)?),
                "mask" if !value.is_empty() => {
                    mask = Some(
                        value
                            .parse::<u8>()
                            .ok()
                            .filter(|m| *m <= 32)
                            .ok_or_else(|| bad("a prefix length 0..=32"))?,
                    );
                }
                "router" => lease.router = opt_addr(value)?,
                "dns" => {
                    lease.dns = value
                        .split_whitespace()
                        .map(addr)
                        .collect::<Result<_, _>>()?
                }
                "mtu" => lease.mtu = opt_u32(value)?,
                "lease" => lease.lease_secs = opt_u32(value)?,
                "serverid" => lease.server_id = opt_addr(value)?,
                "staticroutes" => {
                    let words: Vec<&str> = value.split_whitespace().collect();
                    if !words.len().is_multiple_of(2) {
                        return Err(bad("pairs of net/len gateway"));
                    }
                    lease.routes = words
                        .chunks(2)
                        .map(|p| {
                            let net = p[0]
                                .parse::<Ipv4Network>()
                                .ok()
                                .filter(|_| p[0].contains('/'))
                                .ok_or_else(|| bad("pairs of net/len gateway"))?;
                            Ok((net, addr(p[1])?))
                        })
                        .collect::<Result<_, String>>()?;
                }
                _ => {}
            }
        }
        let ip = ip.ok_or("no ip= line")?;
        lease.ip = Ipv4Network::new(ip, mask.unwrap_or(32)).expect("prefix checked");
        Ok(lease)
    }

    /// Reads and parses a lease file; `Ok(None)` if there is none.
    pub(crate) fn load(path: &Path) -> Result<Option<Lease>, HarnessError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(HarnessError::io("cannot read lease file", path, e)),
        };
        Lease::parse(&text)
            .map(Some)
            .map_err(|reason| HarnessError::Lease {
                path: path.to_path_buf(),
                reason,
            })
    }

    /// `ip -batch` lines that re-apply the lease to `eth0` (what the script
    /// did on `bound`), for `heal`: taking a link down deletes its routes.
    pub(crate) fn config_lines(&self) -> Vec<String> {
        let via = |gw: Ipv4Addr| {
            if gw.is_unspecified() {
                "dev eth0 scope link".to_string()
            } else if self.ip.contains(gw) {
                format!("via {gw} dev eth0")
            } else {
                format!("via {gw} dev eth0 onlink")
            }
        };
        let mut lines = vec![format!("addr replace {} dev eth0", self.ip)];
        if let Some(mtu) = self.mtu {
            lines.push(format!("link set dev eth0 mtu {mtu}"));
        }
        if let Some(r) = self.router {
            lines.push(format!("route replace default {}", via(r)));
        }
        for (net, gw) in &self.routes {
            lines.push(format!("route replace {net} {}", via(*gw)));
        }
        lines
    }
}

impl fmt::Display for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        writeln!(f, "ip:       {}", self.ip)?;
        writeln!(f, "router:   {}", opt(self.router.map(|r| r.to_string())))?;
        let dns: Vec<String> = self.dns.iter().map(ToString::to_string).collect();
        writeln!(
            f,
            "dns:      {}",
            if dns.is_empty() {
                "-".into()
            } else {
                dns.join(" ")
            }
        )?;
        writeln!(f, "mtu:      {}", opt(self.mtu.map(|m| m.to_string())))?;
        if self.routes.is_empty() {
            writeln!(f, "routes:   -")?;
        }
        for (net, gw) in &self.routes {
            writeln!(f, "route:    {net} via {gw}")?;
        }
        writeln!(
            f,
            "lease:    {}",
            opt(self.lease_secs.map(|s| format!("{s} s")))
        )?;
        writeln!(
            f,
            "server:   {}",
            opt(self.server_id.map(|s| s.to_string()))
        )
    }
}

/// The last `n` lines of a log file, or a note saying why there are none.
pub(crate) fn tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            if lines.is_empty() {
                return "(the log is empty)".into();
            }
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read the log: {e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn net(s: &str) -> Ipv4Network {
        s.parse().expect("net")
    }
    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }

    #[test]
    fn parses_a_full_lease() {
        let l = Lease::parse(
            "ip=10.0.0.5\nmask=24\nrouter=10.0.0.1 10.0.0.254\ndns=10.0.0.2 10.0.0.3\nmtu=1450\n\
             staticroutes=10.1.0.0/16 10.0.0.1 0.0.0.0/0 10.0.0.1 169.254.169.254/32 0.0.0.0\n\
             lease=86400\nserverid=10.0.0.1\nfuture=whatever\n\n",
        )
        .expect("parse");
        assert_eq!(
            l,
            Lease {
                ip: net("10.0.0.5/24"),
                router: Some(ip("10.0.0.1")),
                dns: vec![ip("10.0.0.2"), ip("10.0.0.3")],
                mtu: Some(1450),
                routes: vec![
                    (net("10.1.0.0/16"), ip("10.0.0.1")),
                    (net("0.0.0.0/0"), ip("10.0.0.1")),
                    (net("169.254.169.254/32"), ip("0.0.0.0")),
                ],
                lease_secs: Some(86400),
                server_id: Some(ip("10.0.0.1")),
            }
        );
        assert_eq!(l.ip.ip(), ip("10.0.0.5"));
        let json = serde_json::to_string(&l).expect("ser");
        assert_eq!(serde_json::from_str::<Lease>(&json).expect("de"), l);
        let text = l.to_string();
        assert!(text.contains("10.0.0.5/24") && text.contains("0.0.0.0/0 via 10.0.0.1"));
    }

    #[test]
    fn parses_a_minimal_lease() {
        // What the script writes when the server sent only an address.
        let l = Lease::parse(
            "ip=10.0.0.9\nmask=\nrouter=\ndns=\nmtu=\nstaticroutes=\nlease=\nserverid=\n",
        )
        .expect("parse");
        assert_eq!(l.ip, net("10.0.0.9/32"));
        assert_eq!(l.router, None);
        assert!(l.dns.is_empty() && l.routes.is_empty());
        assert_eq!((l.mtu, l.lease_secs, l.server_id), (None, None, None));
    }

    #[test]
    fn rejects_malformed_leases() {
        for (text, want) in [
            ("", "no ip= line"),
            ("mask=24\nrouter=10.0.0.1\n", "no ip= line"),
            ("ip=10.0.0.5\nmask=24\ngarbage\n", "line 3"),
            ("ip=10.0.0.300\n", "an IPv4 address"),
            ("ip=\n", "an IPv4 address"),
            ("ip=10.0.0.5\nmask=33\n", "prefix length"),
            ("ip=10.0.0.5\nmask=255.255.255.0\n", "prefix length"),
            ("ip=10.0.0.5\nrouter=gw\n", "router"),
            ("ip=10.0.0.5\ndns=10.0.0.2 x\n", "dns"),
            ("ip=10.0.0.5\nmtu=big\n", "a number"),
            ("ip=10.0.0.5\nmtu=-1\n", "a number"),
            ("ip=10.0.0.5\nlease=1.5\n", "lease"),
            ("ip=10.0.0.5\nstaticroutes=10.1.0.0/16\n", "pairs"),
            (
                "ip=10.0.0.5\nstaticroutes=10.1.0.0/16 10.0.0.1 10.2.0.0/16\n",
                "pairs",
            ),
            ("ip=10.0.0.5\nstaticroutes=10.1.0.0 10.0.0.1\n", "pairs"),
            ("ip=10.0.0.5\nstaticroutes=10.1.0.0/16 gw\n", "staticroutes"),
            ("ip=10.0.0.5\nip=10.0.0.6\n", "twice"),
        ] {
            let e = Lease::parse(text).expect_err(text);
            assert!(e.contains(want), "{text:?}: {e:?} should mention {want:?}");
        }
    }

    #[test]
    fn load_missing_and_malformed_files() {
        let dir = std::env::temp_dir().join(format!("nh-lease-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        assert_eq!(Lease::load(&dir.join("none.lease")).expect("missing"), None);
        let bad = dir.join("bad.lease");
        std::fs::write(&bad, "ip=10.0.0.5\nmtu=x\n").expect("write");
        let e = Lease::load(&bad).expect_err("malformed");
        assert!(
            matches!(e, HarnessError::Lease { .. })
                && e.to_string().contains("bad.lease")
                && e.to_string().contains("line 2"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn heal_lines() {
        let l = Lease::parse(
            "ip=10.0.0.5\nmask=24\nrouter=10.0.0.1\nmtu=1400\n\
             staticroutes=192.0.2.1/32 0.0.0.0 10.9.0.0/16 192.0.2.1\n",
        )
        .expect("parse");
        assert_eq!(
            l.config_lines(),
            [
                "addr replace 10.0.0.5/24 dev eth0",
                "link set dev eth0 mtu 1400",
                "route replace default via 10.0.0.1 dev eth0",
                "route replace 192.0.2.1/32 dev eth0 scope link",
                "route replace 10.9.0.0/16 via 192.0.2.1 dev eth0 onlink",
            ]
        );
    }

    #[test]
    fn udhcpc_command_line() {
        let a = udhcpc_args(Path::new("/run/strato/p/udhcpc.script"), "web1");
        let s = a.join(" ");
        assert!(
            s.starts_with("udhcpc -f -i eth0 -s /run/strato/p/udhcpc.script"),
            "{s}"
        );
        for want in [
            "-t 3",
            "-T 1",
            "-A 1",
            "-O mtu",
            "-O staticroutes",
            "-x hostname:web1",
        ] {
            assert!(s.contains(want), "{s} lacks {want}");
        }
        for never in ["-q", "-n", "-b"] {
            assert!(!a.iter().any(|x| x == never), "{s} has {never}");
        }
    }

    /// Runs the script under `shell` with a fake `ip` that logs its
    /// arguments; returns (exit ok, ip calls, lease file text).
    fn run_script(
        shell: &[&str],
        dir: &Path,
        event: &str,
        env: &[(&str, &str)],
    ) -> (bool, Vec<String>, Option<String>) {
        let script = write_script(dir).expect("script");
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).expect("bin");
        let calls = dir.join("calls");
        let _ = std::fs::remove_file(&calls);
        let fake_ip = bin.join("ip");
        std::fs::write(
            &fake_ip,
            format!(
                "#!/bin/sh\necho \"$*\" >>{}\n\
                 case \"$*\" in '-4 -o addr show dev eth0') echo '2: eth0    inet 10.0.0.99/24 brd 10.0.0.255 scope global eth0';; esac\n\
                 case \"$*\" in *onlink*) exit 0;; *'via 192.0.2.1'*) exit 2;; esac\nexit 0\n",
                calls.display()
            ),
        )
        .expect("fake ip");
        std::fs::set_permissions(&fake_ip, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let lease = dir.join("vm-x.lease");
        let mut cmd = Command::new(shell[0]);
        cmd.args(&shell[1..])
            .arg(&script)
            .arg(event)
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .env("STRATO_LEASE_FILE", &lease)
            .env("interface", "eth0");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run script");
        let calls = std::fs::read_to_string(&calls)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect();
        (
            out.status.success(),
            calls,
            std::fs::read_to_string(&lease).ok(),
        )
    }

    #[test]
    fn script_configures_and_records_the_lease() {
        let mut shells: Vec<Vec<&str>> = vec![vec!["/bin/sh"]];
        if Path::new(busybox()).exists() {
            shells.push(vec![busybox(), "sh"]);
        }
        for shell in shells {
            let dir = std::env::temp_dir().join(format!(
                "nh-script-{}-{}",
                std::process::id(),
                shell.len()
            ));
            std::fs::create_dir_all(&dir).expect("tmp");
            let env = [
                ("ip", "10.0.0.5"),
                ("mask", "24"),
                ("router", "10.0.0.1 10.0.0.254"),
                ("dns", "10.0.0.2"),
                ("mtu", "1400"),
                (
                    "staticroutes",
                    "169.254.169.254/32 0.0.0.0 10.9.0.0/16 192.0.2.1 0.0.0.0/0 10.0.0.1",
                ),
                ("lease", "600"),
                ("serverid", "10.0.0.1"),
            ];
            let (ok, calls, lease) = run_script(&shell, &dir, "bound", &env);
            assert!(ok, "{shell:?}: {calls:?}");
            let want = [
                "-4 -o addr show dev eth0",
                "addr del 10.0.0.99/24 dev eth0",
                "addr replace 10.0.0.5/24 dev eth0",
                "link set dev eth0 mtu 1400",
                "route replace default via 10.0.0.1 dev eth0",
                "route replace 169.254.169.254/32 dev eth0 scope link",
                "route replace 10.9.0.0/16 via 192.0.2.1 dev eth0",
                "route replace 10.9.0.0/16 via 192.0.2.1 dev eth0 onlink",
                "route replace 0.0.0.0/0 via 10.0.0.1 dev eth0",
            ];
            assert_eq!(calls, want, "{shell:?}");
            let lease = lease.expect("lease file written");
            let parsed = Lease::parse(&lease).expect("the script's lease parses");
            assert_eq!(parsed.ip, net("10.0.0.5/24"));
            assert_eq!(parsed.router, Some(ip("10.0.0.1")));
            assert_eq!(parsed.mtu, Some(1400));
            assert_eq!(parsed.routes.len(), 3);
            assert_eq!(parsed.lease_secs, Some(600));
            assert!(
                !std::fs::read_dir(&dir).expect("dir").any(|e| e
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .contains(".tmp.")),
                "no temporary file left"
            );

            // A renewal without option 121 and router: the old routes go.
            let (ok, calls, lease) = run_script(
                &shell,
                &dir,
                "renew",
                &[("ip", "10.0.0.5"), ("mask", "24"), ("lease", "600")],
            );
            assert!(ok, "{calls:?}");
            for gone in [
                "route del 169.254.169.254/32 dev eth0",
                "route del 10.9.0.0/16 dev eth0",
                "route del 0.0.0.0/0 dev eth0",
                "route del default dev eth0",
            ] {
                assert!(
                    calls.iter().any(|c| c == gone),
                    "{shell:?}: {gone} in {calls:?}"
                );
            }
            assert!(!calls.iter().any(|c| c.contains("mtu")), "{calls:?}");
            assert!(lease.expect("lease").contains("router=\n"));

            let (ok, calls, lease) = run_script(&shell, &dir, "leasefail", &[]);
            assert!(ok && calls.is_empty() && lease.is_some());
            let (ok, calls, lease) = run_script(&shell, &dir, "deconfig", &[]);
            assert!(ok, "{calls:?}");
            assert_eq!(
                calls,
                ["link set dev eth0 up", "-4 addr flush dev eth0"],
                "{shell:?}"
            );
            assert!(lease.is_none(), "deconfig removes the lease file");
            std::fs::remove_dir_all(&dir).expect("cleanup");
        }
    }

    #[test]
    fn script_is_rewritten_only_when_changed() {
        let dir = std::env::temp_dir().join(format!("nh-script-w-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let p = write_script(&dir).expect("write");
        let md = std::fs::metadata(&p).expect("stat");
        assert_eq!(md.permissions().mode() & 0o777, 0o755);
        std::fs::write(&p, "old").expect("clobber");
        write_script(&dir).expect("rewrite");
        assert_eq!(std::fs::read_to_string(&p).expect("read"), SCRIPT);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn tail_of_a_log() {
        let dir = std::env::temp_dir().join(format!("nh-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let p = dir.join("x.log");
        assert!(tail(&p, 3).contains("cannot read"));
        std::fs::write(&p, "").expect("write");
        assert!(tail(&p, 3).contains("empty"));
        std::fs::write(&p, "a\nb\nc\nd\n").expect("write");
        assert_eq!(tail(&p, 3), "b\nc\nd");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}

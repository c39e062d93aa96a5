//! VMs: a namespace `<prefix>-vm-<name>` attached to its host by a veth pair
//! whose host end is named after the port (as Nova names tap devices) and
//! whose VM end is `eth0`. A VM's address is static (`--ip`/`--gw`) or, by
//! default, comes from DHCP (see [`crate::dhcp`]).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

use crate::dhcp::Lease;
use crate::error::HarnessError;

/// An Ethernet address, written `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = HarnessError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| HarnessError::invalid("MAC address", s, reason);
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(bad("expected six hex octets like fa:16:3e:00:00:01"));
        }
        let mut b = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            if p.len() != 2 {
                return Err(bad("expected six hex octets like fa:16:3e:00:00:01"));
            }
            b[i] = u8::from_str_radix(p, 16).map_err(|_| bad("not hexadecimal"))?;
        }
        Ok(MacAddr(b))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Whether a VM runs a DHCP client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DhcpMode {
    /// DHCP unless the spec gives a static address (`addr`): the default.
    #[default]
    Auto,
    /// DHCP; the spec must not give `addr` or `gateway` (`--dhcp`).
    On,
    /// No DHCP client: the static `addr` if given, else no address at all
    /// (for tests that want a bare interface).
    Off,
}

/// What to create: see [`crate::Region::vm_create`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmSpec {
    /// VM name; its namespace is `<prefix>-vm-<name>`.
    pub name: String,
    /// Host logical name, e.g. `az1-c1`.
    pub host: String,
    /// Host-side veth name (the "tap" device), at most 15 characters, e.g. `tap1a2b3c4d-5e`.
    pub port: String,
    /// MAC of the VM's `eth0` (random if None).
    pub mac: Option<MacAddr>,
    /// Address of the VM's `eth0`, with the subnet's prefix length.
    pub addr: Option<Ipv4Network>,
    /// Default gateway (must be inside `addr`).
    pub gateway: Option<Ipv4Addr>,
    /// MTU of both ends (default 1500). A DHCP lease's MTU (option 26)
    /// then changes the VM's `eth0`.
    pub mtu: Option<u32>,
    /// DHCP client or not; by default DHCP when `addr` is None.
    pub dhcp: DhcpMode,
}

impl VmSpec {
    /// A spec with only the required fields.
    pub fn new(name: &str, host: &str, port: &str) -> VmSpec {
        VmSpec {
            name: name.to_string(),
            host: host.to_string(),
            port: port.to_string(),
            mac: None,
            addr: None,
            gateway: None,
            mtu: None,
            dhcp: DhcpMode::Auto,
        }
    }

    /// Whether the VM will run a DHCP client.
    pub fn uses_dhcp(&self) -> bool {
        match self.dhcp {
            DhcpMode::Auto => self.addr.is_none(),
            DhcpMode::On => true,
            DhcpMode::Off => false,
        }
    }

    /// Checks everything that can be checked without looking at the machine.
    pub(crate) fn validate(&self) -> Result<(), HarnessError> {
        let n = &self.name;
        if n.is_empty()
            || n.len() > 63
            || !n.as_bytes()[0].is_ascii_alphanumeric()
            || !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(HarnessError::invalid(
                "VM name",
                n,
                "must be 1 to 63 characters of [A-Za-z0-9_.-], starting alphanumeric",
            ));
        }
        let p = &self.port;
        if p.is_empty()
            || p.len() > 15
            || !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            || p.starts_with('.')
        {
            return Err(HarnessError::invalid(
                "port name",
                p,
                "must be 1 to 15 characters of [A-Za-z0-9_.-] (an interface name), e.g. tap1a2b3c4d-5e",
            ));
        }
        if ["lo", "eth0", "ext0"].contains(&p.as_str()) {
            return Err(HarnessError::invalid(
                "port name",
                p,
                "is a host interface of the harness",
            ));
        }
        if let Some(mac) = self.mac {
            if mac.0[0] & 1 != 0 {
                return Err(HarnessError::invalid(
                    "MAC address",
                    mac.to_string(),
                    "is a multicast address",
                ));
            }
            if mac.0 == [0; 6] {
                return Err(HarnessError::invalid(
                    "MAC address",
                    mac.to_string(),
                    "is all zeros",
                ));
            }
        }
        if let Some(mtu) = self.mtu {
            if !(68..=65535).contains(&mtu) {
                return Err(HarnessError::invalid(
                    "MTU",
                    mtu.to_string(),
                    "must be in 68..=65535",
                ));
            }
        }
        if self.dhcp == DhcpMode::On {
            if let Some(addr) = self.addr {
                return Err(HarnessError::invalid(
                    "VM address",
                    addr.to_string(),
                    "a static address (--ip) and DHCP (--dhcp) exclude each other: give one of them",
                ));
            }
        }
        if let Some(addr) = self.addr {
            if addr.prefix() < 31 && (addr.ip() == addr.network() || addr.ip() == addr.broadcast())
            {
                return Err(HarnessError::invalid(
                    "VM address",
                    addr.to_string(),
                    "is the network or broadcast address of its subnet",
                ));
            }
        }
        if let Some(gw) = self.gateway {
            let Some(addr) = self.addr else {
                return Err(HarnessError::invalid(
                    "gateway",
                    gw.to_string(),
                    "needs a static address (--ip) for the VM; with DHCP the gateway comes from the lease",
                ));
            };
            if !addr.contains(gw) || gw == addr.ip() {
                return Err(HarnessError::invalid(
                    "gateway",
                    gw.to_string(),
                    format!("must be another address inside the VM's subnet {addr}"),
                ));
            }
        }
        Ok(())
    }
}

/// A VM of the run, as recorded in the state file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vm {
    pub name: String,
    /// Host logical name.
    pub host: String,
    /// Host-side veth name, in the host's namespace.
    pub port: String,
    /// `<prefix>-vm-<name>`.
    pub netns: String,
    /// The MAC the VM's `eth0` actually has.
    pub mac: MacAddr,
    /// Static address (None for a DHCP VM: see [`crate::Region::vm_lease`]).
    pub addr: Option<Ipv4Network>,
    pub gateway: Option<Ipv4Addr>,
    pub mtu: u32,
    /// Whether the VM runs a DHCP client (false in state files written
    /// before DHCP existed).
    #[serde(default)]
    pub dhcp: bool,
}

impl Vm {
    /// Logical link name of the VM's veth pair (for `fail link`).
    pub fn link_name(&self) -> String {
        format!("vm-{}", self.name)
    }

    /// The ADDR column of listings: the static address, `-` for none,
    /// `dhcp` for a DHCP VM without a lease, `<leased address> (dhcp)`.
    pub fn addr_label(&self, lease: Option<&Lease>) -> String {
        match (self.dhcp, self.addr, lease) {
            (true, _, Some(l)) => format!("{} (dhcp)", l.ip),
            (true, _, None) => "dhcp".into(),
            (false, Some(a), _) => a.to_string(),
            (false, None, _) => "-".into(),
        }
    }

    /// Name of its DHCP client in the run (pid and log file name).
    pub(crate) fn dhcp_process(&self) -> String {
        dhcp_process(&self.name)
    }
}

/// Process name of VM `name`'s DHCP client: `vm-<name>-udhcpc`.
pub(crate) fn dhcp_process(name: &str) -> String {
    format!("vm-{name}-udhcpc")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parse_and_print() {
        let m: MacAddr = "FA:16:3e:00:0a:01".parse().expect("mac");
        assert_eq!(m.to_string(), "fa:16:3e:00:0a:01");
        assert_eq!("fa-16-3e-00-0a-01".parse::<MacAddr>().expect("dashes"), m);
        for bad in [
            "fa:16:3e:00:0a",
            "fa:16:3e:00:0a:zz",
            "fa:16:3e:00:0a:001",
            "",
        ] {
            let e = bad.parse::<MacAddr>().expect_err(bad);
            assert!(e.to_string().contains("MAC address"), "{e}");
        }
        let json = serde_json::to_string(&m).expect("ser");
        assert_eq!(json, "\"fa:16:3e:00:0a:01\"");
        assert_eq!(serde_json::from_str::<MacAddr>(&json).expect("de"), m);
    }

    #[test]
    fn spec_validation() {
        let ok = VmSpec {
            mac: Some("fa:16:3e:00:00:01".parse().expect("mac")),
            addr: Some("10.0.0.5/24".parse().expect("net")),
            gateway: Some("10.0.0.1".parse().expect("ip")),
            mtu: Some(1450),
            ..VmSpec::new("vm1", "az1-c1", "tap1a2b3c4d-5e")
        };
        ok.validate().expect("valid");
        let cases: Vec<(VmSpec, &str)> = vec![
            (
                VmSpec {
                    name: "".into(),
                    ..ok.clone()
                },
                "VM name",
            ),
            (
                VmSpec {
                    name: "a/b".into(),
                    ..ok.clone()
                },
                "VM name",
            ),
            (
                VmSpec {
                    port: "tap1a2b3c4d-5e00".into(),
                    ..ok.clone()
                },
                "port name",
            ),
            (
                VmSpec {
                    port: "eth0".into(),
                    ..ok.clone()
                },
                "port name",
            ),
            (
                VmSpec {
                    port: "ta p".into(),
                    ..ok.clone()
                },
                "port name",
            ),
            (
                VmSpec {
                    mac: Some(MacAddr([1, 0, 0, 0, 0, 1])),
                    ..ok.clone()
                },
                "multicast",
            ),
            (
                VmSpec {
                    mtu: Some(67),
                    ..ok.clone()
                },
                "MTU",
            ),
            (
                VmSpec {
                    gateway: Some("10.0.1.1".parse().expect("ip")),
                    ..ok.clone()
                },
                "gateway",
            ),
            (
                VmSpec {
                    addr: None,
                    ..ok.clone()
                },
                "gateway",
            ),
            (
                VmSpec {
                    addr: Some("10.0.0.0/24".parse().expect("net")),
                    ..ok.clone()
                },
                "network or broadcast",
            ),
        ];
        for (spec, want) in cases {
            let e = spec.validate().expect_err(want);
            assert!(e.to_string().contains(want), "{e} should mention {want}");
        }
    }

    #[test]
    fn dhcp_modes() {
        let bare = VmSpec::new("vm1", "az1-c1", "tap1");
        assert_eq!(bare.dhcp, DhcpMode::Auto);
        assert!(bare.uses_dhcp(), "DHCP by default");
        bare.validate().expect("valid");
        let fixed = VmSpec {
            addr: Some("10.0.0.5/24".parse().expect("net")),
            gateway: Some("10.0.0.1".parse().expect("ip")),
            ..bare.clone()
        };
        assert!(!fixed.uses_dhcp(), "a static address means no DHCP");
        fixed.validate().expect("valid");
        let on = VmSpec {
            dhcp: DhcpMode::On,
            ..bare.clone()
        };
        assert!(on.uses_dhcp());
        on.validate().expect("valid");
        let off = VmSpec {
            dhcp: DhcpMode::Off,
            ..bare.clone()
        };
        assert!(!off.uses_dhcp(), "a bare interface");
        off.validate().expect("valid");

        let e = VmSpec {
            dhcp: DhcpMode::On,
            ..fixed.clone()
        }
        .validate()
        .expect_err("--dhcp with --ip");
        let msg = e.to_string();
        assert!(
            msg.contains("--ip") && msg.contains("--dhcp") && msg.contains("exclude"),
            "{msg}"
        );
        let e = VmSpec {
            gateway: Some("10.0.0.1".parse().expect("ip")),
            ..on
        }
        .validate()
        .expect_err("--dhcp with --gw");
        assert!(e.to_string().contains("comes from the lease"), "{e}");
    }

    #[test]
    fn old_state_files_have_no_dhcp() {
        let old = r#"{"name":"web1","host":"az1-c1","port":"tap1","netns":"p-vm-web1",
            "mac":"fa:16:3e:00:00:01","addr":"10.0.0.5/24","gateway":"10.0.0.1","mtu":1500}"#;
        let vm: Vm = serde_json::from_str(old).expect("old format");
        assert!(!vm.dhcp);
        assert_eq!(vm.dhcp_process(), "vm-web1-udhcpc");
        assert_eq!(vm.addr_label(None), "10.0.0.5/24");
        let dhcp = Vm {
            dhcp: true,
            addr: None,
            ..vm.clone()
        };
        assert_eq!(dhcp.addr_label(None), "dhcp");
        let lease = Lease::parse("ip=10.0.0.7\nmask=24\n").expect("lease");
        assert_eq!(dhcp.addr_label(Some(&lease)), "10.0.0.7/24 (dhcp)");
        let again: Vm =
            serde_json::from_str(&serde_json::to_string(&vm).expect("ser")).expect("de");
        assert_eq!(again, vm);
    }
}

//! Names both sides of the contract derive the same way without asking each
//! other: the host device of a port, where a host's pinned dataplane state
//! lives, the files an agent writes in its state directory, and the text
//! form of a MAC address.

/// Nova's tap device name for a port: `tap` + the first 11 characters of its id.
pub fn tap_name(port_id: &str) -> String {
    format!("tap{}", &port_id[..port_id.len().min(11)])
}

/// Root under which every host's pinned state lives: `<root>/<host>/`.
pub const PIN_ROOT: &str = "/sys/fs/bpf/strato";

/// The load balancer's access log, in the agent's state directory.
pub const ACCESS_LOG: &str = "lb-access.log";

/// The agent's Prometheus text file, in its state directory.
pub const METRICS: &str = "metrics.prom";

/// `aa:bb:cc:dd:ee:ff` (either case) -> bytes; anything else: `None`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let v: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    v.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_names_are_nova_s() {
        assert_eq!(tap_name("0123456789abcdef"), "tap0123456789a");
        assert_eq!(tap_name("abc"), "tapabc");
    }

    #[test]
    fn macs_parse_or_are_refused() {
        assert_eq!(
            parse_mac("FA:16:3e:00:00:01"),
            Some([0xfa, 0x16, 0x3e, 0, 0, 1])
        );
        for bad in [
            "",
            "fa:16:3e:00:00",
            "fa:16:3e:00:00:01:02",
            "fa:16:3e:00:00:zz",
            "fa-16-3e-00-00-01",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }
}

//! IP address management for IPv4 subnets: CIDR checks, default gateway and
//! allocation pools, pool validation, picking a free address, MAC addresses.
//! Pure functions: callers pass what is allocated.

use std::{collections::BTreeSet, net::Ipv4Addr};

use ipnetwork::Ipv4Network;

use crate::{error::ApiError, model::AllocationPool};

/// The private ranges tenant subnets must lie in (seed: VPC limitations).
pub const PRIVATE: [&str; 3] = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"];

/// Parses a tenant subnet CIDR: canonical (no host bits), /8 to /29, inside
/// an RFC 1918 range.
pub fn parse_subnet_cidr(s: &str) -> Result<Ipv4Network, ApiError> {
    parse_cidr(s, true)
}

/// [`parse_subnet_cidr`]; `private`: must lie in an RFC 1918 range (an
/// external network's subnet, the elastic IP pool, need not).
pub fn parse_cidr(s: &str, private: bool) -> Result<Ipv4Network, ApiError> {
    let net: Ipv4Network = s.parse().map_err(|_| {
        if s.contains(':') {
            ApiError::invalid(format!(
                "Invalid input for cidr. Reason: '{s}': IPv6 subnets are not supported."
            ))
        } else {
            ApiError::invalid(format!(
                "Invalid input for cidr. Reason: '{s}' is not a valid IPv4 CIDR."
            ))
        }
    })?;
    if !s.contains('/') {
        return Err(ApiError::invalid(format!(
            "Invalid input for cidr. Reason: '{s}' has no prefix length."
        )));
    }
    if net.network() != net.ip() {
        return Err(ApiError::invalid(format!(
            "Invalid input for cidr. Reason: '{s}' isn't a recognized IP subnet cidr, '{}/{}' is recommended.",
            net.network(),
            net.prefix()
        )));
    }
    if net.prefix() > 29 {
        return Err(ApiError::invalid(format!(
            "Invalid input for cidr. Reason: '{s}' is too small: a subnet needs at least a /29 (gateway and hosts)."
        )));
    }
    let inside = PRIVATE.iter().any(|p| {
        let p: Ipv4Network = p.parse().expect("static CIDR");
        p.prefix() <= net.prefix() && p.contains(net.network())
    });
    if private && !inside {
        return Err(ApiError::invalid(format!(
            "Invalid input for cidr. Reason: '{s}' is not inside a private range ({}).",
            PRIVATE.join(", ")
        )));
    }
    Ok(net)
}

pub fn parse_ip(field: &str, s: &str) -> Result<Ipv4Addr, ApiError> {
    s.parse().map_err(|_| {
        ApiError::invalid(format!(
            "Invalid input for {field}. Reason: '{s}' is not a valid IPv4 address."
        ))
    })
}

/// Any IPv4 CIDR (host routes, static routes); canonical form required.
pub fn parse_any_cidr(field: &str, s: &str) -> Result<Ipv4Network, ApiError> {
    let net: Ipv4Network = s.parse().map_err(|_| {
        ApiError::invalid(format!(
            "Invalid input for {field}. Reason: '{s}' is not a valid IPv4 CIDR."
        ))
    })?;
    if !s.contains('/') || net.network() != net.ip() {
        return Err(ApiError::invalid(format!(
            "Invalid input for {field}. Reason: '{s}' is not a canonical CIDR, '{}/{}' is recommended.",
            net.network(),
            net.prefix()
        )));
    }
    Ok(net)
}

/// First and last usable host addresses.
pub fn host_range(net: Ipv4Network) -> (Ipv4Addr, Ipv4Addr) {
    let first = u32::from(net.network()) + 1;
    let last = u32::from(net.broadcast()) - 1;
    (Ipv4Addr::from(first), Ipv4Addr::from(last))
}

pub fn is_host_address(net: Ipv4Network, ip: Ipv4Addr) -> bool {
    let (a, b) = host_range(net);
    net.contains(ip) && ip >= a && ip <= b
}

/// Default allocation pools: every host address but the gateway.
pub fn default_pools(net: Ipv4Network, gateway: Option<Ipv4Addr>) -> Vec<AllocationPool> {
    let (first, last) = host_range(net);
    let (first, last) = (u32::from(first), u32::from(last));
    let mut pools = Vec::new();
    match gateway.map(u32::from) {
        Some(g) if g >= first && g <= last => {
            if g > first {
                pools.push((first, g - 1));
            }
            if g < last {
                pools.push((g + 1, last));
            }
        }
        _ => pools.push((first, last)),
    }
    pools
        .into_iter()
        .map(|(a, b)| AllocationPool {
            start: Ipv4Addr::from(a).to_string(),
            end: Ipv4Addr::from(b).to_string(),
        })
        .collect()
}

/// Validates pools against the subnet and gateway; returns them as ranges.
pub fn check_pools(
    net: Ipv4Network,
    gateway: Option<Ipv4Addr>,
    pools: &[AllocationPool],
) -> Result<Vec<(u32, u32)>, ApiError> {
    let mut ranges = Vec::new();
    for p in pools {
        let a = parse_ip("allocation_pools", &p.start)?;
        let b = parse_ip("allocation_pools", &p.end)?;
        if !is_host_address(net, a) || !is_host_address(net, b) {
            return Err(ApiError::bad_request(format!(
                "The allocation pool {}-{} spans beyond the subnet cidr {net}.",
                p.start, p.end
            )));
        }
        if a > b {
            return Err(ApiError::bad_request(format!(
                "The allocation pool {}-{} starts after it ends.",
                p.start, p.end
            )));
        }
        if let Some(g) = gateway {
            if g >= a && g <= b {
                return Err(ApiError::conflict(
                    "GatewayConflictWithAllocationPools",
                    format!(
                        "Gateway ip {g} conflicts with allocation pool {}-{}.",
                        p.start, p.end
                    ),
                ));
            }
        }
        ranges.push((u32::from(a), u32::from(b)));
    }
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        if w[1].0 <= w[0].1 {
            return Err(ApiError::bad_request(format!(
                "Found overlapping allocation pools: {}-{} and {}-{}.",
                Ipv4Addr::from(w[0].0),
                Ipv4Addr::from(w[0].1),
                Ipv4Addr::from(w[1].0),
                Ipv4Addr::from(w[1].1)
            )));
        }
    }
    Ok(ranges)
}

/// Lowest free address of the pools, skipping `taken`.
pub fn first_free(pools: &[AllocationPool], taken: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let mut ranges: Vec<(u32, u32)> = pools
        .iter()
        .filter_map(|p| {
            Some((
                u32::from(p.start.parse::<Ipv4Addr>().ok()?),
                u32::from(p.end.parse::<Ipv4Addr>().ok()?),
            ))
        })
        .collect();
    ranges.sort_unstable();
    for (a, b) in ranges {
        // Walk the taken addresses inside [a, b] in order: the first gap wins.
        let mut candidate = a;
        for t in taken.range(Ipv4Addr::from(a)..=Ipv4Addr::from(b)) {
            let t = u32::from(*t);
            if t > candidate {
                return Some(Ipv4Addr::from(candidate));
            }
            candidate = t + 1;
        }
        if candidate <= b {
            return Some(Ipv4Addr::from(candidate));
        }
    }
    None
}

/// A MAC address for a new port: OpenStack's `fa:16:3e` prefix and 24 random bits.
pub fn random_mac() -> String {
    let mut b = [0u8; 3];
    getrandom::fill(&mut b).expect("kernel randomness");
    format!("fa:16:3e:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2])
}

/// Normalises a MAC (lowercase, colon separated); rejects multicast and zero.
pub fn parse_mac(field: &str, s: &str) -> Result<String, ApiError> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    let bytes: Option<Vec<u8>> = if parts.len() == 6 {
        parts
            .iter()
            .map(|p| {
                if p.len() == 2 {
                    u8::from_str_radix(p, 16).ok()
                } else {
                    None
                }
            })
            .collect()
    } else {
        None
    };
    let bytes = bytes.ok_or_else(|| {
        ApiError::invalid(format!(
            "Invalid input for {field}. Reason: '{s}' is not a valid MAC address."
        ))
    })?;
    if bytes[0] & 1 == 1 || bytes.iter().all(|b| *b == 0) {
        return Err(ApiError::invalid(format!(
            "Invalid input for {field}. Reason: '{s}' is not a valid unicast MAC address."
        )));
    }
    Ok(bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(a: &str, b: &str) -> AllocationPool {
        AllocationPool {
            start: a.into(),
            end: b.into(),
        }
    }

    #[test]
    fn cidrs() {
        assert!(parse_subnet_cidr("10.0.0.0/24").is_ok());
        assert!(parse_subnet_cidr("172.16.5.0/24").is_ok());
        assert!(parse_subnet_cidr("192.168.0.0/16").is_ok());
        for bad in [
            "10.0.0.1/24",   // host bits
            "8.8.8.0/24",    // public
            "172.32.0.0/16", // just outside 172.16/12
            "10.0.0.0/30",   // too small
            "10.0.0.0",      // no prefix
            "fd00::/64",     // IPv6
            "10.0.0.0/33",   // bad prefix
            "garbage",
            "0.0.0.0/0",
        ] {
            assert!(parse_subnet_cidr(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn pools_and_gateway() {
        let n: Ipv4Network = "10.0.0.0/24".parse().unwrap();
        let gw: Ipv4Addr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            default_pools(n, Some(gw)),
            vec![pool("10.0.0.2", "10.0.0.254")]
        );
        assert_eq!(
            default_pools(n, Some("10.0.0.100".parse().unwrap())),
            vec![
                pool("10.0.0.1", "10.0.0.99"),
                pool("10.0.0.101", "10.0.0.254")
            ]
        );
        assert_eq!(default_pools(n, None), vec![pool("10.0.0.1", "10.0.0.254")]);
        assert!(check_pools(
            n,
            Some(gw),
            &[
                pool("10.0.0.2", "10.0.0.50"),
                pool("10.0.0.60", "10.0.0.70")
            ]
        )
        .is_ok());
        assert_eq!(
            check_pools(n, Some(gw), &[pool("10.0.0.1", "10.0.0.5")])
                .unwrap_err()
                .status,
            409
        );
        assert_eq!(
            check_pools(n, Some(gw), &[pool("10.0.0.2", "10.0.1.5")])
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            check_pools(n, Some(gw), &[pool("10.0.0.9", "10.0.0.5")])
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            check_pools(
                n,
                Some(gw),
                &[pool("10.0.0.2", "10.0.0.9"), pool("10.0.0.9", "10.0.0.20")]
            )
            .unwrap_err()
            .status,
            400
        );
        assert_eq!(
            check_pools(n, Some(gw), &[pool("10.0.0.0", "10.0.0.9")])
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            check_pools(n, Some(gw), &[pool("10.0.0.2", "10.0.0.255")])
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn free_addresses() {
        let pools = vec![pool("10.0.0.2", "10.0.0.4"), pool("10.0.0.10", "10.0.0.10")];
        let mut taken = BTreeSet::new();
        let mut got = Vec::new();
        while let Some(ip) = first_free(&pools, &taken) {
            got.push(ip.to_string());
            taken.insert(ip);
        }
        assert_eq!(got, vec!["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.10"]);
        taken.remove(&"10.0.0.3".parse().unwrap());
        assert_eq!(
            first_free(&pools, &taken),
            Some("10.0.0.3".parse().unwrap())
        );
    }

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("m", "FA-16-3E-00-00-01").unwrap(),
            "fa:16:3e:00:00:01"
        );
        for bad in [
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
            "fa:16:3e:00:00",
            "zz:16:3e:00:00:01",
            "fa:16:3e:00:00:001",
        ] {
            assert!(parse_mac("m", bad).is_err(), "{bad}");
        }
        let m = random_mac();
        assert!(m.starts_with("fa:16:3e:") && parse_mac("m", &m).is_ok());
    }
}

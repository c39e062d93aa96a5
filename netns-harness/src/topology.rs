//! The region file: TOML parsed with serde, then validated as a whole.
//!
//! Parsing happens in two steps. serde reads the file into `Raw*` structs
//! whose leaves are [`toml::Spanned`], which rejects syntax errors, unknown
//! fields, missing fields and wrong types. Validation then checks names,
//! CIDRs, overlaps, ranges and address-plan capacity, and reports the first
//! problem with the file, line and field path (`az[2].compute`, 1-based
//! indices, so `az[k]` is AZ k of the address plan). Nothing is ever created
//! from a file that did not validate completely.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::ops::Range;
use std::path::Path;

use ipnetwork::Ipv4Network;
use serde::Deserialize;
use toml::Spanned;

/// The compiled-in default region (`examples/region.toml`).
const DEFAULT_REGION: &str = include_str!("../../examples/region.toml");

/// Names of AZs, hosts, clients, sites and site hosts must not be one of
/// these: they are interface names, node names or link-name suffixes that the
/// address plan uses itself.
pub const RESERVED_NAMES: &[&str] = &[
    "lo", "fab", "gw", "spine", "internet", "inet", "vm", "wan", "wan0", "lan0", "eth0", "ext",
    "ext0",
];

/// Client names may be longer than other names (`client1`): a client's name
/// is only the internet router's interface towards it, and IFNAMSIZ allows 15.
pub const MAX_CLIENT_NAME: usize = 15;

/// Most AZs a region can have: the spine's /24 holds 128 /31 links.
pub const MAX_AZS: usize = 128;
/// Most hosts an AZ can have: the AZ's /24 holds 128 /31 links.
pub const MAX_HOSTS_PER_AZ: usize = 128;

/// A region file that failed to load or validate. The message always starts
/// with `file:line:` and names the field.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The file could not be read.
    #[error("{origin}: cannot read region file: {source}")]
    Read {
        origin: String,
        #[source]
        source: std::io::Error,
    },

    /// TOML syntax error or a schema error found by serde: unknown field,
    /// missing field, wrong type.
    #[error("{origin}:{line}:{column}: {field}: {message}")]
    Syntax {
        origin: String,
        line: usize,
        column: usize,
        field: String,
        message: String,
    },

    /// A semantic error found by validation.
    #[error("{origin}:{line}: {field}: {message}")]
    Invalid {
        origin: String,
        line: usize,
        field: String,
        message: String,
    },
}

impl TopologyError {
    /// The 1-based line the error points at (0 for read errors).
    pub fn line(&self) -> usize {
        match self {
            TopologyError::Read { .. } => 0,
            TopologyError::Syntax { line, .. } | TopologyError::Invalid { line, .. } => *line,
        }
    }

    /// The field path the error names (empty for read errors).
    pub fn field(&self) -> &str {
        match self {
            TopologyError::Read { .. } => "",
            TopologyError::Syntax { field, .. } | TopologyError::Invalid { field, .. } => field,
        }
    }
}

// ---------------------------------------------------------------- raw (serde)

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    region: Spanned<RawRegion>,
    #[serde(default)]
    az: Vec<Spanned<RawAz>>,
    internet: Spanned<RawInternet>,
    #[serde(default)]
    site: Vec<Spanned<RawSite>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegion {
    name: Spanned<String>,
    underlay: Spanned<String>,
    mtu: Spanned<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAz {
    name: Spanned<String>,
    #[serde(default)]
    compute: Vec<Spanned<String>>,
    #[serde(default)]
    gateway: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInternet {
    cidr: Spanned<String>,
    eip_pool: Spanned<String>,
    #[serde(default)]
    clients: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSite {
    name: Spanned<String>,
    lan: Spanned<String>,
    #[serde(default)]
    hosts: Vec<Spanned<String>>,
}

// ------------------------------------------------------------ validated form

/// One availability zone: its name and its hosts' short names, in file order
/// (compute hosts are numbered before gateways in the address plan).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Az {
    pub name: String,
    pub compute: Vec<String>,
    pub gateway: Vec<String>,
}

/// The internet side of the region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Internet {
    /// Internet router, clients, gateway hosts' external links, site gateways.
    pub cidr: Ipv4Network,
    /// Elastic IPs, routed by the internet router to all gateway hosts.
    pub eip_pool: Ipv4Network,
    /// Internet client names.
    pub clients: Vec<String>,
}

/// An on-premises site behind a gateway on the internet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    pub name: String,
    pub lan: Ipv4Network,
    pub hosts: Vec<String>,
}

/// A validated region file. Only [`Topology::parse`], [`Topology::load`] and
/// [`Topology::default_region`] make one, so every `Topology` fits the
/// address plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    origin: String,
    source: String,
    name: String,
    underlay: Ipv4Network,
    mtu: u32,
    azs: Vec<Az>,
    internet: Internet,
    sites: Vec<Site>,
}

impl Topology {
    /// Reads and validates a region file.
    pub fn load(path: &Path) -> Result<Topology, TopologyError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Read {
            origin: origin.clone(),
            source,
        })?;
        Topology::parse(&text, &origin)
    }

    /// Validates region-file text; `origin` (usually the file name) starts
    /// every error message.
    pub fn parse(text: &str, origin: &str) -> Result<Topology, TopologyError> {
        let cx = Cx { origin, text };
        let raw: RawFile = toml::from_str(text).map_err(|e| cx.syntax(&e))?;
        cx.validate(raw)
    }

    /// The default region, `examples/region.toml`, compiled in.
    pub fn default_region() -> Topology {
        Topology::parse(DEFAULT_REGION, "examples/region.toml")
            .expect("the compiled-in examples/region.toml validates")
    }

    /// Where the topology came from (file name).
    pub fn origin(&self) -> &str {
        &self.origin
    }
    /// The region file text it was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }
    /// `region.name`.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// `region.underlay`.
    pub fn underlay(&self) -> Ipv4Network {
        self.underlay
    }
    /// `region.mtu`, the MTU of the underlay links.
    pub fn mtu(&self) -> u32 {
        self.mtu
    }
    /// The AZs in file order (AZ k of the address plan is `azs()[k-1]`).
    pub fn azs(&self) -> &[Az] {
        &self.azs
    }
    /// `[internet]`.
    pub fn internet(&self) -> &Internet {
        &self.internet
    }
    /// The on-premises sites in file order.
    pub fn sites(&self) -> &[Site] {
        &self.sites
    }
}

// ---------------------------------------------------------------- validation

/// Validation context: file name and text, to turn spans into lines.
struct Cx<'a> {
    origin: &'a str,
    text: &'a str,
}

impl Cx<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn invalid(
        &self,
        span: Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> TopologyError {
        TopologyError::Invalid {
            origin: self.origin.to_string(),
            line: self.line_of(span.start),
            field: field.into(),
            message: message.into(),
        }
    }

    fn syntax(&self, e: &toml::de::Error) -> TopologyError {
        let offset = e.span().map(|s| s.start).unwrap_or(0);
        let line = self.line_of(offset);
        let line_start = self.text[..offset.min(self.text.len())]
            .rfind('\n')
            .map(|i| i + 1)
            .unwrap_or(0);
        let column = offset.saturating_sub(line_start) + 1;
        let message = e.message().trim().replace('\n', "; ");
        let field = field_from_message(&message)
            .map(|f| match table_at(self.text, offset) {
                Some(t) if !t.is_empty() => format!("{t}.{f}"),
                _ => f,
            })
            .or_else(|| key_at(self.text, offset))
            .unwrap_or_else(|| "(document)".to_string());
        TopologyError::Syntax {
            origin: self.origin.to_string(),
            line,
            column,
            field,
            message,
        }
    }

    fn validate(&self, raw: RawFile) -> Result<Topology, TopologyError> {
        let mut names = Names::default();

        // [region]
        let region = raw.region.into_inner();
        let name = region.name.get_ref().trim().to_string();
        if name.is_empty()
            || name.len() > 63
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        {
            return Err(self.invalid(
                region.name.span(),
                "region.name",
                format!(
                    "{:?} must be 1 to 63 characters of [a-z0-9.-]",
                    region.name.get_ref()
                ),
            ));
        }
        let underlay = self.cidr(&region.underlay, "region.underlay")?;
        let mtu = *region.mtu.get_ref();
        if !(1280..=9000).contains(&mtu) {
            return Err(self.invalid(
                region.mtu.span(),
                "region.mtu",
                format!("{mtu} is out of range 1280..=9000"),
            ));
        }
        if underlay.prefix() > 23 {
            return Err(self.invalid(
                region.underlay.span(),
                "region.underlay",
                format!("{underlay} is too small: it must hold at least two /24s (the spine's and one AZ's), i.e. be /23 or larger"),
            ));
        }

        // [[az]]
        if raw.az.is_empty() {
            return Err(self.invalid(0..0, "az", "at least one [[az]] table is required"));
        }
        let az_capacity = ((1usize << (24 - underlay.prefix())) - 1).min(MAX_AZS);
        let mut azs = Vec::new();
        for (k, az) in raw.az.iter().enumerate() {
            let az_span = az.span();
            let az = az.get_ref();
            let path = format!("az[{}]", k + 1);
            let az_name = self.name(&az.name, &format!("{path}.name"))?;
            names.zone(self, &az.name, &format!("{path}.name"), "AZ/site/client")?;
            if k >= az_capacity {
                return Err(self.invalid(
                    az.name.span(),
                    format!("{path}.name"),
                    format!(
                        "AZ {az_name:?} is AZ number {} but the address plan fits only {az_capacity}: \
                         underlay {underlay} has {} /24s, the first is for spine links",
                        k + 1,
                        1usize << (24 - underlay.prefix())
                    ),
                ));
            }
            if az.compute.is_empty() && az.gateway.is_empty() {
                let span = if az.name.span().start > 0 {
                    az.name.span()
                } else {
                    az_span
                };
                return Err(self.invalid(
                    span,
                    format!("{path}.compute"),
                    format!("AZ {az_name:?} has no hosts: `compute` and `gateway` are both empty or missing"),
                ));
            }
            let mut seen = HashMap::new();
            let place = format!("AZ {az_name:?}");
            let compute =
                self.unique_hosts(&az.compute, &format!("{path}.compute"), &mut seen, &place)?;
            let gateway =
                self.unique_hosts(&az.gateway, &format!("{path}.gateway"), &mut seen, &place)?;
            if compute.len() + gateway.len() > MAX_HOSTS_PER_AZ {
                let last = az.gateway.last().or(az.compute.last()).expect("non-empty");
                return Err(self.invalid(
                    last.span(),
                    format!("{path}.gateway"),
                    format!(
                        "AZ {az_name:?} has {} hosts but its /24 fits only {MAX_HOSTS_PER_AZ} /31 links",
                        compute.len() + gateway.len()
                    ),
                ));
            }
            azs.push(Az {
                name: az_name,
                compute,
                gateway,
            });
        }

        // [internet]
        let inet_span = raw.internet.span();
        let inet = raw.internet.into_inner();
        let cidr = self.cidr(&inet.cidr, "internet.cidr")?;
        let eip_pool = self.cidr(&inet.eip_pool, "internet.eip_pool")?;
        let mut clients = Vec::new();
        for (i, c) in inet.clients.iter().enumerate() {
            let f = format!("internet.clients[{}]", i + 1);
            clients.push(self.name_max(c, &f, MAX_CLIENT_NAME)?);
            names.zone(self, c, &f, "AZ/site/client")?;
        }

        // [[site]]
        let mut sites = Vec::new();
        let mut site_lans = Vec::new();
        for (s, site) in raw.site.iter().enumerate() {
            let site = site.get_ref();
            let path = format!("site[{}]", s + 1);
            let site_name = self.name(&site.name, &format!("{path}.name"))?;
            names.zone(self, &site.name, &format!("{path}.name"), "AZ/site/client")?;
            let lan = self.cidr(&site.lan, &format!("{path}.lan"))?;
            let hosts = self.unique_hosts(
                &site.hosts,
                &format!("{path}.hosts"),
                &mut HashMap::new(),
                &format!("site {site_name:?}"),
            )?;
            // network, gateway (.1), hosts, broadcast
            let room = if lan.prefix() >= 31 {
                0
            } else {
                (1u64 << (32 - lan.prefix())) - 3
            };
            if hosts.len() as u64 > room {
                return Err(self.invalid(
                    site.lan.span(),
                    format!("{path}.lan"),
                    format!(
                        "{lan} fits {room} site hosts besides the gateway, the site has {}",
                        hosts.len()
                    ),
                ));
            }
            site_lans.push((format!("{path}.lan"), site.lan.span(), lan));
            sites.push(Site {
                name: site_name,
                lan,
                hosts,
            });
        }

        // Ranges must not overlap.
        let mut ranges = vec![
            (
                "region.underlay".to_string(),
                region.underlay.span(),
                underlay,
            ),
            ("internet.cidr".to_string(), inet.cidr.span(), cidr),
            (
                "internet.eip_pool".to_string(),
                inet.eip_pool.span(),
                eip_pool,
            ),
        ];
        ranges.extend(site_lans);
        for (i, (field, span, net)) in ranges.iter().enumerate() {
            for (other_field, other_span, other) in &ranges[..i] {
                if overlaps(*net, *other) {
                    return Err(self.invalid(
                        span.clone(),
                        field.clone(),
                        format!(
                            "{net} overlaps {other_field} {other} (line {})",
                            self.line_of(other_span.start)
                        ),
                    ));
                }
            }
        }

        // Internet /31 links: gateways, clients, sites.
        let gateways: usize = azs.iter().map(|a| a.gateway.len()).sum();
        let links = gateways + clients.len() + sites.len();
        let room = if cidr.prefix() >= 32 {
            0
        } else {
            1usize << (31 - cidr.prefix())
        };
        if links > room {
            let span = if inet.cidr.span().start > 0 {
                inet.cidr.span()
            } else {
                inet_span
            };
            return Err(self.invalid(
                span,
                "internet.cidr",
                format!(
                    "{cidr} fits {room} /31 links but the plan needs {links} \
                     ({gateways} gateway hosts + {} clients + {} sites)",
                    clients.len(),
                    sites.len()
                ),
            ));
        }

        Ok(Topology {
            origin: self.origin.to_string(),
            source: self.text.to_string(),
            name,
            underlay,
            mtu: mtu as u32,
            azs,
            internet: Internet {
                cidr,
                eip_pool,
                clients,
            },
            sites,
        })
    }

    /// A node name: `[a-z][a-z0-9]{0,5}`, not reserved.
    /// The host names in `list` (fields `{path}[1]`, ...), each one new to
    /// `seen` (name -> line): a repeated name is an error in `place`.
    fn unique_hosts(
        &self,
        list: &[Spanned<String>],
        path: &str,
        seen: &mut HashMap<String, usize>,
        place: &str,
    ) -> Result<Vec<String>, TopologyError> {
        let mut out = Vec::new();
        for (i, h) in list.iter().enumerate() {
            let f = format!("{path}[{}]", i + 1);
            let n = self.name(h, &f)?;
            if let Some(first) = seen.insert(n.clone(), self.line_of(h.span().start)) {
                return Err(self.invalid(
                    h.span(),
                    f,
                    format!("duplicate host name {n:?} in {place} (first at line {first})"),
                ));
            }
            out.push(n);
        }
        Ok(out)
    }

    fn name(&self, value: &Spanned<String>, field: &str) -> Result<String, TopologyError> {
        self.name_max(value, field, 6)
    }

    /// A name `[a-z][a-z0-9]{0,max-1}`, not reserved.
    fn name_max(
        &self,
        value: &Spanned<String>,
        field: &str,
        max: usize,
    ) -> Result<String, TopologyError> {
        let n = value.get_ref();
        if !valid_name(n, max) {
            return Err(self.invalid(
                value.span(),
                field,
                format!("name {n:?} does not match [a-z][a-z0-9]{{0,{}}}", max - 1),
            ));
        }
        if RESERVED_NAMES.contains(&n.as_str()) {
            return Err(self.invalid(
                value.span(),
                field,
                format!(
                    "name {n:?} is reserved (reserved: {})",
                    RESERVED_NAMES.join(" ")
                ),
            ));
        }
        Ok(n.clone())
    }

    /// A CIDR `a.b.c.d/len` without host bits.
    fn cidr(&self, value: &Spanned<String>, field: &str) -> Result<Ipv4Network, TopologyError> {
        let s = value.get_ref();
        let (addr, len) = s.split_once('/').ok_or_else(|| {
            self.invalid(
                value.span(),
                field,
                format!("bad CIDR {s:?}: expected a.b.c.d/len"),
            )
        })?;
        let addr: Ipv4Addr = addr.parse().map_err(|e| {
            self.invalid(
                value.span(),
                field,
                format!("bad CIDR {s:?}: address {addr:?}: {e}"),
            )
        })?;
        let len: u8 = len.parse().ok().filter(|l| *l <= 32).ok_or_else(|| {
            self.invalid(
                value.span(),
                field,
                format!("bad CIDR {s:?}: prefix length {len:?} is not 0..=32"),
            )
        })?;
        let net = Ipv4Network::new(addr, len).expect("len checked");
        if net.network() != addr {
            return Err(self.invalid(
                value.span(),
                field,
                format!(
                    "bad CIDR {s:?}: host bits are set (did you mean {}/{len}?)",
                    net.network()
                ),
            ));
        }
        Ok(net)
    }
}

/// AZ, site and client names share namespace names and internet-router
/// interface names, so they must be distinct from each other.
#[derive(Default)]
struct Names {
    zones: HashMap<String, usize>,
}

impl Names {
    fn zone(
        &mut self,
        cx: &Cx,
        value: &Spanned<String>,
        field: &str,
        kind: &str,
    ) -> Result<(), TopologyError> {
        let line = cx.line_of(value.span().start);
        if let Some(first) = self.zones.insert(value.get_ref().clone(), line) {
            return Err(cx.invalid(
                value.span(),
                field,
                format!(
                    "duplicate {kind} name {:?} (first at line {first})",
                    value.get_ref()
                ),
            ));
        }
        Ok(())
    }
}

/// `[a-z][a-z0-9]{0,max-1}`.
pub(crate) fn valid_name(n: &str, max: usize) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && b[0].is_ascii_lowercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// Whether two networks share any address.
pub(crate) fn overlaps(a: Ipv4Network, b: Ipv4Network) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

/// The field named in a serde message (`unknown field `x``, `missing field `x``).
fn field_from_message(message: &str) -> Option<String> {
    for marker in ["unknown field `", "missing field `", "duplicate field `"] {
        if let Some(rest) = message.split(marker).nth(1) {
            return rest.split('`').next().map(str::to_string);
        }
    }
    None
}

/// The dotted `table.key` of the `key = value` line containing `offset`.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let end = text[offset..]
        .find('\n')
        .map(|i| offset + i)
        .unwrap_or(text.len());
    let line = &text[start..end];
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    if key.is_empty()
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
    {
        return None;
    }
    Some(match table_at(text, start) {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key.to_string(),
    })
}

/// The name of the `[table]` / `[[table]]` header governing `offset`.
fn table_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    // A span on a header line itself belongs to that header.
    let end = text[offset..]
        .find('\n')
        .map(|i| offset + i)
        .unwrap_or(text.len());
    text[..end]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| {
            l.trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = include_str!("../../examples/region.toml");

    fn err(text: &str) -> TopologyError {
        match Topology::parse(text, "t.toml") {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => e,
        }
    }

    /// Asserts the error names the file, the line and the field.
    fn assert_names(e: &TopologyError, line: usize, field: &str) {
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("t.toml:{line}:")),
            "wrong line in {msg:?} (want {line})"
        );
        assert!(msg.contains(field), "field {field:?} not named in {msg:?}");
        assert_eq!(e.line(), line, "{msg}");
    }

    /// A small valid file to mutate; line numbers below refer to it.
    const BASE: &str = r#"[region]
name = "r"
underlay = "10.0.0.0/16"
mtu = 1500

[[az]]
name = "az1"
compute = ["c1", "c2"]
gateway = ["gw1"]

[internet]
cidr = "203.0.113.0/24"
eip_pool = "198.51.100.0/24"
clients = ["cl1"]

[[site]]
name = "op"
lan = "172.16.0.0/24"
hosts = ["h1"]
"#;

    fn with(from: &str, to: &str) -> String {
        assert!(BASE.contains(from), "{from:?} not in BASE");
        BASE.replacen(from, to, 1)
    }

    #[test]
    fn default_file_parses() {
        let t = Topology::parse(GOOD, "examples/region.toml").expect("default region validates");
        assert_eq!(t.name(), "eu-west-0");
        assert_eq!(t.underlay().to_string(), "198.18.0.0/16");
        assert_eq!(t.mtu(), 1500);
        assert_eq!(t.azs().len(), 2);
        assert_eq!(t.azs()[1].compute, vec!["c1", "c2"]);
        assert_eq!(t.azs()[1].gateway, vec!["gw1"]);
        assert_eq!(t.internet().clients, vec!["client1"]);
        assert_eq!(t.sites()[0].lan.to_string(), "172.16.200.0/24");
        assert_eq!(Topology::default_region(), t.clone());
        Topology::parse(BASE, "t.toml").expect("BASE validates");
    }

    // Bad inputs tried, one class each:
    //   syntax: `mtu = = 3`, unterminated string, `[[az]` header
    //   unknown field: `mtus = 1` in [region], `hosts = []` in [[az]], `[extra]` table
    //   missing field: no `underlay`, AZ without `name`, no `eip_pool`, no [internet]
    //   wrong type: `mtu = "big"`
    //   bad CIDR: "10.0.0.0/33", "10.0.0/16", "banana", "10.0.1.0/16" (host bits)
    //   duplicate names: AZ twice, host twice in an AZ (also compute vs gateway),
    //     client twice, site twice, site named like an AZ, site host twice
    //   bad names: "C1", "1c", "toolong1", "a-b", reserved "spine", a 16-char client
    //   AZ with no hosts: both lists empty, both missing
    //   overlaps: underlay vs internet, eip_pool inside internet, site lan inside
    //     underlay, two site lans
    //   mtu: 1279, 9001, -1
    //   capacity: 4 AZs in a /22 underlay (fits 3), 129 hosts in one AZ,
    //     internet /30 with 3 links, site /30 with 2 hosts, /24 underlay

    #[test]
    fn syntax_errors_name_line_and_key() {
        let e = err(&with("mtu = 1500", "mtu = = 3"));
        assert!(matches!(e, TopologyError::Syntax { .. }), "{e}");
        assert_names(&e, 4, "region.mtu");
        let e = err(&with("name = \"az1\"", "name = \"az1"));
        assert_names(&e, 7, "name");
        let e = err(&with("[[az]]", "[[az]"));
        assert_eq!(e.line(), 6, "{e}");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let e = err(&with("mtu = 1500", "mtu = 1500\nmtus = 1"));
        assert_names(&e, 5, "mtus");
        assert!(e.to_string().contains("region.mtus"), "{e}");
        let e = err(&with(
            "gateway = [\"gw1\"]",
            "gateway = [\"gw1\"]\nhosts = []",
        ));
        assert_names(&e, 10, "hosts");
        let e = err(&format!("{BASE}\n[extra]\nx = 1\n"));
        assert_names(&e, 21, "extra");
    }

    #[test]
    fn missing_fields_are_rejected() {
        let e = err(&with("underlay = \"10.0.0.0/16\"\n", ""));
        assert!(e.to_string().contains("missing field `underlay`"), "{e}");
        assert_names(&e, 1, "underlay");
        let e = err(&with("name = \"az1\"\n", ""));
        assert!(e.to_string().contains("missing field `name`"), "{e}");
        assert_names(&e, 6, "name");
        let e = err(&with("eip_pool = \"198.51.100.0/24\"\n", ""));
        assert_names(&e, 11, "eip_pool");
        let e = err(&with(
            "[internet]\ncidr = \"203.0.113.0/24\"\neip_pool = \"198.51.100.0/24\"\nclients = [\"cl1\"]\n",
            "",
        ));
        assert!(e.to_string().contains("internet"), "{e}");
    }

    #[test]
    fn wrong_types_name_the_key() {
        let e = err(&with("mtu = 1500", "mtu = \"big\""));
        assert_names(&e, 4, "region.mtu");
    }

    #[test]
    fn bad_cidrs_are_rejected() {
        for bad in ["10.0.0.0/33", "10.0.0/16", "banana", "10.0.1.0/16"] {
            let e = err(&with("\"10.0.0.0/16\"", &format!("{bad:?}")));
            assert_names(&e, 3, "region.underlay");
            assert!(e.to_string().contains("bad CIDR"), "{e}");
            assert!(e.to_string().contains(bad), "{e}");
        }
        let e = err(&with("\"172.16.0.0/24\"", "\"172.16.0.0/\""));
        assert_names(&e, 18, "site[1].lan");
        let e = err(&with("\"198.51.100.0/24\"", "\"198.51.100.1/24\""));
        assert_names(&e, 13, "internet.eip_pool");
        assert!(
            e.to_string().contains("198.51.100.0/24"),
            "suggests the network: {e}"
        );
    }

    #[test]
    fn duplicate_names_are_rejected() {
        let two_azs = with(
            "[internet]",
            "[[az]]\nname = \"az1\"\ncompute = [\"c1\"]\n\n[internet]",
        );
        let e = err(&two_azs);
        assert_names(&e, 12, "az[2].name");
        assert!(
            e.to_string().contains("duplicate") && e.to_string().contains("line 7"),
            "{e}"
        );

        let e = err(&with(
            "compute = [\"c1\", \"c2\"]",
            "compute = [\"c1\", \"c1\"]",
        ));
        assert_names(&e, 8, "az[1].compute[2]");
        let e = err(&with("gateway = [\"gw1\"]", "gateway = [\"c2\"]"));
        assert_names(&e, 9, "az[1].gateway[1]");
        let e = err(&with("clients = [\"cl1\"]", "clients = [\"cl1\", \"cl1\"]"));
        assert_names(&e, 14, "internet.clients[2]");
        let e = err(&with("name = \"op\"", "name = \"az1\""));
        assert_names(&e, 17, "site[1].name");
        let e = err(&with("hosts = [\"h1\"]", "hosts = [\"h1\", \"h1\"]"));
        assert_names(&e, 19, "site[1].hosts[2]");
        let e = err(&format!(
            "{BASE}\n[[site]]\nname = \"op\"\nlan = \"172.17.0.0/24\"\n"
        ));
        assert_names(&e, 22, "site[2].name");
    }

    #[test]
    fn bad_names_are_rejected() {
        for bad in ["C1", "1c", "toolong1", "a-b", ""] {
            let e = err(&with("[\"c1\", \"c2\"]", &format!("[{bad:?}, \"c2\"]")));
            assert_names(&e, 8, "az[1].compute[1]");
            assert!(e.to_string().contains("[a-z][a-z0-9]{0,5}"), "{e}");
        }
        let e = err(&with("name = \"az1\"", "name = \"spine\""));
        assert_names(&e, 7, "az[1].name");
        assert!(e.to_string().contains("reserved"), "{e}");
        let e = err(&with("[\"cl1\"]", "[\"client1234567890\"]"));
        assert_names(&e, 14, "internet.clients[1]");
        assert!(e.to_string().contains("[a-z][a-z0-9]{0,14}"), "{e}");
        Topology::parse(&with("[\"cl1\"]", "[\"client123456789\"]"), "t.toml")
            .expect("15-character client name");
        let e = err(&with("name = \"r\"", "name = \"Bad Name\""));
        assert_names(&e, 2, "region.name");
    }

    #[test]
    fn az_without_hosts_is_rejected() {
        let e = err(&with(
            "compute = [\"c1\", \"c2\"]\ngateway = [\"gw1\"]",
            "compute = []\ngateway = []",
        ));
        assert_names(&e, 7, "az[1].compute");
        assert!(e.to_string().contains("no hosts"), "{e}");
        let e = err(&with(
            "compute = [\"c1\", \"c2\"]\ngateway = [\"gw1\"]\n",
            "",
        ));
        assert_names(&e, 7, "az[1].compute");
    }

    #[test]
    fn overlapping_ranges_are_rejected() {
        let e = err(&with("cidr = \"203.0.113.0/24\"", "cidr = \"10.0.5.0/24\""));
        assert_names(&e, 12, "internet.cidr");
        assert!(
            e.to_string()
                .contains("overlaps region.underlay 10.0.0.0/16 (line 3)"),
            "{e}"
        );
        let e = err(&with("\"198.51.100.0/24\"", "\"203.0.113.128/25\""));
        assert_names(&e, 13, "internet.eip_pool");
        assert!(e.to_string().contains("internet.cidr"), "{e}");
        let e = err(&with("\"172.16.0.0/24\"", "\"10.0.200.0/24\""));
        assert_names(&e, 18, "site[1].lan");
        let e = err(&format!(
            "{BASE}\n[[site]]\nname = \"op2\"\nlan = \"172.16.0.0/16\"\n"
        ));
        assert_names(&e, 23, "site[2].lan");
        assert!(e.to_string().contains("site[1].lan"), "{e}");
    }

    #[test]
    fn mtu_range_is_enforced() {
        for bad in ["1279", "9001", "-1"] {
            let e = err(&with("mtu = 1500", &format!("mtu = {bad}")));
            assert_names(&e, 4, "region.mtu");
            assert!(e.to_string().contains("1280..=9000"), "{e}");
        }
        for good in ["1280", "9000"] {
            Topology::parse(&with("mtu = 1500", &format!("mtu = {good}")), "t.toml")
                .expect("mtu in range");
        }
    }

    #[test]
    fn capacity_is_enforced() {
        // A /22 holds 4 /24s: spine + 3 AZs.
        let mut text = with("10.0.0.0/16", "10.0.0.0/22");
        for k in 2..=4 {
            text = text.replacen(
                "[internet]",
                &format!("[[az]]\nname = \"az{k}\"\ncompute = [\"c1\"]\n\n[internet]"),
                1,
            );
        }
        let e = err(&text);
        assert_names(&e, 20, "az[4].name");
        assert!(e.to_string().contains("fits only 3"), "{e}");

        let many: Vec<String> = (0..129).map(|i| format!("\"c{i}\"")).collect();
        let e = err(&with(
            "compute = [\"c1\", \"c2\"]",
            &format!("compute = [{}]", many.join(", ")),
        ));
        assert_names(&e, 9, "az[1].gateway");
        assert!(e.to_string().contains("130 hosts"), "{e}");

        // /30 = two /31s; the plan needs gw1 + cl1 + op = 3.
        let e = err(&with("\"203.0.113.0/24\"", "\"203.0.113.0/30\""));
        assert_names(&e, 12, "internet.cidr");
        assert!(e.to_string().contains("needs 3"), "{e}");

        let e = err(&with(
            "\"172.16.0.0/24\"\nhosts = [\"h1\"]",
            "\"172.16.0.0/30\"\nhosts = [\"h1\", \"h2\"]",
        ));
        assert_names(&e, 18, "site[1].lan");

        let e = err(&with("10.0.0.0/16", "10.0.0.0/24"));
        assert_names(&e, 3, "region.underlay");
    }

    #[test]
    fn at_least_one_az() {
        let text = with(
            "[[az]]\nname = \"az1\"\ncompute = [\"c1\", \"c2\"]\ngateway = [\"gw1\"]\n",
            "",
        );
        let e = err(&text);
        assert!(e.to_string().contains("az"), "{e}");
    }

    #[test]
    fn load_reports_missing_file() {
        let e = Topology::load(Path::new("/nonexistent/region.toml")).expect_err("no such file");
        assert!(
            e.to_string()
                .starts_with("/nonexistent/region.toml: cannot read"),
            "{e}"
        );
    }
}

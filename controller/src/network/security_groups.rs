//! Security groups and their rules, as Neutron's `securitygroups_db` has
//! them: every project gets a `default` group on first use (its members may
//! talk to each other, everything may leave), every new group starts with
//! "any egress" rules, rules are validated and de-duplicated exactly as
//! Neutron does, and deleting a group takes its rules and the rules of other
//! groups that name it as their remote group along (Neutron's foreign keys).

use std::collections::{HashMap, HashSet};

use ipnetwork::IpNetwork;
use serde_json::{Map, Value};

use super::{
    creating, find, find_own, new_meta, owner, quotas, render_meta, require_write, update_attrs,
    updated, writable, Attrs, Edit, Made,
};
use crate::{
    auth::Auth,
    error::ApiError,
    model::{
        Change, Direction, Ethertype, Kind, Object, SecurityGroup, SecurityGroupRule,
        PROTOCOL_NAMES,
    },
    state::State,
};

/// Name of every project's default group (reserved: no other group may
/// take it, the default group may not be renamed).
pub const DEFAULT_NAME: &str = "default";
const DEFAULT_DESCRIPTION: &str = "Default security group";

/// Protocols whose rules may carry a port range.
const PORT_PROTOCOLS: [u8; 5] = [6, 17, 132, 136, 33];
const PORT_PROTOCOL_NAMES: &str = "TCP, UDP, SCTP, UDPLITE, DCCP";
/// Protocols that only exist over IPv6 (Neutron's
/// `_validate_ethertype_and_protocol`).
const IPV6_ONLY: [&str; 13] = [
    "ipv6-encap",
    "ipv6-frag",
    "ipv6-icmp",
    "icmpv6",
    "ipv6-nonxt",
    "ipv6-opts",
    "ipv6-route",
    "41",
    "44",
    "58",
    "59",
    "60",
    "43",
];

fn group_not_found(id: &str) -> ApiError {
    ApiError::new(
        404,
        "SecurityGroupNotFound",
        format!("Security group {id} does not exist"),
    )
}

fn rule_not_found(id: &str) -> ApiError {
    ApiError::new(
        404,
        "SecurityGroupRuleNotFound",
        format!("Security group rule {id} does not exist"),
    )
}

pub fn visible(auth: &Auth, g: &SecurityGroup) -> bool {
    auth.can_see(&g.meta.project_id)
}

pub fn get<'s>(state: &'s State, auth: &Auth, id: &str) -> Result<&'s SecurityGroup, ApiError> {
    find(state, id, |g| visible(auth, g), || group_not_found(id))
}

pub fn get_rule<'s>(
    state: &'s State,
    auth: &Auth,
    id: &str,
) -> Result<&'s SecurityGroupRule, ApiError> {
    find_own(state, auth, id, || rule_not_found(id))
}

pub fn is_default(g: &SecurityGroup) -> bool {
    g.meta.name == DEFAULT_NAME
}

/// The project's default group, if it has one.
pub fn default_group<'s>(state: &'s State, project: &str) -> Option<&'s SecurityGroup> {
    state
        .security_groups
        .values()
        .find(|g| g.meta.project_id == project && is_default(g))
}

fn new_rule(
    group: &SecurityGroup,
    direction: Direction,
    ethertype: Ethertype,
    remote_group_id: Option<String>,
) -> SecurityGroupRule {
    SecurityGroupRule {
        meta: new_meta(group.meta.project_id.clone(), None, None),
        security_group_id: group.meta.id.clone(),
        direction,
        ethertype,
        protocol: None,
        port_range_min: None,
        port_range_max: None,
        remote_ip_prefix: None,
        remote_group_id,
    }
}

/// A new group and the rules Neutron gives it: any egress (IPv4 and IPv6),
/// and for the default group also any ingress from its own members.
fn new_group(
    project: String,
    name: Option<String>,
    description: Option<String>,
    stateful: bool,
) -> Vec<Change> {
    let g = SecurityGroup {
        meta: new_meta(project, name, description),
        stateful,
    };
    let mut rules = Vec::new();
    for e in [Ethertype::IPv4, Ethertype::IPv6] {
        if is_default(&g) {
            rules.push(new_rule(&g, Direction::Ingress, e, Some(g.meta.id.clone())));
        }
        rules.push(new_rule(&g, Direction::Egress, e, None));
    }
    std::iter::once(Change::Put(Object::SecurityGroup(g)))
        .chain(
            rules
                .into_iter()
                .map(|r| Change::Put(Object::SecurityGroupRule(r))),
        )
        .collect()
}

/// The project's default group: its id, and the changes creating it (with
/// its four rules) if it does not exist yet (none if it does). Callers
/// commit the changes with whatever they are doing, in one revision.
pub fn ensure_default(state: &State, project: &str) -> (Vec<Change>, String) {
    if let Some(g) = default_group(state, project) {
        return (vec![], g.meta.id.clone());
    }
    let changes = new_group(
        project.to_owned(),
        Some(DEFAULT_NAME.to_owned()),
        Some(DEFAULT_DESCRIPTION.to_owned()),
        true,
    );
    let id = changes[0].id();
    tracing::info!(group = %id, project, "default security group created");
    (changes, id)
}

/// Neutron's `name_not_default` validator: no group may be (re)named
/// `default`, whatever the case.
fn check_name(name: &Option<String>) -> Result<(), ApiError> {
    if name
        .as_deref()
        .is_some_and(|n| n.eq_ignore_ascii_case(DEFAULT_NAME))
    {
        return Err(ApiError::conflict(
            "SecurityGroupDefaultAlreadyExists",
            "Default security group already exists.",
        ));
    }
    Ok(())
}

fn in_use(state: &State, id: &str) -> bool {
    state
        .ports
        .values()
        .any(|p| p.security_groups.iter().any(|g| g == id))
}

fn in_use_error(id: &str) -> ApiError {
    ApiError::conflict("SecurityGroupInUse", format!("Security Group {id} in use."))
}

pub fn create(state: &State, auth: &Auth, body: &Value) -> Made<SecurityGroup> {
    let (mut a, project) = creating(state, auth, body, "security_group")?;
    let (name, description) = a.names()?;
    let stateful = a.boolean("stateful")?.unwrap_or(true);
    a.finish()?;
    check_name(&name)?;
    // Like Neutron, creating a group first gives the project its default
    // group (in the same commit here).
    let (mut changes, _) = ensure_default(state, &project);
    let pending_groups = changes
        .iter()
        .filter(|c| c.kind() == Kind::SecurityGroup)
        .count() as i64;
    let pending_rules = changes.len() as i64 - pending_groups;
    quotas::check(state, &project, Kind::SecurityGroup, pending_groups + 1)?;
    // Neutron reserves the new group's two egress rules against the rule
    // quota: a group create fails if they do not fit.
    quotas::check(state, &project, Kind::SecurityGroupRule, pending_rules + 2)?;
    let new = new_group(project, name, description, stateful);
    let Change::Put(Object::SecurityGroup(g)) = &new[0] else {
        unreachable!("new_group puts the group first")
    };
    let g = g.clone();
    changes.extend(new);
    tracing::info!(group = %g.meta.id, project = %g.meta.project_id, "security group created");
    Ok((changes, g))
}

pub fn update(state: &State, auth: &Auth, e: Edit) -> Made<SecurityGroup> {
    let Edit { id, body, if_match } = e;
    const READ_ONLY: &[&str] = &["id", "project_id", "tenant_id", "security_group_rules"];
    let mut g = writable(auth, || get(state, auth, id), if_match)?.clone();
    update_attrs(body, "security_group", READ_ONLY, |a| {
        if is_default(&g) && a.has("name") {
            return Err(ApiError::conflict(
                "SecurityGroupCannotUpdateDefault",
                "Updating default security group not allowed.",
            ));
        }
        check_name(&a.string("name", 255)?)?;
        a.rename(&mut g.meta)?;
        if let Some(v) = a.boolean("stateful")? {
            // Ports' connection tracking cannot switch under them.
            if v != g.stateful && in_use(state, id) {
                return Err(in_use_error(id));
            }
            g.stateful = v;
        }
        Ok(())
    })?;
    Ok(updated(g, vec![]))
}

/// Deleting a group: its rules, the rules of other groups that name it as
/// their remote group (Neutron's foreign key cascade), then the group.
pub fn removal(state: &State, id: &str) -> Vec<Change> {
    let mut changes: Vec<Change> = state
        .group_rules(id)
        .map(|r| Change::Delete(Kind::SecurityGroupRule, r.meta.id.clone()))
        .collect();
    changes.extend(
        state
            .security_group_rules
            .values()
            .filter(|r| r.remote_group_id.as_deref() == Some(id) && r.security_group_id != id)
            .map(|r| Change::Delete(Kind::SecurityGroupRule, r.meta.id.clone())),
    );
    changes.push(Change::Delete(Kind::SecurityGroup, id.to_owned()));
    changes
}

pub fn delete(state: &State, auth: &Auth, id: &str, if_match: Option<&str>) -> Made<()> {
    let g = writable(auth, || get(state, auth, id), if_match)?;
    if in_use(state, id) {
        return Err(in_use_error(id));
    }
    if is_default(g) && !auth.is_admin() {
        return Err(ApiError::conflict(
            "SecurityGroupCannotRemoveDefault",
            "Insufficient rights for removing default security group.",
        ));
    }
    let changes = removal(state, id);
    tracing::info!(
        group = id,
        rules = changes.len() - 1,
        "security group deleted"
    );
    Ok((changes, ()))
}

pub fn render(state: &State, g: &SecurityGroup) -> Map<String, Value> {
    let mut o = Map::new();
    render_meta(&g.meta, &mut o);
    o.insert("stateful".into(), g.stateful.into());
    o.insert("shared".into(), false.into());
    o.insert(
        "security_group_rules".into(),
        Value::Array(
            state
                .group_rules(&g.meta.id)
                .map(|r| Value::Object(render_rule_in(r, is_default(g))))
                .collect(),
        ),
    );
    o
}

// --------------------------------------------------------------------- rules

/// What makes two rules of a group the same (Neutron's `_rule_to_key`):
/// protocol by number (IPv6 ICMP names folded), "any address" prefixes
/// equal to no prefix.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    direction: Direction,
    ethertype: Ethertype,
    protocol: Option<u8>,
    port_range_min: Option<u32>,
    port_range_max: Option<u32>,
    remote_group_id: Option<String>,
    remote_ip_prefix: Option<String>,
}

fn key(r: &SecurityGroupRule) -> Key {
    let mut protocol = r.protocol_number();
    if r.ethertype == Ethertype::IPv6 && protocol == Some(1) {
        protocol = Some(58);
    }
    Key {
        direction: r.direction,
        ethertype: r.ethertype,
        protocol,
        port_range_min: r.port_range_min,
        port_range_max: r.port_range_max,
        remote_group_id: r.remote_group_id.clone(),
        remote_ip_prefix: r
            .remote_ip_prefix
            .clone()
            .filter(|p| p != "0.0.0.0/0" && p != "::/0"),
    }
}

fn invalid_protocol(v: &Value) -> ApiError {
    let names: Vec<&str> = PROTOCOL_NAMES.iter().map(|(n, _)| *n).collect();
    ApiError::new(
        400,
        "SecurityGroupRuleInvalidProtocol",
        format!(
            "Security group rule protocol {} not supported. Only protocol values [None, {}] and integer representations [0 to 255] are supported.",
            v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()),
            names.join(", ")
        ),
    )
}

/// Neutron's `convert_protocol`: a name (any case, stored lower-cased), a
/// number 0-255 (string or integer), or null/`any` for any protocol.
fn parse_protocol(v: Option<&Value>) -> Result<Option<String>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("any") => Ok(None),
        Some(Value::String(s)) => {
            if let Ok(n) = s.trim().parse::<i64>() {
                return match u8::try_from(n) {
                    Ok(n) => Ok(Some(n.to_string())),
                    Err(_) => Err(invalid_protocol(&Value::String(s.clone()))),
                };
            }
            let lower = s.to_ascii_lowercase();
            if PROTOCOL_NAMES.iter().any(|(n, _)| *n == lower) {
                Ok(Some(lower))
            } else {
                Err(invalid_protocol(&Value::String(s.clone())))
            }
        }
        Some(v @ Value::Number(n)) => match n.as_u64().and_then(|n| u8::try_from(n).ok()) {
            Some(n) => Ok(Some(n.to_string())),
            None => Err(invalid_protocol(v)),
        },
        Some(v) => Err(invalid_protocol(v)),
    }
}

/// Neutron's `convert_validate_port_value`: null, or 0-65535 as an integer
/// or a string of digits.
fn parse_port(v: Option<&Value>) -> Result<Option<u32>, ApiError> {
    let bad = |v: &Value| {
        ApiError::new(
            400,
            "SecurityGroupInvalidPortValue",
            format!(
                "Invalid value for port {}",
                v.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string())
            ),
        )
    };
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Number(n)) => n
            .as_u64()
            .filter(|n| *n <= 65535)
            .map(|n| Some(n as u32))
            .ok_or_else(|| bad(v)),
        Some(v @ Value::String(s)) => s
            .parse::<u32>()
            .ok()
            .filter(|n| *n <= 65535)
            .map(Some)
            .ok_or_else(|| bad(v)),
        Some(v) => Err(bad(v)),
    }
}

/// Neutron's `_validate_port_range`.
fn check_ports(r: &SecurityGroupRule) -> Result<(), ApiError> {
    let (min, max) = (r.port_range_min, r.port_range_max);
    if min.is_none() && max.is_none() {
        return Ok(());
    }
    let Some(proto) = r.protocol_number() else {
        return Err(ApiError::new(
            400,
            "SecurityGroupProtocolRequiredWithPorts",
            "Must also specify protocol if port range is given.",
        ));
    };
    if PORT_PROTOCOLS.contains(&proto) {
        if min == Some(0) || max == Some(0) {
            return Err(ApiError::new(
                400,
                "SecurityGroupInvalidPortValue",
                "Invalid value for port 0",
            ));
        }
        match (min, max) {
            (Some(a), Some(b)) if a <= b => Ok(()),
            _ => Err(ApiError::new(
                400,
                "SecurityGroupInvalidPortRange",
                "For TCP/UDP protocols, port_range_min must be <= port_range_max",
            )),
        }
    } else if proto == 1 || proto == 58 {
        for (v, attr, field) in [
            (min, "port_range_min", "type"),
            (max, "port_range_max", "code"),
        ] {
            if let Some(v) = v.filter(|v| *v > 255) {
                return Err(ApiError::new(
                    400,
                    "SecurityGroupInvalidIcmpValue",
                    format!("Invalid value for ICMP {field} ({attr}) {v}. It must be 0 to 255."),
                ));
            }
        }
        if let (None, Some(code)) = (min, max) {
            return Err(ApiError::new(
                400,
                "SecurityGroupMissingIcmpType",
                format!("ICMP code (port-range-max) {code} is provided but ICMP type (port-range-min) is missing."),
            ));
        }
        Ok(())
    } else {
        Err(ApiError::new(
            400,
            "SecurityGroupInvalidProtocolForPort",
            format!("Invalid protocol ({proto}) for port range, only supported for {PORT_PROTOCOL_NAMES} protocols."),
        ))
    }
}

/// A remote prefix: parsed (a bare address is a host prefix), host bits
/// cleared, of the rule's ethertype.
fn parse_prefix(v: Option<&Value>, ethertype: Ethertype) -> Result<Option<String>, ApiError> {
    let s = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.is_empty() => return Ok(None),
        Some(Value::String(s)) => s,
        Some(v) => {
            return Err(ApiError::invalid(format!(
                "Invalid input for remote_ip_prefix. Reason: '{v}' is not a valid string."
            )))
        }
    };
    let net: IpNetwork = s.parse().map_err(|_| {
        ApiError::new(
            400,
            "InvalidCIDR",
            format!("Invalid CIDR {s} given as IP prefix."),
        )
    })?;
    let family = match net {
        IpNetwork::V4(_) => Ethertype::IPv4,
        IpNetwork::V6(_) => Ethertype::IPv6,
    };
    if family != ethertype {
        return Err(ApiError::new(
            400,
            "SecurityGroupRuleParameterConflict",
            format!(
                "Conflicting value ethertype {} for CIDR {s}",
                ethertype.as_str()
            ),
        ));
    }
    let normal = IpNetwork::new(net.network(), net.prefix()).expect("same prefix length");
    Ok(Some(normal.to_string()))
}

fn required<T>(v: Option<T>, key: &str) -> Result<T, ApiError> {
    v.ok_or_else(|| {
        ApiError::bad_request(format!(
            "Failed to parse request. Required attribute '{key}' not specified"
        ))
    })
}

/// One rule of a create request, validated as Neutron's attribute
/// converters and `_validate_security_group_rule` do. Duplicates and
/// quotas are the caller's.
fn parse_rule(
    state: &State,
    auth: &Auth,
    map: &Map<String, Value>,
) -> Result<SecurityGroupRule, ApiError> {
    let mut a = Attrs::from_map(map);
    owner(auth, &mut a, state)?;
    let group_id = required(a.string("security_group_id", 255)?, "security_group_id")?;
    let direction = match required(a.string("direction", 16)?, "direction")?.as_str() {
        "ingress" => Direction::Ingress,
        "egress" => Direction::Egress,
        d => {
            return Err(ApiError::invalid(format!(
                "Invalid input for direction. Reason: '{d}' is not in ['ingress', 'egress']."
            )))
        }
    };
    let ethertype = match a.nullable_string("ethertype", 16)?.flatten() {
        None => Ethertype::IPv4,
        Some(e) if e.eq_ignore_ascii_case("ipv4") => Ethertype::IPv4,
        Some(e) if e.eq_ignore_ascii_case("ipv6") => Ethertype::IPv6,
        Some(e) => {
            return Err(ApiError::new(
                400,
                "SecurityGroupRuleInvalidEtherType",
                format!("Security group rule for ethertype '{e}' not supported. Allowed values are ['IPv4', 'IPv6']."),
            ))
        }
    };
    let mut protocol = parse_protocol(a.raw("protocol"))?;
    let port_range_min = parse_port(a.raw("port_range_min"))?;
    let port_range_max = parse_port(a.raw("port_range_max"))?;
    let prefix_in = a.raw("remote_ip_prefix");
    let remote_group_id = a.nullable_string("remote_group_id", 255)?.flatten();
    match a.raw("remote_address_group_id") {
        None | Some(Value::Null) => {}
        Some(_) => return Err(ApiError::invalid(
            "Invalid input for remote_address_group_id. Reason: address groups are not supported.",
        )),
    }
    let description = a.string("description", 255)?;
    a.finish()?;
    // _make_canonical_ipv6_icmp_protocol
    if ethertype == Ethertype::IPv6 {
        match protocol.as_deref() {
            Some("icmp" | "icmpv6") => protocol = Some("ipv6-icmp".into()),
            Some("1") => protocol = Some("58".into()),
            _ => {}
        }
    }
    let group = get(state, auth, &group_id)?;
    let mut rule = SecurityGroupRule {
        meta: new_meta(group.meta.project_id.clone(), None, description),
        security_group_id: group_id.clone(),
        direction,
        ethertype,
        protocol,
        port_range_min,
        port_range_max,
        remote_ip_prefix: None,
        remote_group_id,
    };
    check_ports(&rule)?;
    rule.remote_ip_prefix = parse_prefix(prefix_in, ethertype)?;
    if let Some(p) = rule.protocol.as_deref().filter(|p| IPV6_ONLY.contains(p)) {
        if ethertype == Ethertype::IPv4 {
            return Err(ApiError::new(
                400,
                "SecurityGroupEthertypeConflictWithProtocol",
                format!("Invalid ethertype IPv4 for protocol {p}."),
            ));
        }
    }
    if rule.remote_ip_prefix.is_some() && rule.remote_group_id.is_some() {
        return Err(ApiError::new(
            400,
            "SecurityGroupRemoteGroupAndRemoteIpPrefix",
            "Only remote_ip_prefix or remote_group_id may be provided.",
        ));
    }
    if let Some(r) = &rule.remote_group_id {
        get(state, auth, r)?;
    }
    // Rules go into the caller's own groups (admins: any group).
    if group.meta.project_id != auth.project_id && !auth.is_admin() {
        return Err(group_not_found(&group_id));
    }
    Ok(rule)
}

/// `{"security_group_rule": {...}}` or `{"security_group_rules": [...]}`:
/// all rules or none, in one commit. Duplicates (of existing rules, or
/// within the request) are found with one fingerprint set per group, built
/// once per request.
pub fn create_rules(state: &State, auth: &Auth, body: &Value) -> Made<Vec<SecurityGroupRule>> {
    require_write(auth)?;
    let top = body.as_object().filter(|o| o.len() == 1).ok_or_else(|| {
        ApiError::bad_request(
            "Request body must be a JSON object with a 'security_group_rule' or 'security_group_rules' key.",
        )
    })?;
    let (maps, bulk): (Vec<&Map<String, Value>>, bool) = match top.iter().next() {
        Some((k, Value::Object(o))) if k == "security_group_rule" => (vec![o], false),
        Some((k, Value::Array(items))) if k == "security_group_rules" => {
            if items.is_empty() {
                return Err(ApiError::bad_request("Resources required"));
            }
            let maps = items
                .iter()
                .map(|v| {
                    v.as_object().ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "Invalid input: each of 'security_group_rules' must be a JSON object, got {v}."
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            (maps, true)
        }
        Some((k, _)) if k == "security_group_rule" || k == "security_group_rules" => {
            return Err(ApiError::bad_request(format!(
                "Invalid input: '{k}' must be a JSON {}.",
                if k == "security_group_rule" {
                    "object"
                } else {
                    "list"
                }
            )))
        }
        Some((k, _)) => {
            return Err(ApiError::bad_request(format!(
                "Unrecognized attribute(s) '{k}' at the top level; expected 'security_group_rule'."
            )))
        }
        None => unreachable!("one key"),
    };
    let mut existing: HashMap<String, HashMap<Key, String>> = HashMap::new();
    let mut new_keys: HashSet<(String, Key)> = HashSet::new();
    let mut per_project: HashMap<String, i64> = HashMap::new();
    let mut rules = Vec::with_capacity(maps.len());
    for m in maps {
        let rule = parse_rule(state, auth, m)?;
        let k = key(&rule);
        let known = existing
            .entry(rule.security_group_id.clone())
            .or_insert_with(|| {
                state
                    .group_rules(&rule.security_group_id)
                    .map(|r| (key(r), r.meta.id.clone()))
                    .collect()
            });
        if let Some(id) = known.get(&k) {
            return Err(ApiError::conflict(
                "SecurityGroupRuleExists",
                format!("Security group rule already exists. Rule id is {id}."),
            ));
        }
        if !new_keys.insert((rule.security_group_id.clone(), k)) {
            return Err(ApiError::conflict(
                "DuplicateSecurityGroupRuleInPost",
                "Duplicate Security Group Rule in POST.",
            ));
        }
        *per_project.entry(rule.meta.project_id.clone()).or_default() += 1;
        rules.push(rule);
    }
    for (project, n) in &per_project {
        quotas::check(state, project, Kind::SecurityGroupRule, *n)?;
    }
    tracing::info!(rules = rules.len(), bulk, "security group rules created");
    let changes = rules
        .iter()
        .map(|r| Change::Put(Object::SecurityGroupRule(r.clone())))
        .collect();
    Ok((changes, rules))
}

/// Attributes a rule renders besides `STANDARD_ATTRS` (what filters and
/// sort keys may name): those given at creation, then the last
/// [`DERIVED_RULE_ATTRS`], derived from them.
pub const RULE_ATTRS: &[&str] = &[
    "security_group_id",
    "direction",
    "ethertype",
    "protocol",
    "port_range_min",
    "port_range_max",
    "remote_ip_prefix",
    "remote_group_id",
    "remote_address_group_id",
    "normalized_cidr",
    "belongs_to_default_sg",
];
pub const DERIVED_RULE_ATTRS: usize = 2;

/// Only the description of a rule may change (Neutron: every other
/// attribute is create-only).
pub fn update_rule(state: &State, auth: &Auth, e: Edit) -> Made<SecurityGroupRule> {
    let Edit { id, body, if_match } = e;
    let given = &RULE_ATTRS[..RULE_ATTRS.len() - DERIVED_RULE_ATTRS];
    let read_only = [&["id", "project_id", "tenant_id"][..], given].concat();
    let mut r = writable(auth, || get_rule(state, auth, id), if_match)?.clone();
    update_attrs(body, "security_group_rule", &read_only, |a| {
        if let Some(v) = a.string("description", 255)? {
            r.meta.description = v;
        }
        Ok(())
    })?;
    Ok(updated(r, vec![]))
}

pub fn delete_rule(state: &State, auth: &Auth, id: &str, if_match: Option<&str>) -> Made<()> {
    let r = writable(auth, || get_rule(state, auth, id), if_match)?;
    tracing::info!(rule = id, group = %r.security_group_id, "security group rule deleted");
    Ok((
        vec![Change::Delete(Kind::SecurityGroupRule, id.to_owned())],
        (),
    ))
}

fn render_rule_in(r: &SecurityGroupRule, in_default: bool) -> Map<String, Value> {
    let m = &r.meta;
    let opt = |v: &Option<String>| v.clone().map(Value::from).unwrap_or(Value::Null);
    let num = |v: Option<u32>| v.map(Value::from).unwrap_or(Value::Null);
    let mut o = Map::new();
    o.insert("id".into(), m.id.clone().into());
    o.insert("project_id".into(), m.project_id.clone().into());
    o.insert("tenant_id".into(), m.project_id.clone().into());
    o.insert(
        "security_group_id".into(),
        r.security_group_id.clone().into(),
    );
    o.insert("direction".into(), r.direction.as_str().into());
    o.insert("ethertype".into(), r.ethertype.as_str().into());
    o.insert("protocol".into(), opt(&r.protocol));
    o.insert("port_range_min".into(), num(r.port_range_min));
    o.insert("port_range_max".into(), num(r.port_range_max));
    o.insert("remote_ip_prefix".into(), opt(&r.remote_ip_prefix));
    o.insert("remote_group_id".into(), opt(&r.remote_group_id));
    o.insert("remote_address_group_id".into(), Value::Null);
    o.insert("normalized_cidr".into(), opt(&r.remote_ip_prefix));
    o.insert("description".into(), m.description.clone().into());
    o.insert("revision_number".into(), m.revision_number.into());
    o.insert("created_at".into(), m.created_at.clone().into());
    o.insert("updated_at".into(), m.updated_at.clone().into());
    o.insert("belongs_to_default_sg".into(), in_default.into());
    o
}

pub fn render_rule(state: &State, r: &SecurityGroupRule) -> Map<String, Value> {
    let in_default = state
        .security_groups
        .get(&r.security_group_id)
        .is_some_and(is_default);
    render_rule_in(r, in_default)
}

/// The groups a port asks for: each must exist and belong to the port's
/// project (404 naming the others, as Neutron). Duplicates are dropped.
pub fn port_groups(state: &State, project: &str, ids: &[String]) -> Result<Vec<String>, ApiError> {
    let mut out: Vec<String> = Vec::with_capacity(ids.len());
    let mut missing: Vec<&str> = Vec::new();
    for id in ids {
        let ok = state
            .security_groups
            .get(id)
            .is_some_and(|g| g.meta.project_id == project);
        if !ok {
            if !missing.contains(&id.as_str()) {
                missing.push(id);
            }
        } else if !out.contains(id) {
            out.push(id.clone());
        }
    }
    if !missing.is_empty() {
        return Err(group_not_found(&missing.join(", ")));
    }
    // Neutron: a port's groups are all stateful or all stateless.
    let stateful = |id: &String| state.security_groups.get(id).is_some_and(|g| g.stateful);
    if out.iter().any(stateful) && !out.iter().all(stateful) {
        return Err(ApiError::conflict(
            "Conflict",
            "Cannot apply both stateful and stateless security groups on the same port at the same time while attempting the operation on the port",
        ));
    }
    Ok(out)
}

//! The interfaces the agent attached its programs to: by name, their
//! ifindex, role (uplink, external, VM port) and the last attach error.
//!
//! Owns the decision of which role an interface name has ([`role_of`]) and
//! how an attached (or missing) tap turns into a port's reported state
//! ([`port_report`]); both are pure and tested here. This module never
//! attaches or detaches anything itself (the agent does, through the
//! dataplane) and never writes maps.

use std::collections::BTreeMap;

use strato_proto::report::{PortReport, PortState, Role};

use crate::config::AgentConfig;

/// One interface with a program attached (or an attach that failed).
pub(crate) struct Attached {
    pub ifindex: u32,
    pub role: Role,
    pub error: Option<String>,
}

/// Interfaces by name.
#[derive(Default)]
pub(crate) struct Interfaces {
    pub attached: BTreeMap<String, Attached>,
}

/// The role of interface `name` under `cfg`, if the agent manages it.
pub(crate) fn role_of(cfg: &AgentConfig, name: &str) -> Option<Role> {
    if cfg.uplinks.iter().any(|u| u == name) {
        Some(Role::Uplink)
    } else if cfg.external.as_deref() == Some(name) {
        Some(Role::External)
    } else if cfg
        .port_prefixes
        .iter()
        .any(|p| name.starts_with(p.as_str()))
    {
        Some(Role::Port)
    } else {
        None
    }
}

/// The report of port `id` on `tap`: waiting for its tap, in error (the
/// attach failed, or the tables could not be written: `table_error`), or
/// active if `written(ifindex)` says its entry is in the maps.
pub(crate) fn port_report(
    id: &str,
    tap: &str,
    attached: Option<&Attached>,
    table_error: Option<&String>,
    written: impl FnOnce(u32) -> bool,
) -> PortReport {
    let (state, ifindex, error) = match attached {
        None => (PortState::Waiting, None, None),
        Some(a) if a.error.is_some() => (PortState::Error, Some(a.ifindex), a.error.clone()),
        Some(a) if table_error.is_some() => {
            (PortState::Error, Some(a.ifindex), table_error.cloned())
        }
        Some(a) if written(a.ifindex) => (PortState::Active, Some(a.ifindex), None),
        Some(a) => (
            PortState::Error,
            Some(a.ifindex),
            Some("port not written (bad MAC or network missing)".to_owned()),
        ),
    };
    PortReport {
        id: id.to_owned(),
        tap: tap.to_owned(),
        ifindex,
        state,
        error,
    }
}

impl Interfaces {
    pub fn get(&self, name: &str) -> Option<&Attached> {
        self.attached.get(name)
    }

    /// The ifindex of `tap` if it is a working port tap.
    pub fn port_ifindex(&self, tap: &str) -> Option<u32> {
        self.attached
            .get(tap)
            .filter(|a| a.error.is_none() && a.role == Role::Port)
            .map(|a| a.ifindex)
    }

    /// Working port taps: name -> ifindex.
    pub fn port_taps(&self) -> BTreeMap<String, u32> {
        self.attached
            .iter()
            .filter(|(_, a)| a.role == Role::Port && a.error.is_none())
            .map(|(n, a)| (n.clone(), a.ifindex))
            .collect()
    }

    /// The first working interface of `role`: (name, ifindex).
    pub fn working(&self, role: Role) -> Option<(String, u32)> {
        self.attached
            .iter()
            .find(|(_, a)| a.role == role && a.error.is_none())
            .map(|(n, a)| (n.clone(), a.ifindex))
    }

    /// Ifindexes of the attached interfaces that are not ports.
    pub fn non_ports(&self) -> Vec<u32> {
        self.attached
            .values()
            .filter(|a| a.role != Role::Port)
            .map(|a| a.ifindex)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AgentConfig {
        AgentConfig {
            host: "h1".into(),
            controller: None,
            uplinks: vec!["eth0".into(), "eth1".into()],
            port_prefixes: vec!["tap".into(), "vm-".into()],
            pin_root: "/sys/fs/bpf/strato".into(),
            interval: std::time::Duration::from_secs(1),
            full_report_interval: std::time::Duration::from_secs(2),
            ct_max: None,
            az: String::new(),
            external: Some("ext0".into()),
            state_dir: None,
            l7_binary: "strato-l7".into(),
        }
    }

    #[test]
    fn roles_follow_the_configuration() {
        let c = cfg();
        assert_eq!(role_of(&c, "eth0"), Some(Role::Uplink));
        assert_eq!(role_of(&c, "eth1"), Some(Role::Uplink));
        assert_eq!(role_of(&c, "ext0"), Some(Role::External));
        assert_eq!(role_of(&c, "tap1234"), Some(Role::Port));
        assert_eq!(role_of(&c, "vm-7"), Some(Role::Port));
        assert_eq!(role_of(&c, "eth00"), None, "uplinks match whole names");
        assert_eq!(role_of(&c, "lo"), None);
        let mut c = c;
        c.uplinks = vec!["tap0".into()];
        assert_eq!(
            role_of(&c, "tap0"),
            Some(Role::Uplink),
            "an uplink beats a port prefix"
        );
    }

    fn att(ifindex: u32, role: Role, error: Option<&str>) -> Attached {
        Attached {
            ifindex,
            role,
            error: error.map(str::to_owned),
        }
    }

    #[test]
    fn port_states() {
        let r = port_report("p1", "tap1", None, None, |_| true);
        assert_eq!(
            (r.state, r.ifindex, r.error),
            (PortState::Waiting, None, None)
        );
        let a = att(7, Role::Port, Some("no tc"));
        let r = port_report("p1", "tap1", Some(&a), Some(&"maps".to_owned()), |_| true);
        assert_eq!(
            (r.state, r.error.as_deref()),
            (PortState::Error, Some("no tc"))
        );
        let a = att(7, Role::Port, None);
        let r = port_report(
            "p1",
            "tap1",
            Some(&a),
            Some(&"maps full".to_owned()),
            |_| true,
        );
        assert_eq!(
            (r.state, r.error.as_deref()),
            (PortState::Error, Some("maps full"))
        );
        let r = port_report("p1", "tap1", Some(&a), None, |i| i == 7);
        assert_eq!(
            (r.state, r.ifindex, r.error),
            (PortState::Active, Some(7), None)
        );
        assert_eq!((r.id.as_str(), r.tap.as_str()), ("p1", "tap1"));
        let r = port_report("p1", "tap1", Some(&a), None, |_| false);
        assert_eq!(r.state, PortState::Error);
        assert!(r.error.is_some_and(|e| e.contains("not written")));
    }

    #[test]
    fn only_working_port_taps_count() {
        let mut i = Interfaces::default();
        i.attached.insert("tap1".into(), att(7, Role::Port, None));
        i.attached
            .insert("tap2".into(), att(8, Role::Port, Some("failed")));
        i.attached.insert("eth0".into(), att(2, Role::Uplink, None));
        assert_eq!(i.port_ifindex("tap1"), Some(7));
        assert_eq!(i.port_ifindex("tap2"), None);
        assert_eq!(i.port_ifindex("eth0"), None);
        assert_eq!(i.port_taps(), [("tap1".to_owned(), 7)].into());
        assert_eq!(i.working(Role::Uplink), Some(("eth0".to_owned(), 2)));
        assert_eq!(i.working(Role::External), None);
        assert_eq!(i.non_ports(), vec![2]);
    }
}

//! The host's configuration as the controller sent it: entries by key, the
//! revision they make up, whether a snapshot arrived since start.
//!
//! [`Desired::apply`] takes a snapshot or a delta and says what it changed
//! ([`Applied`]), so the realisers can mark just that work as due. It is
//! pure (no dataplane, no I/O) and tested here. This module never reads
//! or writes maps and never interprets an entry beyond its key and kind.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use strato_proto::config::{Entry, Update, UpdateKind};

/// A port joining a remote group: (group, port, addresses).
pub(crate) type MemberAdd = (String, String, Vec<String>);

/// What an update changed, for the realisers to mark as dirty.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Applied {
    /// A delta that does not follow the applied revision (or came before
    /// any snapshot): nothing applied; the watch must restart from 0.
    Stale,
    /// Everything may have changed.
    Snapshot,
    /// A delta: which keys changed, by what they affect.
    Delta(Changes),
}

/// The effect of one delta.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    /// `remote/` keys: remote ports whose endpoints are recomputed.
    pub remotes: BTreeSet<String>,
    /// `port/` keys: local ports whose contributions are recomputed.
    pub ports: BTreeSet<String>,
    /// A group or a remote-group member changed.
    pub policies: bool,
    /// A policy change other than a new member: plan the policies in full.
    pub policies_full: bool,
    /// New remote-group members, in the order of the update.
    pub member_adds: Vec<MemberAdd>,
    /// Anything else (networks, routers, ...): rebuild every table.
    pub full: bool,
}

/// The configuration and its revision.
pub(crate) struct Desired {
    pub entries: BTreeMap<String, Entry>,
    /// Shared with the watch task, which resumes from it.
    revision: Arc<AtomicU64>,
    /// A snapshot arrived since start (until then nothing is removed).
    have_snapshot: bool,
}

impl Desired {
    pub fn new() -> Desired {
        Desired {
            entries: BTreeMap::new(),
            revision: Arc::new(AtomicU64::new(0)),
            have_snapshot: false,
        }
    }

    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::SeqCst)
    }

    /// The revision, shared (the watch task reads it).
    pub fn revision_handle(&self) -> Arc<AtomicU64> {
        self.revision.clone()
    }

    pub fn have_snapshot(&self) -> bool {
        self.have_snapshot
    }

    /// Applies an update; see [`Applied`].
    pub fn apply(&mut self, u: Update) -> Applied {
        let current = self.revision.load(Ordering::SeqCst);
        let applied = match u.kind {
            UpdateKind::Snapshot => {
                self.entries = u.upserts.into_iter().map(|e| (e.key(), e)).collect();
                self.have_snapshot = true;
                Applied::Snapshot
            }
            UpdateKind::Delta => {
                if u.from != current || !self.have_snapshot {
                    tracing::warn!(
                        from = u.from,
                        have = current,
                        "delta does not follow the applied revision; resyncing"
                    );
                    return Applied::Stale;
                }
                let changes = self.changes(&u);
                for k in &u.deletes {
                    self.entries.remove(k);
                }
                for e in u.upserts {
                    self.entries.insert(e.key(), e);
                }
                Applied::Delta(changes)
            }
        };
        self.revision.store(u.revision, Ordering::SeqCst);
        tracing::debug!(
            revision = u.revision,
            entries = self.entries.len(),
            "configuration applied"
        );
        applied
    }

    /// What a delta changes, judged against the entries before it.
    fn changes(&self, u: &Update) -> Changes {
        let mut c = Changes::default();
        let deleted: HashSet<&String> = u.deletes.iter().collect();
        let keys = u
            .deletes
            .iter()
            .map(|k| (k.clone(), None))
            .chain(u.upserts.iter().map(|e| (e.key(), Some(e))));
        for (k, upsert) in keys {
            if k.starts_with("remote/") {
                c.remotes.insert(k);
            } else if k.starts_with("port/") {
                c.ports.insert(k);
            } else if k.starts_with("sg/") || k.starts_with("sgmember/") {
                c.policies = true;
                // A new member entry is an addition the policies take in
                // place; anything else is planned in full.
                match upsert {
                    Some(Entry::SgMember(m))
                        if !self.entries.contains_key(&k) && !deleted.contains(&k) =>
                    {
                        c.member_adds
                            .push((m.group_id.clone(), m.port_id.clone(), m.ips.clone()))
                    }
                    _ => c.policies_full = true,
                }
            } else {
                c.full = true;
            }
        }
        c
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use strato_proto::config::{NetworkEntry, PortEntry, SgMemberEntry, SubnetEntry};

    pub(crate) fn port(id: &str, network: &str, tap: &str, mac: &str, ip: &str) -> Entry {
        Entry::Port(PortEntry {
            id: id.to_owned(),
            tap: tap.to_owned(),
            network_id: network.to_owned(),
            vni: 100,
            mtu: 1450,
            mac: mac.to_owned(),
            ips: vec![("sub-1".to_owned(), ip.to_owned())],
            port_security_enabled: true,
            allowed_address_pairs: Vec::new(),
            admin_state_up: true,
            security_groups: Vec::new(),
        })
    }

    /// A network with one subnet `sub-1` of `cidr` (gateway .1).
    pub(crate) fn network(id: &str, cidr: &str, dhcp: bool) -> Entry {
        let net: ipnetwork::Ipv4Network = cidr.parse().expect("a test CIDR");
        Entry::Network(NetworkEntry {
            id: id.to_owned(),
            vni: 100,
            mtu: 1450,
            admin_state_up: true,
            router_id: None,
            subnets: vec![SubnetEntry {
                id: "sub-1".to_owned(),
                cidr: cidr.to_owned(),
                gateway_ip: Some(net.nth(1).expect("a gateway").to_string()),
                gateway_mac: Some("fa:16:3e:00:00:fe".to_owned()),
                enable_dhcp: dhcp,
                dns_nameservers: vec!["10.9.9.9".to_owned(), "not an address".to_owned()],
                host_routes: Vec::new(),
            }],
        })
    }

    fn member(group: &str, port: &str, ip: &str) -> Entry {
        Entry::SgMember(SgMemberEntry {
            group_id: group.to_owned(),
            port_id: port.to_owned(),
            ips: vec![ip.to_owned()],
        })
    }

    fn update(
        kind: UpdateKind,
        from: u64,
        revision: u64,
        upserts: Vec<Entry>,
        deletes: &[&str],
    ) -> Update {
        Update {
            kind,
            host: "h1".to_owned(),
            from,
            revision,
            upserts,
            deletes: deletes.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn snapshot(revision: u64, upserts: Vec<Entry>) -> Update {
        update(UpdateKind::Snapshot, 0, revision, upserts, &[])
    }

    fn delta(from: u64, revision: u64, upserts: Vec<Entry>, deletes: &[&str]) -> Update {
        update(UpdateKind::Delta, from, revision, upserts, deletes)
    }

    fn base() -> Desired {
        let mut d = Desired::new();
        let s = snapshot(
            5,
            vec![
                network("n1", "10.0.0.0/24", true),
                port("p1", "n1", "tap1", "fa:16:3e:00:00:01", "10.0.0.5"),
            ],
        );
        assert_eq!(d.apply(s), Applied::Snapshot);
        d
    }

    #[test]
    fn a_snapshot_replaces_the_entries_and_sets_the_revision() {
        let mut d = base();
        assert!(d.have_snapshot());
        assert_eq!(d.revision(), 5);
        assert_eq!(d.entries.len(), 2);
        assert_eq!(
            d.apply(snapshot(9, vec![network("n2", "10.1.0.0/24", true)])),
            Applied::Snapshot
        );
        assert_eq!(d.revision(), 9);
        assert_eq!(d.entries.keys().collect::<Vec<_>>(), vec!["network/n2"]);
    }

    #[test]
    fn a_delta_before_any_snapshot_is_stale() {
        let mut d = Desired::new();
        assert_eq!(
            d.apply(delta(0, 1, vec![network("n1", "10.0.0.0/24", true)], &[])),
            Applied::Stale
        );
        assert!(d.entries.is_empty());
        assert_eq!(d.revision(), 0);
    }

    #[test]
    fn a_delta_with_a_gap_is_stale_and_changes_nothing() {
        let mut d = base();
        assert_eq!(
            d.apply(delta(4, 6, vec![network("n2", "10.1.0.0/24", true)], &[])),
            Applied::Stale
        );
        assert_eq!(
            d.apply(delta(6, 7, vec![network("n2", "10.1.0.0/24", true)], &[])),
            Applied::Stale
        );
        assert_eq!(d.revision(), 5);
        assert!(!d.entries.contains_key("network/n2"));
    }

    #[test]
    fn port_and_remote_changes_are_incremental() {
        let mut d = base();
        let p2 = port("p2", "n1", "tap2", "fa:16:3e:00:00:02", "10.0.0.6");
        let Applied::Delta(c) = d.apply(delta(5, 6, vec![p2], &["port/p1", "remote/r9"])) else {
            panic!("a following delta applies");
        };
        assert!(!c.full, "ports and remotes alone need no full rebuild");
        assert_eq!(c.ports, ["port/p1", "port/p2"].map(String::from).into());
        assert_eq!(c.remotes, ["remote/r9"].map(String::from).into());
        assert!(!c.policies);
        assert_eq!(d.revision(), 6);
        assert!(d.entries.contains_key("port/p2") && !d.entries.contains_key("port/p1"));
    }

    #[test]
    fn a_network_change_makes_a_full_rebuild() {
        let mut d = base();
        let Applied::Delta(c) = d.apply(delta(5, 6, vec![], &["network/n1"])) else {
            panic!("a following delta applies");
        };
        assert!(c.full);
        assert!(!d.entries.contains_key("network/n1"));
    }

    #[test]
    fn a_new_member_is_added_in_place_anything_else_plans_in_full() {
        let mut d = base();
        let Applied::Delta(c) = d.apply(delta(5, 6, vec![member("g1", "p1", "10.0.0.5")], &[]))
        else {
            panic!("a following delta applies");
        };
        assert!(c.policies && !c.policies_full && !c.full);
        assert_eq!(
            c.member_adds,
            vec![(
                "g1".to_owned(),
                "p1".to_owned(),
                vec!["10.0.0.5".to_owned()]
            )]
        );
        let key = member("g1", "p1", "10.0.0.5").key();
        // The same member again (it exists now): a change, planned in full.
        let Applied::Delta(c) = d.apply(delta(6, 7, vec![member("g1", "p1", "10.0.0.7")], &[]))
        else {
            panic!("a following delta applies");
        };
        assert!(c.policies && c.policies_full && c.member_adds.is_empty());
        // Deleted and upserted in one delta: planned in full too.
        d.entries.remove(&key);
        let Applied::Delta(c) = d.apply(delta(
            7,
            8,
            vec![member("g1", "p1", "10.0.0.5")],
            &[key.as_str()],
        )) else {
            panic!("a following delta applies");
        };
        assert!(c.policies_full && c.member_adds.is_empty());
        // A removal: in full.
        let Applied::Delta(c) = d.apply(delta(8, 9, vec![], &[key.as_str()])) else {
            panic!("a following delta applies");
        };
        assert!(c.policies_full);
    }
}

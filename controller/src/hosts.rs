//! The registry of hosts and their agents' latest reports (liveness,
//! interfaces, counters). The HTTP layer parses requests into [`Command`]s
//! and renders [`Reply`]s; this module never sees HTTP. Reports are soft
//! state: kept in memory, refreshed by every agent each interval.

use std::{collections::BTreeMap, sync::Mutex, time::Duration};

use thiserror::Error;

use strato_proto::{
    report::{HostReport, HostStatus, PortReport, StatusReport},
    time::now_ms,
};

/// A host whose agent has not reported for this long is `down`.
pub const HOST_LIVENESS: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub enum Command {
    ReportHost {
        host: String,
        report: Box<HostReport>,
    },
    /// A status report; 404 if the host never sent a full report (the
    /// agent then sends one).
    HostStatus {
        host: String,
        status: StatusReport,
    },
    ListHosts,
    ShowHost {
        host: String,
    },
}

#[derive(Debug)]
pub enum Reply {
    Accepted,
    Hosts(Vec<HostStatus>),
    Host(Box<HostStatus>),
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CommandError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{kind} {id} could not be found")]
    NotFound { kind: &'static str, id: String },
}

struct Seen {
    at_ms: u64,
    /// The last full report, with `ports` kept in `ports` instead.
    report: HostReport,
    ports: BTreeMap<String, PortReport>,
}

#[derive(Default)]
pub struct Hosts {
    hosts: Mutex<BTreeMap<String, Seen>>,
}

/// Host names as agents and the harness use them.
pub fn valid_host_name(h: &str) -> bool {
    let b = h.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'.')
}

impl Hosts {
    pub fn new() -> Hosts {
        Hosts::default()
    }

    pub fn apply(&self, cmd: Command) -> Result<Reply, CommandError> {
        match cmd {
            Command::ReportHost { host, report } => {
                if !valid_host_name(&host) {
                    return Err(CommandError::BadRequest(format!(
                        "host name {host:?} is invalid: use 1-63 characters from a-z, 0-9, '-', '.'"
                    )));
                }
                if report.host != host {
                    return Err(CommandError::BadRequest(format!(
                        "report is for host {:?} but was sent to /internal/v1/hosts/{host}",
                        report.host
                    )));
                }
                let mut hosts = self.hosts.lock().expect("hosts lock poisoned");
                let fresh = !hosts.contains_key(&host);
                let mut report = *report;
                let ports = std::mem::take(&mut report.ports)
                    .into_iter()
                    .map(|p| (p.id.clone(), p))
                    .collect();
                hosts.insert(
                    host.clone(),
                    Seen {
                        at_ms: now_ms(),
                        report,
                        ports,
                    },
                );
                if fresh {
                    tracing::info!(host, "host registered");
                }
                Ok(Reply::Accepted)
            }
            Command::HostStatus { host, status } => {
                if status.host != host {
                    return Err(CommandError::BadRequest(format!(
                        "status is for host {:?} but was sent to /internal/v1/hosts/{host}/status",
                        status.host
                    )));
                }
                let mut hosts = self.hosts.lock().expect("hosts lock poisoned");
                let seen = hosts.get_mut(&host).ok_or(CommandError::NotFound {
                    kind: "Host",
                    id: host.clone(),
                })?;
                seen.at_ms = now_ms();
                seen.report.realised_revision = status.realised_revision;
                for id in status.removed {
                    seen.ports.remove(&id);
                }
                for p in status.changed {
                    seen.ports.insert(p.id.clone(), p);
                }
                Ok(Reply::Accepted)
            }
            Command::ListHosts => {
                let hosts = self.hosts.lock().expect("hosts lock poisoned");
                Ok(Reply::Hosts(
                    hosts.iter().map(|(h, s)| status(h, s)).collect(),
                ))
            }
            Command::ShowHost { host } => {
                let hosts = self.hosts.lock().expect("hosts lock poisoned");
                hosts
                    .get(&host)
                    .map(|s| Reply::Host(Box::new(status(&host, s))))
                    .ok_or(CommandError::NotFound {
                        kind: "Host",
                        id: host,
                    })
            }
        }
    }
}

impl Hosts {
    /// Whether `host`'s agent reported within [`HOST_LIVENESS`].
    pub fn is_up(&self, host: &str) -> bool {
        let hosts = self.hosts.lock().expect("hosts lock poisoned");
        hosts
            .get(host)
            .is_some_and(|s| now_ms().saturating_sub(s.at_ms) <= HOST_LIVENESS.as_millis() as u64)
    }

    /// The hosts up now, with the configuration revision each realised.
    pub fn realised(&self) -> Vec<(String, u64)> {
        let hosts = self.hosts.lock().expect("hosts lock poisoned");
        let now = now_ms();
        hosts
            .iter()
            .filter(|(_, s)| now.saturating_sub(s.at_ms) <= HOST_LIVENESS.as_millis() as u64)
            .map(|(h, s)| (h.clone(), s.report.realised_revision))
            .collect()
    }

    /// Whether `host` is up and reports port `port_id` realised.
    pub fn port_active(&self, host: &str, port_id: &str) -> bool {
        let hosts = self.hosts.lock().expect("hosts lock poisoned");
        hosts.get(host).is_some_and(|s| {
            now_ms().saturating_sub(s.at_ms) <= HOST_LIVENESS.as_millis() as u64
                && s.ports
                    .get(port_id)
                    .is_some_and(|p| p.state == strato_proto::report::PortState::Active)
        })
    }
}

fn status(host: &str, s: &Seen) -> HostStatus {
    let mut report = s.report.clone();
    report.ports = s.ports.values().cloned().collect();
    let age = now_ms().saturating_sub(s.at_ms);
    HostStatus {
        host: host.to_owned(),
        last_seen_ms_ago: age,
        state: if age <= HOST_LIVENESS.as_millis() as u64 {
            "up"
        } else {
            "down"
        }
        .to_owned(),
        report,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(host: &str) -> HostReport {
        HostReport {
            host: host.into(),
            ..Default::default()
        }
    }

    #[test]
    fn report_then_show_and_list() {
        let c = Hosts::new();
        c.apply(Command::ReportHost {
            host: "az1-c1".into(),
            report: Box::new(report("az1-c1")),
        })
        .unwrap();
        match c
            .apply(Command::ShowHost {
                host: "az1-c1".into(),
            })
            .unwrap()
        {
            Reply::Host(h) => assert_eq!(h.state, "up"),
            r => panic!("{r:?}"),
        }
        match c.apply(Command::ListHosts).unwrap() {
            Reply::Hosts(h) => assert_eq!(h.len(), 1),
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn bad_reports_change_nothing() {
        let c = Hosts::new();
        for (path, body) in [("Bad Name", "Bad Name"), ("", ""), ("a", "b"), ("-x", "-x")] {
            let e = c
                .apply(Command::ReportHost {
                    host: path.into(),
                    report: Box::new(report(body)),
                })
                .unwrap_err();
            assert!(matches!(e, CommandError::BadRequest(_)), "{path:?}: {e:?}");
        }
        match c.apply(Command::ListHosts).unwrap() {
            Reply::Hosts(h) => assert!(h.is_empty()),
            r => panic!("{r:?}"),
        }
        assert_eq!(
            c.apply(Command::ShowHost {
                host: "nope".into()
            })
            .unwrap_err(),
            CommandError::NotFound {
                kind: "Host",
                id: "nope".into()
            }
        );
    }
}

//! What an agent tells about its load balancing: per-connection access log
//! lines (L4: start and end, client, VIP, member, bytes each way) and the
//! per-listener / per-member metrics in Prometheus' text format, both as
//! files in the agent's state directory (`lb-access.log`, JSON lines,
//! appended; `metrics.prom`, replaced whole, for a textfile collector or
//! `stratoctl`).
//!
//! Connections are found by reading the connection tables once a tick:
//! a connection starts when its `LB_FLOWS` entry appears and ends when the
//! entry goes, when the connection tracking entry of the translated flow
//! says the TCP connection closed, or when it has been idle past its
//! listener's idle timeout. Short connections are logged as they are seen:
//! one that starts and ends between two ticks is not (the totals in the
//! metrics still count it) unless its entry is still there, closed: then
//! both lines are written at once.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    io::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use dataplane_common::{LbFlow, LbFlowKey, LbRev, LbStats};

use strato_proto::{
    lb::AccessLine,
    naming::{ACCESS_LOG, METRICS},
};

/// Open connections per service number and per backend number.
pub type OpenCounts = (BTreeMap<u32, u64>, BTreeMap<u32, u64>);

/// (domain, client, client port, protocol, backend number): a
/// connection's reply side.
type ClientSide = (u32, [u8; 4], u16, u8, u32);

/// A connection being followed.
#[derive(Clone, Debug)]
struct Open {
    flow: LbFlow,
    rev: Option<(LbFlowKey, LbRev)>,
}

/// The access log's state between ticks.
pub struct AccessLog {
    path: PathBuf,
    open: HashMap<LbFlowKey, Open>,
    /// Connections already logged as ended whose entry is still in the
    /// table (it stays until it expires): by their start time.
    ended: HashMap<LbFlowKey, u64>,
}

fn endpoint(ip: [u8; 4], port: u16) -> String {
    format!("{}:{port}", Ipv4Addr::from(ip))
}

fn proto(p: u8) -> &'static str {
    match p {
        6 => "tcp",
        17 => "udp",
        _ => "other",
    }
}

fn rfc3339_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    strato_proto::time::timestamp(secs)
}

impl AccessLog {
    pub fn new(dir: &Path) -> AccessLog {
        AccessLog {
            path: dir.join(ACCESS_LOG),
            open: HashMap::new(),
            ended: HashMap::new(),
        }
    }

    /// The connections open as of the last tick (started, not yet ended:
    /// closed, idle past the timeout, or gone), per service and per
    /// backend number.
    pub fn open_counts(&self) -> OpenCounts {
        let (mut s, mut b) = (BTreeMap::new(), BTreeMap::new());
        for o in self.open.values() {
            *s.entry(o.flow.service).or_default() += 1;
            *b.entry(o.flow.backend).or_default() += 1;
        }
        (s, b)
    }

    /// Compares the tables with the last tick and appends a line per
    /// connection that started or ended. `names`: listener and member of a
    /// (service, backend) number; `closed`: whether the translated flow's
    /// TCP connection is over; `idle_ns`: a listener's idle timeout.
    pub fn tick(
        &mut self,
        now_ns: u64,
        flows: &[(LbFlowKey, LbFlow)],
        revs: &[(LbFlowKey, LbRev)],
        names: &dyn Fn(u32, u32) -> (String, String),
        closed: &dyn Fn(&LbFlowKey, &LbFlowKey) -> bool,
        idle_ns: &dyn Fn(u32) -> u64,
    ) -> std::io::Result<usize> {
        // The reply side of each connection: by (domain, client, port,
        // proto) and its backend number.
        let by_client: HashMap<ClientSide, (LbFlowKey, LbRev)> = revs
            .iter()
            .map(|(k, r)| {
                (
                    (k.domain, k.client, k.client_port, k.proto, r.backend),
                    (*k, *r),
                )
            })
            .collect();
        let mut lines = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (k, f) in flows {
            let rev = by_client
                .get(&(k.domain, k.client, k.client_port, k.proto, f.backend))
                .copied();
            seen.insert(*k);
            if self.ended.get(k) == Some(&f.created_ns) {
                continue;
            }
            let ended = if rev.is_some_and(|(rk, _)| closed(k, &rk)) {
                Some("closed")
            } else if now_ns.saturating_sub(f.last_seen_ns) > idle_ns(f.service) {
                Some("idle")
            } else {
                None
            };
            match (self.open.get(k), ended) {
                (None, None) => {
                    lines.push(self.line("start", k, f, rev.as_ref(), names, ""));
                    self.open.insert(*k, Open { flow: *f, rev });
                }
                (Some(o), None) if o.flow.created_ns != f.created_ns => {
                    // The same tuple, a new connection.
                    let (of, orev) = (o.flow, o.rev);
                    lines.push(self.line("end", k, &of, orev.as_ref(), names, "gone"));
                    lines.push(self.line("start", k, f, rev.as_ref(), names, ""));
                    self.open.insert(*k, Open { flow: *f, rev });
                }
                (Some(_), None) => {
                    self.open.insert(*k, Open { flow: *f, rev });
                }
                (Some(_), Some(why)) => {
                    lines.push(self.line("end", k, f, rev.as_ref(), names, why));
                    self.open.remove(k);
                    self.ended.insert(*k, f.created_ns);
                }
                (None, Some(why)) => {
                    // Started and ended between two ticks.
                    lines.push(self.line("start", k, f, rev.as_ref(), names, ""));
                    lines.push(self.line("end", k, f, rev.as_ref(), names, why));
                    self.ended.insert(*k, f.created_ns);
                }
            }
        }
        self.ended.retain(|k, _| seen.contains(k));
        let gone: Vec<LbFlowKey> = self
            .open
            .keys()
            .filter(|k| !seen.contains(*k))
            .copied()
            .collect();
        for k in gone {
            if let Some(o) = self.open.remove(&k) {
                lines.push(self.line("end", &k, &o.flow, o.rev.as_ref(), names, "gone"));
            }
        }
        if lines.is_empty() {
            return Ok(0);
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let mut buf = String::new();
        for l in &lines {
            buf.push_str(&serde_json::to_string(l).unwrap_or_default());
            buf.push('\n');
        }
        f.write_all(buf.as_bytes())?;
        Ok(lines.len())
    }

    fn line(
        &self,
        event: &str,
        k: &LbFlowKey,
        f: &LbFlow,
        rev: Option<&(LbFlowKey, LbRev)>,
        names: &dyn Fn(u32, u32) -> (String, String),
        reason: &str,
    ) -> AccessLine {
        let (listener, member) = names(f.service, f.backend);
        let (backend, po, bo) = match rev {
            Some((rk, r)) => (endpoint(rk.remote, rk.remote_port), r.packets, r.bytes),
            None => (String::new(), 0, 0),
        };
        let end = event == "end";
        AccessLine {
            time: rfc3339_now(),
            event: event.to_owned(),
            listener,
            member,
            protocol: proto(k.proto).to_owned(),
            client: endpoint(k.client, k.client_port),
            vip: endpoint(k.remote, k.remote_port),
            backend,
            packets_in: if end { f.packets } else { 0 },
            bytes_in: if end { f.bytes } else { 0 },
            packets_out: if end { po } else { 0 },
            bytes_out: if end { bo } else { 0 },
            duration_ms: if end {
                f.last_seen_ns.saturating_sub(f.created_ns) / 1_000_000
            } else {
                0
            },
            reason: reason.to_owned(),
        }
    }
}

/// Connections a listener or member holds now: active (a packet within
/// the last 10 s) and inactive (idle longer, not yet expired) as the seed's
/// ELB metrics name them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gauges {
    pub active: u64,
    pub inactive: u64,
}

/// Active and inactive connections per service and per backend number.
pub fn gauges(
    now_ns: u64,
    flows: &[(LbFlowKey, LbFlow)],
) -> (BTreeMap<u32, Gauges>, BTreeMap<u32, Gauges>) {
    let mut s: BTreeMap<u32, Gauges> = BTreeMap::new();
    let mut b: BTreeMap<u32, Gauges> = BTreeMap::new();
    for (_, f) in flows {
        let active = now_ns.saturating_sub(f.last_seen_ns) < 10_000_000_000;
        for g in [
            s.entry(f.service).or_default(),
            b.entry(f.backend).or_default(),
        ] {
            if active {
                g.active += 1;
            } else {
                g.inactive += 1;
            }
        }
    }
    (s, b)
}

/// The metrics in Prometheus' text exposition format: for each listener
/// and member (labels: `listener`, `member`, `host`), traffic in and out
/// (bytes, packets), new connections, refused connections, active and
/// inactive connections.
pub fn prometheus(
    host: &str,
    listeners: &[(String, LbStats, Gauges)],
    members: &[(String, String, LbStats, Gauges)],
) -> String {
    let mut out = String::new();
    type Get = fn(&LbStats, &Gauges) -> u64;
    let metrics: [(&str, &str, &str, Get); 8] = [
        (
            "bytes_in_total",
            "counter",
            "Bytes from clients to members (IP bytes).",
            |s, _| s.bytes_in,
        ),
        (
            "bytes_out_total",
            "counter",
            "Bytes from members to clients.",
            |s, _| s.bytes_out,
        ),
        (
            "packets_in_total",
            "counter",
            "Packets from clients to members.",
            |s, _| s.packets_in,
        ),
        (
            "packets_out_total",
            "counter",
            "Packets from members to clients.",
            |s, _| s.packets_out,
        ),
        (
            "connections_total",
            "counter",
            "New connections given a member.",
            |s, _| s.connections,
        ),
        (
            "refused_total",
            "counter",
            "Packets refused (no member, no listener, drained): reset or unreachable.",
            |s, _| s.refused,
        ),
        (
            "active_connections",
            "gauge",
            "Connections with a packet in the last 10 s.",
            |_, g| g.active,
        ),
        (
            "inactive_connections",
            "gauge",
            "Connections idle for 10 s or more, not yet expired.",
            |_, g| g.inactive,
        ),
    ];
    for (name, kind, help, get) in metrics {
        for (scope, label) in [("listener", true), ("member", false)] {
            let full = format!("strato_lb_{scope}_{name}");
            let _ = writeln!(out, "# HELP {full} {help}");
            let _ = writeln!(out, "# TYPE {full} {kind}");
            if label {
                for (l, s, g) in listeners {
                    let _ = writeln!(
                        out,
                        "{full}{{host=\"{host}\",listener=\"{l}\"}} {}",
                        get(s, g)
                    );
                }
            } else {
                for (l, m, s, g) in members {
                    let _ = writeln!(
                        out,
                        "{full}{{host=\"{host}\",listener=\"{l}\",member=\"{m}\"}} {}",
                        get(s, g)
                    );
                }
            }
        }
    }
    out
}

/// Replaces `dir/metrics.prom` with `text` (written aside, then renamed:
/// a reader never sees half a file).
pub fn write_metrics(dir: &Path, text: &str) -> std::io::Result<()> {
    let tmp = dir.join(format!("{METRICS}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join(METRICS))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16) -> LbFlowKey {
        LbFlowKey {
            domain: 7,
            client: [10, 0, 0, 5],
            remote: [10, 0, 0, 100],
            client_port: port,
            remote_port: 80,
            proto: 6,
            _pad: [0; 3],
        }
    }

    fn flow(created: u64, last: u64) -> LbFlow {
        LbFlow {
            backend: 3,
            service: 1,
            created_ns: created,
            last_seen_ns: last,
            packets: 4,
            bytes: 400,
        }
    }

    fn rev(port: u16) -> (LbFlowKey, LbRev) {
        (
            LbFlowKey {
                remote: [10, 0, 1, 9],
                remote_port: 8080,
                ..key(port)
            },
            LbRev {
                vip: [10, 0, 0, 100],
                vip_port: 80,
                _pad: 0,
                service: 1,
                backend: 3,
                last_seen_ns: 0,
                packets: 3,
                bytes: 900,
            },
        )
    }

    fn read(dir: &Path) -> Vec<AccessLine> {
        std::fs::read_to_string(dir.join(ACCESS_LOG))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    }

    #[test]
    fn connections_start_and_end_once() {
        let dir = std::env::temp_dir().join(format!("strato-lblog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut log = AccessLog::new(&dir);
        let names = |_: u32, _: u32| ("l1".to_owned(), "m1".to_owned());
        let never = |_: &LbFlowKey, _: &LbFlowKey| false;
        let idle = |_: u32| 50_000_000_000;
        let s = 1_000_000_000;
        assert_eq!(
            log.tick(s, &[(key(1), flow(s, s))], &[rev(1)], &names, &never, &idle)
                .unwrap(),
            1
        );
        // Seen again: nothing new.
        assert_eq!(
            log.tick(
                2 * s,
                &[(key(1), flow(s, 2 * s))],
                &[rev(1)],
                &names,
                &never,
                &idle
            )
            .unwrap(),
            0
        );
        // Closed (the connection tracking says so).
        let closed = |_: &LbFlowKey, _: &LbFlowKey| true;
        assert_eq!(
            log.tick(
                3 * s,
                &[(key(1), flow(s, 3 * s))],
                &[rev(1)],
                &names,
                &closed,
                &idle
            )
            .unwrap(),
            1
        );
        // Still in the table after it ended: not logged again.
        assert_eq!(
            log.tick(
                3 * s,
                &[(key(1), flow(s, 3 * s))],
                &[rev(1)],
                &names,
                &closed,
                &idle
            )
            .unwrap(),
            0
        );
        // A second connection that goes away without a word.
        log.tick(
            4 * s,
            &[(key(2), flow(4 * s, 4 * s))],
            &[rev(2)],
            &names,
            &never,
            &idle,
        )
        .unwrap();
        log.tick(5 * s, &[], &[], &names, &never, &idle).unwrap();
        // A short one, opened and closed between two ticks: both lines.
        assert_eq!(
            log.tick(
                6 * s,
                &[(key(3), flow(6 * s, 6 * s))],
                &[rev(3)],
                &names,
                &closed,
                &idle
            )
            .unwrap(),
            2
        );
        let lines = read(&dir);
        let events: Vec<(&str, &str)> = lines
            .iter()
            .map(|l| (l.event.as_str(), l.reason.as_str()))
            .collect();
        assert_eq!(
            events,
            [
                ("start", ""),
                ("end", "closed"),
                ("start", ""),
                ("end", "gone"),
                ("start", ""),
                ("end", "closed")
            ]
        );
        let end = &lines[1];
        assert_eq!(
            (end.bytes_in, end.bytes_out, end.duration_ms),
            (400, 900, 2000)
        );
        assert_eq!(end.backend, "10.0.1.9:8080");
        assert_eq!(end.vip, "10.0.0.100:80");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn prometheus_text_has_every_metric_per_label() {
        let s = LbStats {
            bytes_in: 10,
            connections: 2,
            ..LbStats::default()
        };
        let g = Gauges {
            active: 1,
            inactive: 0,
        };
        let t = prometheus(
            "h1",
            &[("l1".into(), s, g)],
            &[("l1".into(), "m1".into(), s, g)],
        );
        assert!(t.contains("strato_lb_listener_bytes_in_total{host=\"h1\",listener=\"l1\"} 10"));
        assert!(t.contains(
            "strato_lb_member_connections_total{host=\"h1\",listener=\"l1\",member=\"m1\"} 2"
        ));
        assert!(t.contains("# TYPE strato_lb_listener_active_connections gauge"));
        assert_eq!(t.matches("# TYPE").count(), 16);
    }
}

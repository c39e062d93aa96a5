//! The instance's counters: one Prometheus registry (served as text on
//! `GET /metrics`), whose atomics also make the `GET /stats` answer
//! ([`L7Stats`]). Counters only; never logs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use strato_proto::l7::{L7ListenerStats, L7MemberStats, L7Stats};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    listener: String,
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MemberLabels {
    pool: String,
    member: String,
}

type HistogramFamily = Family<ListenerLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms .. ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// One listener's counters (shared with the registry).
pub struct ListenerStats {
    pub id: String,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub active_connections: Gauge,
    pub total_connections: Counter,
    pub rejected_connections: Counter,
    pub request_errors: Counter,
    pub requests: Counter,
    pub responses: [Counter; 5],
    pub latency: Histogram,
}

impl ListenerStats {
    /// Counts a response by its class.
    pub fn response(&self, status: u16) {
        if (100..600).contains(&status) {
            self.responses[(status / 100 - 1) as usize].inc();
        }
    }
}

/// One member's counters.
pub struct MemberStats {
    pub id: String,
    pub pool_id: String,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub active_requests: Gauge,
    pub total_requests: Counter,
    pub request_errors: Counter,
}

pub struct Metrics {
    registry: Registry,
    l_bytes_in: Family<ListenerLabels, Counter>,
    l_bytes_out: Family<ListenerLabels, Counter>,
    l_active: Family<ListenerLabels, Gauge>,
    l_total: Family<ListenerLabels, Counter>,
    l_rejected: Family<ListenerLabels, Counter>,
    l_errors: Family<ListenerLabels, Counter>,
    l_requests: Family<ListenerLabels, Counter>,
    l_responses: Family<ClassLabels, Counter>,
    l_latency: HistogramFamily,
    m_bytes_in: Family<MemberLabels, Counter>,
    m_bytes_out: Family<MemberLabels, Counter>,
    m_active: Family<MemberLabels, Gauge>,
    m_total: Family<MemberLabels, Counter>,
    m_errors: Family<MemberLabels, Counter>,
    /// Reload failures.
    pub reload_errors: Counter,
    pub reloads: Counter,
    listeners: Mutex<BTreeMap<String, Arc<ListenerStats>>>,
    members: Mutex<BTreeMap<(String, String), Arc<MemberStats>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("strato_l7");
        let m = Metrics {
            l_bytes_in: Family::default(),
            l_bytes_out: Family::default(),
            l_active: Family::default(),
            l_total: Family::default(),
            l_rejected: Family::default(),
            l_errors: Family::default(),
            l_requests: Family::default(),
            l_responses: Family::default(),
            l_latency: Family::new_with_constructor(latency_histogram),
            m_bytes_in: Family::default(),
            m_bytes_out: Family::default(),
            m_active: Family::default(),
            m_total: Family::default(),
            m_errors: Family::default(),
            reload_errors: Counter::default(),
            reloads: Counter::default(),
            listeners: Mutex::default(),
            members: Mutex::default(),
            registry: Registry::default(),
        };
        registry.register(
            "listener_bytes_in",
            "Bytes received from clients",
            m.l_bytes_in.clone(),
        );
        registry.register(
            "listener_bytes_out",
            "Bytes sent to clients",
            m.l_bytes_out.clone(),
        );
        registry.register(
            "listener_active_connections",
            "Client connections open",
            m.l_active.clone(),
        );
        registry.register(
            "listener_connections",
            "Client connections accepted",
            m.l_total.clone(),
        );
        registry.register(
            "listener_rejected_connections",
            "Client connections closed at once (connection limit, allowed CIDRs)",
            m.l_rejected.clone(),
        );
        registry.register(
            "listener_request_errors",
            "Requests answered with an error by the instance itself",
            m.l_errors.clone(),
        );
        registry.register(
            "listener_requests",
            "Requests received",
            m.l_requests.clone(),
        );
        registry.register(
            "listener_responses",
            "Responses by status class",
            m.l_responses.clone(),
        );
        registry.register(
            "listener_request_duration_seconds",
            "Arrival of a request to its response head sent",
            m.l_latency.clone(),
        );
        registry.register(
            "member_bytes_in",
            "Bytes received from the member",
            m.m_bytes_in.clone(),
        );
        registry.register(
            "member_bytes_out",
            "Bytes sent to the member",
            m.m_bytes_out.clone(),
        );
        registry.register(
            "member_active_requests",
            "Requests in flight to the member",
            m.m_active.clone(),
        );
        registry.register(
            "member_requests",
            "Requests sent to the member",
            m.m_total.clone(),
        );
        registry.register(
            "member_request_errors",
            "Requests to the member that failed (connect, timeout, reset)",
            m.m_errors.clone(),
        );
        registry.register("reloads", "Configurations loaded", m.reloads.clone());
        registry.register(
            "reload_errors",
            "Configurations refused",
            m.reload_errors.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn listener(&self, id: &str) -> Arc<ListenerStats> {
        let mut map = self.listeners.lock().expect("metrics poisoned");
        map.entry(id.to_string())
            .or_insert_with(|| {
                let l = ListenerLabels {
                    listener: id.to_string(),
                };
                let class = |c: &str| {
                    self.l_responses
                        .get_or_create(&ClassLabels {
                            listener: id.to_string(),
                            class: c.to_string(),
                        })
                        .clone()
                };
                Arc::new(ListenerStats {
                    id: id.to_string(),
                    bytes_in: self.l_bytes_in.get_or_create(&l).clone(),
                    bytes_out: self.l_bytes_out.get_or_create(&l).clone(),
                    active_connections: self.l_active.get_or_create(&l).clone(),
                    total_connections: self.l_total.get_or_create(&l).clone(),
                    rejected_connections: self.l_rejected.get_or_create(&l).clone(),
                    request_errors: self.l_errors.get_or_create(&l).clone(),
                    requests: self.l_requests.get_or_create(&l).clone(),
                    responses: [
                        class("1xx"),
                        class("2xx"),
                        class("3xx"),
                        class("4xx"),
                        class("5xx"),
                    ],
                    latency: self.l_latency.get_or_create(&l).clone(),
                })
            })
            .clone()
    }

    pub fn member(&self, pool: &str, id: &str) -> Arc<MemberStats> {
        let mut map = self.members.lock().expect("metrics poisoned");
        map.entry((pool.to_string(), id.to_string()))
            .or_insert_with(|| {
                let l = MemberLabels {
                    pool: pool.to_string(),
                    member: id.to_string(),
                };
                Arc::new(MemberStats {
                    id: id.to_string(),
                    pool_id: pool.to_string(),
                    bytes_in: self.m_bytes_in.get_or_create(&l).clone(),
                    bytes_out: self.m_bytes_out.get_or_create(&l).clone(),
                    active_requests: self.m_active.get_or_create(&l).clone(),
                    total_requests: self.m_total.get_or_create(&l).clone(),
                    request_errors: self.m_errors.get_or_create(&l).clone(),
                })
            })
            .clone()
    }

    /// Prometheus text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Totals since start, every listener and member seen.
    pub fn stats(&self) -> L7Stats {
        let listeners = self
            .listeners
            .lock()
            .expect("metrics poisoned")
            .values()
            .map(|l| L7ListenerStats {
                id: l.id.clone(),
                bytes_in: l.bytes_in.get(),
                bytes_out: l.bytes_out.get(),
                active_connections: l.active_connections.get().max(0) as u64,
                total_connections: l.total_connections.get(),
                request_errors: l.request_errors.get(),
                requests: l.requests.get(),
                responses: std::array::from_fn(|i| l.responses[i].get()),
            })
            .collect();
        let members = self
            .members
            .lock()
            .expect("metrics poisoned")
            .values()
            .map(|m| L7MemberStats {
                id: m.id.clone(),
                pool_id: m.pool_id.clone(),
                bytes_in: m.bytes_in.get(),
                bytes_out: m.bytes_out.get(),
                active_requests: m.active_requests.get().max(0) as u64,
                total_requests: m.total_requests.get(),
                request_errors: m.request_errors.get(),
            })
            .collect();
        L7Stats {
            listeners,
            members,
            cpu_us: cpu_us(),
        }
    }
}

/// CPU time (user + system) of this process, µs.
pub fn cpu_us() -> u64 {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole `rusage` into the pointer it is
    // given, which points at a zeroed, properly sized and aligned value.
    #[allow(unsafe_code)]
    let (rc, ru) = unsafe {
        let rc = libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr());
        (rc, ru.assume_init())
    };
    if rc != 0 {
        return 0;
    }
    let us = |t: libc::timeval| (t.tv_sec.max(0) as u64) * 1_000_000 + t.tv_usec.max(0) as u64;
    us(ru.ru_utime) + us(ru.ru_stime)
}

//! Member choice: which member of a pool takes a request (weighted round
//! robin, least connections, source-IP Maglev), backups, and session
//! persistence (source IP, the instance's cookie, the member's cookie).
//! Never does I/O; the requests in flight per member come from the
//! caller.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use strato_lb::maglev;
use strato_proto::l7::L7Pool;

use crate::error::{invalid, ConfigError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    RoundRobin,
    LeastConnections,
    SourceIp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Persistence {
    SourceIp {
        timeout: Option<Duration>,
    },
    HttpCookie {
        max_age_s: u32,
    },
    AppCookie {
        name: String,
        timeout: Option<Duration>,
    },
}

#[derive(Clone, Debug)]
pub struct MemberConfig {
    pub id: String,
    pub addr: SocketAddr,
    pub weight: u32,
    pub backup: bool,
    /// Takes new requests.
    pub active: bool,
    /// The value of the persistence cookie naming it.
    pub token: String,
}

/// A pool as compiled from its configuration.
pub struct PoolConfig {
    pub id: String,
    pub algorithm: Algorithm,
    pub persistence: Option<Persistence>,
    pub members: Vec<MemberConfig>,
    /// Indices of the active members that take requests: the active
    /// non-backup members, else the active backups.
    candidates: Vec<usize>,
    /// SOURCE_IP: Maglev table over `candidates`.
    maglev: Option<Vec<u32>>,
}

/// A stable opaque token for a member (FNV-1a of pool and member ids).
pub fn token(pool: &str, member: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in pool.bytes().chain([0]).chain(member.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn hash_ip(ip: IpAddr) -> u64 {
    let bytes: Vec<u8> = match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => v4.octets().to_vec(),
            None => a.octets().to_vec(),
        },
    };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Finalise (splitmix64) so that neighbouring addresses spread.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl PoolConfig {
    pub fn new(p: &L7Pool, algorithm: Algorithm, field: &str) -> Result<PoolConfig, ConfigError> {
        let persistence = match &p.session_persistence {
            None => None,
            Some(s) => {
                let timeout = (s.timeout_s > 0).then(|| Duration::from_secs(s.timeout_s.into()));
                Some(match s.kind.as_str() {
                    "SOURCE_IP" => Persistence::SourceIp { timeout },
                    "HTTP_COOKIE" => Persistence::HttpCookie {
                        max_age_s: s.timeout_s,
                    },
                    "APP_COOKIE" => Persistence::AppCookie {
                        name: s
                            .cookie_name
                            .clone()
                            .filter(|n| {
                                !n.is_empty()
                                    && n.bytes()
                                        .all(|b| b.is_ascii_graphic() && !b"=;,\"".contains(&b))
                            })
                            .ok_or_else(|| {
                                invalid(
                                    format!("{field}.session_persistence.cookie_name"),
                                    "missing or not a cookie name for APP_COOKIE",
                                )
                            })?,
                        timeout,
                    },
                    other => {
                        return Err(invalid(
                            format!("{field}.session_persistence.type"),
                            format!("{other:?} unknown"),
                        ))
                    }
                })
            }
        };
        let mut members = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (i, m) in p.members.iter().enumerate() {
            let mf = format!("{field}.members[{i}]");
            if !seen.insert(m.id.as_str()) || m.id.is_empty() {
                return Err(invalid(
                    format!("{mf}.id"),
                    format!("{:?} empty or twice", m.id),
                ));
            }
            let ip: IpAddr = m.address.parse().map_err(|_| {
                invalid(
                    format!("{mf}.address"),
                    format!("{:?} is not an IP address", m.address),
                )
            })?;
            if m.protocol_port == 0 {
                return Err(invalid(format!("{mf}.protocol_port"), "0"));
            }
            let active = match m.state.as_str() {
                "active" => m.weight > 0,
                "draining" | "down" => false,
                other => return Err(invalid(format!("{mf}.state"), format!("{other:?} unknown"))),
            };
            members.push(MemberConfig {
                id: m.id.clone(),
                addr: SocketAddr::new(ip, m.protocol_port),
                weight: m.weight.into(),
                backup: m.backup,
                active,
                token: token(&p.id, &m.id),
            });
        }
        let primary: Vec<usize> = (0..members.len())
            .filter(|&i| members[i].active && !members[i].backup)
            .collect();
        let candidates = if primary.is_empty() {
            (0..members.len())
                .filter(|&i| members[i].active && members[i].backup)
                .collect()
        } else {
            primary
        };
        let maglev = if algorithm == Algorithm::SourceIp && !candidates.is_empty() {
            let backends: Vec<maglev::MaglevBackend> = candidates
                .iter()
                .map(|&i| maglev::MaglevBackend {
                    key: u64::from_str_radix(&members[i].token, 16).unwrap_or(i as u64),
                    weight: members[i].weight,
                })
                .collect();
            maglev::build(&backends, maglev::table_size(backends.len()))
        } else {
            None
        };
        Ok(PoolConfig {
            id: p.id.clone(),
            algorithm,
            persistence,
            members,
            candidates,
            maglev,
        })
    }

    pub fn member(&self, id: &str) -> Option<&MemberConfig> {
        self.members.iter().find(|m| m.id == id)
    }

    fn candidate_by(&self, f: impl Fn(&MemberConfig) -> bool) -> Option<usize> {
        self.candidates
            .iter()
            .copied()
            .find(|&i| f(&self.members[i]))
    }
}

/// What a pool keeps between requests (and across reloads): the round
/// robin's state and the persistence tables.
#[derive(Default)]
pub struct PoolState {
    /// Smooth weighted round robin: current weight per member id.
    current: Mutex<HashMap<String, i64>>,
    /// Tie breaker of least connections.
    turn: AtomicUsize,
    /// Sticky key (client address, member cookie value) -> member id and
    /// when it was last used.
    sticky: Mutex<HashMap<String, (String, Instant)>>,
}

/// Bound on a pool's persistence table; over it, expired entries go, and
/// if that is not enough the table starts over.
const STICKY_MAX: usize = 100_000;

/// A request as member choice sees it.
pub struct ChoiceInput<'a> {
    pub client: IpAddr,
    /// The value of the instance's persistence cookie, if sent.
    pub lb_cookie: Option<&'a str>,
    /// The value of an APP_COOKIE pool's cookie, if sent.
    pub app_cookie: Option<&'a str>,
}

/// The chosen member.
#[derive(Debug, PartialEq, Eq)]
pub struct Choice {
    pub member: usize,
    /// HTTP_COOKIE: the cookie to set (absent or stale in the request).
    pub set_cookie: Option<String>,
}

impl PoolState {
    /// Chooses a member for a request, or `None` when no member is active.
    /// `in_flight(i)`: requests in flight to member `i` (an index into
    /// `pool.members`). `exclude`: a member not to choose (a retry after
    /// its connection failed).
    pub fn choose(
        &self,
        pool: &PoolConfig,
        req: &ChoiceInput<'_>,
        in_flight: &dyn Fn(usize) -> u64,
        exclude: Option<usize>,
    ) -> Option<Choice> {
        let usable = |m: &MemberConfig| exclude.is_none_or(|x| pool.members[x].id != m.id);
        match &pool.persistence {
            Some(Persistence::SourceIp { timeout }) => {
                let now = Instant::now();
                let key = req.client.to_string();
                if let Some(i) = self.sticky_lookup(pool, &key, *timeout, now, &usable) {
                    return Some(Choice {
                        member: i,
                        set_cookie: None,
                    });
                }
                let i = self.balance(pool, req, in_flight, &usable)?;
                self.remember(key, &pool.members[i].id, *timeout, now);
                Some(Choice {
                    member: i,
                    set_cookie: None,
                })
            }
            Some(Persistence::HttpCookie { .. }) => {
                if let Some(t) = req.lb_cookie {
                    if let Some(i) = pool.candidate_by(|m| m.token == t && usable(m)) {
                        return Some(Choice {
                            member: i,
                            set_cookie: None,
                        });
                    }
                }
                let i = self.balance(pool, req, in_flight, &usable)?;
                Some(Choice {
                    member: i,
                    set_cookie: Some(pool.members[i].token.clone()),
                })
            }
            Some(Persistence::AppCookie { timeout, .. }) => {
                let now = Instant::now();
                if let Some(v) = req.app_cookie {
                    if let Some(i) = self.sticky_lookup(pool, v, *timeout, now, &usable) {
                        return Some(Choice {
                            member: i,
                            set_cookie: None,
                        });
                    }
                }
                let i = self.balance(pool, req, in_flight, &usable)?;
                Some(Choice {
                    member: i,
                    set_cookie: None,
                })
            }
            None => Some(Choice {
                member: self.balance(pool, req, in_flight, &usable)?,
                set_cookie: None,
            }),
        }
    }

    /// APP_COOKIE: the member set its cookie to `value`.
    pub fn learn(&self, pool: &PoolConfig, value: &str, member: &str) {
        if let Some(Persistence::AppCookie { timeout, .. }) = &pool.persistence {
            self.remember(value.to_string(), member, *timeout, Instant::now());
        }
    }

    fn sticky_lookup(
        &self,
        pool: &PoolConfig,
        key: &str,
        timeout: Option<Duration>,
        now: Instant,
        usable: &dyn Fn(&MemberConfig) -> bool,
    ) -> Option<usize> {
        let mut sticky = self.sticky.lock().expect("sticky table poisoned");
        let (member, last) = sticky.get_mut(key)?;
        if timeout.is_some_and(|t| now.duration_since(*last) > t) {
            sticky.remove(key);
            return None;
        }
        let i = pool.candidate_by(|m| m.id == *member && usable(m))?;
        *last = now;
        Some(i)
    }

    fn remember(&self, key: String, member: &str, timeout: Option<Duration>, now: Instant) {
        let mut sticky = self.sticky.lock().expect("sticky table poisoned");
        if sticky.len() >= STICKY_MAX {
            sticky.retain(|_, (_, last)| timeout.is_some_and(|t| now.duration_since(*last) <= t));
            if sticky.len() >= STICKY_MAX {
                sticky.clear();
            }
        }
        sticky.insert(key, (member.to_string(), now));
    }

    /// The pool's algorithm over its candidates.
    fn balance(
        &self,
        pool: &PoolConfig,
        req: &ChoiceInput<'_>,
        in_flight: &dyn Fn(usize) -> u64,
        usable: &dyn Fn(&MemberConfig) -> bool,
    ) -> Option<usize> {
        // Every candidate unless a retry excludes one.
        let filtered: Vec<usize>;
        let cands: &[usize] = if pool.candidates.iter().all(|&i| usable(&pool.members[i])) {
            &pool.candidates
        } else {
            filtered = pool
                .candidates
                .iter()
                .copied()
                .filter(|&i| usable(&pool.members[i]))
                .collect();
            &filtered
        };
        if cands.is_empty() {
            return None;
        }
        match pool.algorithm {
            Algorithm::RoundRobin => Some(self.smooth_round_robin(pool, cands)),
            Algorithm::LeastConnections => {
                let n = cands.len();
                let start = self.turn.fetch_add(1, Ordering::Relaxed) % n;
                let mut best = cands[start];
                for k in 1..n {
                    let i = cands[(start + k) % n];
                    let (a, b) = (&pool.members[i], &pool.members[best]);
                    // in_flight(a)/w(a) < in_flight(b)/w(b)
                    if u128::from(in_flight(i)) * u128::from(b.weight)
                        < u128::from(in_flight(best)) * u128::from(a.weight)
                    {
                        best = i;
                    }
                }
                Some(best)
            }
            Algorithm::SourceIp => {
                let h = hash_ip(req.client);
                match &pool.maglev {
                    Some(table) if cands.len() == pool.candidates.len() => {
                        let slot = table[(h % table.len() as u64) as usize] as usize;
                        Some(pool.candidates[slot])
                    }
                    // A retry without the failed member: a plain hash.
                    _ => Some(cands[(h % cands.len() as u64) as usize]),
                }
            }
        }
    }

    /// nginx's smooth weighted round robin.
    fn smooth_round_robin(&self, pool: &PoolConfig, cands: &[usize]) -> usize {
        let mut current = self.current.lock().expect("round robin state poisoned");
        if current.len() > pool.members.len() * 2 + 16 {
            current.retain(|id, _| pool.member(id).is_some());
        }
        let total: i64 = cands
            .iter()
            .map(|&i| i64::from(pool.members[i].weight))
            .sum();
        let mut best = cands[0];
        let mut best_cw = i64::MIN;
        for &i in cands {
            let m = &pool.members[i];
            let cw = match current.get_mut(m.id.as_str()) {
                Some(cw) => cw,
                None => current.entry(m.id.clone()).or_insert(0),
            };
            *cw += i64::from(m.weight);
            if *cw > best_cw {
                best_cw = *cw;
                best = i;
            }
        }
        if let Some(cw) = current.get_mut(&pool.members[best].id) {
            *cw -= total;
        }
        best
    }
}

#[cfg(test)]
mod tests;

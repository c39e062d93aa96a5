//! Member choice. Inputs tried: weights 1:3, a member down, draining,
//! weight 0, all primaries inactive (backups take over), no active member
//! at all, stale and forged persistence cookies, expired stickiness.

use super::*;
use std::collections::BTreeMap;
use strato_proto::l7::{L7Member, L7Persistence};

fn member(id: &str, weight: u16, backup: bool, state: &str) -> L7Member {
    L7Member {
        id: id.into(),
        address: "127.0.0.1".into(),
        protocol_port: 9000,
        weight,
        backup,
        state: state.into(),
    }
}

fn pool(algo: Algorithm, members: Vec<L7Member>, persistence: Option<L7Persistence>) -> PoolConfig {
    let p = L7Pool {
        id: "p".into(),
        lb_algorithm: String::new(),
        session_persistence: persistence,
        members,
    };
    PoolConfig::new(&p, algo, "pool").expect("valid pool")
}

fn input(ip: &str) -> ChoiceInput<'static> {
    ChoiceInput {
        client: ip.parse().expect("ip"),
        lb_cookie: None,
        app_cookie: None,
    }
}

fn counts(p: &PoolConfig, st: &PoolState, n: usize) -> BTreeMap<String, usize> {
    let mut c = BTreeMap::new();
    for _ in 0..n {
        let ch = st
            .choose(p, &input("10.0.0.1"), &|_| 0, None)
            .expect("member");
        *c.entry(p.members[ch.member].id.clone()).or_default() += 1;
    }
    c
}

#[test]
fn round_robin_follows_weights_smoothly() {
    let p = pool(
        Algorithm::RoundRobin,
        vec![
            member("a", 1, false, "active"),
            member("b", 3, false, "active"),
        ],
        None,
    );
    let st = PoolState::default();
    let seq: Vec<String> = (0..8)
        .map(|_| {
            p.members[st
                .choose(&p, &input("10.0.0.1"), &|_| 0, None)
                .expect("m")
                .member]
                .id
                .clone()
        })
        .collect();
    assert_eq!(seq.iter().filter(|m| *m == "a").count(), 2);
    // Smooth: never a at twice in a row.
    assert!(
        seq.windows(2).all(|w| !(w[0] == "a" && w[1] == "a")),
        "{seq:?}"
    );
}

#[test]
fn only_active_members_and_backups_last() {
    let p = pool(
        Algorithm::RoundRobin,
        vec![
            member("a", 1, false, "down"),
            member("b", 1, false, "draining"),
            member("c", 0, false, "active"),
            member("d", 1, false, "active"),
            member("e", 1, true, "active"),
        ],
        None,
    );
    let c = counts(&p, &PoolState::default(), 10);
    assert_eq!(c, BTreeMap::from([("d".to_string(), 10)]));
    let p = pool(
        Algorithm::RoundRobin,
        vec![
            member("a", 1, false, "down"),
            member("e", 1, true, "active"),
            member("f", 1, true, "active"),
        ],
        None,
    );
    let c = counts(&p, &PoolState::default(), 10);
    assert_eq!(
        c,
        BTreeMap::from([("e".to_string(), 5), ("f".to_string(), 5)])
    );
    let p = pool(
        Algorithm::RoundRobin,
        vec![
            member("a", 1, false, "down"),
            member("e", 1, true, "draining"),
        ],
        None,
    );
    assert!(PoolState::default()
        .choose(&p, &input("10.0.0.1"), &|_| 0, None)
        .is_none());
}

#[test]
fn least_connections_divides_by_weight() {
    let p = pool(
        Algorithm::LeastConnections,
        vec![
            member("a", 1, false, "active"),
            member("b", 4, false, "active"),
        ],
        None,
    );
    let st = PoolState::default();
    // a: 2 in flight (2/1), b: 5 in flight (5/4 < 2): b.
    let load = |i: usize| if p.members[i].id == "a" { 2 } else { 5 };
    for _ in 0..4 {
        assert_eq!(
            p.members[st
                .choose(&p, &input("10.0.0.1"), &load, None)
                .expect("m")
                .member]
                .id,
            "b"
        );
    }
    // a: 1 (1/1 < 9/4): a.
    let load = |i: usize| if p.members[i].id == "a" { 1 } else { 9 };
    assert_eq!(
        p.members[st
            .choose(&p, &input("10.0.0.1"), &load, None)
            .expect("m")
            .member]
            .id,
        "a"
    );
    // Ties rotate.
    let c = counts(&p, &st, 10);
    assert_eq!(c.len(), 2, "{c:?}");
}

#[test]
fn source_ip_is_stable_and_spreads() {
    let p = pool(
        Algorithm::SourceIp,
        vec![
            member("a", 1, false, "active"),
            member("b", 1, false, "active"),
            member("c", 1, false, "active"),
        ],
        None,
    );
    let st = PoolState::default();
    let mut seen = BTreeMap::<String, usize>::new();
    for i in 0..60 {
        let ip = format!("10.0.{}.{}", i / 7, i % 7 + 1);
        let first = st.choose(&p, &input(&ip), &|_| 0, None).expect("m").member;
        for _ in 0..3 {
            assert_eq!(
                st.choose(&p, &input(&ip), &|_| 0, None).expect("m").member,
                first
            );
        }
        *seen.entry(p.members[first].id.clone()).or_default() += 1;
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    // Excluding the hashed member (a retry) picks another.
    let first = st
        .choose(&p, &input("10.9.9.9"), &|_| 0, None)
        .expect("m")
        .member;
    let retry = st
        .choose(&p, &input("10.9.9.9"), &|_| 0, Some(first))
        .expect("m")
        .member;
    assert_ne!(first, retry);
}

#[test]
fn http_cookie_persistence() {
    let per = L7Persistence {
        kind: "HTTP_COOKIE".into(),
        cookie_name: None,
        timeout_s: 60,
    };
    let p = pool(
        Algorithm::RoundRobin,
        vec![
            member("a", 1, false, "active"),
            member("b", 1, false, "active"),
            member("c", 1, false, "down"),
        ],
        Some(per.clone()),
    );
    let st = PoolState::default();
    let first = st.choose(&p, &input("10.0.0.1"), &|_| 0, None).expect("m");
    let token = first.set_cookie.clone().expect("cookie set when absent");
    for _ in 0..5 {
        let again = st
            .choose(
                &p,
                &ChoiceInput {
                    lb_cookie: Some(&token),
                    ..input("10.0.0.1")
                },
                &|_| 0,
                None,
            )
            .expect("m");
        assert_eq!(
            again,
            Choice {
                member: first.member,
                set_cookie: None
            }
        );
    }
    // A forged cookie, and one naming a member that is down: a new
    // choice, and the cookie is set again.
    let down = token_of(&p, "c");
    for stale in ["0000000000000000", down.as_str()] {
        let c = st
            .choose(
                &p,
                &ChoiceInput {
                    lb_cookie: Some(stale),
                    ..input("10.0.0.1")
                },
                &|_| 0,
                None,
            )
            .expect("m");
        assert_ne!(p.members[c.member].id, "c");
        assert_eq!(
            c.set_cookie.as_deref(),
            Some(p.members[c.member].token.as_str())
        );
    }
}

fn token_of(p: &PoolConfig, id: &str) -> String {
    p.member(id).expect("member").token.clone()
}

#[test]
fn source_ip_and_app_cookie_persistence() {
    let per = L7Persistence {
        kind: "SOURCE_IP".into(),
        cookie_name: None,
        timeout_s: 60,
    };
    let p = pool(
        Algorithm::RoundRobin,
        vec![
            member("a", 1, false, "active"),
            member("b", 1, false, "active"),
        ],
        Some(per),
    );
    let st = PoolState::default();
    let m = st
        .choose(&p, &input("10.0.0.7"), &|_| 0, None)
        .expect("m")
        .member;
    for _ in 0..5 {
        assert_eq!(
            st.choose(&p, &input("10.0.0.7"), &|_| 0, None)
                .expect("m")
                .member,
            m
        );
    }
    // The sticky member goes down: not used.
    let mut members = vec![
        member("a", 1, false, "active"),
        member("b", 1, false, "active"),
    ];
    members[m].state = "down".into();
    let p2 = pool(
        Algorithm::RoundRobin,
        members,
        Some(L7Persistence {
            kind: "SOURCE_IP".into(),
            cookie_name: None,
            timeout_s: 60,
        }),
    );
    assert_ne!(
        st.choose(&p2, &input("10.0.0.7"), &|_| 0, None)
            .expect("m")
            .member,
        m
    );

    let per = L7Persistence {
        kind: "APP_COOKIE".into(),
        cookie_name: Some("JSESSIONID".into()),
        timeout_s: 60,
    };
    let p = pool(
        Algorithm::RoundRobin,
        vec![
            member("a", 1, false, "active"),
            member("b", 1, false, "active"),
        ],
        Some(per),
    );
    let st = PoolState::default();
    st.learn(&p, "s1", "b");
    for _ in 0..5 {
        let c = st
            .choose(
                &p,
                &ChoiceInput {
                    app_cookie: Some("s1"),
                    ..input("10.0.0.1")
                },
                &|_| 0,
                None,
            )
            .expect("m");
        assert_eq!(p.members[c.member].id, "b");
    }
    // An unknown value is balanced.
    let c = counts(&p, &st, 4);
    assert_eq!(c.len(), 2);
}

#[test]
fn stickiness_expires() {
    let per = L7Persistence {
        kind: "APP_COOKIE".into(),
        cookie_name: Some("S".into()),
        timeout_s: 1,
    };
    let p = pool(
        Algorithm::RoundRobin,
        vec![
            member("a", 1, false, "active"),
            member("b", 1, false, "active"),
        ],
        Some(per),
    );
    let st = PoolState::default();
    st.learn(&p, "v", "b");
    // Age the entry past its timeout.
    st.sticky
        .lock()
        .expect("lock")
        .get_mut("v")
        .expect("entry")
        .1 -= Duration::from_secs(2);
    let picks: Vec<usize> = (0..4)
        .map(|_| {
            st.choose(
                &p,
                &ChoiceInput {
                    app_cookie: Some("v"),
                    ..input("10.0.0.1")
                },
                &|_| 0,
                None,
            )
            .expect("m")
            .member
        })
        .collect();
    assert!(picks.contains(&0), "{picks:?}");
}

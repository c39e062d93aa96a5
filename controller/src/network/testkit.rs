//! What the logic tests of `network` and `lbaas` share: a real (in-memory
//! SQLite) core with projects `p1` and `p2`, callers, and a runner that
//! checks a refused command changed nothing.

use crate::{
    auth::Auth,
    commit::Core,
    error::ApiError,
    model::{Change, Object, Project},
    network::Made,
    state::State,
};

/// A core holding projects `p1` and `p2`.
pub fn core() -> Core {
    let c = Core::open(std::path::Path::new(":memory:")).expect("in-memory core");
    c.mutate(|_| {
        let p = |id: &str| {
            Change::Put(Object::Project(Project {
                id: id.into(),
                name: id.into(),
                description: String::new(),
                domain_id: "default".into(),
                enabled: true,
            }))
        };
        Ok((vec![p("p1"), p("p2")], ()))
    })
    .expect("projects");
    c
}

/// A caller with `role` on `project`.
pub fn auth(project: &str, role: &str) -> Auth {
    Auth {
        user_id: format!("u-{project}"),
        user_name: format!("u-{project}"),
        project_id: project.into(),
        project_name: project.into(),
        roles: vec![role.into()],
        expires_unix: u64::MAX,
    }
}

/// A member of project `p`.
pub fn member(p: &str) -> Auth {
    auth(p, "member")
}

/// Runs a command; on error asserts nothing changed (same revision).
pub fn run<T>(c: &Core, f: impl FnOnce(&State) -> Made<T>) -> Result<T, ApiError> {
    let before = c.read().revision;
    let r = c.mutate(f);
    if r.is_err() {
        assert_eq!(
            c.read().revision,
            before,
            "a rejected command changed the state"
        );
    }
    r
}

/// Asserts a refusal with `status` (and a message containing `text`).
#[track_caller]
pub fn refused<T: std::fmt::Debug>(r: Result<T, ApiError>, status: u16, text: &str) {
    let e = r.expect_err("must be refused");
    assert_eq!(e.status, status, "{e}");
    assert!(e.message.contains(text), "{:?} lacks {text:?}", e.message);
}

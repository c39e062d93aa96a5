//! Keystone v3 identity logic: bootstrap of the roles and the administrator,
//! password hashing, token issue, validation and revocation, projects,
//! users and role assignments, and the policy that guards them.
//!
//! Every command is a function of the current [`State`] (plus the caller's
//! [`Auth`]) that either refuses with an [`ApiError`] or returns the
//! [`Change`]s to commit through [`Core::mutate`]; nothing here touches HTTP
//! or the store. Projects and users are both an [`Account`]: their lookups,
//! name rules, creation checks and common updates are written once. Slow work (argon2) is done by the caller *outside*
//! `mutate`, so the state lock is never held while hashing: the API hashes
//! or verifies first, then commits with the result.
//!
//! Choices worth knowing:
//! - One domain, `default` ("Default"); every project and user lives in it.
//! - Tokens are 32 random bytes (`st1` + 64 hex digits), stored only as the
//!   SHA-256 of the token string, durable like everything else.
//! - A token carries no authority of its own: each validation recomputes
//!   the roles from the *current* assignments of its user on its project
//!   (as Keystone does for Fernet tokens), so removing a role, disabling or
//!   deleting the user or the project takes effect on the next request.
//!   A token whose user has no role left on its project is invalid.
//! - The cloud administrator is whoever holds `admin` on the project its
//!   token is scoped to (Keystone's classic project-scoped admin).
//! - Every failed password authentication gets the same 401 message,
//!   whether the user is unknown, the password wrong, the project unknown
//!   or the user has no role on it (no enumeration of users or projects).
//! - The bootstrap administrator and project (named by configuration) cannot
//!   be deleted, renamed or disabled through the API, nor lose that admin
//!   role: they are the operator's way back in, and start-up would recreate
//!   them under their configured names anyway. Change the configuration.
//!   The admin's password may be changed through the API, but every start
//!   resets it to the configured one (revoking the admin's tokens).
//! - Names are unique per domain, compared exactly (case-sensitive), as
//!   the `?name=` filters compare them.

use std::{collections::BTreeMap, sync::OnceLock};

use argon2::{
    password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString},
    Argon2,
};
use sha2::{Digest as _, Sha256};

use crate::{
    app::Config,
    auth::{self, Auth},
    commit::Core,
    error::ApiError,
    model::{
        now_unix, timestamp, Assignment, Change, Kind, Network, Object, Port, Project, Role,
        Router, Subnet, Token, User,
    },
    network::{
        quotas::{held, held_where},
        security_groups,
    },
    state::State,
};

pub const DEFAULT_DOMAIN_ID: &str = "default";
pub const DEFAULT_DOMAIN_NAME: &str = "Default";
/// The roles that mean something here, created at bootstrap.
pub const ROLES: [&str; 3] = [auth::ADMIN, auth::MEMBER, auth::READER];
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longer passwords are refused (they only cost hashing time).
pub const MAX_PASSWORD_BYTES: usize = 4096;
pub const MAX_PROJECT_NAME_CHARS: usize = 64;
pub const MAX_USER_NAME_CHARS: usize = 255;
pub const MAX_DESCRIPTION_CHARS: usize = 1024;
/// Issued tokens start with this, so they are recognisable in a leak scan.
pub const TOKEN_PREFIX: &str = "st1";
/// Expired tokens deleted, at most, in the commit of each issued token.
pub const GC_PER_ISSUE: usize = 32;

// ------------------------------------------------------------------ secrets

/// A new object id: a UUID in Keystone's form (32 hex digits, no dashes).
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A new token: `st1` and 32 random bytes in hex (URL- and header-safe).
pub fn new_token() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| {
        tracing::error!(error = %e, "no randomness for a token");
        ApiError::internal("could not generate a token")
    })?;
    Ok(format!("{TOKEN_PREFIX}{}", hex(&bytes)))
}

/// The SHA-256 of a token (hex): the only form in which tokens are stored.
pub fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What may be logged of a token: the first 8 digits of its hash.
pub fn log_id(hash: &str) -> &str {
    &hash[..hash.len().min(8)]
}

/// Refuses passwords shorter than 8 characters or longer than 4096 bytes.
pub fn check_password_policy(password: &str) -> Result<(), ApiError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(ApiError::bad_request(format!(
            "Invalid input for field 'password': a password needs at least {MIN_PASSWORD_CHARS} characters."
        )));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::bad_request(format!(
            "Invalid input for field 'password': a password may have at most {MAX_PASSWORD_BYTES} bytes."
        )));
    }
    Ok(())
}

/// Argon2id (default parameters) PHC string of `password`, with a random
/// salt. Slow on purpose: call it outside [`Core::mutate`].
pub fn hash_password(password: &str) -> Result<String, ApiError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| {
        tracing::error!(error = %e, "no randomness for a salt");
        ApiError::internal("could not hash the password")
    })?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| {
        tracing::error!(error = %e, "salt encoding");
        ApiError::internal("could not hash the password")
    })?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| {
            tracing::error!(error = %e, "argon2 failed");
            ApiError::internal("could not hash the password")
        })
}

/// Whether `password` matches the PHC string `hash` (false for an empty or
/// malformed hash: such a user cannot log in with a password).
pub fn verify_password(hash: &str, password: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// [`verify_password`] against the user's hash if there is a user with a
/// password, else against a fixed dummy hash (and false), so that an
/// unknown user, or one without a password, takes as long to refuse as a
/// wrong password.
pub fn check_login(hash: Option<&str>, password: &str) -> bool {
    static DUMMY: OnceLock<String> = OnceLock::new();
    match hash.filter(|h| PasswordHash::new(h).is_ok()) {
        Some(h) => verify_password(h, password),
        None => {
            let dummy =
                DUMMY.get_or_init(|| hash_password("not a password of anyone").unwrap_or_default());
            let _ = verify_password(dummy, password);
            false
        }
    }
}

// ------------------------------------------------------------------ lookups

/// A domain as a request names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainRef {
    Id(String),
    Name(String),
}

impl DomainRef {
    /// The domain's id if it exists (only `default`, also by the names
    /// `Default` and `default`).
    pub fn resolve(&self) -> Option<&'static str> {
        match self {
            DomainRef::Id(id) if id == DEFAULT_DOMAIN_ID => Some(DEFAULT_DOMAIN_ID),
            DomainRef::Name(n) if n == DEFAULT_DOMAIN_NAME || n == DEFAULT_DOMAIN_ID => {
                Some(DEFAULT_DOMAIN_ID)
            }
            _ => None,
        }
    }
}

/// A user as an authentication request names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserRef {
    Id(String),
    Name { name: String, domain: DomainRef },
}

/// A project as a scope names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProjectRef {
    Id(String),
    Name { name: String, domain: DomainRef },
}

/// What projects and users share, and Keystone validates alike: a name
/// unique in their domain, a description and an enabled flag.
pub trait Account: Clone + 'static {
    /// `project` or `user`, as messages name it.
    const WHAT: &'static str;
    const MAX_NAME_CHARS: usize;
    fn table(state: &State) -> &BTreeMap<String, Self>;
    fn name(&self) -> &str;
    fn domain_id(&self) -> &str;
    fn enabled(&self) -> bool;
    /// Its name, description and enabled flag, to change.
    fn common_mut(&mut self) -> (&mut String, &mut String, &mut bool);
}

macro_rules! account {
    ($ty:ty, $what:literal, $max:expr, $table:ident) => {
        impl Account for $ty {
            const WHAT: &'static str = $what;
            const MAX_NAME_CHARS: usize = $max;
            fn table(state: &State) -> &BTreeMap<String, Self> {
                &state.$table
            }
            fn name(&self) -> &str {
                &self.name
            }
            fn domain_id(&self) -> &str {
                &self.domain_id
            }
            fn enabled(&self) -> bool {
                self.enabled
            }
            fn common_mut(&mut self) -> (&mut String, &mut String, &mut bool) {
                (&mut self.name, &mut self.description, &mut self.enabled)
            }
        }
    };
}

account!(Project, "project", MAX_PROJECT_NAME_CHARS, projects);
account!(User, "user", MAX_USER_NAME_CHARS, users);

/// The account named `name` in `domain_id`.
pub fn by_name<'a, A: Account>(state: &'a State, domain_id: &str, name: &str) -> Option<&'a A> {
    A::table(state)
        .values()
        .find(|a| a.domain_id() == domain_id && a.name() == name)
}

pub fn user_by_name<'a>(state: &'a State, domain_id: &str, name: &str) -> Option<&'a User> {
    by_name(state, domain_id, name)
}

pub fn project_by_name<'a>(state: &'a State, domain_id: &str, name: &str) -> Option<&'a Project> {
    by_name(state, domain_id, name)
}

/// The account `id` (404 otherwise).
fn account<'a, A: Account>(state: &'a State, id: &str) -> Result<&'a A, ApiError> {
    A::table(state)
        .get(id)
        .ok_or_else(|| ApiError::not_found(A::WHAT, id))
}

pub fn role_by_name<'a>(state: &'a State, name: &str) -> Option<&'a Role> {
    state.roles.values().find(|r| r.name == name)
}

pub fn find_user<'a>(state: &'a State, r: &UserRef) -> Option<&'a User> {
    match r {
        UserRef::Id(id) => state.users.get(id),
        UserRef::Name { name, domain } => user_by_name(state, domain.resolve()?, name),
    }
}

pub fn find_project<'a>(state: &'a State, r: &ProjectRef) -> Option<&'a Project> {
    match r {
        ProjectRef::Id(id) => state.projects.get(id),
        ProjectRef::Name { name, domain } => project_by_name(state, domain.resolve()?, name),
    }
}

/// The assignments of `user_id` on `project_id` (a range of the id space).
fn assignments_of<'a>(
    state: &'a State,
    project_id: &str,
    user_id: &str,
) -> impl Iterator<Item = &'a Assignment> {
    let prefix = format!("{project_id}:{user_id}:");
    let (project_id, user_id) = (project_id.to_owned(), user_id.to_owned());
    state
        .assignments
        .range(prefix.clone()..)
        .take_while(move |(k, _)| k.starts_with(&prefix))
        .map(|(_, a)| a)
        .filter(move |a| a.project_id == project_id && a.user_id == user_id)
}

/// The roles `user_id` holds on `project_id` now, by name.
pub fn roles_on(state: &State, user_id: &str, project_id: &str) -> Vec<Role> {
    let mut roles: Vec<Role> = assignments_of(state, project_id, user_id)
        .filter_map(|a| state.roles.get(&a.role_id))
        .cloned()
        .collect();
    roles.sort_by(|a, b| a.name.cmp(&b.name));
    roles
}

/// The projects `user_id` holds any role on.
pub fn projects_of(state: &State, user_id: &str) -> Vec<Project> {
    let mut ids: Vec<&str> = state
        .assignments
        .values()
        .filter(|a| a.user_id == user_id)
        .map(|a| a.project_id.as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter()
        .filter_map(|id| state.projects.get(id))
        .cloned()
        .collect()
}

// ------------------------------------------------------------------ policy

/// Keystone's 403 wording, naming the policy rule.
fn denied(action: &str) -> ApiError {
    ApiError::forbidden(format!(
        "You are not authorized to perform the requested action: identity:{action}."
    ))
}

pub fn require_admin(caller: &Auth, action: &str) -> Result<(), ApiError> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(denied(action))
    }
}

/// The bootstrap administrator and project, by their configured names (see
/// the module notes for why they are protected).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bootstrap {
    pub admin_user: String,
    pub admin_project: String,
}

impl Bootstrap {
    pub fn from_config(config: &Config) -> Bootstrap {
        Bootstrap {
            admin_user: config.admin_user.clone(),
            admin_project: config.admin_project.clone(),
        }
    }

    pub fn is_admin_user(&self, u: &User) -> bool {
        u.domain_id == DEFAULT_DOMAIN_ID && u.name == self.admin_user
    }

    pub fn is_admin_project(&self, p: &Project) -> bool {
        p.domain_id == DEFAULT_DOMAIN_ID && p.name == self.admin_project
    }
}

// ------------------------------------------------------------------ bootstrap

/// Ensures the roles `admin`, `member`, `reader`, the admin project and the
/// admin user (enabled, with the configured password) with `admin` on that
/// project exist, and drops expired tokens. Idempotent: a second run with
/// the same configuration commits nothing. The password is re-hashed only
/// if it no longer verifies (then the admin's tokens are revoked).
pub fn bootstrap(core: &Core, config: &Config) -> Result<(), ApiError> {
    let boot = Bootstrap::from_config(config);
    check_name("user", &boot.admin_user, MAX_USER_NAME_CHARS)?;
    check_name("project", &boot.admin_project, MAX_PROJECT_NAME_CHARS)?;
    check_password_policy(&config.admin_password)?;
    let existing = {
        let state = core.read();
        user_by_name(&state, DEFAULT_DOMAIN_ID, &boot.admin_user).map(|u| u.password_hash.clone())
    };
    let new_hash = match existing {
        Some(h) if verify_password(&h, &config.admin_password) => None,
        _ => Some(hash_password(&config.admin_password)?),
    };
    let summary = core.mutate(|s| bootstrap_changes(s, &boot, new_hash.as_deref(), now_unix()))?;
    tracing::info!(
        user = %boot.admin_user,
        project = %boot.admin_project,
        changes = summary.changes,
        password_reset = summary.password_reset,
        expired_tokens = summary.expired_tokens,
        "identity bootstrapped"
    );
    Ok(())
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BootstrapSummary {
    pub changes: usize,
    pub password_reset: bool,
    pub expired_tokens: usize,
}

/// The changes [`bootstrap`] commits. `new_hash` is the admin's new password
/// hash, `None` if the stored one still verifies.
pub fn bootstrap_changes(
    state: &State,
    boot: &Bootstrap,
    new_hash: Option<&str>,
    now: u64,
) -> Result<(Vec<Change>, BootstrapSummary), ApiError> {
    let mut changes = Vec::new();
    let mut summary = BootstrapSummary::default();
    let mut admin_role_id = None;
    for name in ROLES {
        let id = match role_by_name(state, name) {
            Some(r) => r.id.clone(),
            None => {
                let r = Role {
                    id: new_id(),
                    name: name.to_owned(),
                };
                changes.push(Change::Put(Object::Role(r.clone())));
                r.id
            }
        };
        if name == auth::ADMIN {
            admin_role_id = Some(id);
        }
    }
    let admin_role_id = admin_role_id.expect("ROLES has admin");

    let project = match project_by_name(state, DEFAULT_DOMAIN_ID, &boot.admin_project) {
        Some(p) if p.enabled => p.clone(),
        Some(p) => {
            let p = Project {
                enabled: true,
                ..p.clone()
            };
            changes.push(Change::Put(Object::Project(p.clone())));
            p
        }
        None => {
            let p = Project {
                id: new_id(),
                name: boot.admin_project.clone(),
                description: "Bootstrap project for the cloud administrator".into(),
                domain_id: DEFAULT_DOMAIN_ID.into(),
                enabled: true,
            };
            changes.push(Change::Put(Object::Project(p.clone())));
            p
        }
    };

    let user = match user_by_name(state, DEFAULT_DOMAIN_ID, &boot.admin_user) {
        Some(u) => {
            let mut changed = u.clone();
            changed.enabled = true;
            if let Some(h) = new_hash {
                changed.password_hash = h.to_owned();
                summary.password_reset = true;
                // A rotated credential ends the sessions of the old one.
                changes.extend(tokens_where(state, |t| t.user_id == u.id));
            }
            if changed != *u {
                changes.push(Change::Put(Object::User(changed.clone())));
            }
            changed
        }
        None => {
            let h = new_hash.ok_or_else(|| {
                ApiError::internal("bootstrap: no password hash for a new admin user")
            })?;
            let u = User {
                id: new_id(),
                name: boot.admin_user.clone(),
                domain_id: DEFAULT_DOMAIN_ID.into(),
                enabled: true,
                password_hash: h.to_owned(),
                default_project_id: Some(project.id.clone()),
                description: "Bootstrap cloud administrator".into(),
            };
            changes.push(Change::Put(Object::User(u.clone())));
            u
        }
    };

    let a = Assignment {
        project_id: project.id.clone(),
        user_id: user.id.clone(),
        role_id: admin_role_id,
    };
    if !state.assignments.contains_key(&a.id()) {
        changes.push(Change::Put(Object::Assignment(a)));
    }

    let expired: Vec<Change> = tokens_where(state, |t| now >= t.expires_unix).collect();
    summary.expired_tokens = expired.len();
    changes.extend(expired);
    // A token may have been listed twice (expired and the admin's).
    dedup_deletes(&mut changes);
    summary.changes = changes.len();
    Ok((changes, summary))
}

fn tokens_where<'a>(
    state: &'a State,
    f: impl Fn(&Token) -> bool + 'a,
) -> impl Iterator<Item = Change> + 'a {
    state
        .tokens
        .values()
        .filter(move |t| f(t))
        .map(|t| Change::Delete(Kind::Token, t.id_hash.clone()))
}

/// Removes repeated deletions of the same object (keeps the first).
fn dedup_deletes(changes: &mut Vec<Change>) {
    let mut seen = std::collections::HashSet::new();
    changes.retain(|c| match c {
        Change::Delete(k, id) => seen.insert((*k, id.clone())),
        Change::Put(_) => true,
    });
}

// ------------------------------------------------------------------ tokens

/// A valid token with what it stands for, as validation renders it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenInfo {
    pub token: Token,
    pub user: User,
    pub project: Project,
    /// The user's current roles on the project (never empty).
    pub roles: Vec<Role>,
}

impl TokenInfo {
    pub fn auth(&self) -> Auth {
        Auth {
            user_id: self.user.id.clone(),
            user_name: self.user.name.clone(),
            project_id: self.project.id.clone(),
            project_name: self.project.name.clone(),
            roles: self.roles.iter().map(|r| r.name.clone()).collect(),
            expires_unix: self.token.expires_unix,
        }
    }
}

/// Keystone's one message for every failed authentication.
pub fn auth_failed() -> ApiError {
    ApiError::unauthorized("The request you have made requires authentication.")
}

/// Keystone's timestamp form for tokens (`2026-11-23T16:20:00.000000Z`).
pub fn token_time(unix: u64) -> String {
    let t = timestamp(unix);
    format!("{}.000000Z", t.trim_end_matches('Z'))
}

/// The token with hash `hash`, if it is valid at `now`: known (not
/// revoked), not expired, its user and project exist and are enabled, and
/// the user still holds a role on the project. 401 otherwise.
pub fn validate(state: &State, hash: &str, now: u64) -> Result<TokenInfo, ApiError> {
    let token = state.tokens.get(hash).ok_or_else(auth_failed)?;
    if now >= token.expires_unix {
        return Err(auth_failed());
    }
    let user = state
        .users
        .get(&token.user_id)
        .filter(|u| u.enabled)
        .ok_or_else(auth_failed)?;
    let project = state
        .projects
        .get(&token.project_id)
        .filter(|p| p.enabled)
        .ok_or_else(auth_failed)?;
    let roles = roles_on(state, &user.id, &project.id);
    if roles.is_empty() {
        return Err(auth_failed());
    }
    Ok(TokenInfo {
        token: token.clone(),
        user: user.clone(),
        project: project.clone(),
        roles,
    })
}

/// The caller behind a token string at `now` (unix seconds), or 401.
pub fn authenticate(state: &State, token: &str, now: u64) -> Result<Auth, ApiError> {
    if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
        return Err(auth_failed());
    }
    validate(state, &token_hash(token), now).map(|i| i.auth())
}

/// A request for a new token, for a user whose credentials the caller has
/// already checked (password verified, or a valid token presented).
#[derive(Clone, Debug)]
pub struct Issue<'a> {
    pub user_id: &'a str,
    /// `None`: the user's default project.
    pub scope: Option<&'a ProjectRef>,
    pub token_hash: &'a str,
    pub now: u64,
    pub ttl_secs: u64,
    /// Expiry cap (re-scoping a token never extends its life).
    pub not_after: Option<u64>,
}

/// Issues a project-scoped token: 401 (one message) unless the user exists
/// and is enabled and holds a role on the enabled project. Also deletes up
/// to [`GC_PER_ISSUE`] expired tokens in the same commit.
pub fn issue_token(state: &State, req: &Issue<'_>) -> Result<(Vec<Change>, TokenInfo), ApiError> {
    let user = state
        .users
        .get(req.user_id)
        .filter(|u| u.enabled)
        .ok_or_else(auth_failed)?;
    let project = match req.scope {
        Some(r) => find_project(state, r),
        None => match &user.default_project_id {
            Some(id) => state.projects.get(id),
            // Only project-scoped tokens are issued; the same answer as any
            // other failure, so it does not confirm the password.
            None => return Err(auth_failed()),
        },
    }
    .filter(|p| p.enabled)
    .ok_or_else(auth_failed)?;
    let roles = roles_on(state, &user.id, &project.id);
    if roles.is_empty() {
        return Err(auth_failed());
    }
    let mut expires = req.now + req.ttl_secs;
    if let Some(cap) = req.not_after {
        expires = expires.min(cap);
    }
    let token = Token {
        id_hash: req.token_hash.to_owned(),
        user_id: user.id.clone(),
        project_id: project.id.clone(),
        roles: roles.iter().map(|r| r.name.clone()).collect(),
        issued_at: token_time(req.now),
        expires_at: token_time(expires),
        expires_unix: expires,
    };
    let mut changes = vec![Change::Put(Object::Token(token.clone()))];
    changes.extend(tokens_where(state, |t| req.now >= t.expires_unix).take(GC_PER_ISSUE));
    tracing::info!(
        user = %user.name, user_id = %user.id, project = %project.name, project_id = %project.id,
        token = log_id(req.token_hash), expires_at = %token.expires_at, collected = changes.len() - 1,
        "token issued"
    );
    Ok((
        changes,
        TokenInfo {
            token,
            user: user.clone(),
            project: project.clone(),
            roles,
        },
    ))
}

/// Keystone's 404 for a subject token that is not valid.
fn token_not_found() -> ApiError {
    ApiError::new(
        404,
        "TokenNotFound",
        "Could not find token: it is unknown, expired or revoked.",
    )
}

/// `GET /v3/auth/tokens`: the subject token, if valid (404 otherwise), for
/// its own user or an admin (403 otherwise).
pub fn check_token(
    state: &State,
    caller: &Auth,
    subject_hash: &str,
    now: u64,
) -> Result<TokenInfo, ApiError> {
    let info = validate(state, subject_hash, now).map_err(|_| token_not_found())?;
    if info.user.id != caller.user_id && !caller.is_admin() {
        return Err(denied("validate_token"));
    }
    Ok(info)
}

/// `DELETE /v3/auth/tokens`: revokes the subject token (its own user or an
/// admin; 404 if it is not valid).
pub fn revoke_token(
    state: &State,
    caller: &Auth,
    subject_hash: &str,
    now: u64,
) -> Result<(Vec<Change>, ()), ApiError> {
    let info = validate(state, subject_hash, now).map_err(|_| token_not_found())?;
    if info.user.id != caller.user_id && !caller.is_admin() {
        return Err(denied("revoke_token"));
    }
    tracing::info!(
        user = %info.user.name, project = %info.project.name, by = %caller.user_name,
        token = log_id(subject_hash), "token revoked"
    );
    Ok((
        vec![Change::Delete(Kind::Token, subject_hash.to_owned())],
        (),
    ))
}

// ------------------------------------------------------------------ validation

/// A name must be non-empty, at most `max` characters, without control
/// characters or surrounding whitespace.
pub fn check_name(what: &str, name: &str, max: usize) -> Result<(), ApiError> {
    let bad = |why: &str| {
        ApiError::bad_request(format!(
            "Invalid input for field 'name': {what} name {why}."
        ))
    };
    if name.trim().is_empty() {
        return Err(bad("must not be empty"));
    }
    if name.chars().count() > max {
        return Err(bad(&format!("is longer than {max} characters")));
    }
    if name.chars().any(char::is_control) {
        return Err(bad("contains control characters"));
    }
    if name.trim() != name {
        return Err(bad("begins or ends with whitespace"));
    }
    Ok(())
}

fn check_description(d: &str) -> Result<(), ApiError> {
    if d.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(ApiError::bad_request(format!(
            "Invalid input for field 'description': longer than {MAX_DESCRIPTION_CHARS} characters."
        )));
    }
    Ok(())
}

fn check_domain(domain_id: Option<&str>) -> Result<(), ApiError> {
    match domain_id {
        None | Some(DEFAULT_DOMAIN_ID) => Ok(()),
        Some(other) => Err(ApiError::bad_request(format!(
            "Invalid input for field 'domain_id': {other:?}: only the domain {DEFAULT_DOMAIN_ID:?} exists."
        ))),
    }
}

/// The fields a new account comes with: a valid name and description, the
/// one domain, and a name no other account of its kind has.
fn check_new<A: Account>(
    state: &State,
    name: &str,
    description: &str,
    domain_id: Option<&str>,
    more: impl FnOnce() -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    check_name(A::WHAT, name, A::MAX_NAME_CHARS)?;
    check_description(description)?;
    check_domain(domain_id)?;
    more()?;
    if by_name::<A>(state, DEFAULT_DOMAIN_ID, name).is_some() {
        return Err(duplicate(A::WHAT, name));
    }
    Ok(())
}

/// A change of what every account has; absent fields stay.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
    /// Must stay `default` if given.
    pub domain_id: Option<String>,
}

/// Applies `patch` to `new`, a copy of `old`: the domain cannot change, a
/// new name must be valid and free in its domain.
fn apply_patch<A: Account>(
    state: &State,
    old: &A,
    new: &mut A,
    patch: AccountPatch,
) -> Result<(), ApiError> {
    if let Some(d) = &patch.domain_id {
        if d != old.domain_id() {
            return Err(ApiError::bad_request(format!(
                "Invalid input for field 'domain_id': a {} cannot change domain.",
                A::WHAT
            )));
        }
    }
    let (name, description, enabled) = new.common_mut();
    if let Some(n) = patch.name {
        check_name(A::WHAT, &n, A::MAX_NAME_CHARS)?;
        if n != old.name() && by_name::<A>(state, old.domain_id(), &n).is_some() {
            return Err(duplicate(A::WHAT, &n));
        }
        *name = n;
    }
    if let Some(d) = patch.description {
        check_description(&d)?;
        *description = d;
    }
    if let Some(e) = patch.enabled {
        *enabled = e;
    }
    Ok(())
}

/// The accounts of kind `A` that pass `f` (administrators only).
fn list<A: Account>(
    state: &State,
    caller: &Auth,
    f: &Filter,
    action: &str,
) -> Result<Vec<A>, ApiError> {
    require_admin(caller, action)?;
    Ok(A::table(state)
        .values()
        .filter(|a| f.matches(a.name(), a.domain_id(), a.enabled()))
        .cloned()
        .collect())
}

fn duplicate(kind: &str, name: &str) -> ApiError {
    ApiError::conflict(
        "Conflict",
        format!("Conflict occurred attempting to store {kind} - Duplicate entry found with name {name} at domain ID {DEFAULT_DOMAIN_ID}."),
    )
}

// ------------------------------------------------------------------ projects

/// Filters of the project and user lists (`?name=&domain_id=&enabled=`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub name: Option<String>,
    pub domain_id: Option<String>,
    pub enabled: Option<bool>,
}

impl Filter {
    fn matches(&self, name: &str, domain_id: &str, enabled: bool) -> bool {
        self.name.as_deref().is_none_or(|n| n == name)
            && self.domain_id.as_deref().is_none_or(|d| d == domain_id)
            && self.enabled.is_none_or(|e| e == enabled)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewProject {
    pub name: String,
    pub description: String,
    pub domain_id: Option<String>,
    pub enabled: bool,
}

/// A project has nothing besides what every account has.
pub type ProjectPatch = AccountPatch;

pub fn list_projects(state: &State, caller: &Auth, f: &Filter) -> Result<Vec<Project>, ApiError> {
    list(state, caller, f, "list_projects")
}

/// An admin sees every project; anyone else only the projects they hold a
/// role on (403 for the rest, existing or not).
pub fn get_project(state: &State, caller: &Auth, id: &str) -> Result<Project, ApiError> {
    let visible = caller.is_admin() || assignments_of(state, id, &caller.user_id).next().is_some();
    if !visible {
        return Err(denied("get_project"));
    }
    account::<Project>(state, id).cloned()
}

pub fn create_project(
    state: &State,
    caller: &Auth,
    req: NewProject,
) -> Result<(Vec<Change>, Project), ApiError> {
    require_admin(caller, "create_project")?;
    let domain = req.domain_id.as_deref();
    check_new::<Project>(state, &req.name, &req.description, domain, || Ok(()))?;
    let p = Project {
        id: new_id(),
        name: req.name,
        description: req.description,
        domain_id: DEFAULT_DOMAIN_ID.into(),
        enabled: req.enabled,
    };
    tracing::info!(project = %p.name, project_id = %p.id, by = %caller.user_name, "project created");
    Ok((vec![Change::Put(Object::Project(p.clone()))], p))
}

pub fn update_project(
    state: &State,
    caller: &Auth,
    boot: &Bootstrap,
    id: &str,
    patch: ProjectPatch,
) -> Result<(Vec<Change>, Project), ApiError> {
    require_admin(caller, "update_project")?;
    let old = account::<Project>(state, id)?;
    let mut p = old.clone();
    apply_patch(state, old, &mut p, patch)?;
    if boot.is_admin_project(old) && (p.name != old.name || !p.enabled) {
        return Err(ApiError::forbidden(format!(
            "Project {} is the bootstrap admin project (--admin-project): it cannot be renamed or disabled.",
            old.name
        )));
    }
    let mut changes = vec![Change::Put(Object::Project(p.clone()))];
    if old.enabled && !p.enabled {
        // Keystone revokes the tokens of a disabled project.
        changes.extend(tokens_where(state, |t| t.project_id == id));
    }
    tracing::info!(project = %p.name, project_id = %p.id, by = %caller.user_name, "project updated");
    Ok((changes, p))
}

/// Deletes a project with its role assignments and the tokens scoped to it
/// (and its quota record and default security group; users lose it as
/// default project). 409 while it still owns networks, subnets, ports,
/// routers or other security groups; 403 for the bootstrap admin project.
pub fn delete_project(
    state: &State,
    caller: &Auth,
    boot: &Bootstrap,
    id: &str,
) -> Result<(Vec<Change>, ()), ApiError> {
    require_admin(caller, "delete_project")?;
    let p = account::<Project>(state, id)?;
    if boot.is_admin_project(p) {
        return Err(ApiError::forbidden(format!(
            "Project {} is the bootstrap admin project (--admin-project) and cannot be deleted: the cloud administrator's role lives on it.",
            p.name
        )));
    }
    let in_use = [
        ("networks", held::<Network>(state, id)),
        ("subnets", held::<Subnet>(state, id)),
        ("ports", held::<Port>(state, id)),
        ("routers", held::<Router>(state, id)),
        (
            "security groups",
            held_where(state, id, |g| !security_groups::is_default(g)),
        ),
    ];
    let held: Vec<String> = in_use
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    if !held.is_empty() {
        return Err(ApiError::conflict(
            "Conflict",
            format!(
                "Project {id} still owns {}; delete them first.",
                held.join(", ")
            ),
        ));
    }
    let mut changes = vec![Change::Delete(Kind::Project, id.to_owned())];
    // The default security group came with the project's first use and only
    // an administrator could remove it: it goes with the project.
    if let Some(g) = security_groups::default_group(state, id) {
        changes.extend(security_groups::removal(state, &g.meta.id));
    }
    changes.extend(
        state
            .assignments
            .values()
            .filter(|a| a.project_id == id)
            .map(|a| Change::Delete(Kind::Assignment, a.id())),
    );
    changes.extend(tokens_where(state, |t| t.project_id == id));
    if state.quotas.contains_key(id) {
        changes.push(Change::Delete(Kind::Quota, id.to_owned()));
    }
    for u in state
        .users
        .values()
        .filter(|u| u.default_project_id.as_deref() == Some(id))
    {
        changes.push(Change::Put(Object::User(User {
            default_project_id: None,
            ..u.clone()
        })));
    }
    tracing::info!(project = %p.name, project_id = %id, by = %caller.user_name, changes = changes.len(), "project deleted");
    Ok((changes, ()))
}

// ------------------------------------------------------------------ users

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewUser {
    pub name: String,
    /// Argon2id PHC string of the password (checked with
    /// [`check_password_policy`] and hashed before `mutate`); `None`: the
    /// user cannot log in until a password is set.
    pub password_hash: Option<String>,
    pub description: String,
    pub domain_id: Option<String>,
    pub enabled: bool,
    pub default_project_id: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserPatch {
    pub name: Option<String>,
    pub password_hash: Option<String>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
    /// `Some(None)` clears it.
    pub default_project_id: Option<Option<String>>,
    /// Must stay `default` if given.
    pub domain_id: Option<String>,
}

impl UserPatch {
    /// What it changes of what every account has.
    fn account(&mut self) -> AccountPatch {
        AccountPatch {
            name: self.name.take(),
            description: self.description.take(),
            enabled: self.enabled.take(),
            domain_id: self.domain_id.take(),
        }
    }
}

pub fn list_users(state: &State, caller: &Auth, f: &Filter) -> Result<Vec<User>, ApiError> {
    list(state, caller, f, "list_users")
}

/// An admin sees every user; anyone else only themselves (403 otherwise).
pub fn get_user(state: &State, caller: &Auth, id: &str) -> Result<User, ApiError> {
    if id != caller.user_id && !caller.is_admin() {
        return Err(denied("get_user"));
    }
    account::<User>(state, id).cloned()
}

fn check_default_project(state: &State, id: &str) -> Result<(), ApiError> {
    if state.projects.contains_key(id) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "Invalid input for field 'default_project_id': project {id} does not exist."
        )))
    }
}

pub fn create_user(
    state: &State,
    caller: &Auth,
    req: NewUser,
) -> Result<(Vec<Change>, User), ApiError> {
    require_admin(caller, "create_user")?;
    let domain = req.domain_id.as_deref();
    check_new::<User>(state, &req.name, &req.description, domain, || {
        match &req.default_project_id {
            Some(p) => check_default_project(state, p),
            None => Ok(()),
        }
    })?;
    let u = User {
        id: new_id(),
        name: req.name,
        domain_id: DEFAULT_DOMAIN_ID.into(),
        enabled: req.enabled,
        password_hash: req.password_hash.unwrap_or_default(),
        default_project_id: req.default_project_id,
        description: req.description,
    };
    tracing::info!(user = %u.name, user_id = %u.id, by = %caller.user_name, "user created");
    Ok((vec![Change::Put(Object::User(u.clone()))], u))
}

/// Updates a user; a new password or disabling revokes the user's tokens
/// (as Keystone does).
pub fn update_user(
    state: &State,
    caller: &Auth,
    boot: &Bootstrap,
    id: &str,
    mut patch: UserPatch,
) -> Result<(Vec<Change>, User), ApiError> {
    require_admin(caller, "update_user")?;
    let old = account::<User>(state, id)?;
    let mut u = old.clone();
    apply_patch(state, old, &mut u, patch.account())?;
    if let Some(dp) = patch.default_project_id {
        if let Some(p) = &dp {
            check_default_project(state, p)?;
        }
        u.default_project_id = dp;
    }
    let new_password = patch.password_hash.is_some();
    if let Some(h) = patch.password_hash {
        u.password_hash = h;
    }
    if boot.is_admin_user(old) && (u.name != old.name || !u.enabled) {
        return Err(ApiError::forbidden(format!(
            "User {} is the bootstrap administrator (--admin-user): it cannot be renamed or disabled.",
            old.name
        )));
    }
    let mut changes = vec![Change::Put(Object::User(u.clone()))];
    if new_password || (old.enabled && !u.enabled) {
        changes.extend(tokens_where(state, |t| t.user_id == id));
    }
    tracing::info!(user = %u.name, user_id = %u.id, by = %caller.user_name, password_changed = new_password, "user updated");
    Ok((changes, u))
}

/// `POST /v3/users/{id}/password`: a user changes their own password (the
/// original was verified by the caller); all their tokens are revoked.
pub fn change_own_password(
    state: &State,
    caller: &Auth,
    id: &str,
    new_hash: String,
) -> Result<(Vec<Change>, ()), ApiError> {
    if id != caller.user_id {
        return Err(denied("change_password"));
    }
    let old = account::<User>(state, id)?;
    let mut changes = vec![Change::Put(Object::User(User {
        password_hash: new_hash,
        ..old.clone()
    }))];
    changes.extend(tokens_where(state, |t| t.user_id == id));
    tracing::info!(user = %old.name, user_id = %id, "password changed by its user");
    Ok((changes, ()))
}

/// Deletes a user with their role assignments and tokens; 403 for the
/// bootstrap administrator.
pub fn delete_user(
    state: &State,
    caller: &Auth,
    boot: &Bootstrap,
    id: &str,
) -> Result<(Vec<Change>, ()), ApiError> {
    require_admin(caller, "delete_user")?;
    let u = account::<User>(state, id)?;
    if boot.is_admin_user(u) {
        return Err(ApiError::forbidden(format!(
            "User {} is the bootstrap administrator (--admin-user) and cannot be deleted: it is the operator's way back in.",
            u.name
        )));
    }
    let mut changes = vec![Change::Delete(Kind::User, id.to_owned())];
    changes.extend(
        state
            .assignments
            .values()
            .filter(|a| a.user_id == id)
            .map(|a| Change::Delete(Kind::Assignment, a.id())),
    );
    changes.extend(tokens_where(state, |t| t.user_id == id));
    tracing::info!(user = %u.name, user_id = %id, by = %caller.user_name, changes = changes.len(), "user deleted");
    Ok((changes, ()))
}

/// The projects a user holds a role on (admin, or the user themselves).
pub fn user_projects(
    state: &State,
    caller: &Auth,
    user_id: &str,
) -> Result<Vec<Project>, ApiError> {
    if user_id != caller.user_id && !caller.is_admin() {
        return Err(denied("list_user_projects"));
    }
    if !state.users.contains_key(user_id) {
        return Err(ApiError::not_found("user", user_id));
    }
    Ok(projects_of(state, user_id))
}

// ------------------------------------------------------------------ roles

/// Roles are readable by any authenticated caller (three fixed names).
pub fn list_roles(state: &State, name: Option<&str>) -> Vec<Role> {
    let mut v: Vec<Role> = state
        .roles
        .values()
        .filter(|r| name.is_none_or(|n| n == r.name))
        .cloned()
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

pub fn get_role(state: &State, id: &str) -> Result<Role, ApiError> {
    state
        .roles
        .get(id)
        .cloned()
        .ok_or_else(|| ApiError::not_found("role", id))
}

/// The project, user and role of a grant, or 404 naming the missing one.
fn grant_parts<'a>(
    state: &'a State,
    project_id: &str,
    user_id: &str,
    role_id: &str,
) -> Result<(&'a Project, &'a User, &'a Role), ApiError> {
    let p = state
        .projects
        .get(project_id)
        .ok_or_else(|| ApiError::not_found("project", project_id))?;
    let u = state
        .users
        .get(user_id)
        .ok_or_else(|| ApiError::not_found("user", user_id))?;
    let r = state
        .roles
        .get(role_id)
        .ok_or_else(|| ApiError::not_found("role", role_id))?;
    Ok((p, u, r))
}

/// Grants a role (idempotent: an existing grant commits nothing).
pub fn grant(
    state: &State,
    caller: &Auth,
    project_id: &str,
    user_id: &str,
    role_id: &str,
) -> Result<(Vec<Change>, ()), ApiError> {
    require_admin(caller, "create_grant")?;
    let (p, u, r) = grant_parts(state, project_id, user_id, role_id)?;
    let a = Assignment {
        project_id: p.id.clone(),
        user_id: u.id.clone(),
        role_id: r.id.clone(),
    };
    if state.assignments.contains_key(&a.id()) {
        return Ok((Vec::new(), ()));
    }
    tracing::info!(project = %p.name, user = %u.name, role = %r.name, by = %caller.user_name, "role granted");
    Ok((vec![Change::Put(Object::Assignment(a))], ()))
}

/// Revokes a role (404 if not granted). The bootstrap admin keeps `admin`
/// on the admin project (403).
pub fn revoke_grant(
    state: &State,
    caller: &Auth,
    boot: &Bootstrap,
    project_id: &str,
    user_id: &str,
    role_id: &str,
) -> Result<(Vec<Change>, ()), ApiError> {
    require_admin(caller, "revoke_grant")?;
    let (p, u, r) = grant_parts(state, project_id, user_id, role_id)?;
    let a = Assignment {
        project_id: p.id.clone(),
        user_id: u.id.clone(),
        role_id: r.id.clone(),
    };
    if !state.assignments.contains_key(&a.id()) {
        return Err(ApiError::not_found("grant", &a.id()));
    }
    if boot.is_admin_user(u) && boot.is_admin_project(p) && r.name == auth::ADMIN {
        return Err(ApiError::forbidden(format!(
            "User {} keeps the admin role on project {}: they are the bootstrap administrator.",
            u.name, p.name
        )));
    }
    tracing::info!(project = %p.name, user = %u.name, role = %r.name, by = %caller.user_name, "role revoked");
    Ok((vec![Change::Delete(Kind::Assignment, a.id())], ()))
}

/// `HEAD/GET .../roles/{r}`: Ok if granted, 404 otherwise (admin or self).
pub fn check_grant(
    state: &State,
    caller: &Auth,
    project_id: &str,
    user_id: &str,
    role_id: &str,
) -> Result<(), ApiError> {
    if user_id != caller.user_id && !caller.is_admin() {
        return Err(denied("check_grant"));
    }
    let (p, u, r) = grant_parts(state, project_id, user_id, role_id)?;
    let id = Assignment {
        project_id: p.id.clone(),
        user_id: u.id.clone(),
        role_id: r.id.clone(),
    }
    .id();
    if state.assignments.contains_key(&id) {
        Ok(())
    } else {
        Err(ApiError::not_found("grant", &id))
    }
}

/// `GET /v3/projects/{p}/users/{u}/roles` (admin or self).
pub fn list_grants(
    state: &State,
    caller: &Auth,
    project_id: &str,
    user_id: &str,
) -> Result<Vec<Role>, ApiError> {
    if user_id != caller.user_id && !caller.is_admin() {
        return Err(denied("list_grants"));
    }
    if !state.projects.contains_key(project_id) {
        return Err(ApiError::not_found("project", project_id));
    }
    if !state.users.contains_key(user_id) {
        return Err(ApiError::not_found("user", user_id));
    }
    Ok(roles_on(state, user_id, project_id))
}

/// Filters of `GET /v3/role_assignments`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AssignmentFilter {
    pub user_id: Option<String>,
    pub project_id: Option<String>,
    pub role_id: Option<String>,
}

/// Admins list any assignments; anyone else only their own (the filter
/// must name them: `user.id=<self>`).
pub fn list_assignments(
    state: &State,
    caller: &Auth,
    f: &AssignmentFilter,
) -> Result<Vec<Assignment>, ApiError> {
    if !caller.is_admin() && f.user_id.as_deref() != Some(caller.user_id.as_str()) {
        return Err(denied("list_role_assignments"));
    }
    Ok(state
        .assignments
        .values()
        .filter(|a| {
            f.user_id.as_deref().is_none_or(|x| x == a.user_id)
                && f.project_id.as_deref().is_none_or(|x| x == a.project_id)
                && f.role_id.as_deref().is_none_or(|x| x == a.role_id)
        })
        .cloned()
        .collect())
}

#[cfg(test)]
mod tests {
    use std::{path::Path, time::Duration};

    use super::*;
    use crate::model::{Meta, Network};

    const PW: &str = "correct horse battery";

    fn config() -> Config {
        Config {
            db: ":memory:".into(),
            public_url: "http://127.0.0.1:9696".into(),
            region: "RegionOne".into(),
            token_ttl: Duration::from_secs(3600),
            admin_user: "admin".into(),
            admin_password: PW.into(),
            admin_project: "admin".into(),
        }
    }

    fn core() -> Core {
        let core = Core::open(Path::new(":memory:")).expect("in-memory store");
        bootstrap(&core, &config()).expect("bootstrap");
        core
    }

    fn boot() -> Bootstrap {
        Bootstrap::from_config(&config())
    }

    /// Issues a token for `user` on `project` (by name) and returns it.
    fn login(core: &Core, user: &str, project: &str, now: u64) -> Result<String, ApiError> {
        let token = new_token()?;
        let hash = token_hash(&token);
        let user_id = user_by_name(&core.read(), DEFAULT_DOMAIN_ID, user)
            .expect("user")
            .id
            .clone();
        let scope = ProjectRef::Name {
            name: project.into(),
            domain: DomainRef::Name("Default".into()),
        };
        core.mutate(|s| {
            issue_token(
                s,
                &Issue {
                    user_id: &user_id,
                    scope: Some(&scope),
                    token_hash: &hash,
                    now,
                    ttl_secs: 3600,
                    not_after: None,
                },
            )
        })?;
        Ok(token)
    }

    fn admin(core: &Core) -> Auth {
        let t = login(core, "admin", "admin", now_unix()).expect("admin token");
        authenticate(&core.read(), &t, now_unix()).expect("admin auth")
    }

    fn project(core: &Core, caller: &Auth, name: &str) -> Project {
        let req = NewProject {
            name: name.into(),
            description: String::new(),
            domain_id: None,
            enabled: true,
        };
        core.mutate(|s| create_project(s, caller, req))
            .expect("project")
    }

    /// A user with a cheap (but valid) password hash: hashing once per test
    /// file is enough.
    fn user(core: &Core, caller: &Auth, name: &str) -> User {
        static HASH: OnceLock<String> = OnceLock::new();
        let hash = HASH
            .get_or_init(|| hash_password(PW).expect("hash"))
            .clone();
        let req = NewUser {
            name: name.into(),
            password_hash: Some(hash),
            description: String::new(),
            domain_id: Some("default".into()),
            enabled: true,
            default_project_id: None,
        };
        core.mutate(|s| create_user(s, caller, req)).expect("user")
    }

    fn role_id(core: &Core, name: &str) -> String {
        role_by_name(&core.read(), name).expect("role").id.clone()
    }

    /// The administrator, project `demo` and user `u1` holding `role` on it.
    fn demo(core: &Core, role: &str) -> (Auth, Project, User) {
        let adm = admin(core);
        let p = project(core, &adm, "demo");
        let u = user(core, &adm, "u1");
        let r = role_id(core, role);
        core.mutate(|s| grant(s, &adm, &p.id, &u.id, &r))
            .expect("grant");
        (adm, p, u)
    }

    #[test]
    fn bootstrap_is_idempotent_and_resets_the_password() {
        let core = core();
        let rev = core.read().revision;
        {
            let s = core.read();
            assert_eq!(
                list_roles(&s, None)
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>(),
                ["admin", "member", "reader"]
            );
            let u = user_by_name(&s, DEFAULT_DOMAIN_ID, "admin").expect("admin user");
            assert!(
                u.password_hash.starts_with("$argon2id$"),
                "{}",
                u.password_hash
            );
            assert!(!u.password_hash.contains(PW));
            let p = project_by_name(&s, DEFAULT_DOMAIN_ID, "admin").expect("admin project");
            assert_eq!(
                roles_on(&s, &u.id, &p.id)
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>(),
                ["admin"]
            );
        }
        // Same configuration again: nothing to commit.
        bootstrap(&core, &config()).expect("second bootstrap");
        assert_eq!(
            core.read().revision,
            rev,
            "a second bootstrap committed something"
        );

        // A new password: re-hashed, old tokens revoked, old password refused.
        let t = login(&core, "admin", "admin", now_unix()).expect("token");
        let cfg = Config {
            admin_password: "another password".into(),
            ..config()
        };
        bootstrap(&core, &cfg).expect("bootstrap with a new password");
        let s = core.read();
        let u = user_by_name(&s, DEFAULT_DOMAIN_ID, "admin").expect("admin");
        assert!(verify_password(&u.password_hash, "another password"));
        assert!(!verify_password(&u.password_hash, PW));
        assert_eq!(
            authenticate(&s, &t, now_unix())
                .expect_err("old token")
                .status,
            401
        );
        assert_eq!(s.roles.len(), 3, "roles duplicated");
        assert_eq!(s.projects.len(), 1, "admin project duplicated");
    }

    #[test]
    fn bootstrap_refuses_a_short_password() {
        let core = Core::open(Path::new(":memory:")).expect("store");
        let cfg = Config {
            admin_password: "short".into(),
            ..config()
        };
        assert_eq!(bootstrap(&core, &cfg).expect_err("short").status, 400);
        assert!(core.read().users.is_empty());
    }

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("s3cret-password").expect("hash");
        assert!(h.starts_with("$argon2id$v=19$"), "{h}");
        assert!(verify_password(&h, "s3cret-password"));
        assert!(!verify_password(&h, "s3cret-passworD"));
        assert!(!verify_password("", "s3cret-password"));
        assert!(!verify_password("garbage", "s3cret-password"));
        assert_ne!(
            h,
            hash_password("s3cret-password").expect("hash"),
            "salt is not random"
        );
        assert!(!check_login(None, "s3cret-password"));
        assert!(
            !check_login(Some(""), ""),
            "a user without a password cannot log in"
        );
        assert!(check_login(Some(&h), "s3cret-password"));
        assert_eq!(
            check_password_policy("1234567")
                .expect_err("7 chars")
                .status,
            400
        );
        assert!(check_password_policy("12345678").is_ok());
        assert!(
            check_password_policy("ééééééééé").is_ok(),
            "counts characters, not bytes"
        );
        assert_eq!(
            check_password_policy(&"x".repeat(MAX_PASSWORD_BYTES + 1))
                .expect_err("long")
                .status,
            400
        );
    }

    #[test]
    fn tokens_are_random_hashed_and_expire() {
        let core = core();
        let t = new_token().expect("token");
        assert!(t.starts_with("st1") && t.len() == 67, "{t}");
        assert_ne!(t, new_token().expect("token"));
        let now = 1_800_000_000;
        let t = login(&core, "admin", "admin", now).expect("token");
        let s = core.read();
        assert!(!s.tokens.contains_key(&t), "token stored in clear");
        let stored = s.tokens.get(&token_hash(&t)).expect("stored by hash");
        assert_eq!(stored.expires_unix, now + 3600);
        assert_eq!(stored.expires_at, "2027-01-15T09:00:00.000000Z");
        let a = authenticate(&s, &t, now + 3599).expect("valid just before expiry");
        assert_eq!(
            (a.user_name.as_str(), a.project_name.as_str()),
            ("admin", "admin")
        );
        assert!(a.is_admin());
        assert_eq!(
            authenticate(&s, &t, now + 3600)
                .expect_err("expired")
                .status,
            401
        );
        assert_eq!(
            authenticate(&s, "st1nope", now)
                .expect_err("unknown")
                .status,
            401
        );
        assert_eq!(authenticate(&s, "", now).expect_err("empty").status, 401);
    }

    #[test]
    fn issuing_collects_expired_tokens() {
        let core = core();
        let long_ago = now_unix() - 10 * 86_400;
        for _ in 0..(GC_PER_ISSUE + 3) {
            login(&core, "admin", "admin", long_ago).expect("old token");
        }
        assert_eq!(core.read().tokens.len(), GC_PER_ISSUE + 3);
        login(&core, "admin", "admin", now_unix()).expect("token");
        assert_eq!(
            core.read().tokens.len(),
            3 + 1,
            "{GC_PER_ISSUE} expired tokens collected per issue"
        );
        bootstrap(&core, &config()).expect("bootstrap");
        assert_eq!(
            core.read().tokens.len(),
            1,
            "bootstrap collects every expired token"
        );
    }

    #[test]
    fn authentication_follows_current_roles_and_users() {
        let core = core();
        let adm = admin(&core);
        let p = project(&core, &adm, "demo");
        let u = user(&core, &adm, "u1");
        let member = role_id(&core, "member");
        let reader = role_id(&core, "reader");
        // No role yet: no token, same message as a wrong password.
        let e = login(&core, "u1", "demo", now_unix()).expect_err("no role");
        assert_eq!(e, auth_failed());
        core.mutate(|s| grant(s, &adm, &p.id, &u.id, &member))
            .expect("grant");
        core.mutate(|s| grant(s, &adm, &p.id, &u.id, &reader))
            .expect("grant");
        let rev = core.read().revision;
        core.mutate(|s| grant(s, &adm, &p.id, &u.id, &member))
            .expect("grant again");
        assert_eq!(
            core.read().revision,
            rev,
            "an existing grant commits nothing"
        );
        let t = login(&core, "u1", "demo", now_unix()).expect("member token");
        let a = authenticate(&core.read(), &t, now_unix()).expect("auth");
        assert_eq!(a.roles, ["member", "reader"]);
        assert!(a.can_write() && !a.is_admin());

        // Removing a role takes effect on the next request.
        core.mutate(|s| revoke_grant(s, &adm, &boot(), &p.id, &u.id, &member))
            .expect("revoke");
        let a = authenticate(&core.read(), &t, now_unix()).expect("auth as reader");
        assert_eq!(a.roles, ["reader"]);
        assert!(!a.can_write());
        // The last role gone: the token is dead.
        core.mutate(|s| revoke_grant(s, &adm, &boot(), &p.id, &u.id, &reader))
            .expect("revoke");
        assert_eq!(
            authenticate(&core.read(), &t, now_unix())
                .expect_err("no role")
                .status,
            401
        );

        // Disabled user, then deleted user.
        core.mutate(|s| grant(s, &adm, &p.id, &u.id, &member))
            .expect("grant");
        assert!(
            authenticate(&core.read(), &t, now_unix()).is_ok(),
            "a re-granted role revives a live token"
        );
        let disable = UserPatch {
            enabled: Some(false),
            ..UserPatch::default()
        };
        core.mutate(|s| update_user(s, &adm, &boot(), &u.id, disable))
            .expect("disable");
        assert_eq!(
            authenticate(&core.read(), &t, now_unix())
                .expect_err("disabled")
                .status,
            401
        );
        assert!(
            !core.read().tokens.contains_key(&token_hash(&t)),
            "disabling revokes the user's tokens"
        );
        let enable = UserPatch {
            enabled: Some(true),
            ..UserPatch::default()
        };
        core.mutate(|s| update_user(s, &adm, &boot(), &u.id, enable))
            .expect("enable");
        let t = login(&core, "u1", "demo", now_unix()).expect("token");
        core.mutate(|s| delete_user(s, &adm, &boot(), &u.id))
            .expect("delete user");
        let s = core.read();
        assert_eq!(
            authenticate(&s, &t, now_unix())
                .expect_err("deleted")
                .status,
            401
        );
        assert!(
            s.tokens.values().all(|t| t.user_id != u.id),
            "tokens of a deleted user remain"
        );
        assert!(
            s.assignments.values().all(|a| a.user_id != u.id),
            "assignments of a deleted user remain"
        );
    }

    #[test]
    fn unscoped_requests_use_the_default_project() {
        let core = core();
        let (adm, p, u) = demo(&core, "member");
        let issue = |core: &Core| {
            let hash = token_hash(&new_token().expect("token"));
            core.mutate(|s| {
                issue_token(
                    s,
                    &Issue {
                        user_id: &u.id,
                        scope: None,
                        token_hash: &hash,
                        now: 100,
                        ttl_secs: 60,
                        not_after: Some(130),
                    },
                )
            })
        };
        assert_eq!(issue(&core).expect_err("no default project").status, 401);
        let patch = UserPatch {
            default_project_id: Some(Some(p.id.clone())),
            ..UserPatch::default()
        };
        core.mutate(|s| update_user(s, &adm, &boot(), &u.id, patch))
            .expect("set default project");
        let info = issue(&core).expect("unscoped token");
        assert_eq!(info.project.id, p.id);
        assert_eq!(info.token.expires_unix, 130, "capped by not_after");
    }

    #[test]
    fn validation_and_revocation_policy() {
        let core = core();
        let adm = admin(&core);
        let p = project(&core, &adm, "demo");
        let u = user(&core, &adm, "u1");
        let v = user(&core, &adm, "u2");
        for x in [&u, &v] {
            let member_id = role_id(&core, "member");
            core.mutate(|s| grant(s, &adm, &p.id, &x.id, &member_id))
                .expect("grant");
        }
        let now = now_unix();
        let tu = login(&core, "u1", "demo", now).expect("u1");
        let tv = login(&core, "u2", "demo", now).expect("u2");
        let au = authenticate(&core.read(), &tu, now).expect("u1 auth");
        let s = core.read();
        assert!(
            check_token(&s, &au, &token_hash(&tu), now).is_ok(),
            "own token"
        );
        assert_eq!(
            check_token(&s, &au, &token_hash(&tv), now)
                .expect_err("other's")
                .status,
            403
        );
        assert!(
            check_token(&s, &adm, &token_hash(&tv), now).is_ok(),
            "admin validates any"
        );
        assert_eq!(
            check_token(&s, &adm, &token_hash("st1nope"), now)
                .expect_err("unknown")
                .status,
            404
        );
        assert_eq!(
            check_token(&s, &adm, &token_hash(&tv), now + 7200)
                .expect_err("expired")
                .status,
            404
        );
        assert_eq!(
            revoke_token(&s, &au, &token_hash(&tv), now)
                .expect_err("other's")
                .status,
            403
        );
        drop(s);
        core.mutate(|s| revoke_token(s, &au, &token_hash(&tu), now))
            .expect("revoke own");
        assert_eq!(
            authenticate(&core.read(), &tu, now)
                .expect_err("revoked")
                .status,
            401
        );
        assert_eq!(
            core.mutate(|s| revoke_token(s, &adm, &token_hash(&tu), now))
                .expect_err("twice")
                .status,
            404
        );
        core.mutate(|s| revoke_token(s, &adm, &token_hash(&tv), now))
            .expect("admin revokes any");
    }

    #[test]
    fn names_are_validated_and_unique() {
        let core = core();
        let adm = admin(&core);
        project(&core, &adm, "demo");
        user(&core, &adm, "u1");
        let rev = core.read().revision;
        let np = |name: &str| NewProject {
            name: name.into(),
            description: String::new(),
            domain_id: None,
            enabled: true,
        };
        let s = core.read();
        for (what, name, status) in [
            ("empty", "", 400),
            ("blank", "   ", 400),
            ("padded", " x", 400),
            ("control", "a\nb", 400),
            ("too long", &"x".repeat(65), 400),
            ("duplicate", "demo", 409),
            ("the admin project's name", "admin", 409),
        ] {
            assert_eq!(
                create_project(&s, &adm, np(name)).expect_err(what).status,
                status,
                "{what}"
            );
        }
        assert!(
            create_project(&s, &adm, np(&"x".repeat(64))).is_ok(),
            "64 characters is fine"
        );
        let other_domain = NewProject {
            domain_id: Some("other".into()),
            ..np("x")
        };
        assert_eq!(
            create_project(&s, &adm, other_domain)
                .expect_err("domain")
                .status,
            400
        );
        let nu = |name: &str| NewUser {
            name: name.into(),
            password_hash: None,
            description: String::new(),
            domain_id: None,
            enabled: true,
            default_project_id: None,
        };
        assert_eq!(
            create_user(&s, &adm, nu("u1"))
                .expect_err("duplicate user")
                .status,
            409
        );
        assert_eq!(
            create_user(&s, &adm, nu(""))
                .expect_err("empty user")
                .status,
            400
        );
        let bad_default = NewUser {
            default_project_id: Some("nope".into()),
            ..nu("u9")
        };
        assert_eq!(
            create_user(&s, &adm, bad_default)
                .expect_err("default project")
                .status,
            400
        );
        let demo = project_by_name(&s, DEFAULT_DOMAIN_ID, "demo")
            .expect("demo")
            .id
            .clone();
        let rename = ProjectPatch {
            name: Some("admin".into()),
            ..ProjectPatch::default()
        };
        assert_eq!(
            update_project(&s, &adm, &boot(), &demo, rename)
                .expect_err("rename to dup")
                .status,
            409
        );
        drop(s);
        assert_eq!(
            core.read().revision,
            rev,
            "a refused command changed something"
        );
    }

    #[test]
    fn only_admins_write_and_list() {
        let core = core();
        let (adm, p, u) = demo(&core, "reader");
        let t = login(&core, "u1", "demo", now_unix()).expect("token");
        let admin_role = role_id(&core, "admin");
        let r = authenticate(&core.read(), &t, now_unix()).expect("reader");
        let s = core.read();
        let np = NewProject {
            name: "x".into(),
            description: String::new(),
            domain_id: None,
            enabled: true,
        };
        assert_eq!(create_project(&s, &r, np).expect_err("create").status, 403);
        assert_eq!(
            list_projects(&s, &r, &Filter::default())
                .expect_err("list")
                .status,
            403
        );
        assert_eq!(
            list_users(&s, &r, &Filter::default())
                .expect_err("list users")
                .status,
            403
        );
        assert_eq!(
            delete_project(&s, &r, &boot(), &p.id)
                .expect_err("delete")
                .status,
            403
        );
        assert_eq!(
            grant(&s, &r, &p.id, &u.id, &admin_role)
                .expect_err("self-promotion")
                .status,
            403
        );
        assert_eq!(
            get_project(&s, &r, &p.id).expect("own project").name,
            "demo"
        );
        assert_eq!(
            get_project(&s, &r, &adm.project_id)
                .expect_err("other project")
                .status,
            403
        );
        assert_eq!(get_user(&s, &r, &u.id).expect("self").name, "u1");
        assert_eq!(
            get_user(&s, &r, &adm.user_id)
                .expect_err("other user")
                .status,
            403
        );
        assert_eq!(user_projects(&s, &r, &u.id).expect("own projects").len(), 1);
        let own = AssignmentFilter {
            user_id: Some(u.id.clone()),
            ..AssignmentFilter::default()
        };
        assert_eq!(
            list_assignments(&s, &r, &own)
                .expect("own assignments")
                .len(),
            1
        );
        assert_eq!(
            list_assignments(&s, &r, &AssignmentFilter::default())
                .expect_err("all")
                .status,
            403
        );
        assert_eq!(
            list_grants(&s, &r, &p.id, &u.id).expect("own grants").len(),
            1
        );
    }

    #[test]
    fn deletions_cascade_and_protect() {
        let core = core();
        let (adm, p, u) = demo(&core, "member");
        let patch = UserPatch {
            default_project_id: Some(Some(p.id.clone())),
            ..UserPatch::default()
        };
        core.mutate(|s| update_user(s, &adm, &boot(), &u.id, patch))
            .expect("default project");
        let t = login(&core, "u1", "demo", now_unix()).expect("token");

        // The bootstrap admin and project are protected.
        let admin_role = role_id(&core, "admin");
        let s = core.read();
        let b = boot();
        assert_eq!(
            delete_user(&s, &adm, &b, &adm.user_id)
                .expect_err("admin user")
                .status,
            403
        );
        assert_eq!(
            delete_project(&s, &adm, &b, &adm.project_id)
                .expect_err("admin project")
                .status,
            403
        );
        let off = UserPatch {
            enabled: Some(false),
            ..UserPatch::default()
        };
        assert_eq!(
            update_user(&s, &adm, &b, &adm.user_id, off)
                .expect_err("disable admin")
                .status,
            403
        );
        let rename = ProjectPatch {
            name: Some("x".into()),
            ..ProjectPatch::default()
        };
        assert_eq!(
            update_project(&s, &adm, &b, &adm.project_id, rename)
                .expect_err("rename")
                .status,
            403
        );
        let e = revoke_grant(&s, &adm, &b, &adm.project_id, &adm.user_id, &admin_role)
            .expect_err("own admin");
        assert_eq!(e.status, 403);
        assert_eq!(
            delete_project(&s, &adm, &b, "nope")
                .expect_err("unknown")
                .status,
            404
        );
        drop(s);

        // A project with a network cannot go.
        let net = Network {
            meta: Meta {
                id: "n1".into(),
                project_id: p.id.clone(),
                name: "net".into(),
                description: String::new(),
                revision_number: 1,
                created_at: timestamp(0),
                updated_at: timestamp(0),
            },
            admin_state_up: true,
            shared: false,
            mtu: 1450,
            port_security_enabled: true,
            vni: 1,
            external: false,
        };
        core.mutate(|_| Ok((vec![Change::Put(Object::Network(net))], ())))
            .expect("network");
        let e = core
            .mutate(|s| delete_project(s, &adm, &b, &p.id))
            .expect_err("in use");
        assert_eq!(e.status, 409);
        assert!(e.message.contains("1 networks"), "{}", e.message);
        core.mutate(|_| Ok((vec![Change::Delete(Kind::Network, "n1".into())], ())))
            .expect("network gone");

        core.mutate(|s| delete_project(s, &adm, &b, &p.id))
            .expect("delete project");
        let s = core.read();
        assert!(!s.projects.contains_key(&p.id));
        assert!(
            s.assignments.values().all(|a| a.project_id != p.id),
            "assignments remain"
        );
        assert!(
            s.tokens.values().all(|t| t.project_id != p.id),
            "tokens remain"
        );
        assert_eq!(
            s.users[&u.id].default_project_id, None,
            "dangling default project"
        );
        assert_eq!(
            authenticate(&s, &t, now_unix())
                .expect_err("token of a deleted project")
                .status,
            401
        );
    }
}

//! Keystone v3 HTTP routes (the subset the `openstack` CLI, openstacksdk and
//! keystoneauth use): the version document, tokens (issue, validate,
//! revoke), the catalog, projects, users, roles, role assignments and the
//! one `default` domain.
//!
//! This layer only parses requests (strictly: unknown attributes are 400)
//! into calls of `identity`, runs argon2 off the async workers (bounded, so
//! a burst of logins cannot exhaust memory), and renders Keystone JSON and
//! Keystone error bodies. Policy and validation live in `identity`.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
};

use axum::{
    extract::{
        rejection::{JsonRejection, QueryRejection},
        Path, Query, State,
    },
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{any, get, MethodRouter},
    Json, Router,
};
use serde::{de::DeserializeOwned, Deserialize, Deserializer, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};

use super::{json_body, keystone_error};
use crate::{
    app::App,
    auth::Auth,
    error::ApiError,
    identity::{
        self, AssignmentFilter, Bootstrap, DomainRef, Filter, Issue, NewProject, NewUser,
        ProjectPatch, ProjectRef, TokenInfo, UserPatch, UserRef, DEFAULT_DOMAIN_ID,
        DEFAULT_DOMAIN_NAME,
    },
    model::{now_unix, Project, Role, User},
    network::Made,
    state::State as DesiredState,
};

pub fn routes() -> Router<Arc<App>> {
    use axum::routing::post;
    let routes: Vec<(&str, MethodRouter<Arc<App>>)> = vec![
        ("/v3", get(version)),
        ("/v3/", get(version)),
        (
            "/v3/auth/tokens",
            get(validate_token).post(issue_token).delete(revoke_token),
        ),
        ("/v3/auth/catalog", get(auth_catalog)),
        ("/v3/auth/projects", get(auth_projects)),
        ("/v3/auth/domains", get(auth_domains)),
        (
            "/v3/projects",
            get(list_accounts::<Project>).post(create_project),
        ),
        (
            "/v3/projects/{id}",
            get(show_account::<Project>)
                .patch(update_project)
                .delete(delete_account::<Project>),
        ),
        ("/v3/projects/{p}/users/{u}/roles", get(list_grants)),
        (
            "/v3/projects/{p}/users/{u}/roles/{r}",
            get(check_grant).put(grant).delete(revoke_grant),
        ),
        ("/v3/users", get(list_accounts::<User>).post(create_user)),
        (
            "/v3/users/{id}",
            get(show_account::<User>)
                .patch(update_user)
                .delete(delete_account::<User>),
        ),
        ("/v3/users/{id}/projects", get(user_projects)),
        ("/v3/users/{id}/password", post(change_password)),
        ("/v3/roles", get(list_roles).post(create_role)),
        ("/v3/roles/{id}", get(show_role)),
        ("/v3/role_assignments", get(list_assignments)),
        ("/v3/domains", get(list_domains)),
        ("/v3/domains/{id}", get(show_domain)),
        ("/v3/services", get(list_services)),
        ("/v3/services/{id}", get(show_service)),
        ("/v3/endpoints", get(list_endpoints)),
        ("/v3/regions", get(list_regions)),
        ("/v3/regions/{id}", get(show_region)),
    ];
    let mut router = Router::new();
    for (path, methods) in routes {
        // Other methods on a known path: 405 with a Keystone body.
        router = router.route(path, methods.fallback(method_not_allowed));
    }
    router.route("/v3/{*rest}", any(unknown))
}

// ------------------------------------------------------------------ plumbing

/// An [`ApiError`] rendered the Keystone way, so handlers can use `?`.
struct KsError(ApiError);

impl IntoResponse for KsError {
    fn into_response(self) -> Response {
        keystone_error(self.0)
    }
}

impl From<ApiError> for KsError {
    fn from(e: ApiError) -> KsError {
        KsError(e)
    }
}

type Reply = Result<Response, KsError>;
type Params = Result<Query<HashMap<String, String>>, QueryRejection>;
type Body = Result<Json<Value>, JsonRejection>;

fn caller(app: &App, headers: &HeaderMap) -> Result<Auth, ApiError> {
    super::authenticate(app, headers)
}

fn params(q: Params) -> Result<HashMap<String, String>, ApiError> {
    q.map(|Query(m)| m)
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {}", e.body_text())))
}

/// Keystone's truthiness of a query flag (`?enabled=false`, `?include_names`).
fn flag(v: &str) -> bool {
    !matches!(
        v.to_ascii_lowercase().as_str(),
        "false" | "0" | "no" | "off"
    )
}

/// A typed body, or 400 naming what is wrong (unknown attribute, missing
/// field, wrong type).
fn parse<T: DeserializeOwned>(what: &str, body: Body) -> Result<T, ApiError> {
    let v = json_body(body)?;
    check_shape(what, &v)?;
    serde_json::from_value(v)
        .map_err(|e| ApiError::bad_request(format!("Invalid input for {what}: {e}.")))
}

/// Attributes Keystone's schemas allow to be `null` in a project or user body.
const NULLABLE: &[&str] = &["description", "default_project_id"];

/// What Keystone's JSON schemas check and serde alone would let through:
/// every body is an object of objects (serde reads a struct from an array
/// too), and in a project or user an attribute is `null` only where
/// Keystone allows it (serde reads `null` as absent).
fn check_shape(what: &str, v: &Value) -> Result<(), ApiError> {
    let bad = |m: String| ApiError::bad_request(format!("Invalid input for {what}: {m}."));
    let Some(root) = v.as_object() else {
        return Err(bad("the body must be a JSON object".into()));
    };
    for (key, inner) in root {
        let Some(inner) = inner.as_object() else {
            return Err(bad(format!("'{key}' must be an object")));
        };
        if key == "project" || key == "user" {
            if let Some((k, _)) = inner
                .iter()
                .find(|(k, v)| v.is_null() && !NULLABLE.contains(&k.as_str()))
            {
                return Err(bad(format!("'{k}' must not be null")));
            }
        }
    }
    Ok(())
}

/// `"x": null` and an absent `"x"` differ for PATCH: `Some(None)` vs `None`.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Runs password hashing or verification on the blocking pool, at most 4
/// at a time (argon2id holds 19 MiB while it runs).
async fn argon2<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    static SLOTS: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    let _slot = SLOTS
        .get_or_init(|| tokio::sync::Semaphore::new(4))
        .acquire()
        .await
        .map_err(|_| ApiError::internal("password hashing is unavailable"))?;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ApiError::internal("password hashing failed"))
}

async fn hash_new_password(password: String) -> Result<String, ApiError> {
    identity::check_password_policy(&password)?;
    argon2(move || identity::hash_password(&password)).await?
}

fn url(app: &App, path: &str) -> String {
    format!("{}{path}", app.config.public_url)
}

fn collection_links(app: &App, path: &str) -> Value {
    json!({"self": url(app, path), "previous": null, "next": null})
}

fn boot(app: &App) -> Bootstrap {
    Bootstrap::from_config(&app.config)
}

/// `{"<many>": [...], "links": {...}}`: a Keystone list of what `path`
/// lists.
fn listed(app: &App, many: &str, path: &str, items: impl Serialize) -> Reply {
    Ok(Json(json!({ many: items, "links": collection_links(app, path) })).into_response())
}

/// `{"<key>": {...}}`, answered with `status`.
fn one(status: StatusCode, key: &str, v: Value) -> Reply {
    Ok((status, Json(json!({ key: v }))).into_response())
}

/// 204, no body.
fn done() -> Reply {
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// How Keystone shows projects and users, and the identity calls behind
/// their collections' list, show and delete (create and update differ).
trait Shown: identity::Account {
    const ONE: &'static str;
    const MANY: &'static str;
    const PATH: &'static str;
    const JSON: fn(&App, &Self) -> Value;
    const LIST: fn(&DesiredState, &Auth, &Filter) -> Result<Vec<Self>, ApiError>;
    const GET: fn(&DesiredState, &Auth, &str) -> Result<Self, ApiError>;
    const DELETE: fn(&DesiredState, &Auth, &Bootstrap, &str) -> Made<()>;
}

impl Shown for Project {
    const ONE: &'static str = "project";
    const MANY: &'static str = "projects";
    const PATH: &'static str = "/v3/projects";
    const JSON: fn(&App, &Self) -> Value = project_json;
    const LIST: fn(&DesiredState, &Auth, &Filter) -> Result<Vec<Self>, ApiError> =
        identity::list_projects;
    const GET: fn(&DesiredState, &Auth, &str) -> Result<Self, ApiError> = identity::get_project;
    const DELETE: fn(&DesiredState, &Auth, &Bootstrap, &str) -> Made<()> = identity::delete_project;
}

impl Shown for User {
    const ONE: &'static str = "user";
    const MANY: &'static str = "users";
    const PATH: &'static str = "/v3/users";
    const JSON: fn(&App, &Self) -> Value = user_json;
    const LIST: fn(&DesiredState, &Auth, &Filter) -> Result<Vec<Self>, ApiError> =
        identity::list_users;
    const GET: fn(&DesiredState, &Auth, &str) -> Result<Self, ApiError> = identity::get_user;
    const DELETE: fn(&DesiredState, &Auth, &Bootstrap, &str) -> Made<()> = identity::delete_user;
}

async fn list_accounts<A: Shown>(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    q: Params,
) -> Reply {
    let me = caller(&app, &headers)?;
    let q = params(q)?;
    let all = (A::LIST)(&app.core.read(), &me, &filter(&q))?;
    let v: Vec<Value> = all.iter().map(|x| (A::JSON)(&app, x)).collect();
    listed(&app, A::MANY, A::PATH, v)
}

async fn show_account<A: Shown>(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Reply {
    let me = caller(&app, &headers)?;
    let x = (A::GET)(&app.core.read(), &me, &id)?;
    one(StatusCode::OK, A::ONE, (A::JSON)(&app, &x))
}

async fn delete_account<A: Shown>(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Reply {
    let me = caller(&app, &headers)?;
    let boot = boot(&app);
    app.core.mutate(|s| (A::DELETE)(s, &me, &boot, &id))?;
    done()
}

/// Rejects the Keystone attributes this cloud accepts only in their trivial
/// form (no project hierarchy, tags or options).
fn check_trivial(
    parent_id: Option<&str>,
    is_domain: Option<bool>,
    tags: Option<&[String]>,
    options: Option<&Map<String, Value>>,
) -> Result<(), ApiError> {
    if parent_id.is_some_and(|p| p != DEFAULT_DOMAIN_ID) {
        return Err(ApiError::bad_request(
            "Invalid input for field 'parent_id': projects are not nested here; the parent is the domain 'default'.",
        ));
    }
    if is_domain == Some(true) {
        return Err(ApiError::bad_request(
            "Invalid input for field 'is_domain': only the domain 'default' exists.",
        ));
    }
    if tags.is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::bad_request(
            "Invalid input for field 'tags': tags are not supported.",
        ));
    }
    if options.is_some_and(|o| !o.is_empty()) {
        return Err(ApiError::bad_request(
            "Invalid input for field 'options': options are not supported.",
        ));
    }
    Ok(())
}

// ------------------------------------------------------------------ rendering

fn domain_ref() -> Value {
    json!({"id": DEFAULT_DOMAIN_ID, "name": DEFAULT_DOMAIN_NAME})
}

fn domain_json(app: &App) -> Value {
    json!({
        "id": DEFAULT_DOMAIN_ID,
        "name": DEFAULT_DOMAIN_NAME,
        "description": "The default domain",
        "enabled": true,
        "tags": [],
        "options": {},
        "links": {"self": url(app, "/v3/domains/default")},
    })
}

fn project_json(app: &App, p: &Project) -> Value {
    json!({
        "id": p.id,
        "name": p.name,
        "description": p.description,
        "domain_id": p.domain_id,
        "enabled": p.enabled,
        "is_domain": false,
        "parent_id": p.domain_id,
        "tags": [],
        "options": {},
        "links": {"self": url(app, &format!("/v3/projects/{}", p.id))},
    })
}

/// A user as Keystone shows it: never the password or its hash.
fn user_json(app: &App, u: &User) -> Value {
    let mut v = json!({
        "id": u.id,
        "name": u.name,
        "domain_id": u.domain_id,
        "enabled": u.enabled,
        "description": u.description,
        "password_expires_at": null,
        "options": {},
        "links": {"self": url(app, &format!("/v3/users/{}", u.id))},
    });
    if let Some(p) = &u.default_project_id {
        v["default_project_id"] = json!(p);
    }
    v
}

fn role_json(app: &App, r: &Role) -> Value {
    json!({
        "id": r.id,
        "name": r.name,
        "domain_id": null,
        "description": "",
        "options": {},
        "links": {"self": url(app, &format!("/v3/roles/{}", r.id))},
    })
}

/// A stable id for a catalog entry (the same across restarts).
fn catalog_id(seed: &str) -> String {
    Sha256::digest(seed.as_bytes())
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The service catalog: identity (`<public_url>/v3`), network
/// (`<public_url>`, where Neutron's version document is served) and
/// load-balancer (`<public_url>/load-balancer`, where Octavia's is),
/// key-manager (`<public_url>/key-manager`, Barbican's).
fn catalog(app: &App) -> Value {
    let region = &app.config.region;
    let services = [
        ("identity", "keystone", url(app, "/v3")),
        ("network", "neutron", app.config.public_url.clone()),
        (
            "load-balancer",
            "octavia",
            url(app, super::octavia::ENDPOINT_PATH),
        ),
        (
            "key-manager",
            "barbican",
            url(app, super::barbican::ENDPOINT_PATH),
        ),
    ];
    services
        .iter()
        .map(|(kind, name, base)| {
            let endpoints: Vec<Value> = ["public", "internal", "admin"]
                .iter()
                .map(|interface| {
                    json!({
                        "id": catalog_id(&format!("{kind}:{interface}")),
                        "interface": interface,
                        "region": region,
                        "region_id": region,
                        "url": base,
                    })
                })
                .collect();
            json!({"id": catalog_id(kind), "type": kind, "name": name, "endpoints": endpoints})
        })
        .collect()
}

fn token_json(app: &App, info: &TokenInfo, with_catalog: bool) -> Value {
    let mut token = json!({
        "methods": ["password"],
        "user": {
            "id": info.user.id,
            "name": info.user.name,
            "domain": domain_ref(),
            "password_expires_at": null,
        },
        "project": {"id": info.project.id, "name": info.project.name, "domain": domain_ref()},
        "is_domain": false,
        "roles": info.roles.iter().map(|r| json!({"id": r.id, "name": r.name})).collect::<Vec<_>>(),
        "issued_at": info.token.issued_at,
        "expires_at": info.token.expires_at,
        // A non-secret handle of the token: a prefix of its hash.
        "audit_ids": [&info.token.id_hash[..22.min(info.token.id_hash.len())]],
    });
    if with_catalog {
        token["catalog"] = catalog(app);
    }
    json!({ "token": token })
}

// ------------------------------------------------------------------ version

async fn version(State(app): State<Arc<App>>) -> Response {
    Json(json!({
        "version": {
            "id": "v3.14",
            "status": "stable",
            "updated": "2020-04-07T00:00:00Z",
            "links": [{"rel": "self", "href": url(&app, "/v3/")}],
            "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}],
        }
    }))
    .into_response()
}

async fn method_not_allowed() -> Response {
    keystone_error(ApiError::new(
        405,
        "MethodNotAllowed",
        "The method is not allowed for the requested URL.",
    ))
}

async fn unknown() -> Response {
    keystone_error(ApiError::new(
        404,
        "NotFound",
        "The resource could not be found.",
    ))
}

// ------------------------------------------------------------------ tokens

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthBody {
    auth: AuthSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthSpec {
    identity: IdentitySpec,
    #[serde(default)]
    scope: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentitySpec {
    methods: Vec<String>,
    #[serde(default)]
    password: Option<PasswordSpec>,
    #[serde(default)]
    token: Option<TokenSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordSpec {
    user: UserSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserSpec {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    domain: Option<DomainSpec>,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DomainSpec {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenSpec {
    id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeSpec {
    project: ProjectScopeSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectScopeSpec {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    domain: Option<DomainSpec>,
}

impl DomainSpec {
    fn into_ref(self, whose: &str) -> Result<DomainRef, ApiError> {
        match (self.id, self.name) {
            (Some(id), _) => Ok(DomainRef::Id(id)),
            (None, Some(name)) => Ok(DomainRef::Name(name)),
            (None, None) => Err(ApiError::bad_request(format!(
                "Invalid input for {whose}: the domain needs an id or a name."
            ))),
        }
    }
}

enum Method {
    Password { user: UserRef, password: String },
    Token(String),
}

/// `POST /v3/auth/tokens`'s body as a command.
fn parse_auth(body: Body) -> Result<(Method, Option<ProjectRef>), ApiError> {
    let AuthBody { auth } = parse::<AuthBody>("the authentication request", body)?;
    let id = auth.identity;
    let method = match id.methods.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["password"] => {
            let p = id.password.ok_or_else(|| {
                ApiError::bad_request("Invalid input for the authentication request: method 'password' needs 'password'.")
            })?;
            let user = match (p.user.id, p.user.name) {
                (Some(id), _) => UserRef::Id(id),
                (None, Some(name)) => {
                    let domain = p.user.domain.ok_or_else(|| {
                        ApiError::bad_request("Invalid input for the authentication request: a user named by name needs a domain.")
                    })?;
                    UserRef::Name { name, domain: domain.into_ref("the user")? }
                }
                (None, None) => {
                    return Err(ApiError::bad_request(
                        "Invalid input for the authentication request: the user needs an id or a name.",
                    ))
                }
            };
            Method::Password { user, password: p.user.password }
        }
        ["token"] => Method::Token(
            id.token
                .ok_or_else(|| ApiError::bad_request("Invalid input for the authentication request: method 'token' needs 'token'."))?
                .id,
        ),
        _ => return Err(ApiError::unauthorized("Attempted to authenticate with an unsupported method.")),
    };
    let scope = match auth.scope {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s == "unscoped" => None,
        Some(Value::Object(o)) if o.contains_key("project") => {
            let s: ScopeSpec = serde_json::from_value(Value::Object(o))
                .map_err(|e| ApiError::bad_request(format!("Invalid input for the scope: {e}.")))?;
            Some(match (s.project.id, s.project.name) {
                (Some(id), _) => ProjectRef::Id(id),
                (None, Some(name)) => {
                    let domain = s.project.domain.ok_or_else(|| {
                        ApiError::bad_request("Invalid input for the scope: a project named by name needs a domain.")
                    })?;
                    ProjectRef::Name { name, domain: domain.into_ref("the project")? }
                }
                (None, None) => return Err(ApiError::bad_request("Invalid input for the scope: the project needs an id or a name.")),
            })
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "Invalid input for the scope: only project scope is supported (not domain, system or trust scope).",
            ))
        }
    };
    Ok((method, scope))
}

async fn issue_token(State(app): State<Arc<App>>, q: Params, body: Body) -> Reply {
    let q = params(q)?;
    let (method, scope) = parse_auth(body)?;
    let now = now_unix();
    let (user_id, not_after) = match method {
        Method::Password { user, password } => {
            let candidate = {
                let state = app.core.read();
                identity::find_user(&state, &user).map(|u| (u.id.clone(), u.password_hash.clone()))
            };
            let hash = candidate.as_ref().map(|(_, h)| h.clone());
            let ok = argon2(move || identity::check_login(hash.as_deref(), &password)).await?;
            match candidate {
                Some((id, _)) if ok => (id, None),
                _ => {
                    let who = match &user {
                        UserRef::Id(id) => id.clone(),
                        UserRef::Name { name, .. } => name.clone(),
                    };
                    tracing::info!(user = %who, "password authentication refused");
                    return Err(identity::auth_failed().into());
                }
            }
        }
        Method::Token(t) => {
            let a = identity::authenticate(&app.core.read(), &t, now)?;
            (a.user_id, Some(a.expires_unix))
        }
    };
    let token = identity::new_token()?;
    let hash = identity::token_hash(&token);
    let req = Issue {
        user_id: &user_id,
        scope: scope.as_ref(),
        token_hash: &hash,
        now,
        ttl_secs: app.config.token_ttl.as_secs(),
        not_after,
    };
    let info = app.core.mutate(|s| identity::issue_token(s, &req))?;
    let mut resp = (
        StatusCode::CREATED,
        Json(token_json(&app, &info, !q.contains_key("nocatalog"))),
    )
        .into_response();
    resp.headers_mut().insert(
        "x-subject-token",
        HeaderValue::from_str(&token).expect("hex token"),
    );
    Ok(resp)
}

fn subject(headers: &HeaderMap) -> Result<&str, ApiError> {
    headers
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::bad_request("The X-Subject-Token header is required."))
}

/// `GET` (and `HEAD`) `/v3/auth/tokens`.
async fn validate_token(State(app): State<Arc<App>>, headers: HeaderMap, q: Params) -> Reply {
    let q = params(q)?;
    let me = caller(&app, &headers)?;
    let subject = subject(&headers)?;
    let info = identity::check_token(
        &app.core.read(),
        &me,
        &identity::token_hash(subject),
        now_unix(),
    )?;
    let mut resp = Json(token_json(&app, &info, !q.contains_key("nocatalog"))).into_response();
    resp.headers_mut().insert(
        "x-subject-token",
        HeaderValue::from_str(subject).expect("was a header"),
    );
    Ok(resp)
}

async fn revoke_token(State(app): State<Arc<App>>, headers: HeaderMap) -> Reply {
    let me = caller(&app, &headers)?;
    let hash = identity::token_hash(subject(&headers)?);
    app.core
        .mutate(|s| identity::revoke_token(s, &me, &hash, now_unix()))?;
    done()
}

async fn auth_catalog(State(app): State<Arc<App>>, headers: HeaderMap) -> Reply {
    caller(&app, &headers)?;
    listed(&app, "catalog", "/v3/auth/catalog", catalog(&app))
}

/// The enabled projects the token's user holds a role on.
async fn auth_projects(State(app): State<Arc<App>>, headers: HeaderMap) -> Reply {
    let me = caller(&app, &headers)?;
    let projects = identity::projects_of(&app.core.read(), &me.user_id);
    let v: Vec<Value> = projects
        .iter()
        .filter(|p| p.enabled)
        .map(|p| project_json(&app, p))
        .collect();
    listed(&app, "projects", "/v3/auth/projects", v)
}

/// No domain-scoped roles exist here.
async fn auth_domains(State(app): State<Arc<App>>, headers: HeaderMap) -> Reply {
    caller(&app, &headers)?;
    listed(&app, "domains", "/v3/auth/domains", json!([]))
}

// ------------------------------------------------------------------ projects

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectBody<T> {
    project: T,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectCreate {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    domain_id: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    parent_id: Option<String>,
    #[serde(default)]
    is_domain: Option<bool>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    options: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectUpdate {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    description: Option<Option<String>>,
    #[serde(default)]
    domain_id: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    parent_id: Option<String>,
    #[serde(default)]
    is_domain: Option<bool>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    options: Option<Map<String, Value>>,
}

fn filter(q: &HashMap<String, String>) -> Filter {
    Filter {
        name: q.get("name").cloned(),
        domain_id: q.get("domain_id").cloned(),
        enabled: q.get("enabled").map(|v| flag(v)),
    }
}

async fn create_project(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Reply {
    let me = caller(&app, &headers)?;
    let ProjectBody { project: b } = parse::<ProjectBody<ProjectCreate>>("project", body)?;
    check_trivial(
        b.parent_id.as_deref(),
        b.is_domain,
        b.tags.as_deref(),
        b.options.as_ref(),
    )?;
    let req = NewProject {
        name: b.name,
        description: b.description.unwrap_or_default(),
        domain_id: b.domain_id,
        enabled: b.enabled.unwrap_or(true),
    };
    let p = app.core.mutate(|s| identity::create_project(s, &me, req))?;
    one(StatusCode::CREATED, "project", project_json(&app, &p))
}

async fn update_project(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Reply {
    let me = caller(&app, &headers)?;
    let ProjectBody { project: b } = parse::<ProjectBody<ProjectUpdate>>("project", body)?;
    check_trivial(
        b.parent_id.as_deref(),
        b.is_domain,
        b.tags.as_deref(),
        b.options.as_ref(),
    )?;
    let patch = ProjectPatch {
        name: b.name,
        description: b.description.map(Option::unwrap_or_default),
        enabled: b.enabled,
        domain_id: b.domain_id,
    };
    let boot = boot(&app);
    let p = app
        .core
        .mutate(|s| identity::update_project(s, &me, &boot, &id, patch))?;
    one(StatusCode::OK, "project", project_json(&app, &p))
}

// ------------------------------------------------------------------ users

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserBody<T> {
    user: T,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserCreate {
    name: String,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    domain_id: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    default_project_id: Option<String>,
    #[serde(default)]
    options: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserUpdate {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    description: Option<Option<String>>,
    #[serde(default)]
    domain_id: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    default_project_id: Option<Option<String>>,
    #[serde(default)]
    options: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    password: String,
    original_password: String,
}

async fn create_user(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Reply {
    let me = caller(&app, &headers)?;
    let UserBody { user: b } = parse::<UserBody<UserCreate>>("user", body)?;
    check_trivial(None, None, None, b.options.as_ref())?;
    // Refuse before spending a hash on a caller who may not create users.
    identity::require_admin(&me, "create_user")?;
    let password_hash = match b.password {
        Some(p) => Some(hash_new_password(p).await?),
        None => None,
    };
    let req = NewUser {
        name: b.name,
        password_hash,
        description: b.description.unwrap_or_default(),
        domain_id: b.domain_id,
        enabled: b.enabled.unwrap_or(true),
        default_project_id: b.default_project_id,
    };
    let u = app.core.mutate(|s| identity::create_user(s, &me, req))?;
    one(StatusCode::CREATED, "user", user_json(&app, &u))
}

async fn update_user(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Reply {
    let me = caller(&app, &headers)?;
    let UserBody { user: b } = parse::<UserBody<UserUpdate>>("user", body)?;
    check_trivial(None, None, None, b.options.as_ref())?;
    identity::require_admin(&me, "update_user")?;
    let password_hash = match b.password {
        Some(p) => Some(hash_new_password(p).await?),
        None => None,
    };
    let patch = UserPatch {
        name: b.name,
        password_hash,
        description: b.description.map(Option::unwrap_or_default),
        enabled: b.enabled,
        default_project_id: b.default_project_id,
        domain_id: b.domain_id,
    };
    let boot = boot(&app);
    let u = app
        .core
        .mutate(|s| identity::update_user(s, &me, &boot, &id, patch))?;
    one(StatusCode::OK, "user", user_json(&app, &u))
}

async fn user_projects(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Reply {
    let me = caller(&app, &headers)?;
    let projects = identity::user_projects(&app.core.read(), &me, &id)?;
    let v: Vec<Value> = projects.iter().map(|p| project_json(&app, p)).collect();
    listed(&app, "projects", &format!("/v3/users/{id}/projects"), v)
}

/// `POST /v3/users/{id}/password` (`openstack user password set`): the
/// user's own change, with the original password.
async fn change_password(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Reply {
    let me = caller(&app, &headers)?;
    let UserBody { user: b } = parse::<UserBody<PasswordChange>>("user", body)?;
    if id != me.user_id {
        return Err(ApiError::forbidden(
            "You are not authorized to perform the requested action: identity:change_password.",
        )
        .into());
    }
    let current = app
        .core
        .read()
        .users
        .get(&id)
        .map(|u| u.password_hash.clone());
    let original = b.original_password;
    if !argon2(move || identity::check_login(current.as_deref(), &original)).await? {
        return Err(identity::auth_failed().into());
    }
    let new_hash = hash_new_password(b.password).await?;
    app.core
        .mutate(|s| identity::change_own_password(s, &me, &id, new_hash))?;
    done()
}

// ------------------------------------------------------------------ roles

async fn list_roles(State(app): State<Arc<App>>, headers: HeaderMap, q: Params) -> Reply {
    caller(&app, &headers)?;
    let q = params(q)?;
    let roles = identity::list_roles(&app.core.read(), q.get("name").map(String::as_str));
    let v: Vec<Value> = roles.iter().map(|r| role_json(&app, r)).collect();
    listed(&app, "roles", "/v3/roles", v)
}

async fn show_role(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Reply {
    caller(&app, &headers)?;
    let r = identity::get_role(&app.core.read(), &id)?;
    one(StatusCode::OK, "role", role_json(&app, &r))
}

async fn create_role(State(app): State<Arc<App>>, headers: HeaderMap) -> Reply {
    caller(&app, &headers)?;
    Err(ApiError::forbidden("Roles are fixed here: admin, member and reader.").into())
}

async fn grant(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((p, u, r)): Path<(String, String, String)>,
) -> Reply {
    let me = caller(&app, &headers)?;
    app.core.mutate(|s| identity::grant(s, &me, &p, &u, &r))?;
    done()
}

async fn revoke_grant(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((p, u, r)): Path<(String, String, String)>,
) -> Reply {
    let me = caller(&app, &headers)?;
    let boot = boot(&app);
    app.core
        .mutate(|s| identity::revoke_grant(s, &me, &boot, &p, &u, &r))?;
    done()
}

/// `GET` and `HEAD`: 204 if granted.
async fn check_grant(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((p, u, r)): Path<(String, String, String)>,
) -> Reply {
    let me = caller(&app, &headers)?;
    identity::check_grant(&app.core.read(), &me, &p, &u, &r)?;
    done()
}

async fn list_grants(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((p, u)): Path<(String, String)>,
) -> Reply {
    let me = caller(&app, &headers)?;
    let roles = identity::list_grants(&app.core.read(), &me, &p, &u)?;
    let v: Vec<Value> = roles.iter().map(|r| role_json(&app, r)).collect();
    listed(
        &app,
        "roles",
        &format!("/v3/projects/{p}/users/{u}/roles"),
        v,
    )
}

/// `GET /v3/role_assignments` (`openstack role assignment list`, and
/// `role add/remove` look-ups): filters `user.id`, `scope.project.id`,
/// `role.id`; `include_names`; `effective` changes nothing (no groups or
/// inheritance). Group, domain or system filters match nothing.
async fn list_assignments(State(app): State<Arc<App>>, headers: HeaderMap, q: Params) -> Reply {
    let me = caller(&app, &headers)?;
    let q = params(q)?;
    let f = AssignmentFilter {
        user_id: q.get("user.id").cloned(),
        project_id: q.get("scope.project.id").cloned(),
        role_id: q.get("role.id").cloned(),
    };
    let names = q.get("include_names").is_some_and(|v| flag(v));
    let nothing = [
        "group.id",
        "scope.domain.id",
        "scope.system",
        "scope.OS-INHERIT:inherited_to",
    ]
    .iter()
    .any(|k| q.contains_key(*k));
    let state = app.core.read();
    let list = identity::list_assignments(&state, &me, &f)?;
    let v: Vec<Value> = if nothing {
        Vec::new()
    } else {
        list.iter()
            .map(|a| {
                let mut role = json!({"id": a.role_id});
                let mut user = json!({"id": a.user_id});
                let mut project = json!({"id": a.project_id});
                if names {
                    if let Some(r) = state.roles.get(&a.role_id) {
                        role["name"] = json!(r.name);
                    }
                    if let Some(u) = state.users.get(&a.user_id) {
                        user["name"] = json!(u.name);
                        user["domain"] = domain_ref();
                    }
                    if let Some(p) = state.projects.get(&a.project_id) {
                        project["name"] = json!(p.name);
                        project["domain"] = domain_ref();
                    }
                }
                let link = format!("/v3/projects/{}/users/{}/roles/{}", a.project_id, a.user_id, a.role_id);
                json!({"role": role, "user": user, "scope": {"project": project}, "links": {"assignment": url(&app, &link)}})
            })
            .collect()
    };
    drop(state);
    listed(&app, "role_assignments", "/v3/role_assignments", v)
}

// ------------------------------------------------------------------ domains

/// The one domain; readable by any authenticated caller (the CLI resolves
/// `--domain default` through it).
async fn list_domains(State(app): State<Arc<App>>, headers: HeaderMap, q: Params) -> Reply {
    caller(&app, &headers)?;
    let q = params(q)?;
    let shown = q.get("name").is_none_or(|n| n == DEFAULT_DOMAIN_NAME)
        && q.get("enabled").is_none_or(|v| flag(v));
    let v = if shown {
        vec![domain_json(&app)]
    } else {
        Vec::new()
    };
    listed(&app, "domains", "/v3/domains", v)
}

async fn show_domain(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Reply {
    caller(&app, &headers)?;
    if id != DEFAULT_DOMAIN_ID {
        return Err(ApiError::not_found("domain", &id).into());
    }
    one(StatusCode::OK, "domain", domain_json(&app))
}

// ------------------------------------------------------------------ catalog

/// `/v3/services`, `/v3/endpoints`, `/v3/regions`: the fixed catalog, read
/// only (`openstack service/endpoint/region list`), for any authenticated
/// caller (every token carries the catalog anyway).
fn services(app: &App) -> Vec<Value> {
    catalog(app).as_array().cloned().unwrap_or_default()
}

fn service_json(app: &App, s: &Value) -> Value {
    json!({
        "id": s["id"],
        "type": s["type"],
        "name": s["name"],
        "enabled": true,
        "links": {"self": url(app, &format!("/v3/services/{}", s["id"].as_str().unwrap_or_default()))},
    })
}

async fn list_services(State(app): State<Arc<App>>, headers: HeaderMap, q: Params) -> Reply {
    caller(&app, &headers)?;
    let q = params(q)?;
    let v: Vec<Value> = services(&app)
        .iter()
        .filter(|s| q.get("type").is_none_or(|t| s["type"] == t.as_str()))
        .filter(|s| q.get("name").is_none_or(|n| s["name"] == n.as_str()))
        .map(|s| service_json(&app, s))
        .collect();
    listed(&app, "services", "/v3/services", v)
}

async fn show_service(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Reply {
    caller(&app, &headers)?;
    let s = services(&app)
        .into_iter()
        .find(|s| s["id"] == id.as_str())
        .ok_or_else(|| ApiError::not_found("service", &id))?;
    one(StatusCode::OK, "service", service_json(&app, &s))
}

async fn list_endpoints(State(app): State<Arc<App>>, headers: HeaderMap, q: Params) -> Reply {
    caller(&app, &headers)?;
    let q = params(q)?;
    let mut v = Vec::new();
    for s in services(&app) {
        for e in s["endpoints"].as_array().into_iter().flatten() {
            let e = json!({
                "id": e["id"],
                "interface": e["interface"],
                "region": e["region"],
                "region_id": e["region_id"],
                "url": e["url"],
                "service_id": s["id"],
                "enabled": true,
                "links": {"self": url(&app, &format!("/v3/endpoints/{}", e["id"].as_str().unwrap_or_default()))},
            });
            let keep = ["interface", "service_id", "region_id"]
                .iter()
                .all(|k| q.get(*k).is_none_or(|want| e[*k] == want.as_str()));
            if keep {
                v.push(e);
            }
        }
    }
    listed(&app, "endpoints", "/v3/endpoints", v)
}

fn region_json(app: &App) -> Value {
    let r = &app.config.region;
    json!({"id": r, "description": "", "parent_region_id": null, "links": {"self": url(app, &format!("/v3/regions/{r}"))}})
}

async fn list_regions(State(app): State<Arc<App>>, headers: HeaderMap) -> Reply {
    caller(&app, &headers)?;
    listed(&app, "regions", "/v3/regions", [region_json(&app)])
}

async fn show_region(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Reply {
    caller(&app, &headers)?;
    if id != app.config.region {
        return Err(ApiError::not_found("region", &id).into());
    }
    one(StatusCode::OK, "region", region_json(&app))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_objects_and_nulls_only_where_keystone_allows_them() {
        let ok = |v: Value| check_shape("user", &v).is_ok();
        assert!(ok(json!({"user": {"name": "a", "description": null}})));
        assert!(ok(json!({"user": {"default_project_id": null}})));
        assert!(ok(json!({"project": {"description": null}})));
        // serde would read these as a struct (from an array) or as an
        // absent attribute (null): Keystone answers 400.
        assert!(!ok(json!({"user": [null, null]})));
        assert!(!ok(json!([{"user": {}}])));
        assert!(!ok(json!({"project": {"name": null}})));
        assert!(!ok(json!({"user": {"enabled": null}})));
        let e = check_shape("project", &json!({"project": {"name": null}})).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(
            e.message.contains("'name' must not be null"),
            "{}",
            e.message
        );
    }
}

//! The one generic path of the Neutron and Octavia resource boilerplate.
//!
//! HTTP becomes a typed [`Command`] here, at the edge (authentication
//! first, then the body, `If-Match`, `?cascade=`); [`Collection::execute`]
//! runs it against a [`Collection`], the descriptor in which each resource
//! declares only what differs (its names, the attributes it renders, which
//! of its project's objects a caller sees, and its `network`/`lbaas`
//! calls); its [`Api`] renders the answer and the errors the way that API
//! does (Neutron's `NeutronError`, Octavia's `faultstring`). [`Quotas`] is
//! the same for the two quota APIs, [`read`], [`write()`] and [`write_body`] for the
//! handlers that are not CRUD.
//!
//! This module never validates a resource's attributes nor decides
//! ownership (the domain does) and never touches state except through
//! `Core::read` and `Core::mutate`.

use std::sync::Arc;

use axum::{
    extract::{rejection::JsonRejection, Path, Query, State},
    http::{HeaderMap, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::{get, MethodRouter},
    Json, Router,
};
use serde_json::{json, Map, Value};

use super::{authenticate, json_body, neutron_error, octavia::octavia_error};
use crate::{
    app::App,
    auth::Auth,
    error::ApiError,
    network::{self, Edit},
    state::Resource,
    state::State as Desired,
};

/// A handler's outcome before rendering: status and body, or the error.
pub type Reply = Result<(StatusCode, Value), ApiError>;

/// A query string as pairs, in order (keys may repeat).
pub type Pairs = Vec<(String, String)>;

pub use crate::network::Made;

/// Which API a collection belongs to: how its answers, errors, pages and
/// creations look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    Neutron,
    Octavia,
}

impl Api {
    pub fn error(self, e: ApiError) -> Response {
        match self {
            Api::Neutron => neutron_error(e),
            Api::Octavia => octavia_error(e),
        }
    }

    /// 204 and a bodiless 202 without a body, anything else as JSON.
    pub fn respond(self, r: Reply) -> Response {
        match r {
            Ok((StatusCode::NO_CONTENT, _)) => StatusCode::NO_CONTENT.into_response(),
            Ok((StatusCode::ACCEPTED, Value::Null)) => StatusCode::ACCEPTED.into_response(),
            Ok((s, v)) => (s, Json(v)).into_response(),
            Err(e) => self.error(e),
        }
    }

    /// Filters, `fields`, sorting and pages over rendered items
    /// (`network::list_response`), with the API's next-page links:
    /// Neutron's name the collection's URL path segment (`path`), Octavia's
    /// the path that was asked (`asked`) and are `[]` on the last page;
    /// Octavia's `sort=key:dir` is understood too.
    #[allow(clippy::too_many_arguments)]
    pub fn list_body(
        self,
        app: &App,
        many: &str,
        path: &str,
        attrs: &[&str],
        items: Vec<Map<String, Value>>,
        q: &[(String, String)],
        asked: &str,
    ) -> Result<Value, ApiError> {
        let base = &app.config.public_url;
        match self {
            Api::Neutron => {
                let mut body = network::list_response(many, items, q, base, attrs)?;
                if path != many {
                    if let Some(href) = next_href(&mut body, many) {
                        *href =
                            href.replacen(&format!("/v2.0/{many}?"), &format!("/v2.0/{path}?"), 1);
                    }
                }
                Ok(body)
            }
            Api::Octavia => {
                let q = octavia_sort(q)?;
                let mut body = network::list_response(many, items, &q, base, attrs)?;
                match next_href(&mut body, many) {
                    Some(href) => {
                        *href = href.replacen(
                            &format!("{base}/v2.0/{many}?"),
                            &format!("{base}{asked}?"),
                            1,
                        )
                    }
                    None => body[format!("{many}_links")] = json!([]),
                }
                Ok(body)
            }
        }
    }
}

/// The `href` of a list body's first `<many>_links` entry, if a string.
fn next_href<'v>(body: &'v mut Value, many: &str) -> Option<&'v mut String> {
    match body
        .get_mut(format!("{many}_links"))
        .and_then(|l| l.get_mut(0))
        .and_then(|l| l.get_mut("href"))
    {
        Some(Value::String(href)) => Some(href),
        _ => None,
    }
}

/// Octavia's `sort=key:dir,...` as the `sort_key`/`sort_dir` the shared
/// list machinery understands (the first key decides).
fn octavia_sort(q: &[(String, String)]) -> Result<Pairs, ApiError> {
    let mut out = Vec::new();
    for (k, v) in q {
        if k == "sort" {
            let first = v.split(',').next().unwrap_or_default();
            let (key, dir) = first.split_once(':').unwrap_or((first, "asc"));
            if key.is_empty() {
                return Err(ApiError::bad_request(format!("Invalid sort '{v}'.")));
            }
            out.push(("sort_key".to_owned(), key.to_owned()));
            out.push(("sort_dir".to_owned(), dir.to_owned()));
        } else {
            out.push((k.clone(), v.clone()));
        }
    }
    Ok(out)
}

/// How a resource is updated.
pub enum Update<T> {
    /// Neutron's: `If-Match: revision_number=N` must hold (412).
    IfMatch(fn(&Desired, &Auth, Edit) -> Made<T>),
    /// Octavia's: no precondition.
    Plain(fn(&Desired, &Auth, &str, &Value) -> Made<T>),
}

/// How a resource is deleted.
pub enum Delete {
    /// Neutron's: `If-Match: revision_number=N` must hold (412).
    IfMatch(fn(&Desired, &Auth, &str, Option<&str>) -> Made<()>),
    /// Octavia's: no precondition.
    Plain(fn(&Desired, &Auth, &str) -> Made<()>),
    /// Octavia's load balancers: `?cascade=true` takes what is under it too.
    Cascade(fn(&Desired, &Auth, &str, bool) -> Made<()>),
}

/// How a resource is created (from the body of a POST).
pub type Create<T> = fn(&Desired, &Auth, &Value) -> Made<T>;

/// What runs before a list is read (with the query).
pub type PrepareList = fn(&App, &Auth, &[(String, String)]) -> Result<(), ApiError>;

/// One collection of the Neutron or Octavia API: all a resource declares.
pub struct Collection<T: Resource> {
    pub api: Api,
    /// The body's root key for one (`network`) and for the list (`networks`).
    pub one: &'static str,
    pub many: &'static str,
    /// The URL path segment (`security-groups` for `security_groups`).
    pub path: &'static str,
    /// Attributes it renders (besides `network::STANDARD_ATTRS`): what
    /// filters and sort keys may name.
    pub attrs: &'static [&'static str],
    /// Whether the caller sees it in lists.
    pub visible: fn(&Desired, &Auth, &T) -> bool,
    /// The one the caller asked for (404 if it may not see it).
    pub get: for<'s> fn(&'s Desired, &Auth, &str) -> Result<&'s T, ApiError>,
    pub render: fn(&App, &Desired, &Auth, &T) -> Map<String, Value>,
    /// `None`: creation is routed elsewhere.
    pub create: Option<Create<T>>,
    pub update: Update<T>,
    pub delete: Delete,
    /// Runs (after the query is found valid) before a list is read: Neutron
    /// gives the project its default security group.
    pub prepare_list: Option<PrepareList>,
}

/// Visible to its own project (and administrators).
pub fn project_scoped<T: Resource>(_: &Desired, auth: &Auth, x: &T) -> bool {
    auth.can_see(&x.meta().project_id)
}

/// A request to a collection, as the HTTP edge parsed it.
pub enum Command {
    List {
        query: Pairs,
        path: String,
    },
    Show {
        id: String,
        query: Pairs,
    },
    Create {
        body: Value,
    },
    Update {
        id: String,
        body: Value,
        if_match: Option<String>,
    },
    Delete {
        id: String,
        if_match: Option<String>,
        cascade: bool,
    },
}

impl<T: Resource> Collection<T> {
    /// Every item the caller sees, rendered.
    pub fn list(&self, app: &App, s: &Desired, auth: &Auth) -> Vec<Map<String, Value>> {
        T::table(s)
            .values()
            .filter(|x| (self.visible)(s, auth, x))
            .map(|x| (self.render)(app, s, auth, x))
            .collect()
    }

    pub fn show(
        &self,
        app: &App,
        s: &Desired,
        auth: &Auth,
        id: &str,
    ) -> Result<Map<String, Value>, ApiError> {
        Ok((self.render)(app, s, auth, (self.get)(s, auth, id)?))
    }

    fn list_body(
        &self,
        app: &App,
        items: Vec<Map<String, Value>>,
        q: &[(String, String)],
        asked: &str,
    ) -> Result<Value, ApiError> {
        self.api
            .list_body(app, self.many, self.path, self.attrs, items, q, asked)
    }

    /// The answer to a command of `auth`.
    pub fn execute(&self, app: &App, auth: &Auth, cmd: Command) -> Reply {
        let shown = |id: &str| -> Result<Value, ApiError> {
            let s = app.core.read();
            Ok(json!({ self.one: self.show(app, &s, auth, id)? }))
        };
        match cmd {
            Command::List { query, path } => {
                if let Some(prepare) = self.prepare_list {
                    // A list refused for its query must change nothing:
                    // check it (all but the marker, which needs the items)
                    // first.
                    let probe: Pairs = query
                        .iter()
                        .filter(|(k, _)| k != "marker")
                        .cloned()
                        .collect();
                    self.list_body(app, vec![], &probe, &path)?;
                    prepare(app, auth, &query)?;
                }
                let s = app.core.read();
                let items = self.list(app, &s, auth);
                Ok((StatusCode::OK, self.list_body(app, items, &query, &path)?))
            }
            Command::Show { id, query } => {
                let s = app.core.read();
                let item = network::select_fields(self.show(app, &s, auth, &id)?, &query);
                Ok((StatusCode::OK, json!({ self.one: item })))
            }
            Command::Create { body } => {
                if self.api == Api::Neutron && body.get(self.many).is_some() {
                    return Err(ApiError::bad_request(format!(
                        "Bulk creation of {} is not supported; create them one by one.",
                        self.many
                    )));
                }
                let create = self
                    .create
                    .ok_or_else(|| ApiError::internal("no generic creation"))?;
                let id = app.core.mutate(|s| id_of(create(s, auth, &body)))?;
                Ok((StatusCode::CREATED, shown(&id)?))
            }
            Command::Update { id, body, if_match } => {
                let id = app.core.mutate(|s| {
                    id_of(match &self.update {
                        Update::IfMatch(f) => {
                            f(s, auth, Edit::new(&id, &body).if_match(if_match.as_deref()))
                        }
                        Update::Plain(f) => f(s, auth, &id, &body),
                    })
                })?;
                Ok((StatusCode::OK, shown(&id)?))
            }
            Command::Delete {
                id,
                if_match,
                cascade,
            } => {
                app.core.mutate(|s| match &self.delete {
                    Delete::IfMatch(f) => f(s, auth, &id, if_match.as_deref()),
                    Delete::Plain(f) => f(s, auth, &id),
                    Delete::Cascade(f) => f(s, auth, &id, cascade),
                })?;
                Ok((StatusCode::NO_CONTENT, Value::Null))
            }
        }
    }

    /// Authenticates, parses the rest of the request (`parse`, after the
    /// caller is known: a stranger learns nothing of its body's faults),
    /// executes and renders.
    fn handle(
        &self,
        app: &App,
        h: &HeaderMap,
        parse: impl FnOnce() -> Result<Command, ApiError>,
    ) -> Response {
        self.api.respond((|| {
            let auth = authenticate(app, h)?;
            let cmd = parse()?;
            self.execute(app, &auth, cmd)
        })())
    }
}

fn id_of<T: Resource>(r: Made<T>) -> Made<String> {
    r.map(|(c, x)| (c, x.meta().id.clone()))
}

fn if_match(h: &HeaderMap) -> Option<String> {
    h.get("if-match")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Octavia's `?cascade=`: a boolean, absent false.
fn cascade(q: &[(String, String)]) -> Result<bool, ApiError> {
    match q
        .iter()
        .find(|(k, _)| k == "cascade")
        .map(|(_, v)| v.as_str())
    {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => Ok(false),
        Some(v) => Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute cascade. Value: '{v}'. Value should be a boolean."
        ))),
    }
}

type AppState = State<Arc<App>>;
/// A JSON body or why it is not one.
pub type Body = Result<Json<Value>, JsonRejection>;

/// The collection's two routes, `{prefix}/{path}` (list, and create when
/// it has one) and `{prefix}/{path}/{id}` (show, update, delete), as
/// method routers a caller may add to.
pub fn methods<T: Resource>(
    c: &'static Collection<T>,
) -> (MethodRouter<Arc<App>>, MethodRouter<Arc<App>>) {
    let list = move |State(app): AppState, h: HeaderMap, uri: Uri, Query(q): Query<Pairs>| async move {
        c.handle(&app, &h, || {
            Ok(Command::List {
                query: q,
                path: uri.path().to_owned(),
            })
        })
    };
    let mut many = get(list);
    if c.create.is_some() {
        many = many.post(
            move |State(app): AppState, h: HeaderMap, body: Body| async move {
                c.handle(&app, &h, || {
                    Ok(Command::Create {
                        body: json_body(body)?,
                    })
                })
            },
        );
    }
    let show = move |State(app): AppState,
                     h: HeaderMap,
                     Path(id): Path<String>,
                     Query(q): Query<Pairs>| async move {
        c.handle(&app, &h, || Ok(Command::Show { id, query: q }))
    };
    let update = move |State(app): AppState, h: HeaderMap, Path(id): Path<String>, body: Body| async move {
        c.handle(&app, &h, || {
            Ok(Command::Update {
                id,
                body: json_body(body)?,
                if_match: if_match(&h),
            })
        })
    };
    let delete = move |State(app): AppState,
                       h: HeaderMap,
                       Path(id): Path<String>,
                       Query(q): Query<Pairs>| async move {
        c.handle(&app, &h, || {
            let cascade = match c.delete {
                Delete::Cascade(_) => cascade(&q)?,
                _ => false,
            };
            Ok(Command::Delete {
                id,
                if_match: if_match(&h),
                cascade,
            })
        })
    };
    (many, get(show).put(update).delete(delete))
}

/// Routes the collection below `prefix` (see [`methods`]).
pub fn route<T: Resource>(
    r: Router<Arc<App>>,
    prefix: &str,
    c: &'static Collection<T>,
) -> Router<Arc<App>> {
    let (many, one) = methods(c);
    r.route(&format!("{prefix}/{}", c.path), many)
        .route(&format!("{prefix}/{}/{{id}}", c.path), one)
}

/// An authenticated read (200): `f` answers from the state for the caller.
pub fn read(
    api: Api,
    app: &App,
    h: &HeaderMap,
    f: impl FnOnce(&Desired, &Auth) -> Result<Value, ApiError>,
) -> Response {
    api.respond((|| {
        let auth = authenticate(app, h)?;
        Ok((StatusCode::OK, f(&app.core.read(), &auth)?))
    })())
}

/// An authenticated change without a body: `f` (inside `Core::mutate`)
/// returns the changes and the body answered with `status`.
pub fn write(
    api: Api,
    app: &App,
    h: &HeaderMap,
    status: StatusCode,
    f: impl FnOnce(&Desired, &Auth) -> Made<Value>,
) -> Response {
    api.respond((|| {
        let auth = authenticate(app, h)?;
        Ok((status, app.core.mutate(|s| f(s, &auth))?))
    })())
}

/// An authenticated change with a JSON body (a body that is not JSON gets
/// the API's error, not axum's plain-text rejection).
pub fn write_body(
    api: Api,
    app: &App,
    h: &HeaderMap,
    body: Body,
    status: StatusCode,
    f: impl FnOnce(&Desired, &Auth, &Value) -> Made<Value>,
) -> Response {
    api.respond((|| {
        let auth = authenticate(app, h)?;
        let body = json_body(body)?;
        Ok((status, app.core.mutate(|s| f(s, &auth, &body))?))
    })())
}

/// A project's quotas, the same four operations in both APIs.
pub struct Quotas {
    pub api: Api,
    pub list: fn(&Desired, &Auth) -> Result<Value, ApiError>,
    pub show: fn(&Desired, &Auth, &str) -> Result<Value, ApiError>,
    pub update: fn(&Desired, &Auth, &str, &Value) -> Made<Value>,
    /// What a successful update answers (Neutron 200, Octavia 202).
    pub updated: StatusCode,
    pub reset: fn(&Desired, &Auth, &str) -> Made<()>,
}

/// `{prefix}/quotas` (list) and `{prefix}/quotas/{project}` (show,
/// update, reset).
pub fn route_quotas(r: Router<Arc<App>>, prefix: &str, q: &'static Quotas) -> Router<Arc<App>> {
    let list =
        move |State(app): AppState, h: HeaderMap| async move { read(q.api, &app, &h, q.list) };
    let show = move |State(app): AppState, h: HeaderMap, Path(p): Path<String>| async move {
        read(q.api, &app, &h, |s, a| (q.show)(s, a, &p))
    };
    let update = move |State(app): AppState, h: HeaderMap, Path(p): Path<String>, body: Body| async move {
        write_body(q.api, &app, &h, body, q.updated, |s, a, b| {
            (q.update)(s, a, &p, b)
        })
    };
    let reset = move |State(app): AppState, h: HeaderMap, Path(p): Path<String>| async move {
        write(q.api, &app, &h, StatusCode::NO_CONTENT, |s, a| {
            (q.reset)(s, a, &p).map(|(c, ())| (c, Value::Null))
        })
    };
    r.route(&format!("{prefix}/quotas"), get(list)).route(
        &format!("{prefix}/quotas/{{project}}"),
        get(show).put(update).delete(reset),
    )
}

//! Neutron v2.0 logic: networks, subnets, ports, routers, quotas, security
//! groups and their rules. Each command validates its input the way Neutron
//! does (unknown attributes, wrong types, ranges, conflicts) against the
//! current `State` and returns the `Change`s to commit ([`Made`]);
//! `commit::Core::mutate` commits them atomically. Rendering to Neutron JSON,
//! filters and field selection live here too; the HTTP layer only routes
//! and extracts (an update arrives as an [`Edit`]).
//!
//! Every command takes the same course, through the shared steps here (and
//! `lbaas` uses them too): [`creating`] (write permission, the body, the
//! owner), or [`writable`] (write permission, the lookup that decides
//! visibility and ownership, `If-Match`) then [`update_attrs`] (read-only
//! attributes refused, the resource's own attributes, unknown attributes
//! refused) and [`updated`] (next revision, stored). This module never
//! commits, never reads HTTP (headers, query strings, paths) and never
//! renders a status line: it returns changes or an `ApiError`.

pub mod floating_ips;
pub mod ipam;
pub mod networks;
pub mod ports;
pub mod qos;
pub mod quotas;
pub mod routers;
pub mod security_groups;
pub mod subnets;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::{
    auth::Auth,
    error::ApiError,
    model::{now_unix, timestamp, Change, Meta},
    state::Resource,
    state::State,
};

/// What a command returns for `Core::mutate` to commit: the changes, and
/// what the caller answers with (the stored object, mostly).
pub type Made<T> = Result<(Vec<Change>, T), ApiError>;

/// An update as the API edge parsed it: which resource, the request's
/// body, and Neutron's `If-Match: revision_number=N` precondition.
#[derive(Clone, Copy, Debug)]
pub struct Edit<'a> {
    pub id: &'a str,
    pub body: &'a Value,
    pub if_match: Option<&'a str>,
}

impl<'a> Edit<'a> {
    /// An update of `id` with `body`, unconditional.
    pub fn new(id: &'a str, body: &'a Value) -> Edit<'a> {
        Edit {
            id,
            body,
            if_match: None,
        }
    }

    /// The same, only if the resource's revision matches `if_match`.
    pub fn if_match(self, if_match: Option<&'a str>) -> Edit<'a> {
        Edit { if_match, ..self }
    }
}

/// Device owner of router interface ports.
pub const OWNER_ROUTER_INTERFACE: &str = "network:router_interface";

/// A request's attribute map, consumed attribute by attribute; whatever is
/// left at [`Attrs::finish`] is unknown and rejected, as Neutron does.
pub struct Attrs<'a> {
    map: &'a Map<String, Value>,
    used: BTreeSet<String>,
}

fn type_error(key: &str, v: &Value, what: &str) -> ApiError {
    ApiError::invalid(format!(
        "Invalid input for {key}. Reason: '{v}' is not {what}."
    ))
}

impl<'a> Attrs<'a> {
    /// The object under `resource` in a body like `{"network": {...}}`.
    pub fn from_body(body: &'a Value, resource: &str) -> Result<Attrs<'a>, ApiError> {
        let top = body.as_object().ok_or_else(|| {
            ApiError::bad_request(format!(
                "Request body must be a JSON object with a '{resource}' key."
            ))
        })?;
        if let Some(extra) = top.keys().find(|k| *k != resource) {
            return Err(ApiError::bad_request(format!(
                "Unrecognized attribute(s) '{extra}' at the top level; expected '{resource}'."
            )));
        }
        let inner = top.get(resource).ok_or_else(|| {
            ApiError::bad_request(format!("Resource body required: missing '{resource}'."))
        })?;
        let map = inner.as_object().ok_or_else(|| {
            ApiError::bad_request(format!(
                "Invalid input: '{resource}' must be a JSON object."
            ))
        })?;
        Ok(Attrs {
            map,
            used: BTreeSet::new(),
        })
    }

    /// A bare attribute map (one entry of a bulk request).
    pub fn from_map(map: &'a Map<String, Value>) -> Attrs<'a> {
        Attrs {
            map,
            used: BTreeSet::new(),
        }
    }

    fn take(&mut self, key: &str) -> Option<&'a Value> {
        self.used.insert(key.to_owned());
        self.map.get(key)
    }

    pub fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// The attribute is present and null.
    pub fn is_null(&self, key: &str) -> bool {
        matches!(self.map.get(key), Some(Value::Null))
    }

    /// A string attribute (null is a type error).
    pub fn string(&mut self, key: &str, max: usize) -> Result<Option<String>, ApiError> {
        match self.take(key) {
            None => Ok(None),
            // Characters, not bytes, as Neutron's and Octavia's validators count.
            Some(Value::String(s)) if s.chars().count() <= max => Ok(Some(s.clone())),
            Some(Value::String(s)) => Err(ApiError::invalid(format!(
                "Invalid input for {key}. Reason: '{s}' exceeds maximum length of {max}."
            ))),
            Some(v) => Err(type_error(key, v, "a valid string")),
        }
    }

    /// A string that may be explicitly null: `Some(None)` for null.
    pub fn nullable_string(
        &mut self,
        key: &str,
        max: usize,
    ) -> Result<Option<Option<String>>, ApiError> {
        match self.map.get(key) {
            Some(Value::Null) => {
                self.used.insert(key.to_owned());
                Ok(Some(None))
            }
            _ => Ok(self.string(key, max)?.map(Some)),
        }
    }

    pub fn boolean(&mut self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            // Neutron's converter accepts the strings too.
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(v) => Err(type_error(key, v, "a valid boolean value")),
        }
    }

    pub fn integer(&mut self, key: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
        match self.take(key) {
            None => Ok(None),
            // An integral number written with a fraction (`5.0`) is an
            // integer, as for JSON Schema and for Neutron's int() converters.
            Some(v) => match v.as_i64().or_else(|| {
                v.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0)
                    .map(|f| f as i64)
            }) {
                Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
                Some(n) => Err(ApiError::invalid(format!(
                    "Invalid input for {key}. Reason: '{n}' is not in the range {min}..{max}."
                ))),
                None => Err(type_error(key, v, "an integer")),
            },
        }
    }

    /// A list attribute (null is a type error).
    pub fn list(&mut self, key: &str) -> Result<Option<&'a Vec<Value>>, ApiError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(v) => Err(type_error(key, v, "a list")),
        }
    }

    /// A list of strings.
    pub fn strings(&mut self, key: &str) -> Result<Option<Vec<String>>, ApiError> {
        match self.list(key)? {
            None => Ok(None),
            Some(items) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| type_error(key, v, "a list of strings"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
        }
    }

    /// Any value (callers check its shape).
    pub fn raw(&mut self, key: &str) -> Option<&'a Value> {
        self.take(key)
    }

    /// Rejects attributes nobody consumed.
    pub fn finish(self) -> Result<(), ApiError> {
        let unknown: Vec<&str> = self
            .map
            .keys()
            .filter(|k| !self.used.contains(*k))
            .map(String::as_str)
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(ApiError::bad_request(format!(
                "Unrecognized attribute(s) '{}'",
                unknown.join(", ")
            )))
        }
    }

    /// Neutron's `name` and `description` (at most 255 characters).
    pub fn names(&mut self) -> Result<(Option<String>, Option<String>), ApiError> {
        Ok((self.string("name", 255)?, self.string("description", 255)?))
    }

    /// [`Attrs::names`] into `meta`.
    pub fn rename(&mut self, meta: &mut Meta) -> Result<(), ApiError> {
        let (name, description) = self.names()?;
        if let Some(v) = name {
            meta.name = v;
        }
        if let Some(v) = description {
            meta.description = v;
        }
        Ok(())
    }

    /// Octavia's `name` (and `description`, when it has one): null clears
    /// them.
    pub fn rename_nullable(&mut self, meta: &mut Meta, description: bool) -> Result<(), ApiError> {
        if let Some(v) = self.nullable_string("name", 255)? {
            meta.name = v.unwrap_or_default();
        }
        if description {
            if let Some(v) = self.nullable_string("description", 255)? {
                meta.description = v.unwrap_or_default();
            }
        }
        Ok(())
    }

    /// Attributes that may only be set at creation: rejected on update.
    pub fn reject_read_only(&self, keys: &[&str]) -> Result<(), ApiError> {
        match keys.iter().find(|k| self.map.contains_key(**k)) {
            Some(k) => Err(ApiError::bad_request(format!(
                "Cannot update read-only attribute {k}"
            ))),
            None => Ok(()),
        }
    }
}

/// One entry of a list attribute that must be a dictionary with only the
/// `allowed` keys (allocation pools, host routes, fixed IPs, address pairs).
pub fn dict<'a>(
    field: &str,
    v: &'a Value,
    allowed: &[&str],
) -> Result<&'a Map<String, Value>, ApiError> {
    let o = v.as_object().ok_or_else(|| {
        ApiError::invalid(format!(
            "Invalid input for {field}. Reason: '{v}' is not a dictionary."
        ))
    })?;
    if let Some(k) = o.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::invalid(format!(
            "Invalid input for {field}. Reason: unrecognized key '{k}' in {v}."
        )));
    }
    Ok(o)
}

/// The owning project of a new resource: the caller's, or (admins only)
/// the one named by `project_id`/`tenant_id`, which must agree.
pub fn owner(auth: &Auth, attrs: &mut Attrs<'_>, state: &State) -> Result<String, ApiError> {
    let p = attrs.string("project_id", 255)?;
    let t = attrs.string("tenant_id", 255)?;
    let wanted = match (p, t) {
        (Some(p), Some(t)) if p != t => {
            return Err(ApiError::bad_request(format!(
                "'project_id' {p} and 'tenant_id' {t} do not match"
            )))
        }
        (Some(p), _) | (None, Some(p)) => p,
        (None, None) => return Ok(auth.project_id.clone()),
    };
    if wanted != auth.project_id {
        if !auth.is_admin() {
            return Err(ApiError::forbidden(
                "Only an administrator may create resources for another project.",
            ));
        }
        if !state.projects.contains_key(&wanted) {
            return Err(ApiError::not_found("project", &wanted));
        }
    }
    Ok(wanted)
}

/// The course every create opens with: the caller may write, the body is
/// the object under `root`, and the new resource's project is [`owner`]'s.
pub fn creating<'b>(
    state: &State,
    auth: &Auth,
    body: &'b Value,
    root: &str,
) -> Result<(Attrs<'b>, String), ApiError> {
    require_write(auth)?;
    let mut a = Attrs::from_body(body, root)?;
    let project = owner(auth, &mut a, state)?;
    Ok((a, project))
}

/// 403 unless the caller may write.
pub fn require_write(auth: &Auth) -> Result<(), ApiError> {
    if auth.can_write() {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "The reader role may only read; this request changes resources.",
        ))
    }
}

/// Fresh bookkeeping for a new resource.
pub fn new_meta(project_id: String, name: Option<String>, description: Option<String>) -> Meta {
    let now = timestamp(now_unix());
    Meta {
        id: uuid::Uuid::new_v4().to_string(),
        project_id,
        name: name.unwrap_or_default(),
        description: description.unwrap_or_default(),
        revision_number: 1,
        created_at: now.clone(),
        updated_at: now,
    }
}

/// Marks a resource changed: next revision, new `updated_at`.
pub fn touch(meta: &mut Meta) {
    meta.revision_number += 1;
    meta.updated_at = timestamp(now_unix());
}

/// Honours `If-Match: revision_number=N` (412 when it does not hold).
pub fn check_if_match(if_match: Option<&str>, meta: &Meta) -> Result<(), ApiError> {
    let Some(h) = if_match else { return Ok(()) };
    for part in h.split(',') {
        let part = part.trim();
        let Some(n) = part.strip_prefix("revision_number=") else {
            return Err(ApiError::bad_request(format!(
                "If-Match must be 'revision_number=N', got '{part}'"
            )));
        };
        let n: u64 = n.parse().map_err(|_| {
            ApiError::bad_request(format!("If-Match revision '{n}' is not a number"))
        })?;
        if n == meta.revision_number {
            return Ok(());
        }
    }
    Err(ApiError::precondition_failed(format!(
        "Constraint {h} does not match the current revision_number {} of {}",
        meta.revision_number, meta.id
    )))
}

/// The resource `id` of `T`'s table if the caller may see it (`visible`);
/// `missing` otherwise (other projects' resources are not disclosed).
pub fn find<'s, T: Resource>(
    state: &'s State,
    id: &str,
    visible: impl FnOnce(&T) -> bool,
    missing: impl FnOnce() -> ApiError,
) -> Result<&'s T, ApiError> {
    T::table(state)
        .get(id)
        .filter(|x| visible(x))
        .ok_or_else(missing)
}

/// [`find`] of a resource only its own project (and administrators) see.
pub fn find_own<'s, T: Resource>(
    state: &'s State,
    auth: &Auth,
    id: &str,
    missing: impl FnOnce() -> ApiError,
) -> Result<&'s T, ApiError> {
    find(
        state,
        id,
        |x: &T| auth.can_see(&x.meta().project_id),
        missing,
    )
}

/// A resource the caller sees but may only change if it owns it (a shared
/// network or QoS policy): 403 with `refusal` otherwise.
pub fn owned<'s, T: Resource>(
    x: &'s T,
    auth: &Auth,
    refusal: impl FnOnce() -> String,
) -> Result<&'s T, ApiError> {
    if auth.can_see(&x.meta().project_id) {
        Ok(x)
    } else {
        Err(ApiError::forbidden(refusal()))
    }
}

/// The course every change of an existing resource opens with: the caller
/// may write, `found` gives the resource (deciding visibility and
/// ownership), and `If-Match: revision_number=N` holds.
pub fn writable<'s, T: Resource>(
    auth: &Auth,
    found: impl FnOnce() -> Result<&'s T, ApiError>,
    if_match: Option<&str>,
) -> Result<&'s T, ApiError> {
    require_write(auth)?;
    let x = found()?;
    check_if_match(if_match, x.meta())?;
    Ok(x)
}

/// An update's body: the object under `root`, in which `read_only`
/// attributes are refused first; `apply` reads the attributes it knows
/// (returning what the caller checks once the body is read); attributes
/// nobody read are refused last.
pub fn update_attrs<'b, P>(
    body: &'b Value,
    root: &str,
    read_only: &[&str],
    apply: impl FnOnce(&mut Attrs<'b>) -> Result<P, ApiError>,
) -> Result<P, ApiError> {
    let mut a = Attrs::from_body(body, root)?;
    a.reject_read_only(read_only)?;
    let p = apply(&mut a)?;
    a.finish()?;
    Ok(p)
}

/// A changed resource stored after `changes`, at its next revision.
pub fn updated<T: Resource>(mut x: T, mut changes: Vec<Change>) -> (Vec<Change>, T) {
    touch(x.meta_mut());
    changes.push(x.clone().put());
    (changes, x)
}

/// 409 `kind` with `message` when `in_use`.
pub fn refuse_in_use(
    in_use: bool,
    kind: &str,
    message: impl FnOnce() -> String,
) -> Result<(), ApiError> {
    if in_use {
        Err(ApiError::conflict(kind, message()))
    } else {
        Ok(())
    }
}

/// Attributes [`render_meta`] renders for every resource.
pub const STANDARD_ATTRS: [&str; 9] = [
    "id",
    "name",
    "description",
    "project_id",
    "tenant_id",
    "revision_number",
    "created_at",
    "updated_at",
    "tags",
];

/// Standard attributes every resource renders.
pub fn render_meta(m: &Meta, o: &mut Map<String, Value>) {
    o.insert("id".into(), m.id.clone().into());
    o.insert("name".into(), m.name.clone().into());
    o.insert("description".into(), m.description.clone().into());
    o.insert("project_id".into(), m.project_id.clone().into());
    o.insert("tenant_id".into(), m.project_id.clone().into());
    o.insert("revision_number".into(), m.revision_number.into());
    o.insert("created_at".into(), m.created_at.clone().into());
    o.insert("updated_at".into(), m.updated_at.clone().into());
    o.insert("tags".into(), Value::Array(Vec::new()));
}

/// Query parameters that are not attribute filters.
const NON_FILTERS: [&str; 6] = [
    "fields",
    "limit",
    "marker",
    "sort_key",
    "sort_dir",
    "page_reverse",
];

fn matches(v: &Value, wanted: &str) -> bool {
    match v {
        Value::String(s) => s == wanted,
        Value::Bool(b) => wanted.eq_ignore_ascii_case(if *b { "true" } else { "false" }),
        Value::Number(n) => n.to_string() == wanted,
        Value::Null => wanted.is_empty() || wanted == "None",
        Value::Array(items) => items.iter().any(|i| match i {
            // fixed_ips=ip_address=10.0.0.3 / fixed_ips=subnet_id=X
            Value::Object(o) => wanted
                .split_once('=')
                .is_some_and(|(k, want)| o.get(k).and_then(Value::as_str) == Some(want)),
            other => matches(other, wanted),
        }),
        Value::Object(_) => false,
    }
}

/// Applies Neutron list semantics to rendered resources: attribute filters
/// (repeated keys OR'ed), `sort_key`/`sort_dir`, `marker`/`limit` pagination
/// (returns the marker of a next page) and `fields`.
/// `known`: the attributes the resource renders (filters and `sort_key`
/// must be among them, also when the list is empty).
pub fn list_response(
    collection: &str,
    items: Vec<Map<String, Value>>,
    query: &[(String, String)],
    base_url: &str,
    known: &[&str],
) -> Result<Value, ApiError> {
    let mut filters: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut fields = Vec::new();
    let (mut limit, mut marker, mut sort_key, mut sort_desc) = (None, None, "id".to_owned(), false);
    for (k, v) in query {
        match k.as_str() {
            "fields" => fields.push(v.as_str()),
            "limit" => {
                limit = Some(v.parse::<usize>().map_err(|_| {
                    ApiError::bad_request(format!("Bad limit request: '{v}' is not an integer"))
                })?)
            }
            "marker" => marker = Some(v.as_str()),
            "sort_key" => sort_key = v.clone(),
            "sort_dir" => match v.as_str() {
                "asc" => sort_desc = false,
                "desc" => sort_desc = true,
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "sort_dir must be asc or desc, got '{v}'"
                    )))
                }
            },
            _ if NON_FILTERS.contains(&k.as_str()) => {}
            _ => filters.entry(k.as_str()).or_default().push(v.as_str()),
        }
    }
    let known = |k: &str| known.contains(&k) || STANDARD_ATTRS.contains(&k);
    if let Some(bad) = filters.keys().find(|k| !known(k)) {
        return Err(ApiError::bad_request(format!(
            "[{bad}] is invalid attribute for filtering"
        )));
    }
    if !known(&sort_key) {
        return Err(ApiError::bad_request(format!(
            "{sort_key} is an invalid attribute for sort_key"
        )));
    }
    let mut out: Vec<Map<String, Value>> = items
        .into_iter()
        .filter(|item| {
            filters.iter().all(|(k, vals)| {
                item.get(*k)
                    .is_some_and(|v| vals.iter().any(|w| matches(v, w)))
            })
        })
        .collect();
    out.sort_by(|a, b| {
        let o = compare(a.get(&sort_key), b.get(&sort_key))
            .then_with(|| a["id"].to_string().cmp(&b["id"].to_string()));
        if sort_desc {
            o.reverse()
        } else {
            o
        }
    });
    if let Some(m) = marker {
        let pos = out
            .iter()
            .position(|i| i.get("id").and_then(Value::as_str) == Some(m))
            .ok_or_else(|| ApiError::not_found("marker", m))?;
        out.drain(..=pos);
    }
    let mut next = None;
    if let Some(l) = limit.filter(|l| *l > 0) {
        if out.len() > l {
            out.truncate(l);
            next = out
                .last()
                .and_then(|i| i.get("id"))
                .and_then(Value::as_str)
                .map(str::to_owned);
        }
    }
    if !fields.is_empty() {
        for item in &mut out {
            item.retain(|k, _| fields.contains(&k.as_str()));
        }
    }
    let mut body = Map::new();
    body.insert(
        collection.into(),
        Value::Array(out.into_iter().map(Value::Object).collect()),
    );
    if let (Some(next), Some(l)) = (next, limit) {
        // The query again, percent-encoded (values are the client's, any
        // text), with the next page's limit and marker.
        let q = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(
                query
                    .iter()
                    .filter(|(k, _)| k != "marker" && k != "limit")
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .append_pair("limit", &l.to_string())
            .append_pair("marker", &next)
            .finish();
        body.insert(
            format!("{collection}_links"),
            serde_json::json!([{"rel": "next", "href": format!("{base_url}/v2.0/{collection}?{q}")}]),
        );
    }
    Ok(Value::Object(body))
}

/// Orders attribute values: numbers numerically, everything else by text.
fn compare(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    match (a.and_then(Value::as_f64), b.and_then(Value::as_f64)) {
        (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
        _ => {
            let text = |v: Option<&Value>| {
                v.map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| v.to_string())
                })
                .unwrap_or_default()
            };
            text(a).cmp(&text(b))
        }
    }
}

/// `fields` applied to a single rendered resource.
pub fn select_fields(
    mut item: Map<String, Value>,
    query: &[(String, String)],
) -> Map<String, Value> {
    let fields: Vec<&str> = query
        .iter()
        .filter(|(k, _)| k == "fields")
        .map(|(_, v)| v.as_str())
        .collect();
    if !fields.is_empty() {
        item.retain(|k, _| fields.contains(&k.as_str()));
    }
    item
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KNOWN_TEST: &[&str] = &["id", "name", "admin_state_up", "fixed_ips"];

    fn items() -> Vec<Map<String, Value>> {
        [
            json!({"id": "a", "name": "x", "admin_state_up": true, "fixed_ips": [{"subnet_id": "s1", "ip_address": "10.0.0.3"}]}),
            json!({"id": "b", "name": "y", "admin_state_up": false, "fixed_ips": []}),
            json!({"id": "c", "name": "x", "admin_state_up": true, "fixed_ips": []}),
        ]
        .into_iter()
        .map(|v| v.as_object().unwrap().clone())
        .collect()
    }

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    /// `list_response` of `items` (the three above when `None`).
    fn list(items: Option<Vec<Map<String, Value>>>, pairs: &[(&str, &str)]) -> Result<Value, u16> {
        let items = items.unwrap_or_else(self::items);
        list_response("ports", items, &q(pairs), "http://h", KNOWN_TEST).map_err(|e| e.status)
    }

    #[test]
    fn filters_fields_pages() {
        let ports = |pairs: &[(&str, &str)]| list(None, pairs).unwrap()["ports"].clone();
        assert_eq!(ports(&[("name", "x")]).as_array().unwrap().len(), 2);
        let both = ports(&[("name", "x"), ("name", "y")]);
        assert_eq!(both.as_array().unwrap().len(), 3);
        assert_eq!(ports(&[("admin_state_up", "False")])[0]["id"], "b");
        assert_eq!(ports(&[("fixed_ips", "ip_address=10.0.0.3")])[0]["id"], "a");
        let fields = ports(&[("fields", "id"), ("fields", "name")]);
        assert_eq!(fields[0].as_object().unwrap().len(), 2);
        let r = list(None, &[("limit", "2")]).unwrap();
        assert_eq!(r["ports"].as_array().unwrap().len(), 2);
        assert!(r["ports_links"][0]["href"]
            .as_str()
            .unwrap()
            .ends_with("limit=2&marker=b"));
        // The next link carries the query percent-encoded (any text a
        // client sent stays a valid URI).
        let r = list(None, &[("limit", "2"), ("fields", "é &x=1\u{1f}")]).unwrap();
        let href = r["ports_links"][0]["href"].as_str().unwrap();
        assert!(
            href.ends_with("?fields=%C3%A9+%26x%3D1%1F&limit=2&marker=b"),
            "{href}"
        );
        let r = list(None, &[("limit", "2"), ("marker", "b")]).unwrap();
        assert_eq!(r["ports"][0]["id"], "c");
        assert!(r.get("ports_links").is_none());
        assert_eq!(list(None, &[("colour", "red")]), Err(400));
        assert_eq!(list(None, &[("limit", "x")]), Err(400));
    }

    #[test]
    fn empty_lists_still_validate_and_numbers_sort_numerically() {
        assert_eq!(list(Some(vec![]), &[("colour", "red")]), Err(400));
        assert_eq!(list(Some(vec![]), &[("sort_key", "colour")]), Err(400));
        let items: Vec<Map<String, Value>> = [9, 10, 2]
            .iter()
            .map(|n| {
                json!({"id": format!("i{n}"), "revision_number": n})
                    .as_object()
                    .unwrap()
                    .clone()
            })
            .collect();
        let r = list(Some(items), &[("sort_key", "revision_number")]).unwrap();
        let order: Vec<u64> = r["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["revision_number"].as_u64().unwrap())
            .collect();
        assert_eq!(order, vec![2, 9, 10]);
    }

    #[test]
    fn attrs_reject_unknown_and_bad_types() {
        let body = json!({"network": {"name": "n", "colour": "red"}});
        let mut a = Attrs::from_body(&body, "network").unwrap();
        assert_eq!(a.string("name", 255).unwrap().as_deref(), Some("n"));
        assert_eq!(
            a.finish().unwrap_err().message,
            "Unrecognized attribute(s) 'colour'"
        );
        let body = json!({"network": {"admin_state_up": "yes"}});
        let mut a = Attrs::from_body(&body, "network").unwrap();
        assert_eq!(a.boolean("admin_state_up").unwrap_err().status, 400);
        assert!(Attrs::from_body(&json!([]), "network").is_err());
        assert!(Attrs::from_body(&json!({"net": {}}), "network").is_err());
        assert!(Attrs::from_body(&json!({"network": 5}), "network").is_err());
    }

    #[test]
    fn if_match() {
        let m = new_meta("p".into(), None, None);
        assert!(check_if_match(None, &m).is_ok());
        assert!(check_if_match(Some("revision_number=1"), &m).is_ok());
        assert_eq!(
            check_if_match(Some("revision_number=2"), &m)
                .unwrap_err()
                .status,
            412
        );
        assert_eq!(check_if_match(Some("etag"), &m).unwrap_err().status, 400);
    }
}

#[cfg(test)]
mod logic_tests;
#[cfg(test)]
pub(crate) mod testkit;

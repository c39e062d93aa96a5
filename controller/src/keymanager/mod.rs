//! The Key Manager (a Barbican v1 subset): secrets, whose payloads are
//! sealed at rest (`kek`), and containers of named secret references, as
//! Octavia's TLS listeners use them; and [`certificate`], how the load
//! balancer side reads a certificate and its key.
//!
//! Each command validates against the state the way Barbican does (its
//! messages and statuses) and returns the changes; a secret or container
//! of another project is not found (404), whatever the caller's roles,
//! except for administrators. This module never sees HTTP and never
//! renders a plaintext payload except through [`payload`] and
//! [`certificate`].

pub mod certificate;
#[cfg(test)]
mod tests;

pub use certificate::certificate;

use base64ct::{Base64, Encoding as _};
use serde_json::{json, Map, Value};

use crate::{
    auth::Auth,
    error::ApiError,
    model::{
        now_unix, timestamp, Change, ContainerSecretRef, Kind, Object, Secret, SecretContainer,
    },
    network::Made,
    state::State,
};

/// The largest payload stored, in bytes after any base64 decoding.
/// Barbican's default is 10,000 bytes; PKCS#12 bundles with a chain are
/// often larger, so 64 KiB here.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// Content types a payload may be stored and read as (Barbican's list).
pub const SUPPORTED: [&str; 5] = [
    "text/plain",
    "text/plain;charset=utf-8",
    "text/plain; charset=utf-8",
    "application/octet-stream",
    "application/pkcs8",
];
const PLAIN_TEXT: [&str; 3] = [
    "text/plain",
    "text/plain;charset=utf-8",
    "text/plain; charset=utf-8",
];
const SECRET_TYPES: [&str; 6] = [
    "symmetric",
    "passphrase",
    "private",
    "public",
    "certificate",
    "opaque",
];
const CONTAINER_TYPES: [&str; 3] = ["generic", "rsa", "certificate"];

/// Barbican's rendering of a list of strings (Python's `str(list)`).
fn py_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("'{s}'")).collect();
    format!("[{}]", quoted.join(", "))
}

/// Barbican's `InvalidObject`: 400 with its message.
fn invalid(schema: &str, reason: &str, property: &str) -> ApiError {
    ApiError::new(
        400,
        "InvalidObject",
        format!(
            "Provided object does not match schema '{schema}': {reason}. Invalid property: '{property}'"
        ),
    )
}

pub fn too_large() -> ApiError {
    ApiError::new(
        413,
        "LimitExceeded",
        "Provided information too large to process",
    )
}

/// Barbican's policy refusal of a write by a reader.
fn not_allowed(operation: &str) -> ApiError {
    ApiError::forbidden(format!(
        "{operation} attempt not allowed - please review your user/project privileges"
    ))
}

/// The normalized (internal) form of a supported content type.
pub fn normalize(content_type: &str) -> Option<&'static str> {
    let parts: Vec<String> = content_type
        .split(';')
        .map(|p| p.trim().to_ascii_lowercase())
        .collect();
    if let Some(charset) = parts.get(1) {
        let (_, value) = charset.split_once('=')?;
        if value.trim() != "utf-8" {
            return None;
        }
    }
    match parts[0].as_str() {
        "text/plain" => Some("text/plain"),
        "application/octet-stream" if parts.len() == 1 => Some("application/octet-stream"),
        "application/pkcs8" if parts.len() == 1 => Some("application/pkcs8"),
        _ => None,
    }
}

/// Associated data binding a sealed payload to its secret.
pub fn aad(s: &Secret) -> String {
    format!("{}:{}", s.id, s.project_id)
}

/// Every stored sealed payload, as `kek::load_or_create` checks them.
pub fn sealed_payloads(state: &State) -> Vec<(&str, String, &crate::model::Sealed)> {
    state
        .secrets
        .values()
        .filter_map(|s| s.sealed.as_ref().map(|x| (s.id.as_str(), aad(s), x)))
        .collect()
}

fn expired(s: &Secret, now: u64) -> bool {
    s.expiration_unix.is_some_and(|e| e <= now)
}

/// Unix seconds of an ISO 8601 / RFC 3339 date-time (`2027-01-02T03:04:05`,
/// optional fraction, `Z` or `±HH:MM`; no zone: UTC).
pub fn parse_time(s: &str) -> Option<u64> {
    let s = s.trim();
    let (date, time) = s.split_once(['T', ' '])?;
    let d: Vec<i64> = date
        .split('-')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [y, mo, da] = d[..] else { return None };
    let (clock, offset) = match time.find(['Z', 'z', '+', '-']) {
        Some(i) => (&time[..i], &time[i..]),
        None => (time, ""),
    };
    let clock = clock.split('.').next()?;
    let c: Vec<i64> = clock
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let (h, mi, se) = match c[..] {
        [h, mi] => (h, mi, 0),
        [h, mi, se] => (h, mi, se),
        _ => return None,
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let off = match offset {
        "" | "Z" | "z" => 0,
        o => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let (oh, om) = o[1..].split_once(':').unwrap_or((&o[1..], "0"));
            sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60)
        }
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + mi * 60 + se - off).ok()
}

// ------------------------------------------------------------------ secrets

/// The secret `id` as `auth` may see it (404 otherwise, as Barbican words it).
pub fn secret<'s>(state: &'s State, auth: &Auth, id: &str) -> Result<&'s Secret, ApiError> {
    if uuid::Uuid::parse_str(id).is_err() {
        return Err(ApiError::new(
            404,
            "NotFound",
            "Not Found. Provided secret id is invalid.",
        ));
    }
    state
        .secrets
        .get(id)
        .filter(|s| auth.can_see(&s.project_id) && !expired(s, now_unix()))
        .ok_or_else(|| ApiError::new(404, "NotFound", "Secret not found."))
}

/// A string attribute of a body: absent/null is None; anything else than
/// a string of at most `max` characters is refused. Strings are trimmed
/// (Barbican strips every string of a body).
fn string_attr(
    body: &Map<String, Value>,
    schema: &str,
    key: &str,
    max: usize,
    nullable: bool,
) -> Result<Option<String>, ApiError> {
    match body.get(key) {
        None => Ok(None),
        Some(Value::Null) if nullable => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= max => Ok(Some(s.trim().to_owned())),
        Some(Value::String(s)) => Err(invalid(schema, &format!("'{s}' is too long"), key)),
        Some(v) => Err(invalid(
            schema,
            &format!("{v} is not of type 'string'"),
            key,
        )),
    }
}

fn enum_attr(
    body: &Map<String, Value>,
    schema: &str,
    key: &str,
    allowed: &[&str],
) -> Result<Option<String>, ApiError> {
    let v = string_attr(body, schema, key, 255, false)?;
    match v {
        Some(x) if !allowed.contains(&x.as_str()) => Err(invalid(
            schema,
            &format!("'{x}' is not one of {}", py_list(allowed)),
            key,
        )),
        v => Ok(v),
    }
}

/// Decodes base64 as Barbican accepts it (whitespace ignored).
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let compact: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    Base64::decode_vec(&compact).ok()
}

/// Seals `plaintext` into `s` with the state's key.
fn seal_into(state: &State, s: &mut Secret, plaintext: &[u8]) -> Result<(), ApiError> {
    let kek = state.secret_key.as_ref().ok_or_else(|| {
        ApiError::internal("the key manager has no key-encryption key; secrets cannot be stored")
    })?;
    s.sealed = Some(kek.seal(plaintext, &aad(s)));
    Ok(())
}

/// POST /v1/secrets: a secret, with its payload (one step) or without
/// (then PUT its payload once).
pub fn create_secret(state: &State, auth: &Auth, body: &Value) -> Made<Secret> {
    if !auth.can_write() {
        return Err(not_allowed("Secret creation"));
    }
    const S: &str = "Secret";
    let body = body
        .as_object()
        .ok_or_else(|| invalid(S, &format!("{body} is not of type 'object'"), "None"))?;
    let name = string_attr(body, S, "name", 255, true)?;
    let algorithm = string_attr(body, S, "algorithm", 255, false)?;
    let mode = string_attr(body, S, "mode", 255, false)?;
    let bit_length = match body.get("bit_length") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(b) if (1..=32_767).contains(&b) => Some(b),
            _ => {
                return Err(invalid(
                    S,
                    &format!("{n} is less than the minimum of 1"),
                    "bit_length",
                ))
            }
        },
        Some(v) => {
            return Err(invalid(
                S,
                &format!("{v} is not of type 'integer'"),
                "bit_length",
            ))
        }
    };
    let secret_type =
        enum_attr(body, S, "secret_type", &SECRET_TYPES)?.unwrap_or_else(|| "opaque".into());
    let encoding = enum_attr(body, S, "payload_content_encoding", &["base64"])?;
    let content_type = string_attr(body, S, "payload_content_type", 255, true)?;
    let payload = match body.get("payload") {
        None => None,
        Some(Value::String(p)) => Some(p.clone()),
        Some(v) => {
            return Err(invalid(
                S,
                &format!("{v} is not of type 'string'"),
                "payload",
            ))
        }
    };
    let now = now_unix();
    let (expiration, expiration_unix) = match string_attr(body, S, "expiration", 255, false)? {
        Some(e) if !e.is_empty() => {
            let t = parse_time(&e)
                .ok_or_else(|| invalid(S, "Invalid date for 'expiration'", "expiration"))?;
            if t <= now {
                return Err(invalid(
                    S,
                    "'expiration' is before current time",
                    "expiration",
                ));
            }
            (Some(e), Some(t))
        }
        _ => (None, None),
    };
    let mut plaintext = None;
    let mut stored_type = None;
    if let Some(p) = payload {
        let ct = content_type.as_deref().ok_or_else(|| {
            invalid(
                S,
                "If 'payload' is supplied, 'payload_content_type' must also be supplied.",
                "payload_content_type",
            )
        })?;
        let normalized = normalize(ct).ok_or_else(|| {
            invalid(
                S,
                &format!("payload_content_type is not one of {}", py_list(&SUPPORTED)),
                "payload_content_type",
            )
        })?;
        let text = normalized == "text/plain";
        if text != encoding.is_none() {
            let supported = if text {
                "None".to_owned()
            } else {
                py_list(&["base64", "binary"])
            };
            return Err(invalid(
                S,
                &format!("payload_content_encoding is not one of {supported}"),
                "payload_content_encoding",
            ));
        }
        if p.len() > MAX_PAYLOAD * 4 / 3 + 4 {
            return Err(too_large());
        }
        let p = p.trim();
        if p.is_empty() {
            return Err(invalid(
                S,
                "If 'payload' specified, must be non empty",
                "payload",
            ));
        }
        let bytes = if text {
            p.as_bytes().to_vec()
        } else {
            decode_base64(p).ok_or_else(|| {
                invalid(S, "Invalid payload for payload_content_encoding", "payload")
            })?
        };
        if bytes.len() > MAX_PAYLOAD {
            return Err(too_large());
        }
        plaintext = Some(bytes);
        stored_type = Some(normalized.to_owned());
    } else if body.contains_key("payload_content_type") {
        return Err(invalid(
            S,
            "payload must be provided when payload_content_type is specified",
            "payload",
        ));
    }
    let ts = timestamp(now);
    let mut s = Secret {
        id: uuid::Uuid::new_v4().to_string(),
        project_id: auth.project_id.clone(),
        creator_id: auth.user_id.clone(),
        name,
        secret_type,
        algorithm,
        bit_length,
        mode,
        expiration,
        expiration_unix,
        created: ts.clone(),
        updated: ts,
        content_type: stored_type,
        sealed: None,
    };
    if let Some(p) = plaintext {
        seal_into(state, &mut s, &p)?;
    }
    Ok((vec![Change::Put(Object::Secret(s.clone()))], s))
}

/// The media type of a PUT body as webob reads it (parameters dropped).
fn media_type(content_type: Option<&str>) -> &str {
    content_type
        .and_then(|c| c.split(';').next())
        .map(str::trim)
        .unwrap_or("")
}

/// PUT /v1/secrets/{id}: the payload of a secret created without one.
pub fn put_payload(
    state: &State,
    auth: &Auth,
    id: &str,
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    body: &[u8],
) -> Made<()> {
    let current = secret(state, auth, id)?;
    if !auth.can_write() {
        return Err(not_allowed("Secret update"));
    }
    let media = media_type(content_type);
    if !["application/octet-stream", "text/plain"].contains(&media) {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            "Unexpected content type. Expected content types are: ['application/octet-stream', 'text/plain']",
        ));
    }
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "Secret update issue seen - No data supplied to process..",
        ));
    }
    if body.len() > MAX_PAYLOAD * 4 / 3 + 4 {
        return Err(ApiError::new(
            413,
            "LimitExceeded",
            "Secret update issue seen - Provided information too large to process.",
        ));
    }
    if current.sealed.is_some() {
        return Err(ApiError::conflict(
            "Conflict",
            "Secret already has data, cannot modify it.",
        ));
    }
    let base64 = content_encoding.is_some_and(|e| e.trim().eq_ignore_ascii_case("base64"));
    let plaintext = if base64 && media != "text/plain" {
        std::str::from_utf8(body)
            .ok()
            .and_then(decode_base64)
            .ok_or_else(|| {
                ApiError::bad_request("Secret update issue seen - Unable to decode request data.")
            })?
    } else {
        body.to_vec()
    };
    if plaintext.len() > MAX_PAYLOAD {
        return Err(ApiError::new(
            413,
            "LimitExceeded",
            "Secret update issue seen - Provided information too large to process.",
        ));
    }
    let mut s = current.clone();
    s.content_type = Some(media.to_owned());
    s.updated = timestamp(now_unix());
    seal_into(state, &mut s, &plaintext)?;
    Ok((vec![Change::Put(Object::Secret(s))], ()))
}

/// GET /v1/secrets/{id}/payload: the plaintext as `accept` asks (Barbican:
/// none means `application/octet-stream`, `*/*` the stored type), and the
/// content type to answer with.
pub fn payload(
    state: &State,
    auth: &Auth,
    id: &str,
    accept: Option<&str>,
) -> Result<(String, Vec<u8>), ApiError> {
    let s = secret(state, auth, id)?;
    let (Some(sealed), Some(stored)) = (&s.sealed, &s.content_type) else {
        return Err(ApiError::new(
            404,
            "NotFound",
            "Not Found. Sorry but your secret has no payload.",
        ));
    };
    let accept = match accept.map(str::trim) {
        None | Some("") => "application/octet-stream",
        Some("*/*") => stored.as_str(),
        Some(a) => a,
    };
    let wrong = || {
        ApiError::new(
            406,
            "NotAcceptable",
            "Secret payload retrieval issue seen - Wrong payload content-type.",
        )
    };
    if normalize(accept).is_none() {
        return Err(wrong());
    }
    let kek = state.secret_key.as_ref().ok_or_else(|| {
        ApiError::internal("the key manager has no key-encryption key; secrets cannot be read")
    })?;
    let plaintext = kek.open(sealed, &aad(s)).map_err(|e| {
        tracing::error!(secret = %s.id, error = %e, "a stored secret does not open");
        ApiError::internal(
            "Secret payload retrieval failure seen - please contact site administrator.",
        )
    })?;
    if PLAIN_TEXT.contains(&accept) && std::str::from_utf8(&plaintext).is_err() {
        return Err(wrong());
    }
    Ok((accept.to_owned(), plaintext))
}

/// DELETE /v1/secrets/{id}. As Barbican, a secret named by containers may
/// be deleted: the containers lose that reference.
pub fn delete_secret(state: &State, auth: &Auth, id: &str) -> Made<()> {
    let s = secret(state, auth, id)?;
    if !auth.can_write() {
        return Err(not_allowed("Secret deletion"));
    }
    let mut changes = vec![Change::Delete(Kind::Secret, s.id.clone())];
    for c in state.secret_containers.values() {
        if c.secret_refs.iter().any(|r| r.secret_id == s.id) {
            let mut c = c.clone();
            c.secret_refs.retain(|r| r.secret_id != s.id);
            changes.push(Change::Put(Object::SecretContainer(c)));
        }
    }
    Ok((changes, ()))
}

/// The secrets of the caller's project matching `q` (`name`, `alg`,
/// `mode`, `bits`, `secret_type`), oldest first.
pub fn list_secrets<'s>(state: &'s State, auth: &Auth, q: &[(String, String)]) -> Vec<&'s Secret> {
    let get = |k: &str| {
        q.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let bits = get("bits")
        .and_then(|b| b.parse::<u64>().ok())
        .filter(|b| *b != 0);
    let now = now_unix();
    let mut out: Vec<&Secret> = state
        .secrets
        .values()
        .filter(|s| s.project_id == auth.project_id && !expired(s, now))
        .filter(|s| get("name").is_none_or(|n| s.name.as_deref() == Some(n)))
        .filter(|s| get("alg").is_none_or(|a| s.algorithm.as_deref() == Some(a)))
        .filter(|s| get("mode").is_none_or(|m| s.mode.as_deref() == Some(m)))
        .filter(|s| get("secret_type").is_none_or(|t| s.secret_type == t))
        .filter(|s| bits.is_none_or(|b| s.bit_length == Some(b)))
        .collect();
    out.sort_by(|a, b| (&a.created, &a.id).cmp(&(&b.created, &b.id)));
    out
}

/// A secret's metadata as Barbican renders it; `base` is the endpoint
/// (`<public url>/key-manager`).
pub fn render_secret(base: &str, s: &Secret) -> Value {
    let mut v = json!({
        "secret_ref": format!("{base}/v1/secrets/{}", s.id),
        "name": s.name,
        "secret_type": s.secret_type,
        "status": "ACTIVE",
        "algorithm": s.algorithm,
        "bit_length": s.bit_length,
        "mode": s.mode,
        "expiration": s.expiration,
        "creator_id": s.creator_id,
        "created": s.created,
        "updated": s.updated,
    });
    if let (Some(ct), Some(_)) = (&s.content_type, &s.sealed) {
        v["content_types"] = json!({ "default": ct });
    }
    v
}

// --------------------------------------------------------------- containers

/// The container `id` as `auth` may see it.
pub fn container<'s>(
    state: &'s State,
    auth: &Auth,
    id: &str,
) -> Result<&'s SecretContainer, ApiError> {
    if uuid::Uuid::parse_str(id).is_err() {
        return Err(ApiError::new(
            404,
            "NotFound",
            "Not Found. Provided container id is invalid.",
        ));
    }
    state
        .secret_containers
        .get(id)
        .filter(|c| auth.can_see(&c.project_id))
        .ok_or_else(|| ApiError::new(404, "NotFound", "Secrets container not found."))
}

/// The id at the end of a reference (`.../secrets/<id>`, a trailing `/`
/// allowed), as Barbican takes it.
pub fn id_of_ref(reference: &str) -> &str {
    reference
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
}

/// POST /v1/containers. `base` is the endpoint the secret references
/// must start with.
pub fn create_container(
    state: &State,
    auth: &Auth,
    base: &str,
    body: &Value,
) -> Made<SecretContainer> {
    if !auth.can_write() {
        return Err(not_allowed("Container creation"));
    }
    const S: &str = "Container";
    let body = body
        .as_object()
        .ok_or_else(|| invalid(S, &format!("{body} is not of type 'object'"), "None"))?;
    let name = string_attr(body, S, "name", 255, true)?;
    let container_type = enum_attr(body, S, "type", &CONTAINER_TYPES)?
        .ok_or_else(|| invalid(S, "'type' is a required property", "type"))?;
    let refs = match body.get("secret_refs") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) => a.clone(),
        Some(v) => {
            return Err(invalid(
                S,
                &format!("{v} is not of type 'array'"),
                "secret_refs",
            ))
        }
    };
    let mut secret_refs = Vec::new();
    for r in &refs {
        let o = r
            .as_object()
            .ok_or_else(|| invalid(S, &format!("{r} is not of type 'object'"), "secret_refs"))?;
        let name = string_attr(o, S, "name", 255, true)
            .map_err(|_| invalid(S, "name is not a string", "secret_refs"))?;
        let reference = match o.get("secret_ref") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
            Some(Value::String(_)) => {
                return Err(invalid(S, "'' is too short", "secret_refs"));
            }
            Some(v) => {
                return Err(invalid(
                    S,
                    &format!("{v} is not of type 'string'"),
                    "secret_refs",
                ))
            }
            None => {
                return Err(invalid(
                    S,
                    "'secret_ref' is a required property",
                    "secret_refs",
                ))
            }
        };
        secret_refs.push((name, reference));
    }
    let names: std::collections::BTreeSet<&str> = secret_refs
        .iter()
        .map(|(n, _)| n.as_deref().unwrap_or(""))
        .collect();
    if names.len() != secret_refs.len() {
        return Err(invalid(
            S,
            "Duplicate reference names are not allowed",
            "secret_refs",
        ));
    }
    let ids: std::collections::BTreeSet<&str> =
        secret_refs.iter().map(|(_, r)| id_of_ref(r)).collect();
    if ids.len() != secret_refs.len() {
        return Err(invalid(
            S,
            "Duplicate secret ids are not allowed",
            "secret_refs",
        ));
    }
    if secret_refs.iter().any(|(_, r)| !r.starts_with(base)) {
        return Err(ApiError::bad_request(
            "Provided field value is not supported",
        ));
    }
    let unsupported = |allowed: &[&str]| names.iter().any(|n| !allowed.contains(n));
    match container_type.as_str() {
        "certificate" if !secret_refs.is_empty() => {
            if unsupported(&[
                "certificate",
                "private_key",
                "private_key_passphrase",
                "intermediates",
            ]) {
                return Err(invalid(S, "only 'private_key', 'certificate' , 'private_key_passphrase',  or 'intermediates' reference names are allowed for Certificate type", "secret_refs"));
            }
            if !names.contains("certificate") {
                return Err(invalid(
                    S,
                    "The minimum required reference name is 'certificate' for Certificate type",
                    "secret_refs",
                ));
            }
        }
        "rsa" if !secret_refs.is_empty() => {
            if unsupported(&["public_key", "private_key", "private_key_passphrase"]) {
                return Err(invalid(S, "only 'private_key', 'public_key' and 'private_key_passphrase' reference names are allowed for RSA type", "secret_refs"));
            }
            if !names.contains("public_key") || !names.contains("private_key") {
                return Err(invalid(
                    S,
                    "The minimum required reference names are 'public_key' and'private_key' for RSA type",
                    "secret_refs",
                ));
            }
        }
        _ => {}
    }
    let now = now_unix();
    let mut out = Vec::new();
    for (name, reference) in &secret_refs {
        let id = id_of_ref(reference);
        let found = state
            .secrets
            .get(id)
            .filter(|s| s.project_id == auth.project_id && !expired(s, now));
        if found.is_none() {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!(
                    "Secret provided for '{}' doesn't exist.",
                    name.as_deref().unwrap_or("None")
                ),
            ));
        }
        out.push(ContainerSecretRef {
            name: name.clone(),
            secret_id: id.to_owned(),
        });
    }
    let ts = timestamp(now);
    let c = SecretContainer {
        id: uuid::Uuid::new_v4().to_string(),
        project_id: auth.project_id.clone(),
        creator_id: auth.user_id.clone(),
        name,
        container_type,
        secret_refs: out,
        created: ts.clone(),
        updated: ts,
    };
    Ok((vec![Change::Put(Object::SecretContainer(c.clone()))], c))
}

/// DELETE /v1/containers/{id} (its secrets stay).
pub fn delete_container(state: &State, auth: &Auth, id: &str) -> Made<()> {
    let c = container(state, auth, id)?;
    if !auth.can_write() {
        return Err(not_allowed("Container deletion"));
    }
    Ok((
        vec![Change::Delete(Kind::SecretContainer, c.id.clone())],
        (),
    ))
}

/// The containers of the caller's project matching `name` and `type`,
/// oldest first.
pub fn list_containers<'s>(
    state: &'s State,
    auth: &Auth,
    q: &[(String, String)],
) -> Vec<&'s SecretContainer> {
    let get = |k: &str| {
        q.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let mut out: Vec<&SecretContainer> = state
        .secret_containers
        .values()
        .filter(|c| c.project_id == auth.project_id)
        .filter(|c| get("name").is_none_or(|n| c.name.as_deref() == Some(n)))
        .filter(|c| get("type").is_none_or(|t| c.container_type == t))
        .collect();
    out.sort_by(|a, b| (&a.created, &a.id).cmp(&(&b.created, &b.id)));
    out
}

pub fn render_container(base: &str, c: &SecretContainer) -> Value {
    let refs: Vec<Value> = c
        .secret_refs
        .iter()
        .map(
            |r| json!({"name": r.name, "secret_ref": format!("{base}/v1/secrets/{}", r.secret_id)}),
        )
        .collect();
    json!({
        "container_ref": format!("{base}/v1/containers/{}", c.id),
        "name": c.name,
        "type": c.container_type,
        "status": "ACTIVE",
        "creator_id": c.creator_id,
        "secret_refs": refs,
        "consumers": [],
        "created": c.created,
        "updated": c.updated,
    })
}

/// Barbican's page of a list: `offset`/`limit` (default 10, 1..=100),
/// `total`, and `next`/`previous` links carrying the other query
/// parameters (`keep_query`).
pub fn page(
    base: &str,
    many: &str,
    items: Vec<Value>,
    q: &[(String, String)],
    keep_query: bool,
) -> Value {
    let num = |k: &str| {
        q.iter()
            .find(|(key, _)| key == k)
            .and_then(|(_, v)| v.parse::<i64>().ok())
    };
    let offset = num("offset").unwrap_or(0).max(0) as usize;
    let limit = num("limit").filter(|l| *l != 0).unwrap_or(10).clamp(1, 100) as usize;
    let total = items.len();
    let shown: Vec<Value> = items.into_iter().skip(offset).take(limit).collect();
    let mut body = json!({ many: shown, "total": total });
    if shown_is_empty(&body, many) {
        return body;
    }
    let extra: String = if keep_query {
        q.iter()
            .filter(|(k, _)| k != "limit" && k != "offset")
            .map(|(k, v)| format!("&{}={}", encode(k), encode(v)))
            .collect()
    } else {
        String::new()
    };
    let href = |o: usize| format!("{base}/v1/{many}?limit={limit}&offset={o}{extra}");
    if offset > 0 {
        body["previous"] = json!(href(offset.saturating_sub(limit)));
    }
    if total > offset + limit {
        body["next"] = json!(href(offset + limit));
    }
    body
}

fn shown_is_empty(body: &Value, many: &str) -> bool {
    body[many].as_array().is_none_or(|a| a.is_empty())
}

/// Percent-encoding of a query component (`application/x-www-form-urlencoded`).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// For other modules' tests: a certificate container of `project` holding
/// a self-signed P-256 certificate for `cn` and its key, made with
/// `openssl` (the core gets an in-memory secret key if it has none); its
/// reference.
#[cfg(test)]
pub(crate) fn test_certificate(c: &crate::commit::Core, project: &str, cn: &str) -> String {
    use serde_json::json;
    if c.read().secret_key.is_none() {
        c.install_secret_key(std::sync::Arc::new(crate::kek::Kek::ephemeral()));
    }
    let dir = std::env::temp_dir().join(format!(
        "strato-test-cert-{}-{}-{}",
        std::process::id(),
        cn,
        uuid::Uuid::new_v4()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let o = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-subj",
        ])
        .arg(format!("/CN={cn}"))
        .current_dir(&dir)
        .output()
        .expect("openssl (the bootstrap installs it)");
    assert!(
        o.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect("material");
    let (cert, key) = (read("cert.pem"), read("key.pem"));
    let _ = std::fs::remove_dir_all(&dir);
    let auth = crate::network::testkit::member(project);
    let secret = |payload: &str| {
        let b = json!({"payload": payload, "payload_content_type": "text/plain"});
        c.mutate(|s| create_secret(s, &auth, &b))
            .expect("secret")
            .id
    };
    let (cid, kid) = (secret(&cert), secret(&key));
    const BASE: &str = "http://km.test/key-manager";
    let b = json!({"type": "certificate", "name": cn, "secret_refs": [
        {"name": "certificate", "secret_ref": format!("{BASE}/v1/secrets/{cid}")},
        {"name": "private_key", "secret_ref": format!("{BASE}/v1/secrets/{kid}")},
    ]});
    let id = c
        .mutate(|s| create_container(s, &auth, BASE, &b))
        .expect("container")
        .id;
    format!("{BASE}/v1/containers/{id}")
}

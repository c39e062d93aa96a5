//! Neutron VPNaaS v2: IKE and IPsec policies, VPN services, endpoint
//! groups and IPsec site connections, as `openstack vpn ...` and
//! openstacksdk drive them (`/v2.0/vpn/...`). Validate a command against
//! the state and return the changes; never see HTTP.
//!
//! Neutron's defaults are kept where Strato's IKEv2 and ESP speak them;
//! what they do not (IKEv1, Neutron's default `ike_version`; SHA-1;
//! 3DES, CTR, CCM and short GCM ICVs; DH groups other than 14, 19 and 31,
//! Neutron's default `group5` among them; AH; transport mode; IPv6) is
//! refused with a 400 naming what is supported, never stored and left
//! unusable. Statuses follow the reference: `PENDING_CREATE` at creation
//! (and no update while pending), then what the gateway reports.

pub mod connections;
pub mod endpoint_groups;
pub mod policies;
pub mod services;

#[cfg(test)]
mod tests;

use serde_json::{Map, Value};

use crate::{error::ApiError, model::VpnStatus, network::Attrs};

/// Neutron's `auth_algorithm` values Strato implements (HMAC-SHA2, as
/// integrity and as the PRF).
pub const AUTH_ALGORITHMS: &[&str] = &["sha256", "sha384", "sha512"];
/// Neutron's other `auth_algorithm` values (refused, named as such).
const OTHER_AUTH_ALGORITHMS: &[&str] = &["sha1", "aes-xcbc", "aes-cmac"];

/// `encryption_algorithm` values Strato implements: AES-CBC and AES-GCM
/// with a 16-byte ICV (RFC 4106).
pub const ENCRYPTION_ALGORITHMS: &[&str] = &[
    "aes-128",
    "aes-192",
    "aes-256",
    "aes-128-gcm-16",
    "aes-192-gcm-16",
    "aes-256-gcm-16",
];
const OTHER_ENCRYPTION_ALGORITHMS: &[&str] = &[
    "3des",
    "aes-128-ctr",
    "aes-192-ctr",
    "aes-256-ctr",
    "aes-128-ccm-8",
    "aes-128-ccm-12",
    "aes-128-ccm-16",
    "aes-192-ccm-8",
    "aes-192-ccm-12",
    "aes-192-ccm-16",
    "aes-256-ccm-8",
    "aes-256-ccm-12",
    "aes-256-ccm-16",
    "aes-128-gcm-8",
    "aes-128-gcm-12",
    "aes-192-gcm-8",
    "aes-192-gcm-12",
    "aes-256-gcm-8",
    "aes-256-gcm-12",
];

/// `pfs` (the Diffie-Hellman group) values Strato implements: MODP 2048,
/// ECP 256 and Curve25519.
pub const PFS_GROUPS: &[&str] = &["group14", "group19", "group31"];

/// Neutron's `pfs` values: `group2`, `group5`, `group14` to `group31`.
fn neutron_pfs(v: &str) -> bool {
    v == "group2"
        || v == "group5"
        || v.strip_prefix("group")
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| (14..=31).contains(&n))
}

/// Neutron's default lifetime, seconds.
pub const DEFAULT_LIFETIME_S: u64 = 3600;
/// Neutron's minimum lifetime, seconds.
pub const MIN_LIFETIME_S: u64 = 60;
/// The longest lifetime taken (a signed 32-bit count of seconds, about 68
/// years: SA lifetimes are timers, not counters).
pub const MAX_LIFETIME_S: u64 = i32::MAX as u64;

/// An integer as Neutron's converters take one: a JSON integer, a number
/// written with a zero fraction (`3600.0`), or a decimal string.
pub fn integral(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| {
            v.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0)
                .map(|f| f as i64)
        })
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// A list of strings that Neutron's `convert_to_list` also takes as one
/// string: `None` when absent, empty when null.
pub fn string_list(a: &mut Attrs<'_>, attr: &str) -> Result<Option<Vec<String>>, ApiError> {
    match a.raw(attr) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(vec![])),
        Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str().map(str::to_owned).ok_or_else(|| {
                    ApiError::invalid(format!(
                        "Invalid input for {attr}. Reason: '{v}' is not a valid string."
                    ))
                })
            })
            .collect::<Result<_, _>>()
            .map(Some),
        Some(other) => Err(ApiError::invalid(format!(
            "Invalid input for {attr}. Reason: '{other}' is not a list."
        ))),
    }
}

/// 400 for a Neutron value Strato does not implement.
fn unsupported(attr: &str, value: &str, supported: &[&str]) -> ApiError {
    ApiError::invalid(format!(
        "Invalid input for {attr}. Reason: {value} is not supported by Strato's VPN; supported: {}.",
        supported.join(", ")
    ))
}

/// 400 for a value that is not Neutron's at all.
fn not_valid(attr: &str, value: &str) -> ApiError {
    ApiError::invalid(format!(
        "Invalid input for {attr}. Reason: {value} is not in valid_values."
    ))
}

/// An enumerated attribute: `supported` values are taken, Neutron's
/// `others` are refused as unsupported, anything else as invalid.
fn choice(
    a: &mut Attrs<'_>,
    attr: &str,
    supported: &[&str],
    others: &[&str],
) -> Result<Option<String>, ApiError> {
    let Some(v) = a.string(attr, 64)? else {
        return Ok(None);
    };
    let v = v.to_ascii_lowercase();
    if supported.contains(&v.as_str()) {
        Ok(Some(v))
    } else if others.contains(&v.as_str()) {
        Err(unsupported(attr, &v, supported))
    } else {
        Err(not_valid(attr, &v))
    }
}

/// A default that is Neutron's but not supported: refused the same way as
/// if it had been asked for, so a policy is never stored unusable.
fn require_supported(attr: &str, value: &str, supported: &[&str]) -> Result<(), ApiError> {
    if supported.contains(&value) {
        Ok(())
    } else {
        Err(unsupported(attr, value, supported))
    }
}

/// `pfs`: one of [`PFS_GROUPS`].
fn pfs(a: &mut Attrs<'_>) -> Result<Option<String>, ApiError> {
    let Some(v) = a.string("pfs", 16)? else {
        return Ok(None);
    };
    let v = v.to_ascii_lowercase();
    if PFS_GROUPS.contains(&v.as_str()) {
        Ok(Some(v))
    } else if neutron_pfs(&v) {
        Err(unsupported("pfs", &v, PFS_GROUPS))
    } else {
        Err(not_valid("pfs", &v))
    }
}

/// `lifetime`: `{"units": "seconds", "value": N >= 60}` (either key may be
/// left out; `kilobytes` is not an API unit in Neutron either). `current`:
/// the value an update starts from.
fn lifetime(a: &mut Attrs<'_>, current: u64) -> Result<Option<u64>, ApiError> {
    let Some(v) = a.raw("lifetime") else {
        return Ok(None);
    };
    let o = match v {
        Value::Null => return Ok(Some(current)),
        Value::Object(o) => o,
        other => {
            return Err(ApiError::invalid(format!(
                "Invalid input for lifetime. Reason: '{other}' is not a dictionary."
            )))
        }
    };
    if let Some(k) = o.keys().find(|k| *k != "units" && *k != "value") {
        return Err(ApiError::invalid(format!(
            "Invalid input for lifetime. Reason: Unexpected keys supplied: {k}."
        )));
    }
    match o.get("units") {
        None => {}
        Some(Value::String(u)) if u == "seconds" => {}
        Some(Value::String(u)) => {
            return Err(ApiError::invalid(format!(
                "Invalid input for lifetime. Reason: {u} is not in valid_values."
            )))
        }
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "Invalid input for lifetime. Reason: '{other}' is not a valid string."
            )))
        }
    }
    match o.get("value") {
        None => Ok(Some(current)),
        Some(v) => {
            // A JSON number (Neutron's range validator takes no string).
            let n = if v.is_number() { v.as_f64() } else { None }
                .filter(|f| f.fract() == 0.0)
                .ok_or_else(|| {
                    ApiError::invalid(format!(
                        "Invalid input for lifetime. Reason: '{v}' is not an integer."
                    ))
                })?;
            if n < MIN_LIFETIME_S as f64 {
                return Err(ApiError::invalid(format!(
                    "Invalid input for lifetime. Reason: '{v}' is too small - must be at least '{MIN_LIFETIME_S}'."
                )));
            }
            if n > MAX_LIFETIME_S as f64 {
                return Err(ApiError::invalid(format!(
                    "Invalid input for lifetime. Reason: '{v}' is too large - must be no more than '{MAX_LIFETIME_S}'."
                )));
            }
            Ok(Some(n as u64))
        }
    }
}

fn render_lifetime(o: &mut Map<String, Value>, seconds: u64) {
    o.insert(
        "lifetime".into(),
        serde_json::json!({"units": "seconds", "value": seconds}),
    );
}

/// 400 when a service or connection is still `PENDING_*`, as Neutron
/// refuses (`VPNStateInvalidToUpdate`).
fn updatable(status: VpnStatus, id: &str) -> Result<(), ApiError> {
    if status == VpnStatus::PendingCreate {
        return Err(ApiError::bad_request(format!(
            "Invalid state {} of vpnaas resource {id} for updating",
            status.as_str()
        )));
    }
    Ok(())
}

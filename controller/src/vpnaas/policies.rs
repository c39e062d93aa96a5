//! IKE policies and IPsec policies. Only what Strato's IKEv2 and ESP speak
//! is stored (see the module above); a policy that any IPsec site
//! connection uses cannot be changed or deleted (409, as Neutron).

use serde_json::{Map, Value};

use super::{
    choice, lifetime, pfs, render_lifetime, require_supported, AUTH_ALGORITHMS, DEFAULT_LIFETIME_S,
    ENCRYPTION_ALGORITHMS, OTHER_AUTH_ALGORITHMS, OTHER_ENCRYPTION_ALGORITHMS, PFS_GROUPS,
};
use crate::{
    auth::Auth,
    error::ApiError,
    model::{Change, IkePolicy, IpsecPolicy, Kind},
    network::{
        creating, find_own, new_meta, quotas, render_meta, update_attrs, updated, writable, Attrs,
        Edit, Made,
    },
    state::State,
};

/// Neutron's defaults, refused when left in place (Strato does not
/// implement them): SHA-1, DH group 5, IKEv1.
const DEFAULT_AUTH: &str = "sha1";
const DEFAULT_ENCRYPTION: &str = "aes-128";
const DEFAULT_PFS: &str = "group5";
const DEFAULT_IKE_VERSION: &str = "v1";

pub fn get_ike<'s>(state: &'s State, auth: &Auth, id: &str) -> Result<&'s IkePolicy, ApiError> {
    find_own(state, auth, id, || {
        ApiError::new(
            404,
            "IKEPolicyNotFound",
            format!("IKEPolicy {id} could not be found"),
        )
    })
}

pub fn get_ipsec<'s>(state: &'s State, auth: &Auth, id: &str) -> Result<&'s IpsecPolicy, ApiError> {
    find_own(state, auth, id, || {
        ApiError::new(
            404,
            "IPsecPolicyNotFound",
            format!("IPsecPolicy {id} could not be found"),
        )
    })
}

/// 409 when a connection uses the IKE policy (after the caller is found
/// to see and may change it: another project's policy stays a 404).
fn ike_in_use(state: &State, id: &str) -> Result<(), ApiError> {
    if state
        .ipsec_site_connections
        .values()
        .any(|c| c.ikepolicy_id == id)
    {
        return Err(ApiError::conflict(
            "IKEPolicyInUse",
            format!("IKEPolicy {id} is in use by existing IPsecSiteConnection and can't be updated or deleted"),
        ));
    }
    Ok(())
}

fn ipsec_in_use(state: &State, id: &str) -> Result<(), ApiError> {
    if state
        .ipsec_site_connections
        .values()
        .any(|c| c.ipsecpolicy_id == id)
    {
        return Err(ApiError::conflict(
            "IPsecPolicyInUse",
            format!("IPsecPolicy {id} is in use by existing IPsecSiteConnection and can't be updated or deleted"),
        ));
    }
    Ok(())
}

/// The algorithm attributes both policies share, onto `auth`,
/// `encryption`, `lifetime_s` and `pfs_group`.
fn common(
    a: &mut Attrs<'_>,
    auth: &mut String,
    encryption: &mut String,
    lifetime_s: &mut u64,
    pfs_group: &mut String,
) -> Result<(), ApiError> {
    if let Some(v) = choice(a, "auth_algorithm", AUTH_ALGORITHMS, OTHER_AUTH_ALGORITHMS)? {
        *auth = v;
    }
    if let Some(v) = choice(
        a,
        "encryption_algorithm",
        ENCRYPTION_ALGORITHMS,
        OTHER_ENCRYPTION_ALGORITHMS,
    )? {
        *encryption = v;
    }
    if let Some(v) = lifetime(a, *lifetime_s)? {
        *lifetime_s = v;
    }
    if let Some(v) = pfs(a)? {
        *pfs_group = v;
    }
    Ok(())
}

/// Everything stored is supported (Neutron's defaults may not be).
fn check_common(auth: &str, encryption: &str, pfs_group: &str) -> Result<(), ApiError> {
    require_supported("auth_algorithm", auth, AUTH_ALGORITHMS)?;
    require_supported("encryption_algorithm", encryption, ENCRYPTION_ALGORITHMS)?;
    require_supported("pfs", pfs_group, PFS_GROUPS)
}

fn ike_version(a: &mut Attrs<'_>, p: &mut IkePolicy) -> Result<(), ApiError> {
    if let Some(v) = choice(a, "ike_version", &["v2"], &["v1"])? {
        p.ike_version = v;
    }
    if let Some(v) = choice(a, "phase1_negotiation_mode", &["main"], &["aggressive"])? {
        p.phase1_negotiation_mode = v;
    }
    Ok(())
}

pub fn create_ike(state: &State, auth: &Auth, body: &Value) -> Made<IkePolicy> {
    let (mut a, project) = creating(state, auth, body, "ikepolicy")?;
    let (name, description) = a.names()?;
    let mut p = IkePolicy {
        meta: new_meta(project, name, description),
        auth_algorithm: DEFAULT_AUTH.into(),
        encryption_algorithm: DEFAULT_ENCRYPTION.into(),
        phase1_negotiation_mode: "main".into(),
        ike_version: DEFAULT_IKE_VERSION.into(),
        lifetime_s: DEFAULT_LIFETIME_S,
        pfs: DEFAULT_PFS.into(),
    };
    common(
        &mut a,
        &mut p.auth_algorithm,
        &mut p.encryption_algorithm,
        &mut p.lifetime_s,
        &mut p.pfs,
    )?;
    ike_version(&mut a, &mut p)?;
    a.finish()?;
    require_supported("ike_version", &p.ike_version, &["v2"])?;
    check_common(&p.auth_algorithm, &p.encryption_algorithm, &p.pfs)?;
    quotas::check(state, &p.meta.project_id, Kind::IkePolicy, 1)?;
    tracing::info!(ikepolicy = %p.meta.id, project = %p.meta.project_id, "IKE policy created");
    Ok((
        vec![Change::Put(crate::model::Object::IkePolicy(p.clone()))],
        p,
    ))
}

pub fn update_ike(state: &State, auth: &Auth, e: Edit) -> Made<IkePolicy> {
    let Edit { id, body, if_match } = e;
    let mut p = writable(auth, || get_ike(state, auth, id), if_match)?.clone();
    ike_in_use(state, id)?;
    update_attrs(body, "ikepolicy", &["id", "project_id", "tenant_id"], |a| {
        a.rename(&mut p.meta)?;
        common(
            a,
            &mut p.auth_algorithm,
            &mut p.encryption_algorithm,
            &mut p.lifetime_s,
            &mut p.pfs,
        )?;
        ike_version(a, &mut p)
    })?;
    Ok(updated(p, vec![]))
}

pub fn delete_ike(state: &State, auth: &Auth, id: &str, if_match: Option<&str>) -> Made<()> {
    writable(auth, || get_ike(state, auth, id), if_match)?;
    ike_in_use(state, id)?;
    tracing::info!(ikepolicy = id, "IKE policy deleted");
    Ok((vec![Change::Delete(Kind::IkePolicy, id.to_owned())], ()))
}

pub const IKE_ATTRS: &[&str] = &[
    "auth_algorithm",
    "encryption_algorithm",
    "phase1_negotiation_mode",
    "ike_version",
    "lifetime",
    "pfs",
];

pub fn render_ike(p: &IkePolicy) -> Map<String, Value> {
    let mut o = Map::new();
    render_meta(&p.meta, &mut o);
    o.insert("auth_algorithm".into(), p.auth_algorithm.clone().into());
    o.insert(
        "encryption_algorithm".into(),
        p.encryption_algorithm.clone().into(),
    );
    o.insert(
        "phase1_negotiation_mode".into(),
        p.phase1_negotiation_mode.clone().into(),
    );
    o.insert("ike_version".into(), p.ike_version.clone().into());
    render_lifetime(&mut o, p.lifetime_s);
    o.insert("pfs".into(), p.pfs.clone().into());
    o
}

fn ipsec_modes(a: &mut Attrs<'_>, p: &mut IpsecPolicy) -> Result<(), ApiError> {
    if let Some(v) = choice(a, "transform_protocol", &["esp"], &["ah", "ah-esp"])? {
        p.transform_protocol = v;
    }
    if let Some(v) = choice(a, "encapsulation_mode", &["tunnel"], &["transport"])? {
        p.encapsulation_mode = v;
    }
    Ok(())
}

pub fn create_ipsec(state: &State, auth: &Auth, body: &Value) -> Made<IpsecPolicy> {
    let (mut a, project) = creating(state, auth, body, "ipsecpolicy")?;
    let (name, description) = a.names()?;
    let mut p = IpsecPolicy {
        meta: new_meta(project, name, description),
        transform_protocol: "esp".into(),
        auth_algorithm: DEFAULT_AUTH.into(),
        encryption_algorithm: DEFAULT_ENCRYPTION.into(),
        encapsulation_mode: "tunnel".into(),
        lifetime_s: DEFAULT_LIFETIME_S,
        pfs: DEFAULT_PFS.into(),
    };
    common(
        &mut a,
        &mut p.auth_algorithm,
        &mut p.encryption_algorithm,
        &mut p.lifetime_s,
        &mut p.pfs,
    )?;
    ipsec_modes(&mut a, &mut p)?;
    a.finish()?;
    check_common(&p.auth_algorithm, &p.encryption_algorithm, &p.pfs)?;
    quotas::check(state, &p.meta.project_id, Kind::IpsecPolicy, 1)?;
    tracing::info!(ipsecpolicy = %p.meta.id, project = %p.meta.project_id, "IPsec policy created");
    Ok((
        vec![Change::Put(crate::model::Object::IpsecPolicy(p.clone()))],
        p,
    ))
}

pub fn update_ipsec(state: &State, auth: &Auth, e: Edit) -> Made<IpsecPolicy> {
    let Edit { id, body, if_match } = e;
    let mut p = writable(auth, || get_ipsec(state, auth, id), if_match)?.clone();
    ipsec_in_use(state, id)?;
    update_attrs(
        body,
        "ipsecpolicy",
        &["id", "project_id", "tenant_id"],
        |a| {
            a.rename(&mut p.meta)?;
            common(
                a,
                &mut p.auth_algorithm,
                &mut p.encryption_algorithm,
                &mut p.lifetime_s,
                &mut p.pfs,
            )?;
            ipsec_modes(a, &mut p)
        },
    )?;
    Ok(updated(p, vec![]))
}

pub fn delete_ipsec(state: &State, auth: &Auth, id: &str, if_match: Option<&str>) -> Made<()> {
    writable(auth, || get_ipsec(state, auth, id), if_match)?;
    ipsec_in_use(state, id)?;
    tracing::info!(ipsecpolicy = id, "IPsec policy deleted");
    Ok((vec![Change::Delete(Kind::IpsecPolicy, id.to_owned())], ()))
}

pub const IPSEC_ATTRS: &[&str] = &[
    "transform_protocol",
    "auth_algorithm",
    "encryption_algorithm",
    "encapsulation_mode",
    "lifetime",
    "pfs",
];

pub fn render_ipsec(p: &IpsecPolicy) -> Map<String, Value> {
    let mut o = Map::new();
    render_meta(&p.meta, &mut o);
    o.insert(
        "transform_protocol".into(),
        p.transform_protocol.clone().into(),
    );
    o.insert("auth_algorithm".into(), p.auth_algorithm.clone().into());
    o.insert(
        "encryption_algorithm".into(),
        p.encryption_algorithm.clone().into(),
    );
    o.insert(
        "encapsulation_mode".into(),
        p.encapsulation_mode.clone().into(),
    );
    render_lifetime(&mut o, p.lifetime_s);
    o.insert("pfs".into(), p.pfs.clone().into());
    o
}

//! Neutron VPNaaS v2 routes (`/v2.0/vpn/...`): IKE and IPsec policies, VPN
//! services, endpoint groups and IPsec site connections, as
//! [`crud::Collection`] descriptors served by the generic handlers;
//! the logic is `vpnaas::*`.

use std::sync::Arc;

use axum::Router;

use super::crud::{self, project_scoped, Api, Collection, Delete, Update};
use crate::{
    app::App,
    model::{EndpointGroup, IkePolicy, IpsecPolicy, IpsecSiteConnection, VpnService},
    vpnaas::{connections, endpoint_groups, policies, services},
};

const API: Api = Api::Neutron;

static IKE_POLICIES: Collection<IkePolicy> = Collection {
    api: API,
    one: "ikepolicy",
    many: "ikepolicies",
    path: "vpn/ikepolicies",
    attrs: policies::IKE_ATTRS,
    visible: project_scoped,
    get: policies::get_ike,
    render: |_, _, _, p| policies::render_ike(p),
    create: Some(policies::create_ike),
    update: Update::IfMatch(policies::update_ike),
    delete: Delete::IfMatch(policies::delete_ike),
    prepare_list: None,
};

static IPSEC_POLICIES: Collection<IpsecPolicy> = Collection {
    api: API,
    one: "ipsecpolicy",
    many: "ipsecpolicies",
    path: "vpn/ipsecpolicies",
    attrs: policies::IPSEC_ATTRS,
    visible: project_scoped,
    get: policies::get_ipsec,
    render: |_, _, _, p| policies::render_ipsec(p),
    create: Some(policies::create_ipsec),
    update: Update::IfMatch(policies::update_ipsec),
    delete: Delete::IfMatch(policies::delete_ipsec),
    prepare_list: None,
};

static VPN_SERVICES: Collection<VpnService> = Collection {
    api: API,
    one: "vpnservice",
    many: "vpnservices",
    path: "vpn/vpnservices",
    attrs: services::ATTRS,
    visible: project_scoped,
    get: services::get,
    render: |_, s, _, v| services::render(s, v),
    create: Some(services::create),
    update: Update::IfMatch(services::update),
    delete: Delete::IfMatch(services::delete),
    prepare_list: None,
};

static ENDPOINT_GROUPS: Collection<EndpointGroup> = Collection {
    api: API,
    one: "endpoint_group",
    many: "endpoint_groups",
    path: "vpn/endpoint-groups",
    attrs: endpoint_groups::ATTRS,
    visible: project_scoped,
    get: endpoint_groups::get,
    render: |_, _, _, g| endpoint_groups::render(g),
    create: Some(endpoint_groups::create),
    update: Update::IfMatch(endpoint_groups::update),
    delete: Delete::IfMatch(endpoint_groups::delete),
    prepare_list: None,
};

static CONNECTIONS: Collection<IpsecSiteConnection> = Collection {
    api: API,
    one: "ipsec_site_connection",
    many: "ipsec_site_connections",
    path: "vpn/ipsec-site-connections",
    attrs: connections::ATTRS,
    visible: project_scoped,
    get: connections::get,
    render: |_, _, _, c| connections::render(c),
    create: Some(connections::create),
    update: Update::IfMatch(connections::update),
    delete: Delete::IfMatch(connections::delete),
    prepare_list: None,
};

pub fn routes() -> Router<Arc<App>> {
    let r = Router::new();
    let r = crud::route(r, "/v2.0", &IKE_POLICIES);
    let r = crud::route(r, "/v2.0", &IPSEC_POLICIES);
    let r = crud::route(r, "/v2.0", &VPN_SERVICES);
    let r = crud::route(r, "/v2.0", &ENDPOINT_GROUPS);
    crud::route(r, "/v2.0", &CONNECTIONS)
}

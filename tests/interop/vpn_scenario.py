"""Neutron VPNaaS through software nobody here wrote: the stock `openstack
vpn ...` commands (python-openstackclient) and openstacksdk against a real
controller.

A tenant builds a VPC (network, subnet, router with a gateway on the
operator's external network), IKE and IPsec policies (the supported
algorithms; Neutron's defaults are refused naming what is supported), a
VPN service (`external_v4_ip` is the router's gateway address), endpoint
groups of subnets and CIDRs (names resolved by the CLI), and an IPsec site
connection (PENDING_CREATE: no gateway runs yet); shows, lists, updates
and deletes them; every refusal below changes nothing (the lists are the
same after it); another project sees none of it; quotas show the VPN keys.

Run by tests/tests/e2e_vpn_openstack.rs with:
  OS_CLIENT_CONFIG_FILE  clouds.yaml holding the `strato-admin` cloud
  STRATO_OPENSTACK_CLI   path of the `openstack` command
"""

import json
import os
import subprocess

import openstack

CLI = os.environ["STRATO_OPENSTACK_CLI"]
SDK = openstack.connect(cloud="strato-admin")


def step(msg):
    print(f"--- {msg}", flush=True)


def osc(*args, cloud="strato-admin", ok=True):
    r = subprocess.run([CLI, "--os-cloud", cloud, *args], capture_output=True, text=True)
    if ok and r.returncode != 0:
        raise AssertionError(f"openstack {' '.join(args)} failed: {r.stderr}")
    if not ok and r.returncode == 0:
        raise AssertionError(f"openstack {' '.join(args)} succeeded: {r.stdout}")
    return r


def osj(*args, **kw):
    return json.loads(osc(*args, "-f", "json", **kw).stdout)


def refused(text, *args):
    """The command fails, saying `text`, and changes nothing."""
    before = snapshot()
    r = osc(*args, ok=False)
    assert text in r.stderr, f"openstack {' '.join(args)}: {r.stderr!r} lacks {text!r}"
    assert snapshot() == before, f"openstack {' '.join(args)} changed something"


def sdk_refused(text, call):
    """An openstacksdk call fails, saying `text`, and changes nothing."""
    before = snapshot()
    try:
        call()
    except openstack.exceptions.HttpException as e:
        assert text in str(e), f"{e} lacks {text!r}"
    else:
        raise AssertionError(f"succeeded; expected {text!r}")
    assert snapshot() == before, "a refused call changed something"


def snapshot():
    """Every VPN resource the caller sees, as the API lists it."""
    n = SDK.network
    lists = [n.vpn_ike_policies(), n.vpn_ipsec_policies(), n.vpn_services(),
             n.vpn_endpoint_groups(), n.vpn_ipsec_site_connections()]
    return [sorted(json.dumps(x.to_dict(), sort_keys=True, default=str) for x in l) for l in lists]


step("the operator's external network, a tenant VPC with a routed subnet")
osc("network", "create", "--external", "vpn-internet")
osc("subnet", "create", "--network", "vpn-internet", "--subnet-range", "198.51.100.0/24",
    "--no-dhcp", "vpn-internet-v4")
osc("network", "create", "vpc-net")
osc("subnet", "create", "--network", "vpc-net", "--subnet-range", "10.20.1.0/24", "vpc-sub")
osc("subnet", "create", "--network", "vpc-net", "--subnet-range", "10.20.9.0/24", "vpc-unrouted")
osc("router", "create", "vpc-router")
osc("router", "add", "subnet", "vpc-router", "vpc-sub")
osc("router", "create", "bare-router")

step("IKE policies: Neutron's defaults (IKEv1, SHA-1, group 5) are refused, naming what is supported")
refused("v1 is not supported", "vpn", "ike", "policy", "create", "ike-default")
refused("supported: sha256, sha384, sha512", "vpn", "ike", "policy", "create", "--ike-version", "v2",
        "ike-sha1")
refused("supported: group14, group19, group31", "vpn", "ike", "policy", "create", "--ike-version",
        "v2", "--auth-algorithm", "sha256", "ike-g5")
refused("3des is not supported", "vpn", "ike", "policy", "create", "--ike-version", "v2",
        "--auth-algorithm", "sha256", "--pfs", "group14", "--encryption-algorithm", "3des", "ike-3des")
ike = osj("vpn", "ike", "policy", "create", "--ike-version", "v2", "--auth-algorithm", "sha256",
          "--pfs", "group14", "--encryption-algorithm", "aes-256", "ike-1")
# The CLI prints display names ("IKE Version"): read the fields back
# through openstacksdk.
sdk = openstack.connect(cloud="strato-admin")
ike = sdk.network.get_vpn_ike_policy(ike["ID"])
assert (ike.ike_version, ike.pfs, ike.encryption_algorithm) == ("v2", "group14", "aes-256"), ike
assert ike.lifetime == {"units": "seconds", "value": 3600}, ike.lifetime
# A lifetime through openstacksdk: the CLI's --lifetime and --dpd fail in
# the client itself with python-openstackclient 10.5 (its key=value parser
# hands a list to a check that wants a dict).
p = sdk.network.create_vpn_ike_policy(name="ike-long", ike_version="v2", auth_algorithm="sha384",
                                      pfs="group31", lifetime={"units": "seconds", "value": 7200})
assert sdk.network.get_vpn_ike_policy(p.id).lifetime == {"units": "seconds", "value": 7200}
try:
    sdk.network.create_vpn_ike_policy(name="ike-short", ike_version="v2", auth_algorithm="sha256",
                                      pfs="group14", lifetime={"units": "kilobytes", "value": 1000})
    raise AssertionError("a lifetime in kilobytes was accepted")
except openstack.exceptions.BadRequestException as e:
    assert "kilobytes is not in valid_values" in str(e), e
osc("vpn", "ike", "policy", "delete", "ike-long")

step("IPsec policies: ESP tunnels with AES-GCM; AH and transport mode refused")
refused("supported: esp", "vpn", "ipsec", "policy", "create", "--auth-algorithm", "sha256",
        "--pfs", "group14", "--transform-protocol", "ah", "ipsec-ah")
refused("supported: tunnel", "vpn", "ipsec", "policy", "create", "--auth-algorithm", "sha256",
        "--pfs", "group14", "--encapsulation-mode", "transport", "ipsec-transport")
ipsec = osj("vpn", "ipsec", "policy", "create", "--auth-algorithm", "sha256", "--pfs", "group19",
            "--encryption-algorithm", "aes-128-gcm-16", "ipsec-1")
ipsec = sdk.network.get_vpn_ipsec_policy(ipsec["ID"])
assert (ipsec.transform_protocol, ipsec.encapsulation_mode) == ("esp", "tunnel"), ipsec

step("a VPN service needs a router with a gateway")
refused("has no external network gateway set", "vpn", "service", "create", "--router",
        "bare-router", "svc-bare")
osc("router", "set", "--external-gateway", "vpn-internet", "vpc-router")
router = osj("router", "show", "vpc-router")
gateway_ip = router["external_gateway_info"]["external_fixed_ips"][0]["ip_address"]
svc = osj("vpn", "service", "create", "--router", "vpc-router", "svc-1")
assert svc["Status"] == "PENDING_CREATE", svc
s = sdk.network.get_vpn_service(svc["ID"])
assert s.external_v4_ip == gateway_ip, (s.external_v4_ip, gateway_ip)
refused("is currently used by VPN service", "router", "unset", "--external-gateway", "vpc-router")

step("endpoint groups: subnets (names resolved by the CLI) and peer CIDRs")
local = osj("vpn", "endpoint", "group", "create", "--type", "subnet", "--value", "vpc-sub", "local-1")
local = sdk.network.get_vpn_endpoint_group(local["ID"])
assert local.endpoints == [osj("subnet", "show", "vpc-sub")["id"]], local.endpoints
peer = sdk.network.get_vpn_endpoint_group(osj(
    "vpn", "endpoint", "group", "create", "--type", "cidr", "--value", "192.168.50.0/24",
    "--value", "192.168.60.0/24", "peer-1")["ID"])
refused("Invalid CIDR", "vpn", "endpoint", "group", "create", "--type", "cidr", "--value",
        "192.168.50.1", "peer-bad")
unrouted = osj("vpn", "endpoint", "group", "create", "--type", "subnet", "--value", "vpc-unrouted",
               "local-unrouted")

step("an IPsec site connection, by names")
base = ["vpn", "ipsec", "site", "connection", "create", "--vpnservice", "svc-1", "--ikepolicy",
        "ike-1", "--ipsecpolicy", "ipsec-1", "--peer-address", "203.0.113.7", "--peer-id",
        "203.0.113.7", "--psk", "correct horse battery staple"]
refused("is not connected to Router", *base, "--local-endpoint-group", "local-unrouted",
        "--peer-endpoint-group", "peer-1", "conn-bad")
refused("too small for ipv4", *base, "--local-endpoint-group", "local-1", "--peer-endpoint-group",
        "peer-1", "--mtu", "60", "conn-mtu")
conn = osj(*base, "--local-endpoint-group", "local-1", "--peer-endpoint-group", "peer-1",
           "--initiator", "bi-directional", "conn-1")
assert conn["Status"] == "PENDING_CREATE", conn
shown = osj("vpn", "ipsec", "site", "connection", "show", "conn-1")
assert shown["ID"] == conn["ID"], shown
c = sdk.network.get_vpn_ipsec_site_connection(conn["ID"])
assert c.peer_address == "203.0.113.7", c
assert (c.dpd["action"], int(c.dpd["interval"]), int(c.dpd["timeout"])) == ("hold", 30, 120), c.dpd
assert c.local_ep_group_id == local.id and c.peer_ep_group_id == peer.id, c
# DPD through openstacksdk (see the lifetime above).
ids = dict(vpnservice_id=svc["ID"], ikepolicy_id=ike.id, ipsecpolicy_id=ipsec.id,
           peer_address="203.0.113.8", peer_id="peer-2", psk="another key",
           local_ep_group_id=local.id, peer_ep_group_id=peer.id)
before = snapshot()
try:
    sdk.network.create_vpn_ipsec_site_connection(name="conn-dpd", dpd={"action": "restart",
                                                 "interval": 30, "timeout": 30}, **ids)
    raise AssertionError("DPD timeout 30 <= interval 30 was accepted")
except openstack.exceptions.BadRequestException as e:
    assert "dpd_timeout is equal to or less than dpd_interval" in str(e), e
assert snapshot() == before
c2 = sdk.network.create_vpn_ipsec_site_connection(name="conn-2", dpd={"action": "restart",
                                                  "interval": 10, "timeout": 40}, **ids)
assert (c2.dpd["action"], int(c2.dpd["interval"]), int(c2.dpd["timeout"])) == ("restart", 10, 40), c2.dpd

step("in use: policies, groups, the service and the subnet stay")
# `openstack ... delete` reports only "1 of 1 ... failed to delete"; the
# reason is checked through openstacksdk.
refused("failed to delete", "vpn", "ike", "policy", "delete", "ike-1")
sdk_refused("is in use by existing IPsecSiteConnection",
            lambda: sdk.network.delete_vpn_ike_policy(ike.id))
refused("is in use by existing IPsecSiteConnection", "vpn", "ike", "policy", "set", "--description",
        "x", "ike-1")
refused("failed to delete", "vpn", "endpoint", "group", "delete", "local-1")
sdk_refused("is in use and cannot be deleted",
            lambda: sdk.network.delete_vpn_endpoint_group(local.id))
refused("failed to delete", "vpn", "service", "delete", "svc-1")
sdk_refused("is still in use", lambda: sdk.network.delete_vpn_service(svc["ID"]))
refused("is used by ipsec site connection", "router", "remove", "subnet", "vpc-router", "vpc-sub")
refused("Invalid state PENDING_CREATE", "vpn", "ipsec", "site", "connection", "set", "--mtu",
        "1400", "conn-1")

step("another project sees none of it")
admin = sdk
other_project = admin.identity.create_project(name="vpn-other", domain_id="default")
other_user = admin.identity.create_user(name="vpn-other-user", password="other-secret-pw",
                                        default_project_id=other_project.id, domain_id="default")
member_role = admin.identity.find_role("member")
admin.identity.assign_project_role_to_user(other_project, other_user, member_role)
cloud = admin.config.config
other = openstack.connect(auth_url=cloud["auth"]["auth_url"], username="vpn-other-user",
                          password="other-secret-pw", project_name="vpn-other",
                          user_domain_name="Default", project_domain_name="Default",
                          region_name=cloud.get("region_name"), identity_api_version="3",
                          load_yaml_config=False, load_envvars=False)
assert list(other.network.vpn_ipsec_site_connections()) == []
assert list(other.network.vpn_services()) == []
assert other.network.find_vpn_ike_policy(ike.id, ignore_missing=True) is None

step("quotas show the VPN keys, the seeds' 1,000 VPN subnets among them")
raw = admin.network.get(f"/quotas/{admin.current_project_id}").json()["quota"]
assert raw["vpn_subnet"] == 1000 and raw["ipsec_site_connection"] >= 1, raw

step("delete in order: connection, groups, service, policies")
osc("vpn", "ipsec", "site", "connection", "delete", "conn-1", "conn-2")
osc("vpn", "endpoint", "group", "delete", "local-1", "peer-1", "local-unrouted")
osc("vpn", "service", "delete", "svc-1")
osc("vpn", "ike", "policy", "delete", "ike-1")
osc("vpn", "ipsec", "policy", "delete", "ipsec-1")
assert json.loads(osc("vpn", "ipsec", "site", "connection", "list", "-f", "json").stdout) == []
osc("router", "unset", "--external-gateway", "vpc-router")
print("scenario passed")

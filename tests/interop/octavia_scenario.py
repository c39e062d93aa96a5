"""Load balancers through software nobody here wrote: the `openstack` CLI
with python-octaviaclient, and openstacksdk's load_balancer proxy (which
finds the API by the catalog's `load-balancer` endpoint and its version
document).

A tenant builds a VPC through Neutron (two subnets joined by a router); with
the CLI it creates a load balancer, TCP and UDP listeners, pools, members in
both subnets and a health monitor, reads the status tree and the stats,
sets quotas (admin); refusals come back as the CLI's errors with Octavia's
status codes; with openstacksdk it lists and changes the same objects, and
is refused an SCTP listener; a cascade delete removes everything and the
VIP port.

Run by tests/tests/e2e_octavia_openstack.rs with:
  OS_CLIENT_CONFIG_FILE  clouds.yaml holding the `strato-admin` cloud
  STRATO_OPENSTACK_CLI   path of the `openstack` command
"""

import json
import os
import subprocess
import sys

import openstack
from openstack import exceptions as exc

CLI = os.environ["STRATO_OPENSTACK_CLI"]


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


def refused(status, text, *args):
    r = osc(*args, ok=False)
    assert f"HTTP {status}" in r.stderr and text in r.stderr, r.stderr


step("a VPC through Neutron")
conn = openstack.connect(cloud="strato-admin")
net1 = conn.network.create_network(name="lb-n1")
sub1 = conn.network.create_subnet(network_id=net1.id, cidr="10.40.1.0/24", ip_version=4)
net2 = conn.network.create_network(name="lb-n2")
sub2 = conn.network.create_subnet(network_id=net2.id, cidr="10.40.2.0/24", ip_version=4)
router = conn.network.create_router(name="lb-r")
conn.network.add_interface_to_router(router, subnet_id=sub1.id)
conn.network.add_interface_to_router(router, subnet_id=sub2.id)

step("the CLI: load balancer, listeners, pools, members, monitor")
lb = osj("loadbalancer", "create", "--name", "web", "--vip-subnet-id", sub1.id, "--vip-address", "10.40.1.100")
assert lb["vip_address"] == "10.40.1.100" and lb["provider"] == "strato", lb
assert lb["provisioning_status"] == "PENDING_CREATE", lb
vip = conn.network.get_port(lb["vip_port_id"])
assert vip.device_owner == "Octavia" and vip.device_id == f"lb-{lb['id']}", vip
tcp = osj("loadbalancer", "listener", "create", "--name", "tcp80", "--protocol", "TCP", "--protocol-port", "80", "web")
udp = osj("loadbalancer", "listener", "create", "--name", "udp80", "--protocol", "UDP", "--protocol-port", "80", "web")
assert tcp["timeout_client_data"] == 50000, tcp
refused(409, "already using protocol TCP and protocol_port 80", "loadbalancer", "listener", "create", "--protocol", "TCP", "--protocol-port", "80", "web")
refused(400, "Protocol SCTP is not supported", "loadbalancer", "listener", "create", "--protocol", "SCTP", "--protocol-port", "8080", "web")
pool = osj("loadbalancer", "pool", "create", "--name", "p-tcp", "--listener", "tcp80", "--protocol", "TCP",
           "--lb-algorithm", "LEAST_CONNECTIONS", "--session-persistence", "type=SOURCE_IP")
assert pool["session_persistence"]["type"] == "SOURCE_IP", pool
refused(400, "invalid while the listener protocol is 'UDP'", "loadbalancer", "pool", "create", "--listener", "udp80",
        "--protocol", "TCP", "--lb-algorithm", "ROUND_ROBIN")
osj("loadbalancer", "pool", "create", "--name", "p-udp", "--listener", "udp80", "--protocol", "UDP", "--lb-algorithm", "SOURCE_IP")
m1 = osj("loadbalancer", "member", "create", "--address", "10.40.1.10", "--protocol-port", "8080", "p-tcp")
m2 = osj("loadbalancer", "member", "create", "--address", "10.40.2.10", "--protocol-port", "8080",
         "--subnet-id", sub2.id, "--weight", "5", "p-tcp")
assert m2["weight"] == 5 and m1["subnet_id"] == sub1.id, (m1, m2)
refused(409, "already using ip 10.40.1.10", "loadbalancer", "member", "create", "--address", "10.40.1.10",
        "--protocol-port", "8080", "p-tcp")
hm = osj("loadbalancer", "healthmonitor", "create", "--delay", "5", "--timeout", "3", "--max-retries", "3",
         "--type", "HTTP", "--url-path", "/health", "--expected-codes", "200-204", "p-tcp")
assert hm["expected_codes"] == "200-204", hm
refused(409, "already has a health monitor", "loadbalancer", "healthmonitor", "create", "--delay", "5", "--timeout", "3",
        "--max-retries", "3", "--type", "TCP", "p-tcp")

step("the CLI: status tree, stats, lists, quotas")
tree = json.loads(osc("loadbalancer", "status", "show", "web").stdout)
listeners = tree["loadbalancer"]["listeners"]
assert {l["name"] for l in listeners} == {"tcp80", "udp80"}, tree
p = next(l for l in listeners if l["name"] == "tcp80")["pools"][0]
assert p["health_monitor"]["type"] == "HTTP" and len(p["members"]) == 2, tree
stats = osj("loadbalancer", "stats", "show", "web")
assert stats["bytes_in"] == 0, stats
osj("loadbalancer", "listener", "stats", "show", "tcp80")
members = osj("loadbalancer", "member", "list", "p-tcp")
assert len(members) == 2, members
osc("loadbalancer", "member", "set", "--weight", "0", "p-tcp", m2["id"])
assert osj("loadbalancer", "member", "show", "p-tcp", m2["id"])["operating_status"] == "DRAINING"
quota = osj("loadbalancer", "quota", "show", lb["project_id"])
assert quota["load_balancer"] == 10 and quota["member"] == 500, quota
osc("loadbalancer", "quota", "set", "--loadbalancer", "1", lb["project_id"])
refused(403, "Quota has been met for resources: Load Balancer", "loadbalancer", "create", "--vip-subnet-id", sub2.id)
osc("loadbalancer", "quota", "reset", lb["project_id"])

step("openstacksdk: the same objects")
lbs = list(conn.load_balancer.load_balancers(name="web"))
assert len(lbs) == 1 and lbs[0].vip_address == "10.40.1.100", lbs
conn.load_balancer.update_load_balancer(lbs[0], description="front")
assert conn.load_balancer.get_load_balancer(lbs[0].id).description == "front"
pools = {p.name: p for p in conn.load_balancer.pools()}
assert pools["p-tcp"].lb_algorithm == "LEAST_CONNECTIONS", pools
assert len(list(conn.load_balancer.members(pools["p-tcp"]))) == 2
e = None
try:
    conn.load_balancer.create_listener(loadbalancer_id=lbs[0].id, protocol="SCTP", protocol_port=443)
except exc.BadRequestException as err:
    e = err
assert e is not None and "not supported" in str(e), e
stats = conn.load_balancer.get_load_balancer_statistics(lbs[0].id)
assert stats.total_connections == 0, stats

step("cascade delete")
refused(409, "it has children", "loadbalancer", "delete", "web")
osc("loadbalancer", "delete", "--cascade", "web")
assert list(conn.load_balancer.load_balancers()) == []
assert list(conn.load_balancer.listeners()) == [] and list(conn.load_balancer.pools()) == []
assert conn.network.find_port(lb["vip_port_id"]) is None, "the VIP port must go"

print("scenario passed")

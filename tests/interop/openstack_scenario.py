"""A new user's first hour with Strato, through software nobody here wrote:
openstacksdk and the stock `openstack` CLI.

An operator onboards a tenant (project, user, member role); the tenant builds
a VPC (two networks with subnets, a router with both interfaces) and two
ports (in the project's default security group); the operator's external
network, a router gateway, a floating IP bound to a VM with a QoS policy (a
floating IP on a tenant network, another tenant binding it, a rate below
1 Mbit/s and two rules in one direction are refused); a security group with an
SSH rule goes on a port through the CLI; a web group with rules by port
range, CIDR and remote group goes on a port through openstacksdk (duplicates,
bad ranges, mismatched ethertypes, mixing stateful and stateless groups and
deleting a group in use are refused); "Nova" (the namespace harness plus an admin port binding) boots a VM
for each port on hosts in both AZs; the ports turn ACTIVE; deletes in the
wrong order fail with 409, in the right order succeed; another tenant sees
none of it; a reader can look but not touch.

Run by tests/tests/e2e_openstack.rs with:
  OS_CLIENT_CONFIG_FILE  clouds.yaml holding the `strato-admin` cloud
  STRATO_HARNESS         path of strato-harness;  STRATO_PREFIX  run prefix
  STRATO_HOSTS           "az1-c1=<host id>,az2-c1=<host id>"
  STRATO_OPENSTACK_CLI   path of the `openstack` command
"""

import json
import os
import subprocess
import sys
import time

import openstack
from openstack import exceptions as exc

HARNESS = os.environ["STRATO_HARNESS"]
PREFIX = os.environ["STRATO_PREFIX"]
HOSTS = dict(h.split("=", 1) for h in os.environ["STRATO_HOSTS"].split(","))
CLI = os.environ["STRATO_OPENSTACK_CLI"]
CLOUDS = os.environ["OS_CLIENT_CONFIG_FILE"]


def step(msg):
    print(f"--- {msg}", flush=True)


def expect(exception, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except exception as e:
        return e
    raise AssertionError(f"{fn.__name__}{args} did not raise {exception.__name__}")


def harness(*args):
    subprocess.run([HARNESS, "--prefix", PREFIX, *args], check=True, capture_output=True, text=True)


def wait_status(conn, port_id, want, timeout=15):
    deadline = time.time() + timeout
    status = None
    while time.time() < deadline:
        status = conn.network.get_port(port_id).status
        if status == want:
            return
        time.sleep(0.2)
    raise AssertionError(f"port {port_id} is {status}, wanted {want}")


admin = openstack.connect(cloud="strato-admin")
auth_url = admin.config.auth["auth_url"]
region = admin.config.region_name

step("operator onboards tenant acme with user alice (member) and rita (reader)")
acme = admin.identity.create_project(name="acme", domain_id="default", description="a tenant")
alice_user = admin.identity.create_user(name="alice", password="alice-pass-1", default_project_id=acme.id, domain_id="default")
rita_user = admin.identity.create_user(name="rita", password="rita-pass-1", default_project_id=acme.id, domain_id="default")
admin.identity.assign_project_role_to_user(acme, alice_user, admin.identity.find_role("member"))
admin.identity.assign_project_role_to_user(acme, rita_user, admin.identity.find_role("reader"))
globex = admin.identity.create_project(name="globex", domain_id="default")
bob_user = admin.identity.create_user(name="bob", password="bob-pass-12", default_project_id=globex.id, domain_id="default")
admin.identity.assign_project_role_to_user(globex, bob_user, admin.identity.find_role("member"))


def login(user, password, project):
    return openstack.connect(
        auth_url=auth_url, username=user, password=password, project_name=project,
        user_domain_name="Default", project_domain_name="Default", region_name=region,
        identity_api_version="3",
    )


alice = login("alice", "alice-pass-1", "acme")
rita = login("rita", "rita-pass-1", "acme")
bob = login("bob", "bob-pass-12", "globex")

step("alice builds a VPC: two networks, two subnets, a router with both interfaces")
web = alice.network.create_network(name="web")
app = alice.network.create_network(name="app")
web_sub = alice.network.create_subnet(network_id=web.id, name="web-sub", cidr="10.0.1.0/24", ip_version=4,
                                      dns_nameservers=["10.0.0.53"])
app_sub = alice.network.create_subnet(network_id=app.id, name="app-sub", cidr="10.0.2.0/24", ip_version=4)
assert web_sub.gateway_ip == "10.0.1.1", web_sub.gateway_ip
assert web_sub.allocation_pools == [{"start": "10.0.1.2", "end": "10.0.1.254"}], web_sub.allocation_pools
router = alice.network.create_router(name="vpc")
alice.network.add_interface_to_router(router, subnet_id=web_sub.id)
alice.network.add_interface_to_router(router, subnet_id=app_sub.id)
e = expect(exc.BadRequestException, alice.network.create_subnet, network_id=web.id, cidr="8.8.8.0/24", ip_version=4)
assert "private" in str(e), e

step("bob (another tenant) uses the same CIDRs and sees none of alice's resources")
bob_net = bob.network.create_network(name="web")
bob.network.create_subnet(network_id=bob_net.id, cidr="10.0.1.0/24", ip_version=4)
expect(exc.NotFoundException, bob.network.get_network, web.id)
assert web.id not in [n.id for n in bob.network.networks()]

step("alice creates two ports; Nova boots a VM for each, in two AZs")
p1 = alice.network.create_port(network_id=web.id, name="web-1")
p2 = alice.network.create_port(network_id=app.id, name="app-1")
assert p1.status == "DOWN" and p1.fixed_ips[0]["ip_address"] == "10.0.1.2", (p1.status, p1.fixed_ips)
for port, vm, host in [(p1, "web1", "az1-c1"), (p2, "app1", "az2-c1")]:
    ip = port.fixed_ips[0]["ip_address"]
    gw = ip.rsplit(".", 1)[0] + ".1"
    harness("vm", "create", vm, "--host", host, "--port", "tap" + port.id[:11], "--mac", port.mac_address,
            "--ip", ip + "/24", "--gw", gw)
    admin.network.update_port(port, binding_host_id=HOSTS[host], device_id=vm, device_owner="compute:" + host[:3])
for port in (p1, p2):
    wait_status(alice, port.id, "ACTIVE")
print("ports ACTIVE:", [alice.network.get_port(p.id).status for p in (p1, p2)])

step("the stock openstack CLI with clouds.yaml")
out = subprocess.run([CLI, "--os-cloud", "strato", "network", "list", "-f", "json"], check=True, capture_output=True, text=True,
                     env={**os.environ, "OS_CLIENT_CONFIG_FILE": CLOUDS}).stdout
names = sorted(n["Name"] for n in json.loads(out))
assert names == ["app", "web"], names
out = subprocess.run([CLI, "--os-cloud", "strato", "port", "show", p1.id, "-f", "json"], check=True, capture_output=True, text=True,
                     env={**os.environ, "OS_CLIENT_CONFIG_FILE": CLOUDS}).stdout
assert json.loads(out)["status"] == "ACTIVE", out

step("security groups: the default group, and a group with an SSH rule through the CLI")
default_sg = alice.network.find_security_group("default", ignore_missing=False)
assert {r["direction"] for r in default_sg.security_group_rules} == {"ingress", "egress"}, default_sg
assert len(default_sg.security_group_rules) == 4, default_sg.security_group_rules
assert alice.network.get_port(p1.id).security_group_ids == [default_sg.id]
assert "default" in [g.name for g in bob.network.security_groups()]
assert default_sg.id not in [g.id for g in bob.network.security_groups()]


def cli(*args, fmt=True, check=True):
    r = subprocess.run([CLI, "--os-cloud", "strato", *args, *(["-f", "json"] if fmt else [])], capture_output=True,
                       text=True, env={**os.environ, "OS_CLIENT_CONFIG_FILE": CLOUDS})
    if check and r.returncode != 0:
        raise AssertionError(f"openstack {' '.join(args)} failed: {r.stdout}{r.stderr}")
    return r


ssh = json.loads(cli("security", "group", "create", "ssh", "--description", "ssh in").stdout)
assert len(ssh["rules"]) == 2, ssh
rule = json.loads(cli("security", "group", "rule", "create", "--protocol", "tcp", "--dst-port", "22",
                      "--remote-ip", "10.1.0.0/24", "ssh").stdout)
assert (rule["port_range_min"], rule["port_range_max"], rule["remote_ip_prefix"]) == (22, 22, "10.1.0.0/24"), rule
dup = cli("security", "group", "rule", "create", "--protocol", "tcp", "--dst-port", "22", "--remote-ip",
          "10.1.0.0/24", "ssh", check=False)
assert dup.returncode != 0 and "already exists" in dup.stderr, (dup.stdout, dup.stderr)
listed = json.loads(cli("security", "group", "rule", "list", "ssh").stdout)
assert len(listed) == 3, listed
assert [r for r in listed if r["IP Range"] == "10.1.0.0/24" and r["Port Range"] == "22:22"], listed
sg_port = json.loads(cli("port", "create", "--network", "web", "--security-group", "ssh", "sg-port").stdout)
assert sg_port["security_group_ids"] == [ssh["id"]], sg_port
busy = cli("security", "group", "delete", "ssh", fmt=False, check=False)
assert busy.returncode != 0 and "in use" in busy.stderr, (busy.stdout, busy.stderr)
cli("port", "delete", "sg-port", fmt=False)
cli("security", "group", "delete", "ssh", fmt=False)
assert "ssh" not in [g.name for g in alice.network.security_groups()]

step("security groups through openstacksdk: a web group, rules by port range, CIDR and remote group")
web_sg = alice.network.create_security_group(name="web", description="http from the app subnet")
http = alice.network.create_security_group_rule(security_group_id=web_sg.id, direction="ingress", ethertype="IPv4",
                                                protocol="tcp", port_range_min=80, port_range_max=80,
                                                remote_ip_prefix="10.2.0.0/24")
assert (http.port_range_min, http.port_range_max, http.remote_ip_prefix) == (80, 80, "10.2.0.0/24"), http
icmp = alice.network.create_security_group_rule(security_group_id=web_sg.id, direction="ingress", ethertype="IPv4",
                                                protocol="icmp", port_range_min=8, remote_group_id=default_sg.id)
assert (icmp.protocol, icmp.port_range_min, icmp.remote_group_id) == ("icmp", 8, default_sg.id), icmp
expect(exc.ConflictException, alice.network.create_security_group_rule, security_group_id=web_sg.id,
       direction="ingress", ethertype="IPv4", protocol="tcp", port_range_min=80, port_range_max=80,
       remote_ip_prefix="10.2.0.0/24")
expect(exc.BadRequestException, alice.network.create_security_group_rule, security_group_id=web_sg.id,
       direction="ingress", ethertype="IPv4", protocol="tcp", port_range_min=90, port_range_max=80)
expect(exc.BadRequestException, alice.network.create_security_group_rule, security_group_id=web_sg.id,
       direction="ingress", ethertype="IPv6", remote_ip_prefix="10.0.0.0/8")
alice.network.update_port(p1.id, security_groups=[web_sg.id, default_sg.id])
assert sorted(alice.network.get_port(p1.id).security_group_ids) == sorted([web_sg.id, default_sg.id])
loose = alice.network.create_security_group(name="loose", stateful=False)
assert loose.stateful is False, loose
expect(exc.ConflictException, alice.network.update_port, p1.id, security_groups=[web_sg.id, loose.id])
expect(exc.ConflictException, alice.network.delete_security_group, web_sg.id, ignore_missing=False)
alice.network.update_port(p1.id, security_groups=[default_sg.id])
alice.network.delete_security_group_rule(http.id, ignore_missing=False)
alice.network.delete_security_group(web_sg.id, ignore_missing=False)
alice.network.delete_security_group(loose.id, ignore_missing=False)
assert {g.name for g in alice.network.security_groups()} == {"default"}

step("elastic IPs: the operator's external network, alice's router gateway, a floating IP on web1 with a QoS policy")
public = admin.network.create_network(name="public", is_router_external=True)
assert public.is_router_external is True, public
admin.network.create_subnet(network_id=public.id, name="public-sub", cidr="198.51.100.0/24", ip_version=4,
                            enable_dhcp=False, allocation_pools=[{"start": "198.51.100.10", "end": "198.51.100.250"}])
assert public.id in [n.id for n in alice.network.networks(is_router_external=True)]
expect(exc.ForbiddenException, alice.network.create_network, name="mine", is_router_external=True)
expect(exc.BadRequestException, alice.network.create_ip, floating_network_id=web.id)
router = alice.network.update_router(router, external_gateway_info={"network_id": public.id})
assert router.external_gateway_info["network_id"] == public.id, router.external_gateway_info
assert router.external_gateway_info["enable_snat"] is True, router.external_gateway_info
fip = alice.network.create_ip(floating_network_id=public.id)
assert fip.status == "DOWN" and fip.port_id is None, fip
expect(exc.NotFoundException, bob.network.update_ip, fip.id, port_id=p1.id)
expect(exc.NotFoundException, bob.network.get_ip, fip.id)
fip = alice.network.update_ip(fip, port_id=p1.id)
assert fip.fixed_ip_address == p1.fixed_ips[0]["ip_address"] and fip.router_id == router.id, fip
deadline = time.time() + 15
while alice.network.get_ip(fip.id).status != "ACTIVE" and time.time() < deadline:
    time.sleep(0.2)
assert alice.network.get_ip(fip.id).status == "ACTIVE", alice.network.get_ip(fip.id)
policy = alice.network.create_qos_policy(name="10M")
rule = alice.network.create_qos_bandwidth_limit_rule(policy, max_kbps=10000, max_burst_kbps=2000, direction="egress")
assert (rule.max_kbps, rule.direction) == (10000, "egress"), rule
expect(exc.BadRequestException, alice.network.create_qos_bandwidth_limit_rule, policy, max_kbps=999)
expect(exc.ConflictException, alice.network.create_qos_bandwidth_limit_rule, policy, max_kbps=5000, direction="egress")
fip = alice.network.update_ip(fip, qos_policy_id=policy.id)
assert fip.qos_policy_id == policy.id, fip
expect(exc.ConflictException, alice.network.delete_qos_policy, policy.id, ignore_missing=False)
listed = json.loads(cli("floating", "ip", "list").stdout)
assert [f for f in listed if f["Floating IP Address"] == fip.floating_ip_address], listed
alice.network.update_ip(fip, qos_policy_id=None)
alice.network.delete_qos_policy(policy, ignore_missing=False)
alice.network.update_ip(fip, port_id=None)
assert alice.network.get_ip(fip.id).status == "DOWN"
alice.network.delete_ip(fip, ignore_missing=False)
expect(exc.NotFoundException, alice.network.get_ip, fip.id)

step("rita (reader) can list but not create or delete")
assert {n.name for n in rita.network.networks()} == {"web", "app", "public"}  # external: everyone's
expect(exc.ForbiddenException, rita.network.create_network, name="nope")
expect(exc.ForbiddenException, rita.network.delete_port, p1.id, ignore_missing=False)

step("deleting in the wrong order is refused with 409")
expect(exc.ConflictException, alice.network.delete_network, web.id, ignore_missing=False)
expect(exc.ConflictException, alice.network.delete_subnet, web_sub.id, ignore_missing=False)
expect(exc.ConflictException, alice.network.delete_router, router.id, ignore_missing=False)
expect(exc.ConflictException, admin.identity.delete_project, acme.id)  # it still has resources

step("unplugging a VM takes its port DOWN; then everything is deleted in the right order")
harness("vm", "delete", "web1")
wait_status(alice, p1.id, "DOWN")
harness("vm", "delete", "app1")
alice.network.delete_port(p1, ignore_missing=False)
alice.network.delete_port(p2, ignore_missing=False)
alice.network.remove_interface_from_router(router, subnet_id=web_sub.id)
alice.network.remove_interface_from_router(router, subnet_id=app_sub.id)
alice.network.delete_router(router, ignore_missing=False)
alice.network.delete_subnet(web_sub, ignore_missing=False)
alice.network.delete_network(web, ignore_missing=False)
alice.network.delete_network(app, ignore_missing=False)  # takes its subnet along
admin.network.delete_network(public, ignore_missing=False)  # the router's gateway port went with it
assert list(alice.network.networks()) == []
bob.network.delete_network(bob_net, ignore_missing=False)
admin.identity.delete_project(acme)
print("scenario passed")
sys.exit(0)

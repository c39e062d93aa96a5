"""L7 load balancing through the stock `openstack` CLI (python-octaviaclient):
HTTP, HTTPS and TERMINATED_HTTPS listeners with their L7 attributes, pools
with cookie persistence, HTTP and HTTPS health monitors, L7 policies and
rules (create, list, show, set, unset, delete), position renumbering, and
Octavia's refusals (status and message) through the CLI's errors; then a
cascade delete that takes the policies and rules along.

Run by tests/tests/e2e_octavia_l7_openstack.rs with:
  OS_CLIENT_CONFIG_FILE  clouds.yaml holding the `strato-admin` cloud
  STRATO_OPENSTACK_CLI   path of the `openstack` command
"""

import json
import os
import subprocess
import tempfile

import openstack

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


def ids(v):
    """Ids of a rendered reference list (`[{"id": ...}]`, ids, or text)."""
    if isinstance(v, str):
        return {x.strip() for x in v.replace(",", "\n").split("\n") if x.strip()}
    return {x["id"] if isinstance(x, dict) else x for x in v}


def refused(status, text, *args):
    r = osc(*args, ok=False)
    assert f"HTTP {status}" in r.stderr and text in r.stderr, r.stderr


def certificate(cn):
    """A certificate container in the Key Manager (Barbican API, through
    `openstack secret`) holding a P-256 certificate for CN made by openssl;
    its reference."""
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", f"{d}/key.pem", "-out", f"{d}/cert.pem", "-days", "2",
                        "-subj", f"/CN={cn}"], check=True, capture_output=True)
        refs = {}
        for name, f in (("certificate", "cert.pem"), ("private_key", "key.pem")):
            with open(f"{d}/{f}") as fh:
                payload = fh.read()
            refs[name] = osj("secret", "store", "--name", f"{cn}-{name}", "--payload", payload,
                             "--payload-content-type", "text/plain")["Secret href"]
    r = osc("secret", "container", "create", "--name", cn, "--type", "certificate",
            "--secret", f"certificate={refs['certificate']}", "--secret", f"private_key={refs['private_key']}",
            "-f", "value", "-c", "Container href")
    return r.stdout.strip()


step("a subnet through Neutron, a load balancer")
conn = openstack.connect(cloud="strato-admin")
net = conn.network.create_network(name="l7-n")
sub = conn.network.create_subnet(network_id=net.id, cidr="10.41.1.0/24", ip_version=4)
lb = osj("loadbalancer", "create", "--name", "l7", "--vip-subnet-id", sub.id)

step("certificates in the Key Manager")
C1 = certificate("c1.example")
C2 = certificate("c2.example")

step("listeners: HTTP with inserted headers and allowed CIDRs, HTTPS, TERMINATED_HTTPS")
http = osj("loadbalancer", "listener", "create", "--name", "http80", "--protocol", "HTTP", "--protocol-port", "80",
           "--insert-headers", "X-Forwarded-For=true,X-Forwarded-Proto=true", "--allowed-cidr", "10.0.0.0/8",
           "--timeout-client-data", "30000", "l7")
assert http["protocol"] == "HTTP" and ids(http["l7policies"]) == set(), http
assert "X-Forwarded-For" in http["insert_headers"], http
assert "10.0.0.0/8" in http["allowed_cidrs"], http
osj("loadbalancer", "listener", "create", "--name", "https443", "--protocol", "HTTPS", "--protocol-port", "443", "l7")
term = osj("loadbalancer", "listener", "create", "--name", "tls8443", "--protocol", "TERMINATED_HTTPS",
           "--protocol-port", "8443", "--default-tls-container-ref", C1,
           "--sni-container-refs", C2, "--tls-version", "TLSv1.3", "l7")
assert term["default_tls_container_ref"] == C1 and "TLSv1.3" in term["tls_versions"], term
refused(400, "Could not retrieve certificate", "loadbalancer", "listener", "create",
        "--protocol", "TERMINATED_HTTPS", "--protocol-port", "9443", "--default-tls-container-ref",
        C1.rsplit("/", 1)[0] + "/00000000-0000-0000-0000-000000000000", "l7")
assert "h2" in term["alpn_protocols"], term
refused(409, "already using protocol HTTP and protocol_port 80", "loadbalancer", "listener", "create",
        "--protocol", "TCP", "--protocol-port", "80", "l7")
refused(400, "An SNI or default certificate container reference must be provided", "loadbalancer", "listener",
        "create", "--protocol", "TERMINATED_HTTPS", "--protocol-port", "9443", "l7")
refused(400, "Certificate container references are not allowed on HTTP protocol listeners", "loadbalancer",
        "listener", "create", "--protocol", "HTTP", "--protocol-port", "81", "--default-tls-container-ref", "x", "l7")
refused(400, "insert-headers is not a valid option for a TCP protocol listener", "loadbalancer", "listener",
        "create", "--protocol", "TCP", "--protocol-port", "81", "--insert-headers", "X-Forwarded-For=true", "l7")
refused(400, "is not a valid option for insert_headers", "loadbalancer", "listener", "create",
        "--protocol", "HTTP", "--protocol-port", "81", "--insert-headers", "X-Bogus=true", "l7")
refused(400, "less than the minimum: TLSv1.1 < TLSv1.2", "loadbalancer", "listener", "create",
        "--protocol", "TERMINATED_HTTPS", "--protocol-port", "9443", "--default-tls-container-ref", "x",
        "--tls-version", "TLSv1.1", "l7")
osc("loadbalancer", "listener", "set", "--insert-headers", "X-Forwarded-Port=true", "http80")
assert "X-Forwarded-Port" in osj("loadbalancer", "listener", "show", "http80")["insert_headers"]

step("pools: cookie persistence, HTTP and HTTPS monitors")
web = osj("loadbalancer", "pool", "create", "--name", "web", "--listener", "http80", "--protocol", "HTTP",
          "--lb-algorithm", "LEAST_CONNECTIONS", "--session-persistence", "type=APP_COOKIE,cookie_name=SID")
assert web["session_persistence"]["cookie_name"] == "SID", web
api = osj("loadbalancer", "pool", "create", "--name", "api", "--loadbalancer", "l7", "--protocol", "HTTP",
          "--lb-algorithm", "ROUND_ROBIN", "--session-persistence", "type=HTTP_COOKIE")
assert api["session_persistence"]["type"] == "HTTP_COOKIE", api
osj("loadbalancer", "pool", "create", "--name", "tls-pass", "--listener", "https443", "--protocol", "HTTPS",
    "--lb-algorithm", "SOURCE_IP")
refused(400, 'must be specified when using the "APP_COOKIE" session persistence type', "loadbalancer", "pool",
        "create", "--loadbalancer", "l7", "--protocol", "HTTP", "--lb-algorithm", "ROUND_ROBIN",
        "--session-persistence", "type=APP_COOKIE")
refused(400, "The pool protocol 'TCP' is invalid while the listener protocol is 'TERMINATED_HTTPS'", "loadbalancer",
        "pool", "create", "--listener", "tls8443", "--protocol", "TCP", "--lb-algorithm", "ROUND_ROBIN")
osj("loadbalancer", "member", "create", "--address", "10.41.1.10", "--protocol-port", "8080", "web")
hm = osj("loadbalancer", "healthmonitor", "create", "--delay", "5", "--timeout", "3", "--max-retries", "3",
         "--type", "HTTP", "--http-method", "HEAD", "--url-path", "/healthz", "--expected-codes", "200,204",
         "--http-version", "1.1", "--domain-name", "web.example.com", "web")
assert hm["http_version"] == 1.1 and hm["domain_name"] == "web.example.com", hm
osj("loadbalancer", "healthmonitor", "create", "--delay", "5", "--timeout", "3", "--max-retries", "3",
    "--type", "HTTPS", "--url-path", "/", "api")
refused(400, "'http_version' must be specified when 'domain_name' is provided", "loadbalancer", "healthmonitor",
        "create", "--delay", "5", "--timeout", "3", "--max-retries", "3", "--type", "HTTP",
        "--domain-name", "x.example.com", "tls-pass")

step("L7 policies: create, positions, list, show, set, delete")
p_api = osj("loadbalancer", "l7policy", "create", "--name", "to-api", "--action", "REDIRECT_TO_POOL",
            "--redirect-pool", "api", "http80")
assert p_api["position"] == 1 and p_api["provisioning_status"] == "PENDING_CREATE", p_api
p_old = osj("loadbalancer", "l7policy", "create", "--name", "old-site", "--action", "REDIRECT_PREFIX",
            "--redirect-prefix", "https://new.example.com", "--redirect-http-code", "301", "http80")
assert p_old["redirect_http_code"] == 301 and p_old["position"] == 2, p_old
p_block = osj("loadbalancer", "l7policy", "create", "--name", "block", "--action", "REJECT", "--position", "1",
              "http80")
order = {p["name"]: p["position"] for p in osj("loadbalancer", "l7policy", "list")}
assert order == {"block": 1, "to-api": 2, "old-site": 3}, order
p_url = osj("loadbalancer", "l7policy", "create", "--name", "moved", "--action", "REDIRECT_TO_URL",
            "--redirect-url", "https://example.com/moved", "--position", "99", "http80")
assert p_url["position"] == 4 and p_url["redirect_http_code"] == 302, p_url
refused(400, "Value must be a valid URL string", "loadbalancer", "l7policy", "create", "--action",
        "REDIRECT_TO_URL", "--redirect-url", "not a url", "http80")
refused(501, "HTTPS protocol listeners do not support L7 policies", "loadbalancer", "l7policy", "create",
        "--action", "REJECT", "https443")
osc("loadbalancer", "l7policy", "set", "--position", "1", "moved")
order = {p["name"]: p["position"] for p in osj("loadbalancer", "l7policy", "list")}
assert order == {"moved": 1, "block": 2, "to-api": 3, "old-site": 4}, order
osc("loadbalancer", "l7policy", "set", "--action", "REDIRECT_TO_URL", "--redirect-url", "https://b.example/",
    "--redirect-http-code", "307", "block")
shown = osj("loadbalancer", "l7policy", "show", "block")
assert shown["action"] == "REDIRECT_TO_URL" and shown["redirect_http_code"] == 307, shown
listener = osj("loadbalancer", "listener", "show", "http80")
assert ids(listener["l7policies"]) >= {p_api["id"], p_old["id"], p_url["id"]}, listener
osc("loadbalancer", "l7policy", "delete", "block")
order = {p["name"]: p["position"] for p in osj("loadbalancer", "l7policy", "list")}
assert order == {"moved": 1, "to-api": 2, "old-site": 3}, order
refused(409, f"is in use by L7 policy {p_api['id']}", "loadbalancer", "pool", "delete", "api")

step("L7 rules: create, list, show, set, delete")
r1 = osj("loadbalancer", "l7rule", "create", "--type", "PATH", "--compare-type", "STARTS_WITH", "--value", "/api",
         "to-api")
r2 = osj("loadbalancer", "l7rule", "create", "--type", "HEADER", "--compare-type", "EQUAL_TO", "--key", "X-Version",
         "--value", "2", "--invert", "to-api")
assert r2["invert"] is True and r2["key"] == "X-Version", r2
osj("loadbalancer", "l7rule", "create", "--type", "HOST_NAME", "--compare-type", "REGEX",
    "--value", "^old\\.example\\.(com|org)$", "old-site")
rules = osj("loadbalancer", "l7rule", "list", "to-api")
assert {r["id"] for r in rules} == {r1["id"], r2["id"]}, rules
refused(400, "Invalid characters in cookie value", "loadbalancer", "l7rule", "create", "--type", "COOKIE",
        "--compare-type", "EQUAL_TO", "--key", "session", "--value", "a;b", "to-api")
refused(400, "Unable to parse regular expression", "loadbalancer", "l7rule", "create", "--type", "PATH",
        "--compare-type", "REGEX", "--value", "(unclosed", "to-api")
refused(400, "invalid comparison type for rule type", "loadbalancer", "l7rule", "create", "--type", "FILE_TYPE",
        "--compare-type", "STARTS_WITH", "--value", "jp", "to-api")
refused(400, "Invalid characters in key", "loadbalancer", "l7rule", "create", "--type", "HEADER",
        "--compare-type", "EQUAL_TO", "--key", "X Version", "--value", "x", "to-api")
refused(400, "SSL_CONN_HAS_CERT is not supported", "loadbalancer", "l7rule", "create", "--type",
        "SSL_CONN_HAS_CERT", "--compare-type", "EQUAL_TO", "--value", "True", "to-api")
osc("loadbalancer", "l7rule", "set", "--compare-type", "CONTAINS", "--value", "/v2/", "--disable", "to-api", r1["id"])
shown = osj("loadbalancer", "l7rule", "show", "to-api", r1["id"])
assert shown["compare_type"] == "CONTAINS" and shown["admin_state_up"] is False, shown
assert shown["operating_status"] == "OFFLINE", shown
policy = osj("loadbalancer", "l7policy", "show", "to-api")
assert r1["id"] in ids(policy["rules"]), policy
osc("loadbalancer", "l7rule", "delete", "to-api", r1["id"])
assert [r["id"] for r in osj("loadbalancer", "l7rule", "list", "to-api")] == [r2["id"]]

step("quotas, status tree")
quota = osj("loadbalancer", "quota", "show", lb["project_id"])
assert quota["l7policy"] == 50 and quota["l7rule"] == 500, quota
osc("loadbalancer", "quota", "set", "--l7policy", "3", lb["project_id"])
refused(403, "Quota has been met for resources: L7 Policy", "loadbalancer", "l7policy", "create",
        "--action", "REJECT", "http80")
osc("loadbalancer", "quota", "reset", lb["project_id"])

step("deleting the listener takes its policies; cascade takes the rest")
osc("loadbalancer", "listener", "delete", "http80")
assert osj("loadbalancer", "l7policy", "list") == []
osc("loadbalancer", "pool", "delete", "api")
osc("loadbalancer", "delete", "--cascade", "l7")
assert list(conn.load_balancer.load_balancers()) == []
assert list(conn.load_balancer.listeners()) == [] and list(conn.load_balancer.pools()) == []

print("scenario passed")

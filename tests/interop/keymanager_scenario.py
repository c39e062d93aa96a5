"""The Key Manager through software nobody here wrote: the `openstack` CLI
with python-barbicanclient (which finds the API by the catalog's
`key-manager` endpoint and its version document), plus raw requests on a
keystoneauth session for what the CLI checks before sending.

A tenant stores a PEM certificate and its key made by `openssl`, and a
PKCS#12 bundle; reads them back (metadata and payload), lists them, makes
a certificate container of them; another project sees none of it (404);
bad inputs are refused with Barbican's statuses and change nothing; the
SQLite database never holds a plaintext; deletes leave nothing.

Run by tests/tests/e2e_keymanager_openstack.rs with:
  OS_CLIENT_CONFIG_FILE  clouds.yaml holding the `strato-admin` cloud
  STRATO_OPENSTACK_CLI   path of the `openstack` command
  STRATO_DB              the controller's SQLite file
  STRATO_WORK            a scratch directory
"""

import base64
import json
import os
import sqlite3
import subprocess

import openstack

CLI = os.environ["STRATO_OPENSTACK_CLI"]
DB = os.environ["STRATO_DB"]
WORK = os.environ["STRATO_WORK"]


def step(msg):
    print(f"--- {msg}", flush=True)


def osc(*args, cloud="strato-admin", ok=True, env=None):
    r = subprocess.run([CLI, "--os-cloud", cloud, *args], capture_output=True, text=True,
                       env={**os.environ, **(env or {})})
    if ok and r.returncode != 0:
        raise AssertionError(f"openstack {' '.join(args)} failed: {r.stderr}")
    if not ok and r.returncode == 0:
        raise AssertionError(f"openstack {' '.join(args)} succeeded: {r.stdout}")
    return r


def osj(*args, **kw):
    return json.loads(osc(*args, "-f", "json", **kw).stdout)


def sh(*args):
    subprocess.run(args, check=True, capture_output=True, cwd=WORK)


def path(name):
    return os.path.join(WORK, name)


def db_text():
    """Every stored row, and the raw file (WAL included), as bytes."""
    c = sqlite3.connect(DB)
    rows = "\n".join(b for (b,) in c.execute("SELECT body FROM objects")).encode()
    c.close()
    raw = b""
    for f in (DB, DB + "-wal"):
        if os.path.exists(f):
            raw += open(f, "rb").read()
    return rows + raw


step("PEM certificate and key, and a PKCS#12 bundle, made with openssl")
sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "cert.pem",
   "-days", "2", "-subj", "/CN=www.example.test")
sh("openssl", "pkcs12", "-export", "-inkey", "key.pem", "-in", "cert.pem", "-out", "bundle.p12", "-passout", "pass:")
cert_pem = open(path("cert.pem")).read()
key_pem = open(path("key.pem")).read()
p12 = open(path("bundle.p12"), "rb").read()

step("a second project and its member")
admin = openstack.connect(cloud="strato-admin")
other_project = admin.identity.create_project(name="km-other", domain_id="default")
other_user = admin.identity.create_user(name="km-other-user", password="other-secret-pw",
                                        default_project_id=other_project.id, domain_id="default")
member_role = admin.identity.find_role("member")
admin.identity.assign_project_role_to_user(other_project, other_user, member_role)
cloud = admin.config.config
other = openstack.connect(auth_url=cloud["auth"]["auth_url"], username="km-other-user",
                          password="other-secret-pw", project_name="km-other",
                          user_domain_name="Default", project_domain_name="Default",
                          region_name=cloud.get("region_name"), identity_api_version="3",
                          load_yaml_config=False, load_envvars=False)
sess = admin.session
KM = {"service_type": "key-manager"}


def raw(conn, method, url, **kw):
    return conn.session.request(url, method, endpoint_filter=KM, raise_exc=False, **kw)


step("the CLI stores, shows and lists secrets")
c = osj("secret", "store", "--name", "tls-cert", "--payload-content-type", "text/plain", "--payload", cert_pem)
cert_ref = c["Secret href"]
assert "/key-manager/v1/secrets/" in cert_ref, c
k = osj("secret", "store", "--name", "tls-key", "--payload-content-type", "text/plain", "--payload", key_pem)
key_ref = k["Secret href"]
b = osj("secret", "store", "--name", "tls-p12", "--file", path("bundle.p12"))
p12_ref = b["Secret href"]
shown = osj("secret", "get", cert_ref)
assert shown["Name"] == "tls-cert" and shown["Status"] == "ACTIVE", shown
assert shown["Content types"] in ("{'default': 'text/plain'}", {"default": "text/plain"}), shown
got = osj("secret", "get", "--payload", cert_ref)
assert got["Payload"].strip() == cert_pem.strip(), got
osc("secret", "get", "--file", path("p12.out"), "--payload_content_type", "application/octet-stream", p12_ref)
assert open(path("p12.out"), "rb").read() == p12, "PKCS#12 round trip"
names = sorted(s["Name"] for s in osj("secret", "list"))
assert names == ["tls-cert", "tls-key", "tls-p12"], names
assert [s["Name"] for s in osj("secret", "list", "--name", "tls-key")] == ["tls-key"]
page = sess.get("/v1/secrets?limit=2&offset=0", endpoint_filter=KM).json()
assert page["total"] == 3 and len(page["secrets"]) == 2 and "next" in page, page

step("two-step create: metadata, then the payload")
r = raw(admin, "POST", "/v1/secrets", json={"name": "two-step"})
assert r.status_code == 201, r.text
two_step = r.json()["secret_ref"]
r = sess.request(two_step, "PUT", data=b"late payload", headers={"Content-Type": "text/plain"}, raise_exc=False)
assert r.status_code == 204, r.text
r = sess.request(two_step, "PUT", data=b"again", headers={"Content-Type": "text/plain"}, raise_exc=False)
assert r.status_code == 409, r.text
r = sess.get(two_step + "/payload", headers={"Accept": "text/plain"}, raise_exc=False)
assert r.status_code == 200 and r.text == "late payload", r.text

step("a certificate container")
ctr = osj("secret", "container", "create", "--name", "tls", "--type", "certificate",
          "--secret", f"certificate={cert_ref}", "--secret", f"private_key={key_ref}")
ctr_ref = ctr["Container href"]
# (barbicanclient cannot render containers' dates as JSON: plain values.)
got = osc("secret", "container", "get", ctr_ref, "-c", "Name", "-c", "Type", "-f", "value").stdout.split()
assert got == ["tls", "certificate"], got
listed = osc("secret", "container", "list", "-c", "Name", "-f", "value").stdout.split()
assert listed == ["tls"], listed

step("another project sees none of it")
for ref in (cert_ref, ctr_ref, cert_ref + "/payload"):
    r = other.session.get(ref, raise_exc=False)
    assert r.status_code == 404, (ref, r.status_code, r.text)
assert other.session.get("/v1/secrets", endpoint_filter=KM).json()["total"] == 0
r = other.session.request(cert_ref, "DELETE", raise_exc=False)
assert r.status_code == 404, r.text
r = raw(other, "POST", "/v1/containers", json={"type": "certificate", "name": "steal",
                                               "secret_refs": [{"name": "certificate", "secret_ref": cert_ref}]})
assert r.status_code == 404 and "doesn't exist" in r.json()["description"], r.text

step("bad inputs are refused and change nothing")
before = sess.get("/v1/secrets", endpoint_filter=KM).json()["total"]
before_ctr = sess.get("/v1/containers", endpoint_filter=KM).json()["total"]
cases = [
    ({"payload": "x"}, 400, "'payload_content_type' must also be supplied"),
    ({"payload": "x", "payload_content_type": "application/x-unknown"}, 400, "payload_content_type is not one of"),
    ({"payload": base64.b64encode(b"\0" * 70_000).decode(), "payload_content_type": "application/octet-stream",
      "payload_content_encoding": "base64"}, 413, "too large"),
    ({"payload": "!!!", "payload_content_type": "application/octet-stream", "payload_content_encoding": "base64"},
     400, "Invalid payload"),
]
for body, status, text in cases:
    r = raw(admin, "POST", "/v1/secrets", json=body)
    assert r.status_code == status and text in r.json()["description"], (body.keys(), r.status_code, r.text)
    assert r.json()["code"] == status and r.json()["title"], r.text
r = raw(admin, "POST", "/v1/secrets", data=b"{not json", headers={"Content-Type": "application/json"})
assert r.status_code == 400 and r.json()["description"] == "Malformed JSON", r.text
r = osc("secret", "store", "--payload-content-type", "application/x-unknown", "--payload", "x", ok=False)
assert "Bad Request: Provided object does not match schema" in r.stderr, r.stderr
missing = cert_ref.rsplit("/", 1)[0] + "/00000000-0000-4000-8000-000000000000"
r = raw(admin, "POST", "/v1/containers", json={"type": "certificate", "name": "bad",
                                               "secret_refs": [{"name": "certificate", "secret_ref": missing}]})
assert r.status_code == 404 and "Secret provided for 'certificate' doesn't exist." in r.text, r.text
r = raw(admin, "POST", "/v1/containers", json={"type": "certificate", "secret_refs": [{"name": "oops", "secret_ref": cert_ref}]})
assert r.status_code == 400 and "reference names are allowed for Certificate type" in r.text, r.text
r = raw(admin, "GET", "/v1/secrets/not-a-uuid")
assert r.status_code == 404 and "Provided secret id is invalid" in r.text, r.text
assert sess.get("/v1/secrets", endpoint_filter=KM).json()["total"] == before
assert sess.get("/v1/containers", endpoint_filter=KM).json()["total"] == before_ctr

step("the database holds no plaintext")
stored = db_text()
for marker in (b"PRIVATE KEY", b"BEGIN CERTIFICATE", key_pem.splitlines()[1].encode(),
               base64.b64encode(p12)[:40], b"late payload"):
    assert marker not in stored, marker

step("deletes: a secret of a container may go (the container loses it), then everything")
osc("secret", "delete", key_ref)
got = sess.get(ctr_ref).json()
assert [x["name"] for x in got["secret_refs"]] == ["certificate"], got
osc("secret", "container", "delete", ctr_ref)
for ref in (cert_ref, p12_ref, two_step):
    osc("secret", "delete", ref)
r = sess.get(cert_ref, raise_exc=False)
assert r.status_code == 404 and r.json()["description"] == "Secret not found.", r.text
assert osj("secret", "list") == []
assert osc("secret", "container", "list", "-f", "value").stdout.strip() == ""

print("scenario passed")

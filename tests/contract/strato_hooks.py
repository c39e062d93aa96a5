"""Schemathesis hooks for the API contract test (tests/tests/e2e_api_contract.rs).

Three rules of the API that a JSON schema cannot state are applied to the
generated bodies, so a schema-valid request does not fail on them:

- `project_id` and `tenant_id` are the same attribute: both given must be
  equal (Neutron and Octavia answer 400 otherwise). When both are strings,
  `tenant_id` is set to `project_id`.
- A user's `default_project_id` must name an existing project (400
  otherwise; Strato keeps no dangling reference). A well-formed id is
  replaced by the test's project.
- A router's `external_gateway_info.network_id` must be an external network
  (400 otherwise, as Neutron). A well-formed id is replaced by the test's
  external network.

Only well-formed values are replaced, so a negative case (a wrong type, a
malformed id) stays negative.

Requests that would take away the run's own identity are dropped: a
change (not GET, HEAD or OPTIONS) to a path naming a protected id (the admin
and the pass's user, their projects, the admin and member roles:
STRATO_CONTRACT_PROTECTED), and a DELETE /v3/auth/tokens of the run's own
token. Otherwise a generated PATCH of the admin's password or a removed role
assignment would turn every later answer into a 401, which the document
allows: the pass would go on "passing" without testing anything (the test
also checks that its token still works after each pass).

One generated request is dropped: OPTIONS on /internal/v1/hosts/{host}.
The TCP listener serves GET there and rightly answers `Allow: GET,HEAD`;
the document also lists the Unix socket's PUT on the same path (OpenAPI has
one path item for both listeners), so the Allow header check cannot hold for
that one path. (A per-operation check setting in schemathesis.toml does not
reach the OPTIONS request, hence a hook.)
"""

import os
import re

import schemathesis

PROJECT = os.environ.get("STRATO_CONTRACT_PROJECT_ID", "")
EXTERNAL = os.environ.get("STRATO_CONTRACT_EXTERNAL_NETWORK_ID", "")
PROTECTED = {i for i in os.environ.get("STRATO_CONTRACT_PROTECTED", "").split(",") if i}
TOKEN = os.environ.get("STRATO_CONTRACT_TOKEN", "")
KEYSTONE_ID = re.compile(r"^[0-9a-f]{32}$")
UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def _fix(obj):
    if not isinstance(obj, dict):
        return
    pid, tid = obj.get("project_id"), obj.get("tenant_id")
    if isinstance(pid, str) and isinstance(tid, str) and len(pid) <= 255 and len(tid) <= 255:
        obj["tenant_id"] = pid
    dp = obj.get("default_project_id")
    if PROJECT and isinstance(dp, str) and KEYSTONE_ID.match(dp):
        obj["default_project_id"] = PROJECT
    gw = obj.get("external_gateway_info")
    if EXTERNAL and isinstance(gw, dict) and isinstance(gw.get("network_id"), str) and UUID.match(gw["network_id"]):
        gw["network_id"] = EXTERNAL


@schemathesis.hook
def map_case(context, case):
    # A case hook, not a body hook: it applies in every phase (coverage too).
    if isinstance(case.body, dict):
        for inner in case.body.values():
            # {"network": {...}}, or bulk {"security_group_rules": [{...}]}
            for obj in inner if isinstance(inner, list) else [inner]:
                _fix(obj)
    return case


@schemathesis.hook
def filter_case(context, case):
    path = case.operation.path
    method = case.method.upper()
    if method == "OPTIONS" and path == "/internal/v1/hosts/{host}":
        return False
    if method not in ("GET", "HEAD", "OPTIONS"):
        params = case.path_parameters or {}
        if any(isinstance(v, str) and v in PROTECTED for v in params.values()):
            return False
        if method == "DELETE" and path == "/v3/auth/tokens":
            headers = {k.lower(): v for k, v in (case.headers or {}).items()}
            if TOKEN and headers.get("x-subject-token") == TOKEN:
                return False
    # Keystone ignores query parameters it does not know (as Keystone does),
    # and OpenAPI cannot declare a closed set of them: a Keystone GET with an
    # undeclared query parameter is not a negative case. (The same exception
    # is in schemathesis.toml; the stateful phase does not read it there.)
    if case.method.upper() == "GET" and path.startswith("/v3/") and isinstance(case.query, dict):
        declared = {p.name for p in case.operation.query}
        if set(case.query) - declared:
            return False
    return True

//! The API contract: `docs/openapi.yaml` and the real `strato-controller`
//! agree. Schemathesis (installed by `make bootstrap`) generates requests
//! from the document for every operation served over TCP, with every one of
//! its checks (`--checks all`: no 5xx, only documented status codes, content
//! types and headers, responses valid against their schemas, schema-valid
//! requests accepted, schema-violating ones rejected, deleted resources gone,
//! created ones available, authentication not ignored, allowed methods), a
//! bounded number of examples per operation and a fixed seed. Any failure
//! fails the test with schemathesis' own report.
//!
//! The controller runs alone on loopback (no agents: the API does not need
//! them to answer), with an external network and its subnet so that floating
//! IPs and router gateways can be created. Schemathesis runs twice: with the
//! bootstrap administrator's token, which reaches every operation, and with
//! a member of a project of its own (403 for what only admins may do, 404
//! for other projects' resources). The exceptions to "every check on every operation" are
//! in `tests/contract/schemathesis.toml`, each with its reason; the rules a
//! schema cannot state are applied to generated bodies by
//! `tests/contract/strato_hooks.py`.
//!
//! By hand: docs/operations.md, "Checking the API contract".

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::json;
use strato_proto::client::Endpoint;
use strato_tests::e2e::{Api, LocalController, ADMIN_PASSWORD};

/// Examples per operation and phase (as the administrator, and as a member),
/// and the seed: a run is reproducible and takes about 3 minutes on two
/// cores.
const MAX_EXAMPLES: &str = "10";
const TENANT_EXAMPLES: &str = "5";
const SEED: &str = "20261207";

fn schemathesis() -> PathBuf {
    let p = std::env::var("STRATO_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/opt/strato/schemathesis/bin/schemathesis"));
    assert!(
        p.exists(),
        "{} is missing: run `make bootstrap` (it installs schemathesis), or set STRATO_SCHEMATHESIS",
        p.display()
    );
    p
}

/// The summary line starting with `key` ("Selected: 134/139"), or the line
/// after it when `key` is a heading ("Test cases:"), for the report.
fn summary_line(out: &str, key: &str) -> String {
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    match lines.iter().position(|l| l.starts_with(key)) {
        Some(i) if lines[i] == key => format!("{key} {}", lines.get(i + 1).unwrap_or(&"?")),
        Some(i) => lines[i].to_owned(),
        None => format!("{key} ?"),
    }
}

#[test]
fn openapi_document_and_controller_agree() {
    let st = schemathesis();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let c = LocalController::start("contract");
    let endpoint = Endpoint::Tcp(c.addr.clone());
    let contract = repo.join("tests/contract");
    // Each pass prepares its own data after the previous pass (which may
    // have deleted anything it could list, and revoked tokens).
    for (who, cidr, examples) in [
        ("admin", "198.51.100.0/24", MAX_EXAMPLES),
        ("member", "203.0.113.0/24", TENANT_EXAMPLES),
    ] {
        let admin = Api::login(&endpoint, "admin", ADMIN_PASSWORD, "admin");
        // Realistic data for what needs it: an external network with a
        // subnet (floating IPs, router gateways).
        let ext = admin.create(
            "/v2.0/networks",
            "network",
            json!({"name": format!("contract-public-{who}"),
                "router:external": true}),
        );
        admin.expect(
            201,
            "POST",
            "/v2.0/subnets",
            Some(json!({"subnet": {"network_id": ext, "cidr": cidr,
                "ip_version": 4, "enable_dhcp": false}})),
        );
        // The administrator reaches every operation; a member of a project
        // of its own sees them as a tenant does (403 for what only admins
        // may do, 404 for other projects' resources).
        let (api, project) = if who == "admin" {
            let project = admin.expect(200, "GET", "/v3/projects?name=admin", None)["projects"][0]
                ["id"]
                .as_str()
                .expect("admin project id")
                .to_owned();
            (
                Api::login(&endpoint, "admin", ADMIN_PASSWORD, "admin"),
                project,
            )
        } else {
            strato_tests::e2e::new_tenant(&admin, "contract-tenant", "member")
        };
        // The identities the passes log in with are not changed by them
        // (strato_hooks.py drops such requests).
        let id_of = |path: &str, key: &str| -> String {
            admin.expect(200, "GET", path, None)[key][0]["id"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        };
        let protected = [
            id_of("/v3/users?name=admin", "users"),
            id_of("/v3/projects?name=admin", "projects"),
            id_of("/v3/roles?name=admin", "roles"),
            id_of("/v3/roles?name=member", "roles"),
            id_of("/v3/users?name=contract-tenant", "users"),
            project.clone(),
        ]
        .join(",");
        // Run in the controller's temporary directory: schemathesis and
        // hypothesis write nothing into the repository.
        let out = Command::new(&st)
            .current_dir(&c.dir)
            .arg("--config-file")
            .arg(contract.join("schemathesis.toml"))
            .arg("run")
            .arg(repo.join("docs/openapi.yaml"))
            .args(["--url", &format!("http://{}", c.addr)])
            .args(["--header", &format!("X-Auth-Token: {}", api.token)])
            .args(["--checks", "all"])
            .args(["--max-examples", examples])
            .args(["--seed", SEED])
            .args(["--generation-database", "none"])
            .args(["--workers", "2"])
            .args(["--request-timeout", "30"])
            .arg("--no-color")
            .env("PYTHONPATH", &contract)
            .env("SCHEMATHESIS_HOOKS", "strato_hooks")
            .env("STRATO_CONTRACT_PROJECT_ID", &project)
            .env("STRATO_CONTRACT_EXTERNAL_NETWORK_ID", &ext)
            .env("STRATO_CONTRACT_PROTECTED", &protected)
            .env("STRATO_CONTRACT_TOKEN", &api.token)
            .output()
            .expect("run schemathesis");
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        println!(
            "schemathesis as {who}: {}; {}",
            summary_line(&report, "Selected:"),
            summary_line(&report, "Test cases:")
        );
        assert!(
            out.status.success(),
            "schemathesis as {who} found mismatches between docs/openapi.yaml and the \
             controller (exit {}):\n{report}\n--- controller log (tail) ---\n{}",
            out.status,
            c.log()
        );
        // Every operation but the five served only on the agents' socket
        // (disabled in schemathesis.toml) is selected: "Selected: N/M".
        let selected = summary_line(&report, "Selected:");
        let counts: Vec<u32> = selected
            .trim_start_matches("Selected:")
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .take(2)
            .collect();
        assert!(
            matches!(counts.as_slice(), [n, m] if *n + 5 == *m && *n > 0),
            "schemathesis as {who}: {selected}, want every operation but the 5 socket-only ones:\n{report}"
        );
        // The pass's token still works: its answers were not 401s from
        // some point on (which the document allows everywhere).
        let (status, body) = api.call("GET", "/v2.0/networks", None);
        assert_eq!(
            status, 200,
            "schemathesis as {who}: the pass's own token stopped working during the pass: {body}"
        );
        // A run that tested nothing would also exit 0.
        assert!(
            report.contains("Tested:") && !report.contains("Tested: 0"),
            "schemathesis as {who} tested no operation:\n{report}"
        );
    }
}

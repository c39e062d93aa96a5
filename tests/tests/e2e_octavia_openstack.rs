//! Interop: the stock `openstack` CLI with python-octaviaclient and
//! openstacksdk's load_balancer proxy (installed by the bootstrap into
//! /opt/strato/venv) drive the Octavia API of a real controller process
//! (no namespaces needed); see tests/interop/octavia_scenario.py (L4) and
//! tests/interop/octavia_l7_scenario.py (L7: HTTP and TLS listeners, cookie
//! persistence, HTTP monitors, L7 policies and rules).

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use strato_tests::e2e::{bin, openstack_python, ADMIN_PASSWORD, OPENSTACK_VENV};

#[test]
fn openstack_cli_and_sdk_drive_load_balancers() {
    scenario("octavia_scenario.py");
}

#[test]
fn openstack_cli_drives_l7_policies_and_rules() {
    scenario("octavia_l7_scenario.py");
}

/// Runs `tests/interop/<script>` against a controller of its own.
fn scenario(script: &str) {
    let python = openstack_python();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let dir = std::env::temp_dir().join(format!(
        "strato-e2e-octavia-osc-{}-{port}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("state dir");
    let clouds = dir.join("clouds.yaml");
    let mut child = Command::new(bin("strato-controller"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--db"])
        .arg(dir.join("strato.db"))
        .arg("--socket")
        .arg(dir.join("controller.sock"))
        .arg("--write-clouds-yaml")
        .arg(&clouds)
        .env("STRATO_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start controller");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_err() || !clouds.exists() {
        assert!(Instant::now() < deadline, "controller did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("interop")
        .join(script);
    let out = Command::new(&python)
        .arg(&script)
        .env("OS_CLIENT_CONFIG_FILE", &clouds)
        .env(
            "STRATO_OPENSTACK_CLI",
            Path::new(OPENSTACK_VENV).join("bin/openstack"),
        )
        .output()
        .expect("run the scenario");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "scenario failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("scenario passed"), "{stdout}");
}

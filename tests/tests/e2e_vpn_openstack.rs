//! Interop: the stock `openstack vpn ...` commands (python-openstackclient)
//! and openstacksdk drive the Neutron VPNaaS API of a real controller
//! process (no namespaces needed); see tests/interop/vpn_scenario.py for
//! what is created, refused (each refusal checked to change nothing) and
//! deleted. The controller and its directory are removed also when the
//! scenario fails.

use std::{path::Path, process::Command};

use strato_tests::e2e::{openstack_python, LocalController, ADMIN_PASSWORD, OPENSTACK_VENV};

#[test]
fn openstack_cli_drives_vpnaas() {
    let python = openstack_python();
    let c = LocalController::start("vpn");
    let clouds = c.dir.join("clouds.yaml");
    let auth_url = format!("http://{}/v3", c.addr);
    strato_controller::clouds::write(
        &clouds,
        &[strato_controller::clouds::Cloud {
            name: "strato-admin",
            auth_url: &auth_url,
            username: "admin",
            password: ADMIN_PASSWORD,
            project: "admin",
            region: "RegionOne",
        }],
    )
    .expect("clouds.yaml");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/vpn_scenario.py");
    let out = Command::new(&python)
        .arg(&script)
        .env("OS_CLIENT_CONFIG_FILE", &clouds)
        .env(
            "STRATO_OPENSTACK_CLI",
            Path::new(OPENSTACK_VENV).join("bin/openstack"),
        )
        .output()
        .expect("run the scenario");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("scenario passed"),
        "scenario failed:\n{stdout}\n{stderr}\ncontroller log:\n{}",
        c.log()
    );
}

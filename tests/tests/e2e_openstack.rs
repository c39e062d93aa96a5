//! Interop: the stock OpenStack clients (openstacksdk and the `openstack`
//! CLI, installed by the bootstrap into /opt/strato/venv) drive a real
//! region the way a new user would; see tests/interop/openstack_scenario.py.

use std::{path::Path, process::Command};

use netns_harness::Topology;
use strato_tests::e2e::{bin, openstack_python, Cloud, ADMIN_PASSWORD, OPENSTACK_VENV};

#[test]
fn openstacksdk_and_cli_drive_a_region() {
    let python = openstack_python();
    let cloud = Cloud::up("osk", &Topology::default_region());
    let strato_proto::client::Endpoint::Tcp(addr) = &cloud.api else {
        unreachable!()
    };
    let auth_url = format!("http://{addr}/v3");
    let clouds = cloud.region.state_dir().join("clouds.yaml");
    strato_controller::clouds::write(
        &clouds,
        &[
            strato_controller::clouds::Cloud {
                name: "strato-admin",
                auth_url: &auth_url,
                username: "admin",
                password: ADMIN_PASSWORD,
                project: "admin",
                region: "RegionOne",
            },
            strato_controller::clouds::Cloud {
                name: "strato",
                auth_url: &auth_url,
                username: "alice",
                password: "alice-pass-1",
                project: "acme",
                region: "RegionOne",
            },
        ],
    )
    .expect("clouds.yaml");
    let hosts: Vec<String> = cloud
        .region
        .hosts()
        .iter()
        .filter(|h| h.name == "az1-c1" || h.name == "az2-c1")
        .map(|h| format!("{}={}", h.name, Cloud::host_id(h)))
        .collect();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/openstack_scenario.py");
    let out = Command::new(&python)
        .arg(&script)
        .env("OS_CLIENT_CONFIG_FILE", &clouds)
        .env("STRATO_HARNESS", bin("strato-harness"))
        .env("STRATO_PREFIX", cloud.prefix())
        .env("STRATO_HOSTS", hosts.join(","))
        .env(
            "STRATO_OPENSTACK_CLI",
            Path::new(OPENSTACK_VENV).join("bin/openstack"),
        )
        .output()
        .expect("run the scenario");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scenario failed:\n{stdout}\n{stderr}\n{}",
        cloud.log_tail("controller", 40)
    );
    assert!(stdout.contains("scenario passed"), "{stdout}");
}

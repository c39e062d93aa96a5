//! Interop: the stock `openstack` CLI with python-barbicanclient
//! (installed by the bootstrap into /opt/strato/venv) drives the Key
//! Manager API of a real controller process (no namespaces needed); see
//! tests/interop/keymanager_scenario.py. Then the controller is restarted
//! with its key file replaced and refuses to start, naming the key file.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use strato_tests::e2e::{bin, openstack_python, ADMIN_PASSWORD, OPENSTACK_VENV};

fn start(dir: &Path, port: u16, stderr: Stdio) -> Child {
    Command::new(bin("strato-controller"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--db"])
        .arg(dir.join("strato.db"))
        .arg("--write-clouds-yaml")
        .arg(dir.join("clouds.yaml"))
        .env("STRATO_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start controller")
}

#[test]
fn openstack_cli_drives_the_key_manager() {
    let python = openstack_python();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let dir = std::env::temp_dir().join(format!("strato-e2e-km-{}-{port}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("work")).expect("state dir");
    let clouds = dir.join("clouds.yaml");
    let mut child = start(&dir, port, Stdio::null());
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_err() || !clouds.exists() {
        assert!(Instant::now() < deadline, "controller did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let key = dir.join("secret.key");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key)
            .expect("key file created")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/keymanager_scenario.py");
    let out = Command::new(&python)
        .arg(&script)
        .env("OS_CLIENT_CONFIG_FILE", &clouds)
        .env(
            "STRATO_OPENSTACK_CLI",
            Path::new(OPENSTACK_VENV).join("bin/openstack"),
        )
        .env("STRATO_DB", dir.join("strato.db"))
        .env("STRATO_WORK", dir.join("work"))
        .output()
        .expect("run the scenario");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("scenario failed:\n{stdout}\n{stderr}");
    }
    assert!(stdout.contains("scenario passed"), "{stdout}");

    // A secret stays; the controller restarted with another key refuses to
    // start rather than serve secrets it cannot open.
    let store = Command::new(Path::new(OPENSTACK_VENV).join("bin/openstack"))
        .args([
            "--os-cloud",
            "strato-admin",
            "secret",
            "store",
            "--payload",
            "kept",
        ])
        .env("OS_CLIENT_CONFIG_FILE", &clouds)
        .output()
        .expect("secret store");
    assert!(
        store.status.success(),
        "{}",
        String::from_utf8_lossy(&store.stderr)
    );
    let _ = child.kill();
    let _ = child.wait();
    std::fs::write(&key, [9u8; 32]).expect("replace the key");
    let refused = start(&dir, port, Stdio::piped())
        .wait_with_output()
        .expect("controller exits");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "started with the wrong key");
    assert!(
        err.contains("secret.key") && err.contains("not the key-encryption key"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

//! TERMINATED_HTTPS on 127.0.0.1 with certificates made by the openssl
//! CLI, driven by curl (`-k --resolve`, HTTP/1.1 and HTTP/2 by ALPN), and
//! the binary itself under SIGHUP and SIGTERM. Bad inputs tried: a key
//! that does not match its certificate (refused at load, naming the
//! field), an unknown SNI (default certificate).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use strato_proto::l7::*;

fn cert(dir: &Path, name: &str) -> L7Certificate {
    let (key, crt) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.crt")),
    );
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .args([
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            &format!("subjectAltName=DNS:{name},DNS:*.{name}"),
        ])
        .output()
        .expect("openssl runs");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    L7Certificate {
        reference: format!("ref-{name}"),
        chain_pem: std::fs::read_to_string(crt).expect("cert"),
        key_pem: std::fs::read_to_string(key).expect("key"),
    }
}

/// curl against the listener; returns (stdout, stderr).
fn curl(port: u16, host: &str, extra: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sSk", "-v", "--max-time", "10", "--resolve"])
        .arg(format!("{host}:{port}:127.0.0.1"))
        .args(extra)
        .arg(format!("https://{host}:{port}/tls"))
        .output()
        .expect("curl runs");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_https_sni_and_h2() {
    let a = member("a").await;
    let certs = state_dir("certs");
    let (default, sni) = (cert(&certs, "a.test"), cert(&certs, "b.test"));
    let p = free_port();
    let mut l = listener("tls", p, Some("p"));
    l.protocol = "TERMINATED_HTTPS".into();
    l.insert_headers.x_forwarded_proto = true;
    l.tls = Some(L7Tls {
        default_certificate: default.clone(),
        sni_certificates: vec![sni.clone()],
        ..L7Tls::default()
    });
    let cfg = config(vec![l.clone()], vec![l7pool("p", vec![l7member("ma", a)])]);

    // A key from another certificate is refused.
    let mut bad = cfg.clone();
    bad.listeners[0].tls.as_mut().expect("tls").sni_certificates[0].key_pem =
        default.key_pem.clone();
    match strato_l7::config::Compiled::compile(&bad) {
        Err(strato_l7::ConfigError::Invalid { field, .. }) => {
            assert_eq!(field, "listeners[0].tls.sni_certificates[0].key_pem")
        }
        Err(e) => panic!("unexpected {e}"),
        Ok(_) => panic!("mismatched key accepted"),
    }

    let (inst, dir) = start("tls", &cfg).await;
    let run = |host: &'static str, extra: &'static [&'static str]| {
        tokio::task::spawn_blocking(move || curl(p, host, extra))
    };
    // SNI b.test and www.b.test (wildcard): the SNI certificate.
    for host in ["b.test", "www.b.test"] {
        let (out, err) = run(host, &["--http1.1"]).await.expect("curl");
        assert!(err.contains("CN=b.test"), "{host}: {err}");
        assert!(
            out.contains("member=a path=/tls") && out.contains("xfproto=https"),
            "{out}"
        );
    }
    // Unknown name: the default certificate.
    let (_, err) = run("c.test", &["--http1.1"]).await.expect("curl");
    assert!(err.contains("CN=a.test"), "{err}");
    // HTTP/2 by ALPN, forwarded as HTTP/1.1.
    let (out, err) = run("a.test", &["--http2"]).await.expect("curl");
    assert!(err.contains("< HTTP/2 200"), "{err}");
    assert!(out.contains("host=a.test"), "{out}");
    // TLS 1.2 only when configured so.
    let mut v12 = cfg.clone();
    v12.listeners[0].tls.as_mut().expect("tls").versions = vec!["TLSv1.2".into()];
    write_config(&dir, &v12);
    inst.reload().await.expect("reload");
    let (_, err) = run("a.test", &["--http1.1"]).await.expect("curl");
    assert!(err.contains("TLSv1.2"), "{err}");

    inst.flush_access_log().await;
    let lines = access_lines(&dir);
    assert_eq!(lines.len(), 5);
    assert_eq!(
        (&*lines[0].sni, &*lines[0].tls_version),
        ("b.test", "TLSv1.3")
    );
    assert!(lines
        .iter()
        .any(|l| l.version == "HTTP/2.0" && l.status == 200));
    assert_eq!(lines[4].tls_version, "TLSv1.2");
    assert!(inst.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_reloads_on_sighup_and_drains_on_sigterm() {
    let a = member("a").await;
    let b = member("b").await;
    let p = free_port();
    let dir = state_dir("bin");
    let mut cfg = config(
        vec![listener("l", p, Some("p"))],
        vec![l7pool("p", vec![l7member("ma", a)])],
    );
    write_config(&dir, &cfg);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_strato-l7"))
        .arg("--state-dir")
        .arg(&dir)
        .args(["--drain-timeout-s", "10"])
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let pid = child.id().expect("pid").to_string();
    let mut up = false;
    for _ in 0..100 {
        if dir.join(CONTROL_SOCKET).exists()
            && tokio::net::TcpStream::connect(("127.0.0.1", p))
                .await
                .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "instance did not come up");
    assert!(get(p, "/", &[]).await.body.starts_with("member=a"));
    cfg.pools[0].members = vec![l7member("mb", b)];
    write_config(&dir, &cfg);
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill")
        .success());
    let mut moved = false;
    for _ in 0..50 {
        if get(p, "/", &[]).await.body.starts_with("member=b") {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(moved, "SIGHUP did not reload");
    let slow = tokio::spawn(get(p, "/slow", &[]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits in time")
        .expect("wait");
    assert!(status.success(), "{status:?}");
    assert_eq!(slow.await.expect("slow").status, 200);
    // Flushed on exit.
    let lines = access_lines(&dir);
    assert!(lines.len() >= 3, "{lines:?}");
    assert!(lines
        .iter()
        .any(|l| l.path == "/slow" && l.member == "mb" && l.status == 200));
    assert!(!dir.join(CONTROL_SOCKET).exists());
}

//! The Key Manager's commands against a real (in-memory) core: Barbican's
//! validation and visibility, sealing, and `certificate()` on containers
//! and PKCS#12 secrets made by `openssl` (skipped where it is missing).

use std::{path::PathBuf, process::Command, sync::Arc};

use base64ct::{Base64, Encoding as _};
use serde_json::json;

use super::*;
use crate::{
    commit::Core,
    kek::Kek,
    network::testkit::{auth, core, member, refused, run},
};

const BASE: &str = "http://km.test/key-manager";

fn km() -> Core {
    let c = core();
    c.install_secret_key(Arc::new(Kek::ephemeral()));
    c
}

fn store(c: &Core, project: &str, body: serde_json::Value) -> String {
    run(c, |s| create_secret(s, &member(project), &body))
        .expect("stored")
        .id
}

fn text(c: &Core, project: &str, payload: &str) -> String {
    store(
        c,
        project,
        json!({"payload": payload, "payload_content_type": "text/plain"}),
    )
}

fn r(id: &str) -> String {
    format!("{BASE}/v1/secrets/{id}")
}

#[test]
fn one_step_store_reads_back_and_is_sealed() {
    let c = km();
    let id = store(
        &c,
        "p1",
        json!({"name": " n ", "payload": "  hello  ", "payload_content_type": "text/plain",
               "algorithm": "aes", "bit_length": 256, "mode": "cbc"}),
    );
    let s = c.read();
    let x = &s.secrets[&id];
    assert_eq!(x.name.as_deref(), Some("n"));
    assert_eq!(x.secret_type, "opaque");
    let sealed = serde_json::to_string(x).expect("json");
    assert!(!sealed.contains("hello"), "{sealed}");
    // Barbican strips the payload; Accept decides the answer's type.
    let (ct, p) = payload(&s, &member("p1"), &id, Some("text/plain")).expect("payload");
    assert_eq!(
        (ct.as_str(), p.as_slice()),
        ("text/plain", b"hello".as_slice())
    );
    let (ct, _) = payload(&s, &member("p1"), &id, Some("*/*")).expect("stored type");
    assert_eq!(ct, "text/plain");
    let (ct, _) = payload(&s, &member("p1"), &id, None).expect("default");
    assert_eq!(ct, "application/octet-stream");
    refused(
        payload(&s, &member("p1"), &id, Some("application/json")),
        406,
        "Wrong payload content-type",
    );
    let v = render_secret(BASE, x);
    assert_eq!(v["secret_ref"], json!(r(&id)));
    assert_eq!(v["content_types"], json!({"default": "text/plain"}));
    assert_eq!(v["bit_length"], json!(256));
}

#[test]
fn binary_payloads_are_base64() {
    let c = km();
    let bytes: Vec<u8> = (0..=255u8).collect();
    let id = store(
        &c,
        "p1",
        json!({"payload": Base64::encode_string(&bytes), "payload_content_type": "application/octet-stream",
               "payload_content_encoding": "base64"}),
    );
    let (_, p) = payload(
        &c.read(),
        &member("p1"),
        &id,
        Some("application/octet-stream"),
    )
    .expect("payload");
    assert_eq!(p, bytes);
    // Not UTF-8: not readable as text.
    refused(
        payload(&c.read(), &member("p1"), &id, Some("text/plain")),
        406,
        "Wrong payload",
    );
}

#[test]
fn refusals_are_barbicans_and_change_nothing() {
    let c = km();
    let m = member("p1");
    let cases = [
        (json!({"payload": "x"}), 400, "If 'payload' is supplied, 'payload_content_type' must also be supplied.. Invalid property: 'payload_content_type'"),
        (json!({"payload": "x", "payload_content_type": "application/pkix-cert"}), 400, "payload_content_type is not one of ['text/plain', 'text/plain;charset=utf-8', 'text/plain; charset=utf-8', 'application/octet-stream', 'application/pkcs8']"),
        (json!({"payload": "x", "payload_content_type": "text/plain", "payload_content_encoding": "base64"}), 400, "payload_content_encoding is not one of None"),
        (json!({"payload": "eA==", "payload_content_type": "application/octet-stream"}), 400, "payload_content_encoding is not one of ['base64', 'binary']"),
        (json!({"payload": "x", "payload_content_type": "text/plain", "payload_content_encoding": "gzip"}), 400, "'gzip' is not one of ['base64']"),
        (json!({"payload": "   ", "payload_content_type": "text/plain"}), 400, "If 'payload' specified, must be non empty"),
        (json!({"payload": "@@@", "payload_content_type": "application/octet-stream", "payload_content_encoding": "base64"}), 400, "Invalid payload for payload_content_encoding"),
        (json!({"payload_content_type": "text/plain"}), 400, "payload must be provided when payload_content_type is specified"),
        (json!({"payload": "x".repeat(MAX_PAYLOAD + 1), "payload_content_type": "text/plain"}), 413, "Provided information too large to process"),
        (json!({"secret_type": "bogus"}), 400, "Invalid property: 'secret_type'"),
        (json!({"expiration": "2001-01-01T00:00:00Z"}), 400, "'expiration' is before current time"),
        (json!({"expiration": "soon"}), 400, "Invalid date for 'expiration'"),
        (json!({"name": 5}), 400, "Invalid property: 'name'"),
    ];
    for (body, status, text) in cases {
        refused(run(&c, |s| create_secret(s, &m, &body)), status, text);
    }
    // Exactly the limit is fine.
    let big = Base64::encode_string(&vec![7u8; MAX_PAYLOAD]);
    store(
        &c,
        "p1",
        json!({"payload": big, "payload_content_type": "application/octet-stream", "payload_content_encoding": "base64"}),
    );
    // Readers read only.
    refused(
        run(&c, |s| create_secret(s, &auth("p1", "reader"), &json!({}))),
        403,
        "Secret creation attempt not allowed",
    );
}

#[test]
fn two_step_payload() {
    let c = km();
    let m = member("p1");
    let id = store(&c, "p1", json!({"name": "later"}));
    refused(
        payload(&c.read(), &m, &id, None),
        404,
        "Sorry but your secret has no payload.",
    );
    refused(
        run(&c, |s| {
            put_payload(s, &m, &id, Some("application/json"), None, b"x")
        }),
        415,
        "Expected content types are: ['application/octet-stream', 'text/plain']",
    );
    refused(
        run(&c, |s| {
            put_payload(s, &m, &id, Some("text/plain"), None, b"")
        }),
        400,
        "No data supplied to process",
    );
    refused(
        run(&c, |s| {
            put_payload(
                s,
                &m,
                &id,
                Some("application/octet-stream"),
                Some("base64"),
                b"@@",
            )
        }),
        400,
        "Unable to decode request data",
    );
    run(&c, |s| {
        put_payload(
            s,
            &m,
            &id,
            Some("application/octet-stream"),
            Some("base64"),
            b"aGk=",
        )
    })
    .expect("put");
    let (ct, p) = payload(&c.read(), &m, &id, Some("application/octet-stream")).expect("payload");
    assert_eq!(
        (ct.as_str(), p.as_slice()),
        ("application/octet-stream", b"hi".as_slice())
    );
    refused(
        run(&c, |s| {
            put_payload(s, &m, &id, Some("text/plain"), None, b"x")
        }),
        409,
        "Secret already has data, cannot modify it.",
    );
}

#[test]
fn other_projects_see_nothing_admins_do() {
    let c = km();
    let id = text(&c, "p1", "mine");
    let s = c.read();
    let other = member("p2");
    refused(secret(&s, &other, &id), 404, "Secret not found.");
    refused(payload(&s, &other, &id, None), 404, "Secret not found.");
    refused(
        secret(&s, &other, "nope"),
        404,
        "Provided secret id is invalid.",
    );
    assert!(list_secrets(&s, &other, &[]).is_empty());
    assert!(secret(&s, &auth("p2", "admin"), &id).is_ok());
    drop(s);
    refused(
        run(&c, |s| delete_secret(s, &other, &id)),
        404,
        "Secret not found.",
    );
    refused(
        run(&c, |s| {
            create_container(
                s,
                &other,
                BASE,
                &json!({"type": "generic", "secret_refs": [{"name": "a", "secret_ref": r(&id)}]}),
            )
        }),
        404,
        "Secret provided for 'a' doesn't exist.",
    );
}

#[test]
fn lists_filter_and_page() {
    let c = km();
    for n in ["a", "b", "c"] {
        store(
            &c,
            "p1",
            json!({"name": n, "algorithm": if n == "b" { "rsa" } else { "aes" }}),
        );
    }
    let s = c.read();
    let m = member("p1");
    let q = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(list_secrets(&s, &m, &q(&[("name", "b")])).len(), 1);
    assert_eq!(list_secrets(&s, &m, &q(&[("alg", "aes")])).len(), 2);
    let items: Vec<_> = list_secrets(&s, &m, &[])
        .into_iter()
        .map(|x| render_secret(BASE, x))
        .collect();
    let p = page(
        BASE,
        "secrets",
        items.clone(),
        &q(&[("limit", "2"), ("alg", "aes")]),
        true,
    );
    assert_eq!(p["total"], 3);
    assert_eq!(p["secrets"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        p["next"],
        json!(format!("{BASE}/v1/secrets?limit=2&offset=2&alg=aes"))
    );
    assert!(p.get("previous").is_none());
    let p = page(
        BASE,
        "secrets",
        items.clone(),
        &q(&[("limit", "2"), ("offset", "2")]),
        true,
    );
    assert_eq!(
        p["previous"],
        json!(format!("{BASE}/v1/secrets?limit=2&offset=0"))
    );
    assert!(p.get("next").is_none());
    let p = page(BASE, "secrets", items, &q(&[("offset", "9")]), true);
    assert_eq!(p, json!({"secrets": [], "total": 3}));
}

#[test]
fn containers_validate_and_follow_secret_deletes() {
    let c = km();
    let m = member("p1");
    let cert = text(&c, "p1", "c");
    let key = text(&c, "p1", "k");
    let body = |refs: serde_json::Value| json!({"type": "certificate", "name": "tls", "secret_refs": refs});
    let cases = [
        (
            body(json!([{"name": "private_key", "secret_ref": r(&key)}])),
            400,
            "The minimum required reference name is 'certificate' for Certificate type",
        ),
        (
            body(
                json!([{"name": "certificate", "secret_ref": r(&cert)}, {"name": "bogus", "secret_ref": r(&key)}]),
            ),
            400,
            "reference names are allowed for Certificate type",
        ),
        (
            body(
                json!([{"name": "certificate", "secret_ref": r(&cert)}, {"name": "certificate", "secret_ref": r(&key)}]),
            ),
            400,
            "Duplicate reference names are not allowed",
        ),
        (
            body(
                json!([{"name": "certificate", "secret_ref": r(&cert)}, {"name": "private_key", "secret_ref": r(&cert)}]),
            ),
            400,
            "Duplicate secret ids are not allowed",
        ),
        (
            body(
                json!([{"name": "certificate", "secret_ref": format!("http://elsewhere/v1/secrets/{cert}")}]),
            ),
            400,
            "Provided field value is not supported",
        ),
        (
            body(
                json!([{"name": "certificate", "secret_ref": r("00000000-0000-4000-8000-000000000000")}]),
            ),
            404,
            "Secret provided for 'certificate' doesn't exist.",
        ),
        (json!({"type": "box"}), 400, "Invalid property: 'type'"),
        (json!({"name": "x"}), 400, "'type' is a required property"),
    ];
    for (b, status, text) in cases {
        refused(run(&c, |s| create_container(s, &m, BASE, &b)), status, text);
    }
    let ctr = run(&c, |s| {
        create_container(s, &m, BASE, &body(json!([
            {"name": "certificate", "secret_ref": r(&cert)}, {"name": "private_key", "secret_ref": r(&key)}])))
    })
    .expect("container");
    let v = render_container(BASE, &c.read().secret_containers[&ctr.id]);
    assert_eq!(v["secret_refs"][0]["secret_ref"], json!(r(&cert)));
    refused(
        container(&c.read(), &member("p2"), &ctr.id),
        404,
        "Secrets container not found.",
    );
    // As Barbican: deleting a referenced secret is allowed; the reference goes.
    run(&c, |s| delete_secret(s, &m, &key)).expect("deleted");
    let names: Vec<_> = c.read().secret_containers[&ctr.id]
        .secret_refs
        .iter()
        .map(|x| x.name.clone())
        .collect();
    assert_eq!(names, vec![Some("certificate".to_string())]);
    run(&c, |s| delete_container(s, &m, &ctr.id)).expect("deleted");
    assert!(
        c.read().secrets.contains_key(&cert),
        "a container's secrets stay"
    );
}

#[test]
fn times_parse() {
    assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(
        parse_time("2026-11-23T01:02:03"),
        Some(1_795_392_000 + 3_723)
    );
    assert_eq!(
        parse_time("2026-11-23T03:02:03.5+02:00"),
        Some(1_795_392_000 + 3_723)
    );
    assert_eq!(parse_time("tomorrow"), None);
}

// ---------------------------------------------------------- certificate()

/// A scratch directory with a certificate, its key in several forms and a
/// PKCS#12 bundle, made by openssl; None where openssl is missing.
fn material(tag: &str) -> Option<PathBuf> {
    let dir = std::env::temp_dir().join(format!("strato-km-certs-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let sh = |args: &[&str]| {
        let ok = Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output();
        match ok {
            Ok(o) if o.status.success() => Some(()),
            Ok(o) => panic!("openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr)),
            Err(_) => None,
        }
    };
    sh(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-subj",
        "/CN=a.test",
    ])?;
    sh(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "eckey.pem",
        "-out",
        "eccert.pem",
        "-days",
        "2",
        "-subj",
        "/CN=b.test",
    ])?;
    sh(&[
        "pkcs8",
        "-topk8",
        "-in",
        "key.pem",
        "-out",
        "enckey.pem",
        "-passout",
        "pass:s3cret",
        "-v2",
        "aes-256-cbc",
    ])?;
    sh(&[
        "pkey",
        "-in",
        "key.pem",
        "-traditional",
        "-out",
        "rsakey.pem",
    ])?;
    sh(&[
        "pkcs12",
        "-export",
        "-inkey",
        "key.pem",
        "-in",
        "cert.pem",
        "-out",
        "bundle.p12",
        "-passout",
        "pass:",
    ])?;
    sh(&[
        "pkcs12",
        "-export",
        "-inkey",
        "key.pem",
        "-in",
        "cert.pem",
        "-out",
        "locked.p12",
        "-passout",
        "pass:pw",
    ])?;
    Some(dir)
}

fn read(dir: &std::path::Path, f: &str) -> Vec<u8> {
    std::fs::read(dir.join(f)).expect("material")
}

fn bin(c: &Core, project: &str, bytes: &[u8]) -> String {
    store(
        c,
        project,
        json!({"payload": Base64::encode_string(bytes), "payload_content_type": "application/octet-stream",
               "payload_content_encoding": "base64"}),
    )
}

fn tls_container(c: &Core, project: &str, refs: &[(&str, &str)]) -> String {
    let refs: Vec<_> = refs
        .iter()
        .map(|(n, id)| json!({"name": n, "secret_ref": r(id)}))
        .collect();
    let b = json!({"type": "certificate", "secret_refs": refs});
    run(c, |s| create_container(s, &member(project), BASE, &b))
        .expect("container")
        .id
}

fn cref(id: &str) -> String {
    format!("{BASE}/v1/containers/{id}")
}

#[test]
fn certificate_from_containers() {
    let Some(d) = material("containers") else {
        eprintln!("openssl missing: skipped");
        return;
    };
    let c = km();
    let cert = bin(&c, "p1", &read(&d, "cert.pem"));
    let key = bin(&c, "p1", &read(&d, "key.pem"));
    let ctr = tls_container(&c, "p1", &[("certificate", &cert), ("private_key", &key)]);
    let got = certificate(&c.read(), "p1", &cref(&ctr)).expect("certificate");
    assert_eq!(got.reference, cref(&ctr));
    assert_eq!(got.chain_pem.matches("BEGIN CERTIFICATE").count(), 1);
    assert!(
        got.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"),
        "{}",
        got.key_pem
    );

    // Intermediates go after the leaf; PKCS#1 and SEC1 keys pass as they are.
    let inter = bin(&c, "p1", &read(&d, "eccert.pem"));
    let rsa = bin(&c, "p1", &read(&d, "rsakey.pem"));
    let ctr2 = tls_container(
        &c,
        "p1",
        &[
            ("certificate", &cert),
            ("private_key", &rsa),
            ("intermediates", &inter),
        ],
    );
    let got = certificate(&c.read(), "p1", &cref(&ctr2)).expect("with intermediates");
    assert_eq!(got.chain_pem.matches("BEGIN CERTIFICATE").count(), 2);
    assert!(got.key_pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let ec = bin(&c, "p1", &read(&d, "eccert.pem"));
    let eckey = bin(&c, "p1", &read(&d, "eckey.pem"));
    let ctr3 = tls_container(&c, "p1", &[("certificate", &ec), ("private_key", &eckey)]);
    certificate(&c.read(), "p1", &cref(&ctr3)).expect("EC");

    // An encrypted PKCS#8 key opens with the container's pass phrase.
    let enc = bin(&c, "p1", &read(&d, "enckey.pem"));
    let pass = text(&c, "p1", "s3cret");
    let ctr4 = tls_container(
        &c,
        "p1",
        &[
            ("certificate", &cert),
            ("private_key", &enc),
            ("private_key_passphrase", &pass),
        ],
    );
    let got = certificate(&c.read(), "p1", &cref(&ctr4)).expect("encrypted key");
    assert!(got.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let ctr5 = tls_container(&c, "p1", &[("certificate", &cert), ("private_key", &enc)]);
    assert_eq!(
        certificate::resolve(&c.read(), "p1", &cref(&ctr5)),
        Err(certificate::CertError::NeedsPassphrase)
    );

    // Refusals: Octavia's message, the reason kept for the log.
    let octavia = |reference: &str| format!("Could not retrieve certificate: ['{reference}']");
    let e = certificate(&c.read(), "p2", &cref(&ctr)).expect_err("other project");
    assert_eq!((e.status, e.message.clone()), (400, octavia(&cref(&ctr))));
    let missing = cref("00000000-0000-4000-8000-000000000000");
    assert_eq!(
        certificate(&c.read(), "p1", &missing)
            .expect_err("missing")
            .message,
        octavia(&missing)
    );
    assert_eq!(
        certificate::resolve(&c.read(), "p1", "garbage"),
        Err(certificate::CertError::BadReference)
    );
    let mismatched = tls_container(&c, "p1", &[("certificate", &ec), ("private_key", &key)]);
    assert_eq!(
        certificate::resolve(&c.read(), "p1", &cref(&mismatched)),
        Err(certificate::CertError::MismatchedKey)
    );
    let junk = text(&c, "p1", "not a certificate");
    let bad = tls_container(&c, "p1", &[("certificate", &junk), ("private_key", &key)]);
    let e = certificate(&c.read(), "p1", &cref(&bad)).expect_err("garbage");
    assert_eq!(e.message, octavia(&cref(&bad)));
    assert!(matches!(
        certificate::resolve(&c.read(), "p1", &cref(&bad)),
        Err(certificate::CertError::UnreadableCert(_))
    ));
    let no_key = tls_container(&c, "p1", &[("certificate", &cert)]);
    assert_eq!(
        certificate::resolve(&c.read(), "p1", &cref(&no_key)),
        Err(certificate::CertError::Missing("private_key"))
    );
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn certificate_from_pkcs12_secrets() {
    let Some(d) = material("pkcs12") else {
        eprintln!("openssl missing: skipped");
        return;
    };
    let c = km();
    let p12 = bin(&c, "p1", &read(&d, "bundle.p12"));
    let got = certificate(&c.read(), "p1", &r(&p12)).expect("PKCS#12");
    assert_eq!(got.chain_pem.matches("BEGIN CERTIFICATE").count(), 1);
    assert!(got.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let unreadable = "The PKCS12 bundle is unreadable. Please check the PKCS12 bundle validity. In addition, make sure it does not require a pass phrase. Error: Could not deserialize PKCS12 data";
    let junk = text(&c, "p1", "garbage");
    let e = certificate(&c.read(), "p1", &r(&junk)).expect_err("garbage");
    assert_eq!((e.status, e.message.as_str()), (400, unreadable));
    let locked = bin(&c, "p1", &read(&d, "locked.p12"));
    assert_eq!(
        certificate(&c.read(), "p1", &r(&locked))
            .expect_err("pass phrase")
            .message,
        unreadable
    );
    let e = certificate(&c.read(), "p2", &r(&p12)).expect_err("other project");
    assert_eq!(
        e.message,
        format!("Could not retrieve certificate: ['{}']", r(&p12))
    );
    let empty = store(&c, "p1", json!({"name": "no payload"}));
    assert_eq!(
        certificate::resolve(&c.read(), "p1", &r(&empty)),
        Err(certificate::CertError::NoPayload)
    );
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn without_a_key_nothing_is_stored_or_read() {
    let c = core();
    refused(
        run(&c, |s| {
            create_secret(
                s,
                &member("p1"),
                &json!({"payload": "x", "payload_content_type": "text/plain"}),
            )
        }),
        500,
        "no key-encryption key",
    );
}

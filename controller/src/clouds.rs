//! Writes standard OpenStack `clouds.yaml` entries, so the stock
//! `openstack` CLI and openstacksdk reach this controller
//! (`OS_CLIENT_CONFIG_FILE=run/clouds.yaml openstack --os-cloud strato-admin ...`).
//! Values are written as JSON strings, which are valid YAML scalars.

use std::{fmt::Write as _, path::Path};

/// One `clouds:` entry with password authentication.
pub struct Cloud<'a> {
    pub name: &'a str,
    pub auth_url: &'a str,
    pub username: &'a str,
    pub password: &'a str,
    pub project: &'a str,
    pub region: &'a str,
}

fn q(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// The YAML document for `clouds`.
pub fn render(clouds: &[Cloud<'_>]) -> String {
    let mut out = String::from("# Written by Strato. Use: OS_CLIENT_CONFIG_FILE=<this file> openstack --os-cloud <name> ...\nclouds:\n");
    for c in clouds {
        let _ = writeln!(out, "  {}:", q(c.name));
        let _ = writeln!(out, "    auth:");
        let _ = writeln!(out, "      auth_url: {}", q(c.auth_url));
        let _ = writeln!(out, "      username: {}", q(c.username));
        let _ = writeln!(out, "      password: {}", q(c.password));
        let _ = writeln!(out, "      project_name: {}", q(c.project));
        let _ = writeln!(out, "      user_domain_name: \"Default\"");
        let _ = writeln!(out, "      project_domain_name: \"Default\"");
        let _ = writeln!(out, "    region_name: {}", q(c.region));
        let _ = writeln!(out, "    interface: \"public\"");
        let _ = writeln!(out, "    identity_api_version: 3");
    }
    out
}

/// Writes the file with mode 0600 (it holds passwords).
pub fn write(path: &Path, clouds: &[Cloud<'_>]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(render(clouds).as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_quoted_yaml() {
        let y = render(&[Cloud {
            name: "strato-admin",
            auth_url: "http://127.0.0.1:9696/v3",
            username: "admin",
            password: "p\"w: x",
            project: "admin",
            region: "RegionOne",
        }]);
        assert!(y.contains(
            "  \"strato-admin\":\n    auth:\n      auth_url: \"http://127.0.0.1:9696/v3\""
        ));
        assert!(y.contains("password: \"p\\\"w: x\""), "{y}");
    }
}

//! Running iproute2: `ip [-n NS] -batch -` with the commands on stdin (one
//! process per namespace keeps `up` fast), `ip -j` for status, and the
//! per-node command lists generated from the [`Plan`].

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};

use crate::error::HarnessError;
use crate::plan::{Link, Node, Plan, Route};

/// A `Command` for a helper that dies with its parent (so a SIGKILLed `up`
/// leaves no `ip` behind still creating things).
pub(crate) fn helper(program: &str) -> Command {
    let mut cmd = Command::new(program);
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no
    // memory of the parent; it is the only thing the hook does.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

fn render(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn status_text(out: &Output) -> String {
    match out.status.code() {
        Some(c) => format!("exit {c}"),
        None => format!("{}", out.status),
    }
}

/// Runs `cmd`, returns its output, fails on a non-zero exit.
pub(crate) fn run(mut cmd: Command) -> Result<Output, HarnessError> {
    let command = render(&cmd);
    tracing::debug!(%command, "run");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| HarnessError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(HarnessError::Command {
            command,
            status: status_text(&out),
            line: String::new(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}

/// `ip [-n netns] [-force] -batch -` with `lines` on stdin. On failure the
/// error quotes the failing line (iproute2 reports "Command failed -:N").
pub(crate) fn batch(
    netns: Option<&str>,
    lines: &[String],
    force: bool,
) -> Result<(), HarnessError> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut cmd = helper("ip");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    if force {
        cmd.arg("-force");
    }
    cmd.args(["-batch", "-"]);
    let command = render(&cmd);
    tracing::debug!(%command, lines = lines.len(), batch = %lines.join("; "), "ip batch");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| HarnessError::Spawn {
            command: command.clone(),
            source,
        })?;
    {
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let mut text = lines.join("\n");
        text.push('\n');
        // A write error means ip exited early; its status and stderr say why.
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|source| HarnessError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let line = failed_line(&stderr)
            .and_then(|n| lines.get(n.wrapping_sub(1)))
            .map(|l| format!(" at `{l}`"))
            .unwrap_or_default();
        return Err(HarnessError::Command {
            command,
            status: status_text(&out),
            line,
            stderr,
        });
    }
    Ok(())
}

/// The line number in iproute2's "Command failed -:N".
fn failed_line(stderr: &str) -> Option<usize> {
    let rest = stderr.split("Command failed -:").nth(1)?;
    rest.chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .ok()
}

/// `ip -j [-n netns] ARGS` parsed as JSON.
pub(crate) fn json(netns: &str, args: &[&str]) -> Result<serde_json::Value, HarnessError> {
    let mut cmd = helper("ip");
    cmd.args(["-j", "-n", netns]).args(args);
    let command = render(&cmd);
    let out = run(cmd)?;
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Value::Array(Vec::new()));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| HarnessError::Parse {
        command,
        reason: e.to_string(),
    })
}

/// Commands (for `ip -n <node> -batch`) that create the node's bridge and the
/// veth pairs it is the `a` side of; the `b` end is created straight in its
/// own namespace, so nothing ever appears in the root namespace.
pub(crate) fn create_lines(plan: &Plan, node: &Node) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(br) = &node.bridge {
        lines.push(format!("link add {} type bridge", br.ifname));
    }
    for link in plan.links.iter().filter(|l| l.a.node == node.name) {
        lines.push(veth_line(link));
    }
    lines
}

/// `link add A type veth peer name B netns NS_B`.
pub(crate) fn veth_line(link: &Link) -> String {
    format!(
        "link add {} type veth peer name {} netns {}",
        link.a.ifname, link.b.ifname, link.b.netns
    )
}

/// Idempotent configuration of a node (addresses, MTU, up, routes): applied
/// by `up` and re-applied by `heal` (taking a link down deletes its routes).
pub(crate) fn config_lines(plan: &Plan, node: &Node) -> Vec<String> {
    let mut lines = vec!["link set dev lo up".to_string()];
    if let Some(br) = &node.bridge {
        lines.push(format!("addr replace {} dev {}", br.addr, br.ifname));
        lines.push(format!("link set dev {} up", br.ifname));
    }
    for link in plan.links_of(&node.name) {
        for end in [&link.a, &link.b]
            .into_iter()
            .filter(|e| e.node == node.name)
        {
            if let Some(mtu) = link.mtu {
                lines.push(format!("link set dev {} mtu {mtu}", end.ifname));
            }
            if let Some(master) = &end.master {
                lines.push(format!("link set dev {} master {master}", end.ifname));
            }
            if let Some(addr) = end.addr {
                lines.push(format!("addr replace {addr} dev {}", end.ifname));
            }
            lines.push(format!("link set dev {} up", end.ifname));
        }
    }
    lines.extend(node.routes.iter().map(route_line));
    lines
}

/// `route replace DST via X` or `... nexthop via X nexthop via Y` (ECMP).
pub(crate) fn route_line(route: &Route) -> String {
    let dst = route
        .dst
        .map(|d| d.to_string())
        .unwrap_or_else(|| "default".to_string());
    match route.via.as_slice() {
        [one] => format!("route replace {dst} via {one}"),
        many => {
            let hops: Vec<String> = many.iter().map(|v| format!("nexthop via {v}")).collect();
            format!("route replace {dst} {}", hops.join(" "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Topology;

    #[test]
    fn batches_for_default_region() {
        let plan = Plan::new(&Topology::default_region(), "t");
        let fab = plan.node("az1-fab").expect("fab");
        assert_eq!(
            create_lines(&plan, fab),
            [
                "link add c1 type veth peer name eth0 netns t-az1-c1",
                "link add c2 type veth peer name eth0 netns t-az1-c2",
                "link add gw1 type veth peer name eth0 netns t-az1-gw1",
            ]
        );
        let cfg = config_lines(&plan, fab);
        assert_eq!(cfg[0], "link set dev lo up");
        assert!(
            cfg.contains(&"addr replace 198.18.0.1/31 dev spine".to_string()),
            "{cfg:?}"
        );
        assert!(
            cfg.contains(&"addr replace 198.18.1.4/31 dev gw1".to_string()),
            "{cfg:?}"
        );
        assert_eq!(
            cfg.last().expect("route"),
            "route replace default via 198.18.0.0"
        );

        let inet = plan.node("internet").expect("internet");
        let cfg = config_lines(&plan, inet);
        assert_eq!(
            cfg.last().expect("route"),
            "route replace 198.51.100.0/24 nexthop via 203.0.113.1 nexthop via 203.0.113.3"
        );
        let gw = plan.node("onprem-gw").expect("gw");
        assert_eq!(create_lines(&plan, gw)[0], "link add lan0 type bridge");
        assert!(config_lines(&plan, gw).contains(&"link set dev h1 master lan0".to_string()));
        // b ends (hosts) create nothing.
        assert!(create_lines(&plan, plan.node("az1-c1").expect("host")).is_empty());
    }

    #[test]
    fn failed_line_is_found() {
        assert_eq!(
            failed_line("Error: Nexthop has invalid gateway.\nCommand failed -:3"),
            Some(3)
        );
        assert_eq!(failed_line("something else"), None);
    }
}

//! A network namespace joined to the root namespace by a veth pair, for
//! isolating one node with `iptables -j DROP` inside the namespace.
//!
//! Root side `host_ip`/30 on `host_if`; namespace side `ns_ip`/30. Nodes
//! outside the namespace (and nats-server) listen on `host_ip`, reachable
//! from both sides; the isolated node listens on `ns_ip`. Isolation drops
//! every packet in and out of the namespace except on its loopback, so the
//! test can still talk to the isolated node from a thread that entered the
//! namespace ([`NetLab::run_inside`]).

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static LABS: AtomicU32 = AtomicU32::new(0);

/// Namespace names: `sluice-test-<pid>-<n>`.
const NS_PREFIX: &str = "sluice-test-";

/// Deletes the namespaces of test processes that no longer exist (killed
/// before their drop ran); deleting a namespace deletes its veth pair.
fn remove_stale_labs() {
    let Ok(entries) = std::fs::read_dir("/var/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(NS_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run(&["ip", "netns", "del", &name]);
        }
    }
}

pub struct NetLab {
    pub ns: String,
    host_if: String,
    pub host_ip: Ipv4Addr,
    pub ns_ip: Ipv4Addr,
}

fn run(args: &[&str]) -> Result<(), String> {
    let output = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

impl NetLab {
    /// Why this machine cannot run the namespace scenario, if it cannot.
    pub fn unavailable() -> Option<String> {
        if !shards::testing::is_root() {
            return Some("not root (network namespaces and iptables need root)".into());
        }
        if !have("ip") {
            return Some("`ip` (iproute2) is not installed; tools/test installs it".into());
        }
        if !have("iptables") {
            return Some("`iptables` is not installed; tools/test installs it".into());
        }
        None
    }

    /// Creates a namespace and veth pair with names and a /30 unique to this
    /// process and call.
    pub fn create() -> Result<NetLab, String> {
        let n = LABS.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        // Interface names are at most 15 bytes.
        let tag = format!("{:x}{n:x}", pid & 0xff_ffff);
        // 10.<200..>.x.y/30 from the pid and counter: distinct for concurrent
        // test processes, unlikely to collide with anything real.
        let slot = (pid.wrapping_mul(7919).wrapping_add(n)) & 0x3fff;
        let (b, c) = (200 + (slot >> 12) as u8, ((slot >> 6) & 0x3f) as u8);
        let d = ((slot & 0x3f) as u8) * 4;
        remove_stale_labs();
        let lab = NetLab {
            ns: format!("{NS_PREFIX}{pid}-{n}"),
            host_if: format!("slh{tag}"),
            host_ip: Ipv4Addr::new(10, b, c, d + 1),
            ns_ip: Ipv4Addr::new(10, b, c, d + 2),
        };
        let peer_if = format!("sln{tag}");
        let host_cidr = format!("{}/30", lab.host_ip);
        let ns_cidr = format!("{}/30", lab.ns_ip);
        let steps: Vec<Vec<&str>> = vec![
            vec!["ip", "netns", "add", &lab.ns],
            vec![
                "ip",
                "link",
                "add",
                &lab.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &peer_if,
            ],
            vec!["ip", "link", "set", &peer_if, "netns", &lab.ns],
            vec!["ip", "addr", "add", &host_cidr, "dev", &lab.host_if],
            vec!["ip", "link", "set", &lab.host_if, "up"],
            vec![
                "ip", "netns", "exec", &lab.ns, "ip", "addr", "add", &ns_cidr, "dev", &peer_if,
            ],
            vec![
                "ip", "netns", "exec", &lab.ns, "ip", "link", "set", &peer_if, "up",
            ],
            vec![
                "ip", "netns", "exec", &lab.ns, "ip", "link", "set", "lo", "up",
            ],
            // The namespace's own iptables must work (module, nft backend).
            vec!["ip", "netns", "exec", &lab.ns, "iptables", "-S", "INPUT"],
        ];
        for step in steps {
            // On failure, `lab` is dropped and tears down what exists.
            run(&step)?;
        }
        Ok(lab)
    }

    /// Prefix for a command that must run inside the namespace.
    pub fn exec_prefix(&self) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.ns.clone()]
    }

    /// Drops every packet entering or leaving the namespace (loopback
    /// inside it still works).
    pub fn isolate(&self) {
        for chain in [["INPUT", "-i"], ["OUTPUT", "-o"]] {
            run(&[
                "ip", "netns", "exec", &self.ns, "iptables", "-I", chain[0], "!", chain[1], "lo",
                "-j", "DROP",
            ])
            .expect("iptables DROP");
        }
    }

    /// Removes the DROP rules.
    pub fn heal(&self) {
        for chain in ["INPUT", "OUTPUT"] {
            run(&["ip", "netns", "exec", &self.ns, "iptables", "-F", chain])
                .expect("iptables flush");
        }
    }

    /// Runs `f` on a thread that entered the namespace (sockets it opens live
    /// there), for talking to the isolated node over its loopback.
    #[allow(unsafe_code)] // setns(2)
    pub fn run_inside<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.ns);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // SAFETY: setns(2) on an open namespace file descriptor; it only
            // changes this (fresh, single-purpose) thread's network namespace.
            let rc = unsafe {
                libc::setns(
                    std::os::unix::io::AsRawFd::as_raw_fd(&file),
                    libc::CLONE_NEWNET,
                )
            };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("thread inside the namespace panicked")
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        // Deleting the namespace deletes its veth end, which deletes the pair;
        // the explicit link delete covers a namespace that never got it.
        let _ = run(&["ip", "netns", "del", &self.ns]);
        let _ = run(&["ip", "link", "del", &self.host_if]);
    }
}

#[cfg(test)]
mod tests {
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::time::Duration;

    use super::NetLab;

    fn reachable(addr: SocketAddr) -> bool {
        TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
    }

    /// The lab itself: a listener inside the namespace is reachable from
    /// the root namespace until `isolate`, again after `heal`, and always
    /// from inside (loopback); teardown removes the namespace.
    #[test]
    fn lab_isolates_and_heals_a_namespace() {
        if let Some(reason) = NetLab::unavailable() {
            shards::testing::privileged_unavailable("lab_isolates_and_heals_a_namespace", &reason);
            return;
        }
        let lab = NetLab::create().expect("namespace set-up");
        let ns_ip = lab.ns_ip;
        let listener = lab.run_inside(move || TcpListener::bind((ns_ip, 0)).expect("bind inside"));
        let addr = listener.local_addr().expect("addr");
        // The root side binds too (nats-server and the other nodes do).
        let root = TcpListener::bind((lab.host_ip, 0)).expect("bind root side");
        let root_addr = root.local_addr().expect("addr");
        assert!(reachable(addr), "root → namespace before isolation");
        assert!(
            lab.run_inside(move || reachable(root_addr)),
            "namespace → root before isolation"
        );
        lab.isolate();
        assert!(!reachable(addr), "root → namespace while isolated");
        assert!(
            !lab.run_inside(move || reachable(root_addr)),
            "namespace → root while isolated"
        );
        assert!(
            lab.run_inside(move || reachable(addr)),
            "loopback inside while isolated"
        );
        lab.heal();
        assert!(reachable(addr), "root → namespace after healing");
        let ns = lab.ns.clone();
        drop(lab);
        let listed = std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns list");
        assert!(
            !String::from_utf8_lossy(&listed.stdout).contains(&ns),
            "{ns} left behind"
        );
    }
}

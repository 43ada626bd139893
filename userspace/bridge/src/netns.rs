//! Two network hosts on one machine for the bridge's tests and benchmark:
//! two network namespaces joined by a veth pair (root only), removed when
//! dropped. A process runs on a host through `ip netns exec`; both hosts
//! share the machine's /dev/shm, so local object names must differ.

use std::process::{Command, Stdio};

/// Host A's address.
pub const IP_A: &str = "10.231.0.1";
/// Host B's address.
pub const IP_B: &str = "10.231.0.2";

/// Runs a command; whether it succeeded.
pub fn sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Two network namespaces, A and B, joined by a veth pair; removed on drop.
pub struct Hosts {
    /// Host A's namespace.
    pub a: String,
    /// Host B's namespace.
    pub b: String,
    /// Host A's end of the veth pair.
    pub dev_a: String,
}

impl Hosts {
    /// Makes the two hosts, or says SKIPPED (with the reason) and gives
    /// `None` when this process may not.
    pub fn new(tag: &str) -> Option<Hosts> {
        // Root: the effective uid, from /proc.
        let root = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .map(|l| l.split_whitespace().nth(2) == Some("0"))
            })
            .unwrap_or(false);
        if !root {
            eprintln!("SKIPPED: making network namespaces needs root");
            return None;
        }
        if !sh(&["ip", "-V"]) {
            eprintln!("SKIPPED: `ip` (iproute2) is not installed");
            return None;
        }
        let id = format!("{}{tag}", std::process::id() % 100_000);
        let (va, vb) = (format!("hv{id}a"), format!("hv{id}b"));
        let h = Hosts {
            a: format!("hlb{id}a"),
            b: format!("hlb{id}b"),
            dev_a: va.clone(),
        };
        for cmd in [
            vec!["ip", "netns", "add", &h.a],
            vec!["ip", "netns", "add", &h.b],
            vec![
                "ip", "link", "add", &va, "type", "veth", "peer", "name", &vb,
            ],
            vec!["ip", "link", "set", &va, "netns", &h.a],
            vec!["ip", "link", "set", &vb, "netns", &h.b],
        ] {
            assert!(sh(&cmd), "{cmd:?} failed");
        }
        for (ns, dev, ip) in [(&h.a, &va, IP_A), (&h.b, &vb, IP_B)] {
            let cidr = format!("{ip}/24");
            for cmd in [
                vec!["ip", "-n", ns, "addr", "add", &cidr, "dev", dev],
                vec!["ip", "-n", ns, "link", "set", dev, "up"],
                vec!["ip", "-n", ns, "link", "set", "lo", "up"],
            ] {
                assert!(sh(&cmd), "{cmd:?} failed");
            }
        }
        Some(h)
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        sh(&["ip", "netns", "del", &self.a]);
        sh(&["ip", "netns", "del", &self.b]);
    }
}

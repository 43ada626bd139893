//! Bridge registry: each running `hwlink-bridge` process leaves a small
//! text file in the shm directory naming the objects it carries and the
//! zenoh keys they travel on, so that `hwlink ls` can show a bridged
//! object and its bridge process, and `hwlink rm --stale` can remove the
//! file of a bridge that died. Liveness is the process token's (it works
//! across PID namespaces).

use crate::dirs::Dirs;
use crate::process::{is_alive, my_token};
use crate::MapError;
use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;

/// Prefix of a bridge's registry file in the shm directory.
pub const BRIDGE_FILE_PREFIX: &str = "hwlink-bridge.";

/// Which way an object is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeDirection {
    /// Taken from the local object and published on the key.
    Export,
    /// Received from the key and delivered into the local object.
    Import,
}

/// One object a bridge carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeEntry {
    /// Export or import.
    pub direction: BridgeDirection,
    /// `mailbox`, `link` or `topic`.
    pub kind: String,
    /// The object's name as the user gave it.
    pub name: String,
    /// The zenoh key expression.
    pub key: String,
}

impl std::fmt::Display for BridgeEntry {
    /// `export mailbox `mbx.jobs` -> `hwlink/mailbox/jobs`` (or `import … <-`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (word, arrow) = match self.direction {
            BridgeDirection::Export => ("export", "->"),
            BridgeDirection::Import => ("import", "<-"),
        };
        write!(
            f,
            "{word} {} `{}` {arrow} `{}`",
            self.kind, self.name, self.key
        )
    }
}

/// A bridge process's registry file, as `hwlink ls` shows it.
#[derive(Debug, Clone)]
pub struct BridgeRecord {
    /// The file.
    pub path: PathBuf,
    /// The bridge's process token.
    pub token: u32,
    /// Its pid (in its own pid namespace).
    pub pid: u32,
    /// Whether it lives.
    pub alive: bool,
    /// What it carries.
    pub entries: Vec<BridgeEntry>,
}

/// The registration of this process as a bridge; dropping it removes the
/// file.
#[derive(Debug)]
pub struct BridgeRegistration {
    path: PathBuf,
}

impl Drop for BridgeRegistration {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn file_for(token: u32) -> PathBuf {
    Dirs::from_env()
        .shm
        .join(format!("{BRIDGE_FILE_PREFIX}{token:08x}"))
}

/// Writes this process's registry file (replacing it atomically).
pub fn register_bridge(entries: &[BridgeEntry]) -> Result<BridgeRegistration, MapError> {
    let token = my_token()?;
    let path = file_for(token);
    let tmp = path.with_file_name(format!(".{BRIDGE_FILE_PREFIX}{token:08x}.tmp"));
    let mut text = format!("hwlink-bridge 1\npid {}\n", std::process::id());
    for e in entries {
        let dir = match e.direction {
            BridgeDirection::Export => "export",
            BridgeDirection::Import => "import",
        };
        text.push_str(&format!("{dir} {} {} {}\n", e.kind, e.name, e.key));
    }
    let write = || -> io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        fs::rename(&tmp, &path)
    };
    write().map_err(|source| MapError::Create {
        path: path.clone(),
        source,
    })?;
    Ok(BridgeRegistration { path })
}

/// Parses one registry file's text; `None` if it is not one.
pub fn parse_bridge_file(text: &str) -> Option<(u32, Vec<BridgeEntry>)> {
    let mut lines = text.lines();
    if lines.next()? != "hwlink-bridge 1" {
        return None;
    }
    let pid = lines.next()?.strip_prefix("pid ")?.parse().ok()?;
    let mut entries = Vec::new();
    for line in lines {
        let mut w = line.split(' ');
        let direction = match w.next()? {
            "export" => BridgeDirection::Export,
            "import" => BridgeDirection::Import,
            _ => return None,
        };
        let kind = w.next()?.to_string();
        let name = w.next()?.to_string();
        let key = w.next()?.to_string();
        entries.push(BridgeEntry {
            direction,
            kind,
            name,
            key,
        });
    }
    Some((pid, entries))
}

/// Every bridge registry file in the shm directory.
pub fn list_bridges() -> Vec<BridgeRecord> {
    let Ok(dir) = fs::read_dir(Dirs::from_env().shm) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(hex) = name
            .to_str()
            .and_then(|n| n.strip_prefix(BRIDGE_FILE_PREFIX))
        else {
            continue;
        };
        let Ok(token) = u32::from_str_radix(hex, 16) else {
            continue;
        };
        let Some((pid, entries)) = fs::read_to_string(entry.path())
            .ok()
            .and_then(|t| parse_bridge_file(&t))
        else {
            continue;
        };
        out.push(BridgeRecord {
            path: entry.path(),
            token,
            pid,
            alive: is_alive(token),
            entries,
        });
    }
    out.sort_by_key(|r| r.pid);
    out
}

/// Removes the registry files of dead bridges; returns their paths.
pub fn remove_dead_bridges() -> Vec<PathBuf> {
    list_bridges()
        .into_iter()
        .filter(|r| !r.alive && fs::remove_file(&r.path).is_ok())
        .map(|r| r.path)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_text_round_trips() {
        let text = "hwlink-bridge 1\npid 42\nexport mailbox jobs hwlink/mailbox/jobs\nimport link rep hwlink/link/rep\n";
        let (pid, e) = parse_bridge_file(text).unwrap();
        assert_eq!(pid, 42);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].direction, BridgeDirection::Export);
        assert_eq!(e[1].key, "hwlink/link/rep");
        assert!(parse_bridge_file("something else\n").is_none());
        assert!(parse_bridge_file("hwlink-bridge 1\npid x\n").is_none());
    }
}

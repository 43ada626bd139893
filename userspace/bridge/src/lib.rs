//! hwlink-bridge: carries hwlink mailboxes, links and topics between
//! machines over zenoh. Stages keep using plain hwlink; only the bridge
//! speaks zenoh. One bridge process exports local objects (takes their
//! messages and publishes them on a key) and imports others (subscribes to
//! a key and delivers into a local object), with end-to-end back-pressure,
//! exactly-once in-order delivery per exporting stream while both bridges
//! run, and resending across network failures (see the README's
//! "Beyond one machine").
#![deny(unsafe_code)]
// The bridge's counters and stop flags are plain std atomics: it has no
// loom model (its concurrency is zenoh's callbacks and a few threads
// joined by mutexes), so the library's loom shim does not apply.
#![allow(clippy::disallowed_types)]
#![warn(missing_docs)]

pub mod bench;
pub mod check;
pub mod export;
pub mod import;
pub mod local;
pub mod netns;
pub mod stats;
pub mod wire;

use std::io::Read;

/// Why the bridge stopped.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The command line.
    #[error("{0}")]
    Usage(String),
    /// zenoh refused something.
    #[error("zenoh, {what}: {detail} (check --connect/--listen and the zenoh config file)")]
    Zenoh {
        /// What the bridge was doing.
        what: String,
        /// zenoh's error.
        detail: String,
    },
    /// Opening a local object.
    #[error("opening local {kind} `{name}`: {source}")]
    Open {
        /// Which kind.
        kind: local::Kind,
        /// Which object.
        name: String,
        /// Why.
        source: hwlink::OpenError,
    },
    /// A local object failed while carried.
    #[error("{0}")]
    Local(String),
    /// The registry file for `hwlink ls`.
    #[error("registering the bridge for `hwlink ls`: {0}")]
    Registry(#[from] hwlink_drivers::MapError),
}

impl BridgeError {
    /// A zenoh error with what the bridge was doing.
    pub fn zenoh(what: String, e: impl std::fmt::Display) -> BridgeError {
        BridgeError::Zenoh {
            what,
            detail: e.to_string(),
        }
    }
}

/// The key acknowledgements of `key` travel on.
pub fn ack_key(key: &str) -> String {
    format!("hwlink-ack/{key}")
}

/// The default key of an object: `hwlink/<kind>/<name>`.
pub fn default_key(kind: local::Kind, name: &str) -> String {
    format!("hwlink/{}/{name}", kind.as_str())
}

/// A random nonzero 64-bit id (a stream or an importer).
pub fn random_id() -> u64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        b = (t ^ (u64::from(std::process::id()) << 32)).to_le_bytes();
    }
    u64::from_le_bytes(b).max(1)
}

/// One `--export` or `--import` argument, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectSpec {
    /// Which kind.
    pub kind: local::Kind,
    /// The local object's name.
    pub name: String,
    /// The zenoh key.
    pub key: String,
}

/// Parses `--export KIND:NAME[=KEY]`.
pub fn parse_export(s: &str) -> Result<ObjectSpec, BridgeError> {
    let (obj, key) = match s.split_once('=') {
        Some((o, k)) => (o, Some(k)),
        None => (s, None),
    };
    let (kind, name) = parse_object(obj)?;
    let key = key.map_or_else(|| default_key(kind, &name), str::to_string);
    check_key(&key)?;
    Ok(ObjectSpec { kind, name, key })
}

/// Parses `--import KEY=KIND:NAME` (or `KIND:NAME` for the default key).
pub fn parse_import(s: &str) -> Result<ObjectSpec, BridgeError> {
    let (key, obj) = match s.split_once('=') {
        Some((k, o)) => (Some(k), o),
        None => (None, s),
    };
    let (kind, name) = parse_object(obj)?;
    let key = key.map_or_else(|| default_key(kind, &name), str::to_string);
    check_key(&key)?;
    Ok(ObjectSpec { kind, name, key })
}

fn parse_object(s: &str) -> Result<(local::Kind, String), BridgeError> {
    let (kind, name) = s.split_once(':').ok_or_else(|| {
        BridgeError::Usage(format!(
            "`{s}`: name an object as mailbox:NAME, link:NAME or topic:NAME"
        ))
    })?;
    let kind = kind.parse().map_err(BridgeError::Usage)?;
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(BridgeError::Usage(format!(
            "`{s}`: the object needs a name"
        )));
    }
    Ok((kind, name.to_string()))
}

fn check_key(key: &str) -> Result<(), BridgeError> {
    if key.is_empty()
        || key.contains(['*', '$', '?', '#', ' '])
        || key.starts_with('/')
        || key.ends_with('/')
    {
        return Err(BridgeError::Usage(format!(
            "key `{key}`: give a plain zenoh key such as hwlink/mailbox/jobs (no wildcards)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use local::Kind;

    #[test]
    fn specs_parse() {
        assert_eq!(
            parse_export("mailbox:jobs").unwrap(),
            ObjectSpec {
                kind: Kind::Mailbox,
                name: "jobs".into(),
                key: "hwlink/mailbox/jobs".into()
            }
        );
        assert_eq!(parse_export("link:a=x/y").unwrap().key, "x/y");
        let i = parse_import("x/y=topic:t").unwrap();
        assert_eq!(
            (i.kind, i.name.as_str(), i.key.as_str()),
            (Kind::Topic, "t", "x/y")
        );
        assert_eq!(parse_import("link:r").unwrap().key, "hwlink/link/r");
        assert!(parse_export("queue:x").is_err());
        assert!(parse_export("mailbox:").is_err());
        assert!(parse_export("mailbox:x=a/**").is_err());
        assert!(parse_import("nokind").is_err());
    }
}

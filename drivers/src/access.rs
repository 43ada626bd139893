//! Who may use a new region file: its mode and its group. Closed (0600,
//! the creator's group) unless the creator asks for more.

use std::fs::{File, Metadata, Permissions};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::error::MapError;

/// A group, by id or by name (looked up when a region is created).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Group {
    /// A numeric group id.
    Id(u32),
    /// A group name from the group database (`/etc/group`, NSS).
    Name(String),
}

impl From<u32> for Group {
    fn from(gid: u32) -> Self {
        Group::Id(gid)
    }
}

impl From<&str> for Group {
    fn from(name: &str) -> Self {
        Group::Name(name.to_owned())
    }
}

impl From<String> for Group {
    fn from(name: String) -> Self {
        Group::Name(name)
    }
}

/// The mode and group of a new region file.
///
/// The owner always has read and write (a region is mapped read-write);
/// execute bits are dropped. Other users reach a region only when its mode
/// gives them read and write: `0o660` with a group shares it with that
/// group's members. A hugepage region shared this way needs a hugetlbfs
/// mount the group can write to (`hwlink setup --group NAME`); a hugepage
/// memfd can never be shared between users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileAccess {
    mode: u32,
    group: Option<Group>,
}

impl Default for FileAccess {
    fn default() -> Self {
        FileAccess::private()
    }
}

impl FileAccess {
    /// Mode 0600, the creator's group: only the creator's user.
    pub const fn private() -> Self {
        FileAccess {
            mode: 0o600,
            group: None,
        }
    }

    /// `mode` (masked to `0o666`, owner read-write forced) and `group`
    /// (`None`: the creator's group, or a shared hugetlbfs mount's).
    pub fn new(mode: u32, group: Option<Group>) -> Self {
        FileAccess {
            mode: (mode & 0o666) | 0o600,
            group,
        }
    }

    /// The same with `mode`.
    pub fn with_mode(self, mode: u32) -> Self {
        FileAccess::new(mode, self.group)
    }

    /// The same with `group`.
    pub fn with_group(self, group: impl Into<Group>) -> Self {
        FileAccess::new(self.mode, Some(group.into()))
    }

    /// The file mode bits.
    pub fn mode(&self) -> u32 {
        self.mode
    }

    /// The group asked for, if any.
    pub fn group(&self) -> Option<&Group> {
        self.group.as_ref()
    }

    /// Whether users other than the owner get read and write through the
    /// group or the world bits.
    pub fn is_shared(&self) -> bool {
        self.mode & 0o066 != 0
    }

    /// The access of an existing region file, for the files that belong to
    /// it (a domain's links, a queue's segments): its mode, and its group
    /// unless the world may use it anyway.
    pub(crate) fn of_file(meta: &Metadata) -> FileAccess {
        let mode = meta.mode() & 0o666;
        let group = (mode & 0o006 != 0o006).then(|| Group::Id(meta.gid()));
        FileAccess::new(mode, group)
    }

    /// The numeric group id asked for, looked up by name if need be.
    pub(crate) fn gid(&self) -> Result<Option<u32>, MapError> {
        match &self.group {
            None => Ok(None),
            Some(Group::Id(gid)) => Ok(Some(*gid)),
            Some(Group::Name(name)) => match nix::unistd::Group::from_name(name) {
                Ok(Some(g)) => Ok(Some(g.gid.as_raw())),
                Ok(None) => Err(MapError::UnknownGroup {
                    group: name.clone(),
                    source: None,
                }),
                Err(e) => Err(MapError::UnknownGroup {
                    group: name.clone(),
                    source: Some(std::io::Error::from(e)),
                }),
            },
        }
    }
}

/// Gives the new region file `file` (at `path`) group `gid` if set, then
/// `mode`, whatever the umask.
pub(crate) fn apply(file: &File, path: &Path, mode: u32, gid: Option<u32>) -> Result<(), MapError> {
    if let Some(gid) = gid {
        let current = file.metadata().map(|m| m.gid()).ok();
        if current != Some(gid) {
            std::os::unix::fs::fchown(file, None, Some(gid)).map_err(|source| MapError::Chown {
                path: path.to_owned(),
                gid,
                source,
            })?;
        }
    }
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(|source| MapError::Create {
            path: path.to_owned(),
            source,
        })
}

/// Whether directory `meta` lets the users a region is shared with create
/// files in it: the world may write it, or the group may and it is the
/// group asked for (with none asked for: a group of this process, which
/// the new file then takes, as a file in /dev/shm takes this process's).
pub(crate) fn dir_serves(meta: &Metadata, gid: Option<u32>) -> bool {
    let mode = meta.mode();
    let world = mode & 0o007 == 0o007;
    let group = mode & 0o070 == 0o070
        && match gid {
            Some(g) => g == meta.gid(),
            None => my_groups().contains(&meta.gid()),
        };
    meta.is_dir() && (world || group)
}

/// This process's effective and supplementary groups.
fn my_groups() -> Vec<u32> {
    let mut groups: Vec<u32> = nix::unistd::getgroups()
        .unwrap_or_default()
        .into_iter()
        .map(|g| g.as_raw())
        .collect();
    groups.push(nix::unistd::getegid().as_raw());
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_masked_and_owner_keeps_read_write() {
        assert_eq!(FileAccess::new(0o777, None).mode(), 0o666);
        assert_eq!(FileAccess::new(0o060, None).mode(), 0o660);
        assert_eq!(FileAccess::new(0o400, None).mode(), 0o600);
        assert!(!FileAccess::private().is_shared());
        assert!(FileAccess::new(0o660, None).is_shared());
        assert!(FileAccess::private().with_mode(0o606).is_shared());
    }

    #[test]
    fn groups_resolve_by_id_and_name() {
        assert_eq!(
            FileAccess::new(0o660, Some(7.into())).gid().unwrap(),
            Some(7)
        );
        assert_eq!(
            FileAccess::new(0o660, Some("root".into())).gid().unwrap(),
            Some(0)
        );
        let e = FileAccess::new(0o660, Some("no-such-group-hwl".into()))
            .gid()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no-such-group-hwl") && e.contains("groupadd"),
            "{e}"
        );
    }
}

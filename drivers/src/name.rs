//! Region names and the file names derived from them.

use crate::error::MapError;

/// Longest accepted region name, in bytes.
pub const MAX_NAME_LEN: usize = 48;

/// Prefix of every region file name: `hwlink.<name>`.
pub(crate) const FILE_PREFIX: &str = "hwlink.";

/// Suffix of memfd locator files: `hwlink.<name>.memfd`.
pub(crate) const LOCATOR_SUFFIX: &str = ".memfd";

/// Checks that `name` is 1 to 48 characters of `[A-Za-z0-9_.-]`, does not
/// start with `.`, and does not end in `.memfd` (reserved for locator files).
pub fn validate_name(name: &str) -> Result<(), MapError> {
    let reason = if name.is_empty() {
        Some("the name is empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("the name is longer than 48 characters")
    } else if name.starts_with('.') {
        Some("the name starts with '.'")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        Some("the name has a character other than A-Z a-z 0-9 _ . -")
    } else if name.ends_with(LOCATOR_SUFFIX) {
        Some("names ending in \".memfd\" are reserved for memfd locator files")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(MapError::InvalidName {
            name: name.to_owned(),
            reason,
        }),
    }
}

/// `hwlink.<name>`: the region file in the hugetlbfs or shm directory.
pub(crate) fn file_name(name: &str) -> String {
    format!("{FILE_PREFIX}{name}")
}

/// `hwlink.<name>.memfd`: the locator file of a memfd region.
pub(crate) fn locator_file_name(name: &str) -> String {
    format!("{FILE_PREFIX}{name}{LOCATOR_SUFFIX}")
}

/// What a directory entry is, judged by its file name alone.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    /// `hwlink.<name>`: a region file.
    Region(String),
    /// `hwlink.<name>.memfd`: a memfd locator.
    Locator(String),
}

/// Recognises hwlink file names; anything else (including names that fail
/// [`validate_name`]) is `None`.
pub(crate) fn parse_file_name(file_name: &str) -> Option<Entry> {
    let rest = file_name.strip_prefix(FILE_PREFIX)?;
    let entry = match rest.strip_suffix(LOCATOR_SUFFIX) {
        Some(name) => Entry::Locator(name.to_owned()),
        None => Entry::Region(rest.to_owned()),
    };
    let (Entry::Region(name) | Entry::Locator(name)) = &entry;
    validate_name(name).ok().map(|()| entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_good_names() {
        for name in ["a", "ring0", "my-app_1.v2", "A.b-c_D", &"x".repeat(48), "0"] {
            validate_name(name).unwrap_or_else(|e| panic!("{name:?}: {e}"));
        }
    }

    #[test]
    fn rejects_bad_names() {
        for name in [
            "",
            ".hidden",
            "..",
            "a/b",
            "a b",
            "tab\t",
            "ümlaut",
            "semi;colon",
            "x.memfd",
            &"x".repeat(49),
        ] {
            match validate_name(name) {
                Err(MapError::InvalidName { name: n, .. }) => assert_eq!(n, name),
                other => panic!("{name:?} accepted: {other:?}"),
            }
        }
        let msg = validate_name("a/b").unwrap_err().to_string();
        assert!(msg.contains("A-Z a-z 0-9 _ . -"), "{msg}");
    }

    #[test]
    fn file_names_round_trip() {
        assert_eq!(file_name("r1"), "hwlink.r1");
        assert_eq!(locator_file_name("r1"), "hwlink.r1.memfd");
        assert_eq!(
            parse_file_name("hwlink.r1"),
            Some(Entry::Region("r1".into()))
        );
        assert_eq!(
            parse_file_name("hwlink.r1.memfd"),
            Some(Entry::Locator("r1".into()))
        );
        assert_eq!(parse_file_name("hwlink."), None);
        assert_eq!(parse_file_name("hwlink..x"), None);
        assert_eq!(parse_file_name(".hwlink.r1.memfd.1.tmp"), None);
        assert_eq!(parse_file_name("other"), None);
        assert_eq!(parse_file_name("hwlink.a b"), None);
    }
}

//! Where shm regions live.

use std::path::PathBuf;

/// The shm directory (`HWLINK_SHM_DIR`, else `/dev/shm`).
pub fn shm_dir() -> PathBuf {
    std::env::var_os("HWLINK_SHM_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/dev/shm"), PathBuf::from)
}

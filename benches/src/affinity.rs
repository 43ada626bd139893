//! CPU affinity for the measuring thread: pin it to a CPU for a run and
//! give it back its old mask afterwards (the one affinity helper of both
//! harnesses, `bench/` and `pingpong`).

use std::io;

/// The thread's CPU mask as it was before [`Pinned::to`]; restored on drop.
pub struct Pinned(Option<libc::cpu_set_t>);

impl Pinned {
    /// Remembers the current mask, then pins this thread to `cpu` (none:
    /// leaves it as it is).
    pub fn to(cpu: Option<usize>) -> io::Result<Pinned> {
        let saved = Pinned(current_mask());
        if let Some(cpu) = cpu {
            hwlink::liveness::pin_to_cpu(cpu)?;
        }
        Ok(saved)
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        if let Some(set) = self.0.take() {
            // SAFETY: restores a mask read from the kernel; pointer and size
            // describe `set`.
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
        }
    }
}

fn current_mask() -> Option<libc::cpu_set_t> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set, filled by the call.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pointer and size describe `set`.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    (rc == 0).then_some(set)
}

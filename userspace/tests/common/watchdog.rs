//! A watchdog that aborts a test stuck in a blocking call.

use std::sync::mpsc;
use std::time::Duration;

/// Aborts the whole test process, with a message, if it is not dropped
/// within its limit: a blocking call that never returns fails loudly
/// instead of hanging CI (peers die with us through PR_SET_PDEATHSIG, and
/// regions left behind are named after the test).
pub struct Watchdog {
    done: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    pub fn new(limit: Duration, what: impl Into<String>) -> Watchdog {
        let what = what.into();
        let (tx, rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                eprintln!(
                    "WATCHDOG: `{what}` did not finish within {limit:?}: aborting the test process"
                );
                std::process::abort();
            }
        });
        Watchdog {
            done: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.done.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

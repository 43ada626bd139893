//! Victim processes: this binary re-executed with `victim` and the trial in
//! its environment, stdout read line by line (each line timestamped on
//! arrival), stdin kept for the harness to say "stop", reaped with wait4 so
//! that its peak memory is known. A victim dies with the harness
//! (`PR_SET_PDEATHSIG`) and has its address space limited.

use crate::proto::now_ns;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Address space a victim may map (regions, segments, heap).
const ADDRESS_SPACE: u64 = 8 << 30;

/// How a victim ended.
#[derive(Debug, Clone)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

pub struct Victim {
    pub pid: i32,
    pub role: String,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<(u64, String)>,
    /// Every line so far, with its arrival time.
    pub seen: Vec<(u64, String)>,
    pub exit: Option<Exit>,
    /// Peak resident memory in KiB (after exit).
    pub max_rss_kib: i64,
    /// The harness killed it on purpose.
    pub killed: bool,
}

impl Victim {
    pub fn spawn(dir: &Path, role: &str, env: &[(&str, String)]) -> Victim {
        let exe = std::env::current_exe().expect("own executable");
        let mut cmd = Command::new(exe);
        cmd.arg("victim")
            .env("HWLINK_SHM_DIR", dir)
            .env(crate::proto::env::ROLE, role)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(match std::env::var_os("HWLINK_CHAOS_STDERR") {
                // Debugging: every victim's stderr, appended to one file.
                Some(path) => std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_or(Stdio::null(), Stdio::from),
                None => Stdio::null(),
            });
        for (k, v) in env {
            cmd.env(k, v);
        }
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                let lim = libc::rlimit {
                    rlim_cur: ADDRESS_SPACE,
                    rlim_max: ADDRESS_SPACE,
                };
                libc::setrlimit(libc::RLIMIT_AS, &lim);
                Ok(())
            });
        }
        // Reaped by `reap` with wait4 (for its peak memory), not Child::wait.
        #[allow(clippy::zombie_processes)]
        let mut child = cmd.spawn().expect("spawn victim");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((now_ns(), line)).is_err() {
                    break;
                }
            }
        });
        Victim {
            pid: child.id() as i32,
            role: role.to_string(),
            stdin: child.stdin.take(),
            lines: rx,
            seen: Vec::new(),
            exit: None,
            max_rss_kib: 0,
            killed: false,
        }
    }

    /// Collects what arrived.
    pub fn drain(&mut self) {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
    }

    /// Waits until a line starting with one of `prefixes` arrives (or the
    /// stream ends, or `timeout`); returns it.
    pub fn wait_for(&mut self, prefixes: &[&str], timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        if let Some(l) = self
            .seen
            .iter()
            .find(|(_, l)| prefixes.iter().any(|p| l.starts_with(p)))
        {
            return Some(l.1.clone());
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = prefixes.iter().any(|p| l.1.starts_with(p));
                    let text = l.1.clone();
                    self.seen.push(l);
                    if hit {
                        return Some(text);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => return None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// A line to the victim's stdin.
    pub fn tell(&mut self, line: &str) {
        if let Some(s) = &mut self.stdin {
            let _ = writeln!(s, "{line}");
            let _ = s.flush();
        }
    }

    pub fn kill(&mut self) {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        self.killed = true;
    }

    /// Reaps the victim if it has ended, within `timeout`; false if it is
    /// still running.
    pub fn reap(&mut self, timeout: Duration) -> bool {
        if self.exit.is_some() {
            return true;
        }
        let deadline = Instant::now() + timeout;
        loop {
            let mut status = 0;
            // SAFETY: all-zero rusage is valid; wait4 fills it.
            let mut ru: libc::rusage = unsafe { core::mem::zeroed() };
            // SAFETY: our own child; pointers to our locals.
            let r = unsafe { libc::wait4(self.pid, &mut status, libc::WNOHANG, &mut ru) };
            if r == self.pid {
                self.max_rss_kib = ru.ru_maxrss;
                self.exit = Some(if libc::WIFSIGNALED(status) {
                    Exit::Signal(libc::WTERMSIG(status))
                } else {
                    Exit::Code(libc::WEXITSTATUS(status))
                });
                // The reader thread's last lines: up to the pipe's end
                // (the victim is gone, so it comes at once unless the
                // machine is loaded).
                let end = Instant::now() + Duration::from_secs(2);
                while let Ok(l) = self
                    .lines
                    .recv_timeout(end.saturating_duration_since(Instant::now()))
                {
                    self.seen.push(l);
                }
                return true;
            }
            if r < 0 || Instant::now() >= deadline {
                self.drain();
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        if self.exit.is_none() {
            self.kill();
            self.reap(Duration::from_secs(2));
        }
    }
}

/// A fresh directory `/dev/shm/hwlink-<kind>.<pid>.<trial>` for the
/// regions and liveness files of one trial (HWLINK_SHM_DIR of its
/// processes), emptied first.
pub fn private_dir(kind: &str, trial: u64) -> PathBuf {
    let dir = PathBuf::from(format!(
        "/dev/shm/hwlink-{kind}.{}.{trial}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the trial's region directory");
    dir
}

/// The environment every victim gets: its object's kind and name, its own
/// id and wait strategy, the trial's seed and message size, its peers; the
/// command's own settings follow in `extra`.
#[allow(clippy::too_many_arguments)]
pub fn victim_env(
    kind: crate::proto::Kind,
    wait: hwlink::WaitStrategy,
    name: &str,
    id: u32,
    seed: u64,
    size: usize,
    peers: &str,
    extra: &[(&'static str, String)],
) -> Vec<(&'static str, String)> {
    use crate::proto::env;
    let mut v = vec![
        (env::KIND, kind.name().to_string()),
        (env::WAIT, wait.to_string()),
        (env::NAME, name.to_string()),
        (env::ID, id.to_string()),
        (env::SEED, seed.to_string()),
        (env::SIZE, size.to_string()),
        (env::PEERS, peers.to_string()),
    ];
    v.extend_from_slice(extra);
    v
}

//! ivshmem links on the host: two real `hwlink` processes over one memory
//! file (as a host process and a guest see the same ivshmem memory), and
//! blocking round trips through `hwlink ivshmem-server` whose doorbells are
//! the peers' eventfds. The same commands run against a real guest kernel in
//! ci/guest/run-tests.sh; these tests keep the host half honest without QEMU.

mod run_hwlink;

use hwlink::{LinkBuilder, OpenError, WaitStrategy};
use hwlink_drivers::DeviceMemory;
use run_hwlink::hwlink;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// A fresh, zeroed 4 MiB memory file in /dev/shm, removed on drop.
struct MemoryFile(PathBuf);

impl MemoryFile {
    fn new(tag: &str) -> MemoryFile {
        let path = PathBuf::from(format!("/dev/shm/hwlink-test-{tag}-{}", std::process::id()));
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(4 << 20).unwrap();
        MemoryFile(path)
    }
    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
    fn map(&self) -> Arc<DeviceMemory> {
        Arc::new(DeviceMemory::open_shared_file(&self.0).unwrap())
    }
}

impl Drop for MemoryFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn spawn_hwlink(args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_hwlink"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run hwlink")
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn two_processes_exchange_100k_messages_each_way_exactly_once() {
    let mem = MemoryFile::new("exchange");
    let b = spawn_hwlink(&[
        "exchange",
        "--device",
        mem.arg(),
        "--role",
        "b",
        "--timeout",
        "60",
    ]);
    let (a, _) = hwlink(
        &[
            "exchange",
            "--device",
            mem.arg(),
            "--role",
            "a",
            "--timeout",
            "60",
        ],
        Duration::from_secs(90),
    );
    let b = b.wait_with_output().unwrap();
    for (side, out) in [("a", &a), ("b", &b)] {
        let t = text(out);
        assert!(out.status.success(), "side {side} failed: {t}");
        assert!(
            t.contains("OK: sent 100000 and received 100000"),
            "side {side}: {t}"
        );
    }
}

/// An `hwlink ivshmem-server` on a private socket, killed on drop.
struct Server {
    child: std::process::Child,
    dir: PathBuf,
    device: String,
}

impl Server {
    fn start(tag: &str) -> Server {
        let dir = std::env::temp_dir().join(format!("hwlink-ivs-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("server.sock");
        let memory = dir.join("memory");
        let mut child = spawn_hwlink(&[
            "ivshmem-server",
            "--socket",
            socket.to_str().unwrap(),
            "--memory",
            memory.to_str().unwrap(),
            "--size",
            "4M",
        ]);
        while !socket.exists() {
            assert!(child.try_wait().unwrap().is_none(), "the server exited");
            std::thread::sleep(Duration::from_millis(10));
        }
        let device = format!("server:{}", socket.display());
        Server { child, dir, device }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn blocking_round_trips_through_the_ivshmem_server_doorbells() {
    let server = Server::start("park");
    let device = server.device.as_str();
    // Both ends park: every message wakes a sleeping process by eventfd.
    let echo = spawn_hwlink(&["pingpong-echo", "--device", device, "--wait", "park"]);
    let (out, _) = hwlink(
        &[
            "pingpong",
            "--backend",
            "ivshmem",
            "--device",
            device,
            "--wait",
            "park",
            "--count",
            "1000",
        ],
        Duration::from_secs(120),
    );
    let echo = echo.wait_with_output().unwrap();
    let (t, e) = (text(&out), text(&echo));
    assert!(out.status.success(), "pingpong failed: {t}");
    assert!(t.contains("hardware doorbell") && t.contains("p50"), "{t}");
    println!("{t}");
    assert!(echo.status.success(), "echo failed: {e}");
    // 100 warm-up round trips, then the 1000 measured ones.
    assert!(e.contains("answered 1100 pings"), "{e}");
    // Both really slept and were woken by the other's ring.
    for out in [&t, &e] {
        let woken: u64 = out
            .split("woken by the peer ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no doorbell report in {out}"));
        assert!(woken > 0, "never woken by a doorbell: {out}");
    }
}

#[test]
fn bench_over_ivshmem_measures_every_size_against_the_echo() {
    let server = Server::start("bench");
    let device = server.device.as_str();
    let json = server.dir.join("bench.json");
    let echo = spawn_hwlink(&["pingpong-echo", "--device", device, "--wait", "poll"]);
    let (out, _) = hwlink(
        &[
            "bench",
            "--backend",
            "ivshmem",
            "--device",
            device,
            "--sizes",
            "8,1K",
            "--duration",
            "0.1",
            "--json",
            json.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    let echo = echo.wait_with_output().unwrap();
    let t = text(&out);
    assert!(out.status.success(), "bench failed: {t}");
    assert!(echo.status.success(), "echo failed: {}", text(&echo));
    assert!(t.contains("8 B (") && t.contains("1024 B ("), "{t}");
    let written = std::fs::read_to_string(&json).unwrap();
    assert!(
        written.contains(r#""size":8,"#) && written.contains(r#""size":1024,"#),
        "{written}"
    );

    let (out, _) = hwlink(&["bench", "--backend", "ivshmem"], Duration::from_secs(30));
    assert!(!out.status.success());
    assert!(text(&out).contains("needs --device"), "{}", text(&out));
}

#[test]
fn links_on_one_memory_are_found_by_name_and_refuse_what_cannot_work() {
    let mem = MemoryFile::new("names");
    let memory = mem.map();
    let on = |name: &str| {
        LinkBuilder::new(name)
            .on_device(memory.clone())
            .capacity(64)
            .slot_size(64)
            .wait(WaitStrategy::BusyPoll)
            .ready_timeout(Duration::from_millis(50))
    };
    let mut tx1 = on("first").create_sender().unwrap();
    let mut tx2 = on("second").create_sender().unwrap();
    let mut rx2 = on("second").open_receiver().unwrap();
    let mut rx1 = on("first").open_receiver().unwrap();
    tx1.send(b"one").unwrap();
    tx2.send(b"two").unwrap();
    assert_eq!(rx1.recv().unwrap(), b"one");
    assert_eq!(rx2.recv().unwrap(), b"two");
    assert_eq!(tx1.backing(), hwlink::BackingKind::Device);

    let err = on("first").create_sender().unwrap_err();
    assert!(matches!(err, OpenError::DeviceNameTaken { .. }), "{err}");
    let err = on("absent").open_receiver().unwrap_err();
    assert!(matches!(err, OpenError::NotOnDevice { .. }), "{err}");
    assert!(
        err.to_string().contains("start the side that creates it"),
        "{err}"
    );
    let err = on("parked")
        .wait(WaitStrategy::Park)
        .create_sender()
        .unwrap_err();
    assert!(
        matches!(err, OpenError::InvalidConfig(ref m) if m.contains("futex cannot wake")),
        "{err}"
    );
    let err = on("huge")
        .capacity(1 << 16)
        .slot_size(1024)
        .create_sender()
        .unwrap_err();
    assert!(matches!(err, OpenError::DeviceFull { .. }), "{err}");
}

#[test]
fn a_corrupt_region_chain_is_an_error_not_a_hang() {
    let mem = MemoryFile::new("corrupt");
    let memory = mem.map();
    let on = |name: &str| {
        LinkBuilder::new(name)
            .on_device(memory.clone())
            .capacity(8)
            .slot_size(8)
            .wait(WaitStrategy::BusyPoll)
            .ready_timeout(Duration::from_millis(50))
    };
    drop(on("a").create_sender().unwrap());
    // The first region's total_size (offset 24) now points past the end.
    assert!(memory.write_register(24, 0x7fff_f000));
    let err = on("b").open_receiver().unwrap_err();
    assert!(matches!(err, OpenError::Corrupt { .. }), "{err}");
    // A magic that is neither zero, claimed nor hwlink's.
    assert!(memory.write_register(0, 0xdead_beef));
    let err = on("b").create_sender().unwrap_err();
    assert!(matches!(err, OpenError::BadMagic { .. }), "{err}");
}

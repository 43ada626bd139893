//! The `hwlink` commands for device memory: `exchange` (an exactly-once
//! stream both ways over ivshmem memory, host or guest side), `vfio
//! bind|unbind`, `ivshmem-server`, and round trips over ivshmem
//! (`pingpong --backend ivshmem` and its `pingpong-echo`).

use hwlink::WaitStrategy;
use hwlink_benches::exchange::{Exchange, Role};
use hwlink_benches::remote_pingpong::RemoteLinks;
use hwlink_drivers::{IvshmemTarget, PciDevice};
use std::sync::Arc;
use std::time::Duration;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(clap::Args)]
pub(crate) struct ExchangeArgs {
    /// The ivshmem memory: the host file given to QEMU (host side), or
    /// pci:BDF, pci-wc:BDF, vfio:BDF or a BDF (guest side).
    #[arg(long)]
    device: IvshmemTarget,
    /// a or b: the two sides of the exchange (one on each side of the VM).
    #[arg(long, value_parser = parse_role)]
    role: Role,
    /// Link name prefix, the same on both sides.
    #[arg(long, default_value = "exchange")]
    name: String,
    /// Messages each way.
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Bytes per message (at least 8).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Slots per ring.
    #[arg(long, default_value_t = 256)]
    capacity: u32,
    /// Seconds the whole exchange may take.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// Side a creates both links and b only opens them (give it on both
    /// sides): for a side b on write-combining memory, which cannot create.
    #[arg(long)]
    a_creates_both: bool,
}

fn parse_role(s: &str) -> Result<Role, String> {
    match s {
        "a" | "A" => Ok(Role::A),
        "b" | "B" => Ok(Role::B),
        _ => Err(format!("role {s:?}: use a or b")),
    }
}

pub(crate) fn exchange_cmd(args: ExchangeArgs) -> Result<(), BoxError> {
    let memory = Arc::new(args.device.map()?);
    println!(
        "exchange: {} ({} bytes, {}), role {:?}, {} messages of {} B each way",
        memory.source(),
        memory.len(),
        memory.kind(),
        args.role,
        args.count,
        args.size
    );
    let ex = Exchange {
        name: args.name,
        role: args.role,
        count: args.count,
        size: args.size,
        capacity: args.capacity,
        timeout: Duration::from_secs_f64(args.timeout),
        a_creates_both: args.a_creates_both,
    };
    let out = ex.run(memory)?;
    let secs = out.elapsed.as_secs_f64();
    println!(
        "exchange: OK: sent {} and received {} (each exactly once, in order) in {:.3} s, {:.0} messages/s each way",
        out.sent,
        out.received,
        secs,
        out.received as f64 / secs.max(1e-9)
    );
    Ok(())
}

#[derive(clap::Subcommand)]
pub(crate) enum VfioCmd {
    /// Bind a PCI device to vfio-pci (driver_override, then drivers_probe).
    Bind {
        /// PCI address, e.g. 0000:00:03.0.
        bdf: String,
    },
    /// Give a PCI device back to its default driver.
    Unbind {
        /// PCI address, e.g. 0000:00:03.0.
        bdf: String,
    },
}

pub(crate) fn vfio_cmd(cmd: VfioCmd) -> Result<(), BoxError> {
    match cmd {
        VfioCmd::Bind { bdf } => {
            let dev = PciDevice::by_address(&bdf)?;
            let group = dev.bind_vfio()?;
            println!(
                "{} bound to vfio-pci, IOMMU group {group} (/dev/vfio/{group})",
                dev.address()
            );
            // Open it once through VFIO to show what it offers.
            let vfio = hwlink_drivers::VfioDevice::open(dev.address())?;
            let info = vfio.info();
            let bars: Vec<String> = (0..6)
                .filter_map(|bar| {
                    let r = vfio.region_info(bar).ok()?;
                    (r.size > 0).then(|| {
                        format!(
                            "BAR{bar} {} bytes{}",
                            r.size,
                            if r.mappable { " (mmap)" } else { "" }
                        )
                    })
                })
                .collect();
            println!(
                "{}: {} regions ({}), {} interrupt indexes, {} MSI-X vectors, reset {}",
                dev.address(),
                info.regions,
                bars.join(", "),
                info.irqs,
                vfio.msix_vectors()?,
                if info.can_reset {
                    "supported (done)"
                } else {
                    "not supported"
                }
            );
        }
        VfioCmd::Unbind { bdf } => {
            let dev = PciDevice::by_address(&bdf)?;
            dev.unbind_vfio()?;
            println!(
                "{} unbound from vfio-pci; driver now: {}",
                dev.address(),
                dev.driver().unwrap_or_else(|| "none".into())
            );
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub(crate) struct IvshmemServerArgs {
    /// UNIX socket QEMU's ivshmem-doorbell chardev and host peers connect to.
    #[arg(long, default_value = "/tmp/hwlink-ivshmem.sock")]
    socket: std::path::PathBuf,
    /// The shared memory file handed to every peer (created if missing).
    #[arg(long, default_value = "/dev/shm/hwlink-ivshmem")]
    memory: std::path::PathBuf,
    /// Make the memory file afresh (zeroed) with this many bytes (K and M
    /// suffixes allowed); without it, the file is served as it is.
    #[arg(long, value_parser = crate::parse_size)]
    size: Option<usize>,
    /// Interrupt vectors per peer (QEMU's vectors= must match).
    #[arg(long, default_value_t = hwlink_drivers::ivshmem::DOORBELL_VECTORS)]
    vectors: u16,
}

pub(crate) fn ivshmem_server_cmd(args: IvshmemServerArgs) -> Result<(), BoxError> {
    let server = hwlink_drivers::IvshmemServer::bind(
        &args.socket,
        &args.memory,
        args.size.map(|s| s as u64),
        args.vectors,
    )?;
    println!(
        "ivshmem-server: listening on {} with {} ({} vectors per peer); start QEMU with \
         -chardev socket,path={},id=ivs -device ivshmem-doorbell,chardev=ivs,vectors={}",
        args.socket.display(),
        args.memory.display(),
        args.vectors,
        args.socket.display(),
        args.vectors
    );
    server.serve(|line| println!("ivshmem-server: {line}"))?;
    Ok(())
}

/// How the ends of a link on `device` wait, and what that needs opened.
fn remote_links(
    device: &IvshmemTarget,
    wait: WaitStrategy,
    name: &str,
    open_timeout: f64,
) -> Result<RemoteLinks, BoxError> {
    let (memory, doorbell) = device.open(wait != WaitStrategy::BusyPoll)?;
    println!(
        "memory: {} ({} bytes, {}), wait {wait}{}",
        memory.source(),
        memory.len(),
        memory.kind(),
        match &doorbell {
            Some(b) => format!(", hardware doorbell (peer id {})", b.own_id()),
            None => String::new(),
        }
    );
    Ok(RemoteLinks {
        name: name.to_owned(),
        memory: Arc::new(memory),
        doorbell,
        wait,
        open_timeout: Duration::from_secs_f64(open_timeout),
    })
}

#[derive(clap::Args)]
pub(crate) struct PingpongEchoArgs {
    /// The ivshmem memory (see `hwlink pingpong --device`).
    #[arg(long)]
    device: IvshmemTarget,
    /// How this end waits: poll, spin-park or park (these two sleep on the
    /// hardware doorbell).
    #[arg(long, default_value_t = WaitStrategy::Park)]
    wait: WaitStrategy,
    /// Link name prefix, the same on both sides.
    #[arg(long, default_value = "pingpong")]
    name: String,
    /// Seconds to wait for the measuring side.
    #[arg(long, default_value_t = 300.0)]
    timeout: f64,
}

pub(crate) fn pingpong_echo_cmd(args: PingpongEchoArgs) -> Result<(), BoxError> {
    let links = remote_links(&args.device, args.wait, &args.name, args.timeout)?;
    let answered = links.echo()?;
    println!("pingpong-echo: OK: answered {answered} pings");
    print_doorbell(&links);
    Ok(())
}

/// `hwlink pingpong --backend ivshmem --device X`: the measuring side, the
/// echo side being `hwlink pingpong-echo` on the other side of the VM.
pub(crate) fn pingpong_ivshmem(args: super::PingpongArgs) -> Result<(), BoxError> {
    let (device, count, size, wait) = (args.device, args.count, args.size, args.wait);
    let json = args.json;
    let device = device.ok_or(
        "--backend ivshmem needs --device: the VM's memory file or server:SOCKET on the \
         host, vfio:BDF or pci:BDF in the guest",
    )?;
    let links = remote_links(&device, wait, "pingpong", 300.0)?;
    println!(
        "hwlink pingpong over ivshmem: {count} round trips of {size} bytes with \
         `hwlink pingpong-echo` on the other side"
    );
    let stats = hwlink_benches::remote_pingpong::summarise(links.measure(count, size)?)?;
    crate::print_stats(&format!("hwlink ivshmem ({wait})"), &stats, None);
    print_doorbell(&links);
    if json {
        println!(
            r#"{{"backend":"ivshmem","device":"{device}","wait":"{wait}","size":{size},"count":{count},"rtt_ns":{}}}"#,
            stats.to_json()
        );
    }
    Ok(())
}

/// `hwlink bench --backend ivshmem --device X`: round trips at each size
/// against `hwlink pingpong-echo` on the other side of the VM, over one
/// session, with the wait strategy of the one hwlink mechanism given.
pub(crate) fn bench_ivshmem(args: super::BenchArgs) -> Result<(), BoxError> {
    let (device, sizes, mechanisms) = (args.device, args.sizes, args.mechanisms);
    let (duration, quick, json) = (args.duration, args.quick, args.json);
    use hwlink_benches::bench::Mechanism;
    let device = device.ok_or(
        "--backend ivshmem needs --device: the VM's memory file or server:SOCKET on the \
         host, vfio:BDF or pci:BDF in the guest",
    )?;
    let wait = match mechanisms.as_deref() {
        None | Some([Mechanism::HwlinkPoll]) => WaitStrategy::BusyPoll,
        Some([Mechanism::HwlinkSpinPark]) => WaitStrategy::SpinPark,
        Some([Mechanism::HwlinkPark]) => WaitStrategy::Park,
        Some(_) => {
            return Err(
                "over ivshmem, give one of --mechanisms hwlink-poll, hwlink-spin-park \
                        or hwlink-park (the other side runs `hwlink pingpong-echo`; the \
                        kernel's IPC does not cross into a VM)"
                    .into(),
            )
        }
    };
    let sizes = sizes.unwrap_or(if quick {
        vec![8, 4096]
    } else {
        vec![8, 64, 1024, 4096]
    });
    let per_size = Duration::from_secs_f64(duration.unwrap_or(if quick { 0.2 } else { 1.0 }));
    let largest = sizes.iter().copied().max().unwrap_or(8);
    let links = remote_links(&device, wait, "pingpong", 300.0)?;
    let mut session = links.connect(largest)?;
    println!(
        "hwlink bench over ivshmem ({device}): round trips against `hwlink pingpong-echo` \
         on the other side, {:.1} s per size",
        per_size.as_secs_f64()
    );
    let mut rows = Vec::new();
    for &size in &sizes {
        session.round_trips(size, hwlink_benches::remote_pingpong::WARMUP, None)?;
        let samples = session.round_trips(size, 1_000_000, Some(per_size))?;
        let n = samples.len();
        let stats = hwlink_benches::remote_pingpong::summarise(samples)?;
        crate::print_stats(&format!("{size} B ({n} round trips)"), &stats, None);
        rows.push(format!(
            r#"{{"size":{size},"count":{n},"rtt_ns":{}}}"#,
            stats.to_json()
        ));
    }
    if let Some(path) = json {
        let text = format!(
            r#"{{"backend":"ivshmem","device":"{device}","wait":"{wait}","round_trips":[{}]}}"#,
            rows.join(",")
        );
        std::fs::write(&path, text + "\n")?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// How the hardware doorbell's waits ended: evidence that a blocking run
/// really slept and was woken by interrupts.
fn print_doorbell(links: &RemoteLinks) {
    if let Some(bell) = &links.doorbell {
        let c = bell.counts();
        println!(
            "doorbell: rang the peer {} times; woken by the peer {} times; {} sleeps timed out",
            c.rung, c.woken, c.timed_out
        );
    }
}

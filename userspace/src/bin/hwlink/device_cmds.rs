//! The `hwlink` commands for device memory: `exchange` (an exactly-once
//! stream both ways over ivshmem memory, host or guest side) and `vfio
//! bind|unbind`.

use hwlink::exchange::{Exchange, Role};
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

//! The raw VFIO calls (ioctls on the container, group and device files) and
//! eventfds: the only unsafe code of the VFIO driver, which lives in
//! `vfio.rs`. Structures come from `vfio-bindings`; the request numbers are
//! linux/vfio.h's `_IO(VFIO_TYPE, VFIO_BASE + n)`.

#![allow(unsafe_code)]

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use vfio_bindings::bindings::vfio::{
    vfio_device_info, vfio_group_status, vfio_irq_info, vfio_irq_set, vfio_region_info, VFIO_BASE,
    VFIO_TYPE,
};

const fn vfio_io(n: u32) -> libc::c_ulong {
    ((VFIO_TYPE as libc::c_ulong) << 8) | (VFIO_BASE + n) as libc::c_ulong
}

pub(crate) const GET_API_VERSION: libc::c_ulong = vfio_io(0);
pub(crate) const CHECK_EXTENSION: libc::c_ulong = vfio_io(1);
pub(crate) const SET_IOMMU: libc::c_ulong = vfio_io(2);
pub(crate) const GROUP_GET_STATUS: libc::c_ulong = vfio_io(3);
pub(crate) const GROUP_SET_CONTAINER: libc::c_ulong = vfio_io(4);
pub(crate) const GROUP_UNSET_CONTAINER: libc::c_ulong = vfio_io(5);
pub(crate) const GROUP_GET_DEVICE_FD: libc::c_ulong = vfio_io(6);
pub(crate) const DEVICE_GET_INFO: libc::c_ulong = vfio_io(7);
pub(crate) const DEVICE_GET_REGION_INFO: libc::c_ulong = vfio_io(8);
pub(crate) const DEVICE_GET_IRQ_INFO: libc::c_ulong = vfio_io(9);
pub(crate) const DEVICE_SET_IRQS: libc::c_ulong = vfio_io(10);
pub(crate) const DEVICE_RESET: libc::c_ulong = vfio_io(11);

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// An ioctl whose argument is a plain integer (or none).
pub(crate) fn ioctl_value(
    file: &File,
    request: libc::c_ulong,
    arg: libc::c_ulong,
) -> io::Result<libc::c_int> {
    // SAFETY: the requests used with this helper (GET_API_VERSION,
    // CHECK_EXTENSION, SET_IOMMU, DEVICE_RESET, GROUP_UNSET_CONTAINER) take
    // an integer or nothing and never dereference it; `file` is borrowed
    // open for the call.
    check(unsafe { libc::ioctl(file.as_raw_fd(), request, arg) })
}

/// An ioctl that reads and fills one `#[repr(C)]` VFIO structure whose
/// first field is `argsz` (the caller sets it).
///
/// # Safety
/// `request` must be a VFIO request whose argument is exactly a `T`.
unsafe fn ioctl_struct<T>(
    file: &File,
    request: libc::c_ulong,
    arg: &mut T,
) -> io::Result<libc::c_int> {
    // SAFETY: the caller guarantees `request` takes a `T`; `arg` is a valid,
    // exclusive `T` for the whole call and the kernel writes at most
    // `argsz <= size_of::<T>()` bytes into it.
    check(unsafe { libc::ioctl(file.as_raw_fd(), request, arg as *mut T) })
}

/// VFIO_GROUP_GET_STATUS.
pub(crate) fn group_status(group: &File) -> io::Result<vfio_group_status> {
    let mut v = vfio_group_status {
        argsz: size_of::<vfio_group_status>() as u32,
        flags: 0,
    };
    // SAFETY: GROUP_GET_STATUS takes a vfio_group_status.
    unsafe { ioctl_struct(group, GROUP_GET_STATUS, &mut v) }?;
    Ok(v)
}

/// VFIO_DEVICE_GET_INFO.
pub(crate) fn device_info(device: &File) -> io::Result<vfio_device_info> {
    let mut v = vfio_device_info {
        argsz: size_of::<vfio_device_info>() as u32,
        flags: 0,
        num_regions: 0,
        num_irqs: 0,
        cap_offset: 0,
        pad: 0,
    };
    // SAFETY: DEVICE_GET_INFO takes a vfio_device_info.
    unsafe { ioctl_struct(device, DEVICE_GET_INFO, &mut v) }?;
    Ok(v)
}

/// VFIO_DEVICE_GET_REGION_INFO for region `index`.
pub(crate) fn region_info(device: &File, index: u32) -> io::Result<vfio_region_info> {
    let mut v = vfio_region_info {
        argsz: size_of::<vfio_region_info>() as u32,
        flags: 0,
        index,
        cap_offset: 0,
        size: 0,
        offset: 0,
    };
    // SAFETY: DEVICE_GET_REGION_INFO takes a vfio_region_info.
    unsafe { ioctl_struct(device, DEVICE_GET_REGION_INFO, &mut v) }?;
    Ok(v)
}

/// VFIO_DEVICE_GET_IRQ_INFO for interrupt index `index`.
pub(crate) fn irq_info(device: &File, index: u32) -> io::Result<vfio_irq_info> {
    let mut v = vfio_irq_info {
        argsz: size_of::<vfio_irq_info>() as u32,
        flags: 0,
        index,
        count: 0,
    };
    // SAFETY: DEVICE_GET_IRQ_INFO takes a vfio_irq_info.
    unsafe { ioctl_struct(device, DEVICE_GET_IRQ_INFO, &mut v) }?;
    Ok(v)
}

/// VFIO_GROUP_SET_CONTAINER: the argument is a pointer to the container fd.
pub(crate) fn group_set_container(group: &File, container: &File) -> io::Result<()> {
    let fd: libc::c_int = container.as_raw_fd();
    // SAFETY: the request reads one int through the pointer, which points to
    // `fd` on our stack for the duration of the call.
    check(unsafe {
        libc::ioctl(
            group.as_raw_fd(),
            GROUP_SET_CONTAINER,
            &fd as *const libc::c_int,
        )
    })?;
    Ok(())
}

/// VFIO_GROUP_GET_DEVICE_FD: the argument is the device's name; returns a
/// new device file.
pub(crate) fn group_get_device_fd(group: &File, name: &CStr) -> io::Result<File> {
    // SAFETY: the request reads a NUL-terminated string, which `name` is and
    // which outlives the call.
    let fd = check(unsafe { libc::ioctl(group.as_raw_fd(), GROUP_GET_DEVICE_FD, name.as_ptr()) })?;
    // SAFETY: the kernel just returned this new descriptor; we own it alone.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// VFIO_DEVICE_SET_IRQS with ACTION_TRIGGER: attaches `fds` (eventfds, or
/// -1 to detach one) to vectors `start..start + fds.len()` of IRQ `index`;
/// with no fds, DATA_NONE with count 0 disables the whole index.
pub(crate) fn set_irq_eventfds(
    device: &File,
    index: u32,
    start: u32,
    fds: &[RawFd],
) -> io::Result<()> {
    use vfio_bindings::bindings::vfio::{
        VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_EVENTFD, VFIO_IRQ_SET_DATA_NONE,
    };
    let header = std::mem::size_of::<vfio_irq_set>();
    let argsz = header + std::mem::size_of_val(fds);
    // A u32 buffer keeps the header's 4-byte alignment.
    let mut buf = vec![0u32; argsz.div_ceil(4)];
    let data = if fds.is_empty() {
        VFIO_IRQ_SET_DATA_NONE
    } else {
        VFIO_IRQ_SET_DATA_EVENTFD
    };
    let set = vfio_irq_set {
        argsz: argsz as u32,
        flags: data | VFIO_IRQ_SET_ACTION_TRIGGER,
        index,
        start,
        count: fds.len() as u32,
        data: Default::default(),
    };
    // SAFETY: `buf` holds at least `header` bytes, is 4-byte aligned (as
    // vfio_irq_set is), and nothing else refers to it.
    unsafe { buf.as_mut_ptr().cast::<vfio_irq_set>().write(set) };
    for (i, fd) in fds.iter().enumerate() {
        // SAFETY: `header + 4 * i + 4 <= argsz <= 4 * buf.len()`; the offset
        // is a multiple of 4 (header is 20 bytes), so the i32 is aligned.
        unsafe {
            buf.as_mut_ptr()
                .cast::<u8>()
                .add(header + 4 * i)
                .cast::<i32>()
                .write(*fd)
        };
    }
    // SAFETY: the request reads `argsz` bytes: a vfio_irq_set followed by
    // `count` i32 descriptors, all inside `buf`, which outlives the call.
    check(unsafe { libc::ioctl(device.as_raw_fd(), DEVICE_SET_IRQS, buf.as_ptr()) })?;
    Ok(())
}

/// A new non-blocking, close-on-exec eventfd with counter 0.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes two integers and returns a new fd or -1.
    let fd = check(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    // SAFETY: the kernel just returned this new descriptor; we own it alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Waits until `fd` is readable or `timeout` passes (None: forever).
/// Returns whether it is readable; EINTR counts as not yet.
pub(crate) fn poll_readable(fd: RawFd, timeout: Option<std::time::Duration>) -> io::Result<bool> {
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as libc::c_int);
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd on our stack for the duration of the call.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(e)
        };
    }
    Ok(n > 0 && p.revents & libc::POLLIN != 0)
}

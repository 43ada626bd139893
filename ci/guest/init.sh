#!/bin/busybox sh
# /init of the test guest (ci/guest/run-tests.sh builds the initramfs): mounts
# the kernel file systems, runs the one test named by hwltest= on the kernel
# command line against the ivshmem device, prints HWLINK-GUEST-RESULT and
# powers off. Options come from the command line too: hwlcount=N (messages).
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# Every hwlink process keeps its liveness file in /dev/shm (hw/SPEC.md §8.8),
# as on any distribution.
mkdir -p /dev/shm
mount -t tmpfs -o mode=1777 shm /dev/shm
export PATH=/bin

arg() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
test=$(arg hwltest)
count=$(arg hwlcount)
: "${count:=100000}"

ivshmem_bdf() {
  for d in /sys/bus/pci/devices/*; do
    if [ "$(cat "$d/vendor")" = 0x1af4 ] && [ "$(cat "$d/device")" = 0x1110 ]; then
      basename "$d"
      return 0
    fi
  done
  return 1
}

load_vfio() {
  for m in irqbypass vfio vfio_iommu_type1 vfio_virqfd vfio-pci-core vfio-pci; do
    insmod "/modules/$m.ko" || { echo "guest: insmod $m failed"; return 1; }
  done
}

run() {
  bdf=$(ivshmem_bdf) || { echo "guest: no ivshmem device (1af4:1110)"; return 1; }
  echo "guest: ivshmem at $bdf, test $test"
  case "$test" in
    sysfs)
      # This guest has no IOMMU: VFIO must refuse with a clear error.
      load_vfio || return 1
      if hwlink vfio bind "$bdf" 2>&1 | tee /dev/console | grep -q 'in no IOMMU group'; then
        echo "guest: vfio bind without an IOMMU is refused with a clear error"
      else
        echo "guest: vfio bind without an IOMMU was not refused clearly"; return 1
      fi
      hwlink exchange --device "pci:$bdf" --role b --count "$count" ;;
    sysfs-wc)
      # Write-combining memory refuses to create a link (no reliable CAS)...
      if hwlink exchange --device "pci-wc:$bdf" --role b --count 1 --timeout 5 2>&1 |
        tee /dev/console | grep -q 'does not allow creating a link'; then
        echo "guest: creating on write-combining memory is refused, as documented"
      else
        echo "guest: creating on write-combining memory was not refused"; return 1
      fi
      # ...but carries the rings the host created, with store fences.
      hwlink exchange --device "pci-wc:$bdf" --role b --a-creates-both --count "$count" ;;
    poll) hwlink pingpong-echo --device "pci:$bdf" --wait poll ;;
    vm2vm-a) hwlink exchange --device "pci:$bdf" --role a --count "$count" ;;
    vm2vm-b) hwlink exchange --device "pci:$bdf" --role b --count "$count" ;;
    vfio)
      load_vfio && hwlink vfio bind "$bdf" &&
        hwlink exchange --device "vfio:$bdf" --role b --count "$count" ;;
    doorbell)
      load_vfio && hwlink vfio bind "$bdf" &&
        hwlink pingpong-echo --device "vfio:$bdf" --wait park ;;
    *) echo "guest: unknown test '$test'"; return 1 ;;
  esac
}

run
echo "HWLINK-GUEST-RESULT: $test rc=$?"
poweroff -f

#!/usr/bin/env bash
# Runs hwlink against a real Linux kernel: boots Debian's 6.1 kernel in QEMU
# (TCG) with an ivshmem device and runs one process in the guest and one on
# the host over the same memory. Tests:
#   sysfs     guest maps BAR 2 through sysfs resource2; 100,000 messages each
#             way between the guest and a host process, exactly once; the
#             guest has no IOMMU, and `hwlink vfio bind` must say so clearly
#   vfio      the same, BAR 2 mapped through VFIO (vfio-pci, intel-iommu)
#   doorbell  ivshmem-doorbell through `hwlink ivshmem-server`: the guest
#             blocks on the hardware doorbell (MSI-X through VFIO), the host
#             rings it and the other way round, 1,000 blocking round trips
#   sysfs-wc  BAR 2 through resource2_wc (write-combining): creating a link
#             there is refused (no reliable CAS); 100,000 messages each way
#             over links the host created, with store fences
#   poll      1,000 busy-polling round trips host <-> guest (sysfs BAR 2)
#   vm2vm     two guests on one ivshmem memory: 100,000 messages each way
#
# Usage: ci/guest/run-tests.sh [TEST...]
#        (default: sysfs vfio doorbell sysfs-wc poll vm2vm)
# Prints "SKIPPED: reason" and exits 0 when it cannot run here (not root, no
# apt-get, no network for the first download); exits 1 when a test fails.
# Env: HWLINK_GUEST_CACHE (default /var/cache/hwlink-guest), HWLINK_GUEST_COUNT
#      (messages each way, default 100000), HWLINK_GUEST_ROUND_TRIPS (default
#      1000).
# QEMU runs under TCG: this machine's /dev/kvm is nested; with it QEMU 7.2
# aborts (-cpu host: MSR 0x10a) or the kernel does not boot within a minute.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=$PWD

skip() { echo "SKIPPED: guest tests: $*"; exit 0; }
[ "$(id -u)" -eq 0 ] || skip "need root (apt-get download into the cache, /dev/shm files for QEMU)"
command -v apt-get >/dev/null || skip "need a Debian machine (apt-get) to fetch QEMU and the kernel"

tests=("$@")
[ "${#tests[@]}" -gt 0 ] || tests=(sysfs vfio doorbell sysfs-wc poll vm2vm)
count="${HWLINK_GUEST_COUNT:-100000}"

if ! cache="$(ci/guest/fetch.sh | tail -n1)"; then
  skip "could not fetch QEMU, the kernel and busybox from Debian's packages (see above)"
fi
kver="$(cat "$cache/kernel-version")"

work="$(mktemp -d /tmp/hwlink-guest.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
  rm -f /dev/shm/hwlink-guest-$$-*
}
trap cleanup EXIT

echo "==> building hwlink static (glibc, crt-static) for the guest and the host side"
target=x86_64-unknown-linux-gnu
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --quiet \
  --target "$target" -p hwlink-cli --bin hwlink
bin="$(RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target "$target" \
  -p hwlink-cli --bin hwlink --message-format=json 2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n1)"
[ -x "$bin" ] || { echo "could not find the static hwlink binary"; exit 1; }

echo "==> initramfs (busybox, vfio modules, hwlink)"
root="$work/root"
mkdir -p "$root"/{bin,proc,sys,dev,tmp,modules}
cp "$cache/root/bin/busybox" "$root/bin/busybox"
cp "$bin" "$root/bin/hwlink"
cp ci/guest/init.sh "$root/init"
chmod +x "$root/init"
mods="$cache/root/lib/modules/$kver/kernel"
for m in virt/lib/irqbypass drivers/vfio/vfio drivers/vfio/vfio_iommu_type1 \
         drivers/vfio/vfio_virqfd drivers/vfio/pci/vfio-pci-core drivers/vfio/pci/vfio-pci; do
  cp "$mods/$m.ko" "$root/modules/"
done
(cd "$root" && find . | "$cache/root/bin/busybox" cpio -o -H newc 2>/dev/null) | gzip -1 > "$work/initrd.gz"

export LD_LIBRARY_PATH="$cache/root/usr/lib/x86_64-linux-gnu:$cache/root/lib/x86_64-linux-gnu"
qemu=("$cache/root/usr/bin/qemu-system-x86_64" -L "$cache/root/usr/share/qemu"
      -L "$cache/root/usr/share/seabios" -accel tcg -cpu max -smp 1 -m 256
      -machine q35 -nographic -no-reboot
      -nic none -kernel "$cache/vmlinux" -initrd "$work/initrd.gz")

# boot_guest TEST LOG MEMFILE [extra qemu args...]: starts QEMU in the background.
boot_guest() {
  local t="$1" log="$2"; shift 2
  timeout 600 "${qemu[@]}" \
    -append "console=ttyS0 quiet intel_iommu=on panic=-1 hwltest=$t hwlcount=$guest_count" \
    "$@" < /dev/null > "$log" 2>&1 &
  qemu_pid=$!
  pids+=("$qemu_pid")
}

guest_result() { # LOG TEST: 0 when the guest's test passed
  grep -q "HWLINK-GUEST-RESULT: $2 rc=0" "$1"
}

passed=0 failed=0
# Devices only the VFIO tests add (intel-iommu, for VFIO in the guest).
iommu=()
report() { # NAME RC HOSTLOG GUESTLOG
  if [ "$2" -eq 0 ]; then
    passed=$((passed + 1)); echo "PASS: guest test $1"
  else
    failed=$((failed + 1)); echo "FAIL: guest test $1"
    echo "--- host side"; cat "$3" || true
    echo "--- guest console"; tr -d '\r' < "$4" | grep -v '^\s*$' | tail -n 40 || true
  fi
}

run_exchange_test() { # TEST [host exchange options...]
  local t="$1" mem="/dev/shm/hwlink-guest-$$-$1"
  shift
  local hostlog="$work/$t.host" guestlog="$work/$t.guest"
  rm -f "$mem"; truncate -s 4M "$mem"
  guest_count="$count"
  local t0=$SECONDS
  boot_guest "$t" "$guestlog" "${iommu[@]}" \
    -object "memory-backend-file,id=hwlmem,size=4M,share=on,mem-path=$mem" \
    -device ivshmem-plain,memdev=hwlmem
  local rc=0
  "$bin" exchange --device "$mem" --role a --count "$count" --timeout 300 "$@" > "$hostlog" 2>&1 &
  local host_pid=$!
  pids+=("$host_pid")
  wait "$qemu_pid" || true
  # The guest is done (or failed): the host side gets 30 s more, not the
  # rest of its 300 s, to finish.
  for _ in $(seq 300); do kill -0 "$host_pid" 2>/dev/null || break; sleep 0.1; done
  kill "$host_pid" 2>/dev/null || true
  wait "$host_pid" || rc=$?
  guest_result "$guestlog" "$t" || rc=1
  echo "    host:  $(tail -n1 "$hostlog")"
  tr -d '\r' < "$guestlog" | grep -E '^(exchange: |guest: (creating|vfio bind)|0000:.*(bound|regions)|hwlink: error)' | sed 's/^\(guest: \)*/    guest: /'
  echo "    ($((SECONDS - t0)) s including boot)"
  report "$t ($count messages each way, host <-> guest)" "$rc" "$hostlog" "$guestlog"
}

run_poll_test() {
  local t=poll mem="/dev/shm/hwlink-guest-$$-poll"
  local hostlog="$work/$t.host" guestlog="$work/$t.guest"
  local trips="${HWLINK_GUEST_ROUND_TRIPS:-1000}"
  rm -f "$mem"; truncate -s 4M "$mem"
  guest_count="$trips"
  local t0=$SECONDS
  boot_guest "$t" "$guestlog" \
    -object "memory-backend-file,id=hwlmem,size=4M,share=on,mem-path=$mem" \
    -device ivshmem-plain,memdev=hwlmem
  local rc=0
  "$bin" pingpong --backend ivshmem --device "$mem" --wait poll --count "$trips" \
    > "$hostlog" 2>&1 || rc=$?
  wait "$qemu_pid" || true
  guest_result "$guestlog" "$t" || rc=1
  sed 's/^/    host:  /' "$hostlog"
  tr -d '\r' < "$guestlog" | grep -E '^(memory|pingpong-echo):' | sed 's/^/    guest: /'
  echo "    ($((SECONDS - t0)) s including boot)"
  report "poll ($trips busy-polling round trips host <-> guest, sysfs BAR 2)" \
    "$rc" "$hostlog" "$guestlog"
}

run_vm2vm_test() {
  local mem="/dev/shm/hwlink-guest-$$-vm2vm"
  local loga="$work/vm2vm-a.guest" logb="$work/vm2vm-b.guest"
  rm -f "$mem"; truncate -s 4M "$mem"
  guest_count="$count"
  local t0=$SECONDS
  local shared=(-object "memory-backend-file,id=hwlmem,size=4M,share=on,mem-path=$mem"
                -device ivshmem-plain,memdev=hwlmem)
  boot_guest vm2vm-a "$loga" "${shared[@]}"
  local qa=$qemu_pid
  boot_guest vm2vm-b "$logb" "${shared[@]}"
  local qb=$qemu_pid
  wait "$qa" || true
  wait "$qb" || true
  local rc=0
  guest_result "$loga" vm2vm-a || rc=1
  guest_result "$logb" vm2vm-b || rc=1
  for l in "$loga" "$logb"; do
    tr -d '\r' < "$l" | grep -E '^exchange: ' | sed 's/^/    guest: /'
  done
  echo "    ($((SECONDS - t0)) s including two boots)"
  report "vm2vm ($count messages each way between two guests on one ivshmem memory)" \
    "$rc" "$loga" "$logb"
}

run_doorbell_test() {
  local t=doorbell mem="/dev/shm/hwlink-guest-$$-doorbell" sock="$work/ivshmem.sock"
  local hostlog="$work/$t.host" guestlog="$work/$t.guest" serverlog="$work/$t.server"
  local trips="${HWLINK_GUEST_ROUND_TRIPS:-1000}"
  guest_count="$trips"
  local t0=$SECONDS
  "$bin" ivshmem-server --socket "$sock" --memory "$mem" --size 4M > "$serverlog" 2>&1 &
  local server_pid=$!
  pids+=("$server_pid")
  for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
  boot_guest "$t" "$guestlog" -device intel-iommu,intremap=on \
    -chardev "socket,path=$sock,id=ivs" -device ivshmem-doorbell,chardev=ivs,vectors=2
  local rc=0
  # Both ends park: each blocks on its hardware doorbell until the other rings.
  "$bin" pingpong --backend ivshmem --device "server:$sock" --wait park \
    --count "$trips" > "$hostlog" 2>&1 || rc=$?
  wait "$qemu_pid" || true
  kill "$server_pid" 2>/dev/null || true
  guest_result "$guestlog" "$t" || rc=1
  sed 's/^/    host:  /' "$hostlog"
  tr -d '\r' < "$guestlog" | grep -E '^(memory|pingpong-echo|doorbell):|^0000:.*(bound|regions)' |
    sed 's/^/    guest: /'
  echo "    ($((SECONDS - t0)) s including boot)"
  # Both sides must really have slept and been woken by the other's ring.
  grep -Eq 'woken by the peer [1-9]' "$hostlog" || { echo "    the host was never woken by a doorbell"; rc=1; }
  tr -d '\r' < "$guestlog" | grep -Eq 'woken by the peer [1-9]' ||
    { echo "    the guest was never woken by a doorbell"; rc=1; }
  report "doorbell ($trips blocking round trips host <-> guest over MSI-X and eventfds)" \
    "$rc" "$hostlog" "$guestlog"
}

for t in "${tests[@]}"; do
  echo "==> guest test: $t"
  case "$t" in
    sysfs) run_exchange_test "$t" ;;
    vfio) iommu=(-device intel-iommu,intremap=on); run_exchange_test "$t"; iommu=() ;;
    sysfs-wc) run_exchange_test "$t" --a-creates-both ;;
    poll) run_poll_test ;;
    vm2vm) run_vm2vm_test ;;
    doorbell) run_doorbell_test ;;
    *) echo "unknown guest test $t"; failed=$((failed + 1)) ;;
  esac
done

echo "guest: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

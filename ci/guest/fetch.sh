#!/usr/bin/env bash
# Fetches what the guest tests boot, from Debian's packages, into a cache
# folder outside the work tree (so reruns, and fresh CI clones on the same
# machine, start in seconds): QEMU (qemu-system-x86 and the libraries and
# firmware it needs that the machine lacks, unpacked with dpkg-deb since
# apt-get install conflicts with the preinstalled qemu-utils), the Debian 6.1
# kernel (uncompressed vmlinux and the vfio modules) and busybox-static.
#
# Usage: ci/guest/fetch.sh            prints the cache folder on its last line
# Env:   HWLINK_GUEST_CACHE           cache folder (default /var/cache/hwlink-guest)
set -euo pipefail

cache="${HWLINK_GUEST_CACHE:-/var/cache/hwlink-guest}"
mkdir -p "$cache/debs" "$cache/root"
log() { printf 'fetch: %s\n' "$*" >&2; }

if [ -f "$cache/ready" ]; then
  log "cache ready in $cache"
  echo "$cache"
  exit 0
fi

command -v apt-get >/dev/null || { log "needs apt-get (a Debian machine)"; exit 2; }
command -v xz >/dev/null || { log "needs xz (apt-get install xz-utils)"; exit 2; }

# Alternatives that apt-cache's recursion lists but QEMU does not load.
skip=' cdebconf libelogind0 install-info libdebian-installer4 libnewt0.52 libtextwrap1 '

if ! apt-cache show qemu-system-x86 >/dev/null 2>&1; then
  log "apt lists are empty: apt-get update"
  apt-get update -qq
fi

# The kernel that linux-image-amd64 points at today, e.g. linux-image-6.1.0-56-amd64.
kernel_pkg="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-6\.1/ {print $2; exit}')"
[ -n "$kernel_pkg" ] || { log "no linux-image-6.1.*-amd64 in the apt lists"; exit 2; }

wanted=(busybox-static "$kernel_pkg")
for p in $(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
             --no-breaks --no-replaces --no-enhances qemu-system-x86 |
           grep -v '^[ <]' | sort -u); do
  case "$skip" in *" $p "*) continue ;; esac
  dpkg -s "$p" >/dev/null 2>&1 && continue
  wanted+=("$p")
done
log "downloading ${#wanted[@]} packages into $cache/debs"
# apt's sandbox user cannot write a root-owned cache: let it.
chmod 0777 "$cache/debs"
(cd "$cache/debs" && apt-get download -q "${wanted[@]}" >&2)

for deb in "$cache"/debs/*.deb; do
  dpkg-deb -x "$deb" "$cache/root"
done

# The uncompressed kernel: the bzImage carries an xz stream; find its magic
# (fd 37 7a 58 5a 00) and unpack from there. Booting vmlinux directly saves
# the guest's own decompression, seconds under TCG.
bz="$(ls "$cache"/root/boot/vmlinuz-* | head -n1)"
kver="${bz##*/vmlinuz-}"
off="$( (LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$bz" || true) | head -n1 | cut -d: -f1)"
[ -n "$off" ] || { log "no xz payload in $bz"; exit 2; }
tail -c +"$((off + 1))" "$bz" | xz -dc 2>/dev/null > "$cache/vmlinux" || true
head -c 4 "$cache/vmlinux" | grep -q 'ELF' || { log "could not unpack vmlinux from $bz"; exit 2; }
echo "$kver" > "$cache/kernel-version"

qemu="$cache/root/usr/bin/qemu-system-x86_64"
libs="$cache/root/usr/lib/x86_64-linux-gnu:$cache/root/lib/x86_64-linux-gnu"
missing="$(LD_LIBRARY_PATH="$libs" ldd "$qemu" | grep 'not found' || true)"
[ -z "$missing" ] || { log "qemu still misses libraries:"; echo "$missing" >&2; exit 2; }
LD_LIBRARY_PATH="$libs" "$qemu" --version >&2

touch "$cache/ready"
log "cache ready in $cache (kernel $kver)"
echo "$cache"

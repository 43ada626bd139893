#!/usr/bin/env bash
# Reserve 2 MiB hugepages and mount hugetlbfs at /dev/hugepages for hwlink.
#
#   sudo ci/setup-hugepages.sh            # reserve 128 pages (256 MiB)
#   sudo HWLINK_HUGEPAGES=512 ci/setup-hugepages.sh
#
# It never lowers vm.nr_hugepages. Without root it only prints the commands to run with sudo, and exits 0:
# hwlink then falls back to 4 KiB pages in /dev/shm (with a warning).
set -euo pipefail

pages="${HWLINK_HUGEPAGES:-128}"
mountpoint=/dev/hugepages

if ! [[ "$pages" =~ ^[0-9]+$ ]]; then
    echo "setup-hugepages: HWLINK_HUGEPAGES must be a number of 2 MiB pages, not '$pages'" >&2
    exit 2
fi

meminfo() { awk -v k="$1:" '$1 == k { print $2 }' /proc/meminfo; }

# True if a hugetlbfs with 2 MiB pages is mounted (an explicit pagesize=2M,
# or no pagesize= option while the default hugepage size is 2 MiB).
have_2m_mount() {
    local default_kb
    default_kb="$(meminfo Hugepagesize)"
    awk -v dflt="${default_kb:-0}" '
        $3 == "hugetlbfs" {
            size = (dflt == 2048) ? "2M" : "";
            n = split($4, opts, ",");
            for (i = 1; i <= n; i++) if (opts[i] ~ /^pagesize=/) size = substr(opts[i], 10);
            if (size == "2M" || size == "2048K" || size == "2048k") found = 1;
        }
        END { exit !found }' /proc/mounts
}

if [[ "$(id -u)" -ne 0 ]]; then
    echo "setup-hugepages: not root; nothing changed. To give hwlink 2 MiB hugepages, run:"
    echo "    sudo sysctl -w vm.nr_hugepages=$pages"
    if ! have_2m_mount; then
        echo "    sudo mkdir -p $mountpoint"
        echo "    sudo mount -t hugetlbfs -o pagesize=2M,mode=1770 none $mountpoint"
    fi
    echo "(or: sudo $0)"
    echo "setup-hugepages: now HugePages_Total=$(meminfo HugePages_Total) HugePages_Free=$(meminfo HugePages_Free)"
    exit 0
fi

before="$(cat /proc/sys/vm/nr_hugepages)"
if [[ "$before" -ge "$pages" ]]; then
    # Never shrink the pool: other users of this machine may hold pages.
    after="$before"
    echo "setup-hugepages: vm.nr_hugepages is already $before (>= $pages); left as is"
else
    sysctl -w "vm.nr_hugepages=$pages" >/dev/null
    after="$(cat /proc/sys/vm/nr_hugepages)"
    echo "setup-hugepages: vm.nr_hugepages $before -> $after (asked for $pages)"
fi
if [[ "$after" -lt "$pages" ]]; then
    echo "setup-hugepages: warning: the kernel found only $after free 2 MiB pages;" \
         "memory is fragmented or short (try again early after boot)" >&2
fi

if have_2m_mount; then
    echo "setup-hugepages: hugetlbfs with 2 MiB pages already mounted:" \
         "$(awk '$3 == "hugetlbfs" { printf "%s ", $2 }' /proc/mounts)"
else
    mkdir -p "$mountpoint"
    if mount -t hugetlbfs -o pagesize=2M,mode=1770 none "$mountpoint"; then
        echo "setup-hugepages: mounted hugetlbfs (pagesize=2M, mode=1770) at $mountpoint"
    else
        echo "setup-hugepages: warning: could not mount hugetlbfs at $mountpoint;" \
             "hwlink will use hugepage memfds instead" >&2
    fi
fi

echo "setup-hugepages: HugePages_Total=$(meminfo HugePages_Total) HugePages_Free=$(meminfo HugePages_Free)"

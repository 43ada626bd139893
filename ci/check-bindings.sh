#!/usr/bin/env bash
# Proves hw/src/sys_x86_64.rs is what hw/bindgen generates from
# hw/include/hwlink_abi.h, the single source of truth of the shared-memory ABI.
#
#   ci/check-bindings.sh              compare; exit 1 with a diff when stale
#   ci/check-bindings.sh --overwrite  regenerate hw/src/sys_x86_64.rs
#
# Needs libclang (bindgen dlopens it) and the kernel's linux/types.h; installs
# libclang-dev with apt-get when run as root and it is missing.
set -euo pipefail

usage() {
	echo "usage: $0 [--overwrite]" >&2
	exit 2
}

overwrite=0
case $# in
0) ;;
1) [[ $1 == --overwrite ]] || usage; overwrite=1 ;;
*) usage ;;
esac

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
committed=hw/src/sys_x86_64.rs
header=hw/include/hwlink_abi.h

have_libclang() {
	ldconfig -p 2>/dev/null | grep -q 'libclang\(-[0-9.]*\)\?\.so' ||
		[[ -n ${LIBCLANG_PATH:-} && -d $LIBCLANG_PATH ]]
}

if ! have_libclang; then
	if [[ $(id -u) -ne 0 ]]; then
		echo "check-bindings: libclang is not installed and this is not root:" >&2
		echo "  install it (Debian: apt-get install libclang-dev) or set LIBCLANG_PATH" >&2
		exit 1
	fi
	echo "check-bindings: libclang is missing; installing libclang-dev" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq libclang-dev >/dev/null
	if ! have_libclang; then
		echo "check-bindings: libclang still not found after installing libclang-dev" >&2
		exit 1
	fi
fi

if [[ ! -f /usr/include/linux/types.h ]]; then
	echo "check-bindings: /usr/include/linux/types.h is missing (Debian: apt-get install linux-libc-dev)" >&2
	exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
generated=$tmp/sys_x86_64.rs

cargo run --quiet --manifest-path hw/bindgen/Cargo.toml -- "$generated"

if ((overwrite)); then
	cp "$generated" "$committed"
	echo "bindings: wrote $committed from $header"
	exit 0
fi

if [[ ! -f $committed ]]; then
	echo "check-bindings: $committed does not exist" >&2
	echo "bindings are stale: run ci/check-bindings.sh --overwrite and commit $committed" >&2
	exit 1
fi

if ! diff -u --label "$committed (committed)" --label "$committed (generated)" \
	"$committed" "$generated"; then
	echo "bindings are stale: run ci/check-bindings.sh --overwrite and commit $committed" >&2
	exit 1
fi
echo "bindings: $committed matches $header"

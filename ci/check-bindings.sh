#!/usr/bin/env bash
# Proves hw/src/sys_x86_64.rs and hw/src/sys_aarch64.rs are what hw/bindgen
# generates from hw/include/hwlink_abi.h, the single source of truth of the
# shared-memory ABI, for each architecture.
#
#   ci/check-bindings.sh              compare; exit 1 with a diff when stale
#   ci/check-bindings.sh --overwrite  regenerate both files
#
# Needs libclang (bindgen dlopens it) and the kernel's linux/types.h for each
# architecture (x86_64: linux-libc-dev; aarch64: Debian's
# linux-libc-dev-arm64-cross, in /usr/aarch64-linux-gnu/include); installs
# what is missing with apt-get when run as root.
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
arches=(x86_64 aarch64)
header=hw/include/hwlink_abi.h

need=()
have_libclang() {
	ldconfig -p 2>/dev/null | grep -q 'libclang\(-[0-9.]*\)\?\.so' ||
		[[ -n ${LIBCLANG_PATH:-} && -d $LIBCLANG_PATH ]]
}

have_libclang || need+=(libclang-dev)
[[ -f /usr/include/linux/types.h ]] || need+=(linux-libc-dev)
[[ -f /usr/aarch64-linux-gnu/include/asm/types.h ]] || need+=(linux-libc-dev-arm64-cross)

if ((${#need[@]})); then
	if [[ $(id -u) -ne 0 ]]; then
		echo "check-bindings: missing ${need[*]} and this is not root:" >&2
		echo "  install them (Debian: apt-get install ${need[*]}; or set LIBCLANG_PATH)" >&2
		exit 1
	fi
	echo "check-bindings: installing ${need[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq "${need[@]}" >/dev/null
	if ! have_libclang; then
		echo "check-bindings: libclang still not found after installing libclang-dev" >&2
		exit 1
	fi
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
stale=0
for arch in "${arches[@]}"; do
	committed=hw/src/sys_$arch.rs
	generated=$tmp/sys_$arch.rs
	cargo run --quiet --manifest-path hw/bindgen/Cargo.toml -- "$arch" "$generated"

	if ((overwrite)); then
		cp "$generated" "$committed"
		echo "bindings: wrote $committed from $header"
		continue
	fi

	if [[ ! -f $committed ]]; then
		echo "check-bindings: $committed does not exist" >&2
		echo "bindings are stale: run ci/check-bindings.sh --overwrite and commit $committed" >&2
		stale=1
		continue
	fi

	if ! diff -u --label "$committed (committed)" --label "$committed (generated)" \
		"$committed" "$generated"; then
		echo "bindings are stale: run ci/check-bindings.sh --overwrite and commit $committed" >&2
		stale=1
		continue
	fi
	echo "bindings: $committed matches $header"
done
exit $stale

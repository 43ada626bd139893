#!/usr/bin/env bash
# Proves userspace/capi/include/hwlink.h is what cbindgen generates from the
# hwlink-capi crate (userspace/capi/src), with userspace/capi/cbindgen.toml.
#
#   ci/check-cheader.sh              compare; exit 1 with a diff when stale
#   ci/check-cheader.sh --overwrite  regenerate userspace/capi/include/hwlink.h
#
# The generator, userspace/capi/cbindgen, is excluded from the workspace (a
# plain build does not compile cbindgen); it pins cbindgen exactly.
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
committed=userspace/capi/include/hwlink.h

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
generated=$tmp/hwlink.h

cargo run --quiet --manifest-path userspace/capi/cbindgen/Cargo.toml -- "$generated"

if ((overwrite)); then
	cp "$generated" "$committed"
	echo "C header: wrote $committed"
	exit 0
fi

if [[ ! -f $committed ]]; then
	echo "check-cheader: $committed does not exist" >&2
	echo "the C header is stale: run ci/check-cheader.sh --overwrite and commit $committed" >&2
	exit 1
fi

if ! diff -u --label "$committed (committed)" --label "$committed (generated)" \
	"$committed" "$generated"; then
	echo "the C header is stale: run ci/check-cheader.sh --overwrite and commit $committed" >&2
	exit 1
fi
echo "C header: $committed matches the hwlink-capi crate"

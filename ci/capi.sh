#!/usr/bin/env bash
# hwlink's C API (userspace/capi): build, install, and the CI test.
#
#   ci/capi.sh build            build libhwlink.so and libhwlink.a (release)
#   ci/capi.sh install PREFIX   build, then install PREFIX/lib/libhwlink.{so,a},
#                               PREFIX/include/hwlink.h and
#                               PREFIX/lib/pkgconfig/hwlink.pc
#   ci/capi.sh test [--count N] what ci/test.sh runs: the header drift check,
#                               an install into a temporary prefix, then,
#                               compiled with pkg-config against it: the C
#                               producer and C++ consumer (examples/c) with
#                               each other and with the Rust peer, the C test
#                               (userspace/capi/tests/c) against the Rust peer
#                               with N messages each way (default 1000000),
#                               and the C test once under valgrind (20000)
#
# After an install: cc prog.c $(PKG_CONFIG_PATH=PREFIX/lib/pkgconfig pkg-config
# --cflags --libs hwlink). Outside /usr and /usr/local the .pc file adds an
# rpath, so programs find libhwlink.so where it was installed.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

target_dir=${CARGO_TARGET_DIR:-$root/target}
out=$target_dir/release

build() {
	cargo build --release -p hwlink-capi --lib --example peer
}

install_to() {
	local prefix=$1
	[[ $prefix == /* ]] || prefix=$(pwd)/$prefix
	build
	mkdir -p "$prefix/lib/pkgconfig" "$prefix/include"
	install -m 0755 "$out/libhwlink.so" "$prefix/lib/libhwlink.so"
	install -m 0644 "$out/libhwlink.a" "$prefix/lib/libhwlink.a"
	install -m 0644 userspace/capi/include/hwlink.h "$prefix/include/hwlink.h"
	local version rpath=""
	version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
	case $prefix in
	/usr | /usr/local) ;;
	*) rpath=" -Wl,-rpath,\${libdir}" ;;
	esac
	# The system libraries Rust's standard library needs in a static link
	# (rustc --print native-static-libs on x86_64 Linux glibc).
	local native="-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc"
	sed -e "s|@PREFIX@|$prefix|" -e "s|@VERSION@|$version|" -e "s|@RPATH@|$rpath|" \
		-e "s|@NATIVE_STATIC_LIBS@|$native|" \
		userspace/capi/hwlink.pc.in >"$prefix/lib/pkgconfig/hwlink.pc"
	echo "capi: installed libhwlink $version into $prefix"
}

run_test() {
	local count=1000000
	if [[ ${1:-} == --count ]]; then count=$2; fi
	for tool in cc c++ pkg-config; do
		command -v "$tool" >/dev/null || { echo "capi: $tool is missing (.ci/run installs it)" >&2; exit 1; }
	done

	echo "capi: the generated header has not drifted"
	ci/check-cheader.sh

	# Global: the EXIT trap reads it.
	tmp=$(mktemp -d)
	# Kill any background process of ours left by a failure.
	trap 'jobs -p | xargs -r kill -9 2>/dev/null; rm -rf "$tmp"' EXIT
	install_to "$tmp/prefix"
	export PKG_CONFIG_PATH=$tmp/prefix/lib/pkgconfig
	local cflags libs peer=$out/examples/peer
	cflags=$(pkg-config --cflags hwlink)
	libs=$(pkg-config --libs hwlink)
	echo "capi: pkg-config --cflags --libs hwlink: $cflags $libs"

	local warn=(-O2 -Wall -Wextra -Werror)
	# shellcheck disable=SC2086
	{
		cc -std=c11 "${warn[@]}" examples/c/producer.c $cflags $libs -o "$tmp/producer"
		c++ -std=c++17 "${warn[@]}" examples/c/consumer.cpp $cflags $libs -o "$tmp/consumer"
		cc -std=c11 "${warn[@]}" -g userspace/capi/tests/c/ctest.c $cflags $libs -o "$tmp/ctest"
		# The static library too: the producer linked against libhwlink.a.
		cc -std=c11 "${warn[@]}" examples/c/producer.c $cflags "$tmp/prefix/lib/libhwlink.a" \
			$(pkg-config --static --libs-only-l hwlink | sed 's/-lhwlink//') -o "$tmp/producer-static"
	}
	if ldd "$tmp/producer-static" | grep -q libhwlink; then
		echo "capi: producer-static links libhwlink.so" >&2
		exit 1
	fi

	local n=20000 link
	echo "capi: C producer -> C++ consumer"
	link=capi-demo-$$-1
	"$tmp/consumer" --link "$link" &
	local consumer=$!
	"$tmp/producer" --link "$link" --count $n
	wait $consumer

	echo "capi: C producer (static) -> Rust consumer"
	link=capi-demo-$$-2
	"$peer" consume --link "$link" &
	consumer=$!
	"$tmp/producer-static" --link "$link" --count $n
	wait $consumer

	echo "capi: Rust producer -> C++ consumer"
	link=capi-demo-$$-3
	"$tmp/consumer" --link "$link" &
	consumer=$!
	"$peer" produce --link "$link" --count $n
	wait $consumer

	echo "capi: C test against the Rust peer ($count messages each way)"
	"$tmp/ctest" --peer "$peer" --count "$count"

	if command -v valgrind >/dev/null; then
		echo "capi: the C test under valgrind (memcheck), 20000 messages each way"
		# Definite leaks count as errors too (a handle the C test closed
		# must free everything); valgrind.supp says what is leaked on
		# purpose. "Possibly lost" blocks are not errors: they are the
		# library's process-wide caches (its liveness watch table, Rust's
		# thread record), which live until exit. The peer is not traced
		# (--trace-children=no).
		valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
			--show-leak-kinds=definite --suppressions=userspace/capi/tests/c/valgrind.supp \
			"$tmp/ctest" --peer "$peer" --count 20000 2>"$tmp/valgrind.log" ||
			{ cat "$tmp/valgrind.log" >&2; exit 1; }
		grep -E "ERROR SUMMARY|definitely lost|WARNING" "$tmp/valgrind.log" | sed 's/^==[0-9]*== /capi: valgrind: /'
		echo "capi: valgrind: no errors"
	else
		echo "capi: valgrind is missing (.ci/run installs it)" >&2
		exit 1
	fi
}

case ${1:-} in
build) build ;;
install)
	[[ $# -eq 2 ]] || { echo "usage: $0 install PREFIX" >&2; exit 2; }
	install_to "$2"
	;;
test) shift; run_test "$@" ;;
*)
	echo "usage: $0 build | install PREFIX | test [--count N]" >&2
	exit 2
	;;
esac

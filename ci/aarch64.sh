#!/usr/bin/env bash
# hwlink on aarch64, without ARM hardware: cross-builds the workspace for
# aarch64-unknown-linux-gnu (the nightly toolchain's -Zbuild-std, so no
# target needs downloading, and Debian's gcc-aarch64-linux-gnu as linker),
# then runs under qemu-aarch64 (qemu-user): the library unit tests (hw,
# drivers, hwlink), the process tests (hw/tests, drivers/tests,
# userspace/tests) and the examples with small counts.
#
#   ci/aarch64.sh              (ci/test.sh runs it as a step)
#   ci/aarch64.sh --workspace  also builds every crate and target
#
# As root it installs what it lacks (gcc-aarch64-linux-gnu,
# libc6-dev-arm64-cross, qemu-user) and registers qemu-aarch64 with
# binfmt_misc for the run (the process tests and examples start aarch64
# peers with exec; the registration is removed at the end). Otherwise it
# prints SKIPPED with the reason and exits 0.
#
# Tests that cannot work under qemu-user skip themselves there, and only
# there (HWLINK_UNDER_QEMU=1, hwlink_drivers::qemu), each with its reason;
# a few long tests are left out of this step (LEFT_OUT below) because they
# run for tens of seconds emulated; the native test step runs them all.
# The last line is the summary:
#   aarch64 under qemu-user: N passed, M skipped (...), 0 failed
# and the exit status is nonzero if anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
target=aarch64-unknown-linux-gnu
sysroot=/usr/aarch64-linux-gnu

skip_step() {
	echo "SKIPPED: aarch64 under qemu-user: $*"
	exit 0
}

# --- what it needs ----------------------------------------------------------
need=()
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || need+=(gcc-aarch64-linux-gnu)
[ -e $sysroot/lib/libc.so ] || need+=(libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null 2>&1 || need+=(qemu-user)
if [ "${#need[@]}" -gt 0 ]; then
	[ "$(id -u)" -eq 0 ] || skip_step "missing ${need[*]} (run as root, or install them)"
	echo "aarch64: installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# No recommends: binfmt is registered below, for this run only.
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
cargo +nightly --version >/dev/null 2>&1 || skip_step "no nightly toolchain (rustup toolchain install nightly)"
[ -d "$(rustc +nightly --print sysroot)/lib/rustlib/src/rust/library" ] ||
	skip_step "the nightly toolchain has no rust-src (rustup component add rust-src --toolchain nightly), which -Zbuild-std needs"

# The tests and examples exec aarch64 binaries (themselves, the hwlink CLI,
# peers): the kernel must hand them to qemu-aarch64.
binfmt=/proc/sys/fs/binfmt_misc
registered="" mounted=""
cleanup() {
	if [ -n "$registered" ]; then
		echo -1 >"$binfmt/$registered" 2>/dev/null || true
	fi
	if [ -n "$mounted" ]; then
		umount "$binfmt" 2>/dev/null || true
	fi
}
trap cleanup EXIT
have_binfmt() {
	local f
	for f in "$binfmt"/*; do
		[ -f "$f" ] || continue
		grep -q '^enabled' "$f" 2>/dev/null &&
			grep -q '^magic 7f454c460201010000000000000000000200b700' "$f" 2>/dev/null && return 0
	done
	return 1
}
if ! have_binfmt; then
	[ "$(id -u)" -eq 0 ] || skip_step "qemu-aarch64 is not registered with binfmt_misc and this is not root (the process tests exec aarch64 binaries)"
	if [ ! -e "$binfmt/register" ]; then
		mount -t binfmt_misc binfmt_misc "$binfmt" 2>/dev/null ||
			skip_step "cannot mount binfmt_misc (the process tests exec aarch64 binaries)"
		mounted=1
	fi
	# Debian's qemu-user-binfmt entry for aarch64 ELF executables, with the
	# plain emulator: F opens it now, so it works in any mount namespace.
	magic='\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
	mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
	echo ":hwlink-aarch64:M::$magic:$mask:$(command -v qemu-aarch64):F" >"$binfmt/register" ||
		skip_step "cannot register qemu-aarch64 with binfmt_misc"
	registered=hwlink-aarch64
fi

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L $sysroot"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
# For processes started through binfmt: where the aarch64 ld.so and libc are.
export QEMU_LD_PREFIX=$sysroot
# hw/tests/layout.rs compiles its C program for the target, and runs it.
export HWLINK_LAYOUT_CC=aarch64-linux-gnu-gcc
export HWLINK_UNDER_QEMU=1
# Every test that skips itself under qemu-user appends its line here.
skips=$(mktemp)
logs=$(mktemp -d)
trap 'cleanup; rm -rf "$skips" "$logs"' EXIT
export HWLINK_QEMU_SKIP_LOG=$skips

cargo_arm=(cargo +nightly)
build=(-Zbuild-std --target "$target")
features=(--features hwlink/tokio,hwlink/serde)
# The test profile (optimised, as the tests expect) without debug info:
# std is built from source here, and its debug info doubles the build.
export CARGO_PROFILE_TEST_DEBUG=0

# --- build --------------------------------------------------------------------
echo "aarch64: building for $target (nightly -Zbuild-std, linker aarch64-linux-gnu-gcc)"
# What runs below: the tests of hw, drivers and hwlink, the examples, and
# the hwlink CLI (which two process tests run). With --workspace, every
# crate and target of the workspace is built too (the CLI, hwlink-chaos,
# the bench harness and its criterion benches), as a check that it builds.
json=$logs/build.json
trap 'echo "aarch64 under qemu-user: the build FAILED (see above)"; cleanup; rm -rf "$skips" "$logs"' ERR
if [ "${1:-}" = --workspace ]; then
	"${cargo_arm[@]}" build -q "${build[@]}" --profile test --workspace --all-targets "${features[@]}"
fi
# All three builds take the same features, so that the hwlink library (and
# everything under it) is compiled once for them, not once per feature set.
"${cargo_arm[@]}" build -q "${build[@]}" --profile test -p hwlink-cli "${features[@]}"
"${cargo_arm[@]}" build -q "${build[@]}" --profile test -p hwlink --examples "${features[@]}" \
	--message-format=json-render-diagnostics >"$json"
# Examples are built as plain binaries; test executables have "test":true.
mapfile -t example_exes < <(grep -o '"executable":"[^"]*"' "$json" | cut -d'"' -f4 | sort -u)
"${cargo_arm[@]}" test -q "${build[@]}" -p hwlink-hw -p hwlink-drivers -p hwlink "${features[@]}" \
	--no-run --message-format=json-render-diagnostics >"$json"
mapfile -t executables < <(grep '"test":true' "$json" | grep -o '"executable":"[^"]*"' | cut -d'"' -f4 | sort -u)
[ "${#executables[@]}" -gt 0 ] || {
	echo "aarch64: no test executables were built" >&2
	exit 1
}
trap - ERR
echo "aarch64: built in $((SECONDS - start)) s; running under $(qemu-aarch64 --version | head -1)"

# --- tests --------------------------------------------------------------------
# Left out of this step (not skipped by qemu: they run natively in the tests
# step): streams of millions of messages and stress loops, 9 to 45 s each
# emulated (measured on a 2-vCPU VM). Test-name substrings, as `--skip`
# takes them, each with why.
LEFT_OUT=(
	"stream_10m_:4 streams of 10 million messages (34-45 s each emulated)"
	"stream_mixed_:4 streams of 1 million messages (9-11 s each)"
	"stream_across_u32_index_wrap:a stream across the u32 index wrap (11 s)"
	"block_four_subscribers_get_every_message_in_order:a topic stream to four subscriber processes (40 s)"
	"overwrite_slow_subscriber_accounts_for_every_message:an Overwrite topic stream with a slow subscriber (37 s)"
	"send_then_leave_races_every_receive_form:a domain race repeated for every receive form (25 s)"
	"send_then_leave_from_a_process_races_a_waiting_receiver:a domain race repeated over processes (10 s)"
	"d1_killed_mailbox_sender_mid_copy:SIGKILLs inside 1 MiB copies, repeated (12 s)"
	"unbounded_one_gib_with_stalled_receiver:1 GiB through an unbounded mailbox (9 s)"
)

passed=0 failed=0 left_out=0
failures=()
for exe in "${executables[@]}"; do
	name=$(basename "$exe" | sed 's/-[0-9a-f]*$//')
	args=(--test-threads=1)
	for entry in "${LEFT_OUT[@]}"; do
		args+=(--skip "${entry%%:*}")
	done
	log=$logs/$name.log
	if "$exe" "${args[@]}" >"$log" 2>&1; then rc=0; else rc=$?; fi
	# libtest's summary line: "test result: ok. P passed; F failed; I ignored; M measured; N filtered out"
	result=$(grep '^test result:' "$log" | tail -1 || true)
	p=$(sed -n 's/.* \([0-9]*\) passed.*/\1/p' <<<"$result")
	f=$(sed -n 's/.* \([0-9]*\) failed.*/\1/p' <<<"$result")
	n=$(sed -n 's/.* \([0-9]*\) filtered out.*/\1/p' <<<"$result")
	passed=$((passed + ${p:-0}))
	left_out=$((left_out + ${n:-0}))
	if [ "$rc" -ne 0 ] || [ "${f:-0}" -ne 0 ] || [ -z "$result" ]; then
		failed=$((failed + ${f:-1}))
		[ "${f:-0}" -eq 0 ] && f=1
		failures+=("$name: exit $rc, $(grep -E '^    [a-z_:0-9]+$' "$log" | tr -d ' ' | paste -sd, - || true)")
		echo "aarch64: FAILED: $name (exit $rc); its output:"
		tail -n 60 "$log" | sed 's/^/    /'
	else
		printf 'aarch64: %-28s %4d passed\n' "$name" "${p:-0}"
	fi
done

# --- examples -------------------------------------------------------------------
# As ci/test.sh's examples step (each checks every message); fanout with
# 1,000 frames of 64 KiB instead of 5,000 (7 s emulated).
examples=(
	"pipeline --count 20000 --paced 2000"
	"workers --jobs 20000"
	"rpc --calls 20000"
	"fanout --frames 1000"
	"async_gateway --self-test 2000"
)
for ex in "${examples[@]}"; do
	read -r -a words <<<"$ex"
	log=$logs/example-${words[0]}.log
	exe=$(printf '%s\n' "${example_exes[@]}" | grep "/examples/${words[0]}\$" || true)
	if [ -n "$exe" ] && "$exe" "${words[@]:1}" >"$log" 2>&1; then
		passed=$((passed + 1))
		echo "aarch64: example ${words[0]} passed"
	elif grep -q 'io_uring_setup failed: Function not implemented' "$log"; then
		# The tokio front end waits on as_fd(), an io_uring (§8.11).
		echo "SKIPPED under qemu-user: example ${words[0]}: no io_uring under qemu-user (io_uring_setup: ENOSYS; the tokio front end needs as_fd)" >>"$skips"
	else
		failed=$((failed + 1))
		failures+=("example ${words[0]}")
		echo "aarch64: FAILED: example ${words[0]}; its output:"
		tail -n 40 "$log" | sed 's/^/    /'
	fi
done

# --- summary --------------------------------------------------------------------
mapfile -t skipped < <(sort -u "$skips")
# A test that skipped itself returned early, and libtest counted it passed
# (an example that skipped was not counted).
passed=$((passed - $(grep -vc '^SKIPPED under qemu-user: example ' "$skips" || true)))
echo
for line in "${skipped[@]}"; do echo "$line"; done
for entry in "${LEFT_OUT[@]}"; do
	echo "LEFT OUT of this step: tests matching ${entry%%:*}: ${entry#*:}"
done
for f in "${failures[@]}"; do echo "FAILED: $f"; done
reasons=$(printf '%s\n' "${skipped[@]}" | sed -n 's/^SKIPPED under qemu-user: \([^:]*\)\(::[^:]*\)*: \([^(;]*\).*/\3/p' |
	sed 's/ *$//' | sort | uniq -c | sed 's/^ *\([0-9]*\) /\1x /' | paste -sd';' - | sed 's/;/; /g')
echo "aarch64 under qemu-user: $passed passed, ${#skipped[@]} skipped (${reasons:-none}), $left_out left out (long), $failed failed, in $((SECONDS - start)) s"
[ "$failed" -eq 0 ]

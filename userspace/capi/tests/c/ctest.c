/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The C API's test against a Rust peer process (the hwlink-capi example
 * `peer`, mode `ctest`), run by ci/capi.sh:
 *
 *   ctest --peer PATH_TO_PEER [--count N]      (default N: 1000000)
 *
 * It creates two links (P.c2r: this process sends; P.r2c: it receives) and
 * two mailboxes (P.m-c2r, P.m-r2c), with P = "ctest<pid>", starts the peer,
 * and then:
 *   1. sends N messages on the link c2r, with every send form in turn
 *      (send, try_send, send_timeout, reserve/commit); the peer checks each
 *      and answers with their count and FNV-1a checksum, compared here;
 *   2. receives N messages on r2c, with every receive form in turn (recv,
 *      try_recv, recv_timeout, peek/release), checking each;
 *   3. sends N on the mailbox m-c2r (the peer checks and answers as in 1);
 *   4. receives N on the mailbox m-r2c, checking each;
 *   5. once the peer says DONE (it then blocks in a receive), SIGKILLs it
 *      and checks that both link ends see HWLINK_DISCONNECTED within 5 s,
 *      printing how long each took.
 * Message `seq` is 8 to 64 bytes: seq (8 bytes, little-endian), then byte
 * i = (seq * 131 + i) & 0xff. Every byte of every message is checked.
 * Exits 0 when all passed, 1 on any failure (with the reason).
 */
#define _GNU_SOURCE
#include <hwlink.h>

#include <signal.h>
#include <stdarg.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static pid_t peer_pid;

static void die(const char *what, hwlink_status s)
{
	fprintf(stderr, "ctest: FAILED: %s: %s: %s\n", what, hwlink_status_name(s),
		hwlink_last_error());
	if (peer_pid > 0)
		kill(peer_pid, SIGKILL);
	exit(1);
}

__attribute__((format(printf, 1, 2))) static void fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "ctest: FAILED: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	if (peer_pid > 0)
		kill(peer_pid, SIGKILL);
	exit(1);
}

#define CHECK(call)                          \
	do {                                 \
		hwlink_status s_ = (call);   \
		if (s_ != HWLINK_OK)         \
			die(#call, s_);      \
	} while (0)

static const uint64_t FNV_START = 0xcbf29ce484222325ULL;

static uint64_t fnv(uint64_t h, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

/* Message `seq` into `m` (64 bytes); returns its length. */
static size_t message(uint64_t seq, uint8_t *m)
{
	size_t len = 8 + (size_t)(seq % 57);
	for (int i = 0; i < 8; i++)
		m[i] = (uint8_t)(seq >> (8 * i));
	for (size_t i = 8; i < len; i++)
		m[i] = (uint8_t)(seq * 131 + i);
	return len;
}

static void check(uint64_t seq, const uint8_t *got, size_t len, const char *where)
{
	uint8_t want[64];
	size_t n = message(seq, want);
	if (len != n || memcmp(got, want, n) != 0) {
		fprintf(stderr, "ctest: FAILED: %s: message #%llu: %zu bytes, expected %zu (or wrong bytes)\n",
			where, (unsigned long long)seq, len, n);
		if (peer_pid > 0)
			kill(peer_pid, SIGKILL);
		exit(1);
	}
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const uint64_t SECOND = 1000000000ULL;

/* The peer's answer to phases 1 and 3: "SUMMARY\0", count, checksum. */
static void expect_summary(hwlink_receiver *rx, uint64_t count, uint64_t sum, const char *what)
{
	uint8_t m[64];
	size_t len = 0;
	CHECK(hwlink_recv_timeout(rx, m, sizeof m, &len, 60 * SECOND));
	uint64_t c, s;
	if (len != 24 || memcmp(m, "SUMMARY", 8) != 0)
		fail("%s: no summary from the peer (%zu bytes)", what, len);
	memcpy(&c, m + 8, 8);
	memcpy(&s, m + 16, 8);
	if (c != count || s != sum)
		fail("%s: the peer counted %llu messages with checksum %016llx, not %llu and %016llx",
		     what, (unsigned long long)c, (unsigned long long)s, (unsigned long long)count,
		     (unsigned long long)sum);
	printf("ctest: %s: %llu messages sent, each checked by the Rust peer (checksum %016llx agrees)\n",
	       what, (unsigned long long)count, (unsigned long long)sum);
}

int main(int argc, char **argv)
{
	const char *peer = NULL;
	uint64_t count = 1000000;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--peer") == 0)
			peer = argv[i + 1];
		else if (strcmp(argv[i], "--count") == 0)
			count = strtoull(argv[i + 1], NULL, 10);
	}
	if (peer == NULL || count == 0) {
		fprintf(stderr, "usage: ctest --peer PATH_TO_PEER [--count N]\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ctest: libhwlink %s, %llu messages each way over a link and a mailbox\n",
	       hwlink_version(), (unsigned long long)count);

	char prefix[32], name[64];
	snprintf(prefix, sizeof prefix, "ctest%d", (int)getpid());

	hwlink_sender *tx = NULL;
	hwlink_receiver *rx = NULL;
	hwlink_mailbox *mtx = NULL, *mrx = NULL;
	snprintf(name, sizeof name, "%s.c2r", prefix);
	CHECK(hwlink_sender_create(name, NULL, &tx));
	snprintf(name, sizeof name, "%s.r2c", prefix);
	CHECK(hwlink_receiver_create(name, NULL, &rx));
	hwlink_mailbox_options mo = {0};
	mo.slot_size = 64;
	snprintf(name, sizeof name, "%s.m-c2r", prefix);
	CHECK(hwlink_mailbox_create(name, &mo, HWLINK_ACCESS_SEND, &mtx));
	snprintf(name, sizeof name, "%s.m-r2c", prefix);
	CHECK(hwlink_mailbox_create(name, &mo, HWLINK_ACCESS_RECV, &mrx));

	/* A few argument checks: errors, never a crash. */
	if (hwlink_send(NULL, "x", 1) != HWLINK_INVALID_ARGUMENT || !strstr(hwlink_last_error(), "NULL"))
		fail("hwlink_send(NULL) did not say HWLINK_INVALID_ARGUMENT");
	uint8_t big[2048] = {0};
	if (hwlink_try_send(tx, big, sizeof big) != HWLINK_TOO_LARGE)
		fail("a 2048-byte send on a 1016-byte link was not HWLINK_TOO_LARGE");
	printf("ctest: errors: %s\n", hwlink_last_error());
	if (hwlink_try_recv(rx, big, sizeof big, NULL) != HWLINK_EMPTY)
		fail("try_recv on an empty link was not HWLINK_EMPTY");

	char count_s[32];
	snprintf(count_s, sizeof count_s, "%llu", (unsigned long long)count);
	char *peer_argv[] = {(char *)peer, "ctest", "--prefix", prefix, "--count", count_s, NULL};
	if (posix_spawn(&peer_pid, peer, NULL, NULL, peer_argv, environ) != 0) {
		perror("ctest: posix_spawn");
		return 1;
	}
	double t0 = now_s();

	/* 1: send on the link, every form in turn. */
	uint8_t m[64];
	uint64_t sum = FNV_START;
	for (uint64_t seq = 0; seq < count; seq++) {
		size_t len = message(seq, m);
		sum = fnv(sum, m, len);
		switch (seq % 4) {
		case 0:
			CHECK(hwlink_send(tx, m, len));
			break;
		case 1: {
			hwlink_status s;
			while ((s = hwlink_try_send(tx, m, len)) == HWLINK_FULL)
				;
			if (s != HWLINK_OK)
				die("hwlink_try_send", s);
			break;
		}
		case 2:
			CHECK(hwlink_send_timeout(tx, m, len, 30 * SECOND));
			break;
		case 3: {
			void *slot;
			CHECK(hwlink_reserve(tx, 64, &slot));
			memcpy(slot, m, len);
			CHECK(hwlink_commit(tx, len));
			break;
		}
		}
	}
	expect_summary(rx, count, sum, "link");

	/* 2: receive on the link, every form in turn. */
	for (uint64_t seq = 0; seq < count; seq++) {
		size_t len = 0;
		switch (seq % 4) {
		case 0:
			CHECK(hwlink_recv(rx, m, sizeof m, &len));
			break;
		case 1: {
			hwlink_status s;
			while ((s = hwlink_try_recv(rx, m, sizeof m, &len)) == HWLINK_EMPTY)
				;
			if (s != HWLINK_OK)
				die("hwlink_try_recv", s);
			break;
		}
		case 2:
			CHECK(hwlink_recv_timeout(rx, m, sizeof m, &len, 30 * SECOND));
			break;
		case 3: {
			const void *slot;
			CHECK(hwlink_peek(rx, &slot, &len));
			/* Copy before checking: the slot is shared memory. */
			if (len > sizeof m)
				fail("peeked a message of %zu bytes (at most %zu expected)", len, sizeof m);
			memcpy(m, slot, len);
			CHECK(hwlink_release(rx));
			break;
		}
		}
		check(seq, m, len, "link");
	}
	printf("ctest: link: %llu messages received from the Rust peer, each checked\n",
	       (unsigned long long)count);

	/* 3: send on the mailbox. */
	sum = FNV_START;
	for (uint64_t seq = 0; seq < count; seq++) {
		size_t len = message(seq, m);
		sum = fnv(sum, m, len);
		if (seq % 2 == 0) {
			CHECK(hwlink_mailbox_send(mtx, m, len));
		} else {
			hwlink_status s;
			while ((s = hwlink_mailbox_try_send(mtx, m, len)) == HWLINK_FULL)
				;
			if (s != HWLINK_OK)
				die("hwlink_mailbox_try_send", s);
		}
	}
	expect_summary(rx, count, sum, "mailbox");

	/* 4: receive on the mailbox. */
	for (uint64_t seq = 0; seq < count; seq++) {
		size_t len = 0;
		if (seq % 2 == 0) {
			CHECK(hwlink_mailbox_recv(mrx, m, sizeof m, &len));
		} else {
			CHECK(hwlink_mailbox_recv_timeout(mrx, m, sizeof m, &len, 30 * SECOND));
		}
		check(seq, m, len, "mailbox");
	}
	printf("ctest: mailbox: %llu messages received from the Rust peer, each checked\n",
	       (unsigned long long)count);
	printf("ctest: %llu messages in %.1f s\n", (unsigned long long)(4 * count), now_s() - t0);

	/* 5: the peer says DONE, then blocks; kill it. */
	size_t len = 0;
	CHECK(hwlink_recv_timeout(rx, m, sizeof m, &len, 60 * SECOND));
	if (len != 4 || memcmp(m, "DONE", 4) != 0)
		fail("expected DONE from the peer, got %zu bytes", len);
	double killed = now_s();
	if (kill(peer_pid, SIGKILL) != 0) {
		perror("ctest: kill");
		return 1;
	}
	hwlink_status s = hwlink_recv_timeout(rx, m, sizeof m, &len, 5 * SECOND);
	double rx_seen = now_s();
	if (s != HWLINK_DISCONNECTED)
		die("after SIGKILL, hwlink_recv_timeout (expected HWLINK_DISCONNECTED)", s);
	printf("ctest: receiver: HWLINK_DISCONNECTED %.1f ms after SIGKILL: %s\n",
	       (rx_seen - killed) * 1e3, hwlink_last_error());
	/* The sender finds out at its next look at the peer (at most every
	 * 256 sends on the fast path, or when the link is full). */
	uint64_t sends = 0;
	do {
		s = hwlink_send_timeout(tx, "x", 1, 5 * SECOND);
		sends++;
	} while (s == HWLINK_OK && now_s() - killed < 5);
	double tx_seen = now_s();
	if (s != HWLINK_DISCONNECTED)
		die("after SIGKILL, hwlink_send_timeout (expected HWLINK_DISCONNECTED)", s);
	printf("ctest: sender: HWLINK_DISCONNECTED %.1f ms after SIGKILL (send %llu after it): %s\n",
	       (tx_seen - killed) * 1e3, (unsigned long long)sends, hwlink_last_error());
	if (hwlink_sender_is_disconnected(tx) != 1)
		fail("hwlink_sender_is_disconnected is not 1 after the peer's death");
	int status = 0;
	waitpid(peer_pid, &status, 0);
	peer_pid = 0;
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
		fail("the peer did not end by SIGKILL (wait status %d)", status);

	hwlink_sender_close(tx);
	hwlink_receiver_close(rx);
	CHECK(hwlink_mailbox_remove(mtx));
	CHECK(hwlink_mailbox_remove(mrx));
	printf("ctest: all checks passed\n");
	return 0;
}

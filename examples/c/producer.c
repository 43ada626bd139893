/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * A C producer: opens the sending end of a link (created by a consumer:
 * consumer.cpp, or the Rust `peer consume`) and sends numbered greetings.
 *
 *   producer [--link NAME] [--count N]      (defaults: c-demo, 100000)
 *
 * Each message: an 8-byte little-endian sequence number, then the text
 * "hello from C #<seq>". Odd messages are written in place (hwlink_reserve,
 * hwlink_commit), even ones copied (hwlink_send). Closing the sender ends
 * the stream: the consumer sees HWLINK_DISCONNECTED after the last message.
 *
 * Build: cc producer.c $(pkg-config --cflags --libs hwlink) -o producer
 */
#define _POSIX_C_SOURCE 200809L
#include <hwlink.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int fail(const char *what, hwlink_status s)
{
	fprintf(stderr, "producer: %s: %s: %s\n", what, hwlink_status_name(s), hwlink_last_error());
	return 1;
}

int main(int argc, char **argv)
{
	const char *link = "c-demo";
	unsigned long long count = 100000;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--link") == 0)
			link = argv[i + 1];
		else if (strcmp(argv[i], "--count") == 0)
			count = strtoull(argv[i + 1], NULL, 10);
	}

	/* The consumer creates the link: retry for up to 20 s until it has. */
	hwlink_sender *tx = NULL;
	hwlink_status s;
	for (int tries = 0; (s = hwlink_sender_open(link, NULL, &tx)) == HWLINK_OPEN_FAILED && tries < 2000;
	     tries++)
		nanosleep(&(struct timespec){.tv_nsec = 10000000}, NULL);
	if (s != HWLINK_OK)
		return fail("hwlink_sender_open", s);

	char m[64];
	for (unsigned long long seq = 0; seq < count; seq++) {
		for (int i = 0; i < 8; i++)
			m[i] = (char)(seq >> (8 * i));
		int n = snprintf(m + 8, sizeof m - 8, "hello from C #%llu", seq);
		size_t len = 8 + (size_t)n;
		if (seq % 2 == 0) {
			s = hwlink_send(tx, m, len);
		} else {
			void *slot;
			s = hwlink_reserve(tx, len, &slot);
			if (s == HWLINK_OK) {
				memcpy(slot, m, len);
				s = hwlink_commit(tx, len);
			}
		}
		if (s != HWLINK_OK)
			return fail("send", s);
	}
	printf("C producer: sent %llu messages on %s\n", count, link);
	hwlink_sender_close(tx);
	return 0;
}

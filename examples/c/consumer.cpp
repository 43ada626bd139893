// SPDX-License-Identifier: MIT OR Apache-2.0
// A C++ consumer: creates the receiving end of a link, waits for messages
// on its pollable descriptor (poll(2)), drains them with try_recv, and
// checks every sequence number arrives once, in order, until the producer
// (producer.c, or the Rust `peer produce`) closes: HWLINK_DISCONNECTED.
//
//   consumer [--link NAME]        (default: c-demo)
//
// Build: c++ -std=c++17 consumer.cpp $(pkg-config --cflags --libs hwlink) -o consumer
#include "hwlink.hpp"

#include <poll.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

int main(int argc, char **argv) try {
    std::string link = "c-demo";
    for (int i = 1; i + 1 < argc; i += 2)
        if (std::strcmp(argv[i], "--link") == 0)
            link = argv[i + 1];

    auto rx = hwlink::Receiver::create(link);
    int fd = rx.fd(); // -1: no descriptor here; then wait in recv_timeout
    std::vector<char> msg;
    uint64_t next = 0;
    std::string from;
    for (;;) {
        hwlink_status s = rx.try_recv(msg);
        if (s == HWLINK_EMPTY) {
            if (fd >= 0) {
                pollfd p{fd, POLLIN, 0};
                if (poll(&p, 1, 30000) == 0)
                    throw std::runtime_error("no message for 30 s");
                continue;
            }
            s = rx.recv_timeout(msg, 30'000'000'000ULL);
            if (s == HWLINK_TIMEOUT)
                throw std::runtime_error("no message for 30 s");
        }
        if (s == HWLINK_DISCONNECTED)
            break;
        uint64_t seq = 0;
        if (msg.size() < 8)
            throw std::runtime_error("short message");
        for (int i = 0; i < 8; i++)
            seq |= uint64_t(uint8_t(msg[i])) << (8 * i);
        std::string text(msg.begin() + 8, msg.end());
        std::string tail = " #" + std::to_string(seq);
        if (seq != next || text.rfind("hello from ", 0) != 0 || text.size() < tail.size() ||
            text.compare(text.size() - tail.size(), tail.size(), tail) != 0)
            throw std::runtime_error("message #" + std::to_string(next) + ": got " + text);
        if (from.empty())
            from = text.substr(11, text.size() - 11 - tail.size());
        next++;
    }
    std::printf("C++ consumer: %llu messages from the %s producer, each once, in order (%s)\n",
                (unsigned long long)next, from.c_str(), fd >= 0 ? "woken by poll(2)" : "no pollable descriptor");
    return 0;
} catch (const std::exception &e) {
    std::fprintf(stderr, "consumer: %s\n", e.what());
    return 1;
}

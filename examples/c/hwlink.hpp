// SPDX-License-Identifier: MIT OR Apache-2.0
// A header-only RAII wrapper of hwlink's C API for the C++ example: a
// receiving end that closes itself, and an exception that carries
// hwlink_last_error(). A few lines; extend it the same way for senders,
// mailboxes and members.
#pragma once
#include <hwlink.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace hwlink {

struct Error : std::runtime_error {
    hwlink_status status;
    Error(const char *what, hwlink_status s)
        : std::runtime_error(std::string(what) + ": " + hwlink_status_name(s) + ": " +
                             hwlink_last_error()),
          status(s) {}
};

class Receiver {
  public:
    static Receiver create(const std::string &name, const hwlink_link_options *opts = nullptr) {
        hwlink_receiver *rx = nullptr;
        if (hwlink_status s = hwlink_receiver_create(name.c_str(), opts, &rx); s != HWLINK_OK)
            throw Error("hwlink_receiver_create", s);
        return Receiver(rx);
    }
    Receiver(Receiver &&o) noexcept : rx_(o.rx_) { o.rx_ = nullptr; }
    Receiver(const Receiver &) = delete;
    Receiver &operator=(const Receiver &) = delete;
    ~Receiver() { hwlink_receiver_close(rx_); }

    // A status the caller handles (OK, EMPTY, TIMEOUT, DISCONNECTED), or
    // an exception for every other.
    hwlink_status try_recv(std::vector<char> &msg) { return take(hwlink_try_recv, msg); }
    hwlink_status recv_timeout(std::vector<char> &msg, uint64_t timeout_ns) {
        msg.resize(hwlink_receiver_max_message(rx_));
        size_t len = 0;
        hwlink_status s = hwlink_recv_timeout(rx_, msg.data(), msg.size(), &len, timeout_ns);
        return done("hwlink_recv_timeout", s, msg, len);
    }
    // The pollable descriptor, or -1 where there is none (HWLINK_UNSUPPORTED).
    int fd() {
        int fd = -1;
        hwlink_status s = hwlink_receiver_fd(rx_, &fd);
        if (s != HWLINK_OK && s != HWLINK_UNSUPPORTED)
            throw Error("hwlink_receiver_fd", s);
        return s == HWLINK_OK ? fd : -1;
    }

  private:
    explicit Receiver(hwlink_receiver *rx) : rx_(rx) {}
    template <class F> hwlink_status take(F f, std::vector<char> &msg) {
        msg.resize(hwlink_receiver_max_message(rx_));
        size_t len = 0;
        hwlink_status s = f(rx_, msg.data(), msg.size(), &len);
        return done("hwlink_try_recv", s, msg, len);
    }
    static hwlink_status done(const char *what, hwlink_status s, std::vector<char> &msg, size_t len) {
        if (s == HWLINK_OK)
            msg.resize(len);
        else if (s != HWLINK_EMPTY && s != HWLINK_TIMEOUT && s != HWLINK_DISCONNECTED)
            throw Error(what, s);
        return s;
    }
    hwlink_receiver *rx_;
};

} // namespace hwlink

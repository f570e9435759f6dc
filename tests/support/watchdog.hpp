// Ends a test process that hangs: a deadlock found by a test must fail it, not stall CI.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

namespace test {

/// While alive, a thread waits `limit`; if the scope has not ended by then it prints
/// `what` and ends the process with exit code 1 (a hang cannot be unwound).
class watchdog {
public:
    explicit watchdog(std::string what, std::chrono::seconds limit = std::chrono::seconds(30))
        : what_(std::move(what)), thread_([this, limit] {
              std::unique_lock lock(mutex_);
              if (!wake_.wait_for(lock, limit, [this] { return done_; })) {
                  std::fprintf(stderr, "watchdog: hung for %llds: %s\n", static_cast<long long>(limit.count()),
                               what_.c_str());
                  std::fflush(stderr);
                  std::_Exit(1);
              }
          }) {}

    ~watchdog() {
        {
            std::lock_guard lock(mutex_);
            done_ = true;
        }
        wake_.notify_all();
        thread_.join();
    }

    watchdog(const watchdog&) = delete;
    watchdog& operator=(const watchdog&) = delete;

private:
    std::string what_;
    std::mutex mutex_;
    std::condition_variable wake_;
    bool done_ = false;
    std::thread thread_;
};

} // namespace test

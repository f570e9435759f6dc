// The mailbox of a keyed subscriber (`ordering::by_key`): one queue per key waiting,
// each queue a task of its own on the subscriber's executor.
#pragma once

#include <herald/clock.hpp>
#include <herald/detail/cpu_pause.hpp>
#include <herald/detail/erased.hpp>
#include <herald/envelope.hpp>
#include <herald/executor.hpp>
#include <herald/flow_control.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <unordered_map>
#include <utility>
#include <vector>

namespace herald::detail {

/// One key's waiting events. While it has events it is scheduled (posted, or running on
/// a worker) exactly once, so the events of one key are handled one at a time, in the
/// order they were queued; queues of different keys run on as many workers as the
/// executor has.
class key_queue : public task, public std::enable_shared_from_this<key_queue> {
public:
    /// Handles the events of one key queue (the subscriber).
    class handler {
    public:
        virtual ~handler() = default;
        /// Handles (or drops) one event taken off a key queue.
        virtual void handle_keyed(envelope_base& env) noexcept = 0;
        /// Runs `queue` again later (a full batch), or fails its events if that fails.
        virtual void reschedule_keyed(const std::shared_ptr<key_queue>& queue) noexcept = 0;
        /// Events taken off the mailbox (their places in a bounded one are free again).
        virtual void left_keyed(std::size_t count) noexcept = 0;
        /// `queue` ran dry: waits a little (bounded) for more of its key before its
        /// worker lets it go; true when some arrived.
        virtual bool await_keyed(const key_queue& queue) noexcept = 0;
    };

    key_queue(std::unique_ptr<stored_key> key, class keyed_mailbox& owner, std::shared_ptr<handler> by) noexcept
        : key_(std::move(key)), owner_(owner), handler_(std::move(by)) {}

    void run() noexcept override;

    [[nodiscard]] const stored_key& key() const noexcept { return *key_; }

    /// True when events wait for this key (read without the lock: a hint).
    [[nodiscard]] bool has_waiting() const noexcept { return queued_.load(std::memory_order_relaxed) != 0; }

    /// Takes every event waiting for this key off the mailbox, one by one, to
    /// `handle(env)` (an executor refused to run the queue: each event fails), until the
    /// key is empty and the queue left the mailbox.
    template <class Handle>
    void drain_each(Handle&& handle) noexcept;

private:
    friend class keyed_mailbox;

    std::unique_ptr<stored_key> key_;
    keyed_mailbox& owner_;
    /// The subscriber: kept alive (and with it the mailbox) while this queue is posted.
    std::shared_ptr<handler> handler_;
    /// Under the mailbox's mutex: events waiting, oldest first.
    std::vector<envelope_base*> waiting_;
    /// `waiting_.size()`, for `has_waiting` (written under the lock).
    std::atomic<std::size_t> queued_{0};
    /// The run's own batch, taken from `waiting_` at once (the swap keeps both capacities).
    std::vector<envelope_base*> batch_;
};

/// The mailbox of a keyed subscriber. A put finds (or makes) its key's queue under a
/// short lock and appends a heap copy of the event; a queue that was idle is returned
/// to the caller to post. A running queue takes everything waiting for its key at once,
/// handles it without the lock, and when it finds its key empty (and nothing arrived
/// after a short wait) removes itself. The lock is a spin lock: its sections are a few
/// dozen instructions, taken by a publisher per event and a worker per batch, where a
/// contended mutex sent both into the kernel. No user code runs under it except the
/// key's `==`.
class keyed_mailbox final : public mailbox_base {
public:
    keyed_mailbox(const envelope_ops& ops, std::size_t batch) noexcept
        : mailbox_base(kind::keyed), ops_(ops), batch_(batch == 0 ? 1 : batch) {}

    ~keyed_mailbox() override {
        const std::lock_guard lock(mutex_);
        for (auto& [hash, queues] : queues_) {
            for (auto& q : queues) {
                for (envelope_base* env : q->waiting_) {
                    ops_.free(env);
                }
                q->waiting_.clear();
            }
        }
    }

    /// Not used: publishers call `push`.
    void put(envelope_base& /*env*/, bool /*move*/, std::size_t /*level*/, clock_source::time_point /*now*/) override {
        throw std::logic_error("herald: keyed mailboxes take events through push()");
    }

    /// Queues a heap copy (or move) of `env` under `key`. Returns the key's queue when it
    /// was idle (made for the subscriber `make_handler()` returns): the caller posts it.
    /// Throws, changing nothing, when the copy or memory fails.
    template <class MakeHandler>
    std::shared_ptr<key_queue> push(envelope_base& env, bool move, const stored_key& key, MakeHandler&& make_handler) {
        envelope_base* copy = move ? ops_.move_new(env) : ops_.clone(env);
        try {
            const std::lock_guard lock(mutex_);
            // Runs of one key are common: the last key pushed is looked at first.
            key_queue* found = last_ != nullptr && last_->key().same(key) ? last_ : nullptr;
            if (found == nullptr) {
                auto& bucket = queues_[key.hash()];
                for (std::size_t i = 0; found == nullptr && i < bucket.size(); ++i) {
                    found = bucket[i]->key().same(key) ? bucket[i].get() : nullptr;
                }
                if (found == nullptr) {
                    auto fresh = std::make_shared<key_queue>(key.clone(), *this, make_handler());
                    fresh->waiting_.push_back(copy);
                    fresh->queued_.store(1, std::memory_order_relaxed);
                    bucket.push_back(fresh);
                    count_.fetch_add(1, std::memory_order_relaxed);
                    last_ = fresh.get();
                    return fresh;
                }
            }
            found->waiting_.push_back(copy);
            found->queued_.store(found->waiting_.size(), std::memory_order_relaxed);
            count_.fetch_add(1, std::memory_order_relaxed);
            last_ = found;
            return nullptr; // scheduled already: it will find the event
        } catch (...) {
            ops_.free(copy);
            throw;
        }
    }

    /// The strand-side calls: a keyed mailbox has no strand.
    std::size_t take_chunk(std::size_t /*want*/, clock_source::time_point /*now*/) noexcept override { return 0; }
    envelope_base& at(std::size_t /*i*/) noexcept override { std::terminate(); }
    void release_chunk(std::size_t /*count*/) noexcept override {}
    bool take_shared(taken_item& /*out*/) noexcept override { return false; }

    [[nodiscard]] bool has_puts() const noexcept override { return count_.load(std::memory_order_relaxed) != 0; }
    /// Events waiting, or in a batch a key's worker is handling.
    [[nodiscard]] std::size_t size_approx() const noexcept override { return count_.load(std::memory_order_relaxed); }

    [[nodiscard]] std::unique_ptr<mailbox_base> fresh() const override {
        return std::make_unique<keyed_mailbox>(ops_, batch_);
    }

    /// Keys with events waiting or running now.
    [[nodiscard]] std::size_t keys() const {
        const std::lock_guard lock(mutex_);
        std::size_t n = 0;
        for (const auto& [hash, queues] : queues_) {
            n += queues.size();
        }
        return n;
    }

private:
    friend class key_queue;

    /// Moves what waits for `q` into its batch; when nothing waits, even after `linger()`
    /// (called without the lock) waited for more, removes `q` (which stops being
    /// scheduled) and returns false.
    template <class Linger>
    bool refill(key_queue& q, Linger&& linger) noexcept {
        if (!q.has_waiting()) {
            (void)linger(); // whatever it saw, the lock decides
        }
        const std::lock_guard lock(mutex_);
        if (q.waiting_.empty()) {
            auto found = queues_.find(q.key().hash());
            if (found != queues_.end()) {
                auto& bucket = found->second;
                if (last_ == &q) {
                    last_ = nullptr;
                }
                for (std::size_t i = 0; i < bucket.size(); ++i) {
                    if (bucket[i].get() == &q) {
                        bucket[i] = std::move(bucket.back());
                        bucket.pop_back();
                        break;
                    }
                }
                if (bucket.empty()) {
                    queues_.erase(found);
                }
            }
            return false;
        }
        q.batch_.swap(q.waiting_);
        q.queued_.store(0, std::memory_order_relaxed);
        return true;
    }

    const envelope_ops& ops_;
    const std::size_t batch_;
    mutable spin_lock mutex_;
    std::unordered_map<std::size_t, std::vector<std::shared_ptr<key_queue>>> queues_;
    /// Events waiting or being handled, over all keys.
    std::atomic<std::size_t> count_{0};
    /// Under the lock: the queue of the last key pushed (null once it left).
    key_queue* last_ = nullptr;
};

inline void key_queue::run() noexcept {
    keyed_mailbox& box = owner_;
    const std::shared_ptr<handler> by = handler_; // alive until this run returns
    std::size_t done = 0;
    while (done < box.batch_) {
        if (batch_.empty() && !box.refill(*this, [&] { return by->await_keyed(*this); })) {
            return; // idle: removed from the mailbox; a later put makes a new queue
        }
        const std::size_t n = batch_.size();
        for (std::size_t i = 0; i < n; ++i) {
            by->handle_keyed(*batch_[i]);
            box.ops_.free(std::exchange(batch_[i], nullptr));
        }
        batch_.clear();
        box.count_.fetch_sub(n, std::memory_order_relaxed);
        by->left_keyed(n);
        done += n;
    }
    // A full batch: give the worker to the other keys, come back later.
    by->reschedule_keyed(shared_from_this());
}

template <class Handle>
void key_queue::drain_each(Handle&& handle) noexcept {
    keyed_mailbox& box = owner_;
    while (!batch_.empty() || box.refill(*this, [] { return false; })) {
        for (std::size_t i = 0; i < batch_.size(); ++i) {
            handle(*batch_[i]);
            box.ops_.free(std::exchange(batch_[i], nullptr));
        }
        box.count_.fetch_sub(batch_.size(), std::memory_order_relaxed);
        batch_.clear();
    }
}

} // namespace herald::detail

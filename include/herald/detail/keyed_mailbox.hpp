// The mailbox of a keyed subscriber (`ordering::by_key`): one queue per key waiting,
// each queue a task of its own on the subscriber's executor.
#pragma once

#include <herald/detail/cpu_pause.hpp>
#include <herald/detail/erased.hpp>
#include <herald/detail/stream_mailbox.hpp>
#include <herald/detail/thread_slots.hpp>
#include <herald/envelope.hpp>
#include <herald/executor.hpp>
#include <herald/flow_control.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <unordered_map>
#include <utility>
#include <vector>

namespace herald::detail {

/// One key's waiting events. While it has events it is scheduled (posted, or running on
/// a worker) exactly once, so the events of one key are handled one at a time; queues
/// of different keys run on as many workers as the executor has. The events wait in a
/// stream (one single-producer queue per publishing thread, in place), so each
/// publisher's events of the key come out in the order it published them.
class key_queue : public task, public std::enable_shared_from_this<key_queue> {
public:
    /// Handles the events of one key queue (the subscriber).
    class handler {
    public:
        virtual ~handler() = default;
        /// One turn of `queue` on a worker: handles a batch through `run_batch`, and
        /// schedules the queue again when the batch was full.
        virtual void run_keyed(key_queue& queue) noexcept = 0;
    };

    key_queue(std::unique_ptr<stored_key> key, class keyed_mailbox& owner, std::shared_ptr<handler> by,
              const envelope_ops& ops, const stream_layout& layout)
        : key_(std::move(key)), owner_(owner), handler_(std::move(by)), events_(std::in_place, ops, layout) {}

    void run() noexcept override {
        const std::shared_ptr<handler> by = handler_; // alive until this turn returns
        by->run_keyed(*this);
    }

    /// Handles up to a batch of this key's events in place: `handle(env)` for each,
    /// `left(count)` after each run of them. When the key runs dry and `await_more()`
    /// (a short, bounded wait) sees nothing coming, the queue leaves the mailbox.
    /// Returns true after a full batch (the caller schedules the queue again), false
    /// once the queue left.
    template <class Handle, class Await, class Left>
    bool run_batch(Handle&& handle, Await&& await_more, Left&& left) noexcept;

    [[nodiscard]] const stored_key& key() const noexcept { return *key_; }

    /// True when events wait for this key, or a publisher that found the queue is
    /// putting one (read without the lock: a hint).
    [[nodiscard]] bool has_waiting() const noexcept {
        return putting_.load(std::memory_order_acquire) != 0 || events_->has_puts();
    }

    /// Takes every event waiting for this key off the mailbox, one by one, to
    /// `handle(env)` (an executor refused to run the queue: each event fails), until the
    /// key is empty and the queue left the mailbox. Returns how many it took.
    template <class Handle>
    std::size_t drain_each(Handle&& handle) noexcept;

private:
    friend class keyed_mailbox;

    std::unique_ptr<stored_key> key_;
    keyed_mailbox& owner_;
    /// The subscriber: kept alive (and with it the mailbox) while this queue is listed.
    std::shared_ptr<handler> handler_;
    /// Under the mailbox's lock: publishing threads whose pin caches this queue (see
    /// `keyed_mailbox::pin`); while there are some, leaving needs the pin protocol.
    std::uint32_t cached_by_ = 0;
    /// Publishers without a pin that found this queue under the mailbox's lock and have
    /// not finished their put: the queue cannot leave the mailbox before they do.
    alignas(64) std::atomic<std::uint32_t> putting_{0};
    /// In the mailbox (pinned publishers read it without the lock). Cleared and set
    /// again only under the lock, by `leave`.
    std::atomic<bool> listed_{true};
    /// The events, read by this queue's run only (it is scheduled once at a time).
    /// Destroyed when the queue leaves (a pin may keep the queue, not its memory).
    alignas(64) std::optional<stream_mailbox> events_;
};

/// The mailbox of a keyed subscriber. A put finds (or makes) its key's queue, then
/// copies the event into that queue's stream (the copy is user code, run without any
/// lock); a queue that was idle is posted. A running queue takes runs of its key's
/// events and handles them in place; when it finds its key empty (and nothing arrived
/// after a short wait) it leaves the mailbox, unless a publisher is putting into it.
///
/// Finding the queue takes a spin lock (a few dozen instructions; no user code under
/// it but the key's `==`, and its copy when a key first appears), except for a
/// publishing thread that publishes the key it published last: its pin finds the
/// queue with no lock and no atomic read-modify-write, so a stream of one key costs
/// about what a serial subscriber's stream costs.
class keyed_mailbox final : public mailbox_base {
public:
    keyed_mailbox(const envelope_ops& ops, const stream_layout& layout, std::size_t batch) noexcept
        : mailbox_base(kind::keyed), ops_(ops), layout_(layout), batch_(batch == 0 ? 1 : batch) {}

    /// Not used: publishers call `push`.
    void put(envelope_base& /*env*/, bool /*move*/, std::size_t /*level*/, clock_source::time_point /*now*/) override {
        throw std::logic_error("herald: keyed mailboxes take events through push()");
    }

    /// Queues a copy (or move) of `env` under `key`. A key that was idle gets a new
    /// queue (made for the subscriber `make_handler()` returns), which `post(queue)`
    /// schedules once the event is in. Throws, queuing nothing, when the copy or memory
    /// fails.
    ///
    /// A publishing thread with a pin (see `pin`) that publishes the key it published
    /// last puts without the lock and without an atomic read-modify-write: it announces
    /// the queue in its pin, and puts if the queue is still listed. `leave` unlists a
    /// queue, runs the heavy fence and then looks at the pins, so one of the two sees
    /// the other (the scheme of `fences`).
    template <class MakeHandler, class Post>
    void push(envelope_base& env, bool move, const stored_key& key, MakeHandler&& make_handler, Post&& post) {
        const thread_slot& me = this_thread_slot();
        pin* const mine = me.index < pins ? &pins_[me.index] : nullptr;
        if (mine != nullptr) {
            key_queue* const q = mine->cached.get();
            if (q != nullptr && q->key().same(key)) [[likely]] {
                mine->queue.store(q, std::memory_order_relaxed);
                fences::light();
                if (q->listed_.load(std::memory_order_relaxed)) [[likely]] {
                    try {
                        q->events_->put_here(env, move, {});
                    } catch (...) {
                        done_putting(mine, *q);
                        throw;
                    }
                    done_putting(mine, *q);
                    return;
                }
                mine->queue.store(nullptr, std::memory_order_relaxed);
            }
        }
        std::shared_ptr<key_queue> fresh;
        key_queue* q = nullptr;
        {
            const std::lock_guard lock(mutex_);
            q = find(key, make_handler, fresh);
            if (mine != nullptr) {
                // Under the lock, so `leave` (which takes it) sees the pin.
                mine->queue.store(q, std::memory_order_relaxed);
                if (mine->cached.get() != q) {
                    if (mine->cached) {
                        --mine->cached->cached_by_;
                    }
                    mine->cached = fresh ? fresh : shared_in_map(*q);
                    ++q->cached_by_;
                }
            } else {
                q->putting_.fetch_add(1, std::memory_order_relaxed);
            }
        }
        try {
            q->events_->put_here(env, move, {});
        } catch (...) {
            done_putting(mine, *q);
            // A queue made for this put leaves again, unless another publisher found it
            // and put into it meanwhile (and counts on it being scheduled).
            if (fresh && !leave(*fresh)) {
                post(fresh);
            }
            throw;
        }
        done_putting(mine, *q);
        if (fresh) {
            post(fresh);
        }
    }

    /// The strand-side calls: a keyed mailbox has no strand.
    std::size_t take_chunk(std::size_t /*want*/, clock_source::time_point /*now*/) noexcept override { return 0; }
    envelope_base& at(std::size_t /*i*/) noexcept override { std::terminate(); }
    void release_chunk(std::size_t /*count*/) noexcept override {}
    bool take_shared(taken_item& /*out*/) noexcept override { return false; }

    [[nodiscard]] bool has_puts() const noexcept override {
        const std::lock_guard lock(mutex_);
        for (const auto& [hash, queues] : queues_) {
            for (const auto& q : queues) {
                if (q->has_waiting()) {
                    return true;
                }
            }
        }
        return false;
    }

    /// Events waiting, over all keys (not those in a run a worker is handling).
    [[nodiscard]] std::size_t size_approx() const noexcept override {
        const std::lock_guard lock(mutex_);
        std::size_t n = 0;
        for (const auto& [hash, queues] : queues_) {
            for (const auto& q : queues) {
                n += q->events_->size_approx();
            }
        }
        return n;
    }

    [[nodiscard]] std::unique_ptr<mailbox_base> fresh() const override {
        return std::make_unique<keyed_mailbox>(ops_, layout_, batch_);
    }

private:
    friend class key_queue;

    /// Publishing threads whose slot index is below this get a pin.
    static constexpr std::size_t pins = 8;

    /// One publishing thread's fast path (written by that thread only, except
    /// `cached`'s count in its queue, kept under the lock). `queue` is the queue it is
    /// putting into now (null between puts); `cached` the queue of the key it published
    /// last, kept alive here.
    struct alignas(64) pin {
        std::atomic<key_queue*> queue{nullptr};
        std::shared_ptr<key_queue> cached;
    };

    /// A put into `q` ended (done or failed). Release: a `leave` that reads this sees the
    /// event in the stream.
    static void done_putting(pin* mine, key_queue& q) noexcept {
        if (mine != nullptr) {
            mine->queue.store(nullptr, std::memory_order_release);
        } else {
            q.putting_.fetch_sub(1, std::memory_order_release);
        }
    }

    /// Under the lock: the queue of `key`, made (into `fresh`) when the key has none.
    template <class MakeHandler>
    key_queue* find(const stored_key& key, MakeHandler& make_handler, std::shared_ptr<key_queue>& fresh) {
        // Runs of one key are common: the last key pushed is looked at first.
        key_queue* q = last_ != nullptr && last_->key().same(key) ? last_ : nullptr;
        if (q == nullptr) {
            auto& bucket = queues_[key.hash()];
            for (std::size_t i = 0; q == nullptr && i < bucket.size(); ++i) {
                q = bucket[i]->key().same(key) ? bucket[i].get() : nullptr;
            }
            if (q == nullptr) {
                try {
                    fresh = std::make_shared<key_queue>(key.clone(), *this, make_handler(), ops_, layout_);
                    bucket.push_back(fresh);
                } catch (...) {
                    if (bucket.empty()) {
                        queues_.erase(key.hash());
                    }
                    throw; // nothing listed
                }
                q = fresh.get();
            }
        }
        last_ = q;
        return q;
    }

    /// Under the lock: the map's owner of listed queue `q`.
    std::shared_ptr<key_queue> shared_in_map(key_queue& q) const noexcept {
        for (const auto& listed : queues_.at(q.key().hash())) {
            if (listed.get() == &q) {
                return listed;
            }
        }
        std::terminate(); // a listed queue is in the map
    }

    /// The run of `q` found its key empty: removes `q` from the mailbox (it stops being
    /// scheduled) unless events wait or a publisher is putting one. True when it left.
    bool leave(key_queue& q) noexcept {
        std::unique_lock lock(mutex_);
        // Acquire: a put that finished is visible to the look at the stream below.
        const auto busy = [&] { return q.putting_.load(std::memory_order_acquire) != 0 || q.events_->has_puts(); };
        if (busy()) {
            return false;
        }
        if (q.cached_by_ != 0) {
            // A pinned publisher may be putting without the lock: unlist, run the heavy
            // fence (a system call: not under the lock, which publishers spin on), then
            // look at the pins. Publishers that find the queue under the lock meanwhile
            // pin it or count themselves in `putting_`, so the second look sees them too.
            q.listed_.store(false, std::memory_order_relaxed);
            lock.unlock();
            fences::heavy();
            lock.lock();
            bool pinned = false;
            for (const pin& p : pins_) {
                pinned = pinned || p.queue.load(std::memory_order_acquire) == &q;
            }
            if (pinned || busy()) {
                q.listed_.store(true, std::memory_order_relaxed);
                return false;
            }
        }
        auto found = queues_.find(q.key().hash());
        if (found != queues_.end()) {
            auto& bucket = found->second;
            if (last_ == &q) {
                last_ = nullptr;
            }
            for (std::size_t i = 0; i < bucket.size(); ++i) {
                if (bucket[i].get() == &q) {
                    // The caller's run holds the queue alive through the executor.
                    bucket[i] = std::move(bucket.back());
                    bucket.pop_back();
                    break;
                }
            }
            if (bucket.empty()) {
                queues_.erase(found);
            }
        }
        // Pins may keep the queue: it must not keep the subscriber (the running task
        // holds its own reference until it returns), nor the memory of its stream, which
        // nobody reaches any more (publishers only through a listed queue).
        q.handler_.reset();
        q.events_.reset();
        return true;
    }

    const envelope_ops& ops_;
    const stream_layout layout_;
    const std::size_t batch_;
    mutable spin_lock mutex_;
    std::unordered_map<std::size_t, std::vector<std::shared_ptr<key_queue>>> queues_;
    /// Under the lock: the queue of the last key pushed (null once it left).
    key_queue* last_ = nullptr;
    pin pins_[pins];
};

template <class Handle, class Await, class Left>
bool key_queue::run_batch(Handle&& handle, Await&& await_more, Left&& left) noexcept {
    const keyed_mailbox& box = owner_;
    const std::size_t batch = box.batch_;
    std::size_t done = 0;
    while (done < batch) {
        const std::size_t got = events_->take_chunk(batch - done, {});
        if (got == 0) {
            if (await_more()) {
                continue; // more came (or is being put)
            }
            if (owner_.leave(*this)) {
                return false; // idle: removed from the mailbox; a later put makes a new queue
            }
            cpu_pause(); // a put is finishing
            continue;
        }
        for (std::size_t i = 0; i < got; ++i) {
            handle(events_->at(i));
        }
        events_->release_chunk(got);
        left(got);
        done += got;
    }
    return true;
}

template <class Handle>
std::size_t key_queue::drain_each(Handle&& handle) noexcept {
    keyed_mailbox& box = owner_;
    std::size_t taken = 0;
    for (;;) {
        const std::size_t got = events_->take_chunk(box.batch_, {});
        if (got == 0) {
            if (box.leave(*this)) {
                return taken;
            }
            cpu_pause();
            continue;
        }
        for (std::size_t i = 0; i < got; ++i) {
            handle(events_->at(i));
        }
        events_->release_chunk(got);
        taken += got;
    }
}

} // namespace herald::detail

// The mailbox of a subscriber on a priority topic: one stream mailbox per level, and the
// rules that pick the level to serve next.
#pragma once

#include <herald/clock.hpp>
#include <herald/detail/erased.hpp>
#include <herald/detail/stream_mailbox.hpp>
#include <herald/envelope.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>

namespace herald::detail {

/// One stream mailbox per priority level (so each publisher's events of one level keep
/// their order), read one event at a time: before each event the strand looks at the
/// levels again. Without aging or expiry it serves the highest non-empty level (lower
/// levels are not even looked at). With them, the slots carry their queue time: an
/// expired head goes first (so it leaves the queue at once), and an aged head below the
/// top level goes before every higher level, oldest first. (The top level needs no
/// promotion; letting its aged events compete by age would starve the lower levels
/// again under overload.)
class priority_mailbox final : public mailbox_base {
public:
    priority_mailbox(const envelope_ops& ops, const stream_layout& layout, const lane_rules& rules)
        : mailbox_base(kind::priority), rules_(rules), levels_(new std::unique_ptr<stream_mailbox>[rules.levels]) {
        for (std::size_t i = 0; i < rules_.levels; ++i) {
            levels_[i] = std::make_unique<stream_mailbox>(ops, layout);
        }
    }

    void put(envelope_base& env, bool move, std::size_t level, clock_source::time_point now) override {
        levels_[level]->put_here(env, move, now);
    }

    std::size_t take_chunk(std::size_t /*want*/, clock_source::time_point now) noexcept override {
        chosen_ = choose(now);
        return chosen_ < rules_.levels ? 1 : 0;
    }

    envelope_base& at(std::size_t /*i*/) noexcept override { return levels_[chosen_]->at(0); }

    [[nodiscard]] clock_source::time_point enqueued(std::size_t /*i*/) const noexcept override {
        return levels_[chosen_]->enqueued(0);
    }

    void release_chunk(std::size_t count) noexcept override {
        if (count != 0) {
            levels_[chosen_]->release_chunk(1);
        }
    }

    bool take_shared(taken_item& /*out*/) noexcept override { return false; }

    [[nodiscard]] bool has_puts() const noexcept override {
        for (std::size_t i = 0; i < rules_.levels; ++i) {
            if (levels_[i]->has_puts()) {
                return true;
            }
        }
        return false;
    }

    [[nodiscard]] std::size_t size_approx() const noexcept override {
        std::size_t total = 0;
        for (std::size_t i = 0; i < rules_.levels; ++i) {
            total += levels_[i]->size_approx();
        }
        return total;
    }

    [[nodiscard]] std::unique_ptr<mailbox_base> fresh() const override {
        return std::make_unique<priority_mailbox>(*this);
    }

    /// A new, empty mailbox like `other`.
    priority_mailbox(const priority_mailbox& other)
        : mailbox_base(kind::priority),
          rules_(other.rules_),
          levels_(new std::unique_ptr<stream_mailbox>[other.rules_.levels]) {
        for (std::size_t i = 0; i < rules_.levels; ++i) {
            levels_[i] = std::unique_ptr<stream_mailbox>(
                static_cast<stream_mailbox*>(other.levels_[i]->fresh().release()));
        }
    }

private:
    /// The level to serve (`rules_.levels` when all are empty); its next event is the
    /// exposed chunk of that level's stream mailbox.
    std::size_t choose(clock_source::time_point now) noexcept {
        const std::size_t levels = rules_.levels;
        if (rules_.aging_ns == 0 && rules_.ttl_ns == 0) {
            for (std::size_t i = levels; i-- > 0;) {
                if (levels_[i]->take_chunk(1, now) != 0) {
                    return i;
                }
            }
            return levels;
        }
        std::size_t chosen = levels;
        std::size_t highest = levels;
        clock_source::time_point oldest = clock_source::time_point::max();
        for (std::size_t i = 0; i < levels; ++i) {
            if (levels_[i]->take_chunk(1, now) == 0) {
                continue;
            }
            highest = i;
            const clock_source::time_point since = levels_[i]->enqueued(0);
            const auto waited = (now - since).count();
            const bool due = (rules_.ttl_ns > 0 && waited >= rules_.ttl_ns) ||
                             (rules_.aging_ns > 0 && i + 1 < levels && waited >= rules_.aging_ns);
            if (due && since < oldest) {
                oldest = since;
                chosen = i;
            }
        }
        // Each level's stream keeps the event it exposed above until the next look, so
        // the chosen level's chunk is the head that was compared.
        return chosen != levels ? chosen : highest;
    }

    const lane_rules rules_;
    std::unique_ptr<std::unique_ptr<stream_mailbox>[]> levels_;
    /// Strand only: the level whose next event is the current chunk.
    std::size_t chosen_ = 0;
};

} // namespace herald::detail

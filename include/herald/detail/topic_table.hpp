// Maps topic ids to topic states: lock-free lookups, inserts under the bus's mutex.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace herald::detail {

class topic_core;

/// An open-addressing hash table that only grows. Readers probe without locks; a writer
/// (serialised by the caller) fills a new slot's key before publishing its value, and
/// grows by building a larger table and publishing it whole. Old tables are kept until
/// the table dies, so a reader holding one is never left dangling.
class topic_table {
public:
    topic_table() { grow(16); }

    /// The topic registered under `key`, or null. Lock-free; O(1) expected.
    [[nodiscard]] topic_core* find(std::uint64_t key) const noexcept {
        const block* table = current_.load(std::memory_order_acquire);
        for (std::size_t i = key & table->mask;; i = (i + 1) & table->mask) {
            topic_core* value = table->slots[i].value.load(std::memory_order_acquire);
            if (value == nullptr) {
                return nullptr;
            }
            if (table->slots[i].key.load(std::memory_order_relaxed) == key) {
                return value;
            }
        }
    }

    /// Adds an entry; the key must not be present. Callers serialise inserts.
    void insert(std::uint64_t key, topic_core* value) {
        block* table = current_.load(std::memory_order_relaxed);
        if ((table->used + 1) * 2 > table->slots.size()) {
            grow(table->slots.size() * 2);
            table = current_.load(std::memory_order_relaxed);
        }
        place(*table, key, value);
    }

private:
    struct slot {
        std::atomic<std::uint64_t> key{0};
        std::atomic<topic_core*> value{nullptr};
    };
    struct block {
        explicit block(std::size_t size) : slots(size), mask(size - 1) {}
        std::vector<slot> slots;
        std::size_t mask;
        std::size_t used = 0;
    };

    static void place(block& table, std::uint64_t key, topic_core* value) noexcept {
        std::size_t i = key & table.mask;
        while (table.slots[i].value.load(std::memory_order_relaxed) != nullptr) {
            i = (i + 1) & table.mask;
        }
        table.slots[i].key.store(key, std::memory_order_relaxed);
        table.slots[i].value.store(value, std::memory_order_release);
        ++table.used;
    }

    void grow(std::size_t size) {
        auto bigger = std::make_unique<block>(size);
        if (const block* old = current_.load(std::memory_order_relaxed)) {
            for (const auto& s : old->slots) {
                if (topic_core* v = s.value.load(std::memory_order_relaxed)) {
                    place(*bigger, s.key.load(std::memory_order_relaxed), v);
                }
            }
        }
        current_.store(bigger.get(), std::memory_order_release);
        blocks_.push_back(std::move(bigger));
    }

    std::atomic<block*> current_{nullptr};
    std::vector<std::unique_ptr<block>> blocks_;
};

} // namespace herald::detail

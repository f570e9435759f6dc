// The NATS bridge's machinery that does not depend on event types: the connection, the
// export outbox and its sending thread, the import loop. See <herald/bridge/nats.hpp>.
#pragma once

#include <herald/bridge/cloudevents.hpp>
#include <herald/bus.hpp>
#include <herald/flow_control.hpp>
#include <herald/trace_context.hpp>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nats/nats.h>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace herald::nats {

/// A failure of the NATS client or server that the bridge cannot hide: the connection
/// could not be set up, a stream or consumer could not be created. `status` is the
/// C client's status code.
class bridge_error : public std::runtime_error {
public:
    bridge_error(const std::string& what, natsStatus code) : std::runtime_error(what), status(code) {}
    natsStatus status;
};

/// An export the outbox refused: it was full (`overflow::reject`, or `block` that timed
/// out) or the bridge has stopped. Thrown by the export's inline handler, so the publish
/// reports it like any failed inline delivery (`publish_result::failed_inline`, the
/// bus's error handler) and an at-least-once topic retries it.
class outbox_full : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// What `bridge_options::on_event` hears about.
enum class event_kind : std::uint8_t {
    connected,       ///< the connection is up (first time)
    disconnected,    ///< the connection was lost; exports wait in the outbox
    reconnected,     ///< the connection is back; waiting exports are sent in order
    closed,          ///< the connection is closed for good (bridge stopping, or reconnects exhausted)
    publish_failed,  ///< JetStream refused or did not acknowledge an export in time; it will be resent
    resending,       ///< `count` exports are being sent again, in order, after failures
    flush_timed_out, ///< drain()/shutdown() stopped waiting for acknowledgements; `count` still wait
    abandoned,       ///< the bridge stopped with `count` exports never acknowledged
    dead_letter,     ///< an imported message became a dead letter (`message` says why)
    import_error,    ///< the importer could not subscribe or fetch (it keeps trying)
};

/// The readable name of an event kind ("connected", ...).
[[nodiscard]] constexpr std::string_view to_string(event_kind kind) noexcept {
    switch (kind) {
    case event_kind::connected:
        return "connected";
    case event_kind::disconnected:
        return "disconnected";
    case event_kind::reconnected:
        return "reconnected";
    case event_kind::closed:
        return "closed";
    case event_kind::publish_failed:
        return "publish_failed";
    case event_kind::resending:
        return "resending";
    case event_kind::flush_timed_out:
        return "flush_timed_out";
    case event_kind::abandoned:
        return "abandoned";
    case event_kind::dead_letter:
        return "dead_letter";
    case event_kind::import_error:
        return "import_error";
    }
    return "unknown";
}

/// One report to `bridge_options::on_event`.
struct bridge_event {
    event_kind kind = event_kind::connected;
    /// The subject concerned (empty for connection events).
    std::string subject;
    /// Details: the server's or client's error text, the dead letter's reason.
    std::string message;
    /// How many events it concerns, where that is a number (resending, abandoned...).
    std::size_t count = 0;
};

/// Totals over the bridge's life; each field is read atomically, the set is not a snapshot.
struct bridge_stats {
    std::uint64_t exported = 0;           ///< events taken into the outbox
    std::uint64_t acknowledged = 0;       ///< exports JetStream acknowledged (stored, or already stored)
    std::uint64_t duplicates = 0;         ///< of those, acks saying the stream had the id already (a resend)
    std::uint64_t resent = 0;             ///< sends repeated after a failure or a missing acknowledgement
    std::uint64_t refused = 0;            ///< exports a full outbox refused (`reject`, `block` timed out)
    std::uint64_t dropped = 0;            ///< exports a full outbox dropped (`drop_oldest`, `drop_newest`)
    std::uint64_t abandoned = 0;          ///< exports never acknowledged when the bridge stopped
    std::uint64_t not_exported = 0;       ///< imported events an export of their topic did not send back
    std::uint64_t imported = 0;           ///< messages published on local topics
    std::uint64_t acked = 0;              ///< imported messages acknowledged to JetStream after settling
    std::uint64_t redeliveries_asked = 0; ///< imported messages given back for redelivery (refused locally)
    std::uint64_t dead_letters = 0;       ///< imported messages that became dead letters
    std::size_t outbox = 0;               ///< exports waiting for an acknowledgement now
};

/// An imported message that could not become an event: its body did not decode, its
/// headers are not CloudEvents herald can read, or JetStream delivered it more than
/// `import_options::max_deliver` times. Published on `dead_messages`; kept in the
/// bridge's bounded store (`bridge::dead_messages()`) when nobody is subscribed.
struct dead_message {
    std::string subject;
    /// Every header as received (values not decoded).
    std::vector<std::pair<std::string, std::string>> headers;
    /// The body as received.
    std::string data;
    /// Why it is a dead letter.
    std::string reason;
    /// The durable consumer that received it.
    std::string durable;
    /// Its sequence in the stream, and how many times JetStream delivered it.
    std::uint64_t stream_sequence = 0;
    std::uint64_t deliveries = 0;
};

/// The topic that carries `dead_message`s ("herald.nats.dead_messages").
struct dead_messages : topic<dead_message> {
    static constexpr std::string_view name = "herald.nats.dead_messages";
};

namespace detail {

using clock = std::chrono::steady_clock;

/// Throws `bridge_error` for a failed call into the C client.
inline void check(natsStatus status, std::string_view what) {
    if (status != NATS_OK) {
        std::string text = "herald::nats: " + std::string(what) + ": " + natsStatus_GetText(status);
        if (const char* last = nats_GetLastError(nullptr); last != nullptr && *last != '\0') {
            text += " (";
            text += last;
            text += ')';
        }
        throw bridge_error(text, status);
    }
}

/// What every message of one export shares: the subject and the headers that do not
/// change per event (already percent-encoded).
struct export_target {
    std::string subject;
    std::string source;
    std::string type;
    std::string content_type;
};

/// One export waiting in the outbox until JetStream acknowledges it.
struct out_item {
    enum class status : std::uint8_t { waiting, in_flight, acked, failed, dropped };
    std::uint64_t number = 0;
    std::shared_ptr<const export_target> target;
    event_id id{};
    event_id correlation{};
    std::uint64_t causation = 0;
    bool sampled = true;
    std::uint64_t sequence = 0;
    std::uint32_t attempt = 1;
    char time[herald::cloudevents::time_text_size] = {};
    std::string body;
    status state = status::waiting;
};

/// The exports on the wire by the address of their message (what an ack names): open
/// addressing over a fixed table twice the in-flight limit, so that sending and
/// acknowledging allocate nothing. Not synchronised (used under the outbox's lock).
class address_map {
public:
    explicit address_map(std::size_t most) {
        std::size_t size = 16;
        while (size < 2 * most + 2) {
            size *= 2;
        }
        slots_.resize(size);
    }

    /// Adds `key` (not present; at most `most` keys at once).
    void insert(const void* key, std::uint64_t value) noexcept {
        std::size_t i = home(key);
        while (slots_[i].key != nullptr) {
            i = (i + 1) & (slots_.size() - 1);
        }
        slots_[i] = {key, value};
    }

    /// Removes `key` and returns its value; nullopt when absent.
    std::optional<std::uint64_t> take(const void* key) noexcept {
        const std::size_t mask = slots_.size() - 1;
        std::size_t i = home(key);
        while (slots_[i].key != key) {
            if (slots_[i].key == nullptr) {
                return std::nullopt;
            }
            i = (i + 1) & mask;
        }
        const std::uint64_t value = slots_[i].value;
        // Backward-shift deletion: later keys of the run move into the hole when their
        // home slot does not lie between the hole and them.
        std::size_t hole = i;
        for (std::size_t j = (i + 1) & mask; slots_[j].key != nullptr; j = (j + 1) & mask) {
            const std::size_t want = home(slots_[j].key);
            const bool stays = hole <= j ? (hole < want && want <= j) : (hole < want || want <= j);
            if (!stays) {
                slots_[hole] = slots_[j];
                hole = j;
            }
        }
        slots_[hole] = {};
        return value;
    }

private:
    struct slot {
        const void* key = nullptr;
        std::uint64_t value = 0;
    };
    [[nodiscard]] std::size_t home(const void* key) const noexcept {
        const auto bits = reinterpret_cast<std::uintptr_t>(key);
        return static_cast<std::size_t>((bits >> 4) * 0x9e3779b97f4a7c15ULL >> 20) & (slots_.size() - 1);
    }
    std::vector<slot> slots_;
};

/// Builds the message of `item` (CloudEvents binary mode; see docs/scale-out.md).
inline natsStatus make_message(natsMsg** message, const out_item& item, const std::string& id) {
    namespace ce = herald::cloudevents;
    const export_target& target = *item.target;
    natsStatus status =
        natsMsg_Create(message, target.subject.c_str(), nullptr, item.body.data(), static_cast<int>(item.body.size()));
    const auto set = [&](std::string_view key, const char* value) {
        if (status == NATS_OK) {
            status = natsMsgHeader_Set(*message, key.data(), value);
        }
    };
    char sequence[24];
    char attempt[12];
    *std::to_chars(sequence, sequence + sizeof sequence - 1, item.sequence).ptr = '\0';
    *std::to_chars(attempt, attempt + sizeof attempt - 1, item.attempt).ptr = '\0';
    set(ce::header::specversion, "1.0");
    set(ce::header::id, id.c_str());
    set(ce::header::source, target.source.c_str());
    set(ce::header::type, target.type.c_str());
    set(ce::header::time, item.time);
    set(ce::header::sequence, sequence);
    set(ce::header::attempt, attempt);
    if (!item.correlation.is_nil()) {
        set(ce::header::correlationid, item.correlation.to_string().c_str());
    }
    if (item.causation != 0) {
        std::string causation;
        herald::detail::append_hex16(causation, item.causation);
        set(ce::header::causationid, causation.c_str());
    }
    const trace_context trace{item.correlation.is_nil() ? item.id : item.correlation, span_of(item.id), item.sampled};
    set(ce::header::traceparent, trace.traceparent().c_str());
    set(ce::header::content_type, target.content_type.c_str());
    return status;
}

/// The connection, the outbox and the threads of one bridge. Shared by the bridge and
/// the bus (as a `bus_extension`), so that the origins of imported events live as long
/// as the bus whose envelopes name them.
class link : public herald::detail::bus_extension {
public:
    struct settings {
        std::string url;
        std::string name;
        std::chrono::milliseconds reconnect_wait{};
        int max_reconnects = -1;
        std::chrono::milliseconds ack_timeout{};
        std::chrono::milliseconds flush_timeout{};
        std::size_t max_in_flight = 0;
        std::function<void(const bridge_event&)> on_event;
    };

    explicit link(settings given) : settings_(std::move(given)), by_message_(settings_.max_in_flight) {}

    ~link() override {
        stop(true);
        if (js_ != nullptr) {
            jsCtx_Destroy(js_);
        }
        if (connection_ != nullptr) {
            natsConnection_Destroy(connection_);
        }
        if (options_ != nullptr) {
            natsOptions_Destroy(options_);
        }
    }

    link(const link&) = delete;
    link& operator=(const link&) = delete;

    /// Connects (or, when the server is not reachable yet, keeps trying in the
    /// background: exports wait in the outbox meanwhile) and starts the sending thread.
    void open() {
        check(natsOptions_Create(&options_), "natsOptions_Create");
        check(natsOptions_SetURL(options_, settings_.url.c_str()), "natsOptions_SetURL");
        if (!settings_.name.empty()) {
            check(natsOptions_SetName(options_, settings_.name.c_str()), "natsOptions_SetName");
        }
        check(natsOptions_SetMaxReconnect(options_, settings_.max_reconnects), "natsOptions_SetMaxReconnect");
        check(natsOptions_SetReconnectWait(options_, settings_.reconnect_wait.count()), "natsOptions_SetReconnectWait");
        // Publishes made while disconnected are not ours to buffer: the outbox holds
        // them. A large reconnect buffer would only hide them from the acks.
        check(natsOptions_SetReconnectBufSize(options_, 8 * 1024 * 1024), "natsOptions_SetReconnectBufSize");
        check(natsOptions_SetDisconnectedCB(options_, &link::on_disconnected, this), "natsOptions_SetDisconnectedCB");
        check(natsOptions_SetReconnectedCB(options_, &link::on_reconnected, this), "natsOptions_SetReconnectedCB");
        check(natsOptions_SetClosedCB(options_, &link::on_closed, this), "natsOptions_SetClosedCB");
        check(natsOptions_SetRetryOnFailedConnect(options_, true, &link::on_connected, this),
              "natsOptions_SetRetryOnFailedConnect");
        const natsStatus status = natsConnection_Connect(&connection_, options_);
        if (status == NATS_OK) {
            connected_.store(true);
            report({event_kind::connected, {}, settings_.url, 0});
        } else if (status != NATS_NOT_YET_CONNECTED) {
            check(status, "connect to " + settings_.url);
        }
        jsOptions js_options;
        check(jsOptions_Init(&js_options), "jsOptions_Init");
        js_options.PublishAsync.MaxPending = static_cast<int64_t>(settings_.max_in_flight) + 16;
        js_options.PublishAsync.AckHandler = &link::on_ack;
        js_options.PublishAsync.AckHandlerClosure = this;
        check(natsConnection_JetStream(&js_, connection_, &js_options), "natsConnection_JetStream");
        sender_ = std::thread([this] { send_loop(); });
    }

    [[nodiscard]] jsCtx* jetstream() const noexcept { return js_; }
    [[nodiscard]] natsConnection* connection() const noexcept { return connection_; }
    [[nodiscard]] bool connected() const noexcept { return connected_.load(); }

    /// Reports `what` to the user's hook (or stderr for failures without one). Never throws.
    void report(const bridge_event& what) noexcept {
        try {
            if (settings_.on_event) {
                settings_.on_event(what);
            } else if (what.kind == event_kind::publish_failed || what.kind == event_kind::abandoned ||
                       what.kind == event_kind::flush_timed_out || what.kind == event_kind::dead_letter ||
                       what.kind == event_kind::import_error) {
                std::fprintf(stderr, "herald::nats: %s %s: %s (%zu)\n", to_string(what.kind).data(),
                             what.subject.c_str(), what.message.c_str(), what.count);
            }
        } catch (...) {
            // The user's hook threw: nothing more to tell.
        }
    }

    /// Takes an export into the outbox, applying the export's overflow rule when
    /// `capacity` exports already wait. Throws `outbox_full` when refused.
    void put(out_item item, std::size_t capacity, overflow rule, std::chrono::milliseconds block_timeout) {
        std::unique_lock lock(mutex_);
        if (stopping_) {
            ++counts_.refused;
            throw outbox_full("herald::nats: the bridge has stopped; event not exported");
        }
        if (live_ >= capacity) {
            if (!make_room(lock, capacity, rule, block_timeout)) {
                return; // dropped (drop_newest): counted
            }
        }
        item.number = next_number_++;
        items_.push_back(std::move(item));
        ++live_;
        ++counts_.exported;
        lock.unlock();
        work_.notify_one();
    }

    /// Waits until every export taken so far is acknowledged (or dropped by its overflow
    /// rule), up to `timeout`; true when so. Exports taken meanwhile are not waited for.
    /// Reports `flush_timed_out` otherwise.
    bool flush(std::chrono::milliseconds timeout) {
        std::unique_lock lock(mutex_);
        const std::uint64_t mark = next_number_;
        ++flush_waiters_;
        const bool done = settled_.wait_for(lock, timeout, [&] { return first_number() >= mark || stopping_; }) &&
                          first_number() >= mark;
        --flush_waiters_;
        if (!done) {
            std::size_t left = 0;
            for (const auto& item : items_) {
                left += item.number < mark && item.state != out_item::status::acked &&
                                item.state != out_item::status::dropped
                            ? 1
                            : 0;
            }
            lock.unlock();
            report({event_kind::flush_timed_out, {}, "exports still unacknowledged", left});
        }
        return done;
    }

    /// How long `drain()` waits for the outbox.
    [[nodiscard]] std::chrono::milliseconds flush_timeout() const noexcept { return settings_.flush_timeout; }

    /// Stops importing and sending. With `drain`, first waits up to `flush_timeout` for
    /// the outbox to empty. What is left is abandoned (counted, reported). Idempotent.
    void stop(bool drain) noexcept {
        std::vector<std::function<void()>> stoppers;
        {
            std::lock_guard lock(mutex_);
            if (stopped_) {
                return;
            }
            stopped_ = true;
            stoppers.swap(importer_stops_);
        }
        for (auto& stop_importer : stoppers) {
            stop_importer();
        }
        if (drain && sender_.joinable()) {
            (void)flush(settings_.flush_timeout);
        }
        std::size_t left = 0;
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
            left = live_;
            counts_.abandoned += left;
        }
        work_.notify_all();
        room_.notify_all();
        settled_.notify_all();
        if (sender_.joinable()) {
            sender_.join();
        }
        if (left != 0) {
            report({event_kind::abandoned, {}, "exports never acknowledged", left});
        }
        if (connection_ != nullptr) {
            // Sends the acknowledgements of imported messages still buffered.
            (void)natsConnection_FlushTimeout(connection_, 1000);
            closing_.store(true);
            natsConnection_Close(connection_);
            // The library reports the close from its own thread, later: this object must
            // outlive that call (found by ThreadSanitizer as a use after free).
            std::unique_lock lock(mutex_);
            (void)closed_seen_.wait_for(lock, std::chrono::seconds(10), [&] { return closed_; });
        }
    }

    /// Registers how to stop an importer (called, once, by `stop`).
    void add_importer_stop(std::function<void()> stopper) {
        std::lock_guard lock(mutex_);
        importer_stops_.push_back(std::move(stopper));
    }

    [[nodiscard]] bool stopped() const {
        std::lock_guard lock(mutex_);
        return stopped_;
    }

    void on_drain() noexcept override {
        if (!stopped()) {
            (void)flush(settings_.flush_timeout);
        }
    }

    void on_shutdown(bool drain) noexcept override { stop(drain); }

    /// Import counters (the importer threads add to them).
    std::atomic<std::uint64_t> imported{0};
    std::atomic<std::uint64_t> acked{0};
    std::atomic<std::uint64_t> redeliveries_asked{0};
    std::atomic<std::uint64_t> dead_letters{0};
    std::atomic<std::uint64_t> not_exported{0};

    [[nodiscard]] bridge_stats stats() const {
        bridge_stats out;
        {
            std::lock_guard lock(mutex_);
            out = counts_;
            out.outbox = live_;
        }
        out.imported = imported.load();
        out.acked = acked.load();
        out.redeliveries_asked = redeliveries_asked.load();
        out.dead_letters = dead_letters.load();
        out.not_exported = not_exported.load();
        return out;
    }

    /// The origin number of imported events of `topic` from `source` (registered once,
    /// kept until this link, which the bus holds, is destroyed).
    std::uint32_t origin_of(std::string_view topic, std::string_view source) {
        std::lock_guard lock(origins_mutex_);
        const auto key = std::pair{std::string(topic), std::string(source)};
        if (const auto found = origins_.find(key); found != origins_.end()) {
            return found->second->number;
        }
        auto entry = std::make_unique<foreign_origin>(key.first, key.second);
        const std::uint32_t number = entry->number;
        origins_.emplace(key, std::move(entry));
        return number;
    }

    /// Keeps the bridge's dead messages when nobody subscribes to them (oldest evicted).
    void keep(dead_message message) {
        std::lock_guard lock(dead_mutex_);
        if (dead_store_.size() >= dead_capacity) {
            dead_store_.pop_front();
        }
        dead_store_.push_back(std::move(message));
    }

    [[nodiscard]] std::vector<dead_message> kept() const {
        std::lock_guard lock(dead_mutex_);
        return {dead_store_.begin(), dead_store_.end()};
    }

    static constexpr std::size_t dead_capacity = 1000;

private:
    struct foreign_origin {
        foreign_origin(std::string topic_name, std::string source_name)
            : topic(std::move(topic_name)),
              source(std::move(source_name)),
              where{topic, source, 0},
              number(herald::detail::origin_table::instance().add(&where)) {}
        ~foreign_origin() { herald::detail::origin_table::instance().remove(number); }
        foreign_origin(const foreign_origin&) = delete;
        foreign_origin& operator=(const foreign_origin&) = delete;
        std::string topic;
        std::string source;
        herald::detail::origin where;
        std::uint32_t number;
    };

    /// Applies the overflow rule to a full outbox; false when the new export is dropped.
    bool make_room(std::unique_lock<std::mutex>& lock, std::size_t capacity, overflow rule,
                   std::chrono::milliseconds block_timeout) {
        switch (rule) {
        case overflow::drop_newest:
            ++counts_.dropped;
            return false;
        case overflow::drop_oldest:
            for (auto& item : items_) {
                if (item.state == out_item::status::waiting) {
                    item.state = out_item::status::dropped;
                    item.body.clear();
                    item.body.shrink_to_fit();
                    --live_;
                    ++counts_.dropped;
                    trim();
                    settled_.notify_all();
                    return true;
                }
            }
            break; // everything waiting is on the wire: refuse
        case overflow::block:
            ++room_waiters_;
            if (room_.wait_for(lock, block_timeout, [&] { return live_ < capacity || stopping_; }) && !stopping_) {
                --room_waiters_;
                return true;
            }
            --room_waiters_;
            break;
        default:
            break;
        }
        ++counts_.refused;
        throw outbox_full("herald::nats: export outbox full (" + std::to_string(capacity) + " events)");
    }

    /// Drops acknowledged and dropped exports from the front; wakes whoever waits.
    void trim() {
        while (!items_.empty() &&
               (items_.front().state == out_item::status::acked || items_.front().state == out_item::status::dropped)) {
            items_.pop_front();
        }
        if (cursor_ < first_number()) {
            cursor_ = first_number();
        }
    }

    [[nodiscard]] std::uint64_t first_number() const noexcept {
        return items_.empty() ? next_number_ : items_.front().number;
    }

    out_item* find(std::uint64_t number) {
        const std::uint64_t first = first_number();
        if (number < first || number - first >= items_.size()) {
            return nullptr;
        }
        return &items_[static_cast<std::size_t>(number - first)];
    }

    /// The sending thread: sends waiting exports in order while the connection is up and
    /// fewer than `max_in_flight` wait for acks; after a failure, waits for the
    /// outstanding acks, then sends again, in order, everything not acknowledged.
    void send_loop() {
        constexpr std::size_t send_batch = 64;
        std::vector<out_item*> batch;
        std::vector<std::uint64_t> refused;
        std::vector<std::pair<natsMsg*, out_item*>> built;
        std::string refused_subject;
        batch.reserve(send_batch);
        std::unique_lock lock(mutex_);
        while (!stopping_) {
            if (broken_) {
                if (in_flight_ == 0 && connected_.load() && clock::now() >= resend_at_) {
                    std::size_t again = 0;
                    for (auto& item : items_) {
                        if (item.state == out_item::status::failed) {
                            item.state = out_item::status::waiting;
                            ++again;
                        }
                    }
                    counts_.resent += again;
                    broken_ = false;
                    // A stream that refuses at once (not created yet, full) must not be
                    // hammered: the next round waits longer, up to 2 s, until an ack.
                    resend_at_ = clock::now() + resend_delay_;
                    resend_delay_ = std::min(resend_delay_ * 2, std::chrono::milliseconds(2000));
                    cursor_ = first_number();
                    lock.unlock();
                    report({event_kind::resending, {}, "sending again in order", again});
                    lock.lock();
                    continue;
                }
                work_.wait_for(lock, std::chrono::milliseconds(20));
                continue;
            }
            // Takes up to a batch of waiting exports, in order, and sends them without
            // the lock (an export that is in flight is neither dropped nor trimmed).
            batch.clear();
            if (connected_.load()) {
                for (; cursor_ < next_number_ && in_flight_ < settings_.max_in_flight && batch.size() < send_batch;
                     ++cursor_) {
                    out_item* candidate = find(cursor_);
                    if (candidate != nullptr && candidate->state == out_item::status::waiting) {
                        candidate->state = out_item::status::in_flight;
                        ++in_flight_;
                        batch.push_back(candidate);
                    }
                }
            }
            if (batch.empty()) {
                work_.wait_for(lock, std::chrono::milliseconds(20));
                continue;
            }
            lock.unlock();
            // Builds the messages; the ack handler knows each by its address, which is
            // recorded before the message is handed to the library.
            refused.clear();
            built.clear();
            natsStatus failure = NATS_OK;
            for (out_item* item : batch) {
                natsMsg* message = nullptr;
                const natsStatus status = make_message(&message, *item, item->id.to_string());
                if (status == NATS_OK) {
                    built.emplace_back(message, item);
                } else {
                    natsMsg_Destroy(message);
                    refused.push_back(item->number);
                    failure = status;
                    refused_subject = item->target->subject;
                }
            }
            lock.lock();
            for (const auto& [message, item] : built) {
                by_message_.insert(message, item->number);
            }
            lock.unlock();
            for (auto& [message, item] : built) {
                jsPubOptions options;
                jsPubOptions_Init(&options);
                const std::string id = item->id.to_string();
                options.MsgId = id.c_str();
                options.MaxWait = settings_.ack_timeout.count();
                natsMsg* handed = message;
                const natsStatus status = js_PublishMsgAsync(js_, &handed, &options);
                if (status == NATS_OK) {
                    message = nullptr; // the library's now; its ack names it
                } else {
                    failure = status;
                    refused_subject = item->target->subject; // not sent: still ours
                }
            }
            lock.lock();
            for (auto& [message, item] : built) {
                if (message != nullptr) {
                    (void)by_message_.take(message);
                    refused.push_back(item->number);
                    natsMsg_Destroy(message);
                }
            }
            for (const std::uint64_t number : refused) {
                if (out_item* item = find(number); item != nullptr && item->state == out_item::status::in_flight) {
                    item->state = out_item::status::failed;
                    --in_flight_;
                    broken_ = true;
                }
            }
            if (!refused.empty()) {
                const std::string why = natsStatus_GetText(failure);
                lock.unlock();
                report({event_kind::publish_failed, refused_subject, why, refused.size()});
                lock.lock();
            }
        }
    }

    static void on_ack(jsCtx*, natsMsg* message, jsPubAck* ack, jsPubAckErr* error, void* closure) {
        auto& self = *static_cast<link*>(closure);
        // With an ack handler installed, the message is ours again to destroy (after its
        // address has left `by_message_`, below).
        const struct destroy_on_return {
            natsMsg* message;
            ~destroy_on_return() { natsMsg_Destroy(message); }
        } owned{message};
        std::string failure;
        std::string subject;
        bool wake_sender = false;
        bool wake_room = false;
        bool wake_flush = false;
        {
            std::lock_guard lock(self.mutex_);
            const auto number = self.by_message_.take(message);
            if (!number) {
                return;
            }
            out_item* item = self.find(*number);
            --self.in_flight_;
            if (item == nullptr) {
                return;
            }
            if (error == nullptr) {
                item->state = out_item::status::acked;
                item->body.clear();
                ++self.counts_.acknowledged;
                self.resend_delay_ = std::chrono::milliseconds(20);
                if (ack != nullptr && ack->Duplicate) {
                    ++self.counts_.duplicates;
                }
                --self.live_;
                self.trim();
            } else {
                item->state = out_item::status::failed;
                self.broken_ = true;
                failure = error->ErrText != nullptr ? error->ErrText : natsStatus_GetText(error->Err);
                subject = item->target->subject;
            }
            // The sender waits for an ack only at the in-flight cap, or, after a
            // failure, for the last outstanding ack; new work wakes it otherwise.
            wake_sender = self.in_flight_ + 1 == self.settings_.max_in_flight || (self.broken_ && self.in_flight_ == 0);
            wake_room = self.room_waiters_ != 0;
            wake_flush = self.flush_waiters_ != 0;
        }
        if (wake_sender) {
            self.work_.notify_one();
        }
        if (wake_room) {
            self.room_.notify_all();
        }
        if (wake_flush) {
            self.settled_.notify_all();
        }
        if (!failure.empty()) {
            self.report({event_kind::publish_failed, subject, failure, 1});
        }
    }

    static void on_connected(natsConnection*, void* closure) {
        auto& self = *static_cast<link*>(closure);
        self.connected_.store(true);
        self.work_.notify_one();
        self.report({event_kind::connected, {}, self.settings_.url, 0});
    }
    static void on_disconnected(natsConnection*, void* closure) {
        auto& self = *static_cast<link*>(closure);
        self.connected_.store(false);
        if (!self.closing_.load()) { // not news when the bridge closes the connection itself
            self.report({event_kind::disconnected, {}, self.settings_.url, 0});
        }
    }
    static void on_reconnected(natsConnection*, void* closure) {
        auto& self = *static_cast<link*>(closure);
        {
            // Whatever was on the wire when the connection broke may be lost: send
            // everything unacknowledged again once its acks have timed out.
            std::lock_guard lock(self.mutex_);
            self.connected_.store(true);
        }
        self.work_.notify_one();
        self.report({event_kind::reconnected, {}, self.settings_.url, 0});
    }
    static void on_closed(natsConnection*, void* closure) {
        auto& self = *static_cast<link*>(closure);
        self.connected_.store(false);
        self.report({event_kind::closed, {}, self.settings_.url, 0});
        // The last touch of `self`, under its lock: the stopping thread destroys it once
        // it holds the lock again.
        std::lock_guard lock(self.mutex_);
        self.closed_ = true;
        self.closed_seen_.notify_all();
    }

    settings settings_;
    natsOptions* options_ = nullptr;
    natsConnection* connection_ = nullptr;
    jsCtx* js_ = nullptr;
    std::atomic<bool> connected_{false};
    std::atomic<bool> closing_{false};
    std::thread sender_;

    mutable std::mutex mutex_;
    std::condition_variable work_;        // the sender: something to send, or an ack
    std::condition_variable room_;        // blocked exporters: the outbox has room
    std::condition_variable settled_;     // flush: an ack arrived
    std::condition_variable closed_seen_; // stop: the library reported the close
    bool closed_ = false;
    std::deque<out_item> items_;
    /// The exports on the wire, by the address of their message (what the ack names).
    address_map by_message_;
    std::uint64_t next_number_ = 1;
    std::uint64_t cursor_ = 1;
    std::size_t live_ = 0;
    std::size_t in_flight_ = 0;
    std::size_t room_waiters_ = 0;
    std::size_t flush_waiters_ = 0;
    bool broken_ = false;
    clock::time_point resend_at_{};
    std::chrono::milliseconds resend_delay_{20};
    bool stopping_ = false;
    bool stopped_ = false;
    bridge_stats counts_;
    std::vector<std::function<void()>> importer_stops_;

    std::mutex origins_mutex_;
    std::map<std::pair<std::string, std::string>, std::unique_ptr<foreign_origin>> origins_;

    mutable std::mutex dead_mutex_;
    std::deque<dead_message> dead_store_;
};

} // namespace detail
} // namespace herald::nats

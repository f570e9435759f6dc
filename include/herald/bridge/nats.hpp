// Carries typed topics across processes over NATS JetStream: events published locally
// on an exported topic are stored in a JetStream stream; messages of an imported
// subject are published on a local topic. Optional: needs the NATS C client (Debian
// libnats-dev) and, for the JSON codec, nlohmann::json; link `herald::nats`.
// See docs/scale-out.md.
#pragma once

#include <herald/bridge/cloudevents.hpp>
#include <herald/bridge/codec.hpp>
#include <herald/bus.hpp>
#include <herald/detail/nats_link.hpp>
#include <herald/flow_control.hpp>
#include <herald/topic.hpp>
#include <herald/trace_context.hpp>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
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

/// Settings of one bridge (one connection to a NATS server).
struct bridge_options {
    /// The server(s), as the NATS client takes them ("nats://host:4222").
    std::string url = "nats://127.0.0.1:4222";
    /// The connection's name, shown by the server's monitoring.
    std::string name = "herald";
    /// Pause between reconnection attempts (the client library reconnects).
    std::chrono::milliseconds reconnect_wait{250};
    /// Reconnection attempts before the connection closes for good; -1: never give up.
    int max_reconnects = -1;
    /// How long an export waits for JetStream's acknowledgement before it is sent again.
    std::chrono::milliseconds ack_timeout{5000};
    /// How long `drain()` and `shutdown(herald::drain)` of the bus (and `flush()`, the
    /// bridge's destructor) wait for the outbox to empty.
    std::chrono::milliseconds flush_timeout{10000};
    /// Exports on the wire without an acknowledgement yet, at most.
    std::size_t max_in_flight = 1024;
    /// Hears connection changes and failures (see `event_kind`). Called from the client
    /// library's and the bridge's threads, possibly concurrently; must not throw (what it
    /// throws is ignored) and must outlive the bridge. Empty: failures go to stderr.
    std::function<void(const bridge_event&)> on_event{};
};

/// A JetStream stream for `bridge::ensure_stream`.
struct stream_options {
    /// The stream's name (letters, digits, '-', '_').
    std::string name;
    /// The subjects it stores (wildcards allowed: "shop.>").
    std::vector<std::string> subjects;
    /// Keep messages in memory instead of files (lost when the server restarts).
    bool in_memory = false;
    /// How long the server remembers a message id to drop a resent copy
    /// (`Nats-Msg-Id` deduplication): resends later than this may be stored twice.
    std::chrono::seconds duplicate_window{120};
    /// Messages kept at most (oldest removed first); -1: no limit.
    std::int64_t max_messages = -1;
};

/// Settings of one exported topic.
struct export_options {
    /// Exports that may wait in the outbox for an acknowledgement. All exported topics of
    /// a bridge share one outbox (one order on the wire); this topic's events are taken
    /// while fewer than `capacity` exports wait in it.
    std::size_t capacity = 100000;
    /// What a full outbox does with one more export: `reject` (the default: the publish
    /// reports a failed inline delivery), `drop_newest`, `drop_oldest` (the oldest not yet
    /// sent), or `block` (the publisher waits up to `block_timeout`, then as `reject`).
    /// `dead_letter` and `conflate` are not supported here (`usage_error`).
    overflow on_full = overflow::reject;
    std::chrono::milliseconds block_timeout{1000};
};

/// Settings of one imported subject.
struct import_options {
    /// The durable consumer's name (required): JetStream remembers what it acknowledged,
    /// so a restarted process continues where it stopped. Processes sharing one durable
    /// share the work (a queue); different durables each get every message (pub/sub).
    std::string durable;
    /// The stream to bind to; empty: the stream that stores the subject.
    std::string stream{};
    /// Messages fetched, published locally and acknowledged together. Also the most
    /// imported events that wait locally at once: the importer fetches the next batch
    /// only when this one has settled (that is the backpressure on a slow subscriber).
    std::size_t batch = 256;
    /// Deliveries of one message before it becomes a dead letter instead (a message the
    /// local subscribers kept refusing, or one that crashed the process every time).
    std::uint32_t max_deliver = 5;
    /// How long JetStream waits for an acknowledgement before delivering again.
    std::chrono::milliseconds ack_wait{30000};
    /// Delay before the first redelivery of a message the local subscribers refused (full
    /// mailboxes with `reject`, a stopping bus); it doubles with each further delivery,
    /// up to a minute (or `retry_delay`, if longer).
    std::chrono::milliseconds retry_delay{1000};
    /// How long one fetch waits for messages.
    std::chrono::milliseconds fetch_wait{250};
};

namespace detail {

/// A header's value, or nullopt.
inline std::optional<std::string> header(natsMsg* message, const char* key) {
    const char* value = nullptr;
    if (natsMsgHeader_Get(message, key, &value) != NATS_OK || value == nullptr) {
        return std::nullopt;
    }
    return std::string(value);
}

/// Every header of `message`, as received.
inline std::vector<std::pair<std::string, std::string>> headers_of(natsMsg* message) {
    std::vector<std::pair<std::string, std::string>> out;
    const char** keys = nullptr;
    int count = 0;
    if (natsMsgHeader_Keys(message, &keys, &count) != NATS_OK) {
        return out;
    }
    for (int i = 0; i < count; ++i) {
        const char** values = nullptr;
        int value_count = 0;
        if (natsMsgHeader_Values(message, keys[i], &values, &value_count) == NATS_OK) {
            for (int j = 0; j < value_count; ++j) {
                out.emplace_back(keys[i], values[j]);
            }
            std::free(static_cast<void*>(values));
        }
    }
    std::free(static_cast<void*>(keys));
    return out;
}

template <class Integer>
std::optional<Integer> number_of(const std::optional<std::string>& text) {
    if (!text) {
        return std::nullopt;
    }
    Integer value{};
    const auto [end, error] = std::from_chars(text->data(), text->data() + text->size(), value);
    if (error != std::errc{} || end != text->data() + text->size()) {
        return std::nullopt;
    }
    return value;
}

/// A non-zero 64-bit number written as 1 to 16 hex digits (a span id), or nothing.
inline std::optional<std::uint64_t> number_of_hex(std::string_view text) {
    std::uint64_t value = 0;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value, 16);
    if (text.empty() || text.size() > 16 || error != std::errc{} || end != text.data() + text.size() || value == 0) {
        return std::nullopt;
    }
    return value;
}

/// What the importer does with a message once its batch has settled.
enum class verdict : std::uint8_t { ack, redeliver, terminate };

/// One imported subject: a thread that fetches batches from a durable pull consumer,
/// publishes them on the local topic, waits for them to settle and acknowledges them.
class importer {
public:
    importer(std::shared_ptr<link> owner, std::string subject, import_options options)
        : link_(std::move(owner)), subject_(std::move(subject)), options_(std::move(options)) {}
    virtual ~importer() { stop(); }
    importer(const importer&) = delete;
    importer& operator=(const importer&) = delete;

    void start() {
        thread_ = std::thread([this] { run(); });
    }

    void stop() noexcept {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        wake_.notify_all();
        if (thread_.joinable()) {
            thread_.join();
        }
    }

protected:
    /// Publishes one message on the local topic (or makes it a dead letter) and returns
    /// what to tell JetStream once the batch has settled; sets `published` when the
    /// local topic took it (the batch must then settle before the verdict is applied).
    virtual verdict take(natsMsg* message, std::uint64_t deliveries, std::uint64_t stream_sequence,
                         bool& published) = 0;
    /// Waits until the deliveries of everything published so far have settled.
    virtual void settle() = 0;

    /// Makes `message` a dead letter on `dead_messages` (kept by the bridge if nobody
    /// is subscribed) and reports it.
    virtual void dead_raw(dead_message message) = 0;

    dead_message raw(natsMsg* message, std::string reason, std::uint64_t deliveries, std::uint64_t sequence) const {
        dead_message out;
        out.subject = subject_;
        if (const char* s = natsMsg_GetSubject(message); s != nullptr) {
            out.subject = s;
        }
        out.headers = headers_of(message);
        if (const char* data = natsMsg_GetData(message); data != nullptr) {
            out.data.assign(data, static_cast<std::size_t>(natsMsg_GetDataLength(message)));
        }
        out.reason = std::move(reason);
        out.durable = options_.durable;
        out.stream_sequence = sequence;
        out.deliveries = deliveries;
        return out;
    }

    std::shared_ptr<link> link_;
    const std::string subject_;
    const import_options options_;

private:
    /// `retry_delay` doubled for each delivery already made, at most a minute.
    [[nodiscard]] std::chrono::milliseconds redelivery_delay(std::uint64_t deliveries) const noexcept {
        const std::chrono::milliseconds most = std::max(options_.retry_delay, std::chrono::milliseconds(60000));
        std::chrono::milliseconds delay = options_.retry_delay;
        for (std::uint64_t i = 1; i < deliveries && delay < most; ++i) {
            delay *= 2;
        }
        return std::min(delay, most);
    }

    void pause(std::chrono::milliseconds how_long) {
        std::unique_lock lock(mutex_);
        wake_.wait_for(lock, how_long, [&] { return stopping_; });
    }

    [[nodiscard]] bool stopping() {
        std::lock_guard lock(mutex_);
        return stopping_;
    }

    void complain(const std::string& what, natsStatus status, jsErrCode code) {
        std::string text = what + ": " + natsStatus_GetText(status);
        if (code != 0) {
            text += " (JetStream error " + std::to_string(static_cast<int>(code)) + ")";
        }
        if (text != last_complaint_) {
            last_complaint_ = text;
            link_->report({event_kind::import_error, subject_, text, 0});
        }
    }

    natsSubscription* subscribe() {
        jsSubOptions sub_options;
        jsSubOptions_Init(&sub_options);
        if (!options_.stream.empty()) {
            sub_options.Stream = options_.stream.c_str();
        }
        sub_options.Config.Durable = options_.durable.c_str();
        sub_options.Config.AckPolicy = js_AckExplicit;
        sub_options.Config.AckWait = std::chrono::nanoseconds(options_.ack_wait).count();
        // Redeliveries are counted here, not by the server: past max_deliver the message
        // becomes a dead letter, which a server-side limit would only stop delivering.
        sub_options.Config.MaxDeliver = -1;
        sub_options.Config.MaxAckPending = static_cast<int64_t>(std::max<std::size_t>(options_.batch * 4, 1000));
        natsSubscription* sub = nullptr;
        jsErrCode code{};
        const natsStatus status = js_PullSubscribe(&sub, link_->jetstream(), subject_.c_str(), options_.durable.c_str(),
                                                   nullptr, &sub_options, &code);
        if (status != NATS_OK) {
            complain("subscribe", status, code);
            return nullptr;
        }
        last_complaint_.clear();
        return sub;
    }

    void run() {
        natsSubscription* sub = nullptr;
        const int batch = static_cast<int>(std::clamp<std::size_t>(options_.batch, 1, 1'000'000));
        struct pending {
            natsMsg* message;
            verdict what;
            std::uint64_t deliveries;
        };
        std::vector<pending> verdicts;
        while (!stopping()) {
            if (sub == nullptr) {
                sub = subscribe();
                if (sub == nullptr) {
                    pause(std::chrono::milliseconds(200));
                    continue;
                }
            }
            natsMsgList list{};
            jsErrCode code{};
            const natsStatus status = natsSubscription_Fetch(&list, sub, batch, options_.fetch_wait.count(), &code);
            if (status == NATS_TIMEOUT) {
                continue;
            }
            if (status != NATS_OK) {
                complain("fetch", status, code);
                if (status == NATS_CONNECTION_CLOSED || status == NATS_INVALID_SUBSCRIPTION) {
                    natsSubscription_Destroy(sub);
                    sub = nullptr;
                }
                pause(std::chrono::milliseconds(100));
                continue;
            }
            verdicts.clear();
            bool any_published = false;
            for (int i = 0; i < list.Count; ++i) {
                natsMsg* message = list.Msgs[i];
                std::uint64_t deliveries = 1;
                std::uint64_t sequence = 0;
                jsMsgMetaData* meta = nullptr;
                if (natsMsg_GetMetaData(&meta, message) == NATS_OK && meta != nullptr) {
                    deliveries = meta->NumDelivered;
                    sequence = meta->Sequence.Stream;
                    jsMsgMetaData_Destroy(meta);
                }
                bool published = false;
                verdict v = verdict::redeliver;
                try {
                    v = take(message, deliveries, sequence, published);
                } catch (const std::exception& failure) {
                    dead_raw(raw(message, std::string("import failed: ") + failure.what(), deliveries, sequence));
                    v = verdict::terminate;
                } catch (...) {
                    dead_raw(raw(message, "import failed: unknown exception", deliveries, sequence));
                    v = verdict::terminate;
                }
                any_published = any_published || published;
                verdicts.push_back({message, v, deliveries});
            }
            if (any_published) {
                try {
                    settle();
                } catch (...) {
                    // The bus refused to wait (it is being destroyed): acknowledge nothing;
                    // JetStream delivers the batch again after ack_wait.
                    natsMsgList_Destroy(&list);
                    break;
                }
            }
            for (const auto& [message, v, deliveries] : verdicts) {
                switch (v) {
                case verdict::ack:
                    if (natsMsg_Ack(message, nullptr) == NATS_OK) {
                        link_->acked.fetch_add(1);
                    }
                    break;
                case verdict::redeliver:
                    link_->redeliveries_asked.fetch_add(1);
                    (void)natsMsg_NakWithDelay(message, redelivery_delay(deliveries).count(), nullptr);
                    break;
                case verdict::terminate:
                    (void)natsMsg_Term(message, nullptr);
                    break;
                }
            }
            natsMsgList_Destroy(&list);
        }
        if (sub != nullptr) {
            natsSubscription_Destroy(sub);
        }
    }

    std::thread thread_;
    std::mutex mutex_;
    std::condition_variable wake_;
    bool stopping_ = false;
    std::string last_complaint_;
};

/// The importer of topic `T` on a bus with `Traits`.
template <class Traits, class T>
class topic_importer final : public importer {
    using event_type = typename T::event_type;

public:
    topic_importer(basic_bus<Traits>& bus, std::shared_ptr<link> owner, std::string subject, import_options options)
        : importer(std::move(owner), std::move(subject), std::move(options)), bus_(bus) {}
    ~topic_importer() override { stop(); }
    topic_importer(const topic_importer&) = delete;
    topic_importer& operator=(const topic_importer&) = delete;

private:
    verdict take(natsMsg* message, std::uint64_t deliveries, std::uint64_t sequence, bool& published) override {
        namespace ce = herald::cloudevents;
        const auto text = [&](std::string_view key) -> std::optional<std::string> {
            auto raw_value = header(message, std::string(key).c_str());
            if (!raw_value) {
                return std::nullopt;
            }
            return ce::percent_decode(*raw_value);
        };
        const auto reject = [&](std::string why) {
            dead_raw(raw(message, std::move(why), deliveries, sequence));
            return verdict::terminate;
        };
        const auto version = text(ce::header::specversion);
        if (!version || *version != ce::spec_version) {
            return reject("not a CloudEvents 1.0 message in binary mode (ce-specversion missing or not 1.0)");
        }
        const auto type = text(ce::header::type);
        if (!type || *type != topic_name_v<T>) {
            return reject("ce-type '" + type.value_or("") + "' is not the topic '" + std::string(topic_name_v<T>) +
                          "' this subject is imported into");
        }
        const auto id_text = text(ce::header::id);
        const auto id = id_text ? ce::parse_id(*id_text) : std::nullopt;
        const auto source = text(ce::header::source);
        if (!id || !source || source->empty()) {
            return reject("ce-id or ce-source missing or malformed");
        }
        std::optional<envelope_base::time_point> time;
        if (const auto time_text = text(ce::header::time)) {
            time = ce::parse_time(*time_text);
            if (!time) {
                return reject("ce-time '" + *time_text + "' is not an RFC 3339 timestamp");
            }
        }
        std::optional<event_id> correlation;
        if (const auto correlation_text = text(ce::header::correlationid)) {
            correlation = ce::parse_id(*correlation_text);
        }
        // W3C Trace Context: a sender that is not herald names its own span as the
        // parent (the cause); herald names the event's span, and sends its cause apart.
        std::uint64_t causation = 0;
        bool sampled = true;
        if (const auto trace_text = text(ce::header::traceparent)) {
            if (const auto trace = trace_context::parse(*trace_text)) {
                sampled = trace->sampled;
                if (!correlation && trace->trace_id != *id) {
                    correlation = trace->trace_id;
                }
                if (trace->parent_id != span_of(*id)) {
                    causation = trace->parent_id;
                }
            }
        }
        if (const auto causation_text = text(ce::header::causationid)) {
            causation = number_of_hex(*causation_text).value_or(causation);
        }
        const auto remote_sequence = number_of<std::uint64_t>(text(ce::header::sequence));
        const auto remote_attempt = number_of<std::uint32_t>(text(ce::header::attempt)).value_or(1);

        std::optional<event_type> event;
        try {
            const char* data = natsMsg_GetData(message);
            event.emplace(codec<event_type>::decode(std::string_view(
                data != nullptr ? data : "", static_cast<std::size_t>(natsMsg_GetDataLength(message)))));
        } catch (const std::exception& failure) {
            return reject(std::string("decode failed: ") + failure.what());
        } catch (...) {
            return reject("decode failed: unknown exception");
        }

        herald::detail::foreign_stamp stamp;
        stamp.origin = link_->origin_of(topic_name_v<T>, *source);
        stamp.sequence = remote_sequence.value_or(sequence);
        stamp.time = time.value_or(std::chrono::system_clock::now());
        // Each JetStream redelivery is one more attempt.
        const std::uint64_t attempt = std::uint64_t{remote_attempt} + (deliveries > 0 ? deliveries - 1 : 0);
        stamp.attempt = static_cast<std::uint32_t>(
            std::clamp<std::uint64_t>(attempt, 1, std::uint64_t{herald::detail::max_attempts_limit}));
        publish_options options;
        options.id = *id;
        options.correlation = correlation.value_or(event_id{});
        options.causation = causation;
        options.sampled = sampled;

        if (deliveries > options_.max_deliver) {
            link_->dead_letters.fetch_add(1);
            const std::string why = "JetStream delivered it " + std::to_string(deliveries) +
                                    " times (import_options::max_deliver " + std::to_string(options_.max_deliver) +
                                    ") without the local subscribers taking it";
            auto env = herald::detail::envelope_access::make<event_type>(stamp.origin, std::move(*event));
            herald::detail::envelope_access::stamp(env, options.id, stamp.sequence, stamp.time, options.correlation);
            herald::detail::envelope_access::set_cause(env, options.correlation, options.causation, options.sampled);
            herald::detail::envelope_access::set_attempt(env, stamp.attempt);
            if (!herald::detail::bus_access::dead_letter<T>(
                    bus_, env, "nats:" + options_.durable,
                    static_cast<std::uint32_t>(
                        std::min<std::uint64_t>(deliveries, std::uint64_t{herald::detail::max_attempts_limit})),
                    dead_letter_reason::attempts_exhausted, std::make_exception_ptr(std::runtime_error(why)))) {
                link_->dead_letters.fetch_sub(1); // counted by dead_raw instead
                dead_raw(raw(message, why, deliveries, sequence));
            } else {
                link_->report({event_kind::dead_letter, subject_, why, 1});
            }
            return verdict::terminate;
        }

        const publish_result result =
            herald::detail::bus_access::publish_foreign<T>(bus_, std::move(*event), options, stamp);
        if (!result.accepted()) {
            return verdict::redeliver; // the bus is stopping: another process may take it
        }
        published = true;
        link_->imported.fetch_add(1);
        return result.refused != 0 ? verdict::redeliver : verdict::ack;
    }

    void settle() override {
        herald::detail::bus_access::settle<T>(bus_, std::chrono::milliseconds(500));
        // What the handlers exported is stored before their cause is acknowledged: a
        // crash in between redelivers the cause instead of losing the effect.
        (void)link_->flush(link_->flush_timeout());
    }

    void dead_raw(dead_message message) override {
        link_->dead_letters.fetch_add(1);
        link_->report({event_kind::dead_letter, message.subject, message.reason, 1});
        const publish_result result = bus_.template publish<dead_messages>(message);
        if (!result.accepted() || (result.queued == 0 && result.handled_inline == 0 && result.failed_inline == 0)) {
            link_->keep(std::move(message));
        }
    }

    basic_bus<Traits>& bus_;
};

} // namespace detail

/// A bridge between one bus and one NATS server with JetStream.
///
///     herald::bus bus;
///     herald::nats::bridge bridge(bus, {.url = "nats://127.0.0.1:4222"});
///     bridge.ensure_stream({.name = "SHOP", .subjects = {"shop.>"}});
///     bridge.export_topic<orders>("shop.orders");             // local orders -> stream
///     bridge.import_topic<payments>("shop.payments", {.durable = "billing"});  // stream -> local
///
/// Exported events are those published on this bus; events the bridge imported are never
/// exported again (no loops). The bridge must be destroyed before its bus; its
/// destructor waits up to `flush_timeout` for the outbox, then stops. Thread safety: the
/// members may be called from any thread; `export_topic`/`import_topic` once per topic.
template <class Traits = default_bus_traits>
class basic_bridge {
public:
    /// Connects to `options.url`. When the server is not reachable yet, the bridge keeps
    /// trying in the background (exports wait in the outbox; imports start once
    /// connected). Throws `bridge_error` for settings the client rejects.
    explicit basic_bridge(basic_bus<Traits>& bus, bridge_options options = {}) : bus_(bus) {
        detail::link::settings settings;
        settings.url = std::move(options.url);
        settings.name = std::move(options.name);
        settings.reconnect_wait = options.reconnect_wait;
        settings.max_reconnects = options.max_reconnects;
        settings.ack_timeout = options.ack_timeout;
        settings.flush_timeout = options.flush_timeout;
        settings.max_in_flight = std::max<std::size_t>(options.max_in_flight, 1);
        settings.on_event = std::move(options.on_event);
        link_ = std::make_shared<detail::link>(std::move(settings));
        link_->open();
        herald::detail::bus_access::attach(bus_, link_);
    }

    /// Stops exporting (unsubscribes), waits up to `flush_timeout` for the outbox (what is
    /// left is counted `abandoned` and reported), stops the importers and closes the
    /// connection. Must run before the bus is destroyed.
    ~basic_bridge() {
        for (auto& s : exports_) {
            s.unsubscribe();
        }
        link_->stop(true);
        importers_.clear();
    }

    basic_bridge(const basic_bridge&) = delete;
    basic_bridge& operator=(const basic_bridge&) = delete;

    /// Creates the stream, or updates it to these settings when it exists. Throws
    /// `bridge_error` when the server is unreachable or refuses.
    void ensure_stream(const stream_options& stream) {
        std::vector<const char*> subjects;
        subjects.reserve(stream.subjects.size());
        for (const auto& s : stream.subjects) {
            subjects.push_back(s.c_str());
        }
        jsStreamConfig config;
        detail::check(jsStreamConfig_Init(&config), "jsStreamConfig_Init");
        config.Name = stream.name.c_str();
        config.Subjects = subjects.data();
        config.SubjectsLen = static_cast<int>(subjects.size());
        config.Storage = stream.in_memory ? js_MemoryStorage : js_FileStorage;
        config.Duplicates = std::chrono::nanoseconds(stream.duplicate_window).count();
        config.MaxMsgs = stream.max_messages;
        jsStreamInfo* info = nullptr;
        jsErrCode code{};
        natsStatus status = js_AddStream(&info, link_->jetstream(), &config, nullptr, &code);
        if (status != NATS_OK && (code == JSStreamNameExistErr || code == JSStreamSubjectOverlapErr)) {
            // It exists already (perhaps another process created it a moment ago, which
            // the server may report as overlapping subjects): bring it to these settings.
            jsErrCode update_code{};
            status = js_UpdateStream(&info, link_->jetstream(), &config, nullptr, &update_code);
            code = status == NATS_OK ? jsErrCode{} : update_code;
        }
        if (info != nullptr) {
            jsStreamInfo_Destroy(info);
        }
        detail::check(status, "create stream '" + stream.name + "' (JetStream error " +
                                  std::to_string(static_cast<int>(code)) + ")");
    }

    /// Publishes every event published on this bus's topic `T` to `subject`, as a
    /// CloudEvents 1.0 message in binary mode, with `Nats-Msg-Id` = the event id (the
    /// server drops a resent copy within the stream's duplicate window). The export is an
    /// inline subscriber: it encodes on the publisher's thread and puts the message in the
    /// bridge's bounded outbox; a sending thread publishes in order with asynchronous
    /// acknowledgements and sends again, in order, what was not acknowledged. Throws
    /// `usage_error` for an overflow rule the outbox does not have.
    template <topic_type T>
    void export_topic(std::string subject, export_options options = {}) {
        using event_type = typename T::event_type;
        static_assert(has_codec<event_type>,
                      "herald::nats: export_topic<T>: the event type needs a codec (see <herald/bridge/codec.hpp>)");
        if (options.on_full == overflow::dead_letter || options.on_full == overflow::conflate) {
            throw usage_error("herald::nats: export_topic: the outbox supports overflow reject, block, drop_oldest "
                              "and drop_newest");
        }
        if (options.capacity == 0) {
            throw usage_error("herald::nats: export_topic: capacity must be at least 1");
        }
        namespace ce = herald::cloudevents;
        auto target = std::make_shared<const detail::export_target>(detail::export_target{
            std::move(subject), ce::percent_encode(bus_.source()), ce::percent_encode(topic_name_v<T>),
            ce::percent_encode(std::string_view(codec<event_type>::content_type))});
        const std::uint32_t local = local_origin<T>();
        std::shared_ptr<detail::link> out = link_;
        auto handler = [out, target, local, options](const envelope<event_type>& env) {
            if (herald::detail::envelope_access::origin(env) != local) {
                out->not_exported.fetch_add(1, std::memory_order_relaxed);
                return; // imported from elsewhere: never sent back
            }
            detail::out_item item;
            item.target = target;
            item.id = env.id();
            item.correlation = env.correlation_id();
            item.causation = env.causation_id();
            item.sampled = env.sampled();
            item.sequence = env.sequence();
            item.attempt = env.attempt();
            (void)ce::write_time(env.time(), item.time);
            item.body = codec<event_type>::encode(env.event());
            out->put(std::move(item), options.capacity, options.on_full, options.block_timeout);
        };
        subscribe_options<event_type> subscription;
        subscription.name = "nats export " + target->subject;
        subscription.mode = delivery::immediate;
        auto handle = bus_.template subscribe<T>(std::move(handler), std::move(subscription));
        std::lock_guard lock(mutex_);
        exports_.push_back(std::move(handle));
    }

    /// Publishes every message of `subject` on the local topic `T`, through the durable
    /// pull consumer `options.durable` (created when missing). A message is acknowledged
    /// only after every local subscriber has settled it (handled, failed, dead-lettered
    /// by its policy) and what the handlers exported meanwhile through this bridge is
    /// acknowledged (up to `flush_timeout`); one the local subscribers refused is given back for redelivery
    /// after `retry_delay`; past `max_deliver` deliveries, or when it cannot be decoded,
    /// it becomes a dead letter. Throws `usage_error` without a durable name.
    template <topic_type T>
    void import_topic(std::string subject, import_options options) {
        using event_type = typename T::event_type;
        static_assert(has_codec<event_type>,
                      "herald::nats: import_topic<T>: the event type needs a codec (see <herald/bridge/codec.hpp>)");
        if (options.durable.empty()) {
            throw usage_error("herald::nats: import_topic: import_options::durable must name the consumer");
        }
        auto importer =
            std::make_unique<detail::topic_importer<Traits, T>>(bus_, link_, std::move(subject), std::move(options));
        detail::importer* raw = importer.get();
        {
            std::lock_guard lock(mutex_);
            importers_.push_back(std::move(importer));
        }
        link_->add_importer_stop([raw] { raw->stop(); });
        raw->start();
    }

    /// Waits up to `timeout` until every export so far is acknowledged; true when so.
    bool flush(std::chrono::milliseconds timeout) { return link_->flush(timeout); }

    /// Counters of the exports and imports.
    [[nodiscard]] bridge_stats stats() const { return link_->stats(); }

    /// Dead messages kept because nobody subscribed to `dead_messages` (the newest 1000).
    [[nodiscard]] std::vector<dead_message> dead_messages() const { return link_->kept(); }

    /// Whether the connection is up now.
    [[nodiscard]] bool connected() const noexcept { return link_->connected(); }

    /// The underlying connection, for what the bridge does not cover (valid while the
    /// bridge exists; do not close it).
    [[nodiscard]] natsConnection* connection() const noexcept { return link_->connection(); }

private:
    template <class T>
    std::uint32_t local_origin() {
        // The bus's own events on T name T's origin; imported ones name the bridge's.
        return herald::detail::bus_access::publish_origin<T>(bus_);
    }

    basic_bus<Traits>& bus_;
    std::shared_ptr<detail::link> link_;
    std::mutex mutex_;
    std::vector<subscription> exports_;
    std::vector<std::unique_ptr<detail::importer>> importers_;
};

/// The bridge of a `herald::bus`.
using bridge = basic_bridge<>;

} // namespace herald::nats

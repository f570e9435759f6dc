// Records what a bus does during a window and writes it as a Chrome trace (Perfetto UI, chrome://tracing).
#pragma once

#include <herald/dead_letter.hpp>
#include <herald/envelope.hpp>
#include <herald/observer.hpp>
#include <herald/publish_result.hpp>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <ostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#if defined(__linux__) || defined(__APPLE__)
#include <pthread.h>
#if defined(__linux__)
#include <cerrno> // program_invocation_short_name (GNU)
#endif
#endif

namespace herald {

/// An observer that records publishes and handler calls while it is started, and writes
/// them as Chrome trace-event JSON (the "JSON Object Format", `{"traceEvents": [...]}`),
/// which Perfetto UI (ui.perfetto.dev) and chrome://tracing open:
///
///     auto recorder = std::make_shared<herald::trace_recorder>();
///     herald::bus bus{{.observers = {recorder}}};
///     recorder->start();
///     ... publish ...
///     bus.drain();
///     recorder->stop();
///     recorder->write("trace.json");
///
/// What the trace shows: one track per thread, named after the thread
/// (`pthread_getname_np`) when it has a name of its own, else "thread N" in order of
/// appearance; a slice per publish on the publisher's thread (from the start of `publish` until it
/// returns) and per handler call (named after the topic; its args say subscriber, event
/// id, sequence, attempt, outcome, correlation and causation); instant events for drops,
/// retries and dead letters; and flow arrows from each publish to each handler call of
/// that event, and from the handler call of an event to each publish it caused
/// (`causation_id()` equal to the handled event's `span_id()`). An arrow is written only
/// when both of its ends were recorded. Events whose `sampled()` flag is off are not
/// recorded. One recorder may watch several buses.
///
/// Cost: a bus without observers pays nothing for them. An installed but idle recorder
/// (not started) costs each observer call a virtual call and one atomic load. While
/// recording, each call reads the steady clock and appends a record of about 110 bytes
/// to one vector under one mutex (a handler call also pushes and pops a thread-local
/// entry), so recording serialises the bus's threads briefly on that mutex: use it to
/// look at a window, not to run in production all day.
///
/// Failure: a hook that cannot allocate (a new topic, subscriber or thread name to keep)
/// throws `std::bad_alloc`; the bus counts it in `bus_stats::observer_failures` and that
/// record is missing.
///
/// Capacity: at most `capacity()` records are kept (a publish, a handler call, a drop, a
/// retry and a dead letter are one record each), reserved up front by `start()`; later
/// ones are left out and counted in `dropped()`.
///
/// Thread safety: every member function may be called from any thread at any time,
/// including while the bus calls the observer hooks from many threads.
class trace_recorder final : public observer {
public:
    /// Records kept by default: 65536 (7 MiB reserved by `start()`).
    static constexpr std::size_t default_capacity = std::size_t{1} << 16U;

    /// A recorder that keeps at most `capacity` records per recording. It records nothing
    /// until `start()`.
    explicit trace_recorder(std::size_t capacity = default_capacity) : capacity_(capacity) {}

    /// Starts a new recording: discards what was recorded before, reserves room for
    /// `capacity()` records, and records from now on until `stop()`. Throws
    /// `std::bad_alloc` when the room cannot be reserved (then it is not recording, and
    /// the previous recording is gone).
    void start() {
        std::lock_guard lock(mutex_);
        recording_.store(false, std::memory_order_relaxed);
        records_.clear();
        names_.clear();
        name_index_.clear();
        threads_.clear();
        thread_index_.clear();
        dropped_ = 0;
        ++generation_;
        records_.reserve(capacity_);
        recording_.store(true, std::memory_order_release);
    }

    /// Stops recording: once it returns, nothing new is recorded (a handler call that
    /// began before still gets its end time when it returns). Keeps what was recorded,
    /// for `write`. Does nothing when not recording.
    void stop() noexcept {
        std::lock_guard lock(mutex_);
        recording_.store(false, std::memory_order_relaxed);
    }

    /// True between `start()` and `stop()`.
    [[nodiscard]] bool is_recording() const noexcept { return recording_.load(std::memory_order_acquire); }

    /// The most records one recording keeps.
    [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }

    /// Records kept by the current (or last) recording.
    [[nodiscard]] std::size_t size() const {
        std::lock_guard lock(mutex_);
        return records_.size();
    }

    /// Records the current (or last) recording left out because it was full.
    [[nodiscard]] std::uint64_t dropped() const {
        std::lock_guard lock(mutex_);
        return dropped_;
    }

    /// Writes the recording as Chrome trace-event JSON to `out` (UTF-8, one event per
    /// line, in time order). Works while recording too (it writes what is there so far;
    /// handler calls still running are left out). Takes the lock only to copy the records,
    /// so the bus is not held up while the text is made. Failure: a stream that fails sets
    /// its state as usual (and throws only if its exception mask says so); `std::bad_alloc`
    /// if the text cannot be made.
    void write(std::ostream& out) const {
        const std::string text = json();
        out.write(text.data(), static_cast<std::streamsize>(text.size()));
    }

    /// Writes the recording as Chrome trace-event JSON to the file `path`, replacing it.
    /// Throws `std::runtime_error` naming the path when the file cannot be opened or
    /// written (a partly written file may then be left behind).
    void write(const std::filesystem::path& path) const {
        const std::string text = json();
        std::ofstream file(path, std::ios::binary | std::ios::trunc);
        if (!file) {
            throw std::runtime_error("herald::trace_recorder: cannot open " + path.string());
        }
        file.write(text.data(), static_cast<std::streamsize>(text.size()));
        file.close();
        if (!file) {
            throw std::runtime_error("herald::trace_recorder: cannot write " + path.string());
        }
    }

    /// Observer hook: records the publish (from `began` until now, on this thread).
    void on_publish(const envelope_base& event, const publish_result& result,
                    std::chrono::steady_clock::time_point began) override {
        if (!wanted(event)) {
            return;
        }
        record r = stamp(kind::publish, event, now());
        r.begin = ticks(began);
        r.queued = result.queued;
        r.handled_inline = result.handled_inline;
        r.failed_inline = result.failed_inline;
        r.refused = result.refused;
        r.overflowed = result.overflowed;
        add(r, event.topic(), {});
    }

    /// Observer hook: opens a handler-call record, closed by `on_delivery_end`.
    void on_delivery_begin(std::string_view subscriber, const envelope_base& event) override {
        if (!wanted(event)) {
            return;
        }
        record r = stamp(kind::call, event, now());
        std::uint64_t generation = 0;
        const std::size_t index = add(r, event.topic(), subscriber, &generation);
        if (index != npos) {
            open_calls().push_back({this, generation, index, event.id(), event.attempt(), subscriber.data()});
        }
    }

    /// Observer hook: closes the handler-call record that `on_delivery_begin` opened.
    void on_delivery_end(std::string_view subscriber, const envelope_base& event, delivery_outcome outcome) override {
        auto& calls = open_calls();
        if (calls.empty()) {
            return;
        }
        const std::int64_t ended = now();
        // Normally the last entry; nested calls of other recorders may sit above it.
        for (auto it = calls.rbegin(); it != calls.rend(); ++it) {
            if (it->owner == this && it->id == event.id() && it->attempt == event.attempt() &&
                it->subscriber == subscriber.data()) {
                const open_call call = *it;
                calls.erase(std::next(it).base());
                std::lock_guard lock(mutex_);
                if (call.generation == generation_ && call.index < records_.size()) {
                    record& r = records_[call.index];
                    r.end = ended;
                    r.code = static_cast<std::uint8_t>(outcome);
                    r.finished = true;
                }
                return;
            }
        }
    }

    /// Observer hook: records an instant event on this thread.
    void on_drop(std::string_view subscriber, const envelope_base& event, drop_reason reason) override {
        if (wanted(event)) {
            record r = stamp(kind::drop, event, now());
            r.code = static_cast<std::uint8_t>(reason);
            add(r, event.topic(), subscriber);
        }
    }

    /// Observer hook: records an instant event on this thread.
    void on_retry(std::string_view subscriber, const envelope_base& event, std::chrono::nanoseconds delay) override {
        if (wanted(event)) {
            record r = stamp(kind::retry, event, now());
            r.delay = delay.count();
            add(r, event.topic(), subscriber);
        }
    }

    /// Observer hook: records an instant event on this thread.
    void on_dead_letter(std::string_view subscriber, const envelope_base& event, dead_letter_reason reason) override {
        if (wanted(event)) {
            record r = stamp(kind::dead_letter, event, now());
            r.code = static_cast<std::uint8_t>(reason);
            add(r, event.topic(), subscriber);
        }
    }

private:
    static constexpr std::size_t npos = static_cast<std::size_t>(-1);

    enum class kind : std::uint8_t { publish, call, drop, retry, dead_letter };

    /// One thing that happened; strings are indexes into `names_`, times are steady-clock
    /// nanoseconds.
    struct record {
        std::int64_t begin = 0;
        std::int64_t end = 0;   // publish, call
        std::int64_t delay = 0; // retry
        event_id id{};
        event_id correlation{};
        std::uint64_t causation = 0;
        std::uint64_t sequence = 0;
        std::uint32_t thread = 0;
        std::uint32_t topic = 0;
        std::uint32_t subscriber = 0;
        std::uint32_t attempt = 0;
        std::uint32_t queued = 0;
        std::uint32_t handled_inline = 0;
        std::uint32_t failed_inline = 0;
        std::uint32_t refused = 0;
        std::uint32_t overflowed = 0;
        kind what = kind::publish;
        std::uint8_t code = 0; // delivery_outcome, drop_reason or dead_letter_reason
        bool finished = false; // a call's end was seen; always true for the others
    };
    static_assert(sizeof(record) <= 112, "the class comment says about 110 bytes a record");

    /// A handler call begun on this thread and not yet ended.
    struct open_call {
        const trace_recorder* owner;
        std::uint64_t generation;
        std::size_t index;
        event_id id;
        std::uint32_t attempt;
        const char* subscriber; // the same view is passed to begin and end
    };

    struct string_hash {
        using is_transparent = void;
        std::size_t operator()(std::string_view text) const noexcept { return std::hash<std::string_view>{}(text); }
    };

    static std::vector<open_call>& open_calls() {
        thread_local std::vector<open_call> calls;
        return calls;
    }

    static std::int64_t ticks(std::chrono::steady_clock::time_point t) noexcept {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
    }
    static std::int64_t now() noexcept { return ticks(std::chrono::steady_clock::now()); }

    [[nodiscard]] bool wanted(const envelope_base& event) const noexcept {
        return recording_.load(std::memory_order_acquire) && event.sampled();
    }

    static record stamp(kind what, const envelope_base& event, std::int64_t at) noexcept {
        record r;
        r.what = what;
        r.begin = at;
        r.end = at;
        r.finished = what != kind::call;
        r.id = event.id();
        r.correlation = event.correlation_id();
        r.causation = event.causation_id();
        r.sequence = event.sequence();
        r.attempt = event.attempt();
        return r;
    }

    /// Appends `r` (with this thread, `topic` and `subscriber`) unless stopped or full;
    /// returns its index (and the recording's generation), or npos.
    std::size_t add(record r, std::string_view topic, std::string_view subscriber,
                    std::uint64_t* generation = nullptr) {
        std::lock_guard lock(mutex_);
        if (!recording_.load(std::memory_order_relaxed)) {
            return npos;
        }
        if (records_.size() >= capacity_) {
            ++dropped_;
            return npos;
        }
        r.thread = this_thread_index();
        r.topic = intern(topic);
        r.subscriber = intern(subscriber);
        records_.push_back(r);
        if (generation != nullptr) {
            *generation = generation_;
        }
        return records_.size() - 1;
    }

    std::uint32_t intern(std::string_view text) {
        if (const auto found = name_index_.find(text); found != name_index_.end()) {
            return found->second;
        }
        const auto index = static_cast<std::uint32_t>(names_.size());
        names_.emplace_back(text);
        try {
            name_index_.emplace(names_.back(), index);
        } catch (...) {
            names_.pop_back();
            throw;
        }
        return index;
    }

    std::uint32_t this_thread_index() {
        const auto me = std::this_thread::get_id();
        if (const auto found = thread_index_.find(me); found != thread_index_.end()) {
            return found->second;
        }
        const auto index = static_cast<std::uint32_t>(threads_.size());
        threads_.push_back(this_thread_name());
        try {
            thread_index_.emplace(me, index);
        } catch (...) {
            threads_.pop_back();
            throw;
        }
        return index;
    }

    /// The calling thread's own name, or "" when it has none.
    static std::string this_thread_name() {
#if defined(__linux__) || defined(__APPLE__)
        char buffer[64] = {};
        if (pthread_getname_np(pthread_self(), buffer, sizeof buffer) != 0) {
            return {};
        }
        std::string name(buffer);
#if defined(__linux__) && defined(_GNU_SOURCE)
        // Linux gives a thread nobody named its creator's name, usually the program's
        // (cut to 15 bytes): that is not a name of its own.
        if (name == std::string_view(program_invocation_short_name).substr(0, 15)) {
            return {};
        }
#endif
        return name;
#else
        return {};
#endif
    }

    /// The JSON text of the recording.
    [[nodiscard]] std::string json() const;

    /// One line of the output, sorted by time: a parent slice before its children, slices
    /// before the flow ends bound to them.
    struct line {
        std::int64_t at;
        int rank; // 0 slice, 1 instant, 2 flow
        std::int64_t length;
        std::string text;
    };

    /// `text` as a JSON string: quoted, escaped, invalid UTF-8 replaced by U+FFFD.
    static void append_string(std::string& out, std::string_view text) {
        constexpr char hex[] = "0123456789abcdef";
        out += '"';
        std::size_t i = 0;
        while (i < text.size()) {
            const auto c = static_cast<unsigned char>(text[i]);
            if (c == '"' || c == '\\') {
                out += '\\';
                out += static_cast<char>(c);
            } else if (c == '\n') {
                out += "\\n";
            } else if (c == '\t') {
                out += "\\t";
            } else if (c == '\r') {
                out += "\\r";
            } else if (c < 0x20 || c == 0x7f) {
                out += "\\u00";
                out += hex[c >> 4U];
                out += hex[c & 0xfU];
            } else if (c < 0x80) {
                out += static_cast<char>(c);
            } else {
                const std::size_t length = utf8_length(text.substr(i));
                if (length == 0) {
                    out += "\\ufffd";
                    ++i;
                    continue;
                }
                out.append(text.substr(i, length));
                i += length;
                continue;
            }
            ++i;
        }
        out += '"';
    }

    /// The length of the well-formed UTF-8 sequence that `text` starts with (whose first
    /// byte is not ASCII), or 0 when it is not one.
    static std::size_t utf8_length(std::string_view text) noexcept {
        const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
        const unsigned char lead = byte(0);
        std::size_t length = 0;
        unsigned char low = 0x80; // the range of the second byte
        unsigned char high = 0xbf;
        if (lead >= 0xc2 && lead <= 0xdf) {
            length = 2;
        } else if (lead >= 0xe0 && lead <= 0xef) {
            length = 3;
            low = lead == 0xe0 ? 0xa0 : 0x80;  // no overlong forms
            high = lead == 0xed ? 0x9f : 0xbf; // no surrogates
        } else if (lead >= 0xf0 && lead <= 0xf4) {
            length = 4;
            low = lead == 0xf0 ? 0x90 : 0x80;
            high = lead == 0xf4 ? 0x8f : 0xbf; // nothing past U+10FFFF
        } else {
            return 0;
        }
        if (text.size() < length || byte(1) < low || byte(1) > high) {
            return 0;
        }
        for (std::size_t i = 2; i < length; ++i) {
            if (byte(i) < 0x80 || byte(i) > 0xbf) {
                return 0;
            }
        }
        return length;
    }

    static void append_uint(std::string& out, std::uint64_t value) {
        char buffer[24];
        const auto end = std::to_chars(buffer, buffer + sizeof buffer, value).ptr;
        out.append(buffer, end);
    }

    /// Nanoseconds (not negative) as microseconds with three decimals, exactly.
    static void append_micros(std::string& out, std::int64_t nanoseconds) {
        const auto ns = static_cast<std::uint64_t>(std::max<std::int64_t>(nanoseconds, 0));
        append_uint(out, ns / 1000);
        const auto fraction = ns % 1000;
        out += '.';
        out += static_cast<char>('0' + fraction / 100);
        out += static_cast<char>('0' + fraction / 10 % 10);
        out += static_cast<char>('0' + fraction % 10);
    }

    /// A 64-bit id as 16 hex digits in a JSON string ("" for 0): JSON numbers are doubles.
    static void append_hex64(std::string& out, std::uint64_t value) {
        out += '"';
        if (value != 0) {
            herald::detail::append_hex16(out, value);
        }
        out += '"';
    }

    /// A 128-bit id as 32 hex digits in a JSON string ("" for the nil id).
    static void append_id(std::string& out, const event_id& id) {
        out += '"';
        if (!id.is_nil()) {
            out += id.to_string();
        }
        out += '"';
    }

    const std::size_t capacity_;
    std::atomic<bool> recording_{false};
    mutable std::mutex mutex_;
    std::vector<record> records_;
    std::vector<std::string> names_;
    std::unordered_map<std::string, std::uint32_t, string_hash, std::equal_to<>> name_index_;
    std::vector<std::string> threads_;
    std::unordered_map<std::thread::id, std::uint32_t> thread_index_;
    std::uint64_t dropped_ = 0;
    std::uint64_t generation_ = 0;
};

inline std::string trace_recorder::json() const {
    std::vector<record> records;
    std::vector<std::string> names;
    std::vector<std::string> threads;
    std::uint64_t left_out = 0;
    {
        std::lock_guard lock(mutex_);
        records = records_;
        names = names_;
        threads = threads_;
        left_out = dropped_;
    }

    std::int64_t origin = 0;
    if (!records.empty()) {
        origin = std::min_element(records.begin(), records.end(), [](const record& a, const record& b) {
                     return a.begin < b.begin;
                 })->begin;
    }
    const auto pid = [](std::string& out) { out += ",\"pid\":1"; };
    const auto tid = [](std::string& out, std::uint32_t thread) {
        out += ",\"tid\":";
        append_uint(out, std::uint64_t{thread} + 1);
    };
    const auto at = [&](std::string& out, std::int64_t when) {
        out += ",\"ts\":";
        append_micros(out, when - origin);
    };

    std::vector<line> lines;
    lines.reserve(records.size() * 3 + threads.size() * 2 + 1);
    lines.push_back({-1, 0, 0, R"({"name":"process_name","ph":"M","pid":1,"tid":0,"args":{"name":"herald"}})"});
    for (std::uint32_t t = 0; t < threads.size(); ++t) {
        std::string text = R"({"name":"thread_name","ph":"M")";
        pid(text);
        tid(text, t);
        text += R"(,"args":{"name":)";
        if (threads[t].empty()) {
            append_string(text, "thread " + std::to_string(t + 1));
        } else {
            append_string(text, threads[t]);
        }
        text += "}}";
        lines.push_back({-1, 0, 0, std::move(text)});
        text = R"({"name":"thread_sort_index","ph":"M")";
        pid(text);
        tid(text, t);
        text += R"(,"args":{"sort_index":)";
        append_uint(text, t + 1);
        text += "}}";
        lines.push_back({-1, 0, 0, std::move(text)});
    }

    // The arguments every slice and instant shares.
    const auto event_args = [&](std::string& out, const record& r) {
        out += R"("event":)";
        append_id(out, r.id);
        out += R"(,"sequence":)";
        append_uint(out, r.sequence);
        out += R"(,"correlation":)";
        append_id(out, r.correlation);
        out += R"(,"causation":)";
        append_hex64(out, r.causation);
        out += R"(,"span":)";
        append_hex64(out, span_of(r.id));
    };
    const auto subscriber_args = [&](std::string& out, const record& r) {
        out += R"("subscriber":)";
        append_string(out, names[r.subscriber]);
        out += R"(,"attempt":)";
        append_uint(out, r.attempt);
        out += ',';
        event_args(out, r);
    };

    // Slices and instants; and what the flows need to find their ends.
    std::unordered_map<event_id, std::vector<std::size_t>> publishes;          // by event id
    std::unordered_map<std::uint64_t, std::vector<std::size_t>> calls_by_span; // handler calls
    for (std::size_t i = 0; i < records.size(); ++i) {
        const record& r = records[i];
        std::string text = "{\"name\":";
        const std::string_view topic = names[r.topic];
        switch (r.what) {
        case kind::publish:
            append_string(text, "publish " + std::string(topic));
            text += R"(,"cat":"herald.publish","ph":"X")";
            break;
        case kind::call:
            if (!r.finished) {
                continue;
            }
            append_string(text, topic);
            text += R"(,"cat":"herald.handler","ph":"X")";
            break;
        case kind::drop:
            append_string(text, "drop " + std::string(topic));
            text += R"(,"cat":"herald.drop","ph":"i","s":"t")";
            break;
        case kind::retry:
            append_string(text, "retry " + std::string(topic));
            text += R"(,"cat":"herald.retry","ph":"i","s":"t")";
            break;
        case kind::dead_letter:
            append_string(text, "dead letter " + std::string(topic));
            text += R"(,"cat":"herald.dead_letter","ph":"i","s":"t")";
            break;
        }
        at(text, r.begin);
        const bool slice = r.what == kind::publish || r.what == kind::call;
        if (slice) {
            text += R"(,"dur":)";
            append_micros(text, r.end - r.begin);
        }
        pid(text);
        tid(text, r.thread);
        text += R"(,"args":{)";
        switch (r.what) {
        case kind::publish:
            text += R"("topic":)";
            append_string(text, topic);
            text += ',';
            event_args(text, r);
            text += R"(,"queued":)";
            append_uint(text, r.queued);
            text += R"(,"handled_inline":)";
            append_uint(text, r.handled_inline);
            text += R"(,"failed_inline":)";
            append_uint(text, r.failed_inline);
            text += R"(,"refused":)";
            append_uint(text, r.refused);
            text += R"(,"overflowed":)";
            append_uint(text, r.overflowed);
            publishes[r.id].push_back(i);
            break;
        case kind::call:
            subscriber_args(text, r);
            text += R"(,"outcome":)";
            append_string(text, to_string(static_cast<delivery_outcome>(r.code)));
            calls_by_span[span_of(r.id)].push_back(i);
            break;
        case kind::drop:
            subscriber_args(text, r);
            text += R"(,"reason":)";
            append_string(text, to_string(static_cast<drop_reason>(r.code)));
            break;
        case kind::retry:
            subscriber_args(text, r);
            text += R"(,"delay_us":)";
            append_micros(text, r.delay);
            break;
        case kind::dead_letter:
            subscriber_args(text, r);
            text += R"(,"reason":)";
            append_string(text, to_string(static_cast<dead_letter_reason>(r.code)));
            break;
        }
        text += "}}";
        lines.push_back({r.begin - origin, slice ? 0 : 1, r.end - r.begin, std::move(text)});
    }

    // Flows: "s" inside the slice an arrow leaves, "f" at the start of the slice it
    // enters (bound to it by "bp":"e"). Each arrow has its own id.
    std::uint64_t next_flow = 1;
    const auto flow = [&](std::string_view name, std::string_view category, const record& from, std::int64_t leave_at,
                          const record& to) {
        for (const char phase : {'s', 'f'}) {
            const record& end = phase == 's' ? from : to;
            const std::int64_t when = phase == 's' ? leave_at : to.begin;
            std::string text = "{\"name\":";
            append_string(text, name);
            text += R"(,"cat":)";
            append_string(text, category);
            text += R"(,"ph":")";
            text += phase;
            text += R"(","id":)";
            append_uint(text, next_flow);
            at(text, when);
            pid(text);
            tid(text, end.thread);
            text += R"(,"bp":"e"})";
            lines.push_back({when - origin, 2, 0, std::move(text)});
        }
        ++next_flow;
    };
    for (auto& [id, found] : publishes) {
        std::sort(found.begin(), found.end(),
                  [&](std::size_t a, std::size_t b) { return records[a].begin < records[b].begin; });
    }
    for (const record& call : records) {
        if (call.what != kind::call || !call.finished) {
            continue;
        }
        // The publish of this event (the latest one before the call, should an event be
        // published again under the same id).
        const auto found = publishes.find(call.id);
        if (found == publishes.end()) {
            continue;
        }
        const record* from = nullptr;
        for (const std::size_t p : found->second) {
            if (records[p].begin <= call.begin) {
                from = &records[p];
            }
        }
        if (from != nullptr) {
            flow("delivery", "herald.delivery", *from, from->begin, call);
        }
    }
    for (const record& effect : records) {
        if (effect.what != kind::publish || effect.causation == 0) {
            continue;
        }
        const auto found = calls_by_span.find(effect.causation);
        if (found == calls_by_span.end()) {
            continue;
        }
        // The handler call the publish ran in; failing that (a causation given by hand),
        // the latest call of the causing event that began before it.
        const record* cause = nullptr;
        for (const std::size_t c : found->second) {
            const record& call = records[c];
            if (call.thread == effect.thread && call.begin <= effect.begin && effect.end <= call.end) {
                cause = &call;
                break;
            }
            if (call.begin <= effect.begin && (cause == nullptr || cause->begin < call.begin)) {
                cause = &call;
            }
        }
        if (cause != nullptr) {
            flow("cause", "herald.cause", *cause, cause->begin, effect);
        }
    }

    std::stable_sort(lines.begin(), lines.end(), [](const line& a, const line& b) {
        if (a.at != b.at) {
            return a.at < b.at;
        }
        if (a.rank != b.rank) {
            return a.rank < b.rank;
        }
        return a.length > b.length;
    });

    std::string out = R"({"otherData":{"producer":"herald::trace_recorder","records":)";
    append_uint(out, records.size());
    out += R"(,"dropped":)";
    append_uint(out, left_out);
    out += "},\n\"traceEvents\":[\n";
    std::size_t size = out.size();
    for (const line& l : lines) {
        size += l.text.size() + 2;
    }
    out.reserve(size + 4);
    for (std::size_t i = 0; i < lines.size(); ++i) {
        out += lines[i].text;
        out += i + 1 < lines.size() ? ",\n" : "\n";
    }
    out += "]}\n";
    return out;
}

} // namespace herald

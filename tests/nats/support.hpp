// Shared by the NATS bridge tests: the events, a server per test, raw client helpers.
#pragma once

#include "nats/shop.hpp"
#include "support/events.hpp"
#include "support/nats_server.hpp"

#include <doctest/doctest.h>

#include <herald/bridge/nats.hpp>
#include <herald/herald.hpp>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

namespace test {

/// A started server, or the process exits with 77 (CTest: skipped) when nats-server is
/// not installed.
inline std::unique_ptr<nats_server> start_server() {
    if (!nats_server::binary()) {
        std::fprintf(stderr, "SKIPPED: nats-server is not installed (Debian package nats-server; "
                             "scripts/deps.sh installs it)\n");
        std::exit(77);
    }
    return std::make_unique<nats_server>();
}

/// Bridge settings for tests: quick reconnects and resends, failures counted.
inline herald::nats::bridge_options quick(const nats_server& server) {
    herald::nats::bridge_options options;
    options.url = server.url();
    options.reconnect_wait = std::chrono::milliseconds(50);
    options.ack_timeout = std::chrono::milliseconds(1000);
    options.flush_timeout = std::chrono::seconds(60);
    options.on_event = [](const herald::nats::bridge_event&) {};
    return options;
}

/// A plain client connection, for what the tests do behind the bridge's back.
class raw_client {
public:
    explicit raw_client(const std::string& url) {
        REQUIRE(natsConnection_ConnectTo(&connection_, url.c_str()) == NATS_OK);
        REQUIRE(natsConnection_JetStream(&js_, connection_, nullptr) == NATS_OK);
    }
    ~raw_client() {
        jsCtx_Destroy(js_);
        natsConnection_Destroy(connection_);
    }
    raw_client(const raw_client&) = delete;
    raw_client& operator=(const raw_client&) = delete;

    natsConnection* connection() const noexcept { return connection_; }
    jsCtx* js() const noexcept { return js_; }

    /// Stores a message with the given headers and body in the stream of `subject`.
    void store(const std::string& subject, const std::vector<std::pair<std::string, std::string>>& headers,
               const std::string& body) {
        natsMsg* message = nullptr;
        REQUIRE(natsMsg_Create(&message, subject.c_str(), nullptr, body.data(), static_cast<int>(body.size())) ==
                NATS_OK);
        for (const auto& [key, value] : headers) {
            REQUIRE(natsMsgHeader_Set(message, key.c_str(), value.c_str()) == NATS_OK);
        }
        jsPubAck* ack = nullptr;
        REQUIRE(js_PublishMsg(&ack, js_, message, nullptr, nullptr) == NATS_OK);
        jsPubAck_Destroy(ack);
        natsMsg_Destroy(message);
    }

    /// Messages stored in `stream` now.
    std::uint64_t stored(const std::string& stream) {
        jsStreamInfo* info = nullptr;
        REQUIRE(js_GetStreamInfo(&info, js_, stream.c_str(), nullptr, nullptr) == NATS_OK);
        const std::uint64_t count = info->State.Msgs;
        jsStreamInfo_Destroy(info);
        return count;
    }

private:
    natsConnection* connection_ = nullptr;
    jsCtx* js_ = nullptr;
};

} // namespace test

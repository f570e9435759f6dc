// A nats-server with JetStream, started by a test (or benchmark) on a free loopback
// port with its own temporary store, killed and restarted on demand, removed at the end.
#pragma once

#include <arpa/inet.h>
#include <chrono>
#include <cstdlib>
#include <fcntl.h>
#include <filesystem>
#include <netinet/in.h>
#include <optional>
#include <signal.h>
#include <stdexcept>
#include <string>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace test {

/// Where nats-server is: $HERALD_NATS_SERVER, else the first of PATH, /usr/sbin, /usr/bin.
inline std::optional<std::string> find_nats_server() {
    if (const char* given = std::getenv("HERALD_NATS_SERVER"); given != nullptr && *given != '\0') {
        return std::string(given);
    }
    std::vector<std::string> dirs;
    if (const char* path = std::getenv("PATH"); path != nullptr) {
        std::string all = path;
        for (std::size_t start = 0; start <= all.size();) {
            const std::size_t end = all.find(':', start);
            dirs.push_back(all.substr(start, end == std::string::npos ? std::string::npos : end - start));
            if (end == std::string::npos) {
                break;
            }
            start = end + 1;
        }
    }
    dirs.emplace_back("/usr/sbin");
    dirs.emplace_back("/usr/bin");
    for (const auto& dir : dirs) {
        const std::string candidate = dir + "/nats-server";
        if (!dir.empty() && ::access(candidate.c_str(), X_OK) == 0) {
            return candidate;
        }
    }
    return std::nullopt;
}

/// A loopback TCP port nobody listens on now.
inline int free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = 0;
    socklen_t length = sizeof address;
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
        if (fd >= 0) {
            ::close(fd);
        }
        throw std::runtime_error("free_port: cannot bind a loopback socket");
    }
    ::close(fd);
    return ntohs(address.sin_port);
}

/// True when something accepts connections on 127.0.0.1:`port`.
inline bool accepting(int port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        return false;
    }
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(static_cast<std::uint16_t>(port));
    const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
    ::close(fd);
    return ok;
}

/// `nats-server -js` on 127.0.0.1, a free port and a temporary store directory.
class nats_server {
public:
    /// Starts the server (throws when the binary is missing or it does not come up).
    nats_server() : binary_(require_binary()), port_(free_port()) {
        char pattern[] = "/tmp/herald-nats-XXXXXX";
        if (::mkdtemp(pattern) == nullptr) {
            throw std::runtime_error("nats_server: mkdtemp failed");
        }
        store_ = pattern;
        start();
    }

    ~nats_server() {
        stop(SIGTERM);
        std::error_code ignored;
        std::filesystem::remove_all(store_, ignored);
    }

    nats_server(const nats_server&) = delete;
    nats_server& operator=(const nats_server&) = delete;

    [[nodiscard]] std::string url() const { return "nats://127.0.0.1:" + std::to_string(port_); }
    [[nodiscard]] int port() const noexcept { return port_; }

    /// Kills the server at once (SIGKILL: no clean shutdown of its store).
    void kill() { stop(SIGKILL); }

    /// Starts it again on the same port and store.
    void start() {
        const std::string port = std::to_string(port_);
        const std::string log = store_ + "/server.log";
        std::vector<std::string> args{binary_, "-js", "-a", "127.0.0.1", "-p", port, "-sd", store_, "-l", log};
        std::vector<char*> argv;
        for (auto& a : args) {
            argv.push_back(a.data());
        }
        argv.push_back(nullptr);
        const pid_t parent = ::getpid();
        pid_ = ::fork();
        if (pid_ < 0) {
            throw std::runtime_error("nats_server: cannot fork");
        }
        if (pid_ == 0) {
            // The child: only async-signal-safe calls until exec. The server dies with the
            // test (a test that hangs is ended by its watchdog without destructors), and
            // does not hold the test's output pipes open.
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (::getppid() != parent) {
                ::_exit(1);
            }
            const int null = ::open("/dev/null", O_RDWR);
            if (null >= 0) {
                ::dup2(null, STDIN_FILENO);
                ::dup2(null, STDOUT_FILENO);
                ::dup2(null, STDERR_FILENO);
            }
            ::execv(binary_.c_str(), argv.data());
            ::_exit(127);
        }
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
        while (!accepting(port_)) {
            int status = 0;
            if (::waitpid(pid_, &status, WNOHANG) == pid_) {
                pid_ = -1;
                throw std::runtime_error("nats_server: " + binary_ + " exited at start (see " + log + ")");
            }
            if (std::chrono::steady_clock::now() > deadline) {
                throw std::runtime_error("nats_server: not accepting connections after 20 s");
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
    }

    /// The binary, or nullopt when it is not installed (tests then skip with a message).
    static std::optional<std::string> binary() { return find_nats_server(); }

private:
    static std::string require_binary() {
        auto found = find_nats_server();
        if (!found) {
            throw std::runtime_error("nats-server not found (Debian package nats-server)");
        }
        return *found;
    }

    void stop(int signal) {
        if (pid_ <= 0) {
            return;
        }
        ::kill(pid_, signal);
        int status = 0;
        ::waitpid(pid_, &status, 0);
        pid_ = -1;
    }

    std::string binary_;
    int port_;
    std::string store_;
    pid_t pid_ = -1;
};

} // namespace test

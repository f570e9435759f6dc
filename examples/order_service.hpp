// A small component that uses the bus: the order service of examples/testing_a_component.cpp.
// It places orders, re-submits an order whose payment was declined, and cancels it after
// two declines or when the payment service cannot be reached at all.
#pragma once

#include <herald/herald.hpp>

#include <map>
#include <mutex>
#include <ostream>
#include <stdexcept>
#include <string>

namespace shop {

struct order_placed {
    int order = 0;
    std::string customer;
    double total = 0;
    friend bool operator==(const order_placed&, const order_placed&) = default;
    friend std::ostream& operator<<(std::ostream& out, const order_placed& o) {
        return out << "order_placed{" << o.order << ", " << o.customer << ", " << o.total << "}";
    }
};

struct payment_failed {
    int order = 0;
    std::string reason;
};

struct order_cancelled {
    int order = 0;
    std::string reason;
    friend std::ostream& operator<<(std::ostream& out, const order_cancelled& c) {
        return out << "order_cancelled{" << c.order << ", " << c.reason << "}";
    }
};

using herald::delay;
// The payment service consumes orders at least once: if it crashes on an order, the bus
// retries after 100 ms, then 200 ms; after the third failure the order is a dead letter.
struct orders
    : herald::topic<order_placed, herald::at_least_once<herald::max_attempts<3>,
                                                        herald::exponential_backoff<delay::ms(100), delay::s(2)>>> {
    static constexpr std::string_view name = "shop.orders";
};
struct payment_failures : herald::topic<payment_failed> {
    static constexpr std::string_view name = "shop.payment_failures";
};
struct cancellations : herald::topic<order_cancelled> {
    static constexpr std::string_view name = "shop.cancellations";
};

enum class order_state { awaiting_payment, cancelled };

/// The component under test. It only knows the bus: a test hands it a bus from
/// herald::testing, production code the real one; its code is the same.
template <class Bus = herald::bus>
class order_service {
public:
    static constexpr int max_payment_retries = 2;

    explicit order_service(Bus& bus)
        : bus_(bus),
          declined_(bus.template subscribe<payment_failures>(
              [this](const herald::envelope<payment_failed>& e) { on_payment_failed(e); },
              {.name = "order_service.declined"})),
          unreachable_(bus.template subscribe<herald::dead_letter_topic<orders>>(
              [this](const herald::dead_letter<order_placed>& d) {
                  cancel(d.event().order, "payment service unreachable");
              },
              {.name = "order_service.unreachable"})) {}

    /// Places an order and asks for its payment; returns the order number.
    int place(const std::string& customer, double total) {
        int number = 0;
        {
            std::lock_guard lock(mutex_);
            number = ++last_order_;
            orders_[number] = {customer, total, 0, order_state::awaiting_payment};
        }
        (void)bus_.template publish<orders>({number, customer, total});
        return number;
    }

    [[nodiscard]] order_state state(int order) const {
        std::lock_guard lock(mutex_);
        return orders_.at(order).state;
    }

private:
    struct record {
        std::string customer;
        double total = 0;
        int retries = 0;
        order_state state = order_state::awaiting_payment;
    };

    /// A declined payment: ask again (correlated with the failure), at most twice.
    void on_payment_failed(const herald::envelope<payment_failed>& e) {
        order_placed again;
        {
            std::lock_guard lock(mutex_);
            auto& r = orders_.at(e.event().order);
            if (r.state == order_state::cancelled) {
                return;
            }
            if (r.retries == max_payment_retries) {
                r.state = order_state::cancelled;
                again.order = 0;
            } else {
                ++r.retries;
                again = {e.event().order, r.customer, r.total};
            }
        }
        if (again.order == 0) {
            (void)bus_.template publish<cancellations>({e.event().order, "payment declined: " + e.event().reason});
            return;
        }
        (void)bus_.template publish<orders>(again, {.correlation = e.id()});
    }

    void cancel(int order, const std::string& reason) {
        {
            std::lock_guard lock(mutex_);
            auto& r = orders_.at(order);
            if (r.state == order_state::cancelled) {
                return;
            }
            r.state = order_state::cancelled;
        }
        (void)bus_.template publish<cancellations>({order, reason});
    }

    Bus& bus_;
    mutable std::mutex mutex_;
    int last_order_ = 0;
    std::map<int, record> orders_;
    herald::subscription declined_;
    herald::subscription unreachable_;
};

} // namespace shop

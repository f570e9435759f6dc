// Compile-time type names and stable hashes, so topic ids agree across shared libraries.
#pragma once

#include <cstdint>
#include <string_view>

namespace herald::detail {

/// FNV-1a, 64 bit: stable across compilers, runs at compile time.
constexpr std::uint64_t fnv1a(std::string_view text, std::uint64_t hash = 0xcbf29ce484222325ULL) noexcept {
    for (char c : text) {
        hash ^= static_cast<unsigned char>(c);
        hash *= 0x100000001b3ULL;
    }
    return hash;
}

/// The spelling of `T` as the compiler prints it (for example `shop::orders`).
template <class T>
constexpr std::string_view type_name() noexcept {
#if defined(__clang__) || defined(__GNUC__)
    // g++: "... type_name() [with T = shop::orders; std::string_view = ...]"
    // clang: "... type_name() [T = shop::orders]"
    constexpr std::string_view signature = __PRETTY_FUNCTION__;
    constexpr std::string_view marker = "T = ";
    constexpr auto begin = signature.find(marker) + marker.size();
    constexpr auto end = signature.find_first_of(";]", begin);
    return signature.substr(begin, end - begin);
#elif defined(_MSC_VER)
    constexpr std::string_view signature = __FUNCSIG__;
    constexpr std::string_view marker = "type_name<";
    constexpr auto begin = signature.find(marker) + marker.size();
    constexpr auto end = signature.rfind(">(void)");
    std::string_view name = signature.substr(begin, end - begin);
    for (std::string_view prefix : {"struct ", "class ", "enum "}) {
        if (name.substr(0, prefix.size()) == prefix) {
            name.remove_prefix(prefix.size());
        }
    }
    return name;
#else
#error "herald: unsupported compiler (needs __PRETTY_FUNCTION__ or __FUNCSIG__)"
#endif
}

} // namespace herald::detail

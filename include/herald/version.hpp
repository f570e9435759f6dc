// herald version numbers, for feature checks in user code.
#pragma once

namespace herald {

/// Major version: bumped on incompatible API changes.
inline constexpr int version_major = 0;
/// Minor version: bumped when features are added compatibly.
inline constexpr int version_minor = 4;
/// Patch version: bumped for fixes only.
inline constexpr int version_patch = 0;

} // namespace herald

// std::chrono's durations, time points and clocks, without the rest of <chrono>.
#pragma once

// In C++20, libstdc++'s <chrono> also brings the calendar, time zones and their stream
// I/O (<sstream>, <istream>, <locale>): about 1 s and 40 MB per translation unit with
// g++ 12, more than all of herald's own code. herald needs durations, time points,
// `steady_clock`, `system_clock` and the literals only; libstdc++ declares those in
// <bits/chrono.h>, which <thread> and <mutex> include anyway. Other standard libraries
// get <chrono>. Code that wants the calendar includes <chrono> itself.
#include <version> // defines __GLIBCXX__ for libstdc++

#if defined(__GLIBCXX__) && __has_include(<bits/chrono.h>)
#include <bits/chrono.h>
#else
#include <chrono>
#endif

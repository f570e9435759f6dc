// The one doctest main every test executable links, so each *_test.cpp holds only tests.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

// The Catch2 main of the cac test suite, compiled once into cac_test_main.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

/*
 * expect.h: the one assertion of the C++ unit tests. EXPECT(cond) prints the file, line and
 * condition and exits with status 1 when cond is false (ctest then reports the test as failed);
 * it stays active in release builds, unlike assert().
 */
#pragma once
#include <cstdio>
#include <cstdlib>

#define EXPECT(cond)                                                         \
  do {                                                                       \
    if (!(cond)) {                                                           \
      std::fprintf(stderr, "%s:%d: FAILED %s\n", __FILE__, __LINE__, #cond); \
      std::exit(1);                                                          \
    }                                                                        \
  } while (0)

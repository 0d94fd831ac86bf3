/*
 * stream.h: STREAM-style memory-bandwidth kernels (copy and triad), the yardstick every
 * memory-bound kernel (optimizer steps, norms) is compared against in benchmarks/.
 *
 *   copy:  c[i] = a[i]                 16 bytes moved per element (8 read + 8 written, f64)
 *   triad: a[i] = b[i] + s * c[i]      24 bytes moved per element
 *
 * Arrays are float64 as in McCalpin's STREAM. Parallel over the shared arena with large static
 * chunks so each thread streams its own contiguous pages.
 */
#pragma once
#include <cstdint>

namespace hf {

void stream_copy(double* c, const double* a, int64_t n);
void stream_triad(double* a, const double* b, const double* c, double s, int64_t n);

}  // namespace hf

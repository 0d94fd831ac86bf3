/*
 * unicode.h: UTF-8 decoding and the character classes the pre-tokenizers need.
 *
 * class_at(s, i, n, &len) returns the class of the code point starting at byte i of s[0, n) and
 * its length in bytes. ASCII takes one table load; other code points are decoded and looked up
 * in a two-stage table generated from Unicode 14.0.0 (scripts/gen_unicode_tables.py, the
 * version of Python 3.11's unicodedata). Invalid UTF-8 (never produced from a Python str, but
 * possible in raw bytes) is read as one OTHER "character" per bad byte, so scanners always
 * advance and never read past n.
 */
#pragma once
#include <cstddef>
#include <cstdint>

namespace hf::tok {

enum CharClass : uint8_t { OTHER = 0, WS = 1, NUM = 2, MARK = 3, LU = 4, LL = 5, LT = 6, LM = 7, LO = 8 };

extern const char kUnicodeVersion[];
extern const uint16_t kClassStage1[0x110000 >> 8];
extern const uint8_t kClassStage2[];

// Bit sets over CharClass, tested with (1 << cls) & SET.
constexpr uint16_t kLetter = (1u << LU) | (1u << LL) | (1u << LT) | (1u << LM) | (1u << LO);
constexpr uint16_t kUpperish = (1u << LU) | (1u << LT) | (1u << LM) | (1u << LO) | (1u << MARK);  // o200k's [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]
constexpr uint16_t kLowerish = (1u << LL) | (1u << LM) | (1u << LO) | (1u << MARK);               // o200k's [\p{Ll}\p{Lm}\p{Lo}\p{M}]
constexpr uint16_t kOther = (1u << OTHER) | (1u << MARK);                                          // [^\s\p{L}\p{N}]

inline bool in(uint16_t set, uint8_t c) { return (set >> c) & 1u; }

// ASCII classes, built at compile time (must agree with the generated table for cp < 128).
struct AsciiTable {
  uint8_t c[128];
  constexpr AsciiTable() : c() {
    for (int i = 0; i < 128; ++i) {
      uint8_t k = OTHER;
      if ((i >= 9 && i <= 13) || i == 32) k = WS;
      else if (i >= '0' && i <= '9') k = NUM;
      else if (i >= 'A' && i <= 'Z') k = LU;
      else if (i >= 'a' && i <= 'z') k = LL;
      c[i] = k;
    }
  }
};
inline constexpr AsciiTable kAscii{};

inline uint8_t class_of_cp(uint32_t cp) {
  if (cp >= 0x110000) return OTHER;
  return kClassStage2[(uint32_t)kClassStage1[cp >> 8] * 256u + (cp & 255u)];
}

// Decodes the code point at s[i] (i < n). Returns the code point; *len gets its byte length.
// Invalid sequences (bad lead, bad continuation, overlong, surrogate, > U+10FFFF) give
// 0xFFFFFFFF with *len = 1.
inline uint32_t decode_at(const uint8_t* s, size_t i, size_t n, int* len) {
  const uint32_t b0 = s[i];
  if (b0 < 0x80) { *len = 1; return b0; }
  *len = 1;
  if (b0 < 0xC2) return 0xFFFFFFFFu;
  if (b0 < 0xE0) {
    if (i + 1 >= n || (s[i + 1] & 0xC0) != 0x80) return 0xFFFFFFFFu;
    *len = 2;
    return ((b0 & 0x1F) << 6) | (s[i + 1] & 0x3F);
  }
  if (b0 < 0xF0) {
    if (i + 2 >= n || (s[i + 1] & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80) return 0xFFFFFFFFu;
    const uint32_t cp = ((b0 & 0x0F) << 12) | ((s[i + 1] & 0x3Fu) << 6) | (s[i + 2] & 0x3F);
    if (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF)) return 0xFFFFFFFFu;
    *len = 3;
    return cp;
  }
  if (b0 < 0xF5) {
    if (i + 3 >= n || (s[i + 1] & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80 || (s[i + 3] & 0xC0) != 0x80)
      return 0xFFFFFFFFu;
    const uint32_t cp = ((b0 & 0x07) << 18) | ((s[i + 1] & 0x3Fu) << 12) | ((s[i + 2] & 0x3Fu) << 6) | (s[i + 3] & 0x3F);
    if (cp < 0x10000 || cp > 0x10FFFF) return 0xFFFFFFFFu;
    *len = 4;
    return cp;
  }
  return 0xFFFFFFFFu;
}

inline uint8_t class_at(const uint8_t* s, size_t i, size_t n, int* len) {
  const uint8_t b = s[i];
  if (b < 0x80) { *len = 1; return kAscii.c[b]; }
  const uint32_t cp = decode_at(s, i, n, len);
  return cp == 0xFFFFFFFFu ? (uint8_t)OTHER : class_of_cp(cp);
}

}  // namespace hf::tok

/*
 * pretokenize.h: hand-written scanners for the three named pre-tokenizer regexes.
 *
 * Each next_piece_*(s, n, i) returns the end of the piece that tiktoken's regex (run with
 * fancy-regex, leftmost-first alternation, backtracking semantics) would match at byte i of the
 * UTF-8 text s[0, n); n is the end of the text the regex sees (tiktoken runs the regex on each
 * span between special tokens, so `$` is the end of that span). Every alternative is decided by
 * a forward scan plus at most one backward step over what was scanned, so a whole text costs
 * O(n): no regex engine, no backtracking blow-up ("^" * 1e6 is one linear run).
 *
 * The regexes (exactly as in the issue / tiktoken):
 *  gpt2   '(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s
 *  cl100k '(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+
 *         |\s++$|\s*[\r\n]|\s+(?!\S)|\s
 *  o200k  [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?
 *         |[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?
 *         |\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *
 * Whitespace subtleties, for a maximal whitespace run [i, e):
 *  - `\s++$` (gpt2, cl100k): a run that reaches the end of the text is one piece, newlines and all.
 *  - `\s*[\r\n]` / `\s*[\r\n]+`: the piece ends just after the LAST \r or \n of the run.
 *    In o200k this alternative comes first, so "  \n  <end>" splits as "  \n" + "  ".
 *  - `\s+(?!\S)`: backtracks one character: the run minus its last character (which then
 *    joins the next word as its leading space), if the run is at least 2 characters long.
 *  - otherwise one whitespace character.
 * (?i) contractions: the Rust regex crate folds case by Unicode simple case folding, so `'s`
 * also matches "'S" and "'\u017F" (LATIN SMALL LETTER LONG S); no other letter used here folds
 * to anything outside ASCII.
 */
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "tokenizer/unicode.h"

namespace hf::tok {

enum class Pattern : uint8_t { gpt2 = 0, cl100k = 1, o200k = 2, custom = 3 };

// The regex strings of the named patterns, and name <-> Pattern.
const char* pattern_regex(Pattern p);

// Whether text s[0, n) may be cut at byte p (0 < p < n) in two, the halves pre-tokenized on
// their own, with exactly the pieces of the whole (for the three named patterns). p qualifies in
// two cases, each decided by at most the three bytes s[p-2..p], so a cut found in a prefix of a
// stream is also safe in the whole stream:
// - s[p-1] is an ASCII letter and s[p] a space. A letter can only end a letter-run or
//   contraction piece, and no such piece takes a space, so every pattern ends a piece at p; at the
//   end of the first half the letters end the same piece (possessive or not, a letter run stops
//   at the space and at the end alike). The second half starts where the whole text starts a
//   piece, and no pattern looks behind, so it splits as the whole does from p on.
// - s[p-2] is a printable ASCII non-space, s[p-1] is '\n' and s[p] a printable ASCII non-space
//   other than '/': the newline is a whitespace run of length one, so every pattern ends a piece
//   after it ("\n" alone, or a punctuation piece's trailing newlines -- o200k's `[\r\n/]*` would
//   also take a '/', hence the exception), and no piece starts with a newline and continues into
//   a non-space; `\s++$` and `\s+(?!\S)` at the cut give that same one-character piece. A run of
//   several whitespace characters before the cut (where `$` would change the split) never
//   qualifies.
// This is the one definition of a safe cut: the batch encoder, the trainer and the Python file
// reader (homeforge.tokenizer._iter_file, through the binding) all use it.
inline bool is_safe_split(const uint8_t* s, size_t n, size_t p) {
  if (p == 0 || p >= n) return false;
  const uint8_t c = s[p], b = s[p - 1];
  if (c == ' ') return (b | 0x20) >= 'a' && (b | 0x20) <= 'z';
  return b == '\n' && p >= 2 && s[p - 2] > 0x20 && s[p - 2] < 0x7F && c > 0x20 && c < 0x7F && c != '/';
}

// The first p in [from, n) where is_safe_split holds, or n if there is none. O(distance to the
// cut): in prose and code a letter before a space comes every few bytes, so the scan is short.
// Used to split long documents of a batch into pieces that threads encode independently.
size_t safe_split_point(const uint8_t* s, size_t n, size_t from);

// The last p in [from, n) where is_safe_split holds, or n if there is none (scans backward).
size_t last_safe_split_point(const uint8_t* s, size_t n, size_t from);
const char* pattern_name(Pattern p);
Pattern pattern_from_name(const std::string& name);  // throws hf::ValueError

namespace detail {

// End of the maximal run of characters whose class is in `set`, starting at j.
inline size_t run_set(const uint8_t* s, size_t n, size_t j, uint16_t set) {
  while (j < n) {
    const uint8_t b = s[j];
    if (b < 0x80) {
      if (!in(set, kAscii.c[b])) break;
      ++j;
      continue;
    }
    int l;
    if (!in(set, class_at(s, j, n, &l))) break;
    j += (size_t)l;
  }
  return j;
}

inline bool is_nl(uint8_t b) { return b == '\r' || b == '\n'; }

// ASCII fast path. Most text is ASCII and most pieces are a run of ASCII letters: classify 16
// bytes at once (SSE2, part of the x86-64 baseline) and find the end of the run with one
// count-trailing-zeros, instead of a table load and an unpredictable branch per byte.
struct AlphaTable {
  bool c[256];
  constexpr AlphaTable() : c() {
    for (int i = 0; i < 256; ++i) c[i] = (i >= 'A' && i <= 'Z') || (i >= 'a' && i <= 'z');
  }
};
inline constexpr AlphaTable kAlpha{};

// End of the run of ASCII letters [A-Za-z] starting at j.
inline size_t ascii_alpha_run(const uint8_t* s, size_t n, size_t j) {
#if defined(__SSE2__)
  // (b | 0x20) maps A-Z onto a-z and nothing else into a-z; adding 128 - 'a' moves a-z to the
  // bottom of the signed range, so one signed compare tests the 52 letters.
  const __m128i lower = _mm_set1_epi8(0x20), shift = _mm_set1_epi8((char)(128 - 'a')),
                limit = _mm_set1_epi8((char)(-128 + 26));
  while (j + 16 <= n) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + j));
    const __m128i x = _mm_add_epi8(_mm_or_si128(v, lower), shift);
    const unsigned m = (unsigned)_mm_movemask_epi8(_mm_cmplt_epi8(x, limit));
    if (m != 0xFFFFu) return j + (size_t)__builtin_ctz(~m);
    j += 16;
  }
#endif
  while (j < n && kAlpha.c[s[j]]) ++j;
  return j;
}

// End of \p{L}++ from j: the ASCII run, then the general scanner if a non-ASCII byte follows.
inline size_t letters_from(const uint8_t* s, size_t n, size_t j) {
  j = ascii_alpha_run(s, n, j);
  if (j < n && s[j] >= 0x80) j = run_set(s, n, j, kLetter);
  return j;
}

// The whitespace alternatives shared by the three patterns; s[i] starts a WS character.
// dollar_first: gpt2/cl100k try `\s++$` before the newline rule; nl_rule: 0 none (gpt2),
// 1 cl100k/o200k `\s*[\r\n]` (ends after the last newline of the run).
inline size_t whitespace(const uint8_t* s, size_t n, size_t i, bool dollar_first, bool nl_rule) {
  size_t e = i, last_start = i, last_nl = SIZE_MAX;
  while (e < n) {
    const uint8_t b = s[e];
    if (b < 0x80) {
      if (kAscii.c[b] != WS) break;
      if (is_nl(b)) last_nl = e;
      last_start = e;
      ++e;
      continue;
    }
    int l;
    if (class_at(s, e, n, &l) != WS) break;
    last_start = e;
    e += (size_t)l;
  }
  if (dollar_first && e == n) return n;              // \s++$
  if (nl_rule && last_nl != SIZE_MAX) return last_nl + 1;  // \s*[\r\n]  /  \s*[\r\n]+
  if (e == n) return n;                              // \s+(?!\S) at the end
  if (last_start > i) return last_start;             // \s+(?!\S): give back one character
  return e;                                          // \s / \s+ : one character
}

// Length of a case-insensitive contraction after an apostrophe at s[i] ('s 't 'm 'd 're 've 'll,
// restricted by `which`), or 0. which: 0 = gpt2 set (case-sensitive), 1 = (?i) set.
inline size_t contraction(const uint8_t* s, size_t n, size_t i, bool fold) {
  if (i + 1 >= n) return 0;
  uint8_t a = s[i + 1];
  if (fold) {
    if (a == 0xC5 && i + 2 < n && s[i + 2] == 0xBF) return 3;  // 'ſ folds to 's
    if (a >= 'A' && a <= 'Z') a = (uint8_t)(a + 32);
  }
  if (a == 's' || a == 'd' || a == 'm' || a == 't') return 2;
  if (i + 2 >= n) return 0;
  uint8_t b = s[i + 2];
  if (fold && b >= 'A' && b <= 'Z') b = (uint8_t)(b + 32);
  if ((a == 'l' && b == 'l') || (a == 'v' && b == 'e') || (a == 'r' && b == 'e')) return 3;
  return 0;
}

// o200k: [U]* [W]+ from p (U = upperish, W = lowerish); returns the end or SIZE_MAX.
// Greedy U* takes the maximal U run [p, a); W+ then needs a W at a. If there is none, U* gives
// back characters one at a time: the first W found going backwards (a Lm/Lo/M, which is in both
// sets) at k ends the match at k + 1, since everything after it in the run is Lu/Lt, not W.
inline size_t o200k_upper_lower(const uint8_t* s, size_t n, size_t p) {
  if (p >= n) return SIZE_MAX;
  const size_t a = run_set(s, n, p, kUpperish);
  const size_t b = run_set(s, n, a, kLowerish);
  if (b > a) return b;
  // Backward search over [p, a): step back over UTF-8 characters.
  size_t k = a;
  while (k > p) {
    size_t q = k - 1;
    while (q > p && (s[q] & 0xC0) == 0x80) --q;
    int l;
    if (in(kLowerish, class_at(s, q, n, &l))) return q + (size_t)l;
    k = q;
  }
  return SIZE_MAX;
}

// o200k: [U]+ [W]* from p.
inline size_t o200k_upper_plus(const uint8_t* s, size_t n, size_t p) {
  if (p >= n) return SIZE_MAX;
  const size_t a = run_set(s, n, p, kUpperish);
  if (a == p) return SIZE_MAX;
  return run_set(s, n, a, kLowerish);
}

// \p{N} after the first digit (which ends at j), up to two more: `\p{N}{1,3}` (cl100k, o200k).
inline size_t digits_1_3(const uint8_t* s, size_t n, size_t j) {
  for (int k = 0; k < 2 && j < n; ++k) {
    int l;
    if (class_at(s, j, n, &l) != NUM) break;
    j += (size_t)l;
  }
  return j;
}

// ` ?[^\s\p{L}\p{N}]+` then trailing newlines (cl100k: `[\r\n]*`; o200k, slash = true:
// `[\r\n/]*`), at i whose first class is c0; SIZE_MAX if no such run starts there.
inline size_t space_other_run(const uint8_t* s, size_t n, size_t i, uint8_t c0, bool slash) {
  size_t j = SIZE_MAX;
  if (in(kOther, c0)) j = i;
  else if (s[i] == ' ' && i + 1 < n) {
    int l1;
    if (in(kOther, class_at(s, i + 1, n, &l1))) j = i + 1;
  }
  if (j == SIZE_MAX) return SIZE_MAX;
  size_t e = run_set(s, n, j, kOther);
  while (e < n && (is_nl(s[e]) || (slash && s[e] == '/'))) ++e;
  return e;
}

}  // namespace detail

__attribute__((always_inline)) inline size_t next_piece_gpt2(const uint8_t* s, size_t n, size_t i) {
  using namespace detail;
  const uint8_t b = s[i];
  if (b == '\'') {
    const size_t k = contraction(s, n, i, false);
    if (k) return i + k;
  }
  // ASCII fast path for ` ?\p{L}++` (a letter, or a space then a letter)
  if (kAlpha.c[b]) return letters_from(s, n, i + 1);
  if (b == ' ' && i + 1 < n && kAlpha.c[s[i + 1]]) return letters_from(s, n, i + 2);
  int l0;
  const uint8_t c0 = class_at(s, i, n, &l0);
  size_t j = i;
  uint8_t c = c0;
  if (b == ' ' && i + 1 < n) {  // ` ?` before a letter, digit or other run
    int l1;
    const uint8_t c1 = class_at(s, i + 1, n, &l1);
    if (c1 != WS) { j = i + 1; c = c1; }
  }
  if (in(kLetter, c)) return run_set(s, n, j, kLetter);
  if (c == NUM) return run_set(s, n, j, 1u << NUM);
  if (in(kOther, c)) return run_set(s, n, j, kOther);
  return whitespace(s, n, i, true, false);
}

__attribute__((always_inline)) inline size_t next_piece_cl100k(const uint8_t* s, size_t n, size_t i) {
  using namespace detail;
  const uint8_t b = s[i];
  if (b == '\'') {
    const size_t k = contraction(s, n, i, true);
    if (k) return i + k;
  }
  // ASCII fast path for [^\r\n\p{L}\p{N}]?+\p{L}++: a letter, or an ASCII character that is
  // not a letter, digit, \r or \n followed by a letter.
  if (kAlpha.c[b]) return letters_from(s, n, i + 1);
  if (b < 0x80 && i + 1 < n && kAlpha.c[s[i + 1]] && kAscii.c[b] != NUM && !is_nl(b)) return letters_from(s, n, i + 2);
  int l0;
  const uint8_t c0 = class_at(s, i, n, &l0);
  // [^\r\n\p{L}\p{N}]?+\p{L}++
  if (in(kLetter, c0)) return run_set(s, n, i + (size_t)l0, kLetter);
  if (c0 != NUM && !is_nl(b) && i + (size_t)l0 < n) {
    int l1;
    if (in(kLetter, class_at(s, i + (size_t)l0, n, &l1))) return run_set(s, n, i + (size_t)l0 + (size_t)l1, kLetter);
  }
  // \p{N}{1,3}+
  if (c0 == NUM) return digits_1_3(s, n, i + (size_t)l0);
  //  ?[^\s\p{L}\p{N}]++[\r\n]*+
  const size_t e = space_other_run(s, n, i, c0, false);
  if (e != SIZE_MAX) return e;
  return whitespace(s, n, i, true, true);
}

__attribute__((always_inline)) inline size_t next_piece_o200k(const uint8_t* s, size_t n, size_t i) {
  using namespace detail;
  const uint8_t b = s[i];
  int l0;
  const uint8_t c0 = class_at(s, i, n, &l0);
  // [^\r\n\p{L}\p{N}]? is "P": anything but \r, \n, letters and digits (marks and spaces included).
  const bool p = !in(kLetter, c0) && c0 != NUM && !is_nl(b);
  size_t r = SIZE_MAX;
  if (in(kUpperish | kLowerish, c0) || p) {
    if (p) r = o200k_upper_lower(s, n, i + (size_t)l0);
    if (r == SIZE_MAX) r = o200k_upper_lower(s, n, i);
    if (r == SIZE_MAX && p) r = o200k_upper_plus(s, n, i + (size_t)l0);
    if (r == SIZE_MAX) r = o200k_upper_plus(s, n, i);
    if (r != SIZE_MAX) {
      if (r < n && s[r] == '\'') {
        // (?i:'s|'t|'re|'ve|'m|'ll|'d)? : the same set as cl100k's, with case folding.
        const size_t k = contraction(s, n, r, true);
        if (k) return r + k;
      }
      return r;
    }
  }
  // \p{N}{1,3}
  if (c0 == NUM) return digits_1_3(s, n, i + (size_t)l0);
  //  ?[^\s\p{L}\p{N}]+[\r\n/]*
  const size_t e = space_other_run(s, n, i, c0, true);
  if (e != SIZE_MAX) return e;
  return whitespace(s, n, i, false, true);
}

// (The next_piece_* scanners are forced inline: inlined into the encode loop they measured 5-8%
// faster than as calls.)
inline size_t next_piece(Pattern p, const uint8_t* s, size_t n, size_t i) {
  switch (p) {
    case Pattern::gpt2: return next_piece_gpt2(s, n, i);
    case Pattern::cl100k: return next_piece_cl100k(s, n, i);
    default: return next_piece_o200k(s, n, i);
  }
}

// Calls f(begin, end) for every piece of s[0, n), in order.
template <Pattern P, class F>
inline void for_each_piece(const uint8_t* s, size_t n, F&& f) {
  size_t i = 0;
  while (i < n) {
    size_t e;
    if constexpr (P == Pattern::gpt2) e = next_piece_gpt2(s, n, i);
    else if constexpr (P == Pattern::cl100k) e = next_piece_cl100k(s, n, i);
    else e = next_piece_o200k(s, n, i);
    f(i, e);
    i = e;
  }
}

template <class F>
inline void for_each_piece(Pattern p, const uint8_t* s, size_t n, F&& f) {
  switch (p) {
    case Pattern::gpt2: for_each_piece<Pattern::gpt2>(s, n, f); break;
    case Pattern::cl100k: for_each_piece<Pattern::cl100k>(s, n, f); break;
    default: for_each_piece<Pattern::o200k>(s, n, f); break;
  }
}

}  // namespace hf::tok

/*
 * pretokenize.cpp: names and regex strings of the named patterns (the scanners are inline in
 * pretokenize.h so the encode loop can inline them).
 */
#include "tokenizer/pretokenize.h"

#include <cstring>

#include "runtime/errors.h"

namespace hf::tok {

const char* pattern_regex(Pattern p) {
  switch (p) {
    case Pattern::gpt2:
      return R"('(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s)";
    case Pattern::cl100k:
      return R"('(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s)";
    case Pattern::o200k:
      return R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
    default:
      return "";
  }
}

const char* pattern_name(Pattern p) {
  switch (p) {
    case Pattern::gpt2: return "gpt2";
    case Pattern::cl100k: return "cl100k";
    case Pattern::o200k: return "o200k";
    default: return "custom";
  }
}

size_t safe_split_point(const uint8_t* s, size_t n, size_t from) {
  // (The newline rule alone had to scan past whole indented blocks of code: 5.6 ms for a 56 MB
  // batch of Python sources, and parts of up to 100 KB; the letter-space rule keeps scans short.)
  for (size_t p = from < 1 ? 1 : from; p < n; ++p)
    if (is_safe_split(s, n, p)) return p;
  return n;
}

size_t last_safe_split_point(const uint8_t* s, size_t n, size_t from) {
  for (size_t p = n; p-- > from && p > 0;)
    if (is_safe_split(s, n, p)) return p;
  return n;
}

Pattern pattern_from_name(const std::string& name) {
  if (name == "gpt2" || name == "r50k") return Pattern::gpt2;
  if (name == "cl100k") return Pattern::cl100k;
  if (name == "o200k") return Pattern::o200k;
  for (Pattern p : {Pattern::gpt2, Pattern::cl100k, Pattern::o200k})
    if (name == pattern_regex(p)) return p;
  HF_THROW(ValueError, "unknown pre-tokenizer pattern name " << name << " (expected gpt2, cl100k or o200k)");
}

}  // namespace hf::tok

/*
 * test_tokenizer.cpp: C++ unit tests of the tokenizer core, run under ASan+UBSan by scripts/test.sh.
 * References are written here: a naive O(n^2) "lowest rank, leftmost" merge loop over byte
 * strings (tiktoken's definition) and plain expectations; the exactness tests against tiktoken
 * and HF tokenizers live in tests/test_tokenizer*.py. Here the point is memory safety on hostile
 * input (invalid UTF-8, truncated sequences, huge runs) and the two merge paths agreeing.
 */
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "runtime/errors.h"
#include "runtime/parallel.h"
#include "tokenizer/bpe.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/train.h"

#include "expect.h"  // EXPECT(cond)

using namespace hf::tok;

// Naive reference: repeatedly merge the adjacent pair whose concatenation has the lowest rank.
static std::vector<uint32_t> naive_merge(const std::map<std::string, uint32_t>& ranks, const std::string& s) {
  std::vector<std::string> parts;
  for (char c : s) parts.emplace_back(1, c);
  for (;;) {
    uint32_t best = UINT32_MAX;
    size_t at = 0;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      auto it = ranks.find(parts[i] + parts[i + 1]);
      if (it != ranks.end() && it->second < best) { best = it->second; at = i; }
    }
    if (best == UINT32_MAX) break;
    parts[at] += parts[at + 1];
    parts.erase(parts.begin() + (ptrdiff_t)at + 1);
  }
  std::vector<uint32_t> out;
  for (auto& p : parts) out.push_back(ranks.at(p));
  return out;
}

static std::vector<std::pair<std::string, uint32_t>> small_vocab(std::map<std::string, uint32_t>* as_map) {
  std::vector<std::pair<std::string, uint32_t>> r;
  for (int b = 0; b < 256; ++b) r.emplace_back(std::string(1, (char)b), (uint32_t)b);
  const char* extra[] = {"aa", "ab", "aaa", "aaaa", "ba", "bab", "abab", "^^", "^^^^", "  ", "    ", "the", "th",
                         "he", "aab", "bb", "bbb", "abb"};
  uint32_t next = 256;
  for (const char* e : extra) r.emplace_back(e, next++);
  for (auto& [k, v] : r) (*as_map)[k] = v;
  return r;
}

static void test_merge_paths_match_naive() {
  std::map<std::string, uint32_t> m;
  Bpe bpe(small_vocab(&m), Pattern::o200k, {});
  std::mt19937 rng(5);
  for (int it = 0; it < 300; ++it) {
    const size_t n = 1 + rng() % (it < 150 ? 100 : 700);  // both the array and the bucket path
    std::string s;
    for (size_t i = 0; i < n; ++i) s += "ab^ "[rng() % (it % 2 ? 2 : 4)];
    std::vector<uint32_t> got;
    bpe.merge_below((const uint8_t*)s.data(), s.size(), UINT32_MAX, got);
    EXPECT(got == naive_merge(m, s));
  }
}

static void test_scanners_survive_invalid_utf8() {
  std::mt19937 rng(9);
  for (int it = 0; it < 2000; ++it) {
    std::string s;
    const size_t n = rng() % 40;
    for (size_t i = 0; i < n; ++i) {
      const uint32_t r = rng() % 10;
      if (r < 3) s += (char)(0x80 + rng() % 0x80);          // stray continuation / lead bytes
      else if (r < 5) s += "\xe4\xb8\xad\xcc\x81"[rng() % 5];  // pieces of multi-byte chars
      else s += " \n\r\t'aZ1^"[rng() % 10];
    }
    for (Pattern p : {Pattern::gpt2, Pattern::cl100k, Pattern::o200k}) {
      size_t covered = 0;
      for_each_piece(p, (const uint8_t*)s.data(), s.size(), [&](size_t b, size_t e) {
        EXPECT(b == covered && e > b && e <= s.size());
        covered = e;
      });
      EXPECT(covered == s.size());
    }
  }
}

static void test_safe_split_points_keep_the_pieces() {
  // Every cut safe_split_point offers must leave the pre-tokenizer pieces of the whole unchanged:
  // the pieces of s equal those of s[0, p) followed by those of s[p, n) shifted by p.
  std::mt19937 rng(11);
  const char* frags[] = {"a", "Z", " ", "  ", "\t", "\n", "\r\n", "'s", "'", "7", ".", "\xc3\xa9", "\xcc\x81", "\xe4\xb8\xad", "\xc2\xa0", "/", "\r", "x\n/", ",\n7"};
  auto pieces = [](Pattern p, const std::string& t, size_t shift) {
    std::vector<std::pair<size_t, size_t>> out;
    for_each_piece(p, (const uint8_t*)t.data(), t.size(), [&](size_t b, size_t e) { out.emplace_back(b + shift, e + shift); });
    return out;
  };
  size_t cuts = 0;
  for (int it = 0; it < 300; ++it) {
    std::string s;
    for (int i = 0, n = 5 + (int)(rng() % 60); i < n; ++i) s += frags[rng() % (sizeof frags / sizeof *frags)];
    const auto* u = (const uint8_t*)s.data();
    for (size_t from = 0; from < s.size(); ++from) {
      const size_t p = hf::tok::safe_split_point(u, s.size(), from);
      EXPECT(p >= from && p <= s.size());
      // last_safe_split_point over [from, n) is the largest p with is_safe_split (or n).
      size_t last = s.size();
      for (size_t q = from; q < s.size(); ++q)
        if (hf::tok::is_safe_split(u, s.size(), q)) last = q;
      EXPECT(hf::tok::last_safe_split_point(u, s.size(), from) == last);
      if (p == s.size()) continue;
      ++cuts;
      for (Pattern pat : {Pattern::gpt2, Pattern::cl100k, Pattern::o200k}) {
        auto joined = pieces(pat, s.substr(0, p), 0);
        auto tail = pieces(pat, s.substr(p), p);
        joined.insert(joined.end(), tail.begin(), tail.end());
        EXPECT(joined == pieces(pat, s, 0));
      }
    }
  }
  EXPECT(cuts > 1000);
}

static void test_encode_decode_and_errors() {
  std::map<std::string, uint32_t> m;
  Bpe bpe(small_vocab(&m), Pattern::cl100k, {{"<|endoftext|>", 1000}});
  const std::string text = "the abab   aaaa<|endoftext|>\xff\xfe bad bytes ^^^^^^^^";
  std::vector<uint32_t> ids;
  bpe.encode((const uint8_t*)text.data(), text.size(), {1}, ids);
  std::string back;
  bpe.decode(ids.data(), ids.size(), back);
  EXPECT(back == text);
  EXPECT(ids.size() > 5);
  bool threw = false;
  try {
    const uint32_t bad = 999;
    bpe.decode(&bad, 1, back);
  } catch (const hf::ValueError&) { threw = true; }
  EXPECT(threw);
  threw = false;
  try {
    std::vector<std::pair<std::string, uint32_t>> r = {{"a", 0}};
    Bpe no_bytes(r, Pattern::gpt2, {});
  } catch (const hf::ValueError&) { threw = true; }
  EXPECT(threw);
  // huge unsplittable run
  const std::string run(200000, '^');
  ids.clear();
  bpe.encode_ordinary((const uint8_t*)run.data(), run.size(), ids);
  EXPECT(ids.size() == 50000);
}

static void test_trainer_deterministic() {
  std::vector<std::string> docs = {"the cat sat on the mat\n", "the bat ate the hat\n", "aaaa aaaa aaaa\n"};
  std::vector<std::string_view> views(docs.begin(), docs.end());
  std::vector<std::vector<Trainer::Merge>> runs;
  for (int threads : {1, 2}) {
    hf::set_num_threads(threads);
    Trainer t(Pattern::gpt2, {});
    t.feed(views);
    t.start(30, 1);
    while (t.step(7)) {}
    runs.push_back(t.merges());
  }
  EXPECT(runs[0].size() == runs[1].size() && !runs[0].empty());
  for (size_t i = 0; i < runs[0].size(); ++i) EXPECT(runs[0][i].a == runs[1][i].a && runs[0][i].b == runs[1][i].b);
}

int main() {
  test_merge_paths_match_naive();
  test_scanners_survive_invalid_utf8();
  test_safe_split_points_keep_the_pieces();
  test_encode_decode_and_errors();
  test_trainer_deterministic();
  std::puts("test_tokenizer: all passed");
  return 0;
}

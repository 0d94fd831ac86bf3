/*
 * train.h: byte-level BPE training (the tiktoken rank convention: bytes 0..255 are ranks
 * 0..255, the i-th new merged token gets rank 256 + i).
 *
 * Phase 1, counting (feed): documents are cut into ~1 MiB segments at points where no
 * pre-token can straddle (see safe_cut), pre-tokenized in parallel on the shared oneTBB arena
 * into per-thread BytesMap<int64> counters, then summed into one map. Memory is bounded by the
 * distinct pre-tokens, never by the corpus: callers stream documents in batches.
 * Phase 2, merging (start + step): the distinct pre-tokens become words (symbol sequences, one
 * flat array); pair counts are exact int64, each pair keeps a list of words that may contain it
 * (stale entries are re-checked). A max-heap holds (count, pair) with lazy invalidation: a
 * popped entry whose count is out of date is re-pushed with the current count. Merging a pair
 * rewrites only the words on its list (in parallel chunks when the list is long), producing
 * count deltas that are applied in a fixed order.
 *
 * Determinism and tie-breaking: counts are sums (independent of thread count and order), and
 * the heap order is total: higher count first; on equal counts the pair (left, right) that is
 * smaller under the key  key(byte b) = position of b in HF's byte-level alphabet (GPT-2's
 * bytes_to_unicode characters sorted by code point: the 188 printable bytes first),
 * key(merged token) = its rank. This is the rule of Hugging Face's BpeTrainer (higher count,
 * then smaller pair of ids), so the merges agree with it whenever its ids order pairs the same
 * way. Stops at the requested number of merges or when the best count < min_frequency.
 * A merge whose bytes already exist as a token (two different pairs spelling the same bytes)
 * reuses that token's rank and adds no new rank.
 */
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/hashmaps.h"
#include "tokenizer/pretokenize.h"

namespace hf::tok {

class Trainer {
 public:
  // specials: texts cut out of training documents (never counted as ordinary text).
  Trainer(Pattern pattern, std::vector<std::string> specials);
  ~Trainer();

  // Counts the pre-tokens of each document (named patterns; parallel).
  void feed(const std::vector<std::string_view>& docs);
  // Counts pieces already split by a custom regex (serial).
  void feed_pieces(const std::vector<std::string_view>& pieces);
  size_t distinct_pieces() const;
  uint64_t total_pieces() const { return total_pieces_; }
  uint64_t total_bytes() const { return total_bytes_; }
  size_t memory_bytes() const;

  // Ends counting and prepares merging; at most n_merges merges will be made.
  void start(size_t n_merges, int64_t min_frequency);
  // Makes up to k more merges; returns how many were made (0 when training is finished).
  size_t step(size_t k);
  size_t merges_done() const { return merges_.size(); }
  bool finished() const { return finished_; }

  // The vocabulary: (bytes, rank) for bytes 0..255 and every new token, in rank order.
  std::vector<std::pair<std::string, uint32_t>> ranks() const;
  // The merges made, as (left rank, right rank, result rank).
  struct Merge { uint32_t a, b, c; int64_t count; };
  const std::vector<Merge>& merges() const { return merges_; }

  // A cut point in s[0, n) at or after `target` where pre-tokenization of the two halves equals
  // that of the whole (hf::tok::safe_split_point), or n. With none within 4 segments of the
  // target it cuts there anyway (at a UTF-8 character boundary): a text with no safe point
  // would otherwise be counted by one thread; the cut may split one pre-token in two, which
  // changes the counts by at most one piece per 4 MiB.
  static size_t safe_cut(const uint8_t* s, size_t n, size_t target);

 private:
  struct State;
  void count_segment(const uint8_t* s, size_t n, CountTable& into) const;
  Pattern pattern_;
  std::vector<std::string> specials_;
  CountTable counts_;
  uint64_t total_pieces_ = 0, total_bytes_ = 0;
  std::vector<Merge> merges_;
  std::unique_ptr<State> st_;
  bool started_ = false, finished_ = false;
};

}  // namespace hf::tok

/*
 * bpe.h: byte-level BPE encoding and decoding with tiktoken's exact semantics.
 *
 * A vocabulary is tiktoken's "mergeable ranks": byte string -> rank, where the rank is also the
 * token id; all 256 single bytes must be present. Special tokens are extra (string, id) pairs.
 * Encoding a text:
 *   1. split it into pieces with a named pre-tokenizer (pretokenize.h), or take pieces that the
 *      Python layer split with a custom regex;
 *   2. a piece that is itself a vocabulary entry is one token (one hash probe: most words);
 *   3. otherwise merge: start from single bytes and repeatedly merge the adjacent pair whose
 *      concatenation has the lowest rank, the leftmost one on ties, until no adjacent pair
 *      concatenates to a vocabulary entry. This is tiktoken's byte_pair_merge. Pair ranks come
 *      from a PairMap (left id, right id) -> rank of the concatenation, built once from every
 *      split point of every token, so a merge step never hashes bytes.
 *      Pieces up to 128 bytes use an array scan (O(m^2), m small); longer pieces use rank
 *      buckets over a linked list (see merge_long), near-linear, so "a" * 1e5 and "^" * 1e6
 *      take milliseconds where tiktoken is quadratic.
 *   4. pieces that needed merging are remembered per thread, since the same word recurs
 *      throughout a text: an open-addressing table of 64-byte lines (piece up to 24 bytes, up to
 *      9 tokens, all inline: one cache line per hit, prefetched by the encode loop), backed by a
 *      hash map for pieces up to 64 bytes that do not fit a line (details in bpe.cpp).
 * The encode loop scans 64 pieces ahead of their lookups so that the table misses overlap.
 * Output goes through a raw pointer into a buffer of at least n (+ slack) ids (a token covers at
 * least one byte, so n bytes give at most n tokens): no capacity checks or vector growth per token.
 */
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tokenizer/hashmaps.h"
#include "tokenizer/pretokenize.h"

namespace hf::tok {

constexpr uint32_t kMaxTokenId = (1u << 26) - 1;  // dense decode tables: ids are kept below 2^26

struct PieceCache;  // per-thread cache of merged pieces (bpe.cpp)

// The *_into encoders write whole cache lines of ids past the last token, so their output buffer
// needs room for n + kEncodeSlack ids (n = text bytes >= the number of tokens).
constexpr size_t kEncodeSlack = 16;

class Bpe {
 public:
  // ranks: (token bytes, rank). specials: (token text as UTF-8, id). Throws hf::ValueError on an
  // invalid vocabulary (duplicate ranks or bytes, missing single bytes, id collisions, ...).
  Bpe(std::vector<std::pair<std::string, uint32_t>> ranks, Pattern pattern,
      std::vector<std::pair<std::string, uint32_t>> specials);

  Pattern pattern() const { return pattern_; }
  uint32_t n_vocab() const { return n_vocab_; }  // max id + 1
  size_t n_ranks() const { return encoder_.size(); }
  size_t n_specials() const { return special_text_.size(); }
  const std::string& special_text(size_t i) const { return special_text_[i]; }
  uint32_t special_id(size_t i) const { return special_id_[i]; }
  // The (bytes, rank) pairs in rank order.
  std::vector<std::pair<std::string, uint32_t>> ranks() const;

  // Tokens of text s[0, n) by the named pattern, no special-token handling, appended to out.
  void encode_ordinary(const uint8_t* s, size_t n, std::vector<uint32_t>& out) const;
  // The same into out, which must have room for n + kEncodeSlack ids; returns the number of tokens.
  size_t encode_ordinary_into(const uint8_t* s, size_t n, uint32_t* out) const;
  // encode() into out (room for n + kEncodeSlack ids: a special token's text is at least one byte).
  size_t encode_into(const uint8_t* s, size_t n, const std::vector<uint8_t>& allowed, uint32_t* out) const;
  size_t count_ordinary(const uint8_t* s, size_t n) const;
  // Tokens of one pre-token piece (the custom-regex path), appended to out.
  void encode_piece(const uint8_t* p, size_t n, std::vector<uint32_t>& out) const;
  // Tokens of s with the special tokens whose allowed[i] != 0 encoded as their ids (the other
  // special texts are ordinary text). Each span between specials is pre-tokenized on its own,
  // as tiktoken does, so `$` in the patterns means the end of that span.
  void encode(const uint8_t* s, size_t n, const std::vector<uint8_t>& allowed, std::vector<uint32_t>& out) const;
  // The first special token (index into specials, or -1) whose mask[i] != 0 that occurs in
  // s[from, n); at one start position the longest wins. *pos gets its byte offset.
  int find_special(const uint8_t* s, size_t n, size_t from, const std::vector<uint8_t>& mask, size_t* pos) const;

  // Concatenated bytes of the tokens; throws hf::ValueError naming the first id out of range.
  void decode(const uint32_t* ids, size_t n, std::string& out) const;
  bool valid_id(uint32_t id) const { return id < n_vocab_ && dec_len_[id] != kNoToken; }
  std::string_view token_bytes(uint32_t id) const;  // throws on an invalid id
  // Rank of a byte string, or -1.
  int64_t rank_of(std::string_view bytes) const;

  // The whole-vocabulary merge used by encode_piece, exposed for training/tests: merges bytes
  // using only ranks < max_rank (tiktoken's way of recovering the merge that made a token).
  void merge_below(const uint8_t* p, size_t n, uint32_t max_rank, std::vector<uint32_t>& out) const;

 private:
  static constexpr uint32_t kNoToken = 0xFFFFFFFFu;
  template <Pattern P, class Sink>
  void encode_span(const uint8_t* s, size_t n, Sink& sink) const;
  template <class Sink>
  void encode_span_any(const uint8_t* s, size_t n, Sink& sink) const;
  template <class Sink>
  void piece_tokens(const uint8_t* p, size_t n, Sink& sink) const;
  // A piece of n >= 2 bytes that is not a vocabulary entry (h = hash_bytes(p, n)): cache or merge.
  // The sink (a pointer or a count) goes in and out by value so the caller keeps it in a register.
  template <class Sink>
  Sink piece_merge(const uint8_t* p, size_t n, uint64_t h, PieceCache& cache, Sink sink) const;
  void merge_small(const uint8_t* p, size_t n, uint32_t max_rank, uint32_t* toks, size_t* m) const;
  void merge_long(const uint8_t* p, size_t n, uint32_t max_rank, std::vector<uint32_t>& out) const;

  Pattern pattern_;
  uint32_t owner_;  // unique per instance: tags this vocabulary's entries in the thread caches
  uint32_t n_vocab_ = 0;
  uint32_t byte_rank_[256];
  BytesMap<uint32_t> encoder_;  // build-time map (and iteration); lookups go through vocab_
  VocabTable vocab_;
  PairMap pairs_;
  std::string dec_arena_;
  std::vector<uint32_t> dec_off_, dec_len_;
  std::vector<std::string> special_text_;
  std::vector<uint32_t> special_id_;
  bool special_first_byte_[256] = {};
};

}  // namespace hf::tok

/*
 * bpe.cpp: vocabulary construction, the merge loops, the encode driver with its per-thread piece
 * cache, special-token search and decoding. See bpe.h for the algorithm and why.
 */
#include "tokenizer/bpe.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>
#include <memory>
#include <iterator>
#include <queue>

#include "runtime/errors.h"

namespace hf::tok {

namespace {

std::atomic<uint32_t> g_next_owner{1};

// Sinks: RawSink writes through a pointer into a buffer sized for the worst case (one token per
// byte), so the hot loop has no capacity checks; CountSink only counts.
struct RawSink {
  uint32_t* p;
  inline void push(uint32_t t) { *p++ = t; }
  inline void append(const uint32_t* t, size_t k) {
    std::memcpy(p, t, k * sizeof(uint32_t));
    p += k;
  }
  // k <= K ids from a source with K readable ids: a fixed-size copy (no memcpy call); writes up
  // to K ids, which the output buffer's slack allows.
  template <size_t K>
  inline void append_fixed(const uint32_t* t, size_t k) {
    std::memcpy(p, t, K * sizeof(uint32_t));
    p += k;
  }
};
struct CountSink {
  size_t n = 0;
  void push(uint32_t) { ++n; }
  void append(const uint32_t*, size_t k) { n += k; }
  template <size_t K>
  void append_fixed(const uint32_t*, size_t k) { n += k; }
};

}  // namespace

// Per-thread cache of piece -> tokens for pieces that needed merging (identifiers and rare words
// recur throughout a text). Level 1: an open-addressing table (linear probing, load <= 1/2) of
// kLines 64-byte lines holding the piece bytes (<= 24) and its tokens (<= 9) inline, so a hit
// costs one cache line, prefetched by the encode loop along with the vocabulary slot (a hash
// map with a slot, a key and a token list cost three misses). Level 2: a BytesMap (value (offset
// into toks) << 8 | count) for the pieces up to kCacheMaxLen bytes that do not fit a line, and
// for all new pieces once the lines are half full; when it grows past kCacheEntries it is
// emptied, and so are the lines if they are full (the text has moved on to other words). A line
// is live when its gen equals the cache's: emptying the lines (then, or when another vocabulary
// uses the thread) bumps gen instead of clearing 4 MiB; the table is calloc'ed, so a thread only
// touches the pages it uses.
constexpr size_t kLineKey = 24, kLineToks = 9, kLines = 65536;
constexpr size_t kCacheMaxLen = 64;
constexpr size_t kCacheEntries = 1 << 16;
struct alignas(64) CacheLine {
  uint8_t key[kLineKey];
  uint8_t len;   // 0 = empty
  uint8_t ntok;
  uint16_t gen;  // live iff == PieceCache::gen
  uint32_t toks[kLineToks];
};
static_assert(sizeof(CacheLine) == 64, "one cache line per entry");
struct PieceCache {
  uint32_t owner = 0;
  uint16_t gen = 1;
  size_t live = 0;  // lines of this gen
  struct Free {
    void operator()(CacheLine* p) const { std::free(p); }
  };
  std::unique_ptr<CacheLine[], Free> lines;
  BytesMap<uint64_t> map;
  std::vector<uint32_t> toks;
  void empty_lines() {
    live = 0;
    if (++gen == 0) {  // wrapped: lines of an old gen could look live
      std::memset(static_cast<void*>(lines.get()), 0, kLines * sizeof(CacheLine));
      gen = 1;
    }
  }
};

namespace {

// Home line of a piece with hash h (bits apart from the vocabulary table's index bits).
inline size_t line_index(uint64_t h) { return (h >> 40) & (kLines - 1); }

PieceCache& thread_cache(uint32_t owner) {
  thread_local PieceCache cache;
  if (__builtin_expect(!cache.lines, 0)) {  // zeroed: len 0, gen 0
    cache.lines.reset(static_cast<CacheLine*>(std::calloc(kLines, sizeof(CacheLine))));
    if (!cache.lines) throw std::bad_alloc();
  }
  if (cache.owner != owner) {
    cache.map.clear();
    cache.toks.clear();
    cache.empty_lines();
    cache.owner = owner;
  }
  return cache;
}

}  // namespace

Bpe::Bpe(std::vector<std::pair<std::string, uint32_t>> ranks, Pattern pattern,
         std::vector<std::pair<std::string, uint32_t>> specials)
    : pattern_(pattern), owner_(g_next_owner.fetch_add(1)) {
  HF_CHECK(!ranks.empty(), ValueError, "mergeable_ranks is empty");
  uint32_t max_id = 0;
  for (auto& [b, r] : ranks) {
    HF_CHECK(!b.empty(), ValueError, "mergeable_ranks has an empty token (rank " << r << ")");
    HF_CHECK(r <= kMaxTokenId, ValueError, "rank " << r << " is too large (ids must be < " << (kMaxTokenId + 1) << ")");
    max_id = std::max(max_id, r);
  }
  for (auto& [t, id] : specials) {
    HF_CHECK(!t.empty(), ValueError, "special token text must not be empty (id " << id << ")");
    HF_CHECK(id <= kMaxTokenId, ValueError, "special token id " << id << " is too large (ids must be < " << (kMaxTokenId + 1) << ")");
    max_id = std::max(max_id, id);
  }
  n_vocab_ = max_id + 1;
  dec_off_.assign(n_vocab_, 0);
  dec_len_.assign(n_vocab_, kNoToken);
  encoder_.reserve(ranks.size());
  for (auto& [b, r] : ranks) {
    HF_CHECK(dec_len_[r] == kNoToken, ValueError, "rank " << r << " is used by two tokens");
    auto ins = encoder_.insert(b, r);
    HF_CHECK(ins.second, ValueError, "mergeable_ranks has the same bytes twice (ranks " << *ins.first << " and " << r << ")");
    dec_off_[r] = (uint32_t)dec_arena_.size();
    HF_CHECK(dec_arena_.size() + b.size() < 0xFFFFFFF0ull, ValueError, "vocabulary bytes exceed 4 GiB");
    dec_len_[r] = (uint32_t)b.size();
    dec_arena_ += b;
  }
  for (int c = 0; c < 256; ++c) {
    const uint8_t byte = (uint8_t)c;
    const uint32_t* r = encoder_.find(&byte, 1, hash_bytes(&byte, 1));
    HF_CHECK(r, ValueError, "mergeable_ranks lacks the single byte 0x" << std::hex << c
                                << " (byte-level BPE needs all 256 single bytes)");
    byte_rank_[c] = *r;
  }
  for (auto& [t, id] : specials) {
    HF_CHECK(dec_len_[id] == kNoToken, ValueError, "special token " << t << " has id " << id << ", which is already used");
    for (auto& s : special_text_) HF_CHECK(s != t, ValueError, "special token " << t << " is given twice");
    dec_off_[id] = (uint32_t)dec_arena_.size();
    dec_len_[id] = (uint32_t)t.size();
    dec_arena_ += t;
    special_text_.push_back(t);
    special_id_.push_back(id);
    special_first_byte_[(uint8_t)t[0]] = true;
  }
  vocab_.build(encoder_);
  // Every split point of every token: (prefix id, suffix id) -> token id.
  for (size_t idx = 0; idx < encoder_.size(); ++idx) {
    std::string_view k = encoder_.key(idx);
    const auto* p = (const uint8_t*)k.data();
    for (size_t s = 1; s < k.size(); ++s) {
      const uint32_t* a = encoder_.find(p, s, hash_bytes(p, s));
      if (!a) continue;
      const uint32_t* b = encoder_.find(p + s, k.size() - s, hash_bytes(p + s, k.size() - s));
      if (b) pairs_.set(*a, *b, encoder_.value(idx));
    }
  }
}

std::vector<std::pair<std::string, uint32_t>> Bpe::ranks() const {
  std::vector<std::pair<std::string, uint32_t>> out;
  out.reserve(encoder_.size());
  for (size_t i = 0; i < encoder_.size(); ++i) out.emplace_back(std::string(encoder_.key(i)), encoder_.value(i));
  std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.second < b.second; });
  return out;
}

int64_t Bpe::rank_of(std::string_view bytes) const {
  const uint32_t* r = encoder_.find(bytes);
  return r ? (int64_t)*r : -1;
}

std::string_view Bpe::token_bytes(uint32_t id) const {
  HF_CHECK(valid_id(id), ValueError, "token id " << id << " is not in the vocabulary (n_vocab " << n_vocab_ << ")");
  return {dec_arena_.data() + dec_off_[id], dec_len_[id]};
}

// ---- merging --------------------------------------------------------------------------------

// Array version: toks[0, m) are the current parts; rk[k] the rank of merging parts k and k+1.
void Bpe::merge_small(const uint8_t* p, size_t n, uint32_t max_rank, uint32_t* toks, size_t* m_out) const {
  uint32_t rk[128];
  size_t m = n;
  for (size_t k = 0; k < n; ++k) toks[k] = byte_rank_[p[k]];
  auto pr = [&](uint32_t a, uint32_t b) {
    const uint32_t r = pairs_.get(a, b);
    return r < max_rank ? r : PairMap::kNone;
  };
  for (size_t k = 0; k + 1 < m; ++k) rk[k] = pr(toks[k], toks[k + 1]);
  while (m > 1) {
    uint32_t best = PairMap::kNone;
    size_t at = 0;
    for (size_t k = 0; k + 1 < m; ++k)
      if (rk[k] < best) { best = rk[k]; at = k; }
    if (best == PairMap::kNone) break;
    toks[at] = best;
    // Remove part at+1 and pair rank at (the pair that was just merged).
    std::memmove(toks + at + 1, toks + at + 2, (m - at - 2) * sizeof(uint32_t));
    if (at + 1 < m - 1) std::memmove(rk + at, rk + at + 1, (m - at - 2) * sizeof(uint32_t));
    --m;
    if (at + 1 < m) rk[at] = pr(toks[at], toks[at + 1]);
    if (at > 0) rk[at - 1] = pr(toks[at - 1], toks[at]);
  }
  *m_out = m;
}

// Long pieces: rank buckets. Each distinct pair rank present has a bucket of positions; a
// min-heap holds the ranks that have buckets. Popping rank r processes its positions in
// increasing order (= tiktoken's "lowest rank, leftmost first"), skipping stale ones (cur[i]
// != r). A merge only creates pairs that span more bytes, hence ranks != r; if one has a rank
// below r, the rest of r's bucket is put back and the lower rank goes first, so the order of
// merges is exactly the array scan's. On real vocabularies this is near-linear with sequential
// memory access (1 MB of one repeated byte takes milliseconds); a binary heap over (rank,
// position) was 10-20x slower from cache misses.
void Bpe::merge_long(const uint8_t* p, size_t n, uint32_t max_rank, std::vector<uint32_t>& out) const {
  std::vector<uint32_t> tok(n), cur(n);
  std::vector<int32_t> next(n), prev(n);
  struct Bucket {
    uint32_t rank;
    bool queued = false;
    size_t start = 0;             // sorted[start..] still to process
    std::vector<uint32_t> sorted, added;
  };
  std::vector<Bucket> buckets;
  PairMap bucket_of;  // (rank, 0) -> bucket index
  std::priority_queue<uint32_t, std::vector<uint32_t>, std::greater<uint32_t>> ranks;
  auto pr = [&](uint32_t a, uint32_t b) {
    const uint32_t r = pairs_.get(a, b);
    return r < max_rank ? r : PairMap::kNone;
  };
  auto add = [&](uint32_t r, uint32_t pos) {
    uint32_t bi = bucket_of.get(r, 0);
    if (bi == PairMap::kNone) {
      bi = (uint32_t)buckets.size();
      bucket_of.set(r, 0, bi);
      buckets.emplace_back();
      buckets.back().rank = r;
    }
    Bucket& b = buckets[bi];
    b.added.push_back(pos);
    if (!b.queued) { b.queued = true; ranks.push(r); }
  };
  for (size_t k = 0; k < n; ++k) {
    tok[k] = byte_rank_[p[k]];
    next[k] = k + 1 < n ? (int32_t)(k + 1) : -1;
    prev[k] = (int32_t)k - 1;
  }
  for (size_t k = 0; k < n; ++k) {
    cur[k] = k + 1 < n ? pr(tok[k], tok[k + 1]) : PairMap::kNone;
    if (cur[k] != PairMap::kNone) add(cur[k], (uint32_t)k);
  }
  std::vector<uint32_t> merged;
  while (!ranks.empty()) {
    const uint32_t r = ranks.top();
    ranks.pop();
    const uint32_t bi = bucket_of.get(r, 0);
    buckets[bi].queued = false;
    {  // fold newly added positions into the sorted remainder
      Bucket& b = buckets[bi];
      if (!b.added.empty()) {
        if (!std::is_sorted(b.added.begin(), b.added.end())) std::sort(b.added.begin(), b.added.end());
        if (b.start == b.sorted.size()) {
          b.sorted.swap(b.added);
        } else {
          merged.clear();
          std::merge(b.sorted.begin() + (ptrdiff_t)b.start, b.sorted.end(), b.added.begin(), b.added.end(),
                     std::back_inserter(merged));
          b.sorted.swap(merged);
        }
        b.start = 0;
        b.added.clear();
      }
    }
    bool interrupted = false;
    while (buckets[bi].start < buckets[bi].sorted.size()) {
      const uint32_t i = buckets[bi].sorted[buckets[bi].start++];
      if (cur[i] != r) continue;  // stale
      const int32_t j = next[i];
      tok[i] = r;
      next[i] = next[j];
      if (next[j] >= 0) prev[next[j]] = (int32_t)i;
      cur[j] = PairMap::kNone;
      cur[i] = next[i] >= 0 ? pr(tok[i], tok[next[i]]) : PairMap::kNone;
      bool lower = false;
      if (cur[i] != PairMap::kNone) { add(cur[i], i); lower |= cur[i] < r; }
      if (prev[i] >= 0) {
        const int32_t h = prev[i];
        cur[h] = pr(tok[h], tok[i]);
        if (cur[h] != PairMap::kNone) { add(cur[h], (uint32_t)h); lower |= cur[h] < r; }
      }
      if (lower) { interrupted = true; break; }
    }
    Bucket& b = buckets[bi];
    if (interrupted && b.start < b.sorted.size() && !b.queued) { b.queued = true; ranks.push(r); }
    if (b.start == b.sorted.size()) { b.sorted.clear(); b.start = 0; }
  }
  for (int32_t k = 0; k >= 0; k = next[k]) out.push_back(tok[k]);
}

void Bpe::merge_below(const uint8_t* p, size_t n, uint32_t max_rank, std::vector<uint32_t>& out) const {
  if (n == 0) return;
  if (n <= 128) {
    uint32_t toks[128];
    size_t m;
    merge_small(p, n, max_rank, toks, &m);
    out.insert(out.end(), toks, toks + m);
  } else {
    merge_long(p, n, max_rank, out);
  }
}

template <class Sink>
inline void Bpe::piece_tokens(const uint8_t* p, size_t n, Sink& sink) const {
  if (n == 1) { sink.push(byte_rank_[p[0]]); return; }
  const uint64_t h = hash_bytes(p, n);
  const uint32_t r = vocab_.find(p, n, h);
  if (r != VocabTable::kNone) { sink.push(r); return; }
  sink = piece_merge(p, n, h, thread_cache(owner_), sink);
}

// n >= 2, not a vocabulary entry, h = hash_bytes(p, n). Out of line: the encode loop stays small.
template <class Sink>
__attribute__((noinline)) Sink Bpe::piece_merge(const uint8_t* p, size_t n, uint64_t h, PieceCache& c, Sink sink) const {
  uint32_t toks[128];
  size_t m;
  if (n > kCacheMaxLen) {  // long pieces are rare: merge each time
    if (n <= 128) {
      merge_small(p, n, PairMap::kNone, toks, &m);
      sink.append(toks, m);
    } else {
      std::vector<uint32_t> tmp;
      merge_long(p, n, PairMap::kNone, tmp);
      sink.append(tmp.data(), tmp.size());
    }
    return sink;
  }
  size_t j = 0;
  if (n <= kLineKey) {
    CacheLine* const lines = c.lines.get();
    for (j = line_index(h);; j = (j + 1) & (kLines - 1)) {
      const CacheLine& L = lines[j];
      if (L.gen != c.gen || L.len == 0) break;  // a free line: not cached (yet)
      if (L.len == n && eq_bytes(L.key, p, n)) {
        sink.template append_fixed<kLineToks>(L.toks, L.ntok);
        return sink;
      }
    }
  }
  if (const uint64_t* v = c.map.find(p, n, h)) {  // level 2
    sink.append(c.toks.data() + (*v >> 8), (size_t)(*v & 0xFF));
    return sink;
  }
  merge_small(p, n, PairMap::kNone, toks, &m);
  sink.append(toks, m);
  if (n <= kLineKey && m <= kLineToks && c.live < kLines / 2) {
    ++c.live;
    CacheLine& L = c.lines[j];
    std::memcpy(L.key, p, n);
    L.len = (uint8_t)n;
    L.ntok = (uint8_t)m;
    L.gen = c.gen;
    std::memcpy(L.toks, toks, m * sizeof(uint32_t));
    return sink;
  }
  if (c.map.size() >= kCacheEntries) {
    // Full: start over (the lines too, if they are full: the text has moved on to new words).
    c.map.clear();
    c.toks.clear();
    if (c.live >= kLines / 2) c.empty_lines();
  }
  c.map.insert(p, n, h, ((uint64_t)c.toks.size() << 8) | m);
  c.toks.insert(c.toks.end(), toks, toks + m);
  return sink;
}

// Software-pipelined: scan up to kAhead pieces, hash them and prefetch their vocabulary slots
// and piece-cache lines, then resolve them; the tables (1-4 MB each) are larger than L2, so
// overlapping the misses with scanning pays: 8 -> 16 -> 32 -> 64 pieces ahead measured +8%, +5%,
// +2% here. Single bytes and whole-token pieces (most of them) are resolved inline; the rest go
// to piece_merge.
template <Pattern P, class Sink>
void Bpe::encode_span(const uint8_t* s, size_t n, Sink& sink) const {
  constexpr int kAhead = 64;
  PieceCache& cache = thread_cache(owner_);
  // Locals, so the loop keeps them in registers: the sink (output pointer), the table views.
  Sink out = sink;
  CacheLine* const lines = cache.lines.get();
  const VocabTable::View vocab = vocab_.view();
  size_t pb[kAhead], pe[kAhead];
  uint64_t ph[kAhead];
  size_t i = 0;
  while (i < n) {
    int k = 0;
    for (; k < kAhead && i < n; ++k) {
      size_t e;
      if constexpr (P == Pattern::gpt2) e = next_piece_gpt2(s, n, i);
      else if constexpr (P == Pattern::cl100k) e = next_piece_cl100k(s, n, i);
      else e = next_piece_o200k(s, n, i);
      pb[k] = i;
      pe[k] = e;
      if (e - i > 1) {
        ph[k] = hash_bytes(s + i, e - i);
        vocab.prefetch(ph[k]);
        if (e - i <= kLineKey) __builtin_prefetch(lines + line_index(ph[k]));
      }
      i = e;
    }
    for (int j = 0; j < k; ++j) {
      const uint8_t* p = s + pb[j];
      const size_t len = pe[j] - pb[j];
      if (len == 1) { out.push(byte_rank_[p[0]]); continue; }
      const uint32_t r = vocab.find(p, len, ph[j]);
      if (r != VocabTable::kNone) { out.push(r); continue; }
      out = piece_merge(p, len, ph[j], cache, out);
    }
  }
  sink = out;
}

template <class Sink>
void Bpe::encode_span_any(const uint8_t* s, size_t n, Sink& sink) const {
  switch (pattern_) {
    case Pattern::gpt2: encode_span<Pattern::gpt2>(s, n, sink); break;
    case Pattern::cl100k: encode_span<Pattern::cl100k>(s, n, sink); break;
    case Pattern::o200k: encode_span<Pattern::o200k>(s, n, sink); break;
    default: HF_THROW(ValueError, "this tokenizer uses a custom regex: its text must be split into pieces first");
  }
}

size_t Bpe::encode_ordinary_into(const uint8_t* s, size_t n, uint32_t* out) const {
  RawSink sink{out};
  encode_span_any(s, n, sink);
  return (size_t)(sink.p - out);
}

void Bpe::encode_ordinary(const uint8_t* s, size_t n, std::vector<uint32_t>& out) const {
  const size_t base = out.size();
  out.resize(base + n + kEncodeSlack);
  size_t m = 0;
  try {
    m = encode_ordinary_into(s, n, out.data() + base);
  } catch (...) {
    out.resize(base);
    throw;
  }
  out.resize(base + m);
}

size_t Bpe::count_ordinary(const uint8_t* s, size_t n) const {
  CountSink sink;
  encode_span_any(s, n, sink);
  return sink.n;
}

void Bpe::encode_piece(const uint8_t* p, size_t n, std::vector<uint32_t>& out) const {
  const size_t base = out.size();
  out.resize(base + n + kEncodeSlack);
  RawSink sink{out.data() + base};
  if (n) piece_tokens(p, n, sink);
  out.resize((size_t)(sink.p - out.data()));
}

int Bpe::find_special(const uint8_t* s, size_t n, size_t from, const std::vector<uint8_t>& mask, size_t* pos) const {
  bool any = false;
  for (size_t k = 0; k < special_text_.size(); ++k) any |= k < mask.size() && mask[k];
  if (!any) return -1;
  for (size_t i = from; i < n; ++i) {
    if (!special_first_byte_[s[i]]) continue;
    int best = -1;
    size_t best_len = 0;
    for (size_t k = 0; k < special_text_.size(); ++k) {
      if (!mask[k]) continue;
      const std::string& t = special_text_[k];
      if (t.size() > best_len && t.size() <= n - i && std::memcmp(s + i, t.data(), t.size()) == 0) {
        best = (int)k;
        best_len = t.size();
      }
    }
    if (best >= 0) {
      *pos = i;
      return best;
    }
  }
  return -1;
}

size_t Bpe::encode_into(const uint8_t* s, size_t n, const std::vector<uint8_t>& allowed, uint32_t* out) const {
  uint32_t* w = out;
  size_t start = 0;
  for (;;) {
    size_t pos = 0;
    const int k = find_special(s, n, start, allowed, &pos);
    if (k < 0) {
      w += encode_ordinary_into(s + start, n - start, w);
      return (size_t)(w - out);
    }
    w += encode_ordinary_into(s + start, pos - start, w);
    *w++ = special_id_[k];
    start = pos + special_text_[k].size();
  }
}

void Bpe::encode(const uint8_t* s, size_t n, const std::vector<uint8_t>& allowed, std::vector<uint32_t>& out) const {
  const size_t base = out.size();
  out.resize(base + n + kEncodeSlack);
  size_t m = 0;
  try {
    m = encode_into(s, n, allowed, out.data() + base);
  } catch (...) {
    out.resize(base);
    throw;
  }
  out.resize(base + m);
}

void Bpe::decode(const uint32_t* ids, size_t n, std::string& out) const {
  size_t total = 0;
  for (size_t i = 0; i < n; ++i) {
    HF_CHECK(valid_id(ids[i]), ValueError,
             "token id " << ids[i] << " at position " << i << " is not in the vocabulary (n_vocab " << n_vocab_ << ")");
    total += dec_len_[ids[i]];
  }
  const size_t base = out.size();
  out.resize(base + total);
  char* w = out.data() + base;
  for (size_t i = 0; i < n; ++i) {
    std::memcpy(w, dec_arena_.data() + dec_off_[ids[i]], dec_len_[ids[i]]);
    w += dec_len_[ids[i]];
  }
}

}  // namespace hf::tok

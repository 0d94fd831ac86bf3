/*
 * train.cpp: parallel pre-token counting and the incremental pair-count BPE merge loop.
 * See train.h for the algorithm, the tie-breaking rule and the memory bound.
 */
#include "tokenizer/train.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <queue>

#include <oneapi/tbb/enumerable_thread_specific.h>

#include "runtime/errors.h"
#include "runtime/parallel.h"

namespace hf::tok {

namespace {

// Position of each byte in HF's sorted byte-level alphabet (see train.h).
struct HfByteOrder {
  uint32_t key[256];
  HfByteOrder() {
    std::vector<int> printable;
    for (int b = '!'; b <= '~'; ++b) printable.push_back(b);
    for (int b = 0xA1; b <= 0xAC; ++b) printable.push_back(b);
    for (int b = 0xAE; b <= 0xFF; ++b) printable.push_back(b);
    uint32_t k = 0;
    for (int b : printable) key[b] = k++;
    for (int b = 0; b < 256; ++b)
      if (std::find(printable.begin(), printable.end(), b) == printable.end()) key[b] = k++;
  }
};
const HfByteOrder kHfOrder;

inline uint32_t order_key(uint32_t id) { return id < 256 ? kHfOrder.key[id] : id; }

constexpr size_t kSegment = 1 << 20;

}  // namespace

struct Trainer::State {
  // Words: symbols of word w are sym[off[w], off[w] + len[w]); cnt[w] its frequency.
  std::vector<uint32_t> sym;
  std::vector<uint64_t> off;
  std::vector<uint32_t> len;
  std::vector<int64_t> cnt;
  std::vector<uint64_t> stamp;  // last merge that processed the word (dedupes word lists)
  // Pairs.
  PairMap index;  // (a, b) -> pair index
  std::vector<uint64_t> pair_key;
  std::vector<int64_t> pair_count;
  std::vector<std::vector<uint32_t>> pair_words;
  std::vector<uint64_t> pair_stamp;  // last merge that increased the pair's count
  struct Entry {
    int64_t count;
    uint32_t ka, kb;  // order keys of left and right
    uint32_t pair;
  };
  struct Worse {
    bool operator()(const Entry& x, const Entry& y) const {
      if (x.count != y.count) return x.count < y.count;
      if (x.ka != y.ka) return x.ka > y.ka;
      return x.kb > y.kb;
    }
  };
  std::priority_queue<Entry, std::vector<Entry>, Worse> heap;
  // Vocabulary being built.
  BytesMap<uint32_t> vocab;             // bytes -> rank
  std::vector<std::string> tokens;      // rank -> bytes
  size_t n_merges = 0;
  int64_t min_frequency = 0;

  uint32_t pair_of(uint32_t a, uint32_t b) {
    uint32_t p = index.get(a, b);
    if (p != PairMap::kNone) return p;
    p = (uint32_t)pair_key.size();
    index.set(a, b, p);
    pair_key.push_back(PairMap::key(a, b));
    pair_count.push_back(0);
    pair_words.emplace_back();
    pair_stamp.push_back(0);
    return p;
  }
  void push(uint32_t p) {
    const uint32_t a = (uint32_t)(pair_key[p] >> 32), b = (uint32_t)pair_key[p];
    heap.push({pair_count[p], order_key(a), order_key(b), p});
  }
};

Trainer::Trainer(Pattern pattern, std::vector<std::string> specials) : pattern_(pattern), specials_(std::move(specials)) {
  for (auto& s : specials_) HF_CHECK(!s.empty(), ValueError, "special token text must not be empty");
}
Trainer::~Trainer() = default;

size_t Trainer::distinct_pieces() const { return counts_.size(); }

size_t Trainer::memory_bytes() const {
  size_t m = counts_.memory_bytes();
  if (st_) {
    m += st_->sym.capacity() * 4 + st_->off.capacity() * 8 + st_->len.capacity() * 4 + st_->cnt.capacity() * 8 +
         st_->pair_key.capacity() * 24;
    for (auto& v : st_->pair_words) m += v.capacity() * 4;
  }
  return m;
}

size_t Trainer::safe_cut(const uint8_t* s, size_t n, size_t target) {
  if (target >= n) return n;
  const size_t limit = std::min(n, target + 4 * kSegment);
  const size_t cut = safe_split_point(s, limit, target);
  if (cut < limit || limit == n) return cut;
  size_t at = limit;  // no safe point within 4 MiB: cut anyway (documented approximation)
  while (at > target && (s[at] & 0xC0) == 0x80) --at;  // never inside a UTF-8 sequence
  return at;
}

void Trainer::count_segment(const uint8_t* s, size_t n, CountTable& into) const {
  // Cut out special-token texts; count the spans between them.
  size_t start = 0;
  while (start < n) {
    size_t stop = n, skip = 0;
    for (auto& t : specials_) {
      std::string_view hay((const char*)s + start, stop - start);
      const size_t at = hay.find(t);
      if (at != std::string_view::npos && start + at < stop) { stop = start + at; skip = t.size(); }
    }
    for_each_piece(pattern_, s + start, stop - start, [&](size_t b, size_t e) {
      const uint8_t* p = s + start + b;
      into.add(p, e - b, hash_bytes(p, e - b), 1);
    });
    start = stop + skip;
  }
}

void Trainer::feed(const std::vector<std::string_view>& docs) {
  HF_CHECK(!started_, ValueError, "feed() after training started");
  HF_CHECK(pattern_ != Pattern::custom, ValueError, "a custom-regex trainer takes pieces (feed_pieces)");
  // Segments of ~1 MiB cut at safe points.
  std::vector<std::pair<const uint8_t*, size_t>> segs;
  for (auto d : docs) {
    auto* s = (const uint8_t*)d.data();
    size_t n = d.size(), at = 0;
    total_bytes_ += n;
    while (at < n) {
      const size_t cut = at + safe_cut(s + at, n - at, kSegment);
      segs.emplace_back(s + at, cut - at);
      at = cut;
    }
  }
  tbb::enumerable_thread_specific<CountTable> local;
  hf::parallel_for(0, (int64_t)segs.size(), 1, [&](int64_t lo, int64_t hi) {
    auto& m = local.local();
    for (int64_t i = lo; i < hi; ++i) count_segment(segs[i].first, segs[i].second, m);
  });
  for (auto& m : local) {
    m.for_each([&](std::string_view k, int64_t c) {
      const auto* p = (const uint8_t*)k.data();
      counts_.add(p, k.size(), hash_bytes(p, k.size()), c);
      total_pieces_ += (uint64_t)c;
    });
  }
}

void Trainer::feed_pieces(const std::vector<std::string_view>& pieces) {
  HF_CHECK(!started_, ValueError, "feed_pieces() after training started");
  for (auto p : pieces) {
    if (p.empty()) continue;
    counts_.add((const uint8_t*)p.data(), p.size(), hash_bytes((const uint8_t*)p.data(), p.size()), 1);
    ++total_pieces_;
    total_bytes_ += p.size();
  }
}

void Trainer::start(size_t n_merges, int64_t min_frequency) {
  HF_CHECK(!started_, ValueError, "training already started");
  started_ = true;
  st_ = std::make_unique<State>();
  State& S = *st_;
  S.n_merges = n_merges;
  S.min_frequency = std::max<int64_t>(min_frequency, 1);
  for (int b = 0; b < 256; ++b) {
    const std::string t(1, (char)b);
    S.vocab.insert(t, (uint32_t)b);
    S.tokens.push_back(t);
  }
  // Words in byte order (deterministic, independent of counting order); 1-byte pieces have
  // no pairs and are dropped.
  std::vector<std::pair<std::string_view, int64_t>> order;
  counts_.for_each([&](std::string_view k, int64_t c) {
    if (k.size() > 1) order.emplace_back(k, c);
  });
  std::sort(order.begin(), order.end());
  size_t total = 0;
  for (auto& kc : order) total += kc.first.size();
  S.sym.reserve(total);
  S.off.reserve(order.size());
  for (size_t i = 0; i < order.size(); ++i) {
    auto k = order[i].first;
    int64_t c = order[i].second;
    while (i + 1 < order.size() && order[i + 1].first == k) c += order[++i].second;  // overflow keys
    S.off.push_back(S.sym.size());
    S.len.push_back((uint32_t)k.size());
    S.cnt.push_back(c);
    for (unsigned char ch : k) S.sym.push_back(ch);
  }
  order.clear();
  order.shrink_to_fit();
  S.stamp.assign(S.off.size(), ~0ull);
  counts_.clear();  // the words now hold everything
  for (uint32_t w = 0; w < S.off.size(); ++w) {
    const uint32_t* s = S.sym.data() + S.off[w];
    for (uint32_t i = 0; i + 1 < S.len[w]; ++i) {
      const uint32_t p = S.pair_of(s[i], s[i + 1]);
      S.pair_count[p] += S.cnt[w];
      auto& ws = S.pair_words[p];
      if (ws.empty() || ws.back() != w) ws.push_back(w);
    }
  }
  for (uint32_t p = 0; p < S.pair_key.size(); ++p)
    if (S.pair_count[p] > 0) S.push(p);
  if (n_merges == 0) finished_ = true;
}

size_t Trainer::step(size_t k) {
  HF_CHECK(started_, ValueError, "step() before start()");
  if (finished_) return 0;
  State& S = *st_;
  size_t done = 0;
  struct Change {
    uint32_t a, b;
    int64_t delta;
    uint32_t w;
  };
  while (done < k) {
    if (merges_.size() >= S.n_merges || S.heap.empty()) { finished_ = true; break; }
    const State::Entry top = S.heap.top();
    S.heap.pop();
    const int64_t now = S.pair_count[top.pair];
    if (top.count != now) {
      if (now > 0) S.push(top.pair);
      continue;
    }
    if (now < S.min_frequency) { finished_ = true; break; }
    const uint32_t A = (uint32_t)(S.pair_key[top.pair] >> 32), B = (uint32_t)S.pair_key[top.pair];
    std::string bytes = S.tokens[A] + S.tokens[B];
    uint32_t C;
    if (const uint32_t* got = S.vocab.find(bytes)) {
      C = *got;
    } else {
      C = (uint32_t)S.tokens.size();
      S.vocab.insert(bytes, C);
      S.tokens.push_back(bytes);
    }
    merges_.push_back({A, B, C, now});
    const uint64_t mno = merges_.size();
    // Words to rewrite, each once.
    std::vector<uint32_t> words;
    words.reserve(S.pair_words[top.pair].size());
    for (uint32_t w : S.pair_words[top.pair])
      if (S.stamp[w] != mno) { S.stamp[w] = mno; words.push_back(w); }
    std::vector<uint32_t>().swap(S.pair_words[top.pair]);
    S.pair_count[top.pair] = 0;
    // Rewrite words in chunks (in parallel when there are many); changes are applied in chunk
    // order afterwards, so the result does not depend on the thread count.
    const int64_t grain = 2048;
    const int64_t nchunks = ((int64_t)words.size() + grain - 1) / grain;
    std::vector<std::vector<Change>> changes(nchunks);
    auto rewrite = [&](int64_t lo, int64_t hi) {
      for (int64_t ch = lo; ch < hi; ++ch) {
        auto& out = changes[ch];
        const size_t wend = std::min(words.size(), (size_t)(ch + 1) * grain);
        for (size_t wi = (size_t)ch * grain; wi < wend; ++wi) {
          const uint32_t w = words[wi];
          uint32_t* s = S.sym.data() + S.off[w];
          const uint32_t L = S.len[w];
          const int64_t c = S.cnt[w];
          uint32_t t = 0;  // write index
          for (uint32_t r = 0; r < L;) {
            if (s[r] == A && r + 1 < L && s[r + 1] == B) {
              if (t > 0) {
                out.push_back({s[t - 1], A, -c, w});
                out.push_back({s[t - 1], C, c, w});
              }
              if (r + 2 < L) {
                out.push_back({B, s[r + 2], -c, w});
                out.push_back({C, s[r + 2], c, w});
              }
              s[t++] = C;
              r += 2;
            } else {
              s[t++] = s[r++];
            }
          }
          S.len[w] = t;
        }
      }
    };
    if (nchunks > 1) hf::parallel_for(0, nchunks, 1, rewrite);
    else rewrite(0, nchunks);
    std::vector<uint32_t> touched;
    for (auto& ch : changes)
      for (const Change& x : ch) {
        const uint32_t p = S.pair_of(x.a, x.b);
        if (p == top.pair) continue;
        S.pair_count[p] += x.delta;
        if (x.delta > 0) {
          if (S.pair_stamp[p] != mno) { S.pair_stamp[p] = mno; touched.push_back(p); }
          auto& ws = S.pair_words[p];
          if (ws.empty() || ws.back() != x.w) ws.push_back(x.w);
        }
      }
    for (uint32_t p : touched)
      if (S.pair_count[p] > 0) S.push(p);
    ++done;
  }
  return done;
}

std::vector<std::pair<std::string, uint32_t>> Trainer::ranks() const {
  std::vector<std::pair<std::string, uint32_t>> out;
  if (!st_) {
    for (int b = 0; b < 256; ++b) out.emplace_back(std::string(1, (char)b), (uint32_t)b);
    return out;
  }
  for (size_t r = 0; r < st_->tokens.size(); ++r) out.emplace_back(st_->tokens[r], (uint32_t)r);
  return out;
}

}  // namespace hf::tok

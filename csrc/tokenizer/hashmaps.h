/*
 * hashmaps.h: the two flat hash tables of the tokenizer.
 *
 *   BytesMap<V>  byte string -> V (vocabulary lookups, pre-token counting). Keys live in one
 *                arena; a slot is 16 bytes {tag, value/index, offset, length}; linear probing at
 *                load <= 1/2, so a hit is usually one cache line plus one memcmp.
 *   PairMap      (uint32 left, uint32 right) -> uint32 (the merged token), open addressing on a
 *                64-bit key.
 * std::unordered_map costs a heap node and a pointer chase per entry; these are 3-5x faster on
 * the encode path, which does one BytesMap probe per piece and one PairMap probe per merge step.
 */
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace hf::tok {

// Fast hash of a short byte string (overlapping loads; the length is mixed in).
inline uint64_t hash_bytes(const uint8_t* p, size_t n) {
  uint64_t a, b;
  if (n >= 8) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xff51afd7ed558ccdull);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      h = (h ^ w) * 0xbf58476d1ce4e5b9ull;
      h ^= h >> 29;
    }
    uint64_t w;
    std::memcpy(&w, p + n - 8, 8);
    h = (h ^ w) * 0x94d049bb133111ebull;
    return h ^ (h >> 31);
  }
  if (n >= 4) {
    uint32_t x, y;
    std::memcpy(&x, p, 4);
    std::memcpy(&y, p + n - 4, 4);
    a = x;
    b = y;
  } else if (n > 0) {
    a = (uint64_t)p[0] | ((uint64_t)p[n >> 1] << 8) | ((uint64_t)p[n - 1] << 16);
    b = 0;
  } else {
    a = b = 0;
  }
  uint64_t h = (a | (b << 32)) ^ (n * 0x9E3779B97F4A7C15ull);
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 31;
  h *= 0x94d049bb133111ebull;
  return h ^ (h >> 29);
}

// Equality of two n-byte strings with overlapping word loads (no library call for short keys).
inline bool eq_bytes(const uint8_t* a, const uint8_t* b, size_t n) {
  if (n >= 8) {
    if (n > 16) return std::memcmp(a, b, n) == 0;
    uint64_t x0, y0, x1, y1;
    std::memcpy(&x0, a, 8); std::memcpy(&y0, b, 8);
    std::memcpy(&x1, a + n - 8, 8); std::memcpy(&y1, b + n - 8, 8);
    return ((x0 ^ y0) | (x1 ^ y1)) == 0;
  }
  if (n >= 4) {
    uint32_t x0, y0, x1, y1;
    std::memcpy(&x0, a, 4); std::memcpy(&y0, b, 4);
    std::memcpy(&x1, a + n - 4, 4); std::memcpy(&y1, b + n - 4, 4);
    return ((x0 ^ y0) | (x1 ^ y1)) == 0;
  }
  for (size_t i = 0; i < n; ++i)
    if (a[i] != b[i]) return false;
  return true;
}

template <class V>
class BytesMap {
 public:
  struct Slot {
    uint32_t tag;    // high hash bits; 0 = empty (tags are forced nonzero)
    uint32_t index;  // into keys/values
    uint64_t off_len;  // arena offset << 16 | length (keys up to 64 KiB are stored inline-checked)
  };

  BytesMap() { rehash(16); }

  size_t size() const { return offsets_.size(); }
  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < 2 * n + 2) cap <<= 1;
    if (cap > slots_.size()) rehash(cap);
  }

  // Returns a pointer to the value, or nullptr.
  const V* find(const uint8_t* p, size_t n, uint64_t h) const {
    const uint32_t tag = make_tag(h);
    size_t i = h & mask_;
    for (;;) {
      const Slot& s = slots_[i];
      if (s.tag == 0) return nullptr;
      if (s.tag == tag && (s.off_len & 0xFFFF) == (n < 0xFFFF ? n : 0xFFFF) && (n < 0xFFFF || key_len(s.index) == n) &&
          eq_bytes((const uint8_t*)arena_.data() + (s.off_len >> 16), p, n))
        return &values_[s.index];
      i = (i + 1) & mask_;
    }
  }
  const V* find(std::string_view k) const {
    auto* p = (const uint8_t*)k.data();
    return find(p, k.size(), hash_bytes(p, k.size()));
  }
  V* find_mut(const uint8_t* p, size_t n, uint64_t h) { return const_cast<V*>(static_cast<const BytesMap*>(this)->find(p, n, h)); }

  // Inserts (key, v) if absent; returns the value slot and whether it was inserted.
  std::pair<V*, bool> insert(const uint8_t* p, size_t n, uint64_t h, const V& v) {
    if (V* got = find_mut(p, n, h)) return {got, false};
    if (2 * (offsets_.size() + 1) > slots_.size()) rehash(slots_.size() * 2);
    const uint32_t idx = (uint32_t)offsets_.size();
    offsets_.push_back(arena_.size());
    arena_.append((const char*)p, n);
    ends_.push_back(arena_.size());
    values_.push_back(v);
    hashes_.push_back(h);
    place(idx, h);
    return {&values_[idx], true};
  }
  std::pair<V*, bool> insert(std::string_view k, const V& v) {
    auto* p = (const uint8_t*)k.data();
    return insert(p, k.size(), hash_bytes(p, k.size()), v);
  }

  // Iteration by insertion index.
  std::string_view key(size_t idx) const { return {arena_.data() + offsets_[idx], (size_t)(ends_[idx] - offsets_[idx])}; }
  const V& value(size_t idx) const { return values_[idx]; }
  V& value(size_t idx) { return values_[idx]; }
  uint64_t hash(size_t idx) const { return hashes_[idx]; }
  size_t memory_bytes() const {
    return arena_.capacity() + slots_.capacity() * sizeof(Slot) + offsets_.capacity() * 16 + values_.capacity() * sizeof(V) +
           hashes_.capacity() * 8;
  }
  void clear() {
    arena_.clear(); arena_.shrink_to_fit();
    offsets_ = {}; ends_ = {}; values_ = {}; hashes_ = {};
    rehash(16);
  }

 private:
  static uint32_t make_tag(uint64_t h) { return (uint32_t)(h >> 32) | 1u; }
  const char* key_ptr(uint32_t idx) const { return arena_.data() + offsets_[idx]; }
  size_t key_len(uint32_t idx) const { return (size_t)(ends_[idx] - offsets_[idx]); }
  void place(uint32_t idx, uint64_t h) {
    size_t i = h & mask_;
    while (slots_[i].tag != 0) i = (i + 1) & mask_;
    slots_[i] = {make_tag(h), idx, ((uint64_t)offsets_[idx] << 16) | (key_len(idx) < 0xFFFF ? key_len(idx) : 0xFFFF)};
  }
  void rehash(size_t cap) {
    slots_.assign(cap, Slot{0, 0, 0});
    mask_ = cap - 1;
    for (uint32_t i = 0; i < offsets_.size(); ++i) place(i, hashes_[i]);
  }

  std::vector<Slot> slots_;
  size_t mask_ = 0;
  std::string arena_;
  std::vector<uint64_t> offsets_, ends_;
  std::vector<V> values_;
  std::vector<uint64_t> hashes_;
};

class PairMap {
 public:
  static constexpr uint64_t kEmpty = ~0ull;
  static constexpr uint32_t kNone = 0xFFFFFFFFu;
  PairMap() { rehash(16); }
  static uint64_t key(uint32_t a, uint32_t b) { return ((uint64_t)a << 32) | b; }
  uint32_t get(uint32_t a, uint32_t b) const {
    const uint64_t k = key(a, b);
    size_t i = mix(k) & mask_;
    for (;;) {
      const Entry& e = table_[i];
      if (e.k == k) return e.v;
      if (e.k == kEmpty) return kNone;
      i = (i + 1) & mask_;
    }
  }
  void set(uint32_t a, uint32_t b, uint32_t v) {
    if (2 * (size_ + 1) > table_.size()) rehash(table_.size() * 2);
    const uint64_t k = key(a, b);
    size_t i = mix(k) & mask_;
    while (table_[i].k != kEmpty && table_[i].k != k) i = (i + 1) & mask_;
    if (table_[i].k == kEmpty) ++size_;
    table_[i] = {k, v};
  }
  size_t size() const { return size_; }

 private:
  struct Entry {
    uint64_t k;
    uint32_t v;
  };
  static uint64_t mix(uint64_t k) {
    k *= 0x9E3779B97F4A7C15ull;
    return k ^ (k >> 29);
  }
  void rehash(size_t cap) {
    std::vector<Entry> old;
    old.swap(table_);
    table_.assign(cap, Entry{kEmpty, 0});
    mask_ = cap - 1;
    size_ = 0;
    for (const Entry& e : old)
      if (e.k != kEmpty) set((uint32_t)(e.k >> 32), (uint32_t)e.k, e.v);
  }
  std::vector<Entry> table_;
  size_t mask_ = 0, size_ = 0;
};

}  // namespace hf::tok

namespace hf::tok {

// Injective packing of a 1..8-byte string given its length (overlapping loads, no branches on
// the bytes): the inline key of VocabTable.
inline uint64_t pack8(const uint8_t* p, size_t n) {
  if (n >= 4) {
    uint32_t x, y;
    std::memcpy(&x, p, 4);
    std::memcpy(&y, p + n - 4, 4);
    return (uint64_t)x | ((uint64_t)y << 32);
  }
  return (uint64_t)p[0] | ((uint64_t)p[n >> 1] << 8) | ((uint64_t)p[n - 1] << 16);
}

// The encoder's bytes -> rank table, read-only after build. One 16-byte slot holds the rank
// and, for keys up to 8 bytes (most pieces that are whole tokens), the key itself, so a hit
// costs one cache line; longer keys compare against the arena.
class VocabTable {
 public:
  static constexpr uint32_t kNone = 0xFFFFFFFFu;
  void build(const BytesMap<uint32_t>& src) {
    size_t cap = 16;
    while (cap < 2 * src.size() + 2) cap <<= 1;
    slots_.assign(cap, Slot{0, kNone, 0, 0});
    mask_ = cap - 1;
    arena_.clear();
    for (size_t i = 0; i < src.size(); ++i) {
      auto k = src.key(i);
      const auto* p = (const uint8_t*)k.data();
      const uint64_t h = hash_bytes(p, k.size());
      size_t j = h & mask_;
      while (slots_[j].rank != kNone) j = (j + 1) & mask_;
      Slot s;
      s.rank = src.value(i);
      s.tag = (uint16_t)(h >> 48);
      s.len = (uint16_t)std::min<size_t>(k.size(), 0xFFFF);
      if (k.size() <= 8) {
        s.key = pack8(p, k.size());
      } else {
        s.key = ((uint64_t)arena_.size() << 20) | std::min<size_t>(k.size(), 0xFFFFF);
        arena_.append(k);
      }
      slots_[j] = s;
    }
    arena_.append(16, '\0');
  }
  struct Slot {
    uint64_t key;   // the packed bytes (len <= 8) or arena offset << 20 | len
    uint32_t rank;  // kNone = empty
    uint16_t len, tag;
  };
  // Raw pointers of the table, for hot loops that keep them in registers.
  struct View {
    const Slot* slots;
    size_t mask;
    const char* arena;
    void prefetch(uint64_t h) const { __builtin_prefetch(slots + (h & mask)); }
    // Rank of p[0, n) (n >= 1) with h = hash_bytes(p, n), or kNone.
    uint32_t find(const uint8_t* p, size_t n, uint64_t h) const {
      const uint16_t tag = (uint16_t)(h >> 48);
      size_t j = h & mask;
      if (n <= 8) {
        const uint64_t key = pack8(p, n);
        for (;;) {
          const Slot& s = slots[j];
          if (s.rank == kNone) return kNone;
          if (s.key == key && s.len == n && s.tag == tag) return s.rank;
          j = (j + 1) & mask;
        }
      }
      for (;;) {
        const Slot& s = slots[j];
        if (s.rank == kNone) return kNone;
        if (s.tag == tag && s.len == std::min<size_t>(n, 0xFFFF) && (s.key & 0xFFFFF) == std::min<size_t>(n, 0xFFFFF) &&
            (n < 0xFFFFF) && eq_bytes((const uint8_t*)arena + (s.key >> 20), p, n))
          return s.rank;
        j = (j + 1) & mask;
      }
    }
  };
  View view() const { return {slots_.data(), mask_, arena_.data()}; }
  void prefetch(uint64_t h) const { view().prefetch(h); }
  uint32_t find(const uint8_t* p, size_t n, uint64_t h) const { return view().find(p, n, h); }

 private:
  std::vector<Slot> slots_;
  size_t mask_ = 0;
  std::string arena_;
};

}  // namespace hf::tok

namespace hf::tok {

// Pre-token counter for training: byte string -> int64 count. Like VocabTable, a 24-byte slot
// holds the count and an inline packed key for <= 8 bytes, so counting a common piece touches one
// cache line; every key is also kept in an arena for iteration.
class CountTable {
 public:
  CountTable() { rehash(1024); }
  size_t size() const { return size_; }
  void add(const uint8_t* p, size_t n, uint64_t h, int64_t c) {
    const uint16_t tag = (uint16_t)(h >> 48);
    const uint64_t key = n <= 8 ? pack8(p, n) : 0;
    size_t j = h & mask_;
    for (;;) {
      Slot& s = slots_[j];
      if (s.len == 0) break;
      if (s.tag == tag && s.len == n && s.key == key &&
          (n <= 8 || eq_bytes((const uint8_t*)arena_.data() + s.off, p, n))) {
        s.count += c;
        return;
      }
      j = (j + 1) & mask_;
    }
    if (n >= 0xFFFF || arena_.size() + n >= 0xFFFFFFF0ull) {  // (keys this long are not counted inline)
      overflow_.emplace_back(std::string((const char*)p, n), c);
      return;
    }
    Slot& s = slots_[j];
    s.key = key;
    s.count = c;
    s.off = (uint32_t)arena_.size();
    s.len = (uint16_t)n;
    s.tag = tag;
    arena_.append((const char*)p, n);
    if (2 * ++size_ > slots_.size()) rehash(slots_.size() * 2);
  }
  // f(string_view key, int64 count) for every key (overflow keys may repeat: callers sum).
  template <class F>
  void for_each(F&& f) const {
    for (const Slot& s : slots_)
      if (s.len) f(std::string_view(arena_.data() + s.off, s.len), s.count);
    for (auto& [k, c] : overflow_) f(std::string_view(k), c);
  }
  size_t memory_bytes() const { return slots_.capacity() * sizeof(Slot) + arena_.capacity(); }
  void clear() {
    slots_ = {};
    arena_ = {};
    overflow_ = {};
    size_ = 0;
    rehash(1024);
  }

 private:
  struct Slot {
    uint64_t key;
    int64_t count;
    uint32_t off;
    uint16_t len, tag;  // len 0 = empty
  };
  void rehash(size_t cap) {
    std::vector<Slot> old;
    old.swap(slots_);
    slots_.assign(cap, Slot{0, 0, 0, 0, 0});
    mask_ = cap - 1;
    for (const Slot& s : old) {
      if (!s.len) continue;
      const uint64_t h = hash_bytes((const uint8_t*)arena_.data() + s.off, s.len);
      size_t j = h & mask_;
      while (slots_[j].len) j = (j + 1) & mask_;
      slots_[j] = s;
    }
  }
  std::vector<Slot> slots_;
  size_t mask_ = 0, size_ = 0;
  std::string arena_;
  std::vector<std::pair<std::string, int64_t>> overflow_;
};

}  // namespace hf::tok

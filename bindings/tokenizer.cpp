/*
 * tokenizer.cpp: bindings for the BPE tokenizer (csrc/tokenizer). The Python layer
 * (python/homeforge/tokenizer.py) owns argument policy (special-token sets, custom regex
 * splitting, formats); these functions move text in and ids out with the GIL released around
 * the C++ work. Text crosses as UTF-8 from PyUnicode_AsUTF8AndSize (zero-copy for most str);
 * a str with lone surrogates is repaired exactly as tiktoken does:
 * text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").
 */
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>

#include <oneapi/tbb/enumerable_thread_specific.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/task_arena.h>

#include "bindings/common.h"
#include "bindings/registry.h"
#include "runtime/parallel.h"
#include "tokenizer/bpe.h"
#include "tokenizer/train.h"

namespace hf_bind {
namespace {

using hf::tok::Bpe;
using hf::tok::Pattern;
using hf::tok::Trainer;

// UTF-8 view of a str; `keep` holds a repaired copy alive when the str has lone surrogates.
std::string_view utf8_of(const py::handle& obj, const char* what, py::object* keep) {
  if (!PyUnicode_Check(obj.ptr()))
    throw hf::TypeError(std::string(what) + " must be str, got " +
                        py::str(py::type::handle_of(obj).attr("__name__")).cast<std::string>());
  Py_ssize_t n = 0;
  const char* p = PyUnicode_AsUTF8AndSize(obj.ptr(), &n);
  if (p) return {p, (size_t)n};
  PyErr_Clear();
  *keep = obj.attr("encode")("utf-16", "surrogatepass").attr("decode")("utf-16", "replace");
  p = PyUnicode_AsUTF8AndSize(keep->ptr(), &n);
  if (!p) throw py::error_already_set();
  return {p, (size_t)n};
}

// Bpe plus one Python int object per token id: building a result list is then an INCREF per
// token instead of an allocation (ints are immutable, so sharing them is safe).
struct BpePy : Bpe {
  using Bpe::Bpe;
  std::vector<PyObject*> ints;
  ~BpePy() {
    for (PyObject* o : ints) Py_XDECREF(o);
  }
  void make_ints() {
    ints.resize(n_vocab());
    for (uint32_t i = 0; i < n_vocab(); ++i) {
      ints[i] = PyLong_FromUnsignedLong(i);
      if (!ints[i]) throw py::error_already_set();
    }
  }
};

// Stores the cached int objects of ids v[0, n) into list slots items[0, n) (new references).
void fill_ints(const BpePy& b, PyObject** items, const uint32_t* v, size_t n) {
  PyObject* const* ints = b.ints.data();
  // The int objects are scattered over n_vocab * 32 bytes; prefetching a few tokens ahead hides
  // the misses of the INCREFs.
  size_t i = 0;
  for (; i + 8 < n; ++i) {
    __builtin_prefetch(ints[v[i + 8]], 1);
    PyObject* o = ints[v[i]];
    Py_INCREF(o);
    items[i] = o;
  }
  for (; i < n; ++i) {
    PyObject* o = ints[v[i]];
    Py_INCREF(o);
    items[i] = o;
  }
}

py::list to_list(const BpePy& b, const uint32_t* v, size_t n) {
  PyObject* l = PyList_New((Py_ssize_t)n);
  if (!l) throw py::error_already_set();
  fill_ints(b, reinterpret_cast<PyListObject*>(l)->ob_item, v, n);
  return py::reinterpret_steal<py::list>(l);
}
py::list to_list(const BpePy& b, const std::vector<uint32_t>& v) { return to_list(b, v.data(), v.size()); }

// A per-thread output buffer of at least n ids, uninitialized and reused across calls: encoding
// writes into it through a raw pointer (no growth, no zero-fill, no fresh pages: page faults
// cost ~15% of a list-returning encode). A buffer over 64 MiB is released when a smaller one
// would do, so one huge text does not pin memory.
uint32_t* scratch(size_t n) {
  struct Buf {
    std::unique_ptr<uint32_t[]> p;
    size_t cap = 0;
  };
  thread_local Buf buf;
  constexpr size_t kKeep = (64u << 20) / sizeof(uint32_t);
  if (buf.cap < n || (buf.cap > kKeep && n <= kKeep)) {
    const size_t cap = std::max<size_t>(n, 4096);
    buf.p.reset(new uint32_t[cap]);
    buf.cap = cap;
  }
  return buf.p.get();
}

py::list to_list(const std::vector<uint32_t>& v) {
  PyObject* l = PyList_New((Py_ssize_t)v.size());
  if (!l) throw py::error_already_set();
  for (size_t i = 0; i < v.size(); ++i) PyList_SET_ITEM(l, (Py_ssize_t)i, PyLong_FromUnsignedLong(v[i]));
  return py::reinterpret_steal<py::list>(l);
}

std::vector<uint8_t> mask_of(const std::vector<bool>& m) { return std::vector<uint8_t>(m.begin(), m.end()); }

// Encodes one text into this thread's scratch buffer with the GIL released: with `mask` the
// special tokens it allows are encoded as their ids (tiktoken's encode), without it none are
// (encode_ordinary). The ids stay valid until the thread's next scratch() call.
struct ScratchIds {
  const uint32_t* ids;
  size_t n;
};
ScratchIds encode_to_scratch(const Bpe& b, const py::handle& text, const std::vector<uint8_t>* mask) {
  py::object keep;
  const auto v = utf8_of(text, "text", &keep);
  uint32_t* out = scratch(v.size() + hf::tok::kEncodeSlack);
  const auto* s = (const uint8_t*)v.data();
  py::gil_scoped_release release;
  const size_t n = mask ? b.encode_into(s, v.size(), *mask, out) : b.encode_ordinary_into(s, v.size(), out);
  return {out, n};
}

std::string type_name(const py::handle& v) {
  return py::str(py::type::handle_of(v).attr("__name__")).cast<std::string>();
}

// v as an integer: anything with __index__ (int, numpy integer scalars: what tiktoken accepts),
// but not bool (an int subclass that is never meant as an id) and not float. Returns false with
// `text` set to the value's decimal text when it is outside [lo, hi], so a message can name the
// real value (not a wrapped or clamped one).
bool index_in(const py::handle& v, long long lo, long long hi, const std::string& what, long long& out, std::string& text) {
  if (PyBool_Check(v.ptr()) || PyFloat_Check(v.ptr()) || !PyIndex_Check(v.ptr()))
    throw hf::TypeError(what + " must be an int, got " + type_name(v));
  py::object i = py::reinterpret_steal<py::object>(PyNumber_Index(v.ptr()));
  if (!i) {
    PyErr_Clear();
    throw hf::TypeError(what + " must be an int, got " + type_name(v));
  }
  int overflow = 0;
  out = PyLong_AsLongLongAndOverflow(i.ptr(), &overflow);
  if (!overflow && out >= lo && out <= hi) return true;
  text = py::str(i).cast<std::string>();
  return false;
}

// One token id (decode_single_token_bytes); ValueError naming the value when out of range.
uint32_t id_of(const py::handle& v, const Bpe& b) {
  long long x = 0;
  std::string text;
  if (!index_in(v, 0, 0xFFFFFFFFll, "token id", x, text) || !b.valid_id((uint32_t)x))
    throw hf::ValueError("token id " + (text.empty() ? std::to_string(x) : text) + " is not in the vocabulary (n_vocab " +
                         std::to_string(b.n_vocab()) + ")");
  return (uint32_t)x;
}

// ids: a sequence of ints (see index_in) or an integer numpy array -> uint32, range-checked.
std::vector<uint32_t> ids_of(const py::handle& obj, uint32_t n_vocab) {
  std::vector<uint32_t> out;
  auto bad = [&](const std::string& v, size_t i) {
    throw hf::ValueError("token id " + v + " at position " + std::to_string(i) +
                         " is not in the vocabulary (n_vocab " + std::to_string(n_vocab) + ")");
  };
  if (py::isinstance<py::array>(obj)) {
    py::array a = py::reinterpret_borrow<py::array>(obj);
    const char kind = a.dtype().kind();
    HF_CHECK(kind == 'i' || kind == 'u', TypeError, "ids must be integers, got a numpy array of " << dtype_str(a));
    HF_CHECK(a.ndim() <= 1, ValueError, "ids must be 1-D, got shape " << shape_str(a));
    if (kind == 'u') {  // uint64 values >= 2^63 would wrap negative as int64
      py::array_t<uint64_t, py::array::c_style | py::array::forcecast> b(a);
      out.resize((size_t)b.size());
      const uint64_t* d = b.data();
      for (size_t i = 0; i < out.size(); ++i) {
        if (d[i] > 0xFFFFFFFFull) bad(std::to_string(d[i]), i);
        out[i] = (uint32_t)d[i];
      }
      return out;
    }
    py::array_t<int64_t, py::array::c_style | py::array::forcecast> b(a);
    out.resize((size_t)b.size());
    const int64_t* d = b.data();
    for (size_t i = 0; i < out.size(); ++i) {
      if (d[i] < 0 || d[i] > (int64_t)0xFFFFFFFF) bad(std::to_string(d[i]), i);
      out[i] = (uint32_t)d[i];
    }
    return out;
  }
  if (PyUnicode_Check(obj.ptr()) || PyBytes_Check(obj.ptr())) throw hf::TypeError("ids must be a sequence of int, not str/bytes");
  py::sequence seq = py::reinterpret_borrow<py::sequence>(obj);
  const size_t n = (size_t)py::len(seq);
  out.resize(n);
  for (size_t i = 0; i < n; ++i) {
    py::object v = seq[i];
    long long x = 0;
    std::string text;
    if (PyLong_CheckExact(v.ptr())) {  // the common case, without the __index__ call
      int overflow = 0;
      x = PyLong_AsLongLongAndOverflow(v.ptr(), &overflow);
      if (overflow || x < 0 || x > 0xFFFFFFFFll) bad(py::str(v).cast<std::string>(), i);
    } else if (!index_in(v, 0, 0xFFFFFFFFll, "ids[" + std::to_string(i) + "]", x, text)) {
      bad(text, i);
    }
    out[i] = (uint32_t)x;
  }
  return out;
}

// Runs f(i) for i in [0, n) on the shared arena, or on a smaller arena of num_threads. Each i is
// its own task (simple_partitioner): callers make the items about equal and large enough (tens of
// KB of text) that a task's overhead (~1 us) is noise, and then no thread ends with a long tail.
template <class F>
void for_items(int64_t n, int num_threads, F&& f) {
  if (n <= 0) return;
  auto run = [&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, n, 1), [&](const tbb::blocked_range<int64_t>& r) {
      for (int64_t i = r.begin(); i < r.end(); ++i) f(i);
    }, tbb::simple_partitioner());
  };
  const bool all = num_threads <= 0 || num_threads >= hf::num_threads();
  if (hf::parallel_backend() == hf::Backend::serial || n == 1 || (all ? hf::num_threads() : num_threads) == 1) {
    for (int64_t i = 0; i < n; ++i) f(i);
  } else if (all) {
    hf::current_arena()->execute(run);
  } else {
    tbb::task_arena arena(num_threads);
    arena.execute(run);
  }
}

struct BatchText {
  std::vector<std::string_view> views;
  std::vector<py::object> keep;
};
BatchText batch_of(const py::handle& texts) {
  BatchText b;
  if (PyUnicode_Check(texts.ptr())) throw hf::TypeError("texts must be a sequence of str, not a str");
  py::sequence seq = py::reinterpret_borrow<py::sequence>(texts);
  const size_t n = (size_t)py::len(seq);
  b.views.resize(n);
  b.keep.resize(n);
  for (size_t i = 0; i < n; ++i) {
    py::object t = seq[i];
    b.views[i] = utf8_of(t, "texts[i]", &b.keep[i]);
    if (!b.keep[i]) b.keep[i] = t;  // the view points into t's UTF-8 cache: keep t alive
  }
  return b;
}

// Batch encoding without per-call allocations. Each worker thread encodes its parts straight into
// its own IdArena: a list of 4 MiB blocks (huge pages where the kernel grants them), each part
// written at the end of the current block, which has room for its worst case (one id per byte);
// a part that does not fit starts the next block. No part is copied or moved until the final
// gather into the caller's output. Arenas are kept across calls in a small pool (one set of
// per-thread arenas per concurrent call), so a repeated batch call touches no fresh pages: the
// first version allocated a growable buffer per thread per call, and page faults plus its
// doubling copies cost ~15% of a 34 MB batch on one thread and serialized in the kernel.
constexpr size_t kBlockBytes = 4u << 20;
constexpr size_t kArenaKeepBytes = 64u << 20;  // an arena keeps at most this much across calls
constexpr size_t kPoolKeepBytes = 256u << 20;  // and a set this much in total (but 2 blocks per thread)

struct IdBlock {
  uint32_t* p = nullptr;
  size_t cap = 0;  // ids
};
IdBlock alloc_block(size_t ids) {
  constexpr size_t kHuge = 2u << 20;
  const size_t bytes = (ids * sizeof(uint32_t) + kHuge - 1) / kHuge * kHuge;
  void* p = std::aligned_alloc(kHuge, bytes);
  if (!p) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
  madvise(p, bytes, MADV_HUGEPAGE);  // advice only: 2 MiB pages mean 512x fewer first-touch faults
#endif
  return {static_cast<uint32_t*>(p), bytes / sizeof(uint32_t)};
}

struct IdArena {
  std::vector<IdBlock> blocks;
  size_t cur = 0, used = 0;  // this call writes blocks[cur] from ids[used]; blocks before cur are done
  IdArena() = default;
  IdArena(const IdArena&) = delete;
  IdArena& operator=(const IdArena&) = delete;
  ~IdArena() {
    for (auto& b : blocks) std::free(b.p);
  }
  // A pointer to room for k ids (contiguous); the caller then adds the ids it wrote to `used`.
  uint32_t* room(size_t k) {
    if (cur < blocks.size() && used + k <= blocks[cur].cap) return blocks[cur].p + used;
    size_t next = cur < blocks.size() && used ? cur + 1 : cur;
    // Kept blocks that are too small for this part (only after an oversized part) are skipped.
    while (next < blocks.size() && blocks[next].cap < k) ++next;
    if (next == blocks.size()) blocks.push_back(alloc_block(std::max(k, kBlockBytes / sizeof(uint32_t))));
    cur = next;
    used = 0;
    return blocks[cur].p;
  }
  // Start a new call; keep at most keep_bytes of blocks (one huge text must not pin memory).
  void reset(size_t keep_bytes) {
    size_t kept = 0, bytes = 0;
    for (auto& b : blocks) {
      if (bytes + b.cap * sizeof(uint32_t) <= keep_bytes) {
        bytes += b.cap * sizeof(uint32_t);
        blocks[kept++] = b;
      } else {
        std::free(b.p);
      }
    }
    blocks.resize(kept);
    cur = used = 0;
  }
};
using ArenaSet = tbb::enumerable_thread_specific<IdArena>;

// Sets of arenas not in use; a call takes one (or makes one) and gives it back when done.
class ArenaPool {
 public:
  std::unique_ptr<ArenaSet> take() {
    {
      std::lock_guard<std::mutex> g(mu_);
      if (!free_.empty()) {
        auto s = std::move(free_.back());
        free_.pop_back();
        return s;
      }
    }
    return std::make_unique<ArenaSet>();
  }
  void give(std::unique_ptr<ArenaSet> s) {
    // Memory kept between calls: up to kArenaKeepBytes per thread, and kPoolKeepBytes per set, so
    // 32 threads keep at most 256 MiB (8 MiB each) after a very large batch, not 2 GiB.
    const size_t n = std::max<size_t>(1, s->size());
    const size_t keep = std::max(2 * kBlockBytes, std::min(kArenaKeepBytes, kPoolKeepBytes / n));
    for (IdArena& a : *s) a.reset(keep);
    std::lock_guard<std::mutex> g(mu_);
    if (free_.size() < 2) free_.push_back(std::move(s));  // more than 2 concurrent batch calls: rare
  }

 private:
  std::mutex mu_;
  std::vector<std::unique_ptr<ArenaSet>> free_;
};
ArenaPool& arena_pool() {
  static ArenaPool* pool = new ArenaPool;  // never destroyed: no ordering issue at exit
  return *pool;
}

// A document longer than this is cut at safe points (hf::tok::safe_split_point) into parts that
// threads encode independently: one 650 KB file among 8 MB of batch would otherwise be one task
// that ends last and caps the speedup at ~7x on 16 cores. Consecutive short documents are grouped
// into work items of about this many bytes, so items are even in size: small enough to balance
// 32 threads on a few MB, large enough that the per-item overhead stays negligible.
constexpr size_t kPartBytes = 16 << 10;

struct FlatBatch {
  std::unique_ptr<ArenaSet> arenas = arena_pool().take();
  FlatBatch() = default;
  FlatBatch(const FlatBatch&) = delete;
  FlatBatch& operator=(const FlatBatch&) = delete;
  ~FlatBatch() { arena_pool().give(std::move(arenas)); }
  struct Part {
    size_t begin, end;  // byte range in its document
    const uint32_t* ids = nullptr;
    size_t len = 0;  // its ids, in some thread's arena
  };
  std::vector<Part> parts;
  std::vector<size_t> first;  // document d's parts are [first[d], first[d + 1])
  std::vector<size_t> len;    // ids per document
  std::vector<size_t> off;    // part k's ids go to [off[k], off[k + 1]) of the flat result
  std::vector<size_t> item;   // work item i is parts [item[i], item[i + 1])
  // Copies every part's ids to dst + off[k], in parallel over the work items (also even in size).
  void gather(uint32_t* dst, int num_threads) const {
    for_items((int64_t)item.size() - 1, num_threads, [&](int64_t it) {
      for (size_t k = item[it]; k < item[it + 1]; ++k)
        if (parts[k].len) std::memcpy(dst + off[k], parts[k].ids, parts[k].len * sizeof(uint32_t));
    });
  }
  template <class F>
  void for_each_part(size_t d, F&& f) const {  // f(ids, count), in document order
    for (size_t k = first[d]; k < first[d + 1]; ++k)
      if (parts[k].len) f(parts[k].ids, parts[k].len);
  }
};

// Encodes the batch into fb (the GIL is released inside). With allowed special tokens documents
// are not cut (a special token's text could straddle a cut).
void encode_flat(const Bpe& bpe, const BatchText& b, const std::vector<uint8_t>& mask, int num_threads, FlatBatch& fb) {
  const size_t n = b.views.size();
  const bool may_cut = std::none_of(mask.begin(), mask.end(), [](uint8_t x) { return x != 0; }) &&
                       bpe.pattern() != hf::tok::Pattern::custom;
  py::gil_scoped_release release;
  fb.first.assign(n + 1, 0);
  fb.len.assign(n, 0);
  // The cut points of the long documents, found in parallel: a safe point can lie far from where
  // a cut is wanted (a table of numbers may have no letter before a space for 90 KB); serially,
  // the scan took 2.5 ms of a 56 MB batch, whose whole 32-thread call takes ~15 ms on 32 cores.
  std::vector<size_t> long_docs;
  for (size_t d = 0; may_cut && d < n; ++d)
    if (b.views[d].size() > kPartBytes + kPartBytes / 2) long_docs.push_back(d);
  std::vector<std::vector<size_t>> cuts(long_docs.size());
  for_items((int64_t)long_docs.size(), num_threads, [&](int64_t i) {
    const std::string_view v = b.views[long_docs[i]];
    const auto* s = (const uint8_t*)v.data();
    for (size_t at = 0; v.size() - at > kPartBytes + kPartBytes / 2;) {
      const size_t cut = hf::tok::safe_split_point(s, v.size(), at + kPartBytes);
      if (cut >= v.size()) break;
      cuts[i].push_back(cut);
      at = cut;
    }
  });
  size_t n_parts = n;
  for (const auto& c : cuts) n_parts += c.size();
  fb.parts.clear();
  fb.parts.reserve(n_parts);
  std::vector<uint32_t> doc_of;  // document of each part
  doc_of.reserve(n_parts);
  for (size_t d = 0, li = 0; d < n; ++d) {  // O(parts)
    fb.first[d] = fb.parts.size();
    size_t at = 0;
    if (li < long_docs.size() && long_docs[li] == d) {
      for (size_t cut : cuts[li]) {
        fb.parts.push_back({at, cut});
        doc_of.push_back((uint32_t)d);
        at = cut;
      }
      ++li;
    }
    fb.parts.push_back({at, b.views[d].size()});
    doc_of.push_back((uint32_t)d);
  }
  fb.first[n] = fb.parts.size();
  // Work items: runs of consecutive parts of at most kPartBytes together (or one larger part).
  std::vector<size_t>& item = fb.item;
  item.assign(1, 0);
  for (size_t k = 0, bytes = 0; k < fb.parts.size(); ++k) {
    const size_t m = fb.parts[k].end - fb.parts[k].begin;
    if (bytes && bytes + m > kPartBytes) {
      item.push_back(k);
      bytes = 0;
    }
    bytes += m;
  }
  if (!fb.parts.empty()) item.push_back(fb.parts.size());
  for_items((int64_t)item.size() - 1, num_threads, [&](int64_t it) {
    IdArena& a = fb.arenas->local();
    for (size_t k = item[it]; k < item[it + 1]; ++k) {
      FlatBatch::Part& part = fb.parts[k];
      const auto* s = (const uint8_t*)b.views[doc_of[k]].data() + part.begin;
      const size_t m = part.end - part.begin;
      uint32_t* w = a.room(m + hf::tok::kEncodeSlack);
      const size_t c = bpe.encode_into(s, m, mask, w);
      part.ids = w;
      part.len = c;
      a.used += c;
    }
  });
  fb.off.resize(fb.parts.size() + 1);
  fb.off[0] = 0;
  for (size_t k = 0; k < fb.parts.size(); ++k) fb.off[k + 1] = fb.off[k] + fb.parts[k].len;
  for (size_t d = 0; d < n; ++d) fb.len[d] = fb.off[fb.first[d + 1]] - fb.off[fb.first[d]];
}

// mergeable_ranks: a dict bytes -> int, or an iterable of 2-item sequences (tuples, or lists as
// JSON gives them).
std::vector<std::pair<std::string, uint32_t>> ranks_of(const py::handle& obj) {
  std::vector<std::pair<std::string, uint32_t>> out;
  auto add = [&](const py::handle& k, const py::handle& v) {
    HF_CHECK(PyBytes_Check(k.ptr()), TypeError, "mergeable_ranks keys must be bytes, got " << type_name(k));
    const std::string key = k.cast<std::string>();
    long long r = 0;
    std::string text;
    if (!index_in(v, 0, hf::tok::kMaxTokenId, "mergeable_ranks value", r, text))
      HF_THROW(ValueError, "rank " << text << " of token " << py::repr(k).cast<std::string>()
                                   << " is out of range (ranks must be in [0, " << hf::tok::kMaxTokenId << "])");
    out.emplace_back(key, (uint32_t)r);
  };
  if (PyDict_Check(obj.ptr())) {
    for (auto kv : py::reinterpret_borrow<py::dict>(obj)) add(kv.first, kv.second);
    return out;
  }
  HF_CHECK(PyIter_Check(obj.ptr()) || PySequence_Check(obj.ptr()), TypeError,
           "mergeable_ranks must be a dict bytes -> int or an iterable of (bytes, int) pairs, got " << type_name(obj));
  for (auto item : py::reinterpret_borrow<py::iterable>(obj)) {
    HF_CHECK(PySequence_Check(item.ptr()) && !PyBytes_Check(item.ptr()) && !PyUnicode_Check(item.ptr()) &&
                 PySequence_Size(item.ptr()) == 2,
             TypeError, "mergeable_ranks items must be (bytes, int) pairs, got " << py::repr(item).cast<std::string>().substr(0, 60));
    py::sequence t = py::reinterpret_borrow<py::sequence>(item);
    add(t[0], t[1]);
  }
  return out;
}

// special_tokens: a dict str -> int; the text must be valid UTF-8 (no lone surrogates: unlike
// encoded text it is not repaired, since "\ufffd" as a special token is surely not meant).
std::vector<std::pair<std::string, uint32_t>> specials_of(const py::handle& obj) {
  HF_CHECK(PyDict_Check(obj.ptr()), TypeError, "special_tokens must be a dict str -> int, got " << type_name(obj));
  std::vector<std::pair<std::string, uint32_t>> out;
  for (auto kv : py::reinterpret_borrow<py::dict>(obj)) {
    HF_CHECK(PyUnicode_Check(kv.first.ptr()), TypeError, "special_tokens keys must be str, got " << type_name(kv.first));
    Py_ssize_t n = 0;
    const char* p = PyUnicode_AsUTF8AndSize(kv.first.ptr(), &n);
    if (!p) {
      PyErr_Clear();
      HF_THROW(ValueError, "special token " << py::repr(kv.first).cast<std::string>()
                                            << " is not valid Unicode text (it has a lone surrogate)");
    }
    long long id = 0;
    std::string text;
    const std::string what = "special token id of " + py::repr(kv.first).cast<std::string>();
    if (!index_in(kv.second, 0, hf::tok::kMaxTokenId, what, id, text))
      HF_THROW(ValueError, "special token " << py::repr(kv.first).cast<std::string>() << " has id " << text
                                            << ", out of range (ids must be in [0, " << hf::tok::kMaxTokenId << "])");
    out.emplace_back(std::string(p, (size_t)n), (uint32_t)id);
  }
  return out;
}

Registration reg("tokenizer", 30, [](py::module_& m) {
  m.attr("unicode_version") = std::string(hf::tok::kUnicodeVersion);
  m.def("pretokenize", [](const py::handle& text, const std::string& pattern) {
    py::object keep;
    auto v = utf8_of(text, "text", &keep);
    const Pattern p = hf::tok::pattern_from_name(pattern);
    std::vector<std::pair<size_t, size_t>> spans;
    {
      py::gil_scoped_release release;
      hf::tok::for_each_piece(p, (const uint8_t*)v.data(), v.size(), [&](size_t b, size_t e) { spans.emplace_back(b, e); });
    }
    py::list out;
    for (auto [b, e] : spans) out.append(py::bytes(v.data() + b, e - b));
    return out;
  }, py::arg("text"), py::arg("pattern"), "The pre-tokenizer pieces of text (as UTF-8 bytes) under a named pattern.");
  m.def("pretokenize_count", [](const py::handle& text, const std::string& pattern) {
    py::object keep;
    auto v = utf8_of(text, "text", &keep);
    const Pattern p = hf::tok::pattern_from_name(pattern);
    py::gil_scoped_release release;
    size_t n = 0;
    hf::tok::for_each_piece(p, (const uint8_t*)v.data(), v.size(), [&](size_t, size_t) { ++n; });
    return n;
  }, py::arg("text"), py::arg("pattern"), "Number of pre-tokenizer pieces (measures the scanner alone).");
  m.def("last_safe_split", [](const py::buffer& data, size_t start) {
    const py::buffer_info info = data.request();
    HF_CHECK(info.ndim == 1 && info.itemsize == 1, ValueError, "data must be 1-D bytes, got ndim " << info.ndim);
    const auto n = (size_t)info.shape[0];
    HF_CHECK(start <= n, ValueError, "start " << start << " is past the end of data (" << n << " bytes)");
    return hf::tok::last_safe_split_point((const uint8_t*)info.ptr, n, start);
  }, py::arg("data"), py::arg("start") = 0,
        "The last byte offset p in [start, len(data)) where the text may be cut with pre-tokenization of\n"
        "the halves equal to that of the whole under the named patterns, or len(data) if there is none.\n"
        "Decided by data[p-2:p+1] only, so a cut found in a prefix of a stream is safe in the whole.");
  m.def("pattern_regex", [](const std::string& name) { return std::string(hf::tok::pattern_regex(hf::tok::pattern_from_name(name))); });

  py::class_<Bpe, std::shared_ptr<Bpe>>(m, "BpeBase");
  py::class_<BpePy, Bpe, std::shared_ptr<BpePy>>(m, "Bpe")
      .def(py::init([](const py::handle& ranks, const std::string& pattern, const py::handle& specials) {
             auto r = ranks_of(ranks);
             const Pattern p = pattern == "custom" ? Pattern::custom : hf::tok::pattern_from_name(pattern);
             auto sp = specials_of(specials);
             std::sort(sp.begin(), sp.end());  // (the order the std::map gave before: by text)
             std::shared_ptr<BpePy> b;
             {
               py::gil_scoped_release release;
               b = std::make_shared<BpePy>(std::move(r), p, std::move(sp));
             }
             b->make_ints();
             return b;
           }),
           py::arg("ranks"), py::arg("pattern"), py::arg("specials"))
      .def_property_readonly("n_vocab", &Bpe::n_vocab)
      .def_property_readonly("n_ranks", &Bpe::n_ranks)
      .def_property_readonly("pattern", [](const Bpe& b) { return std::string(hf::tok::pattern_name(b.pattern())); })
      .def("ranks", [](const Bpe& b) {
        auto r = b.ranks();
        py::list out;
        for (auto& [k, v] : r) out.append(py::make_tuple(py::bytes(k), v));
        return out;
      })
      .def("specials", [](const Bpe& b) {
        py::list out;
        for (size_t i = 0; i < b.n_specials(); ++i) out.append(py::make_tuple(b.special_text(i), b.special_id(i)));
        return out;
      })
      .def("encode_ordinary", [](const BpePy& b, const py::handle& text) {
        const auto e = encode_to_scratch(b, text, nullptr);
        return to_list(b, e.ids, e.n);
      })
      .def("encode", [](const BpePy& b, const py::handle& text, const std::vector<bool>& allowed) {
        const auto mask = mask_of(allowed);
        const auto e = encode_to_scratch(b, text, &mask);
        return to_list(b, e.ids, e.n);
      })
      .def("encode_numpy", [](const Bpe& b, const py::handle& text, const std::vector<bool>& allowed) {
        const auto mask = mask_of(allowed);
        const auto e = encode_to_scratch(b, text, &mask);
        py::array_t<uint32_t> a((py::ssize_t)e.n);
        if (e.n) std::memcpy(a.mutable_data(), e.ids, e.n * 4);
        return a;
      })
      .def("count", [](const Bpe& b, const py::handle& text, const std::vector<bool>& allowed) {
        py::object keep;
        auto v = utf8_of(text, "text", &keep);
        auto mask = mask_of(allowed);
        py::gil_scoped_release release;
        const auto* s = (const uint8_t*)v.data();
        size_t total = 0, start = 0;
        for (;;) {  // specials count one each; spans in between are counted without a list
          size_t pos = 0;
          const int k = b.find_special(s, v.size(), start, mask, &pos);
          const size_t stop = k < 0 ? v.size() : pos;
          total += b.count_ordinary(s + start, stop - start);
          if (k < 0) break;
          total += 1;
          start = pos + b.special_text((size_t)k).size();
        }
        return total;
      })
      .def("find_special", [](const Bpe& b, const py::handle& text, const std::vector<bool>& mask) {
        py::object keep;
        auto v = utf8_of(text, "text", &keep);
        auto m = mask_of(mask);
        size_t pos = 0;
        int k;
        {
          py::gil_scoped_release release;
          k = b.find_special((const uint8_t*)v.data(), v.size(), 0, m, &pos);
        }
        return k;
      })
      .def("find_special_batch", [](const Bpe& b, const py::handle& texts, const std::vector<bool>& mask, int num_threads) {
        // The index of the first text holding a special token whose mask[i] is set, or -1: the
        // disallowed-special check of encode_batch, in parallel (serial, it scanned the whole
        // batch at ~3 GB/s while the encode ran at ~0.2 GB/s per thread: a third of the time of
        // a 16-thread batch). Texts are scanned in chunks of 64 KB that overlap by the longest
        // special text, so a special token across a chunk boundary is still found.
        BatchText bt = batch_of(texts);
        const auto m = mask_of(mask);
        size_t longest = 0;
        for (size_t i = 0; i < b.n_specials() && i < m.size(); ++i)
          if (m[i]) longest = std::max(longest, b.special_text(i).size());
        if (!longest) return (int64_t)-1;
        py::gil_scoped_release release;
        constexpr size_t kChunk = 64 << 10;
        std::vector<std::pair<uint32_t, size_t>> chunks;  // (text, start)
        for (size_t d = 0; d < bt.views.size(); ++d)
          for (size_t at = 0; at == 0 || at < bt.views[d].size(); at += kChunk) chunks.emplace_back((uint32_t)d, at);
        std::atomic<int64_t> first{-1};
        for_items((int64_t)chunks.size(), num_threads, [&](int64_t c) {
          const auto [d, at] = chunks[c];
          const int64_t f = first.load(std::memory_order_relaxed);
          if (f >= 0 && f <= (int64_t)d) return;  // an earlier text already has one
          const auto v = bt.views[d];
          const size_t end = std::min(v.size(), at + kChunk + longest - 1);
          size_t pos = 0;
          if (b.find_special((const uint8_t*)v.data(), end, at, m, &pos) < 0 || pos >= at + kChunk) return;
          int64_t cur = first.load();
          while ((cur < 0 || cur > (int64_t)d) && !first.compare_exchange_weak(cur, (int64_t)d)) {
          }
        });
        return first.load();
      }, py::arg("texts"), py::arg("mask"), py::arg("num_threads"))
      .def("encode_pieces", [](const BpePy& b, const py::handle& pieces) {
        BatchText bt = batch_of(pieces);
        std::vector<uint32_t> out;
        {
          py::gil_scoped_release release;
          for (auto v : bt.views) b.encode_piece((const uint8_t*)v.data(), v.size(), out);
        }
        return to_list(b, out);
      })
      .def("encode_batch", [](const BpePy& b, const py::handle& texts, const std::vector<bool>& allowed, int num_threads) {
        BatchText bt = batch_of(texts);
        FlatBatch fb;
        encode_flat(b, bt, mask_of(allowed), num_threads, fb);
        const size_t n = bt.views.size();
        PyObject* l = PyList_New((Py_ssize_t)n);
        if (!l) throw py::error_already_set();
        py::list out = py::reinterpret_steal<py::list>(l);
        for (size_t i = 0; i < n; ++i) {
          PyObject* li = PyList_New((Py_ssize_t)fb.len[i]);
          if (!li) throw py::error_already_set();
          PyObject** slot = reinterpret_cast<PyListObject*>(li)->ob_item;
          fb.for_each_part(i, [&](const uint32_t* v, size_t c) { fill_ints(b, slot, v, c); slot += c; });
          PyList_SET_ITEM(l, (Py_ssize_t)i, li);
        }
        return out;
      })
      .def("encode_batch_flat", [](const Bpe& b, const py::handle& texts, const std::vector<bool>& allowed, int num_threads) {
        BatchText bt = batch_of(texts);
        FlatBatch fb;
        encode_flat(b, bt, mask_of(allowed), num_threads, fb);
        const size_t n = bt.views.size();
        py::array_t<int64_t> offsets((py::ssize_t)n + 1);
        int64_t* o = offsets.mutable_data();
        o[0] = 0;
        for (size_t i = 0; i < n; ++i) o[i + 1] = o[i] + (int64_t)fb.len[i];
        py::array_t<uint32_t> ids((py::ssize_t)o[n]);
        uint32_t* d = ids.mutable_data();
        {
          py::gil_scoped_release release;
          fb.gather(d, num_threads);
        }
        return py::make_tuple(ids, offsets);
      })
      .def("decode_bytes", [](const Bpe& b, const py::handle& ids) {
        auto v = ids_of(ids, b.n_vocab());
        std::string out;
        {
          py::gil_scoped_release release;
          b.decode(v.data(), v.size(), out);
        }
        return py::bytes(out);
      })
      .def("token_bytes", [](const Bpe& b, const py::handle& id) {
        auto s = b.token_bytes(id_of(id, b));
        return py::bytes(s.data(), s.size());
      })
      .def("valid_id", [](const Bpe& b, long long id) { return id >= 0 && id <= 0xFFFFFFFFll && b.valid_id((uint32_t)id); })
      .def("rank_of", [](const Bpe& b, const py::bytes& k) { return b.rank_of(std::string_view(k)); })
      .def("merge_below", [](const Bpe& b, const py::bytes& k, uint32_t max_rank) {
        std::string_view s(k);
        std::vector<uint32_t> out;
        b.merge_below((const uint8_t*)s.data(), s.size(), max_rank, out);
        return to_list(out);
      });

  py::class_<Trainer>(m, "BpeTrainer")
      .def(py::init([](const std::string& pattern, std::vector<std::string> specials) {
             const Pattern p = pattern == "custom" ? Pattern::custom : hf::tok::pattern_from_name(pattern);
             return std::make_unique<Trainer>(p, std::move(specials));
           }),
           py::arg("pattern"), py::arg("specials"))
      .def("feed", [](Trainer& t, const py::handle& docs) {
        BatchText bt = batch_of(docs);
        py::gil_scoped_release release;
        t.feed(bt.views);
      })
      .def("feed_pieces", [](Trainer& t, const py::handle& pieces) {
        BatchText bt = batch_of(pieces);
        py::gil_scoped_release release;
        t.feed_pieces(bt.views);
      })
      .def("start", [](Trainer& t, size_t n_merges, int64_t min_frequency) {
        py::gil_scoped_release release;
        t.start(n_merges, min_frequency);
      })
      .def("step", [](Trainer& t, size_t k) {
        py::gil_scoped_release release;
        return t.step(k);
      })
      .def_property_readonly("merges_done", &Trainer::merges_done)
      .def_property_readonly("finished", &Trainer::finished)
      .def_property_readonly("distinct_pieces", &Trainer::distinct_pieces)
      .def_property_readonly("total_pieces", &Trainer::total_pieces)
      .def_property_readonly("total_bytes", &Trainer::total_bytes)
      .def("memory_bytes", &Trainer::memory_bytes)
      .def("merges", [](const Trainer& t) {
        py::list out;
        for (auto& x : t.merges()) out.append(py::make_tuple(x.a, x.b, x.c, x.count));
        return out;
      })
      .def("ranks", [](const Trainer& t) {
        auto r = t.ranks();
        py::list out;
        for (auto& [k, v] : r) out.append(py::make_tuple(py::bytes(k), v));
        return out;
      });
});

}  // namespace
}  // namespace hf_bind

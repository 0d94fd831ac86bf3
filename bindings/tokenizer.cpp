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

#include <algorithm>
#include <memory>

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

// ids: a sequence of int or an integer numpy array -> uint32, range-checked.
std::vector<uint32_t> ids_of(const py::handle& obj, uint32_t n_vocab) {
  std::vector<uint32_t> out;
  auto bad = [&](long long v, size_t i) {
    throw hf::ValueError("token id " + std::to_string(v) + " at position " + std::to_string(i) +
                         " is not in the vocabulary (n_vocab " + std::to_string(n_vocab) + ")");
  };
  if (py::isinstance<py::array>(obj)) {
    py::array a = py::reinterpret_borrow<py::array>(obj);
    const char kind = a.dtype().kind();
    HF_CHECK(kind == 'i' || kind == 'u', TypeError, "ids must be integers, got a numpy array of " << dtype_str(a));
    HF_CHECK(a.ndim() <= 1, ValueError, "ids must be 1-D, got shape " << shape_str(a));
    py::array_t<int64_t, py::array::c_style | py::array::forcecast> b(a);
    out.resize((size_t)b.size());
    const int64_t* d = b.data();
    for (size_t i = 0; i < out.size(); ++i) {
      if (d[i] < 0 || d[i] > (int64_t)0xFFFFFFFF) bad(d[i], i);
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
    if (!PyLong_Check(v.ptr()) || PyBool_Check(v.ptr()))
      throw hf::TypeError("ids must be int, got " + py::str(py::type::handle_of(v).attr("__name__")).cast<std::string>() +
                          " at position " + std::to_string(i));
    int overflow = 0;
    const long long x = PyLong_AsLongLongAndOverflow(v.ptr(), &overflow);
    if (overflow || x < 0 || x > 0xFFFFFFFFll) bad(overflow ? -1 : x, i);
    out[i] = (uint32_t)x;
  }
  return out;
}

// Runs f(i) for i in [0, n) on the shared arena, or on a smaller arena of num_threads.
template <class F>
void for_items(int64_t n, int num_threads, F&& f) {
  auto body = [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) f(i);
  };
  if (num_threads <= 0 || num_threads >= hf::num_threads() || hf::parallel_backend() == hf::Backend::serial) {
    hf::parallel_for(0, n, 1, body);
    return;
  }
  if (num_threads == 1) { body(0, n); return; }
  tbb::task_arena arena(num_threads);
  arena.execute([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, n, 1), [&](const tbb::blocked_range<int64_t>& r) { body(r.begin(), r.end()); });
  });
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

// Batch encoding without per-document allocations: each worker thread appends the tokens of the
// documents it encodes to its own growable buffer (one allocation per doubling), and records
// where each document's tokens are; the flat result is then one prefix sum over the counts and
// one parallel copy. (Per-document std::vectors and a serial concatenation capped the scaling.)
struct IdArena {
  std::unique_ptr<uint32_t[]> p;  // uninitialized
  size_t cap = 0, used = 0;
  uint32_t* room(size_t k) {  // pointer to at least k free ids after the used ones
    if (used + k > cap) {
      const size_t c = std::max({2 * cap, used + k, (size_t)1 << 16});
      std::unique_ptr<uint32_t[]> q(new uint32_t[c]);
      if (used) std::memcpy(q.get(), p.get(), used * sizeof(uint32_t));
      p.swap(q);
      cap = c;
    }
    return p.get() + used;
  }
};
// A document longer than this is cut at safe points (hf::tok::safe_split_point) into parts that
// threads encode independently: one 650 KB file among 8 MB of batch would otherwise be one task
// that ends last and caps the speedup at ~7x on 16 cores. Parts are small enough to balance,
// large enough that the per-part overhead (one scratch fetch, one copy) stays negligible.
constexpr size_t kPartBytes = 32 << 10;

struct FlatBatch {
  tbb::enumerable_thread_specific<IdArena> arenas;
  struct Part {
    size_t begin, end;  // byte range in its document
    const IdArena* arena = nullptr;
    size_t off = 0, len = 0;  // where its ids are in that arena
  };
  std::vector<Part> parts;
  std::vector<size_t> first;  // document d's parts are [first[d], first[d + 1])
  std::vector<size_t> len;    // ids per document
  template <class F>
  void for_each_part(size_t d, F&& f) const {  // f(ids, count), in document order
    for (size_t k = first[d]; k < first[d + 1]; ++k)
      if (parts[k].len) f(parts[k].arena->p.get() + parts[k].off, parts[k].len);
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
  fb.parts.clear();
  fb.parts.reserve(n);
  for (size_t d = 0; d < n; ++d) {  // O(total bytes / kPartBytes) memchr probes, serial: cheap
    fb.first[d] = fb.parts.size();
    const auto* s = (const uint8_t*)b.views[d].data();
    const size_t m = b.views[d].size();
    size_t at = 0;
    while (may_cut && m - at > 2 * kPartBytes) {
      const size_t cut = hf::tok::safe_split_point(s, m, at + kPartBytes);
      if (cut >= m) break;
      fb.parts.push_back({at, cut});
      at = cut;
    }
    fb.parts.push_back({at, m});
  }
  fb.first[n] = fb.parts.size();
  std::vector<size_t> doc_of(fb.parts.size());
  for (size_t d = 0; d < n; ++d)
    for (size_t k = fb.first[d]; k < fb.first[d + 1]; ++k) doc_of[k] = d;
  for_items((int64_t)fb.parts.size(), num_threads, [&](int64_t k) {
    IdArena& a = fb.arenas.local();
    FlatBatch::Part& part = fb.parts[k];
    const auto* s = (const uint8_t*)b.views[doc_of[k]].data() + part.begin;
    const size_t m = part.end - part.begin;
    // Encode into the thread's reused scratch buffer (room for the worst case, one id per byte,
    // in pages already mapped), then keep only the actual ids (about 1/4 of that): the arena
    // grows, and faults in fresh pages, by the output's size alone.
    uint32_t* w = scratch(m + hf::tok::kEncodeSlack);
    const size_t c = bpe.encode_into(s, m, mask, w);
    if (c) std::memcpy(a.room(c), w, c * sizeof(uint32_t));
    part.arena = &a;
    part.off = a.used;
    part.len = c;
    a.used += c;
  });
  for (size_t d = 0; d < n; ++d)
    for (size_t k = fb.first[d]; k < fb.first[d + 1]; ++k) fb.len[d] += fb.parts[k].len;
}

std::vector<std::pair<std::string, uint32_t>> ranks_of(const py::handle& obj) {
  std::vector<std::pair<std::string, uint32_t>> out;
  auto add = [&](const py::handle& k, const py::handle& v) {
    HF_CHECK(PyBytes_Check(k.ptr()), TypeError, "mergeable_ranks keys must be bytes");
    HF_CHECK(PyLong_Check(v.ptr()), TypeError, "mergeable_ranks values must be int");
    const long long r = v.cast<long long>();
    HF_CHECK(r >= 0 && r <= (long long)hf::tok::kMaxTokenId, ValueError, "rank " << r << " is out of range");
    out.emplace_back(k.cast<std::string>(), (uint32_t)r);
  };
  if (PyDict_Check(obj.ptr())) {
    for (auto kv : py::reinterpret_borrow<py::dict>(obj)) add(kv.first, kv.second);
  } else {
    for (auto item : py::reinterpret_borrow<py::iterable>(obj)) {
      py::tuple t = py::reinterpret_borrow<py::tuple>(item);
      add(t[0], t[1]);
    }
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
  m.def("pattern_regex", [](const std::string& name) { return std::string(hf::tok::pattern_regex(hf::tok::pattern_from_name(name))); });

  py::class_<Bpe, std::shared_ptr<Bpe>>(m, "BpeBase");
  py::class_<BpePy, Bpe, std::shared_ptr<BpePy>>(m, "Bpe")
      .def(py::init([](const py::handle& ranks, const std::string& pattern, const std::map<std::string, uint32_t>& specials) {
             auto r = ranks_of(ranks);
             const Pattern p = pattern == "custom" ? Pattern::custom : hf::tok::pattern_from_name(pattern);
             std::vector<std::pair<std::string, uint32_t>> sp(specials.begin(), specials.end());
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
          for_items((int64_t)n, num_threads, [&](int64_t i) {
            uint32_t* w = d + o[i];
            fb.for_each_part(i, [&](const uint32_t* v, size_t c) { std::memcpy(w, v, c * sizeof(uint32_t)); w += c; });
          });
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
      .def("token_bytes", [](const Bpe& b, long long id) {
        HF_CHECK(id >= 0 && id <= 0xFFFFFFFFll && b.valid_id((uint32_t)id), ValueError,
                 "token id " << id << " is not in the vocabulary (n_vocab " << b.n_vocab() << ")");
        auto s = b.token_bytes((uint32_t)id);
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

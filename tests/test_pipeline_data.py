"""Data preparation and the loader, checked against an independent tokenizer (HF tokenizers)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from homeforge import data
from homeforge.data import PrepareConfig, TokenLoader, clean_lines, prepare
from homeforge.shards import read_shard, write_shard

from _pipeline_util import EOT, HFByteTokenizer

pytest.importorskip("tokenizers", reason="HF tokenizers (the reference tokenizer of these tests) is not installed")


def _expected_clean(text: str) -> str:
    # The cleaning rules written out independently: normalise newlines, drop whitespace-only lines.
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "".join(line + "\n" for line in lines if line.strip() != "")


@given(st.text(alphabet=st.sampled_from("ab é\r\n\t語"), max_size=60))
@settings(max_examples=200, deadline=None)
def test_clean_lines_matches_the_rules(text):
    lines = clean_lines(text)
    assert "".join(lines) == _expected_clean(text)
    assert all(ln.endswith("\n") and "\r" not in ln and ln.strip() for ln in lines)


@pytest.fixture(scope="module")
def tok():
    corpus = ["def f(x):\n    return x + 1\n", "héllo wörld, 日本語のテキスト 🙂\n", "plain english prose. " * 20]
    return HFByteTokenizer(corpus, vocab_size=400)


def _corpus(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / ".hidden").mkdir()
    (src / ".hidden" / "x.txt").write_text("never read\n")
    (src / "a.txt").write_bytes(b"first line\r\nsecond\r\n\r\n   \n\xff\xfe broken\nlast \xe2\x82\xac line\rcr line\n")
    (src / "sub" / "b.txt").write_bytes(b"first line\nsecond\nlast \xe2\x82\xac line\ncr line\n")  # == a.txt cleaned
    (src / "sub" / "c.txt").write_text("日本語 🙂 text\n\n\ncombining e\u0301\n", encoding="utf-8")
    recs = [{"text": "json doc one\r\nwith two lines"}, "not an object", {"text": "json doc one\nwith two lines"},
            {"other": 1}, {"text": "   \n  "}, {"text": "json doc two"}]
    lines = [json.dumps(r) for r in recs] + ["{broken json"]
    (src / "d.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    expected_docs = [
        "first line\nsecond\nlast € line\ncr line\n",          # a.txt (bad line dropped)
        "json doc one\nwith two lines\n", "json doc two\n",     # d.jsonl
        "日本語 🙂 text\ncombining e\u0301\n",                   # sub/c.txt ; sub/b.txt is a duplicate of a.txt
    ]
    return src, expected_docs


def _docs_from_shards(out, m, tok, split):
    ids = [read_shard(out / s["file"], verify=True) for s in m["splits"][split]["shards"]]
    stream = np.concatenate(ids).tolist() if ids else []
    docs, cur = [], []
    for t in stream:
        if t == tok.eot_token:
            docs.append(tok.decode(cur))
            cur = []
        else:
            cur.append(t)
    assert cur == [], "every document ends with <|endoftext|>"
    return docs


def test_prepare_round_trip_cleaning_dedup_and_report(tmp_path, tok):
    src, expected = _corpus(tmp_path)
    out = tmp_path / "out"
    m = prepare([src], out, tok, config=PrepareConfig(val_fraction=0.0, chunk_bytes=20))
    assert _docs_from_shards(out, m, tok, "train") == expected
    c = m["counts"]
    assert c["docs"] == 4 and c["duplicates"] == 2  # sub/b.txt and the second "json doc one"
    bad = m["bad_lines"]
    assert c["bad_lines"] == len(bad) == 4
    assert any(b.startswith(f"{src / 'a.txt'}:5: invalid UTF-8") for b in bad)
    assert any(b.startswith(f"{src / 'd.jsonl'}:2:") for b in bad)     # not an object
    assert any(b.startswith(f"{src / 'd.jsonl'}:4:") for b in bad)     # no "text" field
    assert any(b.startswith(f"{src / 'd.jsonl'}:7: invalid JSON") for b in bad)
    assert m["tokenizer_hash"] == tok.hash() and m["vocab_size"] == tok.n_vocab
    assert [s["path"] for s in m["sources"]] == [str(src / n) for n in ("a.txt", "d.jsonl", "sub/b.txt", "sub/c.txt")]
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["splits"] == m["splits"]
    assert not (out / ".progress.json").exists()
    # same inputs again: the finished manifest comes back; other settings: a clear error
    assert prepare([src], out, tok, config=PrepareConfig(val_fraction=0.0, chunk_bytes=20))["splits"] == m["splits"]
    with pytest.raises(ValueError, match="other inputs or settings"):
        prepare([src], out, tok, config=PrepareConfig(val_fraction=0.5))


def test_prepare_into_a_folder_inside_the_input_skips_its_own_output(tmp_path, tok):
    src, expected = _corpus(tmp_path)
    out = src / "prepared"
    cfg = PrepareConfig(val_fraction=0.0, chunk_bytes=20)
    m = prepare([src], out, tok, config=cfg)
    assert _docs_from_shards(out, m, tok, "train") == expected
    # again: the finished manifest (its own shards are not new inputs); with overwrite: the same data again
    assert prepare([src], out, tok, config=cfg)["splits"] == m["splits"]
    m2 = prepare([src], out, tok, config=cfg, overwrite=True)
    assert _docs_from_shards(out, m2, tok, "train") == expected
    assert all(not s["path"].startswith(str(out)) for s in m2["sources"])


def test_prepare_inputs_inside_the_output_folder(tmp_path, tok):
    """prepare data/raw --out data: the inputs lie inside the output folder; they are read, and only
    the files prepare itself writes there are skipped (so a second run changes nothing)."""
    src, expected = _corpus(tmp_path / "data")
    out = tmp_path / "data"
    cfg = PrepareConfig(val_fraction=0.0, chunk_bytes=20)
    m = prepare([src], out, tok, config=cfg)
    assert _docs_from_shards(out, m, tok, "train") == expected
    m2 = prepare([out], out, tok, config=cfg, overwrite=True)  # the whole folder: its shards are not inputs
    assert _docs_from_shards(out, m2, tok, "train") == expected


def test_split_is_by_document_hash(tmp_path, tok):
    docs = [f"document number {i}\nwith body {i * 7}\n" for i in range(300)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"body": d}) + "\n" for d in docs))
    m = prepare([tmp_path / "in.jsonl"], tmp_path / "out", tok,
                config=PrepareConfig(val_fraction=0.25, jsonl_field="body", chunk_bytes=500))
    val = _docs_from_shards(tmp_path / "out", m, tok, "val")
    train = _docs_from_shards(tmp_path / "out", m, tok, "train")
    # Independent rule: first 8 bytes of blake2b-128 as a little-endian fraction of 2**64.
    want_val = [d for d in docs if int.from_bytes(hashlib.blake2b(d.encode(), digest_size=16).digest()[:8], "little") < 0.25 * 2**64]
    assert val == want_val and train == [d for d in docs if d not in want_val]
    assert 40 < len(val) < 110


def test_prepare_resumes_to_identical_shards(tmp_path, tok):
    src, _ = _corpus(tmp_path)
    cfg = PrepareConfig(val_fraction=0.3, chunk_bytes=16, shard_tokens=7)
    whole = prepare([src], tmp_path / "whole", tok, config=cfg)
    assert whole["chunks"] >= 3
    for stop in range(1, whole["chunks"]):
        out = tmp_path / f"part{stop}"
        assert prepare([src], out, tok, config=cfg, _stop_after_chunks=stop) == {}
        assert (out / ".progress.json").exists() and not (out / "manifest.json").exists()
        with pytest.raises(ValueError, match="did not finish"):
            TokenLoader(out, seq_len=2, batch_size=1)
        resumed = prepare([src], out, tok, config=cfg)
        assert resumed["splits"] == whole["splits"] and resumed["counts"] == whole["counts"]
        for split in ("train", "val"):
            for s in whole["splits"][split]["shards"]:
                assert (out / s["file"]).read_bytes() == (tmp_path / "whole" / s["file"]).read_bytes()


def _expected_units(raw: bytes, doc_unit: str) -> list[str]:
    # Independent rules: newlines normalised; "line": every non-blank line; "paragraph": runs of
    # non-blank lines separated by blank ones.
    lines = raw.decode().replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if doc_unit == "line":
        return [ln + "\n" for ln in lines if ln.strip()]
    paras, cur = [], []
    for ln in lines + [""]:
        if ln.strip():
            cur.append(ln + "\n")
        elif cur:
            paras.append("".join(cur))
            cur = []
    return paras


@pytest.mark.parametrize("doc_unit,raw", [
    ("line", b"".join(b"l%03da\rl%03db\rl%03dc\n" % (i, i, i) for i in range(50))),
    ("paragraph", b"".join(b"a%02d\r\rb%02d\n" % (i, i) for i in range(30))),
    ("paragraph", b"p1\rp1b\r\r\rp2\r\nx\r\n\rq\r"),
])
@pytest.mark.parametrize("chunk_bytes", [1, 5, 7, 13, 64, 1 << 20])
def test_lone_cr_lines_survive_any_chunk_size(tmp_path, tok, doc_unit, raw, chunk_bytes):
    # A chunk may end after any piece of a physical line that lone \r splits: nothing may be lost.
    (tmp_path / "in.txt").write_bytes(raw)
    out = tmp_path / "out"
    m = prepare([tmp_path / "in.txt"], out, tok,
                config=PrepareConfig(doc_unit=doc_unit, chunk_bytes=chunk_bytes, val_fraction=0.0))
    want = _expected_units(raw, doc_unit)
    assert _docs_from_shards(out, m, tok, "train") == want
    assert m["splits"]["train"]["docs"] == len(want)
    assert m["counts"]["bytes_in"] == len(raw)


def _hash_fraction(doc: str) -> float:
    return int.from_bytes(hashlib.blake2b(doc.encode(), digest_size=16).digest()[:8], "little") / 2**64


def test_all_or_nothing_split_of_few_documents_is_reported(tmp_path, tok):
    # One small file with doc_unit="file" is one document: it goes whole to one split.
    doc = next(d for d in (f"only document {i}\nsecond line\n" for i in range(100)) if 0.2 < _hash_fraction(d) < 0.8)
    (tmp_path / "one.txt").write_text(doc)
    f = _hash_fraction(doc)
    with pytest.raises(ValueError, match=r"empty train split: all 1 document.*--doc-unit.*--val-fraction"):
        prepare([tmp_path / "one.txt"], tmp_path / "o1", tok, config=PrepareConfig(val_fraction=f + 0.1))
    assert not (tmp_path / "o1" / "manifest.json").exists() and not any((tmp_path / "o1").glob("*.bin"))
    m = prepare([tmp_path / "one.txt"], tmp_path / "o2", tok, config=PrepareConfig(val_fraction=f - 0.1))
    assert m["splits"]["val"]["docs"] == 0 and m["splits"]["train"]["docs"] == 1
    assert len(m["warnings"]) == 1 and "validation split is empty" in m["warnings"][0]
    m = prepare([tmp_path / "one.txt"], tmp_path / "o3", tok, config=PrepareConfig(val_fraction=0.0))
    assert m["warnings"] == []
    # the suggested fix: smaller documents
    lines = [f"line number {i}\n" for i in range(200)]
    (tmp_path / "many.txt").write_text("".join(lines))
    m = prepare([tmp_path / "many.txt"], tmp_path / "o4", tok, config=PrepareConfig(doc_unit="line", val_fraction=0.3))
    want_val = sum(_hash_fraction(ln) < 0.3 for ln in lines)
    assert m["splits"]["val"]["docs"] == want_val and m["splits"]["train"]["docs"] == 200 - want_val
    assert m["warnings"] == []


def test_a_string_include_is_one_pattern(tmp_path, tok):
    (tmp_path / "src" / "sub").mkdir(parents=True)
    for name in ("a.py", "b.txt", "sub/c.py", "sub/d.md"):
        (tmp_path / "src" / name).write_text(f"text of {name}\n")
    want = sorted(["a.py", "sub/c.py"])
    for include in ("*.py", ["*.py"], ("*.py",)):
        got = data.expand_inputs([tmp_path / "src"], include=include)
        assert sorted(p.relative_to(tmp_path / "src").as_posix() for p in got) == want, include
    assert PrepareConfig(include="*.py").include == ("*.py",)
    m = prepare([tmp_path / "src"], tmp_path / "out", tok, config=PrepareConfig(include="*.py", val_fraction=0.0))
    assert sorted(_docs_from_shards(tmp_path / "out", m, tok, "train")) == ["text of a.py\n", "text of sub/c.py\n"]
    with pytest.raises(TypeError, match="include must be a glob string"):
        data.expand_inputs([tmp_path / "src"], include=[3])
    # a string exclude is one folder, not its characters (the character "/" would exclude everything)
    got = data.expand_inputs(str(tmp_path / "src"), exclude=str(tmp_path / "src" / "sub"))
    assert sorted(p.name for p in got) == ["a.py", "b.txt"]


def test_a_single_path_is_accepted_as_inputs(tmp_path, tok):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("alpha\n")
    for inputs in (str(tmp_path / "src"), tmp_path / "src", str(tmp_path / "src" / "a.txt")):
        m = prepare(inputs, tmp_path / "out", tok, config=PrepareConfig(val_fraction=0.0), overwrite=True)
        assert _docs_from_shards(tmp_path / "out", m, tok, "train") == ["alpha\n"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError) as e:
        prepare(str(tmp_path / "empty"), tmp_path / "o2", tok)
    assert f"no input files found in {tmp_path / 'empty'}" in str(e.value) and "['/'" not in str(e.value)
    with pytest.raises(TypeError, match="inputs must be a path or a list of paths"):
        prepare(3, tmp_path / "o2", tok)


@pytest.mark.parametrize("doc_unit", ["file", "paragraph", "line"])
def test_a_leading_bom_is_not_text_and_empty_records_are_counted(tmp_path, tok, doc_unit):
    bom = "\ufeff".encode()
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(bom + b"same text\n")
    (src / "b.txt").write_bytes(b"same text\n")  # the BOM copy and this one are duplicates
    recs = [{"text": "first record"}, {"text": "   \n\t"}, {"text": ""}, {"text": "second record"}]
    (src / "c.jsonl").write_bytes(bom + b"".join(json.dumps(r).encode() + b"\n" for r in recs))
    m = prepare([src], tmp_path / "out", tok, config=PrepareConfig(doc_unit=doc_unit, val_fraction=0.0))
    assert _docs_from_shards(tmp_path / "out", m, tok, "train") == ["same text\n", "first record\n", "second record\n"]
    c = m["counts"]
    assert c["bad_lines"] == 0 and m["bad_lines"] == [] and c["duplicates"] == 1 and c["empty_records"] == 2
    assert c["bytes_in"] == sum(f.stat().st_size for f in src.iterdir())


def test_prepare_errors(tmp_path, tok):
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        prepare([tmp_path / "missing.txt"], tmp_path / "o1", tok)
    with pytest.raises(FileNotFoundError, match="no files match"):
        prepare([str(tmp_path / "*.nothing")], tmp_path / "o1", tok)
    (tmp_path / "empty.txt").write_bytes(b"\n  \n\r\n\xff\n")
    with pytest.raises(ValueError, match="empty corpus"):
        prepare([tmp_path / "empty.txt"], tmp_path / "o2", tok)
    assert not (tmp_path / "o2" / "manifest.json").exists() and not any((tmp_path / "o2").glob("*.bin"))

    class NoEot(HFByteTokenizer):
        eot_token = None

    t2 = NoEot.__new__(NoEot)
    t2.__dict__.update(tok.__dict__)
    t2.eot_token = None
    (tmp_path / "ok.txt").write_text("fine\n")
    with pytest.raises(ValueError, match="endoftext"):
        prepare([tmp_path / "ok.txt"], tmp_path / "o3", t2)
    with pytest.raises(ValueError, match="doc_unit"):
        prepare([tmp_path / "ok.txt"], tmp_path / "o3", tok, config=PrepareConfig(doc_unit="page"))
    with pytest.raises(ValueError, match="shard_tokens .*--shard-tokens.* at most 4294967296"):
        prepare([tmp_path / "ok.txt"], tmp_path / "o3", tok, config=PrepareConfig(shard_tokens=10**12))
    with pytest.raises(FileNotFoundError, match="no prepared data"):
        TokenLoader(tmp_path / "o3", seq_len=4, batch_size=1)
    (tmp_path / "o4").mkdir()
    with pytest.raises(FileNotFoundError, match="no prepared data"):
        TokenLoader(tmp_path / "o4", seq_len=4, batch_size=1)


# ---------------------------------------------------------------------------------------------- loader


def _shards(tmp_path, sizes, vocab=1000):
    rng = np.random.default_rng(0)
    paths, parts = [], []
    for i, n in enumerate(sizes):
        t = rng.integers(0, vocab, n)
        p = tmp_path / f"train_{i:06d}.bin"
        write_shard(p, t, vocab, "ef" * 32)
        paths.append(p)
        parts.append(t)
    return paths, np.concatenate(parts)


def test_loader_windows_are_the_packed_stream(tmp_path):
    paths, stream = _shards(tmp_path, [37, 5, 60, 1, 29])
    T = 8
    L = TokenLoader(paths, seq_len=T, batch_size=3, seed=7)
    assert L.n_windows == (stream.size - 1) // T
    seen = []
    for _ in range(L.n_windows // 3):
        x, y = L.next_batch()
        assert x.shape == y.shape == (3, T) and x.dtype == data.TOKEN_DTYPE
        for row_x, row_y in zip(x, y):
            # find the window: every window starts at a multiple of T in the concatenated stream
            starts = [w for w in range(L.n_windows) if np.array_equal(stream[w * T:w * T + T], row_x)]
            assert starts, "a row that is not a window of the stream"
            w = starts[0]
            assert np.array_equal(stream[w * T + 1:w * T + T + 1], row_y)
            seen.append(w)
    assert len(set(seen)) == len(seen)  # one epoch: no window twice


def test_loader_ranks_are_disjoint_and_union_is_single_process(tmp_path):
    paths, _ = _shards(tmp_path, [500, 300])
    W, B, T = 3, 2, 10
    single = TokenLoader(paths, seq_len=T, batch_size=B * W, seed=3)
    ranks = [TokenLoader(paths, seq_len=T, batch_size=B, seed=3, rank=r, world_size=W) for r in range(W)]
    for _ in range(30):  # several epochs
        x1, y1 = single.next_batch()
        parts = [rk.next_batch() for rk in ranks]
        assert np.array_equal(np.concatenate([p[0] for p in parts]), x1)
        assert np.array_equal(np.concatenate([p[1] for p in parts]), y1)
    # a different seed gives a different order; the same seed the same
    a = TokenLoader(paths, seq_len=T, batch_size=4, seed=3).next_batch()[0]
    b = TokenLoader(paths, seq_len=T, batch_size=4, seed=4).next_batch()[0]
    c = TokenLoader(paths, seq_len=T, batch_size=4, seed=3).next_batch()[0]
    assert not np.array_equal(a, b) and np.array_equal(a, c)


def test_loader_position_round_trips_exactly(tmp_path):
    paths, _ = _shards(tmp_path, [400])
    L = TokenLoader(paths, seq_len=16, batch_size=5, seed=1)
    for _ in range(7):  # crosses an epoch (24 windows, 5 per step)
        L.next_batch()
    sd = json.loads(json.dumps(L.state_dict()))  # survives JSON
    want = [L.next_batch() for _ in range(9)]
    M = TokenLoader(paths, seq_len=16, batch_size=5, seed=1)
    M.load_state_dict(sd)
    got = [M.next_batch() for _ in range(9)]
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(want, got))
    with pytest.raises(ValueError, match="seq_len"):
        TokenLoader(paths, seq_len=8, batch_size=5).load_state_dict(sd)
    with pytest.raises(ValueError, match="global batch"):
        TokenLoader(paths, seq_len=16, batch_size=2).load_state_dict(sd)


@pytest.mark.parametrize("W,B,G", [(1, 4, 2), (1, 2, 4), (1, 1, 8), (2, 2, 2), (4, 1, 2)])
def test_loader_steps_cover_the_same_windows_for_every_split_of_the_global_batch(tmp_path, W, B, G):
    paths, _ = _shards(tmp_path, [220])  # 13 windows of 16: a step of 8 leaves 5, so epochs turn mid-way
    one = TokenLoader(paths, seq_len=16, batch_size=8, seed=5)
    ranks = [TokenLoader(paths, seq_len=16, batch_size=B, seed=5, rank=r, world_size=W, grad_accum=G) for r in range(W)]
    assert ranks[0].tokens_per_step == one.tokens_per_step == 8 * 16
    for step in range(7):
        if step == 3:  # the position moves between the splits
            sd = json.loads(json.dumps(ranks[0].state_dict()))
            one2 = TokenLoader(paths, seq_len=16, batch_size=8, seed=5)
            one2.load_state_dict(sd)
            one = one2
        want = sorted(row.tobytes() for row in one.next_batch()[0])
        got = sorted(row.tobytes() for rk in ranks for x, _ in rk.next_step() for row in x)
        assert got == want, step
    if G > 1:
        with pytest.raises(ValueError, match="next_step"):
            ranks[0].next_batch()


def test_positions_saved_before_grad_accum_was_recorded_still_load(tmp_path):
    """Older checkpoints stored only global_batch = batch_size x world_size (one micro-batch); a run
    with the same batch_size and world_size (and any grad_accum) resumes from them."""
    paths, _ = _shards(tmp_path, [400])
    L = TokenLoader(paths, seq_len=4, batch_size=2, grad_accum=3)
    old = {k: v for k, v in L.state_dict().items() if k != "step_windows"} | {"global_batch": 2, "cursor": 12}
    L.load_state_dict(old)
    assert L.cursor == 12
    with pytest.raises(ValueError, match="global_batch=2 windows; this run has 4"):
        TokenLoader(paths, seq_len=4, batch_size=4, grad_accum=3).load_state_dict(old)
    new = TokenLoader(paths, seq_len=4, batch_size=2, grad_accum=3).state_dict()
    assert (new["global_batch"], new["step_windows"]) == (2, 6)


def test_loader_errors(tmp_path):
    paths, _ = _shards(tmp_path, [20])
    with pytest.raises(ValueError, match="too small"):
        TokenLoader(paths, seq_len=8, batch_size=4)
    with pytest.raises(ValueError, match="rank"):
        TokenLoader(paths, seq_len=2, batch_size=1, rank=2, world_size=2)
    for kw, name in (({"seq_len": 2.5}, "seq_len"), ({"batch_size": 1.0}, "batch_size"), ({"seq_len": True}, "seq_len"),
                     ({"grad_accum": "2"}, "grad_accum"), ({"seed": 0.5}, "seed")):
        args = {"seq_len": 2, "batch_size": 1, **kw}
        with pytest.raises(TypeError, match=f"{name} must be an int"):
            TokenLoader(paths, args.pop("seq_len"), args.pop("batch_size"), **args)
    L = TokenLoader(paths, seq_len=2, batch_size=1)
    full = L.state_dict()
    for key in ("epoch", "cursor", "seed", "seq_len", "n_windows"):
        part = {k: v for k, v in full.items() if k != key}
        with pytest.raises(ValueError, match=rf"lacks key\(s\) \['{key}'\]"):
            L.load_state_dict(part)
    with pytest.raises(TypeError, match="must be a dict"):
        L.load_state_dict([("epoch", 0)])
    bad = tmp_path / "train_000000.bin"
    bad.write_bytes(bad.read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated"):
        TokenLoader(paths, seq_len=2, batch_size=1)


def test_real_tokenizer_round_trip(tmp_path):
    """The same round trip with homeforge's own tokenizer, trained on the corpus."""
    try:
        from homeforge.tokenizer import Tokenizer
    except ImportError as e:
        pytest.skip(f"homeforge.Tokenizer is not available in this build ({e})")
    src, expected = _corpus(tmp_path)
    texts = expected * 3
    tok = Tokenizer.train(texts, 300, special_tokens=(EOT,), min_frequency=1)
    m = prepare([src], tmp_path / "out", tok, config=PrepareConfig(val_fraction=0.0))
    assert _docs_from_shards(tmp_path / "out", m, tok, "train") == expected

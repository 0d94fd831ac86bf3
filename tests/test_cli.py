"""The ``homeforge`` command line, run as a user runs it (subprocesses), checked against transformers
(the HF export), the gguf package (the GGUF export) and numpy (merge)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import homeforge

from _pipeline_util import EOT, stdlib_files

try:
    from homeforge.model import Model  # noqa: F401
    from homeforge.optim import AdamW  # noqa: F401
    from homeforge.tokenizer import Tokenizer
except ImportError as e:  # pragma: no cover - only while the pieces land
    pytest.skip(f"the CLI tests need homeforge.model, homeforge.optim and homeforge.tokenizer ({e})",
                allow_module_level=True)


def hf(*args, stdin: str | None = None, cwd=None, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(homeforge.__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    env["HOMEFORGE_NUM_THREADS"] = "2"
    p = subprocess.run([sys.executable, "-m", "homeforge", *map(str, args)], input=stdin, capture_output=True,
                       text=True, env=env, cwd=cwd, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"homeforge {' '.join(map(str, args))} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


RUN_TOML = """
[model]
preset = "1m"
d_model = 64
n_layers = 2
n_heads = 4
n_kv_heads = 2
ffn_hidden = 128
[data]
path = "{data}"
seq_len = 32
batch_size = 4
[optim]
lr = 3e-3
warmup_steps = 5
[train]
steps = 30
out_dir = "{out}"
log_every = 10
eval_every = 15
eval_batches = 2
checkpoint_every = 10
progress = false
tensorboard = false
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    tok = Tokenizer.train(stdlib_files(), 400, special_tokens=(EOT,))
    tok.save(root / "tok.hftok")
    p = hf("data", "prepare", *stdlib_files(), "--tokenizer", root / "tok.hftok", "--out", root / "data",
           "--val-fraction", "0.1")
    assert "documents" in p.stdout and (root / "data" / "manifest.json").is_file()
    (root / "run.toml").write_text(RUN_TOML.format(data=root / "data", out=root / "run"))
    p = hf("train", "--config", root / "run.toml", "--set", "train.steps=30")
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["step"] == 30
    assert "loss" in p.stdout and "tok/s" in p.stdout and "val loss" in p.stdout
    return root, tok


def test_generate_streams_text(run):
    root, tok = run
    p = hf("generate", "--model", root / "run", "--prompt", "def ", "--max-new-tokens", "20", "--seed", "1")
    assert p.stdout.startswith("def ") and len(p.stdout) > 5
    again = hf("generate", "--model", root / "run", "--prompt", "def ", "--max-new-tokens", "20", "--seed", "1")
    assert again.stdout == p.stdout  # seeded: reproducible


def test_generate_top_k_0_means_no_top_k(run):
    root, tok = run
    args = ("generate", "--model", root / "run", "--prompt", "def ", "--max-new-tokens", "20", "--seed", "3")
    no_cut = hf(*args, "--top-k", "0")
    # a k at least the vocabulary size cuts nothing either: the same seeded draw
    assert no_cut.stdout == hf(*args, "--top-k", str(10 * tok.n_vocab)).stdout and no_cut.stdout.startswith("def ")


@pytest.mark.parametrize("flags,name", [(["--temperature", "-1"], "--temperature"), (["--top-k", "-2"], "--top-k"),
                                        (["--top-p", "0"], "--top-p"), (["--top-p", "1.5"], "--top-p"),
                                        (["--max-new-tokens", "-1"], "--max-new-tokens")])
def test_sampling_flags_are_checked_before_any_output(tmp_path, flags, name):
    for cmd in ("generate", "chat"):
        extra = ["--prompt", "def "] if cmd == "generate" else []
        p = hf(cmd, "--model", tmp_path / "no-model-needed", *extra, *flags, stdin="hi\n", check=False)
        assert p.returncode == 2 and name in p.stderr and p.stdout == "", (cmd, flags, p.stdout, p.stderr)


def test_chat_reads_stdin(run):
    root, _ = run
    p = hf("chat", "--model", root / "run", "--max-new-tokens", "8", "--seed", "0", stdin="hello\nhow are you\n\n")
    assert p.stdout.count("assistant:") == 2


def test_eval_reports_loss_and_perplexity(run, tmp_path):
    root, _ = run
    f = tmp_path / "t.txt"
    f.write_text(stdlib_files()[0].read_text())
    r = json.loads(hf("eval", "--model", root / "run", "--file", f, "--seq-len", "32").stdout)
    assert 0 < r["loss"] < 10 and abs(r["perplexity"] - np.exp(r["loss"])) < 1e-6 * r["perplexity"] and r["tokens"] > 100


def test_eval_and_until_flags_are_checked(run, tmp_path):
    root, _ = run
    f = tmp_path / "t.txt"
    f.write_text("def f(x):\n    return x\n" * 20)
    from homeforge.inference import load_model

    T = load_model(root / "run")[0].config.max_seq_len
    for flags, words in ((["--seq-len", "-5"], ["--seq-len", ">= 1"]), (["--seq-len", "0"], ["--seq-len"]),
                         (["--batch-size", "0"], ["--batch-size", ">= 1"]),
                         (["--seq-len", str(T + 1)], [f"--seq-len {T + 1}", f"max_seq_len {T}"])):
        p = hf("eval", "--model", root / "run", "--file", f, *flags, check=False)
        assert p.returncode == 2 and all(w in p.stderr for w in words), (flags, p.stderr)
        assert "Traceback" not in p.stderr
    p = hf("train", "--config", root / "run.toml", "--set", f"train.out_dir='{tmp_path / 'u'}'", "--until", "-5",
           check=False)
    assert p.returncode == 2 and "--until" in p.stderr and not (tmp_path / "u").exists()


def test_export_hf_loads_in_transformers(run, tmp_path):
    torch = pytest.importorskip("torch", reason="torch is needed to run the exported model in transformers")
    transformers = pytest.importorskip("transformers", reason="transformers is the reference loader")
    from homeforge.inference import load_model

    root, tok = run
    hf("export", "--model", root / "run", "--format", "hf", "--out", tmp_path / "hf")
    ref = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    model, _ = load_model(root / "run")
    ids = np.array([tok.encode_ordinary("def main():\n    return 1\n")[:24]])
    with torch.no_grad():
        want = ref(torch.from_numpy(ids).long()).logits.float().numpy()
    np.testing.assert_allclose(model.forward(ids), want, rtol=1e-4, atol=1e-4)
    htok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "import os\nfor i in range(10):  print(i)\n"
    assert htok(text, add_special_tokens=False)["input_ids"] == tok.encode_ordinary(text)
    # reloading our own export gives the same model
    m2, t2 = load_model(tmp_path / "hf")
    np.testing.assert_array_equal(m2.forward(ids), model.forward(ids))


def test_export_gguf_has_llama_layout(run, tmp_path):
    gguf = pytest.importorskip("gguf", reason="the gguf package reads the export back")
    from homeforge.export import halves_to_interleaved
    from homeforge.inference import load_model

    root, tok = run
    out = tmp_path / "m.gguf"
    hf("export", "--model", root / "run", "--format", "gguf", "--out", out)
    r = gguf.GGUFReader(str(out))

    def field(name):
        f = r.fields[name]
        return f.parts[f.data[0]]

    assert bytes(field("general.architecture")).decode() == "llama"
    model, _ = load_model(root / "run")
    c = model.config
    assert int(field("llama.block_count")[0]) == c.n_layers
    assert int(field("llama.attention.head_count_kv")[0]) == c.n_kv_heads
    assert int(field("llama.embedding_length")[0]) == c.d_model
    assert bytes(field("tokenizer.ggml.model")).decode() == "gpt2"
    f = r.fields["tokenizer.ggml.tokens"]
    assert len(f.data) == c.vocab_size
    tensors = {t.name: t for t in r.tensors}
    params = model.named_parameters()
    assert "output.weight" not in tensors  # tied embeddings
    np.testing.assert_array_equal(np.asarray(tensors["token_embd.weight"].data), params["model.embed_tokens.weight"])
    np.testing.assert_array_equal(np.asarray(tensors["blk.1.ffn_down.weight"].data),
                                  params["model.layers.1.mlp.down_proj.weight"])
    q = params["model.layers.0.self_attn.q_proj.weight"]
    np.testing.assert_array_equal(np.asarray(tensors["blk.0.attn_q.weight"].data), halves_to_interleaved(q, c.n_heads))
    # the permutation is the one that turns rotate-half RoPE into interleaved RoPE: check it on a vector
    hd = c.d_model // c.n_heads
    x = np.arange(hd, dtype=np.float64)  # one head: pairs (i, i + hd/2) -> (2i, 2i+1)
    y = halves_to_interleaved(x.reshape(hd, 1), 1)[:, 0]
    assert all(y[2 * i] == x[i] and y[2 * i + 1] == x[i + hd // 2] for i in range(hd // 2))


def test_merge_is_a_weighted_average(run, tmp_path):
    from homeforge.checkpoint import load_checkpoint

    root, _ = run
    cks = sorted((root / "run" / "checkpoints").glob("step_*"))
    assert len(cks) >= 2
    a, b = cks[0], cks[-1]
    hf("merge", a, b, "--weights", "1", "3", "--out", tmp_path / "merged")
    m = load_checkpoint(tmp_path / "merged")
    pa, pb = load_checkpoint(a).params, load_checkpoint(b).params
    for k in pa:
        np.testing.assert_allclose(m.params[k], 0.25 * pa[k].astype(np.float64) + 0.75 * pb[k], rtol=1e-6, atol=1e-7)
    p = hf("generate", "--model", tmp_path / "merged", "--prompt", "x", "--max-new-tokens", "3")
    assert p.stdout.startswith("x")
    # an existing non-empty --out (here: a live run's checkpoints) is refused unless --overwrite
    before = sorted(q.name for q in (root / "run" / "checkpoints").iterdir())
    p = hf("merge", a, b, "--out", root / "run" / "checkpoints", check=False)
    assert p.returncode == 2 and "already exists and is not empty" in p.stderr and "--overwrite" in p.stderr
    assert sorted(q.name for q in (root / "run" / "checkpoints").iterdir()) == before
    p = hf("merge", a, b, "--out", tmp_path / "merged", check=False)
    assert p.returncode == 2 and "--overwrite" in p.stderr
    hf("merge", a, b, "--weights", "1", "0", "--out", tmp_path / "merged", "--overwrite")
    m2 = load_checkpoint(tmp_path / "merged")
    assert sorted(q.name for q in (tmp_path / "merged").iterdir()) == ["step_00000000"]
    for k in pa:
        np.testing.assert_array_equal(m2.params[k], pa[k])
    (tmp_path / "empty").mkdir()
    hf("merge", a, b, "--out", tmp_path / "empty")  # an empty directory is fine
    p = hf("merge", a, b, "--weights", "1", "-2", "--out", tmp_path / "w", check=False)
    assert p.returncode == 2 and "got [1, -2]" in p.stderr and "np.float64" not in p.stderr


def test_merge_names_the_architecture_of_each_checkpoint(tmp_path):
    from homeforge.checkpoint import save_checkpoint
    from homeforge.inference import merge_checkpoints

    def ck(name, d_model):
        mc = {"vocab_size": 10, "d_model": d_model, "n_layers": 1, "n_heads": 1, "n_kv_heads": 1, "ffn_hidden": 8,
              "max_seq_len": 8}
        return save_checkpoint(tmp_path / name, 1, params={"w": np.ones(2, np.float32)}, optimizer={},
                               state={"model_config": mc, "tokenizer_hash": "x"})

    a, b = ck("a", 32), ck("b", 64)
    with pytest.raises(ValueError) as e:
        merge_checkpoints([a, b], tmp_path / "m")
    msg = str(e.value)
    assert msg.startswith(f"checkpoint {b} is from another architecture") and f"d_model: 64 there, 32 in {a}" in msg


def test_resume_via_cli_and_errors(run, tmp_path):
    root, _ = run
    cfg = root / "run.toml"
    p = hf("train", "--config", cfg, "--set", "train.stepz=3", check=False)
    assert p.returncode == 2 and "train.stepz" in p.stderr
    p = hf("train", "--config", cfg, "--set", "optim.lr=fast", check=False)
    assert p.returncode == 2 and "optim.lr" in p.stderr
    p = hf("train", "--config", tmp_path / "missing.toml", check=False)
    assert p.returncode == 2 and "missing.toml" in p.stderr
    p = hf("generate", "--model", tmp_path / "nope", check=False)
    assert p.returncode == 2 and "nope" in p.stderr
    p = hf("train", "--config", cfg, "--set", f"train.out_dir='{tmp_path / 'other'}'", "--set", "model.n_layers=3",
           "--resume", root / "run", check=False)
    assert p.returncode == 2 and "another architecture" in p.stderr
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n   \n")
    p = hf("data", "prepare", empty, "--tokenizer", root / "tok.hftok", "--out", tmp_path / "d", check=False)
    assert p.returncode == 2 and "empty corpus" in p.stderr
    # resume continues to a later step count from the latest checkpoint
    out = tmp_path / "resumed"
    hf("train", "--config", cfg, "--set", f"train.out_dir='{out}'", "--set", "train.steps=12", "--until", "6")
    p = hf("train", "--config", cfg, "--set", f"train.out_dir='{out}'", "--set", "train.steps=12", "--resume")
    assert json.loads(p.stdout.strip().splitlines()[-1])["step"] == 12
    # the same fresh command again would mix two runs: refused, naming the ways out
    p = hf("train", "--config", cfg, "--set", f"train.out_dir='{out}'", "--set", "train.steps=12", check=False)
    assert p.returncode == 2 and "already holds a run" in p.stderr and "--overwrite" in p.stderr
    p = hf("train", "--config", cfg, "--set", f"train.out_dir='{out}'", "--set", "train.steps=12", "--until", "1",
           "--overwrite")
    assert json.loads(p.stdout.strip().splitlines()[-1])["step"] == 1
    assert sorted(q.name for q in (out / "checkpoints").iterdir()) == ["step_00000001"]


def test_data_prepare_bounds_shard_tokens(tmp_path):
    (tmp_path / "a.txt").write_text("some text\n")
    p = hf("data", "prepare", tmp_path / "a.txt", "--tokenizer", tmp_path / "tok.hftok", "--out", tmp_path / "d",
           "--shard-tokens", "1000000000000", check=False)
    assert p.returncode == 2 and "--shard-tokens" in p.stderr and "<= 4294967296" in p.stderr
    assert "Traceback" not in p.stderr and not (tmp_path / "d").exists()


def test_data_prepare_prints_an_empty_validation_split_warning(tmp_path):
    tok = Tokenizer.train(["some text\nmore text\n"], 280, special_tokens=(EOT,))
    tok.save(tmp_path / "tok.hftok")
    (tmp_path / "a.txt").write_text("some text\nmore text\n")  # one document (doc_unit "file")
    p = hf("data", "prepare", tmp_path / "a.txt", "--tokenizer", tmp_path / "tok.hftok", "--out", tmp_path / "d",
           "--val-fraction", "0.001", check=False)
    assert p.returncode == 0 and "val 0 tokens" in p.stdout
    assert "homeforge: warning: the validation split is empty" in p.stderr and "--doc-unit" in p.stderr


@pytest.mark.parametrize("flags,name", [
    (["--minutes", "-1"], "--minutes"), (["--minutes", "0"], "--minutes"), (["--steps", "0"], "--steps"),
    (["--steps", "-3"], "--steps"), (["--seq-len", "0"], "--seq-len"), (["--batch-size", "0"], "--batch-size"),
    (["--lr", "-1"], "--lr"), (["--lr", "nan"], "--lr"), (["--preset", "nope"], "--preset"),
    (["--max-mb", "0"], "--max-mb"), (["--sample-every", "-1"], "--sample-every"),
])
def test_demo_checks_flags_before_any_work(tmp_path, flags, name):
    p = hf("demo", *flags, "--out", tmp_path / "demo", check=False)
    assert p.returncode == 2 and name in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert "[1/4]" not in p.stdout and not (tmp_path / "demo").exists()


def test_a_malformed_hf_config_json_is_named(tmp_path):
    from homeforge.inference import load_model

    d = tmp_path / "hf"
    d.mkdir()
    (d / "config.json").write_text('{"model_type": "llama",')
    with pytest.raises(ValueError, match=f"{d / 'config.json'}: malformed config.json"):
        load_model(d)
    (d / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=f"{d / 'config.json'}: malformed config.json \\(a JSON list"):
        load_model(d)
    p = hf("generate", "--model", d, "--prompt", "x", check=False)
    assert p.returncode == 2 and str(d / "config.json") in p.stderr and "Traceback" not in p.stderr


def test_tokenizer_subcommands_are_wired():
    import importlib.util

    if importlib.util.find_spec("homeforge.tokenizer_cli") is None:
        pytest.skip("homeforge.tokenizer_cli (the tokenizer's CLI module) is not in this build")
    p = hf("tokenizer", "--help")
    assert "train" in p.stdout and "encode" in p.stdout


def test_demo_runs_small(tmp_path):
    p = hf("demo", "--steps", "6", "--max-mb", "0.25", "--vocab-size", "300", "--seq-len", "32", "--batch-size", "4",
           "--out", tmp_path / "demo")
    out = p.stdout
    assert "[1/4] corpus" in out and "[4/4] training" in out and "sample" in out and "checkpoint:" in out
    assert (tmp_path / "demo" / "run" / "checkpoints" / "step_00000006" / "checkpoint.json").is_file()
    p = hf("demo", "--vocab-size", "100", "--out", tmp_path / "bad", check=False)
    assert p.returncode == 2 and "vocab_size" in p.stderr

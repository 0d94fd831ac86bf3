"""homeforge.Model used the ways applications use it: from several threads, from inside its own
callbacks, with numpy scalars, and loading directories transformers wrote (against transformers'
LlamaForCausalLM as the reference), plus export into directories that hold other files."""
from __future__ import annotations

import json
import threading
import warnings

import numpy as np
import pytest

from homeforge import Model, ModelConfig

from test_model import tiny as tiny_model  # the reference suite's tiny config (that module skips without torch)

torch = pytest.importorskip("torch", reason="torch is the reference implementation")
transformers = pytest.importorskip("transformers", reason="transformers' LlamaForCausalLM is the reference")
pytestmark = pytest.mark.usefixtures("torch_single_thread")


def tiny(**kw) -> ModelConfig:
    return tiny_model(**{"vocab_size": 61, "ffn_hidden": 40, "max_seq_len": 64, **kw})


def loud(m: Model, seed: int = 0) -> Model:
    """Weights large enough that sampled and greedy continuations depend on every layer."""
    m.flat_params()[:] = np.random.default_rng(seed).standard_normal(m.num_parameters()).astype(np.float32) * 0.5
    return m


def hf_logits(directory, tokens: np.ndarray) -> np.ndarray:
    ref = transformers.AutoModelForCausalLM.from_pretrained(directory, torch_dtype=torch.float32)
    with torch.no_grad():
        return ref(input_ids=torch.from_numpy(tokens.astype(np.int64))).logits.numpy()


def test_forward_from_two_threads_matches_one_thread():
    m = loud(Model(tiny(), seed=0))
    rng = np.random.default_rng(1)
    inputs = [rng.integers(0, 61, size=(1 + i % 3, 5 + 7 * (i % 4)), dtype=np.int32) for i in range(8)]
    want = [m.forward(x) for x in inputs]
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for it in range(40):
                i = (it + k) % len(inputs)  # the two threads run different shapes at the same time
                np.testing.assert_array_equal(m.forward(inputs[i]), want[i])
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_forward_inside_the_grad_hook_is_refused_and_the_model_recovers():
    m = Model(tiny(), seed=0)
    x = np.ones((1, 8), dtype=np.int32)
    m.set_grad_ready_hook(lambda b, e: m.forward(x))
    with pytest.raises(RuntimeError, match="already running a call on this thread"):
        m.forward_backward(x, x)
    m.set_grad_ready_hook(None)
    m.zero_grad()
    assert np.isfinite(m.forward_backward(x, x))


def test_generate_from_on_token_is_refused_and_forward_there_is_harmless():
    m = loud(Model(tiny(), seed=0))
    want = m.generate([1, 2, 3], 8, temperature=0)
    with pytest.raises(RuntimeError, match="already generating"):
        m.generate([1, 2, 3], 8, temperature=0, on_token=lambda t: m.generate([5, 6], 2, temperature=0))
    got = m.generate([1, 2, 3], 8, temperature=0, on_token=lambda t: m.forward(np.array([[t, 1, 2]], np.int32)))
    assert got == want


def test_generate_from_two_threads_takes_turns():
    m = loud(Model(tiny(), seed=0))
    prompts = [[1, 2, 3], list(range(10, 30))]
    want = [m.generate(p, 12, temperature=0) for p in prompts]
    got: dict[int, list[list[int]]] = {0: [], 1: []}

    def worker(k: int) -> None:
        for _ in range(10):
            got[k].append(m.generate(prompts[k], 12, temperature=0))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got[0] == [want[0]] * 10 and got[1] == [want[1]] * 10


def test_generate_takes_numpy_scalars_and_tiny_temperatures():
    m = loud(Model(tiny(), seed=0))
    a = m.generate([1, 2], 6, temperature=0.7, top_p=0.9, top_k=5, seed=3)
    b = m.generate([1, 2], 6, temperature=np.float32(0.7), top_p=np.float64(0.9), top_k=np.int64(5), seed=np.int64(3))
    assert a == b
    greedy = m.generate([1, 2], 6, temperature=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning either
        assert m.generate([1, 2], 6, temperature=1e-310, seed=0) == greedy
    with pytest.raises(ValueError, match="seed"):
        m.generate([1, 2], 2, seed=-1)


def test_from_pretrained_prefers_the_single_file_as_transformers_does(tmp_path):
    old, new = loud(Model(tiny(), seed=0), 1), loud(Model(tiny(), seed=0), 2)
    old.save_pretrained(tmp_path)
    transformers.AutoModelForCausalLM.from_pretrained(tmp_path).save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    x = np.arange(1, 9, dtype=np.int32)[None]
    # Both layouts present (transformers left its shards beside our file): both loaders take model.safetensors.
    new.save_pretrained(tmp_path)
    assert not (tmp_path / "model.safetensors.index.json").exists()  # our save removes the stale index and shards
    assert not list(tmp_path.glob("model-*-of-*.safetensors"))
    np.testing.assert_allclose(Model.from_pretrained(tmp_path).forward(x), new.forward(x), rtol=0, atol=0)
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "missing.safetensors"}}))
    np.testing.assert_allclose(Model.from_pretrained(tmp_path).forward(x), hf_logits(tmp_path, x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("extra", [{"hidden_act": "swish"}, {"rope_scaling": {"rope_type": "default"}}],
                         ids=["swish", "rope-default"])
def test_from_pretrained_takes_configs_that_mean_plain_llama(tmp_path, extra):
    cfg = transformers.LlamaConfig(vocab_size=61, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path)
    c = json.loads((tmp_path / "config.json").read_text())
    c.update(extra)
    (tmp_path / "config.json").write_text(json.dumps(c))
    x = np.arange(3, 15, dtype=np.int32)[None]
    np.testing.assert_allclose(Model.from_pretrained(tmp_path).forward(x), hf_logits(tmp_path, x), rtol=1e-4, atol=1e-4)


def test_bad_pretrained_directories_name_the_problem(tmp_path):
    m = Model(tiny(), seed=0)
    m.save_pretrained(tmp_path)
    raw = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(raw[: len(raw) - 100])
    with pytest.raises(ValueError, match=r"model\.safetensors: tensor .* lies outside the file \(truncated"):
        Model.from_pretrained(tmp_path)
    c = json.loads((tmp_path / "config.json").read_text())
    del c["hidden_size"]
    (tmp_path / "config.json").write_text(json.dumps(c))
    with pytest.raises(ValueError, match="hidden_size"):
        Model.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="colour"):
        ModelConfig.preset("1m", 100, colour=1)


def test_state_bytes_counts_the_rope_tables():
    short, long = Model(tiny(max_seq_len=64), seed=0), Model(tiny(max_seq_len=64 + 4096), seed=0)
    D = 32 // 4
    assert long.state_bytes() - short.state_bytes() >= 4096 * D * 4  # cos and sin: D/2 floats each per position


def test_export_hf_leaves_other_files_alone(tmp_path):
    from homeforge import Tokenizer
    from homeforge.export import export_hf

    tok = Tokenizer.train(["hello world, hello there"] * 20, vocab_size=300, special_tokens=["<|endoftext|>"])
    m = Model(tiny(vocab_size=tok.n_vocab), seed=0)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    export_hf(m, tok, out)
    assert (out / "notes.txt").read_text() == "mine"
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {p.name for p in out.iterdir()}
    x = np.arange(1, 9, dtype=np.int32)[None]
    np.testing.assert_allclose(hf_logits(out, x), m.forward(x), rtol=1e-4, atol=1e-4)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError, match="not a directory"):
        export_hf(m, tok, tmp_path / "file")
    assert (tmp_path / "file").read_text() == "x"
    # A tokenizer with no tokenizer.json form: the export fails and changes nothing already there.
    custom = Tokenizer(tok.mergeable_ranks(), r"\p{L}+|\s+|[^\p{L}\s]+", {"<|endoftext|>": tok.eot_token})
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    other = Model(tiny(vocab_size=tok.n_vocab), seed=5)
    with pytest.raises(ValueError):
        export_hf(other, custom, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_vocab_limit_samples_only_ids_below_it():
    m = loud(Model(tiny(), seed=0))
    x = np.array([[1, 2, 3]], np.int32)
    m.flat_params()[: 61 * 32].reshape(61, 32)[50:] *= 20  # make the top ids the likeliest (tied head)
    want = int(np.argmax(m.forward(x)[0, -1, :50]))
    assert m.generate([1, 2, 3], 1, temperature=0, vocab_limit=50) == [want]
    assert all(t < 50 for t in m.generate([1, 2, 3], 20, temperature=1.5, seed=0, vocab_limit=50))
    with pytest.raises(ValueError, match="vocab_limit"):
        m.generate([1], 1, vocab_limit=62)


def test_generate_text_keeps_room_for_the_reply_near_the_end_of_the_context():
    """A chat history close to max_seq_len keeps its last tokens so that the reply still gets
    max_new_tokens (it used to get only what was left, down to 1 token)."""
    from homeforge import Tokenizer
    from homeforge.inference import generate_text

    tok = Tokenizer.train(["the quick brown fox jumps over the lazy dog"] * 30, vocab_size=300,
                          special_tokens=["<|endoftext|>"])
    m = Model(tiny(vocab_size=tok.n_vocab, max_seq_len=64), seed=0)
    calls = []
    real = m.generate
    m.generate = lambda ids, n, **kw: calls.append((len(ids), n)) or real(ids, n, **kw)
    history = "the lazy dog " * 40
    assert len(tok.encode_ordinary(history)) > 64
    for n in (20, 60):
        generate_text(m, tok, history, max_new_tokens=n, temperature=0, stop_at_eot=False)
        prompt_len, new = calls[-1]
        assert new == min(n, 32) and prompt_len + new == 64

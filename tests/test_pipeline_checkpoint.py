"""Checkpoints: round trip, checksums, retention, and a kill -9 in the middle of a save."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import homeforge
from homeforge.checkpoint import (best_checkpoint, latest_checkpoint, list_checkpoints, load_checkpoint,
                                  save_checkpoint)


def _state(rng, scale=1.0):
    params = {"model.embed_tokens.weight": rng.standard_normal((50, 8)).astype(np.float32) * scale,
              "model.norm.weight": np.ones(8, np.float32)}
    opt = {"step": 3, "lr": 1e-3, "betas": (0.9, 0.95),
           "groups": [{"m": [rng.standard_normal(5).astype(np.float32)], "v": [np.zeros((2, 2), np.float64)],
                       "weight_decay": 0.1}]}
    return params, opt


def test_round_trip_is_exact(tmp_path, rng):
    params, opt = _state(rng)
    tokfile = tmp_path / "tok.bin"
    tokfile.write_bytes(b"tokenizer bytes")
    state = {"rng": np.random.default_rng(5).bit_generator.state, "data": {"epoch": 1, "cursor": 40}, "x": [1, "a", None]}
    p = save_checkpoint(tmp_path / "ck", 12, params=params, optimizer=opt, state=state, files={"tok.bin": tokfile},
                        metric=2.5)
    assert p.name == "step_00000012"
    ck = load_checkpoint(tmp_path / "ck")
    assert ck.step == 12 and ck.metric == 2.5 and ck.state == state
    for k, v in params.items():
        assert ck.params[k].dtype == v.dtype and np.array_equal(ck.params[k], v)
    assert ck.optimizer["betas"] == (0.9, 0.95) and ck.optimizer["step"] == 3
    g = ck.optimizer["groups"][0]
    assert np.array_equal(g["m"][0], opt["groups"][0]["m"][0]) and g["v"][0].dtype == np.float64
    assert ck.file("tok.bin").read_bytes() == b"tokenizer bytes"
    r = np.random.default_rng()
    r.bit_generator.state = ck.state["rng"]
    assert r.integers(1 << 30) == np.random.default_rng(5).integers(1 << 30)


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
@pytest.mark.parametrize("victim", ["model.safetensors", "optimizer.safetensors", "state.json"])
def test_corruption_is_detected_and_named(tmp_path, rng, damage, victim):
    params, opt = _state(rng)
    p = save_checkpoint(tmp_path, 1, params=params, optimizer=opt, state={"a": 1})
    f = p / victim
    b = bytearray(f.read_bytes())
    if damage == "flip":
        b[len(b) // 2] ^= 0x40
        f.write_bytes(bytes(b))
    elif damage == "truncate":
        f.write_bytes(bytes(b[:-10]))
    else:
        f.unlink()
    with pytest.raises(ValueError, match=victim.replace(".", r"\.")):
        load_checkpoint(p)


@pytest.mark.parametrize("files", ["drop", [], {"model.safetensors": 3}])
def test_manifest_without_files_names_the_file_and_key(tmp_path, rng, files):
    import json

    params, opt = _state(rng)
    p = save_checkpoint(tmp_path, 1, params=params, optimizer=opt, state={"a": 1})
    m = json.loads((p / "checkpoint.json").read_text())
    if files == "drop":
        del m["files"]
    else:
        m["files"] = files
    (p / "checkpoint.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match=r"checkpoint\.json.*\"files\""):
        load_checkpoint(p)


def test_non_finite_metric_is_not_written_as_invalid_json(tmp_path, rng):
    import json

    params, opt = _state(rng)
    p = save_checkpoint(tmp_path, 1, params=params, optimizer=opt, state={"a": 1}, metric=float("nan"))
    assert json.loads((p / "checkpoint.json").read_text(), parse_constant=lambda c: pytest.fail(c))["metric"] is None


def test_keep_last_and_best(tmp_path, rng):
    params, opt = _state(rng)
    metrics = [5.0, 1.0, 4.0, None, 3.0, 6.0]
    for step, m in enumerate(metrics):
        save_checkpoint(tmp_path, step * 10, params=params, optimizer=opt, metric=m, keep_last=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [10, 40, 50]
    assert best_checkpoint(tmp_path).name == "step_00000010"
    assert latest_checkpoint(tmp_path).name == "step_00000050"
    assert load_checkpoint(tmp_path / "best").step == 10
    assert load_checkpoint(tmp_path / "latest").step == 50


def test_incomplete_directories_are_ignored(tmp_path, rng):
    params, opt = _state(rng)
    save_checkpoint(tmp_path, 1, params=params, optimizer=opt)
    (tmp_path / ".tmp-step_00000002-999").mkdir()          # an interrupted save
    (tmp_path / "step_00000003").mkdir()                   # no checkpoint.json: not complete
    assert latest_checkpoint(tmp_path).name == "step_00000001"
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        (tmp_path / "empty").mkdir()
        load_checkpoint(tmp_path / "empty")


_CHILD = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    from homeforge import checkpoint
    root = sys.argv[1]
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal(4_000_000).astype(np.float32)}
    checkpoint.save_checkpoint(root, 1, params=params, optimizer={"m": [params["w"] * 0]}, state={"ok": 1})
    real = checkpoint._write_bytes
    def slow(path, data):
        real(path, data)
        if path.name == "model.safetensors":
            print("MID-SAVE", flush=True)
            time.sleep(60)
    checkpoint._write_bytes = slow
    params["w"] += 1
    checkpoint.save_checkpoint(root, 2, params=params, optimizer={"m": [params["w"]]}, state={"ok": 2})
    print("UNREACHED", flush=True)
""")


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(homeforge.__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _kill_after_first_line(code: str, root, delay: float = 0.0) -> tuple[str, int]:
    """Runs `python -c code root`, waits for its first line of output and `delay` more seconds,
    kills it with SIGKILL; returns (that line, the exit status)."""
    proc = subprocess.Popen([sys.executable, "-c", code, str(root)], stdout=subprocess.PIPE, text=True, env=_env())
    try:
        line = proc.stdout.readline()
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    return line, proc.returncode


def test_kill_9_during_save_keeps_the_latest_good_checkpoint(tmp_path):
    root = tmp_path / "ck"
    line, returncode = _kill_after_first_line(_CHILD, root)
    assert line.strip() == "MID-SAVE"
    assert returncode == -signal.SIGKILL
    assert any(p.name.startswith(".tmp-step_00000002") for p in root.iterdir())  # the half-written save
    ck = load_checkpoint(root)  # verifies every checksum
    assert ck.step == 1 and ck.state == {"ok": 1}
    np.testing.assert_array_equal(ck.params["w"], np.random.default_rng(0).standard_normal(4_000_000).astype(np.float32))
    # the next save clears the leftovers
    save_checkpoint(root, 2, params={"w": np.zeros(3, np.float32)})
    assert not any(p.name.startswith(".tmp-") for p in root.iterdir())
    assert latest_checkpoint(root).name == "step_00000002"


def test_kill_9_at_random_moments(tmp_path):
    """Repeated saves killed at arbitrary times: whatever is left, the latest complete checkpoint verifies."""
    root = tmp_path / "ck"
    code = textwrap.dedent("""
        import sys, numpy as np
        from homeforge import checkpoint
        w = np.random.default_rng(1).standard_normal(2_000_000).astype(np.float32)
        for step in range(1, 10_000):
            checkpoint.save_checkpoint(sys.argv[1], step, params={"w": w + step}, state={"s": step}, keep_last=2)
            print(step, flush=True)
    """)
    rng = np.random.default_rng(2)
    for trial in range(4):
        # the first line: at least one save done in this process
        _kill_after_first_line(code, root, delay=float(rng.uniform(0.0, 0.3)))
        ck = load_checkpoint(root)
        w = np.random.default_rng(1).standard_normal(2_000_000).astype(np.float32)
        np.testing.assert_array_equal(ck.params["w"], w + ck.step)
        assert ck.state == {"s": ck.step}

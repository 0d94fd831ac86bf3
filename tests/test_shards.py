"""Token shard format: round trips, dtype choice, truncation and corruption detection."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from homeforge.shards import HEADER_SIZE, ShardWriter, read_shard, shard_info, write_shard

HASH = "0123456789abcdef" * 4


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 70000), max_size=300), st.sampled_from([70001, 2**20]))
def test_round_trip(tmp_path_factory, ids, vocab):
    path = tmp_path_factory.mktemp("s") / "x.bin"
    write_shard(path, np.array(ids, dtype=np.int64), vocab, HASH)
    got = read_shard(path, verify=True)
    assert got.tolist() == ids
    assert got.dtype == np.uint32


def test_uint16_for_small_vocab_and_header(tmp_path):
    path = tmp_path / "a.bin"
    write_shard(path, np.array([0, 65535]), 65536, HASH)
    info = shard_info(path)
    assert info.dtype == np.uint16 and info.n_tokens == 2 and info.vocab_size == 65536
    assert info.tokenizer_hash_prefix == HASH[:48]
    assert path.stat().st_size == HEADER_SIZE + 4


def test_writer_rolls_shards(tmp_path):
    w = ShardWriter(tmp_path, "train", 1000, HASH, shard_tokens=7)
    w.add(np.arange(10))
    w.add(np.arange(10, 20))
    paths = w.close()
    assert [len(read_shard(p)) for p in paths] == [7, 7, 6]
    assert np.concatenate([read_shard(p) for p in paths]).tolist() == list(range(20))


def test_shard_tokens_is_bounded_and_the_buffer_grows_with_the_data(tmp_path):
    for bad in (0, -1, 2**32 + 1, 10**12):
        with pytest.raises(ValueError, match=r"shard_tokens must be in \[1, 4294967296\]"):
            ShardWriter(tmp_path, "x", 1000, HASH, shard_tokens=bad)
    with pytest.raises(TypeError, match="shard_tokens must be an int"):
        ShardWriter(tmp_path, "x", 1000, HASH, shard_tokens=2.5)
    # the largest limit allocates nothing like 2**32 tokens up front (that would be 8 GiB here)
    w = ShardWriter(tmp_path, "big", 1000, HASH, shard_tokens=2**32)
    ids = np.arange(300_000) % 1000
    w.add(ids[:5])
    assert w._buf.nbytes < 1 << 24  # not the limit's 8 GiB (np.empty alone would not show it: lazy pages)
    w.add(ids[5:])
    assert w._buf.nbytes < 4 * ids.nbytes
    (path,) = w.close()
    assert np.array_equal(read_shard(path, verify=True), ids)


def test_writer_checks_tokens_like_write_shard(tmp_path):
    w = ShardWriter(tmp_path, "w", 10, HASH, shard_tokens=4)
    for bad, err, msg in (([1.7, 2.9], TypeError, "tokens must be integers, got float64"),
                          (np.array([True, False]), TypeError, "tokens must be integers, got bool"),
                          (np.zeros((2, 2), int), ValueError, r"tokens must be 1-D, got shape \(2, 2\)"),
                          ([0, 10], ValueError, r"token ids must be in \[0, 10\), got min 0 and max 10"),
                          ([-1], ValueError, r"got min -1")):
        with pytest.raises(err, match=msg):
            w.add(bad)
        with pytest.raises(err, match=msg):
            write_shard(tmp_path / "x.bin", np.asarray(bad), 10, HASH)
    w.add(np.array([], dtype=np.float32))  # nothing to check in an empty array, as write_shard
    w.add([3, 4])
    assert [read_shard(p).tolist() for p in w.close()] == [[3, 4]] and w.n_tokens == 2


def test_bad_input_and_corruption(tmp_path):
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 10\), got min 0 and max 10"):
        write_shard(tmp_path / "b.bin", np.array([0, 10]), 10, HASH)
    with pytest.raises(ValueError, match="must be 1-D"):
        write_shard(tmp_path / "b.bin", np.zeros((2, 2), int), 10, HASH)
    path = tmp_path / "c.bin"
    write_shard(path, np.arange(100), 1000, HASH)
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data[:-3]))
    with pytest.raises(ValueError, match="truncated or corrupt shard"):
        read_shard(path)
    data[HEADER_SIZE + 5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum mismatch"):
        read_shard(path, verify=True)
    (tmp_path / "d.bin").write_bytes(b"nope")
    with pytest.raises(ValueError, match="not a token shard"):
        read_shard(tmp_path / "d.bin")
    with pytest.raises(FileNotFoundError, match="token shard not found"):
        read_shard(tmp_path / "missing.bin")
    assert not list(tmp_path.glob(".*.tmp")), "a failed write left a temporary file"


def test_atomic_files_get_umask_permissions_not_mkstemp_0600(tmp_path):
    import os

    old = os.umask(0o022)
    os.umask(old)
    path = tmp_path / "p.bin"
    write_shard(path, np.arange(3), 10, HASH)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~old)

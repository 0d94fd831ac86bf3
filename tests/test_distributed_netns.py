"""Two "hosts" on this machine: ranks in separate network namespaces, Open MPI over TCP between them.

Each namespace gets one end of a veth pair and its own IP (10.231.<pid-derived>.1 / .2) and, via
`unshare --uts`, its own hostname, so Open MPI sees two nodes: prterun runs in namespace A and starts
its daemon in namespace B through a launcher script used as the "ssh" agent (`ip netns exec`); the
MPI traffic goes through the TCP BTL restricted to the veth subnet. The test checks that the job
gives the single-process answer and that the gradient traffic really crossed the veth link.
Skipped (with the reason) where namespaces cannot be created: no `ip`/`unshare`, not root, no
CAP_NET_ADMIN.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_distributed import BASE, DDP, MPIRUN, WORKER, mpi_env, reference, results  # noqa: E402

pytestmark = pytest.mark.mpi


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=30)


def _rx_bytes(ns: str, dev: str) -> int:
    out = _run("ip", "netns", "exec", ns, "cat", f"/sys/class/net/{dev}/statistics/rx_bytes").stdout
    return int(out.strip())


@pytest.fixture
def two_hosts():
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            pytest.skip(f"`{tool}` is not installed: cannot create network namespaces")
    if MPIRUN is None:
        pytest.skip("mpirun not found (install homeforge[mpi] or a system MPI)")
    tag = f"hf{os.getpid() % 100000}"
    na, nb, va, vb = f"{tag}a", f"{tag}b", f"{tag}va", f"{tag}vb"
    octet = os.getpid() % 250 + 1
    ipa, ipb = f"10.231.{octet}.1", f"10.231.{octet}.2"
    p = _run("ip", "netns", "add", na, check=False)
    if p.returncode != 0:
        pytest.skip(f"cannot create a network namespace (needs root / CAP_NET_ADMIN): {p.stderr.strip()}")
    try:
        _run("ip", "netns", "add", nb)
        _run("ip", "link", "add", va, "type", "veth", "peer", "name", vb)
        _run("ip", "link", "set", va, "netns", na)
        _run("ip", "link", "set", vb, "netns", nb)
        _run("ip", "-n", na, "addr", "add", f"{ipa}/24", "dev", va)
        _run("ip", "-n", nb, "addr", "add", f"{ipb}/24", "dev", vb)
        for ns, dev in ((na, va), (nb, vb)):
            _run("ip", "-n", ns, "link", "set", dev, "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
    except subprocess.CalledProcessError as e:
        _run("ip", "netns", "del", na, check=False)
        _run("ip", "netns", "del", nb, check=False)
        pytest.skip(f"cannot wire the namespaces with a veth pair: {e.stderr.strip()}")
    try:
        yield {"ns": (na, nb), "dev": (va, vb), "ip": (ipa, ipb), "subnet": f"10.231.{octet}.0/24"}
    finally:
        _run("ip", "netns", "del", na, check=False)  # deleting a namespace removes its veth end (and the pair)
        _run("ip", "netns", "del", nb, check=False)


def test_ddp_across_two_network_namespaces_over_tcp(tmp_path, two_hosts):
    (na, nb), (va, vb), (ipa, ipb) = two_hosts["ns"], two_hosts["dev"], two_hosts["ip"]
    agent = tmp_path / "ns_agent.sh"
    # The launcher's "ssh": run the daemon command line inside the namespace that owns the address.
    agent.write_text(
        "#!/bin/sh\nhost=$1; shift\n"
        f'case "$host" in {ipa}) ns={na};; {ipb}) ns={nb};; *) echo "ns_agent: unknown host $host" >&2; exit 1;; esac\n'
        'exec ip netns exec "$ns" unshare --uts sh -c "hostname $ns; $*"\n'
    )
    agent.chmod(0o755)
    spec = {**BASE, "dist": {**DDP, "timeout_s": 60}, "micro": 1, "out": str(tmp_path)}
    subnet = two_hosts["subnet"]
    inner = [MPIRUN, "--allow-run-as-root", "-np", "2", "--host", f"{ipa}:1,{ipb}:1",
             "--prtemca", "plm_ssh_agent", str(agent), "--prtemca", "oob_tcp_if_include", subnet,
             "--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_include", subnet, "--mca", "pml", "ob1",
             sys.executable, str(WORKER), json.dumps(spec)]
    env = mpi_env()
    env.pop("OMPI_MCA_btl", None)
    rx0 = _rx_bytes(nb, vb)
    cmd = ["ip", "netns", "exec", na, "unshare", "--uts", "sh", "-c", f'hostname {na}; exec "$@"', "sh", *inner]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    r0, r1 = results(tmp_path, 2)
    np.testing.assert_array_equal(r0["params"], r1["params"])
    ref = reference({**spec, "micro": 2}, BASE["steps"])
    np.testing.assert_allclose(r0["params"], ref, rtol=0, atol=2e-5)
    # every step's gradient allreduce crossed the veth link: at least params-bytes * steps / 2 arrived
    moved = _rx_bytes(nb, vb) - rx0
    assert moved > r0["params"].nbytes * BASE["steps"] / 2, (moved, r0["params"].nbytes)

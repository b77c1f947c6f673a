"""The committed fixtures against what their generator writes today (test_*_fixtures_are_current).

A generator run on another machine or torch build rounds differently: gradients of the tiny
checkpoints move by up to ~2e-5 of their tensor's largest entry (BLAS blocking), and what torch
computes in bf16 on the CPU by a few percent (its bf16 kernels change between releases). So a
tensor agrees when max|old − new| ≤ tol · max|new| — the parity tests' own metric — with tol
1e-4 (the parity tolerance; a changed generator moves far more), 5e-2 for tensors torch computed
in bf16 (names with "bf16": test_fw_bf16's TOL_BF16), and exact equality for integers."""
import os

import pytest
from safetensors.torch import load_file


def need_torch(ctest):
    """torch (with peft importable), or the test skipped: only when torch cannot be imported
    (CI has no torch); `ctest` names the unit tests that still check the committed fixtures."""
    try:
        import torch
    except ImportError:
        pytest.skip(f"torch is not importable (CI has no torch); the committed-fixture checks "
                    f"in {ctest} (ctest) still run")
    pytest.importorskip("peft")
    return torch


def assert_fixtures_current(committed_dir, fresh_dir, names):
    import torch
    assert names
    for n in names:
        old = load_file(os.path.join(committed_dir, n))
        new = load_file(os.path.join(str(fresh_dir), n))
        assert old.keys() == new.keys(), n
        for k in old:
            a, b = old[k], new[k]
            assert a.shape == b.shape and a.dtype == b.dtype, (n, k)
            if not a.is_floating_point():
                assert torch.equal(a, b), (n, k)
                continue
            a, b = a.double(), b.double()
            tol = 5e-2 if "bf16" in k else 1e-4
            err = (a - b).abs().max().item()
            assert err <= tol * max(b.abs().max().item(), 1e-30), (n, k, err)

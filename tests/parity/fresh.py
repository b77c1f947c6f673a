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


def assert_tool_current(root, tool, committed_dir, tmp_path, *args):
    """tools/TOOL --out tmp_path [args] writes every .safetensors committed_dir holds, within
    the tolerances above."""
    import subprocess
    import sys
    subprocess.run([sys.executable, os.path.join(root, "tools", tool), "--out", str(tmp_path),
                    *args], check=True, capture_output=True, timeout=600, cwd=root)
    names = sorted(n for n in os.listdir(committed_dir) if n.endswith(".safetensors"))
    assert_fixtures_current(committed_dir, tmp_path, names)


def assert_generator_current(root, tool, committed_dir, tmp_path, curve, keys=("batches",)):
    """assert_tool_current, and the loss curve `curve` (JSON) with the same `keys` and losses
    within 1e-6."""
    import json
    assert_tool_current(root, tool, committed_dir, tmp_path)
    with open(os.path.join(committed_dir, curve)) as f, open(os.path.join(str(tmp_path), curve)) as g:
        old, new = json.load(f), json.load(g)
    assert all(old[k] == new[k] for k in keys)
    assert all(abs(a - b) <= 1e-6 * abs(b) for a, b in zip(old["loss"], new["loss"]))


def peft_model(model_dir, adapter, auto="AutoModelForCausalLM"):
    """transformers' f32 eager model from model_dir with PeftModel.from_pretrained(adapter), in
    eval mode."""
    import torch
    import transformers
    from peft import PeftModel
    base = getattr(transformers, auto).from_pretrained(model_dir, attn_implementation="eager",
                                                       dtype=torch.float32)
    m = PeftModel.from_pretrained(base, adapter)
    m.eval()
    return m


def assert_logits_match(loupe_logits, m, ids, mask):
    """loupe's logits (nested lists, what `print out.logits` wrote) equal the PeftModel m's on
    (ids, mask) at the unmasked positions within 1e-4; m's logits returned."""
    import torch
    loupe = torch.tensor(loupe_logits)
    with torch.no_grad():
        ref = m(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits
    keep = torch.tensor(mask).bool()
    assert torch.allclose(loupe[keep], ref[keep], rtol=1e-4, atol=1e-4), \
        (loupe[keep] - ref[keep]).abs().max()
    return ref

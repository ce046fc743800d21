"""Every optimizer against the golden vectors of the official code (float64, 1e-10 relative)."""

from __future__ import annotations

import pytest
import torch

from bench_cli.registry import build_optimizer
from tests.registry.golden import CASES, run_case


@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "foreach"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_vector(case: str, foreach: bool) -> None:
    name, hparams, cosine, mode, expected = CASES[case]

    def build(params, **kw):
        return build_optimizer(name, params, **kw)

    got = run_case(build, hparams, cosine, mode, foreach)
    want = torch.tensor(expected, dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=0.0)

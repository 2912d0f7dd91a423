"""The cost model against torch's FLOP counter, the published ESMFold v1 coefficients, and measured memory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from structome.models.registry import ESMFOLD_V1_CONFIG
from structome.pipelines.cost_model import CostModel, Cubic

ROOT = Path(__file__).resolve().parents[2]


def _reduced_config(**trunk_changes) -> dict:
    """The tiny config with other widths and head counts, so every dimension is exercised."""
    from structome.models.tiny import tiny_config

    config = tiny_config()
    trunk = config.esmfold_config.trunk
    for name, value in trunk_changes.items():
        setattr(trunk, name, value)
    return config


def _counted_flops(config, length: int, batch: int, num_recycles: int) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import EsmForProteinFolding

    torch.manual_seed(0)
    model = EsmForProteinFolding(config).eval()
    ids = torch.randint(0, 20, (batch, length))
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(input_ids=ids, attention_mask=torch.ones_like(ids), num_recycles=num_recycles)
    return counter.get_total_flops()


@pytest.mark.parametrize("length, num_recycles", [(24, 0), (40, 2)])
def test_flops_match_torchs_counter_on_the_tiny_model(length, num_recycles):
    config = _reduced_config()
    model = CostModel.from_config(config.to_dict(), num_recycles)
    assert model.flops(length) == pytest.approx(_counted_flops(config, length, 1, num_recycles), rel=1e-9)


def test_flops_match_torchs_counter_on_other_widths_and_a_padded_batch():
    """Wider pair state, more heads, more structure-module points: the derivation follows the config."""
    config = _reduced_config(
        num_blocks=3, sequence_state_dim=96, pairwise_state_dim=48, sequence_head_width=32, pairwise_head_width=16
    )
    sm = config.esmfold_config.trunk.structure_module
    sm.num_heads_ipa, sm.num_qk_points, sm.num_v_points, sm.num_transition_layers = 4, 2, 3, 2
    config.num_hidden_layers, config.hidden_size, config.intermediate_size = 3, 48, 80
    model = CostModel.from_config(config.to_dict(), 1)
    # A batch of 3 padded to 20 executes 3 x FLOPs(20).
    assert model.executed_flops([20, 11, 7]) == pytest.approx(_counted_flops(config, 20, 3, 1), rel=1e-9)


def test_esmfold_v1_gives_the_published_coefficients_with_four_trunk_passes():
    """design.md: FLOPs(L) ~ 2.95e5 L^3 + 1.98e8 L^2 + 1.1e10 L (48 blocks, 4 passes, ESM-2 3B stem)."""
    polynomial = CostModel.from_config(ESMFOLD_V1_CONFIG).polynomial  # config max_recycles = 4 passes
    assert polynomial.a3 == pytest.approx(2.95e5, rel=0.01)
    assert polynomial.a2 == pytest.approx(1.98e8, rel=0.01)
    assert polynomial.a1 == pytest.approx(1.1e10, rel=0.02)
    assert CostModel.from_config(ESMFOLD_V1_CONFIG, 3).polynomial == polynomial  # num_recycles=3: 4 passes too


def test_esmfold_v1_stem_share_weights_and_crossover():
    model = CostModel.from_config(ESMFOLD_V1_CONFIG)
    by_part = model.flops_by_part(384)
    stem = sum(v for k, v in by_part.items() if k.startswith("stem."))
    assert 0.03 < stem / model.flops(384) < 0.05  # "ESM-2 3B stem ~4% at L=384"
    assert model.flops(384) == pytest.approx(50e12, rel=0.02)  # "~50 TFLOP at L = 384"
    assert model.parameters == pytest.approx(3.53e9, rel=0.01)  # design.md: 3.53 B parameters
    assert 650 < model.cubic_crossover_length < 700  # "the L^3 term dominates above L ~ 670"


def test_default_recycles_cost_a_fifth_more_trunk():
    four, five = (CostModel.from_config(ESMFOLD_V1_CONFIG, n) for n in (3, 4))
    assert five.polynomial.a3 / four.polynomial.a3 == pytest.approx(5 / 4)


def test_cubic_arithmetic():
    cubic = Cubic(1, 2, 3, 4) + 2 * Cubic(a1=1)
    assert cubic(2) == 8 + 8 + 10 + 4
    with pytest.raises(ValueError):
        CostModel.from_config(ESMFOLD_V1_CONFIG, -1)


def test_activation_memory_grows_with_batch_and_chunking_removes_the_cubic_term():
    model = CostModel.from_config(ESMFOLD_V1_CONFIG, 4)
    unchunked = model.activation_memory(1, 1024, None)
    chunked = model.activation_memory(1, 1024, 32)
    assert unchunked.triangle_attention > 5 * chunked.triangle_attention  # L^3 logits vs 32 rows
    batch_of_two = model.activation_memory(2, 1024, 32)  # chunked, but the triangle bias is expanded: L^3
    assert batch_of_two.triangle_attention > 2 * model.dims.trunk.pair_heads * 1024**3 * model.bytes_per_activation
    assert chunked.peak == pytest.approx(chunked.pair_transition)  # chunked, the pair MLP is the peak
    assert model.peak_activation_bytes(4, 200, None) == pytest.approx(4 * model.peak_activation_bytes(1, 200, None))
    assert model.peak_activation_bytes(4, 300, 64) > 4 * model.peak_activation_bytes(1, 300, 64)  # expanded bias
    # Design.md: the tiny model at L=800 needs 8.9 GB unchunked, 1.3 GB with chunk 32.
    tiny = CostModel.from_config(_reduced_config().to_dict(), 4)
    assert tiny.peak_activation_bytes(1, 800, None) == pytest.approx(8.9e9, rel=0.1)
    assert tiny.peak_activation_bytes(1, 800, 32) == pytest.approx(1.3e9, rel=0.15)


_PEAK_SCRIPT = """
import sys, torch
from transformers import EsmForProteinFolding
from structome.models.tiny import tiny_config
batch, length, chunk, pair_dim, pair_heads, ipa_heads = (int(a) for a in sys.argv[1:])
config = tiny_config()
config.esmfold_config.trunk.pairwise_state_dim = pair_dim
config.esmfold_config.trunk.pairwise_head_width = pair_dim // pair_heads
config.esmfold_config.trunk.structure_module.pairwise_dim = pair_dim
config.esmfold_config.trunk.structure_module.num_heads_ipa = ipa_heads
model = EsmForProteinFolding(config).eval()
model.trunk.set_chunk_size(chunk or None)
def run(b, n):
    ids = torch.randint(0, 20, (b, n))
    with torch.no_grad():
        model(input_ids=ids, attention_mask=torch.ones_like(ids), num_recycles=1)
def status(field):
    line = next(l for l in open("/proc/self/status") if l.startswith(field))
    return int(line.split()[1]) * 1024
run(1, 8)
open("/proc/self/clear_refs", "w").write("5")  # peak RSS := current RSS
before = status("VmRSS")
run(batch, length)
print(status("VmHWM") - before)
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "batch, length, chunk, pair_dim, pair_heads, ipa_heads, peak_at",
    [
        (1, 256, 0, 32, 2, 12, "triangle_attention"),  # unchunked: the L^3 logits
        (1, 256, 8, 32, 2, 12, "structure_module"),  # chunked, tiny widths: invariant point attention
        (1, 192, 8, 96, 6, 1, "pair_transition"),  # chunked, wide pair state: the pair MLP
        (2, 160, 8, 96, 6, 1, "triangle_attention"),  # chunked batch: the triangle bias expanded to L^3
    ],
)
def test_activation_memory_matches_the_measured_peak(batch, length, chunk, pair_dim, pair_heads, ipa_heads, peak_at):
    """Peak RSS of a CPU forward pass (1 recycle); glibc's mmap threshold at 64 KiB returns freed tensors at once."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "PYTHONPATH": str(ROOT)}
    args = [str(v) for v in (batch, length, chunk, pair_dim, pair_heads, ipa_heads)]
    measured = int(
        subprocess.run(
            [sys.executable, "-c", _PEAK_SCRIPT, *args], env=env, check=True, capture_output=True, text=True
        ).stdout
    )
    config = _reduced_config(pairwise_state_dim=pair_dim, pairwise_head_width=pair_dim // pair_heads)
    config.esmfold_config.trunk.structure_module.pairwise_dim = pair_dim
    config.esmfold_config.trunk.structure_module.num_heads_ipa = ipa_heads
    memory = CostModel.from_config(config.to_dict(), 1).activation_memory(batch, length, chunk or None)
    assert max(vars(memory), key=lambda name: getattr(memory, name)) == peak_at
    assert memory.peak == pytest.approx(measured, rel=0.06)


def test_planning_never_imports_torch():
    code = "import sys, structome.pipelines.batching, structome.pipelines.cost_model; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0

"""What folding a padded batch costs: FLOPs and activation memory of ESMFold-like models, from the config dims.

Pure numbers (no torch), so planners and reports import it freely. FLOPs count the matrix products only
(2 per multiply-accumulate), as torch.utils.flop_counter does; tests/pipelines/test_cost_model.py checks the
derivation against that counter on reduced-width configs, and ESMFold v1 against the published coefficients.

The network, as transformers' `EsmForProteinFolding` runs it on a sequence of L residues:

- stem: ESM-2 over L + 2 tokens (BOS/EOS), hidden states combined and projected to the trunk's width;
- trunk: `blocks` folding blocks per pass (sequence attention with pair bias, triangle multiplications
  and triangle attention over the L x L pair state: the L^3 terms), then the structure module
  (`structure.blocks` runs of invariant point attention with shared weights); transformers runs
  num_recycles + 1 passes when `num_recycles` is given (the config's `max_recycles` when it is not);
- heads: distogram, pTM, pLDDT and LM heads, once.

With the ESMFold v1 config and 4 trunk passes this gives 2.95e5 L^3 + 1.99e8 L^2 + 1.10e10 L (design.md).
structome's default num_recycles=4 runs 5 passes: ~25% more trunk FLOPs than that.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

from structome.models.registry import preset

logger = logging.getLogger(__name__)

LM_TOKENS_EMBED = 23  # ESMFold's residue embedding: padding, 20 residues, X, mask
DISTOGRAM_BINS = 64  # distogram and pTM heads
LDDT_BINS = 50
ATOM37 = 37


@dataclass(frozen=True)
class Cubic:
    """a3 L^3 + a2 L^2 + a1 L + a0, a cost as a function of the padded length L."""

    a3: float = 0.0
    a2: float = 0.0
    a1: float = 0.0
    a0: float = 0.0

    def __call__(self, length: float) -> float:
        return ((self.a3 * length + self.a2) * length + self.a1) * length + self.a0

    def __add__(self, other: Cubic) -> Cubic:
        return Cubic(self.a3 + other.a3, self.a2 + other.a2, self.a1 + other.a1, self.a0 + other.a0)

    def __mul__(self, factor: float) -> Cubic:
        return Cubic(self.a3 * factor, self.a2 * factor, self.a1 * factor, self.a0 * factor)

    __rmul__ = __mul__


# How often a product runs, per sequence of length L.
PER_RESIDUE = Cubic(a1=1)
PER_PAIR = Cubic(a2=1)
PER_TRIPLE = Cubic(a3=1)
PER_TOKEN = Cubic(a1=1, a0=2)  # the stem sees L + 2 tokens
PER_TOKEN_PAIR = Cubic(a2=1, a1=4, a0=4)  # (L + 2)^2


@dataclass(frozen=True)
class Part:
    """One piece of the network: multiply-accumulates of one run, its weights, and how often it runs."""

    name: str
    macs: Cubic  # multiply-accumulates of one run on one sequence
    weights: int  # parameters (shared by all runs)
    runs: int = 1  # per forward pass (trunk passes x blocks, structure-module blocks ...)

    @property
    def flops(self) -> Cubic:
        return self.macs * (2 * self.runs)


def _linear(fan_in: int, fan_out: int, per: Cubic) -> tuple[Cubic, int]:
    return per * (fan_in * fan_out), fan_in * fan_out


def _sum(pieces: Sequence[tuple[Cubic, int]]) -> tuple[Cubic, int]:
    total, weights = Cubic(), 0
    for macs, count in pieces:
        total, weights = total + macs, weights + count
    return total, weights


@dataclass(frozen=True)
class StemDims:
    """The ESM-2 language model."""

    layers: int
    hidden: int
    ffn: int
    heads: int
    vocab: int = 33


@dataclass(frozen=True)
class TrunkDims:
    blocks: int
    seq_dim: int  # c_s
    pair_dim: int  # c_z
    seq_head_width: int
    pair_head_width: int
    max_recycles: int = 4  # passes when num_recycles is not given

    @property
    def seq_heads(self) -> int:
        return self.seq_dim // self.seq_head_width

    @property
    def pair_heads(self) -> int:
        return self.pair_dim // self.pair_head_width


@dataclass(frozen=True)
class StructureDims:
    """The structure module (invariant point attention, transitions, backbone and angle updates)."""

    seq_dim: int = 384
    pair_dim: int = 128
    ipa_dim: int = 16
    ipa_heads: int = 12
    qk_points: int = 4
    v_points: int = 8
    blocks: int = 8
    transition_layers: int = 1
    resnet_dim: int = 128
    resnet_blocks: int = 2
    angles: int = 7


@dataclass(frozen=True)
class FoldingDims:
    stem: StemDims
    trunk: TrunkDims
    structure: StructureDims
    lddt_hidden: int = 128

    @classmethod
    def from_config(cls, config: Mapping) -> FoldingDims:
        """From an `EsmConfig` as a dict (config.json of the weights, or `config.to_dict()`)."""
        folding = config.get("esmfold_config") or {}
        trunk = dict(folding.get("trunk") or {})
        structure = dict(trunk.pop("structure_module", None) or {})
        return cls(
            stem=StemDims(
                layers=config["num_hidden_layers"],
                hidden=config["hidden_size"],
                ffn=config["intermediate_size"],
                heads=config["num_attention_heads"],
                vocab=config.get("vocab_size") or 33,
            ),
            trunk=TrunkDims(
                blocks=trunk.get("num_blocks", 48),
                seq_dim=trunk.get("sequence_state_dim", 1024),
                pair_dim=trunk.get("pairwise_state_dim", 128),
                seq_head_width=trunk.get("sequence_head_width", 32),
                pair_head_width=trunk.get("pairwise_head_width", 32),
                max_recycles=trunk.get("max_recycles", 4),
            ),
            structure=StructureDims(
                **{name: structure[key] for name, key in _STRUCTURE_KEYS.items() if structure.get(key) is not None}
            ),
            lddt_hidden=folding.get("lddt_head_hid_dim", 128),
        )


_STRUCTURE_KEYS = {
    "seq_dim": "sequence_dim",
    "pair_dim": "pairwise_dim",
    "ipa_dim": "ipa_dim",
    "ipa_heads": "num_heads_ipa",
    "qk_points": "num_qk_points",
    "v_points": "num_v_points",
    "blocks": "num_blocks",
    "transition_layers": "num_transition_layers",
    "resnet_dim": "resnet_dim",
    "resnet_blocks": "num_resnet_blocks",
    "angles": "num_angles",
}


def stem_parts(stem: StemDims, seq_dim: int) -> list[Part]:
    d = stem.hidden
    layer, layer_weights = _sum(
        [
            _linear(d, 4 * d, PER_TOKEN),  # q, k, v, output
            _linear(d, stem.ffn, PER_TOKEN),
            _linear(stem.ffn, d, PER_TOKEN),
            (PER_TOKEN_PAIR * (2 * d), 0),  # q.k and attention x v
        ]
    )
    project, project_weights = _sum(
        [
            (PER_RESIDUE * ((stem.layers + 1) * d), 0),  # softmax-weighted sum of the hidden states
            _linear(d, seq_dim, PER_RESIDUE),
            _linear(seq_dim, seq_dim, PER_RESIDUE),
        ]
    )
    return [
        Part("stem.embedding", Cubic(), stem.vocab * d),
        Part("stem.layers", layer, layer_weights * stem.layers, runs=stem.layers),
        Part("stem.projection", project, project_weights),
    ]


def trunk_block(trunk: TrunkDims) -> tuple[Cubic, int]:
    """One folding block: sequence attention with pair bias, sequence MLP, pair update, triangles, pair MLP."""
    c_s, c_z = trunk.seq_dim, trunk.pair_dim
    return _sum(
        [
            _linear(c_z, trunk.seq_heads, PER_PAIR),  # pair -> sequence attention bias
            _linear(c_s, 5 * c_s, PER_RESIDUE),  # q, k, v, gate, output
            (PER_PAIR * (2 * c_s), 0),  # sequence attention products
            _linear(c_s, 4 * c_s, PER_RESIDUE),
            _linear(4 * c_s, c_s, PER_RESIDUE),  # sequence MLP
            _linear(c_s, c_z, PER_RESIDUE),
            _linear(c_z, c_z, PER_PAIR),  # sequence -> pair
            _linear(c_z, 12 * c_z, PER_PAIR),  # two triangle multiplications: a, b, their gates, output, gate
            (PER_TRIPLE * (2 * c_z), 0),  # their L^3 products
            _linear(c_z, 2 * (5 * c_z + trunk.pair_heads), PER_PAIR),  # two triangle attentions: q k v gate out, bias
            (PER_TRIPLE * (4 * c_z), 0),  # their L^3 products (q.k, attention x v)
            _linear(c_z, 4 * c_z, PER_PAIR),
            _linear(4 * c_z, c_z, PER_PAIR),  # pair MLP
        ]
    )


def structure_block(sm: StructureDims) -> tuple[Cubic, int]:
    """One run of the structure module's loop: invariant point attention, transition, backbone, angles."""
    s, z, heads = sm.seq_dim, sm.pair_dim, sm.ipa_heads
    hidden = heads * sm.ipa_dim
    points = heads * 3 * (2 * sm.qk_points + sm.v_points)
    concat = heads * (z + sm.ipa_dim + 4 * sm.v_points)
    return _sum(
        [
            _linear(s, 3 * hidden + points, PER_RESIDUE),  # q, k, v and the query/key/value points
            _linear(z, heads, PER_PAIR),  # pair bias
            (PER_PAIR * (2 * hidden + heads * z), 0),  # q.k, attention x v, attention x pair
            _linear(concat, s, PER_RESIDUE),
            _linear(s, s * 3 * sm.transition_layers, PER_RESIDUE),
            _linear(s, 6, PER_RESIDUE),  # backbone update
            _linear(s, 2 * sm.resnet_dim, PER_RESIDUE),  # angle resnet inputs
            _linear(sm.resnet_dim, 2 * sm.resnet_dim * sm.resnet_blocks, PER_RESIDUE),
            _linear(sm.resnet_dim, 2 * sm.angles, PER_RESIDUE),
        ]
    )


def trunk_parts(dims: FoldingDims, passes: int) -> list[Part]:
    trunk, sm = dims.trunk, dims.structure
    entry, entry_weights = _sum(
        [
            _linear(trunk.seq_dim, sm.seq_dim, PER_RESIDUE),
            _linear(trunk.pair_dim, sm.pair_dim, PER_PAIR),
            _linear(sm.seq_dim, sm.seq_dim, PER_RESIDUE),
        ]
    )
    block, block_weights = trunk_block(trunk)
    sm_block, sm_weights = structure_block(sm)
    return [
        Part("trunk.blocks", block, block_weights * trunk.blocks, runs=passes * trunk.blocks),
        Part("structure_module.entry", entry, entry_weights, runs=passes),
        Part("structure_module.blocks", sm_block, sm_weights, runs=passes * sm.blocks),
    ]


def head_parts(dims: FoldingDims) -> list[Part]:
    sm, hidden = dims.structure, dims.lddt_hidden
    pair_heads, pair_weights = _linear(dims.trunk.pair_dim, 2 * DISTOGRAM_BINS, PER_PAIR)
    lm, lm_weights = _linear(dims.trunk.seq_dim, LM_TOKENS_EMBED, PER_RESIDUE)
    lddt, lddt_weights = _sum(
        [
            _linear(sm.seq_dim, hidden, PER_RESIDUE),
            _linear(hidden, hidden, PER_RESIDUE),
            _linear(hidden, ATOM37 * LDDT_BINS, PER_RESIDUE),
        ]
    )
    return [
        Part("heads.distogram_ptm", pair_heads, pair_weights),
        Part("heads.lm", lm, lm_weights),
        Part("heads.lddt", lddt, lddt_weights, runs=sm.blocks),  # on the states of every structure block
        Part("heads.plddt_mean", PER_RESIDUE * (ATOM37 * LDDT_BINS), 0),
    ]


# Activation memory at the peak, in values per pair (i, j) of one sequence. Measured: peak RSS of CPU forward
# passes (glibc's mmap threshold at 64 KiB) of tiny-width variants: c_z 16-128, 1-6 pair heads, 1-36 IPA heads,
# batch 1-3, L 128-384. With 1-2 recycles every point is within 6% of these forms, most within 2%
# (tests/pipelines/test_cost_model.py); with 0 recycles the peak is up to 10% lower than they say.
PAIR_TRANSITION_COPIES = 13  # x c_z: pair MLP (4 c_z hidden, its ReLU), pair state, recycled state
TRIANGLE_PAIR_COPIES = 9  # x c_z, live beside unchunked triangle-attention logits ...
TRIANGLE_PAIR_COPIES_CHUNKED = 8  # ... and beside chunked ones
SEQ_BIAS_COPIES = 4  # x sequence heads: attention bias, logits, mask, softmax
IPA_POINT_VALUES = 3  # x v_points per IPA head (points x attention, 3 coordinates) ...
IPA_PAIR_COPIES = 5  # ... plus this many structure-module pair states


@dataclass(frozen=True)
class ActivationMemory:
    """Peak activation bytes of one padded batch, by where the peak can fall."""

    pair_transition: float
    triangle_attention: float
    structure_module: float
    stem: float

    @property
    def peak(self) -> float:
        return max(self.pair_transition, self.triangle_attention, self.structure_module, self.stem)


@dataclass(frozen=True)
class CostModel:
    """FLOPs and activation memory of an ESMFold-like model for padded batches."""

    dims: FoldingDims
    trunk_passes: int  # num_recycles + 1
    bytes_per_activation: int = 4  # fp32 (a bf16 trunk still keeps layer norms and softmax in fp32)
    bytes_per_stem_value: int = 4  # stem activations and weights (2 for an fp16/bf16 stem)

    def __post_init__(self) -> None:
        if self.trunk_passes < 1:
            raise ValueError(f"at least one trunk pass, got {self.trunk_passes}")

    @classmethod
    def from_config(cls, config: Mapping, num_recycles: int | None = None, **kwargs) -> CostModel:
        """`num_recycles` as given to the model (passes = num_recycles + 1); None: the config's max_recycles."""
        dims = FoldingDims.from_config(config)
        passes = dims.trunk.max_recycles if num_recycles is None else num_recycles + 1
        return cls(dims, passes, **kwargs)

    @classmethod
    def for_preset(cls, model: str, num_recycles: int | None = None, **kwargs) -> CostModel:
        """The cost model of a named model preset (models.registry), from its architecture config."""
        return cls.from_config(preset(model).architecture(), num_recycles, **kwargs)

    @cached_property
    def parts(self) -> tuple[Part, ...]:
        dims = self.dims
        return (*stem_parts(dims.stem, dims.trunk.seq_dim), *trunk_parts(dims, self.trunk_passes), *head_parts(dims))

    @cached_property
    def polynomial(self) -> Cubic:
        """FLOPs of one sequence as a polynomial in its (padded) length."""
        total = Cubic()
        for part in self.parts:
            total = total + part.flops
        return total

    def flops(self, length: int) -> float:
        """FLOPs of folding one sequence of `length` residues."""
        return self.polynomial(length)

    def flops_by_part(self, length: int) -> dict[str, float]:
        return {part.name: part.flops(length) for part in self.parts}

    def useful_flops(self, lengths: Sequence[int]) -> float:
        """What the batch's sequences would cost unpadded."""
        return sum(self.polynomial(length) for length in lengths)

    def executed_flops(self, lengths: Sequence[int]) -> float:
        """What the padded batch costs: every sequence as long as the longest."""
        return len(lengths) * self.polynomial(max(lengths)) if lengths else 0.0

    @property
    def parameters(self) -> int:
        return sum(part.weights for part in self.parts)

    @property
    def weight_bytes(self) -> int:
        stem = sum(p.weights for p in self.parts if p.name.startswith("stem."))
        return stem * self.bytes_per_stem_value + (self.parameters - stem) * 4

    @property
    def cubic_crossover_length(self) -> float:
        """Length above which the L^3 term costs more than the L^2 term."""
        return self.polynomial.a2 / self.polynomial.a3

    def activation_memory(self, batch: int, length: int, chunk_size: int | None) -> ActivationMemory:
        """Peak activation bytes of `batch` sequences padded to `length` at a trunk chunk size (None: unchunked).

        Triangle attention holds logits and softmax for `rows` query rows at once: all batch x L rows
        unchunked (the L^3 term), `chunk_size` rows chunked (transformers chunks the flattened batch x row axis).
        Chunked with batch > 1, transformers' chunk_layer first copies the triangle bias out to
        [batch x L, heads, L, L]: the L^3 term is back, once (with batch 1 the bias stays broadcast).
        """
        trunk, sm = self.dims.trunk, self.dims.structure
        pairs = batch * length * length
        bias = SEQ_BIAS_COPIES * trunk.seq_heads + 2  # + int64 recycling bins
        ipa = sm.ipa_heads * (IPA_POINT_VALUES * sm.v_points + sm.qk_points) + IPA_PAIR_COPIES * sm.pair_dim
        return ActivationMemory(
            pair_transition=self.bytes_per_activation * pairs * (PAIR_TRANSITION_COPIES * trunk.pair_dim + bias),
            triangle_attention=self.bytes_per_activation
            * (pairs * bias + self._triangle_values(batch, length, chunk_size)),
            structure_module=self.bytes_per_activation * pairs * ipa,
            stem=self.bytes_per_stem_value * self._stem_values(batch, length),
        )

    def _triangle_values(self, batch: int, length: int, chunk_size: int | None) -> float:
        trunk = self.dims.trunk
        pairs = batch * length * length
        if chunk_size is None:
            return pairs * TRIANGLE_PAIR_COPIES * trunk.pair_dim + 2 * trunk.pair_heads * batch * length**3
        rows = min(chunk_size, batch * length)
        expanded_bias = trunk.pair_heads * batch * length**3 if batch > 1 else 0
        logits = 2 * trunk.pair_heads * rows * length * length
        return pairs * TRIANGLE_PAIR_COPIES_CHUNKED * trunk.pair_dim + logits + expanded_bias

    def _stem_values(self, batch: int, length: int) -> float:
        """Hidden states of every layer (as a tuple and stacked) and one layer's attention logits and softmax."""
        stem, tokens = self.dims.stem, length + 2
        return batch * (tokens * 2 * (stem.layers + 1) * stem.hidden + 2 * stem.heads * tokens * tokens)

    def peak_activation_bytes(self, batch: int, length: int, chunk_size: int | None) -> float:
        return self.activation_memory(batch, length, chunk_size).peak

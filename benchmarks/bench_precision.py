"""How far each precision policy moves ESMFold's outputs from fp32, on the full-size architecture.

    .venv/bin/python benchmarks/bench_precision.py [--length 40] [--recycles 1] [--device cpu|cuda]

Builds the full ESMFold v1 architecture (ESM-2 3B stem, 48-block trunk) with seeded random weights
(models/full_size.py; 13 GiB in fp32), folds a few real E. coli sequences under fp32, then under each other
policy, and prints per policy: coordinate RMSD and max deviation over existing atoms (Å), max |pLDDT|
deviation, max |PAE| deviation (stored integer bins), pTM deviation, and non-finite outputs (which the
build refolds in fp32). Random weights have the real arithmetic, not real structures: read the figures as
numerical error of each policy, not as accuracy.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from structome.models.esmfold import EsmFoldPredictor  # noqa: E402
from structome.models.full_size import build_full_size_model  # noqa: E402
from structome.models.types import (  # noqa: E402
    EsmFoldSettings,  # noqa: E402
    Prediction,
    PredictionRequest,
    Provenance,
)

# Real E. coli K-12 proteins (UniProt), cut to the benchmark length.
SEQUENCES = {
    "P0A7K6": "MSNIIKQLEQEQMKQDVPSFRPGDTVEVKVWVVEGSKKRLQAFEGVVIAIRNRGLHSAFTVRKISNGEGVERVFQTHSPVVDSISVKRRGAVRKAKLYYLRERTGKAARIKERLN",
    "P0AG63": "MTDKIRTLQGRVVSDKMEKSIVVAIERFVKHPIYGKFIKRTTKLHVHDENNECGIGDVVEIRECRPLSKTKSWTLVRVVEKAVL",
}
POLICIES = (("fp32", "tf32"), ("fp32", "bf16"), ("fp32", "fp16"), ("bf16", "fp32"), ("fp16", "fp32"), ("bf16", "bf16"))


def fold(model, stem: str, trunk: str, requests, recycles: int, device: str):
    settings = EsmFoldSettings(num_recycles=recycles, stem_precision=stem, trunk_precision=trunk, device=device)
    model.esm.to({"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[stem])
    provenance = Provenance(
        "esmfold-full-random", "v1", "random", "0" * 64, True, f"stem={stem},trunk={trunk}", recycles, None, device
    )
    predictor = EsmFoldPredictor(model, settings, provenance)
    started = time.perf_counter()
    results = [predictor.predict([r])[0] for r in requests]
    finite = all(isinstance(result, Prediction) for result in results)
    return (results if finite else None), time.perf_counter() - started


def deviation(reference, other) -> dict:
    rows = []
    for a, b in zip(reference, other, strict=True):
        mask = a.atom_mask & b.atom_mask
        delta = np.linalg.norm(a.coords[mask] - b.coords[mask], axis=-1)
        rows.append(
            (
                np.sqrt((delta**2).mean()),
                delta.max(),
                np.abs(a.plddt - b.plddt).max(),
                np.abs(a.pae.astype(int) - b.pae.astype(int)).max(),
                abs(a.ptm - b.ptm),
            )
        )
    worst = np.max(np.array(rows), axis=0)
    return dict(zip(("rmsd", "max_dev", "plddt", "pae", "ptm"), worst, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=40)
    parser.add_argument("--recycles", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    requests = [PredictionRequest(k, s[: args.length]) for k, s in SEQUENCES.items()]
    started = time.perf_counter()
    model = build_full_size_model().to(args.device)
    print(
        f"full-size ESMFold, random weights: {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters, "
        f"built in {time.perf_counter() - started:.0f} s; {len(requests)} x {args.length} aa, "
        f"{args.recycles} recycle(s), {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    reference, seconds = fold(model, "fp32", "fp32", requests, args.recycles, args.device)
    print(f"{'stem/trunk':<11} {'seconds':>8} {'RMSD Å':>8} {'max Å':>8} {'pLDDT':>7} {'PAE':>4} {'pTM':>7}")
    print(f"{'fp32/fp32':<11} {seconds:>8.1f} {'(reference)':>30}")
    for stem, trunk in POLICIES:
        result, seconds = fold(model, stem, trunk, requests, args.recycles, args.device)
        if result is None:
            print(f"{stem + '/' + trunk:<11} {seconds:>8.1f}   non-finite output (the build refolds in fp32)")
            continue
        d = deviation(reference, result)
        print(
            f"{stem + '/' + trunk:<11} {seconds:>8.1f} {d['rmsd']:>8.3f} {d['max_dev']:>8.3f} {d['plddt']:>7.2f} "
            f"{int(d['pae']):>4} {d['ptm']:>7.4f}"
        )


if __name__ == "__main__":
    main()

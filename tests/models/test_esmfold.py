"""The ESMFold wrapper on the tiny model: loading, vocabulary, per-sequence outputs, batch invariance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import EsmForProteinFolding
from transformers.models.esm.openfold_utils import residue_constants

from structome.models import esmfold
from structome.models.esmfold import encode, load_esmfold, trust_weights_digest, weights_digest, weights_sha256
from structome.models.registry import describe_model, preset
from structome.models.tiny import build_tiny_model
from structome.models.types import EsmFoldSettings, PredictionRequest

SHORT = PredictionRequest("short", "MKTAYIAKQRQISFVKSHFSRQ")
LONG = PredictionRequest("long", "MSHHWGYGKHNGPEHWHKDFPIAKGERQSPVDIDTHTAKYDPSLKPLSVSYDQATS")


def test_tiny_weights_round_trip_through_from_pretrained(tiny_weights):
    loaded = EsmForProteinFolding.from_pretrained(tiny_weights, dtype=torch.float32)
    fresh = build_tiny_model().state_dict()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, fresh[name]), name
    assert sum(p.numel() for p in loaded.parameters()) < 1_000_000


def test_encoding_uses_the_alphafold2_vocabulary_not_esm2():
    ids, mask = encode(["ARNDCQEGHILKMFPSTWYVX", "AC"])
    assert ids[0].tolist() == [residue_constants.restype_order_with_x[c] for c in "ARNDCQEGHILKMFPSTWYVX"]
    assert ids[0].tolist() == list(range(21))
    assert mask.tolist()[1] == [1, 1] + [0] * 19


def test_outputs_are_per_sequence_and_on_alphafold_scales(tiny_predictor):
    short, long = tiny_predictor.predict([SHORT, LONG])
    assert short.coords.shape == (len(SHORT.sequence), 37, 3)
    assert long.pae.shape == (len(LONG.sequence),) * 2
    assert short.pae.dtype == np.uint8 and short.pae.max() <= 31
    assert 0 <= short.plddt.min() and short.plddt.max() <= 100
    assert short.plddt.max() > 1.5, "pLDDT must be stored on 0-100, not 0-1"
    assert 0 < short.ptm < 1 and short.ptm != long.ptm
    # every standard residue has at least its backbone, CB for all but glycine
    assert short.atom_mask[:, :3].all() and short.atom_mask[:, 3].sum() == len(SHORT.sequence)


def test_padded_batch_gives_the_same_prediction_as_alone(tiny_predictor):
    alone = tiny_predictor.predict([SHORT])[0]
    padded = tiny_predictor.predict([LONG, SHORT])[1]  # SHORT is padded to LONG's length here
    assert np.abs(alone.coords - padded.coords).max() < 1e-3
    assert np.abs(alone.plddt - padded.plddt).max() < 1e-2
    assert abs(alone.ptm - padded.ptm) < 1e-4
    assert np.abs(alone.pae.astype(int) - padded.pae.astype(int)).max() <= 1
    np.testing.assert_array_equal(alone.atom_mask, padded.atom_mask)


def test_unknown_residues_have_no_atoms_but_keep_their_plddt(tiny_predictor):
    """As reference ESMFold: X gets no coordinates; its neighbours and its confidence are kept."""
    prediction = tiny_predictor.predict([PredictionRequest("x", "MKXXAG")])[0]
    assert not prediction.atom_mask[2:4].any()
    assert prediction.atom_mask[[0, 1, 4, 5], 1].all()
    assert np.isfinite(prediction.plddt[2:4]).all() and len(prediction.plddt) == 6


def test_provenance_names_untrained_weights_and_their_hash(tiny_predictor, tiny_weights):
    provenance = tiny_predictor.provenance
    assert provenance.untrained and "untrained random weights" in provenance.description
    assert provenance.weights_sha256 == weights_sha256(tiny_weights)
    assert provenance.num_recycles == 1 and provenance.library_versions["transformers"]
    described = describe_model("esmfold-tiny", str(tiny_weights), EsmFoldSettings(num_recycles=1))
    assert described.settings_key() == provenance.settings_key()


def test_weights_hash_changes_with_the_weights(tiny_weights, tmp_path):
    model = EsmForProteinFolding.from_pretrained(tiny_weights)
    with torch.no_grad():
        model.ptm_head.bias += 1.0
    model.save_pretrained(tmp_path)
    assert weights_sha256(tmp_path) != weights_sha256(tiny_weights)


def test_a_trusted_digest_spares_a_worker_the_hashing_while_the_files_are_unchanged(
    tiny_weights, tmp_path, monkeypatch
):
    import shutil

    folder, elsewhere = tmp_path / "weights", tmp_path / "elsewhere"
    shutil.copytree(tiny_weights, folder)
    shutil.copytree(tiny_weights, elsewhere)
    digest = weights_digest(str(folder))  # the driver's
    assert digest.sha256 == weights_sha256(tiny_weights)  # same names, same contents
    hashed, file_sha256 = [], esmfold._file_sha256.__wrapped__

    def uncached_file_sha256(path, size, mtime_ns):  # a fresh worker process: nothing cached yet
        hashed.append(path)
        return file_sha256(path, size, mtime_ns)

    monkeypatch.setattr(esmfold, "_file_sha256", uncached_file_sha256)
    trust_weights_digest(digest)
    assert weights_sha256(folder) == digest.sha256 and hashed == []
    assert weights_sha256(elsewhere) == digest.sha256 and hashed  # another folder: hashed, not trusted
    hashed.clear()
    (folder / "config.json").write_text((folder / "config.json").read_text().replace("}", ', "x": 1}', 1))
    assert weights_sha256(folder) != digest.sha256 and hashed  # changed files: hashed again


def test_bad_model_names_and_missing_weights_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown model"):
        preset("alphafold9")
    with pytest.raises(FileNotFoundError):
        load_esmfold(str(tmp_path / "nothing-here"), EsmFoldSettings())
    with pytest.raises(ValueError):
        EsmFoldSettings(trunk_precision="fp8")


def test_a_hub_id_loads_from_the_hugging_face_cache(tiny_weights, tmp_path, monkeypatch):
    """The hub path is real: an id resolves through huggingface_hub's local cache first (no hub is reachable
    here, so a network call would fail the test)."""
    import shutil

    snapshot = tmp_path / "hub" / "models--structome--esmfold-tiny" / "snapshots" / "0123abc"
    shutil.copytree(tiny_weights, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abc")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    predictor = load_esmfold("structome/esmfold-tiny", EsmFoldSettings(num_recycles=0), untrained=True)
    assert predictor.provenance.weights == "structome/esmfold-tiny"
    assert predictor.provenance.weights_sha256 == weights_sha256(tiny_weights)
    assert len(predictor.predict([SHORT])[0].plddt) == len(SHORT.sequence)


@pytest.mark.parametrize("trunk", ["tf32", "bf16", "fp16"])
def test_each_trunk_policy_folds_and_its_full_precision_fallback_is_fp32(tiny_weights, trunk):
    settings = EsmFoldSettings(
        num_recycles=1, stem_precision="bf16" if trunk == "bf16" else "fp32", trunk_precision=trunk
    )
    reduced = load_esmfold(str(tiny_weights), settings, untrained=True)
    plain = load_esmfold(str(tiny_weights), EsmFoldSettings(num_recycles=1, stem_precision=settings.stem_precision))
    assert reduced.reduced_precision and not plain.reduced_precision
    assert reduced.provenance.precision == f"stem={settings.stem_precision},trunk={trunk}"
    folded = reduced.predict([SHORT])[0]  # a Prediction: finite by construction (else NonFiniteOutputError)
    with reduced.full_precision():
        again = reduced.predict([SHORT])[0]
    expected = plain.predict([SHORT])[0]
    # fp32 again; not bit-exact: after a reduced-precision call the same fp32 call on the same model object
    # moves atoms by up to ~0.02 Å on this CPU (cause not found: every module's output matches a fresh model's)
    assert np.abs(again.coords - expected.coords).max() < 0.05
    assert np.abs(again.pae.astype(int) - expected.pae.astype(int)).max() <= 1
    assert reduced.reduced_precision  # the policy is back after the block
    deviation = np.abs(folded.coords - expected.coords).max()
    if trunk in ("bf16", "fp16"):  # autocast changes the arithmetic; TF32 only changes CUDA matmuls
        assert 1e-3 < deviation < 5.0, deviation
    assert torch.get_float32_matmul_precision() == "highest"


def test_a_hub_id_is_described_from_the_hubs_metadata_without_downloading_the_weights(tiny_weights, monkeypatch):
    """The digest equals the one of the same files in a local folder (so the workers' check agrees); only the
    small git-kept file (config.json) is fetched, never the LFS weights."""
    import hashlib

    import huggingface_hub
    from huggingface_hub.hf_api import ModelInfo

    from structome.jobs.build.runner import ModelSpec, with_weights_digest
    from structome.models.esmfold import describe_esmfold

    weights = tiny_weights / "model.safetensors"
    sha256 = hashlib.sha256(weights.read_bytes()).hexdigest()
    size = weights.stat().st_size
    siblings = [  # as the hub's API answers (ModelInfo parses it)
        {"rfilename": "README.md", "size": 10, "blobId": "b0"},
        {"rfilename": "config.json", "size": 400, "blobId": "b1"},
        {
            "rfilename": "model.safetensors",
            "size": size,
            "blobId": "b2",
            "lfs": {"size": size, "sha256": sha256, "pointerSize": 0},
        },
        {"rfilename": "onnx/model.json", "size": 1, "blobId": "b3"},  # not top level: never downloaded, not hashed
    ]
    asked, fetched = [], []

    def model_info(self, repo_id, *, files_metadata=False, **kwargs):
        asked.append((repo_id, files_metadata))
        return ModelInfo(id=repo_id, sha="c0ffee", siblings=siblings)

    def hf_hub_download(repo_id, filename, *, revision=None, **kwargs):
        fetched.append((filename, revision))
        return str(tiny_weights / filename)

    def no_snapshot(*args, **kwargs):
        raise AssertionError("the weights were downloaded")

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_snapshot)
    provenance = describe_esmfold("structome/esmfold-tiny", EsmFoldSettings(num_recycles=0), untrained=True)
    assert provenance.weights_sha256 == weights_sha256(tiny_weights)
    assert asked == [("structome/esmfold-tiny", True)] and fetched == [("config.json", "c0ffee")]
    spec = ModelSpec("esmfold-tiny", "structome/esmfold-tiny", EsmFoldSettings(), provenance.settings_key())
    assert with_weights_digest(spec).weights_digest is None  # the driver never hashes a hub id's files

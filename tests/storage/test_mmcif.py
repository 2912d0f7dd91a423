"""ModelCIF writer: dictionary-valid, read back by gemmi and Biopython, AlphaFold-DB-like categories."""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

import gemmi
import numpy as np
import pytest
from Bio.PDB.MMCIF2Dict import MMCIF2Dict
from Bio.PDB.MMCIFParser import MMCIFParser

from structome.models.types import Entry, Prediction, Provenance
from structome.storage.mmcif import ATOM37_NAMES, MODELCIF_DICT_VERSION, to_mmcif, validate_mmcif

DATA = Path(__file__).resolve().parents[1] / "data"
DICTIONARY = DATA / "dictionaries" / "mmcif_ma.dic"
AFDB_MODEL = DATA / "afdb" / "AF-P41068-F1-model_v4.cif"
TEMPLATE_CATEGORIES = {"_ma_template_details", "_ma_template_ref_db_details", "_ma_template_trans_matrix"}
CREATED = datetime.date(2026, 3, 14)

SIDE_CHAINS = {
    "A": "", "R": "CG CD NE CZ NH1 NH2", "N": "CG OD1 ND2", "D": "CG OD1 OD2", "C": "SG",
    "Q": "CG CD OE1 NE2", "E": "CG CD OE1 OE2", "G": "", "H": "CG ND1 CD2 CE1 NE2", "I": "CG1 CG2 CD1",
    "L": "CG CD1 CD2", "K": "CG CD CE NZ", "M": "CG SD CE", "F": "CG CD1 CD2 CE1 CE2 CZ", "P": "CG CD",
    "S": "OG", "T": "OG1 CG2", "W": "CG CD1 CD2 NE1 CE2 CE3 CZ2 CZ3 CH2", "Y": "CG CD1 CD2 CE1 CE2 CZ OH",
    "V": "CG1 CG2",
}  # fmt: skip
SEQUENCE_30 = "MKTAYIAKQRQCSFVKSHFSRQXLEERLGW"  # X at 23; has C (SG) and M (SD) for sulphur


def atom_mask(sequence: str, unk_atoms: bool) -> np.ndarray:
    """Heavy atoms of each residue type in atom37 slots; X gets a backbone or (like ESMFold) nothing."""
    mask = np.zeros((len(sequence), 37), dtype=bool)
    for i, letter in enumerate(sequence):
        if letter == "X":
            names = ["N", "CA", "C", "O"] if unk_atoms else []
        else:
            names = ["N", "CA", "C", "O"] + ([] if letter == "G" else ["CB"]) + SIDE_CHAINS[letter].split()
        mask[i, [ATOM37_NAMES.index(name) for name in names]] = True
    mask[-1, ATOM37_NAMES.index("OXT")] = True
    return mask


def helix_coords(n: int, rng: np.random.Generator) -> np.ndarray:
    """An alpha-helix-like CA trace (2.3 Å radius, 1.5 Å rise, 100°/residue) with atoms scattered around it."""
    angle = np.deg2rad(100.0) * np.arange(n)
    ca = np.stack([2.3 * np.cos(angle), 2.3 * np.sin(angle), 1.5 * np.arange(n)], axis=-1)
    offsets = rng.normal(size=(37, 3))
    offsets *= rng.uniform(1.2, 6.0, size=(37, 1)) / np.linalg.norm(offsets, axis=1, keepdims=True)
    offsets[1] = 0.0  # CA
    coords = ca[:, None, :] + offsets[None] + rng.normal(scale=0.2, size=(n, 37, 3))
    return (coords + np.array([-48.25, 81.5, 120.0])).astype(np.float32)


def make_prediction(sequence: str, seed: int = 7, unk_atoms: bool = True) -> Prediction:
    rng = np.random.default_rng(seed)
    n = len(sequence)
    plddt = rng.uniform(20.0, 99.0, size=n).astype(np.float32)
    plddt[:4] = [49.99, 50.0, 70.0, 90.0]
    pae = rng.integers(0, 32, size=(n, n)).astype(np.uint8)
    np.fill_diagonal(pae, 0)
    coords = helix_coords(n, rng)
    return Prediction("pred-" + str(seed), sequence, coords, atom_mask(sequence, unk_atoms), plddt, 0.61237, pae)


def uniprot_entry(sequence: str) -> Entry:
    return Entry(
        entry_id="SM-P41068-F1", record_id="sp|P41068|TRAP_ECOLI", source_file="ecoli.fasta",
        accession="P41068", sequence=sequence, fragment=1, start=1, end=len(sequence),
        sequence_checksum="0197355516942160", sequence_md5="0" * 32, prediction_id="pred-7",
        entry_name="TRAP_ECOLI", database="sp", description='Protein TraP (5\'-"odd" name, café)',
        organism="Escherichia coli (strain K12)", tax_id=83333, gene="traP", sequence_version=2,
    )  # fmt: skip


def other_entry(fragment_sequence: str) -> Entry:
    """A non-UniProt record: a window (F2) of a longer sequence, no taxon, no gene, no entry name."""
    full = "M" * 200 + fragment_sequence + "G" * 50
    return Entry(
        entry_id="SM-contig_17-F2", record_id="contig_17", source_file="/home/someone/my proteins.fasta",
        accession="contig_17", sequence=full, fragment=2, start=201, end=200 + len(fragment_sequence),
        sequence_checksum="00AB12CD34EF5678", sequence_md5="f" * 32, prediction_id="pred-8",
    )  # fmt: skip


def make_provenance(untrained: bool = True) -> Provenance:
    return Provenance(
        model="esmfold-tiny", model_version="v1", weights="tests/data/esmfold_tiny",
        weights_sha256="9f" * 32, untrained=untrained, precision="stem=fp32,trunk=fp32", num_recycles=4,
        chunk_size=None, device="cpu", library_versions={"structome": "0.1.0", "torch": "2.13"},
    )  # fmt: skip


@pytest.fixture(scope="module")
def uniprot_case() -> tuple[Prediction, Entry, str]:
    prediction = make_prediction(SEQUENCE_30)
    entry = uniprot_entry(SEQUENCE_30)
    return prediction, entry, to_mmcif(prediction, entry, make_provenance(), created=CREATED, version=4)


@pytest.fixture(scope="module")
def other_case() -> tuple[Prediction, Entry, str]:
    # 120 residues with X at 79-80, so the (UNK) token sits on the 80-character wrap of the one-letter code.
    sequence = ("ACDEFGHIKLMNPQRSTVWY" * 6)[:78] + "XX" + ("WYVTSRQPNMLKIHGFEDCA" * 2)
    prediction = make_prediction(sequence, seed=8, unk_atoms=False)
    entry = other_entry(sequence)
    return prediction, entry, to_mmcif(prediction, entry, make_provenance(untrained=False), created=CREATED)


def block_of(text: str) -> gemmi.cif.Block:
    return gemmi.cif.read_string(text).sole_block()


def table(block: gemmi.cif.Block, category: str) -> dict[str, list[str]]:
    """A category as {tag: [unquoted values]}, nulls kept as '?' / '.' (loops and key-value pairs alike)."""
    found = block.find_mmcif_category(category + ".")
    tags = [tag[len(category) + 1 :] for tag in found.tags]
    return {tag: [_unquote(row[i]) for row in found] for i, tag in enumerate(tags)}


def _unquote(raw: str) -> str:
    return raw if gemmi.cif.is_null(raw) else gemmi.cif.as_string(raw)


def categories(block: gemmi.cif.Block) -> set[str]:
    return {name.rstrip(".") for name in block.get_mmcif_category_names()}


# --- dictionary validation -------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["uniprot_case", "other_case"])
def test_output_passes_modelcif_dictionary(case: str, request: pytest.FixtureRequest) -> None:
    _, _, text = request.getfixturevalue(case)
    assert validate_mmcif(text, DICTIONARY) == []


@pytest.mark.parametrize("case", ["uniprot_case", "other_case"])
def test_parent_links_hold_except_chem_comp_atom(case: str, request: pytest.FixtureRequest) -> None:
    """With `-p` the only miss is _chem_comp_atom, which AlphaFold DB files lack too."""
    _, _, text = request.getfixturevalue(case)
    problems = validate_mmcif(text, DICTIONARY, parents=True)
    assert problems, "expected the known _chem_comp_atom note"
    assert all("_chem_comp_atom" in problem or "_atom_site.label_atom_id" in problem for problem in problems)


def test_validator_passes_real_afdb_file() -> None:
    assert validate_mmcif(AFDB_MODEL.read_text(), DICTIONARY) == []


def test_validator_reports_enum_violation_and_unknown_tag(uniprot_case) -> None:
    _, _, text = uniprot_case
    broken = text.replace("'Ab initio model'", "'Lucky guess'")
    assert broken != text
    problems = validate_mmcif(broken, DICTIONARY)
    assert any("Lucky guess" in problem and "allowed values" in problem for problem in problems)
    unknown = text + "\n_structome_extra.note hello\n"
    assert any("unknown tag _structome_extra.note" in problem for problem in validate_mmcif(unknown, DICTIONARY))


def test_validator_reports_regex_violation() -> None:
    text = AFDB_MODEL.read_text().replace(
        "_ma_target_ref_db_details.gene_name                    traP",
        "_ma_target_ref_db_details.gene_name                    'tra P'",
    )
    assert any("code regex" in problem for problem in validate_mmcif(text, DICTIONARY))


def test_audit_conform_names_the_dictionary_version(uniprot_case) -> None:
    _, _, text = uniprot_case
    dictionary_version = gemmi.cif.read(str(DICTIONARY)).sole_block().find_value("_dictionary.version")
    audit = table(block_of(text), "_audit_conform")
    assert audit["dict_name"] == ["mmcif_ma.dic"]
    assert audit["dict_version"] == [MODELCIF_DICT_VERSION] == [dictionary_version]


# --- reading back ----------------------------------------------------------------------------------


def test_gemmi_reads_structure_back(uniprot_case) -> None:
    prediction, entry, text = uniprot_case
    block = block_of(text)
    assert block.name == entry.entry_id
    assert block.find_value("_entry.id") == entry.entry_id
    structure = gemmi.make_structure_from_block(block)
    assert len(structure) == 1
    assert [chain.name for chain in structure[0]] == ["A"]
    chain = structure[0]["A"]
    assert len(chain) == len(prediction.sequence)
    assert sum(len(residue) for residue in chain) == int(prediction.atom_mask.sum())
    for index, residue in enumerate(chain):
        assert residue.seqid.num == residue.label_seq == index + 1
        slots = np.flatnonzero(prediction.atom_mask[index])
        assert [atom.name for atom in residue] == [ATOM37_NAMES[slot] for slot in slots]
        for atom, slot in zip(residue, slots, strict=True):
            assert atom.element.name == ATOM37_NAMES[slot][0]
            assert atom.occ == 1.0
            assert atom.b_iso == pytest.approx(round(float(prediction.plddt[index]), 2), abs=1e-4)
            assert np.allclose(atom.pos.tolist(), prediction.coords[index, slot], atol=1e-3)


def test_gemmi_sees_the_declared_entity(uniprot_case) -> None:
    prediction, _, text = uniprot_case
    structure = gemmi.make_structure_from_block(block_of(text))
    entity = structure.get_entity("1")
    assert entity.polymer_type == gemmi.PolymerType.PeptideL
    assert gemmi.one_letter_code(list(entity.full_sequence)) == prediction.sequence
    assert list(entity.subchains) == ["A"]
    assert {residue.subchain for residue in structure[0]["A"]} == {"A"}


def test_biopython_reads_it_back(uniprot_case, tmp_path: Path) -> None:
    prediction, _, text = uniprot_case
    path = tmp_path / "model.cif"
    path.write_text(text)
    structure = MMCIFParser(QUIET=True).get_structure("m", str(path))
    chains = list(structure[0])
    assert [chain.id for chain in chains] == ["A"]
    residues = list(chains[0])
    assert len(residues) == len(prediction.sequence)
    assert residues[22].get_resname() == "UNK"
    assert sum(1 for _ in structure.get_atoms()) == int(prediction.atom_mask.sum())
    assert residues[0]["CA"].get_bfactor() == pytest.approx(49.99)


def test_atomless_residues_stay_in_the_sequence(other_case) -> None:
    """ESMFold gives UNK no atoms: the residue is in the sequence categories, not in atom_site."""
    prediction, _, text = other_case
    block = block_of(text)
    structure = gemmi.make_structure_from_block(block)
    assert len(structure[0]["A"]) == len(prediction.sequence) - 2
    assert sum(len(residue) for residue in structure[0]["A"]) == int(prediction.atom_mask.sum())
    scheme = table(block, "_pdbx_poly_seq_scheme")
    assert scheme["mon_id"][78:80] == ["UNK", "UNK"]
    assert scheme["auth_seq_num"][77:81] == ["78", "?", "?", "81"]
    assert scheme["pdb_mon_id"][78:80] == ["?", "?"]
    assert scheme["seq_id"] == [str(i) for i in range(1, 121)]
    local = table(block, "_ma_qa_metric_local")
    assert "79" not in local["label_seq_id"] and len(local["label_seq_id"]) == 118
    assert local["ordinal_id"] == [str(i) for i in range(1, 119)]
    mean = table(block, "_ma_qa_metric_global")["metric_value"][0]
    assert mean == f"{prediction.mean_plddt:.2f}"  # the global mean still covers every residue


# --- content -----------------------------------------------------------------------------------------


def test_modelcif_categories_cover_afdb_v4(uniprot_case) -> None:
    _, _, text = uniprot_case
    reference = {name for name in categories(gemmi.cif.read(str(AFDB_MODEL)).sole_block()) if name.startswith("_ma_")}
    ours = categories(block_of(text))
    assert len(reference) == 13
    assert reference - TEMPLATE_CATEGORIES <= ours
    required = {"_entry", "_atom_type", "_audit_conform", "_chem_comp", "_entity", "_entity_poly",
                "_entity_poly_seq", "_struct_asym", "_pdbx_poly_seq_scheme", "_atom_site", "_software"}  # fmt: skip
    assert required <= ours


def test_checksum_reads_back_as_text_with_leading_zero(uniprot_case, tmp_path: Path) -> None:
    _, entry, text = uniprot_case
    assert entry.sequence_checksum.startswith("0")
    value = block_of(text).find_value("_ma_target_ref_db_details.seq_db_sequence_checksum")
    assert gemmi.cif.as_string(value) == "0197355516942160"
    path = tmp_path / "model.cif"
    path.write_text(text)
    assert MMCIF2Dict(str(path))["_ma_target_ref_db_details.seq_db_sequence_checksum"] == ["0197355516942160"]


def test_reference_database_details_uniprot(uniprot_case) -> None:
    _, _, text = uniprot_case
    details = table(block_of(text), "_ma_target_ref_db_details")
    assert details["db_accession"] == ["P41068"]
    assert details["db_code"] == ["TRAP_ECOLI"]
    assert details["db_name"] == ["UNP"]
    assert details["gene_name"] == ["traP"]
    assert details["ncbi_taxonomy_id"] == ["83333"]
    assert details["organism_scientific"] == ["Escherichia coli (strain K12)"]
    assert (details["seq_db_align_begin"], details["seq_db_align_end"]) == (["1"], ["30"])
    assert details["target_entity_id"] == ["1"]


def test_reference_database_details_non_uniprot_fragment(other_case) -> None:
    prediction, entry, text = other_case
    block = block_of(text)
    details = table(block, "_ma_target_ref_db_details")
    assert details["db_name"] == ["Other"]
    assert details["db_name_other_details"] == ["FASTA file my proteins.fasta"]
    assert details["db_accession"] == ["contig_17"]
    assert details["db_code"] == details["gene_name"] == details["ncbi_taxonomy_id"] == ["?"]
    assert details["organism_scientific"] == ["?"]
    assert (details["seq_db_align_begin"], details["seq_db_align_end"]) == (["201"], ["320"])
    assert details["seq_db_sequence_checksum"] == ["00AB12CD34EF5678"]
    # residues of a fragment are numbered 1..L, like AlphaFold DB fragments
    structure = gemmi.make_structure_from_block(block)
    assert structure[0]["A"][0].seqid.num == 1
    assert structure[0]["A"][len(structure[0]["A"]) - 1].seqid.num == entry.length


def test_sequence_categories_and_unk(other_case) -> None:
    prediction, _, text = other_case
    block = block_of(text)
    poly = table(block, "_entity_poly")
    one_letter = poly["pdbx_seq_one_letter_code"][0]
    assert all(len(line) <= 80 for line in one_letter.split("\n"))
    assert "".join(one_letter.split()) == prediction.sequence.replace("X", "(UNK)")
    assert "".join(poly["pdbx_seq_one_letter_code_can"][0].split()) == prediction.sequence
    assert poly["pdbx_strand_id"] == ["A"] and poly["type"] == ["polypeptide(L)"]
    seq = table(block, "_entity_poly_seq")
    assert seq["num"] == [str(i) for i in range(1, 121)]
    assert [seq["mon_id"][i] for i in (78, 79)] == ["UNK", "UNK"]
    assert "UNK" in table(block, "_chem_comp")["id"]
    assert table(block, "_struct_asym") == {"id": ["A"], "entity_id": ["1"]}


def test_entity_description_survives_quotes(uniprot_case) -> None:
    _, _, text = uniprot_case
    description = table(block_of(text), "_entity")["pdbx_description"]
    assert description == ['Protein TraP (5\'-"odd" name, cafe)']


def test_qa_metrics(uniprot_case) -> None:
    prediction, _, text = uniprot_case
    block = block_of(text)
    metric = table(block, "_ma_qa_metric")
    assert list(zip(metric["id"], metric["mode"], metric["type"], strict=True)) == [
        ("1", "global", "pLDDT"), ("2", "local", "pLDDT"), ("3", "global", "pTM")
    ]  # fmt: skip
    global_ = table(block, "_ma_qa_metric_global")
    values = dict(zip(global_["metric_id"], global_["metric_value"], strict=True))
    assert values == {"1": f"{prediction.mean_plddt:.2f}", "3": "0.6124"}
    local = table(block, "_ma_qa_metric_local")
    assert local["metric_value"] == [f"{value:.2f}" for value in prediction.plddt.tolist()]
    assert local["metric_value"][:4] == ["49.99", "50.00", "70.00", "90.00"]
    assert set(local["metric_id"]) == {"2"} and local["label_comp_id"][22] == "UNK"


def test_qa_local_columns_in_afdb_order(uniprot_case) -> None:
    _, _, text = uniprot_case
    afdb = gemmi.cif.read(str(AFDB_MODEL)).sole_block().find_mmcif_category("_ma_qa_metric_local.").tags
    ours = block_of(text).find_mmcif_category("_ma_qa_metric_local.").tags
    assert list(ours) == list(afdb)


def test_provenance_and_untrained_flag(uniprot_case, other_case) -> None:
    _, _, text = uniprot_case
    block = block_of(text)
    models = table(block, "_ma_model_list")
    assert models["model_group_name"] == ["structome esmfold-tiny v1 (untrained random weights)"]
    assert models["model_type"] == ["Ab initio model"]
    details = table(block, "_ma_protocol_step")["details"][0]
    for expected in ("untrained random weights", "weights: tests/data/esmfold_tiny", "9f" * 32,
                     "stem=fp32,trunk=fp32", "recycles: 4", "chunk size: none"):  # fmt: skip
        assert expected in details
    software = table(block, "_software")
    assert software["name"] == ["structome", "esmfold-tiny"]
    assert software["version"] == ["0.1.0", "v1"]
    assert "untrained random weights" in software["description"][1]
    assert "untrained" not in other_case[2]


def test_revision_history_uses_created_and_version(uniprot_case) -> None:
    _, _, text = uniprot_case
    block = block_of(text)
    history = table(block, "_pdbx_audit_revision_history")
    assert history["revision_date"] == ["2026-03-14"] and history["major_revision"] == ["4"]
    assert table(block, "_pdbx_database_status")["recvd_initial_deposition_date"] == ["2026-03-14"]


def test_output_is_deterministic(uniprot_case) -> None:
    prediction, entry, text = uniprot_case
    assert to_mmcif(prediction, entry, make_provenance(), created=CREATED, version=4) == text


def test_length_mismatch_is_rejected() -> None:
    prediction = make_prediction(SEQUENCE_30)
    entry = uniprot_entry(SEQUENCE_30 + "A")
    with pytest.raises(ValueError, match="30 residues"):
        to_mmcif(prediction, entry, make_provenance(), created=CREATED)


def test_letters_outside_the_model_alphabet_are_rejected() -> None:
    prediction = dataclasses.replace(make_prediction(SEQUENCE_30), sequence=SEQUENCE_30.replace("C", "U"))
    with pytest.raises(ValueError, match="model alphabet"):
        to_mmcif(prediction, uniprot_entry(prediction.sequence), make_provenance(), created=CREATED)

"""ModelCIF mmCIF writer (AlphaFold DB v4 layout) and a dictionary validator, both built on gemmi.

`to_mmcif` is a pure function: one `Prediction` + its `Entry` + `Provenance` -> the text of one mmCIF file.
Coordinates go through a `gemmi.Structure` (atom_site, atom_type, struct_asym); the ModelCIF categories
(`_ma_*`), the polymer description and the reference-database details are set with
`Block.set_mmcif_category`. Every output validates against ModelCIF `mmcif_ma.dic` 1.4.2 (checked with
`validate_mmcif`, which the tests run on every case).

Residues are numbered 1..L within the entry (label_seq_id = auth_seq_id), as AlphaFold DB does for
fragments; `_ma_target_ref_db_details.seq_db_align_begin/end` place the entry inside the full sequence.
"""

from __future__ import annotations

import datetime
import functools
import io
import re
import threading
import unicodedata
from pathlib import Path
from typing import cast

import gemmi
import numpy as np

from structome.models.types import Entry, Prediction, Provenance

# AlphaFold / OpenFold atom37 order (residue_constants.atom_types).
ATOM37_NAMES = (
    "N", "CA", "C", "CB", "O", "CG", "CG1", "CG2", "OG", "OG1", "SG", "CD", "CD1", "CD2", "ND1", "ND2",
    "OD1", "OD2", "SD", "CE", "CE1", "CE2", "CE3", "NE", "NE1", "NE2", "OE1", "OE2", "CH2", "NH1", "NH2",
    "OH", "CZ", "CZ2", "CZ3", "NZ", "OXT",
)  # fmt: skip

MODELCIF_DICT_NAME = "mmcif_ma.dic"
MODELCIF_DICT_VERSION = "1.4.2"
MODELCIF_DICT_LOCATION = "https://raw.githubusercontent.com/ihmwg/ModelCIF/master/dist/mmcif_ma.dic"
CHAIN_ID = "A"
_RAW_CATEGORIES = ("_ma_target_ref_db_details.",)  # values quoted here, so the checksum is always quoted
UNIPROT_DATABASES = ("sp", "tr")

# one-letter code -> (CCD id, name, formula, formula weight); values as in AlphaFold DB files / the CCD.
CHEM_COMP = {
    "A": ("ALA", "ALANINE", "C3 H7 N O2", "89.093"),
    "R": ("ARG", "ARGININE", "C6 H15 N4 O2", "175.209"),
    "N": ("ASN", "ASPARAGINE", "C4 H8 N2 O3", "132.118"),
    "D": ("ASP", "ASPARTIC ACID", "C4 H7 N O4", "133.103"),
    "C": ("CYS", "CYSTEINE", "C3 H7 N O2 S", "121.158"),
    "Q": ("GLN", "GLUTAMINE", "C5 H10 N2 O3", "146.144"),
    "E": ("GLU", "GLUTAMIC ACID", "C5 H9 N O4", "147.129"),
    "G": ("GLY", "GLYCINE", "C2 H5 N O2", "75.067"),
    "H": ("HIS", "HISTIDINE", "C6 H10 N3 O2", "156.162"),
    "I": ("ILE", "ISOLEUCINE", "C6 H13 N O2", "131.173"),
    "L": ("LEU", "LEUCINE", "C6 H13 N O2", "131.173"),
    "K": ("LYS", "LYSINE", "C6 H15 N2 O2", "147.195"),
    "M": ("MET", "METHIONINE", "C5 H11 N O2 S", "149.211"),
    "F": ("PHE", "PHENYLALANINE", "C9 H11 N O2", "165.189"),
    "P": ("PRO", "PROLINE", "C5 H9 N O2", "115.130"),
    "S": ("SER", "SERINE", "C3 H7 N O3", "105.093"),
    "T": ("THR", "THREONINE", "C4 H9 N O3", "119.119"),
    "W": ("TRP", "TRYPTOPHAN", "C11 H12 N2 O2", "204.225"),
    "Y": ("TYR", "TYROSINE", "C9 H11 N O3", "181.189"),
    "V": ("VAL", "VALINE", "C5 H11 N O2", "117.146"),
    "X": ("UNK", "UNKNOWN", "C4 H9 N O2", "103.120"),
}

# Characters the dictionary allows in `code` and `line` values (its _item_type_list regexes, negated).
_NOT_CODE = re.compile(r"[^\]\[_,.;:\"&<>()/\\{}'`~!@#$%A-Za-z0-9*|+-]")
_NOT_LINE = re.compile(r"[^\]\[ \t_(),.;:\"&<>/\\{}'`~!@#$%?+=*A-Za-z0-9|^-]")


def to_mmcif(
    prediction: Prediction,
    entry: Entry,
    provenance: Provenance,
    *,
    created: datetime.date,
    version: int = 1,
) -> str:
    """The ModelCIF text of one entry, laid out like an AlphaFold DB v4 model file."""
    unknown = set(prediction.sequence) - CHEM_COMP.keys()
    if unknown:
        raise ValueError(f"{entry.entry_id}: letters outside the model alphabet: {sorted(unknown)}")
    if len(prediction.sequence) != entry.length:
        raise ValueError(
            f"{entry.entry_id}: prediction has {len(prediction.sequence)} residues, entry covers {entry.length}"
        )
    structure = _build_structure(prediction, entry.entry_id)
    block = gemmi.cif.Document().add_new_block(entry.entry_id)
    categories = {
        **_header_categories(entry, created, version),
        **_polymer_categories(prediction, entry),
        **_modelcif_categories(prediction, entry, provenance),
    }
    for name in sorted(categories):
        block.set_mmcif_category(name, categories[name], raw=name in _RAW_CATEGORIES)
    groups = gemmi.MmcifOutputGroups(
        False, atoms=True, group_pdb=True, auth_all=True, atom_type=True, struct_asym=True, entry=True
    )
    structure.update_mmcif_block(block, groups)
    return block.as_string(_write_options())


def mmcif_to_pdb(cif: str) -> str:
    """The PDB-format text of one of our model files (AlphaFold DB offers both), pLDDT in the B-factor column;
    TITLE names the model group, so a file from untrained weights says so in PDB format too."""
    block = gemmi.cif.read_string(cif).sole_block()
    structure = gemmi.make_structure_from_block(block)
    title = (
        f"{_first(block, '_ma_model_list.model_group_name')} PREDICTION FOR "
        f"{_first(block, '_entity.pdbx_description')} ({_first(block, '_ma_target_ref_db_details.db_accession')})"
    )
    lines = structure.make_pdb_string(gemmi.PdbWriteOptions(minimal=False)).splitlines(keepends=True)
    chunks = [title.upper()[i : i + 70] for i in range(0, len(title), 70)]
    title_lines = [f"TITLE   {'' if n == 0 else n + 1:>2}{chunk:<70}\n" for n, chunk in enumerate(chunks)]
    return "".join(lines[:1] + title_lines + lines[1:])


def _first(block: gemmi.cif.Block, tag: str) -> str:
    values = block.find_values(tag)
    return gemmi.cif.as_string(values[0]) if len(values) else "?"


@functools.lru_cache(maxsize=1)
def _write_options() -> gemmi.cif.WriteOptions:
    """Single-row categories as key-value pairs, columns aligned: the look of AlphaFold DB files."""
    options = gemmi.cif.WriteOptions()
    options.prefer_pairs = True
    options.align_pairs = 33
    options.align_loops = 30
    return options


# --- coordinates -------------------------------------------------------------------------------------


def _build_structure(prediction: Prediction, name: str) -> gemmi.Structure:
    """A one-model, one-chain gemmi Structure with the declared polymer entity."""
    model = gemmi.Model(1)
    model.add_chain(_build_chain(prediction))
    structure = gemmi.Structure()
    structure.name = name
    structure.add_model(model)
    structure.entities.append(_entity(prediction.sequence))
    structure.assign_serial_numbers()
    return structure


def _build_chain(prediction: Prediction) -> gemmi.Chain:
    """Chain A with the masked atom37 atoms: coordinates rounded to 3 decimals, pLDDT (2 decimals) as B."""
    coords = np.round(prediction.coords.astype(np.float64), 3)
    rows, slots = np.nonzero(prediction.atom_mask)  # row-major: atoms come residue by residue, atom37 order
    positions = coords[rows, slots].tolist()
    atom_slots: list[int] = slots.tolist()
    counts = prediction.atom_mask.sum(axis=1).tolist()
    bfactors = np.round(prediction.plddt.astype(np.float64), 2).tolist()
    templates = _atom_templates()
    chain = gemmi.Chain(CHAIN_ID)
    first = 0
    for index, (letter, count) in enumerate(zip(prediction.sequence, counts, strict=True)):
        if count == 0:
            continue  # e.g. UNK from ESMFold has no atoms; it stays in the sequence categories only
        residue = _new_residue(CHEM_COMP[letter][0], index + 1)
        for k in range(first, first + count):
            atom = templates[atom_slots[k]].clone()
            atom.pos = gemmi.Position(*positions[k])
            atom.b_iso = bfactors[index]
            residue.add_atom(atom)
        first += count
        chain.add_residue(residue)
    return chain


@functools.lru_cache(maxsize=1)
def _atom_templates() -> tuple[gemmi.Atom, ...]:
    """One prepared atom per atom37 slot (name, element, occupancy); cloned for every written atom."""
    templates = []
    for atom_name in ATOM37_NAMES:
        atom = gemmi.Atom()
        atom.name = atom_name
        atom.element = gemmi.Element(atom_name[0])
        atom.occ = 1.0
        templates.append(atom)
    return tuple(templates)


def _new_residue(comp_id: str, number: int) -> gemmi.Residue:
    residue = gemmi.Residue()
    residue.name = comp_id
    residue.seqid = gemmi.SeqId(number, " ")
    residue.label_seq = number
    residue.subchain = CHAIN_ID
    residue.entity_id = "1"
    residue.entity_type = gemmi.EntityType.Polymer
    residue.het_flag = "A"
    return residue


def _entity(sequence: str) -> gemmi.Entity:
    """The one polymer entity, declared explicitly (setup_entities() alone gives odd label_asym ids)."""
    entity = gemmi.Entity("1")
    entity.entity_type = gemmi.EntityType.Polymer
    entity.polymer_type = gemmi.PolymerType.PeptideL
    entity.full_sequence = [CHEM_COMP[letter][0] for letter in sequence]
    entity.subchains = [CHAIN_ID]
    return entity


# --- categories ----------------------------------------------------------------------------------------


def _header_categories(entry: Entry, created: datetime.date, version: int) -> dict[str, dict]:
    """_audit_conform, _pdbx_database_status and _pdbx_audit_revision_history."""
    date = created.isoformat()
    return {
        "_audit_conform.": {
            "dict_location": [MODELCIF_DICT_LOCATION],
            "dict_name": [MODELCIF_DICT_NAME],
            "dict_version": [MODELCIF_DICT_VERSION],
        },
        "_pdbx_database_status.": {
            "entry_id": [entry.entry_id],
            "recvd_initial_deposition_date": [date],
            "status_code": ["REL"],
        },
        "_pdbx_audit_revision_history.": {
            "data_content_type": ["Structure model"],
            "major_revision": [str(version)],
            "minor_revision": ["0"],
            "ordinal": ["1"],
            "revision_date": [date],
        },
    }


def _polymer_categories(prediction: Prediction, entry: Entry) -> dict[str, dict]:
    """_chem_comp, _entity, _entity_poly, _entity_poly_seq and _pdbx_poly_seq_scheme."""
    sequence = prediction.sequence
    comps = [CHEM_COMP[letter] for letter in sorted(set(sequence), key=lambda x: CHEM_COMP[x][0])]
    return {
        "_chem_comp.": {
            "formula": [comp[2] for comp in comps],
            "formula_weight": [comp[3] for comp in comps],
            "id": [comp[0] for comp in comps],
            "mon_nstd_flag": [False if comp[0] == "UNK" else "y" for comp in comps],
            "name": [comp[1] for comp in comps],
            "pdbx_synonyms": [None] * len(comps),
            "type": ["L-PEPTIDE LINKING" if comp[0] != "GLY" else "PEPTIDE LINKING" for comp in comps],
        },
        "_entity.": {
            "id": ["1"],
            "pdbx_description": [_line(entry.description)],
            "pdbx_number_of_molecules": ["1"],
            "src_method": ["man"],
            "type": ["polymer"],
        },
        "_entity_poly.": {
            "entity_id": ["1"],
            "nstd_linkage": ["no"],
            "nstd_monomer": ["no"],
            "pdbx_seq_one_letter_code": [_wrap(["(UNK)" if letter == "X" else letter for letter in sequence])],
            "pdbx_seq_one_letter_code_can": [_wrap(list(sequence))],
            "pdbx_strand_id": [CHAIN_ID],
            "type": ["polypeptide(L)"],
        },
        "_entity_poly_seq.": _entity_poly_seq(sequence),
        "_pdbx_poly_seq_scheme.": _poly_seq_scheme(prediction),
    }


def _entity_poly_seq(sequence: str) -> dict[str, list]:
    n = len(sequence)
    return {
        "entity_id": ["1"] * n,
        "hetero": ["n"] * n,
        "mon_id": [CHEM_COMP[letter][0] for letter in sequence],
        "num": [str(i) for i in range(1, n + 1)],
    }


def _poly_seq_scheme(prediction: Prediction) -> dict[str, list]:
    """One row per residue; residues without atoms get '?' author numbering, as unobserved ones in the PDB."""
    n = len(prediction.sequence)
    numbers = [str(i) for i in range(1, n + 1)]
    comp_ids = [CHEM_COMP[letter][0] for letter in prediction.sequence]
    observed = cast(list[bool], prediction.atom_mask.any(axis=1).tolist())
    return {
        "asym_id": [CHAIN_ID] * n,
        "auth_seq_num": [num if seen else None for num, seen in zip(numbers, observed, strict=True)],
        "entity_id": ["1"] * n,
        "hetero": ["n"] * n,
        "mon_id": comp_ids,
        "pdb_ins_code": [False] * n,
        "pdb_mon_id": [comp if seen else None for comp, seen in zip(comp_ids, observed, strict=True)],
        "pdb_seq_num": numbers,
        "pdb_strand_id": [CHAIN_ID] * n,
        "seq_id": numbers,
    }


def _modelcif_categories(prediction: Prediction, entry: Entry, provenance: Provenance) -> dict[str, dict]:
    """The _ma_* categories plus _software (the model, the protocol, the QA metrics, the target)."""
    return {
        "_ma_data.": {"content_type": ["model coordinates"], "id": ["1"], "name": ["Model"]},
        "_ma_model_list.": {
            "data_id": ["1"],
            "model_group_id": ["1"],
            "model_group_name": [_line(provenance.description)],
            "model_id": ["1"],
            "model_name": ["Top ranked model"],
            "model_type": ["Ab initio model"],
            "ordinal_id": ["1"],
        },
        "_ma_protocol_step.": {
            "details": [_provenance_details(provenance)],
            "method_type": ["modeling"],
            "ordinal_id": ["1"],
            "protocol_id": ["1"],
            "software_group_id": ["1"],
            "step_id": ["1"],
        },
        **_software_categories(provenance),
        **_qa_categories(prediction),
        **_target_categories(entry),
    }


def _software_categories(provenance: Provenance) -> dict[str, dict]:
    """_software: structome itself and the predictor; _ma_software_group ties both to the protocol."""
    structome_version = provenance.library_versions.get("structome")
    return {
        "_software.": {
            "classification": ["other", "other"],
            "date": [None, None],
            "description": ["Structure database builder", _line(provenance.description)],
            "name": ["structome", provenance.model],
            "pdbx_ordinal": ["1", "2"],
            "type": ["package", "package"],
            "version": [structome_version, provenance.model_version],
        },
        "_ma_software_group.": {"group_id": ["1", "1"], "ordinal_id": ["1", "2"], "software_id": ["1", "2"]},
    }


def _provenance_details(provenance: Provenance) -> str:
    """One human-readable line with every setting that shaped the prediction."""
    chunk = "none" if provenance.chunk_size is None else str(provenance.chunk_size)
    parts = [
        provenance.description,
        f"weights: {provenance.weights}",
        f"weights sha256: {provenance.weights_sha256}",
        f"precision: {provenance.precision}",
        f"recycles: {provenance.num_recycles}",
        f"chunk size: {chunk}",
        f"device: {provenance.device}",
    ]
    parts += [f"{name} {value}" for name, value in sorted(provenance.library_versions.items())]
    return _line("; ".join(parts)) or ""  # never empty: the model name leads


def _qa_categories(prediction: Prediction) -> dict[str, dict]:
    """_ma_qa_metric (1 global pLDDT, 2 local pLDDT, 3 global pTM) with its global and local values."""
    return {
        "_ma_qa_metric.": {
            "id": ["1", "2", "3"],
            "mode": ["global", "local", "global"],
            "name": ["pLDDT", "pLDDT", "pTM"],
            "software_group_id": ["1", "1", "1"],
            "type": ["pLDDT", "pLDDT", "pTM"],
        },
        "_ma_qa_metric_global.": {
            "metric_id": ["1", "3"],
            "metric_value": [f"{prediction.mean_plddt:.2f}", f"{float(prediction.ptm):.4f}"],
            "model_id": ["1", "1"],
            "ordinal_id": ["1", "2"],
        },
        "_ma_qa_metric_local.": _qa_local(prediction),
    }


def _qa_local(prediction: Prediction) -> dict[str, list]:
    """Per-residue pLDDT, AFDB column order. Residues without atoms are left out: the rows must point
    at residues of _atom_site (the dictionary's parent link); the global mean still counts them."""
    observed = np.flatnonzero(prediction.atom_mask.any(axis=1)).tolist()
    plddt = prediction.plddt.tolist()
    n = len(observed)
    return {
        "label_asym_id": [CHAIN_ID] * n,
        "label_comp_id": [CHEM_COMP[prediction.sequence[i]][0] for i in observed],
        "label_seq_id": [str(i + 1) for i in observed],
        "metric_id": ["2"] * n,
        "metric_value": [f"{plddt[i]:.2f}" for i in observed],
        "model_id": ["1"] * n,
        "ordinal_id": [str(k) for k in range(1, n + 1)],
    }


def _target_categories(entry: Entry) -> dict[str, dict]:
    """_ma_target_entity(_instance) and _ma_target_ref_db_details (accession, taxon, window, CRC64)."""
    uniprot = entry.database in UNIPROT_DATABASES
    details = {
        "db_accession": _code(entry.accession),
        "db_code": _line(entry.entry_name),
        "db_name": "UNP" if uniprot else "Other",
        # the input's name only: the folder it was read from stays private
        "db_name_other_details": None if uniprot else _line(f"FASTA file {Path(entry.source_file).name}"),
        "gene_name": _code(entry.gene),
        "ncbi_taxonomy_id": None if entry.tax_id is None else str(entry.tax_id),
        "organism_scientific": _line(entry.organism),
        "seq_db_align_begin": str(entry.start),
        "seq_db_align_end": str(entry.end),
        "seq_db_isoform": None,
        "target_entity_id": "1",
    }
    raw = {tag: ["?" if value is None else gemmi.cif.quote(value)] for tag, value in details.items()}
    # CRC64 is 16 hex digits and may look like a number ("0197355516942160"): always quote it, so that
    # readers that guess types keep it as text with its leading zeros.
    raw["seq_db_sequence_checksum"] = [f"'{_code(entry.sequence_checksum)}'"]
    return {
        "_ma_target_entity.": {"data_id": ["1"], "entity_id": ["1"], "origin": ["reference database"]},
        "_ma_target_entity_instance.": {"asym_id": [CHAIN_ID], "details": [False], "entity_id": ["1"]},
        "_ma_target_ref_db_details.": dict(sorted(raw.items())),
    }


# --- value helpers -------------------------------------------------------------------------------------


def _code(text: str) -> str | None:
    """A dictionary `code` value (one word): disallowed characters become '_'; empty -> None ('?')."""
    return _NOT_CODE.sub("_", text) if text else None


def _line(text: str) -> str | None:
    """A dictionary `line` value (one line of ASCII): accents dropped, other odd characters -> '_'."""
    if not text:
        return None
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return _NOT_LINE.sub("_", ascii_text) or None


def _wrap(tokens: list[str], width: int = 80) -> str:
    """Sequence tokens as a CIF text field body, at most 80 characters a line (tokens are never split)."""
    lines, line = [], ""
    for token in tokens:
        if len(line) + len(token) > width:
            lines.append(line)
            line = ""
        line += token
    lines.append(line)
    return "\n".join(lines)


# --- validation ----------------------------------------------------------------------------------------


def validate_mmcif(text: str, dictionary_path: str | Path, *, parents: bool = False) -> list[str]:
    """Problems gemmi's DDL2 validator reports for `text`; empty when valid.

    The checks are those of `gemmi validate -d DICT`: enumerations, regexes (types), mandatory items,
    unique keys, plus unknown tags (reported as problems here). `parents=True` adds `-p`, the check that
    linked parent items exist (AlphaFold DB files fail it: they have no `_chem_comp_atom`).
    """
    validator, log, lock = _validator(str(Path(dictionary_path).resolve()), parents)
    document = gemmi.cif.read_string(text)
    with lock:
        log.seek(0)
        log.truncate()
        valid = validator.validate_cif(document)
        problems = _messages(log.getvalue())
    if not valid and not problems:
        problems.append("gemmi reported the document as invalid")
    return problems


@functools.lru_cache(maxsize=8)
def _validator(dictionary_path: str, parents: bool) -> tuple[gemmi.cif.Ddl, io.StringIO, threading.Lock]:
    """A gemmi Ddl loaded once per dictionary file (and option set); its log is an in-memory buffer."""
    log = io.StringIO()  # gemmi needs a writable object; the dictionary's own load notes land here too
    validator = gemmi.cif.Ddl(logger=log, print_unknown_tags=True, use_context=False, use_linked_groups=parents)
    validator.read_ddl(gemmi.cif.read(dictionary_path))
    return validator, log, threading.Lock()


def _messages(output: str) -> list[str]:
    """Split the log into messages; continuation lines (tab-indented enum values) join their message."""
    messages: list[str] = []
    for line in output.splitlines():
        if line.startswith("\t") and messages:
            messages[-1] += " " + line.strip()
        elif line.strip():
            messages.append(line.strip())
    return messages

"""Streaming FASTA reader: files or streams -> `FastaRecord`s with UniProt, NCBI or bare headers parsed.

Inputs are sniffed by their first bytes, never by name: gzip, bzip2, xz and zstd are read (also one inside
another); archives, images and other binary data are refused naming the file; UTF-16/32 are decoded by their
byte-order mark. A stream (a pipe, `<(...)`) is read once: what is sniffed is replayed, never lost.

Biopython 1.88's record parsers do not fit, as tested on the installed version:
- "fasta" merges `;` comment lines into the sequence and raises ValueError on text before the first `>`;
- "fasta-pearson" drops both, but builds `Seq` objects, which raise UnicodeEncodeError on any non-ASCII byte.
So `Bio.SeqIO.FastaIO.SimpleFastaParser` (plain strings; skips text before the first `>`) reads the lines,
with `;` comment lines filtered out first (only before a record's first sequence line: one inside a sequence stays
in it, so ingest ledgers the record instead of silently storing it shorter). Bytes are decoded as UTF-8 with
`surrogateescape`, so nothing fails while reading; each header is then decoded as UTF-8, or as Latin-1 when that
fails.
"""

from __future__ import annotations

import bz2
import codecs
import contextlib
import gzip
import io
import logging
import lzma
import os
import re
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import pyarrow as pa
from Bio.SeqIO.FastaIO import SimpleFastaParser

from structome.storage.schema import ENTRIES, integer_bounds

logger = logging.getLogger(__name__)

HEAD_BYTES = 4096  # sniffed at the start of every layer (compression, text encoding, binary)
MAX_TEXT = 1000  # characters kept of each header text field (mmCIF lines and dictionary checks stay bounded)
_BUFFER_BYTES = 1 << 16  # read size of every layer
_MAX_LAYERS = 4  # compressions inside compressions
_TAX_ID_MAX = integer_bounds(ENTRIES, "taxId")[1]
_VERSION_MAX = integer_bounds(ENTRIES, "sequenceVersion")[1]

# sp|P12345|NAME_ORG or tr|A0A0...|...; NCBI-style accessions carry a version: sp|Q99ZW2.1|CAS9_STRP1
_UNIPROT_ID = re.compile(r"(?P<db>sp|tr)\|(?P<accession>[^|]*)\|(?P<name>.*)")
_VERSIONED = re.compile(r"(?P<accession>.+)\.(?P<version>[0-9]+)")
# UniProt keys in the description: OS= (organism), OX= (taxon), GN= (gene), PE=, SV= (sequence version)
_KEY = re.compile(r"(?:^|\s)(OS|OX|GN|PE|SV)=")


class InputError(ValueError):
    """An input file that cannot be read as FASTA at all (the message names the file, and the byte where useful)."""


@dataclass(frozen=True)
class FastaRecord:
    """One FASTA record with its header parsed; the sequence is as written (only whitespace removed)."""

    record_id: str  # first header token, e.g. "sp|P12345|NAME_ORG"; "" when the header is empty
    source_file: str  # the file it came from: its path as given, made absolute (see `source_path`)
    header: str  # header line without ">", decoded, surrounding whitespace stripped
    sequence_raw: str  # residues as written: case, "*" and invalid characters kept, whitespace removed
    database: str = ""  # "sp", "tr" or "" (not a UniProt header)
    accession: str = ""  # UniProt accession without version; the record id for other headers
    entry_name: str = ""  # UniProt entry name, e.g. "TRAP_ECOLI"
    description: str = ""  # header text after the id, without the UniProt KEY=value fields
    organism: str = ""  # OS=
    tax_id: int | None = None  # OX=
    gene: str = ""  # GN=
    sequence_version: int | None = None  # SV=, else the ".N" of a versioned accession
    header_problem: str = ""  # why a header field cannot be stored (ingest ledgers the record); "" when none
    truncated: bool = False  # a header text field was longer than MAX_TEXT and was cut


@dataclass(frozen=True)
class _Magic:
    prefix: bytes
    name: str
    opener: Callable[[BinaryIO], Any] | None  # a readable binary stream of the decompressed bytes; None: refused
    hint: str = ""  # what to do instead, for a refused one


def _zstd(binary: BinaryIO) -> Any:
    """zstd through pyarrow's codec (Python 3.11 has no zstd module; pyarrow is a dependency anyway)."""
    return pa.CompressedInputStream(pa.PythonFile(binary, mode="r"), "zstd")


_MAGICS = (
    _Magic(b"\x1f\x8b", "gzip", lambda binary: gzip.GzipFile(fileobj=binary)),
    _Magic(b"BZh", "bzip2", lambda binary: bz2.BZ2File(binary)),
    _Magic(b"\xfd7zXZ\x00", "xz", lambda binary: lzma.LZMAFile(binary)),
    _Magic(b"\x28\xb5\x2f\xfd", "zstd", _zstd),
    _Magic(b"PK\x03\x04", "a ZIP archive", None, ": extract its FASTA files first"),
    _Magic(b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive", None, ": extract its FASTA files first"),
    _Magic(b"\x04\x22\x4d\x18", "LZ4 data", None, ": decompress it first (or use gzip, bzip2, xz or zstd)"),
    _Magic(b"\x89PNG\r\n\x1a\n", "a PNG image", None),
    _Magic(b"%PDF", "a PDF document", None),
)
# UTF-32 first: its little-endian mark starts with UTF-16's
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
    (b">\x00", "utf-16-le"),  # UTF-16 without a byte-order mark: a header's ">" then a zero byte
    (b"\x00>", "utf-16-be"),
)
_READ_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError, pa.ArrowException)  # damaged compressed data


class _Replay(io.RawIOBase):
    """A read-once stream made peekable: its first bytes (already read, to sniff) again, then the rest.
    Counts the bytes taken from the source, and feeds them to `digest` when one is given."""

    def __init__(self, source: Any, digest: Any = None) -> None:  # any readable binary stream with readinto
        self._source, self._digest, self.offset = source, digest, 0
        self.head = b""
        while len(self.head) < HEAD_BYTES and (more := self._take(HEAD_BYTES - len(self.head))):
            self.head += more
        self._unread = self.head

    def _take(self, size: int) -> bytes:
        data = self._source.read(size)
        self._count(data)
        return data

    def _count(self, data) -> None:
        self.offset += len(data)
        if self._digest is not None:
            self._digest.update(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not self._unread:  # past the head: straight from the source into the caller's buffer
            size = self._source.readinto(buffer) or 0
            self._count(memoryview(buffer)[:size])
            return size
        data = self._unread[: len(buffer)]
        self._unread = self._unread[len(data) :]
        buffer[: len(data)] = data
        return len(data)


def source_path(path: str | os.PathLike) -> str:
    """How an input is identified in the ledger and the builds table: its path as given, made absolute (links are
    not followed, so a stream such as /dev/fd/63 keeps its name)."""
    return os.path.abspath(os.fspath(path))


@contextlib.contextmanager
def open_text(path: str | os.PathLike, digest: Any = None) -> Iterator[Iterable[str]]:
    """Open a FASTA file or stream as text, whatever compression it has (sniffed by magic bytes, layer under layer):
    UTF-8 (BOM dropped), or UTF-16/32 by their byte-order mark; undecodable bytes kept as surrogates. Refuses
    archives, images and other binary data naming the file. `digest` (a hashlib object) sees the file's bytes."""
    name = source_path(path)
    with contextlib.ExitStack() as stack:
        raw = _Replay(stack.enter_context(open(path, "rb")), digest)
        layer, kinds = raw, list[str]()
        while (magic := _magic(layer.head)) is not None:
            if magic.opener is None:
                raise InputError(f"{name} is {magic.name}, not FASTA text{magic.hint}")
            if len(kinds) == _MAX_LAYERS:
                raise InputError(
                    f"{name} is compressed more than {_MAX_LAYERS} times ({magic.name} inside {kinds[-1]} ...)"
                )
            kinds.append(magic.name)
            decompressed = stack.enter_context(magic.opener(io.BufferedReader(layer, _BUFFER_BYTES)))
            layer = _guarded(name, raw, kinds, _Replay, decompressed)
        encoding = _encoding(layer.head, name)
        text = io.TextIOWrapper(
            io.BufferedReader(layer, _BUFFER_BYTES), encoding=encoding, errors="surrogateescape", newline=None
        )
        lines = _guarded_lines(text, name, raw, kinds)
        try:
            yield lines
        finally:  # the text closes only the wrappers made here; the file closes with the stack
            lines.close()
            text.close()


def check_input(path: str | os.PathLike, *, allow_empty: bool = False) -> None:
    """Refuse at once an input that cannot be FASTA (an archive, an image, binary data, text without a '>' header
    line unless `allow_empty`), reading up to its first header; a stream (a pipe, `<(...)`) is left alone: it can
    be read only once, by the build itself."""
    if not os.path.isfile(path):
        return
    with open_text(path) as lines:
        if not any(line.startswith(">") for line in lines) and not allow_empty:
            raise no_record_error(source_path(path))


def no_record_error(name: str) -> InputError:
    return InputError(
        f"{name} holds no FASTA record (no line starts with '>'): is it FASTA? (--allow-empty accepts it)"
    )


def _magic(head: bytes) -> _Magic | None:
    return next((magic for magic in _MAGICS if head.startswith(magic.prefix)), None)


def _encoding(head: bytes, name: str) -> str:
    """The text encoding by byte-order mark; UTF-8 without one. NUL bytes without a mark: binary, refused."""
    for mark, encoding in _BOMS:
        if head.startswith(mark):
            return encoding
    if b"\x00" in head:
        raise InputError(f"{name} is binary data (NUL bytes in its first {len(head)} bytes), not FASTA text")
    return "utf-8"


def _guarded(name: str, raw: _Replay, kinds: list[str], read: Callable[..., Any], *args: Any) -> Any:
    """`read(*args)`; damaged compressed data becomes an InputError naming the file and the byte it had reached."""
    try:
        return read(*args)
    except _READ_ERRORS as error:
        raise _read_error(name, raw, kinds, error) from error


def _read_error(name: str, raw: _Replay, kinds: list[str], error: Exception) -> InputError:
    what = " inside ".join(reversed(kinds)) or "file"
    return InputError(
        f"{name}: damaged or truncated {what} data near byte {raw.offset}: {error or type(error).__name__}"
    )


def _guarded_lines(text: io.TextIOWrapper, name: str, raw: _Replay, kinds: list[str]) -> Generator[str, None, None]:
    """The lines of a text stream, read errors turned into InputError (as `_guarded` does)."""
    try:
        yield from text
    except _READ_ERRORS as error:
        raise _read_error(name, raw, kinds, error) from error


def iter_fasta(path: str | os.PathLike, digest: Any = None) -> Iterator[FastaRecord]:
    """Yield the records of one FASTA file or stream one at a time (never held in memory); `digest` (a hashlib
    object) is fed the file's bytes."""
    source_file, truncated = source_path(path), 0
    with open_text(path, digest) as text:
        for title, sequence in SimpleFastaParser(_record_lines(text, source_file)):
            record = parse_header(
                _decode_header(title), source_file=source_file, sequence_raw="".join(sequence.split())
            )
            truncated += record.truncated
            yield record
    if truncated:
        logger.warning("%s: %d header(s) had text over %d characters, cut to that", source_file, truncated, MAX_TEXT)


def _record_lines(text: Iterable[str], source_file: str) -> Iterator[str]:
    """The file's lines without `;` comment lines, which are read as comments only before the first header and
    between a header and its first sequence line; one after a sequence line stays, for ingest to ledger the record
    (it is never dropped silently). Warns about text before the first header."""
    skipped = 0
    lines = iter(text)
    for line in lines:
        if line.startswith(">"):
            yield line
            break
        if line.strip() and not line.startswith(";"):
            skipped += 1
    if skipped:
        logger.warning("%s: ignored %d line(s) of text before the first '>' header", source_file, skipped)
    in_sequence = False
    for line in lines:
        first = line[:1]
        if first == ">":
            in_sequence = False
        elif first == ";":
            if not in_sequence:
                continue
        elif not in_sequence and line.strip():
            in_sequence = True
        yield line


def _decode_header(title: str) -> str:
    """Re-decode a header read with surrogateescape: UTF-8 if valid, else Latin-1."""
    if title.isascii():
        return title.strip()
    raw = title.encode("utf-8", "surrogateescape")
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        logger.debug("header is not UTF-8, decoded as Latin-1: %r", raw[:80])
        return raw.decode("latin-1").strip()


def parse_header(header: str, *, source_file: str = "", sequence_raw: str = "") -> FastaRecord:
    """Parse a header line (without ">") into a FastaRecord: UniProt (sp|/tr|), NCBI-versioned or bare. Numbers that
    the schema cannot hold (or that are no numbers) are named in `header_problem`; text fields are cut to MAX_TEXT."""
    header = header.strip()
    record_id, rest = (header.split(None, 1) + ["", ""])[:2] if header else ("", "")
    uniprot = _UNIPROT_ID.fullmatch(record_id)
    if uniprot is None:  # bare header: the first token is both id and accession
        description, cut = _bounded(rest)
        return FastaRecord(
            record_id, source_file, header, sequence_raw, accession=record_id, description=description, truncated=cut
        )
    fields = _uniprot_fields(rest)
    accession, version = _split_version(uniprot["accession"])
    (description, organism, gene, name), cut = _bounded_all(
        fields.get("", ""), fields.get("OS", ""), fields.get("GN", ""), uniprot["name"]
    )
    tax_id = _whole_number("OX", fields.get("OX"), _TAX_ID_MAX)
    sequence_version = _whole_number(*_version_field(fields, version), _VERSION_MAX)
    problems = [number for number in (tax_id, sequence_version) if isinstance(number, str)]
    return FastaRecord(
        record_id=record_id,
        source_file=source_file,
        header=header,
        sequence_raw=sequence_raw,
        database=uniprot["db"],
        accession=accession,
        entry_name=name,
        description=description,
        organism=organism,
        tax_id=None if isinstance(tax_id, str) else tax_id,
        gene=gene,
        sequence_version=None if isinstance(sequence_version, str) else sequence_version,
        header_problem="; ".join(problems),
        truncated=cut,
    )


def _uniprot_fields(text: str) -> dict[str, str]:
    """Split 'Desc OS=Org name (strain X) OX=1 GN=g PE=1 SV=2' into {"": desc, "OS": ..., ...}."""
    matches = list(_KEY.finditer(text))
    fields = {"": text[: matches[0].start()].strip() if matches else text.strip()}
    for match, following in zip(matches, [*matches[1:], None], strict=False):  # no match: nothing to pair
        end = following.start() if following else len(text)
        fields.setdefault(match.group(1), text[match.end() : end].strip())
    return fields


def _split_version(accession: str) -> tuple[str, str | None]:
    """'Q99ZW2.1' -> ('Q99ZW2', '1'); an unversioned accession is returned unchanged."""
    match = _VERSIONED.fullmatch(accession)
    return (match["accession"], match["version"]) if match else (accession, None)


def _version_field(fields: dict[str, str], accession_version: str | None) -> tuple[str, str | None]:
    """SV= when the header has it, else the ".N" of a versioned accession: (what to call it, its text)."""
    if fields.get("SV") is not None:
        return "SV", fields["SV"]
    return "accession version", accession_version


def _whole_number(key: str, value: str | None, largest: int) -> int | str | None:
    """A header number as an int in 1..largest (the schema column's range); None when absent or empty; otherwise
    a sentence saying what is wrong with it."""
    if not value:
        return None
    # the digits' count first: int() refuses strings of over 4,300 digits (ValueError), none of which fits anyway
    digits = value.lstrip("0") if value.isascii() and value.isdigit() else ""
    if digits and len(digits) <= len(str(largest)) and int(digits) <= largest:
        return int(digits)
    shown = value if len(value) <= 30 else f"{value[:30]}... ({len(value)} characters)"
    return f"{key}={shown!r} is not a whole number from 1 to {largest}"


def _bounded_all(*texts: str) -> tuple[list[str], bool]:
    """Each text cut to MAX_TEXT characters, and whether any was cut."""
    if all(len(text) <= MAX_TEXT for text in texts):
        return list(texts), False
    return [_bounded(text)[0] for text in texts], True


def _bounded(text: str) -> tuple[str, bool]:
    """The text cut to MAX_TEXT characters (an ellipsis marks the cut), and whether it was cut."""
    if len(text) <= MAX_TEXT:
        return text, False
    return text[: MAX_TEXT - 3] + "...", True

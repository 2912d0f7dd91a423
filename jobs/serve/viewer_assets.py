"""The 3D viewer of the entry pages: pdbe-molstar, pinned, integrity-checked and served from this machine.

The 6 MB build is not part of structome. On first use it is fetched once from the npm registry (the pinned
tarball, checked against its npm `dist.integrity`), the two files the page loads are extracted into
`$STRUCTOME_CACHE/pdbe-molstar-<version>/` (default `~/.cache/structome`) with a `SHA256SUMS` record, and
every later start re-checks them against the sha256 pinned below. An air-gapped machine points
`--viewer-assets DIR` / `$STRUCTOME_VIEWER_ASSETS` at a folder holding the two files (same pins), e.g. the
package/build folder of `npm pack pdbe-molstar@3.11.0` unpacked elsewhere.

`ViewerAssets.load()` gives what a server serves: the verified files, or the problem why there are none.
Without verified assets the entry pages still work, with a message where the viewer would be; `problem`
says why and the server logs it. The plugin loads nothing else at run time (seen in a browser: no fonts, no
workers; its CSS images and the MP4 exporter's WebAssembly are inline data: URIs).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from structome.models.cache import cache_folder, publish_unless_present, staging_folder

logger = logging.getLogger(__name__)

VERSION = "3.11.0"
DEFAULT_REGISTRY = "https://registry.npmjs.org/"
TARBALL_PATH = f"pdbe-molstar/-/pdbe-molstar-{VERSION}.tgz"
# `npm view pdbe-molstar@3.11.0 dist.integrity`
TARBALL_INTEGRITY = "sha512-1Zsa134b/prNLZJRSw2QML/2i12JX0mU5oL3y76Vunt2U7hPOkAF7JJNF33oiCXlTWxRITbk0RBGM1pcQ5Sstg=="
# file name (in the tarball's package/build/, in the cache and in an offline folder) -> sha256 of its bytes
FILE_SHA256 = {
    "pdbe-molstar-plugin.js": "0bbe97ef4df9dd917c9b07787eeeb165558ba6f8fe1d7f582003b769b8323be3",
    "pdbe-molstar-light.css": "7ff991d933361dc260a59534452900ff07205cc775214753161cf7ba2a48776a",
}
# name under /static/ (versioned, so it may be cached for long) -> file name
SERVED_NAMES = {
    f"pdbe-molstar-plugin-{VERSION}.js": "pdbe-molstar-plugin.js",
    f"pdbe-molstar-light-{VERSION}.css": "pdbe-molstar-light.css",
}
PLUGIN_JS, PLUGIN_CSS = SERVED_NAMES  # the names the entry page links to
RECORD = "SHA256SUMS"
FETCH_TIMEOUT_S = 120


class ViewerAssetError(Exception):
    """The viewer files are missing, incomplete, or do not match their pinned hashes."""


def default_folder() -> Path:
    """Where fetched files are cached: `$STRUCTOME_CACHE/pdbe-molstar-<version>`."""
    return cache_folder(f"pdbe-molstar-{VERSION}")


def tarball_url() -> str:
    registry = os.environ.get("NPM_CONFIG_REGISTRY") or DEFAULT_REGISTRY
    return registry.rstrip("/") + "/" + TARBALL_PATH


def read_verified(folder: Path) -> dict[str, bytes]:
    """The pinned files of `folder`, each checked against its pinned sha256; raises ViewerAssetError."""
    files = {}
    for name, expected in FILE_SHA256.items():
        try:
            data = (folder / name).read_bytes()
        except OSError as error:
            raise ViewerAssetError(f"{folder / name}: cannot read ({error.strerror or error})") from error
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise ViewerAssetError(
                f"{folder / name}: sha256 {actual} is not the pinned {expected} (pdbe-molstar {VERSION})"
            )
        files[name] = data
    return files


def check_integrity(data: bytes, integrity: str | None = None) -> None:
    """npm Subresource-Integrity check (`sha512-<base64>`, default the pinned one) of the downloaded tarball."""
    integrity = integrity or TARBALL_INTEGRITY
    algorithm, _, digest = integrity.partition("-")
    actual = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
    if actual != digest:
        raise ViewerAssetError(f"tarball integrity {algorithm}-{actual} is not the pinned {integrity}")


def extract_files(tarball: bytes) -> dict[str, bytes]:
    """Only the pinned members of package/build/, read in memory: nothing of the archive touches the disk."""
    files = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
            for name in FILE_SHA256:
                member = archive.getmember(f"package/build/{name}")
                handle = archive.extractfile(member) if member.isfile() else None
                if handle is None:
                    raise ViewerAssetError(f"package/build/{name} is not a regular file")
                files[name] = handle.read()
    except KeyError as error:
        raise ViewerAssetError(f"the tarball has no {error}") from error
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise ViewerAssetError(f"cannot read the tarball: {error}") from error
    return files


def download(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as response:
            return response.read()
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:  # timeouts are OSErrors
        raise ViewerAssetError(f"cannot fetch {url}: {error}") from error


def fetch_into(folder: Path) -> dict[str, bytes]:
    """Download, check and extract the pinned tarball, and cache its files in `folder`.

    The files are returned once verified; a cache that cannot be written only costs a fetch next time.
    """
    url = tarball_url()
    logger.info("fetching pdbe-molstar %s from %s", VERSION, url)
    tarball = download(url)
    check_integrity(tarball)
    files = extract_files(tarball)
    for name, data in files.items():  # the npm integrity covers these already; the pins must agree with it
        if hashlib.sha256(data).hexdigest() != FILE_SHA256[name]:
            raise ViewerAssetError(f"{name} in the verified tarball does not match its pinned sha256")
    try:
        store(folder, files)
    except OSError as error:
        logger.warning("serving the verified viewer files from memory; cannot cache them in %s: %s", folder, error)
    return files


def store(folder: Path, files: dict[str, bytes]) -> None:
    """Write `folder` atomically: staged beside it, then renamed (it appears complete or not at all)."""
    staging = staging_folder(folder)
    try:
        for name, data in files.items():
            (staging / name).write_bytes(data)
        (staging / RECORD).write_text("".join(f"{FILE_SHA256[name]}  {name}\n" for name in files))
        if folder.exists():  # a damaged earlier copy: move it aside first, so the swap stays one rename
            stale = Path(tempfile.mkdtemp(prefix=f".{folder.name}.stale.", dir=folder.parent))
            folder.rename(stale / "old")
            shutil.rmtree(stale, ignore_errors=True)
        if not publish_unless_present(
            staging, folder
        ):  # another process has just stored its copy (checked when loaded)
            logger.info("%s was stored by another process meanwhile", folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_viewer_assets(offline_dir: Path | str | None = None) -> tuple[Path, dict[str, bytes]]:
    """The verified viewer files: from `offline_dir` (never fetched), else from the cache, fetching once."""
    if offline_dir is not None:
        folder = Path(offline_dir)
        return folder, read_verified(folder)
    folder = default_folder()
    if folder.exists():
        try:
            return folder, read_verified(folder)
        except ViewerAssetError as error:
            logger.warning("cached viewer assets are damaged, fetching them again: %s", error)
    return folder, fetch_into(folder)


@dataclass(frozen=True)
class ViewerAssets:
    """What a server serves of the viewer: the verified files and their folder, or the problem why there are none.

    Made once at server start by `load` (which never raises) and handed to the pages.
    """

    files: Mapping[str, bytes] = field(default_factory=dict)  # file name (FILE_SHA256 keys) -> verified bytes
    folder: Path | None = None  # where they come from (the cache folder even if it could not be written)
    problem: str | None = None  # why there are no files; None when there are

    def __post_init__(self):
        if (self.problem is None) != bool(self.files):
            raise ValueError("ViewerAssets has either its files or a problem")
        object.__setattr__(self, "files", MappingProxyType(dict(self.files)))

    @classmethod
    def missing(cls, problem: str) -> ViewerAssets:
        return cls(problem=problem)

    @classmethod
    def load(cls, offline_dir: Path | str | None = None) -> ViewerAssets:
        """The viewer files to serve, or why the pages will go without them (logged either way).

        `offline_dir` (or `$STRUCTOME_VIEWER_ASSETS`) names a folder with the two pinned files; without one the
        pinned tarball is fetched into the cache once; the verified files are served from memory either way.
        """
        offline_dir = offline_dir if offline_dir is not None else os.environ.get("STRUCTOME_VIEWER_ASSETS") or None
        try:
            folder, files = load_viewer_assets(offline_dir)
        except ViewerAssetError as error:
            hint = "" if offline_dir else f" (air-gapped: --viewer-assets DIR with {', '.join(FILE_SHA256)})"
            logger.warning("entry pages will have no 3D viewer: %s%s", error, hint)
            return cls.missing(str(error))
        logger.info("serving pdbe-molstar %s from %s", VERSION, folder)
        return cls(files, folder)

    @property
    def available(self) -> bool:
        return self.problem is None

    def served_file(self, name: str) -> bytes | None:
        """Bytes of a viewer file by its /static/ name; None for any other name (or without files)."""
        file_name = SERVED_NAMES.get(name)
        return self.files.get(file_name) if file_name is not None else None

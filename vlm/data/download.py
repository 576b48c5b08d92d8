"""Fetch and unpack a data set archive, for the data/*/prepare.py scripts run by a user with internet access.
Nothing in the package calls this at import, training or test time: training reads only local files."""

from __future__ import annotations

import shutil
import urllib.request
import zipfile
from pathlib import Path


def download(url: str, destination: str | Path) -> Path:
    """`url` saved as `destination`, unless that file already exists (a rerun resumes where it stopped). The data
    is written to a .part file first, so an interrupted download never looks complete."""
    destination = Path(destination)
    if destination.is_file():
        print(f"{destination} already downloaded")
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    print(f"downloading {url} -> {destination}")
    with urllib.request.urlopen(url) as response, open(partial, "wb") as file:
        shutil.copyfileobj(response, file, length=1 << 20)
    partial.replace(destination)
    return destination


def download_and_unzip(url: str, folder: str | Path, keep_archive: bool = False) -> Path:
    """Download the zip at `url` into `folder` and extract it there; returns the folder."""
    folder = Path(folder)
    archive = download(url, folder / url.rstrip("/").rsplit("/", 1)[-1])
    try:
        with zipfile.ZipFile(archive) as zipped:
            print(f"extracting {archive.name} ({len(zipped.namelist()):,} files) into {folder}")
            zipped.extractall(folder)
    except zipfile.BadZipFile:
        raise ValueError(
            f"{archive}: not a zip archive (an interrupted or failed download?); delete it and rerun"
        ) from None
    if not keep_archive:
        archive.unlink()
    return folder

"""Image file names and safe writes: the recognised suffixes, listing a folder's images, the
checks an output path passes before any work, and atomic writes (temporary file + rename, so an
interrupted write never leaves a half-written file)."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from liverctl.errors import ConfigError, InputError

IMAGE_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def image_suffix(path: str | os.PathLike[str]) -> str | None:
    """The recognised image suffix of ``path`` (``.nii.gz``, ``.mha``...), else ``None``."""
    name = Path(path).name.lower()
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return None


def image_stem(path: str | os.PathLike[str]) -> str:
    """File name without its image suffix: ``case_001.nii.gz`` -> ``case_001``."""
    p = Path(path)
    suffix = image_suffix(p)
    return p.name[: -len(suffix)] if suffix else p.name


def is_image_file(path: str | os.PathLike[str]) -> bool:
    p = Path(path)
    return p.is_file() and image_suffix(p) is not None and not p.name.startswith(".")


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (hidden files skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"not a folder: {folder}")
    return sorted(p for p in folder.iterdir() if is_image_file(p))


def check_not_input(output: str | os.PathLike[str], inputs: Sequence[str | os.PathLike[str]]) -> None:
    """Refuse to write ``output`` if it is one of ``inputs`` (liverctl never overwrites an input)."""
    out = Path(output).resolve()
    for item in inputs:
        if Path(item).resolve() == out:
            raise InputError(f"refusing to overwrite an input file: {output}")


def check_output_suffix(output: str | os.PathLike[str], flag: str = "-o") -> None:
    """Refuse an output path that is neither an image file nor a folder: ``-o x.png`` would
    otherwise become a folder ``x.png/``. An existing folder is always a folder."""
    p = Path(output)
    if not p.is_dir() and image_suffix(p) is None and p.suffix:
        raise ConfigError(
            f"{flag} {output}: {p.suffix} is not a mask format (use {', '.join(IMAGE_SUFFIXES)}); "
            "for a folder, drop the suffix or create the folder first"
        )


def check_writable(path: str | os.PathLike[str]) -> None:
    """Refuse, before any work, an output whose folder cannot be made or written."""
    path = Path(path)
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(f"cannot write {path}: {folder} is not a folder")
    try:  # a real write, as permissions, ACLs and read-only mounts all decide it
        fd, probe = tempfile.mkstemp(prefix=".liverctl-probe.", dir=folder)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc} in {folder}") from None
    os.close(fd)
    os.unlink(probe)


def check_not_input_folder(output: str | os.PathLike[str], folders: Sequence[str | os.PathLike[str]]) -> None:
    """Refuse an output folder that is one of the input ``folders`` or lies inside one."""
    out = Path(output).resolve()
    for item in folders:
        if out.is_relative_to(Path(item).resolve()):
            raise InputError(
                f"output folder {output} is or lies inside the input dataset {item}; choose another folder"
            )


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary name keeps the target's suffix so that writers that choose the format
    from the extension (SimpleITK) write the right format. On error the temporary file is
    removed and the target is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = image_suffix(target) or target.suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, _new_file_mode(target))  # mkstemp made it 0600
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _new_file_mode(target: Path) -> int:
    """The mode ``open(target, "w")`` would give: the target's own, else 0666 minus the umask."""
    with contextlib.suppress(OSError):
        return stat.S_IMODE(target.stat().st_mode)
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temp file + rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)

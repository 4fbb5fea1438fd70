"""The documentation site: a strict MkDocs build, and the pages the README and the docstrings name.

``mkdocs build --strict`` fails on a broken link or anchor between pages, a page left out of the nav, a
missing cross-reference and any docstring that griffe cannot parse (mkdocs.yml sets the validation).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_mkdocs_strict_build(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None and not os.environ.get("CI"):
        pytest.skip('mkdocs is not installed: pip install -e ".[docs]"')
    site = tmp_path / "site"
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, f"mkdocs build --strict failed after {seconds:.1f} s:\n{proc.stderr[-4000:]}"
    for page in ("index.html", "commands/predict/index.html", "studies/he2021/index.html", "api/io/index.html"):
        assert (site / page).is_file(), page
    # the API reference was generated from the docstrings, not left as a bare ::: line
    assert 'id="liverctl.io.read_image"' in (site / "api/io/index.html").read_text(encoding="utf-8")


def test_readme_is_short_and_keeps_ci_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(readme) <= 300
    ci = (ROOT / ".ci/run").read_text(encoding="utf-8").splitlines()
    marker = ci.index("# --- the README's test command, verbatim ---")
    assert ci[marker + 1] in readme


def test_docs_pages_named_in_the_readme_and_docstrings_exist() -> None:
    named: set[str] = set()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    named.update(re.findall(r"\]\((docs/[^)#]+\.md)", readme))
    outside: list[str] = []
    for path in (ROOT / "src/liverctl").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        named.update(re.findall(r"(?<![\w/.])docs/[\w/.-]+?\.md\b", text))
        if "shared/docs/" in text:
            outside.append(str(path.relative_to(ROOT)))
    assert not outside, f"cite a page under docs/, not ../shared/docs (not part of the repository): {outside}"
    named.discard("docs/studies/*.md")
    assert named, "no docs page named anywhere"
    missing = sorted(p for p in named if not (ROOT / p).is_file())
    assert not missing, missing

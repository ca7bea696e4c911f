"""The docs hold together: README.md stays a front page, links resolve, tables match the code.

What the pages show as examples is tested where the examples are used: the SQL cookbook in
``tests/test_queries.py``, the wire-contract examples in ``tests/test_schemas.py``, the models
files in ``tests/test_models_config.py``.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from driftline.schemas import REASON_CODES

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]
MAX_README_LINES = 400

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _prose(text: str) -> str:
    """The page without its fenced code blocks (links inside them are not links)."""
    return FENCE.sub("", text)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces -> hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in _prose(path.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"#{1,6} (.+)", line)
        if not m:
            continue
        slug = _slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def test_readme_is_a_front_page() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines (at most {MAX_README_LINES})"
    )
    text = "\n".join(lines)
    # The two commands for a fresh machine come first.
    first = text.index("## ")
    assert text[first:].startswith("## Two commands on a fresh machine")
    assert "make demo" in text and "make test" in text


def test_slug_matches_github() -> None:
    assert _slug("In the worker: fairness, champion / challenger (off)") == (
        "in-the-worker-fairness-champion--challenger-off"
    )
    assert _slug("Alert (alerts topic, key = `model_id`)") == "alert-alerts-topic-key--model_id"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in LINK.findall(_prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no such heading")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


def test_every_cited_test_exists() -> None:
    missing = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for path, name in re.findall(r"(tests/[\w/]+\.py)(?:::(\w+))?", text):
            file = ROOT / path
            if not file.exists():
                missing.append(path)
            elif name and not re.search(rf"^\s*(?:async )?def {name}\(", file.read_text(), re.M):
                missing.append(f"{path}::{name}")
    assert not missing


def test_reason_code_table_is_the_code_list() -> None:
    text = (ROOT / "docs" / "wire-contract.md").read_text(encoding="utf-8")
    section = text.split("## Reason codes", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `(\w+)` \|", section, re.M)
    assert documented == list(REASON_CODES)


def test_every_setting_is_documented() -> None:
    from driftline.streams.models import ModelConfig
    from driftline.streams.settings import Settings

    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    envs = [f.metadata["env"] for f in dataclasses.fields(Settings) if "env" in f.metadata]
    assert len(envs) > 20
    assert [e for e in envs if f"`{e}`" not in text] == []
    model_section = text.split("## Models file", 1)[1]
    keys = [f.name for f in dataclasses.fields(ModelConfig)]
    assert [k for k in keys if f"`{k}`" not in model_section] == []


def test_code_cites_docs_that_exist() -> None:
    """Comments name the docs page, not a README section or a file outside the repository."""
    stale = re.compile(r"README(?:\.md)?`{0,2},? [\"']|README's|ARCHITECTURE\.md|DESIGN\.md")
    cited = re.compile(r"docs/[\w-]+\.md")
    bad = []
    for folder in ("driftline", "schemas", "detectors", "streams", "sinks", "tests", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            if path == Path(__file__) or any(part.startswith(".venv") for part in path.parts):
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                where = f"{path.relative_to(ROOT)}:{n}"
                if stale.search(line):
                    bad.append(f"{where}: {line.strip()}")
                bad += [
                    f"{where}: {doc}" for doc in cited.findall(line) if not (ROOT / doc).exists()
                ]
    assert not bad

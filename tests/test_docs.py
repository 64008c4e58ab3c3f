"""The docs cannot go stale unnoticed: README.md and docs/*.md are checked and their examples run.

- README.md is a newcomer's page: at most 150 lines, and its table "Where to read next" links every page
  in docs/.
- Every relative link points to a file that exists, and a link's #anchor to a heading of that file.
- Every repository path a page names in backticks (src/avbias/..., workflow/..., config/..., tests/...,
  benchmarks/..., profiles/..., docs/...) exists; placeholders such as <stage> or {dataset} are skipped.
- Every ```python block runs, each in a fresh subprocess of this venv's python, in a temporary folder
  holding a copy of params.yaml and config/ (so a block may read them or write files).
- Every ```yaml block is a params override: it must pass the schema and the method registry on top of
  params.yaml (`avbias.config.load_params("params.yaml", block)`, then `check_method_params`).
  A block that is not an override (e.g. lines to edit into params.yaml) is marked by this line, alone,
  directly above its opening fence:

      <!-- not a params override -->

- ```bash blocks are not run, except their `avbias params ...` lines without `--out`, which only read.
- Timings come from one place, docs/benchmarks.md: a running time stated anywhere else in the docs, the
  README, params.yaml or config/ (e.g. "about 11 minutes", "21 m 53 s") must be quoted verbatim from it;
  better, point to its section.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from avbias.config import load_params
from avbias.methods import check_method_params

from conftest import BIN, REPO

NOT_AN_OVERRIDE = "<!-- not a params override -->"
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
MAX_README_LINES = 150
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
TIMING = re.compile(r"\b\d+ m \d+ s\b|\b\d+(?:\.\d+)?(?:[–-]\d+(?:\.\d+)?)? ?(?:minutes?|hours?|min)\b"
                    r"|\b(?:takes?|took|about|in) \d+(?:\.\d+)? ?(?:s|seconds)\b")
PATH_PREFIXES = ("src/avbias/", "workflow/", "config/", "tests/", "benchmarks/", "profiles/", "docs/")


def blocks(page: Path, language: str) -> list[tuple[int, str, bool]]:
    """(line number, body, marked not-an-override) of each fenced block in that language."""
    text = page.read_text()
    found = []
    for match in FENCE.finditer(text):
        if match.group(1) != language:
            continue
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        found.append((text.count("\n", 0, match.start()) + 1, match.group(2), before == NOT_AN_OVERRIDE))
    return found


def prose(page: Path) -> str:
    """The page without its fenced blocks (their lines kept blank, so line numbers still hold)."""
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), page.read_text())


def anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens, -1, -2 for repeats."""
    seen: dict[str, int] = {}
    for line in prose(page).splitlines():
        if match := re.match(r"#{1,6}\s+(.*)", line):
            slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            if count:
                seen[f"{slug}-{count}"] = 1
    return set(seen)


def ids(items: list[Path]) -> list[str]:
    return [str(p.relative_to(REPO)) for p in items]


def test_readme_is_one_page_that_links_every_doc() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; at most {MAX_README_LINES}"
    linked = {target.split("#")[0] for target in LINK.findall(prose(README))}
    missing = [f"docs/{p.name}" for p in sorted((REPO / "docs").glob("*.md")) if f"docs/{p.name}" not in linked]
    assert not missing, f"README.md's 'Where to read next' does not link {missing}"


@pytest.mark.parametrize("page", PAGES, ids=ids(PAGES))
def test_relative_links_and_anchors_exist(page: Path) -> None:
    broken = []
    for target in LINK.findall(prose(page)):
        if re.match(r"[a-z]+:", target):                     # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.name}")
    assert not broken, f"{page.name}: broken links:\n" + "\n".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=ids(PAGES))
def test_named_repository_paths_exist(page: Path) -> None:
    missing = []
    for token in re.findall(r"`([^`\s]+)`", page.read_text()):
        path = token.split("::")[0].rstrip(".,;:")
        if path.startswith(PATH_PREFIXES) and not re.search(r"[<>{}*$]", path) and not (REPO / path).exists():
            missing.append(path)
    assert not missing, f"{page.name} names paths that do not exist: {sorted(set(missing))}"


def _examples(language: str) -> list[tuple[str, int, str, bool]]:
    return [(page.name, line, body, marked) for page in PAGES for line, body, marked in blocks(page, language)]


PYTHON = _examples("python")
YAML = _examples("yaml")


def test_the_docs_have_examples_to_run() -> None:
    assert PYTHON, "no ```python block found: the block pattern is wrong"
    assert [y for y in YAML if not y[3]], "no params override block found: the block pattern is wrong"


@pytest.mark.parametrize(("page", "line", "code", "marked"), PYTHON, ids=[f"{p}:{n}" for p, n, _, _ in PYTHON])
def test_python_example_runs(tmp_path: Path, page: str, line: int, code: str, marked: bool) -> None:
    shutil.copy(REPO / "params.yaml", tmp_path)
    shutil.copytree(REPO / "config", tmp_path / "config")
    script = tmp_path / "example.py"
    script.write_text(code)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{page} line {line}: the example fails:\n{done.stderr[-3000:]}"


@pytest.mark.parametrize(("page", "line", "text", "marked"), YAML, ids=[f"{p}:{n}" for p, n, _, _ in YAML])
def test_yaml_override_validates(tmp_path: Path, page: str, line: int, text: str, marked: bool) -> None:
    if marked:
        pytest.skip(f"{page} line {line} is marked {NOT_AN_OVERRIDE}")
    override = tmp_path / "override.yaml"
    override.write_text(text)
    params = load_params(REPO / "params.yaml", override)        # raises ParamsError naming the key
    check_method_params(params)


AVBIAS_PARAMS = [
    (page.name, line, cmd)
    for page in PAGES
    for line, body, _ in blocks(page, "bash")
    for cmd in (raw.split("#")[0].strip() for raw in body.splitlines())
    if cmd.startswith("avbias params ") and "--out" not in cmd
]


@pytest.mark.parametrize(("page", "line", "cmd"), AVBIAS_PARAMS, ids=[f"{p}:{n}" for p, n, _ in AVBIAS_PARAMS])
def test_avbias_params_command_runs(page: str, line: int, cmd: str) -> None:
    argv = shlex.split(cmd)
    done = subprocess.run([str(BIN / "avbias"), *argv[1:]], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{page} line {line}: `{cmd}` fails:\n{done.stderr[-3000:]}"


TIMED = [README, *[p for p in PAGES if p.name != "benchmarks.md" and p != README], REPO / "params.yaml",
         *sorted((REPO / "config").rglob("*.yaml"))]


def test_timings_are_quoted_only_from_benchmarks() -> None:
    measured = (REPO / "docs" / "benchmarks.md").read_text()
    retyped = [f"{path.relative_to(REPO)}:{number}: {match.group(0)!r}"
               for path in TIMED
               for number, line in enumerate(path.read_text().splitlines(), 1)
               for match in TIMING.finditer(line) if match.group(0) not in measured]
    assert not retyped, ("timings not found in docs/benchmarks.md; point to its section instead:\n"
                         + "\n".join(retyped))

"""The README and docs/ point at things that exist: every relative link and image resolves."""

import re

import pytest

from lib.config import PROJECT_ROOT

PAGES = [
    PROJECT_ROOT / "README.md",
    *sorted((PROJECT_ROOT / "docs").glob("*.md")),
    PROJECT_ROOT / "chalice_app" / "README.md",
]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(PROJECT_ROOT)))
def test_every_relative_link_resolves(page):
    targets = [t for t in LINK.findall(page.read_text()) if not re.match(r"[a-z]+:", t) and not t.startswith("#")]
    missing = [t for t in targets if not (page.parent / t.split("#")[0]).exists()]
    assert not missing, f"{page.name} links to missing {missing}"


def test_the_readme_leads_with_the_quick_start():
    text = (PROJECT_ROOT / "README.md").read_text()
    headings = re.findall(r"^## (.+)$", text, re.M)
    assert headings[0] == "Quick start" and "```bash\nmake run" in text and "\nmake test" in text
    assert len(text.splitlines()) < 120  # details live in docs/


# --- every lib.x a reader is pointed at exists --------------------------------------------------------

REFERENCE = re.compile(r"(?<![\w.])lib(?:\.[A-Za-z_]\w*)+")
FILE = re.compile(r"(?<![\w./])lib/[\w/]+\.py\b")
MARKDOWN = [*PAGES, PROJECT_ROOT / "k8s" / "README.md", PROJECT_ROOT / "monitoring" / "README.md"]
PYTHON = sorted(
    [*(PROJECT_ROOT / "lib").rglob("*.py"), *(PROJECT_ROOT / "benchmarks").glob("*.py"),
     *(PROJECT_ROOT / "scripts").glob("*.py"), PROJECT_ROOT / "run_pipeline.py", PROJECT_ROOT / "chalice_app" / "app.py"]
)  # fmt: skip


def prose(path) -> str:
    """What a reader reads of ``path``: a page; a module's docstrings and comments; a notebook's markdown and the
    comments of its code (its imports run when the notebook runs)."""
    import ast
    import io
    import json
    import tokenize

    if path.suffix == ".md":
        return path.read_text()
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text())["cells"]
        return "\n".join(
            "".join(c["source"]) if c["cell_type"] == "markdown" else
            "\n".join(line.split("#", 1)[1] for line in "".join(c["source"]).splitlines() if "#" in line)
            for c in cells
        )  # fmt: skip
    source = path.read_text()
    nodes = [
        n
        for n in ast.walk(ast.parse(source))
        if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
    ]
    docstrings = [ast.get_docstring(n) or "" for n in nodes]
    comments = [t.string for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type == tokenize.COMMENT]
    return "\n".join(docstrings + comments)


def resolves(reference: str) -> bool:
    """Whether ``lib.a.b.c`` names a module, or an attribute of one (``lib.serving.scoring.Scorer.score_batch``)."""
    import importlib
    import importlib.util

    parts = reference.split(".")
    for depth in range(len(parts), 0, -1):
        name = ".".join(parts[:depth])
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            target = importlib.import_module(name)
            for attribute in parts[depth:]:
                if not hasattr(target, attribute):
                    return False
                target = getattr(target, attribute)
            return True
    return False


def test_every_lib_reference_in_docs_docstrings_and_notebooks_resolves():
    stale = []
    for path in [*MARKDOWN, *PYTHON, *sorted((PROJECT_ROOT / "notebooks").glob("*.ipynb"))]:
        text = prose(path)
        where = path.relative_to(PROJECT_ROOT)
        stale += [f"{where}: {r}" for r in sorted(set(REFERENCE.findall(text))) if not resolves(r.rstrip("."))]
        stale += [f"{where}: {f}" for f in sorted(set(FILE.findall(text))) if not (PROJECT_ROOT / f).is_file()]
    assert stale == []


def test_the_reference_check_catches_a_stale_name():
    assert resolves("lib.serving.scoring.Scorer.score_batch") and resolves("lib.pipeline")
    assert not resolves("lib.scoring") and not resolves("lib.serving.scoring.Nope")

"""The layout rules of docs/architecture.md, checked on the source: no import circle in the
SDK (imports inside functions count too), the SDK never imports torch, training or export,
and the gallery package stores vectors without knowing images or recognisers."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SDK = REPO / "sdk"


def module_name(path: Path) -> str:
    rel = path.relative_to(SDK).with_suffix("")
    parts = ["npcface", *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str] | None = None) -> set[str]:
    """Every module that ``path`` imports (see :func:`imports_in`)."""
    mod = module_name(path)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    return imports_in(path.read_text(encoding="utf-8"), package, modules)


def imports_in(source: str, package: str, modules: set[str] | None = None) -> set[str]:
    """Every module that ``source`` (a module of ``package``) imports, anywhere: functions
    included, and blocks under ``if TYPE_CHECKING:`` too (a type that needs a module names
    a dependency as much as a call does), as absolute names.

    ``from pkg import name`` counts as importing ``pkg.name`` when that is one of
    ``modules``, else as importing ``pkg``.
    """
    out: set[str] = set()
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = {f"{target}.{a.name}" for a in node.names}
            found = subs & (modules or set())
            out.update(found or {target})
    return out


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in SDK.rglob("*.py")}
    edges = {}
    for mod, path in files.items():
        edges[mod] = {t for t in imports_of(path, set(files)) if t in files and t != mod}
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_the_sdk():
    assert circles(graph()) == []


def test_type_checking_imports_count():
    """A circle through an ``if TYPE_CHECKING:`` import is still a circle."""
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .quality import Q\n"
    assert "npcface.quality" in imports_in(source, "npcface")


def test_errors_import_nothing_of_npcface():
    """Every module may raise them: they sit below everything."""
    assert {t for t in imports_of(SDK / "errors.py") if t.startswith("npcface")} == set()


def test_the_sdk_never_imports_torch_training_or_export():
    bad = {}
    for path in SDK.rglob("*.py"):
        hits = {
            t
            for t in imports_of(path)
            if t.split(".")[0] == "torch" or t.startswith(("npcface.training", "npcface.export"))
        }
        if hits:
            bad[str(path.relative_to(REPO))] = sorted(hits)
    assert bad == {}


def test_the_gallery_package_knows_nothing_of_images():
    image_side = (
        "npcface.recognizer",
        "npcface.image",
        "npcface.detect",
        "npcface.align",
        "npcface.embed",
        "npcface.enroll",
        "npcface.choose",
        "npcface.cli",
    )
    bad = {}
    for path in (SDK / "gallery").rglob("*.py"):
        hits = {t for t in imports_of(path) if t.startswith(image_side)}
        if hits:
            bad[path.name] = sorted(hits)
    assert bad == {}

"""The layer order in README.md's "Architecture" section is the code's: every module is listed there, imports go
downwards only (inside functions too), there is no import cycle, and only heavy dependencies are imported lazily."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TREES = {"med_r1": "med_r1", "rewards": "med_r1.rewards", "eval": "med_r1.eval"}  # folder -> package (pyproject)

# Imported inside functions, for start-up time (`med-r1 --help`, `med-r1 validate`); anything else goes at the top.
HEAVY = {
    "accelerate", "datasets", "huggingface_hub", "matplotlib", "nibabel", "peft", "pyarrow", "pydicom", "tokenizers",
    "torch", "transformers", "trl", "vllm", "qwen_vl_utils", "openpyxl",
}  # fmt: skip
# The one module that also imports its own package inside functions, and why; each such import says why on its line
# or the comment line above it (test_lazy_imports_of_our_own_modules_say_why).
ALSO_LAZY = {
    "med_r1.train": ("med_r1",),  # trainer and callbacks subclass trl/transformers classes at import
}


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO)
    parts = TREES[rel.parts[0]].split(".") + list(rel.parts[1:-1])
    if rel.stem != "__init__":
        parts.append(rel.stem)
    return ".".join(parts)


def source_files() -> dict[str, Path]:
    files = {}
    for folder in TREES:
        for path in sorted((REPO / folder).rglob("*.py")):
            files[module_name(path)] = path
    return files


def readme_layers() -> dict[str, tuple[int, str]]:
    """module -> (layer number, layer name), from the README's Architecture section."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Architecture\n", 1)[1].split("\n## ", 1)[0]
    layers, current = {}, None
    for line in section.splitlines():
        if m := re.match(r"^\*\*(\d) · ([\w ]+)\*\*", line):
            current = (int(m.group(1)), m.group(2))
        elif m := re.match(r"^- `([\w/.]+\.py)`", line):
            assert current is not None, line
            layers[module_name(REPO / m.group(1))] = current
    return layers


def imports(path: Path, module: str, known: set[str]) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every import statement of the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []

    def visit(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = local or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef)
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, inside) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: `level - 1` packages above this one
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - child.level + 1] + ([base] if base else []))
                for alias in child.names:
                    target = f"{base}.{alias.name}"
                    found.append((target if target in known else base, child.lineno, inside))
            visit(child, inside)

    visit(tree, False)
    return found


def graph() -> tuple[dict[str, Path], dict[str, list[tuple[str, int, bool]]]]:
    files = source_files()
    return files, {name: imports(path, name, set(files)) for name, path in files.items()}


def test_every_module_is_in_the_readme_architecture():
    files, layers = source_files(), readme_layers()
    assert sorted(set(files) - set(layers)) == [], "modules missing from README.md's Architecture section"
    assert sorted(set(layers) - set(files)) == [], "README.md's Architecture section lists modules that do not exist"


def test_imports_go_downwards_only():
    files, edges = graph()
    layers = readme_layers()
    upward = [
        f"{files[source].relative_to(REPO)}:{line}: {source} (layer {layers[source][0]} {layers[source][1]}) imports "
        f"{target} (layer {layers[target][0]} {layers[target][1]})" + (" inside a function" if local else "")
        for source, found in edges.items()
        for target, line, local in found
        if target in layers and layers[target][0] > layers[source][0]
    ]
    assert upward == [], "\n".join(upward)


def test_no_import_cycles():
    files, edges = graph()
    internal = {s: sorted({t for t, _, _ in found if t in files and t != s}) for s, found in edges.items()}
    cycles, state = [], {}

    def walk(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in internal[node]:
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(path[path.index(nxt) :] + [nxt]))
            elif nxt not in state:
                walk(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(internal):
        if node not in state:
            walk(node, [node])
    assert cycles == [], "\n".join(cycles)


def test_imports_inside_functions_are_for_heavy_dependencies_only():
    files, edges = graph()
    misplaced = []
    for source, found in edges.items():
        for target, line, local in found:
            if not local or target.split(".")[0] in HEAVY or target.split(".")[0] in ALSO_LAZY.get(source, ()):
                continue
            misplaced.append(f"{files[source].relative_to(REPO)}:{line}: import {target} inside a function")
    assert misplaced == [], "\n".join(misplaced)


def test_lazy_imports_of_our_own_modules_say_why():
    files, edges = graph()
    silent = []
    for source, found in edges.items():
        lines = files[source].read_text(encoding="utf-8").splitlines()
        for target, line, local in found:
            if not local or not target.startswith("med_r1"):
                continue
            here, above = lines[line - 1], lines[line - 2].strip() if line > 1 else ""
            if "#" not in here and not above.startswith("#"):
                silent.append(
                    f"{files[source].relative_to(REPO)}:{line}: import {target} inside a function, no reason"
                )
    assert silent == [], "\n".join(silent)

"""The architecture rule (docs/architecture.md), checked on the source: layers go one way, no module imports our
own modules inside a function to dodge a cycle, and modules and functions stay short.

    core <- data <- export/runtime <- training <- techniques <- pipeline      (<- the compact_nlp facade)

A module may import modules of its own layer or below. Every module is read as source (ast), never imported, so the
test runs in a second and names every violation at once.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# source folder -> the package it installs as (pyproject.toml's package-dir)
SOURCES = {"compact_nlp": "compact_nlp", "hat": "compact_nlp.hat", "token_pruning": "compact_nlp.token_pruning",
           "quant": "compact_nlp.quant"}
PACKAGE = "compact_nlp"

LAYERS = ("core", "data", "export", "training", "techniques", "pipeline", "facade")  # lowest first

# THE layer map: module prefix -> layer. A prefix covers the module itself and every module below it (the longest
# prefix wins); the bare package name "compact_nlp" is its __init__ only (the facade: it re-exports the public API
# and may import any layer, and no module may import it). A new module needs an entry here.
LAYER_OF = {
    PACKAGE: "facade",
    # core: the model, conversion, structure surgery, checkpoints, files, the extension points
    "compact_nlp.modeling": "core",
    "compact_nlp.configuration": "core",
    "compact_nlp.layers": "core",
    "compact_nlp.convert": "core",
    "compact_nlp.shrink": "core",
    "compact_nlp.pretrained": "core",
    "compact_nlp.io": "core",
    "compact_nlp.workdir": "core",
    "compact_nlp.hooks": "core",
    "compact_nlp.config_section": "core",
    "compact_nlp.registry": "core",  # techniques register into it, the pipeline iterates it; imports nothing of ours
    # data: tasks, their text and metrics
    "compact_nlp.glue": "data",
    "compact_nlp.data": "data",
    "compact_nlp.metrics": "data",
    "compact_nlp.augment": "data",
    # export and runtime: ONNX / ORT files, the models that run them, shipping and measuring them
    "compact_nlp.export": "export",
    "compact_nlp.runtime": "export",
    "compact_nlp.auto": "export",
    "compact_nlp.ship": "export",
    "compact_nlp.bench": "export",
    # training
    "compact_nlp.trainer": "training",
    "compact_nlp.distill": "training",
    "compact_nlp.protocol": "training",
    "compact_nlp.distributed": "training",  # several processes: what runs once, what runs on every one  # the shared training protocol: splits, transfer set, TrainingArguments
    # techniques
    "compact_nlp.hat": "techniques",
    "compact_nlp.token_pruning": "techniques",
    "compact_nlp.quant": "techniques",
    # pipeline: recipes, commands, comparisons
    "compact_nlp.recipe": "pipeline",
    "compact_nlp.run": "pipeline",
    "compact_nlp.combined": "pipeline",
    "compact_nlp.search": "pipeline",
    "compact_nlp.hub": "pipeline",
    "compact_nlp.compare": "pipeline",
    "compact_nlp.compare_peers": "pipeline",
    "compact_nlp.compare_report": "pipeline",
    "compact_nlp.embeddings": "pipeline",
    "compact_nlp.embeddings_measure": "pipeline",
    "compact_nlp.embeddings_text": "pipeline",
    "compact_nlp.cli": "pipeline",
    "compact_nlp.commands": "pipeline",
    "compact_nlp.optimum_peer": "pipeline",
    "compact_nlp.peers": "pipeline",
    "compact_nlp.compress": "pipeline",  # compact compress: the goal-driven planner over the registry
}

# Function-level imports of our own modules that are allowed, (module, imported module) -> why. Keep it small: an
# import inside a function hides an edge from readers and usually dodges a cycle that a move would remove.
FUNCTION_IMPORT_ALLOWLIST: dict[tuple[str, str], str] = {}
MAX_ALLOWLIST = 3

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported module of ours
    line: int
    function: str | None  # the enclosing function, for a function-level import


def module_name(path: Path) -> str:
    folder = path.relative_to(ROOT).parts[0]
    parts = [SOURCES[folder], *path.relative_to(ROOT / folder).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    found = {}
    for folder in SOURCES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            found[module_name(path)] = path
    return found


def layer_of(module: str) -> str | None:
    if module == PACKAGE:
        return LAYER_OF[PACKAGE]
    prefixes = [p for p in LAYER_OF if p != PACKAGE and (module == p or module.startswith(p + "."))]
    return LAYER_OF[max(prefixes, key=len)] if prefixes else None


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The modules of ours an import statement loads (a `from X import name` of a submodule counts as the submodule)."""
    own = modules()
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name == PACKAGE or a.name.startswith(PACKAGE + ".")]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[:len(base) - node.level + 1]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    if source != PACKAGE and not source.startswith(PACKAGE + "."):
        return []
    targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in own else source for a in node.names]
    return list(dict.fromkeys(targets))


@cache
def imports() -> list[Import]:
    found = []
    for module, path in modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        is_package = path.name == "__init__.py"

        def visit(node, function):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    found.extend(Import(module, target, child.lineno, function)
                                 for target in _targets(child, module, is_package))
                inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else None
                visit(child, function or inner)

        visit(tree, None)
    return found


def _report(title: str, problems: list[str], fix: str) -> str:
    return f"{len(problems)} {title}:\n  " + "\n  ".join(problems) + f"\n{fix}"


def test_every_module_has_a_layer_and_no_import_goes_up():
    problems = [f"{module} ({modules()[module].relative_to(ROOT)}) has no layer: add it to LAYER_OF in "
                "tests/test_architecture.py (and to docs/architecture.md)" for module in modules()
                if layer_of(module) is None]
    for edge in imports():
        source, target = layer_of(edge.module), layer_of(edge.target)
        if source is None or target is None:
            continue
        if target == "facade" and source != "facade":
            problems.append(f"{edge.module}:{edge.line} imports the package facade `{PACKAGE}` itself: import the "
                            "module that defines the name (relative import)")
        elif LAYERS.index(target) > LAYERS.index(source):
            problems.append(f"{edge.module} ({source}) imports {edge.target} ({target}) at line {edge.line}: "
                            f"an upward edge; move what it uses down to the {source} layer or below")
    assert not problems, _report("architecture violation(s) (layers: " + " <- ".join(LAYERS[:-1]) + ")", problems,
                                 "See docs/architecture.md.")


def test_no_function_level_import_of_our_own_modules():
    assert len(FUNCTION_IMPORT_ALLOWLIST) <= MAX_ALLOWLIST, "the function-level import allowlist must stay small"
    problems = [f"{edge.module}:{edge.line} imports {edge.target} inside {edge.function}()" for edge in imports()
                if edge.function is not None and (edge.module, edge.target) not in FUNCTION_IMPORT_ALLOWLIST]
    assert not problems, _report(
        "function-level import(s) of our own modules", problems,
        "Import at module top level; if that makes a cycle or an upward edge, move the shared piece down to the layer "
        "that owns it (docs/architecture.md). Third-party imports inside functions are fine.")


def test_modules_and_functions_are_short():
    problems = []
    for module, path in modules().items():
        source = path.read_text(encoding="utf-8")
        lines = len(source.splitlines())
        if lines > MAX_MODULE_LINES:
            problems.append(f"{module} ({path.relative_to(ROOT)}) has {lines} lines (max {MAX_MODULE_LINES}): "
                            "split it into cohesive modules and re-export the public names")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    problems.append(f"{module}.{node.name} (line {node.lineno}) has {length} lines "
                                    f"(max {MAX_FUNCTION_LINES}): split it into named helpers")
    assert not problems, _report("module(s) or function(s) too long", problems, "")


def test_the_checks_see_the_edges_they_judge():
    """The walker itself: relative imports resolve, submodules imported by name count as themselves."""
    edges = {(e.module, e.target) for e in imports() if e.function is None}
    assert ("compact_nlp.modeling", "compact_nlp.layers") in edges  # from .layers import ...
    assert ("compact_nlp.quant.qat", "compact_nlp.hooks") in edges  # from compact_nlp.hooks import ... (in quant/)
    assert ("compact_nlp.quant", "compact_nlp.quant.binary") in edges  # a package's relative import
    assert layer_of("compact_nlp.quant.onnx_int8") == "techniques" and layer_of(PACKAGE) == "facade"
    assert layer_of("compact_nlp.export.onnx") == "export" and layer_of("compact_nlp.exports") is None

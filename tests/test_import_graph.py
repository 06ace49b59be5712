"""The package's import graph has no cycle: every module of fourier_flax can be imported on its own, and the
layers (methods below the shared machinery, FourierFT's math inside its own package) stay apart."""

from __future__ import annotations

import ast
import pathlib

import fourier_flax

PACKAGE = pathlib.Path(fourier_flax.__file__).parent


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module → the package modules it imports (at any depth, function-level imports included)."""
    files = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parent + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            edges |= {target for target in targets if target in files and target != name}
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_cycle():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = import_graph()
    graph["fourier_flax.methods.fourierft.spectral"].add("fourier_flax.adapter")  # adapter → ... → spectral
    assert any("fourier_flax.adapter" in c and "fourier_flax.methods.fourierft.spectral" in c for c in cycles(graph))


def test_methods_never_import_the_shared_machinery():
    """Methods sit below the verbs: no module under fourier_flax.methods imports init_adapter, intercept, merge,
    checkpoints, PEFT files, NNX surgery or the recipes."""
    above = ("adapter", "interceptor", "merge", "checkpoint", "peft_interop", "peft_model", "nnx", "finetune")
    above += ("sharding",)
    graph = import_graph()
    offending = {
        (name, target)
        for name, targets in graph.items()
        if name.startswith("fourier_flax.methods")
        for target in targets
        if any(target == f"fourier_flax.{part}" or target.startswith(f"fourier_flax.{part}.") for part in above)
    }
    assert offending == set()


def test_fourierft_lives_in_one_package():
    graph = import_graph()
    flat = [name for name in graph if name.count(".") == 1]
    fourierft_words = ("spectral", "entries", "randperm", "mesh_matmul", "fourierft")
    assert [name for name in flat if any(word in name for word in fourierft_words)] == []
    assert {"config", "spectral", "backward", "entries", "torch_randperm", "mesh_matmul", "sharding", "method"} <= {
        name.rpartition(".")[2] for name in graph if name.startswith("fourier_flax.methods.fourierft.")
    }


def test_docstring_examples_are_plain_blocks():
    """Examples are ``::`` blocks (read, not run): no ``>>>`` prompt that --doctest-modules would have to run."""
    prompts = [
        f"{path.relative_to(PACKAGE.parent)}:{number}"
        for path in PACKAGE.rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if line.lstrip().startswith(">>>")
    ]
    assert prompts == []

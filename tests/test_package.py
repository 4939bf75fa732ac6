import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import maskage


def run(code: str, **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    return subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_import_is_cheap_and_changes_nothing():
    code = ("import os, sys; before = dict(os.environ); import maskage; "
            "print(dict(os.environ) == before, 'torch' in sys.modules, 'timm' in sys.modules, "
            "'cv2' in sys.modules, maskage.encode(2, 1, 0))")
    assert run(code) == "True False False False 15"
    # the API is there on first use, still without torch (prediction on ONNX Runtime needs none)
    assert run("import sys, maskage; p = maskage.Pipeline; print(p.__name__, 'torch' in sys.modules)") == "Pipeline False"


def test_training_command_asks_torch_for_huge_pages_unless_the_user_said_otherwise(monkeypatch, tmp_path):
    from maskage.apps.cli import main

    monkeypatch.delenv("THP_MEM_ALLOC_ENABLE", raising=False)
    importlib.reload(maskage)
    assert "THP_MEM_ALLOC_ENABLE" not in os.environ  # importing sets nothing
    args = ["train", "gender", "", f"data_dir={tmp_path / 'none'}"]
    assert main(args) == 2 and os.environ["THP_MEM_ALLOC_ENABLE"] == "1"  # set before anything else, kept
    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "0")
    assert main(args) == 2 and os.environ["THP_MEM_ALLOC_ENABLE"] == "0"


def test_huge_pages_cut_page_faults_of_large_tensors():
    # the setting must reach PyTorch's allocator: large buffers reused step after step fault far less
    code = """
import resource, torch
from maskage.apps.cli_train import use_huge_pages
use_huge_pages()
x = torch.ones(64, 32, 64, 64)
for _ in range(2):
    (x * 2).sum()
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    (x * 2).sum()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
"""
    with_thp, without = int(run(code)), int(run(code, THP_MEM_ALLOC_ENABLE="0"))
    mode = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    chosen = re.search(r"\[(\w+)\]", mode.read_text()).group(1) if mode.exists() else "unknown"
    if chosen == "madvise":  # the case the setting is for: only asked-for huge pages are given
        assert with_thp * 4 < without, (with_thp, without)
    else:  # "always" gives huge pages anyway, "never" never does: the setting must then change nothing much
        assert with_thp <= without * 1.5 + 100, (chosen, with_thp, without)


def test_documents_name_dates_and_sections_not_how_the_work_was_organised():
    root = Path(__file__).resolve().parents[1]
    pattern = re.compile(r"\b(first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|[a-z]+teenth|"
                         r"[0-9]+th)\s+session\b", re.I)
    tracked = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout.split()
    files = [root / f for f in tracked if f.endswith((".md", ".py", ".yaml", ".sh", ".cfg"))]
    assert len(files) > 50
    found = [f"{p.relative_to(root)}: {m.group(0)}" for p in files for m in pattern.finditer(p.read_text(errors="replace"))]
    assert not found, found[:10]


def _imports(root: Path) -> dict[str, set[str]]:
    """Every maskage module's imports of other maskage modules, function-level ones included."""
    import ast

    graph: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_pkg else parts)
        package = name if is_pkg else name.rpartition(".")[0]
        out = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level else []
                target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module or ""
                if target.startswith("maskage"):
                    out.add(target)
                    out.update(f"{target}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names if a.name.startswith("maskage"))
        graph[name] = out
    modules = set(graph)
    return {m: {t for t in targets if t in modules and t != m} for m, targets in graph.items()}


def test_imports_flow_one_way_between_the_subpackages_and_make_no_cycle():
    root = Path(maskage.__file__).resolve().parent
    graph = _imports(root)
    # what each layer may import (subpackages; the shared top-level modules are below them all)
    below = {"detect": set(), "models": {"detect"}, "pipeline": {"detect", "models"},
             "training": {"detect", "models"}, "apps": {"detect", "models", "pipeline", "training"}}
    for module, targets in graph.items():
        layer = module.split(".")[1] if module.count(".") >= 1 else ""
        for target in targets:
            other = target.split(".")[1] if target.count(".") >= 1 else ""
            if layer in below and other in below and other != layer:
                assert other in below[layer], f"{module} imports {target}"
            if layer not in below and module not in ("maskage", "maskage.__main__") and other in below:
                # the shared basics import no subpackage (the package and `python -m maskage` are the entry points)
                assert False, f"{module} imports {target}"

    def visit(node: str, path: list[str], done: set[str]) -> None:
        if node in path:
            raise AssertionError(f"import cycle: {' -> '.join(path[path.index(node):] + [node])}")
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            if not nxt.endswith("__init__") and nxt.rpartition(".")[0] != node:
                visit(nxt, path + [node], done)
        done.add(node)

    done: set[str] = set()
    for module in sorted(graph):
        visit(module, [], done)

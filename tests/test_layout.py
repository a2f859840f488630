"""The layers stay where the README's layout section puts them (read from the code's imports)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FRONT_ENDS = {"cli.py", "__main__.py"}  # the command line may offer the world's demo


def imports(path: Path) -> set[str]:
    """Every module a file imports, relative ones as written (leading dots kept)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            out.add(base)
            out.update(f"{base}.{a.name}" if node.module else f"{base}{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def absolute(path: Path, module: str) -> str:
    """`module` as imported by the file at `path` (inside the repository), leading dots resolved."""
    level = len(module) - len(module.lstrip("."))
    if not level:
        return module
    package = list(path.relative_to(ROOT).parent.parts)
    return ".".join(package[: len(package) - (level - 1)] + [m for m in [module[level:]] if m])


def test_the_engine_imports_neither_the_world_nor_comfyui():
    engine = [p for p in (ROOT / "qr_core").rglob("*.py")
              if "world" not in p.relative_to(ROOT / "qr_core").parts and p.name not in FRONT_ENDS]
    assert len(engine) > 20
    for path in engine:
        bad = {m for m in imports(path) if absolute(path, m).startswith("qr_core.world")
               or m.split(".")[0] in ("comfy", "folder_paths", "nodes", "comfy_api")}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_the_command_line_reaches_comfyui_only_through_the_pack():
    """`qr-lora train` loads ComfyUI from nodes/services/comfy_library.py, by path: no qr_core file imports it."""
    for path in (ROOT / "qr_core").glob("*.py"):
        bad = {m for m in imports(path) if m.split(".")[0] in ("comfy", "folder_paths", "nodes", "comfy_api")}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"
    library = ROOT / "nodes" / "services" / "comfy_library.py"
    relative = {m for m in imports(library) if m.startswith(".")}
    assert not relative, f"comfy_library.py is loaded by path, outside the package: it cannot import {relative}"


def test_the_engine_is_grouped_by_stage():
    """Each stage's modules import only the stages before it (bases ← adapters ← merging; training apart)."""
    order = {"bases": 0, "adapters": 1, "merging": 2, "training": 1}
    for stage, rank in order.items():
        for path in (ROOT / "qr_core" / stage).glob("*.py"):
            later = {m for m in imports(path) for other, r in order.items()
                     if r > rank and absolute(path, m).startswith(f"qr_core.{other}")}
            assert not later, f"{path.relative_to(ROOT)} imports a later stage: {later}"


def test_no_node_file_imports_another_node_file():
    node_files = {p.stem for p in (ROOT / "nodes").glob("*_node*.py")}
    assert len(node_files) >= 6
    for name in node_files:
        sideways = {m for m in imports(ROOT / "nodes" / f"{name}.py") if m.lstrip(".").split(".")[0] in node_files}
        assert not sideways, f"nodes/{name}.py imports {sideways}"


def test_qr_core_raises_only_its_own_errors():
    for path in (ROOT / "qr_core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and isinstance(node.exc.func, ast.Name):
                assert node.exc.func.id not in ("ValueError", "RuntimeError", "TypeError", "KeyError"), \
                    f"{path.relative_to(ROOT)}:{node.lineno} raises {node.exc.func.id}: raise a QRLoRAError instead"


def test_the_readme_layout_names_every_module():
    text = (ROOT / "README.md").read_text()
    block = text.split("## Layout", 1)[1].split("```")[1]
    for folder in ("nodes", "nodes/services", "qr_core", "qr_core/bases", "qr_core/adapters", "qr_core/merging",
                   "qr_core/training"):
        for path in (ROOT / folder).glob("*.py"):
            if path.name not in ("__init__.py", "__main__.py"):
                assert path.name in block, f"README's layout section does not name {folder}/{path.name}"

"""Exit 0 when importing ComfyUI's `comfy.sd` imports torchaudio (0.33 and later), else 1.

Usage: python3 .ci/imports_torchaudio.py COMFYUI_DIR

Reads the source only (module-level imports, followed through comfy.* modules), so it runs
before anything is installed. Up to 0.8 only the audio nodes import torchaudio, and torchaudio
would pin an older torch: CI leaves it out there.
"""
import ast
import pathlib
import sys


def module_path(root: pathlib.Path, name: str):
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def top_level_imports(path: pathlib.Path, name: str):
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{node.module}" if node.module else parent
            else:
                base = node.module or ""
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def imports_torchaudio(root: pathlib.Path, start: str = "comfy.sd") -> bool:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_path(root, name)
        if path is None:
            continue
        for imported in top_level_imports(path, name):
            if imported.split(".")[0] == "torchaudio":
                return True
            if imported.split(".")[0] == "comfy":
                todo.append(imported)
    return False


if __name__ == "__main__":
    sys.exit(0 if imports_torchaudio(pathlib.Path(sys.argv[1])) else 1)

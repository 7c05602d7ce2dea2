"""drlbox's imports run one way: pure math, then algorithms, roles (no gRPC), the gRPC layer,
the launchers, and the user-facing entry points on top. A module that imports upwards (even
inside a function) fails here, naming the file and the import."""
from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent / "drlbox"

# Lower ranks are imported by higher ones, never the other way round.
RANK = {
    "replay": 0,                                    # replay memories (NumPy)
    "config": 1,
    "jobs": 2, "envs": 2, "metrics": 2,
    "ops": 3,                                       # pure math
    "layers": 4,
    "algorithms": 5,
    "roles": 6,                                     # loops and state, no gRPC
    "rpc": 7,                                       # servicers, clients, serde
    "launch": 8,                                    # entry points, the local launcher
    "client": 9, "trainer": 9, "evaluator": 9,      # what users call
    "cli_jobs": 10,
    "cli": 11,
}


def _unit(module: str) -> str | None:
    """The layer a dotted drlbox module belongs to (its first name below drlbox)."""
    parts = module.split(".")
    return parts[1] if parts[0] == "drlbox" and len(parts) > 1 else None


def _imports(path: pathlib.Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def test_every_package_has_a_rank():
    units = {p.stem if p.is_file() else p.name for p in ROOT.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()}
    assert units <= set(RANK), f"give these a rank in RANK: {sorted(units - set(RANK))}"


def test_imports_run_one_way():
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        if "generated" in path.parts:
            continue
        source = _unit(".".join(path.relative_to(ROOT.parent).with_suffix("").parts))
        if source is None or source == "__init__":
            continue
        for line, module in _imports(path):
            target = _unit(module)
            if target in RANK and target != source and RANK[target] >= RANK[source]:
                upward.append(f"{path.relative_to(ROOT.parent)}:{line} ({source}) imports "
                              f"{module} ({target})")
    assert not upward, "imports against the layering:\n" + "\n".join(upward)

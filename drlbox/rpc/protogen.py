"""Generate drlbox/rpc/generated from protos/ (`make protos`); the tests use it to detect drift."""
from __future__ import annotations

import pathlib
import re
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "protos"
OUT_DIR = pathlib.Path(__file__).resolve().parent / "generated"
_PACKAGE_IMPORT = re.compile(r"^from drlbox\.v1 import ", re.MULTILINE)


def generate(out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Compile every .proto into flat modules in out_dir; return the files written."""
    protos = sorted(PROTO_DIR.glob("drlbox/v1/*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        # Out of process: grpc_tools' bundled protoc crashes a process that loaded TensorFlow.
        args = [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}",
                f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}",
                *map(str, protos)]
        done = subprocess.run(args, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"protoc failed on {PROTO_DIR}: {done.stderr.strip()}")
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for src in sorted((pathlib.Path(tmp) / "drlbox" / "v1").iterdir()):
            # protoc mirrors the proto package in imports; the modules live flat in one package.
            text = _PACKAGE_IMPORT.sub("from drlbox.rpc.generated import ", src.read_text())
            dst = out_dir / src.name
            dst.write_text(text)
            written.append(dst)
    (out_dir / "__init__.py").write_text('"""Code generated from protos/ by `make protos`."""\n')
    return written


def main() -> int:
    """Regenerate the committed code."""
    for path in generate(OUT_DIR):
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

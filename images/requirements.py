"""Print drlbox's pip requirements from setup.py, one per line, without installing drlbox.

Image builds install the dependencies before copying the package source, so the TensorFlow layer
is reused as long as setup.py's requirements do not change. setup.py stays the single source of
truth for names and version ranges.

    python3 images/requirements.py [--extras atari,dev] [--only numpy,grpcio] [setup.py]

--extras adds those extras' requirements to install_requires; --only keeps just the named
projects (and fails if one of them is not in setup.py), which the TensorFlow-free replay image
uses.
"""
from __future__ import annotations

import argparse
import os
import re
import runpy
import sys


def normalize(name: str) -> str:
    """PEP 503 project-name normalization."""
    return re.sub(r"[-_.]+", "-", name).lower()


def project_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise SystemExit(f"requirements.py: cannot parse requirement {requirement!r}")
    return normalize(match.group(1))


def read_setup(path: str) -> dict:
    """Run setup.py with setuptools.setup replaced by a function that records its arguments."""
    import setuptools

    captured: dict = {}
    real_setup = setuptools.setup
    setuptools.setup = lambda **kwargs: captured.update(kwargs)
    cwd = os.getcwd()
    argv = sys.argv
    try:
        os.chdir(os.path.dirname(os.path.abspath(path)))
        sys.argv = [path, "--name"]
        runpy.run_path(os.path.basename(path), run_name="__main__")
    finally:
        setuptools.setup = real_setup
        sys.argv = argv
        os.chdir(cwd)
    if not captured:
        raise SystemExit(f"requirements.py: {path} did not call setuptools.setup()")
    return captured


def split_names(values: list[str]) -> list[str]:
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("setup_py", nargs="?", default="setup.py")
    parser.add_argument("--extras", action="append", default=[],
                        help="comma-separated extras to include (repeatable)")
    parser.add_argument("--only", action="append", default=[],
                        help="comma-separated project names to keep (repeatable)")
    args = parser.parse_args()

    kwargs = read_setup(args.setup_py)
    requirements = list(kwargs.get("install_requires", []))
    extras_require = kwargs.get("extras_require", {})
    for extra in split_names(args.extras):
        if extra not in extras_require:
            raise SystemExit(f"requirements.py: unknown extra {extra!r}; "
                             f"setup.py has {sorted(extras_require)}")
        requirements.extend(extras_require[extra])

    only = {normalize(name) for name in split_names(args.only)}
    if only:
        present = {project_name(r) for r in requirements}
        missing = sorted(only - present)
        if missing:
            raise SystemExit(f"requirements.py: not required by setup.py: {', '.join(missing)}")
        requirements = [r for r in requirements if project_name(r) in only]

    seen = set()
    for requirement in requirements:
        if requirement not in seen:
            seen.add(requirement)
            print(requirement)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Resident memory of each role during an A3C CartPole run: peak, and growth over the run.

    python benchmarks/memory.py [--minutes 10]
Samples /proc every few seconds. "after 1 min" vs "at end" shows whether anything grows once
TensorFlow has settled; "peak" is the kernel's high-water mark (VmHWM) at the end.
"""
from __future__ import annotations

import argparse
import glob
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))

from cartpole_presets import cartpole, mlp_features  # noqa: E402

from drlbox.trainer import make_trainer  # noqa: E402


def role_memory(port_begin: int) -> dict[str, dict[str, int]]:
    """role -> {'rss': kB, 'peak': kB} for the role processes of this run."""
    found = {}
    for path in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            # Forked roles show their command line as one string (setproctitle).
            args = open(path, "rb").read().decode(errors="replace").replace("\0", " ").split()
            status = open(path.replace("cmdline", "status")).read()
        except OSError:
            continue
        if "drlbox.launch.role" not in args or str(port_begin) not in " ".join(args):
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        name = args[args.index("drlbox.launch.role") + 1]
        if name == "worker":
            name += "-" + " ".join(args).split('"index": ')[1].split(",")[0]
        found[name] = {"rss": int(fields["VmRSS"].split()[0]),
                       "peak": int(fields["VmHWM"].split()[0])}
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--port-begin", type=int, default=3820)
    args = parser.parse_args()
    samples: dict = {"first": {}, "last": {}}

    def sample() -> None:
        start = time.monotonic()
        while time.monotonic() - start < args.minutes * 60:
            time.sleep(5)
            samples["last"] = role_memory(args.port_begin) or samples["last"]
            if not samples["first"] and time.monotonic() - start >= 60:
                samples["first"] = samples["last"]
        os.kill(os.getpid(), signal.SIGTERM)      # catch_signal: the run stops gracefully

    threading.Thread(target=sample, daemon=True).start()
    result = make_trainer("a3c", env_maker=cartpole, feature_maker=mlp_features,
                          num_parallel=2, batch_size=4, train_steps=10**10,
                          port_begin=args.port_begin, catch_signal=True).run()
    first, last = samples["first"], samples["last"]
    print(f"{result.global_steps} env steps in {result.train_seconds:.0f} s")
    print(f"{'role':<18} {'after 1 min MB':>14} {'at end MB':>10} {'growth MB':>10} "
          f"{'peak MB':>8}")
    for role in sorted(last):
        begin = first.get(role, last[role])["rss"] / 1024
        end = last[role]["rss"] / 1024
        print(f"{role:<18} {begin:>14.0f} {end:>10.0f} {end - begin:>10.1f} "
              f"{last[role]['peak'] / 1024:>8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

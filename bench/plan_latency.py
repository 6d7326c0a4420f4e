"""Planning latency: `snakemake -n all` on a finished workflow vs a bare Snakemake no-op.

Target (issue 11): the workflow's dry run on the finished demo takes at most twice a bare
no-op (a one-rule Snakefile whose output exists), measured in one run of this script, with
the two taking turns so that machine load affects both alike. The difference is what sdi adds
at planning: parsing the rules, validating the config, the dataset listing and the DAG.

    make demo && .venv/bin/python bench/plan_latency.py            # the finished demo in this checkout
    .venv/bin/python bench/plan_latency.py --workdir /path/to/finished/checkout --repeat 7
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BARE = 'rule all:\n    input: "done.txt"\n\n\nrule done:\n    output: "done.txt"\n    shell: "touch {output}"\n'


def dry_run(workdir: Path, *targets: str) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", *targets], cwd=workdir,
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"snakemake -n in {workdir} failed:\n{proc.stderr[-3000:]}")
    return elapsed, proc.stdout + proc.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=str(REPO), help="a checkout whose demo has run (make demo)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    workdir = Path(args.workdir)

    with tempfile.TemporaryDirectory(prefix="sdi-bare-") as tmp:
        bare = Path(tmp)
        (bare / "Snakefile").write_text(BARE)
        (bare / "done.txt").write_text("")
        dry_run(bare)  # warm the file cache and bytecode of both
        _, out = dry_run(workdir, "all")
        if "Nothing to be done" not in out:
            print("warning: the workflow is not finished (the dry run plans jobs); run `make demo` first")
        times = {"bare": [], "sdi": []}
        for _ in range(args.repeat):
            times["bare"].append(dry_run(bare)[0])
            times["sdi"].append(dry_run(workdir, "all")[0])
    bare_s, sdi_s = statistics.median(times["bare"]), statistics.median(times["sdi"])
    print(f"bare Snakemake no-op      : {bare_s:.2f} s (median of {args.repeat})")
    print(f"snakemake -n all (finished): {sdi_s:.2f} s (median of {args.repeat})")
    print(f"ratio                      : {sdi_s / bare_s:.2f} (target <= 2)")


if __name__ == "__main__":
    main()

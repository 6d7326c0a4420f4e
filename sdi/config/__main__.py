"""``python -m sdi.config [FILE ...]``: check config files as ``snakemake --configfile FILE ...`` would use them.

Each file must parse as YAML (a syntax error is named by file, line and column: Snakemake's own message,
"Config file is not valid JSON or YAML", names neither, and it comes before the workflow can say more);
then config/config.yaml with the files merged over it in order gets every planning check
(:func:`sdi.config.planning.check_config`). Prints ``config OK`` or the problems, and exits 0 or 1.
Run it from the workflow's folder (the one holding config/).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sdi.config.planning import ConfigError, check_config
from sdi.config.settings import merged_config_files
from sdi.config.validation import yaml_problem


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sdi.config", description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", help="config files, as given to snakemake --configfile")
    parser.add_argument("--base", default="config/config.yaml", help="the Snakefile's configfile (%(default)s)")
    parser.add_argument("--schema", default="config/schema.yaml", help="default: %(default)s")
    args = parser.parse_args(argv)
    files = [args.base, *args.files]
    problems = [p for p in map(yaml_problem, files) if p]
    if not problems:
        try:
            check_config(merged_config_files(*files), Path(args.schema))
        except ConfigError as exc:
            problems = [str(exc)]
    print("\n".join(problems) if problems else "config OK")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

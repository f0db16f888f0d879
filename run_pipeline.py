#!/usr/bin/env python
"""Run the pipeline notebooks headlessly with papermill (see README.md).

python run_pipeline.py                          # default profile, all notebooks
python run_pipeline.py --profile full           # all 6,362,620 rows
python run_pipeline.py -p ROWS=50000 --until 01_acquire
python run_pipeline.py --run-id 20261128-101500-ab12   # resume a failed run
"""

import argparse
import sys

from lib.errors import PipelineError
from lib.pipeline.runner import parse_overrides, run_pipeline
from lib.redact import redact


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="default", help="params/<PROFILE>.yaml or a YAML path (default: default)")
    parser.add_argument("-p", "--param", action="append", metavar="KEY=VALUE", help="override a parameter; later wins")
    parser.add_argument("--only", action="append", metavar="NOTEBOOK", help="run only this notebook (repeatable)")
    parser.add_argument("--from", dest="start", metavar="NOTEBOOK", help="start at this notebook")
    parser.add_argument("--until", metavar="NOTEBOOK", help="stop after this notebook")
    parser.add_argument("--run-id", help="resume this run from its failed (or first unfinished) notebook")
    parser.add_argument("--force", action="store_true", help="recompute steps even when their cached outputs are valid")
    parser.add_argument(
        "--data-version", metavar="RUN_ID|GIT_REV", help="restore the DVC-versioned data of a run or git revision first"
    )
    args = parser.parse_args(argv)
    try:
        result = run_pipeline(
            profile=args.profile,
            overrides=parse_overrides(args.param),
            only=args.only,
            start=args.start,
            until=args.until,
            run_id=args.run_id,
            force=args.force,
            data_version=args.data_version,
        )
    except PipelineError as exc:
        print(f"error: {redact(exc)}", file=sys.stderr)
        return 2
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""`python -m minigrpo.measure OUT.json COMMAND [FLAGS...]`: run one `minigrpo` sub-command in this
process, then write its wall time, peak RSS (minigrpo/cost.py's `peak_rss_mb`) and exit code to OUT.json.

A fresh process per run, so the peak RSS is that run's alone: `make compare-small` wraps each trainer
in it. It lives apart from cost.py because it imports the command line, which imports the trainers.
"""
import sys
import time

from minigrpo.cli import main as cli_main
from minigrpo.cost import peak_rss_mb
from minigrpo.files import write_json


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        print("usage: python -m minigrpo.measure OUT.json COMMAND [FLAGS...]", file=sys.stderr)
        return 2
    t0 = time.time()
    rc = cli_main(argv[1:])
    write_json(argv[0], {"command": argv[1], "exit_code": rc, "wall_s": time.time() - t0, "peak_rss_mb": peak_rss_mb()})
    return rc


if __name__ == "__main__":
    sys.exit(main())

"""`python -m onager.backends.ssh LAUNCH_DIR`: a `--detach` dispatcher."""
import sys

from onager.backends.ssh import _detached_main

raise SystemExit(_detached_main(sys.argv[1]))

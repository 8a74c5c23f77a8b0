"""A task that prints what onager passed it: its parameters, as a dict and as env vars."""
import os

import onager

print("params:", onager.params())
print("ONAGER_PARAM_LR:", os.environ.get("ONAGER_PARAM_LR"))

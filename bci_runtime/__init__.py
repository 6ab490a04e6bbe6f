"""bci-runtime: a closed-loop brain-computer-interface runtime.

The engine lives here (stream and chunk types, clocks, ring buffer, node API,
graph, executor, process placement, sessions, command line); drivers,
pipelines, decoders and simulators are sibling subpackages that meet in a
pipeline graph through the node registry.
"""

__version__ = "0.1.0"

import os as _os
from pathlib import Path as _Path

# liblsl reads its configuration when it is first loaded; ours keeps its log quiet.
_os.environ.setdefault("LSLAPICFG", str(_Path(__file__).with_name("lsl_api.cfg")))

"""The run-time layer: what a run needs around the plugin core. Building a cfg from files and
overrides (safe YAML), the checks of a run (datasets, class counts, OUTPUT_DIR), checkpoints written
atomically and loaded safely, weights by name (``yolact://``), interrupts, ``launch()``, one run per
OUTPUT_DIR, cluster jobs, skipping non-finite losses, and one-line error reports. It imports the core,
never the other way round (docs/ARCHITECTURE.md).

Importing it registers the ``yolact://`` path handler on Detectron2's ``PathManager``."""
from . import weights_cache  # noqa: F401  (registers the yolact:// PathHandler)

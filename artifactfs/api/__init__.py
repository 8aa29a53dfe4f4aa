"""Layer 4: the W&B-shaped Python API (`Artifact`, `Api`) and what a version does after it is logged."""

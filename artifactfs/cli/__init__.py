"""Layer 7: the `artifactfs` command line and `mount.artifactfs`."""

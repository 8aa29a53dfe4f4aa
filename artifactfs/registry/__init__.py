"""Layer 2: collections, versions, aliases, manifests and trees on a store."""

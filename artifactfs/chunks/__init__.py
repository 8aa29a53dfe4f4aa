"""Layer 3: file contents as verified chunks: upload, download, the shared cache, references."""

"""The draft engine: a collection's writable next version, on local disk.

A draft is a namespace of inodes (engine.py, meta.py, inode.py) whose regular
files keep their bytes in data files by inode (filedata.py), copy-on-write from
the base version; frommemory.py is what the mount may answer without a worker
thread; commit.py turns it into a version and advance.py moves it onto
that version; lifecycle.py opens, recovers and sets drafts aside; slots.py says
where drafts live and which process may use them; syncclient.py is the
`artifactfs sync` side of the mount's control socket.

This package knows nothing of FUSE or trio: the mount's draft nodes call it
from worker threads (docs/drafts.md)."""

"""The FUSE mount: collections as folders, versions as read-only trees read lazily
through the shared chunk cache (docs/mount-semantics.md describes what programs see).

Modules: inodes (inode table, Node and Handle base classes), nodes (the read-only
node kinds), reader (chunk memory cache and read-ahead), pagecache (small
files read ahead, stored into the kernel page cache), xattrs, ops (the thin
pyfuse3.Operations), context (what nodes share), options (MountOptions),
daemon (process life), state (state dir, mount table, sd_notify), commands (click
commands), fstab (the mount.artifactfs helper).  Drafts (issue 4): draftroot,
draftnodes, livedraft, control (its client is artifactfs.drafts.syncclient)."""

"""The FUSE mount: collections as folders, versions as read-only trees read lazily
through the shared chunk cache, drafts as writable folders
(docs/mount-semantics.md describes what programs see).

Modules, each importing only those listed before it:
  options     MountOptions (what `artifactfs mount` hands the daemon, as JSON)
  state       state dir, mount records, the kernel's mount table, sd_notify
  xattrs      registry records as user.artifact.* values
  threads     the one pool of worker threads for blocking calls
  errnos      the one map from exceptions to errno values, and their logging
  pagecache   verified bytes stored into the kernel page cache
  handles     Handle, the base class of open files
  refreshing  a store listing re-read once stale (served stale while unreachable)
  reader      ChunkReader (chunk memory cache, read-ahead), FileReader
  nativereads small version files whose READs pyfuse3's native threads answer
  context     MountContext: what every node shares
  inodes      Node, the base class of every node kind, and the InodeTable
  refreader   reading reference entries from their URI
  siblings    read-ahead across the files of a version folder
  portfolios  portfolio links and model-registry/
  nodes       the read-only node kinds (root, collection, version, alias ...)
  draftgate   a draft's gate: many changes at once (trio or any thread), or one commit
  openwrites  files of a draft being written, which a commit waits for
  livedraft   the drafts of the running mount and the gate of each
  syncops     requests answered in pyfuse3's reader threads by a synchronous handler
  draftnodes  the node kind of draft/ contents
  control     the socket `artifactfs sync` talks to
  noopen      who answers OPEN (native threads for version files, Python, or none) and reads by inode
  ops         pyfuse3.Operations: dispatch to nodes, errors to errno
  evict       the inode soft limit
  parts       MountParts: what extensions plug into before the mount serves
  draftroot   drafts at the top levels (draft/, mkdir, alias symlinks)
  lineage     uses and draft writers recorded through the mount
  pins        the drafts' bases pinned against gc
  daemon      building the parts, and the daemon process's life"""

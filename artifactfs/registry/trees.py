"""Trees on a store: loaded (each checked against its key), saved, and paths
looked up in them, with the decoded trees kept in an LRU bounded by the number
of entries it holds (a tree of 10,000 entries weighs like 10,000 small ones)."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from threading import Lock

from ..errors import CorruptStoreError
from ..store import ObjectStore
from .keys import tree_object_key
from .manifest import DirEntry, Entry, Tree, TreeIO, decode_tree, encode_tree, tree_key

CACHED_TREE_ENTRIES = 32_768  # trees kept in memory, counted by entries (~100 B each), not by trees


class TreeStore(TreeIO):
    """TreeIO over an ObjectStore.  Thread-safe: the mount loads trees from worker threads."""

    def __init__(self, store: ObjectStore):
        self.store = store
        self._trees: OrderedDict[str, Tree] = OrderedDict()
        self._tree_entries = 0  # entries of the trees kept, at most CACHED_TREE_ENTRIES
        self._trees_lock = Lock()

    def load(self, key: str) -> Tree:
        with self._trees_lock:
            tree = self._trees.get(key)
            if tree is not None:
                self._trees.move_to_end(key)
                return tree
        data = self.store.get(tree_object_key(key))
        if tree_key(data) != key:
            raise CorruptStoreError(f"tree {key} is corrupt (digest mismatch)")
        tree = decode_tree(data)
        self._remember(key, tree)
        return tree

    def _remember(self, key: str, tree: Tree) -> None:
        with self._trees_lock:
            if key not in self._trees:
                self._trees[key] = tree
                self._tree_entries += len(tree)
            while self._tree_entries > CACHED_TREE_ENTRIES and len(self._trees) > 1:
                self._tree_entries -= len(self._trees.popitem(last=False)[1])

    def save(self, tree: Mapping[str, Entry]) -> str:
        data = encode_tree(tree)
        key = tree_key(data)
        self.store.put_new(tree_object_key(key), data)
        self._remember(key, dict(tree))
        return key

    def lookup(self, root: str, path: str) -> Entry | None:
        """The entry at `path` below `root` ('' is the root itself)."""
        entry: Entry = DirEntry(root, 0, 0)
        for part in [p for p in path.split("/") if p]:
            if not isinstance(entry, DirEntry):
                return None
            child = self.load(entry.tree).get(part)
            if child is None:
                return None
            entry = child
        return entry

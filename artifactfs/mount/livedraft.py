"""The drafts of one mount while it runs: for each collection the engine's
Draft (artifactfs.drafts) plus what serializes its use under trio.

Every change, data writes included, passes the draft's gate; a commit closes the
gate, waits for changes in flight, and hashes a draft nobody is writing to.
Engine calls run in worker threads (the engine is thread-safe and blocking).
Writes are never buffered here: each one reaches the data file before the
writer is answered, so a killed daemon loses nothing a writer had written."""
from __future__ import annotations

import errno
import logging
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import trio

from ..chunks.digests import RunningDigest
from ..drafts import filedata
from ..drafts.advance import advance, reclaim
from ..drafts.commit import CommitResult, base_behind, commit_draft, warm_digests
from ..drafts.engine import Draft
from ..drafts.inode import Inode
from ..drafts.lifecycle import LATEST, Latest, base_gone, base_still_readable, discard, open_draft, put_aside
from ..drafts.reserve import RESERVE, SpaceReserve
from ..drafts.revert import discard_changes
from ..drafts.slots import claim_drafts_dir, earlier_stores, is_draft
from ..drafts.status import draft_status, paths_of
from ..drafts.tostore import seals_chunks, store_ahead, stores_ahead
from ..errors import ArtifactfsError, ConflictError
from ..registry.manifest import CHUNK_SIZE, FileEntry
from ..registry.versions import VersionInfo
from ..timestamps import iso_ns
from .context import MountContext
from .draftgate import Gate
from .openwrites import CHECK_IT, BeingWritten, OpenWrites, stopped_note

log = logging.getLogger("artifactfs.mount")
RUNNING = "\\running"      # in a drafts slot while its daemon runs: still there at start = a crash
RECOVERED = "\\recovered"  # in a draft changed when its daemon did not stop cleanly
RECOVERED_NOTE = ("it was being changed when the mount's daemon stopped without committing (killed or "
                  f"crashed), so a file being written then may be incomplete: {CHECK_IT}")
T = TypeVar("T")


@dataclass
class Ahead:
    """A file being written in order whose complete chunks go to the store before
    the commit: the digest it follows, the next chunk to store, and whether a task
    is storing them now."""

    running: RunningDigest
    next: int = 0
    busy: bool = False


class LiveDraft:
    def __init__(self, ctx: MountContext, draft: Draft, reserve: SpaceReserve):
        self.ctx = ctx
        self.draft = draft
        self.reserve = reserve
        self.name = draft.state.collection
        self.gate = Gate()
        self.on_advance: list[Callable[[list[Inode], Sequence[tuple[Inode, str]], bool], Any]] = []
        self._warmed: str | None = None
        self._ahead: dict[int, Ahead] = {}  # by inode id
        self._writers: weakref.WeakSet = weakref.WeakSet()  # handles open for writing (openwrites.py)
        self._writers_lock = threading.Lock()  # (handles are made in reader threads too)
        try:
            draft.seal_chunks = seals_chunks(ctx.registry.store, draft.data)
        except OSError as e:  # only an optimisation
            log.warning("big files of the draft of %s are copied into the store: %s", self.name, e)

    def opened(self, handle: object) -> None:
        """A handle opened for writing: known until it is freed (released, and no
        request holds it any more), whichever thread releases it."""
        with self._writers_lock:
            self._writers.add(handle)

    def writers(self) -> list[Any]:
        """The handles open for writing now."""
        with self._writers_lock:
            return list(self._writers)

    async def change(self, fn: Callable[..., T], *args: Any, frees_space: bool = False) -> T:
        """A change of the draft (namespace, attributes or bytes), in a worker thread.
        One that `frees_space` may use the state dir's reserve (drafts/reserve.py)."""
        self._warm()
        await self.gate.enter()
        try:
            if not frees_space:
                return await self.ctx.run(fn, *args)
            return await self._with_reserve(fn, *args)
        finally:
            self.gate.leave()

    async def _with_reserve(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) in a worker thread; on ENOSPC once more with the reserve given
        back (fn fails as a whole: a meta.db transaction), which is made again once
        there is room."""
        try:
            done = await self.ctx.run(fn, *args)
        except OSError as e:
            if e.errno != errno.ENOSPC or not await self.ctx.run(self.reserve.release):
                raise
            log.warning("the state dir is full: its reserve of %d MiB is given back so that a change of the "
                        "draft of %s that frees room can go on", RESERVE >> 20, self.name)
            done = await self.ctx.run(fn, *args)
        if self.reserve.missing:  # (else no worker-thread trip: rm -r of many files makes many changes)
            await self.ctx.run(self.reserve.restore)
        return done

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.ctx.run(fn, *args)

    async def forget(self, inodes: list[Inode]) -> None:
        """Inodes left without names that nobody holds any more go, with their data
        (Draft.forget; the reserve helps on a full disk).  One that cannot go now
        stays until the next start removes it (lifecycle.recover): logged, never
        raised, as it runs in the background or after a change that is done."""
        try:
            await self._with_reserve(_forget_all, self.draft, inodes)
        except (ArtifactfsError, OSError) as e:
            log.warning("the draft of %s keeps %d removed file(s) on disk until the next start: %s", self.name,
                        len(inodes), e.strerror if isinstance(e, OSError) and e.strerror else e)

    async def write(self, ino: Inode, off: int, data: bytes) -> int:
        """pwrite(2) into a file of the draft (filedata.write); bytes written."""
        done = await self.change(filedata.write, self.draft, ino, off, data)
        self._store_ahead(ino)
        return done

    def change_now(self, fn: Callable[..., T], *args: Any) -> T | None:
        """change() in the calling thread, which is not the trio loop (a request
        answered in pyfuse3's reader thread, syncops.py); None (fn not called) when
        it must go the trio way: a commit waits or runs, or the draft's base was
        not prepared yet (_warm).  fn must not return None."""
        if self._warmed != self.draft.state.base_root or not self.gate.try_enter():
            return None
        try:
            return fn(*args)
        finally:
            self.gate.leave_thread()

    def write_now(self, ino: Inode, off: int, data: bytes) -> int | None:
        """write() in the calling thread (change_now), or None."""
        done = self.change_now(filedata.write, self.draft, ino, off, data)
        running, state = ino.running, self._ahead.get(ino.id)
        if (done is not None and running is not None and running.size > CHUNK_SIZE and self.gate.token is not None
                and (state is None or state.running is not running
                     or (not state.busy and state.next < self._complete(ino, running)))):
            try:  # (a hint read outside the loop: _store_ahead looks again there)
                self.gate.token.run_sync_soon(self._store_ahead, ino)
            except trio.RunFinishedError:
                pass  # the mount has ended: the commit at unmount stores what is missing
        return done

    def _store_ahead(self, ino: Inode) -> None:
        """A file written in order, past its first chunk: its complete chunks go to
        a local store in the background (tostore.store_ahead), so that sync finds
        them there, mostly on disk already; when the draft seals chunks, each once
        sealed (linked, not copied: drafts/datafiles.py).  Files of one chunk are
        left to the commit, which links the data file itself into the store."""
        running, nursery = ino.running, self.ctx.reader.nursery
        if (running is None or running.size <= CHUNK_SIZE or nursery is None
                or not stores_ahead(self.ctx.registry.store)):
            return
        state = self._ahead.get(ino.id)
        if state is None or state.running is not running:
            state = self._ahead[ino.id] = Ahead(running)
        if not state.busy and state.next < self._complete(ino, running):
            state.busy = True
            nursery.start_soon(self._store_chunks, ino, state)

    async def _store_chunks(self, ino: Inode, state: Ahead) -> None:
        try:
            while state.next < self._complete(ino, state.running) and ino.running is state.running:
                await self.change(store_ahead, self.ctx.registry.store, self.draft, ino, state.running, state.next)
                state.next += 1
        except (ArtifactfsError, OSError) as e:  # only an optimisation: the commit stores what is missing
            log.warning("could not store a chunk of the draft of %s ahead of its commit: %s", self.name, e)
        finally:
            state.busy = False

    def _complete(self, ino: Inode, running: RunningDigest) -> int:
        """How many chunks of a file written in order can be stored ahead now."""
        return ino.sealed if self.draft.seal_chunks else len(running.keys)

    def _warm(self) -> None:
        """Once per base, in the background: what the next commit will need anyway."""
        root, nursery = self.draft.state.base_root, self.ctx.reader.nursery
        if root != self._warmed and nursery is not None:
            self._warmed = root
            nursery.start_soon(self._warm_in_background, root)

    async def _warm_in_background(self, root: str) -> None:
        try:
            await self.ctx.run(warm_digests, self.ctx.registry, root)
        except Exception as e:  # only an optimisation: the commit will meet the error itself
            log.warning("could not prepare the digest of %s's base: %s", self.name, e)

    def dirty(self) -> bool:
        return self.draft.dirty

    @property
    def recovered(self) -> str | None:
        """Why it waits for an explicit sync, or None: changed when the daemon stopped
        without committing (killed, crashed), or left unpublished as it stopped with
        files of it being written; a file being written then may be incomplete."""
        try:
            with open(os.path.join(self.draft.dir, RECOVERED), "rb") as f:
                return f.read().decode(errors="replace").strip() or RECOVERED_NOTE
        except FileNotFoundError:
            return None

    def mark_recovered(self, why: str = RECOVERED_NOTE) -> None:
        """Its changes may hold a file cut off as the daemon stopped: they wait for an explicit sync."""
        with open(os.path.join(self.draft.dir, RECOVERED), "wb") as f:
            f.write(why.encode())

    def _checked(self) -> None:
        """The user committed or discarded the recovered changes."""
        try:
            os.unlink(os.path.join(self.draft.dir, RECOVERED))
        except FileNotFoundError:
            pass

    async def has_changes(self) -> bool:
        """Something to publish: dirty, and not a new collection whose draft shows nothing
        (made and emptied again: publishing an empty v0 of a typo helps nobody)."""
        if not self.draft.dirty:
            return False
        return self.draft.state.base is not None or await self.ctx.run(self.draft.visible, self.draft.root)

    async def commit(self, writing: Callable[[], list[Inode]] | None = None, **attrs: Any) -> CommitResult:
        """Publish the draft (see drafts.commit); returns once the version is durable.
        BeingWritten (nothing done) if `writing()`, asked once changes are held
        still, names files being written."""
        started = time.monotonic()
        async with self.gate.commit():
            if writing is not None and writing():
                raise BeingWritten(f"{self.name}: files of the draft are being written")
            if self.draft.state.base is None and not await self.has_changes():
                raise ArtifactfsError(f"{self.name}: the draft of this new collection is empty, nothing to publish "
                                      "(rmdir its folder to drop it)")
            try:
                result = await self._with_reserve(partial(commit_draft, self.ctx.registry, self.draft, **attrs))
            except ConflictError:
                await self._advanced([])  # the folders show the version the conflict names
                raise
            try:
                given_back = await self.ctx.run(reclaim, self.draft)
            except (ArtifactfsError, OSError) as e:  # only disk space: the files stay, still correct
                log.warning("could not give back the staging space of %s: %s", self.name, e)
                given_back = 0
        self._ahead = {i: a for i, a in self._ahead.items() if a.busy}
        self._checked()
        log.info("committed %s in %.3f s (%d changed paths, %d staged files given back)", result.line,
                 time.monotonic() - started, result.changes, given_back)
        if result.note:
            log.info("%s", result.note)
        await self._advanced(result.advanced)
        return result

    async def follow(self, latest: int | None, version: Callable[[int], Awaitable[VersionInfo]]) -> None:
        """An untouched draft moves to a newer latest by itself (`version` gives its
        record), as the kernel looks up its folder.  While the store is unreachable it stays where it is, logged: the
        folder must stay listable."""
        st = self.draft.state
        if latest == st.base or self.dirty() or base_behind(st.base, latest):
            return  # never back: a listing older than its own commit, or its base deleted (docs/drafts.md)
        try:
            async with self.gate.commit():
                if latest == st.base or self.dirty() or base_behind(st.base, latest):
                    return
                info = await version(latest)
                changed = await self.ctx.run(advance, self.draft, latest, info.root, iso_ns(info.created_at), None)
        except (ArtifactfsError, OSError) as e:
            log.warning("the draft of %s stays on v%s for now: %s", self.name, st.base, e)
            return
        await self._advanced(changed, in_request=True)

    async def status(self) -> str:
        """What a sync would publish now (drafts/status.py), as `artifactfs status` prints it.
        Changes go on meanwhile: the draft is not held still for it."""
        text = (await self.ctx.run(draft_status, self.ctx.registry, self.draft)).text()
        why = self.recovered
        return f"{text}\nnote: {why}" if why else text

    async def discard_changes(self) -> str:
        """Drop every change of the draft (drafts/revert.py): it shows the collection's
        latest version again.  Returns the line `artifactfs discard` prints;
        ArtifactfsError when there is no version to go back to."""
        async with self.gate.commit():
            st, reg = self.draft.state, self.ctx.registry
            latest = await self.ctx.run(reg.latest, st.project, self.name)
            if latest is None:
                raise ArtifactfsError(f"{self.name}: no version to go back to; remove the collection's folder "
                                      "(rm -r) to drop its draft")
            if not self.dirty() and latest == st.base:
                return f"{self.name}: no changes to discard (the draft shows {self.name}:v{latest})"
            info = await self.ctx.run(reg.version, st.project, self.name, latest)
            gone = await self.ctx.run(discard_changes, self.draft, latest, info.root, iso_ns(info.created_at))
        self._ahead = {i: a for i, a in self._ahead.items() if a.busy}
        self._checked()
        log.info("discarded the changes of the draft of %s (%d names went); it shows v%d", self.name,
                 len(gone.names), latest)
        await self._advanced(gone.changed, gone.names)
        return f"{self.name}: changes discarded; the draft shows {self.name}:v{latest}"

    async def _advanced(self, changed: list[Inode], names: Sequence[tuple[Inode, str]] = (),
                        in_request: bool = False) -> None:
        """Tell the mount which inodes changed (bytes or names) and which names went;
        `in_request` while answering a FUSE request (see draftroot's invalidate)."""
        for hook in self.on_advance:
            await hook(changed, names, in_request)


class Drafts:
    """Every draft of this mount, by collection; they live in a drafts slot this
    process holds locked (drafts.slots.claim_drafts_dir)."""

    def __init__(self, ctx: MountContext, default_type: str):
        self.ctx = ctx
        self.default_type = default_type
        reg = ctx.registry
        self.dir, self._lock_fd = claim_drafts_dir(reg.identity, reg.store.url, ctx.project)
        self.live: dict[str, LiveDraft] = {}
        self._opening = trio.Lock()
        self.on_new: list[Callable[[LiveDraft], None]] = []
        self.owner = (ctx.uid, ctx.gid)
        self.unopened: set[str] = set()  # drafts found at start that could not be opened yet (a full disk)
        self.notes: list[str] = []  # for `artifactfs mount` to print: drafts set aside at start
        self.writes: Callable[[str], OpenWrites] = lambda name: OpenWrites()  # (draftroot.py)
        self.unmounting = False  # `artifactfs umount` asked for its commit (control.py)
        running = os.path.join(self.dir, RUNNING)
        self.after_crash = os.path.exists(running)  # the last daemon of this slot did not stop cleanly
        with open(running, "wb"):
            pass
        self.reserve = SpaceReserve(self.dir)
        try:
            if not self.reserve.restore():
                log.warning("no room for the %d MiB reserve of the state dir %s: on a full disk, removing files "
                            "from a draft may fail until there is room", RESERVE >> 20, self.dir)
        except OSError as e:
            log.warning("could not make the reserve of the state dir %s: %s", self.dir, e.strerror or e)
        for other in earlier_stores(reg.identity, reg.store.url):
            log.info("drafts of an earlier store at %s (made again since) are kept in %s", reg.store.url, other)
        for name in sorted(os.listdir(self.dir)):
            if is_draft(os.path.join(self.dir, name)):
                try:
                    self._load(name)
                except OSError as e:  # (a full disk: recovery may copy a file whole) one draft, not the mount
                    self.unopened.add(name)
                    log.error("the draft of %s could not be opened: %s; it stays on disk as it is, and its "
                              "folder gives this error until it can be opened (free space, then use it again)",
                              name, e.strerror or e)
                except Exception:  # a bug, or a damaged draft: its traceback, and the other drafts still serve
                    log.exception("the draft of %s could not be opened; it stays on disk as it is", name)

    def _load(self, name: str) -> None:
        """A draft found at start: kept, or set aside when its base is gone."""
        draft = open_draft(self.ctx.registry, self.dir, self.ctx.project, name, self._fetch_from_cache,
                           self.owner, self.default_type, None)
        try:
            gone = base_gone(self.ctx.registry, draft)
            if gone and draft.dirty and base_still_readable(self.ctx.registry, draft):
                log.info("the base %s:v%s of the draft of %s was deleted; the draft keeps showing it with its "
                         "changes, and sync publishes what it shows", name, draft.state.base, name)
                gone = False
        except (ArtifactfsError, OSError) as e:
            log.warning("could not check the base of the draft of %s: %s", name, e)
            gone = False
        if gone:
            draft.close()
            where = put_aside(draft.dir, f"its base {name}:v{draft.state.base} is no longer in the store")
            if draft.dirty:  # (an untouched draft set aside holds no work of anyone's)
                self.notes.append(f"note: the draft of {name} was set aside, its base {name}:v{draft.state.base} "
                                  f"is no longer in the store: its work is in {where}/files")
            return
        live = self.live[name] = LiveDraft(self.ctx, draft, self.reserve)
        if live.dirty() and self.after_crash:
            live.mark_recovered()
        if live.dirty():
            log.info("draft of %s found with changes not yet committed (base %s)%s", name,
                     "none" if draft.state.base is None else f"v{draft.state.base}",
                     f": {live.recovered}" if live.recovered else "")

    def _fetch_from_cache(self, entry: FileEntry, fd: int) -> None:
        """Copy-up through the mount's shared, verified chunk cache."""
        cache = self.ctx.reader.cache
        for i, key in enumerate(entry.chunks):
            offset, length = entry.chunk_span(i)
            view = memoryview(cache.read_chunk(key, length, f"draft copy of {entry.digest}"))
            while view:
                n = os.pwrite(fd, view, offset)
                view, offset = view[n:], offset + n

    async def get(self, name: str, type_: str | None = None, base: VersionInfo | None | Latest = LATEST) -> LiveDraft:
        """The draft of `name`, made the first time from `base` (by default its
        latest version, looked up in the store)."""
        found = self.live.get(name)
        if found is not None:
            return found
        async with self._opening:
            if name not in self.live:
                draft = await self.ctx.run(open_draft, self.ctx.registry, self.dir, self.ctx.project, name,
                                           self._fetch_from_cache, self.owner, type_ or self.default_type, base)
                self.live[name] = LiveDraft(self.ctx, draft, self.reserve)
                self.unopened.discard(name)
                for hook in self.on_new:
                    hook(self.live[name])
            return self.live[name]

    def unborn(self) -> list[str]:
        """Collections that exist only as a draft so far (made with mkdir), and drafts
        that could not be opened at start (shown, so that using them tries again)."""
        return sorted({n for n, d in self.live.items() if d.draft.state.base is None} | self.unopened)

    async def discard(self, name: str) -> None:
        live = self.live.pop(name)
        async with live.gate.commit():
            await self.ctx.run(discard, live.draft)

    async def commit_dirty(self) -> list[dict]:
        """Commit every draft with changes (at unmount); one result per draft as
        control.py gives them ({"collection", "line"} or {"collection", "error"}).
        A draft recovered after a crash waits for an explicit sync; so does one with
        files being written (OpenWrites.changed), marked recovered for the next mount."""
        results: list[dict] = []
        for name, live in sorted(self.live.items()):
            try:
                if not await live.has_changes():
                    continue
                writing = self.writes(name).changed
                if writing:
                    why = stopped_note(await live.read(paths_of, live.draft, writing), self.unmounting)
                    live.mark_recovered(why)  # (the next mount does not publish it either)
                    results.append({"collection": name, "error": f"{name}: not committed, marked recovered: {why}"})
                    log.warning("the draft of %s is not committed as the daemon stops: %s", name, why)
                elif live.recovered:
                    results.append({"collection": name, "error": f"{name}: not committed: {live.recovered}"})
                    log.warning("the draft of %s is not committed at unmount: %s", name, live.recovered)
                else:
                    results.append({"collection": name, "line": (await live.commit()).line})
            except Exception as e:  # one failing draft must not keep the others from committing
                log.error("could not commit the draft of %s: %s (it is kept for the next mount)", name, e)
                results.append({"collection": name, "error": f"{name}: {e}"})
        return results

    def close(self) -> None:
        """A clean stop (the drafts with changes were committed, or stay on purpose)."""
        for live in self.live.values():
            live.draft.close()
        try:
            os.unlink(os.path.join(self.dir, RUNNING))
        except FileNotFoundError:
            pass
        os.close(self._lock_fd)


def _forget_all(draft: Draft, inodes: list[Inode]) -> None:
    for ino in inodes:
        draft.forget(ino)

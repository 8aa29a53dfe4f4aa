"""The mount daemon's life: build the filesystem, mount, tell whoever waits that
it is live (a pipe to `artifactfs mount`, READY=1 to systemd), serve until
unmounted or signalled, run the shutdown hooks, and leave no mount behind.

`artifactfs mount` runs `python -m artifactfs.mount.daemon OPTIONS-JSON FD` in a
new session and waits on pipe FD for "ready" or "error: ..."."""
from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyfuse3
import trio

from ..chunks.cache import ChunkCache
from ..errors import ArtifactfsError
from ..registry.versions import Registry
from . import draftroot, lineage, noopen, pins
from .context import MountContext
from .evict import InodeLimit
from .inodes import InodeTable
from .nativereads import NativeReads
from .nodes import default_node_classes
from .ops import Operations
from .options import MountOptions
from .pagecache import PageFeeder
from .parts import MountParts
from .reader import ChunkReader
from .state import find_mount, log_path, remove_record, sd_notify, write_record
from .threads import Threads

log = logging.getLogger("artifactfs.mount")
DEBUG_LOGGERS = ("artifactfs",)  # what --debug lowers to DEBUG: never a library that logs request headers
# (nor pyfuse3, whose debug lines are its worker threads starting and stopping)
READ_AHEAD_KB = 1024


def build(opts: MountOptions) -> MountParts:
    """The filesystem `opts` describe, with its extensions installed (drafts and
    the pins of their bases unless read-only; lineage always), not mounted yet."""
    registry = Registry.open(opts.store)
    threads = Threads(opts.threads)
    cache = ChunkCache(registry, opts.cache_dir, opts.cache_size)
    reader = ChunkReader(cache, opts.memory, threads, feeder=PageFeeder())
    # A read-only mount needs no OPEN: the kernel refuses every open for writing (EROFS, root's
    # too) and no draft's writers are to be known, so warm opens cost no round trip.
    opens = noopen.OpenMode.choose(opts.send_opens, opts.no_opens or (opts.read_only and not opts.send_opens))
    ctx = MountContext(registry=registry, project=opts.project, reader=reader, threads=threads,
                       native=NativeReads(cache, enabled=opts.native_reads),
                       refresh=opts.refresh, cache_size=opts.cache_size,
                       unowned_files=opens is noopen.OpenMode.NONE and not opts.read_only)
    table = InodeTable(ctx, default_node_classes())
    table.set_root(table.kinds["root"](ctx, ("root",)))
    parts = MountParts(opts, ctx, table, Operations(table, opens))
    parts.services.append(InodeLimit(table, opts.inode_limit, threads).run)
    lineage.install(parts)  # uses and draft writers
    if not opts.read_only:
        draftroot.install(parts, opts.default_type)  # writable draft/ folders
        pins.install(parts)  # gc keeps what drafts read
    return parts


@dataclass
class Daemon:
    """One mounted filesystem's life: mount, serve the parts' services, run their
    shutdown hooks, unmount."""

    parts: MountParts
    dev: tuple[int, int] | None = None  # our mount's device, to unmount only our own

    def mount(self) -> None:
        """ArtifactfsError naming the cause libfuse or fusermount3 gave (`fuse:
        device not found ...`, `fusermount3: option allow_other only allowed if
        'user_allow_other' is set in /etc/fuse.conf`) and the log's path."""
        opts = self.parts.opts
        with _stderr_kept() as said:
            try:
                pyfuse3.init(self.parts.ops, opts.mountpoint, opts.fuse_options())
            except RuntimeError as e:
                failed = e
            else:
                return
        cause = said()[-1:] or [str(failed)]
        raise ArtifactfsError(f"cannot mount on {opts.mountpoint}: {cause[0]} (log: {log_path(opts.mountpoint)})")

    async def serve(self, on_ready: Callable[[], None]) -> None:
        """Serve until unmounted or SIGTERM/SIGINT; then run the shutdown hooks."""
        ctx = self.parts.ctx
        async with trio.open_nursery() as nursery:
            ctx.reader.nursery = nursery
            nursery.start_soon(self._signals)
            nursery.start_soon(self._announce, on_ready)
            for service in self.parts.services:
                nursery.start_soon(service)
            self.parts.ops.sync.install()
            await pyfuse3.main()
            nursery.cancel_scope.cancel()
        sd_notify("STOPPING=1")
        ctx.reader.nursery = None
        if ctx.reader.feeder is not None:
            await ctx.run(ctx.reader.feeder.close)
        for hook in self.parts.shutdown_hooks:
            try:
                await hook()
            except Exception:
                log.exception("shutdown hook %s failed", getattr(hook, "__qualname__", hook))

    async def _announce(self, on_ready: Callable[[], None]) -> None:
        """Ready means a stat through the mount was answered by us."""
        ctx, opts = self.parts.ctx, self.parts.opts
        st = await ctx.run(os.stat, opts.mountpoint)
        self.dev = (os.major(st.st_dev), os.minor(st.st_dev))
        await ctx.run(_raise_readahead, self.dev)
        log.info("mounted %s on %s (project %s, pid %d, %d worker threads)", ctx.registry.store.url,
                 opts.mountpoint, opts.project, os.getpid(), opts.threads)
        log.info(noopen.describe(self.parts.ops.opens, opts.send_opens, opts.read_only))
        on_ready()

    async def _signals(self) -> None:
        """SIGTERM, SIGINT, SIGHUP: end the session (close() then unmounts)."""
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                log.info("%s: unmounting", signal.Signals(signum).name)
                pyfuse3.terminate()
                return

    def close(self) -> None:
        """Unmount if the mount at our mountpoint is still ours, and free the session."""
        m = find_mount(self.parts.opts.mountpoint)
        ours = m is not None and (self.dev is None or m.dev == self.dev)
        pyfuse3.close(unmount=ours)


@contextlib.contextmanager
def _stderr_kept() -> Iterator[Callable[[], list[str]]]:
    """Keep what is written on file descriptor 2 inside the block (libfuse and the
    fusermount3 it runs say why a mount failed only there), then write it on to
    fd 2 (the log) all the same.  Yields a function giving its non-empty lines."""
    lines: list[str] = []
    with tempfile.TemporaryFile() as kept:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(kept.fileno(), 2)
        try:
            yield lambda: lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            kept.seek(0)
            data = kept.read()
            os.write(2, data)
            lines += [line.strip() for line in data.decode(errors="replace").splitlines() if line.strip()]


def _raise_readahead(dev: tuple[int, int]) -> None:
    """Let the kernel send 1 MiB reads instead of 128 KiB ones (half the round
    trips through the daemon for sequential readers).  Only root may; best effort."""
    try:
        with open(f"/sys/class/bdi/{dev[0]}:{dev[1]}/read_ahead_kb", "w") as f:
            f.write(str(READ_AHEAD_KB))
    except OSError as e:
        log.debug("kernel read-ahead left at its default: %s", e)


class LogFile(logging.handlers.WatchedFileHandler):
    """The mount's log: reopened (0600, never through a symlink) when logrotate
    has moved it away, so rotation needs neither copytruncate nor a signal."""

    def _open(self):  # type: ignore[override]
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                     0o600)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


def setup_logging(opts: MountOptions) -> str:
    """Log to the mount's log file (0600), and to stderr with --foreground (the
    journal under systemd).  --debug lowers only our own loggers (and pyfuse3's)
    to DEBUG: every other library stays at INFO, because botocore's and urllib3's
    debug output holds request headers, i.e. Authorization and
    X-Amz-Security-Token (docs/mount-semantics.md, "Errors and the log")."""
    path = log_path(opts.mountpoint)
    handlers: list[logging.Handler] = [LogFile(path, errors="backslashreplace")]  # (a name not UTF-8)
    os.chmod(path, 0o600)  # made by an older version with the umask's mode
    if opts.foreground:
        handlers.append(logging.StreamHandler(sys.stderr))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in DEBUG_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if opts.debug else logging.NOTSET)
    log.debug("debug log on for %s; other libraries stay at INFO (their debug lines hold credentials)",
              ", ".join(DEBUG_LOGGERS))
    return path


def run(opts: MountOptions, ready: Callable[[list[str]], None] = lambda notes: None) -> None:
    """Mount and serve in this process until unmounted; `ready` gets the lines to
    show the user (MountParts.notes) once it is live.  ArtifactfsError before
    the mount is live; afterwards errors are logged."""
    setup_logging(opts)
    daemon = Daemon(build(opts))
    daemon.mount()
    write_record(opts.mountpoint, pid=os.getpid(), store=daemon.parts.ctx.registry.store.url, project=opts.project)
    try:
        def announce() -> None:
            sd_notify("READY=1")
            ready(daemon.parts.notes)
        trio.run(daemon.serve, announce)
    finally:
        daemon.close()
        remove_record(opts.mountpoint, os.getpid())
        log.info("unmounted %s", opts.mountpoint)


def _background(opts_json: str, fd: int) -> int:
    """Entry of the spawned daemon: report 'ready' or one error line on fd."""
    pipe = os.fdopen(fd, "w", buffering=1)
    opts = MountOptions.from_json(opts_json)

    def ready(notes: list[str]) -> None:
        pipe.write("".join(f"{line}\n" for line in notes) + "ready\n")
        pipe.close()
    try:
        run(opts, ready)
    except ArtifactfsError as e:
        if not pipe.closed:
            pipe.write(f"error: {e}\n")
        log.error("%s", e)
        return 1
    except BaseException as e:
        log.exception("daemon failed")
        if not pipe.closed:
            pipe.write(f"error: the mount daemon failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                       f" (log: {log_path(opts.mountpoint)})\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_background(sys.argv[1], int(sys.argv[2])))

"""What every `artifactfs` command shares: the global options' context, the
error handling that turns user-facing errors into one line, and small output
helpers.  Only ArtifactfsError (docs/architecture.md, "Errors"), click's usage
errors and the user's own OSErrors become one line; anything else is a bug and
keeps its traceback."""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from ..errors import ArtifactfsError, NoStoreError, shown
from ..registry.names import Ref, check_name, split_ref

if TYPE_CHECKING:  # imported where used: `artifactfs sync` starts with this module alone (cli/__init__.py)
    from ..registry.versions import Registry, VersionInfo


@dataclass
class Ctx:
    """What the global options select: the store URL (None: default) and project."""

    store: str | None
    project: str

    @property
    def store_url(self) -> str:
        from ..store import default_store_url
        return self.store or default_store_url()

    def registry(self, create: bool = False) -> Registry:
        from ..registry.versions import Registry
        return Registry.open(self.store_url, create=create)

    def ref(self, text: str) -> Ref:
        """'[project/]name[:alias]', its project filled in with the default project;
        or a path into an artifactfs mount (mount_ref), which also selects the
        mount's store unless --store or ARTIFACTFS_STORE names one."""
        found = mount_ref(text)
        if found is not None:
            if self.store is None and not os.environ.get("ARTIFACTFS_STORE"):
                self.store = found.store
            text = found.ref
        ref = split_ref(text)
        if ref.entity is not None:
            try:
                ref.check_entity(self.entity())
            except ArtifactfsError as e:
                raise type(e)(f"{text}: {e}") from None
        return Ref(ref.project or self.project, ref.collection, ref.alias)

    def entity(self) -> str:
        """The store's name, the entity of 'entity/project/name' (the name a store
        not made yet will get: put makes it)."""
        from ..registry.checks import default_entity
        from ..registry.versions import Registry
        try:
            return Registry.open(self.store_url).entity
        except NoStoreError:
            return default_entity(self.store_url)


@dataclass(frozen=True)
class MountRef:
    ref: str    # 'project/NAME:vN' or 'project/NAME'
    store: str  # the mount's store URL


def mount_ref(text: str) -> MountRef | None:
    """What a path into an artifactfs mount names: the version of a version folder
    (through an alias link too: the version it points at now) or of anything in
    one, the collection of a collection folder; None for anything else.  From the
    folders' xattrs (docs/mount-semantics.md), so `artifactfs info
    /mnt/af/ds/ds:latest` names what the mount shows."""
    if "/" not in text:
        return None  # a plain NAME:ALIAS, even where a folder of that name is in the cwd
    from ..mount.state import FSTYPE, mounts
    real = os.path.realpath(text)
    points = [m.mountpoint for m in mounts() if m.fstype == FSTYPE]
    top = max((m for m in points if real.startswith(m.rstrip("/") + "/")), key=len, default=None)
    if top is None:
        return None

    def xattr(path: str, name: str) -> str:
        return os.getxattr(path, name).decode()
    try:
        project, store = xattr(top, "user.artifactfs.project"), xattr(top, "user.artifactfs.store")
        here = real
        while here != top:
            names = os.listxattr(here, follow_symlinks=False)
            if "user.artifact.version" in names:
                return MountRef(f"{project}/{xattr(here, 'user.artifact.name')}:"
                                f"{xattr(here, 'user.artifact.version')}", store)
            if os.path.dirname(here) == top and "user.artifact.name" in names:
                return MountRef(f"{project}/{xattr(here, 'user.artifact.name')}", store)
            here = os.path.dirname(here)
    except OSError:
        return None
    return None


class _Warnings(logging.StreamHandler):
    """`warning: MESSAGE` on stderr, unless logging is set up (a --foreground mount logs itself)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(logging.Formatter("warning: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if not logging.getLogger().handlers:
            super().emit(record)


def warnings_on_stderr(*names: str) -> None:
    """Show what loggers `names` warn about (files put leaves out, store entries
    ignored) as one `warning:` line each on stderr."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(h, _Warnings) for h in logger.handlers):
            logger.addHandler(_Warnings())


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, `timeout`, systemd stopping a job), handled as Ctrl-C is: a
    command undoes what is half-done (no partial version, no temporary file) and
    exits 128 + 15."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


class Group(click.Group):
    """Turns user-facing errors into one line and exit 1 (usage mistakes: exit 2),
    never a traceback or a screen of usage text; Ctrl-C and SIGTERM into one line
    and 128 + the signal's number.  `-h` is `--help` for every command."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["context_settings"] = {"help_option_names": ["-h", "--help"], **kwargs.get("context_settings", {})}
        super().__init__(*args, **kwargs)

    def main(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs["standalone_mode"] = False
        signal.signal(signal.SIGTERM, _terminate)
        try:
            rv = super().main(*args, **kwargs)
        except click.UsageError as e:
            hint = f" (see '{e.ctx.command_path} --help')" if e.ctx else ""
            click.echo(f"Error: {e.format_message()}{hint}", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            click.echo(f"Error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except click.exceptions.Abort as e:  # click turns Ctrl-C into Abort
            if isinstance(e.__cause__, Terminated):
                click.echo("Error: terminated", err=True)
                sys.exit(128 + signal.SIGTERM)
            if isinstance(e.__cause__, KeyboardInterrupt):
                click.echo("Error: interrupted", err=True)
                sys.exit(128 + signal.SIGINT)
            click.echo("Error: aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ArtifactfsError as e:
            raise click.ClickException(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
        except BrokenPipeError:  # `artifactfs ls | head`: click ends quietly, as cat and ls do
            raise
        except OSError as e:  # the user's files or the machine, never a bug of ours: one line
            where = f": {shown(os.fsdecode(e.filename))}" if e.filename is not None else ""
            raise click.ClickException(f"{e.strerror or e}{where}") from None


STORE_HELP = ("Store URL or path [env ARTIFACTFS_STORE; default $XDG_DATA_HOME/artifactfs/store, "
              "XDG_DATA_HOME being ~/.local/share when unset].")
PROJECT_HELP = "Project [env ARTIFACTFS_PROJECT; default 'default']."


def pass_ctx(f: Callable[..., Any]) -> Callable[..., Any]:
    """Like click.pass_obj for Ctx, and the command also takes --store and --project
    after its name (`artifactfs ls --store URL`, as users type them), overriding
    the ones given before it."""
    @click.pass_context
    def with_ctx(ctx: click.Context, *args: Any, store_here: str | None, project_here: str | None,
                 **kwargs: Any) -> Any:
        c = ctx.find_object(Ctx)
        assert c is not None, "the root group makes the Ctx"
        if store_here or project_here is not None:
            c = Ctx(store_here or c.store, c.project if project_here is None else check_name(project_here, "project"))
        return f(c, *args, **kwargs)

    with_ctx = functools.update_wrapper(with_ctx, f)
    with_ctx = click.option("--project", "project_here", metavar="NAME", default=None, help=PROJECT_HELP)(with_ctx)
    return click.option("--store", "store_here", metavar="URL", default=None, help=STORE_HELP)(with_ctx)


@contextlib.contextmanager
def progress(total: Callable[[], int], label: str) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on a terminal for transfers worth watching; nothing otherwise.
    `total` is only called on a terminal (measuring can cost a walk of a folder)."""
    if not sys.stderr.isatty():
        yield None
        return
    length = total()
    if length < 64 * 1024 * 1024:
        yield None
        return
    with click.progressbar(length=length, label=label, file=sys.stderr) as bar:
        yield bar.update


def parse_metadata(pairs: tuple[str, ...]) -> dict:
    """KEY=VALUE pairs; VALUE is read as JSON when it parses, else as a string."""
    out: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--metadata")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def dir_size(path: str) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(dirpath, f))
    return total


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@dataclass(frozen=True)
class Pinned:
    """One version named on the command line, resolved to its number."""

    registry: Registry
    project: str
    collection: str
    version: int

    @property
    def label(self) -> str:
        """COLLECTION:vN, as messages name it."""
        return f"{self.collection}:v{self.version}"

    def info(self) -> VersionInfo:
        return self.registry.version(self.project, self.collection, self.version)


def pinned(c: Ctx, ref: str) -> Pinned:
    """NAME:vN or NAME:ALIAS -> the version it names now; a NAME without one is a usage error."""
    r = c.ref(ref)
    if r.alias is None:
        raise click.BadParameter(f"{ref!r}: name a version, e.g. {r.collection}:v3", param_hint="NAME")
    reg = c.registry()
    assert r.project is not None
    return Pinned(reg, r.project, r.collection, reg.resolve(r.project, r.collection, r.alias))

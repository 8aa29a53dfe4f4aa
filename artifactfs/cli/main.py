"""The `artifactfs` command line (click).  Every ArtifactfsError, and every
mistake in what the user typed, becomes one line on stderr and exit status 1."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import click

from ..api.artifact import Artifact, default_project
from ..errors import ArtifactfsError, NotFoundError, shown
from ..registry.manifest import SymlinkEntry, walk
from ..registry.names import check_name, in_folder, split_ref
from ..registry.versions import Registry, VersionInfo
from ..store import default_store_url


@dataclass
class Ctx:
    """What the global options select: the store URL (None: default) and project."""

    store: str | None
    project: str

    @property
    def store_url(self) -> str:
        return self.store or default_store_url()

    def registry(self, create: bool = False) -> Registry:
        return Registry.open(self.store_url, create=create)

    def ref(self, ref: str) -> tuple[str, str, str | None]:
        """'[project/]name[:alias]' -> (project, name, alias) with the default project."""
        project, name, alias = split_ref(ref)
        return project or self.project, name, alias


class Group(click.Group):
    """Turns user-facing errors into one line and exit 1 (usage mistakes: exit 2),
    never a traceback or a screen of usage text."""

    def main(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs["standalone_mode"] = False
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
            if isinstance(e.__cause__, KeyboardInterrupt):
                click.echo("Error: interrupted", err=True)
                sys.exit(128 + signal.SIGINT)
            click.echo("Error: aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ArtifactfsError, ValueError) as e:
            raise click.ClickException(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
        except BrokenPipeError:  # `artifactfs ls | head`: click ends quietly, as cat and ls do
            raise
        except OSError as e:  # the user's files or the machine, never a bug of ours: one line
            where = f": {shown(os.fsdecode(e.filename))}" if e.filename is not None else ""
            raise click.ClickException(f"{e.strerror or e}{where}") from None


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--store", metavar="URL", default=None,
              help="Store URL or path [env ARTIFACTFS_STORE; default ~/.local/share/artifactfs/store].")
@click.option("--project", metavar="NAME", default=None, help="Project [env ARTIFACTFS_PROJECT; default 'default'].")
@click.option("--endpoint-url", metavar="URL", default=None,
              help="S3-compatible endpoint for s3:// stores and references [env ARTIFACTFS_S3_ENDPOINT, AWS_ENDPOINT_URL].")
@click.version_option(package_name="artifactfs")
@click.pass_context
def main(ctx: click.Context, store: str | None, project: str | None, endpoint_url: str | None) -> None:
    """Versioned ML artifacts as plain folders."""
    if endpoint_url:  # the environment carries it to the store and to a mount's daemon
        os.environ["ARTIFACTFS_S3_ENDPOINT"] = endpoint_url
    ctx.obj = Ctx(store or os.environ.get("ARTIFACTFS_STORE") or None,
                  check_name(project or default_project(), "project"))


pass_ctx = click.make_pass_decorator(Ctx)


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


@main.command()
@click.argument("args", nargs=-1, required=True, metavar="[SOURCE] NAME")
@click.option("--type", "type_", required=True, help="Artifact type, e.g. dataset or model.")
@click.option("--description", default=None)
@click.option("--metadata", multiple=True, metavar="KEY=VALUE")
@click.option("--alias", multiple=True, metavar="ALIAS")
@click.option("--tag", multiple=True, metavar="TAG")
@click.option("--follow-symlinks", is_flag=True,
              help="Store what symlinks point to (and enter linked folders) instead of the links.")
@click.option("--reference", multiple=True, metavar="URI",
              help="Add what URI names (file://, http(s)://, s3://) as references, not uploaded.")
@pass_ctx
def put(c: Ctx, args: tuple[str, ...], type_: str, description: str | None,
        metadata: tuple[str, ...], alias: tuple[str, ...], tag: tuple[str, ...], follow_symlinks: bool,
        reference: tuple[str, ...]) -> None:
    """Log the files of SOURCE (a folder or a file) and any --reference URI as the
    next version of NAME.

    Files keep their executable bit and mtime; symlinks below SOURCE are kept as
    symlinks unless --follow-symlinks.  Nothing changed: prints NAME:vN (unchanged)."""
    if len(args) > 2 or (len(args) == 1 and not reference):
        raise click.UsageError("give SOURCE NAME, or NAME with --reference URI")
    source, name = (args[0], args[1]) if len(args) == 2 else (None, args[0])
    if source is not None and not os.path.exists(source):
        raise click.BadParameter(f"{source!r} does not exist", param_hint="SOURCE")
    project, collection, given = c.ref(name)
    if given:
        raise click.BadParameter("give the collection name without ':alias'", param_hint="NAME")
    left_out = logging.StreamHandler(sys.stderr)  # fifos, sockets, devices: one line each
    left_out.setFormatter(logging.Formatter("warning: %(message)s"))
    logging.getLogger("artifactfs.put").addHandler(left_out)
    art = Artifact(collection, type_, description, parse_metadata(metadata), store=c.store_url)
    art.aliases, art.tags = list(alias), list(tag)
    if source is not None and os.path.isdir(source):
        with progress(lambda: dir_size(source), f"put {collection}") as bar:
            art.add_dir(source, progress=bar, follow_symlinks=follow_symlinks)
    elif source is not None:
        art.add_file(source)
    for uri in reference:
        art.add_reference(uri)
    art.save(project)
    click.echo(art.name if art.created else f"{art.name} (unchanged)")


@main.command()
@click.argument("name")
@click.argument("dest", type=click.Path(file_okay=False))
@click.option("--prefix", default="", metavar="PATH",
              help="Only the file PATH or the folder PATH/ (a/b: not a/b.txt).")
@pass_ctx
def get(c: Ctx, name: str, dest: str, prefix: str) -> None:
    """Download NAME[:ALIAS|:vN] into DEST (other files in DEST are left alone).

    Files get their mtime and executable bit; symlinks are made as symlinks."""
    art = _artifact(c, name)
    if prefix and not any(in_folder(p, prefix) for p in art.manifest.entries):
        raise NotFoundError(f"no file or folder {shown(prefix.strip('/'))} in {art.name}")
    with progress(lambda: art.size, f"get {art.name}") as bar:
        art._download(dest, lambda p: in_folder(p, prefix), progress=bar)
    click.echo(f"{art.name} -> {dest}", err=True)


def _artifact(c: Ctx, ref: str) -> Artifact:
    project, name, alias = c.ref(ref)
    reg = c.registry()
    return Artifact._from_version(reg, reg.get(project, name, alias))


@main.command(name="ls")
@click.argument("name", required=False)
@pass_ctx
def ls_cmd(c: Ctx, name: str | None) -> None:
    """List collections, or the versions of collection NAME."""
    reg = c.registry()
    if name is None:
        rows = [("NAME", "TYPE", "VERSIONS", "LATEST")]
        for col in reg.collections(c.project):
            vs = reg.versions(c.project, col.name)
            rows.append((col.name, col.type, str(len(vs)), f"v{vs[-1]}" if vs else "-"))
    else:
        project, coll, alias = c.ref(name)
        reg.collection(project, coll)
        numbers = [reg.resolve(project, coll, alias)] if alias else reg.versions(project, coll)
        rows = [("VERSION", "ALIASES", "TAGS", "SIZE", "FILES", "CREATED")]
        aliases = reg.aliases(project, coll)
        for n in numbers:
            v = reg.version(project, coll, n, aliases)
            rows.append((f"v{n}", ",".join(v.aliases) or "-", ",".join(v.tags) or "-", human(v.size),
                         str(v.file_count), v.created_at[:19].replace("T", " ")))
    _table(rows)


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())


def _info_dict(v: VersionInfo, c: Ctx) -> dict:
    return {
        "name": v.name, "collection": v.collection, "project": v.project, "version": f"v{v.version}",
        "type": v.type, "digest": v.digest, "size": v.size, "file_count": v.file_count,
        "aliases": v.aliases, "tags": v.tags, "description": v.description, "metadata": v.metadata,
        "ttl": v.ttl, "state": v.state, "created_at": v.created_at, "updated_at": v.updated_at,
        "commit_hash": v.commit_hash, "id": v.id, "base": None if v.base is None else f"v{v.base}",
        "store": c.store_url,
        "link": None if v.link is None else f"{v.link['project']}/{v.link['collection']}:v{v.link['version']}",
        "logged_by": None if v.run is None else v.run.get("id"),
    }


@main.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def info(c: Ctx, name: str, as_json: bool) -> None:
    """Show one version: digest, size, aliases, tags, metadata, ..."""
    project, coll, alias = c.ref(name)
    d = _info_dict(c.registry().get(project, coll, alias), c)
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    for k, v in d.items():
        if isinstance(v, (list, dict)):
            v = json.dumps(v) if isinstance(v, dict) else ",".join(v) or "-"
        click.echo(f"{k + ':':<13} {'-' if v is None else v}")


@main.command()
@click.argument("name")
@click.argument("prefix", required=False)
@pass_ctx
def files(c: Ctx, name: str, prefix: str | None) -> None:
    """List the files of a version (or of the folder PREFIX): size, digest, path
    (a symlink: 'path -> target'; names escaped as in 'a\\nb')."""
    project, coll, alias = c.ref(name)
    reg = c.registry()
    v = reg.get(project, coll, alias)
    for path, e in walk(reg, v.root):
        if in_folder(path, prefix or ""):
            link = f" -> {shown(e.target)}" if isinstance(e, SymlinkEntry) else ""
            click.echo(f"{e.size:>12}  {e.digest}  {shown(path)}{link}")


def _pinned(c: Ctx, ref: str) -> tuple[Registry, str, str, int]:
    project, coll, alias = c.ref(ref)
    if alias is None:
        raise click.BadParameter(f"{ref!r}: name a version, e.g. {coll}:v3", param_hint="NAME")
    reg = c.registry()
    return reg, project, coll, reg.resolve(project, coll, alias)


@main.group()
def alias() -> None:
    """Add or remove aliases (latest is managed automatically)."""


@alias.command(name="add")
@click.argument("name")
@click.argument("alias_name", metavar="ALIAS")
@pass_ctx
def alias_add(c: Ctx, name: str, alias_name: str) -> None:
    """Point ALIAS at version NAME:vN (moving it if it exists)."""
    reg, project, coll, n = _pinned(c, name)
    reg.set_alias(project, coll, alias_name, n)
    click.echo(f"{coll}:{alias_name} -> {coll}:v{n}")


@alias.command(name="rm")
@click.argument("name")
@click.argument("alias_name", metavar="ALIAS")
@pass_ctx
def alias_rm(c: Ctx, name: str, alias_name: str) -> None:
    """Remove ALIAS from version NAME:vN."""
    reg, project, coll, n = _pinned(c, name)
    if reg.aliases(project, coll).get(alias_name) != n:
        raise NotFoundError(f"alias {coll}:{alias_name} is not on {coll}:v{n}")
    reg.set_alias(project, coll, alias_name, None)


@main.group()
def tag() -> None:
    """Add or remove tags of a version."""


def _change_tag(c: Ctx, name: str, tag_name: str, add: bool) -> None:
    reg, project, coll, n = _pinned(c, name)
    check_name(tag_name, "tag")
    if not add and tag_name not in reg.version(project, coll, n).tags:
        raise NotFoundError(f"tag {tag_name!r} is not on {coll}:v{n}")

    def change(d: dict) -> None:
        tags = set(d["tags"])
        (tags.add if add else tags.discard)(tag_name)
        d["tags"] = sorted(tags)
    reg.update_attrs(project, coll, n, change)


@tag.command(name="add")
@click.argument("name")
@click.argument("tag_name", metavar="TAG")
@pass_ctx
def tag_add(c: Ctx, name: str, tag_name: str) -> None:
    """Add TAG to version NAME:vN."""
    _change_tag(c, name, tag_name, True)


@tag.command(name="rm")
@click.argument("name")
@click.argument("tag_name", metavar="TAG")
@pass_ctx
def tag_rm(c: Ctx, name: str, tag_name: str) -> None:
    """Remove TAG from version NAME:vN."""
    _change_tag(c, name, tag_name, False)


@main.command()
@click.argument("name")
@click.argument("directory", required=False, type=click.Path(exists=True, file_okay=False))
@pass_ctx
def verify(c: Ctx, name: str, directory: str | None) -> None:
    """Check DIRECTORY (or, without it, the stored blobs) against version NAME."""
    from ..chunks.download import read_chunk
    from ..chunks.verify import verify_dir

    art = _artifact(c, name)
    items = sorted(art.manifest.entries.items())
    if directory:
        problems = verify_dir(directory, items)
    else:
        problems = []
        reg = art._reg()
        for path, e in items:
            try:
                for i in range(len(e.chunks)):
                    read_chunk(reg, e, i, path)
            except ArtifactfsError as err:
                problems.append(f"{shown(path)}: {err}")
    for p in problems:
        click.echo(p, err=True)
    if problems:
        raise click.ClickException(f"{len(problems)} file(s) of {art.name} do not match")
    click.echo(f"{art.name}: {len(items)} files OK")


from .mount import mount_cmd, umount_cmd  # noqa: E402  (the mount helper's commands)

main.add_command(mount_cmd)
main.add_command(umount_cmd)

from .drafts import sync_cmd  # noqa: E402  (drafts: commit through a running mount)

main.add_command(sync_cmd)

from .lifecycle import COMMANDS  # noqa: E402  (link, unlink, delete, ttl, gc, lineage)

for _command in COMMANDS:
    main.add_command(_command)

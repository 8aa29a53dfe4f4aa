"""The `artifactfs` command line (click): the root group and the commands on
versions (put, get, ls, info, files, alias, tag, verify); the other modules of
this package add mount/umount, sync and the lifecycle commands.  Error handling
is cli/base.py's Group."""
from __future__ import annotations

import json
import os

import click

from ..api.artifact import Artifact, default_project
from ..api.lifecycle import default_ttl, describe_ttl
from ..errors import ArtifactfsError, NotFoundError, shown
from ..registry.manifest import SymlinkEntry, walk, walk_all
from ..registry.names import check_name, in_folder
from ..registry.versions import VersionInfo
from .base import (
    PROJECT_HELP,
    STORE_HELP,
    Ctx,
    Group,
    dir_size,
    human,
    parse_metadata,
    pass_ctx,
    pinned,
    progress,
    warnings_on_stderr,
)
from .drafts import discard_cmd, status_cmd, sync_cmd
from .lifecycle import COMMANDS
from .mount import mount_cmd, umount_cmd


@click.group(cls=Group)
@click.option("--store", metavar="URL", default=None, help=STORE_HELP)
@click.option("--project", metavar="NAME", default=None, help=PROJECT_HELP)
@click.option("--endpoint-url", metavar="URL", default=None,
              help="S3-compatible endpoint for s3:// stores and references [env ARTIFACTFS_S3_ENDPOINT, AWS_ENDPOINT_URL].")
@click.version_option(package_name="artifactfs")
@click.pass_context
def main(ctx: click.Context, store: str | None, project: str | None, endpoint_url: str | None) -> None:
    """Versioned ML artifacts as plain folders."""
    if endpoint_url:  # the environment carries it to the store and to a mount's daemon
        os.environ["ARTIFACTFS_S3_ENDPOINT"] = endpoint_url
    warnings_on_stderr("artifactfs.put", "artifactfs.registry", "artifactfs.lineage")  # files left out,
    # store entries ignored, a use not recorded
    ctx.obj = Ctx(store or os.environ.get("ARTIFACTFS_STORE") or None,
                  check_name(default_project() if project is None else project, "project"))




@main.command()
@click.argument("args", nargs=-1, required=True, metavar="[SOURCE] NAME")
@click.option("--type", "type_", required=True, help="Artifact type, e.g. dataset or model.")
@click.option("--description", default=None, metavar="TEXT", help="What this version holds.")
@click.option("--metadata", multiple=True, metavar="KEY=VALUE",
              help="A metadata entry (repeatable, at most 100 keys); VALUE is read as JSON when it parses, "
                   "else as a string: --metadata epochs=10 --metadata arch=resnet.")
@click.option("--alias", multiple=True, metavar="ALIAS",
              help="An alias on the version put (repeatable; 'latest' is set by itself).")
@click.option("--tag", multiple=True, metavar="TAG", help="A tag on the version put (repeatable).")
@click.option("--follow-symlinks", is_flag=True,
              help="Store what symlinks point to (and enter linked folders) instead of the links.")
@click.option("--reference", multiple=True, metavar="URI",
              help="Add what URI names (file://, http(s)://, s3://) as references, not uploaded.")
@pass_ctx
def put(c: Ctx, args: tuple[str, ...], type_: str, description: str | None,
        metadata: tuple[str, ...], alias: tuple[str, ...], tag: tuple[str, ...], follow_symlinks: bool,
        reference: tuple[str, ...]) -> None:
    """Log the files of SOURCE (a folder or a file) and any --reference URI as the
    next version of NAME.  NAME may be PROJECT/NAME: that project, whatever
    --project says.

    Files keep their executable bit and mtime; symlinks below SOURCE are kept as
    symlinks unless --follow-symlinks.  Content equal to the latest version logs
    nothing, as W&B does: prints NAME:vN (unchanged) and applies --alias and --tag
    to vN, but not --description or --metadata (a note on stderr says so)."""
    if len(args) > 2 or (len(args) == 1 and not reference):
        raise click.UsageError("give SOURCE NAME, or NAME with --reference URI")
    source, name = (args[0], args[1]) if len(args) == 2 else (None, args[0])
    if source is not None and not os.path.exists(source):
        raise click.BadParameter(f"{source!r} does not exist", param_hint="SOURCE")
    ref = c.ref(name)
    project, collection = ref.project, ref.collection
    if ref.alias:
        raise click.BadParameter("give the collection name without ':alias'", param_hint="NAME")
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
    kept = [what for what, given, now in (("description", description, art.description),
                                           ("metadata", metadata and parse_metadata(metadata), art.metadata))
            if given and given != now]
    if kept:
        click.echo(f"note: {art.name} keeps its {' and '.join(kept)}: content equal to it logs no new "
                   f"version; change a logged version's with Api().artifact('{project}/{art.name}'), "
                   "set .description or .metadata, then .save()", err=True)


prefix_option = click.option("--prefix", default="", metavar="PATH",
                             help="Only the file PATH or the folder PATH/ (a/b: not a/b.txt).")


def _check_prefix(art: Artifact, prefix: str) -> None:
    """NotFoundError unless the version has the file or folder `prefix` ('' : the whole version)."""
    if prefix and not any(in_folder(p, prefix) for p, _ in walk_all(art._reg(), art._need_logged("get").root)):
        raise _no_such_path(prefix, art.name)


@main.command()
@click.argument("name")
@click.argument("dest", type=click.Path(file_okay=False))
@prefix_option
@pass_ctx
def get(c: Ctx, name: str, dest: str, prefix: str) -> None:
    """Download NAME[:ALIAS|:vN] into DEST (other files in DEST are left alone).

    Files get their mtime and executable bit; symlinks are made as symlinks."""
    art = _artifact(c, name)
    _check_prefix(art, prefix)
    with progress(lambda: art.size, f"get {art.name}") as bar:
        art._download(dest, lambda p: in_folder(p, prefix), progress=bar)
    click.echo(f"{art.name} -> {dest}", err=True)


def _no_such_path(prefix: str, label: str) -> NotFoundError:
    return NotFoundError(f"no file or folder {shown(prefix.strip('/'))} in {label}")


def _artifact(c: Ctx, ref: str) -> Artifact:
    r = c.ref(ref)
    reg = c.registry()
    return Artifact._from_version(reg, reg.get(r.project, r.collection, r.alias))


@main.command(name="ls")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True,
              help="Machine-readable output: a JSON list of collections (name, type, versions, latest), "
                   "or of versions as `info --json` gives each.")
@pass_ctx
def ls_cmd(c: Ctx, name: str | None, as_json: bool) -> None:
    """List collections, or the versions of collection NAME."""
    reg = c.registry()
    if name is None:
        found = []
        for col in reg.collections(c.project):
            vs = reg.versions(c.project, col.name)
            found.append({"name": col.name, "type": col.type, "versions": len(vs),
                          "latest": f"v{vs[-1]}" if vs else None})
        if not found:
            others = ", ".join(p for p in reg.projects() if p != c.project)
            click.echo(f"project {c.project!r} has no collections"
                       f"{f' (projects in this store: {others})' if others else ''}", err=True)
        if as_json:
            click.echo(json.dumps(found, indent=2))
            return
        rows = [("NAME", "TYPE", "VERSIONS", "LATEST")]
        rows += [(f["name"], f["type"], str(f["versions"]), f["latest"] or "-") for f in found]
    else:
        r = c.ref(name)
        project, coll = r.project, r.collection
        reg.collection(project, coll)
        infos = [reg.get(project, coll, r.alias)] if r.alias else reg.version_infos(project, coll)
        if as_json:
            click.echo(json.dumps([_info_dict(v, c) for v in infos], indent=2))
            return
        rows = [("VERSION", "ALIASES", "TAGS", "SIZE", "FILES", "CREATED")]
        for v in infos:
            rows.append((f"v{v.version}", ",".join(v.aliases) or "-", ",".join(v.tags) or "-", human(v.size),
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
@click.option("--json", "as_json", is_flag=True,
              help="Machine-readable output; ttl in seconds (-1: never expires, null: the project's default).")
@pass_ctx
def info(c: Ctx, name: str, as_json: bool) -> None:
    """Show one version: digest, size, aliases, tags, metadata, ttl (as `ttl` takes it), ..."""
    r = c.ref(name)
    reg = c.registry()
    v = reg.get(r.project, r.collection, r.alias)
    d = _info_dict(v, c)
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    d["ttl"] = describe_ttl(v.ttl, default_ttl(reg, v.project) if v.ttl is None else None)
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
    r = c.ref(name)
    reg = c.registry()
    v = reg.get(r.project, r.collection, r.alias)
    found = False
    for path, e in walk(reg, v.root):
        if in_folder(path, prefix or ""):
            found = True
            link = f" -> {shown(e.target)}" if isinstance(e, SymlinkEntry) else ""
            click.echo(f"{e.size:>12}  {e.digest}  {shown(path)}{link}")
    if prefix and not found:
        raise _no_such_path(prefix, v.name)


@main.group()
def alias() -> None:
    """Add or remove aliases (latest is managed automatically)."""


@alias.command(name="add")
@click.argument("name")
@click.argument("alias_name", metavar="ALIAS")
@pass_ctx
def alias_add(c: Ctx, name: str, alias_name: str) -> None:
    """Point ALIAS at version NAME:vN (moving it if it exists)."""
    v = pinned(c, name)
    v.registry.set_alias(v.project, v.collection, alias_name, v.version)
    click.echo(f"{v.collection}:{alias_name} -> {v.label}")


@alias.command(name="rm")
@click.argument("name")
@click.argument("alias_name", metavar="ALIAS")
@pass_ctx
def alias_rm(c: Ctx, name: str, alias_name: str) -> None:
    """Remove ALIAS from version NAME:vN."""
    v = pinned(c, name)
    if v.registry.aliases(v.project, v.collection).get(alias_name) != v.version:
        raise NotFoundError(f"alias {v.collection}:{alias_name} is not on {v.label}")
    v.registry.set_alias(v.project, v.collection, alias_name, None)


@main.group()
def tag() -> None:
    """Add or remove tags of a version."""


def _change_tag(c: Ctx, name: str, tag_name: str, add: bool) -> None:
    v = pinned(c, name)
    check_name(tag_name, "tag")
    if not add and tag_name not in v.info().tags:
        raise NotFoundError(f"tag {tag_name!r} is not on {v.label}")

    def change(d: dict) -> None:
        tags = set(d["tags"])
        (tags.add if add else tags.discard)(tag_name)
        d["tags"] = sorted(tags)
    v.registry.update_attrs(v.project, v.collection, v.version, change)


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
@prefix_option
@pass_ctx
def verify(c: Ctx, name: str, directory: str | None, prefix: str) -> None:
    """Check DIRECTORY (or, without it, the stored blobs) against version NAME
    (with --prefix, against what `get --prefix` downloads)."""
    from ..chunks.download import read_chunk
    from ..chunks.verify import verify_dir

    art = _artifact(c, name)
    _check_prefix(art, prefix)
    items = sorted((p, e) for p, e in art.manifest.entries.items() if in_folder(p, prefix))
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


for _command in (mount_cmd, umount_cmd, sync_cmd, status_cmd, discard_cmd, *COMMANDS):  # cli/mount.py, cli/drafts.py, cli/lifecycle.py
    main.add_command(_command)

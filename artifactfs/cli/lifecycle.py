"""CLI commands for what happens to a version after it is logged: link, unlink,
delete, ttl, gc and lineage (registered into the group in cli.py)."""
from __future__ import annotations

import json

import click

from ..api import gc as gc_mod
from ..api import lineage as lineage_mod
from ..api import links
from ..api.lifecycle import (
    HasAliasesError,
    default_ttl,
    format_duration,
    parse_duration,
    set_default_ttl,
    set_ttl,
)
from ..registry.runinfo import RunRecord
from .base import Ctx, human, pass_ctx, pinned


@click.command()
@click.argument("name")
@click.argument("target")
@click.option("--alias", "aliases", multiple=True, metavar="ALIAS", help="An alias in the portfolio (repeatable).")
@pass_ctx
def link(c: Ctx, name: str, target: str, aliases: tuple[str, ...]) -> None:
    """Link version NAME:vN into portfolio TARGET: PORTFOLIO, PROJECT/PORTFOLIO,
    ENTITY/PROJECT/PORTFOLIO or model-registry/MODEL."""
    v = pinned(c, name)
    dest_project, portfolio = links.parse_target(v.registry, target, v.project)
    made = links.link(v.registry, v.info(), dest_project, portfolio, list(aliases))
    click.echo(f"{dest_project}/{made.name} -> {v.project}/{v.label}")


@click.command()
@click.argument("name")
@pass_ctx
def unlink(c: Ctx, name: str) -> None:
    """Remove link PORTFOLIO:vN (the source version stays)."""
    v = pinned(c, name)
    links.unlink(v.registry, v.info())


@click.command()
@click.argument("name")
@click.option("--delete-aliases", is_flag=True, help="Remove the version's aliases too (else refused while it has any).")
@pass_ctx
def delete(c: Ctx, name: str, delete_aliases: bool) -> None:
    """Delete version NAME:vN (a link: only the link).  Its files are freed by `gc`."""
    v = pinned(c, name)
    try:
        links.delete(v.registry, v.info(), delete_aliases)
    except HasAliasesError as e:
        raise click.ClickException(e.hint("--delete-aliases")) from None
    click.echo(f"{v.label} deleted")


@click.command()
@click.argument("name", required=False)
@click.argument("duration", required=False)
@click.option("--default", "project_default", metavar="DURATION",
              help="Set the project's default TTL (e.g. 90d, or none).")
@pass_ctx
def ttl(c: Ctx, name: str | None, duration: str | None, project_default: str | None) -> None:
    """Set the TTL of version NAME:vN: DURATION such as 30d, 12h, 2w; 'none' (never
    expires, even with a project default) or 'inherit' (the project's default).
    `gc` deletes expired versions."""
    reg = c.registry()
    if project_default is not None:
        set_default_ttl(reg, c.project, parse_duration(project_default))
    if name is None:
        if project_default is None:
            raise click.UsageError("give NAME:vN DURATION, or --default DURATION")
        seconds = default_ttl(reg, c.project)
        click.echo(f"project {c.project}: default TTL {'none' if seconds is None else format_duration(seconds)}")
        return
    if duration is None:
        raise click.UsageError("missing DURATION (e.g. 30d, none or inherit)")
    v = pinned(c, name)
    if duration.strip().lower() == "inherit":
        set_ttl(v.registry, v.project, v.collection, v.version, None, inherit=True)
    else:
        set_ttl(v.registry, v.project, v.collection, v.version, parse_duration(duration))


@click.command(name="gc")
@click.option("--dry-run", is_flag=True, help="Only report what would be deleted and freed.")
@click.option("--grace", default="1h", show_default=True, metavar="DURATION",
              help="Keep unreferenced objects younger than this (writers not yet committed).")
@click.option("--keep-deleted", default="1d", show_default=True, metavar="DURATION",
              help="Keep the files of deleted versions this long after deletion (open readers, drafts).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@pass_ctx
def gc_cmd(c: Ctx, dry_run: bool, grace: str, keep_deleted: str, as_json: bool) -> None:
    """Delete expired versions, then the blobs and trees no live version, draft
    base or in-flight commit refers to.  Safe while others commit."""
    report = gc_mod.collect(c.registry(), dry_run=dry_run, grace=_seconds(grace),
                            keep_deleted=_seconds(keep_deleted))
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
        return
    verb = "would free" if dry_run else "freed"
    for name in report.expired:
        click.echo(f"{'would delete' if dry_run else 'deleted'} (expired): {name}")
    click.echo(f"{verb} {report.blobs} blobs and {report.trees} trees, {human(report.bytes)}; "
               f"kept {report.young} unreferenced objects younger than {grace}")
    if report.temporaries:
        click.echo(f"removed {report.temporaries} temporary files of writes that never finished")


def _seconds(text: str) -> float:
    """A gc period: a duration, where 0 (or 0s, 0h...) means none."""
    seconds = parse_duration(text, zero=True, never=False)
    assert seconds is not None, "never=False"
    return seconds


def _run_line(run: RunRecord) -> str:
    ids = " ".join(f"{k}={v}" for k, v in run.run_ids.items())
    step = f" step {run.step}" if run.step is not None else ""
    return (f"run {run.id} {run.user}@{run.host} pid {run.pid} started {run.started_at or '?'}{step}"
            f"{' ' + ids if ids else ''}: {run.program or '?'}")


@click.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def lineage(c: Ctx, name: str, as_json: bool) -> None:
    """Show who produced version NAME and who used it."""
    r = c.ref(name)
    reg = c.registry()
    info = reg.get(r.project, r.collection, r.alias)
    source = links.source_of(reg, info)
    producer = lineage_mod.logged_by(source)
    uses = lineage_mod.uses(reg, info)
    if as_json:
        click.echo(json.dumps({
            "name": f"{info.project}/{info.name}", "source": f"{source.project}/{source.name}",
            "logged_by": producer.to_json() if producer else None,
            "used_by": [{"run": u.run.to_json(), "at": u.at, "via": u.via, "path": u.path} for u in uses],
        }, indent=2))
        return
    click.echo(f"{info.project}/{info.name}" + (f" (link to {source.project}/{source.name})" if info.link else ""))
    click.echo(f"  logged by: {_run_line(producer) if producer else 'unknown'}")
    click.echo(f"  used by: {len(uses)} run(s)")
    for u in uses:
        click.echo(f"    {u.at[:19].replace('T', ' ')} via {u.via}: {_run_line(u.run)}")


COMMANDS = (link, unlink, delete, ttl, gc_cmd, lineage)

"""`mount.artifactfs`: the helper mount(8) runs for `-t artifactfs` and for
/etc/fstab lines like

    s3://bucket/prefix  /mnt/af  artifactfs  project=vision,cache_size=50G,_netdev  0 0

mount(8) calls `mount.artifactfs SOURCE MOUNTPOINT [-sfnv] [-o OPTIONS]` (and
`mount.fuse.artifactfs`, the same program, for `-t fuse.artifactfs`, the type
/proc/mounts shows); the options become `artifactfs mount` flags: each flag
of `artifactfs mount` spelled with '_' (`cache_size=50G`, `send_opens`), `ro`,
and `endpoint=URL` (`--endpoint-url`).  Generic mount options that concern
mount(8) or systemd, not us, are ignored."""
from __future__ import annotations

import sys

ALIASES = {"ro": "read_only"}  # mount(8)'s spelling
NOT_FROM_FSTAB = {"foreground", "store"}  # the source is the store; mount(8) must get its prompt back
GLOBAL = {"endpoint_url": "--endpoint-url", "endpoint": "--endpoint-url"}  # options of `artifactfs` itself
IGNORED = {"default_permissions",  # always on (docs/mount-semantics.md); fuse fstab lines often carry it
           "rw", "defaults", "auto", "noauto", "user", "users", "nouser", "nofail", "_netdev", "nodev",
           "nosuid", "dev", "suid", "exec", "noexec", "atime", "noatime", "relatime", "async", "sync"}


def mount_options() -> tuple[dict[str, str], dict[str, str]]:
    """(option=value -> flag, option -> flag) of `artifactfs mount`, spelled with
    '_' as fstab does (`cache_size=50G`, `send_opens`): every option of the command
    line, so that the two never drift apart."""
    import click

    from .mount import mount_cmd
    valued, flags = {}, {}
    for param in mount_cmd.params:
        if isinstance(param, click.Option):
            flag = max(param.opts, key=len)
            key = flag.lstrip("-").replace("-", "_")
            if key not in NOT_FROM_FSTAB:
                (flags if param.is_flag else valued)[key] = flag
    return valued, flags


def translate(source: str, mountpoint: str, options: str) -> list[str]:
    """The `artifactfs` command line for one fstab entry; ValueError for an unknown option."""
    valued, flags = mount_options()
    before, args = ["--store", source], ["mount"]
    for opt in filter(None, options.split(",")):
        key, sep, value = opt.partition("=")
        key = ALIASES.get(key, key)
        if key in GLOBAL and sep:
            before += [GLOBAL[key], value]
        elif key in valued and sep:
            args += [valued[key], value]
        elif key in flags and not sep:
            args.append(flags[key])
        elif not (key in IGNORED or key == "comment" or key.startswith("x-")):
            raise ValueError(f"mount.artifactfs: unknown option {opt!r}")
    return before + args + [mountpoint]


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    options, positional, fake = "", [], False
    while argv:
        arg = argv.pop(0)
        if arg == "-o" and argv:
            options = ",".join(filter(None, [options, argv.pop(0)]))
        elif arg.startswith("-o") and len(arg) > 2:
            options = ",".join(filter(None, [options, arg[2:]]))
        elif arg.startswith("-"):
            fake = fake or "f" in arg[1:]  # -f (fake): check everything, mount nothing (mount(8))
            continue  # -s (sloppy), -n (no mtab), -v (verbose): nothing to do
        else:
            positional.append(arg)
    if len(positional) != 2:
        print("usage: mount.artifactfs STORE MOUNTPOINT [-o OPTIONS]", file=sys.stderr)
        sys.exit(1)
    try:
        args = translate(positional[0], positional[1], options)
    except ValueError as e:
        print(e, file=sys.stderr)
        sys.exit(1)
    if fake:
        return
    from .main import main as cli
    cli(args)


if __name__ == "__main__":
    main()

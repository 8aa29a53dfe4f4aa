"""`mount.artifactfs`: the helper mount(8) runs for `-t artifactfs` and for
/etc/fstab lines like

    s3://bucket/prefix  /mnt/af  artifactfs  project=vision,cache_size=50G,_netdev  0 0

mount(8) calls `mount.artifactfs SOURCE MOUNTPOINT [-sfnv] [-o OPTIONS]`; the
options become `artifactfs mount` flags.  Generic mount options that concern
mount(8) or systemd, not us, are ignored."""
from __future__ import annotations

import sys

# option=value -> flag
VALUED = {"project": "--project", "cache_dir": "--cache-dir", "cache_size": "--cache-size",
          "memory": "--memory", "inode_limit": "--inode-limit", "threads": "--threads", "refresh": "--refresh",
          "default_type": "--default-type"}
FLAGS = {"ro": "--read-only", "allow_other": "--allow-other", "debug": "--debug"}
IGNORED = {"rw", "defaults", "auto", "noauto", "user", "users", "nouser", "nofail", "_netdev", "nodev",
           "nosuid", "dev", "suid", "exec", "noexec", "atime", "noatime", "relatime", "async", "sync"}


def translate(source: str, mountpoint: str, options: str) -> list[str]:
    """The `artifactfs` command line for one fstab entry; ValueError for an unknown option."""
    args = ["--store", source, "mount"]
    for opt in filter(None, options.split(",")):
        key, sep, value = opt.partition("=")
        if key in VALUED and sep:
            args += [VALUED[key], value]
        elif key in FLAGS and not sep:
            args.append(FLAGS[key])
        elif not (key in IGNORED or key.startswith(("x-", "comment="))):
            raise ValueError(f"mount.artifactfs: unknown option {opt!r}")
    return args + [mountpoint]


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

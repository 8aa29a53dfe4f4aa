#!/bin/sh
# Build pyfuse3 with artifactfs.patch and install it into the venv of PYTHON (`make setup`, `make install`).
#
# The patch (artifactfs/mount/noopen.py, docs/mount-semantics.md "Opens"):
# - handlers of READ/WRITE/FLUSH/RELEASE/FSYNC get the inode when the kernel sends no file
#   handle (the mount then serves files without OPEN), and
#   Operations.enable_atomic_o_trunc = False keeps O_TRUNC a SETATTR;
# - Operations.enable_cache_symlinks = True lets the kernel cache symlink targets;
# - one native thread reads /dev/fuse (src/pyfuse3/fastpath.c): it answers IOCTL, and
#   GETXATTR of names starting with Operations.enodata_xattr_prefix, and GETATTR of inodes
#   whose last reply gave an attribute timeout >= Operations.native_attr_timeout, without
#   Python, and queues every other request for the trio workers.
# The source is the pinned sdist from the package index, regenerated with a pinned Cython
# in a throw-away build venv.  Nothing is done when PYTHON already has this build.
#
#   sh third_party/pyfuse3/build.sh .venv/bin/python
set -eu
PY=$1
VERSION=3.5.0
CYTHON=3.2.4
LOCAL=artifactfs.7  # bump when artifactfs.patch changes
here=$(cd "$(dirname "$0")" && pwd)

if "$PY" -c "import sys; from importlib.metadata import version; sys.exit(version('pyfuse3') != '$VERSION+$LOCAL')" 2>/dev/null; then
    exit 0
fi
echo "== building pyfuse3 $VERSION with third_party/pyfuse3/artifactfs.patch (about a minute)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" -m pip download -q --no-binary :all: --no-deps -d "$work" "pyfuse3==$VERSION"
tar -xzf "$work/pyfuse3-$VERSION.tar.gz" -C "$work"
src="$work/pyfuse3-$VERSION"
patch -s -d "$src" -p1 < "$here/artifactfs.patch"
rm -f "$src/src/pyfuse3/__init__.c"  # generated again from the patched sources
"$PY" -m venv "$work/venv"
"$work/venv/bin/pip" install -q "cython==$CYTHON" "setuptools>=78.1.1" "setuptools_scm>=8"
SETUPTOOLS_SCM_PRETEND_VERSION="$VERSION+$LOCAL" \
    "$work/venv/bin/pip" wheel -q --no-build-isolation --no-deps -w "$work/wheel" "$src"
"$PY" -m pip install -q --no-deps --force-reinstall "$work"/wheel/pyfuse3-*.whl

#!/bin/sh
# Build pyfuse3 with artifactfs.patch and install it into the venv of PYTHON (`make setup`, `make install`).
#
# The patch (artifactfs/mount/noopen.py, docs/mount-semantics.md "Opens"):
# - handlers of READ/WRITE/FLUSH/RELEASE/FSYNC get the inode when the kernel sends no file
#   handle (the mount then serves files without OPEN), and
#   Operations.enable_atomic_o_trunc = False keeps O_TRUNC a SETATTR;
# - Operations.enable_cache_symlinks = True lets the kernel cache symlink targets;
# - native threads read /dev/fuse (src/pyfuse3/fastpath.c): they answer IOCTL, GETXATTR
#   of names starting with Operations.enodata_xattr_prefix, GETATTR of inodes whose last
#   reply gave an attribute timeout >= Operations.native_attr_timeout, and READ of files
#   registered with fastpath_register (read from a local file and checked against its
#   XXH3-128), without Python, and queue every other request for the trio workers;
# - with Operations.native_open_pinned, those threads also answer OPEN of regular files
#   whose attributes are pinned (EROFS for write access, else fh = the inode) and the
#   RELEASE of such handles (src/pyfuse3/fastopen.c);
# - the requests read from /dev/fuse are counted by opcode and by who answered them
#   (pyfuse3.fastpath_request_counts(); src/pyfuse3/fastcount.c).
# The source is the pinned sdist from the package index, regenerated with a pinned Cython
# in a throw-away build venv; xxhash.h (XXH3-128 in C, header-only) comes from the pinned
# sdist of the xxhash package.  Nothing is done when PYTHON already has this build.
#
#   sh third_party/pyfuse3/build.sh .venv/bin/python
set -eu
PY=$1
VERSION=3.5.0
CYTHON=3.2.4
XXHASH=4.1.0  # only its xxhash.h is used
LOCAL=artifactfs.17  # bump when artifactfs.patch changes
here=$(cd "$(dirname "$0")" && pwd)

if "$PY" -c "import sys; from importlib.metadata import version; sys.exit(version('pyfuse3') != '$VERSION+$LOCAL')" 2>/dev/null; then
    exit 0
fi
echo "== building pyfuse3 $VERSION with third_party/pyfuse3/artifactfs.patch (about a minute)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" -m pip download -q --no-binary :all: --no-deps -d "$work" "pyfuse3==$VERSION"
"$PY" -m pip download -q --no-binary :all: --no-deps -d "$work" "xxhash==$XXHASH"
tar -xzf "$work/pyfuse3-$VERSION.tar.gz" -C "$work"
tar -xzf "$work/xxhash-$XXHASH.tar.gz" -C "$work" "xxhash-$XXHASH/deps/xxhash/xxhash.h"
src="$work/pyfuse3-$VERSION"
patch -s -d "$src" -p1 < "$here/artifactfs.patch"
rm -f "$src/src/pyfuse3/__init__.c"  # generated again from the patched sources
"$PY" -m venv "$work/venv"
"$work/venv/bin/pip" install -q "cython==$CYTHON" "setuptools>=78.1.1" "setuptools_scm>=8"
CFLAGS="${CFLAGS:-} -I$work/xxhash-$XXHASH/deps/xxhash" SETUPTOOLS_SCM_PRETEND_VERSION="$VERSION+$LOCAL" \
    "$work/venv/bin/pip" wheel -q --no-build-isolation --no-deps -w "$work/wheel" "$src"
"$PY" -m pip install -q --no-deps --force-reinstall "$work"/wheel/pyfuse3-*.whl

# `make demo` and `make test` each run `make setup` first: they work on a fresh Debian machine.
# Debian packages, by what needs them (installed only when missing, without recommends):
#   RUN:   running artifactfs (fuse3) and building pyfuse3 into the venv (patched: third_party/pyfuse3)
#   TEST:  what the tests use besides (getfattr, rsync); `make setup` installs RUN and TEST
#   CHECK: only `make test`: systemd-analyze, for the check of systemd/artifactfs@.service
#   BENCH: only `make bench`: the peers the benchmarks compare with
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
RUN_PACKAGES := fuse3 libfuse3-dev pkg-config gcc python3-dev python3-venv patch
TEST_PACKAGES := attr rsync unzip git
CHECK_PACKAGES := systemd
BENCH_PACKAGES := rclone s3fs bindfs

# `make install` (as root): the CLI in its own venv, linked where the unit and mount(8) look.
INSTALL_VENV ?= /opt/artifactfs
PYTHON3 ?= python3  # the Python the installed venv is made from (every user must be able to run it)
BINDIR ?= /usr/local/bin
SBINDIR ?= /sbin
UNITDIR ?= /etc/systemd/system

# $(call apt,PACKAGES): install those not installed yet, showing apt's progress.
define apt
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "== installing Debian packages:$$missing (about a minute on a fresh machine)"; \
		$(SUDO) apt-get update -q && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
endef

.PHONY: setup demo test bench install uninstall clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile third_party/pyfuse3/build.sh third_party/pyfuse3/artifactfs.patch
	$(call apt,$(RUN_PACKAGES) $(TEST_PACKAGES))
	@echo "== creating $(VENV) and installing the Python packages (about 2 minutes the first time)"
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	sh third_party/pyfuse3/build.sh $(PY)
	$(PY) -m pip install --progress-bar off -e '.[test]'
	touch $@

demo: setup
	PATH="$(abspath $(VENV))/bin:$$PATH" bash demo/demo.sh

test: setup
	$(call apt,$(CHECK_PACKAGES))
	$(PY) -m pytest -q

bench: setup
	$(call apt,$(BENCH_PACKAGES))
	$(PY) bench/run_all.py

install:
	$(call apt,$(RUN_PACKAGES))
	test -x $(INSTALL_VENV)/bin/python || $(SUDO) $(PYTHON3) -m venv $(INSTALL_VENV)
	$(SUDO) sh third_party/pyfuse3/build.sh $(INSTALL_VENV)/bin/python
	$(SUDO) $(INSTALL_VENV)/bin/python -m pip install -q --upgrade '.[s3]'
	$(SUDO) install -d $(BINDIR) $(SBINDIR) $(UNITDIR)
	$(SUDO) ln -sfn $(INSTALL_VENV)/bin/artifactfs $(BINDIR)/artifactfs
	$(SUDO) ln -sfn $(INSTALL_VENV)/bin/mount.artifactfs $(SBINDIR)/mount.artifactfs
	$(SUDO) ln -sfn $(INSTALL_VENV)/bin/mount.artifactfs $(SBINDIR)/mount.fuse.artifactfs
	$(SUDO) sh -c "sed 's|/usr/local/bin/artifactfs|$(BINDIR)/artifactfs|g' systemd/artifactfs@.service \
		> $(UNITDIR)/artifactfs@.service && chmod 0644 $(UNITDIR)/artifactfs@.service"
	@if [ -d /run/systemd/system ] && [ "$(UNITDIR)" = /etc/systemd/system ]; then $(SUDO) systemctl daemon-reload; fi
	@echo "== installed $(BINDIR)/artifactfs, $(SBINDIR)/mount.artifactfs (and mount.fuse.artifactfs), $(UNITDIR)/artifactfs@.service"
	@$(INSTALL_VENV)/bin/python -c 'import os, sys; p = os.path.realpath(sys.executable); d = [x for x in \
		[p] + [os.path.dirname(p)[:i] or "/" for i, c in enumerate(os.path.dirname(p) + "/") if c == "/"] \
		if not os.stat(x).st_mode & 0o001]; d and print(f"warning: other users cannot run artifactfs: its " \
		f"Python {p} is in {d[-1]}, which only its owner may enter; PYTHON3=/usr/bin/python3 make install " \
		"builds on a Python every user can run", file=sys.stderr)'

uninstall:
	$(SUDO) rm -f $(BINDIR)/artifactfs $(SBINDIR)/mount.artifactfs $(SBINDIR)/mount.fuse.artifactfs \
		$(UNITDIR)/artifactfs@.service
	$(SUDO) rm -rf $(INSTALL_VENV)

clean:
	rm -rf $(VENV) build *.egg-info

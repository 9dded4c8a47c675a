# qdisk: make install | make test | make test-fast | make test-pve9 | make deb | make test-deb | make demo
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := qemu-utils qemu-system-x86 qemu-system-common qemu-block-extra fio chromium debootstrap \
  libcrypt-openssl-rsa-perl libdigest-sha-perl liburi-perl
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install system-packages test test-fast test-pve9 pve9-suite deb test-deb demo lint typecheck bench clean

install: system-packages $(VENV)/.installed

# QEMU (qemu-block-extra: its iscsi and rbd drivers) and fio from Debian, venv support for a
# bare Debian python3 (python3-venv), debootstrap for test-pve9's Debian 13 root, and the Perl
# modules Proxmox VE signs its tickets with (tests/access holds qdisk to them).
system-packages:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	$(PYTHON) -c 'import ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

# Re-run pip only when the project's metadata changes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

lint: install
	$(BIN)/ruff check src tests packaging/tests

typecheck: install
	$(BIN)/mypy

test: install lint typecheck
	$(BIN)/pytest

# The tests not marked qemu (they start no QEMU tool): a quicker edit-test loop.
test-fast: install
	$(BIN)/pytest -m "not qemu"

# Proxmox VE 9's platform: the suite inside a Debian 13 root (Python 3.13, QEMU 10.0) that
# .ci/pve9-root makes once in .pve9/ and reuses, with its own venv (.venv-pve9). Lint and
# mypy do not depend on the platform: `make test` runs them.
# QDISK_PVE9_RELEASE=bookworm-backports: Debian 12 with QEMU 10.0 from backports instead.
test-pve9: system-packages
	.ci/pve9-root ensure
	.ci/pve9-root run $(MAKE) --no-print-directory VENV=.venv-pve9$(if $(QDISK_PVE9_RELEASE),-$(QDISK_PVE9_RELEASE)) pve9-suite

# Inside the root only: .ci/pve9-root installed its Debian packages.
pve9-suite: $(VENV)/.installed
	$(BIN)/pytest

# The Debian packages (dist/qdisk_<version>_all.deb and python3-qemu.qmp), built with
# dpkg-buildpackage in a Debian 13 build root made from .ci/pve9-root's pristine base.
deb: system-packages
	packaging/build-debs dist

# The packages installed with apt into a fresh Debian 13 root, as on a Proxmox VE node.
test-deb: deb
	packaging/test-deb dist

# The demo keeps its VMs and images under scratch/ unless QDISK_HOME is set.
demo: install
	QDISK_HOME="$${QDISK_HOME:-$(CURDIR)/scratch/home}" $(BIN)/qdisk demo

# Benchmarks are kept out of `make test`.
bench: install
	$(BIN)/python benchmarks/image_info.py

clean:
	rm -rf --one-file-system $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .hypothesis

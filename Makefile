# synch — run `make demo` or `make test` on a fresh Debian machine (as root, or with sudo).
PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
# Debian packages the lab, the tests and the demo use (Asterisk itself lives in a cached sid chroot):
# every tool a test runs, so that none is missing on a fresh machine. procps: sysctl; systemd:
# systemd-analyze; openssh-client: ssh-keygen; e2fsprogs, dosfstools, mtools, fdisk: the image
# assembly test (mkfs.ext4, mkfs.vfat, mcopy/mdir, sfdisk); baresip-core, linphone-cli: the real
# SIP phones of the test bed (lab/softphones.py); util-linux: setpriv, which runs them, and
# nsenter; lintian and systemd-container (systemd-nspawn): the Debian package test.
DEB_PACKAGES := debootstrap sip-tester dnsmasq-base prometheus dnsutils iproute2 netcat-openbsd \
                git curl python3-venv nftables dnsperf openssl procps systemd openssh-client \
                e2fsprogs dosfstools mtools fdisk baresip-core linphone-cli util-linux \
                lintian systemd-container
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# $(call apt-install,PACKAGES[,APT-GET OPTIONS]): installs those of PACKAGES that are missing, so
# it is quick on a machine that has everything. Used by `deps` and Makefile.image's `image-deps`.
define apt-install
@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
   | grep -q 'ok installed' || echo $$p; done); \
if [ -n "$$missing" ]; then echo "installing:" $$missing; \
  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive \
  $(SUDO) apt-get install -y -q $(2) $$missing; fi
endef

.PHONY: setup deps lab test test-fast lint demo bench wheel deb clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

deps:
	$(call apt-install,$(DEB_PACKAGES))

# The Debian sid chroot with Asterisk 22, built once and cached outside the work tree.
lab: deps setup
	$(SUDO) $(PY) -m lab build

lint: setup
	$(VENV)/bin/ruff check synch lab tests bench packaging
	$(VENV)/bin/mypy

test: deps setup lab lint
	$(SUDO) $(VENV)/bin/pytest -q tests

test-fast: setup
	$(VENV)/bin/pytest -q tests/unit

demo: deps setup lab
	$(SUDO) $(PY) -m lab.demo

bench: deps setup lab
	$(SUDO) $(PY) -m bench

wheel: setup
	$(PY) -m pip wheel -q --no-deps -w dist .

# dist/synch_VERSION_ARCH.deb and dist/synch-appliance_VERSION_all.deb (packaging/deb/build.py).
# DEB_ARCH=arm64 for the Raspberry Pi image; DEB_REVISION: the Debian revision.
DEB_ARCH     ?= $(shell dpkg --print-architecture)
DEB_REVISION ?= 1
deb: setup
	$(PY) packaging/deb/build.py --arch $(DEB_ARCH) --revision $(DEB_REVISION) --out dist

clean:
	rm -rf $(VENV) dist build *.egg-info .pytest_cache .mypy_cache .ruff_cache

-include Makefile.image
-include Makefile.fuzz

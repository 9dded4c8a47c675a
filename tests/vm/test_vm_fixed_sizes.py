"""qemu-server's fixed sizes for new EFI vars and TPM state disks, and a machine type the
installed QEMU lacks refused when it is set (issue 19, row 14)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from cli_helpers import RunQdisk

pytestmark = pytest.mark.qemu

IMAGES = Path("storage/local/images/100")


def _config(vm_home: Path) -> dict[str, str]:
    text = (vm_home / "qemu-server/100.conf").read_text()
    return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)


@pytest.mark.parametrize(("efidisk", "expected", "size"), [
    ("local:1,efitype=4m", "local:100/vm-100-disk-0.raw,efitype=4m,size=528K", 540672),
    ("local:1,efitype=4m,pre-enrolled-keys=1,ms-cert=2023k",
     "local:100/vm-100-disk-0.raw,efitype=4m,ms-cert=2023k,pre-enrolled-keys=1,size=528K", 540672),
    # efitype's default is 2m; the GiB count is ignored (qemu-server's GUI sends 1, 0 works).
    ("local:0", "local:100/vm-100-disk-0.raw,size=128K", 131072),
    ("local:4,format=qcow2", "local:100/vm-100-disk-0.qcow2,size=128K", 131072),
])
def test_an_efi_disk_gets_the_size_of_its_ovmf_vars(vm_home: Path, run_qdisk: RunQdisk,
                                                    efidisk: str, expected: str, size: int) -> None:
    created = run_qdisk("vm", "create", "100", "--efidisk0", efidisk)
    assert created.exit_code == 0, created.stderr
    assert _config(vm_home)["efidisk0"] == expected
    image = vm_home / IMAGES / expected.split(",")[0].rsplit("/", 1)[1]
    info = subprocess.run(["qemu-img", "info", "--output=json", str(image)], check=True,
                          capture_output=True, text=True).stdout
    assert json.loads(info)["virtual-size"] == size


@pytest.mark.parametrize("tpmstate", ["local:1", "local:1,format=qcow2,version=v2.0", "local:0"])
def test_a_tpm_state_is_a_raw_4_mib_image(vm_home: Path, run_qdisk: RunQdisk,
                                          tpmstate: str) -> None:
    created = run_qdisk("vm", "create", "100", "--tpmstate0", tpmstate)
    assert created.exit_code == 0, created.stderr
    value = _config(vm_home)["tpmstate0"]
    assert value.startswith("local:100/vm-100-disk-0.raw,") and ",size=4M" in f"{value},"
    assert (vm_home / IMAGES / "vm-100-disk-0.raw").stat().st_size == 4 * 2**20


def _an_installed_i440fx_machine() -> str:
    listing = subprocess.run(["qemu-system-x86_64", "-machine", "help"], check=True,
                             capture_output=True, text=True).stdout
    return next(line.split()[0] for line in listing.splitlines() if line.startswith("pc-i440fx-"))


def test_a_machine_type_the_installed_qemu_lacks_is_refused_when_set(
        vm_home: Path, run_qdisk: RunQdisk) -> None:
    assert run_qdisk("vm", "create", "100", "--memory", "64").exit_code == 0
    before = (vm_home / "qemu-server/100.conf").read_text()
    for machine in ("pc-q35-99.0", "pc-i440fx-99.1+pve0", "pc-q35-99.0,viommu=intel"):
        refused = run_qdisk("vm", "set", "100", "--machine", machine)
        assert refused.exit_code == 2, refused
        family = "q35" if "q35" in machine else "i440fx"
        assert (f"machine: the installed QEMU (qemu-system-x86_64) has no machine type "
                f"'{machine.split(',')[0].split('+')[0]}' (its newest of the kind is pc-{family}-"
                ) in refused.stderr
    refused = run_qdisk("vm", "create", "101", "--machine", "pc-q35-99.0")
    assert refused.exit_code == 2 and "has no machine type 'pc-q35-99.0'" in refused.stderr
    assert (vm_home / "qemu-server/100.conf").read_text() == before
    assert not (vm_home / "qemu-server/101.conf").exists()
    installed = _an_installed_i440fx_machine()
    for machine in ("q35", "pc", f"{installed}+pve0",
                    f"{installed.replace('i440fx', 'q35')},viommu=intel"):
        changed = run_qdisk("vm", "set", "100", "--machine", machine)
        assert changed.exit_code == 0, (machine, changed.stderr)

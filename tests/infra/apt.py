"""Debian packages the tests need, installed with ``apt-get`` when missing (CI runs as root).

Every install of the session takes one machine-wide lock: two test workers running ``apt-get``
at once would fail on dpkg's own lock.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from filelock import FileLock

APT_LOCK = Path(tempfile.gettempdir()) / "floe-tests-apt.lock"
INSTALL_TIMEOUT = 900


class AptInstallError(RuntimeError):
    """apt-get is missing or failed; the message holds its output."""


def apt_install(packages: Sequence[str], *, recommends: bool = False) -> None:
    """``apt-get update`` then ``apt-get install -y packages``, under the machine-wide lock."""
    apt = shutil.which("apt-get")
    if apt is None:
        raise AptInstallError(f"{' '.join(packages)} missing and there is no apt-get to install it")
    # Slim Debian images drop the man directories; the JRE's postinst links into man1.
    Path("/usr/share/man/man1").mkdir(parents=True, exist_ok=True)
    install = [apt, "install", "-y", "-qq", *([] if recommends else ["--no-install-recommends"])]
    with FileLock(str(APT_LOCK)):
        for command in ([apt, "update", "-qq"], [*install, *packages]):
            done = subprocess.run(
                command,
                env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT,
                check=False,
            )
            if done.returncode != 0:
                raise AptInstallError(
                    f"`{' '.join(command)}` failed ({done.returncode}):\n"
                    f"{done.stdout[-2000:]}{done.stderr[-2000:]}"
                )

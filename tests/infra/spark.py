"""What a local Spark session with Iceberg needs, made ready once and reused across runs.

- a Java runtime, Debian's ``jarjar`` and Debian's PostgreSQL JDBC driver: installed with
  ``apt-get`` when missing (CI runs as root on Debian with only Python and pip);
- ``pyspark`` and the Iceberg Spark runtime jar from PyPI (``pip install -e '.[spark]'``);
- the runtime jar from PyPI lacks its shaded Jackson: pyspark's own Jackson jars, relocated
  with ``jarjar`` to ``org.apache.iceberg.shaded.com.fasterxml.jackson``, fill the gap. The
  relocated jar is built once into :func:`cache_dir` and reused by later runs.

Anything that cannot be made ready raises :class:`SparkSetupError` with what to do.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

from infra.apt import AptInstallError, apt_install

JACKSON_RULE = "rule com.fasterxml.jackson.** org.apache.iceberg.shaded.com.fasterxml.jackson.@1"
JARJAR_JAR = Path("/usr/share/java/jarjar.jar")
POSTGRES_JDBC_JAR = Path("/usr/share/java/postgresql.jar")
_JACKSON_MODULES = ("jackson-annotations", "jackson-core", "jackson-databind")
# Debian package -> the file that shows it is installed.
_SYSTEM_PACKAGES = {
    "openjdk-17-jre-headless": None,  # `java` on PATH
    "libjarjar-java": JARJAR_JAR,
    "libpostgresql-jdbc-java": POSTGRES_JDBC_JAR,
}


class SparkSetupError(RuntimeError):
    """Spark cannot run here; the message says what is missing and how to provide it."""


def cache_dir() -> Path:
    """``$FLOE_TEST_CACHE/spark`` or ``~/.cache/floe-dagster-iceberg/spark``."""
    root = os.environ.get("FLOE_TEST_CACHE") or Path.home() / ".cache" / "floe-dagster-iceberg"
    path = Path(root) / "spark"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """An exclusive lock across processes (test workers set up at the same time)."""
    with open(cache_dir() / f"{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _missing_system_packages() -> list[str]:
    missing = []
    for package, marker in _SYSTEM_PACKAGES.items():
        present = shutil.which("java") is not None if marker is None else marker.exists()
        if not present:
            missing.append(package)
    return missing


def ensure_system_packages() -> None:
    """Install the Java runtime, jarjar and the PostgreSQL JDBC driver with apt-get if missing."""
    with _locked("apt"):
        missing = _missing_system_packages()
        if not missing:
            return
        if shutil.which("apt-get") is None or os.geteuid() != 0:
            raise SparkSetupError(
                f"Spark tests need the Debian packages {' '.join(missing)}; install them "
                f"(apt-get install -y {' '.join(missing)}) or run the tests as root on Debian."
            )
        try:
            apt_install(missing, recommends=True)
        except AptInstallError as error:
            raise SparkSetupError(str(error)) from None
        still = _missing_system_packages()
        if still:
            raise SparkSetupError(f"apt-get installed {missing} but {still} are still missing.")


def pyspark_home() -> Path:
    try:
        import pyspark
    except ImportError as error:
        raise SparkSetupError(
            "pyspark is not installed: pip install -e '.[spark]' (the test extra has it)."
        ) from error
    return Path(pyspark.__file__).parent


def iceberg_runtime_jar() -> Path:
    """The Iceberg Spark 3.5 runtime jar (Scala 2.12, as pyspark 3.5) shipped on PyPI."""
    try:
        import snowpark_connect_deps_iceberg
    except ImportError as error:
        raise SparkSetupError(
            "snowpark-connect-deps-iceberg (the Iceberg Spark runtime jar) is not installed: "
            "pip install -e '.[spark]'."
        ) from error
    jars = Path(snowpark_connect_deps_iceberg.__file__).parent / "jars"
    found = sorted(jars.glob("iceberg-spark-runtime-3.5_2.12-*.jar"))
    if not found:
        raise SparkSetupError(f"No iceberg-spark-runtime-3.5_2.12 jar in {jars}.")
    return found[-1]


def _jackson_jars() -> list[Path]:
    jars = pyspark_home() / "jars"
    found = []
    for module in _JACKSON_MODULES:
        matches = sorted(jars.glob(f"{module}-2.*.jar"))
        if not matches:
            raise SparkSetupError(f"pyspark ships no {module} jar in {jars}.")
        found.append(matches[-1])
    return found


def _merge_for_relocation(jars: list[Path], target: Path) -> None:
    """One jar of the classes of ``jars``, without multi-release copies and module-info:
    jarjar would relocate a versioned copy onto its base class (a duplicate entry)."""
    seen: set[str] = set()
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as merged:
        for jar in jars:
            with zipfile.ZipFile(jar) as source:
                for entry in source.infolist():
                    name = entry.filename
                    if (
                        name in seen
                        or entry.is_dir()
                        or name.startswith("META-INF/")
                        or name.endswith("module-info.class")
                    ):
                        continue
                    seen.add(name)
                    merged.writestr(entry, source.read(entry))


def relocated_jackson_jar() -> Path:
    """pyspark's Jackson relocated where the Iceberg runtime expects its shaded copy; built
    with jarjar on first use and cached (keyed by the Jackson jars' names)."""
    sources = _jackson_jars()
    key = "-".join(jar.stem for jar in sources)
    target = cache_dir() / f"iceberg-shaded-{key}.jar"
    if target.exists():
        return target
    with _locked("jackson"):
        if target.exists():
            return target
        with tempfile.TemporaryDirectory(dir=cache_dir()) as work:
            merged = Path(work) / "jackson.jar"
            rules = Path(work) / "rules.txt"
            relocated = Path(work) / "relocated.jar"
            _merge_for_relocation(sources, merged)
            rules.write_text(JACKSON_RULE + "\n")
            done = subprocess.run(
                [
                    "java",
                    "-jar",
                    str(JARJAR_JAR),
                    "process",
                    str(rules),
                    str(merged),
                    str(relocated),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0 or not relocated.exists():
                raise SparkSetupError(
                    f"jarjar could not relocate Jackson ({done.returncode}):\n"
                    f"{(done.stdout + done.stderr)[-3000:]}"
                )
            os.replace(relocated, target)
    return target


def spark_jars() -> list[str]:
    """Every jar a local Spark session with Iceberg on a PostgreSQL JDBC catalog needs,
    installing and building what is missing."""
    ensure_system_packages()
    return [str(iceberg_runtime_jar()), str(relocated_jackson_jar()), str(POSTGRES_JDBC_JAR)]

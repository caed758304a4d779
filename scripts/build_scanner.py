"""Build the optional compiled relay scanner (src/pgwarden/wire_proxy/_scan.pyx) in place.

Run by ``make`` after the virtualenv is set up. Nothing depends on it: without Cython or a C compiler the
wire proxy uses the pure-Python scanner, which the tests exercise as well. Rebuilds only when the .pyx is
newer than the built module. Exit status 0 either way; what happened is printed.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src" / "pgwarden" / "wire_proxy" / "_scan.pyx"


def main() -> int:
    built = SOURCE.with_name("_scan" + (sysconfig.get_config_var("EXT_SUFFIX") or ".so"))
    if built.exists() and built.stat().st_mtime >= SOURCE.stat().st_mtime:
        return 0
    try:
        import Cython  # noqa: F401  (a dev dependency: pyproject.toml)
    except ImportError:
        print("Cython is not installed: the pure-Python relay scanner is used", file=sys.stderr)
        return 0
    try:
        subprocess.run([sys.executable, "-m", "cython", "-3", str(SOURCE)], check=True, timeout=300)
        c_file = SOURCE.with_suffix(".c")
        include = sysconfig.get_paths()["include"]
        cc = sysconfig.get_config_var("CC") or "cc"
        cmd = [*cc.split(), "-shared", "-fPIC", "-O2", f"-I{include}", str(c_file), "-o", str(built)]
        subprocess.run(cmd, check=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"the compiled relay scanner was not built ({exc}); the pure-Python scanner is used", file=sys.stderr)
        return 0
    print(f"built {built.relative_to(SOURCE.parents[3])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

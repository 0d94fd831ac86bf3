"""Print where an installed wheel put a file, for CMake's find_package.

The oneDNN and oneTBB wheels install their headers, libraries and CMake configs
as wheel *data* (into <prefix>/include and <prefix>/lib), and pip's isolated
build environments use an overlay prefix that sysconfig does not report. The
wheel's RECORD is the one reliable source, so we ask importlib.metadata.

usage: python wheel_paths.py DIST SUFFIX  ->  prints the directory holding the first
file of DIST whose path ends with SUFFIX (exit 1 when absent).
"""
import sys
from importlib import metadata


def main() -> int:
    dist_name, suffix = sys.argv[1], sys.argv[2]
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        return 1
    for f in dist.files or []:
        if str(f).replace("\\", "/").endswith(suffix):
            print(str(dist.locate_file(f).resolve().parent))
            return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())

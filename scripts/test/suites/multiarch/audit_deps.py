#!/usr/bin/env python3
"""The dependency list that `cargo auditable` embeds in a binary, read back.

cargo auditable stores the crates a binary was built from as zlib-compressed
JSON in the ELF section `.dep-v0`; image scanners (Trivy, Grype) and
`cargo audit bin` read it there. This reads it the same way, for ELF files of
any architecture (32 or 64 bit, little endian), with the standard library only.

Usage: audit_deps.py BINARY          prints "name version [kind]" per crate
       audit_deps.py --json BINARY   prints the embedded JSON
Exits 1 when the binary has no `.dep-v0` section.
"""

import json
import struct
import sys
import zlib


def section(path, wanted):
    """The bytes of the ELF section named `wanted`, or None."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[5] != 1:
        raise SystemExit(f"{path}: not a little-endian ELF file")
    if data[4] == 2:  # ELFCLASS64
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
        header = "<IIQQQQIIQQ"
    else:  # ELFCLASS32
        shoff, = struct.unpack_from("<I", data, 0x20)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x2E)
        header = "<IIIIIIIIII"

    def entry(i):
        name, _type, _flags, _addr, offset, size, *_ = struct.unpack_from(header, data, shoff + i * shentsize)
        return name, offset, size

    _, names_offset, _ = entry(shstrndx)
    for i in range(shnum):
        name, offset, size = entry(i)
        end = data.index(b"\0", names_offset + name)
        if data[names_offset + name:end].decode() == wanted:
            return data[offset:offset + size]
    return None


def main(argv):
    as_json = len(argv) == 3 and argv[1] == "--json"
    if len(argv) != 2 and not as_json:
        print("usage: audit_deps.py [--json] BINARY", file=sys.stderr)
        return 2
    path = argv[-1]
    raw = section(path, ".dep-v0")
    if raw is None:
        print(f"{path}: no .dep-v0 section (not built with cargo auditable)", file=sys.stderr)
        return 1
    deps = json.loads(zlib.decompress(raw))
    if as_json:
        print(json.dumps(deps, indent=1))
        return 0
    for package in deps["packages"]:
        kind = package.get("kind", "runtime")
        print(f"{package['name']} {package['version']} {kind}{' root' if package.get('root') else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

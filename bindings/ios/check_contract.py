#!/usr/bin/env python3
"""The Swift bindings' contract, checked without a Swift compiler.

The generated FitEdge.swift refuses to run unless the library's UniFFI contract version and the
checksum of every exported function match the values it was generated with. This script reads
those expected values out of FitEdge.swift and calls the same functions in the built library
(through ctypes), so a library that no longer matches the committed Swift fails CI here, as it
would fail at app start on a phone.

It also checks that every function the C header declares exists in the library.

usage: check_contract.py FitEdge.swift FitEdgeFFI.h libfitedge_ffi.so
"""
import ctypes
import re
import sys


def main(swift_path, header_path, lib_path):
    swift = open(swift_path, encoding="utf-8").read()
    header = open(header_path, encoding="utf-8").read()
    lib = ctypes.CDLL(lib_path)
    problems = []
    declared = sorted(set(re.findall(r"^[A-Za-z_][\w ]*?\**\s*((?:uniffi|ffi)_\w+)\(", header, re.M)))
    if not declared:
        problems.append("no functions found in the header")
    for fn in declared:
        if not hasattr(lib, fn):
            problems.append(f"{fn}: declared in the header, missing from the library")
    m = re.search(r"let bindings_contract_version = (\d+).*?let scaffolding_contract_version = (\w+)\(\)", swift, re.S)
    if not m:
        problems.append("no contract version found in the Swift file")
    else:
        expected, fn = int(m.group(1)), m.group(2)
        f = getattr(lib, fn)
        f.restype = ctypes.c_uint32
        got = f()
        if got != expected:
            problems.append(f"contract version: Swift expects {expected}, library has {got}")
    checks = re.findall(r"if \((uniffi_\w+_checksum_\w+)\(\) != (\d+)\)", swift)
    if not checks:
        problems.append("no checksums found in the Swift file")
    for fn, expected in checks:
        try:
            f = getattr(lib, fn)
        except AttributeError:
            problems.append(f"{fn}: missing from the library")
            continue
        f.restype = ctypes.c_uint16
        got = f()
        if got != int(expected):
            problems.append(f"{fn}: Swift expects {expected}, library has {got}")
    if problems:
        print("swift contract: MISMATCH\n  " + "\n  ".join(problems))
        return 1
    print(f"swift contract: version, {len(checks)} checksums and {len(declared)} header functions match")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))

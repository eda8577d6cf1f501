#!/usr/bin/env python3
"""Writes startup.ld: the functions a Lambda binary runs from its start to its first
poll of the Runtime API, placed together at the head of its code (see README.md).

    order.py <startup.ld> <binary> <trace> [<binary> <trace> ...]

<binary> is a release build with its symbols (not stripped), <trace> what
`valgrind --tool=lackey --trace-superblocks=yes` logged while it started (trace.py). The
functions are written in the order first run by the first binary given that runs them,
each binary's own ones after those of the binaries before it. Each function
becomes a pattern on its section's name (`-ffunction-sections`, rustc's default) with
its hash left out, so the script still applies after the code changes and to other
targets (the arm64 packages). A pattern that would match several functions of more than
64 KiB in all in the binary (the instances of one generic function, whose types only the hash
tells apart) is left out, as it would pull in code that is not run.
"""

import bisect
import re
import subprocess
import sys

# valgrind maps a position-independent executable at this address
VALGRIND_BASE = 0x108000
# a pattern matching several functions of more bytes than this in all (the instances of
# a generic function used at start and elsewhere) is left out
MOST_BYTES = 64 * 1024

LEGACY_HASH = re.compile(r"17h[0-9a-f]{16}E(\.llvm\.\d+)?$")
V0_CRATE = re.compile(r"Cs[0-9A-Za-z]+_")
LLVM_SUFFIX = re.compile(r"\.llvm\.\d+$")
AWS_LC_VERSION = re.compile(r"^aws_lc_\d+_\d+_\d+_")


def pattern(symbol):
    """The symbol's name with what changes from build to build written as `*`: the hash,
    the suffix LLVM gives the copies of a function it renames (which build has one differs
    from build to build and target to target), crates' disambiguators, aws-lc's version.

    >>> pattern("_ZN5tokio7runtime7builder7Builder18new_current_thread17h0123456789abcdefE")
    '_ZN5tokio7runtime7builder7Builder18new_current_thread17h*E*'
    >>> pattern("_ZN4core3ptr42drop_in_place$LT$alloc..string..String$GT$17ha08a1c71880ce7daE.llvm.1478")
    '_ZN4core3ptr42drop_in_place$LT$alloc..string..String$GT$17h*E*'
    >>> pattern("_RNvNtCsjrHSEGnQ3l9_3std2rt19lang_start_internal")
    '_RNvNtCs*_3std2rt19lang_start_internal'
    >>> pattern("_RNvCsfLfy6EI15iL_7___rustc13___rdl_dealloc.llvm.123")
    '_RNvCs*_7___rustc13___rdl_dealloc*'
    >>> pattern("aws_lc_0_47_0_OPENSSL_cpuid_setup")
    'aws_lc_*_OPENSSL_cpuid_setup'
    >>> pattern("main")
    'main'
    """
    if LEGACY_HASH.search(symbol):
        return LEGACY_HASH.sub("17h*E*", symbol)
    name = V0_CRATE.sub("Cs*_", symbol) if symbol.startswith("_R") else symbol
    name = AWS_LC_VERSION.sub("aws_lc_*_", name)
    return LLVM_SUFFIX.sub("*", name)


def functions(binary):
    """(address, size, name) of the binary's functions, by address."""
    out = subprocess.run(
        ["nm", "--defined-only", "-S", binary], capture_output=True, text=True, check=True
    ).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[2] in "tTwW":
            found.append((int(fields[0], 16), int(fields[1], 16), fields[3]))
    found.sort()
    return found


def entry(binary):
    out = subprocess.run(["readelf", "-h", binary], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"Entry point address:\s+0x([0-9a-f]+)", out).group(1), 16)


def started(binary, trace):
    """The patterns of the functions the trace ran, in the order first run."""
    table = functions(binary)
    starts = [f[0] for f in table]
    sizes, counts, names = {}, {}, {}
    for address, size, name in table:
        sizes[pattern(name)] = sizes.get(pattern(name), 0) + size
        counts[pattern(name)] = counts.get(pattern(name), 0) + 1
        # a function's aliases (functions merged as identical) name its section too
        names.setdefault(address, []).append(name)
    addresses = []
    with open(trace) as lines:
        for line in lines:
            if line.startswith("SB "):
                addresses.append(int(line.split()[1], 16) - VALGRIND_BASE)
    if entry(binary) not in addresses:
        sys.exit(f"{trace}: {binary}'s entry point is not in it (not run at {VALGRIND_BASE:#x}?)")
    seen, order, wide = set(), [], 0
    for address in addresses:
        i = bisect.bisect_right(starts, address) - 1
        if i < 0 or not table[i][0] <= address < table[i][0] + table[i][1]:
            continue
        for name in map(pattern, names[table[i][0]]):
            if name in seen:
                continue
            seen.add(name)
            if counts[name] > 1 and sizes[name] > MOST_BYTES:
                wide += 1
            else:
                order.append(name)
    print(f"{binary}: {len(order)} functions at start ({wide} generic ones left out)")
    return order


def main():
    out, pairs = sys.argv[1], sys.argv[2:]
    if not pairs or len(pairs) % 2:
        sys.exit(__doc__)
    order, seen = [], set()
    for binary, trace in zip(pairs[::2], pairs[1::2]):
        for name in started(binary, trace):
            if name not in seen:
                seen.add(name)
                order.append(name)
    with open(out, "w") as script:
        script.write(
            "/* The functions the Lambda binaries run at start, placed together at the head\n"
            "   of their code: fewer pages to fault in at a cold start. Written by\n"
            "   tools/startup-order/record.sh; see tools/startup-order/README.md. */\n"
            "SECTIONS\n{\n  .text.startup_order :\n  {\n"
        )
        for name in order:
            # LLVM puts the functions it deems cold (error paths) under `.text.unlikely.`
            script.write(f"    *(.text.{name} .text.unlikely.{name})\n")
        script.write("  }\n}\nINSERT BEFORE .text;\n")
    print(f"{out}: {len(order)} patterns")


if __name__ == "__main__":
    main()

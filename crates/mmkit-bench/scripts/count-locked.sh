#!/usr/bin/env bash
# Counts how often each locked instruction (and mfence/xchg) of a binary
# runs: a gdb breakpoint on every one of them, then one run. Used to check
# that the queue's common path executes none per message:
#
#   cargo build --release -p mmkit-queue --example append_only
#   crates/mmkit-bench/scripts/count-locked.sh target/release/examples/append_only 20000
#
# Prints the most-hit instructions with their functions. Needs gdb and
# objdump; the binary runs under gdb, so it is slow.
set -euo pipefail
bin=$1
shift
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
objdump -d -C --no-show-raw-insn "$bin" | awk '
    /^[0-9a-f]+ <.*>:$/ { fn = substr($0, index($0, "<")); next }
    /\t(lock |mfence|xchg )/ { a = $1; sub(":", "", a); print a, fn }
' > "$work/insns"
{
    echo "set pagination off"
    echo "set disable-randomization on"
    echo "starti"
    while read -r addr _; do
        # The program is position-independent; gdb loads it at this base
        # with address randomization off.
        printf 'break *(0x555555554000+0x%s)\ncommands\nsilent\ncontinue\nend\n' "$addr"
    done < "$work/insns"
    echo "continue"
    echo "info breakpoints"
} > "$work/cmds"
gdb -q -batch -x "$work/cmds" --args "$bin" "$@" > "$work/out" 2>&1 || true
echo "$(wc -l < "$work/insns") locked instructions; the most executed:"
python3 - "$work/out" "$work/insns" <<'PY'
import re, sys
base = 0x555555554000
names = {int(a, 16): f for a, f in (l.split(maxsplit=1) for l in open(sys.argv[2]))}
hits, addr = [], None
for line in open(sys.argv[1]):
    m = re.match(r"^\d+\s+breakpoint\s+\S+\s+\S+\s+(0x[0-9a-f]+)", line)
    if m:
        addr = int(m.group(1), 16) - base
    m = re.search(r"already hit (\d+) time", line)
    if m and addr is not None:
        hits.append((int(m.group(1)), names.get(addr, "?").strip()))
for n, f in sorted(hits, reverse=True)[:10]:
    print(n, f)
PY

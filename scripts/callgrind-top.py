#!/usr/bin/env python3
"""Where the instructions of a callgrind dump went, by function.

`callgrind_annotate` attributes every instruction to `clone` on the dumps
`pixelpass-bench whep-fanout --callgrind` leaves (its counters are zeroed
mid-run with `callgrind_control`); the file itself is fine. This reads it:

  scripts/callgrind-top.py self DUMP [N]         the N functions with the
                                                 most instructions of their own
  scripts/callgrind-top.py callers DUMP NAME     who calls functions whose name
                                                 contains NAME, and what those
                                                 calls cost (inclusive)
  scripts/callgrind-top.py calls DUMP SUFFIX...  calls and inclusive
                                                 instructions of the functions
                                                 whose name ends with SUFFIX

A dump: `valgrind --tool=callgrind --callgrind-out-file=DUMP
pixelpass-bench whep-fanout --peers 10 --bitrate 1000 --synthetic
--callgrind --client-exe PATH --seconds 8 --json`. Only the `Ir` event
(the default) is read.
"""

import collections
import re
import sys

NAME = re.compile(r"\((\d+)\)(?:\s+(.*))?")


class Dump:
    """Self cost per function, and per (caller, callee): calls and inclusive cost."""

    def __init__(self, path):
        self.self_cost = collections.Counter()
        self.calls = collections.Counter()
        self.inclusive = collections.Counter()
        names = {}

        def name(field):
            # Compressed names: "(id) name" the first time, "(id)" after.
            m = NAME.match(field)
            if not m:
                return field
            ident, text = m.groups()
            if text:
                names[ident] = text
            return names.get(ident, ident)

        fn = callee = None
        call_line_next = False
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.rstrip("\n")
                if line.startswith("fn="):
                    fn = name(line[3:])
                elif line.startswith("cfn="):
                    callee = name(line[4:])
                elif line.startswith("calls="):
                    self.calls[(fn, callee)] += int(line[6:].split()[0])
                    call_line_next = True
                elif line[:1].isdigit() or line[:1] in "+-*":
                    parts = line.split()
                    try:
                        cost = int(parts[1]) if len(parts) > 1 else 0
                    except ValueError:
                        continue  # not a cost line: not a callgrind dump
                    if call_line_next:
                        # The line after calls= is the call's inclusive cost.
                        self.inclusive[(fn, callee)] += cost
                        call_line_next = False
                    elif fn is not None:
                        self.self_cost[fn] += cost

    def total(self):
        return sum(self.self_cost.values())


def main(argv):
    if len(argv) < 3 or argv[1] not in ("self", "callers", "calls"):
        sys.stderr.write(__doc__)
        return 2
    try:
        dump = Dump(argv[2])
    except OSError as e:
        sys.stderr.write(f"callgrind-top: cannot read the dump {argv[2]}: {e}\n")
        return 1
    total = dump.total()
    if total == 0:
        sys.stderr.write(f"callgrind-top: {argv[2]} holds no instruction counts (is it a callgrind dump?)\n")
        return 1
    if argv[1] == "self":
        n = int(argv[3]) if len(argv) > 3 else 40
        for fn, cost in dump.self_cost.most_common(n):
            print(f"{cost:>14,} {100 * cost / total:6.2f}%  {fn}")
        print(f"{total:>14,} total")
    elif argv[1] == "callers":
        if len(argv) < 4:
            sys.stderr.write("callgrind-top callers: which function? (part of its name)\n")
            return 2
        rows = [(k, c) for k, c in dump.inclusive.items() if argv[3] in (k[1] or "")]
        for (caller, callee), cost in sorted(rows, key=lambda r: -r[1])[:25]:
            print(f"{cost:>14,} {dump.calls[(caller, callee)]:>10,} calls  {caller} -> {callee}")
    else:
        per = collections.defaultdict(lambda: [0, 0])
        for (_, callee), n in dump.calls.items():
            per[callee][0] += n
        for (_, callee), cost in dump.inclusive.items():
            per[callee][1] += cost
        for suffix in argv[3:]:
            for callee, (n, cost) in per.items():
                if (callee or "").endswith(suffix):
                    print(f"{n:>10,} calls {cost:>14,} inclusive {cost // max(n, 1):>9,} per call  {callee}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

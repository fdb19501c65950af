"""Print the import circles of the project: groups of modules that import each other in a loop.

    python tools/import_cycles.py            # every circle, its modules and the imports that tie it
    python tools/import_cycles.py --count    # the number alone
    python tools/import_cycles.py --type-checking   # `if TYPE_CHECKING:` imports counted too

The graph is grimp's (the library import-linter uses): every `import` statement of erudite_edge, export,
train and benchmarks, imports inside functions included, `if TYPE_CHECKING:` imports left out (they never
run) unless --type-checking (a circle hidden under TYPE_CHECKING still ties the two modules together). A circle is a strongly connected group of two or more modules (Tarjan's algorithm). Exit code 0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grimp

PACKAGES = ("erudite_edge", "export", "train", "benchmarks")


def import_graph(type_checking: bool = False) -> grimp.ImportGraph:
    """The import graph of PACKAGES; `type_checking`: `if TYPE_CHECKING:` imports count too."""
    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    return grimp.build_graph(*PACKAGES, include_external_packages=False, exclude_type_checking_imports=not type_checking)


def circles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected groups of two or more modules, each sorted, largest first."""
    modules = sorted(graph.modules)
    succ = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in modules:  # iterative Tarjan: deep packages would overflow Python's recursion limit
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            recurse = False
            for j in range(i, len(succ[node])):
                nxt = succ[node][j]
                if nxt not in index:
                    work.append((node, j + 1))
                    work.append((nxt, 0))
                    recurse = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if recurse:
                continue
            if low[node] == index[node]:
                group = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    group.append(m)
                    if m == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return sorted(found, key=lambda g: (-len(g), g))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", action="store_true", help="print the number of circles only")
    parser.add_argument("--type-checking", action="store_true", help="count `if TYPE_CHECKING:` imports too")
    args = parser.parse_args(argv)
    graph = import_graph(type_checking=args.type_checking)
    found = circles(graph)
    if args.count:
        print(len(found))
        return 0
    print(f"{len(found)} import circle(s) among {len(graph.modules)} modules of {', '.join(PACKAGES)}")
    for n, group in enumerate(found, 1):
        print(f"circle {n}: {len(group)} modules")
        members = set(group)
        for m in group:
            for other in sorted(graph.find_modules_directly_imported_by(m) & members):
                lines = sorted({d["line_number"] for d in graph.get_import_details(importer=m, imported=other)})
                print(f"  {m} -> {other} (line {', '.join(map(str, lines))})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

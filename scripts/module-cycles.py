#!/usr/bin/env python3
"""Fails when two files of a crate import each other, directly or through others.

Cargo checks the crate graph; inside a crate nothing stops `a.rs` from using `b.rs`
while `b.rs` uses `a.rs`. This reads each crate's `src/`, takes every file as a node
(the crate root `lib.rs`, which only declares and re-exports, aside) and every path to
a module in code (`super::x`, `crate::x::y`, `self::x`, a child module's name; not in
comments, not in a file's trailing unit tests) as an edge to that module's file, and
reports each cycle.   Usage: scripts/module-cycles.py [crate dir ...] (default: crates/*)
"""
import pathlib
import re
import sys

PATH = re.compile(r"(?<![\w:])((?:super|crate|self)(?:::\w+)*|\w+)::(\{[^}]*\}|\w+|\*)")


def code(text):
    """The file's code without comments and without its unit tests (a `mod tests` at
    the end of the file, by convention here): tests may reach anywhere."""
    m = re.search(r"^#\[cfg\(test\)\]\s*\n(?:#\[[^\n]*\]\s*\n|//[^\n]*\n)*mod tests\b", text, re.M)
    if m:
        text = text[: m.start()]
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def module_path(src, f):
    parts = list(f.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def graph(src):
    files = {module_path(src, f): f for f in sorted(src.rglob("*.rs"))}
    edges = {p: set() for p in files if p}
    for here, f in files.items():
        if not here:
            continue
        text = code(f.read_text())
        children = set(re.findall(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod (\w+);", text, re.M))
        for m in PATH.finditer(text):
            head, tail = m.groups()
            segs = head.split("::")
            if segs[0] == "crate":
                base = []
            elif segs[0] == "super":
                base = list(here[:-1])
            elif segs[0] == "self":
                base = list(here)
            elif segs[0] in children:
                base = list(here) + [segs[0]]
            else:
                continue
            rest = [s for s in segs[1:] if s not in ("super", "self")]
            if segs[0] == "super":
                # `super::super::x` climbs once more per `super`.
                for s in segs[1:]:
                    if s == "super":
                        base = base[:-1]
            names = [g.strip().split("::")[0] for g in tail.strip("{}").split(",")] if tail.startswith("{") else [tail]
            for n in names:
                target = tuple(base + rest + ([n] if n and n not in ("self", "*") else []))
                # The deepest file module the path reaches.
                while target and target not in files:
                    target = target[:-1]
                if target and target != here and target in edges:
                    edges[here].add(target)
    return edges


def cycles(g):
    """Strongly connected components of more than one file (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def main():
    root = pathlib.Path(__file__).resolve().parent.parent
    crates = [pathlib.Path(a) for a in sys.argv[1:]] or sorted((root / "crates").iterdir())
    name = lambda p: "::".join(p)
    bad = 0
    for c in crates:
        src = c / "src"
        if not src.is_dir():
            continue
        g = graph(src)
        for comp in cycles(g):
            bad += 1
            detail = "; ".join(f"{name(a)} -> {', '.join(name(b) for b in sorted(g[a] & set(comp)))}" for a in comp)
            print(f"{c.name}: files import each other: {detail}")
    if bad:
        sys.exit(1)
    print(f"no import cycles between the files of {len(crates)} crates")


if __name__ == "__main__":
    main()

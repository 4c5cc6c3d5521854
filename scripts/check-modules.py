#!/usr/bin/env python3
"""Checks the shape of gateway/src (`make lint`, `make check`), as docs/architecture.md states it:

- no cycle between its top-level modules (`use crate::...` graph, test code left out): a
  producer imports a leaf, never its consumer;
- no inherent `impl` of a type outside the top-level module that defines it;
- no file over 500 lines that does not say why in its first lines ("over 500 lines: ...").

Prints each finding with where it is, and exits 1 if there is any.
"""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(__file__), "..", "gateway", "src")
# The roots of the two crates, the binary's command line (above everything), and the fuzz
# targets (which reach into every module by design).
SKIP = {"lib", "main", "cli", "fuzzing"}
MAX_LINES = 500


def top_of(rel):
    return rel.split(os.sep)[0].removesuffix(".rs")


def without_tests(text):
    """The code before `#[cfg(test)]` (test modules come last in each file), without comments
    (doc links name modules without importing them)."""
    code = re.split(r"#\[cfg\(test\)\]", text, maxsplit=1)[0]
    return re.sub(r"(^|\s)//.*$", r"\1", code, flags=re.M)


def crate_refs(text):
    """Top-level modules named by `crate::x` or inside `crate::{x, y::z}`."""
    refs = set(re.findall(r"crate::([a-z_][a-z0-9_]*)", text))
    for group in re.findall(r"crate::\{([^}]*)\}", text):
        refs.update(re.findall(r"(?:^|,)\s*([a-z_][a-z0-9_]*)", group))
    return refs


def main():
    files = {}
    for dirpath, _, names in os.walk(SRC):
        for name in names:
            if name.endswith(".rs"):
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, SRC)
                files[rel] = open(path, encoding="utf-8", errors="replace").read()
    findings = []

    # Module cycles.
    graph = {}
    for rel, text in files.items():
        top = top_of(rel)
        if top in SKIP or os.path.basename(rel) == "tests.rs":
            continue
        for m in crate_refs(without_tests(text)):
            if m != top and m not in ("now_ms", "Config", "run"):
                graph.setdefault(top, set()).add(m)
    state, stack, cycles = {}, [], []

    def visit(u):
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                cycles.append(stack[stack.index(v):] + [v])
            elif v not in state:
                visit(v)
        state[u] = 2
        stack.pop()

    for u in sorted(graph):
        if u not in state:
            visit(u)
    for c in cycles:
        findings.append("module cycle: " + " -> ".join(c))

    # Inherent impls outside the defining top-level module.
    defined = {}
    for rel, text in files.items():
        for name in re.findall(r"^\s*pub(?:\([^)]*\))?\s+(?:struct|enum|type)\s+([A-Z]\w*)|^\s*(?:struct|enum|type)\s+([A-Z]\w*)", text, re.M):
            defined.setdefault(name[0] or name[1], set()).add(top_of(rel))
    for rel, text in files.items():
        top = top_of(rel)
        code = without_tests(text)
        for m in re.finditer(r"^impl(?:<[^>]*>)?\s+([A-Z]\w*)(?:<[^{]*>)?\s*\{", code, re.M):
            name = m.group(1)
            homes = defined.get(name, set())
            if homes and top not in homes:
                line = code[: m.start()].count("\n") + 1
                findings.append(
                    f"gateway/src/{rel}:{line}: impl {name} outside its module ({', '.join(sorted(homes))})"
                )

    # Long files.
    for rel, text in sorted(files.items()):
        lines = text.count("\n")
        head = "\n".join(text.splitlines()[:15]).lower()
        if lines > MAX_LINES and "over 500 lines" not in head:
            findings.append(
                f"gateway/src/{rel}: {lines} lines; split it by concept, or say why at its top "
                f"(\"over 500 lines: ...\")"
            )

    for f in findings:
        print(f)
    if findings:
        print(f"check-modules: {len(findings)} finding(s)")
        return 1
    print(f"check-modules: {len(files)} files, {len(graph)} modules: no cycle, no impl out of place, no unexplained long file")
    return 0


if __name__ == "__main__":
    sys.exit(main())

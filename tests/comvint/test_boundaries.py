"""The domain package never imports Apache Beam."""

import ast
import pathlib

import comvint


def test_comvint_never_imports_beam():
    root = pathlib.Path(comvint.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("apache_beam", "beam_pipeline")]
    assert offenders == []

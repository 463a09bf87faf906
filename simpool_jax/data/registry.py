"""The pp-op registry and the big_vision-style spec mini-language.

A spec is `"decode|rrc(224, scale=(0.08, 1))|flip_lr|normalize('imagenet')"` or a list of such
pieces (or of ready `dict -> dict` callables). Each piece names a registered factory and gives it
Python literals; the factory returns a `dict -> dict` function that runs eagerly or in
`tf.data.Dataset.map`. Parsing goes through `ast`, so a typo is an error at build time that names
the op and lists what exists, not a failure deep inside tf.data.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Sequence
from typing import Any

Example = dict[str, Any]
Op = Callable[[Example], Example]

OPS: dict[str, Callable[..., Op]] = {}


def register(name: str) -> Callable[[Callable[..., Op]], Callable[..., Op]]:
    """Decorator: register an op factory under `name` (unique)."""

    def deco(factory: Callable[..., Op]) -> Callable[..., Op]:
        if name in OPS:
            raise ValueError(f"pp op {name!r} is registered twice")
        OPS[name] = factory
        return factory

    return deco


def parse_op(piece: str) -> tuple[str, tuple, dict]:
    """`"rrc(224, scale=(0.08, 1))"` -> `("rrc", (224,), {"scale": (0.08, 1)})`; literals only."""
    try:
        node = ast.parse(piece.strip(), mode="eval").body
    except SyntaxError as e:
        raise ValueError(f"cannot parse pp op {piece!r}: {e.msg}") from None
    if isinstance(node, ast.Name):
        return node.id, (), {}
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise ValueError(f"pp op {piece!r} must look like name or name(literal, key=literal)")
    try:
        args = tuple(ast.literal_eval(a) for a in node.args)
        kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
    except ValueError:
        raise ValueError(f"pp op {piece!r}: arguments must be Python literals") from None
    return node.func.id, args, kwargs


def get_op(piece: str | Op) -> Op:
    """Build one op from its spec piece (a callable passes through)."""
    from simpool_jax.data import ops  # noqa: F401 - importing registers the ops

    if callable(piece):
        return piece
    name, args, kwargs = parse_op(piece)
    if name not in OPS:
        raise ValueError(f"unknown pp op {name!r}; registered ops: {', '.join(sorted(OPS))}")
    try:
        return OPS[name](*args, **kwargs)
    except TypeError as e:
        raise ValueError(f"pp op {piece!r}: {e}") from None


def split_spec(spec: str | Sequence[str | Op]) -> list[str | Op]:
    """A spec string split on `|` (empty pieces dropped), or the list as given."""
    if isinstance(spec, str):
        return [p for p in (s.strip() for s in spec.split("|")) if p]
    return list(spec)


def chain(ops: Sequence[Op]) -> Op:
    """Compose ops left to right."""

    def run(data: Example) -> Example:
        for op in ops:
            data = op(data)
        return data

    return run


def get_pp(spec: str | Sequence[str | Op]) -> Op:
    """The whole preprocessing function of a spec string or list (see the module docstring)."""
    return chain([get_op(p) for p in split_spec(spec)])

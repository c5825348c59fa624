"""How a target takes its arguments, when not in the kind's order: ``--call`` is the argument
list of the call in Python syntax, with the kind's roles as its variables::

    --call "hidden_states=x, encoder_hidden_states=context, encoder_attention_mask=~context_mask"

A role passes the case's tensor (for the layer kind: ``x``, ``context``, ``context_mask``);
``~mask`` passes a bool mask inverted (True = padding, as ``nn.MultiheadAttention``'s
``key_padding_mask``); ``additive(mask)`` passes it as a float ``(B, 1, 1, L)`` mask in the
inputs' dtype, 0 = attend and ``finfo(dtype).min`` = masked (Hugging Face's extended attention
mask); ``four_d(mask)`` passes it with leading dims of 1 up to 4-D (for code that reads a 2-D
mask as ``(B, Lk)``); a Python literal passes itself (``output_attentions=False``). Every role
must be passed.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["CallMap"]

_CONVERSIONS = ("~", "additive", "four_d")


@dataclass(frozen=True)
class _Value:
    role: str | None  # None: a literal
    conversion: str | None = None  # one of _CONVERSIONS
    literal: Any = None

    def of(self, args: dict[str, Any]) -> Any:
        if self.role is None:
            return self.literal
        value = args[self.role]
        if self.conversion == "~":
            return None if value is None else ~value
        if self.conversion == "additive":
            return None if value is None else _additive(value, args)
        if self.conversion == "four_d":
            return None if value is None else value.reshape((1,) * (4 - value.ndim) + tuple(value.shape))
        return value


def _additive(mask: torch.Tensor, args: dict[str, Any]) -> torch.Tensor:
    import torch

    like = next(t for t in args.values() if isinstance(t, torch.Tensor) and t.is_floating_point())
    fill = torch.finfo(like.dtype).min
    zero = torch.zeros((), dtype=like.dtype, device=mask.device)
    out = torch.where(mask, zero, torch.tensor(fill, dtype=like.dtype, device=mask.device))
    return out[:, None, None, :] if out.ndim == 2 else out


@dataclass(frozen=True)
class CallMap:
    """A parsed ``--call``: the positional and keyword arguments, each a role, a converted role
    or a literal."""

    text: str
    positional: tuple[_Value, ...]
    keywords: tuple[tuple[str, _Value], ...]

    @classmethod
    def parse(cls, text: str, roles: tuple[str, ...], flag: str = "--call") -> CallMap:
        """The map of ``text``; :class:`ValueError` (one line, naming ``flag``) when it is not
        an argument list of the roles, their conversions and literals, or leaves a role out."""
        try:
            call = ast.parse(f"f({text})", mode="eval").body
        except SyntaxError as exc:
            raise ValueError(f"{flag} {text!r} is not a Python argument list ({exc.msg})") from None
        assert isinstance(call, ast.Call)
        starred = any(isinstance(a, ast.Starred) for a in call.args)
        if starred or any(k.arg is None for k in call.keywords):
            raise ValueError(f"{flag} {text!r}: no * or ** arguments")

        def value(node: ast.expr) -> _Value:
            if isinstance(node, ast.Name) and node.id in roles:
                return _Value(node.id)
            if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Invert):
                inner = value(node.operand)
                if inner.role is not None and inner.conversion is None:
                    return _Value(inner.role, "~")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in _CONVERSIONS
                and len(node.args) == 1
                and not node.keywords
            ):
                inner = value(node.args[0])
                if inner.role is not None and inner.conversion is None:
                    return _Value(inner.role, node.func.id)
            try:
                return _Value(None, literal=ast.literal_eval(node))
            except ValueError:
                raise ValueError(
                    f"{flag}: {ast.unparse(node)} is neither a role ({', '.join(roles)}), ~role, "
                    "additive(role), four_d(role) nor a Python literal"
                ) from None

        positional = tuple(value(a) for a in call.args)
        keywords = tuple((str(k.arg), value(k.value)) for k in call.keywords)
        used = {v.role for v in positional} | {v.role for _, v in keywords}
        missing = [r for r in roles if r not in used]
        if missing:
            raise ValueError(
                f"{flag} {text!r} does not pass {', '.join(missing)} "
                f"(it must pass each of {', '.join(roles)})"
            )
        return cls(text, positional, keywords)

    def apply(self, args: dict[str, Any], kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The call's positional (by name) and keyword arguments from the kind's ``args``; the
        kind's own keywords (``scale=``, ``is_causal=``) are kept."""
        positional: dict[str, Any] = {}
        for n, v in enumerate(self.positional):
            name = v.role if v.role is not None and v.role not in positional else f"arg{n}"
            positional[name] = v.of(args)
        return positional, {**kwargs, **{name: v.of(args) for name, v in self.keywords}}

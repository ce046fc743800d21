"""Optimizer docstrings (reStructuredText with LaTeX math) as terminal text or as HTML.

A docstring holds prose with inline ``:math:`...``` roles, ````code```` and ``**bold**``, and
``.. math::`` blocks whose lines end in ``\\\\`` and align at ``&``. The terminal gets unicode
(``β₁``, ``√v``, ``η/(1-β₁ᵗ)``) through pylatexenc with a few macros made unambiguous; HTML gets
MathML from latex2mathml, which browsers render without any script. No torch here: the report
module uses it too.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from pylatexenc.latex2text import LatexNodes2Text, MacroTextSpec, get_default_latex_context_db

_SUB = dict(zip("0123456789+-=()aehijklmnoprstuvxβγρφχ", "₀₁₂₃₄₅₆₇₈₉₊₋₌₍₎ₐₑₕᵢⱼₖₗₘₙₒₚᵣₛₜᵤᵥₓᵦᵧᵨᵩᵪ"))
_SUP = dict(
    zip(
        "0123456789+-=()abcdefghijklmnoprstuvwxyzβγδθφχT",
        "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁼⁽⁾ᵃᵇᶜᵈᵉᶠᵍʰⁱʲᵏˡᵐⁿᵒᵖʳˢᵗᵘᵛʷˣʸᶻᵝᵞᵟᶿᵠᵡᵀ",
    )
)


@dataclass(frozen=True)
class Block:
    """A paragraph of prose (``lines`` of text) or a math display (``lines`` of LaTeX rows)."""

    kind: str  # "text" or "math"
    lines: tuple[str, ...]


def blocks(doc: str) -> list[Block]:
    """Split a docstring into prose paragraphs and ``.. math::`` displays (one row a line)."""
    out: list[Block] = []
    para: list[str] = []
    lines = doc.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() == ".. math::":
            if para:
                out.append(Block("text", tuple(para)))
                para = []
            body = []
            i += 1
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith((" ", "\t"))):
                body.append(lines[i].strip())
                i += 1
            rows = re.split(r"\\\\(?![A-Za-z])", " ".join(b for b in body if b))
            out.append(Block("math", tuple(r.strip() for r in rows if r.strip())))
            continue
        if line.strip():
            para.append(line.strip())
        elif para:
            out.append(Block("text", tuple(para)))
            para = []
        i += 1
    if para:
        out.append(Block("text", tuple(para)))
    return out


# ---- LaTeX to unicode --------------------------------------------------------------------------


def _group_end(s: str, start: int) -> int:
    """Index just past the brace group opening at ``s[start] == '{'``."""
    depth = 0
    for k in range(start, len(s)):
        depth += {"{": 1, "}": -1}.get(s[k], 0)
        if depth == 0:
            return k + 1
    return len(s)


def _mark_scripts(tex: str) -> str:
    """``x_{ab}`` -> ``x\\benchsub{ab}``, ``x^t`` -> ``x\\benchsup{t}``: macros we render."""
    out, k = [], 0
    while k < len(tex):
        c = tex[k]
        if c in "_^" and (k == 0 or tex[k - 1] != "\\"):
            macro = r"\benchsub" if c == "_" else r"\benchsup"
            j = k + 1
            while j < len(tex) and tex[j] == " ":
                j += 1
            if j < len(tex) and tex[j] == "{":
                end = _group_end(tex, j)
                out.append(f"{macro}{{{_mark_scripts(tex[j + 1 : end - 1])}}}")
            elif j < len(tex) and tex[j] == "\\":
                m = re.match(r"\\[A-Za-z]+|\\.", tex[j:])
                end = j + m.end()
                out.append(f"{macro}{{{tex[j:end]}}}")
            else:
                end = j + 1
                out.append(f"{macro}{{{tex[j:end]}}}")
            k = end
            continue
        out.append(c)
        k += 1
    return "".join(out)


def _arg_text(node, l2tobj, i: int) -> str:
    args = node.nodeargd.argnlist if node.nodeargd else []
    arg = args[i] if i < len(args) else None
    return l2tobj.nodelist_to_text([arg]).strip() if arg is not None else ""


def _wrap(text: str) -> str:
    """Parenthesise a compound operand so that ``a/b`` and ``√x`` stay unambiguous."""
    if re.fullmatch(r"[\w.ₐ-ₜ₀-₉⁰-⁹ᵃ-ᶿ]+|√\w+", text) or _one_group(text):
        return text
    return f"({text})"


def _one_group(text: str) -> bool:
    """``(a)(b)`` is two groups, ``(a(b))`` one."""
    if not text.startswith("("):
        return False
    depth = 0
    for k, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0:
            return k == len(text) - 1
    return False


def _script(table: dict[str, str], mark: str):
    def render(node, l2tobj) -> str:
        text = _arg_text(node, l2tobj, 0)
        if text and all(ch in table for ch in text):
            return "".join(table[ch] for ch in text)
        return f"{mark}{text}" if len(text) == 1 else f"{mark}({text})"

    return render


def _macros() -> list[MacroTextSpec]:
    def frac(node, l2tobj):
        return f"{_wrap(_arg_text(node, l2tobj, 0))}/{_wrap(_arg_text(node, l2tobj, 1))}"

    def sqrt(node, l2tobj):
        return "√" + _wrap(_arg_text(node, l2tobj, 1) or _arg_text(node, l2tobj, 0))

    def hat(node, l2tobj):
        return _arg_text(node, l2tobj, 0) + "\u0302"

    def plain(node, l2tobj):
        return _arg_text(node, l2tobj, 0)

    specs = [
        MacroTextSpec("frac", simplify_repl=frac),
        MacroTextSpec("sqrt", simplify_repl=sqrt),
        MacroTextSpec("hat", simplify_repl=hat),
        MacroTextSpec("operatorname", simplify_repl=plain),
        MacroTextSpec("mathrm", simplify_repl=plain),
        MacroTextSpec("benchsub", simplify_repl=_script(_SUB, "_")),
        MacroTextSpec("benchsup", simplify_repl=_script(_SUP, "^")),
        MacroTextSpec("leftarrow", simplify_repl=" ← "),
        MacroTextSpec("|", simplify_repl="‖"),
        MacroTextSpec("qquad", simplify_repl="    "),
        MacroTextSpec("quad", simplify_repl="  "),
        MacroTextSpec(",", simplify_repl=" "),
        MacroTextSpec("cdot", simplify_repl="·"),
        MacroTextSpec("neq", simplify_repl="≠"),
        MacroTextSpec("propto", simplify_repl="∝"),
        MacroTextSpec("nabla", simplify_repl="∇"),
        MacroTextSpec("sum", simplify_repl="Σ"),
        MacroTextSpec("epsilon", simplify_repl="ε"),
    ]
    specs += [MacroTextSpec(n, simplify_repl=f" {n} ") for n in ("max", "min", "ln", "exp", "log")]
    specs += [MacroTextSpec(n, simplify_repl="") for n in ("big", "Big", "bigg", "Bigg")]
    return specs


def _text_db():
    db = get_default_latex_context_db()
    db.add_context_category("bench", macros=_macros(), prepend=True)
    return db


_DB = _text_db()
_CONVERTER = LatexNodes2Text(latex_context=_DB, math_mode="text", strict_latex_spaces=False)
_MACRO_ARGS = {"benchsub": "{", "benchsup": "{", "operatorname": "{", "mathrm": "{"}


def _walker_db():
    from pylatexenc.latexwalker import get_default_latex_context_db as walker_db
    from pylatexenc.macrospec import MacroSpec

    db = walker_db()
    macros = [MacroSpec(n, a) for n, a in _MACRO_ARGS.items()]
    db.add_context_category("bench", macros=macros, prepend=True)
    return db


_WALKER_DB = _walker_db()


def latex_text(tex: str) -> str:
    """One LaTeX formula as readable unicode text."""
    from pylatexenc.latexwalker import LatexWalker

    tex = re.sub(r"(\\[A-Za-z]+) (?=[=+<>-])", r"\1{} ", tex)  # keep "η = ..." spaced
    walker = LatexWalker(_mark_scripts(tex), latex_context=_WALKER_DB, tolerant_parsing=True)
    nodes = walker.get_latex_nodes()[0]
    text = _CONVERTER.nodelist_to_text(nodes)
    text = re.sub(r"[ \t]{2,}(?=\S)", lambda m: m.group(0) if len(m.group(0)) >= 4 else " ", text)
    text = re.sub(r"\b(max|min|ln|exp|log) \(", r"\1(", text)
    return re.sub(r"(?<=[(‖]) | (?=[),])", "", text)


_INLINE = re.compile(r":math:`([^`]*)`|``([^`]*)``|\*\*([^*]*)\*\*")


def inline_text(line: str) -> str:
    """One line of reST prose as plain text: math as unicode, no ``code`` or **bold** marks."""

    def sub(m: re.Match) -> str:
        if m.group(1) is not None:
            return latex_text(m.group(1))
        return m.group(2) if m.group(2) is not None else m.group(3)

    return _INLINE.sub(sub, line)


def to_text(doc: str, width: int = 96) -> str:
    """The docstring for a terminal: prose re-wrapped, math rows aligned at ``&``."""
    import textwrap

    parts = []
    for block in blocks(doc):
        if block.kind == "text":
            parts.append(textwrap.fill(inline_text(" ".join(block.lines)), width))
            continue
        rows = [[latex_text(cell).strip() for cell in row.split("&", 1)] for row in block.lines]
        pad = max((len(r[0]) for r in rows if len(r) == 2), default=0)
        parts.append(
            "\n".join(
                "    " + (f"{r[0]:>{pad}} {r[1]}" if len(r) == 2 else r[0]).rstrip() for r in rows
            )
        )
    return "\n\n".join(parts)


# ---- HTML with MathML --------------------------------------------------------------------------


def latex_mathml(tex: str, display: bool = False) -> str:
    import latex2mathml.converter

    return latex2mathml.converter.convert(tex, display="block" if display else "inline")


def _inline_html(line: str) -> str:
    out, last = [], 0
    for m in _INLINE.finditer(line):
        out.append(html.escape(line[last : m.start()]))
        if m.group(1) is not None:
            out.append(latex_mathml(m.group(1)))
        elif m.group(2) is not None:
            out.append(f"<code>{html.escape(m.group(2))}</code>")
        else:
            out.append(f"<strong>{html.escape(m.group(3))}</strong>")
        last = m.end()
    out.append(html.escape(line[last:]))
    return "".join(out)


def to_html(doc: str) -> str:
    """The docstring as HTML: paragraphs, and math rows as a two-column table aligned at ``&``."""
    parts = []
    for block in blocks(doc):
        if block.kind == "text":
            parts.append(f"<p>{_inline_html(' '.join(block.lines))}</p>")
            continue
        rows = []
        for row in block.lines:
            cells = row.split("&", 1)
            if len(cells) == 2:
                left, right = (latex_mathml(c.strip(), display=True) for c in cells)
                rows.append(f'<tr><td class="lhs">{left}</td><td>{right}</td></tr>')
            else:
                whole = latex_mathml(cells[0].strip(), display=True)
                rows.append(f'<tr><td colspan="2">{whole}</td></tr>')
        parts.append(f'<table class="math">{"".join(rows)}</table>')
    return "\n".join(parts)

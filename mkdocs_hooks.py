"""MkDocs hook (mkdocs.yml: ``hooks``): render the Sphinx cross-reference roles that the
docstrings use (``:class:`~bayesmeta.X```, ``:func:``, ``:meth:``...) as plain code.

mkdocstrings renders a role as the literal text ``:class:`` followed by the code span; the hook
drops the role and, as Sphinx does for a leading ``~``, shows only the last dotted component.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:class|func|meth|attr|mod|data|exc|obj|py:\w+):(?=<code>)")
_TILDE = re.compile(r"<code>~((?:\w+\.)*)(\w+)(\(\))?</code>")


def on_page_content(html: str, **kwargs: Any) -> str:
    """Strip Sphinx roles from the page's HTML (the API reference pages have them)."""
    html = _ROLE.sub("", html)
    return _TILDE.sub(lambda m: f"<code>{m.group(2)}{m.group(3) or ''}</code>", html)

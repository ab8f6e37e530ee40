"""What every report page shares: the document shell with its inline style sheet, escaping,
tables with the best value per column marked, and inline figures.

Pages are built as strings with every text going through `esc()` (stdlib `html.escape`),
which keeps the package free of a template engine for a handful of tables. A page has no
external resource at all (no CDN, font or script URL): it opens offline, from a bundle, and
the browser test checks that it makes no request.
"""

from __future__ import annotations

import html
from typing import Any, Iterable, Sequence

STYLE = """
:root{--fg:#1b1f24;--muted:#57606a;--line:#d0d7de;--bg:#fff;--soft:#f6f8fa;--bad:#b3261e;--badbg:#fdecea;
--good:#1a7f37;--best:#fff5c2}
*{box-sizing:border-box}[hidden]{display:none!important}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg);
margin:0 auto;padding:1rem;max-width:72rem}
h1{font-size:1.5rem;margin:.2rem 0 .4rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid var(--line)}
h3{font-size:1rem}
p.meta,.note{color:var(--muted);font-size:.9rem}
nav a{margin-right:.8rem}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
th,td{border:1px solid var(--line);padding:.3rem .5rem;vertical-align:top;text-align:left}
th{background:var(--soft)}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.best{background:var(--best);font-weight:600}
.n{color:var(--muted);font-size:.8rem}
figure{margin:1rem 0}figure svg{max-width:100%;height:auto}
figcaption{color:var(--muted);font-size:.85rem}
.answer{white-space:pre-wrap;overflow-wrap:anywhere;max-width:28rem}
.lang{display:inline-block;font-size:.75rem;border-radius:.6rem;padding:0 .45rem;margin-bottom:.2rem;
border:1px solid var(--line);background:var(--soft)}
td.wrong{background:var(--badbg)}td.wrong .lang{border-color:var(--bad);color:var(--bad);font-weight:600}
.filters{display:flex;gap:1rem;flex-wrap:wrap;align-items:center;margin:.5rem 0}
.empty{color:var(--muted);font-style:italic}
@media (max-width:700px){body{padding:.5rem;font-size:14px}
table.stack,table.stack tbody,table.stack tr,table.stack td,table.stack th{display:block;width:100%}
table.stack thead{display:none}table.stack tr{border:1px solid var(--line);margin-bottom:.6rem}
table.stack td{border:0;border-top:1px solid var(--line)}
table.stack td[data-label]::before{content:attr(data-label);display:block;font-weight:600;font-size:.8rem}
.answer{max-width:none}}
@media print{.filters,nav{display:none}tr[hidden]{display:table-row!important}body{max-width:none;font-size:11px}
h2{break-after:avoid}figure,tr{break-inside:avoid}}
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def page(title: str, body: Sequence[str], *, script: str = "") -> str:
    """A whole HTML document: inline style, the body, an optional inline script at the end
    (the page reads fully without it)."""
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # no request may leave the page, not even for a favicon
        '<link rel="icon" href="data:,">',
        f"<title>{esc(title)}</title>", f"<style>{STYLE}</style>", "</head>", "<body>", *body,
        f"<script>{script}</script>" if script else "", "</body>", "</html>", ""])


def fmt_value(stats: dict | None, with_interval: bool = True) -> tuple[str, str]:
    """(value text, detail text): shares as %, NLL in nats with three decimals; the detail
    holds the interval and n."""
    if not stats or stats.get("value") is None:
        return "–", ""
    nll = stats.get("kind") == "nll"
    scale, digits = (1.0, 3) if nll else (100.0, 1)
    text = f"{stats['value'] * scale:.{digits}f}"
    detail = []
    if with_interval and stats.get("low") is not None and stats.get("high") is not None:
        detail.append(f"[{stats['low'] * scale:.{digits}f}–{stats['high'] * scale:.{digits}f}]")
    if stats.get("seeds"):
        detail.append(f"{stats['seeds']} seeds")
    if stats.get("n") is not None:
        detail.append(f"n={stats['n']}")
    return text, " ".join(detail)


def best_rows(values: dict[str, float | None], lower_is_better: bool, digits: int = 3) -> set[str]:
    """Rows holding the best value of a column, compared at the shown precision (3 decimals:
    NLL as shown, shares to 0.1%), so equal-looking numbers are marked alike; none when all
    are equal (a mark on every row says nothing)."""
    present = {row: round(value, digits) for row, value in values.items() if value is not None}
    if len(set(present.values())) < 2:
        return set()
    best = min(present.values()) if lower_is_better else max(present.values())
    return {row for row, value in present.items() if value == best}


def metric_table(rows: list[str], columns: list[tuple[str, str, bool]], cell: Any, *,
                 row_header: str = "model", table_id: str = "") -> str:
    """A table of metric cells. `columns`: (key, header, lower is better); `cell(row, key)`
    returns the stats dict or None. The best value per column is highlighted and marked ★
    (colour is not the only signal); cells carry `data-row`/`data-key`/`data-value` so a test
    can read the numbers a reader sees."""
    best = {key: best_rows({row: (cell(row, key) or {}).get("value") for row in rows}, lower)
            for key, _, lower in columns}
    head = "".join(f'<th scope="col">{esc(header)}{" ↓" if lower else ""}</th>' for _, header, lower in columns)
    body = []
    for row in rows:
        name = esc(row)
        cells = []
        for key, header, _ in columns:
            stats = cell(row, key)
            text, detail = fmt_value(stats)
            marked = row in best[key]
            cells.append(
                f'<td class="num{" best" if marked else ""}" data-label="{esc(header)}" data-row="{esc(row)}" '
                f'data-key="{esc(key)}" data-value="{esc(stats.get("value") if stats else "")}">'
                f'<span class="v">{esc(text)}</span>{" ★" if marked else ""}'
                + (f'<br><span class="n">{esc(detail)}</span>' if detail else "") + "</td>")
        body.append(f'<tr><th scope="row">{name}</th>{"".join(cells)}</tr>')
    ident = f' id="{esc(table_id)}"' if table_id else ""
    return (f'<div class="scroll"><table{ident}><thead><tr><th scope="col">{esc(row_header)}</th>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>'
            '<p class="note">★ best in its column (↓: lower is better); [95% interval], n = prompts, questions '
            'or samples behind the number.</p>')


def simple_table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, stack: bool = False,
                 raw: Sequence[int] = ()) -> str:
    """A plain table; cells are escaped except the column indices in `raw` (already HTML)."""
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in header)
    body = "".join("<tr>" + "".join(
        f'<td data-label="{esc(header[i])}">{value if i in raw else esc(value)}</td>' for i, value in enumerate(row))
        + "</tr>" for row in rows)
    return (f'<div class="scroll"><table{" class=stack" if stack else ""}><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def figure(svg: str, caption: str, label: str) -> str:
    """An inline SVG plot with a caption; `label` names it for screen readers."""
    svg = svg.replace("<svg ", f'<svg role="img" aria-label="{esc(label)}" ', 1)
    return f'<figure class="plot">{svg}<figcaption>{esc(caption)}</figcaption></figure>'


def definition_table(items: dict[str, Any]) -> str:
    return simple_table(["setting", "value"], [[key, ", ".join(map(str, value)) if isinstance(value, list) else value]
                                               for key, value in items.items()])

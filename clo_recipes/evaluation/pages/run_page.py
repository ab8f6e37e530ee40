"""report.html of one run, rendered from the same `report.json` document as report.md:
headline table, metric plots, training curves, every answer side by side, translation
quality, judge verdicts, settings and versions. See docs/evaluation.md for a tour."""

from __future__ import annotations

from ..plots import curve_panels, grouped_bars, histogram
from ..report import headline, model_order
from .shell import definition_table, esc, figure, metric_table, page, simple_table

# The answer filter: a few lines, no library; without scripts every row simply shows.
FILTER_SCRIPT = """(function(){var box=document.getElementById('answer-filters');if(!box)return;box.hidden=false;
var lang=document.getElementById('filter-lang'),dis=document.getElementById('filter-disagree'),
wrong=document.getElementById('filter-wrong'),count=document.getElementById('filter-count'),
rows=document.querySelectorAll('#answers tbody tr');
function apply(){var shown=0;rows.forEach(function(r){var ok=(!lang.value||r.dataset.lang===lang.value)&&
(!dis.checked||r.dataset.disagree==='1')&&(!wrong.checked||r.dataset.wrong==='1');r.hidden=!ok;if(ok)shown++;});
count.textContent=shown+' of '+rows.length+' prompts shown';}
[lang,dis,wrong].forEach(function(el){el.addEventListener('change',apply);});apply();})();"""


def headline_columns(report: dict, rows: dict[str, dict]) -> list[tuple[str, str, bool]]:
    """(key, header, lower is better) of every metric some model has, target language first."""
    langs = [report["language"], "en"]
    columns = []
    for prefix, header in (("fidelity", "fidelity"), ("mc", "MC acc"), ("mc_norm", "MC acc_norm"), ("nll", "NLL"),
                           ("win", "judge win")):
        for lang in langs:
            if any(f"{prefix}_{lang}" in row for row in rows.values()):
                columns.append((f"{prefix}_{lang}", f"{header} {lang}", prefix == "nll"))
    tasks = sorted({key for row in rows.values() for key, stats in row.items() if "metric" in stats})
    return columns + [(task, task, False) for task in tasks]


def _headline(report: dict) -> list[str]:
    rows = headline(report)
    columns = headline_columns(report, rows)
    out = ['<h2 id="headline">Headline</h2>']
    if not columns:
        return out + ['<p class="empty">No suite produced a number (see Skipped).</p>']
    out.append(metric_table(list(rows), columns, lambda row, key: rows[row].get(key), table_id="headline-table"))
    out.append('<p class="note">fidelity: % of answers in the prompt\'s language [Wilson interval]; MC acc: '
               'log-likelihood multiple-choice accuracy, % (acc_norm: length-normalised); NLL: nats per token of the held-out reference answers '
               '[bootstrap interval], lower is better; judge win: % against '
               f'{esc((report.get("judge") or {}).get("baseline", "the baseline"))}, ties count half.</p>')
    langs = [report["language"], "en"]

    def points(prefix: str, models: list[str]) -> dict[str, list]:
        return {label: [(s["value"], s["low"], s["high"]) if (s := rows.get(label, {}).get(f"{prefix}_{lang}"))
                        else None for lang in langs] for label in models}

    labels = list(rows)
    for prefix, title, ylabel in (("fidelity", "answers in the prompt's language", "share of answers"),
                                  ("mc", "multiple-choice accuracy", "accuracy")):
        if any(f"{prefix}_{lang}" in rows[label] for label in labels for lang in langs):
            svg = grouped_bars(None, title=f"{report['name']}: {title}", groups=[f"{lang} prompts" for lang in langs],
                               series=points(prefix, labels), ylabel=ylabel)
            out.append(figure(svg, f"{title} per model and prompt language; error bars: 95% interval where "
                                   "one exists.", title))
    return out


PAIR_NAMES = {"target": "{lang} pair", "en": "English pair", "": "pair"}
# preference pair prefix, chosen/rejected -> the reference stage's mean log-prob of that sequence
REFERENCE_KEYS = {("target", "chosen"): "l_l", ("target", "rejected"): "l_en",
                  ("en", "chosen"): "en_en", ("en", "rejected"): "en_l"}


def curve_figure(arm: str, curves: dict, language: str) -> str | None:
    """One figure of small plots for an arm: losses, preference margins and accuracy per pair,
    chosen/rejected log-probs against the frozen reference model's, learning rate, grad norm."""
    metrics, steps = curves["metrics"], curves["steps"]
    if not steps:
        return None
    pairs = [(p, PAIR_NAMES[p].format(lang=language)) for p in ("target", "en", "")]

    def key(prefix: str, name: str) -> str:
        return f"{prefix}/{name}" if prefix else name

    panels = []
    losses = {"loss": metrics.get("loss")}
    if metrics.get("nll") is not None and metrics.get("nll") != metrics.get("loss"):
        losses["NLL term"] = metrics["nll"]
    if metrics.get("preference") is not None:
        losses["preference term"] = metrics["preference"]
    panels.append(("loss", {k: v for k, v in losses.items() if v is not None}, {}))
    margins = {label: metrics[key(p, "reward_margin")] for p, label in pairs if key(p, "reward_margin") in metrics}
    if margins:
        panels.append(("reward margin: β·(log-ratio chosen − rejected)", margins, {}))
    accuracy = {label: metrics[key(p, "reward_accuracy")] for p, label in pairs if key(p, "reward_accuracy") in metrics}
    if accuracy:
        panels.append(("preference accuracy (margin > 0)", accuracy, {}))
    reference = curves.get("reference") or {}
    logps, refs = {}, {}
    for p, label in pairs:
        for side in ("chosen", "rejected"):
            if key(p, f"{side}_logps") in metrics:
                name = f"{label} {side}"
                logps[name] = metrics[key(p, f"{side}_logps")]
                if REFERENCE_KEYS.get((p, side)) in reference:
                    refs[name] = reference[REFERENCE_KEYS[(p, side)]]
    if logps:
        panels.append(("sequence log-prob (dashed: reference model)", logps, refs))
    for name, ylabel in (("learning_rate", "learning rate"), ("grad_norm", "gradient norm")):
        if name in metrics:
            panels.append((ylabel, {name.replace("_", " "): metrics[name]}, {}))
    boundaries = [phase["start"] - 0.5 for phase in curves["phases"][1:]]
    phases = " → ".join(phase["phase"] or "?" for phase in curves["phases"])
    svg = curve_panels(None, title=f"training curves: {arm} ({phases}, {len(steps)} logged steps)", steps=steps,
                       panels=[panel for panel in panels if panel[1]], boundaries=boundaries)
    return figure(svg, f"{arm}: metrics.jsonl of the train stage, one point per logged optimizer step"
                       + ("; dashed: the reference stage's mean log-prob of the same sequences under the frozen "
                          "starting model" if refs else "") + ".", f"training curves of {arm}")


def _training(report: dict) -> list[str]:
    training = report.get("training") or {}
    if not training:
        return []
    out = ['<h2 id="training">Training</h2>']
    for arm, curves in training.items():
        made = curve_figure(arm, curves, report["language"])
        out.append(made or f'<p class="empty">{esc(arm)}: no logged step.</p>')
    return out


def _answer_cell(label: str, answer: dict | None, prompt_lang: str) -> str:
    if answer is None:
        return f'<td data-label="{esc(label)}" class="empty">not evaluated</td>'
    lang = answer["lang"]
    wrong = lang != prompt_lang
    tag = (f"⚠ wrong language: {lang}" if lang != "unknown" else "⚠ wrong language: none detected") if wrong \
        else f"{lang} ✓"
    text = answer["text"].strip()
    body = esc(text) if text else '<span class="empty">(empty answer)</span>'
    spoken = f' lang="{esc(lang)}"' if lang != "unknown" else ""  # screen readers pick the right voice
    return (f'<td data-label="{esc(label)}"{" class=wrong" if wrong else ""}><span class="lang">{esc(tag)}</span>'
            f'<div class="answer"{spoken}>{body}</div></td>')


def _answers(report: dict) -> list[str]:
    rows = report.get("answers") or []
    if not rows:
        return []
    labels = model_order(report["method"], report["baselines"],
                         list(dict.fromkeys(label for row in rows for label in row["answers"])))
    langs = list(dict.fromkeys(row["lang"] for row in rows))
    wrong = {label: sum(label in row["wrong"] for row in rows if label in row["answers"]) for label in labels}
    out = ['<h2 id="answers-section">Every answer</h2>',
           f'<p class="note">{len(rows)} evaluation prompts; each model\'s answer with the language detected in it. '
           '⚠ marks an answer not in the prompt\'s language (wrong-language answers, by model: '
           + esc(", ".join(f"{label} {wrong[label]}" for label in labels)) + '). Models "disagree" on a prompt when '
           'their answers were detected in different languages.</p>',
           '<div class="filters" id="answer-filters" hidden><label>prompt language <select id="filter-lang">'
           '<option value="">all</option>'
           + "".join(f'<option value="{esc(lang)}">{esc(lang)}</option>' for lang in langs)
           + '</select></label><label><input type="checkbox" id="filter-disagree"> only where models disagree</label>'
           '<label><input type="checkbox" id="filter-wrong"> only with a wrong-language answer</label>'
           '<output id="filter-count"></output></div>']
    head = "".join(f'<th scope="col">{esc(label)}</th>' for label in labels)
    body = []
    for row in rows:
        prompt = (f'<th scope="row" data-label="prompt"><span class="lang">{esc(row["lang"])}</span> '
                  f'<span class="n">{esc(row["id"])}</span><div class="answer" lang="{esc(row["lang"])}">'
                  f'{esc(row["prompt"])}</div></th>')
        cells = "".join(_answer_cell(label, row["answers"].get(label), row["lang"]) for label in labels)
        body.append(f'<tr data-lang="{esc(row["lang"])}" data-disagree="{int(row["disagree"])}" '
                    f'data-wrong="{int(bool(row["wrong"]))}">{prompt}{cells}</tr>')
    out.append(f'<div class="scroll"><table id="answers" class="stack"><thead><tr><th scope="col">prompt</th>{head}'
               f'</tr></thead><tbody>{"".join(body)}</tbody></table></div>')
    return out


def _pair(row: dict, suffix: str) -> str:
    """A sample's query and answer (English, or translated with suffix `_l`), one line each."""
    return (f'<div class="answer">Q: {esc(row.get("prompt" + suffix, ""))}\n'
            f'A: {esc(row.get("response" + suffix, ""))}</div>')


def _translation(report: dict) -> list[str]:
    translation = report.get("translation")
    samples = report.get("translation_samples") or {}
    if not translation:
        return []
    drops = ", ".join(f"{reason} {count}" for reason, count in translation.get("dropped_by_reason", {}).items() if count)
    who = " ".join(str(part) for part in (translation.get("backend"), translation.get("model")) if part) or "?"
    language = translation.get("language", report["language"])
    out = ['<h2 id="translation">Translation quality</h2>',
           f"<p>{esc(who)}, en→{esc(language)}: {esc(translation.get('translated', '?'))} training and "
           f"{esc(translation.get('eval_translated', '?'))} held-out samples kept, "
           f"{esc(translation.get('dropped', 0))} dropped{esc(f' ({drops})' if drops else '')}.</p>"]
    trip = translation.get("round_trip") or {}
    kept, dropped = samples.get("chrf_kept") or [], samples.get("chrf_dropped") or []
    if kept or dropped:
        svg = histogram(None, title=f"round trip {language}→en: chrF per sample",
                        groups={f"kept (n={len(kept)})": kept, f"dropped (n={len(dropped)})": dropped},
                        xlabel="chrF of the back-translation against the English source (0-100)",
                        bins=[5 * i for i in range(21)], threshold=trip.get("threshold"))
        out.append(figure(svg, "Each sample scores the lower chrF of its query and answer; low scores mark "
                               "translations that lost meaning.", "round-trip chrF histogram"))
    if trip.get("count"):
        out.append(f'<p class="note">round-trip chrF: mean {trip["mean"]:.1f}, median {trip["median"]:.1f}, '
                   f'min {trip["min"]:.1f}, n={trip["count"]}.</p>')
    if samples.get("worst"):
        out += ["<h3>Lowest round-trip chrF first</h3>", simple_table(
            ["chrF", "id", "English source", "translation"],
            [[f"{row['chrf']:.1f}", esc(row["id"]), _pair(row, ""), _pair(row, "_l")] for row in samples["worst"]],
            stack=True, raw=(2, 3))]
    if samples.get("dropped"):
        total = samples.get("dropped_total", len(samples["dropped"]))
        out += [f"<h3>Dropped samples ({len(samples['dropped'])} of {total} shown)</h3>", simple_table(
            ["id", "filter", "why", "English source", "translation"],
            [[row["id"], f"{row.get('reason', '')} ({row.get('field', '')})", row.get("detail", ""),
              _pair(row, ""), _pair(row, "_l")] for row in samples["dropped"]], stack=True, raw=(3, 4))]
    return out


def _judge(report: dict) -> list[str]:
    judge = report.get("judge") or {}
    if judge.get("status") != "ok":
        return []
    rows = []
    for label, by_lang in judge["models"].items():
        for lang, stats in by_lang.items():
            rows.append([label, lang, f"{stats['win_rate'] * 100:.1f} [{stats['low'] * 100:.1f}–{stats['high'] * 100:.1f}]",
                         f"{stats['wins']} / {stats['ties']} / {stats['losses']}", stats["n"],
                         f"{stats['consistent'] * 100:.0f}%" if stats.get("consistent") is not None else "–"])
    return [f'<h2 id="judge">Judge verdicts against {esc(judge["baseline"])}</h2>',
            f'<p class="note">Judge {esc(judge["judge_model"])}, each prompt judged in both answer orders; ties count '
            'half. Position-swap agreement: share of prompts whose two orders gave the same verdict (low: the judge '
            'follows position and the win rate drifts to 50%).</p>',
            simple_table(["model", "prompts", "win rate % [95%]", "wins / ties / losses", "n", "orders agree"], rows)]


def _setup(report: dict) -> list[str]:
    out = ['<h2 id="setup">Setup</h2>']
    if report.get("settings"):
        out += ["<h3>Recipe (key settings)</h3>", definition_table(report["settings"])]
    if report.get("versions"):
        out += ["<h3>Package versions</h3>", definition_table({k: v if v is not None else "not installed"
                                                              for k, v in report["versions"].items()})]
    if report.get("skipped"):
        out += ['<h3 id="skipped">Skipped</h3>', simple_table(
            ["suite", "model", "reason"], [[e["suite"], e.get("model") or "–", e["reason"]] for e in report["skipped"]])]
    return out


def provenance(report: dict) -> str:
    """One line: which model, data and translation produced the page's numbers."""
    settings = report.get("settings") or {}
    model = settings.get("model.base", "?") + (f" ({settings['model.gguf_file']})" if settings.get("model.gguf_file") else "")
    data = settings.get("data.source", "?")
    counts = ", ".join(f"{name} {settings[key]}" for key, name in (("data.samples", "training samples"),
                                                                  ("data.eval_samples", "held-out"))
                       if key in settings)
    return (f"Model <code>{esc(model)}</code>; data <code>{esc(data)}</code>" + (f" ({esc(counts)})" if counts else "")
            + (f"; translated by {esc(settings.get('translation.backend'))}" if settings.get("translation.backend") else "")
            + (f" ({esc(settings['translation.model'])})" if settings.get("translation.model") else "")
            + ".")


def render_run_page(report: dict) -> str:
    title = f"{report['name']}: {report['method']} transfer to {report['language_name']} ({report['language']})"
    sections: list[list[str]] = [_headline(report), _training(report), _answers(report), _translation(report),
                                 _judge(report), _setup(report)]
    nav = [('headline', 'headline'), ('training', 'training'), ('answers-section', 'answers'),
           ('translation', 'translation'), ('judge', 'judge'), ('setup', 'setup')]
    present = {line.split('id="')[1].split('"')[0] for part in sections for line in part[:1] if 'id="' in line}
    body = [f"<header><h1>{esc(title)}</h1>", f'<p class="meta">{provenance(report)}</p>',
            "<nav>" + "".join(f'<a href="#{anchor}">{name}</a>' for anchor, name in nav if anchor in present)
            + "</nav></header>", "<main>"]
    for part in sections:
        body += part
    body.append("</main>")
    return page(title, body, script=FILTER_SCRIPT if report.get("answers") else "")


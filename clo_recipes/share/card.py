"""The model card of a bundle: README.md in Hugging Face format.

YAML front matter (base_model, language, datasets, license, tags, model-index with the
run's own metrics) then: what was trained and how, the metrics table of every model the
run evaluated, how to load the weights, and the exact commands that reproduce the run.
Everything comes from the bundle's lock and report; nothing is typed by hand.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..recipe.languages import get_language

PAPER = "https://arxiv.org/abs/2505.14297"
LOCK_FILE = "recipe.lock.yaml"
FOLDER_PLACEHOLDER = '"path/to/this/folder"'  # `push` replaces it with the quoted repo id
_SUITE_NAMES = {"fidelity": "Language fidelity", "mc": "Multiple-choice accuracy", "mc_norm": "Multiple-choice acc_norm",
                "win": "Pairwise judge win rate"}


@dataclass
class CardFacts:
    name: str
    language: str  # ISO 639-1
    method: str
    baselines: list[str]
    base_model: str
    base_model_on_hub: bool
    datasets: list[str]
    translator: str
    library_name: str | None  # peft | transformers | None (no weights in the bundle)
    license: str | None
    recipe: dict[str, Any]
    versions: dict[str, Any]
    commands: list[str]
    report: dict[str, Any] | None = None
    data_counts: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> manifest outputs
    plots: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- facts
def _on_hub(pin: dict[str, Any] | None) -> bool:
    return bool(pin) and pin.get("kind") == "hub"


def original_command(locked_from: str, provenance: dict[str, str], recipe: dict[str, Any]) -> str:
    """`clo-recipe run <recipe> --set ...`: the command that made the run, rebuilt from
    which values came from `--set`."""
    parts = ["clo-recipe", "run", locked_from]
    for dotted, origin in provenance.items():
        if origin != "--set":
            continue
        value: Any = recipe
        for key in dotted.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        text = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip()
        text = text.removesuffix("\n...").strip()
        parts += ["--set", f"{dotted}={text}"]
    return " ".join(shlex.quote(part) for part in parts)


def card_facts(bundle: Path, lock: dict[str, Any], stages: dict[str, dict[str, Any]], *, model_dir: str | None,
               license: str | None, provenance: dict[str, str], missing: list[str]) -> CardFacts:
    """Collect what the card shows from a bundle being written (lock, stage folders, report)."""
    recipe, pins = lock["recipe"], lock["pins"]
    inputs = pins["inputs"]
    translation = recipe["translation"]
    translator = {"memory": "a parallel file supplied by the author (translation memory)",
                  "openai": f"`{translation['model']}` served at an OpenAI-compatible endpoint"}.get(
        translation["backend"], f"`{translation['model']}` ({translation['backend']})")
    library = None
    if model_dir is not None:
        library = "peft" if (bundle / model_dir / "adapter_config.json").is_file() else "transformers"
    report = None
    plots: list[str] = []
    counts: dict[str, dict[str, Any]] = {}
    for stage_id, entry in stages.items():
        folder = bundle / entry["dir"]
        if entry["kind"] == "report" and (folder / "report.json").is_file():
            report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
            plots = sorted(f"{entry['dir']}/{p.name}" for p in folder.glob("*.png"))
        if entry["kind"] in ("source", "translate", "pairs") and (folder / "manifest.json").is_file():
            outputs = json.loads((folder / "manifest.json").read_text(encoding="utf-8")).get("outputs") or {}
            counts[stage_id] = {k: v for k, v in outputs.items() if isinstance(v, (int, float))}
    locked_from = lock.get("locked_from") or "recipe.yaml"
    return CardFacts(
        name=recipe["name"],
        language=recipe["language"],
        method=recipe["method"]["name"],
        baselines=list(recipe["method"].get("baselines") or []),
        base_model=recipe["model"]["base"] if _on_hub(inputs.get("model.base")) else Path(recipe["model"]["base"]).name,
        base_model_on_hub=_on_hub(inputs.get("model.base")),
        datasets=[recipe["data"]["source"]] if _on_hub(inputs.get("data.source")) else [],
        translator=translator,
        library_name=library,
        license=license,
        recipe=recipe,
        versions=pins.get("versions") or {},
        commands=[f"clo-recipe run {LOCK_FILE} --from-bundle .", original_command(locked_from, provenance, recipe)],
        report=report,
        data_counts=counts,
        plots=plots,
        missing=missing,
    )


# --------------------------------------------------------------------------- metadata
def _model_index(facts: CardFacts) -> list[dict[str, Any]]:
    """model-index results for the run's own model, one result per suite."""
    if not facts.report or facts.method not in facts.report.get("models", {}):
        return []
    from ..evaluation.report import headline

    row = headline(facts.report).get(facts.method, {})
    grouped: dict[str, list[dict[str, Any]]] = {}
    for key, stats in row.items():
        if stats.get("value") is None:
            continue
        suite, _, lang = key.rpartition("_")
        if suite not in _SUITE_NAMES:  # an lm-evaluation-harness task
            grouped.setdefault(key, []).append({"type": stats.get("metric", "acc"), "name": key,
                                                "value": round(stats["value"] * 100, 2)})
            continue
        grouped.setdefault(suite, []).append({"type": f"{suite}_{lang}", "name": f"{_SUITE_NAMES[suite]} ({lang} prompts)",
                                              "value": round(stats["value"] * 100, 2)})
    results = []
    for suite, metrics in grouped.items():
        name = _SUITE_NAMES.get(suite, suite)
        dataset = ({"name": f"held-out {facts.language}/en prompts", "type": "clo-recipes/held-out"} if suite in _SUITE_NAMES
                   else {"name": suite, "type": suite})
        results.append({"task": {"type": "text-generation", "name": name}, "dataset": dataset, "metrics": metrics})
    return [{"name": facts.name, "results": results}] if results else []


def front_matter(facts: CardFacts) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if facts.base_model_on_hub:
        meta["base_model"] = facts.base_model
        if facts.library_name:
            meta["base_model_relation"] = "adapter" if facts.library_name == "peft" else "finetune"
    if facts.library_name:
        meta["library_name"] = facts.library_name
    meta["language"] = [facts.language, "en"]
    meta["license"] = facts.license or "other"
    if facts.datasets:
        meta["datasets"] = facts.datasets
    meta["pipeline_tag"] = "text-generation"
    meta["tags"] = ["clo-recipes", "cross-lingual-optimization", facts.method, "language-transfer",
                    facts.recipe["adapter"]["kind"]]
    index = _model_index(facts)
    if index:
        meta["model-index"] = index
    return meta


# --------------------------------------------------------------------------- body
def _metrics_table(report: dict[str, Any]) -> list[str]:
    from ..evaluation.report import fmt_share, headline

    rows = headline(report)
    keys = list(dict.fromkeys(key for row in rows.values() for key in row))
    if not keys:
        return []
    lines = ["| model | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for label, row in rows.items():
        lines.append(f"| {label} | " + " | ".join(fmt_share(row.get(key)) for key in keys) + " |")
    return lines


def _usage(facts: CardFacts) -> list[str]:
    if facts.library_name == "peft":
        loader = ["from peft import AutoPeftModelForCausalLM", "from transformers import AutoTokenizer", "",
                  f"model = AutoPeftModelForCausalLM.from_pretrained({FOLDER_PLACEHOLDER})"]
    else:
        loader = ["from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                  f"model = AutoModelForCausalLM.from_pretrained({FOLDER_PLACEHOLDER})"]
    return ["```python", *loader, f"tokenizer = AutoTokenizer.from_pretrained({FOLDER_PLACEHOLDER})",
            f'messages = [{{"role": "user", "content": "..."}}]  # a query in {get_language(facts.language).name}',
            "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\")",
            "print(tokenizer.decode(model.generate(inputs, max_new_tokens=256)[0][inputs.shape[1]:]))", "```"]


def render_card(facts: CardFacts) -> str:
    language = get_language(facts.language)
    recipe = facts.recipe
    method, adapter, train = recipe["method"], recipe["adapter"], recipe["train"]
    lines = ["---", yaml.safe_dump(front_matter(facts), sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             f"# {facts.name}", "",
             f"`{facts.base_model}` transferred to **{language.name}** ({facts.language}) with "
             + ("Cross-Lingual Optimization ([CLO](" + PAPER + "))" if facts.method == "clo" else f"`{facts.method}`")
             + ", made with clo-recipes from the recipe in `recipe.lock.yaml`.", ""]
    if facts.method == "clo":
        lines += ["CLO trains on English instructions and their machine translations: for each sample the model "
                  f"learns to prefer answering in the language of the query (English for English queries, "
                  f"{language.name} for {language.name} queries), plus a {language.name} NLL term "
                  f"(L = {method['sft_weight']} · L_SFT + {1 - method['sft_weight']:g} · L_CL, β = {method['beta']}).", ""]

    lines += ["## Training", "",
              "| | |", "|---|---|",
              f"| base model | `{facts.base_model}` |",
              f"| data | `{Path(recipe['data']['source']).name if not facts.datasets else facts.datasets[0]}`, "
              f"{recipe['data']['samples']} samples (seed {recipe['data']['seed']}) |",
              f"| translation | {facts.translator} |",
              f"| method | `{facts.method}`" + (f" (baselines: {', '.join(facts.baselines)})" if facts.baselines else "") + " |",
              f"| trained weights | {adapter['kind']}, {adapter['trainable']} |",
              f"| optimisation | {train['epochs']} epochs, lr {train['learning_rate']}, global batch "
              f"{train['global_batch_size']}, max length {train['max_length']} |", ""]
    if facts.data_counts:
        lines += ["Data stages (counts from their manifests):", ""]
        lines += [f"- **{stage}**: " + ", ".join(f"{k} = {v}" for k, v in counts.items())
                  for stage, counts in facts.data_counts.items() if counts]
        lines.append("")

    lines += ["## Results", ""]
    table = _metrics_table(facts.report) if facts.report else []
    if table:
        lines += ["Percent [95% interval] on held-out prompts (`fidelity`: answers in the prompt's language; "
                  "`mc`: multiple-choice accuracy; `win`: judge win rate).", "", *table, ""]
        lines += [f"![{Path(plot).stem}]({plot})" for plot in facts.plots]
        lines.append("")
    else:
        lines += ["No evaluation report in this bundle.", ""]

    if facts.library_name:
        lines += ["## Use", "", *_usage(facts), ""]
    else:
        lines += ["## Use", "", "This bundle holds no trained weights (the train stage had not finished).", ""]

    lines += ["## Reproduce", "",
              "With this folder (reuses its translated data, then trains and evaluates):", "",
              "```bash", facts.commands[0], "```", "",
              "The original command:", "", "```bash", facts.commands[1], "```", "",
              "`recipe.lock.yaml` pins every input (hub commits, file digests, sampled ids) and the package "
              "versions below; `clo-recipe run` refuses to run it when they differ (`--relock` re-pins).", "",
              "| package | version |", "|---|---|"]
    lines += [f"| {name} | {version or 'not installed'} |" for name, version in facts.versions.items()]
    lines.append("")
    if facts.missing:
        lines += [f"Stages not in this bundle (not finished for these inputs): {', '.join(facts.missing)}.", ""]
    lines += ["## Files", "",
              "- `recipe.lock.yaml`: the recipe with every input pinned",
              "- `stages/<stage>-<fingerprint>/`: finished stage folders with `manifest.json` "
              "(translated data in `translate-*`, CLO pairs in `pairs-*`, answers and metrics in `evaluate-*`, "
              "report in `report-*`)",
              "- `inputs/`: the local data files the recipe read",
              "- `bundle.json`: index with a sha256 of every file", "",
              "## Citation", "",
              "```bibtex",
              "@inproceedings{lee2025clo,",
              "  title     = {Cross-Lingual Optimization for Language Transfer in Large Language Models},",
              "  author    = {Lee and Hong and Moon and Lim},",
              "  booktitle = {Proceedings of ACL 2025},",
              "  year      = {2025},",
              "  url       = {" + PAPER + "}",
              "}",
              "```", ""]
    if facts.license is None:
        lines.insert(lines.index("## Citation"), "License: `other` — the weights inherit the base model's and the "
                     "data's licenses; pass `--license` to `clo-recipe export` to state one.")
        lines.insert(lines.index("## Citation"), "")
    return "\n".join(lines)

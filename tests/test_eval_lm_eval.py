"""lm-evaluation-harness bridge: task-name checks, and parity of our MC scoring with the harness."""

from __future__ import annotations

import json
import sys

import pytest

from clo_recipes.errors import CloError
from clo_recipes.evaluation import lm_eval_bridge
from clo_recipes.evaluation.lm_eval_bridge import check_task_names, extract_metrics

QUESTIONS = [
    {"id": "mc-001", "question": "What is the capital of France?", "choices": ["Paris", "Rome", "Madrid", "the park"], "answer": 0},
    {"id": "mc-002", "question": "At how many degrees does water boil?", "choices": ["one hundred", "eight", "zero", "ten"], "answer": 0},
    {"id": "mc-003", "question": "Where does the cat sit?", "choices": ["on the mat", "in the park", "in boiling water", "in Paris"], "answer": 0},
    {"id": "mc-004", "question": "¿Cuál es la capital de Francia?", "choices": ["Roma", "París", "Madrid", "el parque"], "answer": 1},
    {"id": "mc-005", "question": "How do I boil an egg?", "choices": ["Thank you very much.", "Put the egg in boiling water for eight minutes.", "Good morning.", "El perro corre."], "answer": 1},
]


def test_pattern_check_without_the_harness(monkeypatch):
    monkeypatch.setattr(lm_eval_bridge, "lm_eval_installed", lambda: False)
    check_task_names(["mmlu", "global_mmlu_ko", "belebele_kor_Hang", "arc_challenge", "xnli_th"])
    with pytest.raises(CloError) as caught:
        check_task_names(["mmlu", "belebel_kor_Hang", "globl_mmlu_ko"])
    text = caught.value.render()
    assert "unknown lm-evaluation-harness task 'belebel_kor_Hang'" in text
    assert "did you mean 'belebele_kor_Hang'" in text
    assert "did you mean 'global_mmlu_ko'" in text
    assert "the `eval` extra is not installed" in text
    assert "'mmlu'" not in text.split("\n")[0]


def test_check_never_imports_torch(tmp_path):
    import subprocess
    from importlib.metadata import version

    if lm_eval_bridge.lm_eval_installed():  # a warm task index, as after the first validate
        (tmp_path / f"lm-eval-tasks-{version('lm_eval')}.json").write_text('["mmlu"]')
    code = ("import sys; from clo_recipes.evaluation.lm_eval_bridge import check_task_names; "
            "check_task_names(['mmlu']); print('torch' in sys.modules)")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                           env={"CLO_RECIPES_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert shown.stdout.strip() == "False", shown.stderr


def test_task_files_are_checked_for_a_name(tmp_path):
    good = tmp_path / "quiz.yaml"
    good.write_text("task: my_quiz\ndataset_path: json\n")
    check_task_names([str(good)])
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset_path: json\n")
    with pytest.raises(CloError, match="declares no `task:` name"):
        check_task_names([str(bad)])
    with pytest.raises(CloError, match="not readable"):
        check_task_names([str(tmp_path / "missing.yaml")])


def test_extract_metrics_flattens_harness_keys():
    output = {"results": {"belebele_kor_Hang": {"alias": "belebele_kor_Hang", "acc,none": 0.5, "acc_stderr,none": 0.1,
                                               "acc_norm,none": 0.6, "acc_norm_stderr,none": 0.09},
                          "mgsm": {"exact_match,strict-match": 0.25}},
              "n-samples": {"belebele_kor_Hang": {"original": 900, "effective": 20}}}
    assert extract_metrics(output) == {
        "belebele_kor_Hang": {"acc": 0.5, "acc_stderr": 0.1, "acc_norm": 0.6, "acc_norm_stderr": 0.09, "n": 20},
        "mgsm": {"exact_match/strict-match": 0.25}}


@pytest.mark.skipif(not lm_eval_bridge.lm_eval_installed(), reason="needs the `eval` extra (lm-eval)")
def test_our_mc_scores_match_the_harness_on_a_local_task(tmp_path):
    """The same questions scored by lm-evaluation-harness (custom task over a local JSONL) and
    by our scorer give the same accuracy and acc_norm on the tiny model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from clo_recipes.evaluation.multiple_choice import load_mc_file, score_questions
    from clo_recipes.testing.tiny import build_tiny_llama

    folder = build_tiny_llama(tmp_path / "tiny")
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    data = tmp_path / "quiz.jsonl"
    data.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS), encoding="utf-8")
    task = tmp_path / "tasks" / "tiny_quiz.yaml"
    task.parent.mkdir()
    task.write_text(f"""task: tiny_quiz
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
  - metric: acc_norm
""")
    harness = lm_eval_bridge.run_tasks(model, tokenizer, [str(task)], batch_size=4)
    ours = score_questions(model, tokenizer, load_mc_file(data), batch_size=4)
    assert harness["tiny_quiz"]["n"] == 5
    assert harness["tiny_quiz"]["acc"] == pytest.approx(ours["acc"])
    assert harness["tiny_quiz"]["acc_norm"] == pytest.approx(ours["acc_norm"])
    assert harness["tiny_quiz"]["acc_stderr"] == pytest.approx(ours["acc_stderr"])

"""The preference part against TRL's DPOTrainer (sigmoid loss, precomputed reference log-probs)
on identical token ids, after the policy has moved away from the reference."""

import pytest
import torch
from training_data import quadruples

from clo_recipes.methods.dpo import sigmoid_preference
from clo_recipes.training.batch import collate, forward_logps
from clo_recipes.training.chat import Rendered
from clo_recipes.training.data import Example


def test_sigmoid_preference_matches_trl_dpo(tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from clo_recipes.testing.tiny import build_tiny_llama

    folder = build_tiny_llama(tmp_path / "tiny")
    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    rows = []
    for q in quadruples(3):  # both cross-lingual pairs of each sample
        rows.append({"prompt": [{"role": "user", "content": q["x_en"]}],
                     "chosen": [{"role": "assistant", "content": q["y_en"]}],
                     "rejected": [{"role": "assistant", "content": q["y_l"]}]})
        rows.append({"prompt": [{"role": "user", "content": q["x_l"]}],
                     "chosen": [{"role": "assistant", "content": q["y_l"]}],
                     "rejected": [{"role": "assistant", "content": q["y_en"]}]})
    args = DPOConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=6, precompute_ref_log_probs=True,
                     report_to="none", use_cpu=True, bf16=False, beta=0.1, loss_type=["sigmoid"], max_length=128,
                     save_strategy="no", disable_tqdm=True)
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    torch.manual_seed(1)
    with torch.no_grad():  # move the policy away from the precomputed reference
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    dataset = trainer.train_dataset
    features = [dataset[i] for i in range(len(dataset))]
    trainer.model.train()  # TRL files metrics under the current mode
    trl_loss = trainer._compute_loss(trainer.model, trainer.data_collator(features), False).item()

    examples = [Example(str(i), {
        "chosen": Rendered(tuple(f["prompt_ids"] + f["chosen_ids"]), len(f["prompt_ids"])),
        "rejected": Rendered(tuple(f["prompt_ids"] + f["rejected_ids"]), len(f["prompt_ids"])),
    }) for i, f in enumerate(features)]
    with torch.no_grad():
        logps = forward_logps(model, collate(examples, ("chosen", "rejected"), tokenizer.pad_token_id))
    terms = sigmoid_preference(logps["chosen"].sum, logps["rejected"].sum,
                               torch.tensor([f["ref_chosen_logps"] for f in features]),
                               torch.tensor([f["ref_rejected_logps"] for f in features]), beta=0.1)
    assert abs(trl_loss - 0.6931) > 1e-3  # the comparison is not at the trivial starting point
    assert terms.loss().item() == pytest.approx(trl_loss, abs=1e-5)
    trl_chosen = trainer._metrics["train"]["logps/chosen"][-1]
    assert logps["chosen"].sum.mean().item() == pytest.approx(trl_chosen, abs=1e-4)

"""Lock files: local inputs pinned by content, hub references by commit (from the offline
cache), a lock is itself a runnable recipe, and a run refuses with a readable diff when a
pinned item differs (unless it relocks)."""

import hashlib
import json

import pytest
import yaml
from share_stages import calls, use_share_stages, write_inputs

from clo_recipes.engine.run import execute
from clo_recipes.errors import CloError
from clo_recipes.runner.door import lock_recipe, prepare, run
from clo_recipes.runner.testing import write_recipe
from clo_recipes.share.lock import LockMismatch, verify_pins
from clo_recipes.share.lockfile import load_locked


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def stages(monkeypatch, tmp_path):
    return use_share_stages(monkeypatch, tmp_path / "calls.log")


@pytest.fixture
def recipe_file(tmp_path):
    folder = tmp_path / "project"
    return write_recipe(write_inputs(folder), folder)


def fingerprints(plan):
    return {stage.id: stage.fingerprint for stage in plan.stages}


def test_lock_pins_local_model_and_data_by_content(recipe_file):
    path, document = lock_recipe(recipe_file)
    assert path == recipe_file.with_name("recipe.lock.yaml")
    folder = recipe_file.parent
    inputs = document["pins"]["inputs"]
    assert inputs["data.source"] == {"kind": "file", "path": "./data.jsonl",
                                     "sha256": sha256((folder / "data.jsonl").read_bytes())}
    assert inputs["translation.memory_file"]["sha256"] == sha256((folder / "memory.jsonl").read_bytes())
    # a folder: sha256 over "relative name\0file sha256\n", files sorted
    expected = sha256("".join(f"{name}\0{sha256((folder / 'tiny-model' / name).read_bytes())}\n"
                              for name in ("config.json", "sub/weights.bin")).encode())
    assert inputs["model.base"] == {"kind": "folder", "path": "./tiny-model", "files": 2, "sha256": expected}
    assert document["pins"]["versions"]["torch"] and document["pins"]["versions"]["clo-recipes"]
    assert "bitsandbytes" not in document["pins"]["versions"]  # this recipe does not quantize
    assert document["pins"]["hardware"]["precision"] == "fp32"
    assert document["pins"]["samples"]["status"] == "not recorded"

    written = yaml.safe_load(path.read_text())
    assert written["recipe"]["data"]["source"] == "./data.jsonl"  # portable: relative to the lock
    assert written["recipe"]["hardware"] == {"profile": "cpu"}  # as written; the profile fills the rest
    assert written["recipe"]["method"]["beta"] == 0.1  # defaults are frozen into the lock
    assert path.read_text().startswith("# Lock of recipe.yaml")


def test_a_lock_runs_as_a_recipe_with_the_same_stage_fingerprints(recipe_file, stages):
    original = prepare(recipe_file).plan
    path, _ = lock_recipe(recipe_file)
    locked = prepare(path).plan
    assert fingerprints(locked) == fingerprints(original)
    result = execute(locked)
    assert result.ok and calls(stages)[:3] == ["source", "translate", "pairs"]
    # locking a lock re-pins it in place (now with the sampled ids of the finished source stage)
    again, document = lock_recipe(path)
    assert again == path and document["locked_from"] == "recipe.yaml" and document["pins"]["samples"]["train"] == 6


def test_lock_check_command_lists_differences_and_fails(recipe_file):
    from typer.testing import CliRunner

    from clo_recipes.cli import app

    path, _ = lock_recipe(recipe_file)
    runner = CliRunner()
    ok = runner.invoke(app, ["lock", str(path), "--check"])
    assert ok.exit_code == 0 and "everything pinned" in ok.output
    (recipe_file.parent / "memory.jsonl").write_text('{"en": "Hi", "es": "Buenas"}\n')
    bad = runner.invoke(app, ["lock", str(path), "--check", "--set", "hardware.micro_batch_size=1"])
    assert bad.exit_code == 1
    assert "✗ translation.memory_file: locked sha256" in bad.output
    assert "note hardware.micro_batch_size: locked 4, now 1" in bad.output


def test_changed_input_makes_the_locked_run_refuse_with_a_diff(recipe_file, stages):
    path, document = lock_recipe(recipe_file)
    old_digest = document["pins"]["inputs"]["data.source"]["sha256"]
    data = recipe_file.parent / "data.jsonl"
    data.write_text(data.read_text().replace("Blue.", "Green."))
    with pytest.raises(LockMismatch) as caught:
        prepare(path, ["train.learning_rate=2e-5"]).plan
    text = caught.value.render()
    new_digest = sha256(data.read_bytes())
    assert f"data.source: locked sha256 {old_digest[:12]} (data.jsonl), now sha256 {new_digest[:12]} (data.jsonl)" in text
    assert "train.learning_rate: locked 8e-06, now 2e-05" in text
    assert "(2 pinned items differ)" in text and "--relock" in text
    assert calls(stages) == []  # nothing ran

    # --relock: re-pin what is here now at once (planning runs no stage), and again once the
    # source stage has run, so the sampled ids are pinned too
    prepared = prepare(path, ["train.learning_rate=2e-5"], relock=True)
    relocked = yaml.safe_load(path.read_text())
    assert relocked["pins"]["inputs"]["data.source"]["sha256"] == new_digest
    assert relocked["recipe"]["train"]["learning_rate"] == 2e-5 and relocked["locked_from"] == "recipe.yaml"
    assert relocked["pins"]["samples"]["status"] == "not recorded" and calls(stages) == []
    assert run(prepared, only=["source"]).ok and calls(stages) == ["source"]
    relocked = yaml.safe_load(path.read_text())
    assert relocked["pins"]["samples"]["train"] == 6 and relocked["locked_from"] == "recipe.yaml"
    assert prepare(path).plan.stage("source").status == "done"  # now it matches, sampled ids included


def test_a_locked_run_stops_after_the_source_stage_when_its_ids_differ(recipe_file, stages, tmp_path):
    """Planning runs no stage: the lock's sampled ids are held right after the source stage
    runs, before anything is translated."""
    path, _ = lock_recipe(recipe_file, run_source=True)
    document = yaml.safe_load(path.read_text())
    document["pins"]["samples"]["ids_sha256"] = "0" * 64
    document["recipe"]["output_dir"] = str(tmp_path / "elsewhere")  # a fresh run folder: source not done
    path.write_text(yaml.safe_dump(document))
    stages.unlink()
    prepared = prepare(path)  # nothing to compare yet, nothing run
    assert calls(stages) == [] and prepared.plan.stage("source").status == "pending"
    with pytest.raises(LockMismatch, match=r"samples: locked ids sha256 000000000000"):
        run(prepared)
    assert calls(stages) == ["source"]  # stopped before translate


def test_versions_and_numeric_hardware_are_held_to_the_lock(recipe_file):
    path, _ = lock_recipe(recipe_file)
    document = yaml.safe_load(path.read_text())
    document["pins"]["versions"]["torch"] = "0.0.1"
    document["pins"]["hardware"]["precision"] = "bf16"
    document["pins"]["hardware"]["micro_batch_size"] = 64
    document["pins"]["python"] = "2.7.18"
    path.write_text(yaml.safe_dump(document))
    loaded, lock = load_locked(path)
    from clo_recipes.recipe.resolve import resolve

    differences = {d.field: d for d in verify_pins(resolve(loaded), lock)}
    assert differences["versions.torch"].blocking and differences["versions.torch"].locked == "0.0.1"
    assert differences["hardware.precision"].render() == "hardware.precision: locked bf16, now fp32"
    assert differences["hardware.precision"].blocking
    assert not differences["hardware.micro_batch_size"].blocking  # speed, not numerics
    assert not differences["python"].blocking
    assert set(differences) == {"versions.torch", "hardware.precision", "hardware.micro_batch_size", "python"}


def test_sampled_ids_are_pinned_and_checked(recipe_file, stages):
    path, document = lock_recipe(recipe_file, run_source=True)
    samples = document["pins"]["samples"]
    source_dir = next((recipe_file.parent / "runs" / "test").glob("source-*"))
    ids = [line for name, split in (("samples.jsonl", "train"), ("eval_samples.jsonl", "eval"))
           for line in (f"{split}\t{yaml.safe_load(row)['id']}\n" for row in (source_dir / name).read_text().splitlines())]
    assert samples == {"ids_sha256": sha256("".join(ids).encode()), "train": 6, "eval": 4,
                       "source_stage": source_dir.name}
    prepare(path).plan  # matches

    document = yaml.safe_load(path.read_text())
    document["pins"]["samples"]["ids_sha256"] = "0" * 64
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(LockMismatch, match=r"samples: locked ids sha256 000000000000 \(6 train\), now ids sha256"):
        prepare(path).plan


def test_lock_file_errors_point_into_the_lock(recipe_file):
    path, _ = lock_recipe(recipe_file)
    text = path.read_text().replace("  name: test\n", "  name: test\n  nmae: typo\n")
    path.write_text(text)
    with pytest.raises(CloError) as caught:
        load_locked(path)
    line = text.splitlines().index("  nmae: typo") + 1
    assert f"recipe.lock.yaml:{line}:3: nmae: unknown field 'nmae'" in caught.value.render()
    assert "did you mean 'name'?" in caught.value.render()


def fake_hub_cache(root, repo_folder, commit):
    refs = root / repo_folder / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text(commit)


def test_hub_references_pin_from_the_offline_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    fake_hub_cache(tmp_path / "hub", "models--tiny-org--tiny-llama", commit)
    recipe = write_inputs(tmp_path / "p")
    recipe["model"] = {"base": "tiny-org/tiny-llama"}
    path, document = lock_recipe(write_recipe(recipe, tmp_path / "p"))
    assert document["pins"]["inputs"]["model.base"] == {
        "kind": "hub", "repo_type": "model", "id": "tiny-org/tiny-llama", "revision": commit, "source": "cache"}
    assert yaml.safe_load(path.read_text())["recipe"]["model"]["revision"] == commit
    # the locked run loads exactly that commit; asking for a branch instead is refused
    loaded, lock = load_locked(path, ["model.revision=main"])
    from clo_recipes.recipe.resolve import resolve

    differences = verify_pins(resolve(loaded), lock)
    assert [d.render() for d in differences] == [f"model.revision: locked '{commit}', now 'main'"]


def test_an_unpinnable_hub_reference_names_the_field_and_the_ways_out(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    recipe = write_inputs(tmp_path / "p")
    recipe["data"] = {"source": "some-org/some-dataset"}
    with pytest.raises(CloError) as caught:
        lock_recipe(write_recipe(recipe, tmp_path / "p"))
    text = caught.value.render()
    assert "cannot pin data.source = dataset 'some-org/some-dataset' at 'main'" in text
    assert "HF_HUB_OFFLINE is set" in text and "not in the local Hugging Face cache" in text
    assert "set data.revision to a 40-character commit hash" in text


def test_hub_references_pin_from_the_hub_when_it_answers(tmp_path, monkeypatch):
    """Online: the commit comes from the hub's model/dataset info (a stand-in on 127.0.0.1)."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from huggingface_hub import constants

    asked = []

    class Hub(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802
            asked.append(self.path)
            body = json.dumps({"id": "tiny-org/tiny-llama", "sha": "f" * 40}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        recipe = write_inputs(tmp_path / "p")
        recipe["model"] = {"base": "tiny-org/tiny-llama", "revision": "v1.0"}
        _, document = lock_recipe(write_recipe(recipe, tmp_path / "p"))
    finally:
        server.shutdown()
        server.server_close()
    assert document["pins"]["inputs"]["model.base"]["revision"] == "f" * 40
    assert document["pins"]["inputs"]["model.base"]["source"] == "hub"
    assert document["recipe"]["model"]["revision"] == "f" * 40
    assert asked == ["/api/models/tiny-org/tiny-llama/revision/v1.0"]


def test_a_sweep_holds_a_lock_like_run_does_except_its_grid(recipe_file, stages):
    """The sweep plans every point through the same door as `run`: the grid's fields and the
    point's name may differ from the lock, everything else (`--set`, `--profile`, inputs) is
    held to it as `run` holds it."""
    from typer.testing import CliRunner

    from clo_recipes.cli import app
    from clo_recipes.runner.sweep import parse_grid, run_sweep

    path, _ = lock_recipe(recipe_file)
    axes = parse_grid(["data.samples=3,6", "method.name=clo,sft"])
    points = run_sweep(path, axes, base_name="t", profile="cpu", reuse=False)
    assert [p.error for p in points] == [None] * 4 and {p.name for p in points} == {"t-3-clo", "t-3-sft", "t-6-clo",
                                                                                    "t-6-sft"}
    resolved = yaml.safe_load((points[0].run_dir / "recipe.resolved.yaml").read_text())
    assert resolved["hardware_profile"] == "cpu" and resolved["recipe"]["data"]["samples"] == 3
    with pytest.raises(LockMismatch, match=r"train.learning_rate: locked 8e-06, now 2e-05"):
        run_sweep(path, axes, base_name="t", extra=["train.learning_rate=2e-5"], reuse=False)
    with pytest.raises(LockMismatch, match=r"hardware.precision: locked fp32, now bf16"):
        run_sweep(path, axes, base_name="t", profile="single-24gb", reuse=False)
    refused = CliRunner().invoke(app, ["sweep", str(path), "--grid", "data.samples=3", "--set", "train.epochs=3"])
    assert refused.exit_code != 0 and isinstance(refused.exception, LockMismatch)
    assert "train.epochs: locked 2.0, now 3.0" in refused.exception.render()


def test_plan_of_a_lock_shows_what_run_would_refuse(recipe_file):
    from typer.testing import CliRunner

    from clo_recipes.cli import app

    path, _ = lock_recipe(recipe_file)
    runner = CliRunner()
    same = runner.invoke(app, ["plan", str(path)])
    assert same.exit_code == 0 and "matches its lock recipe.lock.yaml" in same.output
    changed = runner.invoke(app, ["plan", str(path), "--set", "train.learning_rate=2e-5", "--json"])
    assert changed.exit_code == 0, changed.output
    lock = json.loads(changed.output)["lock"]
    assert lock["differences"] == [{"field": "train.learning_rate", "locked": "8e-06", "now": "2e-05", "blocking": True}]


def test_a_judge_the_run_serves_is_pinned_by_its_weights(tmp_path, stages):
    """`eval.judge.backend: vllm` serves eval.judge.model itself: the lock pins that folder by
    content (like model.base) and records vLLM's version; a judge endpoint stays a served name."""
    folder = tmp_path / "project"
    fields = write_inputs(folder)
    judged = {"suites": ["fidelity", "judge"], "generation_backend": "transformers"}
    served = {**fields, "eval": {**judged, "judge": {"backend": "vllm", "model": "./tiny-model"}}}
    _, document = lock_recipe(write_recipe(served, folder))
    inputs = document["pins"]["inputs"]
    assert inputs["eval.judge.model"] == inputs["model.base"] and inputs["model.base"]["kind"] == "folder"
    assert "vllm" in document["pins"]["versions"]

    elsewhere = {**fields, "eval": {**judged, "judge": {"endpoint": "http://127.0.0.1:9/v1", "model": "judge-7b"}}}
    _, document = lock_recipe(write_recipe(elsewhere, folder, "endpoint.yaml"))
    assert document["pins"]["inputs"]["eval.judge.model"] == {"kind": "served", "endpoint": "http://127.0.0.1:9/v1",
                                                              "model": "judge-7b"}
    assert "vllm" not in document["pins"]["versions"]

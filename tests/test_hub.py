"""Model cards with hub metadata and measured numbers; uploads (a dry run, and a fake hub API: no test goes online)."""

import pytest
from huggingface_hub import ModelCard

from compact_nlp.cli import main
from compact_nlp.hub import files_to_upload, model_card, push_folder

RESULTS = {
    "recipe": {"task": "mrpc", "model": "sentence-transformers/all-MiniLM-L6-v2", "teacher": None,
               "protocol": {"train_subset": None, "epochs": 3, "batch_size": 32, "learning_rate": 5e-5,
                            "max_length": 128}, "export": {"target_platform": "arm"}},
    "summary": {"seeds": [1, 2], "validation/accuracy": {"mean": 84.5, "sd": 0.7, "values": [84.0, 85.0]},
                "validation/f1": {"mean": 88.9, "sd": 0.4, "values": [88.6, 89.2]},
                "train_minutes_per_seed": 9.5, "latency_ms_batch1_median": 7.1},
    "per_seed": [{"artifact": "model.ort", "train_examples": 3302, "heldout_examples": 366,
                  "latency_ms_batch1": {"median": 7.1, "p90": 9.0, "mean_tokens": 53.2},
                  "size_mb": {"model.ort": 86.8, "model.safetensors": 86.7}, "export_parity": 8e-8,
                  "machine": {"platform": "Linux-x86_64", "cores": 2}, "versions": {"compact": "0.1.0"}}],
}


def test_card_has_hub_metadata_and_the_measured_numbers(tmp_path):
    text = model_card(RESULTS, repo_name="me/minilm-mrpc")
    (tmp_path / "README.md").write_text(text)
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert card.data.library_name == "compact-nlp" and card.data.datasets == ["nyu-mll/glue"]
    assert "ort-mobile" in card.data.tags
    f1 = next(r for r in card.data.eval_results if r.metric_type == "f1")
    assert f1.metric_value == 88.9 and f1.dataset_config == "mrpc" and f1.dataset_split == "validation"
    assert "84.50 ± 0.70" in text and "median 7.1 ms, p90 9.0 ms" in text and "Linux-x86_64, 2 cores" in text


@pytest.fixture
def folder(tmp_path):
    for name in ("config.json", "model.safetensors", "model.ort", "README.md", "checkpoints/checkpoint-1/x.bin",
                 ".model.onnx.abc.tmp"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x" * 10)
    return tmp_path


def test_dry_run_lists_exactly_what_would_be_uploaded(folder, capsys):
    assert [name for name, _ in files_to_upload(folder)] == ["README.md", "config.json", "model.ort",
                                                             "model.safetensors"]
    assert main(["push", str(folder), "me/model", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "would upload 4 files" in printed and "checkpoints" not in printed


def test_push_goes_through_huggingface_hub(folder):
    class RecordingApi:  # stands in for HfApi so that no test contacts a hub
        calls = []

        def create_repo(self, repo_id, **kwargs):
            self.calls.append(("create_repo", repo_id, kwargs["private"]))

        def upload_folder(self, **kwargs):
            self.calls.append(("upload_folder", kwargs["repo_id"], kwargs["commit_message"]))

    push_folder(folder, "me/model", private=True, commit_message="first", api=RecordingApi())
    assert RecordingApi.calls == [("create_repo", "me/model", True), ("upload_folder", "me/model", "first")]


def test_pushing_a_folder_that_is_not_a_model_is_refused(tmp_path, capsys):
    assert main(["push", str(tmp_path), "me/model", "--dry-run"]) == 2
    assert "not a compact folder" in capsys.readouterr().err

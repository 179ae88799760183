"""CTranslate2 int8 as a peer (run by the ctranslate2 environment's python; protocol: worker_common).

Its documented recipe: `ct2-transformers-converter --quantization int8` (TransformersConverter), then
ctranslate2.Encoder(compute_type="int8") on CPU. Its BERT converter keeps BertModel (encoder + pooler); for a
classifier the head (one Linear on the pooled output, as BertForSequenceClassification applies it) runs in numpy.
"""

import sys
from pathlib import Path

sys.path[0:1] = []  # this folder holds compact's modules: they must not shadow the peer's packages
sys.path.append(str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import worker_common as common  # noqa: E402


ROW = "CTranslate2 int8"


def save_classifier_head(hf_folder: str, out: Path) -> str:
    """The classifier's Linear (applied to the pooled output, as BertForSequenceClassification does) as an .npz, so
    that loading the row needs no torch."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(hf_folder)
    path = out / "classifier_head.npz"
    np.savez(path, weight=model.classifier.weight.detach().numpy().T.copy(),
             bias=model.classifier.bias.detach().numpy().copy())
    return str(path)


def hf_copy(spec: dict) -> str:
    """The transformers folder with `position_embedding_type` in its config: the converter asserts it is "absolute",
    and transformers 5 no longer writes it (BERT's embeddings are absolute)."""
    import json
    import shutil

    folder = spec["out"] / "hf"
    shutil.copytree(spec["hf_folder"], folder, dirs_exist_ok=True)
    config = json.loads((folder / "config.json").read_text())
    config.setdefault("position_embedding_type", "absolute")
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def convert(spec: dict) -> dict:
    from ctranslate2.converters import TransformersConverter

    model_dir = spec["out"] / "ct2-int8"
    TransformersConverter(hf_copy(spec)).convert(str(model_dir), quantization="int8", force=True)
    head = save_classifier_head(spec["hf_folder"], spec["out"]) if spec["output"] == "logits" else None
    return {"files": [str(model_dir)] + ([head] if head else []), "model_dir": str(model_dir), "head": head}


def load(spec: dict, artifacts: dict, name: str, threads: int):
    import ctranslate2

    encoder = ctranslate2.Encoder(artifacts["model_dir"], device="cpu", compute_type="int8", intra_threads=threads,
                                  inter_threads=1)
    head = np.load(artifacts["head"]) if artifacts["head"] else None
    weight, bias = (head["weight"], head["bias"]) if head is not None else (None, None)

    def call(x):
        out = encoder.forward_batch([x["input_ids"][0].tolist()], token_type_ids=[x["token_type_ids"][0].tolist()])
        if weight is not None:
            return np.asarray(out.pooler_output) @ weight + bias
        return np.asarray(out.last_hidden_state)

    return call


def runtime(artifacts: dict) -> str:
    import ctranslate2

    return f"ctranslate2 {ctranslate2.__version__}"


if __name__ == "__main__":
    common.main((ROW,), convert, load, runtime, modules=("ctranslate2",))

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


def classifier_head(hf_folder: str):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(hf_folder)
    weight, bias = (model.classifier.weight.detach().numpy().T.copy(), model.classifier.bias.detach().numpy().copy())
    return lambda pooled: pooled @ weight + bias


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


def main() -> None:
    import ctranslate2
    from ctranslate2.converters import TransformersConverter

    spec = common.read_spec()
    model_dir = spec["out"] / "ct2-int8"
    TransformersConverter(hf_copy(spec)).convert(str(model_dir), quantization="int8", force=True)
    encoder = ctranslate2.Encoder(str(model_dir), device="cpu", compute_type="int8", intra_threads=spec["threads"],
                                  inter_threads=1)
    head = classifier_head(spec["hf_folder"]) if spec["output"] == "logits" else None

    def call(x):
        out = encoder.forward_batch([x["input_ids"][0].tolist()], token_type_ids=[x["token_type_ids"][0].tolist()])
        if head is not None:
            return head(np.asarray(out.pooler_output))
        return np.asarray(out.last_hidden_state)

    row = common.row(spec, "CTranslate2 int8", call, [model_dir], common.finish_output(spec))
    common.write(spec, f"ctranslate2 {ctranslate2.__version__}", [row])


if __name__ == "__main__":
    main()

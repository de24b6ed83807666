"""MLflow pyfunc model over a saved exitflow checkpoint directory.

The checkpoint (HF ``save_pretrained`` backbone + exit weights + config) is logged as an
artifact; nothing of ours is pickled except this small wrapper class, which MLflow ships via
``code_paths``. ``predict`` takes a DataFrame with ``text_a`` (and optional ``text_b``) and
returns the prediction and exit layer per row, using the criterion in ``model_config``.
"""

from __future__ import annotations

import mlflow.pyfunc


class MultiExitPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from tasks.backbones import load_checkpoint

        self.model, self.tokenizer, self.meta = load_checkpoint(context.artifacts["checkpoint"])
        self.config = dict(context.model_config or {})

    def predict(self, context, model_input, params=None):
        import pandas as pd

        from models.criteria import make_criterion

        cfg = {**self.config, **(params or {})}
        criterion = make_criterion(cfg["criterion"], float(cfg["threshold"])) if cfg.get("criterion") else None
        texts_a = list(model_input["text_a"])
        texts_b = list(model_input["text_b"]) if "text_b" in model_input else None
        enc = self.tokenizer(texts_a, texts_b, truncation=True, max_length=int(cfg.get("max_length", 128)),
                             padding=True, return_tensors="pt")
        out = self.model.early_exit(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"), criterion)
        pred = out.logits.squeeze(-1) if self.model.config.regression else out.logits.argmax(-1)
        return pd.DataFrame({"prediction": pred.tolist(), "exit_layer": out.exit_layer.tolist()})

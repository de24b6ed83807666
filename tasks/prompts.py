"""Step 1 of ``exitflow generate``: templated instruction prompts over prepared tasks' text.

``build_prompts`` writes ``prompts/{train,dev,test}.jsonl`` (``{"prompt", "source"}`` per line):
each source's first text column (PTB spacing undone) under a seeded choice of its instruction
templates, plus an optional user JSONL (``{"prompt": ...}`` per line), split like the rest.
"""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

from prefect import task

from config.params import GeneratePromptsConfig
from models.generation import GenerationError
from tasks.caching import ARTIFACT_CACHE
from tasks.data import load_columns, load_meta
from tasks.io import atomic_write_text, write_result

SPLITS = ("train", "dev", "test")

# instruction templates over a source's text; {text} is one sentence
TEMPLATES = {
    "sst2": ["Summarize this movie review in one sentence: {text}",
             "Is this movie review positive or negative? Explain in one sentence. Review: {text}",
             "Rewrite this movie review in simpler words: {text}"],
    "snli": ["Describe this scene in more detail: {text}",
             "Write one question about this sentence: {text}",
             "Continue the story in two sentences: {text}"],
}
GENERIC_TEMPLATES = ["Explain this text in one sentence: {text}", "Rewrite this text in simpler words: {text}"]


def detokenize(text: str) -> str:
    """Undo the PTB-style spacing of SST-2/SNLI text (``it 's`` -> ``it's``, `` ,`` -> ``,``)."""
    text = text.replace("-LRB-", "(").replace("-RRB-", ")").replace("\\/", "/").replace("``", '"').replace("''", '"')
    text = re.sub(r" (n't|'s|'re|'ve|'ll|'d|'m)\b", r"\1", text)
    text = re.sub(r" ([.,!?;:%)])", r"\1", text)
    return re.sub(r"\( ", "(", text).strip()


def read_prompt_jsonl(path: Path) -> list[dict]:
    """``{"prompt": ...}`` (optionally ``"response"``) per line; blank lines skipped.

    Raises:
        GenerationError: a line that is not a JSON object with a non-empty string ``prompt``
            (the file and line are named).
    """
    rows = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise GenerationError(f"{path}:{number}: not valid JSON ({err.msg}); expected one object per line like "
                                  '{"prompt": "..."}') from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise GenerationError(f'{path}:{number}: expected an object with a non-empty string "prompt"; got {line[:80]!r}')
        rows.append({"prompt": row["prompt"], "source": "jsonl"})
    return rows


def _source_texts(data_dir: Path, task: str) -> dict[str, list[str]]:
    """Distinct first-column sentences per split; a task without a train split lends half of dev."""
    texts = {}
    for split in load_meta(data_dir, task)["rows"]:
        column = load_columns(data_dir, task, split)["text_a"]
        texts[split] = list(dict.fromkeys(detokenize(t) for t in column if t))
    if "train" not in texts and "dev" in texts:
        dev = texts["dev"]
        texts["train"], texts["dev"] = dev[: len(dev) // 2], dev[len(dev) // 2:]
    return texts


def templated_prompts(texts: dict[str, list[str]], source: str, counts: dict[str, int], rng: random.Random) -> dict[str, list[dict]]:
    """``counts[split]`` prompts per split from ``texts[split]``, a seeded template each."""
    templates = TEMPLATES.get(source, GENERIC_TEMPLATES)
    out = {}
    for split, n in counts.items():
        pool = texts.get(split, [])
        picked = rng.sample(pool, min(n, len(pool)))
        out[split] = [{"prompt": rng.choice(templates).format(text=t), "source": source} for t in picked]
    return out


@task(name="build_prompts", cache_policy=ARTIFACT_CACHE, persist_result=True)
def build_prompts(prompts: GeneratePromptsConfig, data_dir: Path, out_dir: Path, seed: int = 42) -> dict:
    """Seeded prompts per split: each source task lends an equal share of each split's count;
    a user JSONL is split 1/2 train, 1/4 dev, 1/4 test in file order and added."""
    cfg = prompts
    rng = random.Random(seed)
    splits = {split: [] for split in SPLITS}
    share = {split: math.ceil(getattr(cfg, split) / max(1, len(cfg.sources))) for split in SPLITS}
    for source in cfg.sources:
        for split, rows in templated_prompts(_source_texts(Path(data_dir), source), source, share, rng).items():
            splits[split].extend(rows)
    if cfg.jsonl is not None:
        user = read_prompt_jsonl(cfg.jsonl)
        if not user:
            raise GenerationError(f"generate.prompts.jsonl: {cfg.jsonl} holds no prompts")
        a, b = len(user) // 2, (3 * len(user)) // 4
        for split, rows in zip(SPLITS, (user[:a], user[a:b], user[b:])):
            splits[split].extend(rows)
    for split in SPLITS:
        splits[split] = splits[split][: getattr(cfg, split)] if cfg.jsonl is None else splits[split]
        if not splits[split]:
            raise GenerationError(f"generate.prompts: the {split} split is empty (sources {cfg.sources}, jsonl {cfg.jsonl})")
        atomic_write_text(Path(out_dir) / f"{split}.jsonl", "".join(json.dumps(r) + "\n" for r in splits[split]))
    return write_result(out_dir, {split: Path(out_dir) / f"{split}.jsonl" for split in SPLITS}
                        | {"counts": {s: len(r) for s, r in splits.items()}})

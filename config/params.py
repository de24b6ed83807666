"""The one configuration schema: ``params.yaml`` -> typed, validated sections.

Shared by the CLI, the Prefect flows and the ``dvc.yaml`` stages (each stage lists the
sections it reads under ``params``). Relative paths are resolved against the directory of
the params file, so every entry point works from any working directory.

Errors name the offending key: ``params.yaml: train.epochs: Input should be greater than 0``.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models.criteria import CRITERIA
from models.errors import ExitflowError
from models.generation import TOKEN_CRITERIA
from models.leco import SEARCH_SPACE, check_architecture
from models.past_future import NAIVE, PAST_STRATEGIES
from models.registry import EXIT_STACKS, HEADS, SCORERS, choices
from models.objectives import OBJECTIVES

SPLITS = ("train", "dev", "test")


def known_names(value: list[str], allowed, what: str, required: bool = False) -> list[str]:
    """A validator's body: every name in ``value`` is one of ``allowed`` (and, when ``required``, there is one)."""
    bad = [name for name in value if name not in allowed]
    if bad or (required and not value):
        raise ValueError(f"unknown {what} {bad}; choose from {', '.join(allowed)}")
    return value


class ConfigError(ExitflowError, ValueError):
    """A params file or override is invalid; the message names the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskSpec(Section):
    """A dataset declared by its files (ELUE built-ins use the same schema).

    ``files`` maps split -> path (relative to ``data.source_dir``); format follows the suffix
    (.tsv, .csv, .jsonl). ``csv_quoted`` lists splits whose TSV uses CSV quoting with doubled
    quotes. ``label_column`` may list alternatives (first present wins). Class labels are ints
    ``0..num_labels-1`` or, with ``label_names``, names mapped to their index.
    """

    files: dict[Literal["train", "dev", "test"], str]
    text_columns: list[str] = Field(min_length=1, max_length=2)
    label_column: str | list[str] = "label"
    label_type: Literal["class", "float"] = "class"
    num_labels: int = Field(default=2, ge=1)
    label_names: list[str] | None = None
    metric: Literal["accuracy", "acc_f1", "pearson_spearman"] = "accuracy"
    csv_quoted: list[Literal["train", "dev", "test"]] = []

    @property
    def regression(self) -> bool:
        return self.label_type == "float"

    @property
    def num_outputs(self) -> int:
        return 1 if self.regression else (len(self.label_names) if self.label_names else self.num_labels)


class DataConfig(Section):
    source_dir: Path = Path("../shared/data/elue")
    out_dir: Path = Path("data")
    tasks: list[str] = ["sst2", "mrpc", "stsb", "snli", "scitail"]
    hub: dict[str, str] = {}
    custom: dict[str, TaskSpec] = {}


class BackboneConfig(Section):
    name: str = "minilm-l6"
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    max_length: int = Field(default=128, ge=8, le=512)


class SubsampleConfig(Section):
    train: int | None = Field(default=None, ge=1)
    dev: int | None = Field(default=None, ge=1)
    test: int | None = Field(default=None, ge=1)


class TrainConfig(Section):
    task: str = "sst2"
    strategies: list[str] = ["joint", "alternating"]
    head: str = "linear"
    head_dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    pooling: Literal["cls", "mean"] = "cls"
    exit_scorer: str | None = "lte"  # a registered exit scorer trained with the exits (BERxiT LTE), or null
    epochs: int = Field(default=2, ge=1)
    batch_size: int = Field(default=32, ge=1)
    lr: float = Field(default=1e-4, gt=0.0)
    weight_decay: float = Field(default=0.01, ge=0.0)
    warmup_ratio: float = Field(default=0.1, ge=0.0, le=1.0)
    max_grad_norm: float = Field(default=1.0, gt=0.0)
    subsample: SubsampleConfig = SubsampleConfig()
    head_options: dict = {}  # a registered exit stack's options (set by the Past-Future flow)
    freeze_layers: int = Field(default=0, ge=0)  # stochastic freezing of the bottom K layers (Past-Future 3.4)

    def record(self) -> dict:
        """The config as checkpoints store it: the exit-stack fields only when set, so models
        that use none read as they did before those fields existed."""
        saved = self.model_dump(mode="json")
        for key in ("head_options", "freeze_layers"):
            if saved[key] == type(self).model_fields[key].default:
                del saved[key]
        return saved

    @field_validator("strategies")
    @classmethod
    def _strategies(cls, value):
        return known_names(value, OBJECTIVES, "strategy", required=True)


    @field_validator("head")
    @classmethod
    def _head(cls, value):
        if value not in HEADS and value not in EXIT_STACKS:
            raise ValueError(f"unknown head {value!r}; choose one of {choices({**HEADS, **EXIT_STACKS})}")
        return value

    @field_validator("exit_scorer")
    @classmethod
    def _exit_scorer(cls, value):
        if value is not None and value not in SCORERS:
            raise ValueError(f"unknown exit scorer {value!r}; choose one of {choices(SCORERS)} or null")
        return value


class EvaluateConfig(Section):
    criteria: list[str] = ["static", "maxprob", "entropy", "patience", "lte"]
    sweep_points: int = Field(default=25, ge=2)
    patience_delta: float = Field(default=0.1, gt=0.0)
    quality_tolerance: float = Field(default=1.0, ge=0.0)
    batch_size: int = Field(default=64, ge=1)
    timing_batch_sizes: list[int] = [1, 32]
    timing_repeats: int = Field(default=3, ge=1)
    timing_rows: int = Field(default=256, ge=1)
    cobee_patience: int = Field(default=1, ge=1)  # COBEE's t (LECO Eq. 7); the LECO flow sets it from leco.cobee_patience

    @field_validator("criteria")
    @classmethod
    def _criteria(cls, value):
        return known_names(value, sorted(CRITERIA), "criterion")


class HasheeConfig(Section):
    """HashEE: hash table and token-level exit training (training hyper-parameters come from ``train``)."""

    kind: Literal["random", "random_incons", "frequency", "mi", "clustered"] = "frequency"
    buckets: int = Field(default=6, ge=1)
    num_layers: int | None = Field(default=None, ge=1)  # None: all backbone layers
    equal_mass: bool = False
    include_dev: bool = False  # count tokens on train + dev (frequency)
    pooling: Literal["cls", "mean"] = "cls"  # what HashEE's classifier reads after layer L; not train.pooling
    seed: int = 0
    timing_batch_sizes: list[int] = [1, 32]
    study_kinds: list[Literal["random", "random_incons", "frequency", "mi", "clustered"]] = [
        "random", "random_incons", "frequency", "mi", "clustered"]
    study_grid: list[tuple[int, int]] = [(6, 6), (6, 3), (6, 2), (3, 3)]  # (layers, buckets), frequency hash

    @property
    def name(self) -> str:
        layers = f"L{self.num_layers}" if self.num_layers else "Lall"
        return f"{self.kind}-{layers}-B{self.buckets}" + ("-mass" if self.equal_mass else "") + f"-{self.pooling}"


class ConsistenteeConfig(Section):
    """ConsistentEE: init with the ``weighted`` objective, then rounds of memorized layer ->
    policy step -> heads step (training hyper-parameters not listed here come from ``train``)."""

    reward: Literal["hardness", "vanilla"] = "hardness"
    alpha: float = Field(default=0.1, ge=0.0)          # depth penalty per layer in the reward
    copies: int = Field(default=8, ge=1)               # K sampled trajectories per instance
    tau: float = Field(default=0.5, gt=0.0, lt=1.0)    # inference: exit when pi > tau
    rounds: int = Field(default=3, ge=1)               # at most; stops early when dev stops improving
    early_stop: bool = True                            # stop at the first round whose dev reward does not improve
    policy_epochs: int = Field(default=2, ge=1)
    policy_lr: float = Field(default=1.0e-3, gt=0.0)
    heads_epochs: int = Field(default=1, ge=1)
    heads_lr: float = Field(default=5.0e-5, gt=0.0)
    epsilon_start: float = Field(default=0.2, ge=0.0, le=1.0)  # epsilon-greedy, decays linearly per round
    epsilon_end: float = Field(default=0.0, ge=0.0, le=1.0)
    forgetting_evals_per_epoch: int = Field(default=2, ge=0)   # train-split evaluations during init (Table 1)
    regression_tolerance: float = Field(default=0.5, gt=0.0)  # regression: "correct" means |y_hat - y| < this
    ablation_alphas: list[float] = [0.02, 0.1, 0.3]
    ablation_rounds: int = Field(default=1, ge=1)

    @field_validator("ablation_alphas")
    @classmethod
    def _alphas(cls, value):
        if not value or any(a < 0 for a in value):
            raise ValueError("ablation_alphas must be a non-empty list of alphas >= 0")
        return value

    @property
    def name(self) -> str:
        return f"{self.reward}-a{self.alpha:g}"


PREDICTORS = ("majority", "linear_m", "linear_b", "bilstm", "bert")


class LearnabilityConfig(Section):
    """Learnability of instance difficulty (HashEE paper, section 2): ``exitflow learnability``."""

    difficulty_dir: Path = Path("../shared/data/difficulty")   # published snli_human / snli_model
    conll_dir: Path = Path("../shared/data/conll2003")
    studies: list[Literal["human", "snli_model", "sentence", "token"]] = ["human", "snli_model", "sentence", "token"]
    predictors: list[Literal["majority", "linear_m", "linear_b", "bilstm", "bert"]] = list(PREDICTORS)
    parts: tuple[float, float, float] = (0.7, 0.1, 0.2)  # predictor train/dev/test of an annotated dev split
    published_dev_fraction: float = Field(default=0.1, gt=0.0, lt=1.0)  # snli_model: held out of its train file
    oversample: bool = True
    batch_size: int = Field(default=32, ge=1)
    linear_epochs: int = Field(default=10, ge=1)
    linear_lr: float = Field(default=1.0e-3, gt=0.0)
    bilstm_epochs: int = Field(default=5, ge=1)
    bilstm_lr: float = Field(default=1.0e-3, gt=0.0)
    bert_epochs: int = Field(default=3, ge=1)
    bert_lr: float = Field(default=1.0e-4, gt=0.0)
    bert_max_train_rows: int | None = Field(default=None, ge=1)  # cap (oversampled) rows per BERT epoch
    token_train_sentences: int | None = Field(default=4000, ge=1)  # CoNLL annotator training subsample
    token_epochs: int = Field(default=2, ge=1)
    token_lr: float = Field(default=1.0e-4, gt=0.0)
    human_epochs: int = Field(default=5, ge=1)
    human_lr: float = Field(default=5.0e-5, gt=0.0)

    @field_validator("parts")
    @classmethod
    def _parts(cls, value):
        if any(v <= 0 for v in value) or abs(sum(value) - 1.0) > 1e-6:
            raise ValueError(f"parts (train, dev, test) must be positive and sum to 1; got {list(value)}")
        return value


class MlflowConfig(Section):
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str = "exitflow-spine"
    registered_model: str = "exitflow-multi-exit"


class ScheduleConfig(Section):
    cron: str = "0 3 * * *"
    deployment: str = "nightly-comparison"


class PastFutureConfig(Section):
    """Global Past-Future (``exitflow past-future``): one model per past strategy, each without
    and with the imitated future, next to local exits trained with the same budget (``train``)."""

    tasks: list[str] = ["sst2", "mrpc"]
    strategies: list[str] = list(PAST_STRATEGIES)
    future: list[bool] = [False, True]  # vote / ensemble have no future part and run past-only
    gate: Literal["scalar", "vector"] = "scalar"
    freeze_layers: int = Field(default=0, ge=0)  # K: bottom layers frozen with p decaying 1 -> 0 over steps
    pooling: Literal["cls", "mean"] = "mean"
    objective: Literal["weighted", "joint"] = "weighted"
    local: list[str] = ["joint", "weighted"]  # local-exit baselines (entropy; weighted with patience is PABEE)
    speedups: list[float] = [2.0, 3.0]  # layer speed-ups the comparison table reads (chosen on dev)
    in_default_run: str | None = "concat"  # the strategy (with future) `exitflow run` adds on train.task, or null

    @field_validator("strategies")
    @classmethod
    def _strategies(cls, value):
        return known_names(value, PAST_STRATEGIES, "past strategy", required=True)

    @field_validator("local")
    @classmethod
    def _local(cls, value):
        return known_names(value, OBJECTIVES, "strategy")

    @field_validator("in_default_run")
    @classmethod
    def _in_default_run(cls, value):
        if value is not None and (value not in PAST_STRATEGIES or value in NAIVE):
            choices_ = [s for s in PAST_STRATEGIES if s not in NAIVE]
            raise ValueError(f"unknown past strategy {value!r} for the default run; choose one of {', '.join(choices_)} or null")
        return value

    def settings(self) -> list[tuple[str, bool]]:
        """``(past strategy, future)`` pairs to train, in order."""
        return [(s, f) for s in self.strategies for f in self.future if not (f and s in NAIVE)]

    def exits(self, past: str, future: bool) -> dict:
        """The exit stack options of one setting."""
        return {"past": past, "future": future, "gate": self.gate}


LECO_BASELINES = ("jt-linear", "jt-mha", "alt", "2st-mha", "past-future")


class LecoConfig(Section):
    """LECO (``exitflow leco``): search the exits' architecture, derive it, retrain it, and
    compare it (training budget, lr and seed from ``train``) with the baselines' exits."""

    tasks: list[str] = ["sst2", "mrpc"]
    search_space: dict[str, list[str]] = {key: list(ops) for key, ops in SEARCH_SPACE.items()}  # candidates per choice
    inner_size: int = Field(default=32, ge=1)  # d_e in search and retraining (the paper: 32 in search; 64 an option)
    search_epochs: int = Field(default=2, ge=1)  # each epoch: train split re-split 1:1 into D1 (weights) / D2 (alphas)
    architecture_lr: float = Field(default=3.0e-3, gt=0.0)  # 10x train.lr, the paper's ratio (2e-4 vs 2e-5)
    architecture_weight_decay: float = Field(default=1.0e-3, ge=0.0)
    baselines: list[str] = list(LECO_BASELINES)  # the multi-exit training comparison (paper Table 2)
    criteria: list[str] = ["cobee", "entropy", "patience", "lte"]  # exiting comparison on the LECO model
    cobee_patience: int = Field(default=1, ge=1)  # COBEE's t (Eq. 7); the swept knob is tau
    speedups: list[float] = [1.5, 2.0, 2.5, 3.0]  # layer speed-ups the exiting comparison reads (chosen on dev)

    @field_validator("search_space", mode="before")
    @classmethod
    def _null_op(cls, value):
        """Choices left out keep every candidate; an unquoted ``null`` in YAML reads as None: the ``null`` op."""
        if isinstance(value, dict):
            given = {k: ["null" if op is None else op for op in v] if isinstance(v, list) else v for k, v in value.items()}
            return {**{key: list(ops) for key, ops in SEARCH_SPACE.items()}, **given}
        return value

    @field_validator("search_space")
    @classmethod
    def _search_space(cls, value):
        check_architecture(value, 1, "leco.search_space")
        return value

    @field_validator("baselines")
    @classmethod
    def _baselines(cls, value):
        return known_names(value, LECO_BASELINES, "baseline")

    @field_validator("criteria")
    @classmethod
    def _criteria(cls, value):
        return known_names(value, sorted(CRITERIA), "criterion")

    @model_validator(mode="after")
    def _heads_divide(self):
        heads = sorted({int(op.split("_")[1]) for slot in ("encoder_1", "encoder_2")
                        for op in self.search_space[slot] if op.startswith("mha_")})
        bad = [h for h in heads if self.inner_size % h]
        if bad:
            raise ValueError(f"inner_size (d_e) {self.inner_size} does not divide by the head count(s) {bad} of the "
                             f"search space's mha ops; choose a multiple of {math.lcm(*heads)}")
        return self

    def exits(self, architecture=None) -> dict:
        """Exit-stack options: the search space (``architecture=None``) or a derived architecture."""
        return {"architecture": self.search_space if architecture is None else architecture, "inner_size": self.inner_size}


class GeneratePromptsConfig(Section):
    """Prompts for ``exitflow generate``: instruction templates over prepared tasks' text (each
    source's first text column), plus an optional user JSONL (``{"prompt": ...}`` per line)."""

    sources: list[str] = ["sst2", "snli"]
    jsonl: Path | None = None  # extra prompts, split train/dev/test like the templated ones
    train: int = Field(default=384, ge=1)
    dev: int = Field(default=32, ge=1)
    test: int = Field(default=64, ge=1)


class GenerateTrainConfig(Section):
    """Initialisation of the exits (weighted loss over exit points, exit heads only)."""

    epochs: int = Field(default=3, ge=0)
    lr: float = Field(default=1.0e-3, gt=0.0)
    batch_tokens: int = Field(default=256, ge=1)
    weight_decay: float = Field(default=0.01, ge=0.0)


class GeneratePolicyConfig(Section):
    """ConsistentEE on the decoder: rounds of (policy step: REINFORCE; exit-norm step: Eq. 6)."""

    reward: Literal["vanilla", "hardness"] = "vanilla"  # the paper's LLM setting uses the vanilla reward
    alpha: float = Field(default=0.02, ge=0.0)  # depth penalty per layer (reward -CE - alpha * layer)
    copies: int = Field(default=8, ge=1)  # K sampled trajectories per token (METHODS: 8)
    batch_tokens: int = Field(default=64, ge=1)  # tokens per REINFORCE step
    rounds: int = Field(default=1, ge=1)
    policy_epochs: int = Field(default=4, ge=1)
    policy_lr: float = Field(default=1.0e-3, gt=0.0)
    exit_lr: float = Field(default=3.0e-4, gt=0.0)  # the exit heads in Eq. 6 steps
    held_out: float = Field(default=0.25, ge=0.0, lt=1.0)  # share of train prompts the policy learns from (not the exits)
    epsilon_start: float = Field(default=0.2, ge=0.0, le=1.0)
    epsilon_end: float = Field(default=0.0, ge=0.0, le=1.0)


class GenerateSpeculativeConfig(Section):
    """Self-speculative decoding (``models/self_speculative.py``): draft ``draft_length`` tokens from
    layer ``draft_layer`` (E, 1-based), verify them with layers E+1..L; output identical to
    full-depth greedy decoding. E must also be <= L-1, checked when the decoder is loaded."""

    draft_layer: int = Field(default=15, ge=1)  # E: a placeholder until chosen on dev (benchmarks/bench_generation.py --sweep)
    draft_length: int = Field(default=4, ge=1)  # d: tokens drafted per step
    draft_head: Literal["shared", "exit"] = "shared"  # shared: final norm + LM head; exit: the trained init exit at E
    draft_vocab: int = Field(default=0, ge=0)  # 0: the whole vocabulary; k: the k most frequent response tokens


class GenerateDistillConfig(Section):
    """Distillation data and exit distillation (issue 22 item 1; ``models/distillation.py``).

    Teacher-forced text: the model's own responses to the train prompts (prompt + response), the
    first-column sentences of the prepared ``sources`` and the CoNLL-2003 train sentences of
    ``conll_dir``, each cut at ``max_length`` tokens, shuffled (seeded), ``held_out_tokens`` held
    out first, then ``tokens`` to train on. The target is the original full model's next-token
    distribution at every position, kept as its ``top_k`` tokens and log-probabilities plus the
    remaining mass (32 keeps 95%+ of the mass on this text at 1/1500 of the storage of the full
    49k vocabulary; computed once and cached, cheaper than recomputing the teacher every epoch).
    The exits then train against it on the (frozen, possibly adapted) backbone for ``epochs``
    (KL on the k + 1 buckets, AdamW at ``lr``). ``tokens: 0`` keeps the exits of issue 13
    (the init epochs on the response tokens' own next token, ``generate.init``)."""

    tokens: int = Field(default=100_000, ge=0)
    held_out_tokens: int = Field(default=10_000, ge=1)
    sources: list[str] = ["sst2", "snli", "mrpc"]  # prepared tasks lending sentences
    conll_dir: Path | None = Path("../shared/data/conll2003")  # null: no CoNLL sentences
    max_length: int = Field(default=128, ge=8)  # tokens per sequence
    top_k: int = Field(default=32, ge=1)
    epochs: int = Field(default=1, ge=1)
    lr: float = Field(default=1.0e-3, gt=0.0)  # the exit translators
    batch_sequences: int = Field(default=16, ge=1)


class GenerateAdaptationConfig(Section):
    """Backbone adaptation for ``generate.adapt: lora | full`` (LayerSkip's recipe, ``models/adaptation.py``),
    on the self-distilled targets of ``generate.distill`` (the original model's distributions), so
    the full-depth model is pulled towards the model the user named.

    Chosen values and why: ``p_max`` 0.1, the low end of LayerSkip's 0.1-0.2 (its fine-tuning
    runs), because 100k tokens is a small budget and a larger rate costs the full-depth model more;
    the rates rise exponentially with depth (0 at layer 1). ``exit_scale`` 1.0: an early exit at
    layer l weighs l / L against the last layer's 1 (layer 15 of 30: half), strong enough to pull
    the middle layers towards the head's space without outweighing the full-depth model.
    ``curriculum: rotational`` with ``rotation`` 2: each step trains every other early exit
    (alternating), halving the full-vocabulary LM-head passes per step (one head costs about 8
    of SmolLM2's layers). LoRA: rank 16, alpha 32 on every projection of attention and MLP (the
    ConsistentEE paper adapts its LLM with LoRA), ``lora_lr`` 2e-4; full fine-tuning at
    ``full_lr`` 2e-5 (all weights, the tied LM head included). ``tokens`` is the budget of
    training tokens (the distillation set's train part, cycled when smaller); at least 1."""

    tokens: int = Field(default=100_000, ge=1)
    p_max: float = Field(default=0.1, ge=0.0, lt=1.0)
    exit_scale: float = Field(default=1.0, ge=0.0)
    curriculum: Literal["all", "rotational"] = "rotational"
    rotation: int = Field(default=2, ge=1)
    lora_rank: int = Field(default=16, ge=1)
    lora_alpha: float = Field(default=32.0, gt=0.0)
    lora_targets: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lora_lr: float = Field(default=2.0e-4, gt=0.0)
    full_lr: float = Field(default=2.0e-5, gt=0.0)
    exit_lr: float = Field(default=1.0e-3, gt=0.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    batch_sequences: int = Field(default=8, ge=1)


class DecodingConfig(Section):
    """What every generation step decodes with (``GenerateConfig.decoding``): the decoder, the
    response length, the batch size."""

    decoder: str
    max_new_tokens: int
    batch_size: int


class DecoderExitsConfig(Section):
    """Where the decoder's exits sit and what each trains (``GenerateConfig.exit_config``)."""

    layers: int | list[int] | Literal["all"]
    head: Literal["affine", "norm", "shared"]


class GenerateConfig(Section):
    """Early exit in generation (``exitflow generate``): a causal LM with exits at
    ``exit_layers``, self-distilled responses, exits distilled towards the full model
    (``distill``), optionally the backbone adapted for exiting (``adapt``: ``lora`` or ``full``,
    settings in ``adaptation``; ``none`` keeps the named model unchanged), ConsistentEE policy,
    CALM baselines."""

    decoder: str = "smollm2-135m"  # packaged GGUF (offline default), a .gguf file, a local model dir or a hub id
    exit_layers: int | list[int] | Literal["all"] = 5  # every k-th layer (and L), a list, or all
    exit_head: Literal["affine", "norm", "shared"] = "affine"  # what each earlier exit trains (models/generation.py)
    max_new_tokens: int = Field(default=40, ge=2)
    batch_size: int = Field(default=8, ge=1)
    prompts: GeneratePromptsConfig = GeneratePromptsConfig()
    init: GenerateTrainConfig = GenerateTrainConfig()
    policy: GeneratePolicyConfig = GeneratePolicyConfig()
    # thresholds swept per criterion (static: exit layers)
    criteria: dict[str, list[float]] = {
        "static": [10, 20, 25],
        "softmax": [0.99, 0.95, 0.9, 0.8, 0.6, 0.4],
        "saturation": [0.97, 0.95, 0.93, 0.9, 0.85, 0.8],
        "policy": [0.9, 0.7, 0.5, 0.3, 0.1, 0.02],
    }
    rouge_target: float = Field(default=0.8, gt=0.0, le=1.0)  # the benchmark's quality bar
    speedups: list[float] = [1.5, 2.0, 2.5, 3.0]  # where the report reads each curve (layer speed-up)
    examples: int = Field(default=8, ge=0)  # example responses in the report
    speculative: GenerateSpeculativeConfig = GenerateSpeculativeConfig()
    distill: GenerateDistillConfig = GenerateDistillConfig()
    adapt: Literal["none", "lora", "full"] = "none"  # backbone adaptation; none: the named model, unchanged
    adaptation: GenerateAdaptationConfig = GenerateAdaptationConfig()

    @property
    def decoding(self) -> DecodingConfig:
        """The part every step reads (responses, exit training, evaluation): its cache key."""
        return DecodingConfig(decoder=self.decoder, max_new_tokens=self.max_new_tokens, batch_size=self.batch_size)

    @property
    def exit_config(self) -> DecoderExitsConfig:
        """The part the exit training reads beside ``init`` and ``policy``."""
        return DecoderExitsConfig(layers=self.exit_layers, head=self.exit_head)

    @field_validator("criteria")
    @classmethod
    def _criteria(cls, value):
        known_names(list(value), sorted(TOKEN_CRITERIA), "generation criterion", required=True)
        empty = [k for k, v in value.items() if not v]
        if empty:
            raise ValueError(f"criteria {empty} have no thresholds")
        return value


class CompareConfig(Section):
    """``exitflow compare``: every registered method on every task and seed, next to static
    smaller models (the first k layers fine-tuned as a single-exit model), on one grid.

    The learning rate of each (task, method) is chosen on the FIRST seed: it trains once per
    ``lr_grid`` value (cached) and the rate with the best dev quality at full depth is reused for
    every other seed, which trains at that rate only. ``tasks`` gains every ``data.custom`` task.
    Method names (``[all]``: every registered one) are checked against ``flows.registry`` when the
    flow starts. ``budget`` (a duration: ``170m``, ``2h30m``, ``90s``; null: none) stops starting
    units once spent; the next run continues from the cache (``flows.compare_grid``).
    ``unit_records`` (a folder, relative to the params file) keeps every finished unit's cell and
    per-row predictions, to be committed: a run on a machine without the cache serves them from
    there (``flows.compare_records``).
    """

    tasks: list[str] = ["sst2", "mrpc", "stsb"]
    methods: list[str] = ["all"]
    seeds: list[int] = Field(default=[42], min_length=1)
    lr_grid: list[float] = Field(default=[1e-4, 3e-4, 5e-4], min_length=1)
    static_layers: list[int] = [1, 2, 3, 4, 5, 6]  # k of the first-k-layer baselines (1..L; L: the full model)
    speedups: list[float] = [1.5, 2.0, 3.0]     # layer speed-ups the tables read (dev-chosen front, test numbers)
    timing_batch_size: int = Field(default=32, ge=1)
    workers: int | None = Field(default=None, ge=1)   # LocalCluster workers; null = one per core
    torch_threads: int | None = Field(default=None, ge=1)  # per cell; null = cores // workers
    address: str | None = None    # tcp://host:8786: run the cells on this existing Dask cluster
    sequential: bool = False      # no Dask: cells one after another in this process
    champion_alias: str = "champion"
    budget: str | None = None     # e.g. 170m: no unit starts once this much wall-clock is spent
    flag_gap: float = Field(default=10.0, ge=0)  # full-depth dev points below the full model that flag a method
    unit_records: Path | None = None  # keep each finished unit here, to commit (flows.compare_records); null: none

    @field_validator("tasks", "seeds")
    @classmethod
    def _unique(cls, value):
        repeated = sorted({str(v) for v in value if value.count(v) > 1})
        if repeated:
            raise ValueError(f"{', '.join(repeated)} listed more than once in {value}")
        return value

    @field_validator("budget", mode="before")
    @classmethod
    def _budget(cls, value):
        if value is not None:
            duration_seconds(value)  # 170 (no unit) fails here too, with the duration's message
        return value

    @property
    def budget_seconds(self) -> float | None:
        """``budget`` in seconds; None without one."""
        return None if self.budget is None else duration_seconds(self.budget)

    @field_validator("lr_grid")
    @classmethod
    def _lr_grid(cls, value):
        if any(v <= 0 for v in value):
            raise ValueError(f"learning rates must be > 0, got {value}")
        return sorted(set(value))

    @field_validator("static_layers")
    @classmethod
    def _static_layers(cls, value):
        if any(k < 1 for k in value):
            raise ValueError(f"static_layers are layer counts >= 1, got {value}")
        return sorted(set(value))

    @field_validator("address")
    @classmethod
    def _address(cls, value):
        if value is not None and "://" not in value:
            raise ValueError(f"a Dask scheduler address looks like tcp://host:8786, got {value!r}")
        return value


DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}


def duration_seconds(text: str) -> float:
    """``"170m"``, ``"2h30m"``, ``"90s"``, ``"1.5h"`` -> seconds (> 0); ValueError otherwise."""
    import re

    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", str(text).strip())
    if not parts or "".join(n + u for n, u in parts) != str(text).strip() or len({u for _, u in parts}) < len(parts):
        raise ValueError(f"{text!r} is not a duration; write it like 170m, 2h30m or 90s")
    seconds = sum(float(n) * DURATION_UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"{text!r}: a budget must be longer than 0")
    return seconds


def setting_name(past: str, future: bool) -> str:
    """Folder and run name of one Past-Future setting: ``concat`` (past only), ``concat-future``."""
    return f"{past}-future" if future else past


class Params(Section):
    """The whole ``params.yaml``."""

    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    artifacts_dir: Path = Path("artifacts")
    data: DataConfig = DataConfig()
    backbone: BackboneConfig = BackboneConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    hashee: HasheeConfig = HasheeConfig()
    consistentee: ConsistenteeConfig = ConsistenteeConfig()
    learnability: LearnabilityConfig = LearnabilityConfig()
    past_future: PastFutureConfig = PastFutureConfig()
    leco: LecoConfig = LecoConfig()
    generate: GenerateConfig = GenerateConfig()
    compare: CompareConfig = CompareConfig()
    mlflow: MlflowConfig = MlflowConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    profiles: dict[str, dict] = {}
    root: Path = Path(".")

    def path(self, p: Path | str) -> Path:
        """Resolve a configured path against the params file's directory."""
        p = Path(p)
        return p if p.is_absolute() else (self.root / p).resolve()


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def parse_yaml(text: str, source: str, where: bool = True):
    """``yaml.safe_load(text)``; a syntax error becomes a ``ConfigError`` naming ``source`` and, when
    ``where``, the line and column (1-based) where the parser stopped."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        if where and mark is not None:
            source = f"{source}:{mark.line + 1}:{mark.column + 1}"
        problem = getattr(err, "problem", None) or str(err)
        hint = "; indent with spaces, not tabs" if "\\t" in problem else ""
        raise ConfigError(f"{source}: YAML syntax error: {problem}{hint}") from None


def parse_override(text: str) -> dict:
    """``train.epochs=3`` -> ``{"train": {"epochs": 3}}`` (value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    value = parse_yaml(raw, f"override {text!r}", where=False)
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def load_params(path: Path | str = "params.yaml", overrides: list[str] = (), profile: str | None = None) -> Params:
    """Load and validate ``params.yaml`` with an optional profile and ``key=value`` overrides."""
    path = Path(path).resolve()
    if not path.exists():
        raise ConfigError(f"params file {path} not found; run from the repository or pass --params")
    raw = parse_yaml(path.read_text(), str(path)) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path.name}: expected a mapping at the top level")
    if profile is not None:
        profiles = raw.get("profiles", {})
        if profile not in profiles:
            raise ConfigError(f"{path.name}: unknown profile {profile!r}; defined: {', '.join(profiles) or 'none'}")
        raw = deep_merge(raw, profiles[profile])
    for item in overrides:
        raw = deep_merge(raw, parse_override(item))
    raw["root"] = str(path.parent)
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"])
            lines.append(f"{path.name}: {key}: {e['msg']} (got {e.get('input')!r})")
        raise ConfigError("\n".join(lines)) from None

"""Where every artifact lives (also the ``dvc.yaml`` paths), and the data step every flow starts with.

One ``Layout``, built from ``params.yaml``, names every folder; flows and benchmarks ask it
instead of joining paths themselves. Everything a run derives from ``train.task`` is keyed by
task and seed, so a second task (``--set train.task=mrpc``) or seed writes beside the first::

    data/<task>/                                  validated splits (data.out_dir, pinned by data.dvc)
    artifacts/cache/tokens/                       token cache (not an output; its files are keyed by
                                                  task, split and content, so every run shares it)
    artifacts/cache/trainings/<key>/              which folder trained a model shared by key (compare)
    artifacts/<task>/seed-<seed>/
        train/<strategy>/   evaluate/<strategy>/   report/
        reference/single-exit/                    HashEE's single-exit full model (no strategy name reaches it)
        hashee/<tag>/{table,train,evaluate}/      tag: default (pipeline) or study/<config name> (study)
        hashee/study/                             the study's table and plot
        consistentee/init/                        weighted init with policy networks, shared by every tag
        consistentee/<tag>/rounds/round-<r>/{memorized,train}/
        consistentee/<tag>/{hardness,evaluate,report}/     tag: default or ablation/<config name>
        consistentee/ablation/                    the ablation's plot and table
        learnability/datasets/sentence/           train.task dev annotated by train/joint
        learnability/predictors/sentence/<predictor>/
        learnability/report/                      every study's table and F1 chart
        past_future/models/<setting>/{train,evaluate}/   setting: <past>, <past>-future or local-<strategy>
        past_future/report/                       the comparison table, curves and claim check
        past_future/default/{train,evaluate}/     the one Past-Future model `exitflow run` adds
        leco/search/                              the supernet search: architecture weights per epoch
        leco/derive/                              architecture.json (per layer), architecture.md
        leco/model/{train,evaluate}/              the derived exits, retrained
        leco/baselines/<name>/{train,evaluate}/   name: jt-linear, jt-mha, alt, 2st-mha, past-future
        leco/report/                              both comparisons and their claim checks
        static/first-<k>/{train,evaluate}/        exitflow compare's first-k-layer single-exit model
    artifacts/compare/<profile>/                  exitflow compare (profile: default, quick, full)
        cells/lr-<lr>/<task>/seed-<seed>/...      each cell's folders, one tree per learning rate
        report/                                   compare.md / .json, per-task Pareto and wall-clock plots
    artifacts/learnability/seed-<seed>/           the learnability studies that never read train.task
        datasets/{snli_model,conll2003}/   predictors/{snli_model,conll2003}/<predictor>/
        annotators/token/   human/

The learnability studies on the published ``snli_model`` set, on CoNLL-2003 (token) and on
human-defined difficulty read no ``train.task`` data, so they sit outside the task folders,
keyed by seed only, and every task's report reuses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from config.params import Params

REFERENCE = ("reference", "single-exit")  # beside train/, so no strategy name can reach it
# learnability.studies name -> (bound to train.task, folder name)
LEARNABILITY_STUDIES = {"snli_model": (False, "snli_model"), "token": (False, "conll2003"), "sentence": (True, "sentence")}


@dataclass(frozen=True)
class HasheeDirs:
    """One HashEE run: hash table, token-level fine-tuning, evaluation against the reference."""

    table: Path
    train: Path
    evaluate: Path


@dataclass(frozen=True)
class ConsistenteeDirs:
    """One ConsistentEE run (a tag): the shared init, then its rounds, analysis and evaluation."""

    init: Path
    base: Path

    @property
    def rounds(self) -> Path:
        return self.base / "rounds"

    def memorized(self, r: int) -> Path:
        """Round ``r``'s memorized layer (computed on round ``r``'s input model)."""
        return self.rounds / f"round-{r}" / "memorized"

    def train(self, r: int) -> Path:
        """Round ``r``'s policy and heads steps (its checkpoint)."""
        return self.rounds / f"round-{r}" / "train"

    @property
    def hardness(self) -> Path:
        return self.base / "hardness"

    @property
    def evaluate(self) -> Path:
        return self.base / "evaluate"

    @property
    def report(self) -> Path:
        return self.base / "report"


@dataclass(frozen=True)
class TrainedDirs:
    """One model trained and evaluated by a method's flow."""

    train: Path
    evaluate: Path


@dataclass(frozen=True)
class Layout:
    """Every artifact folder of one (task, seed); absolute paths when built by ``from_params``."""

    artifacts: Path
    data: Path
    task: str
    seed: int

    @classmethod
    def from_params(cls, params: Params) -> Layout:
        return cls(artifacts=params.path(params.artifacts_dir), data=params.path(params.data.out_dir),
                   task=params.train.task, seed=params.seed)

    @property
    def base(self) -> Path:
        """``artifacts/<task>/seed-<seed>``: every folder derived from ``train.task`` is under it."""
        return self.artifacts / self.task / f"seed-{self.seed}"

    def method_dir(self, method: str) -> Path:
        """``artifacts/<task>/seed-<seed>/<method>``: the folder of a registered method
        (``flows/methods/``) that has no named folders below; its flows module names what it
        writes inside (the methods that predate the registry keep their named folders in this class)."""
        return self.base / method

    @property
    def task_data(self) -> Path:
        return self.data / self.task

    @property
    def token_cache(self) -> Path:
        return self.artifacts / "cache" / "tokens"

    @property
    def shared_trainings(self) -> Path:
        """Where ``tasks.caching.run_shared`` records which folder trained each shared model (by key)."""
        return self.artifacts / "cache" / "trainings"

    # the default run: one multi-exit model per strategy, its evaluation, the comparison report
    def train(self, strategy: str) -> Path:
        return self.base / "train" / strategy

    @property
    def evaluations(self) -> Path:
        """The folder holding every strategy's ``evaluate(strategy)``."""
        return self.base / "evaluate"

    def evaluate(self, strategy: str) -> Path:
        return self.evaluations / strategy

    @property
    def report(self) -> Path:
        return self.base / "report"

    # HashEE
    @property
    def reference(self) -> Path:
        """The single-exit fine-tuned full model HashEE is compared with (shared by every tag)."""
        return self.base.joinpath(*REFERENCE)

    def hashee(self, tag: str) -> HasheeDirs:
        base = self.base / "hashee" / tag
        return HasheeDirs(table=base / "table", train=base / "train", evaluate=base / "evaluate")

    @property
    def hashee_study(self) -> Path:
        """The study's table and plot; its runs use tags ``study/<config name>``."""
        return self.base / "hashee" / "study"

    # ConsistentEE
    @property
    def consistentee_init(self) -> Path:
        return self.base / "consistentee" / "init"

    def consistentee(self, tag: str) -> ConsistenteeDirs:
        return ConsistenteeDirs(init=self.consistentee_init, base=self.base / "consistentee" / tag)

    @property
    def consistentee_ablation(self) -> Path:
        """The ablation's plot and table; its runs use tags ``ablation/<config name>``."""
        return self.base / "consistentee" / "ablation"

    # Global Past-Future
    def past_future(self, setting: str) -> TrainedDirs:
        """``setting``: ``config.params.setting_name`` (``concat``, ``concat-future``) or ``local-<strategy>``."""
        base = self.base / "past_future" / "models" / setting
        return TrainedDirs(train=base / "train", evaluate=base / "evaluate")

    @property
    def past_future_default(self) -> TrainedDirs:
        """The default run's Past-Future model (``past_future.in_default_run``), beside the study's."""
        base = self.base / "past_future" / "default"
        return TrainedDirs(train=base / "train", evaluate=base / "evaluate")

    @property
    def past_future_models(self) -> Path:
        return self.base / "past_future" / "models"

    @property
    def past_future_report(self) -> Path:
        return self.base / "past_future" / "report"

    # LECO
    @property
    def leco_search(self) -> Path:
        return self.base / "leco" / "search"

    @property
    def leco_derive(self) -> Path:
        return self.base / "leco" / "derive"

    @property
    def leco_model(self) -> TrainedDirs:
        """The derived exits, retrained from the pretrained backbone."""
        base = self.base / "leco" / "model"
        return TrainedDirs(train=base / "train", evaluate=base / "evaluate")

    def leco_baseline(self, name: str) -> TrainedDirs:
        """``name``: one of ``leco.baselines``."""
        base = self.leco_baselines / name
        return TrainedDirs(train=base / "train", evaluate=base / "evaluate")

    @property
    def leco_baselines(self) -> Path:
        return self.base / "leco" / "baselines"

    @property
    def leco_report(self) -> Path:
        return self.base / "leco" / "report"

    # exitflow compare's static smaller models
    def static_baseline(self, k: int) -> TrainedDirs:
        """The first ``k`` backbone layers fine-tuned as a single-exit model."""
        base = self.base / "static" / f"first-{k}"
        return TrainedDirs(train=base / "train", evaluate=base / "evaluate")

    @property
    def compare(self) -> Path:
        """``artifacts/compare``: one folder per profile (``<profile>/cells/lr-<lr>/`` holds each
        learning rate's task folders, ``<profile>/report/`` the comparison)."""
        return self.artifacts / "compare"

    # generation with a decoder LLM (not keyed by train.task: prompts come from several tasks)
    @property
    def generate(self) -> Path:
        """``artifacts/generate/seed-<seed>``: prompts, responses, exits, evaluate, report."""
        return self.artifacts / "generate" / f"seed-{self.seed}"

    # learnability (HashEE paper section 2)
    @property
    def learnability_shared(self) -> Path:
        """``artifacts/learnability/seed-<seed>``: the studies that read no ``train.task`` data."""
        return self.artifacts / "learnability" / f"seed-{self.seed}"

    def _study(self, study: str) -> tuple[Path, str]:
        if study not in LEARNABILITY_STUDIES:
            raise ValueError(f"no dataset for learnability study {study!r}; one of {', '.join(LEARNABILITY_STUDIES)}")
        task_bound, folder = LEARNABILITY_STUDIES[study]
        return (self.base / "learnability" if task_bound else self.learnability_shared), folder

    def learnability_dataset(self, study: str) -> Path:
        """``study``: ``snli_model``, ``sentence`` or ``token`` (as in ``learnability.studies``)."""
        root, folder = self._study(study)
        return root / "datasets" / folder

    def learnability_predictor(self, study: str, predictor: str) -> Path:
        root, folder = self._study(study)
        return root / "predictors" / folder / predictor

    @property
    def token_annotator(self) -> Path:
        """The multi-exit CoNLL-2003 tagger that annotates the token-level study."""
        return self.learnability_shared / "annotators" / "token"

    @property
    def human_difficulty(self) -> Path:
        return self.learnability_shared / "human"

    @property
    def learnability_report(self) -> Path:
        return self.base / "learnability" / "report"

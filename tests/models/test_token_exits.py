"""The token annotator's fit: one warmup/decay schedule over all epochs, every layer's tag head
trained, the per-epoch loss the mean over the epoch's steps."""

import torch

from models.token_exits import TokenMultiExitModel, fit_token_annotator, token_exit_loss
from tests.conftest import tiny_backbone, tiny_batch


def _batches(epoch):
    out = []
    for i in range(3):
        b = tiny_batch(batch=4, seed=10 * epoch + i)
        tags = torch.where(b["attention_mask"].bool(), b["input_ids"] % 3, torch.full_like(b["input_ids"], -100))
        out.append({"input_ids": b["input_ids"], "attention_mask": b["attention_mask"], "tags": tags})
    return out


def test_fit_token_annotator_trains_every_head_lowers_the_loss_and_ends_its_schedule_at_zero():
    torch.manual_seed(0)
    model = TokenMultiExitModel(tiny_backbone("bert", layers=2), num_tags=3, dropout=0.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = _batches(1)

    def eval_loss():
        model.eval()
        with torch.no_grad():
            return sum(token_exit_loss(model(b["input_ids"], b["attention_mask"])[0], b["tags"]).item() for b in data) / 3

    start, seen = eval_loss(), []
    losses = fit_token_annotator(model, lambda epoch: data, steps_per_epoch=3, epochs=4, lr=1e-2,
                                 on_epoch=lambda epoch, loss: seen.append((epoch, loss)))
    assert [e for e, _ in seen] == [1, 2, 3, 4] and [l for _, l in seen] == losses
    assert eval_loss() < start
    moved = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert {"heads.0.weight", "heads.1.weight"} <= moved and any(k.startswith("backbone.") for k in moved)


def test_the_schedule_spans_all_epochs(monkeypatch):
    from models import token_exits

    seen = []
    real = token_exits.train_token_epoch

    def recording(model, batches, optimizer, scheduler):
        out = real(model, batches, optimizer, scheduler)
        seen.append(scheduler.get_last_lr()[0])
        return out

    monkeypatch.setattr(token_exits, "train_token_epoch", recording)
    torch.manual_seed(0)
    model = TokenMultiExitModel(tiny_backbone("bert", layers=2), num_tags=3, dropout=0.0)
    fit_token_annotator(model, _batches, steps_per_epoch=3, epochs=2, lr=1e-2)
    assert seen[-1] == 0.0 and seen[0] > 0.0  # decays to 0 at the last step of the last epoch, not of the first

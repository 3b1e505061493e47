"""seedvlm.diagnostics.teacher_signal and `seedvlm teacher-signal`: the clean-vs-noisy teacher diagnostic at object
mentions."""

from __future__ import annotations

import json
import math

import pytest

from conftest import tiny_config
from seedvlm.cli import main
from seedvlm.diagnostics import teacher_signal

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def signal_setup(tmp_path_factory):
    from seedvlm.models import build_processor, random_model
    from seedvlm.pretrain.pipeline import build_world_tokenizer

    world = tmp_path_factory.mktemp("world") / "w"
    assert main(["world", "--out", str(world), "--train", "20", "--val", "4", "--hallucination-rate", "0.5",
                 "--quiet"]) == 0
    tok = build_world_tokenizer(world)
    cfg = tiny_config(tok)
    return teacher_signal, random_model(cfg, seed=0).eval(), build_processor(tok, cfg), world


def test_counts_every_mention_and_every_injection(signal_setup):
    ts, model, processor, world = signal_setup
    from seedvlm.eval.chair import CHAIR
    from seedvlm.io import read_json

    rep = ts.teacher_signal(model, processor, world, n=20, batch_size=8)
    records, injected = ts.detail_records(world, "train", 20)
    chair = CHAIR(world / "instances_train.json", protocol="corrected")
    ids = {im["file_name"]: im["id"] for im in chair.images}
    n_present = sum(sum(c in chair.annotated(ids[r["image"]]) for _, c in chair.mentions(r["answer"]))
                    for r in records)
    assert rep["classes"]["present"]["mentions"] == n_present > 0
    n_inj = sum(r["id"] in injected for r in records)
    assert n_inj == len(read_json(world / "world.json", "w")["injections"]) > 0  # rate 0.5 of 20
    assert rep["classes"]["injected_absent"]["mentions"] >= n_inj  # each injected description names it
    for r in rep["classes"].values():
        assert all(math.isfinite(v) for v in r.values())


def test_without_noise_the_views_agree_and_purification_changes_nothing(signal_setup):
    ts, model, processor, world = signal_setup
    rep = ts.teacher_signal(model, processor, world, n=6, alpha=1.0, batch_size=8)  # x' = x
    r = rep["classes"]["present"]
    assert r["mentions"] > 0
    assert abs(r["clean_minus_noisy"]) < 1e-5 and abs(r["purified_minus_clean"]) < 1e-4
    assert rep["kl_clean_noisy_all_answer_tokens"] < 1e-6
    assert "| present objects |" in ts.markdown(rep)


def test_purify_within_objects_keeps_everything_but_the_objects_own_split(signal_setup):
    """The --within-objects target: non-object tokens keep their clean log-prob, the objects keep their clean total
    and are split among themselves as the purified target splits them."""
    import torch

    ts = signal_setup[0]
    g = torch.Generator().manual_seed(0)
    clean = torch.randn(5, 12, generator=g).log_softmax(-1)
    purified = (clean * 1.6 - 0.6 * torch.randn(5, 12, generator=g)).log_softmax(-1)
    objects = torch.zeros(12, dtype=torch.bool)
    objects[[1, 4, 7]] = True
    out = ts.purify_within(clean, purified, objects)
    assert torch.allclose(out.logsumexp(-1), torch.zeros(5), atol=1e-6)  # a distribution
    assert torch.equal(out[:, ~objects], clean[:, ~objects])
    assert torch.allclose(out[:, objects].logsumexp(-1), clean[:, objects].logsumexp(-1), atol=1e-6)
    ratio = out[:, objects] - purified[:, objects]  # the same relative odds among the objects
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-5)


def test_object_token_mask_marks_the_world_s_object_words(signal_setup):
    ts, _, processor, world = signal_setup
    from seedvlm.eval.chair import CHAIR

    chair = CHAIR(world / "instances_train.json", protocol="corrected")
    mask = ts.object_token_mask(processor.tokenizer, chair, len(processor.tokenizer))
    vocab = processor.tokenizer.get_vocab()
    assert mask[vocab["fork"]] and mask[vocab["traffic"]] and not mask[vocab["the"]]


def test_within_objects_runs_end_to_end_and_is_recorded(signal_setup):
    ts, model, processor, world = signal_setup
    plain = ts.teacher_signal(model, processor, world, n=6, batch_size=4)
    within = ts.teacher_signal(model, processor, world, n=6, batch_size=4, within_objects=True)
    assert within["within_objects"] is True and plain["within_objects"] is False
    for cls in ("present", "injected_absent"):
        a, b = plain["classes"][cls], within["classes"][cls]
        assert a["mentions"] == b["mentions"] and a["clean_minus_noisy"] == b["clean_minus_noisy"]
    assert "object words only" in ts.markdown(within)


def test_command_writes_the_report_and_names_a_bad_world(signal_setup, tmp_path, capsys):
    """`seedvlm teacher-signal` on a saved model: the printed table and the JSON report agree with the function's;
    a world folder without descriptions is one error line naming the file."""
    from seedvlm.models import save_model

    ts, model, processor, world = signal_setup
    saved = tmp_path / "model"
    save_model(model, processor, saved)
    out = tmp_path / "signal.json"
    capsys.readouterr()
    assert main(["teacher-signal", "--model", str(saved), "--world", str(world), "--n", "6", "--batch-size", "4",
                 "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    direct = ts.teacher_signal(model, processor, world, n=6, batch_size=4)
    assert report["model"] == str(saved) and report["records"] == direct["records"] == 6
    for cls in ("present", "injected_absent", "other_absent"):
        assert report["classes"][cls]["mentions"] == direct["classes"][cls]["mentions"]
        assert report["classes"][cls]["logp_clean"] == pytest.approx(direct["classes"][cls]["logp_clean"], abs=1e-4)
    assert "| present objects |" in capsys.readouterr().out
    assert main(["teacher-signal", "--model", str(saved), "--world", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "instruct_train.json" in err[0]


def test_held_out_descriptions_name_one_absent_partner_each(signal_setup):
    """The held-out texts: val images only, each description names its injected partner, which is absent from the
    image and a partner of a present object; the same texts on every call."""
    from seedvlm.eval.chair import CHAIR
    from seedvlm.world import partners_of

    ts, _, _, world = signal_setup
    records, injected = ts.held_out_records(world, None)
    assert records and len(injected) == len(records) and ts.held_out_records(world, 2)[0] == records[:2]
    assert ts.held_out_records(world, None) == (records, injected)
    chair = CHAIR(world / "instances_val.json", protocol="corrected")
    ids = {im["file_name"]: im["id"] for im in chair.images}
    for r in records:
        present = chair.annotated(ids[r["image"]])
        partner = injected[r["id"]]
        assert partner not in present and any(partner in partners_of(p) for p in present)
        assert partner in {c for _, c in chair.mentions(r["answer"])}
        assert present <= {c for _, c in chair.mentions(r["answer"])}  # every present object named too


def test_every_perturbation_kind_beside_the_training_one(signal_setup):
    """all_kinds: the first view is the training noise (its change is -(clean - noisy)); the others are the kinds of
    seedvlm.seed.PERTURBATIONS; a kind that leaves the image as it is changes nothing."""
    from seedvlm.seed import PERTURBATIONS

    ts, model, processor, world = signal_setup
    rep = ts.teacher_signal(model, processor, world, n=6, batch_size=4, all_kinds=True)
    kinds = rep["perturbations"]
    assert list(kinds)[0] == "gaussian_a0.3" and {k["settings"]["noise"] for k in kinds.values()} == set(PERTURBATIONS)
    for cls, r in rep["classes"].items():
        first = kinds["gaussian_a0.3"]["classes"][cls]
        assert first["mentions"] == r["mentions"]
        if r["mentions"]:
            assert first["perturbed_minus_clean"] == pytest.approx(-r["clean_minus_noisy"], abs=1e-5)
    plain = ts.teacher_signal(model, processor, world, n=6, batch_size=4)
    assert list(plain["perturbations"]) == ["gaussian_a0.3"] and plain["classes"] == rep["classes"]
    same = ts.teacher_signal(model, processor, world, n=6, batch_size=4, alpha=1.0, all_kinds=True)
    assert abs(same["perturbations"]["gaussian_a1"]["classes"]["present"]["perturbed_minus_clean"]) < 1e-5
    assert "| blank |" in ts.markdown(rep)


def test_prior_under_noise_reads_the_training_perturbation(signal_setup):
    """The readiness figures: the training perturbation's partner and present changes, `passed` as prior_shows
    says, every kind beside it; the same function the teacher-signal diagnostic runs."""
    ts, model, processor, world = signal_setup
    prior = ts.prior_under_noise(model, processor, world, n=4, batch_size=4)
    records, injected = ts.held_out_records(world, 4)
    assert prior["descriptions"] == len(records) > 0 and prior["partner_mentions"] >= len(records)
    train = prior["kinds"][prior["training_perturbation"]]
    assert prior["training_perturbation"] == "gaussian_a0.3" and len(prior["kinds"]) == 6
    assert (prior["partner_change"], prior["present_change"]) == (train["partner_change"], train["present_change"])
    assert prior["passed"] == ts.prior_shows(prior["partner_change"], prior["present_change"])
    assert ts.prior_shows(0.2, -1.0) and not ts.prior_shows(-0.2, -1.0) and not ts.prior_shows(0.2, 0.1)
    assert not ts.prior_shows(None, -1.0)
    assert "| gaussian_a0.3 (training) |" in ts.prior_markdown(prior)

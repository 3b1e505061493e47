"""The CLI a newcomer reads: a description on every subcommand's help, the readiness checks explained with the
defaults, "did you mean" for a mistyped option, progress as log lines when not on a terminal, and the HTML demo
marking rows it could not check."""

from __future__ import annotations

import argparse
import io
import logging

import pytest

from seedvlm.cli import build_parser, main


def subparsers(parser: argparse.ArgumentParser, name: str = "seedvlm"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, p in action.choices.items():
                yield f"{name} {sub}", p
                yield from subparsers(p, f"{name} {sub}")


def test_every_subcommand_has_a_description():
    found = dict(subparsers(build_parser()))
    assert {"seedvlm pretrain", "seedvlm readiness", "seedvlm eval pope"} <= set(found)
    missing = [n for n, p in found.items() if not (p.description or "").strip()]
    assert not missing


def test_readiness_help_explains_the_seven_checks_and_shows_defaults(capsys):
    from seedvlm.pretrain.readiness import CHECKS

    with pytest.raises(SystemExit):
        main(["readiness", "--help"])
    out = capsys.readouterr().out
    assert len(CHECKS) == 7 and all(name in out and what in out for name, (what, _) in CHECKS.items())
    assert "[default: 200]" in out and "[default: 128]" in out


def test_unknown_option_suggests_the_closest(capsys):
    with pytest.raises(SystemExit) as e:
        main(["demo", "--model", "m", "--image", "a.png", "--max-new-tokns", "3"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "did you mean --max-new-tokens?" in err


def test_unknown_eval_option_suggests_the_closest(tmp_path, capsys):
    """eval passes unknown --key value options to the decoder; one that fits no decoding gets the suggestion."""
    rc = main(["eval", "pope", "--model", "m", "--questions", "q", "--images", "d", "--out", str(tmp_path / "o"),
               "--prompt-sufix", " Answer yes or no."])
    assert rc == 2 and "did you mean --prompt-suffix?" in capsys.readouterr().err


def test_unknown_config_option_suggests_the_closest_and_lists_no_wall_of_names(tmp_path, capsys):
    assert main(["pretrain", "--world", str(tmp_path), "--vison-steps", "3"]) == 2
    err = capsys.readouterr().err
    assert "did you mean --vision-steps?" in err and "--align-lr" not in err


def test_progress_is_logged_when_not_on_a_terminal(monkeypatch, caplog):
    from seedvlm import progress

    monkeypatch.setattr(progress, "INTERVAL", 0.0)
    bar = progress.progress(10, "eval", "q", stream=io.StringIO())
    with caplog.at_level(logging.INFO, logger="seedvlm.progress"):
        for _ in range(5):
            bar.update(2)
        bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("eval: 2/10 q (20%), ") and "q/s" in lines[0] and "ETA" in lines[0]
    assert len(lines) == 5 and lines[-1].startswith("eval: 10/10 q (100%)") and "in all" in lines[-1]


def test_eval_answers_log_progress_lines(monkeypatch, caplog, tmp_path):
    """eval's generation loop reports through the same progress lines (a CHAIR run piped to a log is not silent)."""
    from PIL import Image

    from seedvlm import progress
    from seedvlm.eval import runner

    monkeypatch.setattr(progress, "INTERVAL", 0.0)
    monkeypatch.setattr(runner, "generate", lambda m, p, images, prompts, **k: ["yes"] * len(prompts))
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    with caplog.at_level(logging.INFO, logger="seedvlm.progress"):
        texts = runner.run_prompts(None, None, [tmp_path / "a.png"] * 6, ["q?"] * 6, batch_size=2)
    assert texts == ["yes"] * 6
    lines = [r.getMessage() for r in caplog.records if r.name == "seedvlm.progress"]
    assert any(line.startswith("eval: 2/6 q") and "ETA" in line for line in lines), lines


def test_html_demo_marks_rows_it_could_not_check():
    from PIL import Image

    from seedvlm.demo import UNCHECKED, Answer, DemoResult, Row, render_html, render_terminal

    rows = [Row("known.png", Image.new("RGB", (8, 8)), ["cat"], [Answer("base greedy", "A cat.")]),
            Row("stranger.png", Image.new("RGB", (8, 8)), None, [Answer("base greedy", "A dog.")])]
    result = DemoResult(["base greedy"], rows, {"instances": "inst.json", "object_matcher": "CHAIR"})
    page = render_html(result)
    known, stranger = page.split("<tr>")[2], page.split("<tr>")[3]
    assert "no object outside the annotations" in known and UNCHECKED not in known
    assert UNCHECKED in stranger and "no object outside the annotations" not in stranger
    assert UNCHECKED in render_terminal(result)


def test_the_cli_silences_library_deprecation_warnings(tmp_path):
    """transformers warns (FutureWarning) whenever peft reads a renamed property, e.g. at every adapter load and
    training start; a normal run of a command shows none of it."""
    import warnings

    from conftest import tiny_config
    from seedvlm.models import build_word_tokenizer, random_model

    model = random_model(tiny_config(build_word_tokenizer(["cat"])))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["demo", "--model", str(tmp_path), "--image", str(tmp_path / "none.png")]) == 2
        assert model.is_gradient_checkpointing is not None
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], [str(w.message) for w in caught]

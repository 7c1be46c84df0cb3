"""The workflow runner (clearct.workflows.runner): markers reuse a step only for the same result-changing config
and the same upstream markers; a failed step leaves no marker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clearct.common.errors import ClearctError
from clearct.config import CrossvalConfig, DeployConfig, SynthConfig
from clearct.workflows.runner import MARKER, Step, run_step, run_steps, upstream_markers


def _recording(calls: list, code: int = 0):
    def run(config):  # stands in for a stage function; records that it ran
        calls.append(config)
        return code
    return run


def test_a_marker_reuses_only_the_same_config(tmp_path):
    calls: list = []
    config = SynthConfig(out=tmp_path / "c", patients=12)
    step = Step("synth", _recording(calls), config, config.out)
    ran = run_step(step)
    assert ran.status == "ran"
    assert run_step(step).status == "reused" and run_step(step).seconds == pytest.approx(ran.seconds, abs=0.01)
    # workers do not change a result: still reused; another cohort size does
    assert run_step(Step("synth", _recording(calls), config.model_copy(update={"workers": 1}), config.out)).status \
        == "reused"
    assert run_step(Step("synth", _recording(calls), config.model_copy(update={"patients": 13}), config.out)).status \
        == "ran"
    failing = Step("synth", _recording(calls, code=3), config.model_copy(update={"patients": 14}), config.out)
    with pytest.raises(ClearctError, match="exit code 3"):
        run_step(failing)
    assert run_step(failing, stop_on_error=False).status == "exit 3"
    assert [c.patients for c in calls] == [12, 13, 14, 14]
    assert json.loads((config.out / MARKER).read_text())["config"]["patients"] == 13  # a failed run leaves it


def test_a_step_runs_again_when_a_step_it_reads_ran_again(tmp_path: Path):
    """New fold models (crossval re-ran) must be deployed again even though deploy's own config is unchanged."""
    cv_cfg = CrossvalConfig(features=tmp_path / "f", labels=tmp_path / "l.csv", targets=["a"], out=tmp_path / "cv")
    deploy_cfg = DeployConfig(model=cv_cfg.out, features=tmp_path / "g", labels=tmp_path / "l2.csv",
                              out=tmp_path / "dep")
    calls: list = []
    cv, deploy = Step("cv", _recording(calls), cv_cfg, cv_cfg.out), Step("dep", _recording(calls), deploy_cfg,
                                                                         deploy_cfg.out)
    other = Step("other", _recording(calls), SynthConfig(out=tmp_path / "o"), tmp_path / "o")
    assert run_step(other).status == "ran"
    assert run_step(cv).status == "ran"
    assert list(upstream_markers(deploy, [other, cv])) == ["cv"]  # only the step whose folder it reads
    assert run_step(deploy, upstream_markers(deploy, [other, cv])).status == "ran"
    assert run_step(deploy, upstream_markers(deploy, [other, cv])).status == "reused"
    changed = Step("cv", _recording(calls), cv_cfg.model_copy(update={"lr": 5e-4}), cv_cfg.out)
    assert run_step(changed).status == "ran"
    assert run_step(deploy, upstream_markers(deploy, [other, changed])).status == "ran"


def test_run_steps_announces_counts_and_resumes(tmp_path, capsys):
    calls: list = []
    steps = [Step(f"s{i}", _recording(calls), SynthConfig(out=tmp_path / f"s{i}", seed=i), tmp_path / f"s{i}",
                  "a stage") for i in range(3)]
    first = run_steps(steps, tmp_path)
    assert [r.status for r in first.values()] == ["ran"] * 3
    printed = capsys.readouterr().out
    assert "[1/3] s0: a stage" in printed and "[3/3] s2" in printed
    again = run_steps(steps[1:], tmp_path, done=steps[:1])
    assert [r.status for r in again.values()] == ["reused"] * 2 and len(calls) == 3
    assert "[2/3] s1" in capsys.readouterr().out

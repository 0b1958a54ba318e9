"""The command line explains itself: every command and option has help text."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from stream_app import cli
from stream_app.settings import known_variables

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ["worker", "broker", "replay", "demo", "train", "evaluate", "bench"]


def parser_of(command: str) -> argparse.ArgumentParser:
    captured = {}
    real = argparse.ArgumentParser.parse_args

    def grab(self, args=None, namespace=None):
        captured["p"] = self
        raise SystemExit(0)

    argparse.ArgumentParser.parse_args = grab
    try:
        with pytest.raises(SystemExit):
            cli.main([command])
    finally:
        argparse.ArgumentParser.parse_args = real
    sub = next(a for a in captured["p"]._actions if isinstance(a, argparse._SubParsersAction))
    return sub, sub.choices[command]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_and_option_has_help(command):
    sub, parser = parser_of(command)
    described = {a.dest: a.help for a in sub._choices_actions}
    assert described.get(command), f"`stream-app --help` shows no description for {command}"
    for action in parser._actions:
        if action.dest != "help":
            assert action.help, f"{command} {action.option_strings} has no help"


def test_worker_help_lists_every_setting_with_its_default():
    out = subprocess.run([sys.executable, "-m", "stream_app.cli", "worker", "--help"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    for name in known_variables():
        assert name in out, name
    assert "STREAM_RECO_TOP_K (default: 10)" in out


def test_worker_without_a_reachable_broker_says_what_to_do():
    env = {"PATH": "/usr/bin:/bin", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "HOME": str(Path.home())}
    res = subprocess.run([sys.executable, "-m", "stream_app.cli", "worker"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    assert "cannot reach Kafka at 127.0.0.1:1" in res.stderr and "stream-app broker" in res.stderr

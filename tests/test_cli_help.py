"""Every command answers --help with exit 0 and a usage line naming its `python -m` module.

Cheap (in-process, no data) and catches what pyflakes cannot: a parser default that calls a
function which moved (CI once failed on exactly that, in a command no other fast test parsed)."""
import importlib

import pytest

COMMANDS = ["preprocess.prepare", "preprocess.synth", "preprocess.show", "preprocess.sheet",
            "preprocess.audit", "bench.scale", "bench.preprocess_speed", "bench.render_ab",
            "bench.render_stages", "bench.seven_words",
            "train.train", "train.evaluate", "train.predict", "train.report", "train.export",
            "train.openset", "bench.cnnet", "bench.hostile", "train.listen", "train.serve", "train.suspects"]


@pytest.mark.parametrize("module", COMMANDS)
def test_every_command_explains_itself(module, capsys):
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    package = module.split(".")[0]
    assert text.startswith("usage: python -m " + package), text[:200]
    assert len(text.splitlines()) > 3  # options are described, not just listed

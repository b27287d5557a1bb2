"""Every ``sankofa`` command refuses a number that is not finite or not positive,
with argparse's usage error (exit 2), before doing anything."""

from __future__ import annotations

import pytest

from sankofa.cli import main


@pytest.mark.parametrize(
    "argv",
    [
        ["simulate", "--radius", "inf", "--out", "/nonexistent/x"],
        ["simulate", "--radius", "nan", "--out", "/nonexistent/x"],
        ["simulate", "--days", "0", "--out", "/nonexistent/x"],
        ["loadtest", "run", "--url", "http://127.0.0.1:9", "--rate", "inf", "--duration", "1"],
        ["loadtest", "run", "--url", "http://127.0.0.1:9", "--rate", "1", "--duration", "1e999"],
        [
            "loadtest", "run", "--url", "http://127.0.0.1:9", "--rate", "1", "--duration", "1",
            "--warmup=-inf",
        ],
        ["token", "--role", "scorer", "--ttl", "-5"],
        ["loadtest", "scenario", "saturation", "--workers", "0"],
        ["loadtest", "scenario", "soak", "--capacity", "inf"],
        ["loadtest", "scenario", "soak", "--soak-seconds", "nan"],
        ["loadtest", "scenario", "saturation", "--pix-every", "-1"],
    ],
)  # fmt: skip
def test_a_number_that_is_not_finite_and_positive_is_a_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "must be" in err

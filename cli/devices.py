"""`--device` and `--precision`: one spelling for every command that runs torch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

DEVICE_HELP = "Where torch runs: auto (a GPU when one is visible, else the CPU), cpu, cuda or cuda:N."


def _checked(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from stitchkit.devices import check_device

    return check_device(value)  # a misspelling is one line (exit 2) before any work starts


def device_option(help: str = DEVICE_HELP) -> Callable[[Any], Any]:
    """``--device auto|cpu|cuda[:N]`` (default auto), checked when parsed, resolved by the library."""
    return click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda[:N]",
                        callback=_checked, help=help)


def precision_option() -> Callable[[Any], Any]:
    return click.option(
        "--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
        help="Forward pass under torch.autocast in bf16 or fp16 (fp16: GPU only, loss scaled); the "
             "loss, the weights and the saved head stay float32.")

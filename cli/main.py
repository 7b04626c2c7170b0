"""The `stitch` command group; each command lives in its own module, imported on first use."""

from __future__ import annotations

import importlib
import importlib.util

import click

# command name -> (module under stitchkit.cli, attribute, one-line help shown in `stitch --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "embed": ("embed", "embed", "Embed images or texts with a model into an HDF5 store."),
    "info": ("info", "info", "Show what a store, map, head, score file or export folder holds."),
    "merge": ("merge", "merge", "Merge shard stores into one store."),
    "export": ("export", "export", "Write a store as clip-retrieval's npy + parquet folder (autofaiss)."),
    "import": ("import_", "import_cmd", "Read a clip-retrieval embedding folder into a store."),
    "models": ("models", "models", "List the models that short names resolve to."),
    "datasets": ("datasets", "datasets", "List the chest X-ray datasets read as published (nih:FOLDER, …)."),
    "fit": ("fit", "fit", "Fit a map from a source space to a target space over anchors."),
    "apply": ("apply", "apply", "Apply a fitted map to a store."),
    "adapt": ("adapt", "adapt", "Fit a label-free adaptation map on a target domain's images."),
    "sweep": ("sweep", "sweep", "Held-out quality of maps against the anchor count."),
    "anchors": ("anchors", "anchors", "Select anchor sets from a store."),
    "head": ("head", "head", "Train and inspect cross-attention heads."),
    "classify": ("classify", "classify", "Zero-shot classification with prompts."),
    "benchmark": ("benchmark", "benchmark", "Score a suite of zero-shot data sets into the papers' table."),
    "explain": ("explain", "explain", "Draw where a head or a map looks: a heatmap per class over the patch grid."),
    "report": ("report", "report", "Draw figures and a page from any run's files."),
    "results": ("results", "results", "Gather many runs' --json results into one table."),
    "demo": ("demo", "demo", "Run the whole pipeline on the embedded default data."),
}


class LazyGroup(click.Group):
    """Import a command's module only when that command runs: `stitch info` never loads torch."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if self._available(name)]

    @staticmethod
    def _available(name: str) -> bool:
        return importlib.util.find_spec(f"stitchkit.cli.{COMMANDS[name][0]}") is not None

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS or not self._available(name):
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(f"stitchkit.cli.{module}"), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stitchkit")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """stitchkit: anchor-based model stitching for zero-shot chest X-ray classification.

    \b
    Typical pipeline (kermany/ = Kermany's published train/ and test/ folders of NORMAL/ and
    PNEUMONIA/ images, e.g. ../shared/data/kermany-pneumonia-224): a head trained in Lite2's
    space on label captions, then Lite0 stitched into that space and classified by prompts:
      stitch embed kermany/train -m lite2 -o train-lite2.h5
      stitch head captions train-lite2.h5 --from-labels pneumonia -t minilm -o train-captions.h5
      stitch head train train-lite2.h5 train-captions.h5 -o pneumonia.head
      stitch embed kermany/train -m lite0 -o train-lite0.h5
      stitch fit train-lite0.h5 train-lite2.h5 -o lite0-to-lite2.map
      stitch embed kermany/test -m lite0 -o test-lite0.h5
      stitch classify test-lite0.h5 --map lite0-to-lite2.map --head pneumonia.head --prompts pneumonia -o scores.csv
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def main() -> None:
    from .errors import run

    run(cli)


if __name__ == "__main__":
    main()

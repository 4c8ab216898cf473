"""`defocus train`: stage 1 (DFFNet), stage 2 (D-DFFNet) or R-DFFNet from a YAML config."""
from __future__ import annotations

import os
import signal
from typing import List, Optional

import typer


def check_data(cfg) -> None:
    """Index the run's training and validation data once (listing files, no decoding), so that a missing data
    folder or file fails before any network is built or weights are fetched; raises what the data builders
    raise (``FileNotFoundError``, ``ValueError``)."""
    from ..engine.data import build_train_dataset, build_val_dataset

    identity = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    build_train_dataset(cfg.data, *identity, seed=cfg.seed)
    build_val_dataset(cfg.data, *identity)


def register(app: typer.Typer) -> None:
    """Add the ``train`` command."""

    @app.command("train")
    def train_cmd(
        config: str = typer.Argument(..., help="YAML config file, or a preset name such as smoke_stage1."),
        overrides: Optional[List[str]] = typer.Option(None, "--set", help="Override a config value: key=value "
                                                      "or section.key=value (repeatable)."),
        resume: Optional[str] = typer.Option(None, "--resume", help="Continue from a training checkpoint, or "
                                             "'auto' (OUTPUT_DIR/checkpoint.pt if it exists)."),
        print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config and exit."),
    ):
        """Train a defocus blur detector; writes OUTPUT_DIR/model.safetensors, checkpoint.pt, log.csv."""
        import yaml

        from ..config import find_config, load_config
        from ..engine import NonFiniteLossError, TeacherInterrupted, train

        sets = list(overrides or [])
        if resume is not None:
            sets.append(f"engine.resume={resume}")
        try:
            cfg = load_config(find_config(config), sets)
        except (FileNotFoundError, ValueError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2)
        if print_config:
            typer.echo(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            return
        try:
            check_data(cfg)
            result = train(cfg)
        except TeacherInterrupted as e:
            t = e.result
            typer.echo(f"interrupted ({t.interrupted}) while training the stage-2 teacher, at its step {t.step}: "
                       f"checkpoint {t.checkpoint_path}; continue with --resume auto", err=True)
            raise typer.Exit(128 + int(signal.Signals[t.interrupted]))
        except NonFiniteLossError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1)
        except (FileNotFoundError, NotADirectoryError, ValueError) as e:
            # missing data folders and files, inconsistent settings found while building the run
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2)
        if os.environ.get("RANK", "0") != "0":   # under torchrun only the first process reports
            return
        if result.interrupted:
            typer.echo(f"interrupted ({result.interrupted}) at step {result.step}: checkpoint {result.checkpoint_path}; "
                       f"continue with --resume auto", err=True)
            raise typer.Exit(128 + int(signal.Signals[result.interrupted]))
        state = "finished" if result.complete else "stopped early (resume with --resume auto)"
        typer.echo(f"{state} at step {result.step}: model {result.model_path}, checkpoint {result.checkpoint_path}")

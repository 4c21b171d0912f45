"""Train a model: `python -m rotinv_tf.train --flagfile=configs/quickstart.cfg [--flag=value ...]`.

Flags on the command line override the flagfile. Rerunning the same command resumes from the
latest checkpoint in --model_dir. A multi-worker run that loses a worker prints one `error:` line
and exits with status 1 on the workers left (docs/distributed.md).
"""
import sys

from absl import flags

from data_pipeline import cli
from rotinv_tf import options, training

options.define_flags()
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    config = options.config_from_flags(FLAGS)
    try:
        config.validate()
    except ValueError as e:
        cli.fail(str(e))
    print(f"Frame: {training.resolved_frame(config)}", flush=True)
    try:
        correction, _ = training.resolved_ctf(config)
    except ValueError as e:
        cli.fail(str(e))
    print(f"CTF correction: {correction} ({training.data_description(config)})", flush=True)
    print(f"TensorBoard: tensorboard --logdir {config.model_dir}/logs", flush=True)
    try:
        result = training.train(config)
    except training.WorkerLostError as e:
        print(f"error: {e}".replace("\n", " "), file=sys.stderr)
        sys.exit(1)
    final = {k: v[-1] for k, v in result.history.items() if v}
    print(f"\nTrained {config.model} on {config.dataset} in {result.seconds:.0f} s.")
    for key in sorted(final):
        print(f"  {key:32s} {final[key]:.5g}")
    print(f"Checkpoints: {result.model_dir}/checkpoints\nLogs:        {result.log_dir}"
          f"\nSavedModel:  {result.export_path or 'written by the chief (this worker is not)'}"
          f"\nWeights:     sha256 {result.weights_digest} (the same on every worker)")


if __name__ == "__main__":
    cli.run(main)

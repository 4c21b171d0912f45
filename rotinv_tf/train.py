"""Train a model: `python -m rotinv_tf.train --flagfile=configs/quickstart.cfg [--flag=value ...]`.

One flag per setting of `rotinv_tf.config.Config` (`--helpfull` lists them); flags on the command
line override the flagfile. The run's config, its `auto` settings resolved from the data
(`rotinv_tf.training.resolve`), is saved as config.json in --model_dir and in the SavedModel.
Rerunning resumes from the latest checkpoint in --model_dir, saying which settings changed since.
A setting out of range, a run or export folder that cannot be written, or a particle stack whose
box the model cannot take or whose metadata lacks what the settings need, prints one `error:` line
and exits with status 2 before any data is built or folder written (`Config.check`,
`train_lib.check_run`, `resolve`). A multi-worker run that loses a worker prints one `error:`
line and exits with status 1 on the workers left (docs/distributed.md).
"""
import sys

from absl import flags

from data_pipeline import cli, settings
from rotinv_tf import config as configs
from rotinv_tf.training import train_lib
from rotinv_tf.training.resolve import resolve

configs.define_flags()
flags.adopt_module_key_flags(settings)  # --helpshort lists them
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    try:
        config = configs.from_flags(FLAGS)
        config.check()
    except ValueError as e:
        cli.fail(str(e))
    train_lib.check_run(config)  # bad paths and data: one error line before anything is printed
    try:
        config = resolve(config)  # every `auto` replaced from the data, as config.json records
    except ValueError as e:
        cli.fail(str(e))
    ours = config.model.autoencoder
    print(f"Frame: {ours.frame}", flush=True)
    print(f"CTF correction: {ours.ctf_correction} ({train_lib.data_description(config)})",
          flush=True)
    print(f"TensorBoard: tensorboard --logdir {config.runtime.run_dir}/logs", flush=True)
    try:
        result = train_lib.train(config)
    except train_lib.WorkerLostError as e:
        print(f"error: {e}".replace("\n", " "), file=sys.stderr)
        sys.exit(1)
    final = {k: v[-1] for k, v in result.history.items() if v}
    print(f"\nTrained {config.model.name} on {config.data.dataset} in {result.seconds:.0f} s.")
    for key in sorted(final):
        print(f"  {key:32s} {final[key]:.5g}")
    print(f"Checkpoints: {result.model_dir}/checkpoints\nConfig:      {result.model_dir}/"
          f"{configs.CONFIG_FILE}\nLogs:        {result.log_dir}"
          f"\nSavedModel:  {result.export_path or 'written by the chief (this worker is not)'}"
          f"\nWeights:     sha256 {result.weights_digest} (the same on every worker)")


if __name__ == "__main__":
    cli.run(main)

"""Evaluate an exported model on a test split: Table 1's metrics and Figs. 2-3 of the paper.

    python -m rotinv_tf.evaluate --saved_model=saved_models/<name>/<version> --output_dir=DIR \\
        [--baseline_saved_model=saved_models/<other>/<version>] [--split=test] [--batch_size=256]

The SavedModel's `assets/config.json` (its training run's config) says which data set, and which
fixed, seeded angles (`eval_angle_seed`, `angle_distribution`, `angle_scale_deg`) rotate it, so
the inputs are the ones validation saw during training. The data flags (`--helpshort`) given on
the command line (or in a `--flagfile`) override it; a SavedModel without that file takes the
flags alone. Writes metrics.json, per_image.csv and PNG figures into --output_dir (and
baseline_metrics.json with a baseline, evaluated on the same inputs, and mean_image_metrics.json
for the trivial baseline that always answers the mean training image); see
`rotinv_tf.evaluation`. Bad input, or an --output_dir that cannot be written (checked before the
models load), prints one `error: ...` line, exits with status 2 and writes nothing.
"""
import os

from absl import flags

from data_pipeline import cli, datasets, input_fn, settings
from data_pipeline.outputs import check_output_dir
from data_pipeline.preprocessing import mean_image
from rotinv_tf import config as configs, evaluation
from rotinv_tf.serving.saved_model import load_serving_model

settings.define_flags(settings.DataConfig)  # the data flags only: the model brings the rest
flags.adopt_module_key_flags(settings)  # --helpshort lists them
flags.DEFINE_integer("batch_size", 256, "Images per model call.", lower_bound=1)
flags.DEFINE_string("saved_model", None,
                    "SavedModel version folder: saved_models/<name>/<version>.")
flags.DEFINE_string("output_dir", None, "Folder for metrics.json, per_image.csv and the figures.")
flags.DEFINE_string("baseline_saved_model", None,
                    "Optional SavedModel of the baseline, evaluated on the same inputs.")
flags.DEFINE_string("split", "test", "Split to evaluate.")
flags.mark_flag_as_required("saved_model")
flags.mark_flag_as_required("output_dir")
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    del argv
    # The report is written into --output_dir, by way of a temporary folder beside it.
    for folder in (FLAGS.output_dir, os.path.dirname(os.path.abspath(FLAGS.output_dir))):
        check_output_dir(folder)
    paths = [FLAGS.saved_model] + ([FLAGS.baseline_saved_model] if FLAGS.baseline_saved_model
                                   else [])
    models = [load_serving_model(path) for path in paths]
    try:
        trained = configs.Config.from_dict(models[0].config).data if models[0].config else None
        data = settings.from_flags(settings.DataConfig, FLAGS, base=trained)
        settings.raise_problems(data.problems())
        batches, normalization = input_fn.eval_input(
            data.dataset, FLAGS.batch_size, split=FLAGS.split, data_dir=data.data_dir,
            angle_seed=data.eval_angle_seed, angle_distribution=data.angle_distribution,
            angle_scale=data.angle_scale, **data.load_options())
        train, _ = datasets.load(data.dataset, "train", data.data_dir, **data.load_options())
    except ValueError as e:  # settings that name no data: unknown split, missing folder...
        cli.fail(str(e).strip().splitlines()[0])
    models.append(evaluation.MeanImageModel(mean_image(train.map(lambda e: e["image"]))))
    results = evaluation.evaluate_models(models, batches.as_numpy_iterator(), normalization)
    trivial = results.pop()
    context = {"dataset": data.dataset, "split": FLAGS.split,
               "eval_angle_seed": data.eval_angle_seed,
               "angle_distribution": data.angle_distribution,
               "angle_scale_deg": data.angle_scale_deg}
    evaluation.write_report(FLAGS.output_dir, results[0], results[1] if len(results) > 1 else None,
                            context, trivial=trivial)
    names = ("ours", "baseline")[:len(results)] + ("mean image",)
    for name, result in zip(names, results + [trivial]):
        m = result.metrics
        print(f"{name}: {m['num_images']} images, MSE avg {m['avg_mse']:.5f} worst "
              f"{m['worst_mse']:.5f} (#{m['worst_index']}), angle MAE {m['angle_mae_deg']:.2f}° "
              f"RMSE {m['angle_rmse_deg']:.2f}° MSE {m['angle_mse_rad2']:.4f} rad²  "
              f"[{result.saved_model}]")
    print(f"report: {FLAGS.output_dir}")


if __name__ == "__main__":
    cli.run(main)

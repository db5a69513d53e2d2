"""Evaluates trained runs on their test split; several runs form an ensemble.

  python -m pasnet_jax.evaluate --workdir=runs/k16 --workdir=runs/k32 \
      [--out=ensemble.json] [--eval_clips=2 --eval_crops=3]

Each run is evaluated with its own config (frames, image size, fusion); with
several runs their softmax scores are averaged per video, as the paper's
ensemble (Table III) does.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from pasnet_jax import checkpoints
from pasnet_jax import cli
from pasnet_jax import config_checks
from pasnet_jax import errors
from pasnet_jax import evaluation
from pasnet_jax import inference
from pasnet_jax import metrics as metrics_lib
from pasnet_jax import parallel
from pasnet_jax.data import datasets


def scores_of(trained: inference.TrainedModel, mesh, clips: int, crops: int,
              dataset: datasets.DatasetInfo | None = None):
  config = trained.config
  dataset = dataset or datasets.load_dataset(config.dataset)
  batches = evaluation.eval_batches(dataset, config, clips, crops)
  variables = trained.on_devices(parallel.replicated_sharding(mesh))
  return evaluation.evaluate(variables, batches, model=trained.model, mesh=mesh)


def check_fits(trained: inference.TrainedModel) -> None:
  """Refuses a checkpoint that its run's config.json and classes do not describe.

  Otherwise the first forward pass fails deep inside Flax.
  """
  config = trained.config
  expected = jax.eval_shape(
      trained.model.init, jax.ShapeDtypeStruct((2,), jnp.uint32), jax.ShapeDtypeStruct(
          (1, config.frames, config.image_size, config.image_size, 3),
          jnp.float32))
  checkpoints.check_fits(trained.variables, expected,
                         f'The checkpoint of {trained.workdir}')


def evaluate_runs(workdirs, clips: int = 0, crops: int = 0,
                  dataset: datasets.DatasetInfo | None = None) -> dict:
  """Each run's and the ensemble's summary on the test split.

  `dataset` replaces the one the runs' configs name.
  """
  mesh = parallel.make_mesh()
  runs = [inference.load_trained(w) for w in workdirs]
  for run in runs:
    check_fits(run)
    config_checks.check_eval_devices(run.config)
  names = runs[0].class_names
  for run in runs[1:]:
    if run.class_names != names or (run.config.dataset.name, run.config.dataset.config) != (
        runs[0].config.dataset.name, runs[0].config.dataset.config):
      raise errors.CheckpointError(
          f'{run.workdir} was trained on {run.config.dataset.name}/'
          f'{run.config.dataset.config}, {runs[0].workdir} on '
          f'{runs[0].config.dataset.name}/{runs[0].config.dataset.config}: an '
          'ensemble needs runs on the same dataset and split.')
  total, labels, per_run = None, None, []
  for run in runs:
    scores, run_labels = scores_of(run, mesh, clips, crops, dataset)
    if labels is not None and not np.array_equal(labels, run_labels):
      raise errors.CheckpointError(
          f'{run.workdir} saw the test videos in another order; evaluate it '
          'with the same dataset build.')
    labels = run_labels
    total = scores if total is None else total + scores
    summary = metrics_lib.summarize(scores, labels, names)
    per_run.append({'workdir': run.workdir, 'top1': summary['top1'],
                    'top5': summary['top5'], 'frames': run.config.frames,
                    'fusion': run.config.model.fusion, 'step': run.step})
    logging.info('%s: top-1 %.4f top-5 %.4f', run.workdir, summary['top1'],
                 summary['top5'])
  summary = metrics_lib.summarize(total / len(runs), labels, names)
  summary['runs'] = per_run
  return summary


def define_flags():
  """Flags of this program, defined only when it runs as one."""
  flags.DEFINE_multi_string('workdir', None, 'Training run(s).',
      required=True)
  flags.DEFINE_string('out', '', 'Where to write the results JSON (and the '
      'confusion matrix beside it); default: print only.')
  flags.DEFINE_integer('eval_clips', 0, 'Temporal clips per video '
      '(0: as the run was configured).')
  flags.DEFINE_integer('eval_crops', 0, 'Spatial crops per clip '
      '(0: as the run was configured).')


def main(argv):
  del argv
  cli.quiet_libraries()
  with cli.clean_errors():
    summary = evaluate_runs(flags.FLAGS.workdir, flags.FLAGS.eval_clips, flags.FLAGS.eval_crops)
    title = 'ensemble of %d runs' % len(summary['runs']) if len(
        summary['runs']) > 1 else 'single run'
    print(f'{title}: top-1 {summary["top1"]:.4f}  top-5 {summary["top5"]:.4f}  '
          f'mean class {summary["mean_class_accuracy"]:.4f}  '
          f'({summary["num_videos"]} videos)')
    for run in summary['runs']:
      print(f'  {run["workdir"]}: K={run["frames"]} {run["fusion"]} '
            f'top-1 {run["top1"]:.4f}')
    if flags.FLAGS.out and jax.process_index() == 0:
      directory = os.path.dirname(os.path.abspath(flags.FLAGS.out))
      os.makedirs(directory, exist_ok=True)
      metrics_lib.write_confusion_matrix(summary['confusion_matrix'],
                                         list(summary['per_class_accuracy']),
                                         directory, title)
      checkpoints.write_json_atomically(
          flags.FLAGS.out, {k: v for k, v in summary.items() if k != 'confusion_matrix'})


if __name__ == '__main__':
  define_flags()
  sys.exit(app.run(main))

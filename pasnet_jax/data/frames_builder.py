"""What the UCF-101 and HMDB-51 builders share.

The layout of a dataset, turning the listed videos of a split into
examples (videos are decoded by one worker process per core), and the
failure report beside the dataset of the videos that could not be used.

The layout: one ArrayRecord record per frame, the frames of a video
together and in order, and a table of the videos (name, label, frames,
fps) in the dataset's metadata.json. A training clip decodes K frames of a
video, so it reads only those K records; with one record per video it read
and decompressed all of the video's frames (4.0 ms of a K = 16 clip's 11.6
in benchmarks/input.py at d8183b8; 1.6 ms for 16 frame records at 79489e8,
in a session when the machine was slower).
"""

import abc
import concurrent.futures
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import pathlib
import sys

import numpy as np
import tensorflow_datasets as tfds
import tqdm

from pasnet_jax.data import archives
from pasnet_jax.data import splits
from pasnet_jax.data import video
from pasnet_jax.errors import DatasetError

# A split in which more videos than this fraction fail is not built.
MAX_FAILED_FRACTION = 0.01


# The features of a video example (as the workers make it) that describe
# the whole video; its other features hold one value per frame.
_VIDEO_FEATURES = ('label', 'name', 'num_frames', 'fps')
# Frames per video the record keys leave room for (UCF-101's longest video
# has 1,776, HMDB-51's about 1,000).
MAX_FRAMES = 1 << 20


def frames_info(builder: tfds.core.DatasetBuilder, class_names,
                extra_features: dict | None = None, **info
                ) -> tfds.core.DatasetInfo:
  """The DatasetInfo of a dataset of frames.

  An example is one frame: `image` (JPEG, so that a clip decodes only the
  frames it samples), the video's `label` and `name`, the `frame`'s index in
  its video, and the `extra_features` (one value per frame). Examples are
  stored in order (frame_examples); metadata['videos'][split] is the table
  of the videos. `info`: the other arguments of DatasetInfo.
  """
  features = tfds.features.FeaturesDict({
      'image': tfds.features.Image(shape=(None, None, 3),
                                   encoding_format='jpeg'),
      'label': tfds.features.ClassLabel(names=class_names),
      'name': tfds.features.Text(),
      'frame': tfds.features.Scalar(dtype=np.int32),
      **(extra_features or {}),
  })
  return tfds.core.DatasetInfo(
      builder=builder, features=features, disable_shuffling=True,
      metadata=tfds.core.MetadataDict(), **info)


def frame_key(position: int, frame: int, num_positions: int) -> int:
  """The record key of frame `frame` of the video at `position` (below
  num_positions) of a split: increasing with (position, frame).

  A builder that disables shuffling writes its records in the order of
  their integer keys, and while sorting spreads them over 1,000 temporary
  files by key / 2**128, each of which it sorts in memory. Keys spread over
  that whole range keep each file to a thousandth of the split.
  """
  return ((position * MAX_FRAMES + frame) << 128) // (
      num_positions * MAX_FRAMES)


def frame_examples(videos, num_positions: int, info: tfds.core.DatasetInfo,
                   split: str):
  """Yields (key, frame example) for the frames of `videos`, and at the end
  stores the split's video table in info.metadata['videos'][split].

  `videos` yields (position, video example) in any order, with distinct
  positions below `num_positions`; a video example has `video` (its JPEG
  frames), label, name, num_frames, fps, and per-frame arrays for the other
  features. The records and the table follow the positions' order.
  """
  table = []
  for position, example in videos:
    jpegs = example['video']
    per_frame = {k: v for k, v in example.items()
                 if k not in ('video', *_VIDEO_FEATURES)}
    table.append((position, example['name'], int(example['label']),
                  len(jpegs), float(example['fps'])))
    for i, jpeg in enumerate(jpegs):
      yield frame_key(position, i, num_positions), {
          'image': jpeg, 'label': example['label'], 'name': example['name'],
          'frame': i, **{k: v[i] for k, v in per_frame.items()}}
  table.sort()
  info.metadata.setdefault('videos', {})[split] = {
      'name': [row[1] for row in table], 'label': [row[2] for row in table],
      'num_frames': [row[3] for row in table],
      'fps': [row[4] for row in table]}


def failure_report_path(builder: tfds.core.DatasetBuilder, split: str
                        ) -> pathlib.Path:
  """The report of the videos of `split` that were left out.

  It sits in the config folder, beside the version folder that TFDS loads,
  so it survives a failed build (whose version folder is removed).
  """
  root = pathlib.Path(builder.data_dir_root) / builder.name
  if builder.builder_config is not None:
    root /= builder.builder_config.name
  return root / f'failures-{builder.version}-{split}.tsv'


def use_array_record_unless_told(builder: tfds.core.DatasetBuilder,
                                 file_format) -> None:
  """Makes ArrayRecord the format of a dataset not yet built, unless the
  caller chose one: random access lets the input pipeline read examples by
  index, which makes its position a number a resumed run can restore."""
  if file_format is None and not builder.data_path.exists():
    builder.info.set_file_format('array_record', override=True)


@dataclasses.dataclass
class SplitConfig(tfds.core.BuilderConfig):
  """One of the three official train/test splits."""
  split_number: int = 1


def official_split_configs() -> list[SplitConfig]:
  return [SplitConfig(name=f'split{n}', split_number=n,
                      description=f'Official train/test split {n}.')
          for n in splits.SPLIT_NUMBERS]


@dataclasses.dataclass(frozen=True)
class _VideoTask:
  """One video for a worker: where to read it, and what it is."""
  ref: archives.VideoRef
  listed: splits.ListedVideo
  position: int  # in the split's list


def _encode_video(task: _VideoTask):
  """Worker: (task, example) for a usable video, else (task, reason)."""
  try:
    jpegs, fps = video.video_to_jpegs(archives.read_video_bytes(task.ref))
  except video.VideoDecodeError as e:
    return task, e.reason
  except DatasetError as e:
    return task, str(e)
  except OSError as e:
    return task, f'cannot be read ({e})'
  if len(jpegs) > MAX_FRAMES:
    return task, f'has {len(jpegs)} frames, more than the {MAX_FRAMES} kept'
  return task, {
      'video': jpegs,
      'label': task.listed.label,
      'name': task.listed.name,
      'num_frames': len(jpegs),
      'fps': fps,
  }


@contextlib.contextmanager
def _main_module_hidden():
  """Spawned workers start without re-running the parent's main module.

  A spawned process imports the parent's `__main__` before it unpickles its
  work. A build started from a script without an `if __name__ ==
  '__main__':` guard would then start the build again in every worker, and
  one from standard input names a file that does not exist; either way the
  workers die at start. The workers here need nothing from `__main__` (their
  functions and tasks live in pasnet_jax), so the parent hides it while they
  start.
  """
  main = sys.modules['__main__']
  saved = {name: main.__dict__[name] for name in ('__file__', '__spec__')
           if name in main.__dict__}
  main.__spec__ = None
  main.__dict__.pop('__file__', None)
  try:
    yield
  finally:
    main.__dict__.update(saved)


def map_in_workers(function, tasks: list, description: str):
  """Yields function(task) for all tasks, in any order, from one worker
  process per core, with a progress bar. `function` must be importable.

  A worker that dies (killed, out of memory) ends the build with a
  DatasetError instead of being replaced.
  """
  if not tasks:
    return
  # Spawned, not forked: the parent may hold TensorFlow threads, and a fork
  # of a threaded process can deadlock.
  context = multiprocessing.get_context('spawn')
  workers = min(len(os.sched_getaffinity(0)), len(tasks))
  with concurrent.futures.ProcessPoolExecutor(workers, context) as pool:
    with _main_module_hidden():
      # Submitting starts every worker, inside the hidden-main window.
      pending = {pool.submit(function, task) for task in tasks}
    try:
      for done in tqdm.tqdm(concurrent.futures.as_completed(pending),
                            total=len(tasks), unit='video', desc=description):
        # A finished future holds its video's frames until it is dropped.
        pending.discard(done)
        yield done.result()
    except concurrent.futures.process.BrokenProcessPool as error:
      raise DatasetError(
          f'{description}: a worker process died ({error}); if the machine '
          'ran out of memory, build with fewer processes running beside it, '
          'then run the build again.') from None
    finally:
      for future in pending:
        future.cancel()


class VideoFramesBuilder(tfds.core.GeneratorBasedBuilder,
                         skip_registration=True):
  """Base of the builders that turn published video archives into frames.

  Subclasses name the archives (or unpacked folders) that hold the videos and
  the split files, and parse the split files in `_listed_videos`.
  """
  VERSION = tfds.core.Version('2.0.0')
  RELEASE_NOTES = {
      '1.0.0': 'Frames as JPEG, short side 256, a record per video.',
      '2.0.0': 'A record per frame, in order; the videos in metadata.json.',
  }
  BUILDER_CONFIGS = official_split_configs()
  CLASS_NAMES: tuple[str, ...] = ()
  HOMEPAGE = ''
  CITATION = ''
  # Archive first, then the folders it unpacks to; matched case-insensitively.
  VIDEO_SOURCES: tuple[str, ...] = ()
  SPLIT_SOURCES: tuple[str, ...] = ()

  def __init__(self, *, file_format=None, **kwargs):
    super().__init__(file_format=file_format, **kwargs)
    use_array_record_unless_told(self, file_format)

  def _info(self) -> tfds.core.DatasetInfo:
    return frames_info(self, self.CLASS_NAMES, description=self.__doc__,
                       homepage=self.HOMEPAGE, citation=self.CITATION)

  @abc.abstractmethod
  def _listed_videos(self, files: dict[str, str], source: str
                     ) -> dict[str, list[splits.ListedVideo]]:
    """{'train': [...], 'test': [...]} from the split files' text."""

  def _split_generators(self, dl_manager):
    try:
      manual_dir = dl_manager.manual_dir
    except AssertionError as e:
      # TFDS asserts that the directory exists and is not empty, and follows
      # with the instructions over several lines.
      problem = str(e).split('. Create it', 1)[0]
      raise DatasetError(
          f'{problem}: put {self.VIDEO_SOURCES[0]} and '
          f'{self.SPLIT_SOURCES[0]} there, or name the directory that holds '
          'them (--config.dataset.manual_dir, or --manual_dir of tfds '
          'build), and build again.') from e
    split_source = _require_input(manual_dir, self.SPLIT_SOURCES,
                                  f'The {self.name} split files')
    listed = self._listed_videos(archives.read_text_files(split_source),
                                 str(split_source))
    video_source = _require_input(manual_dir, self.VIDEO_SOURCES,
                                  f'The {self.name} videos')
    refs = archives.index_videos(
        video_source, pathlib.Path(dl_manager.download_dir) / 'unpacked')
    return {split: self._generate_examples(listed[split], refs, video_source,
                                           split)
            for split in ('train', 'test')}

  def _generate_examples(self, listed: list[splits.ListedVideo],
                         refs: dict[str, archives.VideoRef],
                         source: pathlib.Path, split: str):
    """Yields (key, example) for the listed videos found in `refs`.

    `refs` maps lowercased names to where the videos are; `source` (the
    archive or folder they came from) is named in the report. Writes the
    failure report and raises DatasetError if too many videos failed.
    """
    failures = []
    tasks = []
    for position, item in enumerate(listed):
      ref = refs.get(item.name.lower())
      if ref is None:
        failures.append((item.name, f'not found in {source}'))
      else:
        tasks.append(_VideoTask(ref, item, position))

    def usable_videos():
      for task, result in map_in_workers(
          _encode_video, tasks, f'{self.name} {split}: decoding videos'):
        if isinstance(result, str):
          failures.append((task.listed.name, result))
        else:
          yield task.position, result

    yield from frame_examples(usable_videos(), len(listed), self.info, split)

    report = failure_report_path(self, split)
    _write_report(report, failures, total=len(listed), split=split)
    if len(failures) > MAX_FAILED_FRACTION * len(listed):
      raise DatasetError(
          f'{len(failures)} of the {len(listed)} {split} videos of '
          f'{self.name}/{self.builder_config.name} could not be used (more '
          f'than {MAX_FAILED_FRACTION:.0%}), so the dataset was not built. '
          f'They are listed with the reasons in {report}. Replace the damaged '
          'archive or videos and build again.')
    if failures:
      logging.warning('%d of %d %s videos left out; see %s', len(failures),
                      len(listed), split, report)


def _write_report(path: pathlib.Path, failures, total: int, split: str):
  path.parent.mkdir(parents=True, exist_ok=True)
  lines = [f'# {len(failures)} of {total} {split} videos left out',
           'name\treason']
  lines += [f'{name}\t{reason}' for name, reason in sorted(failures)]
  partial = path.with_name(path.name + '.partial')
  partial.write_text('\n'.join(lines) + '\n')
  partial.rename(path)


def _require_input(manual_dir, names: tuple[str, ...], what: str
                  ) -> pathlib.Path:
  """The archive or folder among `names` in `manual_dir`, or a DatasetError."""
  found = archives.find_input(manual_dir, names)
  if found is None:
    raise DatasetError(
        f'{what} not found in {manual_dir}: put {names[0]} (or its unpacked '
        f'folder {" or ".join(names[1:])}) there and build again.')
  return found
